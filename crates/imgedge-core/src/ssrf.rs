//! Which addresses an HTTP origin may reach. Pure (no I/O): config validation checks IP
//! literal base URLs with it, and `origin`'s DNS guard filters every resolved address
//! with it at connect time, which also covers DNS rebinding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Public message of a refused address or redirect.
pub const REFUSED: &str = "source address not allowed";

/// The IP of a URL whose host is an IP literal, in any spelling a URL parser accepts
/// (`2130706433`, `0177.0.0.1`, `[::ffff:127.0.0.1]`); `None` for names.
pub fn literal_host(url: &str) -> Option<IpAddr> {
    match url::Url::parse(url).ok()?.host()? {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(_) => None,
    }
}

/// True for globally routable unicast addresses: not unspecified, loopback, private,
/// link-local, CGNAT, multicast, reserved, nor IPv4 embedded in IPv6.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0 (CVE-2025-24354)
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 168)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if ip.is_unspecified() || ip.is_loopback() {
        return false;
    }
    // IPv4-mapped ::ffff:0:0/96 and IPv4-compatible ::/96: refused outright
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return false;
    }
    match s[0] {
        0xfc00..=0xfdff => false,                                       // unique local
        0xfe80..=0xfeff => false,                                       // link-local and old site-local
        0xff00..=0xffff => false,                                       // multicast
        0x2002 => is_public_v4(embedded(s[1], s[2])),                   // 6to4
        0x2001 if s[1] == 0 => false,                                   // Teredo
        0x0064 if s[1] == 0xff9b => is_public_v4(embedded(s[6], s[7])), // NAT64
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap_or_else(|e| panic!("{s}: {e}")))
    }

    #[test]
    fn private_ranges_are_refused() {
        for a in [
            "127.0.0.1",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:8.8.8.8",
            "::127.0.0.1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "2002:7f00:1::",
            "64:ff9b::a9fe:a9fe",
            "2001:0:4136:e378::1",
        ] {
            assert!(!public(a), "{a} must be refused");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for a in ["8.8.8.8", "1.1.1.1", "100.128.0.1", "172.32.0.1", "2606:4700::1111", "2002:0808:0808::"] {
            assert!(public(a), "{a} is public");
        }
    }

    #[test]
    fn literal_hosts_in_every_spelling() {
        let lit = |u: &str| literal_host(u).map(|ip| ip.to_string());
        assert_eq!(lit("http://2130706433/x/").as_deref(), Some("127.0.0.1"));
        assert_eq!(lit("http://0177.0.0.1/").as_deref(), Some("127.0.0.1"));
        assert_eq!(lit("http://user@127.0.0.1:8080/").as_deref(), Some("127.0.0.1"));
        assert_eq!(lit("http://[::ffff:127.0.0.1]/").as_deref(), Some("::ffff:127.0.0.1"));
        assert_eq!(lit("https://static.example.com/a/"), None);
    }
}

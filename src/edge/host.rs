//! The `Host` header, read once for both paths (the hit path in [`super::conn`] and
//! pingora's): the name a tenant is looked up by, or a refusal.
//!
//! Pingora itself refuses a `Host` with userinfo (`a.test:x@b.test`) with a 400 before any
//! hook runs; everything else it hands on as opaque bytes. A value this function refuses is
//! answered `400` by admission, and the hit path hands such requests to pingora, so a
//! refused `Host` gets the same answer whichever path reads it.

/// The host name of a `Host` value (`name[:port]` or `[v6]:port`): the name as sent,
/// brackets kept for IPv6, port left out. `None` for anything that is not an authority
/// without userinfo: empty, bad characters, an unclosed `[`, a port that is empty, not
/// decimal or above 65535.
pub fn name(value: &[u8]) -> Option<&str> {
    let (host, port) = if value.first() == Some(&b'[') {
        let close = value.iter().position(|&b| b == b']')?;
        let (v6, rest) = value.split_at(close + 1);
        let inner = v6.get(1..close)?;
        if inner.is_empty() || !inner.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        let port = match rest.split_first() {
            None => None,
            Some((b':', port)) => Some(port),
            Some(_) => return None,
        };
        (v6, port)
    } else {
        let (host, port) = match value.iter().position(|&b| b == b':') {
            Some(i) => (&value[..i], value.get(i + 1..)),
            None => (value, None),
        };
        if host.is_empty() || !host.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')) {
            return None;
        }
        (host, port)
    };
    if let Some(port) = port {
        let digits = port.len() <= 5 && !port.is_empty() && port.iter().all(u8::is_ascii_digit);
        // at most 5 digits: the sum cannot overflow
        if !digits || port.iter().fold(0u32, |n, &d| n * 10 + u32::from(d - b'0')) > 65535 {
            return None;
        }
    }
    // only ASCII was accepted above
    std::str::from_utf8(host).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn host_names_and_refusals() {
        for (value, want) in [
            ("img.test", Some("img.test")),
            ("IMG.test:8080", Some("IMG.test")),
            ("img.test:65535", Some("img.test")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("[::1]", Some("[::1]")),
            ("[::1]:8080", Some("[::1]")),
            ("[::ffff:127.0.0.1]:1", Some("[::ffff:127.0.0.1]")),
            ("under_score.test", Some("under_score.test")),
            ("", None),
            ("[", None),
            ("[]", None),
            ("[::1", None),
            ("[::1]x", None),
            ("[::1]:", None),
            ("[::1]:x", None),
            ("[a]b]", None),
            (":80", None),
            ("a.test:", None),
            ("a.test:x", None),
            ("a.test:65536", None),
            ("a.test:100000", None),
            ("a.test:+80", None),
            ("a.test:8080:1", None),
            ("a.test:x@b.test", None),
            ("user@a.test", None),
            ("a test", None),
            ("a.test/x", None),
            ("ä.test", None),
        ] {
            assert_eq!(name(value.as_bytes()), want, "{value:?}");
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_a_name_or_a_refusal(value in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Some(n) = name(&value) {
                // the name is a prefix of the value; what follows is nothing or a valid port
                prop_assert!(value.starts_with(n.as_bytes()));
                let rest = &value[n.len()..];
                prop_assert!(rest.is_empty() || (rest[0] == b':' && rest.len() > 1));
            }
        }

        #[test]
        fn names_with_ports_round_trip(host in "[a-z0-9][a-z0-9.-]{0,20}", port in proptest::option::of(0u32..70000)) {
            let value = match port {
                Some(p) => format!("{host}:{p}"),
                None => host.clone(),
            };
            let want = port.is_none_or(|p| p <= 65535).then_some(host.as_str());
            prop_assert_eq!(name(value.as_bytes()), want);
        }
    }
}

//! The hop between nodes: what a requester asks its key's owner, and how the owner knows
//! the request comes from a node of the fleet. The requester names itself and the time and
//! signs, with `fleet.secret`, every field the owner uses (tenant, source, canonical
//! request, watermark identity, output format, no-fallback flag); the owner checks the MAC
//! in constant time and the time within [`MAX_SKEW`]. Only the edge's upstream request
//! filter writes these headers, after dropping every header of the client's: nothing a
//! client sends can make a request a hop.

use std::time::{SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};
use pingora::http::RequestHeader;
use sha2::Sha256;

use crate::answer::{NO_FALLBACK_HEADER, REQUEST_HEADER, TENANT_HEADER};

pub const NODE_HEADER: &str = "x-imgedge-fleet-node";
pub const TIME_HEADER: &str = "x-imgedge-fleet-time";
pub const MAC_HEADER: &str = "x-imgedge-fleet-mac";
pub const SOURCE_HEADER: &str = "x-imgedge-fleet-source";
pub const WATERMARK_HEADER: &str = "x-imgedge-fleet-watermark";
pub const FORMAT_HEADER: &str = "x-imgedge-fleet-format";
pub const SEQ_HEADER: &str = "x-imgedge-fleet-seq";
/// Set by the owner on every answer to a verified hop (its node name): the requester takes
/// an answer without it, or from another node, as a failed hop (a peer address that is
/// not that node's fleet listener, or a secret that differs) and renders locally.
pub const OWNER_HEADER: &str = "x-imgedge-fleet-owner";
/// The path of a hop on the fleet listener.
pub const PATH: &str = "/fleet/render";
/// The path peers probe.
pub const HEALTH_PATH: &str = "/fleet/health";
/// Seconds a hop's time may differ from the owner's clock.
pub const MAX_SKEW: u64 = 30;

/// Source ids and watermark ids are free text: escaped so any of them fits a header.
const ESCAPED: &AsciiSet = &CONTROLS.add(b'%').add(b' ');

/// Everything the owner needs to look up, key and render a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopRequest {
    pub tenant: String,
    /// The source as named in its cache generation (`cache::source_id`).
    pub source: String,
    pub canonical: String,
    /// The watermark's identity when one is drawn: part of the cache key.
    pub watermark: Option<String>,
    /// The output-format part of the cache key.
    pub format: String,
    pub no_fallback: bool,
    /// The last fleet purge the requester has seen (`FleetPurge::seen`): an owner that has
    /// seen less may hold what was purged, and answers without its cache.
    pub seq: u64,
}

/// HMAC-SHA256 over the node, the time and every field, each length-prefixed so no two
/// different requests frame to the same bytes.
pub fn mac(secret: &[u8], node: &str, time: u64, r: &HopRequest) -> Hmac<Sha256> {
    // any key length is valid for HMAC
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    let time = time.to_string();
    let wm = r.watermark.as_deref().map_or(String::new(), |w| format!("+{w}"));
    let flag = if r.no_fallback { "1" } else { "0" };
    let seq = r.seq.to_string();
    for part in ["imgedge-hop-1", node, &time, &r.tenant, &r.source, &r.canonical, &wm, &r.format, flag, &seq] {
        m.update(&(part.len() as u32).to_be_bytes());
        m.update(part.as_bytes());
    }
    m
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Turns a render request (made by `edge::render_request`, which already set the tenant,
/// the canonical request and the no-fallback flag) into a signed hop.
pub fn write(up: &mut RequestHeader, secret: &[u8], node: &str, r: &HopRequest) -> pingora::Result<()> {
    write_at(up, secret, node, unix_now(), r)
}

/// [`write`] with the time given (tests sign stale hops with it).
pub fn write_at(up: &mut RequestHeader, secret: &[u8], node: &str, time: u64, r: &HopRequest) -> pingora::Result<()> {
    up.set_uri(http::Uri::from_static(PATH));
    up.insert_header(TENANT_HEADER, r.tenant.as_str())?;
    up.insert_header(REQUEST_HEADER, r.canonical.as_str())?;
    if r.no_fallback {
        up.insert_header(NO_FALLBACK_HEADER, "1")?;
    } else {
        up.remove_header(NO_FALLBACK_HEADER);
    }
    up.insert_header(SOURCE_HEADER, utf8_percent_encode(&r.source, ESCAPED).to_string())?;
    match &r.watermark {
        Some(w) => up.insert_header(WATERMARK_HEADER, utf8_percent_encode(w, ESCAPED).to_string())?,
        None => {
            up.remove_header(WATERMARK_HEADER);
        }
    }
    up.insert_header(FORMAT_HEADER, r.format.as_str())?;
    up.insert_header(SEQ_HEADER, r.seq.to_string())?;
    up.insert_header(NODE_HEADER, node)?;
    up.insert_header(TIME_HEADER, time.to_string())?;
    let tag = mac(secret, node, time, r).finalize().into_bytes();
    up.insert_header(MAC_HEADER, hex(&tag))?;
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Why a hop was refused (logged at debug; the peer only sees 403).
pub type Refusal = &'static str;

/// Checks a hop's headers: the node's MAC over every field, in constant time, and its time
/// within [`MAX_SKEW`] of `now`. The fields, when it verifies.
pub fn verify(req: &RequestHeader, secret: &[u8], now: u64) -> Result<HopRequest, Refusal> {
    let h = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let decoded = |v: &str| percent_decode_str(v).decode_utf8().ok().map(|c| c.into_owned());
    let node = h(NODE_HEADER).ok_or("no node")?;
    let time: u64 = h(TIME_HEADER).and_then(|t| t.parse().ok()).ok_or("no time")?;
    let tag = h(MAC_HEADER).and_then(unhex).ok_or("no mac")?;
    let r = HopRequest {
        tenant: h(TENANT_HEADER).ok_or("no tenant")?.to_owned(),
        source: h(SOURCE_HEADER).and_then(decoded).ok_or("no source")?,
        canonical: h(REQUEST_HEADER).ok_or("no request")?.to_owned(),
        watermark: match h(WATERMARK_HEADER) {
            Some(w) => Some(decoded(w).ok_or("bad watermark")?),
            None => None,
        },
        format: h(FORMAT_HEADER).ok_or("no format")?.to_owned(),
        no_fallback: req.headers.contains_key(NO_FALLBACK_HEADER),
        seq: h(SEQ_HEADER).and_then(|v| v.parse().ok()).ok_or("no seq")?,
    };
    mac(secret, node, time, &r).verify_slice(&tag).map_err(|_| "bad mac")?;
    if time.abs_diff(now) > MAX_SKEW {
        return Err("stale");
    }
    Ok(r)
}

/// [`verify`] at the current time.
pub fn verify_now(req: &RequestHeader, secret: &[u8]) -> Result<HopRequest, Refusal> {
    verify(req, secret, unix_now())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request() -> HopRequest {
        HopRequest {
            tenant: "t1".into(),
            source: "local:dir/a b%.jpg".into(),
            canonical: "/rs:fit:100:0/plain/local:dir/a%20b%25.jpg".into(),
            watermark: Some("0123abcd".into()),
            format: "webp".into(),
            no_fallback: true,
            seq: 7,
        }
    }

    fn signed(secret: &[u8], time: u64, r: &HopRequest) -> RequestHeader {
        let mut up = RequestHeader::build("GET", b"/render", None).unwrap();
        up.insert_header("x-client", "1").unwrap();
        write_at(&mut up, secret, "a", time, r).unwrap();
        up
    }

    #[test]
    fn a_signed_hop_verifies_with_its_fields() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let up = signed(secret, 1000, &request());
        assert_eq!(up.uri.path(), PATH);
        assert_eq!(verify(&up, secret, 1000).unwrap(), request());
        assert_eq!(verify(&up, secret, 1030).unwrap(), request());
        assert_eq!(verify(&up, secret, 970).unwrap(), request());
        let plain = HopRequest { watermark: None, no_fallback: false, ..request() };
        assert_eq!(verify(&signed(secret, 5, &plain), secret, 5).unwrap(), plain);
    }

    #[test]
    fn every_field_is_signed() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let up = signed(secret, 1000, &request());
        assert_eq!(verify(&up, secret, 1031), Err("stale"));
        assert_eq!(verify(&up, secret, 969), Err("stale"));
        assert_eq!(verify(&up, b"another secret, just as long....", 1000), Err("bad mac"));
        let tampered: [(&str, Option<&str>); 9] = [
            (SEQ_HEADER, Some("8")),
            (TENANT_HEADER, Some("t2")),
            (SOURCE_HEADER, Some("local:other.jpg")),
            (REQUEST_HEADER, Some("/rs:fit:101:0/plain/local:a.jpg")),
            (WATERMARK_HEADER, None),
            (FORMAT_HEADER, Some("avif")),
            (NO_FALLBACK_HEADER, None),
            (NODE_HEADER, Some("b")),
            (TIME_HEADER, Some("1001")),
        ];
        for (name, value) in tampered {
            let mut t = up.clone();
            match value {
                Some(v) => {
                    t.insert_header(name, v).unwrap();
                }
                None => {
                    t.remove_header(name);
                }
            }
            assert!(verify(&t, secret, 1000).is_err(), "{name} changed and still verified");
        }
        let mut no_mac = up.clone();
        no_mac.remove_header(MAC_HEADER);
        assert_eq!(verify(&no_mac, secret, 1000), Err("no mac"));
    }
}

//! Every answer imgedge writes itself, defined once:
//!
//! - what a cache hit carries, whichever path serves it: the hit path below pingora
//!   (`edge::conn`) writes [`stored_head`] and [`write_tail`] as raw bytes, pingora's path
//!   (front hits through its session, memory and disk hits) gets the same header from
//!   [`decorate`]; pingora's session and the hit path then both end with `Date` and
//!   `Connection`. A test compares the raw bytes of both.
//! - every error answer and every plain answer of the ops listener: [`Answer`], written
//!   by the edge through pingora's session and by render and ops as `http::Response`.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderName, Response, StatusCode};
use pingora_http::ResponseHeader;

use crate::cache::Outcome;
use crate::error::Error;

/// Every header named with this prefix is imgedge's own: none ever reaches a client.
const INTERNAL_PREFIX: &str = "x-imgedge-";
/// Headers between render and the edge that never leave imgedge.
pub const TENANT_HEADER: &str = "x-imgedge-tenant";
pub const REQUEST_HEADER: &str = "x-imgedge-request";
/// The request's cache key hash (32 hex digits): render names the shared store's object
/// by it, so every node agrees on where a rendered answer lives.
pub const KEY_HEADER: &str = "x-imgedge-key";
/// Set on an answer that is the source unchanged (`raw`, `skp`); cached with it, read by
/// the edge (a passthrough is not a transform) and never sent to a client.
pub const PASSTHROUGH_HEADER: &str = "x-imgedge-passthrough";

/// Set on the tenant's fallback image answered instead of an error: the one header of
/// this prefix a client sees (stored with the answer, so hits carry it too); the edge
/// bills such an answer as an error.
pub const FALLBACK_HEADER: &str = "x-imgedge-fallback";

/// Set by the edge on a render request when an expired copy may still be served on an
/// error (`stale-if-error`): render then answers the error rather than the fallback image,
/// so the stale real image wins over a fallback.
pub const NO_FALLBACK_HEADER: &str = "x-imgedge-no-fallback";

/// Set on an answer that was not rendered for this request but read from the fleet's
/// cache: `shared` (render found it in the shared store) or `peer` (the key's owner had
/// it). The edge bills and labels such an answer as a hit, and removes the header before
/// caching the answer.
pub const SERVED_HEADER: &str = "x-imgedge-served";

/// Render's answer to the edge: `{origin fetch µs} {render µs}` (the fetch part `-` when
/// nothing was fetched), read and removed by the edge before caching (request log).
pub const TIMING_HEADER: &str = "x-imgedge-timing";

/// Parses a [`TIMING_HEADER`] value: (origin µs, render µs).
pub fn parse_timing(v: &[u8]) -> (Option<u64>, Option<u64>) {
    let text = std::str::from_utf8(v).unwrap_or("");
    let mut parts = text.split(' ').map(|p| p.parse::<u64>().ok());
    (parts.next().flatten(), parts.next().flatten())
}

/// Headers a hit answer sets itself (never copied from the stored response).
const NOT_STORED: [HeaderName; 7] = [
    http::header::AGE,
    http::header::DATE,
    http::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("x-cache"),
    http::header::VARY,
    http::header::ACCEPT_RANGES,
];

/// Removes imgedge's internal headers ([`INTERNAL_PREFIX`]), all but [`FALLBACK_HEADER`].
fn strip_internal(h: &mut ResponseHeader) {
    let internal: Vec<HeaderName> = h
        .headers
        .keys()
        .filter(|n| n.as_str().starts_with(INTERNAL_PREFIX) && n.as_str() != FALLBACK_HEADER)
        .cloned()
        .collect();
    for name in &internal {
        h.remove_header(name);
    }
}

/// The stored response as a hit sends it, before the per-answer fields: without
/// [`NOT_STORED`] and internal headers, with `Accept-Ranges` on a 200 (what pingora's range filter
/// adds to a hit asked without `Range`; a `Range` request keeps pingora's own).
fn stored(h: &ResponseHeader, accept_ranges: bool) -> ResponseHeader {
    let mut h = h.clone();
    for name in &NOT_STORED {
        h.remove_header(name);
    }
    strip_internal(&mut h);
    if accept_ranges {
        // infallible for a static name and value
        let _ = h.insert_header("Accept-Ranges", "bytes");
    }
    h
}

/// A hit's status line and stored headers, serialized once when a front entry is filled:
/// each line ends with CRLF, no blank line follows.
pub fn stored_head(h: &ResponseHeader) -> Bytes {
    let h = stored(h, h.status == StatusCode::OK);
    let mut buf = BytesMut::with_capacity(512);
    buf.put_slice(b"HTTP/1.1 ");
    buf.put_slice(h.status.as_str().as_bytes());
    buf.put_u8(b' ');
    if let Some(reason) = h.get_reason_phrase() {
        buf.put_slice(reason.as_bytes());
    }
    buf.put_slice(b"\r\n");
    h.header_to_h1_wire(&mut buf);
    buf.freeze()
}

/// The per-answer fields of a hit, in order: `Age`, `x-cache`, and `vary` for negotiated
/// URLs.
fn tail(age: u64, outcome: Outcome, vary: bool) -> impl Iterator<Item = (&'static str, Cow<'static, str>)> {
    [
        Some(("Age", Cow::Owned(age.to_string()))),
        Some(("x-cache", Cow::Borrowed(outcome.header_value()))),
        vary.then_some(("vary", Cow::Borrowed("Accept"))),
    ]
    .into_iter()
    .flatten()
}

/// Appends a hit's per-answer fields, as header lines, after [`stored_head`].
pub fn write_tail(buf: &mut BytesMut, age: u64, vary: bool) {
    for (name, value) in tail(age, Outcome::Hit, vary) {
        buf.put_slice(name.as_bytes());
        buf.put_slice(b": ");
        buf.put_slice(value.as_bytes());
        buf.put_slice(b"\r\n");
    }
}

/// `Cache-Control` of an answer to a URL that expires at `expires` (seconds since the
/// epoch), seen at `now`: `max-age` bounded by the URL's remaining lifetime, without
/// `immutable` and `stale-if-error`, so that no browser or CDN keeps serving the URL past
/// its expiry. The cached copy keeps the tenant's TTL: other URLs (another `exp`) share it.
/// `None` when the header needs no change.
pub fn expiring_cache_control(h: &ResponseHeader, expires: Option<u64>, now: SystemTime) -> Option<String> {
    let expires = expires?;
    let cc = h.headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    let remaining = expires.saturating_sub(now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()));
    let mut out = Vec::new();
    for directive in cc.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let name = directive.split('=').next().unwrap_or("").to_ascii_lowercase();
        match name.as_str() {
            "immutable" | "stale-if-error" | "stale-while-revalidate" => {}
            "max-age" | "s-maxage" => {
                let age = directive.split_once('=').and_then(|(_, v)| v.trim().parse::<u64>().ok()).unwrap_or(0);
                out.push(format!("{name}={}", age.min(remaining)));
            }
            _ => out.push(directive.to_owned()),
        }
    }
    Some(out.join(", "))
}

/// Applies [`expiring_cache_control`] to `h`.
pub fn bound_by_expiry(h: &mut ResponseHeader, expires: Option<u64>, now: SystemTime) -> pingora_error::Result<()> {
    if let Some(cc) = expiring_cache_control(h, expires, now) {
        h.insert_header(http::header::CACHE_CONTROL, cc)?;
    }
    Ok(())
}

/// Puts pingora's answer into imgedge's form. A hit (its `Age` set by pingora) becomes
/// exactly the header [`stored_head`] and [`write_tail`] write; any other answer loses the
/// internal headers and gains `x-cache` (and `vary`). Either way a URL with an expiry gets
/// its `Cache-Control` bounded by it ([`expiring_cache_control`]), as the hit path does.
pub fn decorate(
    h: &mut ResponseHeader,
    outcome: Outcome,
    vary: bool,
    expires: Option<u64>,
) -> pingora_error::Result<()> {
    bound_by_expiry(h, expires, SystemTime::now())?;
    match h.headers.get(http::header::AGE).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()) {
        Some(age) if outcome.is_hit() => {
            let ranges = h.headers.contains_key(http::header::ACCEPT_RANGES);
            *h = stored(h, ranges);
            for (name, value) in tail(age, outcome, vary) {
                h.insert_header(name, value.as_ref())?;
            }
        }
        _ => {
            strip_internal(h);
            h.insert_header("x-cache", outcome.header_value())?;
            if vary {
                h.insert_header("vary", "Accept")?;
            }
        }
    }
    Ok(())
}

/// An answer imgedge makes itself rather than from the cache or render's image: errors
/// (edge, render) and the ops listener's plain answers. Whoever writes it, it carries the
/// same headers.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

const PLAIN: &str = "text/plain; charset=utf-8";

impl Answer {
    /// An error: one short line of text, never cached, except "source not found" for
    /// `not_found_ttl` seconds when given (render's answers; the edge's are never cached).
    pub fn error(e: &Error, not_found_ttl: Option<u64>) -> Answer {
        let status = e.status();
        let cache_control = match (status, not_found_ttl) {
            (404, Some(ttl)) if ttl > 0 => format!("public, max-age={ttl}"),
            _ => "no-store".to_owned(),
        };
        let mut a = Answer::with(status, PLAIN, format!("{}\n", e.public_message()).into_bytes(), cache_control);
        a.headers.push(("x-content-type-options", "nosniff".to_owned()));
        if let Some(secs) = e.retry_after() {
            a.headers.push(("retry-after", secs.to_string()));
        }
        a
    }

    /// A plain answer that is never cached.
    pub fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Answer {
        Answer::with(status.as_u16(), content_type, body, "no-store".to_owned())
    }

    /// A line of plain text, never cached.
    pub fn plain(status: StatusCode, line: &str) -> Answer {
        Answer::text(status, PLAIN, format!("{line}\n").into_bytes())
    }

    /// A JSON document, never cached.
    pub fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
        let mut body = value.to_string().into_bytes();
        body.push(b'\n');
        Answer::text(status, "application/json", body)
    }

    fn with(status: u16, content_type: &str, body: Vec<u8>, cache_control: String) -> Answer {
        let headers = vec![
            ("content-type", content_type.to_owned()),
            ("content-length", body.len().to_string()),
            ("cache-control", cache_control),
        ];
        Answer { status, headers, body }
    }

    /// For pingora's session (the edge).
    pub fn header(&self) -> pingora_error::Result<ResponseHeader> {
        let mut h = ResponseHeader::build(self.status, Some(self.headers.len()))?;
        for (name, value) in &self.headers {
            h.insert_header(*name, value.as_str())?;
        }
        Ok(h)
    }

    /// The whole answer as HTTP/1.1 bytes, for the edge's hit path, which writes below
    /// pingora's session: with `date` and `Connection: close`, as pingora's session ends
    /// an answer after which the connection closes.
    pub fn close_h1(&self, date: &str) -> Vec<u8> {
        let reason = StatusCode::from_u16(self.status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
        let mut out = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        for (name, value) in &self.headers {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
        out.push_str(&format!("Date: {date}\r\nConnection: close\r\n\r\n"));
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// For `ServeHttp` apps (render, ops).
    pub fn into_response(self) -> Response<Vec<u8>> {
        let mut builder =
            Response::builder().status(StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.as_str());
        }
        builder.body(self.body).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn stored_200() -> ResponseHeader {
        let mut h = ResponseHeader::build(200, None).unwrap();
        for (n, v) in [
            ("content-type", "image/webp"),
            ("content-length", "4"),
            ("etag", "\"abc\""),
            (PASSTHROUGH_HEADER, "1"),
            ("cache-control", "public, max-age=60"),
        ] {
            h.insert_header(n, v).unwrap();
        }
        h
    }

    #[test]
    fn both_paths_write_the_same_hit_header() {
        // pingora's path: the stored header with its Age, after its range filter
        let mut pingora = stored_200();
        pingora.insert_header(http::header::AGE, 7).unwrap();
        pingora.insert_header(http::header::ACCEPT_RANGES, "bytes").unwrap();
        decorate(&mut pingora, Outcome::Hit, true, None).unwrap();
        let mut via_pingora = BytesMut::new();
        via_pingora.put_slice(b"HTTP/1.1 200 OK\r\n");
        pingora.header_to_h1_wire(&mut via_pingora);

        let mut raw = BytesMut::from(&stored_head(&stored_200())[..]);
        write_tail(&mut raw, 7, true);
        assert_eq!(String::from_utf8_lossy(&raw), String::from_utf8_lossy(&via_pingora));
        assert!(!String::from_utf8_lossy(&raw).contains("x-imgedge"), "internal headers never leave");
    }

    #[test]
    fn no_internal_header_leaves_on_any_answer() {
        for outcome in [Outcome::Hit, Outcome::Miss, Outcome::Bypass] {
            let mut h = stored_200();
            h.insert_header("x-imgedge-anything", "1").unwrap();
            h.insert_header(http::header::AGE, 3).unwrap();
            decorate(&mut h, outcome, false, None).unwrap();
            assert!(h.headers.keys().all(|n| !n.as_str().starts_with("x-imgedge")), "{outcome:?}: {h:?}");
        }
    }

    #[test]
    fn the_fallback_header_is_the_one_that_reaches_clients() {
        for outcome in [Outcome::Hit, Outcome::Miss] {
            let mut h = stored_200();
            h.insert_header(FALLBACK_HEADER, "1").unwrap();
            h.insert_header(http::header::AGE, 3).unwrap();
            decorate(&mut h, outcome, false, None).unwrap();
            let names: Vec<_> = h.headers.keys().map(|n| n.as_str()).filter(|n| n.starts_with("x-imgedge")).collect();
            assert_eq!(names, [FALLBACK_HEADER], "{outcome:?}");
        }
        assert!(String::from_utf8_lossy(&stored_head(&{
            let mut h = stored_200();
            h.insert_header(FALLBACK_HEADER, "1").unwrap();
            h
        }))
        .contains("x-imgedge-fallback: 1\r\n"));
    }

    #[test]
    fn an_expiring_url_is_cached_downstream_until_it_expires_only() {
        let now = UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        let mut h = stored_200();
        h.insert_header("cache-control", "public, max-age=31536000, immutable, stale-if-error=86400").unwrap();
        assert_eq!(expiring_cache_control(&h, None, now), None);
        assert_eq!(expiring_cache_control(&h, Some(1_000_600), now).as_deref(), Some("public, max-age=600"));
        h.insert_header("cache-control", "public, max-age=60").unwrap();
        assert_eq!(expiring_cache_control(&h, Some(1_000_600), now).as_deref(), Some("public, max-age=60"));
        h.insert_header("cache-control", "no-store").unwrap();
        assert_eq!(expiring_cache_control(&h, Some(1_000_600), now).as_deref(), Some("no-store"));
    }

    #[test]
    fn close_h1_is_a_whole_answer() {
        let a = Answer::plain(StatusCode::BAD_REQUEST, "malformed request head");
        let wire = String::from_utf8(a.close_h1("Thu, 01 Jan 1970 00:00:00 GMT")).unwrap();
        assert!(wire.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{wire}");
        assert!(wire.contains("content-length: 23\r\n"), "{wire}");
        assert!(wire.ends_with("Connection: close\r\n\r\nmalformed request head\n"), "{wire}");
    }

    #[test]
    fn errors_carry_status_and_no_store() {
        let a = Answer::error(&Error::RateLimited, Some(60));
        assert_eq!(a.status, 429);
        assert!(a.headers.contains(&("cache-control", "no-store".to_owned())));
        assert!(a.headers.contains(&("retry-after", "1".to_owned())));
        let nf = Answer::error(&Error::SourceNotFound, Some(60));
        assert!(nf.headers.contains(&("cache-control", "public, max-age=60".to_owned())));
        let edge_nf = Answer::error(&Error::SourceNotFound, None);
        assert!(edge_nf.headers.contains(&("cache-control", "no-store".to_owned())));
        assert_eq!(edge_nf.into_response().body(), b"source not found\n");
    }
}

//! Per-tenant telemetry kept with the usage counters, exactly like them: requests by
//! calling site, a latency histogram with fixed buckets, and bytes by content type. Every
//! request lands in exactly one site, one latency bucket and one content type, so each of
//! the three sums to the month's `requests` (and the content types' bytes to `bytes_out`).

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

/// Upper bounds (milliseconds, inclusive) of the latency buckets; one more bucket, `+Inf`,
/// takes the rest. Fixed, so histograms of any flushes and processes add up.
pub const LATENCY_BUCKETS_MS: [u64; 11] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000];
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKETS_MS.len() + 1;

/// Content types counted by name; anything else is `other`.
pub const CONTENT_TYPES: [&str; 7] =
    ["image/jpeg", "image/png", "image/webp", "image/avif", "image/gif", "text/plain", "other"];
pub const CONTENT_TYPE_COUNT: usize = CONTENT_TYPES.len();

/// Calling sites a tenant's month keeps by name in a ledger; later new ones go to
/// [`OTHER`]. Also the most a flush interval keeps in memory per tenant and month.
pub const TOP_SITES: u64 = 100;
/// Requests without a usable `Origin` or `Referer` (direct loads, CDNs, apps).
pub const NO_SITE: &str = "(none)";
/// Sites past [`TOP_SITES`]. Parentheses never occur in a host name.
pub const OTHER: &str = "(other)";

/// Ledger row kinds of the telemetry table.
pub const KIND_SITE: &str = "site";
pub const KIND_LATENCY: &str = "latency_ms";
pub const KIND_TYPE: &str = "content_type";

/// One (kind, name) line of a batch row's telemetry for a ledger: requests and bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: &'static str,
    pub name: String,
    pub requests: u64,
    pub bytes: u64,
}

/// The telemetry of a batch row as ledger entries. `known_sites` are the sites the ledger
/// already names for this (month, tenant): they keep their rows; new ones get a row while
/// fewer than [`TOP_SITES`] are named (the batch's busiest first), the rest add to
/// [`OTHER`]. So the table stays bounded and every request is still counted once.
pub fn entries(row: &super::batch::Row, known_sites: &HashSet<String>) -> Vec<Entry> {
    let mut out = Vec::new();
    let special = |s: &str| s == NO_SITE || s == OTHER;
    let mut named = known_sites.iter().filter(|s| !special(s)).count() as u64;
    let mut sites: Vec<(&String, &u64)> = row.sites.iter().collect();
    sites.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
    let mut resolved: BTreeMap<&str, u64> = BTreeMap::new();
    for (site, n) in sites {
        let name = if special(site) || known_sites.contains(site.as_str()) {
            site.as_str()
        } else if named < TOP_SITES {
            named += 1;
            site.as_str()
        } else {
            OTHER
        };
        *resolved.entry(name).or_default() += n;
    }
    for (name, n) in resolved {
        out.push(Entry { kind: KIND_SITE, name: name.to_owned(), requests: n, bytes: 0 });
    }
    for (name, n) in row.latency_named() {
        out.push(Entry { kind: KIND_LATENCY, name, requests: n, bytes: 0 });
    }
    for (name, [n, bytes]) in &row.types {
        out.push(Entry { kind: KIND_TYPE, name: name.clone(), requests: *n, bytes: *bytes });
    }
    out
}

/// A (month, tenant)'s telemetry as a ledger reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Telemetry {
    /// Requests by calling site; `(none)` without one, `(other)` past the top sites.
    pub sites: BTreeMap<String, u64>,
    /// Requests per latency bucket, in bucket order: upper bound in ms (`+Inf` last).
    pub latency_ms: Vec<Bucket>,
    pub content_types: BTreeMap<String, TypeCount>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub le: String,
    pub requests: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TypeCount {
    pub requests: u64,
    pub bytes: u64,
}

impl Telemetry {
    /// Adds one ledger line (kind, name, requests, bytes).
    pub fn add(&mut self, kind: &str, name: String, requests: u64, bytes: u64) {
        match kind {
            KIND_SITE => *self.sites.entry(name).or_default() += requests,
            KIND_TYPE => {
                let t = self.content_types.entry(name).or_default();
                t.requests += requests;
                t.bytes += bytes;
            }
            KIND_LATENCY => {
                match self.latency_ms.iter_mut().find(|b| b.le == name) {
                    Some(b) => b.requests += requests,
                    None => self.latency_ms.push(Bucket { le: name, requests }),
                }
                let order = |le: &str| le.parse::<u64>().unwrap_or(u64::MAX);
                self.latency_ms.sort_by_key(|b| order(&b.le));
            }
            _ => {}
        }
    }
}

/// The latency bucket of a request that took `micros`.
pub fn latency_bucket(micros: u64) -> usize {
    let ms = micros.div_ceil(1000);
    LATENCY_BUCKETS_MS.iter().position(|b| ms <= *b).unwrap_or(LATENCY_BUCKETS_MS.len())
}

/// Bucket names as stored in the ledger: the upper bound in ms, or `+Inf`.
pub fn latency_name(i: usize) -> String {
    LATENCY_BUCKETS_MS.get(i).map_or_else(|| "+Inf".to_owned(), u64::to_string)
}

/// Index in [`CONTENT_TYPES`] of a `Content-Type` value (parameters ignored).
pub fn content_type_index(value: Option<&[u8]>) -> usize {
    let Some(v) = value else { return CONTENT_TYPE_COUNT - 1 };
    let essence = v.split(|b| *b == b';').next().unwrap_or(v).trim_ascii();
    CONTENT_TYPES[..CONTENT_TYPE_COUNT - 1]
        .iter()
        .position(|t| essence.eq_ignore_ascii_case(t.as_bytes()))
        .unwrap_or(CONTENT_TYPE_COUNT - 1)
}

/// The host of an `Origin` (`https://shop.example:8443`) or `Referer`
/// (`https://shop.example/page?q`) value: scheme, user info, port, path dropped. `None`
/// for `null`, a value without a host, or a host with characters no host name has.
pub fn host_of(value: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(value).ok()?;
    let (_, rest) = s.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host.starts_with('[') {
        // an IPv6 literal keeps its brackets; its port follows them
        &host[..=host.find(']')?]
    } else {
        host.split(':').next()?
    };
    let ok = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'[' | b']' | b':');
    (!host.is_empty() && host.len() <= 253 && host.bytes().all(ok)).then_some(host)
}

/// The calling site of a request: the `Origin` host, else the `Referer` host.
pub fn calling_site<'a>(origin: Option<&'a [u8]>, referer: Option<&'a [u8]>) -> Option<&'a str> {
    origin.and_then(host_of).or_else(|| referer.and_then(host_of))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_types_and_sites() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(5000), 0);
        assert_eq!(latency_bucket(5001), 1);
        assert_eq!(latency_bucket(10_000_001), LATENCY_BUCKETS - 1);
        assert_eq!(latency_name(0), "5");
        assert_eq!(latency_name(LATENCY_BUCKETS - 1), "+Inf");
        assert_eq!(CONTENT_TYPES[content_type_index(Some(b"image/webp"))], "image/webp");
        assert_eq!(CONTENT_TYPES[content_type_index(Some(b"text/plain; charset=utf-8"))], "text/plain");
        assert_eq!(CONTENT_TYPES[content_type_index(Some(b"image/bmp"))], "other");
        assert_eq!(CONTENT_TYPES[content_type_index(None)], "other");
        assert_eq!(host_of(b"https://shop.example:8443"), Some("shop.example"));
        assert_eq!(host_of(b"https://u:p@blog.example/a/b?c#d"), Some("blog.example"));
        assert_eq!(host_of(b"http://[2001:db8::1]:80/x"), Some("[2001:db8::1]"));
        assert_eq!(host_of(b"null"), None);
        assert_eq!(host_of(b"https://"), None);
        assert_eq!(host_of(b"https://a b/"), None);
        assert_eq!(calling_site(Some(b"null"), Some(b"https://r.example/p")), Some("r.example"));
        assert_eq!(calling_site(Some(b"https://o.example"), Some(b"https://r.example/p")), Some("o.example"));
        assert_eq!(calling_site(None, None), None);
    }
}

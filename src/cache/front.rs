//! The front: fresh hits as ready-to-send answers, keyed by cache-key hash, so a repeated
//! hit needs no pingora-cache lookup. What the answer carries is defined in
//! [`crate::answer`]; this module only keeps the entries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use pingora_cache::CacheMeta;
use pingora_error::Result;
use pingora_http::ResponseHeader;
use tinyufo::TinyUfo;

use super::body_file::BodyFile;
use crate::answer;

/// Share of the memory budget the front may hold. Its bodies are the memory tier's own
/// `Bytes` (shared, not copied) until foyer evicts them; the file copies of large bodies
/// (see `body_file`) are its own, and weigh in its share.
pub(super) const FRONT_SHARE: usize = 4;

/// A fresh hit as pingora-cache would send it: the stored response header and the body.
pub struct FrontEntry {
    /// The full key hash: TinyUFO keeps only a 64-bit hash of its keys.
    hash: u128,
    header: ResponseHeader,
    /// Status line and headers as a hit sends them, less the per-answer ones (`Age`,
    /// `Date`, `Connection`, `X-Cache`, `Vary`): serialized once, when the entry is filled.
    head: Bytes,
    body: Bytes,
    /// The body again, as a file to `sendfile` from, if it is large enough to gain.
    file: Option<BodyFile>,
    /// What `Age` counts from (pingora's `CacheMeta::epoch`).
    epoch: SystemTime,
    fresh_until: SystemTime,
    /// The source unchanged (`raw`, `skp`): billed as its miss was, not as a transform.
    passthrough: bool,
    /// The tenant's fallback image: billed as the error it replaced.
    fallback: bool,
}

impl FrontEntry {
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    pub fn file(&self) -> Option<&BodyFile> {
        self.file.as_ref()
    }

    /// The header pingora-cache sends on a hit: the stored one as HTTP/1.1 with `Age`.
    pub fn header(&self, now: SystemTime) -> Result<Box<ResponseHeader>> {
        let mut h = Box::new(self.header.clone());
        h.set_version(http::Version::HTTP_11);
        h.insert_header(http::header::AGE, self.age(now))?;
        Ok(h)
    }

    pub fn stored_header(&self) -> &ResponseHeader {
        &self.header
    }

    pub fn passthrough(&self) -> bool {
        self.passthrough
    }

    pub fn fallback(&self) -> bool {
        self.fallback
    }

    pub fn status(&self) -> u16 {
        self.header.status.as_u16()
    }

    pub fn etag(&self) -> Option<&[u8]> {
        self.header.headers.get(http::header::ETAG).map(|v| v.as_bytes())
    }

    /// See the field: ends with a header line's CRLF, not the blank line.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Seconds since the object was stored, as pingora's `Age`.
    pub fn age(&self, now: SystemTime) -> u64 {
        now.duration_since(self.epoch).map_or(0, |d| d.as_secs())
    }
}

/// Fresh hits, ready to send, keyed by cache-key hash. Filled by storage lookups (so only
/// what pingora-cache has served as a hit before), emptied by writes and purges of the same
/// key; a tenant purge changes every key of the tenant. Entries past their freshness are
/// never served from here: stale handling stays pingora's.
pub struct Front {
    map: TinyUfo<u128, Arc<FrontEntry>>,
    /// Bumped by every removal, so a lookup that read an object before a purge removed it
    /// cannot put it back afterwards.
    removals: AtomicU64,
}

impl Front {
    /// `None` when `bytes` is too small to hold anything.
    pub(super) fn new(bytes: usize) -> Option<Self> {
        let limit_kib = bytes / 1024;
        if limit_kib < 64 {
            return None;
        }
        // estimated item count for TinyLFU's sketch: thumbnails of ~16 KiB
        let items = (limit_kib / 16).clamp(1024, 1 << 20);
        Some(Front { map: TinyUfo::new(limit_kib, items), removals: AtomicU64::new(0) })
    }

    pub(super) fn get(&self, hash: u128, now: SystemTime) -> Option<Arc<FrontEntry>> {
        let e = self.map.get(&hash)?;
        (e.hash == hash && e.fresh_until >= now).then_some(e)
    }

    pub(super) fn removals(&self) -> u64 {
        self.removals.load(Ordering::SeqCst)
    }

    /// Keeps a fresh hit. `removals_before` is [`Front::removals`] read before the storage
    /// read that produced `meta` and `body`.
    pub(super) fn put(&self, hash: u128, meta: &CacheMeta, body: &Bytes, removals_before: u64) {
        let header = meta.response_header();
        // without Content-Length pingora frames the hit itself (chunked): leave it to pingora
        if !meta.is_fresh(SystemTime::now()) || !header.headers.contains_key(http::header::CONTENT_LENGTH) {
            return;
        }
        // weight in KiB (TinyUFO weights are u16), header and file copy included; the
        // bound is checked before a file copy is made
        let weight = |copies: usize| u16::try_from(copies * body.len() / 1024 + 1).ok();
        if weight(2).is_none() {
            return;
        }
        let file = BodyFile::new(body);
        let Some(weight) = weight(if file.is_some() { 2 } else { 1 }) else { return };
        let entry = FrontEntry {
            hash,
            header: header.clone(),
            head: answer::stored_head(header),
            body: body.clone(),
            file,
            epoch: meta.epoch(),
            fresh_until: meta.fresh_until(),
            passthrough: header.headers.contains_key(answer::PASSTHROUGH_HEADER),
            fallback: header.headers.contains_key(answer::FALLBACK_HEADER),
        };
        self.map.put(hash, Arc::new(entry), weight);
        if self.removals() != removals_before {
            // a removal ran since the storage read: what was read may be what it removed
            self.map.remove(&hash);
        }
    }

    pub(super) fn remove(&self, hash: u128) {
        self.removals.fetch_add(1, Ordering::SeqCst);
        self.map.remove(&hash);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn meta(fresh_for: i64, content_length: bool) -> CacheMeta {
        let now = SystemTime::now();
        let fresh_until = if fresh_for >= 0 {
            now + std::time::Duration::from_secs(fresh_for as u64)
        } else {
            now - std::time::Duration::from_secs(fresh_for.unsigned_abs())
        };
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("etag", "\"abc\"").unwrap();
        if content_length {
            h.insert_header("content-length", "4").unwrap();
        }
        CacheMeta::new(fresh_until, now - std::time::Duration::from_secs(7), 0, 0, h)
    }

    #[test]
    fn front_serves_fresh_hits_with_age() {
        let f = Front::new(1 << 20).unwrap();
        let body = Bytes::from_static(b"body");
        f.put(1, &meta(60, true), &body, f.removals());
        let e = f.get(1, SystemTime::now()).unwrap();
        assert_eq!(e.body(), &body);
        let h = e.header(SystemTime::now()).unwrap();
        assert_eq!(h.version, http::Version::HTTP_11);
        assert_eq!(h.headers["age"], "7");
        assert_eq!(h.headers["etag"], "\"abc\"");
        assert!(f.get(2, SystemTime::now()).is_none(), "other keys miss");
        // past its freshness it is left to pingora (stale handling)
        assert!(f.get(1, SystemTime::now() + std::time::Duration::from_secs(61)).is_none());
    }

    #[test]
    fn front_skips_stale_and_unframed_entries() {
        let f = Front::new(1 << 20).unwrap();
        let body = Bytes::from_static(b"body");
        f.put(1, &meta(-1, true), &body, f.removals());
        f.put(2, &meta(60, false), &body, f.removals());
        assert!(f.get(1, SystemTime::now()).is_none());
        assert!(f.get(2, SystemTime::now()).is_none());
        assert!(Front::new(1024).is_none(), "too small to bother");
    }

    #[test]
    fn front_removal_wins_over_a_racing_fill() {
        let f = Front::new(1 << 20).unwrap();
        let body = Bytes::from_static(b"body");
        f.put(1, &meta(60, true), &body, f.removals());
        f.remove(1);
        assert!(f.get(1, SystemTime::now()).is_none());
        // a lookup that read the object before a purge ran must not put it back
        let before = f.removals();
        f.remove(3);
        f.put(1, &meta(60, true), &body, before);
        assert!(f.get(1, SystemTime::now()).is_none());
    }
}

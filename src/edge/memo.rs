//! Admissions of recent request heads, per thread (a connection stays on its thread).
//!
//! Admission — signature HMAC, parsing the options, the canonical request, the cache key
//! hash — was 11 % of the CPU of a hit (`perf`, 12 KB hits at 64 connections), and a CDN
//! asks for the same URL again and again. An entry is reused only for the exact same
//! host, path and `Accept` bytes admitted under the same tenant set (a reload starts a new
//! epoch: keys, hosts and presets may have changed); the caller still checks expiry and the
//! cache generation (a tenant purge), and counts the rate limit. Only admitted requests are
//! kept, at most [`memo::MAX_BYTES`] per thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

use super::Ctx;
use crate::cache::Generation;

pub const MAX_BYTES: usize = 1 << 20;

struct Entry {
    host: Box<str>,
    path: Box<str>,
    accept: Option<Box<[u8]>>,
    ctx: Ctx,
    /// The tenant set's epoch at admission.
    epoch: u64,
    generation: Generation,
    key: u128,
}

#[derive(Default)]
struct Memo {
    hasher: RandomState,
    map: HashMap<u64, Entry>,
    bytes: usize,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

fn size(host: &str, path: &str, accept: Option<&[u8]>) -> usize {
    host.len() + path.len() + accept.map_or(0, <[u8]>::len) + 256
}

/// A context for this request from the admission of the same head under tenant set
/// `epoch`, with the cache generation and key hash it had.
pub fn get(host: &str, path: &str, accept: Option<&[u8]>, epoch: u64) -> Option<(Ctx, Generation, u128)> {
    MEMO.with(|m| {
        let m = m.borrow();
        let e = m.map.get(&m.hasher.hash_one((host, path, accept)))?;
        (&*e.host == host && &*e.path == path && e.accept.as_deref() == accept && e.epoch == epoch)
            .then(|| (e.ctx.again(), e.generation, e.key))
    })
}

/// Keeps the admission of a head, made under tenant set `epoch` (or an earlier one).
pub fn put(host: &str, path: &str, accept: Option<&[u8]>, ctx: &Ctx, epoch: u64, generation: Generation, key: u128) {
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        let bytes = size(host, path, accept);
        if m.bytes + bytes > MAX_BYTES {
            // full: start over (cheaper than tracking recency on every hit)
            m.map.clear();
            m.bytes = 0;
        }
        let hash = m.hasher.hash_one((host, path, accept));
        let entry = Entry {
            host: host.into(),
            path: path.into(),
            accept: accept.map(Into::into),
            ctx: ctx.clone(),
            epoch,
            generation,
            key,
        };
        if let Some(old) = m.map.insert(hash, entry) {
            m.bytes -= size(&old.host, &old.path, old.accept.as_deref());
        }
        m.bytes += bytes;
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::edge::Ctx;

    #[test]
    fn the_memo_answers_only_the_exact_same_head() {
        let mut ctx = Ctx::new();
        ctx.canonical = "w:100/plain/a.jpg".into();
        let gen = Generation { tenant: 3, source: 1 };
        put("img.test", "/sig/w:100/plain/a.jpg", Some(b"image/webp"), &ctx, 7, gen, 42);
        let (got, generation, key) = get("img.test", "/sig/w:100/plain/a.jpg", Some(b"image/webp"), 7).unwrap();
        assert_eq!((got.canonical.as_str(), generation, key), ("w:100/plain/a.jpg", gen, 42));
        assert!(get("img.test", "/sig/w:100/plain/a.jpg", None, 7).is_none(), "another Accept");
        assert!(get("img.test", "/sig/w:100/plain/a.jpg", Some(b"image/avif"), 7).is_none());
        assert!(get("other.test", "/sig/w:100/plain/a.jpg", Some(b"image/webp"), 7).is_none(), "another host");
        assert!(get("img.test", "/sig/w:101/plain/a.jpg", Some(b"image/webp"), 7).is_none(), "another path");
        assert!(get("img.test", "/sig/w:100/plain/a.jpg", Some(b"image/webp"), 8).is_none(), "after a reload");
    }

    #[test]
    fn the_memo_stays_within_its_budget() {
        let ctx = Ctx::new();
        let long = "x".repeat(4000);
        for i in 0..2 * MAX_BYTES / 4000 {
            put("img.test", &format!("/{i}/{long}"), None, &ctx, 0, Generation::default(), i as u128);
        }
        // the budget holds about 250 such entries: the first ones are gone, the last is there
        assert!(get("img.test", &format!("/0/{long}"), None, 0).is_none());
        let last = 2 * MAX_BYTES / 4000 - 1;
        assert_eq!(get("img.test", &format!("/{last}/{long}"), None, 0).map(|e| e.2), Some(last as u128));
    }
}

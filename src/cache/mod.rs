//! The edge cache: a `pingora_cache::Storage` over foyer's hybrid cache (memory tier +
//! block-based disk tier that survives restarts) in [`storage`], the cache lock, the cache
//! key, and the per-tenant cache generations ([`generations`]) that make "purge a whole
//! tenant" O(1).
//!
//! Entries are whole, complete responses (render never streams), so storage is buffered
//! and seekable. Storage failures degrade to a miss, never to a failed request.
//!
//! In front of all that sits [`front::Front`]: fresh hits as ready-to-send responses, so
//! the edge answers a repeated hit without pingora-cache's lookup machinery (header
//! decompression, meta decoding, the hit state machine); large bodies also as sealed files
//! for `sendfile` ([`body_file`]).

pub mod body_file;
pub mod front;
pub mod generations;
pub mod shared;
pub mod storage;

use std::sync::Arc;

use pingora_cache::key::{CacheHashKey, CacheKey};
use pingora_cache::lock::CacheKeyLockImpl;

use crate::config;
pub use front::FrontEntry;
pub use generations::{Generation, Generations};
pub use shared::SharedStore;
pub use storage::HybridStorage;

/// What the cache did for one answer: the `X-Cache` header, the metrics' `cache` label and
/// the usage counters all come from this one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Served from the cache (front, memory or disk), fresh or revalidated.
    Hit,
    /// Sent to render (cacheable or not).
    Miss,
    /// An expired copy served because render or the origin failed (`stale-if-error`).
    Stale,
    /// An expired copy confirmed by render.
    Revalidated,
    /// Neither looked up nor rendered (a tenant with the cache off answered by the edge).
    Bypass,
    /// Rejected before the cache was consulted.
    None,
}

impl Outcome {
    /// The metrics' and the request log's `cache` label.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Bypass => "bypass",
            Outcome::None => "none",
        }
    }

    /// The `X-Cache` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            Outcome::Hit | Outcome::Revalidated => "HIT",
            Outcome::Stale => "STALE",
            Outcome::Miss => "MISS",
            Outcome::Bypass | Outcome::None => "BYPASS",
        }
    }

    /// Answered from the cache: counted as a hit in usage.
    pub fn is_hit(self) -> bool {
        matches!(self, Outcome::Hit | Outcome::Stale | Outcome::Revalidated)
    }
}

/// Builds the cache key: tenant ‖ tenant generation ‖ source generation ‖ canonical request
/// ‖ output format, length-prefixed so no two different tuples frame to the same bytes. The
/// tenant id is also the user tag.
pub fn key(tenant: &str, generation: Generation, canonical: &str, format: &str) -> CacheKey {
    let mut primary = Vec::with_capacity(tenant.len() + canonical.len() + format.len() + 28);
    primary.extend_from_slice(&(tenant.len() as u32).to_be_bytes());
    primary.extend_from_slice(tenant.as_bytes());
    primary.extend_from_slice(&generation.tenant.to_be_bytes());
    // a source never purged keeps the key it had before source generations existed
    if generation.source != 0 {
        primary.extend_from_slice(&generation.source.to_be_bytes());
    }
    for part in [canonical, format] {
        primary.extend_from_slice(&(part.len() as u32).to_be_bytes());
        primary.extend_from_slice(part.as_bytes());
    }
    CacheKey::new(primary, tenant)
}

/// The request part of a cache key: the canonical request, and the watermark's identity
/// when it draws one (a new watermark file makes new entries).
pub fn key_request<'a>(canonical: &'a str, watermark_id: Option<&str>) -> std::borrow::Cow<'a, str> {
    match watermark_id {
        Some(id) => format!("{canonical}\nwm={id}").into(),
        None => canonical.into(),
    }
}

/// The format component of an `/info` answer's key.
pub const INFO_FORMAT: &str = "json";

/// Every output-format component a key can have, for purging all variants of a URL.
pub const FORMAT_VARIANTS: &[&str] = &["src", "jpeg", "png", "webp", "gif", "avif"];

/// How a source is named in its generation: origin and key, as in a canonical request.
pub fn source_id(source: &crate::options::Source) -> String {
    format!("{}:{}", source.origin, source.key)
}

/// The hash that identifies `key` in storage.
pub fn key_hash(key: &CacheKey) -> u128 {
    hash_of(key)
}

pub(crate) fn hash_of(key: &impl CacheHashKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

/// Process-wide cache state: pingora wants `&'static` storage and lock.
pub struct EdgeCache {
    pub storage: &'static HybridStorage,
    pub lock: &'static CacheKeyLockImpl,
    pub max_object: usize,
    pub generations: Generations,
    /// The fleet's shared derivative store (`cache.shared`), read and written by render.
    pub shared: Option<Arc<SharedStore>>,
}

impl EdgeCache {
    /// Fails when the generations file is unreadable: starting without it would serve
    /// purged entries again.
    pub fn new(settings: &config::Cache) -> Result<Self, String> {
        let generations = Generations::load(settings.disk.as_ref().map(|d| d.path.join("generations.json")))?;
        let storage: &'static HybridStorage = Box::leak(Box::new(HybridStorage::new(settings.clone())));
        let lock: &'static CacheKeyLockImpl =
            Box::leak(pingora_cache::lock::CacheLock::new_boxed(settings.lock_timeout) as Box<CacheKeyLockImpl>);
        let shared = match &settings.shared {
            Some(s) => Some(Arc::new(SharedStore::new(s, settings.max_object_bytes)?)),
            None => None,
        };
        Ok(EdgeCache { storage, lock, max_object: settings.max_object_bytes, generations, shared })
    }

    /// The key of a request for `source` (`origin:key`, see [`source_id`]).
    pub fn key(&self, tenant: &str, source: &str, canonical: &str, format: &str) -> CacheKey {
        key(tenant, self.generations.of(tenant, source), canonical, format)
    }

    /// Removes every format variant of one request; returns how many existed and the
    /// hashes of every variant's key (present here or not: other nodes may hold them).
    pub async fn purge_request(&self, tenant: &str, source: &str, canonical: &str) -> (usize, Vec<u128>) {
        let hashes = FORMAT_VARIANTS.iter().map(|f| self.variant_hash(tenant, source, canonical, f)).collect();
        // concurrently: with a shared store each variant is also a delete there
        let purged =
            futures::future::join_all(FORMAT_VARIANTS.iter().map(|f| self.purge_variant(tenant, source, canonical, f)))
                .await;
        (purged.into_iter().filter(|&p| p).count(), hashes)
    }

    /// The storage hash of one variant's key under the current generations.
    pub fn variant_hash(&self, tenant: &str, source: &str, canonical: &str, format: &str) -> u128 {
        hash_of(&self.key(tenant, source, canonical, format))
    }

    /// Removes one entry, here and in the shared store; whether it existed here.
    pub async fn purge_variant(&self, tenant: &str, source: &str, canonical: &str, format: &str) -> bool {
        let hash = hash_of(&self.key(tenant, source, canonical, format));
        if let Some(shared) = &self.shared {
            shared.delete(tenant, &format!("{hash:032x}")).await;
        }
        self.storage.remove(hash).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_frames_components() {
        let g = |tenant, source| Generation { tenant, source };
        assert_ne!(key("ab", g(0, 0), "c", "d").combined_bin(), key("a", g(0, 0), "bc", "d").combined_bin());
        assert_ne!(
            key("t", g(0, 0), "/plain/x:y", "src").combined_bin(),
            key("t", g(1, 0), "/plain/x:y", "src").combined_bin()
        );
        assert_ne!(
            key("t", g(0, 0), "/plain/x:y", "src").combined_bin(),
            key("t", g(0, 1), "/plain/x:y", "src").combined_bin()
        );
        assert_eq!(
            key("t", g(3, 2), "/plain/x:y", "-").combined_bin(),
            key("t", g(3, 2), "/plain/x:y", "-").combined_bin()
        );
    }
}

//! The edge cache: a bounded in-memory `pingora_cache::Storage` on TinyUFO (S3-FIFO +
//! TinyLFU, lock-free), the cache lock, and the cache key. Entries are whole, complete
//! responses (the render service never streams), so storage is buffered and seekable.

use std::any::Any;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use pingora_cache::key::{CacheHashKey, CacheKey, CompactCacheKey};
use pingora_cache::lock::CacheKeyLockImpl;
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheMeta, PurgeType, Storage};
use pingora_error::{Error, ErrorType, Result};
use tinyufo::TinyUfo;

use crate::metrics;

/// Builds the cache key: tenant ‖ canonical request ‖ output format, length-prefixed so no
/// two different triples frame to the same bytes. The tenant id is also the user tag.
pub fn key(tenant: &str, canonical: &str, format: &str) -> CacheKey {
    let mut primary = Vec::with_capacity(tenant.len() + canonical.len() + format.len() + 12);
    for part in [tenant, canonical, format] {
        primary.extend_from_slice(&(part.len() as u32).to_be_bytes());
        primary.extend_from_slice(part.as_bytes());
    }
    CacheKey::new(primary, tenant)
}

/// TinyUFO weights are u16, so sizes are counted in KiB (objects up to 64 MiB).
const WEIGHT_UNIT: usize = 1024;

fn weight_units(bytes: usize) -> u16 {
    u16::try_from(bytes.div_ceil(WEIGHT_UNIT)).unwrap_or(u16::MAX)
}

struct Entry {
    /// Full 128-bit key, checked on lookup: TinyUFO indexes by a 64-bit hash only, and a
    /// collision must never serve one tenant's object to another.
    key: u128,
    meta: (Vec<u8>, Vec<u8>),
    body: Bytes,
}

/// Bounded in-memory storage; weight = body + meta bytes.
pub struct MemoryStorage {
    map: TinyUfo<u128, Arc<Entry>>,
    max_object: usize,
    bytes: AtomicUsize,
    items: AtomicUsize,
}

impl MemoryStorage {
    pub fn new(capacity_bytes: usize, max_object: usize) -> Self {
        // TinyUFO sizes its admission sketch from the expected item count
        let estimated_items = (capacity_bytes / (32 << 10)).max(1024);
        MemoryStorage {
            map: TinyUfo::new(capacity_bytes.div_ceil(WEIGHT_UNIT), estimated_items),
            max_object,
            bytes: AtomicUsize::new(0),
            items: AtomicUsize::new(0),
        }
    }

    fn get(&self, key: u128) -> Option<Arc<Entry>> {
        self.map.get(&key).filter(|e| e.key == key)
    }

    fn put(&self, entry: Entry) {
        let weight = entry.body.len() + entry.meta.0.len() + entry.meta.1.len();
        let key = entry.key;
        if let Some(old) = self.map.remove(&key) {
            self.account_removed(&old);
        }
        self.bytes.fetch_add(weight, Ordering::Relaxed);
        self.items.fetch_add(1, Ordering::Relaxed);
        let evicted = self.map.put(key, Arc::new(entry), weight_units(weight));
        for kv in evicted {
            self.account_removed(&kv.data);
            metrics::cache_evicted(1);
        }
        self.publish();
    }

    fn remove(&self, key: u128) -> bool {
        match self.map.remove(&key) {
            Some(old) => {
                self.account_removed(&old);
                self.publish();
                true
            }
            None => false,
        }
    }

    fn account_removed(&self, e: &Entry) {
        let weight = e.body.len() + e.meta.0.len() + e.meta.1.len();
        self.bytes.fetch_sub(weight, Ordering::Relaxed);
        self.items.fetch_sub(1, Ordering::Relaxed);
    }

    fn publish(&self) {
        metrics::cache_size(self.bytes.load(Ordering::Relaxed), self.items.load(Ordering::Relaxed));
    }

    pub fn items(&self) -> usize {
        self.items.load(Ordering::Relaxed)
    }
}

fn hash_of(key: &impl CacheHashKey) -> u128 {
    u128::from_be_bytes(key.combined_bin())
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let Some(entry) = self.get(hash_of(key)) else {
            return Ok(None);
        };
        let meta = CacheMeta::deserialize(&entry.meta.0, &entry.meta.1)?;
        let len = entry.body.len();
        Ok(Some((meta, Box::new(Hit { body: entry.body.clone(), start: 0, end: len, done: false }))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        Ok(Box::new(Miss { storage: self, key: hash_of(key), meta: meta.serialize()?, body: BytesMut::new() }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let key: &CompactCacheKey = target.key();
        Ok(if self.remove(hash_of(key)) { PurgeOutcome::Purged(None) } else { PurgeOutcome::NotFound })
    }

    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let hash = hash_of(key);
        let Some(old) = self.get(hash) else {
            return Ok(false);
        };
        self.put(Entry { key: hash, meta: meta.serialize()?, body: old.body.clone() });
        Ok(true)
    }

    fn support_streaming_partial_write(&self) -> bool {
        // whole objects only: a reader never sees a half-written image
        false
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

struct Hit {
    body: Bytes,
    start: usize,
    end: usize,
    done: bool,
}

#[async_trait]
impl HandleHit for Hit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let len = self.body.len();
        let end = end.map_or(len, |e| e.min(len));
        if start >= len || start > end {
            return Error::e_explain(ErrorType::InternalError, "seek out of range");
        }
        self.start = start;
        self.end = end;
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

struct Miss {
    storage: &'static MemoryStorage,
    key: u128,
    meta: (Vec<u8>, Vec<u8>),
    body: BytesMut,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.body.len() + data.len() > self.storage.max_object {
            // dropping the handler without finish() discards the partial object
            return Error::e_explain(ErrorType::InternalError, "object exceeds cache.max_object");
        }
        self.body.extend_from_slice(&data);
        Ok(())
    }

    async fn finish(self: Box<Self>) -> Result<MissFinishType> {
        let size = self.body.len();
        self.storage.put(Entry { key: self.key, meta: self.meta, body: self.body.freeze() });
        Ok(MissFinishType::Created(size))
    }
}

/// Process-wide cache singletons: pingora wants `&'static` storage and lock.
pub struct EdgeCache {
    pub storage: &'static MemoryStorage,
    pub lock: &'static CacheKeyLockImpl,
    pub max_object: usize,
}

impl EdgeCache {
    pub fn new(capacity_bytes: usize, max_object: usize, lock_timeout: std::time::Duration) -> Self {
        let storage: &'static MemoryStorage = Box::leak(Box::new(MemoryStorage::new(capacity_bytes, max_object)));
        let lock: &'static CacheKeyLockImpl =
            Box::leak(pingora_cache::lock::CacheLock::new_boxed(lock_timeout) as Box<CacheKeyLockImpl>);
        EdgeCache { storage, lock, max_object }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn key_frames_components() {
        let a = key("ab", "c", "d");
        let b = key("a", "bc", "d");
        assert_ne!(a.combined_bin(), b.combined_bin());
        assert_eq!(key("t", "/plain/x:y", "-").combined_bin(), key("t", "/plain/x:y", "-").combined_bin());
    }

    #[test]
    fn storage_is_bounded() {
        let s = MemoryStorage::new(100_000, 50_000);
        for i in 0..100u128 {
            s.put(Entry { key: i, meta: (vec![], vec![]), body: Bytes::from(vec![0u8; 10_000]) });
        }
        assert!(s.bytes.load(Ordering::Relaxed) <= 100_000, "{}", s.bytes.load(Ordering::Relaxed));
        assert!(s.items() <= 10);
    }
}

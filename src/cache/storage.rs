//! The storage tiers behind pingora-cache: foyer's hybrid cache (memory + block-based
//! disk) as a `pingora_cache::Storage`, whole objects only, opened lazily after any fork.

use std::any::Any;
use std::collections::HashSet;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use foyer::{
    BlockEngineConfig, DeviceBuilder, Event, EventListener, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, RecoverMode,
};
use pingora_cache::key::CacheKey;
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheMeta, PurgeType, Storage};
use pingora_error::{Error, ErrorType, Result};
use tokio::sync::OnceCell;

use super::front::{Front, FrontEntry, FRONT_SHARE};
use super::hash_of;
use crate::config;
use crate::metrics;

/// A stored response: pingora's two meta blobs and the body.
#[derive(Clone, Debug)]
pub struct Object {
    meta0: Bytes,
    meta1: Bytes,
    body: Bytes,
}

impl Object {
    fn weight(&self) -> usize {
        self.meta0.len() + self.meta1.len() + self.body.len()
    }
}

fn write_part(w: &mut impl Write, b: &[u8]) -> foyer::Result<()> {
    w.write_all(&(b.len() as u32).to_le_bytes()).map_err(foyer::Error::io_error)?;
    w.write_all(b).map_err(foyer::Error::io_error)
}

fn read_part(r: &mut impl Read) -> foyer::Result<Bytes> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(foyer::Error::io_error)?;
    let len = u32::from_le_bytes(len) as usize;
    // a corrupt length must not become a huge allocation
    if len > 256 << 20 {
        return Err(foyer::Error::io_error(std::io::Error::new(std::io::ErrorKind::InvalidData, "entry too large")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(foyer::Error::io_error)?;
    Ok(Bytes::from(buf))
}

impl foyer::Code for Object {
    fn encode(&self, w: &mut impl Write) -> foyer::Result<()> {
        write_part(w, &self.meta0)?;
        write_part(w, &self.meta1)?;
        write_part(w, &self.body)
    }

    fn decode(r: &mut impl Read) -> foyer::Result<Self> {
        Ok(Object { meta0: read_part(r)?, meta1: read_part(r)?, body: read_part(r)? })
    }

    fn estimated_size(&self) -> usize {
        12 + self.weight()
    }
}

/// Objects in the memory tier: inserts minus departures (foyer reports every departure,
/// replacements included).
static MEMORY_ITEMS: AtomicI64 = AtomicI64::new(0);

/// Counts memory-tier departures and evictions for metrics.
struct Evictions;

impl EventListener for Evictions {
    type Key = u128;
    type Value = Object;

    fn on_leave(&self, reason: Event, _key: &u128, _value: &Object) {
        MEMORY_ITEMS.fetch_sub(1, Ordering::Relaxed);
        if matches!(reason, Event::Evict) {
            metrics::cache_evicted(1);
        }
    }
}

/// Hybrid memory + disk storage, opened lazily on first use so that nothing spawns
/// threads before pingora daemonizes (forking loses threads).
pub struct HybridStorage {
    settings: config::Cache,
    cache: OnceCell<HybridCache<u128, Object>>,
    /// Disk I/O already reported, to turn foyer's running totals into counter increments.
    disk_reported: [AtomicUsize; 2],
    /// Ready-to-send fresh hits; `None` when the memory budget is zero.
    front: Option<Front>,
    /// Set once a close has completed, so the final close does not close twice.
    closed: AtomicBool,
    /// Keys purged by the fleet while this node was down: lookups miss them until
    /// [`Self::remove_held`] has removed them from the disk tier (which opens lazily).
    held: std::sync::RwLock<HashSet<u128>>,
    /// Whether `held` may be non-empty: keeps the lock off the hit path.
    holding: AtomicBool,
}

/// foyer's own runtime for disk I/O, created on first use (after any fork).
static FOYER_RUNTIME: OnceLock<Option<tokio::runtime::Runtime>> = OnceLock::new();

impl HybridStorage {
    pub fn new(settings: config::Cache) -> Self {
        let front = Front::new(settings.memory_bytes / FRONT_SHARE);
        HybridStorage {
            settings,
            cache: OnceCell::new(),
            disk_reported: [AtomicUsize::new(0), AtomicUsize::new(0)],
            front,
            closed: AtomicBool::new(false),
            held: std::sync::RwLock::new(HashSet::new()),
            holding: AtomicBool::new(false),
        }
    }

    /// Makes lookups of `hashes` miss until [`Self::remove_held`] ran.
    pub fn hold(&self, hashes: impl IntoIterator<Item = u128>) {
        if let Ok(mut held) = self.held.write() {
            held.extend(hashes);
            self.holding.store(!held.is_empty(), Ordering::Release);
        }
    }

    fn is_held(&self, hash: u128) -> bool {
        // a poisoned lock holds back everything rather than serve a purged key
        self.holding.load(Ordering::Acquire) && self.held.read().map_or(true, |h| h.contains(&hash))
    }

    /// Removes the held keys from every tier (opening the storage if needed), then lets
    /// lookups see their keys again; false if the storage cannot be opened.
    pub async fn remove_held(&self) -> bool {
        let hashes: Vec<u128> = self.held.read().map(|h| h.iter().copied().collect()).unwrap_or_default();
        if !self.forget(&hashes).await {
            return false;
        }
        if let Ok(mut held) = self.held.write() {
            for hash in &hashes {
                held.remove(hash);
            }
            self.holding.store(!held.is_empty(), Ordering::Release);
        }
        true
    }

    /// A fresh, ready-to-send hit for `key`, if the front holds one.
    pub fn front_get(&self, key: &CacheKey, now: SystemTime) -> Option<Arc<FrontEntry>> {
        self.front_get_hashed(hash_of(key), now)
    }

    /// As [`Self::front_get`], for a key hashed before with [`key_hash`].
    pub fn front_get_hashed(&self, hash: u128, now: SystemTime) -> Option<Arc<FrontEntry>> {
        self.front.as_ref()?.get(hash, now)
    }

    async fn open(&self) -> std::result::Result<HybridCache<u128, Object>, String> {
        let s = &self.settings;
        let builder = HybridCacheBuilder::new()
            .with_name("imgedge")
            // write to disk on insert, so a crash or restart keeps what was rendered
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .with_flush_on_close(true)
            .with_event_listener(Arc::new(Evictions))
            .memory(s.memory_bytes)
            .with_weighter(|_k: &u128, v: &Object| v.weight())
            .storage();
        let builder = match &s.disk {
            None => builder,
            Some(disk) => {
                std::fs::create_dir_all(&disk.path).map_err(|e| format!("{}: {e}", disk.path.display()))?;
                let device = FsDeviceBuilder::new(&disk.path)
                    .with_capacity(disk.size_bytes)
                    .build()
                    .map_err(|e| format!("cache device {}: {e}", disk.path.display()))?;
                let runtime = FOYER_RUNTIME.get_or_init(|| {
                    tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(1)
                        .max_blocking_threads(4)
                        .thread_name("imgedge-cache-io")
                        .enable_all()
                        .build()
                        .ok()
                });
                let mut b = builder
                    .with_engine_config(
                        BlockEngineConfig::new(device)
                            .with_block_size(disk.block_size)
                            // entries are removed by purges: without the tombstone log they
                            // would come back after a restart
                            .with_tombstone_log(true),
                    )
                    .with_recover_mode(RecoverMode::Quiet);
                if let Some(rt) = runtime {
                    b = b.with_spawner(rt.handle().clone().into());
                }
                b
            }
        };
        builder.build().await.map_err(|e| format!("cache: {e}"))
    }

    /// The open cache; `None` (and a logged error) if it cannot be opened.
    pub async fn get(&self) -> Option<&HybridCache<u128, Object>> {
        let open = || async {
            let c = self.open().await?;
            metrics::cache_capacity("memory", self.settings.memory_bytes);
            if let Some(d) = &self.settings.disk {
                metrics::cache_capacity("disk", d.size_bytes);
            }
            Ok::<_, String>(c)
        };
        match self.cache.get_or_try_init(open).await {
            Ok(c) => Some(c),
            Err(e) => {
                metrics::cache_error("open");
                tracing::error!(error = %e, "cache unavailable, serving without it");
                None
            }
        }
    }

    /// Flushes the disk tier after every service has stopped. The background service's own
    /// close can be cut short: pingora drops its runtime's tasks once the grace period ends
    /// (0 s in tests), and a write still queued then would be lost on restart.
    pub fn final_close(&self, bound: std::time::Duration) {
        if self.cache.get().is_none() || self.closed.load(Ordering::Acquire) {
            return;
        }
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "cache: no runtime for the final flush");
                return;
            }
        };
        // the timer is made inside the runtime: `timeout` outside one panics
        if rt.block_on(async { tokio::time::timeout(bound, self.close()).await }).is_err() {
            tracing::warn!(seconds = bound.as_secs(), "cache: final flush timed out");
        }
    }

    /// Flushes the disk tier (graceful shutdown).
    pub async fn close(&self) {
        if let Some(c) = self.cache.get() {
            match c.close().await {
                Ok(()) => self.closed.store(true, Ordering::Release),
                Err(e) => tracing::warn!(error = %e, "cache close"),
            }
        }
    }

    pub fn publish_metrics(&self) {
        if let Some(c) = self.cache.get() {
            metrics::cache_size("memory", c.memory().usage(), MEMORY_ITEMS.load(Ordering::Relaxed).max(0));
            let stats = c.storage().statistics();
            for (i, (op, total)) in
                [("write", stats.disk_write_bytes()), ("read", stats.disk_read_bytes())].into_iter().enumerate()
            {
                let before = self.disk_reported[i].swap(total, Ordering::Relaxed);
                metrics::cache_disk_io(op, total.saturating_sub(before));
            }
        }
    }

    async fn read(&self, hash: u128) -> Option<Object> {
        let cache = self.get().await?;
        match cache.get(&hash).await {
            Ok(e) => e.map(|e| e.value().clone()),
            Err(e) => {
                metrics::cache_error("read");
                tracing::warn!(error = %e, "cache read failed, treating as a miss");
                None
            }
        }
    }

    async fn write(&self, hash: u128, obj: Object) {
        if let Some(cache) = self.get().await {
            // a new answer replaces the purged one: nothing of it is left to hold back
            if self.holding.load(Ordering::Acquire) {
                if let Ok(mut held) = self.held.write() {
                    held.remove(&hash);
                    self.holding.store(!held.is_empty(), Ordering::Release);
                }
            }
            MEMORY_ITEMS.fetch_add(1, Ordering::Relaxed);
            cache.insert(hash, obj);
            // after the insert, as in remove(): the front copy (if any) is of the old object
            if let Some(front) = &self.front {
                front.remove(hash);
            }
            self.publish_metrics();
        }
    }

    /// Removes one entry; true if it existed.
    pub async fn remove(&self, hash: u128) -> bool {
        let Some(cache) = self.get().await else { return false };
        let existed = match cache.get(&hash).await {
            Ok(e) => e.is_some(),
            Err(_) => true,
        };
        cache.remove(&hash);
        // after the storage removal: a concurrent lookup then either misses or sees the
        // removal counter move (Front::remove)
        if let Some(front) = &self.front {
            front.remove(hash);
        }
        self.publish_metrics();
        existed
    }

    /// Removes entries from every tier without reading whether they exist (a disk read
    /// each): keys purged on other nodes, most of them never cached here. False if the
    /// storage cannot be opened.
    pub async fn forget(&self, hashes: &[u128]) -> bool {
        let Some(cache) = self.get().await else { return false };
        for hash in hashes {
            cache.remove(hash);
            // after the storage removal, as in remove()
            if let Some(front) = &self.front {
                front.remove(*hash);
            }
        }
        self.publish_metrics();
        true
    }
}

#[async_trait]
impl Storage for HybridStorage {
    async fn lookup(&'static self, key: &CacheKey, _trace: &SpanHandle) -> Result<Option<(CacheMeta, HitHandler)>> {
        let hash = hash_of(key);
        if self.is_held(hash) {
            return Ok(None);
        }
        // read before the storage read: see Front::put
        let removals = self.front.as_ref().map(Front::removals);
        let Some(obj) = self.read(hash).await else {
            return Ok(None);
        };
        let meta = match CacheMeta::deserialize(&obj.meta0, &obj.meta1) {
            Ok(m) => m,
            Err(e) => {
                // an entry written by another version: drop it, serve a miss
                metrics::cache_error("decode");
                tracing::warn!(error = %e, "undecodable cache entry removed");
                self.remove(hash).await;
                return Ok(None);
            }
        };
        if let (Some(front), Some(removals)) = (&self.front, removals) {
            front.put(hash, &meta, &obj.body, removals);
        }
        let len = obj.body.len();
        Ok(Some((meta, Box::new(Hit { body: obj.body, start: 0, end: len, done: false }))))
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let (m0, m1) = meta.serialize()?;
        Ok(Box::new(Miss {
            storage: self,
            key: hash_of(key),
            meta: (Bytes::from(m0), Bytes::from(m1)),
            body: BytesMut::new(),
            expected: meta
                .response_header()
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok()),
            stored: None,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        Ok(if self.remove(hash_of(target.key())).await { PurgeOutcome::Purged(None) } else { PurgeOutcome::NotFound })
    }

    async fn update_meta(&'static self, key: &CacheKey, meta: &CacheMeta, _trace: &SpanHandle) -> Result<bool> {
        let hash = hash_of(key);
        if self.is_held(hash) {
            return Ok(false);
        }
        let Some(old) = self.read(hash).await else {
            return Ok(false);
        };
        let (m0, m1) = meta.serialize()?;
        self.write(hash, Object { meta0: Bytes::from(m0), meta1: Bytes::from(m1), body: old.body }).await;
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
        // pingora passes an exclusive end
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
    storage: &'static HybridStorage,
    key: u128,
    meta: (Bytes, Bytes),
    body: BytesMut,
    /// The response's `Content-Length`: the object is stored as soon as that much arrived.
    expected: Option<usize>,
    /// Stored already (its size): the rest of the response may not add to it.
    stored: Option<usize>,
}

impl Miss {
    /// Makes the object visible to lookups.
    async fn store(&mut self) -> usize {
        let size = self.body.len();
        let body = std::mem::take(&mut self.body).freeze();
        let obj = Object { meta0: self.meta.0.clone(), meta1: self.meta.1.clone(), body };
        self.storage.write(self.key, obj).await;
        self.stored = Some(size);
        size
    }
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.stored.is_some() {
            if data.is_empty() {
                return Ok(());
            }
            // longer than its Content-Length: not an object to keep
            self.storage.remove(self.key).await;
            return Error::e_explain(ErrorType::InternalError, "body longer than its Content-Length");
        }
        if self.body.len() + data.len() > self.storage.settings.max_object_bytes {
            // dropping the handler without finish() discards the partial object
            return Error::e_explain(ErrorType::InternalError, "object exceeds cache.max_object");
        }
        self.body.extend_from_slice(&data);
        // Stored when complete, not at finish(): pingora may forward the last bytes to the
        // client before it finishes the miss, and a client that has the whole answer and
        // asks again (on another connection, so another thread) must get the hit.
        if self.expected == Some(self.body.len()) {
            self.store().await;
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let size = match self.stored {
            Some(size) => size,
            None => self.store().await,
        };
        Ok(MissFinishType::Created(size))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use foyer::Code;

    use super::*;
    use crate::cache::front::tests::meta;
    use crate::cache::key;

    #[test]
    fn object_round_trips_and_rejects_corrupt_lengths() {
        let o = Object {
            meta0: Bytes::from_static(b"m0"),
            meta1: Bytes::from_static(b""),
            body: Bytes::from(vec![7u8; 1000]),
        };
        let mut buf = Vec::new();
        o.encode(&mut buf).unwrap();
        let back = Object::decode(&mut buf.as_slice()).unwrap();
        assert_eq!((back.meta0, back.meta1, back.body), (o.meta0, o.meta1, o.body));
        let corrupt = [0xffu8; 16];
        assert!(Object::decode(&mut corrupt.as_slice()).is_err());
    }

    /// An 8 MiB memory-only storage, for the life of the test process.
    fn memory_only() -> &'static HybridStorage {
        let settings = config::Cache {
            memory_bytes: 8 << 20,
            disk: None,
            max_object_bytes: 1 << 20,
            lock_timeout: std::time::Duration::from_secs(1),
            shared: None,
        };
        Box::leak(Box::new(HybridStorage::new(settings)))
    }

    #[tokio::test]
    async fn storage_lookup_fills_the_front_and_writes_empty_it() {
        let storage = memory_only();
        let k = key("t", crate::cache::Generation::default(), "/plain/a.jpg", "webp");
        let m = meta(60, true);
        let (m0, m1) = m.serialize().unwrap();
        let body = Bytes::from_static(b"body");
        let obj = Object { meta0: Bytes::from(m0), meta1: Bytes::from(m1), body: body.clone() };
        storage.write(hash_of(&k), obj.clone()).await;
        assert!(storage.front_get(&k, SystemTime::now()).is_none(), "filled by hits only");
        let trace = pingora_cache::trace::Span::inactive().handle();
        assert!(storage.lookup(&k, &trace).await.unwrap().is_some());
        assert_eq!(storage.front_get(&k, SystemTime::now()).unwrap().body(), &body);
        storage.write(hash_of(&k), obj).await;
        assert!(storage.front_get(&k, SystemTime::now()).is_none(), "a rewrite drops the old copy");
        storage.lookup(&k, &trace).await.unwrap();
        assert!(storage.remove(hash_of(&k)).await);
        assert!(storage.front_get(&k, SystemTime::now()).is_none(), "a purge drops it");
    }

    #[tokio::test]
    async fn held_keys_miss_until_removed_and_a_new_answer_releases_one() {
        let storage = memory_only();
        let (m0, m1) = meta(60, true).serialize().unwrap();
        let obj = Object { meta0: Bytes::from(m0), meta1: Bytes::from(m1), body: Bytes::from_static(b"old") };
        let trace = pingora_cache::trace::Span::inactive().handle();
        let [purged, kept, rewritten] =
            ["a", "b", "c"].map(|s| key("t", crate::cache::Generation::default(), &format!("/plain/{s}.jpg"), "src"));
        for k in [&purged, &kept, &rewritten] {
            storage.write(hash_of(k), obj.clone()).await;
        }
        storage.hold([hash_of(&purged), hash_of(&rewritten)]);
        assert!(storage.lookup(&purged, &trace).await.unwrap().is_none(), "held back");
        assert!(storage.lookup(&kept, &trace).await.unwrap().is_some());
        storage.write(hash_of(&rewritten), obj.clone()).await;
        assert!(storage.lookup(&rewritten, &trace).await.unwrap().is_some(), "a new answer is served");
        assert!(storage.remove_held().await);
        assert!(storage.lookup(&purged, &trace).await.unwrap().is_none(), "removed from the storage");
        assert!(!storage.remove(hash_of(&purged)).await, "gone");
        assert!(storage.lookup(&rewritten, &trace).await.unwrap().is_some(), "released before, kept");
    }
}

//! The request-path half of metering: in-memory counters per (tenant, month) and the set
//! of billing keys served, sharded so that request threads never wait for each other.
//!
//! Each OS thread is given a shard index on first use (round robin), so with no more
//! threads than shards every thread locks its own mutex: uncontended, no I/O, no
//! allocation beyond hash-table growth. The flusher swaps each shard's contents out under
//! that shard's lock once per interval, so every event lands in exactly one drained
//! snapshot: counts are neither lost nor duplicated inside the process.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use super::month::Month;
use super::telemetry::{self, CONTENT_TYPE_COUNT, LATENCY_BUCKETS, OTHER, TOP_SITES};
use super::BillingKey;
use crate::config::Credits;

/// What a request asked for; credits are configured per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// An image transform (every URL today).
    Transform,
    /// Facts about a source: `/info/{signature}/…`.
    Info,
    /// A `/grid` of this many sources: priced per source.
    Grid(u8),
}

/// How the cache took part in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Answered from the cache (fresh, stale or revalidated).
    Hit,
    /// Went to the render service.
    Miss,
    /// Neither: rejected by the edge before the cache.
    None,
}

/// One finished edge request, as the edge's `logging` hook sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub tenant: &'a str,
    pub operation: Operation,
    /// HTTP status sent; 0 when no response was written.
    pub status: u16,
    /// The tenant's fallback image answered instead of an error (whatever `status` says).
    pub fallback: bool,
    pub cache: CacheOutcome,
    pub bytes_out: u64,
    /// The billing key of a successfully served transform (`None` for errors and
    /// rejected requests).
    pub billing_key: Option<BillingKey>,
    /// Telemetry: the calling site (`Origin`, else `Referer` host), the index of the
    /// answer's content type in [`telemetry::CONTENT_TYPES`], the request's duration.
    pub site: Option<&'a str>,
    pub content_type: usize,
    pub micros: u64,
}

impl Request<'_> {
    /// 1xx-3xx are successes; anything else (and no response at all, and a fallback
    /// image) is an error.
    pub fn is_error(&self) -> bool {
        self.fallback || !(100..400).contains(&self.status)
    }
}

/// Per (tenant, month) sums. Credits are in thousandths so that sums are exact.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub requests: u64,
    pub bytes_out: u64,
    pub hits: u64,
    pub misses: u64,
    pub renders: u64,
    pub errors: u64,
    pub credits_milli: u64,
    /// Of `requests` and `credits_milli`: those of `/info` requests.
    pub info_requests: u64,
    pub info_credits_milli: u64,
    /// Requests per latency bucket ([`telemetry::LATENCY_BUCKETS_MS`]).
    pub latency: [u64; LATENCY_BUCKETS],
    /// Requests and body bytes per content type ([`telemetry::CONTENT_TYPES`]).
    pub types: [[u64; 2]; CONTENT_TYPE_COUNT],
}

impl Counters {
    pub fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        self.bytes_out += o.bytes_out;
        self.hits += o.hits;
        self.misses += o.misses;
        self.renders += o.renders;
        self.errors += o.errors;
        self.credits_milli += o.credits_milli;
        self.info_requests += o.info_requests;
        self.info_credits_milli += o.info_credits_milli;
        for (a, b) in self.latency.iter_mut().zip(o.latency) {
            *a += b;
        }
        for (a, b) in self.types.iter_mut().zip(o.types) {
            a[0] += b[0];
            a[1] += b[1];
        }
    }
}

/// Requests by calling site of one slot: at most [`TOP_SITES`] names, the rest [`OTHER`].
pub type Sites = HashMap<Box<str>, u64, Fx>;

/// Adds `n` requests of `site` to `sites`, keeping it bounded.
pub fn add_site(sites: &mut Sites, site: &str, n: u64) {
    if site.bytes().any(|b| b.is_ascii_uppercase()) {
        return add_site(sites, &site.to_ascii_lowercase(), n);
    }
    if let Some(c) = sites.get_mut(site) {
        *c += n;
        return;
    }
    let name = if sites.len() as u64 >= TOP_SITES { OTHER } else { site };
    *sites.entry(Box::from(name)).or_default() += n;
}

/// A small multiplicative hasher: keys here are integers, mostly already uniform hashes,
/// so SipHash's DoS resistance buys nothing and costs most of the hot path.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.add(i as u64);
        self.add((i >> 64) as u64);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type Fx = BuildHasherDefault<FxHasher>;

/// Tenant index (into [`Recorder::tenants`]) and month packed into one word.
pub type Slot = u64;

pub fn slot(tenant: u32, month: Month) -> Slot {
    (u64::from(tenant) << 32) | u64::from(month.0)
}

pub fn unslot(s: Slot) -> (u32, Month) {
    ((s >> 32) as u32, Month(s as u32))
}

/// Counters and served billing keys, by slot. What a shard holds and what a drain returns.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    pub counters: HashMap<Slot, Counters, Fx>,
    pub keys: HashSet<(Slot, BillingKey), Fx>,
    /// The keys of `keys` that are `/info` requests (unique info requests).
    pub info_keys: HashSet<(Slot, BillingKey), Fx>,
    pub sites: HashMap<Slot, Sites, Fx>,
}

impl Snapshot {
    pub fn is_empty(&self) -> bool {
        self.counters.is_empty() && self.keys.is_empty()
    }

    pub fn merge(&mut self, other: Snapshot) {
        if self.is_empty() {
            *self = other;
            return;
        }
        for (s, c) in other.counters {
            self.counters.entry(s).or_default().add(&c);
        }
        self.keys.extend(other.keys);
        self.info_keys.extend(other.info_keys);
        for (s, sites) in other.sites {
            let mine = self.sites.entry(s).or_default();
            for (site, n) in sites {
                add_site(mine, &site, n);
            }
        }
    }

    /// Total requests, for logs and tests.
    pub fn requests(&self) -> u64 {
        self.counters.values().map(|c| c.requests).sum()
    }
}

#[derive(Default)]
struct ShardData {
    snap: Snapshot,
    /// Sizes at the last drain: the owning thread reserves this much on its first event
    /// after a drain (one allocation per interval, in its own allocator arena), so the
    /// tables do not regrow on the request path and a drain holds each lock for a swap.
    hint: (usize, usize),
}

impl ShardData {
    #[inline]
    fn reserve(&mut self) {
        if self.snap.counters.capacity() == 0 {
            self.snap.counters.reserve(self.hint.0.max(8));
        }
    }
}

/// A shard on its own cache lines, so that two threads' mutexes never share one.
#[repr(align(128))]
struct Shard(Mutex<ShardData>);

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ShardData> {
        // a panic while holding the lock leaves plain counters behind: keep using them
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A tenant as metering knows it.
#[derive(Debug, Clone)]
pub struct TenantBilling {
    pub id: Arc<str>,
    pub credits: Credits,
}

/// Every tenant metering has known in this process, by slot index. Only ever appended to:
/// a reload that removes a tenant keeps its row, because counts recorded under its index
/// may still wait in a shard or in the flusher's carry, and a slot names its tenant by index.
#[derive(Debug, Clone, Default)]
pub struct TenantTable {
    list: Vec<TenantBilling>,
    index: HashMap<Box<str>, u32, Fx>,
}

impl TenantTable {
    fn new(list: Vec<TenantBilling>) -> TenantTable {
        let index = list.iter().enumerate().map(|(i, t)| (Box::from(&*t.id), i as u32)).collect();
        TenantTable { list, index }
    }
}

impl std::ops::Deref for TenantTable {
    type Target = [TenantBilling];
    fn deref(&self) -> &[TenantBilling] {
        &self.list
    }
}

/// The process-wide usage aggregator.
pub struct Recorder {
    tenants: ArcSwap<TenantTable>,
    shards: Box<[Shard]>,
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's shard number, assigned round robin on first use.
    static THREAD_SHARD: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

impl Recorder {
    /// `shards` is rounded up to at least 1; a few per core keeps threads apart.
    pub fn new(tenants: Vec<TenantBilling>, shards: usize) -> Recorder {
        let shards = (0..shards.max(1)).map(|_| Shard(Mutex::new(ShardData::default()))).collect();
        Recorder { tenants: ArcSwap::from_pointee(TenantTable::new(tenants)), shards }
    }

    /// A recorder for the configured tenants, with four shards per core (at least 16).
    pub fn for_tenants(tenants: &[Arc<crate::config::Tenant>]) -> Recorder {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let billing = tenants
            .iter()
            .map(|t| TenantBilling { id: Arc::from(t.id.as_str()), credits: t.billing.credits })
            .collect();
        Recorder::new(billing, (cores * 4).max(16))
    }

    /// Every tenant known so far, indexed by slot. Load it after draining: it then names
    /// every slot drained.
    pub fn tenants(&self) -> Arc<TenantTable> {
        self.tenants.load_full()
    }

    /// Applies a reloaded tenant list: new tenants are appended, the prices of known ones
    /// change for requests counted from now on; removed tenants stay (their last counts
    /// may not be flushed yet). Called before the edge can see a new tenant, so its first
    /// request is counted. Reloads are serialised by their caller.
    pub fn update_tenants(&self, tenants: &[Arc<crate::config::Tenant>]) {
        let mut table = TenantTable::clone(&self.tenants.load());
        for t in tenants {
            match table.index.get(t.id.as_str()) {
                Some(&i) => table.list[i as usize].credits = t.billing.credits,
                None => {
                    table.index.insert(Box::from(t.id.as_str()), table.list.len() as u32);
                    table.list.push(TenantBilling { id: Arc::from(t.id.as_str()), credits: t.billing.credits });
                }
            }
        }
        self.tenants.store(Arc::new(table));
    }

    #[inline]
    fn shard(&self) -> &Shard {
        let i = THREAD_SHARD.with(|s| *s) % self.shards.len();
        &self.shards[i]
    }

    #[inline]
    fn tenant(&self, id: &str) -> Option<(u32, Credits)> {
        let table = self.tenants.load();
        let i = *table.index.get(id)?;
        Some((i, table.list[i as usize].credits))
    }

    /// Counts one finished request in the current month.
    #[inline]
    pub fn record(&self, r: &Request<'_>) {
        self.record_in(r, Month::now());
    }

    /// Counts one finished request in `month`. Unknown tenants are ignored: the edge only
    /// reports tenants from the same config.
    pub fn record_in(&self, r: &Request<'_>, month: Month) {
        let Some((idx, c)) = self.tenant(r.tenant) else { return };
        let error = r.is_error();
        // errors cost `error`, hits `hit`, any other success its operation's price
        let credits = if error {
            c.error
        } else if r.cache == CacheOutcome::Hit {
            c.hit
        } else {
            match r.operation {
                Operation::Transform => c.transform,
                Operation::Info => c.info,
                Operation::Grid(n) => c.grid_source * u64::from(n),
            }
        };
        let s = slot(idx, month);
        let mut guard = self.shard().lock();
        guard.reserve();
        let hint_keys = guard.hint.1;
        let shard = &mut guard.snap;
        let e = shard.counters.entry(s).or_default();
        e.requests += 1;
        e.bytes_out += r.bytes_out;
        e.hits += u64::from(r.cache == CacheOutcome::Hit);
        e.misses += u64::from(r.cache == CacheOutcome::Miss);
        e.errors += u64::from(error);
        e.credits_milli += credits;
        if r.operation == Operation::Info {
            e.info_requests += 1;
            e.info_credits_milli += credits;
        }
        e.latency[telemetry::latency_bucket(r.micros)] += 1;
        let t = &mut e.types[r.content_type.min(CONTENT_TYPE_COUNT - 1)];
        t[0] += 1;
        t[1] += r.bytes_out;
        add_site(shard.sites.entry(s).or_default(), r.site.unwrap_or(telemetry::NO_SITE), 1);
        if let (Some(k), false) = (r.billing_key, error) {
            if shard.keys.capacity() == 0 {
                shard.keys.reserve(hint_keys.max(64));
            }
            shard.keys.insert((s, k));
            if r.operation == Operation::Info {
                shard.info_keys.insert((s, k));
            }
        }
    }

    /// Counts one transform actually performed by the render service.
    pub fn record_render(&self, tenant: &str) {
        self.record_render_in(tenant, Month::now());
    }

    pub fn record_render_in(&self, tenant: &str, month: Month) {
        let Some((idx, _)) = self.tenant(tenant) else { return };
        let mut guard = self.shard().lock();
        guard.reserve();
        guard.snap.counters.entry(slot(idx, month)).or_default().renders += 1;
    }

    /// Takes everything counted so far out of every shard.
    pub fn drain(&self) -> Snapshot {
        let mut out = Snapshot::default();
        for shard in self.shards.iter() {
            // O(1) under the lock: empty tables allocate nothing; the owner reserves later
            let taken = {
                let mut g = shard.lock();
                if g.snap.is_empty() {
                    continue;
                }
                g.hint = (g.snap.counters.len(), g.snap.keys.len());
                std::mem::take(&mut g.snap)
            };
            out.merge(taken);
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn credits() -> Credits {
        Credits { transform: 1000, info: 500, hit: 0, error: 0, grid_source: 1000 }
    }

    fn recorder() -> Recorder {
        Recorder::new(
            vec![
                TenantBilling { id: "a".into(), credits: credits() },
                TenantBilling {
                    id: "b".into(),
                    credits: Credits { transform: 2000, info: 500, hit: 250, error: 100, grid_source: 1000 },
                },
            ],
            4,
        )
    }

    fn req(tenant: &str, status: u16, cache: CacheOutcome, key: Option<u128>) -> Request<'_> {
        Request {
            tenant,
            operation: Operation::Transform,
            status,
            fallback: false,
            cache,
            bytes_out: 10,
            billing_key: key.map(BillingKey),
            site: Some("shop.example"),
            content_type: 0,
            micros: 7000,
        }
    }

    #[test]
    fn grids_cost_per_source_and_fallbacks_are_errors() {
        let r = recorder();
        let m = Month::parse("2026-11").unwrap();
        let grid = Request { operation: Operation::Grid(4), ..req("b", 200, CacheOutcome::Miss, Some(1)) };
        r.record_in(&grid, m);
        // a grid hit costs a hit, a failed grid an error, whatever its sources
        r.record_in(&Request { cache: CacheOutcome::Hit, ..grid }, m);
        r.record_in(&Request { status: 404, ..grid }, m);
        // a fallback image: an error (its price, no unique transform) despite its 200
        r.record_in(&Request { fallback: true, ..req("b", 200, CacheOutcome::Miss, Some(2)) }, m);
        let s = r.drain();
        let b = s.counters[&slot(1, m)];
        assert_eq!((b.requests, b.errors), (4, 2));
        assert_eq!(b.credits_milli, 4 * 1000 + 250 + 100 + 100);
        assert_eq!(s.keys.iter().filter(|(slot_, _)| *slot_ == slot(1, m)).count(), 1, "only the grid is unique");
    }

    #[test]
    fn counts_and_credits_per_tenant_and_month() {
        let r = recorder();
        let m = Month::parse("2026-11").unwrap();
        r.record_in(&req("a", 200, CacheOutcome::Miss, Some(1)), m);
        r.record_in(&req("a", 200, CacheOutcome::Hit, Some(1)), m);
        r.record_in(&req("a", 403, CacheOutcome::None, None), m);
        r.record_render_in("a", m);
        r.record_in(&req("b", 200, CacheOutcome::Hit, Some(1)), m);
        r.record_in(&req("b", 502, CacheOutcome::Miss, Some(2)), m);
        r.record_in(&req("a", 200, CacheOutcome::Miss, Some(3)), m.prev());
        r.record_in(&req("nobody", 200, CacheOutcome::Miss, Some(4)), m);
        let s = r.drain();
        let a = s.counters[&slot(0, m)];
        assert_eq!(
            a,
            Counters {
                requests: 3,
                bytes_out: 30,
                hits: 1,
                misses: 1,
                renders: 1,
                errors: 1,
                credits_milli: 1000,
                info_requests: 0,
                info_credits_milli: 0,
                latency: [0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                types: [[3, 30], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0]],
            }
        );
        assert_eq!(s.sites[&slot(0, m)].get("shop.example"), Some(&3));
        let b = s.counters[&slot(1, m)];
        assert_eq!((b.requests, b.errors, b.credits_milli), (2, 1, 250 + 100));
        assert_eq!(s.counters[&slot(0, m.prev())].requests, 1);
        // key 1 in two tenants is two entries; key 2 (an error) is none; key 1 twice in a is one
        let mut keys: Vec<_> = s.keys.iter().copied().collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![(slot(0, m.prev()), BillingKey(3)), (slot(0, m), BillingKey(1)), (slot(1, m), BillingKey(1))]
        );
        assert!(r.drain().is_empty(), "a drain takes everything");
    }

    #[test]
    fn a_reload_adds_tenants_changes_prices_and_keeps_removed_ones_named() {
        let r = recorder();
        let m = Month::parse("2026-11").unwrap();
        r.record_in(&req("b", 200, CacheOutcome::Miss, Some(1)), m);
        r.record_in(&req("c", 200, CacheOutcome::Miss, Some(2)), m);
        let config = crate::config::load_str(
            r#"
listen: {edge: ["127.0.0.1:8080"], render_socket: r.sock}
tenants:
  - {id: c, hosts: [c.test], allow_unsigned: true, origins: {o: {type: local, root: /}}}
  - {id: a, hosts: [a.test], allow_unsigned: true, origins: {o: {type: local, root: /}},
     billing: {credits: {transform: 3}}}
"#,
            std::path::Path::new("/tmp/x.yaml"),
        )
        .unwrap();
        r.update_tenants(&config.tenants);
        r.record_in(&req("a", 200, CacheOutcome::Miss, Some(3)), m);
        r.record_in(&req("c", 200, CacheOutcome::Miss, Some(4)), m);
        let s = r.drain();
        let table = r.tenants();
        let ids: Vec<&str> = table.iter().map(|t| &*t.id).collect();
        assert_eq!(ids, ["a", "b", "c"], "appended, none removed");
        assert_eq!(s.counters[&slot(0, m)].credits_milli, 3000, "the new price");
        assert_eq!(s.counters[&slot(1, m)].requests, 1, "b's count before its removal is kept");
        assert_eq!(s.counters[&slot(2, m)].requests, 1, "c is counted from its first request");
        r.record_in(&req("b", 200, CacheOutcome::Miss, Some(5)), m);
        assert_eq!(r.drain().counters[&slot(1, m)].requests, 1, "the edge decides who is served");
    }

    #[test]
    fn concurrent_recording_and_draining_loses_and_duplicates_nothing() {
        let r = Arc::new(recorder());
        let m = Month::parse("2026-11").unwrap();
        let threads = 4;
        let per = 20_000u64;
        let mut total = Snapshot::default();
        std::thread::scope(|sc| {
            for t in 0..threads {
                let r = r.clone();
                sc.spawn(move || {
                    for i in 0..per {
                        r.record_in(&req("a", 200, CacheOutcome::Hit, Some(u128::from(t * per + i) % 5000)), m);
                    }
                });
            }
            // drain while the writers run
            for _ in 0..50 {
                total.merge(r.drain());
                std::thread::yield_now();
            }
        });
        total.merge(r.drain());
        assert_eq!(total.counters[&slot(0, m)].requests, threads * per);
        assert_eq!(total.counters[&slot(0, m)].bytes_out, threads * per * 10);
        assert_eq!(total.keys.len(), 5000);
        assert_eq!(total.sites[&slot(0, m)]["shop.example"], threads * per);
    }

    #[test]
    fn sites_stay_bounded_and_add_up() {
        let mut sites = Sites::default();
        for i in 0..TOP_SITES + 50 {
            add_site(&mut sites, &format!("S{i}.example"), 2);
        }
        add_site(&mut sites, "s0.EXAMPLE", 1);
        assert_eq!(sites.len() as u64, TOP_SITES + 1);
        assert_eq!(sites["(other)"], 100);
        assert_eq!(sites["s0.example"], 3, "names are kept lower case");
        assert_eq!(sites.values().sum::<u64>(), 2 * (TOP_SITES + 50) + 1);
    }
}

//! Request-path cost of usage counting: what the edge's `logging` hook adds per request.
//!
//! `cargo bench --bench usage`. Cases:
//! * `record_hit` — count a cache hit with its billing key (the common request);
//! * `billing_key_and_record` — the same plus computing the billing key (BLAKE3), which is
//!   what `usage::edge_request` does per successful request;
//! * `record_2_threads` — two threads counting at once, each on its own shard (how
//!   pingora's worker threads run);
//! * `record_2_threads_independent` — the baseline for that: two threads on two separate
//!   recorders (nothing shared at all), i.e. what the machine gives two busy threads;
//! * `record_2_threads_one_shard` — the worst case: two threads forced onto one shard;
//! * `drain_10k` — the flusher taking 10 000 counted requests out of the shards.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use imgedge::config::Credits;
use imgedge::usage::recorder::TenantBilling;
use imgedge::usage::{BillingKey, CacheOutcome, Operation, Recorder, Request};

const TENANTS: usize = 8;
const KEYS: usize = 4096;

fn recorder(shards: usize) -> Recorder {
    let tenants =
        (0..TENANTS).map(|i| TenantBilling { id: format!("tenant-{i}").into(), credits: Credits::default() }).collect();
    Recorder::new(tenants, shards)
}

fn names() -> Vec<String> {
    (0..TENANTS).map(|i| format!("tenant-{i}")).collect()
}

fn canonicals() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("/f:webp/h:{}/rt:fill/w:{}/plain/photos:products/shoe-{i}.jpg", 100 + i % 7, 200 + i))
        .collect()
}

fn hit<'a>(tenant: &'a str, key: BillingKey) -> Request<'a> {
    Request {
        tenant,
        operation: Operation::Transform,
        status: 200,
        fallback: false,
        cache: CacheOutcome::Hit,
        bytes_out: 23_456,
        billing_key: Some(key),
        site: Some("shop.example"),
        content_type: 2,
        micros: 400,
    }
}

/// Two threads each record `iters` hits at once (into `rs[0]` and `rs[1]`, which may be
/// one recorder); the slower thread's time, i.e. the time per hit per thread.
fn two_threads(rs: [&Arc<Recorder>; 2], iters: u64) -> Duration {
    // a spinning start: a futex barrier wakes the threads a millisecond apart, and short
    // samples would then barely overlap
    let ready = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..2)
        .map(|t| {
            let (r, ready) = (rs[t].clone(), ready.clone());
            std::thread::spawn(move || {
                let names = names();
                let keys: Vec<BillingKey> = (0..KEYS as u128).map(|k| BillingKey(k * 0x9e37_79b9_7f4a_7c15)).collect();
                ready.fetch_add(1, Ordering::SeqCst);
                while ready.load(Ordering::SeqCst) < 2 {
                    std::hint::spin_loop();
                }
                let t0 = Instant::now();
                for i in 0..iters as usize {
                    r.record(black_box(&hit(&names[(i + t) % TENANTS], keys[i % KEYS])));
                }
                t0.elapsed()
            })
        })
        .collect();
    // the slower thread's time: both ran concurrently for at least that long
    handles.into_iter().map(|h| h.join().unwrap_or_default()).max().unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let names = names();
    let canon = canonicals();
    let keys: Vec<BillingKey> = canon.iter().map(|s| BillingKey::new("tenant-0", s)).collect();

    let r = recorder(16);
    let mut i = 0usize;
    c.bench_function("record_hit", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            r.record(black_box(&hit(&names[i % TENANTS], keys[i % KEYS])));
        })
    });
    r.drain();

    let mut i = 0usize;
    c.bench_function("billing_key_and_record", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let tenant = &names[i % TENANTS];
            let key = BillingKey::new(tenant, black_box(&canon[i % KEYS]));
            r.record(black_box(&hit(tenant, key)));
        })
    });
    r.drain();

    let sharded = Arc::new(recorder(16));
    c.bench_function("record_2_threads", |b| {
        b.iter_custom(|iters| {
            let d = two_threads([&sharded, &sharded], iters);
            sharded.drain();
            d
        })
    });
    let (ra, rb) = (Arc::new(recorder(16)), Arc::new(recorder(16)));
    c.bench_function("record_2_threads_independent", |b| {
        b.iter_custom(|iters| {
            let d = two_threads([&ra, &rb], iters);
            ra.drain();
            rb.drain();
            d
        })
    });
    let one = Arc::new(recorder(1));
    c.bench_function("record_2_threads_one_shard", |b| {
        b.iter_custom(|iters| {
            let d = two_threads([&one, &one], iters);
            one.drain();
            d
        })
    });

    c.bench_function("drain_10k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                for (i, key) in keys.iter().cycle().take(10_000).enumerate() {
                    r.record(&hit(&names[i % TENANTS], *key));
                }
                let t0 = Instant::now();
                black_box(r.drain());
                total += t0.elapsed();
            }
            total
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);

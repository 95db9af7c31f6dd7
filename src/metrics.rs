//! Every metric imgedge exports, declared here and nowhere else. Names follow Prometheus
//! conventions (base units, `_total`, `_seconds`, `_bytes`); labels are low-cardinality.

use once_cell::sync::Lazy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::cache::Outcome;

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    response_bytes: IntCounter,
    hit_path: IntCounter,
    renders: IntCounterVec,
    render_span: HistogramVec,
    render_phase: HistogramVec,
    renders_in_progress: IntGauge,
    renders_queued: IntGauge,
    origin_errors: IntCounterVec,
    origin_bytes: IntCounter,
    cache_bytes: IntGaugeVec,
    cache_capacity: IntGaugeVec,
    cache_items: IntGaugeVec,
    cache_disk_io: IntCounterVec,
    cache_errors: IntCounterVec,
    cache_lock_wait: Histogram,
    cache_evictions: IntCounterVec,
    shared_store_ops: IntCounterVec,
    shared_store_seconds: HistogramVec,
    tenant_requests: IntCounterVec,
    tenant_response_bytes: IntCounterVec,
    usage_flushes: IntCounterVec,
    usage_deliveries: IntCounterVec,
    usage_spool_pending: IntGauge,
    usage_spool_oldest_age: IntGauge,
    usage_spool_full: IntGauge,
    usage_unspooled_requests: IntGauge,
    usage_last_flush: IntGauge,
    usage_last_delivery: IntGauge,
    request_log_dropped: IntCounter,
    limit_rejections: IntCounterVec,
    unverified_requests: IntCounterVec,
    render_workers: IntGauge,
    render_max_in_flight: IntGauge,
    config_reloads: IntCounterVec,
    config_last_reload_ok: IntGauge,
    config_last_reload_time: IntGauge,
    config_needs_upgrade: IntGaugeVec,
    tenants: IntGauge,
    fleet_purges: IntCounterVec,
    fleet_purge_errors: IntCounterVec,
    fleet_listener_up: IntGauge,
    fleet_purge_seq: IntGauge,
    fleet_hops: IntCounterVec,
    fleet_served: IntCounterVec,
    fleet_peer_up: IntGaugeVec,
    _build: IntGaugeVec,
}

/// Config sections a reload (`SIGHUP`) does not apply: a change there needs a restart or a
/// graceful upgrade. The `section` label of `imgedge_config_needs_upgrade`.
pub const UPGRADE_SECTIONS: &[&str] = &["pingora", "listen", "render", "cache", "usage", "log", "fleet"];

const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let m = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(m.clone())).unwrap_or_else(|e| panic!("register {name}: {e}"));
    m
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let m = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(m.clone())).unwrap_or_else(|e| panic!("register {name}: {e}"));
    m
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let m = IntGauge::new(name, help).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(m.clone())).unwrap_or_else(|e| panic!("register {name}: {e}"));
    m
}

fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    let m = HistogramVec::new(opts, labels).unwrap_or_else(|e| panic!("metric {name}: {e}"));
    r.register(Box::new(m.clone())).unwrap_or_else(|e| panic!("register {name}: {e}"));
    m
}

// Metric definitions are static and valid; a panic here is a programming error caught by
// the first test that touches metrics, never a runtime condition.
static M: Lazy<Metrics> = Lazy::new(|| {
    let r = Registry::new();
    let requests = counter_vec(
        &r,
        "imgedge_http_requests_total",
        "Edge requests answered, by operation (transform, info, or none when rejected before parsing), status class \
         (2xx..5xx, none = no response) and cache outcome (hit, miss, stale, revalidated, bypass, none).",
        &["operation", "status_class", "cache"],
    );
    let request_duration = histogram_vec(
        &r,
        "imgedge_http_request_duration_seconds",
        "Edge request duration from first byte to last, by cache outcome.",
        &["cache"],
    );
    let response_bytes = IntCounter::new("imgedge_http_response_body_bytes_total", "Body bytes sent to clients.")
        .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(response_bytes.clone())).unwrap_or_else(|e| panic!("{e}"));
    let hit_path = IntCounter::new(
        "imgedge_edge_hit_path_requests_total",
        "Edge requests answered by the hit path below pingora's HTTP session (fresh front-cache hits); the rest of \
         imgedge_http_requests_total went through pingora.",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(hit_path.clone())).unwrap_or_else(|e| panic!("{e}"));
    let renders = counter_vec(
        &r,
        "imgedge_renders_total",
        "Render service requests by outcome (ok, passthrough for raw/skp answers, or an error category).",
        &["outcome"],
    );
    let render_span = histogram_vec(
        &r,
        "imgedge_render_span_duration_seconds",
        "Time spent per render span: queue (waiting for a CPU worker), fetch (origin), transform (decode+process+encode).",
        &["span"],
    );
    let render_phase = histogram_vec(
        &r,
        "imgedge_render_phase_seconds",
        "Time per phase of a transform: decode (header, limits, decode with shrink-on-load), process (every \
         step between decode and encode), encode.",
        &["phase"],
    );
    let renders_in_progress = gauge(
        &r,
        "imgedge_renders_in_progress",
        "Render requests being handled (fetching, queued for a CPU worker or transforming).",
    );
    let renders_queued =
        gauge(&r, "imgedge_renders_queued", "Render requests waiting for a CPU worker (a subset of in progress).");
    let origin_errors = counter_vec(
        &r,
        "imgedge_origin_errors_total",
        "Origin fetch failures by kind (not_found, timeout, too_big, error).",
        &["kind"],
    );
    let origin_bytes = IntCounter::new("imgedge_origin_body_bytes_total", "Bytes fetched from origins.")
        .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(origin_bytes.clone())).unwrap_or_else(|e| panic!("{e}"));
    let cache_bytes =
        gauge_vec(&r, "imgedge_cache_size_bytes", "Bytes held by the cache, by tier (memory).", &["tier"]);
    let cache_capacity =
        gauge_vec(&r, "imgedge_cache_capacity_bytes", "Configured cache budget, by tier (memory, disk).", &["tier"]);
    let cache_items = gauge_vec(&r, "imgedge_cache_items", "Objects held by the cache, by tier (memory).", &["tier"]);
    let cache_disk_io = counter_vec(
        &r,
        "imgedge_cache_disk_io_bytes_total",
        "Bytes written to and read from the disk tier, by op (write, read).",
        &["op"],
    );
    let cache_errors = counter_vec(
        &r,
        "imgedge_cache_errors_total",
        "Cache storage failures served as misses, by kind (open, read, decode).",
        &["kind"],
    );
    let cache_lock_wait = Histogram::with_opts(
        HistogramOpts::new(
            "imgedge_cache_lock_wait_seconds",
            "Time requests spent waiting for another request's render of the same key (cache lock).",
        )
        .buckets(LATENCY_BUCKETS.to_vec()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(cache_lock_wait.clone())).unwrap_or_else(|e| panic!("{e}"));
    let cache_evictions =
        counter_vec(&r, "imgedge_cache_evictions_total", "Objects evicted from the cache, by tier.", &["tier"]);
    let shared_store_ops = counter_vec(
        &r,
        "imgedge_shared_store_operations_total",
        "Shared derivative store (cache.shared) operations by op (get, put, delete) and result (hit, miss, ok, \
         error, timeout, dropped when max_writes writes are in flight, corrupt for an unreadable object).",
        &["op", "result"],
    );
    let shared_store_seconds = histogram_vec(
        &r,
        "imgedge_shared_store_seconds",
        "Duration of shared derivative store operations, by op (get, put, delete).",
        &["op"],
    );
    let tenant_requests = counter_vec(
        &r,
        "imgedge_tenant_http_requests_total",
        "Edge requests of tenants with billing.per_tenant_metrics, by tenant, status class and cache outcome.",
        &["tenant", "status_class", "cache"],
    );
    let tenant_response_bytes = counter_vec(
        &r,
        "imgedge_tenant_http_response_body_bytes_total",
        "Body bytes sent to clients for tenants with billing.per_tenant_metrics.",
        &["tenant"],
    );
    let usage_flushes = counter_vec(
        &r,
        "imgedge_usage_flushes_total",
        "Usage flushes by result: spooled, empty, deferred (spool full: counts held in memory), error.",
        &["result"],
    );
    let usage_deliveries = counter_vec(
        &r,
        "imgedge_usage_deliveries_total",
        "Spooled usage batches sent to PostgreSQL, by result: applied, duplicate (already there), collision, error.",
        &["result"],
    );
    let usage_spool_pending =
        gauge(&r, "imgedge_usage_spool_pending_batches", "Usage batches in the spool waiting for PostgreSQL.");
    let usage_spool_oldest_age = gauge(
        &r,
        "imgedge_usage_spool_oldest_pending_age_seconds",
        "Age of the oldest usage batch waiting for PostgreSQL (0 when none).",
    );
    let usage_spool_full = gauge(
        &r,
        "imgedge_usage_spool_full",
        "1 while usage.spool_max_batches batches wait and new counts are held in memory.",
    );
    let usage_unspooled_requests = gauge(
        &r,
        "imgedge_usage_unspooled_requests",
        "Requests counted but held in memory after a failed or deferred flush (lost if the process dies).",
    );
    let usage_last_flush =
        gauge(&r, "imgedge_usage_last_flush_timestamp_seconds", "Unix time of the last batch written to the spool.");
    let usage_last_delivery = gauge(
        &r,
        "imgedge_usage_last_delivery_timestamp_seconds",
        "Unix time of the last batch acknowledged by PostgreSQL.",
    );
    let request_log_dropped = IntCounter::new(
        "imgedge_request_log_dropped_total",
        "Request log lines dropped because the writer was behind (the queue was full).",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(request_log_dropped.clone())).unwrap_or_else(|e| panic!("{e}"));
    let limit_rejections = counter_vec(
        &r,
        "imgedge_limit_rejections_total",
        "Requests refused by overload protection (503) or per-tenant limits (429), by reason.",
        &["reason"],
    );
    let unverified_requests = counter_vec(
        &r,
        "imgedge_unverified_requests_total",
        "Edge requests refused before their signature verified (never charged to a tenant), by tenant (empty for an unknown host) and reason.",
        &["tenant", "reason"],
    );
    let render_workers = gauge(&r, "imgedge_render_workers", "Configured CPU workers for transforms (render.workers).");
    let render_max_in_flight = gauge(
        &r,
        "imgedge_render_max_in_flight",
        "Renders that may be in flight (render.workers + render.queue); past it misses get 503.",
    );
    let config_reloads = counter_vec(
        &r,
        "imgedge_config_reloads_total",
        "Config reloads (SIGHUP) by result: applied, or rejected (invalid file: the running config is kept).",
        &["result"],
    );
    let config_last_reload_ok = gauge(
        &r,
        "imgedge_config_last_reload_successful",
        "1 if the last config reload was applied (or none was tried).",
    );
    let config_last_reload_time = gauge(
        &r,
        "imgedge_config_last_reload_success_timestamp_seconds",
        "Unix time the running config was loaded: at start or by the last applied reload.",
    );
    let config_needs_upgrade = gauge_vec(
        &r,
        "imgedge_config_needs_upgrade",
        "1 for a config section that changed in the file but needs a restart or graceful upgrade to apply.",
        &["section"],
    );
    let tenants = gauge(&r, "imgedge_tenants", "Tenants in the running config.");
    let fleet_purges = counter_vec(
        &r,
        "imgedge_fleet_purges_total",
        "Fleet-wide purges applied on this node, by kind (url, source, tenant) and from (self: made here; peer: made on another node).",
        &["kind", "from"],
    );
    let fleet_purge_errors = counter_vec(
        &r,
        "imgedge_fleet_purge_errors_total",
        "Fleet purge failures by stage: listen (the LISTEN connection failed or was lost), read (reading new purges), row (an unreadable row, skipped), apply (a purge not persisted locally).",
        &["stage"],
    );
    let fleet_listener_up = gauge(
        &r,
        "imgedge_fleet_purge_listener_up",
        "1 while this node listens to PostgreSQL for the fleet's purges (0 without fleet: or while reconnecting).",
    );
    let fleet_purge_seq =
        gauge(&r, "imgedge_fleet_purge_seq", "Sequence number of the last fleet purge applied on this node.");
    for kind in ["url", "source", "tenant"] {
        for from in ["self", "peer"] {
            fleet_purges.with_label_values(&[kind, from]);
        }
    }
    for stage in ["listen", "read", "row", "apply"] {
        fleet_purge_errors.with_label_values(&[stage]);
    }
    let fleet_hops = counter_vec(
        &r,
        "imgedge_fleet_hops_total",
        "Misses whose key another node owns, by result: ok (the owner answered), failed (the hop failed before \
         the owner's answer and the miss rendered locally), skipped (the owner is down: rendered locally).",
        &["result"],
    );
    let fleet_served = counter_vec(
        &r,
        "imgedge_fleet_served_total",
        "Requests on the fleet listener, by cache outcome on this node as owner (hit, miss, stale, revalidated, \
         bypass), or refused (403: a hop that did not verify).",
        &["cache"],
    );
    let fleet_peer_up = gauge_vec(
        &r,
        "imgedge_fleet_peer_up",
        "1 while a fleet node is taken as up by this node's health checks and hops (this node itself included).",
        &["peer"],
    );
    let build = gauge_vec(&r, "imgedge_build_info", "Always 1; labels carry the version.", &["version"]);
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    // Series whose labels are known in advance exist from the start at 0: a panel shows 0
    // rather than nothing, and `rate()`/`increase()` see the first event.
    let known: [(&IntCounterVec, &[&str]); 10] = [
        (&fleet_hops, &["ok", "failed", "skipped", "busy"]),
        (&fleet_served, &["hit", "miss", "stale", "revalidated", "bypass", "refused"]),
        (&origin_errors, &["not_found", "timeout", "too_big", "forbidden", "error"]),
        (&cache_errors, &["open", "read", "decode"]),
        (&cache_evictions, &["memory"]),
        (&cache_disk_io, &["write", "read"]),
        (&usage_flushes, &["spooled", "empty", "deferred", "error"]),
        (&usage_deliveries, &["applied", "duplicate", "collision", "error"]),
        (&limit_rejections, &["render_queue_full", "tenant_renders", "tenant_rate", "unverified_address"]),
        (&config_reloads, &["applied", "rejected"]),
    ];
    for (vec, labels) in known {
        for l in labels {
            vec.with_label_values(&[l]);
        }
    }
    for outcome in ["ok", "passthrough"] {
        renders.with_label_values(&[outcome]);
    }
    for section in UPGRADE_SECTIONS {
        config_needs_upgrade.with_label_values(&[section]).set(0);
    }
    config_last_reload_ok.set(1);
    Metrics {
        registry: r,
        requests,
        request_duration,
        response_bytes,
        hit_path,
        renders,
        render_span,
        render_phase,
        renders_in_progress,
        renders_queued,
        origin_errors,
        origin_bytes,
        cache_bytes,
        cache_capacity,
        cache_items,
        cache_disk_io,
        cache_errors,
        cache_lock_wait,
        cache_evictions,
        shared_store_ops,
        shared_store_seconds,
        tenant_requests,
        tenant_response_bytes,
        usage_flushes,
        usage_deliveries,
        usage_spool_pending,
        usage_spool_oldest_age,
        usage_spool_full,
        usage_unspooled_requests,
        usage_last_flush,
        usage_last_delivery,
        request_log_dropped,
        limit_rejections,
        unverified_requests,
        render_workers,
        render_max_in_flight,
        config_reloads,
        config_last_reload_ok,
        config_last_reload_time,
        config_needs_upgrade,
        tenants,
        fleet_purges,
        fleet_purge_errors,
        fleet_listener_up,
        fleet_purge_seq,
        fleet_hops,
        fleet_served,
        fleet_peer_up,
        _build: build,
    }
});

/// `2xx` for 200..=299 and so on; `none` when no response was written (status 0).
pub fn status_class(code: u16) -> &'static str {
    match code {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}

/// One edge request, recorded once in the proxy's `logging` hook.
pub fn request(operation: &str, code: u16, cache: Outcome, seconds: f64, body_bytes: usize) {
    M.requests.with_label_values(&[operation, status_class(code), cache.label()]).inc();
    M.request_duration.with_label_values(&[cache.label()]).observe(seconds);
    M.response_bytes.inc_by(body_bytes as u64);
}

/// One request answered by the edge's hit path (also counted by [`request`]).
pub fn hit_path_request() {
    M.hit_path.inc();
}

/// One edge request of a tenant that opted in to per-tenant series.
pub fn tenant_request(tenant: &str, code: u16, cache: Outcome, body_bytes: u64) {
    M.tenant_requests.with_label_values(&[tenant, status_class(code), cache.label()]).inc();
    M.tenant_response_bytes.with_label_values(&[tenant]).inc_by(body_bytes);
}

pub fn render(outcome: &str) {
    M.renders.with_label_values(&[outcome]).inc();
}

pub fn render_span(span: &'static str) -> Histogram {
    M.render_span.with_label_values(&[span])
}

/// The phases of one finished transform, in seconds.
pub fn render_phases(decode: f64, process: f64, encode: f64) {
    M.render_phase.with_label_values(&["decode"]).observe(decode);
    M.render_phase.with_label_values(&["process"]).observe(process);
    M.render_phase.with_label_values(&["encode"]).observe(encode);
}

/// Counts a render as in progress until the guard drops.
pub struct InProgress(());

impl InProgress {
    pub fn start() -> Self {
        M.renders_in_progress.inc();
        InProgress(())
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        M.renders_in_progress.dec();
    }
}

/// Counts a render as waiting for a CPU worker until the guard drops.
pub struct Queued(());

impl Queued {
    pub fn start() -> Self {
        M.renders_queued.inc();
        Queued(())
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        M.renders_queued.dec();
    }
}

pub fn origin_error(kind: &str) {
    M.origin_errors.with_label_values(&[kind]).inc();
}

pub fn origin_bytes(n: usize) {
    M.origin_bytes.inc_by(n as u64);
}

pub fn cache_size(tier: &str, bytes: usize, items: i64) {
    M.cache_bytes.with_label_values(&[tier]).set(bytes as i64);
    M.cache_items.with_label_values(&[tier]).set(items);
}

/// Bytes read from or written to the disk tier since the last report.
pub fn cache_disk_io(op: &str, bytes: usize) {
    M.cache_disk_io.with_label_values(&[op]).inc_by(bytes as u64);
}

pub fn cache_capacity(tier: &str, bytes: usize) {
    M.cache_capacity.with_label_values(&[tier]).set(bytes as i64);
}

/// A cache storage failure that was served as a miss (`open`, `read`, `decode`).
pub fn cache_error(kind: &str) {
    M.cache_errors.with_label_values(&[kind]).inc();
}

/// A request that waited for another request's render of the same key.
pub fn cache_lock_wait(seconds: f64) {
    M.cache_lock_wait.observe(seconds);
}

pub fn cache_evicted(n: u64) {
    M.cache_evictions.with_label_values(&["memory"]).inc_by(n);
}

/// A shared store is configured: its operations' series exist from then on at 0, as the
/// series of known labels do from the start.
pub fn shared_store_configured() {
    let known: [(&str, &[&str]); 3] = [
        ("get", &["hit", "miss", "error", "timeout", "corrupt"]),
        ("put", &["ok", "error", "timeout", "dropped"]),
        ("delete", &["ok", "error", "timeout"]),
    ];
    for (op, results) in known {
        for result in results {
            M.shared_store_ops.with_label_values(&[op, result]);
        }
    }
}

/// One shared store operation (`get`, `put`, `delete`) and its result.
pub fn shared_store(op: &str, result: &str) {
    M.shared_store_ops.with_label_values(&[op, result]).inc();
}

/// Times one shared store operation.
pub fn shared_store_timer(op: &str) -> prometheus::HistogramTimer {
    M.shared_store_seconds.with_label_values(&[op]).start_timer()
}

/// A usage flush: `spooled`, `empty`, `deferred` or `error`.
pub fn usage_flush(result: &str) {
    M.usage_flushes.with_label_values(&[result]).inc();
}

/// A usage batch delivery attempt: `applied`, `duplicate`, `collision` or `error`.
pub fn usage_delivery(result: &str) {
    M.usage_deliveries.with_label_values(&[result]).inc();
}

pub fn usage_spool_pending(batches: u64, oldest_age_seconds: u64) {
    M.usage_spool_pending.set(i64::try_from(batches).unwrap_or(i64::MAX));
    M.usage_spool_oldest_age.set(i64::try_from(oldest_age_seconds).unwrap_or(i64::MAX));
}

pub fn usage_spool_full(full: bool) {
    M.usage_spool_full.set(i64::from(full));
}

pub fn usage_unspooled_requests(n: u64) {
    M.usage_unspooled_requests.set(i64::try_from(n).unwrap_or(i64::MAX));
}

pub fn usage_last_flush(unix_seconds: u64) {
    M.usage_last_flush.set(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
}

pub fn usage_last_delivery(unix_seconds: u64) {
    M.usage_last_delivery.set(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
}

pub fn request_log_dropped() {
    M.request_log_dropped.inc();
}

/// The Prometheus text exposition of every metric.
pub fn gather() -> Vec<u8> {
    let mut out = Vec::with_capacity(16 << 10);
    // encoding into a Vec cannot fail for well-formed metric families
    let _ = TextEncoder::new().encode(&M.registry.gather(), &mut out);
    out
}

/// Load shedding and rate limits (429/503), by reason: `render_queue_full`,
/// `tenant_renders`, `tenant_rate`.
pub fn limit_rejected(reason: &str) {
    M.limit_rejections.with_label_values(&[reason]).inc();
}

/// One edge request refused before its signature verified: `tenant` is empty for an
/// unknown host.
pub fn unverified(tenant: &str, reason: &str) {
    M.unverified_requests.with_label_values(&[tenant, reason]).inc();
}

/// The render service's bounds: CPU workers and renders in flight before 503.
pub fn render_capacity(workers: usize, max_in_flight: usize) {
    M.render_workers.set(i64::try_from(workers).unwrap_or(i64::MAX));
    M.render_max_in_flight.set(i64::try_from(max_in_flight).unwrap_or(i64::MAX));
}

/// A config is running: loaded at start (`reload: false`) or by an applied reload.
pub fn config_loaded(tenants: usize, unix_seconds: u64, reload: bool) {
    if reload {
        M.config_reloads.with_label_values(&["applied"]).inc();
    }
    M.config_last_reload_ok.set(1);
    M.config_last_reload_time.set(i64::try_from(unix_seconds).unwrap_or(i64::MAX));
    M.tenants.set(i64::try_from(tenants).unwrap_or(i64::MAX));
}

/// A reload refused: the file is invalid and the running config stays.
pub fn config_rejected() {
    M.config_reloads.with_label_values(&["rejected"]).inc();
    M.config_last_reload_ok.set(0);
}

/// Which of [`UPGRADE_SECTIONS`] differ between the file and the running process.
pub fn config_needs_upgrade(changed: &[&str]) {
    for section in UPGRADE_SECTIONS {
        M.config_needs_upgrade.with_label_values(&[section]).set(i64::from(changed.contains(section)));
    }
}

/// A fleet purge applied here: `kind` is `url`, `source` or `tenant`; `peer` when another
/// node made it.
pub fn fleet_purge(kind: &str, peer: bool) {
    M.fleet_purges.with_label_values(&[kind, if peer { "peer" } else { "self" }]).inc();
}

/// A fleet purge failure: `listen`, `read`, `row` or `apply`.
pub fn fleet_purge_error(stage: &str) {
    M.fleet_purge_errors.with_label_values(&[stage]).inc();
}

pub fn fleet_listener_up(up: bool) {
    M.fleet_listener_up.set(i64::from(up));
}

pub fn fleet_purge_seq(seq: u64) {
    M.fleet_purge_seq.set(i64::try_from(seq).unwrap_or(i64::MAX));
}

/// A miss whose key another node owns: `ok`, `failed` or `skipped`.
pub fn fleet_hop(result: &str) {
    M.fleet_hops.with_label_values(&[result]).inc();
}

/// A request answered on the fleet listener, by its cache outcome (or `refused`).
pub fn fleet_served(cache: &str) {
    M.fleet_served.with_label_values(&[cache]).inc();
}

pub fn fleet_peer_up(peer: &str, up: bool) {
    M.fleet_peer_up.with_label_values(&[peer]).set(i64::from(up));
}

//! Every metric imgedge exports, declared here and nowhere else. Names follow Prometheus
//! conventions (base units, `_total`, `_seconds`, `_bytes`); labels are low-cardinality.

use once_cell::sync::Lazy;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    response_bytes: IntCounter,
    renders: IntCounterVec,
    render_span: HistogramVec,
    renders_in_progress: IntGauge,
    origin_errors: IntCounterVec,
    origin_bytes: IntCounter,
    cache_bytes: IntGaugeVec,
    cache_items: IntGaugeVec,
    cache_evictions: IntCounterVec,
    _build: IntGaugeVec,
}

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
        "Edge requests answered, by HTTP status code and cache outcome (hit, miss, stale, bypass, none).",
        &["code", "cache"],
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
    let renders = counter_vec(
        &r,
        "imgedge_renders_total",
        "Render service requests by outcome (ok or an error category).",
        &["outcome"],
    );
    let render_span = histogram_vec(
        &r,
        "imgedge_render_span_duration_seconds",
        "Time spent per render span: queue (waiting for a CPU worker), fetch (origin), transform (decode+process+encode).",
        &["span"],
    );
    let renders_in_progress = IntGauge::new("imgedge_renders_in_progress", "Renders currently running or queued.")
        .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(renders_in_progress.clone())).unwrap_or_else(|e| panic!("{e}"));
    let origin_errors = counter_vec(
        &r,
        "imgedge_origin_errors_total",
        "Origin fetch failures by kind (not_found, timeout, too_big, error).",
        &["kind"],
    );
    let origin_bytes = IntCounter::new("imgedge_origin_body_bytes_total", "Bytes fetched from origins.")
        .unwrap_or_else(|e| panic!("{e}"));
    r.register(Box::new(origin_bytes.clone())).unwrap_or_else(|e| panic!("{e}"));
    let cache_bytes = gauge_vec(&r, "imgedge_cache_size_bytes", "Bytes held by the cache, by tier.", &["tier"]);
    let cache_items = gauge_vec(&r, "imgedge_cache_items", "Objects held by the cache, by tier.", &["tier"]);
    let cache_evictions =
        counter_vec(&r, "imgedge_cache_evictions_total", "Objects evicted from the cache, by tier.", &["tier"]);
    let build = gauge_vec(&r, "imgedge_build_info", "Always 1; labels carry the version.", &["version"]);
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    Metrics {
        registry: r,
        requests,
        request_duration,
        response_bytes,
        renders,
        render_span,
        renders_in_progress,
        origin_errors,
        origin_bytes,
        cache_bytes,
        cache_items,
        cache_evictions,
        _build: build,
    }
});

/// One edge request, recorded once in the proxy's `logging` hook.
pub fn request(code: u16, cache: &str, seconds: f64, body_bytes: usize) {
    M.requests.with_label_values(&[code.to_string().as_str(), cache]).inc();
    M.request_duration.with_label_values(&[cache]).observe(seconds);
    M.response_bytes.inc_by(body_bytes as u64);
}

pub fn render(outcome: &str) {
    M.renders.with_label_values(&[outcome]).inc();
}

pub fn render_span(span: &'static str) -> Histogram {
    M.render_span.with_label_values(&[span])
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

pub fn origin_error(kind: &str) {
    M.origin_errors.with_label_values(&[kind]).inc();
}

pub fn origin_bytes(n: usize) {
    M.origin_bytes.inc_by(n as u64);
}

pub fn cache_size(bytes: usize, items: usize) {
    M.cache_bytes.with_label_values(&["memory"]).set(bytes as i64);
    M.cache_items.with_label_values(&["memory"]).set(items as i64);
}

pub fn cache_evicted(n: u64) {
    M.cache_evictions.with_label_values(&["memory"]).inc_by(n);
}

/// The Prometheus text exposition of every metric.
pub fn gather() -> Vec<u8> {
    let mut out = Vec::with_capacity(16 << 10);
    // encoding into a Vec cannot fail for well-formed metric families
    let _ = TextEncoder::new().encode(&M.registry.gather(), &mut out);
    out
}

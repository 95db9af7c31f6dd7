//! The render service: an internal HTTP app on a Unix socket that the edge uses as its
//! upstream on cache misses. It fetches the original, transforms it on a bounded CPU
//! pool and answers one complete response — exact `Content-Length`, `ETag`,
//! `Cache-Control` — or a typed error with `no-store` (a short TTL for 404).
//!
//! The request line is `GET /render` with the tenant and the canonical request in
//! internal headers; the socket is private to the process owner, and the edge sets those
//! headers itself, so render trusts them. [`origins`] fetches originals; [`fallback`]
//! answers a tenant's fallback image instead of some errors; [`grid`] composes several
//! sources into one image.

mod fallback;
mod grid;
pub mod origins;
pub mod watermark;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use pingora_limits::inflight::Inflight;
use tokio::sync::Semaphore;

use crate::answer::{
    Answer, FALLBACK_HEADER, KEY_HEADER, NO_FALLBACK_HEADER, PASSTHROUGH_HEADER, REQUEST_HEADER, SERVED_HEADER,
    TENANT_HEADER, TIMING_HEADER,
};
use crate::cache::shared::{self, SharedStore};
use crate::config::Tenant;
use crate::error::Error;
use crate::metrics;
use crate::options::{self, Format, Options};
use crate::tenants::{TenantRuntime, Tenants};
use crate::transform::{self, TransformError};
use crate::usage;
use origins::Fetched;

/// What render answers with: a transform's result or the source as is.
struct Output {
    bytes: Vec<u8>,
    format: Format,
    /// Unknown for a passthrough whose header cannot be read.
    dims: Option<(u32, u32)>,
    passthrough: bool,
    /// Set when this is the tenant's fallback image answered instead of an error.
    fallback: Option<fallback::Answered>,
}

/// `raw` passes any source it can name by magic bytes (never the origin's
/// `Content-Type`: a lying origin must not choose the type we serve); `skp` only the
/// listed formats. `Ok(None)`: transform as usual.
fn passthrough(opts: &Options, bytes: &[u8]) -> Result<Option<Format>, Error> {
    if !opts.raw && opts.skip_processing.is_empty() {
        return Ok(None);
    }
    let sniffed = transform::sniff(bytes);
    if opts.raw {
        return sniffed.map(Some).ok_or(Error::Transform(TransformError::UnsupportedSource));
    }
    Ok(sniffed.filter(|f| opts.skip_processing.contains(f)))
}

pub struct Render {
    /// The live tenant set, shared with the edge (swapped by a reload).
    tenants: Arc<Tenants>,
    /// Bounds CPU-heavy work to the configured worker count.
    workers: Arc<Semaphore>,
    /// Renders in flight (fetching, queued or transforming) and the most allowed:
    /// `workers + queue`. Past it render sheds load with 503 instead of queueing.
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    /// Renders in flight per tenant, for `limits.max_concurrent_renders`.
    per_tenant: Inflight,
    /// The fleet's shared derivative store: read before rendering, written after.
    shared: Option<Arc<SharedStore>>,
}

/// Counts one admitted render; released on drop, whatever the outcome. Owned, so that a
/// transform that outlives its request keeps counting until it really ends.
struct Admitted(Arc<AtomicUsize>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Render {
    pub fn new(tenants: Arc<Tenants>, workers: usize, queue: usize) -> Render {
        let workers = workers.max(1);
        metrics::render_capacity(workers, workers + queue);
        Render {
            tenants,
            workers: Arc::new(Semaphore::new(workers)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: workers + queue,
            per_tenant: Inflight::new(),
            shared: None,
        }
    }

    /// Reads answers from and writes them to the fleet's shared store.
    pub fn with_shared(mut self, shared: Option<Arc<SharedStore>>) -> Render {
        self.shared = shared;
        self
    }

    /// The shared store and the object's key hash, when this request may use it: a store,
    /// a tenant that caches, and a well-formed key from the edge.
    fn shared_for(&self, tenant_id: &str, key: Option<&str>) -> Option<(&Arc<SharedStore>, String)> {
        let store = self.shared.as_ref()?;
        let key = key.filter(|k| shared::valid_hash(k))?;
        let caches = self.tenants.load().get(tenant_id).is_some_and(|rt| rt.tenant.cache_enabled);
        caches.then(|| (store, key.to_owned()))
    }

    /// Admission: the global bound first (cheap, protects memory), then the tenant's.
    fn admit(&self, rt: &TenantRuntime) -> Result<(Admitted, Option<pingora_limits::inflight::Guard>), Error> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_in_flight {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::limit_rejected("render_queue_full");
            return Err(Error::Overloaded);
        }
        let admitted = Admitted(self.in_flight.clone());
        let max = rt.tenant.limits.max_concurrent_renders;
        if max == 0 {
            return Ok((admitted, None));
        }
        let (guard, count) = self.per_tenant.incr(&rt.tenant.id, 1);
        if count > max as isize {
            metrics::limit_rejected("tenant_renders");
            return Err(Error::TooManyRenders);
        }
        Ok((admitted, Some(guard)))
    }

    /// Runs `work` on the worker pool, within `timeout` of asking for a worker. The worker
    /// permit and the admission (render slot, tenant slot) move into the blocking task: work
    /// that outlives the timeout keeps counting against both until it really ends, so
    /// abandoned work cannot pile up past the limits.
    async fn on_worker<T: Send + 'static>(
        &self,
        what: &'static str,
        admitted: (Admitted, Option<pingora_limits::inflight::Guard>),
        timeout: Duration,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let run = async {
            let queued = Instant::now();
            let waiting = metrics::Queued::start();
            let permit =
                self.workers.clone().acquire_owned().await.map_err(|_| Error::Internal("worker pool closed".into()))?;
            drop(waiting);
            metrics::render_span("queue").observe(queued.elapsed().as_secs_f64());
            let timer = metrics::render_span("transform").start_timer();
            let out = tokio::task::spawn_blocking(move || {
                let _held = (permit, admitted);
                work()
            })
            .await
            .map_err(|e| Error::Internal(format!("{what} task: {e}")))??;
            timer.observe_duration();
            Ok(out)
        };
        tokio::time::timeout(timeout, run).await.map_err(|_| Error::RenderTimeout)?
    }

    /// An `/info` request: fetched and admitted as a transform, answered with JSON facts
    /// read on the worker pool (hashing a large original is CPU work too).
    async fn info(
        &self,
        tenant_id: &str,
        canonical: &str,
        origin_us: &mut Option<u64>,
    ) -> Result<(Vec<u8>, String, Arc<Tenant>), Error> {
        let rt = self.tenants.load().get(tenant_id).cloned().ok_or(Error::UnknownTenant)?;
        let admitted = self.admit(&rt)?;
        let req = options::parse_info_canonical(canonical)?;
        let fetch_timer = metrics::render_span("fetch").start_timer();
        let Fetched { bytes, etag } = rt.origins.fetch(&req.source.origin, &req.source.key, &rt.tenant.limits).await?;
        *origin_us = Some((fetch_timer.stop_and_record() * 1e6) as u64);
        let etag = etag_of(tenant_id, canonical, etag.as_deref());
        let max_pixels = rt.tenant.transform_settings().max_src_pixels;
        let info = self
            .on_worker("info", admitted, rt.tenant.limits.render_timeout, move || {
                transform::info(&bytes, &req.options, max_pixels).map_err(Error::from)
            })
            .await?;
        let body = serde_json::to_vec(&info).map_err(|e| Error::Internal(format!("info json: {e}")))?;
        Ok((body, etag, rt.tenant.clone()))
    }

    /// `origin_us` gets the origin fetch's duration once it has finished. Without
    /// `fallback_allowed` an error is answered as it is (the edge holds a stale copy).
    async fn render(
        &self,
        tenant_id: &str,
        canonical: &str,
        fallback_allowed: bool,
        origin_us: &mut Option<u64>,
    ) -> Result<(Output, String, Arc<Tenant>), Error> {
        // the edge admitted this tenant; a reload may have removed it since: gone, as for
        // the edge from now on
        let rt = self.tenants.load().get(tenant_id).cloned().ok_or(Error::UnknownTenant)?;
        let admitted = self.admit(&rt)?;
        let req = options::parse_canonical(canonical)?;
        match self.produce(&rt, &req.options, &req.source, canonical, admitted, origin_us).await {
            Ok(out) => Ok((out.0, out.1, rt.tenant.clone())),
            Err(e) if !fallback_allowed => Err(e),
            Err(e) => match self.fallback(&rt, &req, &e).await {
                Some((out, etag)) => Ok((out, etag, rt.tenant.clone())),
                None => Err(e),
            },
        }
    }

    /// Fetches `source` and answers it transformed by `opts` (or as it is, for `raw`/`skp`),
    /// with its ETag: of `etag_key` (the canonical request, or what stands for it), the
    /// origin's validator and the watermark drawn.
    async fn produce(
        &self,
        rt: &TenantRuntime,
        opts: &Options,
        source: &options::Source,
        etag_key: &str,
        admitted: (Admitted, Option<pingora_limits::inflight::Guard>),
        origin_us: &mut Option<u64>,
    ) -> Result<(Output, String), Error> {
        let tenant_id = rt.tenant.id.as_str();
        let fetch_timer = metrics::render_span("fetch").start_timer();
        let Fetched { bytes, etag } = rt.origins.fetch(&source.origin, &source.key, &rt.tenant.limits).await?;
        *origin_us = Some((fetch_timer.stop_and_record() * 1e6) as u64);
        let mut etag = etag_of(tenant_id, etag_key, etag.as_deref());
        if let Some(format) = passthrough(opts, &bytes)? {
            let dims = transform::probe(&bytes).ok().map(|p| (p.width, p.height));
            let out = Output { bytes: bytes.to_vec(), format, dims, passthrough: true, fallback: None };
            return Ok((out, etag));
        }

        let timeout = rt.tenant.limits.render_timeout;
        // the transform stops at the stage after the client's answer has become a 504
        let mut settings =
            transform::Settings { deadline: Some(Instant::now() + timeout), ..rt.tenant.transform_settings() };
        let wm = &opts.watermark;
        if wm.enabled() {
            let src = wm
                .source
                .clone()
                .or_else(|| rt.tenant.watermark.as_ref().map(|w| w.source.clone()))
                .ok_or_else(|| Error::Internal("watermark without a source".into()))?;
            let revalidate = rt.tenant.watermark.as_ref().map_or(crate::config::DEFAULT_REVALIDATE, |w| w.revalidate);
            let loaded = self.tenants.watermarks.get(rt, &src, revalidate).await?;
            // the image drawn is part of what the answer is made of
            etag = etag_of(tenant_id, &format!("{etag_key}\nwm={}", loaded.id), Some(&etag));
            settings.watermark = Some(loaded.image);
        }
        let opts = opts.clone();
        let encoded = self
            .on_worker("transform", admitted, timeout, move || {
                transform::run(&bytes, &opts, &settings).map_err(transform_error)
            })
            .await?;
        Ok((encoded_output(encoded), etag))
    }
}

/// Strong ETag: a hash of what was asked (tenant, canonical request) and of which
/// original it was made from (the origin's validator).
fn etag_of(tenant: &str, canonical: &str, origin_etag: Option<&str>) -> String {
    let mut h = blake3::Hasher::new();
    for part in [tenant, canonical, origin_etag.unwrap_or("")] {
        h.update(&(part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    let hex = h.finalize().to_hex();
    format!("\"{}\"", &hex[..32])
}

/// `Cache-Control` of an answer: its TTL, `immutable` when asked (images, unless the
/// tenant says otherwise), and the stale-if-error window the edge honours when render or
/// the origin fails later.
/// A transform's error as the render service answers it: a passed deadline is a timeout.
fn transform_error(e: TransformError) -> Error {
    match e {
        TransformError::TimedOut => Error::RenderTimeout,
        e => Error::Transform(e),
    }
}

/// The answer of an encoded image (transform or grid), its phases recorded.
fn encoded_output(encoded: transform::Encoded) -> Output {
    let t = encoded.timings;
    metrics::render_phases(t.decode.as_secs_f64(), t.process.as_secs_f64(), t.encode.as_secs_f64());
    Output {
        dims: Some((encoded.width, encoded.height)),
        bytes: encoded.bytes,
        format: encoded.format,
        passthrough: false,
        fallback: None,
    }
}

fn cache_control(t: &Tenant, ttl: std::time::Duration, immutable: bool) -> String {
    let mut cc = format!("public, max-age={}", ttl.as_secs());
    if immutable {
        cc.push_str(", immutable");
    }
    if !t.stale_if_error.is_zero() {
        cc.push_str(&format!(", stale-if-error={}", t.stale_if_error.as_secs()));
    }
    cc
}

#[async_trait]
impl ServeHttp for Render {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let _in_progress = metrics::InProgress::start();
        let header =
            |name: &str| session.req_header().headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (Some(tenant_id), Some(canonical)) = (header(TENANT_HEADER), header(REQUEST_HEADER)) else {
            metrics::render("bad_request");
            return Answer::error(&Error::Internal("missing render headers".into()), None).into_response();
        };
        let started = Instant::now();
        let l2 = self.shared_for(&tenant_id, header(KEY_HEADER).as_deref());
        if let Some((store, key)) = &l2 {
            // rendered before by some node: answered as stored, no fetch, no render
            if let Some(stored) = store.get(&tenant_id, key).await {
                let mut response = shared::answer(stored);
                response.headers_mut().insert(SERVED_HEADER, http::HeaderValue::from_static("shared"));
                set_timing(&mut response, None, started);
                return response;
            }
        }
        let mut origin_us = None;
        let fallback_allowed = header(NO_FALLBACK_HEADER).is_none();
        let mut response = if canonical.starts_with(options::GRID_PREFIX) {
            let rendered = self.grid(&tenant_id, &canonical, &mut origin_us).await;
            self.answer(rendered, &tenant_id, &canonical)
        } else if canonical.starts_with(options::INFO_PREFIX) {
            let info = self.info(&tenant_id, &canonical, &mut origin_us).await;
            self.answer_info(info, &tenant_id, &canonical)
        } else {
            let rendered = self.render(&tenant_id, &canonical, fallback_allowed, &mut origin_us).await;
            self.answer(rendered, &tenant_id, &canonical)
        };
        if let Some((store, key)) = &l2 {
            let stored = shared::storable(
                response.status().as_u16(),
                response.headers(),
                response.body(),
                &[TIMING_HEADER],
                FALLBACK_HEADER,
            );
            if let Some(stored) = stored {
                store.put(&tenant_id, key, stored);
            }
        }
        set_timing(&mut response, origin_us, started);
        response
    }
}

/// Render's [`TIMING_HEADER`]: the origin fetch (`-` when nothing was fetched) and the
/// whole answer, in µs.
fn set_timing(response: &mut Response<Vec<u8>>, origin_us: Option<u64>, started: Instant) {
    let timing =
        format!("{} {}", origin_us.map_or_else(|| "-".to_owned(), |u| u.to_string()), started.elapsed().as_micros());
    if let Ok(v) = http::HeaderValue::from_str(&timing) {
        response.headers_mut().insert(TIMING_HEADER, v);
    }
}

impl Render {
    fn answer_info(
        &self,
        info: Result<(Vec<u8>, String, Arc<Tenant>), Error>,
        tenant_id: &str,
        canonical: &str,
    ) -> Response<Vec<u8>> {
        match info {
            Ok((body, etag, tenant)) => {
                metrics::render("info");
                Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .header("content-length", body.len())
                    .header("etag", etag)
                    // never `immutable`: the facts follow the original, so a browser must be able
                    // to revalidate them after `info_ttl`
                    .header("cache-control", cache_control(&tenant, tenant.info_ttl, false))
                    .header("x-content-type-options", "nosniff")
                    .body(body)
                    .unwrap_or_default()
            }
            Err(e) => self.failed(tenant_id, canonical, e),
        }
    }

    fn answer(
        &self,
        rendered: Result<(Output, String, Arc<Tenant>), Error>,
        tenant_id: &str,
        canonical: &str,
    ) -> Response<Vec<u8>> {
        match rendered {
            Ok((out, etag, tenant)) => {
                let (status, cc) = match &out.fallback {
                    Some(f) => (f.status, f.cache_control()),
                    None => (StatusCode::OK, cache_control(&tenant, tenant.cache_ttl, tenant.immutable)),
                };
                let mut builder = Response::builder()
                    .status(status)
                    .header("content-type", out.format.mime())
                    .header("content-length", out.bytes.len())
                    .header("etag", etag)
                    .header("cache-control", cc)
                    .header("x-content-type-options", "nosniff");
                if let Some((w, h)) = out.dims {
                    builder = builder.header("x-result-width", w).header("x-result-height", h);
                }
                // `fn`/`att`: parsed again here (microseconds) rather than carried through
                // `render`; it is stored with the response, so hits carry it too
                if let Some(cd) =
                    options::parse_canonical(canonical).ok().and_then(|r| r.content_disposition(out.format))
                {
                    builder = builder.header("content-disposition", cd);
                }
                if let Some(f) = &out.fallback {
                    // an error answered with an image: counted as the error, never as a
                    // transform (the edge bills it as an error too)
                    metrics::render(f.replaced);
                    builder = builder.header(FALLBACK_HEADER, "1");
                } else if out.passthrough {
                    metrics::render("passthrough");
                    builder = builder.header(PASSTHROUGH_HEADER, "1");
                } else {
                    metrics::render("ok");
                    usage::rendered(&tenant.id);
                }
                builder.body(out.bytes).unwrap_or_default()
            }
            Err(e) => self.failed(tenant_id, canonical, e),
        }
    }
}

impl Render {
    fn failed(&self, tenant_id: &str, canonical: &str, e: Error) -> Response<Vec<u8>> {
        metrics::render(e.category());
        if e.status() >= 500 {
            tracing::warn!(tenant = %tenant_id, request = %canonical, error = %e, "render failed");
        }
        let ttl = self.tenants.load().get(tenant_id).map(|t| t.tenant.not_found_ttl.as_secs());
        Answer::error(&e, ttl).into_response()
    }
}

//! Per-request state of the edge, the same on pingora's path and the hit path, and the one
//! place an answered request is counted (metrics and usage).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::Outcome;
use crate::config::Tenant;
use crate::metrics;
use crate::reqlog;
use crate::usage;
use crate::usage::telemetry;

/// What the answering path knows of a finished request beyond its [`Ctx`].
pub(crate) struct Finished<'a> {
    pub code: u16,
    pub cache: Outcome,
    pub bytes: usize,
    pub content_type: Option<&'a [u8]>,
    /// The request's `Origin` and `Referer` header values.
    pub origin: Option<&'a [u8]>,
    pub referer: Option<&'a [u8]>,
    pub client: Option<IpAddr>,
}

/// Per-request state.
#[derive(Clone)]
pub struct Ctx {
    started: Instant,
    pub(crate) tenant: Option<Arc<Tenant>>,
    pub(crate) canonical: String,
    /// The request's source as named in its cache generation (`cache::source_id`).
    pub(crate) source: String,
    /// Output format part of the cache key: explicit format or `src` (keep the source's).
    pub(crate) format: &'static str,
    /// Set when the edge answered by itself (rejections).
    pub(super) rejected: bool,
    /// Set when the request went to render (a miss, cacheable or not).
    pub(super) upstream: bool,
    /// Answered from the front cache (a hit that bypassed pingora-cache).
    pub(super) front: bool,
    /// A miss here that the fleet's cache answered (shared store, or the key's owner):
    /// nothing was rendered for it, so it is a hit.
    pub(super) fleet_cached: bool,
    /// The tenant negotiates and the URL names no format: the answer depends on `Accept`.
    pub(crate) vary_accept: bool,
    /// The canonical request without the negotiated format, when one was negotiated.
    pub(super) billing_canonical: Option<String>,
    /// Render sent the source unchanged (`raw`, `skp`): not a transform.
    pub(super) passthrough: bool,
    /// The answer is the tenant's fallback image: billed as an error, not a transform.
    pub(super) fallback: bool,
    /// An `/info` request: JSON facts about the source, priced and cached as info.
    pub(crate) info: bool,
    /// A `/grid` request of this many sources, priced per source.
    pub(crate) grid: Option<u8>,
    /// The signed URL's expiry (`exp`), seconds since the epoch.
    pub(crate) expires: Option<u64>,
    /// The watermark image the request draws (`wmu`, else the tenant's), if any.
    pub(crate) watermark: Option<crate::options::Source>,
    /// That watermark's identity, once known: part of the cache key.
    pub(crate) watermark_id: Option<String>,
    /// Why the request is not known to be its tenant's (unknown host, missing or bad
    /// signature): counted apart, never in the tenant's usage.
    pub(crate) unverified: Option<&'static str>,
    /// Render's own time and its origin fetch's, from its answer (a miss).
    pub(super) render_us: Option<u64>,
    pub(super) origin_us: Option<u64>,
    /// Owner routing of this request's miss (a fleet only).
    pub(super) hop: crate::fleet::HopState,
}

impl Ctx {
    /// The request part of the cache key: the canonical request, and the watermark's
    /// identity when it draws one (a new watermark file makes new entries).
    pub(crate) fn key_request(&self) -> std::borrow::Cow<'_, str> {
        crate::cache::key_request(&self.canonical, self.watermark_id.as_deref())
    }

    /// A watermark is drawn whose identity is not known yet (the hit path leaves such a
    /// request to pingora's, which fetches it).
    pub(crate) fn watermark_unknown(&self) -> bool {
        self.watermark.is_some() && self.watermark_id.is_none()
    }

    pub(crate) fn new() -> Ctx {
        Ctx {
            started: Instant::now(),
            tenant: None,
            canonical: String::new(),
            source: String::new(),
            format: "src",
            rejected: false,
            upstream: false,
            front: false,
            fleet_cached: false,
            vary_accept: false,
            billing_canonical: None,
            passthrough: false,
            fallback: false,
            info: false,
            grid: None,
            expires: None,
            watermark: None,
            watermark_id: None,
            unverified: None,
            render_us: None,
            origin_us: None,
            hop: crate::fleet::HopState::default(),
        }
    }

    /// A copy of an admitted request's context for another request with the same head:
    /// only the clock starts again.
    pub(crate) fn again(&self) -> Ctx {
        Ctx { started: Instant::now(), ..self.clone() }
    }

    /// Metrics, usage and the request log for one answered request.
    pub(crate) fn count(&self, f: &Finished<'_>) {
        let elapsed = self.started.elapsed();
        let micros = elapsed.as_micros() as u64;
        // the canonical request is set once the request was admitted
        let operation = match (self.canonical.is_empty(), self.info, self.grid) {
            (true, _, _) => "none",
            (false, true, _) => "info",
            (false, false, Some(_)) => "grid",
            (false, false, None) => "transform",
        };
        metrics::request(operation, f.code, f.cache, elapsed.as_secs_f64(), f.bytes);
        if let Some(reason) = self.unverified {
            // not in the tenant's usage; still one line in the request log
            metrics::unverified(self.tenant.as_ref().map_or("", |t| t.id.as_str()), reason);
        } else if let Some(tenant) = &self.tenant {
            // the billing key leaves a negotiated format out (as usage::BillingKey::for_request
            // does); a passthrough is counted as a request, not as a unique transform
            let billing = match (&self.billing_canonical, self.passthrough || self.fallback) {
                (_, true) => "",
                (Some(c), false) => c.as_str(),
                (None, false) => self.canonical.as_str(),
            };
            let site = telemetry::calling_site(f.origin, f.referer);
            let op = match (self.info, self.grid) {
                (true, _) => usage::Operation::Info,
                (false, Some(n)) => usage::Operation::Grid(n),
                (false, None) => usage::Operation::Transform,
            };
            let answered = usage::Answered { status: f.code, fallback: self.fallback };
            usage::edge_request(tenant, op, answered, f.cache, f.bytes as u64, billing, site, f.content_type, micros);
        }
        if reqlog::enabled() {
            self.log(f, operation, micros);
        }
    }

    fn log(&self, f: &Finished<'_>, operation: &'static str, micros: u64) {
        let log = self.tenant.as_ref().map(|t| t.log).unwrap_or_default();
        if f.cache == Outcome::Hit && !reqlog::sampled(log.hit_sample_ppm) {
            return;
        }
        reqlog::log(&reqlog::Line {
            tenant: self.tenant.as_deref().map(|t| t.id.as_str()),
            operation,
            status: f.code,
            cache: f.cache,
            bytes: f.bytes as u64,
            content_type: f.content_type,
            total_us: micros,
            render_us: self.render_us,
            origin_us: self.origin_us,
            canonical: &self.canonical,
            client: f.client.map(|ip| reqlog::truncate(ip, &log)),
            origin: f.origin.and_then(telemetry::host_of),
            referer: f.referer.and_then(telemetry::host_of),
        });
    }
}

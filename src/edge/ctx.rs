//! Per-request state of the edge, the same on pingora's path and the hit path, and the one
//! place an answered request is counted (metrics and usage).

use std::sync::Arc;
use std::time::Instant;

use crate::cache::Outcome;
use crate::config::Tenant;
use crate::metrics;
use crate::usage;

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
    /// The tenant negotiates and the URL names no format: the answer depends on `Accept`.
    pub(crate) vary_accept: bool,
    /// The canonical request without the negotiated format, when one was negotiated.
    pub(super) billing_canonical: Option<String>,
    /// Render sent the source unchanged (`raw`, `skp`): not a transform.
    pub(super) passthrough: bool,
    /// The signed URL's expiry (`exp`), seconds since the epoch.
    pub(crate) expires: Option<u64>,
    /// Why the request is not known to be its tenant's (unknown host, missing or bad
    /// signature): counted apart, never in the tenant's usage.
    pub(crate) unverified: Option<&'static str>,
}

impl Ctx {
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
            vary_accept: false,
            billing_canonical: None,
            passthrough: false,
            expires: None,
            unverified: None,
        }
    }

    /// A copy of an admitted request's context for another request with the same head:
    /// only the clock starts again.
    pub(crate) fn again(&self) -> Ctx {
        Ctx { started: Instant::now(), ..self.clone() }
    }

    /// Metrics and usage for one answered request.
    pub(crate) fn count(&self, code: u16, cache: Outcome, bytes: usize) {
        // the canonical request is set once the request was admitted
        let operation = if self.canonical.is_empty() { "none" } else { "transform" };
        metrics::request(operation, code, cache, self.started.elapsed().as_secs_f64(), bytes);
        if let Some(reason) = self.unverified {
            metrics::unverified(self.tenant.as_ref().map_or("", |t| t.id.as_str()), reason);
            return;
        }
        if let Some(tenant) = &self.tenant {
            // the billing key leaves a negotiated format out (as usage::BillingKey::for_request
            // does); a passthrough is counted as a request, not as a unique transform
            let billing = match (&self.billing_canonical, self.passthrough) {
                (_, true) => "",
                (Some(c), false) => c.as_str(),
                (None, false) => self.canonical.as_str(),
            };
            usage::edge_request(tenant, code, cache, bytes as u64, billing);
        }
    }
}

//! The edge: pingora-proxy's `ProxyHttp`. Each hook is a few lines that call the module
//! owning the concern. Cheap checks run first (tenant, signature, options); hits are
//! answered from the front cache or by pingora-cache; misses go to the render service over
//! a Unix socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use once_cell::sync::Lazy;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::http::conditional_filter;
use pingora::upstreams::peer::HttpPeer;
use pingora_cache::cache_control::CacheControl;
use pingora_cache::filters::resp_cacheable;
use pingora_cache::key::CacheKey;
use pingora_cache::{CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable};
use pingora_limits::rate::Rate;
use pingora_proxy::{ProxyHttp, RangeType, Session};

use crate::cache::EdgeCache;
use crate::config::Tenant;
use crate::error::Error;
use crate::metrics;
use crate::negotiate;
use crate::options;
use crate::render::{PASSTHROUGH_HEADER, REQUEST_HEADER, TENANT_HEADER};
use crate::signature;
use crate::usage;

/// Host → tenant, built once from config.
pub struct Tenants {
    by_host: HashMap<String, Arc<Tenant>>,
}

impl Tenants {
    pub fn new(tenants: &[Arc<Tenant>]) -> Self {
        let mut by_host = HashMap::new();
        for t in tenants {
            for h in &t.hosts {
                by_host.insert(h.clone(), t.clone());
            }
        }
        Tenants { by_host }
    }

    /// Looks up by the `Host` header (or the HTTP/2 authority), ignoring port and case.
    pub fn resolve(&self, host: &str) -> Option<Arc<Tenant>> {
        let name = strip_port(host);
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&name.to_ascii_lowercase()).cloned()
        } else {
            self.by_host.get(name).cloned()
        }
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split(']').next().map_or(host, |h| &host[..h.len() + 1]);
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// What admission reads of a request: the same whether pingora parsed it or the hit path
/// ([`crate::hits`]) did.
pub(crate) struct RequestParts<'a> {
    pub(crate) get_or_head: bool,
    pub(crate) host: Option<&'a str>,
    /// The path without the query.
    pub(crate) path: &'a str,
    pub(crate) accept: Option<&'a [u8]>,
}

/// What the edge's request handling shares with the hit path: tenants, cache, rate limits.
pub struct EdgeCore {
    tenants: Tenants,
    pub(crate) cache: Arc<EdgeCache>,
    /// Requests per tenant in the current second, for `limits.rate_per_second`.
    rate: Rate,
}

impl EdgeCore {
    pub fn new(tenants: Tenants, cache: Arc<EdgeCache>) -> Self {
        EdgeCore { tenants, cache, rate: Rate::new(std::time::Duration::from_secs(1)) }
    }

    /// Counts one request against the tenant's per-second limit; `true` when over it.
    pub(crate) fn over_rate(&self, tenant: &Tenant) -> bool {
        let max_rate = tenant.limits.rate_per_second;
        if max_rate > 0 && self.rate.observe(&tenant.id, 1) > max_rate as isize {
            metrics::limit_rejected("tenant_rate");
            return true;
        }
        false
    }

    /// Tenant, signature, options, expiry — everything that decides whether this request
    /// deserves any work, in order of cost. `count_rate: false` leaves the rate limit to the
    /// caller (the hit path counts only requests it answers itself).
    pub(crate) fn admit(&self, req: &RequestParts<'_>, ctx: &mut Ctx, count_rate: bool) -> Result<(), Error> {
        if !req.get_or_head {
            return Err(Error::Method);
        }
        let tenant = req.host.and_then(|h| self.tenants.resolve(h)).ok_or(Error::UnknownTenant)?;
        ctx.tenant = Some(tenant.clone());
        // before the signature, so a flood of bad signatures is limited too
        if count_rate && self.over_rate(&tenant) {
            return Err(Error::RateLimited);
        }
        let path = req.path;
        let (sig, rest) =
            signature::split_signed_path(path).ok_or(Error::Signature(signature::SignatureError::Missing))?;
        if !tenant.allow_unsigned {
            signature::verify(&tenant.keys, tenant.signature_size, sig, rest)?;
        }
        let mut parsed = options::parse(rest, &tenant.parse_context())?;
        ctx.expires = parsed.expires;
        if expired(parsed.expires, SystemTime::now()) {
            return Err(Error::Expired);
        }
        let opts = &parsed.request.options;
        // raw streams the source as is: no format to choose
        ctx.vary_accept = !tenant.negotiate.is_empty() && opts.format.is_none() && !opts.raw;
        if ctx.vary_accept {
            if let Some(f) = negotiate::best(req.accept, &tenant.negotiate) {
                // billed without the negotiated format: one unique transform per URL
                ctx.billing_canonical = Some(parsed.request.canonical());
                parsed.request.options.format = Some(f);
            }
        }
        ctx.format = parsed.request.options.format.map_or("src", |f| f.ext());
        ctx.canonical = parsed.request.canonical();
        Ok(())
    }
}

/// Whether a signed URL expiring at `expires` (seconds since the epoch) is past it at `now`.
pub(crate) fn expired(expires: Option<u64>, now: SystemTime) -> bool {
    expires.is_some_and(|exp| now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) >= exp)
}

pub struct Edge {
    core: Arc<EdgeCore>,
    render_socket: String,
}

impl Edge {
    pub fn new(core: Arc<EdgeCore>, render_socket: String) -> Self {
        Edge { core, render_socket }
    }

    fn admit(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Error> {
        let req = session.req_header();
        let parts = RequestParts {
            get_or_head: req.method == http::Method::GET || req.method == http::Method::HEAD,
            host: req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri.host()),
            path: req.uri.path(),
            accept: req.headers.get(http::header::ACCEPT).map(|v| v.as_bytes()),
        };
        self.core.admit(&parts, ctx, true)
    }
}

/// Whether the request's tenant uses the cache at all. `cache.enabled: false` makes every
/// request render (benchmarks of the render path): no front cache, no pingora-cache.
pub(crate) fn caches(ctx: &Ctx) -> bool {
    ctx.tenant.as_ref().is_none_or(|t| t.cache_enabled)
}

impl Edge {
    /// Answers a fresh hit from the front cache, as pingora-cache would (same key, headers,
    /// `response_filter`, 304, HEAD) but without its lookup. `Ok(false)` leaves the request
    /// to pingora: not in the front, or a `Range` request.
    async fn serve_front(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if !caches(ctx) || session.req_header().headers.contains_key(http::header::RANGE) {
            return Ok(false);
        }
        let key = self.cache_key_callback(session, ctx)?;
        let now = SystemTime::now();
        let Some(entry) = self.core.cache.storage.front_get(&key, now) else {
            return Ok(false);
        };
        let mut header = entry.header(now)?;
        let not_modified = conditional_filter::not_modified_filter(session.req_header(), &header);
        if not_modified {
            conditional_filter::to_304(&mut header);
        }
        // no Range here, so this only adds `Accept-Ranges` as on pingora's hits
        if !matches!(self.range_header_filter(session, &mut header, ctx), RangeType::None) {
            return Ok(false);
        }
        let header_only = not_modified || session.req_header().method == http::Method::HEAD;
        ctx.front = true;
        self.response_filter(session, &mut header, ctx).await?;
        session.write_response_header(header, header_only).await?;
        if !header_only {
            session.write_response_body(Some(entry.body().clone()), true).await?;
        }
        Ok(true)
    }
}

/// Per-request state.
#[derive(Clone)]
pub struct Ctx {
    started: Instant,
    pub(crate) tenant: Option<Arc<Tenant>>,
    pub(crate) canonical: String,
    /// Output format part of the cache key: explicit format or `src` (keep the source's).
    pub(crate) format: &'static str,
    /// Set when the edge answered by itself (rejections).
    rejected: bool,
    /// Set when the request went to render (a miss, cacheable or not).
    upstream: bool,
    /// Answered from the front cache (a hit that bypassed pingora-cache).
    front: bool,
    /// The tenant negotiates and the URL names no format: the answer depends on `Accept`.
    pub(crate) vary_accept: bool,
    /// The canonical request without the negotiated format, when one was negotiated.
    billing_canonical: Option<String>,
    /// Render sent the source unchanged (`raw`, `skp`): not a transform.
    passthrough: bool,
    /// The signed URL's expiry (`exp`), seconds since the epoch.
    pub(crate) expires: Option<u64>,
}

impl Ctx {
    pub(crate) fn new() -> Ctx {
        Ctx {
            started: Instant::now(),
            tenant: None,
            canonical: String::new(),
            format: "src",
            rejected: false,
            upstream: false,
            front: false,
            vary_accept: false,
            billing_canonical: None,
            passthrough: false,
            expires: None,
        }
    }

    /// A copy of an admitted request's context for another request with the same head:
    /// only the clock starts again.
    pub(crate) fn again(&self) -> Ctx {
        Ctx { started: Instant::now(), ..self.clone() }
    }

    /// Metrics and usage for one answered request.
    pub(crate) fn count(&self, code: u16, cache: &str, bytes: usize) {
        // the canonical request is set once the request was admitted
        let operation = if self.canonical.is_empty() { "none" } else { "transform" };
        metrics::request(operation, code, cache, self.started.elapsed().as_secs_f64(), bytes);
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

static NO_DEFAULTS: Lazy<CacheMetaDefaults> = Lazy::new(|| CacheMetaDefaults::new(|_| None, 0, 0));

/// Writes an error answer from the edge: short text, never cached.
async fn respond_error(session: &mut Session, e: &Error) -> Result<()> {
    let body = Bytes::from(format!("{}\n", e.public_message()));
    let mut resp = ResponseHeader::build(e.status(), Some(5))?;
    resp.insert_header("content-type", "text/plain; charset=utf-8")?;
    resp.insert_header("content-length", body.len())?;
    resp.insert_header("cache-control", "no-store")?;
    resp.insert_header("x-content-type-options", "nosniff")?;
    if let Some(secs) = e.retry_after() {
        resp.insert_header("retry-after", secs)?;
    }
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

fn cache_label(session: &Session, ctx: &Ctx) -> &'static str {
    if ctx.rejected {
        return "none";
    }
    if ctx.front {
        return "hit";
    }
    match session.cache.phase() {
        CachePhase::Hit => "hit",
        CachePhase::Stale | CachePhase::StaleUpdating => "stale",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "revalidated",
        CachePhase::Miss | CachePhase::Expired => "miss",
        // an uncacheable answer (an error) still went to render: a miss, not a bypass
        _ if ctx.upstream => "miss",
        _ => "bypass",
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        match self.admit(session, ctx) {
            Ok(()) => self.serve_front(session, ctx).await,
            Err(e) => {
                ctx.rejected = true;
                respond_error(session, &e).await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        if !caches(ctx) {
            return Ok(());
        }
        let cache = &self.core.cache;
        session.cache.enable(cache.storage, None, None, Some(cache.lock), None);
        session.cache.set_max_file_size_bytes(cache.max_object);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let tenant =
            ctx.tenant.as_ref().ok_or_else(|| pingora::Error::explain(ErrorType::InternalError, "no tenant"))?;
        Ok(self.core.cache.key(&tenant.id, &ctx.canonical, ctx.format))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        // only finished images and "not found" are cacheable; render marks the rest no-store
        if !matches!(resp.status.as_u16(), 200 | 404) {
            return Ok(RespCacheable::Uncacheable(NoCacheReason::OriginNotCache));
        }
        let cc = CacheControl::from_resp_headers(resp);
        Ok(resp_cacheable(cc.as_ref(), resp.clone(), false, &NO_DEFAULTS))
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.upstream = true;
        Ok(Box::new(HttpPeer::new_uds(&self.render_socket, false, String::new())?))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let tenant =
            ctx.tenant.as_ref().ok_or_else(|| pingora::Error::explain(ErrorType::InternalError, "no tenant"))?;
        up.set_uri(http::Uri::from_static("/render"));
        // render trusts only what the edge sets; nothing of the client's passes through
        let names: Vec<_> = up.headers.keys().cloned().collect();
        for name in names {
            up.remove_header(&name);
        }
        up.insert_header("host", "render")?;
        up.insert_header(TENANT_HEADER, tenant.id.as_str())?;
        up.insert_header(REQUEST_HEADER, ctx.canonical.as_str())?;
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        let label = match cache_label(session, ctx) {
            "hit" | "revalidated" => "HIT",
            "stale" => "STALE",
            "miss" => "MISS",
            _ => "BYPASS",
        };
        resp.insert_header("x-cache", label)?;
        if resp.remove_header(PASSTHROUGH_HEADER).is_some() {
            ctx.passthrough = true;
        }
        if ctx.vary_accept {
            resp.insert_header("vary", "Accept")?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut Ctx) {
        if let Some(waited) = session.cache.lock_duration() {
            metrics::cache_lock_wait(waited.as_secs_f64());
        }
        let code = session.response_written().map_or(0, |r| r.status.as_u16());
        let cache = cache_label(session, ctx);
        ctx.count(code, cache, session.body_bytes_sent());
    }
}

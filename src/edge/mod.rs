//! The edge: the public listener. [`conn`] handles each connection and answers fresh
//! front-cache hits itself; everything else goes through pingora-proxy's `ProxyHttp`
//! implemented here, each hook a few lines that call the module owning the concern:
//! [`admission`] (tenant, signature, options, expiry — cheapest first), the cache
//! (`crate::cache`), render over a Unix socket on a miss, and [`crate::answer`] for what
//! is written back.

pub mod admission;
pub mod conn;
mod ctx;
pub mod host;
mod memo;
mod threads;

pub use admission::EdgeCore;
pub use conn::{ClientTimeouts, EdgeApp};
pub use ctx::Ctx;

use std::sync::Arc;
use std::time::SystemTime;

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
use pingora_proxy::{ProxyHttp, RangeType, Session};

use crate::answer::{
    self, Answer, FALLBACK_HEADER, KEY_HEADER, NO_FALLBACK_HEADER, PASSTHROUGH_HEADER, REQUEST_HEADER, SERVED_HEADER,
    TENANT_HEADER, TIMING_HEADER,
};
use crate::cache::{EdgeCache, Outcome};
use crate::error::Error;
use crate::fleet::{hop, Fleet, Route};
use crate::metrics;
use admission::RequestParts;
use ctx::Finished;

pub struct Edge {
    core: Arc<EdgeCore>,
    render_socket: String,
    /// Owner routing of misses; `None` for a single node.
    fleet: Option<Arc<Fleet>>,
}

impl Edge {
    pub fn new(core: Arc<EdgeCore>, render_socket: String, fleet: Option<Arc<Fleet>>) -> Self {
        Edge { core, render_socket, fleet }
    }

    fn admit(&self, session: &Session, ctx: &mut Ctx) -> Result<(), Error> {
        let req = session.req_header();
        let parts = RequestParts {
            get_or_head: req.method == http::Method::GET || req.method == http::Method::HEAD,
            host: req
                .headers
                .get(http::header::HOST)
                .map(|h| h.as_bytes())
                .or_else(|| req.uri.host().map(str::as_bytes)),
            path: req.uri.path(),
            accept: req.headers.get(http::header::ACCEPT).map(|v| v.as_bytes()),
            client: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        };
        self.core.admit(&parts, ctx, true)
    }
}

impl Edge {
    /// Fetches the watermark when its identity is unknown or due for a check: the
    /// identity is part of the cache key.
    async fn watermark_id(&self, ctx: &mut Ctx) -> Result<(), Error> {
        let (Some(src), Some(tenant)) = (&ctx.watermark, &ctx.tenant) else { return Ok(()) };
        if ctx.watermark_id.is_some() {
            return Ok(());
        }
        let rt = self.core.tenants.load().get(&tenant.id).cloned().ok_or(Error::UnknownTenant)?;
        let loaded = self.core.tenants.watermarks.load(&rt, src).await?;
        ctx.watermark_id = Some(loaded.id);
        Ok(())
    }
}

impl Edge {
    /// The owner's fleet listener when a miss is to hop there: a fleet is configured, the
    /// request caches, another node owns the key and is up, and this request has not
    /// failed over to the local render yet.
    fn owner_peer(&self, session: &Session, ctx: &mut Ctx) -> Result<Option<HttpPeer>> {
        let Some(fleet) = &self.fleet else { return Ok(None) };
        ctx.hop.to = None;
        if ctx.hop.failed_over || !session.cache.enabled() {
            return Ok(None);
        }
        let key = self.cache_key_callback(session, ctx)?;
        match fleet.route(crate::cache::key_hash(&key)) {
            Route::Local => Ok(None),
            Route::Skipped => {
                metrics::fleet_hop("skipped");
                Ok(None)
            }
            Route::Owner(i) => {
                let render_timeout = ctx.tenant.as_ref().map_or(Default::default(), |t| t.limits.render_timeout);
                ctx.hop.to = Some(i);
                Ok(Some(fleet.peer(i, render_timeout)))
            }
        }
    }

    /// A hop failed before the owner's answer began: the owner is down until a probe
    /// says otherwise, and the request is retried on the local render.
    fn hop_failed(&self, ctx: &mut Ctx, mut e: Box<pingora::Error>) -> Box<pingora::Error> {
        if let (Some(fleet), Some(i)) = (&self.fleet, ctx.hop.to.take()) {
            fleet.mark_down(i);
            ctx.hop.failed_over = true;
            metrics::fleet_hop("failed");
            e.set_retry(true);
        }
        e
    }
}

/// The hop's fields of an admitted request.
fn hop_request(ctx: &Ctx, tenant: &crate::config::Tenant, no_fallback: bool, seq: u64) -> hop::HopRequest {
    hop::HopRequest {
        tenant: tenant.id.clone(),
        source: ctx.source.clone(),
        canonical: ctx.canonical.clone(),
        watermark: ctx.watermark_id.clone(),
        format: ctx.format.to_owned(),
        no_fallback,
        seq,
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

/// Turns the request to render into exactly what render trusts: the tenant, the canonical
/// request and its cache key hash. Nothing of the client's request passes through.
pub(crate) fn render_request(
    up: &mut RequestHeader,
    tenant: &str,
    canonical: &str,
    key_hash: u128,
    no_fallback: bool,
) -> Result<()> {
    up.set_uri(http::Uri::from_static("/render"));
    let names: Vec<_> = up.headers.keys().cloned().collect();
    for name in names {
        up.remove_header(&name);
    }
    up.insert_header("host", "render")?;
    up.insert_header(TENANT_HEADER, tenant)?;
    up.insert_header(REQUEST_HEADER, canonical)?;
    up.insert_header(KEY_HEADER, format!("{key_hash:032x}"))?;
    if no_fallback {
        up.insert_header(NO_FALLBACK_HEADER, "1")?;
    }
    Ok(())
}

/// Turns on pingora-cache for a request with imgedge's storage, lock and size bound: the
/// edge and the fleet listener share them, so one lock covers a key on this node.
pub(crate) fn enable_cache(session: &mut Session, cache: &EdgeCache) {
    session.cache.enable(cache.storage, None, None, Some(cache.lock), None);
    session.cache.set_max_file_size_bytes(cache.max_object);
}

/// Whether render's answer is stored: only finished images and "not found" are
/// cacheable (render marks the rest no-store), for as long as their `Cache-Control` says.
pub(crate) fn cacheability(resp: &ResponseHeader) -> RespCacheable {
    if !matches!(resp.status.as_u16(), 200 | 404) {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let cc = CacheControl::from_resp_headers(resp);
    resp_cacheable(cc.as_ref(), resp.clone(), false, &NO_DEFAULTS)
}

/// A fresh answer stored for `key` since this request's cache lookup missed. pingora-cache
/// looks a key up and only then takes its cache lock: a request whose lookup missed just
/// before another stored the key, and whose lock came just after that one's was released,
/// would render the key again. Looked up once more before going upstream (a lookup that
/// hits fills the front).
pub(crate) async fn stored_since_lookup(cache: &EdgeCache, key: &CacheKey) -> Option<Arc<crate::cache::FrontEntry>> {
    use pingora_cache::Storage;
    let hash = crate::cache::key_hash(key);
    let found = cache.storage.front_get_hashed(hash, SystemTime::now());
    if found.is_some() {
        return found;
    }
    // a storage write elsewhere while the lookup fills the front makes it drop the copy
    for _ in 0..3 {
        let trace = pingora_cache::trace::Span::inactive();
        cache.storage.lookup(key, &trace.handle()).await.ok()??;
        let found = cache.storage.front_get_hashed(hash, SystemTime::now());
        if found.is_some() {
            return found;
        }
    }
    None
}

static NO_DEFAULTS: Lazy<CacheMetaDefaults> = Lazy::new(|| CacheMetaDefaults::new(|_| None, 0, 0));

/// Writes an error answer from the edge (never cached).
async fn respond_error(session: &mut Session, e: &Error) -> Result<()> {
    let answer = Answer::error(e, None);
    let head = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(answer.header()?), head).await?;
    if !head {
        session.write_response_body(Some(Bytes::from(answer.body)), true).await?;
    }
    Ok(())
}

fn cache_outcome(session: &Session, ctx: &Ctx) -> Outcome {
    if ctx.rejected {
        return Outcome::None;
    }
    if ctx.front {
        return Outcome::Hit;
    }
    match session.cache.phase() {
        CachePhase::Hit => Outcome::Hit,
        // not in this node's cache, but rendered before: the fleet's cache answered
        CachePhase::Miss | CachePhase::Expired if ctx.fleet_cached => Outcome::Hit,
        CachePhase::Stale | CachePhase::StaleUpdating => Outcome::Stale,
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => Outcome::Revalidated,
        CachePhase::Miss | CachePhase::Expired => Outcome::Miss,
        // an uncacheable answer (an error) still went to render: a miss, not a bypass
        _ if ctx.upstream => Outcome::Miss,
        _ => Outcome::Bypass,
    }
}

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let admitted = match self.admit(session, ctx) {
            Ok(()) => self.watermark_id(ctx).await,
            Err(e) => Err(e),
        };
        match admitted {
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
        enable_cache(session, &self.core.cache);
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        let tenant =
            ctx.tenant.as_ref().ok_or_else(|| pingora::Error::explain(ErrorType::InternalError, "no tenant"))?;
        Ok(self.core.cache.key(&tenant.id, &ctx.source, &ctx.key_request(), ctx.format))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        Ok(cacheability(resp))
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        if !session.cache.enabled() {
            return Ok(true);
        }
        let key = self.cache_key_callback(session, ctx)?;
        if stored_since_lookup(&self.core.cache, &key).await.is_some() && self.serve_front(session, ctx).await? {
            return Ok(false);
        }
        Ok(true)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.upstream = true;
        if let Some(peer) = self.owner_peer(session, ctx)? {
            return Ok(Box::new(peer));
        }
        Ok(Box::new(HttpPeer::new_uds(&self.render_socket, false, String::new())?))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let key = self.cache_key_callback(session, ctx)?;
        let tenant =
            ctx.tenant.as_ref().ok_or_else(|| pingora::Error::explain(ErrorType::InternalError, "no tenant"))?;
        let no_fallback = session.cache.enabled() && session.cache.can_serve_stale_error();
        render_request(up, &tenant.id, &ctx.canonical, crate::cache::key_hash(&key), no_fallback)?;
        match (&self.fleet, ctx.hop.to) {
            (Some(fleet), Some(_)) => {
                hop::write(up, &fleet.secret, fleet.node(), &hop_request(ctx, tenant, no_fallback, fleet.seen()))
            }
            _ => Ok(()),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        e: Box<pingora::Error>,
    ) -> Box<pingora::Error> {
        self.hop_failed(ctx, e)
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<pingora::Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<pingora::Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        if ctx.hop.busy && ctx.hop.to.take().is_some() {
            ctx.hop.failed_over = true;
            metrics::fleet_hop("busy");
            e.set_retry(true);
            return e;
        }
        if ctx.hop.to.is_some() && !ctx.hop.answered {
            // a pooled connection the owner had closed: once, the owner again on a new one
            let timed_out = matches!(e.etype, ErrorType::ReadTimedout | ErrorType::WriteTimedout);
            if client_reused && !timed_out && !ctx.hop.reconnected {
                ctx.hop.reconnected = true;
                ctx.hop.to = None;
                e.set_retry(true);
                return e;
            }
            return self.hop_failed(ctx, e);
        }
        // pingora's default policy
        if !session.req_header().method.is_idempotent() || session.as_ref().retry_buffer_truncated() {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // render's timings are for the request log; taken out before the answer is cached
        if let (Some(fleet), Some(i)) = (&self.fleet, ctx.hop.to) {
            // only the owner's fleet listener answers a hop; anything else fails it over
            let owner = resp.remove_header(hop::OWNER_HEADER);
            if owner.as_ref().map(|v| v.as_bytes()) != Some(fleet.peers[i].name.as_bytes()) {
                return Err(pingora::Error::explain(ErrorType::InvalidHTTPHeader, "not the owner's answer"));
            }
            if resp.status == http::StatusCode::SERVICE_UNAVAILABLE {
                // the owner's renders are saturated: this node renders instead, as on a node
                // without a fleet, rather than passing the owner's overload to the client
                ctx.hop.busy = true;
                return Err(pingora::Error::explain(ErrorType::HTTPStatus(503), "the owner is busy"));
            }
            ctx.hop.answered = true;
            metrics::fleet_hop("ok");
        }
        if let Some(v) = resp.remove_header(TIMING_HEADER) {
            (ctx.origin_us, ctx.render_us) = answer::parse_timing(v.as_bytes());
        }
        ctx.fleet_cached = resp.remove_header(SERVED_HEADER).is_some();
        Ok(())
    }

    async fn response_filter(&self, session: &mut Session, resp: &mut ResponseHeader, ctx: &mut Ctx) -> Result<()> {
        if resp.headers.contains_key(PASSTHROUGH_HEADER) {
            ctx.passthrough = true;
        }
        if resp.headers.contains_key(FALLBACK_HEADER) {
            ctx.fallback = true;
        }
        answer::decorate(resp, cache_outcome(session, ctx), ctx.vary_accept, ctx.expires)
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut Ctx) {
        if let Some(waited) = session.cache.lock_duration() {
            metrics::cache_lock_wait(waited.as_secs_f64());
        }
        let resp = session.response_written();
        let req = session.req_header();
        let header = |name: http::header::HeaderName| req.headers.get(name).map(|v| v.as_bytes());
        ctx.count(&Finished {
            code: resp.map_or(0, |r| r.status.as_u16()),
            cache: cache_outcome(session, ctx),
            bytes: session.body_bytes_sent(),
            content_type: resp.and_then(|r| r.headers.get(http::header::CONTENT_TYPE)).map(|v| v.as_bytes()),
            origin: header(http::header::ORIGIN),
            referer: header(http::header::REFERER),
            client: session.client_addr().and_then(|a| a.as_inet()).map(|a| a.ip()),
        });
    }
}

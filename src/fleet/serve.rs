//! The owner's side of a hop: the fleet listener (`fleet.listen`), a second pingora proxy
//! sharing this node's cache storage and cache lock with the edge. A verified hop is
//! looked up under exactly the key the edge computes; a miss goes to the local render
//! with the edge's own render request, so concurrent misses anywhere in the fleet wait on
//! this one lock and the key renders once. Nothing here counts usage or
//! `imgedge_http_requests_total`: the client's request is billed on the node it reached.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use pingora_cache::key::CacheKey;
use pingora_cache::{CachePhase, RespCacheable};
use pingora_proxy::{ProxyHttp, Session};

use super::hop::{self, HopRequest};
use crate::answer::{Answer, SERVED_HEADER, TIMING_HEADER};
use crate::cache::EdgeCache;
use crate::config::Tenant;
use crate::edge::{cacheability, enable_cache, render_request};
use crate::metrics;
use crate::tenants::Tenants;

pub struct FleetService {
    /// This node's name, on every answer to a hop ([`hop::OWNER_HEADER`]).
    node: String,
    tenants: Arc<Tenants>,
    cache: Arc<EdgeCache>,
    render_socket: String,
    secret: Vec<u8>,
    /// The fleet's purges as this node has seen them.
    purges: Option<Arc<crate::fleet::purge::FleetPurge>>,
}

impl FleetService {
    pub fn new(
        f: &crate::config::Fleet,
        tenants: Arc<Tenants>,
        cache: Arc<EdgeCache>,
        render_socket: String,
        purges: Option<Arc<crate::fleet::purge::FleetPurge>>,
    ) -> Self {
        let secret = f.secret.as_bytes().to_vec();
        FleetService { node: f.node.clone(), tenants, cache, render_socket, secret, purges }
    }
}

/// One hop on the owner.
#[derive(Default)]
pub struct HopCtx {
    hop: Option<(HopRequest, Arc<Tenant>)>,
    /// Answered by the listener itself: health, or a refused hop.
    answered: Option<&'static str>,
    /// Render's timings, kept out of the cache and passed back to the requester.
    timing: Option<http::HeaderValue>,
    /// Render's [`SERVED_HEADER`] (a shared store hit), likewise.
    served: Option<http::HeaderValue>,
    upstream: bool,
}

async fn respond(session: &mut Session, a: &Answer) -> Result<()> {
    session.write_response_header(Box::new(a.header()?), false).await?;
    session.write_response_body(Some(Bytes::from(a.body.clone())), true).await?;
    Ok(())
}

/// `max-age` and `s-maxage` lowered by `age` seconds: the requester caches the answer for
/// the lifetime it has left here, so no node extends an object's life.
fn lower_max_age(cc: &str, age: u64) -> String {
    let mut out = Vec::new();
    for directive in cc.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let name = directive.split('=').next().unwrap_or("").to_ascii_lowercase();
        match (name.as_str(), directive.split_once('=').and_then(|(_, v)| v.trim().parse::<u64>().ok())) {
            ("max-age" | "s-maxage", Some(v)) => out.push(format!("{name}={}", v.saturating_sub(age))),
            _ => out.push(directive.to_owned()),
        }
    }
    out.join(", ")
}

fn served_label(session: &Session, ctx: &HopCtx) -> &'static str {
    if let Some(label) = ctx.answered {
        return label;
    }
    match session.cache.phase() {
        CachePhase::Hit => "hit",
        CachePhase::Stale | CachePhase::StaleUpdating => "stale",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "revalidated",
        CachePhase::Miss | CachePhase::Expired => "miss",
        _ if ctx.upstream => "miss",
        _ => "bypass",
    }
}

/// A fresh stored answer for `key` (header with its `Age`, and body), if there is one.
async fn stored(storage: &'static crate::cache::HybridStorage, key: &CacheKey) -> Option<(Box<ResponseHeader>, Bytes)> {
    use pingora_cache::Storage;
    let trace = pingora_cache::trace::Span::inactive();
    let (meta, mut hit) = storage.lookup(key, &trace.handle()).await.ok()??;
    if !meta.is_fresh(std::time::SystemTime::now()) {
        return None;
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = hit.read_body().await.ok()? {
        body.extend_from_slice(&chunk);
    }
    let mut header = Box::new(meta.response_header_copy());
    header.insert_header(http::header::AGE, meta.age().as_secs()).ok()?;
    Some((header, body.freeze()))
}

fn no_hop() -> Box<pingora::Error> {
    pingora::Error::explain(ErrorType::InternalError, "no verified hop")
}

#[async_trait]
impl ProxyHttp for FleetService {
    type CTX = HopCtx;

    fn new_ctx(&self) -> HopCtx {
        HopCtx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut HopCtx) -> Result<bool> {
        let req = session.req_header();
        if req.uri.path() == hop::HEALTH_PATH {
            ctx.answered = Some("health");
            respond(session, &Answer::plain(StatusCode::OK, "ok")).await?;
            return Ok(true);
        }
        let verified = if req.uri.path() == hop::PATH { hop::verify_now(req, &self.secret) } else { Err("path") };
        let tenant = verified.and_then(|r| match self.tenants.load().get(&r.tenant) {
            Some(t) => Ok((r, t.tenant.clone())),
            None => Err("unknown tenant"),
        });
        match tenant {
            Ok(hop) => {
                ctx.hop = Some(hop);
                Ok(false)
            }
            Err(why) => {
                tracing::debug!(reason = why, "fleet hop refused");
                ctx.answered = Some("refused");
                respond(session, &Answer::plain(StatusCode::FORBIDDEN, "forbidden")).await?;
                Ok(true)
            }
        }
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut HopCtx) -> Result<()> {
        // a requester that has seen a purge this node has not applied yet: what this cache
        // holds may be what was purged, so the answer is rendered anew, and not kept here
        let seen = self.purges.as_ref().map_or(0, |p| p.seen());
        if ctx.hop.as_ref().is_some_and(|(r, t)| t.cache_enabled && r.seq <= seen) {
            enable_cache(session, &self.cache);
        }
        Ok(())
    }

    fn cache_key_callback(&self, _session: &Session, ctx: &mut HopCtx) -> Result<CacheKey> {
        let (r, _) = ctx.hop.as_ref().ok_or_else(no_hop)?;
        let request = crate::cache::key_request(&r.canonical, r.watermark.as_deref());
        Ok(self.cache.key(&r.tenant, &r.source, &request, &r.format))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut HopCtx,
    ) -> Result<RespCacheable> {
        Ok(cacheability(resp))
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut HopCtx) -> Result<bool> {
        if !session.cache.enabled() {
            return Ok(true);
        }
        // as the edge does (`edge::stored_since_lookup`), from the stored object itself: the
        // owner is where a key's concurrent misses meet
        let key = self.cache_key_callback(session, ctx)?;
        let Some((mut header, body)) = stored(self.cache.storage, &key).await else { return Ok(true) };
        self.response_filter(session, &mut header, ctx).await?;
        let head = session.req_header().method == http::Method::HEAD;
        session.write_response_header(header, head).await?;
        if !head {
            session.write_response_body(Some(body), true).await?;
        }
        ctx.answered = Some("hit");
        Ok(false)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut HopCtx) -> Result<Box<HttpPeer>> {
        ctx.upstream = true;
        Ok(Box::new(HttpPeer::new_uds(&self.render_socket, false, String::new())?))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut HopCtx,
    ) -> Result<()> {
        let key = self.cache_key_callback(session, ctx)?;
        let (r, _) = ctx.hop.as_ref().ok_or_else(no_hop)?;
        render_request(up, &r.tenant, &r.canonical, crate::cache::key_hash(&key), r.no_fallback)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut HopCtx,
    ) -> Result<()> {
        ctx.timing = resp.remove_header(TIMING_HEADER);
        ctx.served = resp.remove_header(SERVED_HEADER);
        Ok(())
    }

    async fn response_filter(&self, _session: &mut Session, resp: &mut ResponseHeader, ctx: &mut HopCtx) -> Result<()> {
        // a hit carries its age: the requester gets the lifetime left, not the whole TTL,
        // and bills a hit (nothing was rendered for it)
        if let Some(age) = resp.remove_header(&http::header::AGE) {
            ctx.served = Some(http::HeaderValue::from_static("peer"));
            let age = age.to_str().ok().and_then(|a| a.parse::<u64>().ok()).unwrap_or(0);
            let cc = resp.headers.get(http::header::CACHE_CONTROL).and_then(|v| v.to_str().ok()).map(str::to_owned);
            if let Some(cc) = cc {
                resp.insert_header(http::header::CACHE_CONTROL, lower_max_age(&cc, age))?;
            }
        }
        if let Some(t) = ctx.timing.take() {
            resp.insert_header(TIMING_HEADER, t)?;
        }
        if let Some(v) = ctx.served.take() {
            resp.insert_header(SERVED_HEADER, v)?;
        }
        // after caching: the stored answer never carries it
        resp.insert_header(hop::OWNER_HEADER, self.node.as_str())?;
        Ok(())
    }

    async fn logging(&self, session: &mut Session, _e: Option<&pingora::Error>, ctx: &mut HopCtx) {
        if let Some(waited) = session.cache.lock_duration() {
            metrics::cache_lock_wait(waited.as_secs_f64());
        }
        let label = served_label(session, ctx);
        if label != "health" {
            metrics::fleet_served(label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lower_max_age;

    #[test]
    fn the_lifetime_left_is_passed_on() {
        assert_eq!(
            lower_max_age("public, max-age=3600, immutable, stale-if-error=60", 100),
            "public, max-age=3500, immutable, stale-if-error=60"
        );
        assert_eq!(lower_max_age("public, max-age=60, s-maxage=30", 90), "public, max-age=0, s-maxage=0");
        assert_eq!(lower_max_age("no-store", 5), "no-store");
    }
}

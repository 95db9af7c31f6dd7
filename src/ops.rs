//! The ops listener: health, liveness, readiness, Prometheus metrics, and the
//! authenticated admin endpoints (cache purge), on an address that can stay private
//! while the edge is public.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use percent_encoding::percent_decode_str;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use subtle::ConstantTimeEq;

use crate::answer::Answer;
use crate::cache::EdgeCache;
use crate::metrics;
use crate::options;
use crate::signature;
use crate::tenants::{TenantSet, Tenants};

pub struct Ops {
    /// Readiness means the render service answers on its socket.
    pub render_socket: PathBuf,
    pub cache: Arc<EdgeCache>,
    /// The live tenant set, with the admin token (`None` disables the admin endpoints).
    pub tenants: Arc<Tenants>,
}

fn query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

impl Ops {
    /// `None` when the request carries the admin token, else the refusal to send.
    fn refuse(set: &TenantSet, session: &ServerSession) -> Option<Answer> {
        let Some(token) = &set.admin_token else {
            return Some(Answer::plain(StatusCode::NOT_FOUND, "admin endpoints are disabled"));
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            None
        } else {
            Some(Answer::plain(StatusCode::UNAUTHORIZED, "unauthorized"))
        }
    }

    /// `POST /purge?tenant=ID&url=PATH` removes every format variant of one image URL
    /// (the path as clients request it, signature included or not);
    /// `POST /purge?tenant=ID&all=1` hides every cached entry of the tenant.
    async fn purge(&self, session: &ServerSession) -> Answer {
        let set = self.tenants.load_full();
        if let Some(refusal) = Self::refuse(&set, session) {
            return refusal;
        }
        if session.req_header().method != Method::POST {
            return Answer::plain(StatusCode::METHOD_NOT_ALLOWED, "use POST");
        }
        let q = query(session.req_header().uri.query());
        let Some(tenant) = q.get("tenant").and_then(|id| set.get(id)).map(|rt| &rt.tenant) else {
            return Answer::plain(StatusCode::NOT_FOUND, "unknown tenant");
        };
        if q.get("all").is_some_and(|v| v == "1" || v == "true") {
            return match self.cache.generations.bump(&tenant.id) {
                Ok(g) => {
                    tracing::info!(tenant = %tenant.id, generation = g, "purged all cache entries of tenant");
                    Answer::json(StatusCode::OK, &serde_json::json!({"tenant": tenant.id, "generation": g}))
                }
                Err(e) => Answer::plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot persist purge: {e}")),
            };
        }
        let Some(url) = q.get("url") else {
            return Answer::plain(StatusCode::BAD_REQUEST, "give url=PATH or all=1");
        };
        // accept a full URL or a path; the first segment is the signature, which a purge
        // does not need to check (the caller is authenticated)
        let path = url.find("://").map_or(url.as_str(), |i| url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]));
        let Some((_sig, rest)) = signature::split_signed_path(path) else {
            return Answer::plain(StatusCode::BAD_REQUEST, "url must be /{signature}/{options}/{source}");
        };
        match options::parse(rest, &tenant.parse_context()) {
            Ok(parsed) => {
                let canonical = parsed.request.canonical();
                let purged = self.cache.purge_request(&tenant.id, &canonical).await;
                Answer::json(
                    StatusCode::OK,
                    &serde_json::json!({"tenant": tenant.id, "canonical": canonical, "purged": purged}),
                )
            }
            Err(e) => Answer::plain(StatusCode::BAD_REQUEST, &format!("{e}")),
        }
    }
}

#[async_trait]
impl ServeHttp for Ops {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        self.answer(session).await.into_response()
    }
}

impl Ops {
    async fn answer(&self, session: &ServerSession) -> Answer {
        match session.req_header().uri.path() {
            "/health" | "/livez" => Answer::plain(StatusCode::OK, "OK"),
            "/readyz" => match tokio::net::UnixStream::connect(&self.render_socket).await {
                Ok(_) => Answer::plain(StatusCode::OK, "OK"),
                Err(e) => Answer::plain(StatusCode::SERVICE_UNAVAILABLE, &format!("render not ready: {e}")),
            },
            "/metrics" => {
                self.cache.storage.publish_metrics();
                Answer::text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics::gather())
            }
            "/purge" => self.purge(session).await,
            _ => Answer::plain(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

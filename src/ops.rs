//! The ops listener: health, liveness, readiness, Prometheus metrics, the authenticated
//! admin endpoints (cache purge) and the usage API (the admin token, or a tenant's own
//! read token for its own usage), on an address that can stay private while the edge is
//! public.

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
use crate::cache::{self, EdgeCache};
use crate::config::Usage;
use crate::fleet::purge::FleetPurge;
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
    /// Where the usage ledger is, for `GET /usage`.
    pub usage: Usage,
    /// With `fleet:`: purges go through PostgreSQL to every node.
    pub fleet: Option<Arc<FleetPurge>>,
}

/// Hex SHA-256 of a token, as a tenant's `usage_token_sha256` holds it.
pub fn token_sha256_hex(token: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn bearer(session: &ServerSession) -> &str {
    session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// The query's parameters, `%XX` decoded once. `+` stays `+`: it is a valid character of
/// a purged URL or source key, and reading it as a space would purge another image.
fn query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (dec(k), if is_raw_url(v) { v.to_owned() } else { dec(v) })
        })
        .collect()
}

/// A `url` value written as clients send it (a path or an absolute URL) is taken as is: its
/// `%XX` are the URL's own encoding, which the URL parser decodes. Decoding them here too
/// would turn `%2520` into a space. An encoded value starts with `%2F` or `http%3A`.
fn is_raw_url(v: &str) -> bool {
    v.starts_with('/') || v.contains("://")
}

/// Whether `given` is `token`, in time independent of both: comparing digests hides the
/// token's length as well as its bytes.
fn token_matches(given: &str, token: &str) -> bool {
    use sha2::{Digest, Sha256};
    bool::from(Sha256::digest(given.as_bytes()).ct_eq(&Sha256::digest(token.as_bytes())))
}

impl Ops {
    /// `None` when the request carries the admin token, else the refusal to send.
    fn refuse(set: &TenantSet, session: &ServerSession) -> Option<Answer> {
        let Some(token) = &set.admin_token else {
            return Some(Answer::plain(StatusCode::NOT_FOUND, "admin endpoints are disabled"));
        };
        if token_matches(bearer(session), token) {
            None
        } else {
            Some(Answer::plain(StatusCode::UNAUTHORIZED, "unauthorized"))
        }
    }

    /// `POST /purge?tenant=ID&url=PATH` removes every format variant of one image URL
    /// (the path as clients request it, signature included or not), negotiated ones too;
    /// `POST /purge?tenant=ID&source=KEY` hides every cached transform of one source;
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
        // the generation, and with `fleet:` the purge's number
        let persisted = |what: &str, r: Result<(u64, Option<u64>), String>, mut body: serde_json::Value| match r {
            Ok((g, seq)) => {
                tracing::info!(tenant = %tenant.id, generation = g, "purged {what}");
                body["generation"] = g.into();
                if let Some(seq) = seq {
                    body["seq"] = seq.into();
                }
                Answer::json(StatusCode::OK, &body)
            }
            Err(e) => Answer::plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("cannot persist purge: {e}")),
        };
        if q.get("all").is_some_and(|v| v == "1" || v == "true") {
            let r = match &self.fleet {
                Some(f) => f.bump(&tenant.id, None).await.map(|(g, seq)| (g, Some(seq))),
                None => self.cache.generations.bump(&tenant.id).map(|g| (g, None)).map_err(|e| e.to_string()),
            };
            return persisted("all cache entries of tenant", r, serde_json::json!({"tenant": tenant.id}));
        }
        if let Some(src) = q.get("source") {
            return match options::parse_source(src, &tenant.parse_context()) {
                Ok(source) => {
                    let id = cache::source_id(&source);
                    let r = match &self.fleet {
                        Some(f) => f.bump(&tenant.id, Some(&id)).await.map(|(g, seq)| (g, Some(seq))),
                        None => self
                            .cache
                            .generations
                            .bump_source(&tenant.id, &id)
                            .map(|g| (g, None))
                            .map_err(|e| e.to_string()),
                    };
                    persisted("every transform of a source", r, serde_json::json!({"tenant": tenant.id, "source": id}))
                }
                Err(e) => Answer::plain(StatusCode::BAD_REQUEST, &format!("{e}")),
            };
        }
        let Some(url) = q.get("url") else {
            return Answer::plain(StatusCode::BAD_REQUEST, "give url=PATH, source=KEY or all=1");
        };
        // accept a full URL or a path; the first segment is the signature, which a purge
        // does not need to check (the caller is authenticated)
        let path = url.find("://").map_or(url.as_str(), |i| url[i + 3..].find('/').map_or("/", |j| &url[i + 3 + j..]));
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if let Some(grid) = path.strip_prefix(options::GRID_PREFIX).filter(|p| p.starts_with('/')) {
            return self.purge_grid(&tenant.id, &tenant.parse_context(), grid).await;
        }
        // an `/info/{signature}/…` URL names one JSON answer, cached under the `json` format
        let info_path = path.strip_prefix(options::INFO_PREFIX).filter(|p| p.starts_with('/'));
        let Some((_sig, rest)) = signature::split_signed_path(info_path.unwrap_or(path)) else {
            return Answer::plain(StatusCode::BAD_REQUEST, "url must be /{signature}/{options}/{source}");
        };
        if info_path.is_some() {
            return match options::parse_info(rest, &tenant.parse_context()) {
                Ok(parsed) => {
                    let canonical = parsed.request.canonical();
                    let source = cache::source_id(&parsed.request.source);
                    let hash = self.cache.variant_hash(&tenant.id, &source, &canonical, cache::INFO_FORMAT);
                    let purged = self.cache.purge_variant(&tenant.id, &source, &canonical, cache::INFO_FORMAT).await;
                    let body =
                        serde_json::json!({"tenant": tenant.id, "canonical": canonical, "purged": usize::from(purged)});
                    self.url_purged(&tenant.id, &[hash], body).await
                }
                Err(e) => Answer::plain(StatusCode::BAD_REQUEST, &format!("{e}")),
            };
        }
        match options::parse(rest, &tenant.parse_context()) {
            Ok(parsed) => {
                let request = parsed.request;
                let canonical = request.canonical();
                let source = cache::source_id(&request.source);
                let (mut purged, mut hashes) = self.cache.purge_request(&tenant.id, &source, &canonical).await;
                // a URL without a format on a negotiating tenant is cached once per format
                // `Accept` chose, each under the canonical request naming it (as admission
                // builds it); the source's format is the entry above
                if !tenant.negotiate.is_empty() && request.options.format.is_none() && !request.options.raw {
                    for f in &tenant.negotiate {
                        let mut variant = request.clone();
                        variant.options.format = Some(*f);
                        let (n, h) = self.cache.purge_request(&tenant.id, &source, &variant.canonical()).await;
                        purged += n;
                        hashes.extend(h);
                    }
                }
                let body = serde_json::json!({"tenant": tenant.id, "canonical": canonical, "purged": purged});
                self.url_purged(&tenant.id, &hashes, body).await
            }
            Err(e) => Answer::plain(StatusCode::BAD_REQUEST, &format!("{e}")),
        }
    }
}

impl Ops {
    /// The answer to a URL purge already made here: with `fleet:`, once PostgreSQL has
    /// recorded its keys for the other nodes.
    async fn url_purged(&self, tenant: &str, hashes: &[u128], mut body: serde_json::Value) -> Answer {
        if let Some(f) = &self.fleet {
            match f.log_url(tenant, hashes).await {
                Ok(seq) => body["seq"] = seq.into(),
                Err(e) => {
                    tracing::warn!(error = %e, "URL purge applied here but not recorded for the fleet");
                    let msg = format!("purged on this node only, not recorded for the fleet (retry): {e}");
                    return Answer::plain(StatusCode::SERVICE_UNAVAILABLE, &msg);
                }
            }
        }
        Answer::json(StatusCode::OK, &body)
    }

    /// Purges one `/grid` URL (`path` after `/grid`). A grid is cached under no single
    /// source (see the edge's admission), in its one output format.
    async fn purge_grid(&self, tenant: &str, ctx: &options::ParseContext<'_>, path: &str) -> Answer {
        let Some((_sig, rest)) = signature::split_signed_path(path) else {
            return Answer::plain(StatusCode::BAD_REQUEST, "url must be /grid/{signature}/{options}/{sources}");
        };
        match options::parse_grid(rest, ctx) {
            Ok(parsed) => {
                let canonical = parsed.request.canonical();
                let (purged, hashes) = self.cache.purge_request(tenant, "", &canonical).await;
                let body = serde_json::json!({"tenant": tenant, "canonical": canonical, "purged": purged});
                self.url_purged(tenant, &hashes, body).await
            }
            Err(e) => Answer::plain(StatusCode::BAD_REQUEST, &format!("{e}")),
        }
    }

    /// `GET /usage?tenant=ID&month=YYYY-MM`: what `imgedge usage --json` prints for that
    /// tenant (and month, if given). The admin token reads any tenant (or all, without
    /// `tenant`); a tenant's read token (`usage_token_sha256`) reads that tenant only. Any
    /// other token is 401, the same whether the tenant exists or not.
    async fn usage(&self, session: &ServerSession) -> Answer {
        if session.req_header().method != Method::GET {
            return Answer::plain(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        }
        let set = self.tenants.load_full();
        let q = query(session.req_header().uri.query());
        let tenant = q.get("tenant").filter(|t| !t.is_empty()).cloned();
        let given = bearer(session);
        let admin = set.admin_token.as_ref().is_some_and(|t| token_matches(given, t));
        let own = || {
            let hash = {
                use sha2::Digest;
                sha2::Sha256::digest(given.as_bytes())
            };
            let t = tenant.as_deref().and_then(|id| set.get(id))?;
            let want = t.tenant.usage_token_sha256?;
            bool::from(hash.as_slice().ct_eq(want.as_slice())).then_some(())
        };
        if !admin && (given.is_empty() || own().is_none()) {
            return Answer::plain(StatusCode::UNAUTHORIZED, "unauthorized");
        }
        let month = q.get("month").filter(|m| !m.is_empty()).cloned();
        let settings = self.usage.clone();
        let report = tokio::task::spawn_blocking(move || {
            crate::usage::report::report(&settings, tenant.as_deref(), month.as_deref(), true)
        })
        .await;
        match report {
            Ok(Ok(json)) => Answer::text(StatusCode::OK, "application/json", json.into_bytes()),
            Ok(Err(e)) if e.starts_with("--month") => Answer::plain(StatusCode::BAD_REQUEST, "month must be YYYY-MM"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "usage API: cannot read the ledger");
                Answer::plain(StatusCode::SERVICE_UNAVAILABLE, "the usage ledger cannot be read")
            }
            Err(e) => Answer::plain(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e}")),
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
            "/usage" => self.usage(session).await,
            _ => Answer::plain(StatusCode::NOT_FOUND, "not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purge_parameters_keep_plus_and_the_urls_own_encoding() {
        let q = query(Some("tenant=a%2Db&url=/SIG/w:10/plain/a+b%2520c.jpg&source=x+y%20z.jpg"));
        assert_eq!(q.get("tenant").map(String::as_str), Some("a-b"));
        assert_eq!(q.get("url").map(String::as_str), Some("/SIG/w:10/plain/a+b%2520c.jpg"));
        assert_eq!(q.get("source").map(String::as_str), Some("x+y z.jpg"));
        let encoded = query(Some("url=%2FSIG%2Fplain%2Fa%2Bb.jpg"));
        assert_eq!(encoded.get("url").map(String::as_str), Some("/SIG/plain/a+b.jpg"));
    }

    #[test]
    fn tokens_compare_by_digest() {
        assert!(token_matches("0123456789abcdef", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdeF", "0123456789abcdef"));
        assert!(!token_matches("0123456789abcdef0", "0123456789abcdef"));
        assert!(!token_matches("", "0123456789abcdef"));
    }
}

//! Origins: the tenant's own buckets and servers, through `object_store` (SigV4, retries
//! and streaming done by a maintained library). Fetches are capped while streaming —
//! `Content-Length` is never trusted — and bounded in time.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::client::{HttpClient, HttpConnector};
use object_store::http::HttpBuilder;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::config::{Limits, Origin, Tenant};
use crate::error::Error;
use crate::metrics;
use crate::ssrf;

mod local;

/// A fetched original.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Bytes,
    /// The origin's validator (ETag, or modification time and size), if any.
    pub etag: Option<String>,
}

/// One tenant's origins, built once at start-up.
pub struct Origins {
    stores: HashMap<String, Store>,
}

/// A local directory is read by imgedge itself (opened beneath its root: no symlink or
/// `..` leads out of it); buckets and HTTP servers through `object_store`.
enum Store {
    Local(PathBuf),
    Remote(Arc<dyn ObjectStore>),
}

impl Origins {
    pub fn build(tenant: &Tenant) -> Result<Origins, String> {
        let mut stores = HashMap::new();
        for (name, origin) in &tenant.origins {
            let store = build_store(origin, &tenant.limits)
                .map_err(|e| format!("tenant {:?} origin {name:?}: {e}", tenant.id))?;
            stores.insert(name.clone(), store);
        }
        Ok(Origins { stores })
    }

    /// Fetches `key` from origin `name`, at most `limits.max_src_bytes`, within
    /// `limits.origin_timeout`.
    pub async fn fetch(&self, name: &str, key: &str, limits: &Limits) -> Result<Fetched, Error> {
        let store = self
            .stores
            .get(name)
            .ok_or_else(|| Error::Options(crate::options::OptionError::UnknownOrigin(name.to_owned())))?;
        let max = limits.max_src_bytes;
        let fetch = async {
            match store {
                Store::Local(root) => {
                    let (root, key) = (root.clone(), key.to_owned());
                    tokio::task::spawn_blocking(move || local::fetch(&root, &key, max))
                        .await
                        .map_err(|e| Error::Internal(format!("local origin task: {e}")))?
                }
                Store::Remote(store) => {
                    let path = StorePath::parse(key)
                        .map_err(|_| Error::Options(crate::options::OptionError::InvalidSource(key.to_owned())))?;
                    fetch_capped(store.as_ref(), &path, max).await
                }
            }
        };
        let result = tokio::time::timeout(limits.origin_timeout, fetch).await;
        let result = result.unwrap_or(Err(Error::OriginTimeout));
        match &result {
            Ok(f) => metrics::origin_bytes(f.bytes.len()),
            Err(e) => metrics::origin_error(match e {
                Error::SourceNotFound => "not_found",
                Error::OriginTimeout => "timeout",
                Error::SourceTooBig(_) => "too_big",
                Error::SourceForbidden => "forbidden",
                _ => "error",
            }),
        }
        result
    }
}

async fn fetch_capped(store: &dyn ObjectStore, path: &StorePath, max: u64) -> Result<Fetched, Error> {
    let got = store.get(path).await.map_err(map_error)?;
    let meta = got.meta.clone();
    if meta.size > max {
        return Err(Error::SourceTooBig(max));
    }
    let etag = meta.e_tag.clone().or_else(|| Some(format!("{}-{}", meta.last_modified.timestamp_millis(), meta.size)));
    let mut buf = Vec::with_capacity(meta.size.min(max) as usize);
    let mut stream = got.into_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(map_error)?;
        if (buf.len() + chunk.len()) as u64 > max {
            return Err(Error::SourceTooBig(max));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Fetched { bytes: Bytes::from(buf), etag })
}

fn map_error(e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::SourceNotFound,
        other => {
            if is_refused(&other) {
                Error::SourceForbidden
            } else if is_timeout(&other) {
                Error::OriginTimeout
            } else {
                Error::Origin(other.to_string())
            }
        }
    }
}

/// The DNS guard or the redirect policy refused the request (their errors carry
/// [`ssrf::REFUSED`], somewhere down the source chain).
fn is_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.to_string().contains(ssrf::REFUSED) {
            return true;
        }
        cur = err.source();
    }
    false
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err.to_string().contains("timed out") {
            return true;
        }
        cur = err.source();
    }
    false
}

fn client_options(limits: &Limits) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(true)
        .with_connect_timeout(limits.origin_connect_timeout)
        .with_timeout(limits.origin_timeout)
        .with_pool_idle_timeout(Duration::from_secs(60))
}

/// The HTTP origin's client: like object_store's own, plus redirects only within the
/// same scheme, host and port, and (unless the tenant allows private addresses) a DNS
/// guard that drops every non-public address before connecting.
#[derive(Debug)]
struct GuardedConnector {
    allow_private: bool,
    connect_timeout: Duration,
    timeout: Duration,
}

impl HttpConnector for GuardedConnector {
    fn connect(&self, _options: &ClientOptions) -> object_store::Result<HttpClient> {
        let redirects = reqwest::redirect::Policy::custom(|attempt| {
            let same = attempt.previous().first().is_some_and(|first| {
                let next = attempt.url();
                first.scheme() == next.scheme()
                    && first.host_str() == next.host_str()
                    && first.port_or_known_default() == next.port_or_known_default()
            });
            if !same {
                attempt.error(ssrf::REFUSED)
            } else if attempt.previous().len() > 5 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        });
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirects)
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .pool_idle_timeout(Duration::from_secs(60));
        if !self.allow_private {
            b = b.dns_resolver(Arc::new(PublicOnly));
        }
        let client = b.build().map_err(|e| object_store::Error::Generic { store: "HTTP", source: Box::new(e) })?;
        Ok(HttpClient::new(client))
    }
}

/// System DNS, keeping only public addresses; checked per connection, so a name that
/// rebinds to a private address later is still refused.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.filter(|a| ssrf::is_public(a.ip())).collect();
            if addrs.is_empty() {
                return Err(ssrf::REFUSED.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

fn retry(limits: &Limits) -> RetryConfig {
    // one quick retry for transient failures; the overall deadline is ours, not the library's
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            base: 2.0,
        },
        max_retries: 1,
        retry_timeout: limits.origin_timeout,
    }
}

fn build_store(origin: &Origin, limits: &Limits) -> Result<Store, object_store::Error> {
    Ok(Store::Remote(match origin {
        Origin::Local { root } => {
            // the same check object_store made: the root must exist
            let root = std::fs::canonicalize(root)
                .map_err(|e| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) })?;
            return Ok(Store::Local(root));
        }
        Origin::Http { base_url, allow_private } => Arc::new(
            HttpBuilder::new()
                .with_url(base_url.clone())
                .with_client_options(client_options(limits))
                .with_http_connector(GuardedConnector {
                    allow_private: *allow_private,
                    connect_timeout: limits.origin_connect_timeout,
                    timeout: limits.origin_timeout,
                })
                .with_retry(retry(limits))
                .build()?,
        ),
        Origin::S3 { .. } => s3_store(origin, client_options(limits), retry(limits))?,
    }))
}

/// An S3 (or S3-compatible) bucket client for `origin`, which must be an [`Origin::S3`]:
/// the tenants' buckets and the fleet's shared store are built by this one function.
pub fn s3_store(
    origin: &Origin,
    client: ClientOptions,
    retry: RetryConfig,
) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    let Origin::S3 { bucket, region, endpoint, virtual_hosted, access_key_id, secret_access_key, session_token } =
        origin
    else {
        return Err(object_store::Error::NotSupported { source: "not an S3 bucket".into() });
    };
    // without explicit credentials, use the standard AWS environment and instance roles
    let mut b = if access_key_id.is_some() { AmazonS3Builder::new() } else { AmazonS3Builder::from_env() };
    b = b
        .with_bucket_name(bucket.clone())
        .with_region(region.clone())
        .with_virtual_hosted_style_request(*virtual_hosted)
        .with_client_options(client)
        .with_retry(retry);
    if let Some(e) = endpoint {
        b = b.with_endpoint(e.clone());
    }
    if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
        b = b.with_access_key_id(id.clone()).with_secret_access_key(secret.clone());
    }
    if let Some(t) = session_token {
        b = b.with_token(t.clone());
    }
    Ok(Arc::new(b.build()?))
}

//! Origins: the tenant's own buckets and servers, through `object_store` (SigV4, retries
//! and streaming done by a maintained library). Fetches are capped while streaming —
//! `Content-Length` is never trusted — and bounded in time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};

use crate::config::{Limits, Origin, Tenant};
use crate::error::Error;
use crate::metrics;

/// A fetched original.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Bytes,
    /// The origin's validator (ETag, or modification time and size), if any.
    pub etag: Option<String>,
}

/// One tenant's origins, built once at start-up.
pub struct Origins {
    stores: HashMap<String, Arc<dyn ObjectStore>>,
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
        let path = StorePath::parse(key)
            .map_err(|_| Error::Options(crate::options::OptionError::InvalidSource(key.to_owned())))?;
        let result =
            tokio::time::timeout(limits.origin_timeout, fetch_capped(store.as_ref(), &path, limits.max_src_bytes))
                .await;
        let result = result.unwrap_or(Err(Error::OriginTimeout));
        match &result {
            Ok(f) => metrics::origin_bytes(f.bytes.len()),
            Err(e) => metrics::origin_error(match e {
                Error::SourceNotFound => "not_found",
                Error::OriginTimeout => "timeout",
                Error::SourceTooBig(_) => "too_big",
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
            if is_timeout(&other) {
                Error::OriginTimeout
            } else {
                Error::Origin(other.to_string())
            }
        }
    }
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

fn build_store(origin: &Origin, limits: &Limits) -> Result<Arc<dyn ObjectStore>, object_store::Error> {
    Ok(match origin {
        Origin::Local { root } => Arc::new(LocalFileSystem::new_with_prefix(root)?),
        Origin::Http { base_url } => Arc::new(
            HttpBuilder::new()
                .with_url(base_url.clone())
                .with_client_options(client_options(limits))
                .with_retry(retry(limits))
                .build()?,
        ),
        Origin::S3 { bucket, region, endpoint, virtual_hosted, access_key_id, secret_access_key, session_token } => {
            // without explicit credentials, use the standard AWS environment and instance roles
            let mut b = if access_key_id.is_some() { AmazonS3Builder::new() } else { AmazonS3Builder::from_env() };
            b = b
                .with_bucket_name(bucket.clone())
                .with_region(region.clone())
                .with_virtual_hosted_style_request(*virtual_hosted)
                .with_client_options(client_options(limits))
                .with_retry(retry(limits));
            if let Some(e) = endpoint {
                b = b.with_endpoint(e.clone());
            }
            if let (Some(id), Some(secret)) = (access_key_id, secret_access_key) {
                b = b.with_access_key_id(id.clone()).with_secret_access_key(secret.clone());
            }
            if let Some(t) = session_token {
                b = b.with_token(t.clone());
            }
            Arc::new(b.build()?)
        }
    })
}

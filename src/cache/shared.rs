//! The fleet's shared derivative store (`cache.shared`): rendered answers in an
//! S3-compatible bucket, so that a node that has never rendered a transform (new,
//! restarted, or another one of the fleet) answers it without rendering.
//!
//! One object per cache key: `{prefix}/{tenant}/{hash[0..2]}/{hash}`, the hash being the
//! edge's cache key hash (32 lowercase hex digits), which already holds the tenant's and
//! the source's generations: a tenant or source purge makes the old objects unreachable,
//! a URL purge deletes them ([`crate::cache::EdgeCache::purge_variant`]). Objects carry
//! their expiry; the bucket is kept bounded by a lifecycle rule (README, `cache.shared`).
//!
//! The store is an optimisation, never a dependency: every failure (timeout, error,
//! corrupt or foreign object) is a miss and the request is rendered, and writes happen in
//! the background, bounded in number and time.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutOptions, RetryConfig,
};
use tokio::sync::Semaphore;

use crate::config;
use crate::metrics;

/// First bytes of every object: the format's name and version. Another version is a miss.
const MAGIC: &[u8; 8] = b"IMGEDGE\x01";
/// Room for the framing and the headers beyond `cache.max_object` when reading.
const HEADER_ALLOWANCE: usize = 64 * 1024;

/// One stored answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// Unix seconds after which the answer must not be served.
    pub expires_at: u64,
    pub body: Vec<u8>,
}

/// Why an object could not be read as an answer.
#[derive(Debug, PartialEq)]
pub enum Corrupt {
    Magic,
    Truncated,
    Header,
}

impl Stored {
    /// The object's bytes: `MAGIC`, the header block's length (u32 BE), the header block
    /// (status u16, expiry u64, body length u64, header count u16, then each header as
    /// name length u16, name, value length u32, value), then the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut head = Vec::with_capacity(64 + self.headers.len() * 48);
        head.extend_from_slice(&self.status.to_be_bytes());
        head.extend_from_slice(&self.expires_at.to_be_bytes());
        head.extend_from_slice(&(self.body.len() as u64).to_be_bytes());
        head.extend_from_slice(&(self.headers.len() as u16).to_be_bytes());
        for (name, value) in &self.headers {
            head.extend_from_slice(&(name.len() as u16).to_be_bytes());
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(&(value.len() as u32).to_be_bytes());
            head.extend_from_slice(value.as_bytes());
        }
        let mut out = Vec::with_capacity(MAGIC.len() + 4 + head.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(head.len() as u32).to_be_bytes());
        out.extend_from_slice(&head);
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Stored, Corrupt> {
        let rest = bytes.strip_prefix(MAGIC.as_slice()).ok_or(Corrupt::Magic)?;
        let mut r = Reader(rest);
        let head_len = r.u32()? as usize;
        let mut h = Reader(r.take(head_len)?);
        let status = h.u16()?;
        let expires_at = h.u64()?;
        let body_len = h.u64()?;
        let count = h.u16()?;
        let mut headers = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let n = usize::from(h.u16()?);
            let name = h.text(n)?;
            let v = h.u32()? as usize;
            let value = h.text(v)?;
            headers.push((name, value));
        }
        if !h.0.is_empty() || !(100..=599).contains(&status) {
            return Err(Corrupt::Header);
        }
        if r.0.len() as u64 != body_len {
            return Err(Corrupt::Truncated);
        }
        Ok(Stored { status, headers, expires_at, body: r.0.to_vec() })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Corrupt> {
        if self.0.len() < n {
            return Err(Corrupt::Truncated);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Corrupt> {
        self.take(N)?.try_into().map_err(|_| Corrupt::Truncated)
    }
    fn u16(&mut self) -> Result<u16, Corrupt> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, Corrupt> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Corrupt> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    fn text(&mut self, n: usize) -> Result<String, Corrupt> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| Corrupt::Header)
    }
}

/// The key hash as the edge sends it: exactly 32 lowercase hex digits. Anything else names
/// no object (it would otherwise be a path component chosen by whoever sent it).
pub fn valid_hash(hash: &str) -> bool {
    hash.len() == 32 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `max-age` of a `Cache-Control` value, if any.
pub fn max_age(cc: &str) -> Option<u64> {
    cc.split(',').map(str::trim).find_map(|d| {
        let (name, v) = d.split_once('=')?;
        name.trim().eq_ignore_ascii_case("max-age").then(|| v.trim().parse().ok()).flatten()
    })
}

/// `cc` with its `max-age` at most `left` seconds; every other directive kept.
pub fn lowered(cc: &str, left: u64) -> String {
    cc.split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| match d.split_once('=') {
            Some((name, v)) if name.trim().eq_ignore_ascii_case("max-age") => {
                let age = v.trim().parse::<u64>().unwrap_or(0);
                format!("max-age={}", age.min(left))
            }
            _ => d.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

pub struct SharedStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    read_timeout: Duration,
    write_timeout: Duration,
    /// The edge never caches a larger answer; neither does the store.
    max_object: usize,
    /// Background writes in flight; past `max_writes`, a write is dropped.
    writes: Arc<Semaphore>,
}

impl SharedStore {
    pub fn new(settings: &config::SharedStore, max_object: usize) -> Result<SharedStore, String> {
        let client = ClientOptions::new()
            .with_allow_http(true)
            // reads are bounded by read_timeout around the whole request; this bounds writes
            .with_connect_timeout(settings.write_timeout)
            .with_timeout(settings.write_timeout.max(settings.read_timeout))
            .with_pool_idle_timeout(Duration::from_secs(60));
        // a read has no time for a retry; a write one quick one
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
                base: 2.0,
            },
            max_retries: 1,
            retry_timeout: settings.write_timeout,
        };
        let store = crate::render::origins::s3_store(&settings.store, client, retry)
            .map_err(|e| format!("cache.shared: {e}"))?;
        metrics::shared_store_configured();
        Ok(SharedStore {
            store,
            prefix: settings.prefix.clone(),
            read_timeout: settings.read_timeout,
            write_timeout: settings.write_timeout,
            max_object,
            writes: Arc::new(Semaphore::new(settings.max_writes)),
        })
    }

    /// `{prefix}/{tenant}/{hash[0..2]}/{hash}`; `None` for an invalid hash or tenant id.
    pub fn object_name(&self, tenant: &str, hash: &str) -> Option<String> {
        let tenant_ok = !tenant.is_empty()
            && tenant.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && tenant != "."
            && tenant != "..";
        if !valid_hash(hash) || !tenant_ok {
            return None;
        }
        let name = format!("{tenant}/{}/{hash}", &hash[..2]);
        Some(if self.prefix.is_empty() { name } else { format!("{}/{name}", self.prefix) })
    }

    fn path(&self, tenant: &str, hash: &str) -> Option<StorePath> {
        StorePath::parse(self.object_name(tenant, hash)?).ok()
    }

    /// The fresh answer stored for this key, if any; every failure is a miss (counted).
    pub async fn get(&self, tenant: &str, hash: &str) -> Option<Stored> {
        let path = self.path(tenant, hash)?;
        let timer = metrics::shared_store_timer("get");
        let limit = self.max_object + HEADER_ALLOWANCE;
        let read = async {
            let got = match self.store.get(&path).await {
                Ok(g) => g,
                Err(object_store::Error::NotFound { .. }) => return Err("miss"),
                Err(e) => {
                    tracing::debug!(object = %path, error = %e, "shared store read failed");
                    return Err("error");
                }
            };
            if got.meta.size > limit as u64 {
                return Err("corrupt");
            }
            let mut buf = Vec::with_capacity(got.meta.size as usize);
            let mut stream = got.into_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|_| "error")?;
                if buf.len() + chunk.len() > limit {
                    return Err("corrupt");
                }
                buf.extend_from_slice(&chunk);
            }
            Ok(buf)
        };
        let result = match tokio::time::timeout(self.read_timeout, read).await {
            Err(_) => Err("timeout"),
            Ok(Err(kind)) => Err(kind),
            Ok(Ok(bytes)) => match Stored::decode(&bytes) {
                Err(_) => Err("corrupt"),
                Ok(s) if s.expires_at <= unix_now() => Err("miss"),
                Ok(s) => Ok(s),
            },
        };
        timer.observe_duration();
        match result {
            Ok(s) => {
                metrics::shared_store("get", "hit");
                Some(s)
            }
            Err(kind) => {
                if kind == "corrupt" {
                    tracing::warn!(object = %path, "shared store object unreadable: served as a miss");
                }
                metrics::shared_store("get", kind);
                None
            }
        }
    }

    /// Writes `stored` in the background, within `write_timeout`; dropped (counted) when
    /// `max_writes` writes are already in flight or the answer is larger than the cache's
    /// largest object.
    pub fn put(self: &Arc<Self>, tenant: &str, hash: &str, stored: Stored) {
        let Some(path) = self.path(tenant, hash) else { return };
        if stored.body.len() > self.max_object {
            return;
        }
        let Ok(permit) = self.writes.clone().try_acquire_owned() else {
            metrics::shared_store("put", "dropped");
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let timer = metrics::shared_store_timer("put");
            // the bucket's own copy of the expiry, for tools and lifecycle rules that read it
            let left = stored.expires_at.saturating_sub(unix_now());
            let mut attributes = Attributes::new();
            attributes.insert(Attribute::CacheControl, format!("max-age={left}").into());
            attributes.insert(Attribute::Metadata("imgedge-expires-at".into()), stored.expires_at.to_string().into());
            // an overwrite, not a conditional create: a key outlives its object's expiry, and
            // the render after it must replace the expired object (outputs are deterministic,
            // so racing writers write the same bytes)
            let opts = PutOptions { attributes, ..PutOptions::default() };
            let put = this.store.put_opts(&path, stored.encode().into(), opts);
            let result = match tokio::time::timeout(this.write_timeout, put).await {
                Err(_) => "timeout",
                Ok(Err(e)) => {
                    tracing::debug!(object = %path, error = %e, "shared store write failed");
                    "error"
                }
                Ok(Ok(_)) => "ok",
            };
            timer.observe_duration();
            metrics::shared_store("put", result);
        });
    }

    /// Deletes the object of this key (a URL purge); whether the store confirmed it.
    pub async fn delete(&self, tenant: &str, hash: &str) -> bool {
        let Some(path) = self.path(tenant, hash) else { return false };
        let timer = metrics::shared_store_timer("delete");
        let result = match tokio::time::timeout(self.write_timeout, self.store.delete(&path)).await {
            Err(_) => "timeout",
            // S3 answers a delete of a missing object as done
            Ok(Ok(())) | Ok(Err(object_store::Error::NotFound { .. })) => "ok",
            Ok(Err(e)) => {
                tracing::warn!(object = %path, error = %e, "shared store delete failed");
                "error"
            }
        };
        timer.observe_duration();
        metrics::shared_store("delete", result);
        result == "ok"
    }
}

/// A render answer as stored: every header but `skip` (render's timing), its expiry from
/// its `max-age`. `None` for what must not be shared: other statuses than 200 and 404,
/// answers without a positive `max-age` (`no-store` among them) and fallback images.
pub fn storable(status: u16, headers: &http::HeaderMap, body: &[u8], skip: &[&str], fallback: &str) -> Option<Stored> {
    if !matches!(status, 200 | 404) || headers.contains_key(fallback) {
        return None;
    }
    let cc = headers.get(http::header::CACHE_CONTROL)?.to_str().ok()?;
    if cc.split(',').any(|d| d.trim().eq_ignore_ascii_case("no-store")) {
        return None;
    }
    let ttl = max_age(cc).filter(|&t| t > 0)?;
    let headers = headers
        .iter()
        .filter(|(n, _)| !skip.contains(&n.as_str()))
        .filter_map(|(n, v)| Some((n.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    Some(Stored { status, headers, expires_at: unix_now() + ttl, body: body.to_vec() })
}

/// The stored answer as render sends it: `Cache-Control`'s `max-age` lowered to the
/// lifetime left, so that no copy downstream outlives the first.
pub fn answer(stored: Stored) -> http::Response<Vec<u8>> {
    let left = stored.expires_at.saturating_sub(unix_now());
    let mut b = http::Response::builder().status(stored.status);
    let cc = stored.header("cache-control").map(|cc| lowered(cc, left));
    for (name, value) in &stored.headers {
        if name.eq_ignore_ascii_case("cache-control") {
            continue;
        }
        b = b.header(name.as_str(), value.as_str());
    }
    if let Some(cc) = cc {
        b = b.header("cache-control", cc);
    }
    b.body(stored.body).unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Stored {
        Stored {
            status: 200,
            headers: vec![
                ("content-type".into(), "image/webp".into()),
                ("cache-control".into(), "public, max-age=600, immutable, stale-if-error=3600".into()),
            ],
            expires_at: 1_900_000_000,
            body: b"RIFF....WEBP".to_vec(),
        }
    }

    #[test]
    fn an_object_reads_back_as_written() {
        let s = sample();
        assert_eq!(Stored::decode(&s.encode()).unwrap(), s);
        let empty = Stored { headers: vec![], body: vec![], ..sample() };
        assert_eq!(Stored::decode(&empty.encode()).unwrap(), empty);
    }

    #[test]
    fn damaged_or_foreign_objects_are_refused() {
        let bytes = sample().encode();
        assert_eq!(Stored::decode(&bytes[..bytes.len() - 1]), Err(Corrupt::Truncated));
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Stored::decode(&longer), Err(Corrupt::Truncated));
        for cut in 0..40 {
            assert!(Stored::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut other_version = bytes.clone();
        other_version[7] = 2;
        assert_eq!(Stored::decode(&other_version), Err(Corrupt::Magic));
        assert_eq!(Stored::decode(b"garbage garbage garbage"), Err(Corrupt::Magic));
        let mut huge_head = bytes;
        huge_head[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(Stored::decode(&huge_head), Err(Corrupt::Truncated));
    }

    #[test]
    fn only_exact_key_hashes_name_objects() {
        assert!(valid_hash("0123456789abcdef0123456789abcdef"));
        for bad in ["0123456789ABCDEF0123456789abcdef", "0123456789abcdef", "../../../../../../../../etc/pass", ""] {
            assert!(!valid_hash(bad), "{bad}");
        }
        assert!(!valid_hash("0123456789abcdef0123456789abcdeg"));
        assert!(!valid_hash("0123456789abcdef0123456789abcdef0"));
    }

    #[test]
    fn max_age_is_lowered_never_raised_and_the_rest_kept() {
        let cc = "public, max-age=600, immutable, stale-if-error=3600";
        assert_eq!(lowered(cc, 42), "public, max-age=42, immutable, stale-if-error=3600");
        assert_eq!(lowered(cc, 6000), cc);
        assert_eq!(max_age(cc), Some(600));
        assert_eq!(max_age("no-store"), None);
    }

    #[test]
    fn only_cacheable_answers_are_stored() {
        let mut h = http::HeaderMap::new();
        h.insert("cache-control", "public, max-age=60".parse().unwrap());
        h.insert("x-imgedge-timing", "- 12".parse().unwrap());
        let s = storable(200, &h, b"x", &["x-imgedge-timing"], "x-imgedge-fallback").unwrap();
        assert_eq!(s.headers, vec![("cache-control".to_owned(), "public, max-age=60".to_owned())]);
        assert!(s.expires_at >= unix_now() + 59);
        assert!(storable(404, &h, b"x", &[], "x-imgedge-fallback").is_some());
        assert!(storable(500, &h, b"x", &[], "x-imgedge-fallback").is_none());
        let mut fb = h.clone();
        fb.insert("x-imgedge-fallback", "1".parse().unwrap());
        assert!(storable(200, &fb, b"x", &[], "x-imgedge-fallback").is_none());
        for cc in ["no-store", "public, max-age=0"] {
            h.insert("cache-control", cc.parse().unwrap());
            assert!(storable(200, &h, b"x", &[], "x-imgedge-fallback").is_none(), "{cc}");
        }
    }
}

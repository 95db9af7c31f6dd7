//! Watermark images: fetched through the tenant's own origins (same byte and pixel limits
//! as a source), identified by a hash of their bytes, decoded once and kept in memory
//! (bounded) for every render that draws them.
//!
//! The identity is part of the cache key (the edge asks [`Watermarks::fresh`] before it
//! computes the key, and [`Watermarks::load`] when the identity is unknown or older than
//! the tenant's `watermark.revalidate`), so a replaced watermark file makes new results
//! instead of serving ones drawn with the old file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::options::Source;
use crate::tenants::TenantRuntime;
use crate::transform::WatermarkImage;

/// Decoded watermarks kept at most (bytes of RGBA pixels, all tenants together); the
/// least recently used go first. A watermark larger than this is decoded per load.
const MAX_BYTES: usize = 64 << 20;

/// A watermark as drawn: its identity and its pixels.
#[derive(Clone)]
pub struct Loaded {
    /// Hex of the first 16 bytes of the BLAKE3 hash of the file.
    pub id: String,
    pub image: Arc<WatermarkImage>,
}

struct Entry {
    loaded: Loaded,
    /// When the origin was last asked.
    checked: Instant,
    used: Instant,
}

#[derive(Default)]
pub struct Watermarks {
    entries: Mutex<HashMap<(String, Source), Entry>>,
}

impl Watermarks {
    /// The watermark, if it was fetched within `revalidate`. No I/O.
    pub fn fresh(&self, tenant: &str, src: &Source, revalidate: Duration) -> Option<Loaded> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let e = entries.get_mut(&(tenant.to_owned(), src.clone()))?;
        let now = Instant::now();
        if now.duration_since(e.checked) >= revalidate {
            return None;
        }
        e.used = now;
        Some(e.loaded.clone())
    }

    /// Fetches the watermark from the tenant's origin; decodes it (on a blocking thread,
    /// under the tenant's pixel limit) only when its bytes changed.
    pub async fn load(&self, rt: &TenantRuntime, src: &Source) -> Result<Loaded, Error> {
        let t = &rt.tenant;
        let fetched = rt.origins.fetch(&src.origin, &src.key, &t.limits).await?;
        let hash = blake3::hash(&fetched.bytes).to_hex();
        let id = hash[..32].to_owned();
        let key = (t.id.clone(), src.clone());
        let known = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.get(&key).filter(|e| e.loaded.id == id).map(|e| e.loaded.image.clone())
        };
        let image = match known {
            Some(image) => image,
            None => {
                let max_pixels = t.limits.max_src_pixels;
                let bytes = fetched.bytes;
                let decoded = tokio::task::spawn_blocking(move || WatermarkImage::decode(&bytes, max_pixels))
                    .await
                    .map_err(|e| Error::Internal(format!("watermark decode task: {e}")))?;
                Arc::new(decoded.map_err(Error::Transform)?)
            }
        };
        let loaded = Loaded { id, image };
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(key, Entry { loaded: loaded.clone(), checked: now, used: now });
        evict(&mut entries);
        Ok(loaded)
    }

    /// The fresh watermark, else a new load.
    pub async fn get(&self, rt: &TenantRuntime, src: &Source, revalidate: Duration) -> Result<Loaded, Error> {
        match self.fresh(&rt.tenant.id, src, revalidate) {
            Some(l) => Ok(l),
            None => self.load(rt, src).await,
        }
    }
}

/// Drops the least recently used entries until the total is within [`MAX_BYTES`].
fn evict(entries: &mut HashMap<(String, Source), Entry>) {
    let mut total: usize = entries.values().map(|e| e.loaded.image.byte_len()).sum();
    while total > MAX_BYTES {
        let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else { break };
        if let Some(e) = entries.remove(&oldest) {
            total -= e.loaded.image.byte_len();
        }
    }
}

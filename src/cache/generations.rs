//! Per-tenant cache generations: part of every cache key, so bumping one purges a whole
//! tenant without scanning.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::RwLock;

/// Per-tenant cache generations: bumping one makes every key of that tenant new, which
/// purges the tenant without scanning. Persisted next to the disk tier so a purge
/// survives restarts along with the entries it hid.
pub struct Generations {
    file: Option<PathBuf>,
    map: RwLock<HashMap<String, u64>>,
}

impl Generations {
    pub fn load(file: Option<PathBuf>) -> Self {
        let map = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice::<HashMap<String, u64>>(&b).ok())
            .unwrap_or_default();
        Generations { file, map: RwLock::new(map) }
    }

    pub fn get(&self, tenant: &str) -> u64 {
        self.map.read().map(|m| m.get(tenant).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// Starts a new generation for `tenant`; returns it.
    pub fn bump(&self, tenant: &str) -> std::io::Result<u64> {
        let (next, snapshot) = {
            let mut m = self.map.write().map_err(|_| std::io::Error::other("generations lock poisoned"))?;
            let next = m.get(tenant).copied().unwrap_or(0) + 1;
            m.insert(tenant.to_owned(), next);
            (next, m.clone())
        };
        if let Some(file) = &self.file {
            // write-then-rename: a crash leaves the old or the new file, never half of one
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, serde_json::to_vec(&snapshot)?)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, file)?;
        }
        Ok(next)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generations_persist() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.json");
        let g = Generations::load(Some(file.clone()));
        assert_eq!(g.get("a"), 0);
        assert_eq!(g.bump("a").unwrap(), 1);
        assert_eq!(g.bump("a").unwrap(), 2);
        assert_eq!(Generations::load(Some(file)).get("a"), 2);
    }
}

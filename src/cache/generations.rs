//! Cache generations: part of every cache key, so bumping one purges without scanning —
//! a whole tenant, or every transform of one source of a tenant.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use serde::{Deserialize, Serialize};

/// What the file holds. A file written before source generations existed is the bare
/// tenant map, read as such.
#[derive(Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    tenants: HashMap<String, u64>,
    /// tenant → source (`origin:key`) → generation.
    #[serde(default)]
    sources: HashMap<String, HashMap<String, u64>>,
    /// The last fleet purge (PostgreSQL sequence number) applied here; only with `fleet:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fleet_seq: Option<u64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OnDisk {
    Current(State),
    Tenants(HashMap<String, u64>),
}

/// The generations of one request's key: its tenant's and its source's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Generation {
    pub tenant: u64,
    pub source: u64,
}

/// Per-tenant and per-(tenant, source) cache generations: bumping one makes every key
/// under it new. Persisted next to the disk tier so a purge survives restarts along with
/// the entries it hid; the file is written before memory changes, so a purge that was
/// answered is on disk.
pub struct Generations {
    file: Option<PathBuf>,
    state: RwLock<State>,
    /// Serialises bumps: each writes the whole file from the state it extends.
    writer: Mutex<()>,
}

impl Generations {
    /// Reads the file; a file that exists but cannot be read or parsed is an error (starting
    /// without it would bring purged entries back).
    pub fn load(file: Option<PathBuf>) -> Result<Self, String> {
        let state = match &file {
            Some(f) => match std::fs::read(f) {
                Ok(bytes) => parse(f, &bytes)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
                Err(e) => return Err(format!("cache generations file {}: {e}", f.display())),
            },
            None => State::default(),
        };
        Ok(Generations { file, state: RwLock::new(state), writer: Mutex::new(()) })
    }

    pub fn get(&self, tenant: &str) -> u64 {
        self.state.read().map(|s| s.tenants.get(tenant).copied().unwrap_or(0)).unwrap_or(0)
    }

    /// The generations of a request for `source` (`origin:key`) of `tenant`.
    pub fn of(&self, tenant: &str, source: &str) -> Generation {
        self.state
            .read()
            .map(|s| Generation {
                tenant: s.tenants.get(tenant).copied().unwrap_or(0),
                source: s.sources.get(tenant).and_then(|m| m.get(source)).copied().unwrap_or(0),
            })
            .unwrap_or_default()
    }

    /// Starts a new generation for `tenant`; returns it.
    pub fn bump(&self, tenant: &str) -> std::io::Result<u64> {
        self.update(|s| {
            let g = s.tenants.entry(tenant.to_owned()).or_insert(0);
            *g += 1;
            *g
        })
    }

    /// Starts a new generation for `source` of `tenant`; returns it.
    pub fn bump_source(&self, tenant: &str, source: &str) -> std::io::Result<u64> {
        self.update(|s| {
            let g = s.sources.entry(tenant.to_owned()).or_default().entry(source.to_owned()).or_insert(0);
            *g += 1;
            *g
        })
    }

    /// The last fleet purge applied (see [`Self::raise`]), if this node ever recorded one.
    pub fn fleet_seq(&self) -> Option<u64> {
        self.state.read().ok().and_then(|s| s.fleet_seq)
    }

    /// Raises generations to the fleet's values (`source` empty = the tenant's own), never
    /// lowering one (a value from PostgreSQL may be older than a local bump), and records
    /// `seq` as the last fleet purge applied. Persists only when something changed.
    pub fn raise(&self, values: &[(String, String, u64)], seq: Option<u64>) -> std::io::Result<()> {
        let changes = |s: &State| {
            values.iter().any(|(t, src, g)| {
                let have = if src.is_empty() {
                    s.tenants.get(t).copied()
                } else {
                    s.sources.get(t).and_then(|m| m.get(src)).copied()
                };
                have.unwrap_or(0) < *g
            }) || seq.is_some_and(|q| s.fleet_seq != Some(q))
        };
        if !self.state.read().map(|s| changes(&s)).unwrap_or(true) {
            return Ok(());
        }
        self.update(|s| {
            for (t, src, g) in values {
                let have = if src.is_empty() {
                    s.tenants.entry(t.clone()).or_insert(0)
                } else {
                    s.sources.entry(t.clone()).or_default().entry(src.clone()).or_insert(0)
                };
                *have = (*have).max(*g);
            }
            if seq.is_some() {
                s.fleet_seq = seq;
            }
            0
        })
        .map(|_| ())
    }

    /// Applies `change` to a copy of the state, persists the copy, then makes it current.
    fn update(&self, change: impl FnOnce(&mut State) -> u64) -> std::io::Result<u64> {
        let poisoned = || std::io::Error::other("generations lock poisoned");
        let _writing = self.writer.lock().map_err(|_| poisoned())?;
        let mut next = self.state.read().map_err(|_| poisoned())?.clone();
        let value = change(&mut next);
        if let Some(file) = &self.file {
            persist(file, &serde_json::to_vec(&next)?)?;
        }
        *self.state.write().map_err(|_| poisoned())? = next;
        Ok(value)
    }
}

fn parse(file: &Path, bytes: &[u8]) -> Result<State, String> {
    match serde_json::from_slice::<OnDisk>(bytes) {
        Ok(OnDisk::Current(s)) => Ok(s),
        Ok(OnDisk::Tenants(tenants)) => Ok(State { tenants, ..State::default() }),
        Err(e) => Err(format!(
            "cache generations file {} is corrupt ({e}): restore it or remove it (entries purged before would be served again)",
            file.display()
        )),
    }
}

/// Write-then-rename with the data and the directory synced: a crash leaves the old or
/// the new file, never half of one.
fn persist(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = file.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn generations_persist() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.json");
        let g = Generations::load(Some(file.clone())).unwrap();
        assert_eq!(g.get("a"), 0);
        assert_eq!(g.bump("a").unwrap(), 1);
        assert_eq!(g.bump("a").unwrap(), 2);
        assert_eq!(g.bump_source("a", "local:x.jpg").unwrap(), 1);
        let again = Generations::load(Some(file)).unwrap();
        assert_eq!(again.of("a", "local:x.jpg"), Generation { tenant: 2, source: 1 });
        assert_eq!(again.of("a", "local:y.jpg"), Generation { tenant: 2, source: 0 });
    }

    #[test]
    fn the_old_file_format_is_read_and_a_corrupt_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.json");
        std::fs::write(&file, br#"{"a": 3}"#).unwrap();
        assert_eq!(Generations::load(Some(file.clone())).unwrap().get("a"), 3);
        std::fs::write(&file, b"{\"a\": 3").unwrap();
        let err = Generations::load(Some(file.clone())).err().unwrap();
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn fleet_values_raise_and_never_lower() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("g.json");
        let g = Generations::load(Some(file.clone())).unwrap();
        assert_eq!(g.bump("a").unwrap(), 1);
        assert_eq!(g.bump("a").unwrap(), 2);
        let v = |t: &str, s: &str, n| (t.to_owned(), s.to_owned(), n);
        g.raise(&[v("a", "", 1), v("a", "local:x.jpg", 4), v("b", "", 3)], Some(9)).unwrap();
        let again = Generations::load(Some(file)).unwrap();
        assert_eq!(again.of("a", "local:x.jpg"), Generation { tenant: 2, source: 4 });
        assert_eq!(again.get("b"), 3);
        assert_eq!(again.fleet_seq(), Some(9));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // the file's directory does not exist: persisting fails
        let g = Generations::load(Some(dir.path().join("missing/g.json"))).unwrap();
        assert!(g.bump("a").is_err());
        assert_eq!(g.get("a"), 0, "memory follows the file");
    }
}

//! The live tenant set: what the edge's admission, render, ops and usage metering know of
//! the tenants — hosts, keys, origins, limits, presets, prices — and the admin token, in
//! one value swapped atomically by a reload ([`crate::reload`]).
//!
//! A request loads the set once and keeps that `Arc` to its end, so a reload never changes
//! a request half-way and the next request sees the whole new set. Origin clients are
//! rebuilt only for tenants whose origins (or origin timeouts) changed; the others keep
//! theirs, with their connection pools.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use crate::config::{Config, Tenant};
use crate::render::origins::Origins;
use crate::render::watermark::Watermarks;

/// A tenant and the clients of its origins.
pub struct TenantRuntime {
    pub tenant: Arc<Tenant>,
    pub origins: Arc<Origins>,
}

/// One consistent view of every tenant.
pub struct TenantSet {
    /// Starts at 0 and grows by one with every applied reload: the edge's admission memo
    /// reuses only what was admitted under the same set.
    pub epoch: u64,
    by_host: HashMap<String, Arc<Tenant>>,
    by_id: HashMap<String, Arc<TenantRuntime>>,
    /// Bearer token of the admin endpoints; `None` disables them.
    pub admin_token: Option<String>,
    /// Unverified requests per second per client address; 0 = unlimited.
    pub unverified_rate_per_address: u32,
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Tenants kept whose origin clients were rebuilt.
    pub origins_rebuilt: Vec<String>,
    pub tenants: usize,
}

impl TenantSet {
    /// Builds the set for `config`, reusing the origin clients of `previous` for tenants
    /// whose origins did not change. Every origin that cannot be built is reported.
    fn build(config: &Config, previous: Option<&TenantSet>) -> Result<(TenantSet, Changes), String> {
        let mut changes = Changes { tenants: config.tenants.len(), ..Changes::default() };
        let mut by_host = HashMap::new();
        let mut by_id = HashMap::new();
        let mut problems = Vec::new();
        for t in &config.tenants {
            let old = previous.and_then(|p| p.by_id.get(&t.id));
            let origins = match old {
                Some(old) if same_origins(&old.tenant, t) => Ok(old.origins.clone()),
                _ => Origins::build(t).map(Arc::new),
            };
            match (old, &origins) {
                (None, _) if previous.is_some() => changes.added.push(t.id.clone()),
                (Some(old), Ok(o)) if !Arc::ptr_eq(&old.origins, o) => changes.origins_rebuilt.push(t.id.clone()),
                _ => {}
            }
            match origins {
                Ok(origins) => {
                    by_id.insert(t.id.clone(), Arc::new(TenantRuntime { tenant: t.clone(), origins }));
                }
                Err(e) => problems.push(e),
            }
            for h in &t.hosts {
                by_host.insert(h.clone(), t.clone());
            }
        }
        if !problems.is_empty() {
            return Err(problems.join("; "));
        }
        if let Some(p) = previous {
            changes.removed = p.by_id.keys().filter(|id| !by_id.contains_key(*id)).cloned().collect();
            changes.removed.sort();
        }
        let epoch = previous.map_or(0, |p| p.epoch + 1);
        let set = TenantSet {
            epoch,
            by_host,
            by_id,
            admin_token: config.admin_token.clone(),
            unverified_rate_per_address: config.unverified_rate_per_address,
        };
        Ok((set, changes))
    }

    /// Looks up by host name (see `edge::host::name`: the `Host` header without its port),
    /// ignoring case.
    pub fn resolve(&self, name: &str) -> Option<&Arc<Tenant>> {
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_host.get(&name.to_ascii_lowercase())
        } else {
            self.by_host.get(name)
        }
    }

    /// A tenant and its origins by id.
    pub fn get(&self, id: &str) -> Option<&Arc<TenantRuntime>> {
        self.by_id.get(id)
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// Whether `b`'s origin clients would be built exactly as `a`'s: the same origins and
/// the timeouts the clients are built with.
fn same_origins(a: &Tenant, b: &Tenant) -> bool {
    a.origins == b.origins
        && a.limits.origin_connect_timeout == b.limits.origin_connect_timeout
        && a.limits.origin_timeout == b.limits.origin_timeout
}

/// The process's tenant set, swapped whole on reload.
pub struct Tenants {
    current: ArcSwap<TenantSet>,
    /// Decoded watermark images, shared by the edge (their identity is in the cache key)
    /// and render (which draws them); kept across reloads.
    pub watermarks: Watermarks,
}

impl Tenants {
    /// The set of the config loaded at start.
    pub fn new(config: &Config) -> Result<Tenants, String> {
        let (set, _) = TenantSet::build(config, None)?;
        Ok(Tenants { current: ArcSwap::from_pointee(set), watermarks: Watermarks::default() })
    }

    /// The current set, for one request.
    #[inline]
    pub fn load(&self) -> Guard<Arc<TenantSet>> {
        self.current.load()
    }

    /// The current set, to keep beyond one request.
    pub fn load_full(&self) -> Arc<TenantSet> {
        self.current.load_full()
    }

    /// Builds the set of `config` (the origins that changed, and only those) without
    /// making it current: `commit` does. Reloads are serialised by their caller.
    pub fn prepare(&self, config: &Config) -> Result<(TenantSet, Changes), String> {
        TenantSet::build(config, Some(&self.current.load()))
    }

    /// Makes `set` current: requests admitted from now on see it.
    pub fn commit(&self, set: TenantSet) {
        self.current.store(Arc::new(set));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(tenants: &str) -> Config {
        let text = format!("listen: {{edge: [\"127.0.0.1:8080\"], render_socket: r.sock}}\ntenants:\n{tenants}");
        crate::config::load_str(&text, std::path::Path::new("/tmp/x.yaml")).unwrap()
    }

    fn tenant(id: &str, host: &str, base: &str) -> String {
        format!(
            "  - id: {id}\n    hosts: [{host}]\n    allow_unsigned: true\n    origins: {{web: {{type: http, base_url: \"{base}\"}}}}\n"
        )
    }

    #[test]
    fn a_reload_rebuilds_only_changed_origins_and_names_what_changed() {
        let a = tenant("a", "a.test", "https://a.example/");
        let t = Tenants::new(&config(&(a.clone() + &tenant("b", "b.test", "https://b.example/")))).unwrap();
        let before = t.load_full();
        assert_eq!((before.epoch, before.len()), (0, 2));
        assert_eq!(before.resolve("A.test").map(|t| t.id.as_str()), Some("a"));

        let next = a.replace("a.test]", "a.test, a2.test]") + &tenant("c", "c.test", "https://c.example/");
        let (set, changes) = t.prepare(&config(&next)).unwrap();
        assert_eq!(
            changes,
            Changes { added: vec!["c".into()], removed: vec!["b".into()], origins_rebuilt: vec![], tenants: 2 }
        );
        assert!(Arc::ptr_eq(&set.get("a").unwrap().origins, &before.get("a").unwrap().origins), "kept");
        assert!(t.load().resolve("a2.test").is_none(), "prepared, not yet current");
        t.commit(set);
        let now = t.load();
        assert_eq!(now.epoch, 1);
        assert!(now.resolve("a2.test").is_some() && now.resolve("b.test").is_none());
        assert_eq!(before.resolve("b.test").map(|t| t.id.as_str()), Some("b"), "a held set does not change");

        let moved = tenant("a", "a.test", "https://elsewhere.example/");
        let (_, changes) = t.prepare(&config(&moved)).unwrap();
        assert_eq!(changes.origins_rebuilt, vec!["a".to_owned()]);
        assert_eq!(changes.removed, vec!["c".to_owned()]);
    }
}

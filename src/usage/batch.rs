//! A flush batch: the counters and served billing keys of one flush interval, as stored
//! in the spool (JSON, so an operator can read a pending batch with `sqlite3`) and
//! applied to a ledger. Its permanent id is `{install id}:{spool sequence}`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::month::Month;
use super::recorder::{unslot, Counters, Slot, Snapshot, TenantBilling};
use super::telemetry::{self, CONTENT_TYPES, LATENCY_BUCKETS};
use super::BillingKey;

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    pub v: u32,
    /// Unix seconds when the batch was cut.
    pub created_at: u64,
    /// Sorted by (month, tenant); one row per pair that had any activity.
    pub rows: Vec<Row>,
}

/// One (month, tenant): counter deltas and the billing keys served in the interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    /// `YYYY-MM`, UTC.
    pub month: String,
    pub tenant: String,
    pub requests: u64,
    pub bytes_out: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub renders: u64,
    pub errors: u64,
    pub credits_milli: u64,
    /// Billing keys (32 hex digits), sorted, each at most once.
    pub keys: Vec<String>,
    /// Of `requests` and `credits_milli`, those of `/info` requests; of `keys`, the
    /// `/info` ones (sorted). Absent in batches of older versions, which had no info
    /// requests; `keys` still lists every key, so an older process applying a newer batch
    /// (the other half of an upgrade) counts its totals right.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub info_requests: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub info_credits_milli: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub info_keys: Vec<String>,
    /// Telemetry (absent in batches of older versions): requests by calling site,
    /// requests per latency bucket (`telemetry::LATENCY_BUCKETS_MS`, then `+Inf`), and
    /// `[requests, bytes]` by content type.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sites: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub latency: Vec<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub types: BTreeMap<String, [u64; 2]>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Row {
    fn new(month: Month, tenant: &str, c: &Counters) -> Row {
        Row {
            month: month.to_string(),
            tenant: tenant.to_owned(),
            requests: c.requests,
            bytes_out: c.bytes_out,
            cache_hits: c.hits,
            cache_misses: c.misses,
            renders: c.renders,
            errors: c.errors,
            credits_milli: c.credits_milli,
            keys: Vec::new(),
            info_requests: c.info_requests,
            info_credits_milli: c.info_credits_milli,
            info_keys: Vec::new(),
            sites: BTreeMap::new(),
            latency: if c.latency.iter().any(|n| *n > 0) { c.latency.to_vec() } else { Vec::new() },
            types: CONTENT_TYPES
                .iter()
                .zip(c.types)
                .filter(|(_, t)| t[0] > 0)
                .map(|(name, t)| ((*name).to_owned(), t))
                .collect(),
        }
    }

    /// The latency histogram as (bucket name, requests), `+Inf` last.
    pub fn latency_named(&self) -> impl Iterator<Item = (String, u64)> + '_ {
        self.latency.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| (telemetry::latency_name(i), *n))
    }
}

impl Batch {
    /// Builds a batch from a snapshot, leaving out keys for which `skip` is true (keys an
    /// earlier batch of this process already carries to the ledger).
    pub fn from_snapshot(
        s: &Snapshot,
        tenants: &[TenantBilling],
        skip: impl Fn(&(Slot, BillingKey)) -> bool,
        created_at: u64,
    ) -> Batch {
        let mut rows: std::collections::BTreeMap<Slot, Row> = std::collections::BTreeMap::new();
        let name = |slot: Slot| {
            let (t, m) = unslot(slot);
            (m, tenants.get(t as usize).map_or("", |t| &*t.id))
        };
        for (slot, c) in &s.counters {
            let (m, t) = name(*slot);
            rows.insert(*slot, Row::new(m, t, c));
        }
        for (slot, sites) in &s.sites {
            if let Some(row) = rows.get_mut(slot) {
                row.sites = sites.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            }
        }
        for k in s.keys.iter().filter(|k| !skip(k)) {
            // every key has a counters row (the request that served it); a zero row keeps
            // that true even if a caller built the snapshot otherwise
            let row = rows.entry(k.0).or_insert_with(|| {
                let (m, t) = name(k.0);
                Row::new(m, t, &Counters::default())
            });
            row.keys.push(k.1.to_hex());
            if s.info_keys.contains(k) {
                row.info_keys.push(k.1.to_hex());
            }
        }
        let mut rows: Vec<Row> = rows.into_values().filter(|r| !r.tenant.is_empty()).collect();
        for r in &mut rows {
            r.keys.sort_unstable();
            r.info_keys.sort_unstable();
        }
        rows.sort_by(|a, b| (&a.month, &a.tenant).cmp(&(&b.month, &b.tenant)));
        Batch { v: VERSION, created_at, rows }
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn requests(&self) -> u64 {
        self.rows.iter().map(|r| r.requests).sum()
    }

    pub fn key_count(&self) -> usize {
        self.rows.iter().map(|r| r.keys.len()).sum()
    }

    pub fn to_json(&self) -> String {
        // a struct of strings and integers always serialises
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses and checks a stored batch: version, months and keys.
    pub fn from_json(text: &str) -> Result<Batch, String> {
        let b: Batch = serde_json::from_str(text).map_err(|e| format!("bad batch: {e}"))?;
        if b.v != VERSION {
            return Err(format!("unknown batch version {}", b.v));
        }
        for r in &b.rows {
            if Month::parse(&r.month).is_none() {
                return Err(format!("bad month {:?}", r.month));
            }
            if let Some(k) = r.keys.iter().chain(&r.info_keys).find(|k| BillingKey::from_hex(k).is_none()) {
                return Err(format!("bad billing key {k:?}"));
            }
            if let Some(k) = r.info_keys.iter().find(|k| r.keys.binary_search(k).is_err()) {
                return Err(format!("info key {k:?} is not among the keys"));
            }
            if r.latency.len() > LATENCY_BUCKETS {
                return Err(format!("{} latency buckets", r.latency.len()));
            }
        }
        Ok(b)
    }

    /// Content digest stored with the batch id: a ledger that already holds the id with
    /// another digest has met a different batch under the same id (a copied spool file).
    pub fn digest(json: &str) -> [u8; 16] {
        let mut out = [0u8; 16];
        out.copy_from_slice(&blake3::hash(json.as_bytes()).as_bytes()[..16]);
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::recorder::{slot, CacheOutcome, Operation, Recorder, Request};
    use super::*;
    use crate::config::Credits;

    #[test]
    fn snapshot_to_batch_and_back() {
        let credits = Credits { transform: 1000, info: 500, hit: 0, error: 0, grid_source: 1000 };
        let r = Recorder::new(
            vec![TenantBilling { id: "b".into(), credits }, TenantBilling { id: "a".into(), credits }],
            2,
        );
        let m = Month::parse("2026-11").unwrap();
        for (t, k) in [("a", 7u128), ("b", 7), ("b", 9), ("b", 9)] {
            let req = Request {
                tenant: t,
                operation: Operation::Transform,
                status: 200,
                fallback: false,
                cache: CacheOutcome::Miss,
                bytes_out: 5,
                billing_key: Some(BillingKey(k)),
                site: Some(t),
                content_type: 2,
                micros: 30_000,
            };
            r.record_in(&req, m);
        }
        // an info request: a share of the row, its key among the keys and the info keys
        let info = Request {
            tenant: "a",
            operation: Operation::Info,
            status: 200,
            fallback: false,
            cache: CacheOutcome::Miss,
            bytes_out: 5,
            billing_key: Some(BillingKey(11)),
            site: Some("a"),
            content_type: 2,
            micros: 30_000,
        };
        r.record_in(&info, m);
        let snap = r.drain();
        let skip_b9 = |k: &(Slot, BillingKey)| *k == (slot(0, m), BillingKey(9));
        let b = Batch::from_snapshot(&snap, &r.tenants(), skip_b9, 1);
        assert_eq!(b.rows.len(), 2);
        assert_eq!((b.rows[0].tenant.as_str(), b.rows[0].requests, b.rows[0].keys.len()), ("a", 2, 2));
        assert_eq!((b.rows[0].info_requests, b.rows[0].info_credits_milli, b.rows[1].info_requests), (1, 500, 0));
        assert_eq!(b.rows[0].info_keys, [BillingKey(11).to_hex()]);
        assert!(b.rows[0].keys.contains(&BillingKey(11).to_hex()));
        assert_eq!((b.rows[1].tenant.as_str(), b.rows[1].requests, b.rows[1].keys.len()), ("b", 3, 1));
        assert_eq!(b.rows[1].keys[0], BillingKey(7).to_hex());
        assert_eq!(b.rows[1].sites, BTreeMap::from([("b".to_owned(), 3)]));
        assert_eq!(b.rows[1].types, BTreeMap::from([("image/webp".to_owned(), [3, 15])]));
        assert_eq!(b.rows[1].latency_named().collect::<Vec<_>>(), [("50".to_owned(), 3)]);
        assert_eq!((b.requests(), b.key_count()), (5, 3));
        let json = b.to_json();
        assert_eq!(Batch::from_json(&json).unwrap(), b);
        assert_eq!(Batch::digest(&json), Batch::digest(&b.to_json()));
        assert!(Batch::from_json(&json.replace("2026-11", "2026-13")).is_err());
        // an older batch (no info fields) still reads; an info key must be one of the keys
        assert!(!serde_json::to_string(&b.rows[1]).unwrap().contains("info"), "no info fields when there was none");
        let stray = json.replace(
            &format!("\"info_keys\":[\"{}\"]", BillingKey(11).to_hex()),
            &format!("\"info_keys\":[\"{}\"]", BillingKey(12).to_hex()),
        );
        assert_ne!(stray, json);
        assert!(Batch::from_json(&stray).unwrap_err().contains("not among the keys"));
    }
}

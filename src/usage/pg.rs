//! The PostgreSQL ledger, shared by every imgedge process of a fleet.
//!
//! A batch is applied in one transaction that first records its id in
//! `imgedge_usage_batches` (`ON CONFLICT DO NOTHING`): if the id was already there, the
//! transaction changes nothing and the batch is acknowledged as a duplicate, so a batch
//! retried after a lost acknowledgement is never counted twice. Unique transforms go
//! through the `(month, tenant, key)` set with `ON CONFLICT DO NOTHING … RETURNING`, and
//! the monthly counter grows by the rows actually inserted, so two processes serving the
//! same transform count it once. Rows are written in (month, tenant, key) order, so
//! concurrent appliers lock in one order and do not deadlock.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio_postgres::{Client, Config, NoTls};

use super::batch::Batch;
use super::telemetry::{self, Telemetry};
use super::Totals;

const SCHEMA: &str = "
BEGIN;
-- concurrent first starts of several processes must not race on CREATE TABLE
SELECT pg_advisory_xact_lock(7224150917);
CREATE TABLE IF NOT EXISTS imgedge_usage_batches (
    batch_id text PRIMARY KEY,
    digest bytea NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS imgedge_usage_monthly (
    month date NOT NULL,
    tenant text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    bytes_out bigint NOT NULL DEFAULT 0,
    cache_hits bigint NOT NULL DEFAULT 0,
    cache_misses bigint NOT NULL DEFAULT 0,
    renders bigint NOT NULL DEFAULT 0,
    errors bigint NOT NULL DEFAULT 0,
    credits_milli bigint NOT NULL DEFAULT 0,
    unique_transforms bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (month, tenant)
);
CREATE TABLE IF NOT EXISTS imgedge_usage_telemetry (
    month date NOT NULL,
    tenant text NOT NULL,
    kind text NOT NULL,
    name text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (month, tenant, kind, name)
);
CREATE TABLE IF NOT EXISTS imgedge_unique_transforms (
    month date NOT NULL,
    tenant text NOT NULL,
    key bytea NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (month, tenant, key)
);
-- added after the first release: a ledger created before gets them, zero
ALTER TABLE imgedge_usage_monthly
    ADD COLUMN IF NOT EXISTS info_requests bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS info_credits_milli bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS unique_info bigint NOT NULL DEFAULT 0;
COMMIT;
";

const UPSERT_COUNTERS: &str = "
INSERT INTO imgedge_usage_monthly AS u
    (month, tenant, requests, bytes_out, cache_hits, cache_misses, renders, errors, credits_milli, info_requests,
     info_credits_milli)
SELECT to_date(m, 'YYYY-MM'), t, r, b, h, mi, re, e, c, ir, ic
FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[], $8::int8[],
            $9::int8[], $10::int8[], $11::int8[]) AS x(m, t, r, b, h, mi, re, e, c, ir, ic)
ORDER BY 1, 2
ON CONFLICT (month, tenant) DO UPDATE SET
    requests = u.requests + EXCLUDED.requests,
    bytes_out = u.bytes_out + EXCLUDED.bytes_out,
    cache_hits = u.cache_hits + EXCLUDED.cache_hits,
    cache_misses = u.cache_misses + EXCLUDED.cache_misses,
    renders = u.renders + EXCLUDED.renders,
    errors = u.errors + EXCLUDED.errors,
    credits_milli = u.credits_milli + EXCLUDED.credits_milli,
    info_requests = u.info_requests + EXCLUDED.info_requests,
    info_credits_milli = u.info_credits_milli + EXCLUDED.info_credits_milli";

const INSERT_KEYS: &str = "
WITH ins AS (
    INSERT INTO imgedge_unique_transforms (month, tenant, key)
    SELECT to_date(m, 'YYYY-MM'), t, k FROM unnest($1::text[], $2::text[], $3::bytea[]) AS x(m, t, k)
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
    RETURNING month, tenant)
UPDATE imgedge_usage_monthly u SET unique_transforms = u.unique_transforms + c.n
FROM (SELECT month, tenant, count(*) AS n FROM ins GROUP BY 1, 2) c
WHERE u.month = c.month AND u.tenant = c.tenant";

/// [`INSERT_KEYS`] for the keys of `/info` requests: they count in `unique_info` too. Run
/// after it, so every applier takes key locks in one order (transform keys, then info).
const INSERT_INFO_KEYS: &str = "
WITH ins AS (
    INSERT INTO imgedge_unique_transforms (month, tenant, key)
    SELECT to_date(m, 'YYYY-MM'), t, k FROM unnest($1::text[], $2::text[], $3::bytea[]) AS x(m, t, k)
    ORDER BY 1, 2, 3
    ON CONFLICT DO NOTHING
    RETURNING month, tenant)
UPDATE imgedge_usage_monthly u
SET unique_transforms = u.unique_transforms + c.n, unique_info = u.unique_info + c.n
FROM (SELECT month, tenant, count(*) AS n FROM ins GROUP BY 1, 2) c
WHERE u.month = c.month AND u.tenant = c.tenant";

const UPSERT_TELEMETRY: &str = "
INSERT INTO imgedge_usage_telemetry AS u (month, tenant, kind, name, requests, bytes)
SELECT to_date(m, 'YYYY-MM'), t, k, n, r, b
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[]) AS x(m, t, k, n, r, b)
ORDER BY 1, 2, 3, 4
ON CONFLICT (month, tenant, kind, name) DO UPDATE SET
    requests = u.requests + EXCLUDED.requests,
    bytes = u.bytes + EXCLUDED.bytes";

/// Longest a connection attempt or one batch may take before it is abandoned (the batch
/// stays in the spool and is retried).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The batch's counts were added.
    Applied,
    /// The ledger already had this batch (an earlier attempt's acknowledgement was lost).
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkError {
    /// Unreachable, timed out or failed: retry later.
    Unavailable(String),
    /// The ledger holds a different batch under this id.
    Collision,
}

impl std::fmt::Display for SinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkError::Unavailable(e) => write!(f, "postgres: {e}"),
            SinkError::Collision => f.write_str("postgres holds a different batch under this batch id"),
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> SinkError {
    SinkError::Unavailable(e.to_string())
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A connection to the ledger, opened on first use and reopened after any failure.
pub struct PgSink {
    config: Config,
    client: Option<Client>,
}

impl PgSink {
    /// `url` is a `postgres://` URL or a libpq key=value string. Only plain TCP or Unix
    /// sockets: no TLS.
    pub fn new(url: &str) -> Result<PgSink, String> {
        let mut config: Config = url.parse().map_err(|e| format!("postgres URL: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("imgedge");
        }
        Ok(PgSink { config, client: None })
    }

    /// An open connection with the schema in place. Must run inside a tokio runtime: the
    /// connection's I/O task is spawned on it.
    async fn client(&mut self) -> Result<&mut Client, SinkError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = Some(self.connect().await?);
        }
        self.client.as_mut().ok_or_else(|| unavailable("not connected"))
    }

    async fn connect(&self) -> Result<Client, SinkError> {
        let (client, conn) = tokio::time::timeout(CONNECT_TIMEOUT * 2, self.config.connect(NoTls))
            .await
            .map_err(|_| unavailable("connect timed out"))?
            .map_err(unavailable)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "usage ledger connection closed");
            }
        });
        client.batch_execute(SCHEMA).await.map_err(unavailable)?;
        Ok(client)
    }

    /// Applies one batch exactly once (see the module docs). On any error the connection
    /// is dropped, which rolls back whatever the transaction had done.
    pub async fn apply(&mut self, id: &str, digest: &[u8], batch: &Batch) -> Result<Applied, SinkError> {
        let r = tokio::time::timeout(APPLY_TIMEOUT, self.apply_once(id, digest, batch)).await;
        let r = r.unwrap_or_else(|_| Err(unavailable("timed out")));
        if matches!(r, Err(SinkError::Unavailable(_))) {
            self.client = None;
        }
        r
    }

    async fn apply_once(&mut self, id: &str, digest: &[u8], batch: &Batch) -> Result<Applied, SinkError> {
        let client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let inserted = tx
            .execute(
                "INSERT INTO imgedge_usage_batches (batch_id, digest) VALUES ($1, $2) ON CONFLICT (batch_id) DO NOTHING",
                &[&id, &digest],
            )
            .await
            .map_err(unavailable)?;
        if inserted == 0 {
            let row = tx
                .query_one("SELECT digest FROM imgedge_usage_batches WHERE batch_id = $1", &[&id])
                .await
                .map_err(unavailable)?;
            let stored: Vec<u8> = row.get(0);
            tx.commit().await.map_err(unavailable)?;
            return if stored == digest { Ok(Applied::Duplicate) } else { Err(SinkError::Collision) };
        }

        // rows arrive sorted by (month, tenant) from Batch::from_snapshot
        let rows = &batch.rows;
        let col = |f: fn(&super::batch::Row) -> u64| rows.iter().map(|r| i64_of(f(r))).collect::<Vec<i64>>();
        let months: Vec<&str> = rows.iter().map(|r| r.month.as_str()).collect();
        let tenants: Vec<&str> = rows.iter().map(|r| r.tenant.as_str()).collect();
        let (req, bytes, hits, misses, renders, errors, credits) = (
            col(|r| r.requests),
            col(|r| r.bytes_out),
            col(|r| r.cache_hits),
            col(|r| r.cache_misses),
            col(|r| r.renders),
            col(|r| r.errors),
            col(|r| r.credits_milli),
        );
        let (info_req, info_credits) = (col(|r| r.info_requests), col(|r| r.info_credits_milli));
        tx.execute(
            UPSERT_COUNTERS,
            &[&months, &tenants, &req, &bytes, &hits, &misses, &renders, &errors, &credits, &info_req, &info_credits],
        )
        .await
        .map_err(unavailable)?;

        // transform keys, then info keys (a sorted subset of each row's keys)
        for info in [false, true] {
            let (mut km, mut kt, mut kk) = (Vec::new(), Vec::new(), Vec::new());
            for r in rows {
                for k in r.keys.iter().filter(|k| r.info_keys.binary_search(k).is_ok() == info) {
                    let Some(key) = super::BillingKey::from_hex(k) else { continue };
                    km.push(r.month.as_str());
                    kt.push(r.tenant.as_str());
                    kk.push(key.to_bytes().to_vec());
                }
            }
            if !kk.is_empty() {
                let query = if info { INSERT_INFO_KEYS } else { INSERT_KEYS };
                tx.execute(query, &[&km, &kt, &kk]).await.map_err(unavailable)?;
            }
        }

        let (mut tm, mut tt, mut tk, mut tn, mut tr, mut tb) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in rows {
            let mut known = HashSet::new();
            if !r.sites.is_empty() {
                // which sites have a row is decided under a lock per (month, tenant), so
                // concurrent appliers never name more than TOP_SITES between them
                tx.execute(
                    "SELECT pg_advisory_xact_lock(72241, hashtext($1::text || ' ' || $2::text))",
                    &[&r.month, &r.tenant],
                )
                .await
                .map_err(unavailable)?;
                let names = tx
                    .query(
                        "SELECT name FROM imgedge_usage_telemetry
                         WHERE month = to_date($1, 'YYYY-MM') AND tenant = $2 AND kind = 'site'",
                        &[&r.month, &r.tenant],
                    )
                    .await
                    .map_err(unavailable)?;
                known = names.iter().map(|n| n.get::<_, String>(0)).collect();
            }
            for e in telemetry::entries(r, &known) {
                tm.push(r.month.as_str());
                tt.push(r.tenant.as_str());
                tk.push(e.kind);
                tn.push(e.name);
                tr.push(i64_of(e.requests));
                tb.push(i64_of(e.bytes));
            }
        }
        if !tm.is_empty() {
            tx.execute(UPSERT_TELEMETRY, &[&tm, &tt, &tk, &tn, &tr, &tb]).await.map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Applied::Applied)
    }

    /// Ledger totals, optionally for one tenant and/or month (`YYYY-MM`).
    pub async fn totals(&mut self, tenant: Option<&str>, month: Option<&str>) -> Result<Vec<Totals>, SinkError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT to_char(month, 'YYYY-MM'), tenant, requests, bytes_out, cache_hits, cache_misses, renders,
                        errors, unique_transforms, credits_milli, info_requests, unique_info, info_credits_milli
                 FROM imgedge_usage_monthly
                 WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR month = to_date($2, 'YYYY-MM'))
                 ORDER BY month, tenant",
                &[&tenant, &month],
            )
            .await
            .map_err(unavailable)?;
        let n = |r: &tokio_postgres::Row, i: usize| r.get::<_, i64>(i).max(0) as u64;
        let lines = client
            .query(
                "SELECT to_char(month, 'YYYY-MM'), tenant, kind, name, requests, bytes FROM imgedge_usage_telemetry
                 WHERE ($1::text IS NULL OR tenant = $1) AND ($2::text IS NULL OR month = to_date($2, 'YYYY-MM'))
                 ORDER BY 1, 2, 3, 4",
                &[&tenant, &month],
            )
            .await
            .map_err(unavailable)?;
        let mut telemetry: HashMap<(String, String), Telemetry> = HashMap::new();
        for l in &lines {
            let t = telemetry.entry((l.get(0), l.get(1))).or_default();
            t.add(l.get::<_, &str>(2), l.get(3), n(l, 4), n(l, 5));
        }
        Ok(rows
            .iter()
            .map(|r| Totals {
                month: r.get(0),
                tenant: r.get(1),
                requests: n(r, 2),
                bytes_out: n(r, 3),
                cache_hits: n(r, 4),
                cache_misses: n(r, 5),
                renders: n(r, 6),
                errors: n(r, 7),
                unique_transforms: n(r, 8),
                credits_milli: n(r, 9),
                info_requests: n(r, 10),
                unique_info: n(r, 11),
                info_credits_milli: n(r, 12),
                telemetry: telemetry.remove(&(r.get::<_, String>(0), r.get::<_, String>(1))).unwrap_or_default(),
            })
            .collect())
    }
}

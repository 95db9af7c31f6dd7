//! The SQLite spool: every flush is one transaction in one file (WAL, `synchronous=FULL`,
//! so a committed batch survives `kill -9` and power loss). Without PostgreSQL the same
//! file is the ledger and the batch is applied in the transaction that records it, so
//! "delivery" cannot fail halfway. With PostgreSQL, batches wait here (`shipped_at IS
//! NULL`) until the sink has acknowledged them.
//!
//! Several processes may share one spool (the old and new process of a graceful upgrade):
//! SQLite serialises their writers, and `AUTOINCREMENT` never hands out a sequence twice,
//! so batch ids stay unique. The install id lives in the file: a fresh file is a fresh
//! install.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use super::batch::Batch;
use super::month::unix_now;
use super::{telemetry, Totals};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
-- one row per flush; payload is kept only while the batch waits for a remote ledger
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id TEXT UNIQUE,
    created_at INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    keys INTEGER NOT NULL,
    digest BLOB NOT NULL,
    payload TEXT,
    shipped_at INTEGER
);
CREATE INDEX IF NOT EXISTS batches_pending ON batches (seq) WHERE shipped_at IS NULL;
-- the embedded ledger
CREATE TABLE IF NOT EXISTS usage_monthly (
    month TEXT NOT NULL,
    tenant TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    bytes_out INTEGER NOT NULL DEFAULT 0,
    cache_hits INTEGER NOT NULL DEFAULT 0,
    cache_misses INTEGER NOT NULL DEFAULT 0,
    renders INTEGER NOT NULL DEFAULT 0,
    errors INTEGER NOT NULL DEFAULT 0,
    credits_milli INTEGER NOT NULL DEFAULT 0,
    unique_transforms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (month, tenant)
) WITHOUT ROWID;
-- per (month, tenant): requests by calling site, latency bucket and content type
CREATE TABLE IF NOT EXISTS usage_telemetry (
    month TEXT NOT NULL,
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0,
    bytes INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (month, tenant, kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unique_transforms (
    month TEXT NOT NULL,
    tenant TEXT NOT NULL,
    key BLOB NOT NULL,
    PRIMARY KEY (month, tenant, key)
) WITHOUT ROWID;
";

/// Columns added to `usage_monthly` after its first release: (name, definition). A ledger
/// written before them gets them (zero) when it is opened, so it stays readable.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("info_requests", "INTEGER NOT NULL DEFAULT 0"),
    ("info_credits_milli", "INTEGER NOT NULL DEFAULT 0"),
    ("unique_info", "INTEGER NOT NULL DEFAULT 0"),
];

/// Creates the tables and adds missing columns, in one write transaction: processes
/// sharing the file (an upgrade's two halves) never both add a column.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for (name, def) in ADDED_COLUMNS {
        let present: bool =
            tx.query_row("SELECT count(*) > 0 FROM pragma_table_info('usage_monthly') WHERE name = ?1", [name], |r| {
                r.get(0)
            })?;
        if !present {
            tx.execute_batch(&format!("ALTER TABLE usage_monthly ADD COLUMN {name} {def}"))?;
        }
    }
    tx.commit()
}

/// How long a delivered batch's row stays in the spool, as a flush log.
pub const KEEP_SHIPPED: Duration = Duration::from_secs(7 * 86_400);

#[derive(Debug)]
pub enum SpoolError {
    /// `spool_max_batches` batches are waiting for the sink.
    Full {
        pending: u64,
    },
    Sql(String),
}

impl std::fmt::Display for SpoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpoolError::Full { pending } => write!(f, "spool full: {pending} batches wait for the ledger"),
            SpoolError::Sql(e) => write!(f, "spool: {e}"),
        }
    }
}

impl From<rusqlite::Error> for SpoolError {
    fn from(e: rusqlite::Error) -> Self {
        SpoolError::Sql(e.to_string())
    }
}

fn sql(e: rusqlite::Error) -> String {
    e.to_string()
}

/// A batch recorded in the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: i64,
    pub id: String,
}

/// A batch waiting for the remote ledger.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: i64,
    pub id: String,
    pub payload: String,
    pub digest: Vec<u8>,
}

pub struct Spool {
    conn: Connection,
    path: PathBuf,
    /// Apply batches to the ledger tables of this file in the same transaction.
    embedded: bool,
    max_pending: u64,
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // another process (an upgrade's old or new instance) may hold the write lock briefly
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk when it returns, in WAL mode too
    conn.pragma_update(None, "synchronous", "FULL")
}

impl Spool {
    /// Opens (creating if needed, mode 0600) the spool at `path`.
    pub fn open(path: &Path, embedded: bool, max_pending: u64) -> Result<Spool, String> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        if !path.exists() {
            // billing data: readable by the service user only
            use std::os::unix::fs::OpenOptionsExt;
            let _ = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path);
        }
        let mut conn = Connection::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        configure(&conn).map_err(|e| format!("{}: {e}", path.display()))?;
        migrate(&mut conn).map_err(|e| format!("{}: {e}", path.display()))?;
        let s = Spool { conn, path: path.to_path_buf(), embedded, max_pending };
        s.install_id()?;
        Ok(s)
    }

    /// Opens an existing spool to read the ledger; never creates one.
    pub fn open_existing(path: &Path) -> Result<Spool, String> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)
            .map_err(|e| format!("no usage ledger at {}: {e}", path.display()))?;
        configure(&conn).map_err(sql)?;
        migrate(&mut conn).map_err(sql)?;
        Ok(Spool { conn, path: path.to_path_buf(), embedded: true, max_pending: u64::MAX })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This install's id, created on first use: a random UUID, never a host name (two
    /// hosts with one id would make a ledger drop one host's batches as duplicates).
    pub fn install_id(&self) -> Result<String, String> {
        self.conn
            .execute(
                "INSERT INTO meta (key, value) VALUES ('install_id', ?1) ON CONFLICT (key) DO NOTHING",
                [uuid::Uuid::new_v4().to_string()],
            )
            .map_err(sql)?;
        self.conn.query_row("SELECT value FROM meta WHERE key = 'install_id'", [], |r| r.get(0)).map_err(sql)
    }

    fn insert(tx: &Transaction<'_>, batch: &Batch, payload: Option<&str>, digest: &[u8]) -> rusqlite::Result<Appended> {
        let install: String = tx.query_row("SELECT value FROM meta WHERE key = 'install_id'", [], |r| r.get(0))?;
        let shipped = payload.is_none().then(|| i64_of(unix_now()));
        tx.execute(
            "INSERT INTO batches (created_at, requests, keys, digest, payload, shipped_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                i64_of(batch.created_at),
                i64_of(batch.requests()),
                batch.key_count() as i64,
                digest,
                payload,
                shipped
            ],
        )?;
        let seq = tx.last_insert_rowid();
        let id = format!("{install}:{seq}");
        tx.execute("UPDATE batches SET batch_id = ?1 WHERE seq = ?2", params![id, seq])?;
        Ok(Appended { seq, id })
    }

    /// Records a batch durably: with the embedded ledger, applies it in the same
    /// transaction; otherwise keeps it pending for the sink, unless `max_pending` batches
    /// already wait and `enforce_bound` is set (the final flush writes regardless: one
    /// batch over the bound beats losing it at exit).
    pub fn append(&mut self, batch: &Batch, enforce_bound: bool) -> Result<Appended, SpoolError> {
        let json = batch.to_json();
        let digest = Batch::digest(&json);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let appended = if self.embedded {
            let a = Self::insert(&tx, batch, None, &digest)?;
            apply_local(&tx, batch)?;
            a
        } else {
            let pending: i64 =
                tx.query_row("SELECT count(*) FROM batches WHERE shipped_at IS NULL", [], |r| r.get(0))?;
            let pending = pending as u64;
            if enforce_bound && pending >= self.max_pending {
                return Err(SpoolError::Full { pending });
            }
            Self::insert(&tx, batch, Some(&json), &digest)?
        };
        tx.commit()?;
        Ok(appended)
    }

    /// Number of batches waiting for the sink, and the creation time of the oldest.
    pub fn pending(&self) -> Result<(u64, Option<u64>), String> {
        self.conn
            .query_row("SELECT count(*), min(created_at) FROM batches WHERE shipped_at IS NULL", [], |r| {
                Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Option<i64>>(1)?.map(|t| t.max(0) as u64)))
            })
            .map_err(sql)
    }

    /// The oldest pending batch with a sequence above `after`.
    pub fn next_pending(&self, after: i64) -> Result<Option<Pending>, String> {
        self.conn
            .query_row(
                "SELECT seq, batch_id, payload, digest FROM batches
                 WHERE shipped_at IS NULL AND seq > ?1 AND payload IS NOT NULL ORDER BY seq LIMIT 1",
                [after],
                |r| Ok(Pending { seq: r.get(0)?, id: r.get(1)?, payload: r.get(2)?, digest: r.get(3)? }),
            )
            .optional()
            .map_err(sql)
    }

    /// The sink has the batch: drop its payload and remember when.
    pub fn mark_shipped(&self, seq: i64) -> Result<(), String> {
        self.conn
            .execute(
                "UPDATE batches SET shipped_at = ?1, payload = NULL WHERE seq = ?2 AND shipped_at IS NULL",
                params![i64_of(unix_now()), seq],
            )
            .map(drop)
            .map_err(sql)
    }

    /// The sink holds another batch under this batch's id (this spool file was copied
    /// from another install): takes a new install id and re-records the batch under it,
    /// in one transaction, so its counts still arrive exactly once.
    pub fn reissue(&mut self, seq: i64) -> Result<Appended, String> {
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
        let payload: Option<String> = tx
            .query_row("SELECT payload FROM batches WHERE seq = ?1 AND shipped_at IS NULL", [seq], |r| r.get(0))
            .optional()
            .map_err(sql)?
            .flatten();
        let Some(payload) = payload else {
            return Err(format!("batch {seq} is not pending"));
        };
        let batch = Batch::from_json(&payload)?;
        tx.execute("UPDATE meta SET value = ?1 WHERE key = 'install_id'", [uuid::Uuid::new_v4().to_string()])
            .map_err(sql)?;
        let a = Self::insert(&tx, &batch, Some(&payload), &Batch::digest(&payload)).map_err(sql)?;
        // the old row is closed without delivery: its contents now travel as the new one
        tx.execute("UPDATE batches SET shipped_at = -1, payload = NULL WHERE seq = ?1", [seq]).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(a)
    }

    /// Applies batches left pending by an earlier run that had a remote ledger, now that
    /// this file is the ledger. Each in its own transaction with its pending mark.
    pub fn apply_pending_locally(&mut self) -> Result<u64, String> {
        let mut n = 0;
        while let Some(p) = self.next_pending(0)? {
            let batch = Batch::from_json(&p.payload)?;
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(sql)?;
            // claim it inside the transaction: another process sharing the spool (an
            // upgrade's other half) may have applied it since it was read
            let claimed = tx
                .execute(
                    "UPDATE batches SET shipped_at = ?1, payload = NULL WHERE seq = ?2 AND shipped_at IS NULL",
                    params![i64_of(unix_now()), p.seq],
                )
                .map_err(sql)?;
            if claimed == 1 {
                apply_local(&tx, &batch).map_err(sql)?;
                n += 1;
            }
            tx.commit().map_err(sql)?;
        }
        Ok(n)
    }

    /// Deletes delivered batch rows shipped before `before` (unix seconds).
    pub fn prune(&self, before: u64) -> Result<usize, String> {
        self.conn
            .execute("DELETE FROM batches WHERE shipped_at IS NOT NULL AND shipped_at < ?1", [i64_of(before)])
            .map_err(sql)
    }

    /// Ledger totals (embedded ledger), optionally for one tenant and/or month.
    pub fn totals(&self, tenant: Option<&str>, month: Option<&str>) -> Result<Vec<Totals>, String> {
        let mut st = self
            .conn
            .prepare(
                "SELECT month, tenant, requests, bytes_out, cache_hits, cache_misses, renders, errors,
                        unique_transforms, credits_milli, info_requests, unique_info, info_credits_milli
                 FROM usage_monthly WHERE (?1 IS NULL OR tenant = ?1) AND (?2 IS NULL OR month = ?2)
                 ORDER BY month, tenant",
            )
            .map_err(sql)?;
        let rows = st
            .query_map(params![tenant, month], |r| {
                let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(Totals {
                    month: r.get(0)?,
                    tenant: r.get(1)?,
                    requests: n(2)?,
                    bytes_out: n(3)?,
                    cache_hits: n(4)?,
                    cache_misses: n(5)?,
                    renders: n(6)?,
                    errors: n(7)?,
                    unique_transforms: n(8)?,
                    credits_milli: n(9)?,
                    info_requests: n(10)?,
                    unique_info: n(11)?,
                    info_credits_milli: n(12)?,
                    telemetry: Default::default(),
                })
            })
            .map_err(sql)?;
        let mut rows = rows.collect::<Result<Vec<_>, _>>().map_err(sql)?;
        let mut st = self
            .conn
            .prepare_cached(
                "SELECT kind, name, requests, bytes FROM usage_telemetry WHERE month = ?1 AND tenant = ?2
                 ORDER BY kind, name",
            )
            .map_err(sql)?;
        for t in &mut rows {
            let lines = st
                .query_map(params![t.month, t.tenant], |r| {
                    let n = |i| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, n(2)?, n(3)?))
                })
                .map_err(sql)?;
            for line in lines {
                let (kind, name, requests, bytes) = line.map_err(sql)?;
                t.telemetry.add(&kind, name, requests, bytes);
            }
        }
        Ok(rows)
    }

    /// Size of the unique-transform set of a (tenant, month): what `unique_transforms`
    /// must equal.
    pub fn unique_set_size(&self, tenant: &str, month: &str) -> Result<u64, String> {
        self.conn
            .query_row(
                "SELECT count(*) FROM unique_transforms WHERE tenant = ?1 AND month = ?2",
                [tenant, month],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(sql)
    }
}

/// Adds a batch to the embedded ledger: counters by upsert, keys into the set, and the
/// unique-transform counter by the number of keys that were new to the set.
fn apply_local(tx: &Transaction<'_>, batch: &Batch) -> rusqlite::Result<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO usage_monthly (month, tenant, requests, bytes_out, cache_hits, cache_misses, renders, errors,
                                    credits_milli, info_requests, info_credits_milli)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (month, tenant) DO UPDATE SET
            requests = requests + excluded.requests, bytes_out = bytes_out + excluded.bytes_out,
            cache_hits = cache_hits + excluded.cache_hits, cache_misses = cache_misses + excluded.cache_misses,
            renders = renders + excluded.renders, errors = errors + excluded.errors,
            credits_milli = credits_milli + excluded.credits_milli,
            info_requests = info_requests + excluded.info_requests,
            info_credits_milli = info_credits_milli + excluded.info_credits_milli",
    )?;
    let mut insert_key = tx.prepare_cached(
        "INSERT INTO unique_transforms (month, tenant, key) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
    )?;
    let mut add_unique = tx.prepare_cached(
        "UPDATE usage_monthly SET unique_transforms = unique_transforms + ?3, unique_info = unique_info + ?4
         WHERE month = ?1 AND tenant = ?2",
    )?;
    let mut known_sites =
        tx.prepare_cached("SELECT name FROM usage_telemetry WHERE month = ?1 AND tenant = ?2 AND kind = 'site'")?;
    let mut add_telemetry = tx.prepare_cached(
        "INSERT INTO usage_telemetry (month, tenant, kind, name, requests, bytes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (month, tenant, kind, name) DO UPDATE SET
            requests = requests + excluded.requests, bytes = bytes + excluded.bytes",
    )?;
    for r in &batch.rows {
        upsert.execute(params![
            r.month,
            r.tenant,
            i64_of(r.requests),
            i64_of(r.bytes_out),
            i64_of(r.cache_hits),
            i64_of(r.cache_misses),
            i64_of(r.renders),
            i64_of(r.errors),
            i64_of(r.credits_milli),
            i64_of(r.info_requests),
            i64_of(r.info_credits_milli)
        ])?;
        let (mut new, mut new_info) = (0i64, 0i64);
        for k in &r.keys {
            // keys were checked when the batch was built or parsed
            let Some(key) = super::BillingKey::from_hex(k) else { continue };
            let inserted = insert_key.execute(params![r.month, r.tenant, &key.to_bytes()[..]])? as i64;
            new += inserted;
            // info keys are a sorted subset of the keys
            if inserted > 0 && r.info_keys.binary_search(k).is_ok() {
                new_info += 1;
            }
        }
        if new > 0 {
            add_unique.execute(params![r.month, r.tenant, new, new_info])?;
        }
        let known = if r.sites.is_empty() {
            HashSet::new()
        } else {
            known_sites.query_map(params![r.month, r.tenant], |row| row.get(0))?.collect::<Result<_, _>>()?
        };
        for e in telemetry::entries(r, &known) {
            add_telemetry.execute(params![r.month, r.tenant, e.kind, e.name, i64_of(e.requests), i64_of(e.bytes)])?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::batch::Row;
    use super::super::BillingKey;
    use super::*;

    fn row(tenant: &str, requests: u64, keys: &[u128]) -> Row {
        Row {
            month: "2026-11".into(),
            tenant: tenant.into(),
            requests,
            bytes_out: requests * 100,
            cache_hits: 0,
            cache_misses: requests,
            renders: requests,
            errors: 0,
            credits_milli: requests * 1000,
            keys: keys.iter().map(|k| BillingKey(*k).to_hex()).collect(),
            ..Row::default()
        }
    }

    fn batch(rows: Vec<Row>) -> Batch {
        Batch { v: 1, created_at: 1, rows }
    }

    #[test]
    fn embedded_ledger_counts_each_key_once_per_month() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/usage.db");
        let mut s = Spool::open(&path, true, 10).unwrap();
        let a = s.append(&batch(vec![row("t", 3, &[1, 2]), row("u", 1, &[1])]), true).unwrap();
        let b = s.append(&batch(vec![row("t", 2, &[2, 3])]), true).unwrap();
        assert_eq!(b.seq, a.seq + 1);
        assert!(a.id.ends_with(":1") && b.id.ends_with(":2"), "{a:?} {b:?}");
        let t = s.totals(Some("t"), None).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!((t[0].requests, t[0].unique_transforms, t[0].credits_milli), (5, 3, 5000));
        assert_eq!(s.unique_set_size("t", "2026-11").unwrap(), 3);
        assert_eq!(s.totals(None, Some("2026-11")).unwrap().len(), 2);
        assert_eq!(s.pending().unwrap().0, 0);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // a reopened spool keeps its install id and continues the sequence
        let id = s.install_id().unwrap();
        drop(s);
        let mut s = Spool::open(&path, true, 10).unwrap();
        assert_eq!(s.install_id().unwrap(), id);
        assert_eq!(s.append(&batch(vec![row("t", 1, &[])]), true).unwrap().id, format!("{id}:3"));
    }

    #[test]
    fn info_counts_apart_and_an_older_ledger_stays_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        // a ledger as the release before info columns wrote it
        {
            // SCHEMA is that release's; the columns since are in ADDED_COLUMNS
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
            let cols: i64 = conn
                .query_row(
                    "SELECT count(*) FROM pragma_table_info('usage_monthly') WHERE name LIKE '%info%'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(cols, 0, "the old schema has no info columns");
            conn.execute(
                "INSERT INTO usage_monthly (month, tenant, requests, credits_milli, unique_transforms)
                 VALUES ('2026-10', 't', 7, 7000, 2)",
                [],
            )
            .unwrap();
        }
        let mut s = Spool::open(&path, true, 10).unwrap();
        let old = &s.totals(Some("t"), Some("2026-10")).unwrap()[0];
        assert_eq!((old.requests, old.credits_milli, old.unique_transforms), (7, 7000, 2));
        assert_eq!((old.info_requests, old.unique_info, old.info_credits_milli), (0, 0, 0));
        // keys 1 and 2 are transforms, 3 and 4 info; 2 and 4 arrive twice
        let mut r = row("t", 5, &[1, 2, 3, 4]);
        (r.info_requests, r.info_credits_milli) = (3, 750);
        r.info_keys = [3u128, 4].iter().map(|k| BillingKey(*k).to_hex()).collect();
        s.append(&batch(vec![r]), true).unwrap();
        let mut r = row("t", 2, &[2, 4]);
        (r.info_requests, r.info_credits_milli) = (1, 250);
        r.info_keys = vec![BillingKey(4).to_hex()];
        s.append(&batch(vec![r]), true).unwrap();
        let t = &s.totals(Some("t"), Some("2026-11")).unwrap()[0];
        assert_eq!((t.requests, t.unique_transforms, t.credits_milli), (7, 4, 7000));
        assert_eq!((t.info_requests, t.unique_info, t.info_credits_milli), (4, 2, 1000));
        // reopening (another process of an upgrade) adds nothing twice
        drop(s);
        let s = Spool::open_existing(&path).unwrap();
        assert_eq!(s.totals(Some("t"), None).unwrap().len(), 2);
    }

    #[test]
    fn telemetry_adds_up_and_names_at_most_the_top_sites() {
        use super::super::telemetry::TOP_SITES;
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spool::open(&dir.path().join("usage.db"), true, 10).unwrap();
        // two batches of 60 sites each (2 requests per site): 100 get a row, 20 go to other
        for b in 0..2u64 {
            let mut r = row("t", 121, &[]);
            r.sites = (0..60).map(|i| (format!("s{b}-{i}.example"), 2)).collect();
            r.sites.insert("(none)".into(), 1);
            r.latency = vec![100, 0, 21];
            r.types = [("image/webp".to_owned(), [120, 12_000]), ("text/plain".to_owned(), [1, 100])].into();
            s.append(&batch(vec![r]), true).unwrap();
        }
        let t = &s.totals(Some("t"), None).unwrap()[0];
        let named = t.telemetry.sites.keys().filter(|k| !k.starts_with('(')).count() as u64;
        assert_eq!(named, TOP_SITES);
        assert_eq!(t.telemetry.sites["(other)"], 2 * (120 - TOP_SITES));
        assert_eq!(t.telemetry.sites["(none)"], 2);
        assert_eq!(t.telemetry.sites.values().sum::<u64>(), t.requests);
        let buckets: Vec<(&str, u64)> = t.telemetry.latency_ms.iter().map(|b| (b.le.as_str(), b.requests)).collect();
        assert_eq!(buckets, [("5", 200), ("25", 42)]);
        assert_eq!(t.telemetry.content_types["image/webp"].bytes, 24_000);
        assert_eq!(t.telemetry.content_types.values().map(|c| c.bytes).sum::<u64>(), t.bytes_out);
    }

    #[test]
    fn pending_batches_are_bounded_and_shipped_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.db");
        let mut s = Spool::open(&path, false, 2).unwrap();
        s.append(&batch(vec![row("t", 1, &[1])]), true).unwrap();
        s.append(&batch(vec![row("t", 2, &[2])]), true).unwrap();
        assert!(matches!(s.append(&batch(vec![row("t", 4, &[])]), true), Err(SpoolError::Full { pending: 2 })));
        // the final flush may go one over
        let over = s.append(&batch(vec![row("t", 4, &[])]), false).unwrap();
        assert_eq!(s.pending().unwrap().0, 3);
        s.mark_shipped(over.seq).unwrap();
        assert_eq!(s.pending().unwrap().0, 2);
        let p = s.next_pending(0).unwrap().unwrap();
        assert_eq!(Batch::from_json(&p.payload).unwrap().requests(), 1);
        s.mark_shipped(p.seq).unwrap();
        let q = s.next_pending(p.seq).unwrap().unwrap();
        assert_eq!(q.seq, p.seq + 1);
        // nothing reached the embedded tables: the remote ledger is the ledger
        assert!(s.totals(None, None).unwrap().is_empty());
        // a copied spool: the batch is re-recorded under a new install id
        let old = s.install_id().unwrap();
        let re = s.reissue(q.seq).unwrap();
        assert!(!re.id.starts_with(&old));
        assert_eq!(s.next_pending(0).unwrap().unwrap().id, re.id);
        // switching to the embedded ledger applies what was left pending
        drop(s);
        let mut s = Spool::open(&path, true, 2).unwrap();
        assert_eq!(s.apply_pending_locally().unwrap(), 1);
        assert_eq!(s.totals(None, None).unwrap()[0].requests, 2);
        assert_eq!(s.pending().unwrap().0, 0);
        assert_eq!(s.prune(unix_now() + 1).unwrap(), 4);
    }
}

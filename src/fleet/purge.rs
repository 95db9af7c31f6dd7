//! Fleet-wide purges through PostgreSQL (`fleet:`).
//!
//! PostgreSQL holds the fleet's truth: `imgedge_purge_generations` (tenant, source — `''`
//! for the tenant's own generation —, generation, seq) and `imgedge_purge_urls` (the cache
//! key hashes of each URL purge), numbered by one sequence. Every purge is one transaction
//! that takes an advisory lock before it draws its number, so numbers commit in order: a
//! reader that saw number N never misses a smaller one committed later. The transaction
//! `NOTIFY`s `imgedge_purge`, delivered at commit.
//!
//! The node that took the purge applies it itself before it answers. Every node also
//! `LISTEN`s on its own connection and, on each notification, on reconnecting and every
//! [`SAFETY_POLL`], reads in one snapshot everything numbered after the last purge it
//! applied: generations are absolute (raised, never lowered), logged keys are removed
//! from memory, disk and the front.
//!
//! At start, before serving, a node reads the whole generation table and the URL purges
//! made since the number persisted with its generations file; those keys are held back
//! from lookups until the disk tier (opened after any fork) has dropped them. PostgreSQL
//! unreachable at start is fatal: serving without it could bring purged images back.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio_postgres::{AsyncMessage, Client, Config, IsolationLevel, NoTls};

use crate::cache::EdgeCache;
use crate::config;
use crate::metrics;

const SCHEMA: &str = "
BEGIN;
-- concurrent first starts of several nodes must not race on CREATE
SELECT pg_advisory_xact_lock(7224150918);
CREATE SEQUENCE IF NOT EXISTS imgedge_purge_seq;
CREATE TABLE IF NOT EXISTS imgedge_purge_generations (
    tenant text NOT NULL,
    source text NOT NULL,
    generation bigint NOT NULL,
    seq bigint NOT NULL,
    node text NOT NULL,
    PRIMARY KEY (tenant, source)
);
CREATE INDEX IF NOT EXISTS imgedge_purge_generations_seq ON imgedge_purge_generations (seq);
CREATE TABLE IF NOT EXISTS imgedge_purge_urls (
    seq bigint PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    tenant text NOT NULL,
    node text NOT NULL,
    keys bytea[] NOT NULL
);
COMMIT;
";

/// Taken by every purge transaction before it draws its number (see the module docs).
const ORDER_LOCK: &str = "SELECT pg_advisory_xact_lock(7224150919)";

const BUMP: &str = "
INSERT INTO imgedge_purge_generations AS g (tenant, source, generation, seq, node)
VALUES ($1, $2, $3::bigint + 1, nextval('imgedge_purge_seq'), $4)
ON CONFLICT (tenant, source) DO UPDATE
    SET generation = GREATEST(g.generation, $3::bigint) + 1, seq = EXCLUDED.seq, node = EXCLUDED.node
RETURNING generation, seq";

const LOG_URL: &str = "
INSERT INTO imgedge_purge_urls (seq, tenant, node, keys)
VALUES (nextval('imgedge_purge_seq'), $1, $2, $3) RETURNING seq";

const CHANNEL: &str = "imgedge_purge";

/// Reads new purges this often even without a notification (one lost in a reconnect).
const SAFETY_POLL: Duration = Duration::from_secs(3);
/// A purge's whole transaction, or one catch-up read, past this is abandoned.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one snapshot of the purge tables says.
#[derive(Default)]
struct Snapshot {
    /// (tenant, source, generation, from another node).
    generations: Vec<(String, String, u64, bool)>,
    /// (key hashes, from another node), in number order.
    urls: Vec<(Vec<u128>, bool)>,
    /// The highest number seen, or the number read from when nothing was new.
    seq: u64,
}

/// One purge to commit.
enum Purge<'a> {
    /// A new generation: `source` empty for the tenant's own; `local` is this node's
    /// current value (the new one exceeds both it and the fleet's).
    Generation {
        tenant: &'a str,
        source: &'a str,
        local: u64,
    },
    Url {
        tenant: &'a str,
        keys: &'a [Vec<u8>],
    },
}

pub struct FleetPurge {
    node: String,
    /// Purges made on this node (ops).
    config: Config,
    /// The listening connection: named so an operator can find it in `pg_stat_activity`.
    listen_config: Config,
    client: tokio::sync::Mutex<Option<Client>>,
    cache: Arc<EdgeCache>,
    /// The last purge number applied here.
    applied: AtomicU64,
    /// The last purge number committed by this node (applied here before it answered).
    committed: AtomicU64,
    /// Whether the start-up number still has to be persisted (after the held keys went).
    persist_start: std::sync::atomic::AtomicBool,
}

fn pg_config(url: &str, name: String) -> Result<Config, String> {
    let mut c: Config = url.parse().map_err(|e| format!("fleet.postgres: {e}"))?;
    if c.get_connect_timeout().is_none() {
        // not fleet.connect_timeout: that one is for peers, on the request path
        c.connect_timeout(CONNECT_TIMEOUT);
    }
    c.application_name(name);
    Ok(c)
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Opens a connection (its I/O task on the current runtime) with the schema in place.
async fn connect(config: &Config) -> Result<Client, String> {
    let (client, conn) = tokio::time::timeout(QUERY_TIMEOUT, config.connect(NoTls))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "fleet purge connection closed");
        }
    });
    client.batch_execute(SCHEMA).await.map_err(|e| e.to_string())?;
    Ok(client)
}

/// Everything numbered after `after` in one snapshot (numbers commit in order, see the
/// module docs); with `urls_after` = `None` no URL purge is read.
async fn read(client: &mut Client, node: &str, after: u64, urls_after: Option<u64>) -> Result<Snapshot, String> {
    let err = |e: tokio_postgres::Error| e.to_string();
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(err)?;
    let mut out = Snapshot { seq: after, ..Snapshot::default() };
    let rows = tx
        .query(
            "SELECT tenant, source, generation, seq, node FROM imgedge_purge_generations WHERE seq > $1",
            &[&i64_of(after)],
        )
        .await
        .map_err(err)?;
    for r in &rows {
        let row = (|| {
            Ok::<_, tokio_postgres::Error>((
                r.try_get::<_, String>(0)?,
                r.try_get::<_, String>(1)?,
                r.try_get::<_, i64>(2)?,
                r.try_get::<_, i64>(3)?,
                r.try_get::<_, String>(4)?,
            ))
        })();
        match row {
            Ok((tenant, source, generation, seq, by)) => {
                out.seq = out.seq.max(u64_of(seq));
                out.generations.push((tenant, source, u64_of(generation), by != node));
            }
            Err(e) => {
                metrics::fleet_purge_error("row");
                tracing::warn!(error = %e, "fleet purge: unreadable generation row skipped");
            }
        }
    }
    if let Some(urls_after) = urls_after {
        let rows = tx
            .query("SELECT seq, keys, node FROM imgedge_purge_urls WHERE seq > $1 ORDER BY seq", &[&i64_of(urls_after)])
            .await
            .map_err(err)?;
        for r in &rows {
            let row = (|| {
                Ok::<_, tokio_postgres::Error>((
                    r.try_get::<_, i64>(0)?,
                    r.try_get::<_, Vec<Vec<u8>>>(1)?,
                    r.try_get::<_, String>(2)?,
                ))
            })();
            match row {
                Ok((seq, keys, by)) => {
                    out.seq = out.seq.max(u64_of(seq));
                    let hashes = keys
                        .iter()
                        .filter_map(|k| {
                            let h = <[u8; 16]>::try_from(k.as_slice()).ok().map(u128::from_be_bytes);
                            if h.is_none() {
                                metrics::fleet_purge_error("row");
                                tracing::warn!(seq, "fleet purge: a key that is not 16 bytes skipped");
                            }
                            h
                        })
                        .collect();
                    out.urls.push((hashes, by != node));
                }
                Err(e) => {
                    metrics::fleet_purge_error("row");
                    tracing::warn!(error = %e, "fleet purge: unreadable URL purge row skipped");
                }
            }
        }
    }
    // the highest number of any purge, even one whose row a later purge replaced
    let max: Option<i64> = tx
        .query_one(
            "SELECT GREATEST((SELECT max(seq) FROM imgedge_purge_generations), (SELECT max(seq) FROM imgedge_purge_urls))",
            &[],
        )
        .await
        .map_err(err)?
        .try_get(0)
        .map_err(err)?;
    out.seq = out.seq.max(max.map_or(0, u64_of));
    tx.commit().await.map_err(err)?;
    Ok(out)
}

impl FleetPurge {
    /// Connects to PostgreSQL before the node serves (and before any fork: a runtime of its
    /// own, gone on return), raises the local generations to the fleet's and holds back
    /// the keys purged by URL since this node last applied a purge.
    pub fn prepare(
        fleet: &config::Fleet,
        cache: Arc<EdgeCache>,
        settings: &config::Cache,
    ) -> Result<Arc<Self>, String> {
        let config = pg_config(&fleet.postgres, format!("imgedge-{}", fleet.node))?;
        let listen_config = pg_config(&fleet.postgres, format!("imgedge-purge-listener-{}", fleet.node))?;
        // URL purges to replay: since the persisted number, or all of them when a disk
        // tier exists without one (written before this node joined a fleet)
        let urls_after = match cache.generations.fleet_seq() {
            Some(seq) => Some(seq),
            None => settings.disk.as_ref().filter(|d| has_entries(&d.path)).map(|_| 0),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("fleet: no runtime for the start-up read: {e}"))?;
        let node = fleet.node.clone();
        let snapshot = rt
            .block_on(async {
                let mut client = connect(&config).await?;
                tokio::time::timeout(QUERY_TIMEOUT, read(&mut client, &node, 0, urls_after))
                    .await
                    .map_err(|_| "reading the purge tables timed out".to_owned())?
            })
            .map_err(|e| {
                format!(
                    "fleet.postgres: cannot read the fleet's purges from PostgreSQL ({e}); refusing to start: \
                     a node serving without them could serve purged images again"
                )
            })?;
        let values: Vec<_> = snapshot.generations.iter().map(|(t, s, g, _)| (t.clone(), s.clone(), *g)).collect();
        if let Some(d) = &settings.disk {
            // the generations file lives there; the storage creates it only when it opens
            std::fs::create_dir_all(&d.path).map_err(|e| format!("{}: {e}", d.path.display()))?;
        }
        cache.generations.raise(&values, None).map_err(|e| format!("cache generations file: {e}"))?;
        let held: usize = snapshot.urls.iter().map(|(h, _)| h.len()).sum();
        cache.storage.hold(snapshot.urls.into_iter().flat_map(|(h, _)| h));
        tracing::info!(
            node = %fleet.node,
            seq = snapshot.seq,
            generations = values.len(),
            held_keys = held,
            "fleet purges read from PostgreSQL"
        );
        metrics::fleet_purge_seq(snapshot.seq);
        Ok(Arc::new(FleetPurge {
            node: fleet.node.clone(),
            config,
            listen_config,
            client: tokio::sync::Mutex::new(None),
            cache,
            applied: AtomicU64::new(snapshot.seq),
            committed: AtomicU64::new(0),
            persist_start: std::sync::atomic::AtomicBool::new(true),
        }))
    }

    /// Commits one purge on the ops connection (reopened after any failure): the ordering
    /// lock, the row, `NOTIFY` of its number; returns (generation or number, number).
    async fn commit(&self, purge: Purge<'_>) -> Result<(u64, u64), String> {
        let mut guard = self.client.lock().await;
        let run = async {
            let e = |e: tokio_postgres::Error| e.to_string();
            if guard.as_ref().is_none_or(Client::is_closed) {
                *guard = Some(connect(&self.config).await?);
            }
            let client = guard.as_mut().ok_or("not connected")?;
            let tx = client.transaction().await.map_err(e)?;
            tx.batch_execute(ORDER_LOCK).await.map_err(e)?;
            let (value, seq): (i64, i64) = match purge {
                Purge::Generation { tenant, source, local } => {
                    let row = tx.query_one(BUMP, &[&tenant, &source, &i64_of(local), &self.node]).await.map_err(e)?;
                    (row.try_get(0).map_err(e)?, row.try_get(1).map_err(e)?)
                }
                Purge::Url { tenant, keys } => {
                    let row = tx.query_one(LOG_URL, &[&tenant, &self.node, &keys]).await.map_err(e)?;
                    let seq = row.try_get(0).map_err(e)?;
                    (seq, seq)
                }
            };
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &seq.to_string()]).await.map_err(e)?;
            tx.commit().await.map_err(e)?;
            Ok::<_, String>((u64_of(value), u64_of(seq)))
        };
        let r = tokio::time::timeout(QUERY_TIMEOUT, run).await.unwrap_or_else(|_| Err("timed out".to_owned()));
        if r.is_err() {
            // dropping the connection rolls back whatever the transaction had done
            *guard = None;
        }
        if let Ok((_, seq)) = &r {
            self.committed.fetch_max(*seq, Ordering::AcqRel);
        }
        r.map_err(|e| format!("fleet.postgres: {e}"))
    }

    /// A new generation for `tenant` (`source` `None`) or one of its sources, committed
    /// fleet-wide, then applied here; returns it and the purge's number.
    pub async fn bump(&self, tenant: &str, source: Option<&str>) -> Result<(u64, u64), String> {
        let local = match source {
            None => self.cache.generations.get(tenant),
            Some(s) => self.cache.generations.of(tenant, s).source,
        };
        let (generation, seq) = self.commit(Purge::Generation { tenant, source: source.unwrap_or(""), local }).await?;
        let values = [(tenant.to_owned(), source.unwrap_or("").to_owned(), generation)];
        self.cache.generations.raise(&values, None).map_err(|e| format!("cannot persist purge: {e}"))?;
        metrics::fleet_purge(if source.is_some() { "source" } else { "tenant" }, false);
        Ok((generation, seq))
    }

    /// Records a URL purge (the key hashes of every variant, already removed here) for the
    /// other nodes; returns its number.
    pub async fn log_url(&self, tenant: &str, hashes: &[u128]) -> Result<u64, String> {
        let keys: Vec<Vec<u8>> = hashes.iter().map(|h| h.to_be_bytes().to_vec()).collect();
        let (_, seq) = self.commit(Purge::Url { tenant, keys: &keys }).await?;
        metrics::fleet_purge("url", false);
        Ok(seq)
    }

    /// The last purge this node's answers reflect: applied from the fleet, or made here.
    /// A key's owner that has seen less answers a hop without its cache (`fleet::serve`).
    pub fn seen(&self) -> u64 {
        self.applied.load(Ordering::Acquire).max(self.committed.load(Ordering::Acquire))
    }

    /// Reads and applies everything numbered after the last purge applied.
    async fn catch_up(&self, client: &mut Client) -> Result<(), String> {
        let after = self.applied.load(Ordering::Acquire);
        let s = tokio::time::timeout(QUERY_TIMEOUT, read(client, &self.node, after, Some(after)))
            .await
            .map_err(|_| "timed out".to_owned())??;
        if s.seq <= after {
            return Ok(());
        }
        let values: Vec<_> = s.generations.iter().map(|(t, src, g, _)| (t.clone(), src.clone(), *g)).collect();
        if let Err(e) = self.cache.generations.raise(&values, None) {
            // never skipped: the number does not move, the next read tries again
            metrics::fleet_purge_error("apply");
            return Err(format!("cannot persist generations: {e}"));
        }
        for (_, src, _, peer) in &s.generations {
            if *peer {
                metrics::fleet_purge(if src.is_empty() { "tenant" } else { "source" }, true);
            }
        }
        for (hashes, peer) in &s.urls {
            // the node that purged removed its own copies before it answered
            if *peer {
                self.cache.storage.forget(hashes).await;
                metrics::fleet_purge("url", true);
            }
        }
        // until the keys held at start are gone, the number persisted stays the old one, so
        // a restart still replays them
        if !self.persist_start.load(Ordering::Acquire) {
            self.persist(s.seq);
        }
        self.applied.store(s.seq, Ordering::Release);
        metrics::fleet_purge_seq(s.seq);
        Ok(())
    }

    fn persist(&self, seq: u64) {
        if let Err(e) = self.cache.generations.raise(&[], Some(seq)) {
            // a restart then replays more URL purges than needed: harmless
            metrics::fleet_purge_error("apply");
            tracing::warn!(error = %e, "fleet purge: cannot persist the last purge number");
        }
    }

    /// One listening connection: its client and a channel that yields on every
    /// notification and closes when the connection is lost.
    async fn listen(&self) -> Result<(Client, tokio::sync::mpsc::Receiver<()>, tokio::task::JoinHandle<()>), String> {
        let (client, mut conn) = tokio::time::timeout(QUERY_TIMEOUT, self.listen_config.connect(NoTls))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        // notifications arrive only through poll_message, which also drives the queries
        let driver = tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        // a full channel already has a read pending, which sees this one
                        if let Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) = tx.try_send(()) {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "fleet purge: listening connection lost");
                        return;
                    }
                    None => return,
                }
            }
        });
        let listening = client.batch_execute(&format!("LISTEN {CHANNEL}")).await;
        if let Err(e) = listening {
            driver.abort();
            return Err(e.to_string());
        }
        Ok((client, rx, driver))
    }

    /// Listens until shutdown, reconnecting with backoff; never gives up.
    async fn run(&self, mut shutdown: ShutdownWatch) {
        // the storage opens here (after any fork): drop the keys purged while this node
        // was down, then record the start-up number as applied
        if self.cache.storage.remove_held().await && self.persist_start.swap(false, Ordering::AcqRel) {
            self.persist(self.applied.load(Ordering::Acquire));
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.listen().await {
                Ok((mut client, mut notes, driver)) => {
                    metrics::fleet_listener_up(true);
                    tracing::info!("fleet purge: listening");
                    let mut ok = true;
                    while ok {
                        // on connecting (purges made while not listening), on each notification
                        // and every SAFETY_POLL
                        if let Err(e) = self.catch_up(&mut client).await {
                            metrics::fleet_purge_error("read");
                            tracing::warn!(error = %e, "fleet purge: cannot read new purges");
                            break;
                        }
                        backoff = Duration::from_millis(100);
                        tokio::select! {
                            _ = shutdown.changed() => {
                                driver.abort();
                                return;
                            }
                            n = notes.recv() => ok = n.is_some(),
                            _ = tokio::time::sleep(SAFETY_POLL) => {}
                        }
                    }
                    driver.abort();
                    metrics::fleet_purge_error("listen");
                    metrics::fleet_listener_up(false);
                }
                Err(e) => {
                    metrics::fleet_purge_error("listen");
                    metrics::fleet_listener_up(false);
                    tracing::warn!(error = %e, "fleet purge: cannot listen to PostgreSQL, retrying");
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// Whether a disk tier directory holds anything (a brand-new node has nothing to replay).
fn has_entries(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some())
}

/// The listening task, as a pingora background service.
pub struct Listener(pub Arc<FleetPurge>);

#[async_trait]
impl BackgroundService for Listener {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

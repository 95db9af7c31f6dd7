//! The flusher: a pingora background service that moves counts from memory to the spool
//! every `flush_interval`, and (with PostgreSQL) ships spooled batches to the ledger.
//!
//! Counts leave memory only in the SQLite transaction that records them; if the spool is
//! full or failing they stay in memory (merged with later counts) and the process says so
//! (log + metrics) until the spool takes them. The final flush runs after pingora has
//! stopped every service, so no request can be counted after it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Notify;

use super::batch::Batch;
use super::month::{unix_now, Month};
use super::pg::{Applied, PgSink, SinkError};
use super::recorder::{unslot, Fx, Recorder, Slot, Snapshot};
use super::spool::{Spool, SpoolError, KEEP_SHIPPED};
use super::BillingKey;
use crate::config::Usage as Settings;
use crate::metrics;

/// Most keys remembered as already on their way to the ledger; past it the memory is
/// cleared (the ledger deduplicates anyway, this only saves work).
const SENT_CAP: usize = 1 << 20;
/// How often a full or failing spool is complained about in the log.
const COMPLAIN_EVERY: Duration = Duration::from_secs(60);
/// How long the final flush may spend delivering to PostgreSQL; what is not delivered
/// stays in the spool for the next start (or for an upgrade's new process).
const FINAL_SHIP_TIMEOUT: Duration = Duration::from_secs(5);

struct State {
    /// Opened on first use: after pingora's daemon fork, never before it.
    spool: Option<Spool>,
    /// Counted, not yet in the spool.
    carry: Snapshot,
    /// Keys that a spooled batch of this process already carries to the ledger.
    sent: HashSet<(Slot, BillingKey), Fx>,
    sent_month: Month,
    last_complaint: Option<Instant>,
    last_prune: u64,
}

/// What one flush did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flushed {
    Empty,
    Spooled {
        id: String,
        requests: u64,
        keys: usize,
    },
    /// Kept in memory: the spool is full or failing.
    Deferred(String),
}

pub struct Flusher {
    recorder: Arc<Recorder>,
    settings: Settings,
    state: Mutex<State>,
    /// Wakes the shipper after a flush.
    wake: Notify,
}

impl Flusher {
    pub fn new(recorder: Arc<Recorder>, settings: Settings) -> Flusher {
        let state = State {
            spool: None,
            carry: Snapshot::default(),
            sent: HashSet::default(),
            sent_month: Month::now(),
            last_complaint: None,
            last_prune: 0,
        };
        Flusher { recorder, settings, state: Mutex::new(state), wake: Notify::new() }
    }

    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // the state stays consistent between statements: keep using it after a panic
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open<'a>(&self, spool: &'a mut Option<Spool>) -> Result<&'a mut Spool, String> {
        if spool.is_none() {
            let s = &self.settings;
            *spool = Some(Spool::open(&s.spool, s.postgres.is_none(), s.spool_max_batches)?);
        }
        spool.as_mut().ok_or_else(|| "spool not open".to_owned())
    }

    /// Runs `f` on the spool (opening it if needed). Blocking: SQLite I/O.
    fn with_spool<T>(&self, f: impl FnOnce(&mut Spool) -> Result<T, String>) -> Result<T, String> {
        let mut st = self.lock();
        let r = self.open(&mut st.spool).and_then(f);
        if r.is_err() {
            // reopen next time: the file may have been replaced or the disk remounted
            st.spool = None;
        }
        r
    }

    fn complain(st: &mut State, msg: &str) {
        if st.last_complaint.is_none_or(|t| t.elapsed() >= COMPLAIN_EVERY) {
            st.last_complaint = Some(Instant::now());
            tracing::error!(
                unspooled_requests = st.carry.requests(),
                "usage: {msg}; counts are kept in memory until the spool takes them (lost if the process dies)"
            );
        }
    }

    /// Moves everything counted so far into the spool as one batch. Blocking: SQLite I/O.
    pub fn flush(&self) -> Flushed {
        self.flush_bounded(true)
    }

    fn flush_bounded(&self, enforce_bound: bool) -> Flushed {
        let mut guard = self.lock();
        let st = &mut *guard;
        st.carry.merge(self.recorder.drain());
        if st.carry.is_empty() {
            metrics::usage_flush("empty");
            return Flushed::Empty;
        }
        let month = Month::now();
        if month != st.sent_month {
            // a key counted for last month may still arrive late; older ones cannot
            st.sent.retain(|(s, _)| unslot(*s).1 >= month.prev());
            st.sent_month = month;
        }
        // the table is loaded after the drain, so it names every tenant in the carry
        let tenants = self.recorder.tenants();
        let batch = Batch::from_snapshot(&st.carry, &tenants, |k| st.sent.contains(k), unix_now());
        if batch.is_empty() {
            st.carry = Snapshot::default();
            metrics::usage_flush("empty");
            return Flushed::Empty;
        }
        let appended = match self.open(&mut st.spool) {
            Ok(spool) => spool.append(&batch, enforce_bound),
            Err(e) => Err(SpoolError::Sql(e)),
        };
        let result = match appended {
            Ok(a) => {
                if st.sent.len() + st.carry.keys.len() > SENT_CAP {
                    st.sent.clear();
                }
                st.sent.extend(std::mem::take(&mut st.carry).keys);
                st.last_complaint = None;
                metrics::usage_flush("spooled");
                metrics::usage_spool_full(false);
                metrics::usage_last_flush(unix_now());
                tracing::debug!(batch = %a.id, requests = batch.requests(), keys = batch.key_count(), "usage flushed");
                Flushed::Spooled { id: a.id, requests: batch.requests(), keys: batch.key_count() }
            }
            Err(e) => {
                if matches!(e, SpoolError::Full { .. }) {
                    metrics::usage_flush("deferred");
                    metrics::usage_spool_full(true);
                } else {
                    metrics::usage_flush("error");
                    st.spool = None;
                }
                Self::complain(st, &e.to_string());
                Flushed::Deferred(e.to_string())
            }
        };
        metrics::usage_unspooled_requests(st.carry.requests());
        if let Some(spool) = st.spool.as_ref() {
            publish_pending(spool);
            let now = unix_now();
            if now >= st.last_prune + 3600 {
                st.last_prune = now;
                let _ = spool.prune(now.saturating_sub(KEEP_SHIPPED.as_secs()));
            }
        }
        result
    }

    /// Delivers every pending batch in order; returns how many. Stops at the first
    /// unavailability (the rest stays pending).
    pub async fn ship(self: &Arc<Self>, sink: &mut PgSink) -> Result<usize, String> {
        let mut after = 0;
        let mut n = 0;
        loop {
            let me = self.clone();
            let next = tokio::task::spawn_blocking(move || me.with_spool(|s| s.next_pending(after)))
                .await
                .map_err(|e| e.to_string())??;
            let Some(p) = next else { break };
            let batch = match Batch::from_json(&p.payload) {
                Ok(b) => b,
                Err(e) => {
                    // never happens with batches this code wrote; keep it for an operator
                    tracing::error!(batch = %p.id, error = %e, "usage: unreadable batch left in the spool");
                    metrics::usage_delivery("error");
                    after = p.seq;
                    continue;
                }
            };
            match sink.apply(&p.id, &p.digest, &batch).await {
                Ok(applied) => {
                    let me = self.clone();
                    tokio::task::spawn_blocking(move || me.with_spool(|s| s.mark_shipped(p.seq)))
                        .await
                        .map_err(|e| e.to_string())??;
                    metrics::usage_delivery(if applied == Applied::Applied { "applied" } else { "duplicate" });
                    metrics::usage_last_delivery(unix_now());
                    n += 1;
                    after = p.seq;
                }
                Err(SinkError::Collision) => {
                    metrics::usage_delivery("collision");
                    let me = self.clone();
                    let re = tokio::task::spawn_blocking(move || me.with_spool(|s| s.reissue(p.seq)))
                        .await
                        .map_err(|e| e.to_string())??;
                    tracing::error!(
                        batch = %p.id, reissued_as = %re.id,
                        "usage: the ledger holds another batch with this id (copied spool file?); new install id taken"
                    );
                    after = p.seq;
                }
                Err(SinkError::Unavailable(e)) => {
                    metrics::usage_delivery("error");
                    return Err(e);
                }
            }
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            me.with_spool(|s| {
                publish_pending(s);
                Ok(())
            })
        })
        .await;
        Ok(n)
    }

    /// Ships after every flush and on a timer (batches of another process sharing the
    /// spool), backing off while PostgreSQL is unavailable.
    async fn ship_loop(self: Arc<Self>, url: String) {
        let mut sink = match PgSink::new(&url) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "usage: cannot ship to postgres");
                return;
            }
        };
        let base = self.settings.flush_interval;
        let max = (base * 4).clamp(Duration::from_secs(1), Duration::from_secs(30));
        let mut backoff = base;
        let mut last_warning: Option<Instant> = None;
        loop {
            match self.ship(&mut sink).await {
                Ok(n) => {
                    if n > 0 && last_warning.take().is_some() {
                        tracing::info!(batches = n, "usage: postgres reachable again, spool delivered");
                    }
                    backoff = base;
                    let _ = tokio::time::timeout(base.max(Duration::from_secs(1)), self.wake.notified()).await;
                }
                Err(e) => {
                    if last_warning.is_none_or(|t| t.elapsed() >= COMPLAIN_EVERY) {
                        last_warning = Some(Instant::now());
                        tracing::warn!(error = %e, "usage: cannot deliver to postgres; batches stay in the spool");
                    }
                    tokio::time::sleep(jitter(backoff)).await;
                    backoff = (backoff * 2).min(max);
                }
            }
        }
    }

    /// Last flush, after pingora has stopped every service: nothing can be counted after
    /// it. With PostgreSQL, also tries (briefly) to deliver what is pending.
    pub fn final_flush(self: &Arc<Self>) {
        match self.flush_bounded(false) {
            Flushed::Spooled { id, requests, .. } => tracing::info!(batch = %id, requests, "usage: final flush"),
            Flushed::Empty => tracing::info!("usage: final flush, nothing to record"),
            Flushed::Deferred(e) => tracing::error!(error = %e, "usage: final flush failed, counts lost"),
        }
        let Some(url) = self.settings.postgres.clone() else { return };
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::warn!(error = %e, "usage: no runtime for the final delivery; batches stay in the spool");
                return;
            }
        };
        let me = self.clone();
        let r = rt.block_on(async move {
            let mut sink = PgSink::new(&url)?;
            tokio::time::timeout(FINAL_SHIP_TIMEOUT, me.ship(&mut sink)).await.map_err(|_| "timed out".to_owned())?
        });
        match r {
            Ok(n) => tracing::info!(batches = n, "usage: delivered to postgres at shutdown"),
            Err(e) => tracing::warn!(error = %e, "usage: batches stay in the spool for the next start"),
        }
    }
}

fn publish_pending(spool: &Spool) {
    if let Ok((n, oldest)) = spool.pending() {
        let age = oldest.map_or(0, |t| unix_now().saturating_sub(t));
        metrics::usage_spool_pending(n, age);
    }
}

/// ±25 % so that a fleet does not retry in step.
fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(unix_now());
    let r = (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(0.75 + r * 0.5)
}

/// The pingora background service around a [`Flusher`].
pub struct Service(pub Arc<Flusher>);

#[async_trait]
impl BackgroundService for Service {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let f = self.0.clone();
        match f.settings.postgres.clone() {
            Some(url) => {
                tokio::spawn(f.clone().ship_loop(url));
            }
            None => {
                // batches left pending by an earlier run that shipped to postgres
                let me = f.clone();
                match tokio::task::spawn_blocking(move || me.with_spool(|s| s.apply_pending_locally())).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(batches = n, "usage: applied pending batches to the embedded ledger"),
                    Ok(Err(e)) => tracing::error!(error = %e, "usage: cannot apply pending batches"),
                    Err(e) => tracing::error!(error = %e, "usage: cannot apply pending batches"),
                }
            }
        }
        let interval = f.settings.flush_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stopping = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                // flush at once; requests still draining are caught by later ticks and by
                // the final flush after the server has stopped
                _ = shutdown.changed(), if !stopping => stopping = true,
            }
            let me = f.clone();
            let _ = tokio::task::spawn_blocking(move || me.flush()).await;
            f.wake.notify_one();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::Credits;
    use crate::usage::recorder::{CacheOutcome, Operation, Request, TenantBilling};

    fn hit(r: &Recorder, key: u128) {
        r.record(&Request {
            tenant: "t",
            operation: Operation::Transform,
            status: 200,
            fallback: false,
            cache: CacheOutcome::Hit,
            bytes_out: 1,
            billing_key: Some(BillingKey(key)),
            site: None,
            content_type: 0,
            micros: 100,
        });
    }

    #[test]
    fn a_full_spool_keeps_counts_in_memory_until_it_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Settings {
            spool: dir.path().join("u.db"),
            // never contacted here: only makes the spool wait for a remote ledger
            postgres: Some("postgres://nobody@127.0.0.1:1/x".into()),
            flush_interval: Duration::from_secs(1),
            spool_max_batches: 1,
        };
        let r = Arc::new(Recorder::new(vec![TenantBilling { id: "t".into(), credits: Credits::default() }], 2));
        let f = Flusher::new(r.clone(), settings);
        assert_eq!(f.flush(), Flushed::Empty);
        hit(&r, 1);
        hit(&r, 1);
        assert!(matches!(f.flush(), Flushed::Spooled { requests: 2, keys: 1, .. }));
        // the spool is full (one batch waits): counts stay in memory, merged
        hit(&r, 1);
        hit(&r, 2);
        assert!(matches!(f.flush(), Flushed::Deferred(_)));
        hit(&r, 3);
        assert!(matches!(f.flush(), Flushed::Deferred(_)));
        assert_eq!(f.lock().carry.requests(), 3);
        assert_eq!(f.with_spool(|s| s.pending()).unwrap().0, 1);
        // the first batch is delivered: the next flush writes everything held, and key 1
        // (already on its way in the first batch) is not sent again
        f.with_spool(|s| {
            let p = s.next_pending(0)?.unwrap();
            s.mark_shipped(p.seq)
        })
        .unwrap();
        assert!(matches!(f.flush(), Flushed::Spooled { requests: 3, keys: 2, .. }));
        let p = f.with_spool(|s| s.next_pending(0)).unwrap().unwrap();
        let b = Batch::from_json(&p.payload).unwrap();
        assert_eq!(b.requests(), 3);
        assert_eq!(b.rows[0].keys, vec![BillingKey(2).to_hex(), BillingKey(3).to_hex()]);
        assert_eq!(f.lock().carry.requests(), 0);
    }
}

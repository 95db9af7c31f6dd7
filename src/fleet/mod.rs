//! Owner routing between the nodes of a fleet (`fleet:` in the config): every cache key
//! has one owner among the configured nodes; a node that misses asks the owner over an
//! authenticated hop ([`hop`]) instead of rendering, so the owner's cache lock makes it
//! one render fleet-wide. The owner's side is [`serve`]; peers' health is probed here;
//! purges reach every node through PostgreSQL ([`purge`]).
//!
//! The owner is chosen by rendezvous (highest-random-weight) hashing rather than
//! pingora-load-balancing's Ketama ring: it balances keys evenly without virtual nodes,
//! only a removed node's keys move (to every other node, in proportion), and its O(N)
//! scoring is nothing at fleet sizes (a handful to a few dozen nodes). Ketama's one gain,
//! agreeing with an nginx `hash … consistent` tier in front, does not apply: nothing in
//! front of imgedge routes by our cache key.

pub mod hop;
pub mod purge;
pub mod serve;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use pingora::upstreams::peer::HttpPeer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config;
use crate::metrics;

/// Failed probes in a row after which a peer is down; one success brings it back.
const DOWN_AFTER: u32 = 2;

/// One node of the fleet as this node sees it.
pub struct Peer {
    pub name: String,
    pub addr: SocketAddr,
    /// Mixed into every key's score: the name's hash, so every node scores alike.
    seed: u64,
    /// Optimistic at start: a peer is up until probes or a hop say otherwise.
    up: AtomicBool,
    failures: AtomicU32,
}

/// The fleet: every node, this node's index among them, and the hop settings.
pub struct Fleet {
    pub peers: Vec<Peer>,
    me: usize,
    pub(crate) secret: Vec<u8>,
    connect_timeout: Duration,
    peer_timeout: Duration,
    health_interval: Duration,
    /// The fleet's purges as this node has seen them; sent with every hop.
    pub(crate) purges: Option<Arc<crate::fleet::purge::FleetPurge>>,
}

/// splitmix64's finalizer: every input bit moves every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A node's score for a key: the owner is the node scoring highest.
fn score(key_hash: u128, seed: u64) -> u64 {
    mix(mix((key_hash as u64) ^ seed) ^ ((key_hash >> 64) as u64))
}

fn seed_of(name: &str) -> u64 {
    let h = blake3::hash(name.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.as_bytes()[..8]);
    u64::from_le_bytes(b)
}

/// A request's hop, on the requesting node.
#[derive(Debug, Clone, Copy, Default)]
pub struct HopState {
    /// The owner this attempt is sent to, if it hops.
    pub to: Option<usize>,
    /// The owner's answer header came back: too late to fail over.
    pub answered: bool,
    /// A hop failed: every further attempt renders locally.
    pub failed_over: bool,
    /// A pooled connection to the owner failed and a new one was tried.
    pub reconnected: bool,
    /// The owner answered 503 (its renders are saturated): it stays up, this request
    /// renders locally.
    pub busy: bool,
}

/// Where a miss goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// This node owns the key: render locally.
    Local,
    /// Another node owns it and is up: hop to it.
    Owner(usize),
    /// Another node owns it but is down: render locally.
    Skipped,
}

impl Fleet {
    pub fn new(f: &config::Fleet) -> Fleet {
        let peers: Vec<Peer> = f
            .peers
            .iter()
            .map(|(name, addr)| Peer {
                name: name.clone(),
                addr: *addr,
                seed: seed_of(name),
                up: AtomicBool::new(true),
                failures: AtomicU32::new(0),
            })
            .collect();
        // validation guarantees the node is among its peers
        let me = peers.iter().position(|p| p.name == f.node).unwrap_or(0);
        for p in &peers {
            metrics::fleet_peer_up(&p.name, true);
        }
        Fleet {
            peers,
            me,
            secret: f.secret.as_bytes().to_vec(),
            connect_timeout: f.connect_timeout,
            peer_timeout: f.peer_timeout,
            health_interval: f.health_interval,
            purges: None,
        }
    }

    /// Sends the last purge this node has seen with every hop.
    pub fn with_purges(mut self, purges: Option<Arc<crate::fleet::purge::FleetPurge>>) -> Fleet {
        self.purges = purges;
        self
    }

    /// The last fleet purge this node has seen (0 without purges).
    pub fn seen(&self) -> u64 {
        self.purges.as_ref().map_or(0, |p| p.seen())
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.peers[self.me].name
    }

    /// The index of the node owning `key_hash`, over every configured node, up or down:
    /// a node's being down must not move its keys on some nodes and not on others.
    pub fn owner(&self, key_hash: u128) -> usize {
        let mut best = (0, 0u64);
        for (i, p) in self.peers.iter().enumerate() {
            let s = score(key_hash, p.seed);
            if i == 0 || s > best.1 {
                best = (i, s);
            }
        }
        best.0
    }

    /// Where a miss of `key_hash` goes.
    pub fn route(&self, key_hash: u128) -> Route {
        let owner = self.owner(key_hash);
        if owner == self.me {
            Route::Local
        } else if self.peers[owner].up.load(Ordering::Relaxed) {
            Route::Owner(owner)
        } else {
            Route::Skipped
        }
    }

    /// The upstream peer of a hop to node `i`: its fleet listener over TCP, connecting
    /// within `connect_timeout`, its answer within the tenant's render timeout plus
    /// `peer_timeout`.
    pub fn peer(&self, i: usize, render_timeout: Duration) -> HttpPeer {
        let mut peer = HttpPeer::new(self.peers[i].addr, false, String::new());
        peer.options.connection_timeout = Some(self.connect_timeout);
        peer.options.total_connection_timeout = Some(self.connect_timeout);
        peer.options.read_timeout = Some(render_timeout + self.peer_timeout);
        peer.options.write_timeout = Some(self.peer_timeout);
        peer
    }

    /// A hop to node `i` failed before its answer began: down until a probe succeeds.
    pub fn mark_down(&self, i: usize) {
        let p = &self.peers[i];
        p.failures.store(DOWN_AFTER, Ordering::Relaxed);
        if p.up.swap(false, Ordering::Relaxed) {
            metrics::fleet_peer_up(&p.name, false);
            tracing::warn!(peer = %p.name, "fleet peer down after a failed hop");
        }
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.peers[i].up.load(Ordering::Relaxed)
    }

    fn probed(&self, i: usize, ok: bool) {
        let p = &self.peers[i];
        if ok {
            p.failures.store(0, Ordering::Relaxed);
            if !p.up.swap(true, Ordering::Relaxed) {
                metrics::fleet_peer_up(&p.name, true);
                tracing::info!(peer = %p.name, "fleet peer up");
            }
        } else if p.failures.fetch_add(1, Ordering::Relaxed) + 1 >= DOWN_AFTER && p.up.swap(false, Ordering::Relaxed) {
            metrics::fleet_peer_up(&p.name, false);
            tracing::warn!(peer = %p.name, "fleet peer down: health checks failed");
        }
    }

    /// The probe's bound: a connect and a short answer. Not the probe period: a busy
    /// but healthy peer must not be taken as down (its keys would render twice).
    fn probe_timeout(&self) -> Duration {
        self.connect_timeout + self.peer_timeout
    }
}

/// `GET /fleet/health` on `addr`: true on a 200 within `timeout`.
async fn probe(addr: SocketAddr, timeout: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(b"GET /fleet/health HTTP/1.1\r\nHost: fleet\r\nConnection: close\r\n\r\n").await?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Ok(true)))
}

/// Probes every other node every `health_interval`.
pub struct Health(pub Arc<Fleet>);

#[async_trait]
impl BackgroundService for Health {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let fleet = &self.0;
        let mut tick = tokio::time::interval(fleet.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let timeout = fleet.probe_timeout();
            let probes = fleet
                .peers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != fleet.me)
                .map(|(i, p)| async move { (i, probe(p.addr, timeout).await) });
            for (i, ok) in futures::future::join_all(probes).await {
                fleet.probed(i, ok);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fleet(names: &[&str]) -> Fleet {
        let peers = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), SocketAddr::from(([127, 0, 0, 1], 9000 + i as u16))))
            .collect();
        Fleet::new(&config::Fleet {
            node: names[0].to_owned(),
            peers,
            listen: SocketAddr::from(([127, 0, 0, 1], 9000)),
            secret: "s".repeat(32),
            postgres: String::new(),
            connect_timeout: Duration::from_millis(100),
            peer_timeout: Duration::from_millis(100),
            health_interval: Duration::from_secs(1),
        })
    }

    fn keys() -> impl Iterator<Item = u128> {
        (0..30_000u128).map(|i| u128::from_be_bytes(*blake3::hash(&i.to_le_bytes()).as_bytes().first_chunk().unwrap()))
    }

    #[test]
    fn keys_spread_evenly_over_the_nodes() {
        let f = fleet(&["a", "b", "c", "d"]);
        let mut n = [0usize; 4];
        for k in keys() {
            n[f.owner(k)] += 1;
        }
        for c in n {
            assert!((6_750..=8_250).contains(&c), "{n:?}");
        }
    }

    #[test]
    fn only_a_removed_nodes_keys_move() {
        let four = fleet(&["a", "b", "c", "d"]);
        let three = fleet(&["a", "b", "d"]);
        let name = |f: &Fleet, k| f.peers[f.owner(k)].name.clone();
        let mut moved = 0;
        for k in keys() {
            let (before, after) = (name(&four, k), name(&three, k));
            if before != "c" {
                assert_eq!(before, after);
            } else {
                moved += 1;
            }
        }
        assert!(moved > 0);
    }

    #[test]
    fn a_failed_hop_marks_down_and_one_probe_brings_back() {
        let f = fleet(&["a", "b"]);
        let k = keys().find(|k| f.owner(*k) == 1).unwrap();
        assert_eq!(f.route(k), Route::Owner(1));
        f.probed(1, false);
        assert_eq!(f.route(k), Route::Owner(1), "one failed probe is not enough");
        f.probed(1, false);
        assert_eq!(f.route(k), Route::Skipped);
        f.probed(1, true);
        assert_eq!(f.route(k), Route::Owner(1));
        f.mark_down(1);
        assert_eq!(f.route(k), Route::Skipped);
        let mine = keys().find(|k| f.owner(*k) == 0).unwrap();
        assert_eq!(f.route(mine), Route::Local);
    }
}

//! The fleet end to end: three nodes on loopback that share one S3 store of rendered
//! answers (s3s with SigV4) and one PostgreSQL (the usage ledger and the purges), behind a
//! client that spreads its requests over them at random.
//!
//! What it proves: each distinct transform is rendered once in the whole fleet; a node
//! killed mid-run fails no request and causes no render (its keys come from the shared
//! store); a purge on one node reaches the others within a second; a node started after
//! a purge never serves the purged image; the ledger holds exactly the requests made.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{config_text_with, dims, images_dir, local_tenant_at, reserved_port, sign, Imgedge, S3Server};
use crate::harness::{S3_ACCESS_KEY, S3_SECRET_KEY};
use crate::pg::Pg;

const HOST: &str = "img.test";
const TENANT: &str = "t1";
const SECRET: &str = "loopback-fleet-secret-0123456789abcdef";
const TOKEN: &str = "fleet-admin-token-0123456789";
const NAMES: [&str; 3] = ["a", "b", "c"];
/// Output widths × sources: the 40 distinct transforms.
const WIDTHS: [u32; 8] = [40, 50, 60, 70, 80, 90, 100, 110];
const SOURCES: [(&str, &str); 5] = [
    ("p0.jpg", "coffee_600x400.jpg"),
    ("p1.jpg", "astronaut_512.jpg"),
    ("p2.jpg", "rocket_427x640.jpg"),
    ("p3.png", "chelsea_451x300.png"),
    ("p4.webp", "leaf_alpha_400x250_lossy.webp"),
];

/// Every request the test sends to an edge: the ledger must hold exactly this many.
static SENT: AtomicU64 = AtomicU64::new(0);

struct Fleet {
    nodes: Vec<Imgedge>,
    root: tempfile::TempDir,
    pg: Pg,
    _s3: S3Server,
}

fn transforms() -> Vec<String> {
    SOURCES
        .iter()
        .flat_map(|(name, _)| WIDTHS.iter().map(move |w| sign(&format!("/rs:fit:{w}:0/plain/{name}@png"))))
        .collect()
}

/// A deterministic pseudo-random sequence (xorshift): which node each request goes to.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What every node's config shares: the fleet listeners' ports (in [`NAMES`] order), the
/// origin directory, the S3 endpoint and the PostgreSQL URL.
struct Shared {
    fleet_ports: Vec<u16>,
    root: std::path::PathBuf,
    s3: String,
    pg: String,
}

fn node_config(dir: &Path, edge: u16, ops: u16, name: &str, shared: &Shared) -> String {
    let Shared { fleet_ports, root, s3, pg } = shared;
    let cache = format!(
        "  memory: 64MiB\n  max_object: 4MiB\n  disk: {{path: cache, size: 64MiB}}\n  shared: {{type: s3, bucket: derived, \
         prefix: fleet, endpoint: \"{s3}\", access_key_id: \"{S3_ACCESS_KEY}\", secret_access_key: \"{S3_SECRET_KEY}\"}}\n"
    );
    let peers: Vec<String> = NAMES.iter().zip(fleet_ports).map(|(n, p)| format!("{n}: \"127.0.0.1:{p}\"")).collect();
    let extra = format!(
        "usage:\n  flush_interval: 200ms\n  postgres: \"{pg}\"\nadmin:\n  token: \"{TOKEN}\"\nfleet:\n  node: {name}\n  \
         secret: \"{SECRET}\"\n  health_interval: 200ms\n  peers: {{{}}}\n",
        peers.join(", ")
    );
    config_text_with(dir, edge, ops, &local_tenant_at(TENANT, HOST, root), &cache, &extra)
}

impl Fleet {
    async fn start() -> Fleet {
        let pg = Pg::start();
        let s3 = S3Server::start().await;
        let root = tempfile::tempdir().unwrap();
        for (name, file) in SOURCES {
            std::fs::copy(images_dir().join(file), root.path().join(name)).unwrap();
        }
        let shared = Arc::new(Shared {
            fleet_ports: NAMES.iter().map(|_| reserved_port()).collect(),
            root: root.path().to_owned(),
            s3: s3.endpoint.clone(),
            pg: pg.url(),
        });
        let mut nodes = Vec::new();
        for name in NAMES {
            let shared = shared.clone();
            nodes.push(Imgedge::start_config(move |dir, edge, ops| node_config(dir, edge, ops, name, &shared)).await);
        }
        Fleet { nodes, root, pg, _s3: s3 }
    }

    async fn purge(&self, node: usize, query: &str) {
        let r = reqwest::Client::new()
            .post(format!("http://{}/purge?tenant={TENANT}&{query}", self.nodes[node].ops))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{query}: {}", r.text().await.unwrap());
    }
}

/// Sum of every series of a metric on a node (all label values).
async fn metric_sum(node: &Imgedge, name: &str) -> f64 {
    let text = node.ops_get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

async fn renders(nodes: &[&Imgedge]) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += metric_sum(n, "imgedge_renders_total").await;
    }
    sum
}

/// Sends `paths` (each to the node `pick` chooses), eight at a time; returns the statuses
/// that were not 200 with their paths.
async fn spread(nodes: &[&Imgedge], paths: &[String], pick: &mut Dice) -> Vec<(u16, String)> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(8));
    let mut tasks = tokio::task::JoinSet::new();
    for path in paths {
        let url = format!("http://{}{path}", nodes[pick.roll(nodes.len())].edge);
        SENT.fetch_add(1, Ordering::Relaxed);
        let (client, gate, path) = (client.clone(), gate.clone(), path.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            match client.get(&url).header("host", HOST).send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    match r.bytes().await {
                        Ok(body) if status == 200 && !body.is_empty() => None,
                        _ => Some((status, path)),
                    }
                }
                Err(_) => Some((0, path)),
            }
        });
    }
    let mut failed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        if let Some(f) = r.unwrap() {
            failed.push(f);
        }
    }
    failed
}

/// Polls `node` for `path` until the answer's height is `want`; the time it took.
async fn until_height(node: &Imgedge, path: &str, want: u32, limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        SENT.fetch_add(1, Ordering::Relaxed);
        let r = node.get(HOST, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap_or_default().to_owned());
        let body = r.bytes().await.unwrap();
        let got = dims(&body);
        if got.2 == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{path}: still {got:?} ({cache:?}) after {limit:?}, purge seq {}\n{}",
            node.metric("imgedge_fleet_purge_seq").await,
            node.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn height(node: &Imgedge, path: &str) -> u32 {
    SENT.fetch_add(1, Ordering::Relaxed);
    let r = node.get(HOST, path).await;
    assert_eq!(r.status(), 200, "{path}");
    dims(&r.bytes().await.unwrap()).2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_render_once_survive_a_death_and_purge_everywhere() {
    let mut fleet = Fleet::start().await;
    let paths = transforms();
    assert_eq!(paths.len(), 40);

    // 600 requests, 15 per transform, in random order: the first 40 (one per transform)
    // over the three nodes, the other 560 over a and b while c dies
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    let mut first = paths.clone();
    let mut rest: Vec<String> = paths.iter().flat_map(|p| std::iter::repeat_n(p.clone(), 14)).collect();
    for list in [&mut first, &mut rest] {
        for i in (1..list.len()).rev() {
            list.swap(i, dice.roll(i + 1));
        }
    }
    let all: Vec<&Imgedge> = fleet.nodes.iter().collect();
    let failed = spread(&all, &first, &mut dice).await;
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert_eq!(renders(&all).await, 40.0, "each distinct transform rendered once in the fleet");
    for n in &all {
        assert!(metric_sum(n, "imgedge_fleet_hops_total").await > 0.0, "every node asked an owner");
    }
    // every render is in the shared store, every request in the ledger (c's too)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut stored = 0.0;
        for n in &all {
            stored += n.metric("imgedge_shared_store_operations_total{op=\"put\",result=\"ok\"}").await;
        }
        if stored >= 40.0 {
            break;
        }
        assert!(Instant::now() < deadline, "{stored} of 40 renders in the shared store");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ledger_until(&fleet.pg, SENT.load(Ordering::Relaxed)).await;
    let rendered_by_c = renders(&all[2..]).await;

    // c dies without warning while a and b are busy: no request fails, nothing renders again
    // (what c owned and a or b never held comes from the shared store)
    let (alive, dead) = fleet.nodes.split_at_mut(2);
    let survivors: Vec<&Imgedge> = alive.iter().collect();
    let before = renders(&survivors).await;
    let kill = async { dead[0].kill9() };
    let (failed, ()) = tokio::join!(spread(&survivors, &rest, &mut dice), kill);
    assert!(failed.is_empty(), "failed after a node died: {failed:?}");
    assert_eq!(renders(&survivors).await, before, "the dead node's keys came from the shared store");
    assert_eq!(before + rendered_by_c, 40.0, "600 requests, 40 renders");
    let mut from_store = 0.0;
    for n in &survivors {
        from_store += n.metric("imgedge_shared_store_operations_total{op=\"get\",result=\"hit\"}").await;
    }
    assert!(from_store > 0.0, "some of c's keys were answered by the shared store");

    // a source changes (3:2 becomes square) and is purged on a: b answers the new image
    // within 1 s
    let p0 = sign("/rs:fit:80:0/plain/p0.jpg@png");
    assert_eq!(height(&fleet.nodes[1], &p0).await, 53);
    std::fs::copy(images_dir().join("astronaut_512.jpg"), fleet.root.path().join("p0.jpg")).unwrap();
    fleet.purge(0, "source=p0.jpg").await;
    let lag = until_height(&fleet.nodes[1], &p0, 80, Duration::from_secs(1)).await;
    eprintln!("source purge on a reached b in {lag:?}");
    assert_eq!(height(&fleet.nodes[0], &p0).await, 80);
    // and one URL (the other variants of the source stay as they were)
    let p1 = sign("/rs:fit:60:0/plain/p1.jpg@png");
    let p1_other = sign("/rs:fit:70:0/plain/p1.jpg@png");
    assert_eq!(height(&fleet.nodes[0], &p1).await, 60);
    std::fs::copy(images_dir().join("coffee_600x400.jpg"), fleet.root.path().join("p1.jpg")).unwrap();
    fleet.purge(1, &format!("url={p1}")).await;
    let lag = until_height(&fleet.nodes[0], &p1, 40, Duration::from_secs(1)).await;
    eprintln!("URL purge on b reached a in {lag:?}");
    assert_eq!(height(&fleet.nodes[1], &p1).await, 40);
    assert_eq!(height(&fleet.nodes[0], &p1_other).await, 70, "only the purged URL is new");

    // c was down during both purges; started again (its disk tier holds the old images) it
    // serves only the new ones
    fleet.nodes[2].restart().await;
    assert_eq!(height(&fleet.nodes[2], &p0).await, 80, "source purged while c was down");
    assert_eq!(height(&fleet.nodes[2], &p1).await, 40, "URL purged while c was down");
    // with the three up, a tenant purge on a reaches b and c within 1 s (3:2 becomes square)
    let p2 = sign("/rs:fit:90:0/plain/p2.jpg@png");
    for n in &fleet.nodes {
        assert_eq!(height(n, &p2).await, 60);
    }
    std::fs::copy(images_dir().join("astronaut_512.jpg"), fleet.root.path().join("p2.jpg")).unwrap();
    fleet.purge(0, "all=1").await;
    for n in &fleet.nodes[1..] {
        let lag = until_height(n, &p2, 90, Duration::from_secs(1)).await;
        eprintln!("tenant purge on a reached another node in {lag:?}");
    }

    // the ledger holds every request the client made, once: stop every node (final flush)
    for n in &mut fleet.nodes {
        n.stop();
    }
    let row = ledger_until(&fleet.pg, SENT.load(Ordering::Relaxed)).await;
    assert_eq!(row.unique_transforms, 40, "a transform served by three nodes is one unique transform");
}

/// The tenant's ledger row once it holds `requests` requests (usage is flushed every
/// 200 ms by every node); fails if it does not within 10 s, or holds more.
async fn ledger_until(pg: &Pg, requests: u64) -> imgedge::usage::Totals {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = pg.totals(TENANT).await;
        assert!(rows.len() <= 1, "{rows:?}");
        if let Some(row) = rows.into_iter().next() {
            assert!(row.requests <= requests, "the ledger holds {} requests, {requests} were made", row.requests);
            if row.requests == requests {
                return row;
            }
            assert!(Instant::now() < deadline, "the ledger holds {} of {requests} requests", row.requests);
        }
        assert!(Instant::now() < deadline, "no ledger row");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

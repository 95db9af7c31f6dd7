//! Owner routing through running nodes: three imgedge processes on loopback, one shared
//! local origin, one PostgreSQL (a fleet's purges and ledger). Each cache key renders on
//! its owner only; a dead or stopped node never fails a request; a hop that does not
//! verify renders nothing.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{
    config_text_with, dims, images_dir, local_tenant_at, reserved_port, sign, HttpOrigin, Imgedge, DEFAULT_CACHE, KEY,
    SALT,
};
use crate::pg::Pg;

const NAMES: [&str; 3] = ["a", "b", "c"];

/// Fleet listener ports of the nodes, in [`NAMES`] order.
pub struct Ports(pub Vec<u16>);

impl Ports {
    pub fn new(n: usize) -> Ports {
        Ports((0..n).map(|_| reserved_port()).collect())
    }

    /// This fleet's own secret: no other test's fleet verifies its hops.
    pub fn secret(&self) -> String {
        format!("fleet-test-secret-{}-0123456789abcdef", self.0[0])
    }

    fn peers(&self) -> String {
        let list: Vec<_> = self.0.iter().zip(NAMES).map(|(p, n)| format!("{n}: \"127.0.0.1:{p}\"")).collect();
        format!("{{{}}}", list.join(", "))
    }
}

/// The `usage:`, `limits:` and `fleet:` sections of node `i`, probing peers every
/// `health` (a long period keeps a slow probe on a busy machine from taking a peer down).
pub fn fleet_yaml(pg: &Pg, ports: &Ports, i: usize, health: &str) -> String {
    format!(
        "usage:\n  flush_interval: 200ms\n  postgres: \"{url}\"\nlimits:\n  render_timeout: 10s\nfleet:\n  node: {node}\n  \
         secret: \"{secret}\"\n  peers: {peers}\n  connect_timeout: 200ms\n  peer_timeout: 1s\n  \
         health_interval: {health}\n",
        url = pg.url(),
        node = NAMES[i],
        peers = ports.peers(),
        secret = ports.secret(),
    )
}

/// Starts node `i` of the fleet with its own directory and cache.
pub async fn start_node(pg: &Pg, ports: &Ports, i: usize, root: &Path, health: &str) -> Imgedge {
    let tenant = local_tenant_at("t1", "img.test", root);
    let extra = fleet_yaml(pg, ports, i, health);
    Imgedge::start_config(move |dir, edge, ops| config_text_with(dir, edge, ops, &tenant, DEFAULT_CACHE, &extra)).await
}

/// Starts one node per port.
pub async fn start_nodes(pg: &Pg, ports: &Ports, root: &Path, health: &str) -> Vec<Imgedge> {
    futures::future::join_all((0..ports.0.len()).map(|i| start_node(pg, ports, i, root, health))).await
}

/// Sum of every sample of `name` whose labels contain `labels` (`""` for all).
pub async fn sum(node: &Imgedge, name: &str, labels: &str) -> f64 {
    let text = node.ops_get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            n == name && rest.contains(labels)
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .sum()
}

async fn fleet_sum(nodes: &[&Imgedge], name: &str, labels: &str) -> f64 {
    let mut total = 0.0;
    for n in nodes {
        total += sum(n, name, labels).await;
    }
    total
}

/// Polls `node`'s `imgedge_fleet_peer_up{peer}` until it is `want` (≤ 10 s).
async fn peer_up_becomes(node: &Imgedge, peer: &str, want: f64) {
    let series = format!("imgedge_fleet_peer_up{{peer=\"{peer}\"}}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while node.metric(&series).await != want {
        assert!(Instant::now() < deadline, "{series} never became {want}\n{}", node.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn transform(i: usize) -> String {
    sign(&format!("/w:{}/plain/coffee_600x400.jpg", 40 + i))
}

/// A fixed pseudo-random sequence (xorshift): the same spread on every run.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Waits until the ledger's row for t1 counts `requests` (≤ 20 s) and returns it.
async fn ledger(pg: &Pg, requests: u64) -> imgedge::usage::Totals {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rows = pg.totals("t1").await;
        if rows.first().is_some_and(|r| r.requests == requests) || Instant::now() >= deadline {
            assert_eq!(rows.len(), 1, "{rows:?}");
            return rows.into_iter().next().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn each_transform_renders_once_in_the_fleet_and_is_billed_where_it_was_asked() {
    let pg = Pg::start();
    let ports = Ports::new(3);
    let nodes = start_nodes(&pg, &ports, &images_dir(), "10s").await;
    let nodes: Vec<&Imgedge> = nodes.iter().collect();

    // 40 transforms × 15 requests, each to a node drawn at random, 8 at a time
    let mut rng = Lcg(0x9e37_79b9_7f4a_7c15);
    let mut work: Vec<(usize, usize)> = (0..600).map(|i| (i % 40, rng.below(3))).collect();
    for i in (1..work.len()).rev() {
        work.swap(i, rng.below(i + 1));
    }
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let per_node: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
    let worker = || async {
        loop {
            let i = next.fetch_add(1, Ordering::SeqCst);
            let Some(&(t, n)) = work.get(i) else { return };
            let r = nodes[n].get("img.test", &transform(t)).await;
            assert_eq!(r.status(), 200, "transform {t} on node {n}\n{}", nodes[n].log());
            r.bytes().await.unwrap();
            per_node[n].fetch_add(1, Ordering::SeqCst);
        }
    };
    futures::future::join_all((0..8).map(|_| worker())).await;

    let renders = fleet_sum(&nodes, "imgedge_renders_total", "").await;
    let mut seen = String::new();
    for node in &nodes {
        let text = node.ops_get("/metrics").await.text().await.unwrap();
        seen += &text
            .lines()
            .filter(|l| l.starts_with("imgedge_fleet") || l.starts_with("imgedge_renders_total"))
            .collect::<Vec<_>>()
            .join("\n");
        seen += "\n";
        seen +=
            &node.log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect::<Vec<_>>().join("\n");
        seen += "\n--\n";
    }
    assert_eq!(renders, 40.0, "one render per transform in the whole fleet\n{seen}");
    for (n, node) in nodes.iter().enumerate() {
        assert!(per_node[n].load(Ordering::SeqCst) > 100, "node {n} answered its share");
        assert!(sum(node, "imgedge_renders_total", "").await > 0.0, "node {n} owns some keys");
        assert!(sum(node, "imgedge_fleet_hops_total", "result=\"ok\"").await > 0.0, "node {n} asked owners");
        assert!(sum(node, "imgedge_fleet_served_total", "cache=\"miss\"").await > 0.0, "node {n} served as owner");
        assert_eq!(sum(node, "imgedge_fleet_hops_total", "result=\"failed\"").await, 0.0);
    }
    // a hop is not a client request: the edges counted exactly what the client sent
    let mut answered = 0.0;
    for _ in 0..100 {
        answered = fleet_sum(&nodes, "imgedge_http_requests_total", "").await;
        if answered >= 600.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answered, 600.0);

    let row = ledger(&pg, 600).await;
    assert_eq!(row.requests, 600, "each client request billed once, on the node it reached");
    assert_eq!(row.unique_transforms, 40);
    assert_eq!(row.cache_hits + row.cache_misses, 600);
}

#[tokio::test]
async fn a_killed_node_fails_no_request() {
    let pg = Pg::start();
    let ports = Ports::new(3);
    let mut nodes = start_nodes(&pg, &ports, &images_dir(), "10s").await;
    for t in 0..20 {
        let r = nodes[t % 3].get("img.test", &transform(t)).await;
        assert_eq!(r.status(), 200);
    }
    let mut c = nodes.pop().unwrap();
    let (a, b) = (&nodes[0], &nodes[1]);
    let failed = AtomicUsize::new(0);
    let run = |from: usize| {
        let failed = &failed;
        async move {
            for t in from..40 {
                for node in [a, b] {
                    let r = node.get("img.test", &transform(t)).await;
                    if r.status() != 200 {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                    r.bytes().await.unwrap();
                }
            }
        }
    };
    // new keys (20..40) while c dies, then every key on both survivors
    let kill = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.kill9();
    };
    tokio::join!(run(20), run(30), kill);
    run(0).await;
    assert_eq!(failed.load(Ordering::SeqCst), 0);
    let around = fleet_sum(&[a, b], "imgedge_fleet_hops_total", "result=\"failed\"").await
        + fleet_sum(&[a, b], "imgedge_fleet_hops_total", "result=\"skipped\"").await;
    assert!(around > 0.0, "c's keys went around it\n{}", a.log());
    peer_up_becomes(a, "c", 0.0).await;
}

fn signal(node: &Imgedge, sig: &str) {
    let ok = std::process::Command::new("kill").arg(sig).arg(node.pid().to_string()).status().unwrap();
    assert!(ok.success());
}

#[tokio::test]
async fn a_stopped_node_is_skipped_and_used_again_once_it_answers() {
    let pg = Pg::start();
    let ports = Ports::new(3);
    let nodes = start_nodes(&pg, &ports, &images_dir(), "200ms").await;
    let (a, c) = (&nodes[0], &nodes[2]);
    signal(c, "-STOP");
    peer_up_becomes(a, "c", 0.0).await;
    // c is skipped, not waited for: a hop to it would wait 11 s (render_timeout + peer_timeout)
    for t in 0..20 {
        let started = Instant::now();
        let r = a.get("img.test", &transform(t)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "transform {t} took {:?}", started.elapsed());
    }
    assert!(sum(a, "imgedge_fleet_hops_total", "result=\"skipped\"").await > 0.0, "c owns some of the keys");
    signal(c, "-CONT");
    peer_up_becomes(a, "c", 1.0).await;
    let before = sum(c, "imgedge_fleet_served_total", "cache=\"miss\"").await;
    for t in 20..40 {
        assert_eq!(a.get("img.test", &transform(t)).await.status(), 200);
    }
    assert!(sum(c, "imgedge_fleet_served_total", "cache=\"miss\"").await > before, "c owns keys again");
}

/// Headers of a hop for `canonical` (source `coffee_600x400.jpg`), signed with `secret`
/// at `time`.
fn hop_headers(secret: &str, time: u64, canonical: &str) -> Vec<(String, String)> {
    let r = imgedge::fleet::hop::HopRequest {
        tenant: "t1".into(),
        source: "local:coffee_600x400.jpg".into(),
        canonical: canonical.into(),
        watermark: None,
        format: "src".into(),
        no_fallback: false,
        seq: 0,
    };
    let mut up = pingora::http::RequestHeader::build("GET", b"/render", None).unwrap();
    imgedge::fleet::hop::write_at(&mut up, secret.as_bytes(), "a", time, &r).unwrap();
    up.headers.iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned())).collect()
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test]
async fn only_a_verified_hop_reaches_render() {
    let pg = Pg::start();
    let ports = Ports::new(2);
    let nodes = start_nodes(&pg, &ports, &images_dir(), "10s").await;
    let b = &nodes[1];
    let fleet = format!("http://127.0.0.1:{}", ports.0[1]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let send = |headers: Vec<(String, String)>| {
        let mut req = client.get(format!("{fleet}/fleet/render"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    assert_eq!(client.get(format!("{fleet}/fleet/health")).send().await.unwrap().status(), 200);

    let canonical = "/w:77/plain/local:coffee_600x400.jpg";
    let good = hop_headers(&ports.secret(), now(), canonical);
    let mut forged = good.clone();
    for (k, v) in &mut forged {
        if k == "x-imgedge-request" {
            *v = "/w:78/plain/local:coffee_600x400.jpg".into();
        }
    }
    let refused = [
        ("missing", vec![("x-imgedge-tenant".to_owned(), "t1".to_owned())]),
        ("forged", forged),
        ("stale", hop_headers(&ports.secret(), now() - 31, canonical)),
        ("future", hop_headers(&ports.secret(), now() + 31, canonical)),
        ("other secret", hop_headers("another-secret-of-the-same-length!!", now(), canonical)),
    ];
    for (what, headers) in refused {
        let r = send(headers).await.unwrap();
        assert_eq!(r.status(), 403, "{what}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{what}");
        assert!(r.bytes().await.unwrap().len() < 64, "{what}");
    }
    assert_eq!(sum(b, "imgedge_renders_total", "").await, 0.0, "nothing refused was rendered");
    assert_eq!(sum(b, "imgedge_fleet_served_total", "cache=\"refused\"").await, 5.0);

    // the same hop, signed right, renders: the refusals above were the signature's doing
    let r = send(good).await.unwrap();
    assert_eq!(r.status(), 200, "{}", b.log());
    assert_eq!(sum(b, "imgedge_renders_total", "").await, 1.0);

    // hop headers sent to the public edge are dropped with every other client header
    let path = sign("/w:79/plain/coffee_600x400.jpg");
    let mut headers: Vec<(String, String)> =
        hop_headers(&ports.secret(), now(), "/w:80/plain/local:coffee_600x400.jpg");
    headers.push(("x-imgedge-no-fallback".into(), "1".into()));
    let refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = b.request(reqwest::Method::GET, "img.test", &path, &refs).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().keys().all(|k| !k.as_str().starts_with("x-imgedge")), "{:?}", r.headers());
    let (_, width, _) = dims(&r.bytes().await.unwrap());
    assert_eq!(width, 79, "the answer is the URL's, not the headers'");
}

#[tokio::test]
async fn a_head_miss_through_the_owner_caches_the_whole_answer() {
    let pg = Pg::start();
    let ports = Ports::new(2);
    let nodes = start_nodes(&pg, &ports, &images_dir(), "10s").await;
    let (a, b) = (&nodes[0], &nodes[1]);
    for w in 200..212 {
        let path = sign(&format!("/w:{w}/plain/coffee_600x400.jpg"));
        let r = a.request(reqwest::Method::HEAD, "img.test", &path, &[]).await;
        assert_eq!(r.status(), 200);
        for node in [a, b] {
            let r = node.get("img.test", &path).await;
            assert_eq!(r.status(), 200);
            let (_, width, _) = dims(&r.bytes().await.unwrap());
            assert_eq!(width, w);
        }
    }
    assert!(sum(a, "imgedge_fleet_hops_total", "result=\"ok\"").await > 0.0, "some went through b");

    // once either node has a transform, the other's miss is answered from the owner's
    // cache: nothing rendered for it, so a hit
    let renders = fleet_sum(&[a, b], "imgedge_renders_total", "").await;
    for w in 220..232 {
        let path = sign(&format!("/w:{w}/plain/coffee_600x400.jpg"));
        // until b answers it from its own cache: the owner (either node) has stored it
        b.fill("img.test", &path).await;
        let r = a.get("img.test", &path).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cache"], "HIT", "w:{w}: {:?}", r.headers());
        assert!(r.headers().keys().all(|k| !k.as_str().starts_with("x-imgedge")), "{:?}", r.headers());
    }
    assert_eq!(fleet_sum(&[a, b], "imgedge_renders_total", "").await, renders + 12.0);
}

#[tokio::test]
async fn a_peer_address_that_is_no_fleet_listener_fails_no_request() {
    // b's address is a plain HTTP server: it answers hops, but not as b's fleet listener
    let pg = Pg::start();
    let impostor = HttpOrigin::start(images_dir()).await;
    let ports = Ports(vec![reserved_port(), impostor.addr.port()]);
    let a = start_node(&pg, &ports, 0, &images_dir(), "10s").await;
    for w in 300..316 {
        let r = a.get("img.test", &sign(&format!("/w:{w}/plain/coffee_600x400.jpg"))).await;
        assert_eq!(r.status(), 200, "{}", a.log());
        let (_, width, _) = dims(&r.bytes().await.unwrap());
        assert_eq!(width, w);
    }
    assert_eq!(impostor.hits("/fleet/render"), 1, "tried once, then taken as down");
    assert_eq!(sum(&a, "imgedge_fleet_hops_total", "result=\"failed\"").await, 1.0);
    assert!(sum(&a, "imgedge_fleet_hops_total", "result=\"skipped\"").await > 0.0);
    assert_eq!(sum(&a, "imgedge_renders_total", "").await, 16.0);
}

#[tokio::test]
async fn a_busy_owner_makes_the_requester_render_and_stays_up() {
    // one render at a time per node (render.workers 1, no queue): a stalled source holds
    // its owner's only slot, so the owner answers any other render 503
    let pg = Pg::start();
    let origin = HttpOrigin::start(images_dir()).await;
    let ports = Ports::new(2);
    let tenant = format!(
        "  - id: t1\n    hosts: [img.test]\n    keys: [{{key: \"{KEY}\", salt: \"{SALT}\"}}]\n    origins:\n      \
         web: {{type: http, base_url: \"http://{}/\", allow_private: true}}\n",
        origin.addr
    );
    let start = |i: usize| {
        let extra = format!("render:\n  workers: 1\n  queue: 0\n{}", fleet_yaml(&pg, &ports, i, "10s"));
        let tenant = tenant.clone();
        Imgedge::start_config(move |dir, edge, ops| config_text_with(dir, edge, ops, &tenant, DEFAULT_CACHE, &extra))
    };
    let nodes = [start(0).await, start(1).await];
    let stalled = nodes[0].edge;
    let hold = tokio::spawn(async move {
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let url = format!("http://{stalled}{}", sign("/w:50/plain/stall/coffee_600x400.jpg"));
        let _ = client.get(url).header("host", "img.test").send().await;
    });
    // the node whose render holds the stalled source (a, or b when b owns it)
    let deadline = Instant::now() + Duration::from_secs(10);
    let busy = loop {
        let mut found = None;
        for (i, n) in nodes.iter().enumerate() {
            if n.metric("imgedge_renders_in_progress").await >= 1.0 {
                found = Some(i);
            }
        }
        if let Some(i) = found {
            break i;
        }
        assert!(Instant::now() < deadline, "the stalled render never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (owner, other) = (&nodes[busy], &nodes[1 - busy]);
    let owner_renders = sum(owner, "imgedge_renders_total", "outcome=\"ok\"").await;
    // every transform asked of the other node is answered: its own keys rendered there,
    // the busy owner's keys too, after the owner's 503
    for w in 400..412 {
        let r = other.get("img.test", &sign(&format!("/w:{w}/plain/coffee_600x400.jpg"))).await;
        assert_eq!(r.status(), 200, "w:{w}\n{}", other.log());
        let (_, width, _) = dims(&r.bytes().await.unwrap());
        assert_eq!(width, w);
    }
    assert!(sum(other, "imgedge_fleet_hops_total", "result=\"busy\"").await > 0.0, "some keys are the owner's");
    assert_eq!(sum(other, "imgedge_fleet_hops_total", "result=\"failed\"").await, 0.0);
    let name = NAMES[busy];
    assert_eq!(other.metric(&format!("imgedge_fleet_peer_up{{peer=\"{name}\"}}")).await, 1.0, "busy is not down");
    let rendered = sum(owner, "imgedge_renders_total", "outcome=\"ok\"").await;
    assert_eq!(rendered, owner_renders, "the owner rendered none of them");
    hold.abort();
}

//! Fleet-wide purges through PostgreSQL: nodes with `fleet:` configs, one shared origin
//! directory the tests rewrite, each node its own disk tier. A purge on one node reaches
//! the others through LISTEN/NOTIFY, a node that was down replays what it missed, a lost
//! listening connection recovers, and without PostgreSQL a node refuses to start.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    bin, config_text_with, dims, free_port, images_dir, local_tenant_at, reserved_port, sign, Imgedge, S3Server,
    S3_ACCESS_KEY, S3_SECRET_KEY,
};
use crate::pg::Pg;

const TOKEN: &str = "fleet-purge-admin-token-0123";
const HOST: &str = "img.test";
const SECRET: &str = "fleet-secret-0123456789abcdef-0123456789";
/// Fits into 200x200: coffee (600x400) becomes 200x133, the astronaut (512x512) 200x200.
const FIT: &str = "rs:fit:200:200";
const OLD: (u32, u32) = (200, 133);
const NEW: (u32, u32) = (200, 200);

/// The nodes' names and their (unused here) fleet listener ports.
pub struct Peers(BTreeMap<String, u16>);

impl Peers {
    pub fn new(names: &[&str]) -> Peers {
        Peers(names.iter().map(|n| ((*n).to_owned(), reserved_port())).collect())
    }

    /// The `fleet:` section of node `node`, plus the admin token.
    pub fn yaml(&self, node: &str, pg: &Pg) -> String {
        let peers: Vec<String> = self.0.iter().map(|(n, p)| format!("{n}: \"127.0.0.1:{p}\"")).collect();
        format!(
            "admin:\n  token: \"{TOKEN}\"\nfleet:\n  node: {node}\n  secret: \"{SECRET}\"\n  postgres: \"{}\"\n  peers: {{{}}}\n",
            pg.url(),
            peers.join(", ")
        )
    }
}

/// Files under `dir`, at any depth.
fn files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| if e.path().is_dir() { files(&e.path()) } else { 1 })
        .sum()
}

const DISK: &str = "  memory: 8MiB\n  max_object: 3MiB\n  disk: {path: cache, size: 32MiB, block_size: 4MiB}\n";

/// Writes `image` (a file of tests/data/images) as the origin's `pic.jpg`.
fn put(origin: &Path, image: &str) {
    let tmp = origin.join("pic.tmp");
    std::fs::copy(images_dir().join(image), &tmp).unwrap();
    std::fs::rename(tmp, origin.join("pic.jpg")).unwrap();
}

pub async fn node(peers: &Peers, name: &str, pg: &Pg, origin: &Path) -> Imgedge {
    node_with_cache(peers, name, pg, origin, DISK).await
}

/// [`node`] with another `cache:` section body.
pub async fn node_with_cache(peers: &Peers, name: &str, pg: &Pg, origin: &Path, cache: &str) -> Imgedge {
    let tenant = local_tenant_at("t1", HOST, origin);
    let extra = peers.yaml(name, pg);
    Imgedge::start_config(|dir, edge, ops| config_text_with(dir, edge, ops, &tenant, cache, &extra)).await
}

async fn purge(s: &Imgedge, query: &str) -> serde_json::Value {
    let r =
        reqwest::Client::new().post(format!("http://{}/purge?{query}", s.ops)).bearer_auth(TOKEN).send().await.unwrap();
    let status = r.status();
    let body = r.bytes().await.unwrap();
    assert_eq!(status, 200, "purge {query}: {}\n{}", String::from_utf8_lossy(&body), s.log());
    serde_json::from_slice(&body).unwrap()
}

/// The size of the image `s` answers for `path`, and its `X-Cache`.
async fn size(s: &Imgedge, path: &str) -> ((u32, u32), String) {
    let r = s.get(HOST, path).await;
    assert_eq!(r.status(), 200, "{path}\n{}", s.log());
    let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let body = r.bytes().await.unwrap();
    let (_, w, h) = dims(&body);
    ((w, h), cache)
}

/// Polls `s` until it answers `want` for `path` (at most `bound`); how long it took.
async fn until_size(s: &Imgedge, path: &str, want: (u32, u32), bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let (got, _) = size(s, path).await;
        if got == want {
            return start.elapsed();
        }
        assert!(start.elapsed() < bound, "{path} still {got:?} after {bound:?}, want {want:?}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `s` until its `imgedge_fleet_purge_seq` reaches `seq` (at most `bound`).
async fn until_applied(s: &Imgedge, seq: u64, bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if s.metric("imgedge_fleet_purge_seq").await >= seq as f64 {
            return start.elapsed();
        }
        assert!(start.elapsed() < bound, "purge {seq} not applied within {bound:?}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// PostgreSQL, an origin directory holding `pic.jpg` (the coffee photo), and nodes a and
/// b of one fleet on it, b listening for purges.
async fn two_nodes() -> (Pg, tempfile::TempDir, Imgedge, Imgedge) {
    let pg = Pg::start();
    let origin = tempfile::tempdir().unwrap();
    put(origin.path(), "coffee_600x400.jpg");
    let peers = Peers::new(&["a", "b"]);
    let a = node(&peers, "a", &pg, origin.path()).await;
    let b = node(&peers, "b", &pg, origin.path()).await;
    assert_eq!(b.metric_settled("imgedge_fleet_purge_listener_up", 1.0).await, 1.0, "{}", b.log());
    (pg, origin, a, b)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::test]
async fn a_url_purge_on_one_node_reaches_the_other_within_a_second() {
    let (_pg, origin, a, b) = two_nodes().await;

    let path = sign(&format!("/{FIT}/plain/pic.jpg"));
    let mut lags = Vec::new();
    let mut applied = Vec::new();
    let mut images = [("astronaut_512.jpg", NEW), ("coffee_600x400.jpg", OLD)].into_iter().cycle();
    let mut current = OLD;
    for round in 0..20 {
        a.fill(HOST, &path).await;
        b.fill(HOST, &path).await;
        let (image, next) = images.next().unwrap();
        put(origin.path(), image);
        assert_eq!(size(&b, &path).await, (current, "HIT".to_owned()), "round {round}: cached before the purge");
        let r = purge(&a, &format!("tenant=t1&url={path}")).await;
        let seq = r["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {r}"));
        let sent = Instant::now();
        // the node that answered never serves the old object
        let got = size(&a, &path).await;
        assert_eq!(got.0, next, "round {round}: on the purging node: {got:?} {r}\n{}", a.log());
        applied.push(until_applied(&b, seq, Duration::from_secs(1)).await);
        until_size(&b, &path, next, Duration::from_secs(1)).await;
        lags.push(sent.elapsed());
        current = next;
    }
    for l in [&mut lags, &mut applied] {
        l.sort();
    }
    eprintln!(
        "purge by URL, A → B over {} purges: applied p50 {:.1} ms max {:.1} ms; new bytes p50 {:.1} ms max {:.1} ms",
        lags.len(),
        ms(applied[applied.len() / 2]),
        ms(applied[applied.len() - 1]),
        ms(lags[lags.len() / 2]),
        ms(lags[lags.len() - 1])
    );
    let peer_url = r#"imgedge_fleet_purges_total{from="peer",kind="url"}"#;
    assert_eq!(b.metric_settled(peer_url, 20.0).await, 20.0);
    assert_eq!(a.metric(r#"imgedge_fleet_purges_total{from="self",kind="url"}"#).await, 20.0);
    assert_eq!(a.metric(peer_url).await, 0.0, "a node's own purges are not counted as a peer's");
}

#[tokio::test]
async fn purges_by_source_and_by_tenant_reach_every_node() {
    let pg = Pg::start();
    let origin = tempfile::tempdir().unwrap();
    put(origin.path(), "coffee_600x400.jpg");
    let peers = Peers::new(&["a", "b", "c"]);
    let a = node(&peers, "a", &pg, origin.path()).await;
    let b = node(&peers, "b", &pg, origin.path()).await;
    let c = node(&peers, "c", &pg, origin.path()).await;
    let path = sign(&format!("/{FIT}/plain/pic.jpg"));
    let other = sign("/rs:fit:200:200/q:50/plain/pic.jpg");

    let cases = [
        ("tenant=t1&source=pic.jpg", "source", "astronaut_512.jpg", NEW),
        ("tenant=t1&all=1", "tenant", "coffee_600x400.jpg", OLD),
    ];
    for (query, kind, image, want) in cases {
        for s in [&a, &b, &c] {
            s.fill(HOST, &path).await;
            s.fill(HOST, &other).await;
        }
        put(origin.path(), image);
        assert_ne!(size(&c, &path).await.0, want, "{kind}: cached before the purge");
        let r = purge(&a, query).await;
        assert!(r["generation"].as_u64().is_some(), "{r}");
        let seq = r["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {r}"));
        let sent = Instant::now();
        assert_eq!(size(&a, &path).await.0, want, "{kind}: on the purging node");
        for s in [&b, &c] {
            until_applied(s, seq, Duration::from_secs(1)).await;
            until_size(s, &path, want, Duration::from_secs(1)).await;
            // every transform of the source, not only the one asked for
            until_size(s, &other, want, Duration::from_secs(1)).await;
            let series = format!(r#"imgedge_fleet_purges_total{{from="peer",kind="{kind}"}}"#);
            assert_eq!(s.metric_settled(&series, 1.0).await, 1.0, "{series}");
        }
        eprintln!(
            "purge by {kind}: B and C answer the new image {:.1} ms after the purge's answer",
            ms(sent.elapsed())
        );
    }
}

#[tokio::test]
async fn a_node_down_during_purges_never_serves_what_they_removed() {
    let pg = Pg::start();
    let origin = tempfile::tempdir().unwrap();
    put(origin.path(), "coffee_600x400.jpg");
    let peers = Peers::new(&["a", "b", "c"]);
    let a = node(&peers, "a", &pg, origin.path()).await;
    let mut b = node(&peers, "b", &pg, origin.path()).await;
    let by_url = sign(&format!("/{FIT}/plain/pic.jpg"));
    let by_tenant = sign("/rs:fit:200:200/q:50/plain/pic.jpg");
    let kept = sign("/w:50/plain/coffee_600x400.jpg");
    // a first purge, so B has a number persisted before it goes down
    purge(&a, "tenant=t1&source=other.jpg").await;
    for p in [&by_url, &kept] {
        b.fill(HOST, p).await;
    }
    b.stop();
    put(origin.path(), "astronaut_512.jpg");
    purge(&a, &format!("tenant=t1&url={by_url}")).await;

    b.restart().await;
    // the disk tier survived the restart: what was not purged is still a hit
    assert_eq!(b.get(HOST, &kept).await.headers()["x-cache"], "HIT", "{}", b.log());
    assert_eq!(size(&b, &by_url).await, (NEW, "MISS".to_owned()), "purged by URL while B was down");

    // a tenant purge while B is down
    b.fill(HOST, &by_tenant).await;
    put(origin.path(), "coffee_600x400.jpg");
    b.stop();
    purge(&a, "tenant=t1&all=1").await;
    b.restart().await;
    assert_eq!(size(&b, &by_tenant).await, (OLD, "MISS".to_owned()), "purged by tenant while B was down");

    // a node started after the purges never serves the old image either
    let c = node(&peers, "c", &pg, origin.path()).await;
    assert_eq!(size(&c, &by_url).await.0, OLD);
    assert_eq!(size(&c, &by_tenant).await.0, OLD);
}

#[tokio::test]
async fn a_lost_listening_connection_recovers_and_applies_what_it_missed() {
    let (pg, origin, a, b) = two_nodes().await;
    let path = sign(&format!("/{FIT}/plain/pic.jpg"));
    b.fill(HOST, &path).await;
    put(origin.path(), "astronaut_512.jpg");

    let listener = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'imgedge-purge-listener-b'";
    assert_eq!(pg.count(listener).await, 1);
    let killed = pg
        .count(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE application_name = 'imgedge-purge-listener-b'",
        )
        .await;
    assert_eq!(killed, 1);
    let r = purge(&a, &format!("tenant=t1&url={path}")).await;
    until_applied(&b, r["seq"].as_u64().unwrap(), Duration::from_secs(5)).await;
    until_size(&b, &path, NEW, Duration::from_secs(1)).await;
    assert!(b.metric(r#"imgedge_fleet_purge_errors_total{stage="listen"}"#).await >= 1.0, "the loss was counted");
    assert_eq!(b.metric_settled("imgedge_fleet_purge_listener_up", 1.0).await, 1.0);
    assert_eq!(pg.count(listener).await, 1, "listening again");

    // and notifications flow again: a purge within a second
    a.fill(HOST, &path).await;
    b.fill(HOST, &path).await;
    put(origin.path(), "coffee_600x400.jpg");
    purge(&a, &format!("tenant=t1&url={path}")).await;
    until_size(&b, &path, OLD, Duration::from_secs(1)).await;
}

#[tokio::test]
async fn without_postgresql_a_fleet_node_refuses_to_start() {
    let pg = Pg::start();
    pg.stop_server();
    let origin = tempfile::tempdir().unwrap();
    put(origin.path(), "coffee_600x400.jpg");
    let peers = Peers::new(&["a", "b"]);
    let dir = tempfile::tempdir().unwrap();
    let text = config_text_with(
        dir.path(),
        free_port(),
        free_port(),
        &local_tenant_at("t1", HOST, origin.path()),
        DISK,
        &peers.yaml("a", &pg),
    );
    let config = dir.path().join("imgedge.yaml");
    std::fs::write(&config, text).unwrap();
    let mut child =
        Command::new(bin()).arg("-c").arg(&config).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("imgedge kept running without PostgreSQL");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success(), "{status}: {err}");
    assert!(err.contains("fleet.postgres"), "{err}");
}

#[tokio::test]
async fn a_bad_row_and_a_postgresql_restart_are_survived() {
    let (pg, origin, a, b) = two_nodes().await;
    let path = sign(&format!("/{FIT}/plain/pic.jpg"));

    // a row no node wrote: a key of 1 byte, then a purge after it
    pg.execute(
        "INSERT INTO imgedge_purge_urls (seq, tenant, node, keys)
         VALUES (nextval('imgedge_purge_seq'), 't1', 'elsewhere', ARRAY['\\x01'::bytea]);
         NOTIFY imgedge_purge;",
    )
    .await;
    let row_errors = r#"imgedge_fleet_purge_errors_total{stage="row"}"#;
    assert_eq!(b.metric_settled(row_errors, 1.0).await, 1.0, "the bad key was counted\n{}", b.log());
    b.fill(HOST, &path).await;
    put(origin.path(), "astronaut_512.jpg");
    purge(&a, &format!("tenant=t1&url={path}")).await;
    until_size(&b, &path, NEW, Duration::from_secs(1)).await;

    // PostgreSQL restarts: purges fail meanwhile (and say so), then work again everywhere
    pg.stop_server();
    let r = reqwest::Client::new()
        .post(format!("http://{}/purge?tenant=t1&all=1", a.ops))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500, "a purge PostgreSQL did not record is not acknowledged");
    assert!(r.text().await.unwrap().contains("fleet.postgres"));
    assert_eq!(b.metric_settled("imgedge_fleet_purge_listener_up", 0.0).await, 0.0, "the loss shows");
    pg.start_server();
    b.fill(HOST, &path).await;
    put(origin.path(), "coffee_600x400.jpg");
    let r = purge(&a, "tenant=t1&all=1").await;
    assert!(r["generation"].as_u64().is_some(), "{r}");
    // the listener reconnects with a backoff of at most 5 s
    until_size(&b, &path, OLD, Duration::from_secs(10)).await;
    assert_eq!(b.metric_settled("imgedge_fleet_purge_listener_up", 1.0).await, 1.0);
}

#[tokio::test]
async fn purges_reach_the_shared_store_too() {
    let pg = Pg::start();
    let s3 = S3Server::start().await;
    let origin = tempfile::tempdir().unwrap();
    put(origin.path(), "coffee_600x400.jpg");
    let cache = format!(
        "{DISK}  shared: {{type: s3, bucket: derived, prefix: purge, endpoint: \"{}\", \
         access_key_id: \"{S3_ACCESS_KEY}\", secret_access_key: \"{S3_SECRET_KEY}\"}}\n",
        s3.endpoint
    );
    let peers = Peers::new(&["a", "b", "c"]);
    let a = node_with_cache(&peers, "a", &pg, origin.path(), &cache).await;
    let b = node_with_cache(&peers, "b", &pg, origin.path(), &cache).await;
    let by_url = sign(&format!("/{FIT}/plain/pic.jpg"));
    let by_tenant = sign("/rs:fit:200:200/q:50/plain/pic.jpg");

    // rendered once in the fleet and stored; B's copy comes from the store or the owner
    for p in [&by_url, &by_tenant] {
        a.fill(HOST, p).await;
    }
    let renders = r#"imgedge_renders_total{outcome="ok"}"#;
    // the store is written after the answer: wait (bounded) for both objects
    let stored = || files(&s3.root().join("derived/purge"));
    for _ in 0..250 {
        if stored() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(stored(), 2, "A's renders in the store");
    b.fill(HOST, &by_url).await;
    b.fill(HOST, &by_tenant).await;
    // each rendered once in the fleet: by A, or by B as the key's owner (owner routing)
    let fleet_renders = a.metric(renders).await + b.metric(renders).await;
    assert_eq!(fleet_renders, 2.0, "B served the fleet's renders\n{}", b.log());

    put(origin.path(), "astronaut_512.jpg");
    purge(&a, &format!("tenant=t1&url={by_url}")).await;
    until_size(&b, &by_url, NEW, Duration::from_secs(1)).await;
    purge(&a, "tenant=t1&all=1").await;
    until_size(&b, &by_tenant, NEW, Duration::from_secs(1)).await;

    // a node that never saw either image finds only the new ones, in the store or rendered
    let c = node_with_cache(&peers, "c", &pg, origin.path(), &cache).await;
    assert_eq!(size(&c, &by_url).await.0, NEW);
    assert_eq!(size(&c, &by_tenant).await.0, NEW);
}

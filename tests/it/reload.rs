//! Live config reload (SIGHUP) through the running binary, under load: 20 reloads that add
//! and remove a tenant, rotate a key, add a preset, change a section only an upgrade
//! applies, and one invalid file, while clients keep hitting and missing on another
//! tenant over kept-alive connections. Not one of their requests fails, each reload's
//! effect is there as soon as it is applied, and the ledger counts every request.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgedge::signature::{self, KeyPair};
use imgedge::usage::spool::Spool;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::harness::{config_text_with, images_dir, sign, HttpOrigin, Imgedge, DEFAULT_CACHE, KEY, SALT};

/// The pair tenant `a` rotates (the load signs with the harness pair, which stays).
const ROTATING: [(&str, &str); 2] = [
    ("a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1", "b1b1b1b1b1b1b1b1"),
    ("a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2a2", "b2b2b2b2b2b2b2b2"),
];

fn sign_with(pair: (&str, &str), path: &str) -> String {
    let pair = KeyPair { key: hex::decode(pair.0).unwrap(), salt: hex::decode(pair.1).unwrap() };
    format!("/{}{}", signature::sign(&pair, path, 32), path)
}

/// What the config file says, step by step.
#[derive(Clone, Copy, Debug)]
struct State {
    b: bool,
    /// Index into [`ROTATING`].
    rot: usize,
    preset: bool,
    /// `cache.memory` changed: a section a reload does not apply.
    bigger_cache: bool,
    /// An invalid file (tenant `c` added, tenant `a` with quality 0).
    invalid: bool,
}

fn tenants(origin: &HttpOrigin, st: State) -> String {
    let (rk, rs) = ROTATING[st.rot];
    let mut t = format!(
        r#"  - id: a
    hosts: [a.test]
    keys: [{{key: "{rk}", salt: "{rs}"}}, {{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      local: {{type: local, root: "{}"}}
    billing: {{per_tenant_metrics: true}}
"#,
        images_dir().display()
    );
    if st.preset {
        t.push_str("    presets:\n      tiny: \"rs:fill:24:24\"\n");
    }
    if st.invalid {
        t.push_str("    quality: 0\n");
        t.push_str(&format!(
            "  - id: c\n    hosts: [c.test]\n    allow_unsigned: true\n    origins:\n      local: {{type: local, root: \"{}\"}}\n",
            images_dir().display()
        ));
    }
    if st.b {
        t.push_str(&format!(
            r#"  - id: b
    hosts: [b.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      web: {{type: http, base_url: "http://{}/", allow_private: true}}
"#,
            origin.addr
        ));
    }
    t
}

/// Usage flushed often; unverified requests (the removed key pair's, the removed tenant's)
/// are what this test makes on purpose, so their per-address limit is off.
const USAGE: &str = "usage:\n  flush_interval: 200ms\nlimits:\n  unverified_rate_per_address: 0\n";

fn cache(st: State) -> &'static str {
    if st.bigger_cache {
        "  memory: 96MiB\n  max_object: 16MiB\n"
    } else {
        DEFAULT_CACHE
    }
}

/// The whole file for `st`, on the running server's ports and directory.
fn yaml(s: &Imgedge, origin: &HttpOrigin, st: State) -> String {
    config_text_with(s.dir.path(), s.edge.port(), s.ops.port(), &tenants(origin, st), cache(st), USAGE)
}

/// Requests that did not get what they should, with what they got.
type Failures = Arc<Mutex<Vec<String>>>;

/// One kept-alive connection asking for `path` on `a.test` until `stop`; every answer must
/// be a 200, and the connection must never be closed by the server.
async fn keepalive_loop(edge: std::net::SocketAddr, path: String, stop: Arc<AtomicBool>, failures: Failures) -> u64 {
    let stream = TcpStream::connect(edge).await.unwrap();
    let mut conn = BufReader::new(stream);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        let req = format!("GET {path} HTTP/1.1\r\nHost: a.test\r\n\r\n");
        conn.get_mut().write_all(req.as_bytes()).await.unwrap();
        let mut status = String::new();
        if conn.read_line(&mut status).await.unwrap_or(0) == 0 {
            failures.lock().unwrap().push(format!("keep-alive connection closed after {n} requests"));
            return n;
        }
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line).await.unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap();
                }
            }
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).await.unwrap();
        n += 1;
        if !status.starts_with("HTTP/1.1 200") {
            failures.lock().unwrap().push(format!("keep-alive {path}: {}", status.trim()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    n
}

/// Hits and misses on `a.test` through a pooled client until `stop`: a miss (a new
/// width) every fourth request.
async fn client_loop(
    s_edge: std::net::SocketAddr,
    task: u32,
    hit: String,
    stop: Arc<AtomicBool>,
    failures: Failures,
) -> u64 {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let path = if n % 4 == 3 {
            sign(&format!("/w:{}/plain/coffee_600x400.jpg", 100 + task * 1000 + n as u32))
        } else {
            hit.clone()
        };
        let r = client.get(format!("http://{s_edge}{path}")).header("host", "a.test").send().await;
        n += 1;
        match r {
            Ok(r) if r.status() == 200 => {
                let _ = r.bytes().await;
            }
            Ok(r) => failures.lock().unwrap().push(format!("{path}: {}", r.status())),
            Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
        }
        // load, not a benchmark: the machine is shared
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    n
}

/// A GET on a new connection (so the edge may place it on any thread).
async fn fresh_get(s: &Imgedge, host: &str, path: &str) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let r = client.get(format!("http://{}{path}", s.edge)).header("host", host).send().await.unwrap();
    let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (r.status().as_u16(), cache)
}

async fn wait_metric(s: &Imgedge, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v = s.metric(series).await;
        if v == want {
            return;
        }
        assert!(Instant::now() < deadline, "{series} = {v}, want {want}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn hup(s: &Imgedge) {
    assert!(std::process::Command::new("kill").args(["-HUP", &s.pid().to_string()]).status().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_reloads_under_load_fail_no_request() {
    let origin = HttpOrigin::start(images_dir()).await;
    let mut st = State { b: false, rot: 0, preset: false, bigger_cache: false, invalid: false };
    let mut s = Imgedge::start_with(&tenants(&origin, st), cache(st), USAGE).await;
    // the signal handlers are in place once the running config's time is reported
    let loaded = "imgedge_config_last_reload_success_timestamp_seconds";
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metric(loaded).await == 0.0 {
        assert!(Instant::now() < deadline, "no {loaded}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (mut applied, mut rejected) = (0.0, 0.0);
    // requests made to each tenant while it existed, for the ledger at the end
    let counted = [("a", AtomicU64::new(0)), ("b", AtomicU64::new(0))];
    let count = |t: &str| counted.iter().find(|(id, _)| *id == t).unwrap().1.fetch_add(1, Ordering::Relaxed);

    let hit = sign("/w:90/plain/coffee_600x400.jpg");
    assert_eq!(fresh_get(&s, "a.test", &hit).await.0, 200);
    count("a");
    let (stop, failures): (Arc<AtomicBool>, Failures) = Default::default();
    let mut load = Vec::new();
    load.push(tokio::spawn(keepalive_loop(s.edge, hit.clone(), stop.clone(), failures.clone())));
    for task in 0..2 {
        load.push(tokio::spawn(client_loop(s.edge, task, hit.clone(), stop.clone(), failures.clone())));
    }

    let b_url = sign("/w:50/plain/coffee_600x400.jpg");
    let tiny = sign("/pr:tiny/plain/coffee_600x400.jpg");
    let rot_path = "/w:40/plain/coffee_600x400.jpg";
    for i in 0..20 {
        let before = st;
        match i % 5 {
            0 => st.b = true,
            1 => st.rot = 1 - st.rot,
            2 => st.b = false,
            3 => st.invalid = true,
            _ => {
                st.preset = !st.preset;
                st.bigger_cache = !st.bigger_cache;
            }
        }
        // the URL signed with the pair about to go, admitted (and kept by the hit path's
        // memo on each edge thread) before the reload
        let old_rot = sign_with(ROTATING[before.rot], rot_path);
        if i % 5 == 1 {
            for _ in 0..4 {
                assert_eq!(fresh_get(&s, "a.test", &old_rot).await.0, 200);
                count("a");
            }
            // cached before the reload (its write can land just after an answer), so the
            // new pair's first request below is a hit
            for _ in 0..40 {
                let (status, cache) = fresh_get(&s, "a.test", &old_rot).await;
                assert_eq!(status, 200);
                count("a");
                if cache == "HIT" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        if i % 5 == 2 {
            for _ in 0..4 {
                assert_eq!(fresh_get(&s, "b.test", &b_url).await.0, 200, "b before its removal");
                count("b");
            }
        }
        std::fs::write(&s.config, yaml(&s, &origin, st)).unwrap();
        hup(&s);
        if st.invalid {
            rejected += 1.0;
            wait_metric(&s, r#"imgedge_config_reloads_total{result="rejected"}"#, rejected).await;
            assert_eq!(s.metric("imgedge_config_last_reload_successful").await, 0.0);
            assert!(s.log().contains("tenants[0].quality (tenant \"a\")"), "the problem is logged:\n{}", s.log());
            assert_eq!(fresh_get(&s, "c.test", &hit).await.0, 404, "nothing of a refused file applies");
            // the running config (before) stays
            st = before;
            continue;
        }
        applied += 1.0;
        wait_metric(&s, r#"imgedge_config_reloads_total{result="applied"}"#, applied).await;
        assert_eq!(s.metric("imgedge_config_last_reload_successful").await, 1.0);
        match i % 5 {
            0 => {
                // served at once, through its new origin
                let (status, cache) = fresh_get(&s, "b.test", &b_url).await;
                assert_eq!((status, cache.as_str()), (200, if i == 0 { "MISS" } else { "HIT" }), "b added");
                count("b");
            }
            1 => {
                for _ in 0..6 {
                    // a signature that no longer verifies: not the tenant's, not counted
                    assert_eq!(fresh_get(&s, "a.test", &old_rot).await.0, 403, "the removed pair");
                }
                let new_rot = sign_with(ROTATING[st.rot], rot_path);
                assert_eq!(fresh_get(&s, "a.test", &new_rot).await, (200, "HIT".to_owned()), "the new pair");
                count("a");
            }
            2 => {
                for _ in 0..6 {
                    assert_eq!(fresh_get(&s, "b.test", &b_url).await.0, 404, "b removed");
                }
            }
            _ => {
                let want = if st.preset { 200 } else { 400 };
                assert_eq!(fresh_get(&s, "a.test", &tiny).await.0, want, "preset {}", st.preset);
                count("a");
                let upgrade = r#"imgedge_config_needs_upgrade{section="cache"}"#;
                assert_eq!(s.metric(upgrade).await, if st.bigger_cache { 1.0 } else { 0.0 });
                assert_eq!(s.metric(r#"imgedge_config_needs_upgrade{section="listen"}"#).await, 0.0);
            }
        }
    }
    assert_eq!((applied, rejected), (16.0, 4.0), "20 reloads");

    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for t in load {
        let n = t.await.unwrap();
        assert!(n > 0, "every load task made requests");
        total += n;
    }
    counted[0].1.fetch_add(total, Ordering::Relaxed);
    assert!(total > 100, "{total} load requests across the reloads");
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{} of {total} load requests failed: {failures:?}", failures.len());
    // the memory cache survived every reload: the load's hit was never rendered again
    let (status, cache) = fresh_get(&s, "a.test", &hit).await;
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    count("a");

    // every request of a tenant, b's after its removal too, reaches the ledger
    s.stop();
    let spool = Spool::open_existing(&s.dir.path().join("imgedge-usage.db")).unwrap();
    let totals: std::collections::BTreeMap<_, _> =
        spool.totals(None, None).unwrap().into_iter().map(|t| (t.tenant.clone(), t.requests)).collect();
    for (id, n) in &counted {
        assert_eq!(totals.get(*id).copied(), Some(n.load(Ordering::Relaxed)), "{id}: {totals:?}");
    }
}

/// The successor started by `SIGUSR2`, stopped when the test ends.
struct Successor(u32);

impl Drop for Successor {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-TERM", &self.0.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Path::new(&format!("/proc/{}", self.0)).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `text` without terminal colour sequences (`ESC [ … m`).
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The pid of the process the log says the upgrade started.
fn successor_pid(log: &str) -> Option<u32> {
    let log = plain(log);
    let line = log.lines().find(|l| l.contains("upgrade started"))?;
    line.split("pid=").nth(1)?.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_upgrades_in_place_refusing_a_config_the_new_binary_rejects() {
    let origin = HttpOrigin::start(images_dir()).await;
    let web = format!(
        "  - id: web\n    hosts: [web.test]\n    keys: [{{key: \"{KEY}\", salt: \"{SALT}\"}}]\n    origins:\n      \
         site: {{type: http, base_url: \"http://{}/\", allow_private: true}}\n",
        origin.addr
    );
    let tenants = crate::harness::local_tenant() + &web;
    let mut s = Imgedge::start_with(&tenants, DEFAULT_CACHE, "").await;
    let loaded = "imgedge_config_last_reload_success_timestamp_seconds";
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.metric(loaded).await == 0.0 {
        assert!(Instant::now() < deadline, "no {loaded}\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hit = sign("/w:64/plain/coffee_600x400.jpg");
    assert_eq!(s.get("img.test", &hit).await.status(), 200);
    let usr2 = |pid: u32| {
        assert!(std::process::Command::new("kill").args(["-USR2", &pid.to_string()]).status().unwrap().success());
    };

    // a file the new process would refuse: no upgrade, the old process keeps serving
    let good = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(&s.config, good.replace("id: t1", "id: t1\n    quality: 0")).unwrap();
    usr2(s.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.log().contains("upgrade refused") {
        assert!(Instant::now() < deadline, "no refusal logged\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.log().contains("tenants[0].quality"), "the new binary's problems are logged\n{}", s.log());
    assert_eq!(s.get("img.test", &hit).await.status(), 200);
    assert!(!s.wait_exit(Duration::from_millis(500)), "the old process stays");
    std::fs::write(&s.config, good).unwrap();

    // a request in flight across the handover, and fresh connections all along
    let slow = {
        let (edge, path) = (s.edge, sign("/w:64/plain/slow/coffee_600x400.jpg"));
        tokio::spawn(async move {
            let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
            client.get(format!("http://{edge}{path}")).header("host", "web.test").send().await.map(|r| r.status())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let old = s.pid();
    usr2(old);
    let mut successor = None;
    let mut failures = Vec::new();
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    // until the old process has drained and exited
    while !s.wait_exit(Duration::from_millis(25)) {
        assert!(Instant::now() < deadline, "the old process did not exit\n{}", s.log());
        if successor.is_none() {
            successor = successor_pid(&s.log()).map(Successor);
        }
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
        let r = client.get(format!("http://{}{hit}", s.edge)).header("host", "img.test").header("connection", "close");
        match r.send().await {
            Ok(r) if r.status() == 200 => answered += 1,
            Ok(r) => failures.push(r.status().to_string()),
            Err(e) => failures.push(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let successor = successor.or_else(|| successor_pid(&s.log()).map(Successor)).expect("the upgrade logs its pid");
    assert_ne!(successor.0, old);
    assert!(
        failures.is_empty(),
        "{} of {} requests during the upgrade failed: {failures:?}",
        failures.len(),
        answered + failures.len()
    );
    assert!(answered > 10, "{answered} requests during the handover");
    assert_eq!(slow.await.unwrap().unwrap(), 200, "the request in flight finished");
    // the successor serves both listeners (new connections: the old ones were closed)
    assert!(Path::new(&format!("/proc/{}", successor.0)).exists());
    assert_eq!(fresh_get(&s, "img.test", &hit).await.0, 200);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(client.get(format!("http://{}/readyz", s.ops)).send().await.unwrap().status(), 200);
}

//! What operators and customers see of the traffic: the request log (one JSON line per
//! request, on both the hit path and pingora's, sampled and truncated per tenant, reopened
//! on SIGUSR1) and the usage API (a tenant's own token reads its own usage only, exactly
//! what `imgedge usage --json` prints).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{bin, images_dir, local_tenant_at, sign, Imgedge, DEFAULT_CACHE};

const ADMIN: &str = "admin-token-0123456789";
const TOKEN_T1: &str = "t1-read-token-0123456789";
const TOKEN_T2: &str = "t2-read-token-0123456789";

fn sha256_hex(token: &str) -> String {
    let out = Command::new(bin())
        .arg("hash-token")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(format!("{token}\n").as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Two tenants on the test images: `t1` (`img.test`) logs no hits and truncates client
/// addresses to /24; `t2` (`two.test`) logs everything. Each has a usage read token.
fn tenants() -> String {
    let root = images_dir();
    let t1 = local_tenant_at("t1", "img.test", &root)
        + &format!(
            "    log: {{hit_sample: 0, ipv4_prefix: 24}}\n    usage_token_sha256: \"{}\"\n",
            sha256_hex(TOKEN_T1)
        );
    let t2 =
        local_tenant_at("t2", "two.test", &root) + &format!("    usage_token_sha256: \"{}\"\n", sha256_hex(TOKEN_T2));
    t1 + &t2
}

fn extra(log: &Path) -> String {
    format!(
        "admin:\n  token: \"{ADMIN}\"\nusage:\n  flush_interval: 100ms\nlog:\n  requests:\n    path: \"{}\"\n    node: edge-7\n",
        log.display()
    )
}

/// The log's lines once it has at least `n` (bounded wait: lines are written off the
/// request path).
/// GETs `path` until it is a hit; how many answers before it were not.
async fn fill(s: &Imgedge, host: &str, path: &str) -> usize {
    for i in 0..40 {
        let r = s.get(host, path).await;
        assert_eq!(r.status(), 200);
        let hit = r.headers()["x-cache"] == "HIT";
        r.bytes().await.unwrap();
        if hit {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} never became a hit");
}

async fn lines(path: &Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        if lines.len() >= n || Instant::now() > deadline {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn request_log_has_one_line_per_request_on_both_paths() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.log");
    let s = Imgedge::start_with(&tenants(), DEFAULT_CACHE, &extra(&log)).await;
    let url = sign("/w:120/plain/coffee_600x400.jpg@webp");
    let refer = [("origin", "https://shop.example:8443"), ("referer", "https://blog.example/a?b=c")];

    // t2: a miss through pingora, then hits on the hit path (the cache write of a miss can
    // land just after its answer: count what the client got)
    let t2_misses = fill(&s, "two.test", &url).await;
    let r = s.request(reqwest::Method::GET, "two.test", &url, &refer).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    let body = r.bytes().await.unwrap();
    // t1: misses (logged), hits (hit_sample 0: not logged), a bad signature (logged)
    let t1_misses = fill(&s, "img.test", &url).await;
    for _ in 0..5 {
        assert_eq!(s.get("img.test", &url).await.status(), 200);
    }
    let bad = "/AAAA/w:120/plain/coffee_600x400.jpg";
    assert_eq!(s.request(reqwest::Method::GET, "img.test", bad, &refer).await.status(), 403);
    assert_eq!(s.get("nobody.test", &url).await.status(), 404);

    let t2_requests = t2_misses + 2;
    let all = lines(&log, t2_requests + t1_misses + 2).await;
    let of = |tenant: Option<&str>| -> Vec<&serde_json::Value> {
        all.iter().filter(|l| l["tenant"].as_str() == tenant).collect()
    };
    let (t1, t2, none) = (of(Some("t1")), of(Some("t2")), of(None));
    assert_eq!(t2.len(), t2_requests, "one line per request\n{all:?}");
    assert_eq!(t1.len(), t1_misses + 1, "t1's hits are not logged\n{all:?}");

    // t2 logs every request, hits included; the last one is the hit with calling sites
    assert!(t2.iter().any(|l| l["cache"] == "miss"), "{t2:?}");
    let hit = t2.last().unwrap();
    assert_eq!(hit["cache"], "hit");
    assert_eq!(hit["status"], 200);
    assert_eq!(hit["operation"], "transform");
    assert_eq!(hit["bytes"], body.len());
    assert_eq!(hit["content_type"], "image/webp");
    assert_eq!(hit["request"], "/f:webp/w:120/plain/local:coffee_600x400.jpg");
    assert_eq!(hit["origin"], "shop.example");
    assert_eq!(hit["referer"], "blog.example");
    assert_eq!(hit["client"], "127.0.0.1");
    assert_eq!(hit["node"], "edge-7");
    assert_eq!(hit["render_ms"], serde_json::Value::Null, "a hit did not render");
    assert!(hit["total_ms"].as_f64().unwrap() >= 0.0);
    assert!(hit["time"].as_str().unwrap().ends_with('Z'));

    // t1: misses and the rejection, never a hit; addresses cut to /24
    assert!(t1.iter().all(|l| l["cache"] != "hit"), "{t1:?}");
    let miss = t1.iter().find(|l| l["cache"] == "miss").unwrap();
    assert_eq!(miss["client"], "127.0.0.0/24");
    assert!(miss["render_ms"].as_f64().unwrap() > 0.0, "{miss}");
    assert!(miss["origin_ms"].as_f64().unwrap() >= 0.0, "{miss}");
    assert!(miss["render_ms"].as_f64().unwrap() <= miss["total_ms"].as_f64().unwrap());
    let rejected = t1.iter().find(|l| l["status"] == 403).unwrap();
    assert_eq!(rejected["operation"], "none");
    assert_eq!(rejected["request"], serde_json::Value::Null, "never the URL with its signature");
    assert_eq!(rejected["origin"], "shop.example");
    assert_eq!(none.len(), 1, "the unknown host");
    assert_eq!(none[0]["status"], 404);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(url.split('/').nth(1).unwrap()), "no signature in the log");

    // SIGUSR1 reopens the file: logrotate moves it away, new lines go to a new file
    let moved = dir.path().join("requests.log.1");
    std::fs::rename(&log, &moved).unwrap();
    assert!(Command::new("kill").args(["-USR1", &s.pid().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !log.exists() {
        assert!(Instant::now() < deadline, "not reopened\n{}", s.log());
        assert_eq!(s.get("two.test", &url).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(s.get("two.test", &url).await.status(), 200);
    assert!(!lines(&log, 1).await.is_empty());
    assert_eq!(s.metric("imgedge_request_log_dropped_total").await, 0.0);
}

#[tokio::test]
async fn request_log_drops_and_counts_lines_past_its_queue() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("requests.log");
    // one line may wait for the writer: two requests between its batches drop one
    let extra = format!("log:\n  requests:\n    path: \"{}\"\n    queue: 1\n", log.display());
    let s = Imgedge::start_with(&tenants(), DEFAULT_CACHE, &extra).await;
    let mut sent = 0;
    for _ in 0..20 {
        // unknown hosts: answered at once, always logged
        let burst = (0..32).map(|_| s.get("nobody.test", "/x"));
        for r in futures::future::join_all(burst).await {
            assert_eq!(r.status(), 404);
            sent += 1;
        }
        if s.metric("imgedge_request_log_dropped_total").await > 0.0 {
            break;
        }
    }
    assert!(s.metric("imgedge_request_log_dropped_total").await > 0.0, "no line dropped in {sent} requests");
    // every request is either a line or a drop, never both, never neither (a request is
    // logged just after its answer: poll until all are)
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let dropped = s.metric("imgedge_request_log_dropped_total").await as usize;
        let written = lines(&log, 0).await;
        assert!(written.len() + dropped <= sent, "{} lines and {dropped} drops for {sent} requests", written.len());
        if written.len() + dropped == sent {
            assert!(written.iter().all(|l| l["status"] == 404 && l["tenant"].is_null()), "{written:?}");
            break;
        }
        assert!(Instant::now() < deadline, "{} lines and {dropped} drops for {sent} requests", written.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn usage_api(s: &Imgedge, query: &str, token: Option<&str>) -> (u16, String) {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut req = client.get(format!("http://{}/usage?{query}", s.ops));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn cli(s: &Imgedge, args: &[&str]) -> String {
    let out = Command::new(bin()).arg("usage").args(args).arg("-c").arg(&s.config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn usage_api_gives_each_tenant_its_own_usage_only() {
    let dir = tempfile::tempdir().unwrap();
    let s = Imgedge::start_with(&tenants(), DEFAULT_CACHE, &extra(&dir.path().join("r.log"))).await;
    let url = sign("/w:90/plain/coffee_600x400.jpg");
    for _ in 0..3 {
        assert_eq!(
            s.request(reqwest::Method::GET, "img.test", &url, &[("referer", "https://a.example/")]).await.status(),
            200
        );
    }
    assert_eq!(s.get("two.test", &url).await.status(), 200);
    // wait until both tenants' requests are in the ledger
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, body) = usage_api(&s, "", Some(ADMIN)).await;
        assert_eq!(code, 200, "{body}");
        let j: serde_json::Value = serde_json::from_str(&body).unwrap();
        let requests: u64 = j["rows"].as_array().unwrap().iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        if requests == 4 {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // each tenant's token reads exactly what the CLI prints for it
    let (code, body) = usage_api(&s, "tenant=t1", Some(TOKEN_T1)).await;
    assert_eq!((code, body.as_str()), (200, cli(&s, &["--json", "--tenant", "t1"]).as_str()));
    let j: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(j["rows"][0]["requests"], 3);
    assert_eq!(j["rows"][0]["telemetry"]["sites"]["a.example"], 3);
    let month = j["rows"][0]["month"].as_str().unwrap().to_owned();
    let (code, body) = usage_api(&s, &format!("tenant=t2&month={month}"), Some(TOKEN_T2)).await;
    assert_eq!((code, body.as_str()), (200, cli(&s, &["--json", "--tenant", "t2", "--month", &month]).as_str()));
    // the admin token reads any tenant
    let (code, body) = usage_api(&s, "tenant=t2", Some(ADMIN)).await;
    assert_eq!((code, body.as_str()), (200, cli(&s, &["--json", "--tenant", "t2"]).as_str()));

    // never another tenant's: its token, a wrong one, none, an unknown tenant, all tenants
    for (query, token) in [
        ("tenant=t2", Some(TOKEN_T1)),
        ("tenant=t1", Some(TOKEN_T2)),
        ("tenant=t1", Some("t1-read-token-012345678")),
        ("tenant=t1", Some("")),
        ("tenant=t1", None),
        ("tenant=t3", Some(TOKEN_T1)),
        ("", Some(TOKEN_T1)),
        ("tenant=T1", Some(TOKEN_T1)),
    ] {
        let (code, body) = usage_api(&s, query, token).await;
        assert_eq!(code, 401, "{query} {token:?}: {body}");
        assert!(!body.contains("requests"), "{body}");
    }
    let (code, _) = usage_api(&s, "tenant=t1&month=2026-13", Some(TOKEN_T1)).await;
    assert_eq!(code, 400);
}

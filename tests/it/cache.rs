//! The production cache through the running server: restarts, budgets, HTTP caching
//! semantics, stale-if-error, purge and tenant isolation.

use std::time::Duration;

use crate::harness::{images_dir, local_tenant, local_tenant_at, sign, HttpOrigin, Imgedge, KEY, SALT};

const HOST: &str = "img.test";
const TOKEN: &str = "test-admin-token-0123456789";

fn disk_cache(size: &str) -> String {
    format!("  memory: 8MiB\n  max_object: 3MiB\n  disk: {{path: cache, size: {size}, block_size: 4MiB}}\n")
}

fn admin() -> String {
    format!("admin:\n  token: \"{TOKEN}\"\n")
}

/// Total allocated bytes under `dir` (what the disk budget limits).
fn disk_usage(dir: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                stack.push(e.path());
            } else {
                total += m.blocks() * 512;
            }
        }
    }
    total
}

#[tokio::test]
async fn entries_survive_a_restart_byte_for_byte() {
    let mut s = Imgedge::start_with(&local_tenant(), &disk_cache("64MiB"), "").await;
    let paths: Vec<String> =
        (0..6).map(|i| sign(&format!("/rs:fit:{}:0/plain/coffee_600x400.jpg@webp", 100 + i * 10))).collect();
    let mut before = Vec::new();
    for p in &paths {
        let r = s.get(HOST, p).await;
        assert_eq!(r.headers()["x-cache"], "MISS");
        before.push(r.bytes().await.unwrap());
    }
    s.restart().await;
    for (p, want) in paths.iter().zip(&before) {
        let r = s.get(HOST, p).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-cache"], "HIT", "{p} after restart\n{}", s.log());
        assert_eq!(&r.bytes().await.unwrap(), want);
    }
}

#[tokio::test]
async fn disk_usage_stays_within_budget() {
    let s = Imgedge::start_with(&local_tenant(), &disk_cache("16MiB"), "").await;
    // ~1.5 MB per PNG; 45 distinct renders write about 4× the 16 MiB budget
    let mut written = 0;
    for i in 0..45 {
        let r = s.get(HOST, &sign(&format!("/rs:force:{}:1000:1/plain/coffee_600x400.jpg@png", 1000 + i))).await;
        assert_eq!(r.status(), 200);
        written += r.bytes().await.unwrap().len();
    }
    assert!(written > 3 * (16 << 20), "wrote only {written} bytes");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let used = disk_usage(&s.dir.path().join("cache"));
    assert!(used <= (16 << 20) + (1 << 20), "disk tier uses {used} bytes for a 16 MiB budget");
    // the newest entries are still served from the cache
    let r = s.get(HOST, &sign("/rs:force:1044:1000:1/plain/coffee_600x400.jpg@png")).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
}

#[tokio::test]
async fn conditional_head_and_range_requests() {
    let s = Imgedge::start_with(&local_tenant(), &disk_cache("32MiB"), &admin()).await;
    let path = sign("/w:200/plain/coffee_600x400.jpg");
    let first = s.get(HOST, &path).await;
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body = first.bytes().await.unwrap();

    // 304 on a hit
    let r = s.request(reqwest::Method::GET, HOST, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
    // a different validator gets the image
    let r = s.request(reqwest::Method::GET, HOST, &path, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status(), 200);

    // HEAD on a hit: headers, no body
    let r = s.request(reqwest::Method::HEAD, HOST, &path, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"].to_str().unwrap(), body.len().to_string());
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // Range on a cached object
    let r = s.request(reqwest::Method::GET, HOST, &path, &[("range", "bytes=10-109")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"].to_str().unwrap(), format!("bytes 10-109/{}", body.len()));
    assert_eq!(r.bytes().await.unwrap(), body.slice(10..110));
    let r = s.request(reqwest::Method::GET, HOST, &path, &[("range", "bytes=999999-")]).await;
    assert_eq!(r.status(), 416);

    // 304 on a miss too: the validator is stable across renders
    let purge = reqwest::Client::new()
        .post(format!("http://{}/purge?tenant=t1&url={}", s.ops, path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    let r = s.request(reqwest::Method::GET, HOST, &path, &[("if-none-match", &etag)]).await;
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert_eq!(r.status(), 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_expired_copy_when_the_origin_is_down() {
    let origin = HttpOrigin::start(images_dir()).await;
    let tenant = |id: &str, host: &str, sie: &str| {
        format!(
            r#"  - id: {id}
    hosts: [{host}]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "http://{}/", allow_private: true}}
    cache: {{ttl: 1s, stale_if_error: {sie}}}
"#,
            origin.addr
        )
    };
    let tenants = format!("{}{}", tenant("sie", "sie.test", "1h"), tenant("nosie", "nosie.test", "0s"));
    let s = Imgedge::start(&tenants).await;
    let path = sign("/w:100/plain/coffee_600x400.jpg");
    let fresh = s.get("sie.test", &path).await;
    assert!(fresh.headers()["cache-control"].to_str().unwrap().contains("stale-if-error=3600"));
    let fresh = fresh.bytes().await.unwrap();
    assert_eq!(s.get("nosie.test", &path).await.status(), 200);
    drop(origin);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let r = s.get("sie.test", &path).await;
    assert_eq!(r.status(), 200, "stale copy served");
    assert_eq!(r.headers()["x-cache"], "STALE");
    assert_eq!(r.bytes().await.unwrap(), fresh);
    let r = s.get("nosie.test", &path).await;
    assert_eq!(r.status(), 502, "no stale-if-error window: the error shows");
}

#[tokio::test]
async fn purge_by_url_and_by_tenant() {
    let s = Imgedge::start_with(&local_tenant(), &disk_cache("32MiB"), &admin()).await;
    let a = sign("/w:120/plain/coffee_600x400.jpg@webp");
    let b = sign("/w:130/plain/astronaut_512.jpg");
    for p in [&a, &b] {
        s.fill(HOST, p).await;
    }
    let client = reqwest::Client::new();
    let purge = |q: String, token: &'static str| {
        let req = client.post(format!("http://{}/purge?{q}", s.ops)).bearer_auth(token);
        async move { req.send().await.unwrap() }
    };
    assert_eq!(purge(format!("tenant=t1&url={a}"), "wrong-token-wrong-token").await.status(), 401);
    assert_eq!(s.get(HOST, &a).await.headers()["x-cache"], "HIT", "unauthorized purge did nothing");

    // by URL (any spelling of it): only that entry
    let r = purge(format!("tenant=t1&url=http://img.test{}", a.replace("w:120", "width:120")), TOKEN).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(s.get(HOST, &a).await.headers()["x-cache"], "MISS");
    assert_eq!(s.get(HOST, &b).await.headers()["x-cache"], "HIT");

    // by tenant: everything
    let r = purge("tenant=t1&all=1".into(), TOKEN).await;
    assert_eq!(r.status(), 200);
    assert_eq!(s.get(HOST, &a).await.headers()["x-cache"], "MISS");
    assert_eq!(s.get(HOST, &b).await.headers()["x-cache"], "MISS");
    // filled again by that miss
    s.fill(HOST, &b).await;
}

#[tokio::test]
async fn tenants_never_share_entries() {
    let other = local_tenant_at("t2", "other.test", &images_dir());
    let s = Imgedge::start(&format!("{}{other}", local_tenant())).await;
    // same key material, same path, same canonical request: still two entries
    let path = sign("/w:111/plain/coffee_600x400.jpg");
    assert_eq!(s.get(HOST, &path).await.headers()["x-cache"], "MISS");
    s.fill(HOST, &path).await;
    assert_eq!(s.get("other.test", &path).await.headers()["x-cache"], "MISS");
    s.fill("other.test", &path).await;
}

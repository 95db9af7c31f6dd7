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

/// GETs `path` with `accept` until it is a hit (bounded), as `Imgedge::fill` does.
async fn fill_accepting(s: &Imgedge, path: &str, accept: &str) {
    for _ in 0..40 {
        let r = s.request(reqwest::Method::GET, HOST, path, &[("accept", accept)]).await;
        let hit = r.headers().get("x-cache").is_some_and(|v| v == "HIT");
        r.bytes().await.unwrap();
        if hit {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{path} ({accept}) never became a hit\n{}", s.log());
}

async fn purge(s: &Imgedge, query: &str) -> serde_json::Value {
    let r =
        reqwest::Client::new().post(format!("http://{}/purge?{query}", s.ops)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200, "{query}");
    serde_json::from_slice(&r.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn purge_by_url_removes_every_negotiated_variant() {
    let tenant = local_tenant() + "    transform: {negotiate: [avif, webp]}\n";
    let s = Imgedge::start_with(&tenant, &disk_cache("32MiB"), &admin()).await;
    let path = sign("/w:90/plain/coffee_600x400.jpg");
    // what browsers get: AVIF, WebP, and the source's format for the others
    let accepts = ["image/avif,image/webp,*/*", "image/webp,*/*", "*/*"];
    for accept in accepts {
        fill_accepting(&s, &path, accept).await;
    }
    let purged = purge(&s, &format!("tenant=t1&url={path}")).await;
    assert_eq!(purged["purged"], 3, "{purged}");
    for accept in accepts {
        let r = s.request(reqwest::Method::GET, HOST, &path, &[("accept", accept)]).await;
        assert_eq!(r.headers()["x-cache"], "MISS", "{accept} after the purge");
    }
}

#[tokio::test]
async fn purge_by_source_hides_every_transform_of_it_across_a_restart() {
    let mut s = Imgedge::start_with(&local_tenant(), &disk_cache("32MiB"), &admin()).await;
    let coffee = [sign("/w:140/plain/coffee_600x400.jpg"), sign("/rs:fill:60:60/plain/coffee_600x400.jpg@webp")];
    let other = sign("/w:140/plain/astronaut_512.jpg");
    for p in coffee.iter().chain([&other]) {
        s.fill(HOST, p).await;
    }
    // the source as a URL names it: the default origin's key, or `origin:key`
    let r = purge(&s, "tenant=t1&source=coffee_600x400.jpg").await;
    assert_eq!((r["source"].as_str(), r["generation"].as_u64()), (Some("local:coffee_600x400.jpg"), Some(1)), "{r}");
    s.restart().await;
    for p in &coffee {
        assert_eq!(s.get(HOST, p).await.headers()["x-cache"], "MISS", "{p}: purged, and the purge was kept");
    }
    assert_eq!(s.get(HOST, &other).await.headers()["x-cache"], "HIT", "another source stays");
    // a second purge of the same source by its explicit origin
    s.fill(HOST, &coffee[0]).await;
    let r = purge(&s, "tenant=t1&source=local:coffee_600x400.jpg").await;
    assert_eq!(r["generation"], 2, "{r}");
    assert_eq!(s.get(HOST, &coffee[0]).await.headers()["x-cache"], "MISS");
}

#[tokio::test]
async fn a_corrupt_generations_file_stops_the_start() {
    let mut s = Imgedge::start_with(&local_tenant(), &disk_cache("32MiB"), &admin()).await;
    purge(&s, "tenant=t1&all=1").await;
    s.stop();
    let file = s.dir.path().join("cache/generations.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\"t1\":1"), "{text}");
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    let mut child = std::process::Command::new(crate::harness::bin())
        .arg("-c")
        .arg(&s.config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("started with a corrupt generations file");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains(&file.display().to_string()) && err.contains("corrupt"), "{err}");
}

#[tokio::test]
async fn purge_keeps_plus_in_the_url() {
    let root = tempfile::tempdir().unwrap();
    std::fs::copy(images_dir().join("coffee_600x400.jpg"), root.path().join("a+b.jpg")).unwrap();
    let s = Imgedge::start_with(&local_tenant_at("t1", HOST, root.path()), &disk_cache("32MiB"), &admin()).await;
    let path = sign("/w:60/plain/a+b.jpg");
    s.fill(HOST, &path).await;
    let r = purge(&s, &format!("tenant=t1&url={path}")).await;
    assert_eq!(r["purged"], 1, "`+` is part of the key, not a space: {r}");
    assert_eq!(s.get(HOST, &path).await.headers()["x-cache"], "MISS");
}

/// `/info` + a signed info path (the signature covers what follows `/info/{signature}`).
fn info_path(path: &str) -> String {
    format!("/info{}", sign(path))
}

#[tokio::test]
async fn info_answers_are_purged_by_url_and_by_source() {
    let s = Imgedge::start_with(&local_tenant(), &disk_cache("32MiB"), &admin()).await;
    let coffee = [info_path("/plain/coffee_600x400.jpg"), info_path("/chs:sha256/plain/coffee_600x400.jpg")];
    let transform = sign("/w:150/plain/coffee_600x400.jpg");
    let other = info_path("/plain/astronaut_512.jpg");
    for p in coffee.iter().chain([&transform, &other]) {
        s.fill(HOST, p).await;
    }
    // by URL, in another spelling: that answer only, not the transform of the same source
    let r = purge(&s, &format!("tenant=t1&url=http://img.test{}", coffee[1].replace("chs:", "calc_hashsums:"))).await;
    assert_eq!(r["purged"], 1, "{r}");
    assert!(r["canonical"].as_str().unwrap().starts_with("/info/chs:sha256/"), "{r}");
    assert_eq!(s.get(HOST, &coffee[1]).await.headers()["x-cache"], "MISS");
    assert_eq!(s.get(HOST, &coffee[0]).await.headers()["x-cache"], "HIT");
    assert_eq!(s.get(HOST, &transform).await.headers()["x-cache"], "HIT");
    // a URL that is not in the cache purges nothing; a bad info option is a 400
    s.fill(HOST, &coffee[1]).await;
    assert_eq!(purge(&s, &format!("tenant=t1&url={}", info_path("/a:1/plain/coffee_600x400.jpg"))).await["purged"], 0);
    let r = reqwest::Client::new()
        .post(format!("http://{}/purge?tenant=t1&url={}", s.ops, info_path("/w:1/plain/coffee_600x400.jpg")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // by source: the info answers and the transforms of it, not another source's
    purge(&s, "tenant=t1&source=coffee_600x400.jpg").await;
    for p in coffee.iter().chain([&transform]) {
        assert_eq!(s.get(HOST, p).await.headers()["x-cache"], "MISS", "{p}");
    }
    assert_eq!(s.get(HOST, &other).await.headers()["x-cache"], "HIT");
}

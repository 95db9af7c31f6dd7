//! A tenant's fallback image (`fallback:`) through the running server and a real HTTP
//! origin with fault modes: it replaces a missing source (404), a failing or stalled
//! origin (500, no answer) and an unreadable file, transformed as asked; it is never
//! cached long, the real image comes back after its short lifetime, and it is counted as
//! an error, not a transform.

use std::time::{Duration, Instant};

use imgedge::usage::spool::Spool;

use crate::harness::{dims, hostile_dir, images_dir, sign, HttpOrigin, Imgedge, DEFAULT_CACHE, KEY, SALT};

/// An origin directory with the fallback image, one good image and two unreadable files.
fn origin_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(images_dir().join("chelsea_451x300.png"), d.path().join("fallback.png")).unwrap();
    std::fs::copy(images_dir().join("coffee_600x400.jpg"), d.path().join("coffee.jpg")).unwrap();
    std::fs::copy(hostile_dir().join("png_bad_crc.png"), d.path().join("corrupt.png")).unwrap();
    std::fs::copy(hostile_dir().join("text_named.jpg"), d.path().join("text.jpg")).unwrap();
    d
}

/// A tenant on `host` over the HTTP origin at `base`, with `fallback` (YAML flow mapping).
fn tenant(id: &str, host: &str, base: &str, fallback: &str) -> String {
    format!(
        r#"  - id: {id}
    hosts: [{host}]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "{base}", allow_private: true}}
    limits:
      origin_timeout: 1s
    fallback: {fallback}
"#
    )
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

/// GETs `path` and returns (status, fallback header present, Cache-Control, body).
async fn get(s: &Imgedge, host: &str, path: &str) -> (u16, bool, String, Vec<u8>) {
    let r = s.get(host, &sign(path)).await;
    let status = r.status().as_u16();
    let fallback = header(&r, "x-imgedge-fallback") == "1";
    let cc = header(&r, "cache-control").to_owned();
    (status, fallback, cc, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_replaces_each_failure_with_its_configured_status() {
    let root = origin_root();
    let origin = HttpOrigin::start(root.path().to_owned()).await;
    let base = format!("http://{}/", origin.addr);
    let tenants = [
        tenant("fb", "fb.test", &base, "{source: fallback.png}"),
        tenant("orig", "orig.test", &base, "{source: fallback.png, status: original, ttl: 5s}"),
        tenant("nf", "nf.test", &base, "{source: fallback.png, on: [not_found], status: 404}"),
        tenant("broken", "broken.test", &base, "{source: gone/fallback.png}"),
    ]
    .concat();
    let s = Imgedge::start(&tenants).await;

    // the fallback file transformed as any source is: the reference for every answer below
    let (status, fb, _, want) = get(&s, "fb.test", "/rs:fit:120:120/plain/fallback.png@webp").await;
    assert_eq!((status, fb), (200, false));
    assert_eq!(dims(&want), (image::ImageFormat::WebP, 120, 80));

    // default: 200 for every failure, the fallback transformed with the request's options,
    // a 60 s lifetime, never the tenant's year or `immutable`
    for src in ["missing.jpg", "fail/coffee.jpg", "stall/coffee.jpg", "corrupt.png", "text.jpg"] {
        let (status, fb, cc, body) = get(&s, "fb.test", &format!("/rs:fit:120:120/plain/{src}@webp")).await;
        assert_eq!((status, fb, cc.as_str()), (200, true, "public, max-age=60"), "{src}");
        assert_eq!(body, want, "{src}: the fallback, transformed as asked");
    }
    // a good source is untouched
    let (status, fb, cc, body) = get(&s, "fb.test", "/rs:fit:120:120/plain/coffee.jpg@webp").await;
    assert_eq!((status, fb), (200, false));
    assert!(cc.contains("immutable"), "{cc}");
    assert_eq!(dims(&body), (image::ImageFormat::WebP, 120, 80));
    assert_ne!(body, want);

    // `original`: the error's status with the fallback image
    for (src, code) in [("missing.jpg", 404), ("fail/coffee.jpg", 502), ("corrupt.png", 422), ("text.jpg", 415)] {
        let (status, fb, cc, body) = get(&s, "orig.test", &format!("/rs:fit:120:120/plain/{src}@webp")).await;
        assert_eq!((status, fb, cc.as_str()), (code, true, "public, max-age=5"), "{src}");
        assert_eq!(body, want, "{src}");
    }

    // only the listed failures are replaced; others keep their error
    let (status, fb, _, body) = get(&s, "nf.test", "/w:50/plain/missing.jpg").await;
    assert_eq!((status, fb), (404, true));
    assert_eq!(dims(&body).1, 50);
    let (status, fb, cc, body) = get(&s, "nf.test", "/w:50/plain/fail/coffee.jpg").await;
    assert_eq!((status, fb, cc.as_str(), body.as_slice()), (502, false, "no-store", &b"origin error\n"[..]));

    // a fallback that fails itself: the original error
    let (status, fb, _, body) = get(&s, "broken.test", "/w:50/plain/missing.jpg").await;
    assert_eq!((status, fb, body.as_slice()), (404, false, &b"source not found\n"[..]));
    let (status, fb, _, _) = get(&s, "broken.test", "/w:50/plain/fail/coffee.jpg").await;
    assert_eq!((status, fb), (502, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_never_cached_long_and_the_real_image_comes_back() {
    let root = origin_root();
    let origin = HttpOrigin::start(root.path().to_owned()).await;
    let base = format!("http://{}/", origin.addr);
    let s = Imgedge::start(&tenant("fb", "fb.test", &base, "{source: fallback.png, ttl: 1s}")).await;
    let path = "/rs:fit:100:100/plain/late.jpg@webp";

    let (status, fb, cc, _) = get(&s, "fb.test", path).await;
    assert_eq!((status, fb, cc.as_str()), (200, true, "public, max-age=1"));
    // hits carry the header too (and the short lifetime)
    s.fill("fb.test", &sign(path)).await;
    let r = s.get("fb.test", &sign(path)).await;
    assert_eq!(header(&r, "x-imgedge-fallback"), "1");
    let before = origin.hits("/late.jpg");
    assert!(before >= 1);

    // the origin gets the image; within the fallback's lifetime the fallback may still be
    // served, after it the next request fetches and serves the real one
    std::fs::copy(images_dir().join("coffee_600x400.jpg"), root.path().join("late.jpg")).unwrap();
    let fixed = Instant::now();
    let deadline = fixed + Duration::from_secs(5);
    let real = loop {
        let (status, fb, cc, body) = get(&s, "fb.test", path).await;
        if !fb {
            break (status, cc, body);
        }
        assert!(Instant::now() < deadline, "still the fallback 5 s after the origin was fixed\n{}", s.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(fixed.elapsed() < Duration::from_secs(3), "recovered only after {:?}", fixed.elapsed());
    assert_eq!(real.0, 200);
    assert!(real.1.contains("immutable"), "the real image is cached as usual: {}", real.1);
    assert_eq!(dims(&real.2), (image::ImageFormat::WebP, 100, 67));
    assert_eq!(origin.hits("/late.jpg"), before + 1, "fetched again once, after the fallback expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_is_counted_as_an_error_not_a_transform() {
    let root = origin_root();
    let origin = HttpOrigin::start(root.path().to_owned()).await;
    let base = format!("http://{}/", origin.addr);
    let mut s = Imgedge::start_with(
        &tenant("fb", "fb.test", &base, "{source: fallback.png}"),
        DEFAULT_CACHE,
        "usage:\n  flush_interval: 200ms\n",
    )
    .await;
    // two fallback misses (two URLs), one fallback hit, one real transform
    for path in ["/w:60/plain/missing.jpg", "/w:70/plain/fail/coffee.jpg", "/w:60/plain/coffee.jpg"] {
        let (status, _, _, _) = get(&s, "fb.test", path).await;
        assert_eq!(status, 200);
    }
    s.fill("fb.test", &sign("/w:60/plain/missing.jpg")).await;
    // metrics: the fallbacks are renders of their error's category, not `ok`
    assert_eq!(s.metric_settled(r#"imgedge_renders_total{outcome="not_found"}"#, 1.0).await, 1.0);
    assert_eq!(s.metric(r#"imgedge_renders_total{outcome="origin"}"#).await, 1.0);
    assert_eq!(s.metric(r#"imgedge_renders_total{outcome="ok"}"#).await, 1.0);
    s.stop();
    let totals = Spool::open_existing(&s.dir.path().join("imgedge-usage.db")).unwrap().totals(None, None).unwrap();
    let row = totals.iter().find(|t| t.tenant == "fb").unwrap();
    // `fill` may have needed more than one request: every fallback answer is an error
    assert_eq!(row.requests - row.errors, 1, "only the real transform is a success: {row:?}");
    assert!(row.errors >= 3, "{row:?}");
    assert_eq!((row.unique_transforms, row.renders), (1, 1), "{row:?}");
}

#[test]
fn fallback_config_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let bad = tenant("fb", "fb.test", "http://127.0.0.1:1/", "{source: ../x.png, on: [missing], status: 302, ttl: 2h}");
    let text = crate::harness::config_text(dir.path(), 1, 2, &bad);
    let config = dir.path().join("imgedge.yaml");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(crate::harness::bin()).args(["check-config", "-c"]).arg(&config).output();
    let out = out.unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for path in ["fallback.source", "fallback.on[0]", "fallback.status", "fallback.ttl"] {
        assert!(text.contains(&format!("tenants[0].{path}")), "{path} missing in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_wins_over_the_fallback() {
    // the fallback on another origin that keeps working while the image's origin is down
    let root = origin_root();
    let origin = HttpOrigin::start(root.path().to_owned()).await;
    let base = format!("http://{}/", origin.addr);
    let t = format!(
        r#"  - id: fb
    hosts: [fb.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "{base}", allow_private: true}}
      local: {{type: local, root: "{}"}}
    default_origin: site
    cache: {{ttl: 1s, stale_if_error: 1h}}
    fallback: {{source: "local:chelsea_451x300.png"}}
"#,
        images_dir().display()
    );
    let s = Imgedge::start(&t).await;
    let path = "/w:100/plain/coffee.jpg";
    let (status, fb, _, real) = get(&s, "fb.test", path).await;
    assert_eq!((status, fb), (200, false));
    drop(origin);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // expired, within stale-if-error: the real image, not the fallback
    let r = s.get("fb.test", &sign(path)).await;
    assert_eq!((r.status().as_u16(), header(&r, "x-cache"), header(&r, "x-imgedge-fallback")), (200, "STALE", ""));
    assert_eq!(r.bytes().await.unwrap(), real);
    // a URL never cached gets the fallback
    let (status, fb, _, _) = get(&s, "fb.test", "/w:101/plain/coffee.jpg").await;
    assert_eq!((status, fb), (200, true));
}

//! Each origin type against a real server, origin failures, and the cache lock.

use std::time::{Duration, Instant};

use crate::harness::{dims, images_dir, sign, HttpOrigin, Imgedge, S3Server, KEY, S3_ACCESS_KEY, S3_SECRET_KEY, SALT};

fn http_tenant(base: &str, timeout: &str) -> String {
    format!(
        r#"  - id: web
    hosts: [web.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "{base}", allow_private: true}}
    limits:
      origin_timeout: {timeout}
"#
    )
}

fn s3_tenant(endpoint: &str, secret: &str) -> String {
    format!(
        r#"  - id: bucket
    hosts: [s3.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      photos:
        type: s3
        bucket: photos
        region: us-east-1
        endpoint: "{endpoint}"
        access_key_id: env:IMGEDGE_TEST_S3_KEY
        secret_access_key: "{secret}"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_origin_serves_and_maps_failures() {
    let origin = HttpOrigin::start(images_dir()).await;
    let base = format!("http://{}/", origin.addr);
    let s = Imgedge::start(&http_tenant(&base, "2s")).await;

    let r = s.get("web.test", &sign("/rs:fit:200:200/plain/coffee_600x400.jpg@webp")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(dims(&r.bytes().await.unwrap()), (image::ImageFormat::WebP, 200, 133));

    // a full URL under the origin's prefix selects it
    let r = s.get("web.test", &sign(&format!("/w:50/plain/{base}coffee_600x400.jpg"))).await;
    assert_eq!(r.status(), 200);
    // any other URL is refused before anything is fetched
    let before = origin.total.load(std::sync::atomic::Ordering::SeqCst);
    let r = s.get("web.test", &sign("/w:50/plain/http://127.0.0.1:1/coffee_600x400.jpg")).await;
    assert_eq!(r.status(), 400);
    assert_eq!(origin.total.load(std::sync::atomic::Ordering::SeqCst), before);

    let r = s.get("web.test", &sign("/w:50/plain/missing.jpg")).await;
    assert_eq!(r.status(), 404);

    for _ in 0..2 {
        let r = s.get("web.test", &sign("/w:50/plain/fail/coffee_600x400.jpg")).await;
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.text().await.unwrap().trim(), "origin error");
    }
    // errors are not cached: both requests reached the origin (object_store may retry once)
    assert!(origin.hits("/fail/coffee_600x400.jpg") >= 2);

    let t = Instant::now();
    let r = s.get("web.test", &sign("/w:50/plain/stall/coffee_600x400.jpg")).await;
    assert_eq!(r.status(), 504);
    assert!(t.elapsed() < Duration::from_secs(10), "timeout honoured: {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_misses_fetch_the_origin_once() {
    let origin = HttpOrigin::start(images_dir()).await;
    let s = Imgedge::start(&http_tenant(&format!("http://{}/", origin.addr), "10s")).await;
    let path = sign("/rs:fill:333:222/plain/coffee_600x400.jpg@webp");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = format!("http://{}{}", s.edge, path);
        tasks.push(tokio::spawn(async move {
            let r = reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(url)
                .header("host", "web.test")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.headers()["x-cache"].to_str().unwrap().to_owned(), r.bytes().await.unwrap())
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let (status, _cache, body) = t.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]), "all waiters get the same image");
    assert_eq!(origin.hits("/coffee_600x400.jpg"), 1, "one origin fetch for 8 concurrent misses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_origin_with_sigv4() {
    let s3 = S3Server::start().await;
    // credentials may come from the environment
    std::env::set_var("IMGEDGE_TEST_S3_KEY", S3_ACCESS_KEY);
    let s = Imgedge::start(&s3_tenant(&s3.endpoint, S3_SECRET_KEY)).await;
    let r = s.get("s3.test", &sign("/rs:fit:160:160/plain/coffee_600x400.jpg@png")).await;
    assert_eq!(r.status(), 200, "{}", s.log());
    assert_eq!(dims(&r.bytes().await.unwrap()), (image::ImageFormat::Png, 160, 107));
    let r = s.get("s3.test", &sign("/w:40/plain/nested/coffee.jpg")).await;
    assert_eq!(r.status(), 200);
    let r = s.get("s3.test", &sign("/w:40/plain/s3://photos/nested/coffee.jpg")).await;
    assert_eq!(r.status(), 200, "s3:// URL of the configured bucket");
    let r = s.get("s3.test", &sign("/w:40/plain/nope.jpg")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_credentials_are_502_not_cached() {
    let s3 = S3Server::start().await;
    std::env::set_var("IMGEDGE_TEST_S3_KEY", S3_ACCESS_KEY);
    let s = Imgedge::start(&s3_tenant(&s3.endpoint, "wrong/secret")).await;
    for _ in 0..2 {
        let r = s.get("s3.test", &sign("/w:40/plain/coffee_600x400.jpg")).await;
        assert_eq!(r.status(), 502);
        assert_eq!(r.headers()["x-cache"], "MISS");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
}

#[tokio::test]
async fn local_origin_refuses_symlinks_out_of_its_root() {
    use std::os::unix::fs::symlink;
    let (root, outside) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let coffee = images_dir().join("coffee_600x400.jpg");
    std::fs::copy(&coffee, root.path().join("coffee.jpg")).unwrap();
    std::fs::copy(&coffee, outside.path().join("secret.jpg")).unwrap();
    symlink("coffee.jpg", root.path().join("alias.jpg")).unwrap();
    symlink(outside.path().join("secret.jpg"), root.path().join("escape.jpg")).unwrap();
    symlink("../", root.path().join("up")).unwrap();
    symlink(outside.path(), root.path().join("dir")).unwrap();
    let s = Imgedge::start(&crate::harness::local_tenant_at("t1", "img.test", root.path())).await;
    let status = |key: &'static str| {
        let path = sign(&format!("/w:50/plain/{key}"));
        let s = &s;
        async move { s.get("img.test", &path).await.status().as_u16() }
    };
    assert_eq!(status("coffee.jpg").await, 200);
    assert_eq!(status("alias.jpg").await, 200, "a symlink that stays inside the root");
    assert_eq!(status("escape.jpg").await, 403, "a symlink to a file outside");
    assert_eq!(status("dir/secret.jpg").await, 403, "a symlink to a directory outside");
    let up = format!("up/{}/secret.jpg", outside.path().file_name().unwrap().to_str().unwrap());
    let r = s.get("img.test", &sign(&format!("/w:50/plain/{up}"))).await;
    assert_eq!(r.status(), 403, "a symlink to the root's parent");
    assert_eq!(status("missing.jpg").await, 404);
}

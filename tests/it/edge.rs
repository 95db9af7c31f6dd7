//! Edge behaviour through the running server: signatures, tenants, options, expiry,
//! caching.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::harness::{dims, local_tenant, local_tenant_at, sign, Imgedge, KEY, SALT};

const HOST: &str = "img.test";

#[tokio::test]
async fn signed_url_is_resized_in_the_requested_format() {
    let s = Imgedge::start(&local_tenant()).await;
    let cases = [
        ("/rs:fit:300:300/plain/coffee_600x400.jpg@webp", image::ImageFormat::WebP, "image/webp", (300, 200)),
        ("/rs:fill:100:100/plain/coffee_600x400.jpg", image::ImageFormat::Jpeg, "image/jpeg", (100, 100)),
        ("/w:200/plain/chelsea_451x300.png@png", image::ImageFormat::Png, "image/png", (200, 133)),
        ("/rs:force:50:80/f:jpg/plain/chelsea_451x300.png", image::ImageFormat::Jpeg, "image/jpeg", (50, 80)),
        ("/h:100/dpr:2/plain/astronaut_512.jpg", image::ImageFormat::Jpeg, "image/jpeg", (200, 200)),
        ("/pr:thumb/plain/coffee_600x400.jpg@webp", image::ImageFormat::WebP, "image/webp", (100, 100)),
    ];
    for (path, format, mime, (w, h)) in cases {
        let r = s.get(HOST, &sign(path)).await;
        assert_eq!(r.status(), 200, "{path}: {}", r.text().await.unwrap());
        assert_eq!(r.headers()["content-type"], mime, "{path}");
        assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable, stale-if-error=86400", "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers()["etag"].to_str().unwrap().starts_with('"'), "strong etag");
        let len: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), len, "{path}: exact content-length");
        assert_eq!(dims(&body), (format, w, h), "{path}");
    }
}

#[tokio::test]
async fn source_format_is_kept_without_an_explicit_one() {
    let s = Imgedge::start(&local_tenant()).await;
    for (src, want) in [
        ("coffee_600x400.jpg", "image/jpeg"),
        ("chelsea_451x300.png", "image/png"),
        ("coffee_300x200_lossy.webp", "image/webp"),
    ] {
        let r = s.get(HOST, &sign(&format!("/w:50/plain/{src}"))).await;
        assert_eq!(r.status(), 200, "{src}");
        assert_eq!(r.headers()["content-type"], want, "{src}");
    }
}

#[tokio::test]
async fn signature_failures_are_403() {
    let s = Imgedge::start(&local_tenant()).await;
    let good = sign("/w:100/plain/coffee_600x400.jpg");
    // tampered path, bad signature, missing signature, garbage
    let tampered = good.replace("w:100", "w:101");
    for path in [
        tampered.as_str(),
        "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/w:100/plain/coffee_600x400.jpg",
        "/w:100/plain/coffee_600x400.jpg",
        "/",
        "/unsafe/w:100/plain/coffee_600x400.jpg",
    ] {
        let r = s.get(HOST, path).await;
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    assert_eq!(s.get(HOST, &good).await.status(), 200);
}

#[tokio::test]
async fn rotated_keys_and_truncated_signatures() {
    let tenant = format!(
        r#"  - id: rot
    hosts: [rot.test]
    signature_size: 8
    keys:
      - {{key: "6f6c64", salt: "6f6c64"}}
      - {{key: "{KEY}", salt: "{SALT}"}}
    origins:
      local: {{type: local, root: "{}"}}
"#,
        crate::harness::images_dir().display()
    );
    let s = Imgedge::start(&tenant).await;
    let path = "/w:64/plain/coffee_600x400.jpg";
    let pair = imgedge::signature::KeyPair { key: hex::decode(KEY).unwrap(), salt: hex::decode(SALT).unwrap() };
    let sig8 = imgedge::signature::sign(&pair, path, 8);
    assert_eq!(s.get("rot.test", &format!("/{sig8}{path}")).await.status(), 200, "second pair, 8 bytes");
    let sig32 = imgedge::signature::sign(&pair, path, 32);
    assert_eq!(s.get("rot.test", &format!("/{sig32}{path}")).await.status(), 403, "full length is not 8 bytes");
}

#[tokio::test]
async fn unknown_host_is_404() {
    let s = Imgedge::start(&local_tenant()).await;
    let r = s.get("other.test", &sign("/w:100/plain/coffee_600x400.jpg")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["cache-control"], "no-store");
    // host matching ignores case and port
    assert_eq!(s.get("IMG.test:8080", &sign("/w:100/plain/coffee_600x400.jpg")).await.status(), 200);
}

#[tokio::test]
async fn bad_options_are_400_and_name_the_option() {
    let s = Imgedge::start(&local_tenant()).await;
    for (path, needle) in [
        ("/frobnicate:1/plain/coffee_600x400.jpg", "frobnicate"),
        ("/w:abc/plain/coffee_600x400.jpg", "w"),
        ("/pr:nope/plain/coffee_600x400.jpg", "nope"),
        ("/w:100/plain/coffee_600x400.jpg@tiff", "tiff"),
        ("/w:100/plain/a/..%2Fsecret.jpg", "source"),
        ("/w:100/plain/https://elsewhere.test/a.jpg", "origin"),
    ] {
        let r = s.get(HOST, &sign(path)).await;
        assert_eq!(r.status(), 400, "{path}");
        assert_eq!(r.headers()["cache-control"], "no-store");
        let body = r.text().await.unwrap();
        assert!(body.contains(needle), "{path}: {body:?} should name {needle:?}");
    }
}

#[tokio::test]
async fn expired_urls_are_404_and_live_ones_served() {
    let s = Imgedge::start(&local_tenant()).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let r = s.get(HOST, &sign(&format!("/exp:{}/w:80/plain/coffee_600x400.jpg", now - 1))).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap().trim(), "URL expired");
    let r = s.get(HOST, &sign(&format!("/exp:{}/w:80/plain/coffee_600x400.jpg", now + 3600))).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_url_that_expires_while_it_is_a_hit_is_404_from_then_on() {
    let s = Imgedge::start(&local_tenant()).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let exp = now + 2;
    let p = sign(&format!("/exp:{exp}/w:90/plain/coffee_600x400.jpg"));
    // the miss, pingora's hit that fills the front, then hits from the front (the hit path
    // keeps each head's admission: it must still see the expiry)
    let mut hits = 0;
    while SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() < exp && hits < 200 {
        let r = s.get(HOST, &p).await;
        assert_eq!(r.status(), 200);
        hits += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(hits >= 3, "served before it expired");
    while SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() < exp {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let r = s.get(HOST, &p).await;
        assert_eq!(r.status(), 404);
        assert_eq!(r.text().await.unwrap().trim(), "URL expired");
    }
}

#[tokio::test]
async fn miss_then_hit_with_identical_bytes() {
    let s = Imgedge::start(&local_tenant()).await;
    let path = sign("/rs:fit:120:120/plain/coffee_600x400.jpg@webp");
    let first = s.get(HOST, &path).await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    let etag = first.headers()["etag"].clone();
    let a = first.bytes().await.unwrap();
    // the miss's cache write can land just after its answer
    assert_eq!(s.metric_settled(r#"imgedge_cache_items{tier="memory"}"#, 1.0).await, 1.0);
    let second = s.get(HOST, &path).await;
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second.headers()["etag"], etag);
    assert_eq!(second.headers()["content-length"].to_str().unwrap(), a.len().to_string());
    assert_eq!(second.bytes().await.unwrap(), a);

    // the same transform spelled differently is the same cache entry
    let r = s.get(HOST, &sign("/rt:fit/w:120/h:120/plain/local:coffee_600x400.jpg@webp")).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    // a different format is a different entry
    let r = s.get(HOST, &sign("/rs:fit:120:120/plain/coffee_600x400.jpg@png")).await;
    assert_eq!(r.headers()["x-cache"], "MISS");
}

#[tokio::test]
async fn head_and_methods() {
    let s = Imgedge::start(&local_tenant()).await;
    let path = sign("/w:90/plain/coffee_600x400.jpg");
    let r = s.request(reqwest::Method::HEAD, HOST, &path, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    let r = s.request(reqwest::Method::POST, HOST, &path, &[]).await;
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn missing_source_is_404_and_cached_briefly() {
    let s = Imgedge::start(&local_tenant()).await;
    let path = sign("/w:90/plain/does/not/exist.jpg");
    let r = s.get(HOST, &path).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");
    assert_eq!(r.headers()["x-cache"], "MISS");
    // the miss's cache write can land just after its answer
    assert_eq!(s.metric_settled(r#"imgedge_cache_items{tier="memory"}"#, 1.0).await, 1.0);
    let r = s.get(HOST, &path).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["x-cache"], "HIT");
}

#[tokio::test]
async fn undecodable_source_is_rejected_and_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("page.jpg"), b"<html><script>alert(1)</script></html>").unwrap();
    let s = Imgedge::start(&local_tenant_at("t2", "img.test", dir.path())).await;
    let path = sign("/w:90/plain/page.jpg");
    for _ in 0..2 {
        let r = s.get(HOST, &path).await;
        assert_eq!(r.status(), 415);
        assert_eq!(r.headers()["cache-control"], "no-store");
        assert_eq!(r.headers()["x-cache"], "MISS");
        assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    }
}

/// `max-age` of an answer whose `Cache-Control` must not outlive its URL: no `immutable`.
fn bounded_max_age(r: &reqwest::Response) -> u64 {
    let cc = r.headers()["cache-control"].to_str().unwrap();
    assert!(!cc.contains("immutable") && !cc.contains("stale-if-error"), "{cc}");
    cc.split(", ").find_map(|d| d.strip_prefix("max-age=")).unwrap().parse().unwrap()
}

#[tokio::test]
async fn an_expiring_url_is_cached_downstream_only_until_it_expires() {
    let s = Imgedge::start(&local_tenant()).await;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let path = sign(&format!("/exp:{}/w:80/plain/coffee_600x400.jpg", now + 600));
    let lifetime = 590..=600;

    let miss = s.get(HOST, &path).await;
    assert_eq!((miss.status().as_u16(), miss.headers()["x-cache"].to_str().unwrap()), (200, "MISS"));
    assert!(lifetime.contains(&bounded_max_age(&miss)), "miss: {:?}", miss.headers());
    let etag = miss.headers()["etag"].to_str().unwrap().to_owned();
    s.fill(HOST, &path).await;

    // the hit path: a new connection's first request
    let fresh = || reqwest::Client::builder().no_proxy().build().unwrap();
    let url = format!("http://{}{path}", s.edge);
    let hit = fresh().get(&url).header("host", HOST).send().await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert!(lifetime.contains(&bounded_max_age(&hit)), "hit path: {:?}", hit.headers());
    let not_modified = fresh().get(&url).header("host", HOST).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(not_modified.status(), 304);
    assert!(lifetime.contains(&bounded_max_age(&not_modified)), "304: {:?}", not_modified.headers());
    // pingora's hit path (the hit path hands If-Modified-Since and Range to it)
    let headers = [("if-modified-since", "Thu, 01 Jan 1970 00:00:00 GMT")];
    let hit = s.request(reqwest::Method::GET, HOST, &path, &headers).await;
    assert_eq!((hit.status().as_u16(), hit.headers()["x-cache"].to_str().unwrap()), (200, "HIT"));
    assert!(lifetime.contains(&bounded_max_age(&hit)), "pingora hit: {:?}", hit.headers());
    let range = s.request(reqwest::Method::GET, HOST, &path, &[("range", "bytes=0-9")]).await;
    assert_eq!(range.status(), 206);
    assert!(lifetime.contains(&bounded_max_age(&range)), "range: {:?}", range.headers());

    // the same image without an expiry is the same cache entry, with the tenant's TTL
    let forever = fresh().get(format!("http://{}{}", s.edge, sign("/w:80/plain/coffee_600x400.jpg")));
    let forever = forever.header("host", HOST).send().await.unwrap();
    assert_eq!(forever.headers()["x-cache"], "HIT");
    assert_eq!(forever.headers()["cache-control"], "public, max-age=31536000, immutable, stale-if-error=86400");
}

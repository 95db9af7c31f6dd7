//! The shared derivative store (`cache.shared`): nodes on one S3 bucket answer what any of
//! them rendered without rendering it again; expiry, purges, damaged objects and a store
//! that is down or silent never cost a correct answer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use object_store::aws::AmazonS3Builder;
use object_store::{Attribute, ObjectStoreExt};

use crate::harness::{config_text_with, dims, local_tenant, sign, Imgedge, S3Server, S3_ACCESS_KEY, S3_SECRET_KEY};

const PREFIX: &str = "fleet/v1";
const TOKEN: &str = "shared-store-admin-token-0123456789";

/// The `cache:` body of a node on `endpoint`'s `derived` bucket, with a disk tier in `dir`
/// and `more` settings of `cache.shared` (`, key: value` each).
fn shared_cache(endpoint: &str, dir: &Path, more: &str) -> String {
    format!(
        "  memory: 64MiB\n  max_object: 1MiB\n  disk: {{path: {}, size: 16MiB, block_size: 2MiB}}\n  \
         shared: {{type: s3, bucket: derived, prefix: {PREFIX}, endpoint: \"{endpoint}\", \
         access_key_id: \"{S3_ACCESS_KEY}\", secret_access_key: \"{S3_SECRET_KEY}\", read_timeout: 500ms{more}}}\n",
        dir.join("cache").display()
    )
}

/// A node with its own directory (cache included) on the store at `endpoint`.
async fn node(endpoint: &str, tenants: &str) -> Imgedge {
    node_with(endpoint, tenants, "").await
}

async fn node_with(endpoint: &str, tenants: &str, more: &str) -> Imgedge {
    let admin = format!("admin:\n  token: \"{TOKEN}\"\n");
    Imgedge::start_config(|dir, edge, ops| {
        config_text_with(dir, edge, ops, tenants, &shared_cache(endpoint, dir, more), &admin)
    })
    .await
}

/// Every object file under the store's prefix.
fn objects(s3: &S3Server) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&s3.root().join("derived").join(PREFIX), &mut out);
    out.sort();
    out
}

/// The objects once there are `n` of them (writes happen after the answer), at most ~5 s.
async fn wait_objects(s3: &S3Server, n: usize) -> Vec<PathBuf> {
    for _ in 0..250 {
        let found = objects(s3);
        if found.len() == n {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("expected {n} objects in the store, found {:?}", objects(s3));
}

/// The S3 attributes of an object file, read through S3.
async fn object_attributes(s3: &S3Server, file: &Path) -> object_store::Attributes {
    let name = file.strip_prefix(s3.root().join("derived")).unwrap().to_string_lossy().into_owned();
    let store = AmazonS3Builder::new()
        .with_bucket_name("derived")
        .with_region("us-east-1")
        .with_endpoint(&s3.endpoint)
        .with_allow_http(true)
        .with_access_key_id(S3_ACCESS_KEY)
        .with_secret_access_key(S3_SECRET_KEY)
        .build()
        .unwrap();
    store.get(&object_store::path::Path::from(name)).await.unwrap().attributes
}

/// The sum of every series of a counter family.
async fn total(s: &Imgedge, family: &str) -> f64 {
    let text = s.ops_get("/metrics").await.text().await.unwrap();
    text.lines()
        .filter(|l| l.strip_prefix(family).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn renders(s: &Imgedge) -> f64 {
    total(s, "imgedge_renders_total").await
}

fn store_op(op: &str, result: &str) -> String {
    format!("imgedge_shared_store_operations_total{{op=\"{op}\",result=\"{result}\"}}")
}

/// GETs `path` signed: status, body, ETag, `Cache-Control`.
async fn fetch(s: &Imgedge, path: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>, String, String) {
    let r = s.request(reqwest::Method::GET, "img.test", &sign(path), headers).await;
    let status = r.status().as_u16();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    let (etag, cc) = (header("etag"), header("cache-control"));
    (status, r.bytes().await.unwrap().to_vec(), etag, cc)
}

fn max_age(cc: &str) -> u64 {
    cc.split(',').find_map(|d| d.trim().strip_prefix("max-age=")).unwrap().parse().unwrap()
}

const PATHS: [&str; 3] = [
    "/w:100/plain/coffee_600x400.jpg",
    "/rs:fill:80:80/plain/coffee_600x400.jpg@webp",
    "/w:120/plain/chelsea_451x300.png",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_and_restarted_nodes_serve_the_fleets_renders_without_rendering() {
    let s3 = S3Server::start().await;
    let mut a = node(&s3.endpoint, &local_tenant()).await;
    let mut answers = Vec::new();
    for p in PATHS {
        let (status, body, etag, _) = fetch(&a, p, &[]).await;
        assert_eq!(status, 200, "{p}");
        answers.push((body, etag));
    }
    assert_eq!(renders(&a).await, 3.0);
    let found = wait_objects(&s3, 3).await;
    for f in &found {
        let name = f.strip_prefix(s3.root().join("derived")).unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('/').collect();
        assert_eq!(parts.len(), 5, "{PREFIX}/t1/xx/hash: {name}");
        assert_eq!(parts[2], "t1");
        assert!(parts[4].len() == 32 && parts[4].starts_with(parts[3]), "{name}");
    }
    // the bucket's own copy of the expiry: the answer's max-age (365 days)
    let attributes = object_attributes(&s3, &found[0]).await;
    let cc = attributes.get(&Attribute::CacheControl).map(|v| v.to_string()).unwrap_or_default();
    assert!(cc.starts_with("max-age=") && max_age(&cc) > 364 * 86400, "{cc}");
    assert!(attributes.get(&Attribute::Metadata("imgedge-expires-at".into())).is_some(), "{attributes:?}");

    // another node, its own cache, the same store: the same answers, nothing rendered
    let b = node(&s3.endpoint, &local_tenant()).await;
    let r = b.get("img.test", &sign(PATHS[0])).await;
    assert_eq!(r.headers()["x-cache"], "HIT", "answered by the shared store");
    assert!(r.headers().keys().all(|k| !k.as_str().starts_with("x-imgedge-")), "{:?}", r.headers());
    for (p, (body, etag)) in PATHS.iter().zip(&answers) {
        let (status, got, got_etag, _) = fetch(&b, p, &[]).await;
        assert_eq!(status, 200, "{p}");
        assert!(got == *body, "{p}: the stored bytes");
        assert_eq!(&got_etag, etag, "{p}");
    }
    assert_eq!(renders(&b).await, 0.0, "{}", b.log());
    assert_eq!(b.metric(&store_op("get", "hit")).await, 3.0);
    // nothing was rendered for them: hits for the client, the metrics and the bill
    let hits = r#"imgedge_http_requests_total{cache="hit",operation="transform",status_class="2xx"}"#;
    assert_eq!(b.metric_settled(hits, 4.0).await, 4.0);

    // A restarted without its disk cache: everything from the store
    a.restart_after(|dir| std::fs::remove_dir_all(dir.join("cache")).unwrap()).await;
    for (p, (body, etag)) in PATHS.iter().zip(&answers) {
        let (status, got, got_etag, _) = fetch(&a, p, &[]).await;
        assert_eq!(status, 200, "{p}");
        assert!(got == *body, "{p}");
        assert_eq!(&got_etag, etag, "{p}");
    }
    assert_eq!(renders(&a).await, 0.0);
    assert_eq!(a.metric(&store_op("get", "hit")).await, 3.0);
    assert_eq!(objects(&s3).len(), 3, "hits write nothing new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_is_served_for_the_lifetime_left_and_never_after() {
    let s3 = S3Server::start().await;
    let tenant = local_tenant() + "    cache: {ttl: 4s}\n";
    let a = node(&s3.endpoint, &tenant).await;
    let b = node(&s3.endpoint, &tenant).await;
    let path = PATHS[0];
    let t0 = Instant::now();
    let (status, body, _, cc) = fetch(&a, path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(max_age(&cc), 4, "{cc}");
    wait_objects(&s3, 1).await;

    // 1.5 s later: at most 3 of the 4 s are left, and no more is promised
    tokio::time::sleep((t0 + Duration::from_millis(1500)).saturating_duration_since(Instant::now())).await;
    let (status, got, _, cc) = fetch(&b, path, &[]).await;
    assert_eq!(status, 200);
    assert!(got == body);
    assert_eq!(renders(&b).await, 0.0, "an L2 hit");
    let left = max_age(&cc);
    assert!((1..=3).contains(&left), "max-age lowered to the lifetime left: {cc}");

    // past the expiry (and B's own copy's): rendered again
    tokio::time::sleep((t0 + Duration::from_millis(5500)).saturating_duration_since(Instant::now())).await;
    let (status, got, _, cc) = fetch(&b, path, &[]).await;
    assert_eq!(status, 200);
    assert!(got == body, "deterministic output");
    assert_eq!(max_age(&cc), 4, "a fresh render, its full lifetime: {cc}");
    assert_eq!(renders(&b).await, 1.0, "the expired object is not used");
    assert_eq!(b.metric(&store_op("get", "miss")).await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_purge_deletes_the_object() {
    let s3 = S3Server::start().await;
    let a = node(&s3.endpoint, &local_tenant()).await;
    for p in &PATHS[..2] {
        assert_eq!(fetch(&a, p, &[]).await.0, 200);
    }
    let before = wait_objects(&s3, 2).await;
    let purge = reqwest::Client::new()
        .post(format!("http://{}/purge?tenant=t1&url={}", a.ops, sign(PATHS[0])))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    let after = objects(&s3);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(before.contains(&after[0]));
    assert!(a.metric(&store_op("delete", "ok")).await >= 1.0);
    assert_eq!(a.metric(&store_op("delete", "error")).await, 0.0);

    // the purged URL renders again; the other one is still stored
    assert_eq!(fetch(&a, PATHS[0], &[]).await.0, 200);
    assert_eq!(renders(&a).await, 3.0);
    let b = node(&s3.endpoint, &local_tenant()).await;
    assert_eq!(fetch(&b, PATHS[1], &[]).await.0, 200);
    assert_eq!(renders(&b).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_a_counted_miss_and_the_image_is_rendered() {
    let s3 = S3Server::start().await;
    let a = node(&s3.endpoint, &local_tenant()).await;
    let (status, body, etag, _) = fetch(&a, PATHS[1], &[]).await;
    assert_eq!(status, 200);
    let found = wait_objects(&s3, 1).await;
    std::fs::write(&found[0], b"not an imgedge object, not at all").unwrap();

    let b = node(&s3.endpoint, &local_tenant()).await;
    let (status, got, got_etag, _) = fetch(&b, PATHS[1], &[]).await;
    assert_eq!(status, 200);
    assert_eq!(dims(&got), (image::ImageFormat::WebP, 80, 80));
    assert!(got == body);
    assert_eq!(got_etag, etag);
    assert_eq!(renders(&b).await, 1.0);
    assert_eq!(b.metric(&store_op("get", "corrupt")).await, 1.0, "{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_is_down_or_silent_costs_no_request() {
    // down: connections refused
    let s3 = S3Server::start().await;
    let a = node(&s3.endpoint, &local_tenant()).await;
    s3.stop();
    let t = Instant::now();
    let (status, body, _, _) = fetch(&a, PATHS[0], &[]).await;
    assert_eq!(status, 200);
    assert_eq!(dims(&body), (image::ImageFormat::Jpeg, 100, 67));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(renders(&a).await, 1.0);
    let failed = a.metric(&store_op("get", "error")).await + a.metric(&store_op("get", "timeout")).await;
    assert_eq!(failed, 1.0);
    assert_eq!(a.metric_settled(&store_op("put", "error"), 1.0).await, 1.0, "{}", a.log());

    // silent: connections accepted, never answered; a read waits read_timeout (500ms) only
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", hole.local_addr().unwrap());
    let c = node_with(&endpoint, &local_tenant(), ", max_writes: 1, write_timeout: 20s").await;
    let t = Instant::now();
    assert_eq!(fetch(&c, PATHS[0], &[]).await.0, 200);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(c.metric(&store_op("get", "timeout")).await, 1.0);
    assert_eq!(renders(&c).await, 1.0);
    // its write hangs, holding the one write slot: the next render's write is dropped
    assert_eq!(fetch(&c, PATHS[1], &[]).await.0, 200);
    assert_eq!(c.metric_settled(&store_op("put", "dropped"), 1.0).await, 1.0);
    assert_eq!(renders(&c).await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_not_found_answers_are_shared_and_tenants_without_a_cache_never_use_the_store() {
    let s3 = S3Server::start().await;
    let uncached = crate::harness::local_tenant_at("t2", "nocache.test", &crate::harness::images_dir())
        + "    cache: {enabled: false}\n";
    let tenants = local_tenant() + &uncached;
    let a = node(&s3.endpoint, &tenants).await;
    let missing = "/w:100/plain/missing.jpg";
    let (status, body, _, cc) = fetch(&a, missing, &[]).await;
    assert_eq!((status, cc.as_str()), (404, "public, max-age=60"));
    wait_objects(&s3, 1).await;
    let b = node(&s3.endpoint, &tenants).await;
    let (status, got, _, cc) = fetch(&b, missing, &[]).await;
    assert_eq!(status, 404);
    assert!(got == body);
    assert!(max_age(&cc) <= 60, "{cc}");
    assert_eq!(renders(&b).await, 0.0, "answered from the store");

    // a tenant with its cache off renders every time and never reads or writes the store
    for _ in 0..2 {
        let r = b.get("nocache.test", &sign(PATHS[0])).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(renders(&b).await, 2.0);
    assert_eq!(total(&b, "imgedge_shared_store_operations_total").await, 1.0, "the 404's read only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negotiated_variants_are_separate_objects() {
    let s3 = S3Server::start().await;
    let tenant = local_tenant() + "    transform: {negotiate: [webp]}\n";
    let a = node(&s3.endpoint, &tenant).await;
    let path = "/w:90/plain/coffee_600x400.jpg";
    let webp = [("accept", "image/webp,image/*")];
    let (status, a_webp, _, _) = fetch(&a, path, &webp).await;
    assert_eq!(status, 200);
    assert_eq!(dims(&a_webp).0, image::ImageFormat::WebP);
    let (status, a_jpeg, _, _) = fetch(&a, path, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(dims(&a_jpeg).0, image::ImageFormat::Jpeg);
    wait_objects(&s3, 2).await;

    let b = node(&s3.endpoint, &tenant).await;
    let (_, b_jpeg, _, _) = fetch(&b, path, &[]).await;
    let (_, b_webp, _, _) = fetch(&b, path, &webp).await;
    assert!(b_jpeg == a_jpeg, "the JPEG sibling");
    assert!(b_webp == a_webp, "the WebP variant");
    assert_eq!(renders(&b).await, 0.0);
    assert_eq!(b.metric(&store_op("get", "hit")).await, 2.0);
}

/// GETs `path` signed: milliseconds until the whole body was read, and the body.
async fn timed(s: &Imgedge, path: &str) -> (f64, Vec<u8>) {
    let url = sign(path);
    let t = Instant::now();
    let r = s.get("img.test", &url).await;
    assert_eq!(r.status(), 200, "{path}");
    let body = r.bytes().await.unwrap().to_vec();
    (t.elapsed().as_secs_f64() * 1e3, body)
}

/// Not a test: the time of an L2 hit against a render of the same transform, each on a node
/// that has never answered it (`benches/load/shared-store.sh` runs it on a release build).
/// Node A renders round r's URL (a new cache key per round: `cb:`), node B then answers it
/// from the store, then from its own cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: benches/load/shared-store.sh"]
async fn measure_shared_store_hit_against_render() {
    let images = std::env::var("IMGEDGE_BENCH_IMAGES").unwrap_or_else(|_| "../shared/bench/images".to_owned());
    let image = std::env::var("IMGEDGE_BENCH_IMAGE").unwrap_or_else(|_| "cups_4000x3000_q90.jpg".to_owned());
    let rounds: usize = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let root = std::fs::canonicalize(&images).unwrap();
    let tenant = crate::harness::local_tenant_at("t1", "img.test", &root);
    let s3 = S3Server::start().await;
    let a = node(&s3.endpoint, &tenant).await;
    let b = node(&s3.endpoint, &tenant).await;
    let (mut render, mut l2, mut local) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let path = format!("/w:400/cb:r{round}x{}/plain/{image}@webp", std::process::id());
        let (ms_render, body) = timed(&a, &path).await;
        wait_objects(&s3, round + 1).await;
        let (ms_l2, got) = timed(&b, &path).await;
        assert!(got == body);
        let (ms_local, _) = timed(&b, &path).await;
        println!("round {round}: render {ms_render:.1} ms, shared store hit {ms_l2:.1} ms, local hit {ms_local:.2} ms");
        render.push(ms_render);
        l2.push(ms_l2);
        local.push(ms_local);
    }
    assert_eq!(renders(&b).await, 0.0, "B never rendered");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (r, h, l) = (median(&mut render), median(&mut l2), median(&mut local));
    println!(
        "RESULT image={image} rounds={rounds} render_ms={r:.1} shared_hit_ms={h:.1} local_hit_ms={l:.2} \
         render_over_shared={:.1}",
        r / h
    );
}

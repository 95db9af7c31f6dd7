//! `/grid` through the running server: a grid of four photos against a libvips reference
//! (`scripts/golden-grid.sh`), the source limits, a bad source, caching, ETag and
//! per-source billing.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::harness::{dims, hostile_dir, images_dir, local_tenant_at, sign, Imgedge, DEFAULT_CACHE};

const HOST: &str = "grid.test";

fn golden(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// `/grid/{signature}/{options}/{sources…}`, the signature over what follows it.
fn grid_url(options: &str, sources: &[&str]) -> String {
    let mut path = format!("/{options}");
    for s in sources {
        path.push('/');
        path.push_str(&URL_SAFE_NO_PAD.encode(s));
    }
    format!("/grid{}", sign(&path))
}

/// PSNR of two RGB images of the same size, in dB.
fn psnr(a: &image::RgbImage, b: &image::RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions());
    let se: f64 = a.as_raw().iter().zip(b.as_raw()).map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2)).sum();
    let mse = se / a.as_raw().len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64.powi(2) / mse).log10()
}

/// Root with the golden photos, a 2.5 MP photo (counted whole in the grid's pixel sum,
/// whatever it is decoded to) and a corrupt file.
fn root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for f in ["orient_1.jpg", "smart.jpg", "tiny.png", "orient_6.jpg"] {
        std::fs::copy(golden("src").join(f), d.path().join(f)).unwrap();
    }
    std::fs::copy(images_dir().join("autumn_1920x1280_q85.jpg"), d.path().join("big.jpg")).unwrap();
    std::fs::copy(hostile_dir().join("png_bad_crc.png"), d.path().join("corrupt.png")).unwrap();
    d
}

/// Grid sums of 6 MP at most; a grid costs 0.5 credits per source.
fn tenant(root: &Path) -> String {
    local_tenant_at("g", HOST, root)
        + "    limits: {max_grid_megapixels: 6}\n    billing: {credits: {transform: 1, grid_source: 0.5}}\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_of_four_photos_matches_the_reference() {
    let root = root();
    let s = Imgedge::start(&tenant(root.path())).await;
    let url = grid_url("grid:2:120:90:4/rt:fill/f:png", &["orient_1.jpg", "smart.jpg", "tiny.png", "orient_6.jpg"]);
    let r = s.get(HOST, &url).await;
    assert_eq!(r.status(), 200, "{}", s.log());
    assert_eq!(r.headers()["content-type"], "image/png");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let body = r.bytes().await.unwrap();
    assert_eq!(dims(&body), (image::ImageFormat::Png, 244, 184));
    let got = image::load_from_memory(&body).unwrap().to_rgb8();
    let want = image::open(golden("ref/grid_2x2_fill.png")).unwrap().to_rgb8();
    let db = psnr(&got, &want);
    eprintln!("grid PSNR against the libvips reference: {db:.2} dB");
    // measured 46.6 dB (resamplers differ by a little everywhere); a cell misplaced or
    // swapped costs far more, as checked below
    assert!(db >= 40.0, "PSNR {db:.2} dB");
    let mut swapped = got.clone();
    for y in 0..90 {
        for x in 0..120 {
            swapped.put_pixel(x, y, *got.get_pixel(x + 124, y));
            swapped.put_pixel(x + 124, y, *got.get_pixel(x, y));
        }
    }
    let swapped_db = psnr(&swapped, &want);
    eprintln!("with the first two cells swapped: {swapped_db:.2} dB");
    assert!(swapped_db < 30.0, "the bound must catch a misplaced cell");

    // cached as a transform is, under its own ETag; another order is another grid
    s.fill(HOST, &url).await;
    let again = s.get(HOST, &url).await;
    assert_eq!(again.headers()["etag"].to_str().unwrap(), etag);
    let other = grid_url("grid:2:120:90:4/rt:fill/f:png", &["smart.jpg", "orient_1.jpg", "tiny.png", "orient_6.jpg"]);
    let r = s.get(HOST, &other).await;
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);

    // fit: each photo whole in its cell, the last row short, the background around
    let url = grid_url("grid:2:100:100:0/bg:000000/f:png", &["smart.jpg", "tiny.png", "orient_1.jpg"]);
    let r = s.get(HOST, &url).await;
    assert_eq!(r.status(), 200);
    let img = image::load_from_memory(&r.bytes().await.unwrap()).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (200, 200));
    // smart.jpg (3:1) fits as 100x33 centred: the cell's top rows are background
    assert_eq!(img.get_pixel(50, 5).0, [0, 0, 0]);
    assert_ne!(img.get_pixel(50, 50).0, [0, 0, 0]);
    // the fourth cell is empty
    assert_eq!(img.get_pixel(150, 150).0, [0, 0, 0]);

    // a signature over another path is refused
    let forged = url.replace("/grid:2:100:100:0/", "/grid:3:100:100:0/");
    assert_eq!(s.get(HOST, &forged).await.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_url_is_purged() {
    let root = root();
    let token = "grid-admin-token-0123456789";
    let s = Imgedge::start_with(&tenant(root.path()), DEFAULT_CACHE, &format!("admin:\n  token: \"{token}\"\n")).await;
    let url = grid_url("grid:2:60:60/f:webp", &["tiny.png", "smart.jpg"]);
    s.fill(HOST, &url).await;
    let r = reqwest::Client::new()
        .post(format!("http://{}/purge?tenant=g&url={url}", s.ops))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(body["purged"], 1, "{body}");
    assert_eq!(s.get(HOST, &url).await.headers()["x-cache"], "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grid_source_limits_hold() {
    let root = root();
    let mut s = Imgedge::start_with(&tenant(root.path()), DEFAULT_CACHE, "usage:\n  flush_interval: 200ms\n").await;
    let ten = ["tiny.png"; 10];
    // sources: 2..=9
    assert_eq!(s.get(HOST, &grid_url("grid:3:50:50", &ten)).await.status(), 400);
    assert_eq!(s.get(HOST, &grid_url("grid:3:50:50", &ten[..1])).await.status(), 400);
    assert_eq!(s.get(HOST, &grid_url("grid:3:50:50", &ten[..9])).await.status(), 200);
    // a cell option a grid has no use for, a cell too large
    assert_eq!(s.get(HOST, &grid_url("grid:2:50:50/w:10", &ten[..2])).await.status(), 400);
    assert_eq!(s.get(HOST, &grid_url("grid:2:5000:50", &ten[..2])).await.status(), 400);
    // each big.jpg is 2.5 MP: two fit the 6 MP sum, three do not (422, as a source over
    // max_src_megapixels is); nothing over it is decoded
    let big = ["big.jpg"; 3];
    assert_eq!(s.get(HOST, &grid_url("grid:3:50:50", &big[..2])).await.status(), 200);
    let r = s.get(HOST, &grid_url("grid:3:50:50", &big)).await;
    assert_eq!(r.status(), 422);
    assert_eq!(r.headers()["cache-control"], "no-store");
    // one bad source: the status a single transform of it gets
    for (bad, status) in [("missing.jpg", 404), ("corrupt.png", 422)] {
        let one = s.get(HOST, &sign(&format!("/w:50/plain/{bad}"))).await.status();
        let r = s.get(HOST, &grid_url("grid:2:50:50", &["tiny.png", bad])).await;
        assert_eq!((r.status().as_u16(), one.as_u16()), (status, status), "{bad}");
    }
    assert_eq!(s.get(HOST, &grid_url("grid:2:50:50", &["tiny.png", "../x.jpg"])).await.status(), 400);

    // billing: the 9-source grid and the 2-source grid of big.jpg, 0.5 credits a source;
    // errors cost nothing here
    s.stop();
    let spool = s.dir.path().join("imgedge-usage.db");
    let totals = imgedge::usage::spool::Spool::open_existing(&spool).unwrap().totals(None, None).unwrap();
    let row = totals.iter().find(|t| t.tenant == "g").unwrap();
    assert_eq!(row.credits_milli, 9 * 500 + 2 * 500, "{row:?}");
    assert_eq!((row.unique_transforms, row.renders), (2, 2), "{row:?}");
}

/// Seconds since the epoch.
fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expiring_grid_url_is_served_until_it_expires_and_404_after_even_when_cached() {
    let root = root();
    let s = Imgedge::start(&tenant(root.path())).await;
    let sources = ["tiny.png", "smart.jpg"];
    // expired: refused before any fetch, never cached
    let r = s.get(HOST, &grid_url(&format!("grid:2:60:60/exp:{}", now() - 1), &sources)).await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.text().await.unwrap().trim(), "URL expired");

    // live for 2 s: served (misses, then hits of both hit paths), a CDN may keep it no longer
    // than it lives, and from its expiry on it is 404 although the answer is still cached
    let exp = now() + 2;
    let url = grid_url(&format!("grid:2:60:60/f:png/exp:{exp}"), &sources);
    let mut served = 0;
    while now() < exp && served < 100 {
        let r = s.get(HOST, &url).await;
        assert_eq!(r.status(), 200);
        let cc = r.headers()["cache-control"].to_str().unwrap().to_owned();
        let max_age: u64 = cc.split(',').find_map(|d| d.trim().strip_prefix("max-age=")).unwrap().parse().unwrap();
        assert!(max_age <= 2 && !cc.contains("immutable"), "{cc}");
        assert_eq!(dims(&r.bytes().await.unwrap()).1, 120, "two 60 px cells");
        served += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(served >= 3, "served before it expired");
    while now() < exp {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        let r = s.get(HOST, &url).await;
        assert_eq!(r.status(), 404);
        assert_eq!(r.text().await.unwrap().trim(), "URL expired");
    }
}

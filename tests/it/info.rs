//! `/info/{signature}/{options}/{source}`: JSON facts about a source, admitted, signed,
//! cached and billed like a transform, through the running binary.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use imgedge::usage::spool::Spool;
use imgedge::usage::Totals;
use serde_json::Value;

use crate::harness::{hostile_dir, images_dir, local_tenant, sign, Imgedge, DEFAULT_CACHE, KEY, SALT};

/// `/info` + the signed path: the signature covers what follows `/info/{signature}`.
fn info_url(path: &str) -> String {
    format!("/info{}", sign(path))
}

async fn info(s: &Imgedge, host: &str, path: &str) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = s.get(host, &info_url(path)).await;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

async fn info_json(s: &Imgedge, path: &str) -> Value {
    let (status, headers, body) = info(s, "img.test", path).await;
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json", "{path}");
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn info_reports_header_facts_and_is_cached_under_its_own_key() {
    let s = Imgedge::start(&local_tenant()).await;
    let file = "autumn_orient6_stored1920x1280.jpg";
    let len = std::fs::metadata(images_dir().join(file)).unwrap().len();
    let path = format!("/plain/{file}");
    let (status, headers, body) = info(&s, "img.test", &path).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["x-cache"], "MISS");
    // info_ttl, never `immutable`: the facts follow the original (images say `immutable`)
    let cc = headers["cache-control"].to_str().unwrap();
    assert!(cc.starts_with("public, max-age=86400,") && !cc.contains("immutable"), "{headers:?}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    // defaults: size, format, dimensions (displayed after EXIF orientation 6, and as stored)
    assert_eq!(
        v,
        serde_json::json!({"size": len, "format": "jpeg", "width": 1280, "height": 1920,
                           "raw_width": 1920, "raw_height": 1280, "orientation": 6})
    );
    s.fill("img.test", &info_url(&path)).await;
    // a transform of the same source is another entry, and an image
    let r = s.get("img.test", &sign(&path)).await;
    assert_eq!((r.status().as_u16(), r.headers()["x-cache"].to_str().unwrap()), (200, "MISS"));
    assert!(r.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    // options switch fields off and on; spellings share one canonical request
    let v = info_json(&s, "/size:0/format:false/d:0/a:1/plain/coffee_600x400.jpg").await;
    assert_eq!(v, serde_json::json!({"alpha": false}));
    let (_, h, _) = info(&s, "img.test", "/alpha:1/s:0/f:0/dimensions:0/plain/coffee_600x400.jpg").await;
    assert_eq!(h["x-cache"], "HIT", "another spelling of the same info request");
    let cc = h["cache-control"].to_str().unwrap();
    assert!(cc.starts_with("public, max-age=") && !cc.contains("immutable"), "a hit as its miss: {cc}");
}

#[tokio::test]
async fn info_alpha_and_frames_come_from_the_header() {
    let s = Imgedge::start(&local_tenant()).await;
    for (file, alpha) in [
        ("coffee_600x400.jpg", false),
        ("leaf_alpha_400x250.png", true),
        ("chelsea_451x300.png", false),
        ("leaf_alpha_400x250_lossy.webp", true),
        ("leaf_alpha_100x63_lossless.webp", true),
        ("coffee_300x200_lossy.webp", false),
        ("anim_tiny.gif", true),
    ] {
        let v = info_json(&s, &format!("/s:0/f:0/d:0/a:1/plain/{file}")).await;
        assert_eq!(v["alpha"], alpha, "{file}");
    }
    // frames as a full decode counts them
    for (file, format) in [("anim_tiny.gif", image::ImageFormat::Gif), ("anim_tiny.webp", image::ImageFormat::WebP)] {
        let bytes = std::fs::read(images_dir().join(file)).unwrap();
        let decoded = match format {
            image::ImageFormat::Gif => {
                use image::AnimationDecoder;
                image::codecs::gif::GifDecoder::new(std::io::Cursor::new(&bytes)).unwrap().into_frames().count()
            }
            _ => {
                use image::AnimationDecoder;
                image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(&bytes)).unwrap().into_frames().count()
            }
        };
        assert!(decoded > 1, "{file} is animated");
        let v = info_json(&s, &format!("/pn:1/plain/{file}")).await;
        assert_eq!(v["frames"], decoded as u64, "{file}");
    }
    let v = info_json(&s, "/frames:1/plain/coffee_600x400.jpg").await;
    assert_eq!(v["frames"], 1);
}

#[tokio::test]
async fn info_sha256_is_sha256sum_of_the_original() {
    let s = Imgedge::start(&local_tenant()).await;
    for file in ["coffee_600x400.jpg", "skimage_logo_rgba.png", "anim_tiny.webp"] {
        let out = Command::new("sha256sum").arg(images_dir().join(file)).output().unwrap();
        assert!(out.status.success());
        let want = String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_owned();
        let v = info_json(&s, &format!("/calc_hashsums:sha256/plain/{file}")).await;
        assert_eq!(v["hashsums"]["sha256"], want.as_str(), "{file}");
    }
    // the README's example, field for field
    let v = info_json(&s, "/a:1/pn:1/chs:sha256/plain/autumn_orient6_stored1920x1280.jpg").await;
    let want = serde_json::json!({"size": 341768, "format": "jpeg", "width": 1280, "height": 1920,
        "raw_width": 1920, "raw_height": 1280, "orientation": 6, "alpha": false, "frames": 1,
        "hashsums": {"sha256": "e82d0a5163ac83478ba44e404e04b336a3191418460c7677f5e99359b387fbab"}});
    assert_eq!(v, want);
}

#[tokio::test]
async fn info_refuses_bad_options_and_signatures() {
    let s = Imgedge::start(&local_tenant()).await;
    for (path, names) in [
        ("/foo:1/plain/coffee_600x400.jpg", "foo"),
        ("/w:100/plain/coffee_600x400.jpg", "w"),
        ("/chs:md5/plain/coffee_600x400.jpg", "chs"),
        ("/a:maybe/plain/coffee_600x400.jpg", "a"),
        ("/s:1:2/plain/coffee_600x400.jpg", "s"),
    ] {
        let (status, headers, body) = info(&s, "img.test", path).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(names), "{path}: {body}");
        assert_eq!(headers["cache-control"], "no-store");
    }
    // the signature covers the path after `/info/{signature}`, not `/info` itself
    let r = s.get("img.test", &sign("/info/plain/coffee_600x400.jpg")).await;
    assert_ne!(r.status().as_u16(), 200);
    let signed = sign("/plain/coffee_600x400.jpg");
    let r = s.get("img.test", &format!("/info/AAAA{}", &signed[signed[1..].find('/').unwrap() + 1..])).await;
    assert_eq!(r.status().as_u16(), 403);
    // a source that is not there, and an expired URL
    assert_eq!(info(&s, "img.test", "/plain/missing.jpg").await.0, 404);
    assert_eq!(info(&s, "img.test", "/exp:1000/plain/coffee_600x400.jpg").await.0, 404);
}

#[tokio::test]
async fn hostile_files_get_the_same_status_through_info_as_through_a_transform() {
    let tenant = format!(
        "  - id: h\n    hosts: [h.test]\n    keys: [{{key: \"{KEY}\", salt: \"{SALT}\"}}]\n    origins:\n      files: {{type: local, root: \"{}\"}}\n",
        hostile_dir().display()
    );
    let s = Imgedge::start(&tenant).await;
    let mut files: Vec<String> = std::fs::read_dir(hostile_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != "SHA256SUMS")
        .collect();
    files.sort();
    assert!(files.iter().filter(|f| !f.starts_with("gen_")).count() >= 15, "{files:?}");
    let mut mismatches = Vec::new();
    for f in &files {
        let r = s.get("h.test", &sign(&format!("/w:100/plain/{f}"))).await;
        let transform = r.status().as_u16();
        // every option: the header facts, the container walk for alpha and frames, the hash
        let (status, _, body) = info(&s, "h.test", &format!("/a:1/pn:1/chs:sha256/plain/{f}")).await;
        let (status2, _, _) = info(&s, "h.test", &format!("/plain/{f}")).await;
        // the bench corpus (../shared/bench/hostile/) answers exactly as a transform does;
        // the generated `gen_*` files may be corrupt only in their compressed data, which
        // an info request never decodes: there a transform's 422 may be an info 200
        let same = status == transform && status2 == transform;
        let payload_only = f.starts_with("gen_") && transform == 422 && status == 200 && status2 == 200;
        if !same && !payload_only {
            mismatches.push(format!(
                "{f}: transform {transform}, info {status} / {status2}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert!(s.log().lines().all(|l| !l.contains("panicked")), "{}", s.log());
}

fn ledger(path: &Path) -> Option<Totals> {
    let spool = Spool::open_existing(path).ok()?;
    spool.totals(None, None).ok()?.into_iter().find(|t| t.tenant == "b")
}

#[tokio::test]
async fn info_requests_are_metered_and_priced_as_info() {
    let tenant = format!(
        r#"  - id: b
    hosts: [img.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      local: {{type: local, root: "{}"}}
    cache: {{info_ttl: 90s}}
    billing:
      credits: {{transform: 1, info: 0.25, hit: 0, error: 0.5}}
"#,
        images_dir().display()
    );
    let s = Imgedge::start_with(&tenant, DEFAULT_CACHE, "usage:\n  flush_interval: 200ms\n").await;
    // two unique info requests (one twice: a miss and a hit), one transform, one bad info
    let (status, h, _) = info(&s, "img.test", "/plain/coffee_600x400.jpg").await;
    assert_eq!((status, h["x-cache"].to_str().unwrap()), (200, "MISS"));
    assert!(h["cache-control"].to_str().unwrap().starts_with("public, max-age=90"), "{h:?}");
    s.fill("img.test", &info_url("/plain/coffee_600x400.jpg")).await;
    let (status, h, _) = info(&s, "img.test", "/chs:sha256/plain/coffee_600x400.jpg").await;
    assert_eq!((status, h["x-cache"].to_str().unwrap()), (200, "MISS"));
    assert_eq!(s.get("img.test", &sign("/plain/coffee_600x400.jpg")).await.status(), 200);
    assert_eq!(info(&s, "img.test", "/nope:1/plain/coffee_600x400.jpg").await.0, 400);

    let info_ok = |cache: &str| {
        format!("imgedge_http_requests_total{{cache=\"{cache}\",operation=\"info\",status_class=\"2xx\"}}")
    };
    // `fill` may see a miss before the first write lands, and ends on a hit
    assert!(s.metric_settled(&info_ok("miss"), 2.0).await >= 2.0);
    assert!(s.metric_settled(&info_ok("hit"), 1.0).await >= 1.0);
    assert_eq!(
        s.metric_settled(r#"imgedge_http_requests_total{cache="miss",operation="transform",status_class="2xx"}"#, 1.0)
            .await,
        1.0
    );

    // the ledger, once flushed, holds what the metrics saw: info misses at 0.25, info
    // hits at 0, the transform at 1, the 400 at 0.5
    let path = s.dir.path().join("imgedge-usage.db");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (row, misses, hits) = loop {
        let (misses, hits) = (s.metric(&info_ok("miss")).await as u64, s.metric(&info_ok("hit")).await as u64);
        let row = ledger(&path);
        let done = row.as_ref().is_some_and(|r| r.requests == misses + hits + 2);
        if done || Instant::now() >= deadline {
            break (row.unwrap(), misses, hits);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(row.requests, misses + hits + 2, "{row:?}");
    assert_eq!(row.credits_milli, 250 * misses + 1000 + 500, "{row:?}");
    // two info requests and one transform: three unique billing keys
    assert_eq!(row.unique_transforms, 3, "{row:?}");
}

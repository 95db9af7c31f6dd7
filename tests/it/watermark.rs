//! Watermarks through the running binary: `wm`/`wmu` with the tenant's image, a forced
//! watermark that no URL removes, and a replaced watermark file that renders anew.
//!
//! The watermarks are opaque one-colour squares tiled with no gap (`re`), so a result that
//! carries one is that colour all over, whatever the size, crop or format, and one that
//! does not is the photo.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::harness::{images_dir, local_tenant_at, sign, Imgedge};

const MAGENTA: [u8; 3] = [255, 0, 255];
const BLUE: [u8; 3] = [0, 0, 255];

fn write_png(path: &Path, rgb: [u8; 3]) {
    image::RgbaImage::from_pixel(16, 16, image::Rgba([rgb[0], rgb[1], rgb[2], 255])).save(path).unwrap();
}

/// A directory with the photos the tests use and two watermark files.
fn origin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["coffee_600x400.jpg", "anim_tiny.gif", "skimage_logo_rgba.png"] {
        std::fs::copy(images_dir().join(f), dir.path().join(f)).unwrap();
    }
    write_png(&dir.path().join("wm.png"), MAGENTA);
    std::fs::create_dir(dir.path().join("brand")).unwrap();
    write_png(&dir.path().join("brand/blue.png"), BLUE);
    std::fs::write(dir.path().join("notimage.png"), "not an image").unwrap();
    dir
}

fn tenant(id: &str, host: &str, root: &Path, extra: &str) -> String {
    local_tenant_at(id, host, root) + extra
}

/// Share of pixels within 40 of `rgb` on every channel (alpha composited over black).
fn share_of(body: &[u8], rgb: [u8; 3]) -> f64 {
    let img = image::load_from_memory(body).unwrap_or_else(|e| panic!("not an image: {e}")).to_rgba8();
    let near = img
        .pixels()
        .filter(|p| (0..3).all(|c| (i32::from(p[c]) * i32::from(p[3]) / 255 - i32::from(rgb[c])).abs() <= 40))
        .count();
    near as f64 / f64::from(img.width() * img.height())
}

async fn get(s: &Imgedge, host: &str, path: &str, accept: Option<&str>) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    let r = s.request(reqwest::Method::GET, host, &sign(path), &headers).await;
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.bytes().await.unwrap().to_vec())
}

fn b64(s: &str) -> String {
    URL_SAFE_NO_PAD.encode(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_watermark_survives_every_url_trick() {
    let dir = origin_dir();
    let forced = "    transform: {negotiate: [webp], max_frames: 10}\n    presets: {default: \"wm:0\", nowm: \"wm:0/w:90\"}\n    watermark:\n      source: wm.png\n      force: {opacity: 1, position: re}\n";
    let s = Imgedge::start(&tenant("forced", "forced.test", dir.path(), forced)).await;
    let coffee = "coffee_600x400.jpg";
    let b64_source = b64(coffee);
    let (half1, half2) = b64_source.split_at(8);
    let tricks = [
        format!("/w:200/plain/{coffee}"),
        format!("/wm:0/w:200/plain/{coffee}"),
        format!("/watermark:0:nowe:0:0:0/plain/{coffee}"),
        format!("/wm:0.01:nowe:0:0:0.01/w:200/plain/{coffee}"),
        format!("/wm:1:ce/wmu:{}/w:200/plain/{coffee}", b64("brand/blue.png")),
        format!("/wmu:{}/plain/{coffee}", b64("local:brand/blue.png")),
        format!("/pr:nowm/plain/{coffee}"),
        format!("/preset:nowm:nowm/wm:0/plain/{coffee}"),
        // formats, spelled every way
        format!("/w:200/plain/{coffee}@png"),
        format!("/w:200/plain/{coffee}@webp"),
        format!("/f:gif/w:200/plain/{coffee}"),
        format!("/ext:jpg/w:200/plain/{coffee}"),
        format!("/q:10/mb:3000/w:200/plain/{coffee}"),
        // sizes and geometry
        format!("/rs:fill:10:10/plain/{coffee}"),
        format!("/w:1/h:1/plain/{coffee}"),
        format!("/c:0.1:0.1:nowe/plain/{coffee}"),
        format!("/pd:60/bg:000000/w:100/plain/{coffee}"),
        format!("/rs:fit:900:900:1:1/plain/{coffee}"),
        format!("/dpr:8/w:100/plain/{coffee}"),
        format!("/z:0.05/plain/{coffee}"),
        format!("/t:10/rot:90/fl:1:1/bl:5/pix:20/plain/{coffee}"),
        format!("/exar:1/rs:fit:300:100/plain/{coffee}"),
        // alpha sources, animations
        "/w:200/plain/skimage_logo_rgba.png".to_owned(),
        "/plain/anim_tiny.gif".to_owned(),
        // encoded and odd spellings of the source
        format!("/w:200/{b64_source}"),
        format!("/w:200/{half1}/{half2}.webp"),
        "/w:200/plain/coffee%5F600x400.jpg".to_owned(),
        format!("/w:200/plain/local:{coffee}"),
        format!("/w:200/cb:x/plain/{coffee}"),
    ];
    for path in &tricks {
        for accept in [None, Some("image/webp,*/*")] {
            let (status, headers, body) = get(&s, "forced.test", path, accept).await;
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            let share = share_of(&body, MAGENTA);
            assert!(share > 0.9, "{path} ({accept:?}): only {share:.2} of the result is watermark");
            assert!(headers.get("etag").is_some(), "{path}");
        }
        // a hit is the same image
        s.fill("forced.test", &sign(path)).await;
        let (_, headers, body) = get(&s, "forced.test", path, None).await;
        assert_eq!(headers.get("x-cache").unwrap(), "HIT", "{path}");
        assert!(share_of(&body, MAGENTA) > 0.9, "{path}: hit");
    }
    // passthrough would serve the original: refused however it is spelled
    for path in [
        format!("/raw:1/plain/{coffee}"),
        format!("/raw:true/wm:0/plain/{coffee}"),
        format!("/raw:T/{b64_source}"),
        format!("/skp:jpg/plain/{coffee}"),
        format!("/skip_processing:png:jpeg/w:100/plain/{coffee}"),
    ] {
        let (status, headers, body) = get(&s, "forced.test", &path, None).await;
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{path}: {text}");
        assert!(text.contains("watermarks every image"), "{path}: {text}");
        assert_eq!(headers.get("cache-control").unwrap(), "no-store");
    }
    // `/info` answers facts, never pixels
    let (status, headers, _) = {
        let r = s.get("forced.test", &format!("/info{}", sign(&format!("/plain/{coffee}")))).await;
        (r.status().as_u16(), r.headers().clone(), r.bytes().await.unwrap())
    };
    assert_eq!((status, headers.get("content-type").unwrap().to_str().unwrap()), (200, "application/json"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wm_draws_the_tenant_watermark_and_wmu_only_from_its_origins() {
    let dir = origin_dir();
    let s = Imgedge::start(&tenant("t", "wm.test", dir.path(), "    watermark: {source: wm.png}\n")).await;
    let coffee = "coffee_600x400.jpg";
    let (status, _, plain) = get(&s, "wm.test", &format!("/w:200/plain/{coffee}"), None).await;
    assert_eq!(status, 200);
    assert!(share_of(&plain, MAGENTA) < 0.05, "no wm, no watermark");
    let (_, _, drawn) = get(&s, "wm.test", &format!("/wm:1:re/w:200/plain/{coffee}"), None).await;
    assert!(share_of(&drawn, MAGENTA) > 0.9);
    let blue = format!("/wm:1:re/wmu:{}/w:200/plain/{coffee}", b64("brand/blue.png"));
    let (status, headers, body) = get(&s, "wm.test", &blue, None).await;
    assert_eq!(status, 200);
    assert!(share_of(&body, BLUE) > 0.9, "wmu names the image");
    assert!(headers.get("etag").is_some());
    // a small one in a corner leaves the rest of the photo alone
    let (_, _, corner) = get(&s, "wm.test", &format!("/wm:1:soea/w:200/plain/{coffee}"), None).await;
    let share = share_of(&corner, MAGENTA);
    assert!(share > 0.003 && share < 0.02, "16x16 of 200x133: {share}");
    for (wmu, status) in [
        (b64("missing.png"), 404),
        (b64("https://elsewhere.example/logo.png"), 400),
        (b64("other:logo.png"), 404),
        (b64("../wm.png"), 400),
        (b64("notimage.png"), 415),
    ] {
        let path = format!("/wm:1/wmu:{wmu}/w:100/plain/{coffee}");
        let (got, _, body) = get(&s, "wm.test", &path, None).await;
        assert_eq!(got, status, "{path}: {}", String::from_utf8_lossy(&body));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replacing_the_watermark_file_renders_anew() {
    let dir = origin_dir();
    let extra = "    watermark: {source: wm.png, revalidate: 0s}\n";
    let s = Imgedge::start(&tenant("t", "wm.test", dir.path(), extra)).await;
    let path = "/wm:1:re/w:120/plain/coffee_600x400.jpg";
    let (_, first, body) = get(&s, "wm.test", path, None).await;
    assert!(share_of(&body, MAGENTA) > 0.9);
    s.fill("wm.test", &sign(path)).await;

    write_png(&dir.path().join("wm.png"), BLUE);
    let (status, headers, body) = get(&s, "wm.test", path, None).await;
    assert_eq!(status, 200);
    assert_eq!(headers.get("x-cache").unwrap(), "MISS", "a new watermark is a new result");
    assert!(share_of(&body, BLUE) > 0.9, "drawn with the new file");
    assert_ne!(headers.get("etag"), first.get("etag"));
    s.fill("wm.test", &sign(path)).await;
    let (_, _, hit) = get(&s, "wm.test", path, None).await;
    assert!(share_of(&hit, BLUE) > 0.9);

    // the same bytes again: the first entry is still there
    write_png(&dir.path().join("wm.png"), MAGENTA);
    let (_, headers, body) = get(&s, "wm.test", path, None).await;
    assert_eq!(headers.get("x-cache").unwrap(), "HIT");
    assert!(share_of(&body, MAGENTA) > 0.9);
}

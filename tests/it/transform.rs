//! The transform engine through the running server: format negotiation (variants, `Vary`,
//! cache entries, billing), `raw`/`skp` passthrough, a tenant with the cache off, and one
//! request per option family checked by decoding the answer.

use std::path::Path;
use std::process::Command;

use image::GenericImageView;

use crate::harness::{bin, images_dir, local_tenant_at, sign, Imgedge};

const HOST: &str = "img.test";
const AVIF: &str = "image/avif,image/webp,image/apng,image/*,*/*;q=0.8";

/// Tenant `t1` on `img.test` over `root`, negotiating avif and webp, animations kept.
fn negotiating(root: &Path) -> String {
    local_tenant_at("t1", HOST, root) + "    transform: {negotiate: [avif, webp], max_frames: 50}\n"
}

async fn get(s: &Imgedge, path: &str, accept: Option<&str>) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let headers: Vec<(&str, &str)> = accept.map(|a| ("accept", a)).into_iter().collect();
    let r = s.request(reqwest::Method::GET, HOST, path, &headers).await;
    let status = r.status().as_u16();
    let h = r.headers().clone();
    (status, h, r.bytes().await.unwrap().to_vec())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name).map_or("", |v| v.to_str().unwrap())
}

/// `imgedge usage --json` row of tenant `t1` (after a graceful stop flushed everything).
fn usage_row(s: &mut Imgedge) -> serde_json::Value {
    s.stop();
    let out = Command::new(bin()).args(["usage", "--json", "-c"]).arg(&s.config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    j["rows"].as_array().unwrap().iter().find(|r| r["tenant"] == "t1").cloned().unwrap()
}

/// (width, height) of any format the server writes (AVIF through the engine's probe).
fn size_of(body: &[u8]) -> (u32, u32) {
    let p = imgedge::transform::probe(body).unwrap();
    (p.width, p.height)
}

#[tokio::test]
async fn negotiated_variants_vary_cache_and_bill_once() {
    let mut s = Imgedge::start(&negotiating(&images_dir())).await;
    let path = sign("/rs:fit:200:0/plain/coffee_600x400.jpg");
    let variants = [
        (Some(AVIF), "image/avif"),
        (Some("image/webp,image/*;q=0.8"), "image/webp"),
        // wildcards alone never imply avif or webp
        (Some("image/*,*/*;q=0.8"), "image/jpeg"),
        (None, "image/jpeg"),
        // q-values: avif refused, webp preferred
        (Some("image/avif;q=0,image/webp;q=0.5,*/*"), "image/webp"),
    ];
    let mut etags = Vec::new();
    for (i, (accept, want)) in variants.iter().enumerate() {
        let (status, h, body) = get(&s, &path, *accept).await;
        assert_eq!(status, 200, "{accept:?}\n{}", s.log());
        assert_eq!(header(&h, "content-type"), *want, "{accept:?}");
        assert_eq!(header(&h, "vary"), "Accept", "{accept:?}");
        // three variants, three cache entries: each is a miss once, then a hit
        let first = i < 3;
        assert_eq!(header(&h, "x-cache"), if first { "MISS" } else { "HIT" }, "{accept:?}");
        assert_eq!(size_of(&body), (200, 133), "{accept:?}");
        let (_, again, body2) = get(&s, &path, *accept).await;
        assert_eq!((header(&again, "x-cache"), header(&again, "vary")), ("HIT", "Accept"));
        assert_eq!(body, body2);
        etags.push(header(&h, "etag").to_owned());
    }
    // each variant has its own validator
    assert!(etags[0] != etags[1] && etags[1] != etags[2] && etags[2] == etags[3], "{etags:?}");

    // a conditional hit (304) still varies
    let r =
        s.request(reqwest::Method::GET, HOST, &path, &[("accept", AVIF), ("if-none-match", etags[0].as_str())]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(header(r.headers(), "vary"), "Accept");

    // an explicit format ignores Accept and never varies
    let explicit = sign("/rs:fit:200:0/f:png/plain/coffee_600x400.jpg");
    let (status, h, body) = get(&s, &explicit, Some(AVIF)).await;
    assert_eq!((status, header(&h, "content-type"), header(&h, "vary")), (200, "image/png", ""));
    assert_eq!(size_of(&body), (200, 133));
    let (_, h, _) = get(&s, &explicit, Some(AVIF)).await;
    assert_eq!((header(&h, "x-cache"), header(&h, "vary")), ("HIT", ""));

    // the negotiated URL is one unique transform whatever it was served as, rendered
    // once per variant; the explicit png is another
    let row = usage_row(&mut s);
    assert_eq!(row["requests"], 13, "{row}");
    assert_eq!(row["renders"], 4, "{row}");
    assert_eq!(row["unique_transforms"], 2, "{row}");
}

#[tokio::test]
async fn raw_and_skip_processing_pass_the_source_through() {
    let root = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(images_dir().join("coffee_600x400.jpg")).unwrap();
    let png = std::fs::read(images_dir().join("chelsea_451x300.png")).unwrap();
    // the extension lies: the type served comes from the bytes
    std::fs::write(root.path().join("photo.png"), &jpeg).unwrap();
    std::fs::write(root.path().join("cat.png"), &png).unwrap();
    std::fs::write(root.path().join("notes.jpg"), b"just some text, not an image").unwrap();
    std::fs::write(
        root.path().join("logo.svg"),
        br#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>"#,
    )
    .unwrap();
    let mut s = Imgedge::start(&negotiating(root.path())).await;

    // raw: the bytes as stored, typed by sniffing, never negotiated
    let raw = sign("/raw:1/rs:fit:100:0/plain/photo.png");
    for expect_cache in ["MISS", "HIT"] {
        let (status, h, body) = get(&s, &raw, Some(AVIF)).await;
        assert_eq!(status, 200, "{}", s.log());
        assert_eq!(header(&h, "content-type"), "image/jpeg");
        assert_eq!(header(&h, "vary"), "");
        assert_eq!(header(&h, "x-cache"), expect_cache);
        assert!(h.get("x-imgedge-passthrough").is_none(), "internal header leaked");
        assert!(body == jpeg, "raw body differs from the source");
    }
    for bad in ["notes.jpg", "logo.svg"] {
        let (status, h, _) = get(&s, &sign(&format!("/raw:1/plain/{bad}")), None).await;
        assert_eq!(status, 415, "{bad}");
        assert_eq!(header(&h, "cache-control"), "no-store");
    }

    // skp: only the listed source formats pass through
    let skipped = sign("/skp:jpg:webp/rs:fit:100:0/plain/photo.png");
    let (status, h, body) = get(&s, &skipped, Some("image/webp")).await;
    assert_eq!((status, header(&h, "content-type")), (200, "image/jpeg"));
    assert!(body == jpeg, "skp body differs from the source");
    let (status, h, body) = get(&s, &sign("/skp:jpg/rs:fit:100:0/plain/cat.png"), None).await;
    assert_eq!((status, header(&h, "content-type")), (200, "image/png"));
    assert_eq!(size_of(&body), (100, 67));

    // passthroughs are requests and bytes, not renders or unique transforms
    let row = usage_row(&mut s);
    assert_eq!(row["requests"], 6, "{row}");
    assert_eq!(row["errors"], 2, "{row}");
    assert_eq!(row["renders"], 1, "{row}");
    assert_eq!(row["unique_transforms"], 1, "{row}");
}

#[tokio::test]
async fn passthrough_hits_on_every_path_are_billed_as_their_miss() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = Imgedge::start(&negotiating(&images_dir())).await;
    let raw = sign("/raw:1/plain/coffee_600x400.jpg");
    // the miss, then pingora's hit that fills the front
    s.fill(HOST, &raw).await;
    // then hits of the hit path below pingora, read as raw bytes: no internal header
    let mut conn = tokio::net::TcpStream::connect(s.edge).await.unwrap();
    let body_len = std::fs::metadata(images_dir().join("coffee_600x400.jpg")).unwrap().len() as usize;
    for _ in 0..3 {
        conn.write_all(format!("GET {raw} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 65536];
        let head_end = loop {
            if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut chunk)).await.unwrap();
            got.extend_from_slice(&chunk[..n.unwrap()]);
        };
        while got.len() < head_end + body_len {
            let n = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut chunk)).await.unwrap();
            got.extend_from_slice(&chunk[..n.unwrap()]);
        }
        let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200") && head.contains("x-cache: hit\r\n"), "{head}");
        assert!(!head.contains("x-imgedge"), "internal header leaked: {head}");
    }
    assert_eq!(s.metric_settled("imgedge_edge_hit_path_requests_total", 3.0).await, 3.0);
    // a passthrough is requests and bytes, never a unique transform, on every path
    let row = usage_row(&mut s);
    assert!(row["requests"].as_u64().unwrap() >= 5, "{row}");
    assert_eq!(row["unique_transforms"], 0, "{row}");
}

#[tokio::test]
async fn a_tenant_with_the_cache_off_always_renders() {
    let tenant = local_tenant_at("t1", HOST, &images_dir()) + "    cache: {enabled: false}\n";
    let s = Imgedge::start(&tenant).await;
    let path = sign("/rs:fit:120:0/plain/coffee_600x400.jpg");
    for _ in 0..3 {
        let (status, h, body) = get(&s, &path, None).await;
        assert_eq!(status, 200, "{}", s.log());
        assert_eq!(header(&h, "x-cache"), "MISS");
        assert_eq!(size_of(&body), (120, 80));
    }
    let ok = s.metric("imgedge_renders_total{outcome=\"ok\"}").await;
    assert_eq!(ok, 3.0);
    // every transform records its phases
    let decodes = s.metric("imgedge_render_phase_seconds_count{phase=\"decode\"}").await;
    let encodes = s.metric("imgedge_render_phase_seconds_count{phase=\"encode\"}").await;
    assert_eq!((decodes, encodes), (3.0, 3.0));
}

/// A white 100×80 PNG with a red 40×20 block at (30, 30): `t` trims to the block.
fn bordered_png() -> Vec<u8> {
    let img = image::RgbImage::from_fn(100, 80, |x, y| {
        if (30..70).contains(&x) && (30..50).contains(&y) {
            image::Rgb([200, 20, 20])
        } else {
            image::Rgb([255, 255, 255])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A 60×40 RGBA PNG: the left half fully transparent, the right half opaque blue.
fn half_clear_png() -> Vec<u8> {
    let img = image::RgbaImage::from_fn(60, 40, |x, _| {
        if x < 30 {
            image::Rgba([0, 0, 0, 0])
        } else {
            image::Rgba([0, 0, 255, 255])
        }
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn near(a: [u8; 4], b: [u8; 4], tolerance: u8) -> bool {
    a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= tolerance)
}

#[tokio::test]
async fn every_option_family_end_to_end() {
    let root = tempfile::tempdir().unwrap();
    for f in ["coffee_600x400.jpg", "anim_tiny.gif", "anim_tiny.webp"] {
        std::fs::copy(images_dir().join(f), root.path().join(f)).unwrap();
    }
    std::fs::write(root.path().join("bordered.png"), bordered_png()).unwrap();
    std::fs::write(root.path().join("half_clear.png"), half_clear_png()).unwrap();
    let s = Imgedge::start(&negotiating(root.path())).await;

    type Check = Box<dyn Fn(&[u8]) -> Result<(), String>>;
    let dims = |w: u32, h: u32| -> Check {
        Box::new(move |b: &[u8]| {
            let got = size_of(b);
            (got == (w, h)).then_some(()).ok_or(format!("{got:?} instead of {w}x{h}"))
        })
    };
    let coffee = "plain/coffee_600x400.jpg";
    let plain = get(&s, &sign(&format!("/f:png/{coffee}")), None).await.2;
    let cases: Vec<(String, &str, Check)> = vec![
        (format!("/rs:fill:200:200/g:sm/{coffee}"), "image/jpeg", dims(200, 200)),
        (format!("/c:300:200/{coffee}"), "image/jpeg", dims(300, 200)),
        (format!("/rs:fit:300:300/ex:1/{coffee}"), "image/jpeg", dims(300, 300)),
        (format!("/rs:fit:300:300/exar:1/{coffee}"), "image/jpeg", dims(300, 300)),
        (format!("/rs:fit:200:0/pd:10:20/{coffee}"), "image/jpeg", dims(240, 153)),
        (format!("/rot:90/{coffee}"), "image/jpeg", dims(400, 600)),
        (
            format!("/fl:1/f:png/{coffee}"),
            "image/png",
            Box::new(move |b: &[u8]| {
                let (a, m) = (image::load_from_memory(&plain).unwrap(), image::load_from_memory(b).unwrap());
                let same = (0..600).step_by(37).all(|x| a.get_pixel(x, 200) == m.get_pixel(599 - x, 200));
                same.then_some(()).ok_or("not a horizontal mirror".into())
            }),
        ),
        (format!("/bl:5/{coffee}"), "image/jpeg", dims(600, 400)),
        (format!("/sh:2/{coffee}"), "image/jpeg", dims(600, 400)),
        (
            format!("/pix:10/f:png/{coffee}"),
            "image/png",
            Box::new(|b: &[u8]| {
                let img = image::load_from_memory(b).unwrap();
                let block = (0..10).all(|d| img.get_pixel(20 + d, 30 + d) == img.get_pixel(20, 30));
                block.then_some(()).ok_or("10x10 blocks are not uniform".into())
            }),
        ),
        (
            "/bg:ff0000/f:jpg/plain/half_clear.png".into(),
            "image/jpeg",
            Box::new(|b: &[u8]| {
                let img = image::load_from_memory(b).unwrap();
                let (clear, blue) = (img.get_pixel(10, 20).0, img.get_pixel(50, 20).0);
                (img.dimensions() == (60, 40) && near(clear, [255, 0, 0, 255], 40) && near(blue, [0, 0, 255, 255], 40))
                    .then_some(())
                    .ok_or(format!("transparent became {clear:?}, blue became {blue:?}"))
            }),
        ),
        ("/t:10/plain/bordered.png".into(), "image/png", dims(40, 20)),
        // imgproxy: min-width scales up to 300×200, then the result is cropped to the
        // requested height
        (format!("/rs:fit:0:100/mw:300/{coffee}"), "image/jpeg", dims(300, 100)),
        (format!("/w:100/mw:300/{coffee}"), "image/jpeg", dims(100, 200)),
        (format!("/z:0.5/{coffee}"), "image/jpeg", dims(300, 200)),
        (format!("/w:200/f:avif/{coffee}"), "image/avif", dims(200, 133)),
        (format!("/w:200/f:gif/{coffee}"), "image/gif", dims(200, 133)),
        (
            format!("/jpgo:1/{coffee}"),
            "image/jpeg",
            Box::new(|b: &[u8]| {
                b.windows(2).any(|w| w == [0xFF, 0xC2]).then_some(()).ok_or("no SOF2 (progressive) marker".into())
            }),
        ),
        (
            format!("/mb:15000/q:95/{coffee}"),
            "image/jpeg",
            Box::new(|b: &[u8]| (b.len() <= 15000).then_some(()).ok_or(format!("{} bytes over mb:15000", b.len()))),
        ),
        (format!("/fq:webp:5/f:webp/{coffee}"), "image/webp", dims(600, 400)),
        (
            "/f:gif/plain/anim_tiny.gif".into(),
            "image/gif",
            Box::new(|b: &[u8]| {
                use image::AnimationDecoder;
                let d = image::codecs::gif::GifDecoder::new(std::io::Cursor::new(b)).unwrap();
                let n = d.into_frames().count();
                (n > 1).then_some(()).ok_or(format!("{n} frame(s) with max_frames 50"))
            }),
        ),
        (
            "/rs:fit:32:32/plain/anim_tiny.webp".into(),
            "image/webp",
            Box::new(|b: &[u8]| {
                use image::AnimationDecoder;
                let d = image::codecs::webp::WebPDecoder::new(std::io::Cursor::new(b)).unwrap();
                let n = d.into_frames().count();
                (n > 1).then_some(()).ok_or(format!("{n} frame(s) with max_frames 50"))
            }),
        ),
    ];

    let mut failures = Vec::new();
    for (path, want_type, check) in &cases {
        // no Accept: the source format or the URL's
        let (status, h, body) = get(&s, &sign(path), None).await;
        let got_type = header(&h, "content-type");
        let outcome = if status != 200 {
            Err(format!("status {status}: {}", String::from_utf8_lossy(&body[..body.len().min(200)])))
        } else if got_type != *want_type {
            Err(format!("content-type {got_type}, want {want_type}"))
        } else {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&body)))
                .unwrap_or_else(|_| Err("cannot decode the answer".into()))
        };
        if let Err(e) = outcome {
            failures.push(format!("{path}: {e}"));
        }
    }
    // format_quality is honoured: webp at fq 5 is much smaller than at the default 80
    let low = get(&s, &sign(&format!("/fq:webp:5/f:webp/{coffee}")), None).await.2.len();
    let default = get(&s, &sign(&format!("/f:webp/{coffee}")), None).await.2.len();
    if low * 2 > default {
        failures.push(format!("fq:webp:5 gave {low} bytes against {default} at the default quality"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} option families failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

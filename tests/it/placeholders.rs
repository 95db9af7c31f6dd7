//! Colours and placeholders through the running binary: the `/info` options `average`,
//! `dominant_colors`, `palette`, `blurhash`, `thumbhash`, and the `placeholder`
//! transform option that draws them as an image.

use std::path::Path;

use serde_json::Value;

use crate::harness::{images_dir, local_tenant, local_tenant_at, sign, Imgedge};

fn info_url(path: &str) -> String {
    format!("/info{}", sign(path))
}

async fn get_json(s: &Imgedge, host: &str, path: &str) -> Value {
    let r = s.get(host, &info_url(path)).await;
    let status = r.status().as_u16();
    let body = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn golden_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/src")
}

/// Two tenants: the usual images (`img.test`) and the golden inputs (`golden.test`).
async fn start() -> Imgedge {
    Imgedge::start(&(local_tenant() + &local_tenant_at("g", "golden.test", &golden_dir()))).await
}

/// Mean of each channel over an RGBA image composited over white.
fn mean_rgb(img: &image::RgbaImage) -> [f64; 3] {
    let mut sum = [0f64; 3];
    for p in img.pixels() {
        let a = f64::from(p[3]) / 255.0;
        for (acc, c) in sum.iter_mut().zip(&p.0[..3]) {
            *acc += f64::from(*c) * a + 255.0 * (1.0 - a);
        }
    }
    let n = f64::from(img.width() * img.height());
    sum.map(|v| v / n)
}

fn base83(s: &str) -> u32 {
    const CHARS: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
    s.bytes().fold(0, |acc, c| acc * 83 + CHARS.iter().position(|b| *b == c).unwrap() as u32)
}

fn rgb_of(v: &Value) -> [f64; 3] {
    ["r", "g", "b"].map(|k| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}")))
}

#[tokio::test]
async fn info_hashes_equal_the_reference_strings() {
    let s = start().await;
    let refs: Value =
        serde_json::from_slice(&std::fs::read(golden_dir().join("../placeholders.json")).unwrap()).unwrap();
    let mut checked = 0;
    for name in std::fs::read_dir(golden_dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()) {
        let want = &refs[&name];
        let v = get_json(&s, "golden.test", &format!("/s:0/f:0/d:0/bh:4:3/th:1/plain/{name}")).await;
        assert_eq!(v["blurhash"], want["blurhash"]["4:3"], "{name}");
        assert_eq!(v["thumbhash"], want["thumbhash"], "{name}");
        let v = get_json(&s, "golden.test", &format!("/s:0/f:0/d:0/blurhash:9:9/plain/{name}")).await;
        assert_eq!(v["blurhash"], want["blurhash"]["9:9"], "{name}");
        checked += 1;
    }
    assert!(checked >= 11, "{checked} golden images");
    // an image with alpha: ThumbHash keeps it (its alpha flag is bit 23 of the header)
    let v = get_json(&s, "img.test", "/s:0/f:0/d:0/th:1/plain/leaf_alpha_400x250.png").await;
    assert_eq!(v["thumbhash"], refs["leaf_alpha_400x250.png"]["thumbhash"]);
}

#[tokio::test]
async fn info_colours_describe_the_image() {
    let s = start().await;
    let file = "coffee_600x400.jpg";
    let decoded = image::open(images_dir().join(file)).unwrap().to_rgba8();
    let want = mean_rgb(&decoded);
    let v = get_json(&s, "img.test", &format!("/s:0/f:0/d:0/average:1/dc:1/p:5/plain/{file}")).await;
    // the mean of the 100 px sample is the mean of the full image, up to resampling
    let avg = rgb_of(&v["average"]);
    for (got, want) in avg.iter().zip(want) {
        assert!((got - want).abs() <= 3.0, "average {avg:?} vs full-size mean {want:?}");
    }
    assert_eq!(v["average"]["a"], 255);
    let hex = v["average"]["hex"].as_str().unwrap();
    assert_eq!(hex, format!("#{:02x}{:02x}{:02x}", avg[0] as u8, avg[1] as u8, avg[2] as u8));
    // five colours, most common first, covering every pixel
    let palette = v["palette"].as_array().unwrap();
    assert_eq!(palette.len(), 5, "{v}");
    let shares: Vec<f64> = palette.iter().map(|c| c["share"].as_f64().unwrap()).collect();
    assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 0.001, "{shares:?}");
    // the six swatches, each one of the palette's kind (vibrant: saturated)
    let dc = v["dominant_colors"].as_object().unwrap();
    let keys: Vec<&str> = dc.keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 6, "{keys:?}");
    for k in ["vibrant", "dark_vibrant", "light_vibrant", "muted", "dark_muted", "light_muted"] {
        assert!(dc.contains_key(k), "{k}");
    }
    // build_missed fills every swatch
    let v = get_json(&s, "img.test", &format!("/s:0/f:0/d:0/dominant_colors:1:1/plain/{file}")).await;
    assert!(v["dominant_colors"].as_object().unwrap().values().all(Value::is_object), "{v}");

    // alpha: the average is weighted by it, and says how opaque the image is
    let file = "leaf_alpha_400x250.png";
    let decoded = image::open(images_dir().join(file)).unwrap().to_rgba8();
    let mean_a = decoded.pixels().map(|p| f64::from(p[3])).sum::<f64>() / f64::from(decoded.width() * decoded.height());
    let v = get_json(&s, "img.test", &format!("/s:0/f:0/d:0/avg:1/plain/{file}")).await;
    let a = v["average"]["a"].as_f64().unwrap();
    assert!(a < 250.0 && (a - mean_a).abs() <= 3.0, "alpha {a} vs {mean_a}");
    // orientation: an EXIF-rotated photo hashes like its upright copy (same pixels)
    let (a, b) = (
        get_json(&s, "golden.test", "/s:0/f:0/d:0/bh:4:3/plain/orient_6.jpg").await,
        get_json(&s, "golden.test", "/s:0/f:0/d:0/bh:4:3/plain/orient_1.jpg").await,
    );
    assert_eq!(a["blurhash"].as_str().unwrap().len(), 28);
    assert_eq!(a["blurhash"].as_str().unwrap()[..6], b["blurhash"].as_str().unwrap()[..6], "size flag and DC");
}

#[tokio::test]
async fn info_colour_options_refuse_bad_arguments() {
    let s = start().await;
    for (path, name) in [
        ("/p:1/plain/coffee_600x400.jpg", "p"),
        ("/palette:257/plain/coffee_600x400.jpg", "palette"),
        ("/bh:0:3/plain/coffee_600x400.jpg", "bh"),
        ("/blurhash:10:1/plain/coffee_600x400.jpg", "blurhash"),
        ("/bh:4/plain/coffee_600x400.jpg", "bh"),
        ("/th:maybe/plain/coffee_600x400.jpg", "th"),
        ("/dc:1:1:1/plain/coffee_600x400.jpg", "dc"),
        ("/avg:2/plain/coffee_600x400.jpg", "avg"),
    ] {
        let r = s.get("img.test", &info_url(path)).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains(name), "{path}: {body}");
    }
    // off spellings are accepted and share the default's cache entry
    let v = get_json(&s, "img.test", "/p:0/bh:0:0/th:0/avg:0/dc:0/plain/coffee_600x400.jpg").await;
    assert!(v.get("palette").is_none() && v.get("blurhash").is_none(), "{v}");
}

async fn image_of(s: &Imgedge, path: &str) -> (reqwest::header::HeaderMap, image::DynamicImage) {
    let r = s.get("img.test", &sign(path)).await;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.bytes().await.unwrap();
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    (headers, image::load_from_memory(&body).unwrap())
}

#[tokio::test]
async fn placeholder_option_renders_each_kind_in_any_format() {
    let s = start().await;
    let file = "coffee_600x400.jpg";
    let info = get_json(&s, "img.test", &format!("/s:0/f:0/d:0/bh:4:3/p:8/plain/{file}")).await;
    // the BlurHash's DC term: the mean colour in linear light, written as sRGB
    let dc = base83(&info["blurhash"].as_str().unwrap()[2..6]);
    let dc = [dc >> 16, (dc >> 8) & 255, dc & 255].map(f64::from);

    // natural sizes: the BlurHash at its 32 px sample (600x400 → 100x67 → 32x21), the
    // ThumbHash at its decoder's 32 px
    let (h, img) = image_of(&s, &format!("/plh:bh:4:3/plain/{file}@png")).await;
    assert_eq!(h["content-type"], "image/png");
    assert_eq!((img.width(), img.height()), (32, 21));
    // the hash drawn back: its mean is the hash's mean colour, and it is not flat
    let rgba = img.to_rgba8();
    let mean = mean_rgb(&rgba);
    for (m, a) in mean.iter().zip(dc) {
        assert!((m - a).abs() <= 8.0, "blurhash image mean {mean:?} vs its DC {dc:?}");
    }
    assert!(rgba.pixels().any(|p| p != rgba.get_pixel(0, 0)), "a BlurHash with AC terms is not flat");

    let (h, img) = image_of(&s, &format!("/placeholder:thumbhash/plain/{file}@webp")).await;
    assert_eq!(h["content-type"], "image/webp");
    assert_eq!(img.width(), 32);
    assert!((20..=23).contains(&img.height()), "{}x{}", img.width(), img.height());

    // resized to the requested size (enlarged: a placeholder is always small)
    let (_, img) = image_of(&s, &format!("/rs:fill:400:300/plh:th/plain/{file}@png")).await;
    assert_eq!((img.width(), img.height()), (400, 300));
    let r = s.get("img.test", &sign(&format!("/rs:fill:400:300/plh:th/plain/{file}@avif"))).await;
    assert_eq!((r.status().as_u16(), r.headers()["content-type"].to_str().unwrap()), (200, "image/avif"));
    let (_, img) = image_of(&s, &format!("/w:300/plh:blurhash/plain/{file}@jpg")).await;
    assert_eq!(img.width(), 300);

    // a flat image of the dominant colour: the palette's first
    let (_, img) = image_of(&s, &format!("/w:64/plh:color/plain/{file}@png")).await;
    let first = rgb_of(&info["palette"][0]);
    let rgba = img.to_rgba8();
    assert!(rgba.pixels().all(|p| p == rgba.get_pixel(0, 0)), "flat");
    let p = rgba.get_pixel(0, 0);
    assert_eq!([p[0], p[1], p[2], p[3]].map(f64::from), [first[0], first[1], first[2], 255.0], "{info}");

    // a transparent source keeps its transparency in a ThumbHash placeholder
    let (_, img) = image_of(&s, "/plh:th/plain/leaf_alpha_400x250.png").await;
    assert!(img.to_rgba8().pixels().any(|p| p[3] < 128), "alpha kept");

    // cached and billed as a transform
    let path = sign(&format!("/plh:bh:4:3/plain/{file}@png"));
    s.fill("img.test", &path).await;
    let r = s.get("img.test", &path).await;
    assert_eq!(r.headers()["x-cache"], "HIT");
    let ok = r#"imgedge_http_requests_total{cache="miss",operation="transform",status_class="2xx"}"#;
    assert!(s.metric(ok).await >= 6.0);
}

#[tokio::test]
async fn placeholder_option_refuses_bad_arguments() {
    let s = start().await;
    for path in [
        "/plh:foo/plain/coffee_600x400.jpg",
        "/plh:bh:0:3/plain/coffee_600x400.jpg",
        "/placeholder:blurhash:4:10/plain/coffee_600x400.jpg",
        "/plh:th:1/plain/coffee_600x400.jpg",
        "/plh:color/c:100:100/plain/coffee_600x400.jpg",
        "/t:10/plh:th/plain/coffee_600x400.jpg",
    ] {
        let r = s.get("img.test", &sign(path)).await;
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("plh") || body.contains("placeholder"), "{path}: {body}");
    }
}

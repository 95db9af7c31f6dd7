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
        let (status, _, body) =
            info(&s, "h.test", &format!("/a:1/pn:1/chs:sha256/exif:1/iptc:1/xmp:1/plain/{f}")).await;
        let (status2, _, _) = info(&s, "h.test", &format!("/plain/{f}")).await;
        // the colour facts and the placeholder image decode pixels, as a transform does:
        // exactly its status, corrupt compressed data included
        let (colors, _, colors_body) = info(&s, "h.test", &format!("/avg:1/dc:1/p:4/bh:4:3/th:1/plain/{f}")).await;
        let plh = s.get("h.test", &sign(&format!("/w:100/plh:bh:4:3/plain/{f}"))).await.status().as_u16();
        if colors != transform || plh != transform {
            mismatches.push(format!(
                "{f}: transform {transform}, info colours {colors}, placeholder {plh}: {}",
                String::from_utf8_lossy(&colors_body)
            ));
        }
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

/// A little-endian TIFF block: IFD0 (Make, Model, pointers), the Exif IFD (exposure,
/// aperture, body serial) and the GPS IFD (33°51'30.36" S, 151°12'40.8" E).
fn exif_block() -> Vec<u8> {
    // (tag, type, count, inline value or data)
    enum V {
        Ascii(&'static str),
        Rationals(&'static [(u32, u32)]),
        Long(u32),
    }
    fn ifd(out: &mut Vec<u8>, entries: &[(u16, V)]) {
        // entries, then the next-IFD offset (0), then the out-of-line data
        let start = out.len();
        let data_at = start + 2 + entries.len() * 12 + 4;
        let mut data = Vec::new();
        out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
        for (tag, v) in entries {
            out.extend_from_slice(&tag.to_le_bytes());
            let (typ, count, bytes) = match v {
                V::Ascii(s) => (2u16, s.len() as u32 + 1, [s.as_bytes(), b"\0"].concat()),
                V::Rationals(r) => (
                    5,
                    r.len() as u32,
                    r.iter().flat_map(|(n, d)| [n.to_le_bytes(), d.to_le_bytes()].concat()).collect(),
                ),
                V::Long(n) => (4, 1, n.to_le_bytes().to_vec()),
            };
            out.extend_from_slice(&typ.to_le_bytes());
            out.extend_from_slice(&count.to_le_bytes());
            if bytes.len() <= 4 {
                let mut inline = [0u8; 4];
                inline[..bytes.len()].copy_from_slice(&bytes);
                out.extend_from_slice(&inline);
            } else {
                out.extend_from_slice(&((data_at + data.len()) as u32).to_le_bytes());
                data.extend_from_slice(&bytes);
                if data.len() % 2 == 1 {
                    data.push(0);
                }
            }
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&data);
    }
    // fixed offsets: IFD0 at 8 and under 200 bytes, the Exif IFD at 200, the GPS IFD at 400
    let mut out = b"II*\0\x08\0\0\0".to_vec();
    ifd(
        &mut out,
        &[(0x010F, V::Ascii("Canon")), (0x0110, V::Ascii("EOS 5D")), (0x8769, V::Long(200)), (0x8825, V::Long(400))],
    );
    out.resize(200, 0);
    ifd(
        &mut out,
        &[(0x829A, V::Rationals(&[(1, 125)])), (0x829D, V::Rationals(&[(28, 10)])), (0xA431, V::Ascii("SN-0042"))],
    );
    out.resize(400, 0);
    ifd(
        &mut out,
        &[
            (0x0001, V::Ascii("S")),
            (0x0002, V::Rationals(&[(33, 1), (51, 1), (3036, 100)])),
            (0x0003, V::Ascii("E")),
            (0x0004, V::Rationals(&[(151, 1), (12, 1), (408, 10)])),
        ],
    );
    out
}

const XMP: &str = r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:format="image/jpeg"/></rdf:RDF></x:xmpmeta>"#;

/// APP13 `Photoshop 3.0` with one IPTC resource: a caption, two keywords, a city.
fn iptc_segment() -> Vec<u8> {
    let mut iim = Vec::new();
    for (dataset, value) in
        [(0u8, &b"\x00\x04"[..]), (120, b"A caf\xc3\xa9"), (25, b"coffee"), (25, b"cup"), (90, b"Turin")]
    {
        iim.extend_from_slice(&[0x1C, 2, dataset]);
        iim.extend_from_slice(&(value.len() as u16).to_be_bytes());
        iim.extend_from_slice(value);
    }
    let mut res = b"Photoshop 3.0\08BIM\x04\x04\0\0".to_vec();
    res.extend_from_slice(&(iim.len() as u32).to_be_bytes());
    res.extend_from_slice(&iim);
    if iim.len() % 2 == 1 {
        res.push(0);
    }
    res
}

fn jpeg_segment(marker: u8, body: &[u8]) -> Vec<u8> {
    let mut s = vec![0xFF, marker];
    s.extend_from_slice(&(body.len() as u16 + 2).to_be_bytes());
    s.extend_from_slice(body);
    s
}

fn png_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    // CRC-32 (IEEE), bitwise: a test needs no table
    let mut crc = !0u32;
    for b in kind.iter().chain(body) {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    let mut c = (body.len() as u32).to_be_bytes().to_vec();
    c.extend_from_slice(kind);
    c.extend_from_slice(body);
    c.extend_from_slice(&(!crc).to_be_bytes());
    c
}

fn webp_chunk(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut c = kind.to_vec();
    c.extend_from_slice(&(body.len() as u32).to_le_bytes());
    c.extend_from_slice(body);
    if body.len() % 2 == 1 {
        c.push(0);
    }
    c
}

/// The same metadata in a JPEG, a PNG and a WebP, written to `dir`.
fn write_metadata_sources(dir: &Path) {
    let exif = exif_block();
    let jpeg = std::fs::read(images_dir().join("coffee_600x400.jpg")).unwrap();
    let mut out = jpeg[..2].to_vec();
    out.extend(jpeg_segment(0xE1, &[&b"Exif\0\0"[..], &exif].concat()));
    out.extend(jpeg_segment(0xE1, &[&b"http://ns.adobe.com/xap/1.0/\0"[..], XMP.as_bytes()].concat()));
    out.extend(jpeg_segment(0xED, &iptc_segment()));
    out.extend_from_slice(&jpeg[2..]);
    std::fs::write(dir.join("meta.jpg"), out).unwrap();

    let png = std::fs::read(images_dir().join("chelsea_451x300.png")).unwrap();
    // after the signature and IHDR (8 + 25 bytes)
    let mut out = png[..33].to_vec();
    out.extend(png_chunk(b"eXIf", &exif));
    out.extend(png_chunk(b"iTXt", &[&b"XML:com.adobe.xmp\0\0\0\0\0"[..], XMP.as_bytes()].concat()));
    out.extend_from_slice(&png[33..]);
    std::fs::write(dir.join("meta.png"), out).unwrap();

    let webp = std::fs::read(images_dir().join("leaf_alpha_400x250_lossy.webp")).unwrap();
    let mut out = webp.clone();
    out[20] |= 0x08 | 0x04; // VP8X: EXIF and XMP present
    out.extend(webp_chunk(b"EXIF", &exif));
    out.extend(webp_chunk(b"XMP ", XMP.as_bytes()));
    let riff = (out.len() - 8) as u32;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    std::fs::write(dir.join("meta.webp"), out).unwrap();
}

fn meta_tenant(id: &str, host: &str, root: &Path, extra: &str) -> String {
    format!(
        "  - id: {id}\n    hosts: [{host}]\n    keys: [{{key: \"{KEY}\", salt: \"{SALT}\"}}]\n    origins:\n      local: {{type: local, root: \"{}\"}}\n{extra}",
        root.display()
    )
}

#[tokio::test]
async fn info_decodes_exif_iptc_and_xmp_from_jpeg_png_and_webp() {
    let root = tempfile::tempdir().unwrap();
    write_metadata_sources(root.path());
    let s = Imgedge::start(&meta_tenant("m", "img.test", root.path(), "")).await;
    for file in ["meta.jpg", "meta.png", "meta.webp"] {
        let v = info_json(&s, &format!("/s:0/f:0/d:0/exif:1/iptc:1/xmp:1/plain/{file}")).await;
        let exif = &v["exif"];
        assert_eq!((exif["Make"].as_str(), exif["Model"].as_str()), (Some("Canon"), Some("EOS 5D")), "{file}: {v}");
        assert_eq!(exif["BodySerialNumber"], "SN-0042", "{file}: {v}");
        assert_eq!(exif["ExposureTime"], "1/125 s", "{file}: {v}");
        assert_eq!(exif["FNumber"], "f/2.8", "{file}: {v}");
        assert_eq!(exif["GPSLatitudeRef"], "S", "{file}: {v}");
        let (lat, lon) = (exif["GPSLatitudeDecimal"].as_f64().unwrap(), exif["GPSLongitudeDecimal"].as_f64().unwrap());
        assert!((lat + 33.858433).abs() < 1e-6 && (lon - 151.211333).abs() < 1e-6, "{file}: {lat} {lon}");
        assert!(exif["GPSLatitude"].as_str().unwrap().starts_with("33 deg 51 min 30.36 sec"), "{file}: {v}");
        assert_eq!(v["xmp"], XMP, "{file}");
        if file == "meta.jpg" {
            assert_eq!(
                v["iptc"],
                serde_json::json!({"Caption-Abstract": ["A café"], "Keywords": ["coffee", "cup"], "City": ["Turin"]})
            );
        } else {
            // IPTC IIM lives in JPEG's APP13 only; other formats carry it inside XMP
            assert_eq!(v["iptc"], serde_json::json!({}), "{file}");
        }
    }
    // a source without metadata: empty maps and a null packet
    std::fs::copy(images_dir().join("coffee_600x400.jpg"), root.path().join("plain.jpg")).unwrap();
    let v = info_json(&s, "/s:0/f:0/d:0/exif:1/iptc:1/xmp:1/plain/plain.jpg").await;
    assert_eq!(v, serde_json::json!({"exif": {}, "iptc": {}, "xmp": null}));
    // canonical: one entry for every spelling
    let (_, h, _) = info(&s, "img.test", "/xmp:1/exif:true/plain/meta.jpg").await;
    assert_eq!(h["x-cache"], "MISS");
    s.fill("img.test", &info_url("/xmp:1/exif:true/plain/meta.jpg")).await;
    let (_, h, _) = info(&s, "img.test", "/exif:1/xmp:t/iptc:0/plain/meta.jpg").await;
    assert_eq!(h["x-cache"], "HIT");
    assert_eq!(info(&s, "img.test", "/exif:yes/plain/meta.jpg").await.0, 400);
}

#[tokio::test]
async fn hostile_exif_is_read_within_bounds() {
    let s = Imgedge::start(&meta_tenant("h", "h.test", &hostile_dir(), "")).await;
    let before = crate::harness::peak_rss(s.pid());
    for f in ["jpeg_giant_exif.jpg", "jpeg_exif_bad_ifd_count.jpg", "jpeg_60_max_app_segments.jpg"] {
        let (status, _, body) = info(&s, "h.test", &format!("/exif:1/iptc:1/xmp:1/plain/{f}")).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "{f}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let exif = v["exif"].as_object().unwrap_or_else(|| panic!("{f}: {v}"));
        // what could be read before the break, each value clipped
        assert!(exif.len() <= 512, "{f}: {} fields", exif.len());
        assert!(exif.values().all(|x| x.as_str().is_none_or(|t| t.len() <= 1024)), "{f}");
        assert!(body.len() < 1 << 20, "{f}: {} bytes of JSON", body.len());
    }
    let grown = crate::harness::peak_rss(s.pid()).saturating_sub(before);
    assert!(grown < 64 << 20, "peak RSS grew by {grown} bytes");
    assert!(s.log().lines().all(|l| !l.contains("panicked")), "{}", s.log());
}

#[tokio::test]
async fn a_tenant_may_withhold_metadata() {
    let root = tempfile::tempdir().unwrap();
    write_metadata_sources(root.path());
    let s = Imgedge::start(&meta_tenant("w", "img.test", root.path(), "    info: {withhold_metadata: true}\n")).await;
    for opt in ["exif", "iptc", "xmp"] {
        let (status, headers, body) = info(&s, "img.test", &format!("/{opt}:1/plain/meta.jpg")).await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{opt}: {body}");
        assert!(body.contains(&format!("option {opt} is withheld")), "{opt}: {body}");
        assert_eq!(headers["cache-control"], "no-store");
    }
    // switched off, or not asked for: answered
    let v = info_json(&s, "/exif:0/s:0/f:0/plain/meta.jpg").await;
    assert_eq!(
        v,
        serde_json::json!({"width": 600, "height": 400, "raw_width": 600, "raw_height": 400, "orientation": 1})
    );
}

//! URLs as imgproxy's official URL builders and examples write them, through the running
//! server: the signing examples' plain form, the docs' split base64 form, the Ruby gem's
//! escaped plain form, long option names, and the options added for imgproxy parity
//! (`fn`, `att`, `eth`, `ph`, `wm:0`) and refused (`wm` without a watermark image, `wmt`,
//! security options).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use image::GenericImageView;

use crate::harness::{images_dir, sign, HttpOrigin, Imgedge, KEY, SALT};

const HOST: &str = "web.test";

fn tenant(base: &str) -> String {
    format!(
        r#"  - id: web
    hosts: [{HOST}]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "{base}", allow_private: true}}
"#
    )
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    fn image(&self) -> (image::ImageFormat, u32, u32) {
        let format = image::guess_format(&self.body).unwrap();
        let (w, h) = image::load_from_memory(&self.body).unwrap().dimensions();
        (format, w, h)
    }
}

async fn get(s: &Imgedge, path: &str) -> Answer {
    let r = s.get(HOST, &sign(path)).await;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    Answer { status, headers, body: r.bytes().await.unwrap().to_vec() }
}

/// The docs' form: base64url without padding, split into 16-character segments.
fn b64_split(url: &str) -> String {
    let b64 = URL_SAFE_NO_PAD.encode(url);
    b64.as_bytes().chunks(16).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join("/")
}

/// Ruby's `CGI.escape`-style escaping the imgproxy gem applies to plain source URLs.
fn escape_all(url: &str) -> String {
    url.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_from_imgproxy_builders_work_unchanged() {
    let origin = HttpOrigin::start(images_dir()).await;
    let base = format!("http://{}/", origin.addr);
    let s = Imgedge::start(&tenant(&base)).await;
    let src = format!("{base}coffee_600x400.jpg");
    use image::ImageFormat::{Jpeg, Png, WebP};

    let cases: Vec<(String, (image::ImageFormat, u32, u32))> = vec![
        // examples/signature.{go,py,js,…}: the plain form with a full URL
        (format!("/rs:fit:300:300/plain/{src}"), (Jpeg, 300, 200)),
        // the docs' example: split base64 with an extension
        (format!("/rs:fill:300:400:0/g:sm/{}.png", b64_split(&src)), (Png, 300, 400)),
        // the Ruby gem without base64: the whole URL escaped, `@` extension
        (format!("/rs:fill:200:200:0/g:ce/plain/{}@webp", escape_all(&src)), (WebP, 200, 200)),
        // long option names, as builders with `use_short_options: false` write them
        (
            format!("/resize:fit:100:100:0:0/quality:80/format:webp/strip_metadata:1/{}", b64_split(&src)),
            (WebP, 100, 67),
        ),
        (
            format!("/resizing_type:fill/width:120/height:120/gravity:fp:0.5:0.5/enlarge:0/plain/{src}@png"),
            (Png, 120, 120),
        ),
        // options imgedge accepts without effect, as builders emit them
        (format!("/enforce_thumbnail:1/preserve_hdr:1/watermark:0/w:150/plain/{src}"), (Jpeg, 150, 100)),
        // `skp:svg` (imgedge never reads SVG) and an empty `cb:` (no cachebuster)
        (format!("/skp:svg/cb:/w:150/plain/{src}"), (Jpeg, 150, 100)),
    ];
    for (path, want) in &cases {
        let a = get(&s, path).await;
        assert_eq!(a.status, 200, "{path}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.image(), *want, "{path}");
        assert_eq!(a.header("content-disposition"), "", "{path}: only sent when asked");
    }
    // `eth`, `ph` and `wm:0` change nothing, so they share the plain request's cache entry
    s.fill(HOST, &sign(&format!("/w:150/plain/{src}"))).await;
    let a = get(&s, &format!("/eth:0/ph:0/wm:0/w:150/plain/{src}")).await;
    assert_eq!((a.status, a.header("x-cache")), (200, "HIT"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filename_and_attachment_set_content_disposition_on_misses_and_hits() {
    let origin = HttpOrigin::start(images_dir()).await;
    let base = format!("http://{}/", origin.addr);
    let s = Imgedge::start(&tenant(&base)).await;
    let src = format!("{base}coffee_600x400.jpg");
    let encoded = URL_SAFE_NO_PAD.encode("café \"menu\"");
    let cases = [
        (format!("/fn:coffee-small/w:100/plain/{src}@webp"), "inline; filename=\"coffee-small.webp\""),
        (format!("/att:1/w:100/plain/{src}"), "attachment; filename=\"coffee_600x400.jpg\""),
        (
            format!("/return_attachment:true/filename:{encoded}:1/w:100/{}.png", b64_split(&src)),
            "attachment; filename=\"caf_ %22menu%22.png\"; filename*=UTF-8''caf%C3%A9%20%22menu%22.png",
        ),
    ];
    for (path, want) in &cases {
        let a = get(&s, path).await;
        assert_eq!(a.status, 200, "{path}: {}", String::from_utf8_lossy(&a.body));
        assert_eq!(a.header("content-disposition"), *want, "{path}");
        // stored with the image: a hit carries it too
        s.fill(HOST, &sign(path)).await;
        let hit = get(&s, path).await;
        assert_eq!((hit.header("x-cache"), hit.header("content-disposition")), ("HIT", *want), "{path}");
    }
    // the name is part of the cache key: another name is another entry
    let a = get(&s, &format!("/fn:other/w:100/plain/{src}@webp")).await;
    assert_eq!((a.header("x-cache"), a.header("content-disposition")), ("MISS", "inline; filename=\"other.webp\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_imgproxy_options_get_their_documented_status() {
    let origin = HttpOrigin::start(images_dir()).await;
    let base = format!("http://{}/", origin.addr);
    let s = Imgedge::start(&tenant(&base)).await;
    let src = format!("{base}coffee_600x400.jpg");
    let cases = [
        // this tenant has no watermark image, and wmu names none
        ("wm:0.5:soea", 400, "no watermark image"),
        ("watermark:1", 400, "no watermark image"),
        ("wmt:aGk", 400, "wmt: not supported"),
        ("msr:100", 403, "security option msr is not allowed"),
        ("max_src_file_size:1000", 403, "security option max_src_file_size is not allowed"),
        ("maf:5", 403, "security option maf"),
        ("mafr:1", 403, "security option mafr"),
        ("mrd:100", 403, "security option mrd"),
    ];
    for (opt, status, text) in cases {
        let a = get(&s, &format!("/{opt}/w:100/plain/{src}")).await;
        let body = String::from_utf8_lossy(&a.body);
        assert_eq!(a.status, status, "{opt}: {body}");
        assert!(body.contains(text), "{opt}: {body}");
        assert_eq!(a.header("cache-control"), "no-store", "{opt}");
    }
    assert_eq!(origin.total.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was fetched");
}

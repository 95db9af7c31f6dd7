//! Hostile input through the running server: every file of `tests/data/hostile/` from a
//! local and an HTTP origin, concurrently, with bounded time and memory; origin faults;
//! SSRF refusals.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::harness::{
    free_port, hostile_dir, images_dir, peak_rss, sign, HttpOrigin, Imgedge, DEFAULT_CACHE, KEY, SALT,
};

/// Expected status of each hostile file (see ../shared/bench/README.md "hostile/").
const EXPECTED: &[(&str, u16)] = &[
    // size bombs: refused from the header, before any pixel buffer exists
    ("gif_frame_65535x65535.gif", 422),
    ("gif_screen_65535x65535.gif", 422),
    ("jpeg_sof_65500x65500.jpg", 422),
    ("png_dims_100000x100000.png", 422),
    ("png_zbomb_30000x30000.png", 422),
    // corrupt
    ("png_bad_crc.png", 422),
    ("polyglot_gif_html.gif", 422),
    // valid but nasty: re-encoded, metadata dropped
    ("jpeg_60_max_app_segments.jpg", 200),
    ("jpeg_exif_bad_ifd_count.jpg", 200),
    ("jpeg_giant_exif.jpg", 200),
    ("polyglot_jpeg_zip_html.jpg", 200),
    // libjpeg-turbo fills the missing rows with gray, as browsers do
    ("truncated.jpg", 200),
    // not images: never decoded, never passed through
    ("text_named.jpg", 415),
    ("xxe_script.svg", 415),
    ("zero_bytes.jpg", 415),
];

/// Peak RSS allowed for the whole concurrent hostile run (measured: see the report in
/// the test output; a bomb that allocated its declared size would need gigabytes).
const RSS_BOUND: u64 = 300 << 20;

fn tenants(http_base: &str) -> String {
    format!(
        r#"  - id: local
    hosts: [local.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      files: {{type: local, root: "{}"}}
  - id: web
    hosts: [web.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "{http_base}", allow_private: true}}
    limits:
      origin_timeout: 2s
"#,
        hostile_dir().display()
    )
}

async fn get(
    client: &reqwest::Client,
    s: &Imgedge,
    host: &str,
    path: &str,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let r = client
        .get(format!("http://{}{}", s.edge, path))
        .header("host", host)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_files_get_their_status_concurrently_with_bounded_memory() {
    // every file in the directory has an expectation
    // the generated files (`gen_*`, listed in generated.tsv) have their own test below
    let mut files: Vec<String> = std::fs::read_dir(hostile_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "SHA256SUMS" && n != GENERATED_TABLE && !n.starts_with("gen_"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = EXPECTED.iter().map(|(f, _)| (*f).to_owned()).collect();
    listed.sort();
    assert_eq!(files, listed, "tests/data/hostile and EXPECTED disagree");

    let origin = HttpOrigin::start(hostile_dir()).await;
    // a queue that holds all 90 requests: this test is about memory, not load shedding
    let render = "render:\n  workers: 2\n  queue: 100\n";
    let s = Imgedge::start_with(&tenants(&format!("http://{}/", origin.addr)), DEFAULT_CACHE, render).await;
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    // three rounds with distinct widths so the 200s are rendered each time, not hits
    for round in 0..3 {
        for host in ["local.test", "web.test"] {
            for (file, want) in EXPECTED {
                let (client, path) = (client.clone(), sign(&format!("/w:{}/plain/{file}@webp", 100 + round)));
                let url = format!("http://{}{}", s.edge, path);
                tasks.push(tokio::spawn(async move {
                    let t = Instant::now();
                    let r = client.get(url).header("host", host).send().await.unwrap();
                    let (status, headers) = (r.status().as_u16(), r.headers().clone());
                    let body = r.bytes().await.unwrap();
                    (host, *file, *want, status, headers, body, t.elapsed())
                }));
            }
        }
    }
    let mut report = Vec::new();
    for t in tasks {
        let (host, file, want, status, headers, body, took) = t.await.unwrap();
        report.push(format!("{host} {file}: {status} in {took:?}"));
        assert_eq!(status, want, "{host} {file}: {}", String::from_utf8_lossy(&body));
        assert!(took < Duration::from_secs(10), "{host} {file} took {took:?}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        if want == 200 {
            // the output is what we encoded, whatever the input claimed to be
            assert_eq!(headers["content-type"], "image/webp", "{file}");
            assert_eq!(image::guess_format(&body).unwrap(), image::ImageFormat::WebP, "{file}");
        } else {
            assert_eq!(headers["cache-control"], "no-store", "{file}");
        }
    }
    let rss = peak_rss(s.pid());
    eprintln!("{}\nhostile run: {:?}, peak RSS {} MiB", report.join("\n"), started.elapsed(), rss >> 20);
    assert!(rss < RSS_BOUND, "peak RSS {} MiB over {} MiB", rss >> 20, RSS_BOUND >> 20);

    // still alive and serving
    let (status, _, _) = get(&client, &s, "web.test", &sign("/w:50/plain/truncated.jpg")).await;
    assert_eq!(status, 200);
}

/// Written by scripts/gen-hostile.py next to the files it generates.
const GENERATED_TABLE: &str = "generated.tsv";

/// Peak RSS allowed for the generated corpus: the largest legitimate decode in it is a
/// 49 MP grey image (49 MB) on each of the two workers; every bomb would need gigabytes.
const GENERATED_RSS_BOUND: u64 = 400 << 20;

/// One row of generated.tsv: file, expected status, source width and height (for a 200),
/// expected status when the tenant keeps animations.
struct Generated {
    file: String,
    status: u16,
    width: u32,
    height: u32,
    animated: u16,
}

fn generated() -> Vec<Generated> {
    let table = std::fs::read_to_string(hostile_dir().join(GENERATED_TABLE)).unwrap();
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert!(f.len() >= 5, "bad row: {l}");
            Generated {
                file: f[0].to_owned(),
                status: f[1].parse().unwrap(),
                width: f[2].parse().unwrap(),
                height: f[3].parse().unwrap(),
                animated: f[4].parse().unwrap(),
            }
        })
        .collect()
}

/// Every generated malformed or extreme file (every input format: truncated, zero-sized,
/// over the pixel limit from headers that lie, decompression bombs, many-scan JPEGs…)
/// through a local origin, concurrently: its expected status, never a 5xx, a hang or a
/// crash, the 200s within the source's and the requested size, and bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn generated_hostile_files_get_their_answer_with_bounded_memory() {
    let rows = generated();
    let mut on_disk: Vec<String> = std::fs::read_dir(hostile_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("gen_"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = rows.iter().map(|r| r.file.clone()).collect();
    listed.sort();
    assert_eq!(on_disk, listed, "tests/data/hostile/gen_* and generated.tsv disagree: run scripts/gen-hostile.py");

    let render = "render:\n  workers: 2\n  queue: 400\n";
    // a second tenant keeps animations, so GIF and WebP also take the animation decoder
    let anim = format!(
        r#"  - id: anim
    hosts: [anim.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      files: {{type: local, root: "{}"}}
    transform: {{max_frames: 50}}
"#,
        hostile_dir().display()
    );
    let s = Imgedge::start_with(&(tenants("http://127.0.0.1:1/") + &anim), DEFAULT_CACHE, render).await;
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    let started = Instant::now();
    let mut tasks = Vec::new();
    // two rounds with distinct widths, so the 200s are rendered twice, not hits
    let animatable = |f: &str| f.ends_with(".gif") || f.ends_with(".webp");
    let requests = rows
        .iter()
        .map(|r| ("local.test", r))
        .chain(rows.iter().filter(|r| animatable(&r.file)).map(|r| ("anim.test", r)));
    let requests: Vec<_> = requests.collect();
    for round in 0..2u32 {
        for (host, row) in &requests {
            let (host, width) = (*host, 100 + round);
            let path = sign(&format!("/w:{width}/plain/{}@webp", row.file));
            let (client, url) = (client.clone(), format!("http://{}{}", s.edge, path));
            let want = if host == "anim.test" { row.animated } else { row.status };
            let (file, src) = (format!("{host} {}", row.file), (row.width, row.height));
            tasks.push(tokio::spawn(async move {
                let t = Instant::now();
                let r = client.get(url).header("host", host).send().await;
                let r = r.unwrap_or_else(|e| panic!("{file}: {e}"));
                let (status, headers) = (r.status().as_u16(), r.headers().clone());
                let body = r.bytes().await.unwrap_or_else(|e| panic!("{file}: {e}"));
                (file, want, src, width, status, headers, body, t.elapsed())
            }));
        }
    }
    let mut report = Vec::new();
    let mut failures = Vec::new();
    for t in tasks {
        let (file, want, (sw, sh), width, status, headers, body, took) = t.await.unwrap();
        let why = if status == 200 { String::new() } else { String::from_utf8_lossy(&body).trim().to_owned() };
        report.push(format!("{file}: {status} in {took:?} {why}"));
        if status != want {
            failures.push(format!("{file}: {status}, expected {want}: {}", String::from_utf8_lossy(&body)));
            continue;
        }
        assert!(took < Duration::from_secs(15), "{file} took {took:?}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        if want == 200 {
            assert_eq!(headers["content-type"], "image/webp", "{file}");
            let img = image::load_from_memory_with_format(&body, image::ImageFormat::WebP)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let (w, h) = (img.width(), img.height());
            assert!(w >= 1 && h >= 1 && w <= width.min(sw) && h <= sh, "{file}: {w}x{h} from {sw}x{sh}");
        } else {
            assert_eq!(headers["cache-control"], "no-store", "{file}");
        }
    }
    let rss = peak_rss(s.pid());
    eprintln!("{}\ngenerated hostile run: {:?}, peak RSS {} MiB", report.join("\n"), started.elapsed(), rss >> 20);
    assert!(failures.is_empty(), "{} unexpected answers:\n{}", failures.len(), failures.join("\n"));
    assert!(rss < GENERATED_RSS_BOUND, "peak RSS {} MiB over {} MiB", rss >> 20, GENERATED_RSS_BOUND >> 20);

    // still alive and serving
    let (status, _, _) = get(&client, &s, "local.test", &sign("/w:50/plain/gen_png_valid_2x2.png")).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_faults_map_to_statuses_and_are_never_cached() {
    let origin = HttpOrigin::start(images_dir()).await;
    let s = Imgedge::start(&tenants(&format!("http://{}/", origin.addr))).await;
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
    let cases: &[(&str, u16)] = &[
        ("reset", 502),
        // fewer bytes than Content-Length: the client sees the connection end early
        ("short", 502),
        // more bytes than Content-Length: only the declared bytes count, a truncated PNG
        ("long", 422),
        // HTML behind an image extension: sniffed, not trusted
        ("html", 415),
    ];
    for (fault, want) in cases {
        let file = format!("/{fault}/chelsea_451x300.png");
        for _ in 0..2 {
            let t = Instant::now();
            let (status, headers, body) = get(&client, &s, "web.test", &sign(&format!("/w:60/plain{file}"))).await;
            assert_eq!(status, *want, "{fault}: {}", String::from_utf8_lossy(&body));
            assert_eq!(headers["cache-control"], "no-store", "{fault}");
            assert_eq!(headers["x-cache"], "MISS", "{fault}: never served from cache");
            assert!(t.elapsed() < Duration::from_secs(5), "{fault} took {:?}", t.elapsed());
        }
        assert!(origin.hits(&file) >= 2, "{fault}: both requests reached the origin");
    }

    // a redirect within the origin's host is followed
    let (status, _, _) = get(&client, &s, "web.test", &sign("/w:60/plain/redirect-same/coffee_600x400.jpg")).await;
    assert_eq!(status, 200);
    // a redirect to another host is refused
    let (status, headers, body) =
        get(&client, &s, "web.test", &sign("/w:60/plain/redirect-other/coffee_600x400.jpg")).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(origin.hits("/coffee_600x400.jpg"), 1, "only the same-host redirect was followed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_are_502() {
    // a port nothing listens on
    let base = format!("http://127.0.0.1:{}/", free_port());
    let s = Imgedge::start(&tenants(&base)).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let t = Instant::now();
    let (status, headers, _) = get(&client, &s, "web.test", &sign("/w:60/plain/coffee_600x400.jpg")).await;
    assert_eq!(status, 502);
    assert_eq!(headers["cache-control"], "no-store");
    assert!(t.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_addresses_are_refused_unless_allowed() {
    let origin = HttpOrigin::start(images_dir()).await;
    let port = origin.addr.port();
    // `localhost` resolves to loopback: refused at connect time, nothing is sent
    let tenant = format!(
        r#"  - id: web
    hosts: [web.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "http://localhost:{port}/"}}
"#
    );
    let s = Imgedge::start(&tenant).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let (status, headers, body) = get(&client, &s, "web.test", &sign("/w:60/plain/coffee_600x400.jpg")).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(String::from_utf8_lossy(&body).trim(), "source address not allowed");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(origin.total.load(Ordering::SeqCst), 0, "nothing reached the origin");

    // IP-literal base URLs in any spelling are refused when the config loads
    for base in
        ["http://127.0.0.1:8080/", "http://2130706433/", "http://[::ffff:127.0.0.1]/", "http://169.254.169.254/"]
    {
        let yaml = format!(
            "listen: {{edge: [\"127.0.0.1:1\"], render_socket: r.sock}}\ntenants:\n  - id: t\n    hosts: [a.test]\n    \
             allow_unsigned: true\n    origins: {{site: {{type: http, base_url: \"{base}\"}}}}\n"
        );
        let err = imgedge::config::load_str(&yaml, std::path::Path::new("/tmp/x.yaml")).unwrap_err();
        assert!(err.to_string().contains("allow_private"), "{base}: {err}");
    }
}

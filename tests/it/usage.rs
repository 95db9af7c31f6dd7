//! Usage metering through the running server: the ledger (SQLite, and PostgreSQL started
//! here from Debian's package) equals what the client did, exactly; crashes lose at most
//! one flush interval; graceful stops and upgrades lose nothing; a PostgreSQL outage
//! delivers every batch once; `/metrics` matches the requests made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use imgedge::usage::batch::{Batch, Row};
use imgedge::usage::pg::{Applied, PgSink, SinkError};
use imgedge::usage::spool::Spool;
use imgedge::usage::telemetry::{content_type_index, CONTENT_TYPES};
use imgedge::usage::{BillingKey, Totals};

use crate::harness::{bin, images_dir, sign, Imgedge, DEFAULT_CACHE, KEY, SALT};
use crate::pg::Pg;

/// Two tenants: `t1` with default credits (transform 1, hit 0, error 0) and `t2` with
/// its own prices and per-tenant metrics. Both serve `root`.
fn tenants(root: &Path) -> String {
    let r = root.display();
    format!(
        r#"  - id: t1
    hosts: [img.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      local: {{type: local, root: "{r}"}}
  - id: t2
    hosts: [two.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      local: {{type: local, root: "{r}"}}
    billing:
      credits: {{transform: 2, info: 0.5, hit: 0.25, error: 0.5}}
      per_tenant_metrics: true
"#
    )
}

/// Credits in thousandths, as configured above: (transform miss, info miss, hit, error).
fn prices(host: &str) -> (u64, u64, u64, u64) {
    if host == "two.test" {
        (2000, 500, 250, 500)
    } else {
        (1000, 1000, 0, 0)
    }
}

/// An origin directory with one good image and one that is not an image.
fn origin_root() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::copy(images_dir().join("coffee_600x400.jpg"), d.path().join("coffee.jpg")).unwrap();
    std::fs::write(d.path().join("bad.jpg"), b"this is not an image at all").unwrap();
    d
}

fn usage_yaml(interval: &str, postgres: Option<&str>) -> String {
    let mut y = format!("usage:\n  flush_interval: {interval}\n");
    if let Some(url) = postgres {
        y.push_str(&format!("  postgres: \"{url}\"\n"));
    }
    y
}

async fn start(root: &Path, interval: &str, postgres: Option<&str>) -> Imgedge {
    Imgedge::start_with(&tenants(root), DEFAULT_CACHE, &usage_yaml(interval, postgres)).await
}

fn spool_path(s: &Imgedge) -> PathBuf {
    s.dir.path().join("imgedge-usage.db")
}

/// What the client saw of one tenant, priced as configured.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Tally {
    requests: u64,
    bytes_out: u64,
    hits: u64,
    misses: u64,
    renders: u64,
    errors: u64,
    credits_milli: u64,
    /// Of the above: `/info` requests and their credits.
    info_requests: u64,
    info_credits_milli: u64,
}

impl Tally {
    fn of(t: &Totals) -> Tally {
        Tally {
            requests: t.requests,
            bytes_out: t.bytes_out,
            hits: t.cache_hits,
            misses: t.cache_misses,
            renders: t.renders,
            errors: t.errors,
            credits_milli: t.credits_milli,
            info_requests: t.info_requests,
            info_credits_milli: t.info_credits_milli,
        }
    }
}

/// Per tenant host: the tally; per (operation, status class, cache) label set: requests;
/// per tenant host the telemetry the client can tell: requests by calling site, and
/// requests and bytes by content type.
#[derive(Debug, Default)]
struct Seen {
    tenants: BTreeMap<String, Tally>,
    series: BTreeMap<(String, String, String), u64>,
    bytes: u64,
    sites: BTreeMap<String, BTreeMap<String, u64>>,
    types: BTreeMap<String, BTreeMap<String, (u64, u64)>>,
}

/// Request headers as (name, value).
type Headers<'a> = &'a [(&'a str, &'a str)];

/// The calling site a request with these headers counts for.
fn site_of(headers: &[(&str, &str)]) -> String {
    let host = |name: &str| {
        headers.iter().find(|(n, _)| *n == name).and_then(|(_, v)| {
            let rest = v.split_once("://")?.1;
            Some(rest.split(['/', ':']).next()?.to_owned())
        })
    };
    host("origin").or_else(|| host("referer")).unwrap_or_else(|| "(none)".to_owned())
}

/// The ledger's telemetry equals what the client saw, and each part adds up to the
/// request count: every request is in one site, one latency bucket, one content type.
fn assert_telemetry(row: &Totals, seen: &Seen, host: &str) {
    let t = &row.telemetry;
    assert_eq!(t.sites, seen.sites.get(host).cloned().unwrap_or_default(), "{host} sites");
    let types: BTreeMap<String, (u64, u64)> =
        t.content_types.iter().map(|(k, v)| (k.clone(), (v.requests, v.bytes))).collect();
    assert_eq!(types, seen.types.get(host).cloned().unwrap_or_default(), "{host} content types");
    assert_eq!(t.latency_ms.iter().map(|b| b.requests).sum::<u64>(), row.requests, "{host} latency buckets");
}

/// Telemetry that adds up when the client's view is not known exactly (kill -9).
fn assert_telemetry_adds_up(row: &Totals) {
    let t = &row.telemetry;
    assert_eq!(t.sites.values().sum::<u64>(), row.requests);
    assert_eq!(t.latency_ms.iter().map(|b| b.requests).sum::<u64>(), row.requests);
    assert_eq!(t.content_types.values().map(|c| c.requests).sum::<u64>(), row.requests);
    assert_eq!(t.content_types.values().map(|c| c.bytes).sum::<u64>(), row.bytes_out);
}

impl Seen {
    /// GETs `path` with `Host: host` and records what came back. `tenant` is false for a
    /// host no tenant owns.
    async fn get(&mut self, s: &Imgedge, host: &str, path: &str) -> u16 {
        self.get_with(s, host, path, &[]).await
    }

    /// [`Seen::get`] with request headers (`Origin`, `Referer`).
    async fn get_with(&mut self, s: &Imgedge, host: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
        let r = s.request(reqwest::Method::GET, host, path, headers).await;
        let status = r.status().as_u16();
        let cache = r.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned());
        let content_type = r.headers().get("content-type").map(|v| v.as_bytes().to_vec());
        let body = r.bytes().await.unwrap();
        let (cache, admitted) = match cache.as_deref() {
            Some("HIT") => ("hit", true),
            Some("STALE") => ("stale", true),
            Some("MISS") => ("miss", true),
            None => ("none", false),
            Some(other) => panic!("x-cache {other}"),
        };
        let class = format!("{}xx", status / 100);
        let info = path.starts_with("/info/");
        let op = match (admitted, info) {
            (false, _) => "none",
            (true, true) => "info",
            (true, false) => "transform",
        };
        *self.series.entry((op.to_owned(), class, cache.to_owned())).or_default() += 1;
        self.bytes += body.len() as u64;
        // an unknown host or a bad signature is nobody's: never charged to a tenant
        if host != "nobody.test" && !path.strip_prefix("/info").unwrap_or(path).starts_with(BAD_SIG) {
            let (transform_price, info_price, hit_price, error_price) = prices(host);
            let miss_price = if info { info_price } else { transform_price };
            *self.sites.entry(host.to_owned()).or_default().entry(site_of(headers)).or_default() += 1;
            let ct = CONTENT_TYPES[content_type_index(content_type.as_deref())].to_owned();
            let typ = self.types.entry(host.to_owned()).or_default().entry(ct).or_default();
            typ.0 += 1;
            typ.1 += body.len() as u64;
            let t = self.tenants.entry(host.to_owned()).or_default();
            let error = status >= 400;
            t.requests += 1;
            t.bytes_out += body.len() as u64;
            t.hits += u64::from(cache == "hit" || cache == "stale");
            t.misses += u64::from(cache == "miss");
            // an info answer transforms nothing: not a render
            t.renders += u64::from(cache == "miss" && status == 200 && !info);
            t.errors += u64::from(error);
            let credits = if error {
                error_price
            } else if cache == "hit" {
                hit_price
            } else {
                miss_price
            };
            t.credits_milli += credits;
            if info {
                t.info_requests += 1;
                t.info_credits_milli += credits;
            }
        }
        status
    }

    fn tally(&self, host: &str) -> Tally {
        self.tenants.get(host).cloned().unwrap_or_default()
    }
}

fn future() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600
}

/// A signature segment no key makes.
const BAD_SIG: &str = "/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// The known mix. t1: one transform three ways (two spellings, an expiring URL: one
/// unique transform), the same in WebP and PNG (explicit formats: two more), a
/// cachebuster (one more), bad signatures, a missing source twice, a non-image, an
/// expired URL. t2: one transform three times and a bad signature. Plus an unknown host.
/// Returns the number of unique transforms per tenant host.
async fn drive_mix(s: &Imgedge, seen: &mut Seen) -> BTreeMap<&'static str, u64> {
    let a = sign("/w:100/plain/coffee.jpg");
    let bad_sig = format!("{BAD_SIG}/w:100/plain/coffee.jpg");
    let t1 = [
        (a.clone(), 200),
        (a.clone(), 200),
        (a.clone(), 200),
        (sign("/width:100/plain/coffee.jpg"), 200),
        (sign(&format!("/exp:{}/w:100/plain/coffee.jpg", future())), 200),
        (sign("/w:100/plain/coffee.jpg@webp"), 200),
        (sign("/w:100/plain/coffee.jpg@webp"), 200),
        (sign("/w:100/plain/coffee.jpg@png"), 200),
        (sign("/w:100/cb:1/plain/coffee.jpg"), 200),
        (bad_sig.clone(), 403),
        (bad_sig.clone(), 403),
        (sign("/w:100/plain/missing.jpg"), 404),
        (sign("/w:100/plain/missing.jpg"), 404),
        (sign("/w:100/plain/bad.jpg"), 415),
        (sign("/exp:1/w:100/plain/coffee.jpg"), 404),
    ];
    for (path, want) in &t1 {
        assert_eq!(seen.get(s, "img.test", path).await, *want, "{path}\n{}", s.log());
    }
    // calling sites: Origin first, else Referer; `null` and no header are no site
    let t2: [(&str, u16, Headers); 5] = [
        (a.as_str(), 200, &[("origin", "https://shop.example")]),
        (a.as_str(), 200, &[("referer", "https://blog.example/post/1?x=1")]),
        (a.as_str(), 200, &[("origin", "null"), ("referer", "https://blog.example/")]),
        (a.as_str(), 200, &[]),
        (bad_sig.as_str(), 403, &[("origin", "https://shop.example:8443"), ("referer", "https://blog.example/")]),
    ];
    for (path, want, headers) in t2 {
        assert_eq!(seen.get_with(s, "two.test", path, headers).await, want, "{path}");
    }
    assert_eq!(seen.get(s, "nobody.test", &a).await, 404);
    BTreeMap::from([("img.test", 4), ("two.test", 1)])
}

const TENANT_OF: [(&str, &str); 2] = [("img.test", "t1"), ("two.test", "t2")];

/// Ledger rows of the embedded ledger, by tenant.
fn sqlite_ledger(path: &Path) -> BTreeMap<String, Totals> {
    let spool = Spool::open_existing(path).unwrap();
    spool.totals(None, None).unwrap().into_iter().map(|t| (t.tenant.clone(), t)).collect()
}

/// Polls `read` until `done` holds, for at most `limit`.
async fn until<T>(limit: Duration, mut read: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + limit;
    loop {
        let v = read();
        if done(&v) || Instant::now() >= deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `/info` + a signed info path.
fn info_url(path: &str) -> String {
    format!("/info{}", sign(path))
}

/// Info requests on top of [`drive_mix`]. t1: one info request three ways (a miss, a hit
/// or miss, another spelling: one unique info request), a `chs:sha256` one (another), a
/// missing source, a bad option, a bad signature. t2: one info request. Returns the unique
/// info requests per tenant host.
async fn drive_info(s: &Imgedge, seen: &mut Seen) -> BTreeMap<&'static str, u64> {
    let a = info_url("/plain/coffee.jpg");
    let t1 = [
        (a.clone(), 200),
        (a.clone(), 200),
        (info_url("/size:1/format:true/plain/coffee.jpg"), 200),
        (info_url("/chs:sha256/plain/coffee.jpg"), 200),
        (info_url("/plain/missing.jpg"), 404),
        (info_url("/w:100/plain/coffee.jpg"), 400),
        (format!("/info{BAD_SIG}/plain/coffee.jpg"), 403),
    ];
    for (path, want) in &t1 {
        assert_eq!(seen.get(s, "img.test", path).await, *want, "{path}\n{}", s.log());
    }
    assert_eq!(seen.get(s, "two.test", &a).await, 200);
    BTreeMap::from([("img.test", 2), ("two.test", 1)])
}

/// `uniques`: unique transforms per tenant host (info requests included), and of them
/// the unique info requests.
fn assert_ledger_matches(ledger: &BTreeMap<String, Totals>, seen: &Seen, uniques: &BTreeMap<&str, (u64, u64)>) {
    assert_eq!(ledger.len(), 2, "one row per tenant (one month): {ledger:?}");
    for (host, tenant) in TENANT_OF {
        let row = &ledger[tenant];
        assert_eq!(Tally::of(row), seen.tally(host), "{tenant}");
        assert_eq!((row.unique_transforms, row.unique_info), uniques[host], "{tenant} unique transforms, info");
        assert_telemetry(row, seen, host);
    }
}

#[tokio::test]
async fn ledger_counts_a_known_mix_exactly() {
    let root = origin_root();
    let mut s = start(root.path(), "200ms", None).await;
    let mut seen = Seen::default();
    let transforms = drive_mix(&s, &mut seen).await;
    let infos = drive_info(&s, &mut seen).await;
    let uniques: BTreeMap<&str, (u64, u64)> =
        transforms.iter().map(|(host, n)| (*host, (n + infos[host], infos[host]))).collect();
    // the numbers this mix must give, whatever the cache did in between; the first of
    // each info request is a miss, at the info price
    let t1 = seen.tally("img.test");
    assert_eq!((t1.requests, t1.renders, t1.errors), (19, 4, 6), "{t1:?}");
    assert_eq!((t1.info_requests, t1.credits_milli - t1.info_credits_milli), (6, 4000), "{t1:?}");
    assert!(t1.info_credits_milli >= 2000, "{t1:?}");
    let t2 = seen.tally("two.test");
    assert_eq!((t2.requests, t2.hits, t2.renders, t2.errors, t2.credits_milli), (5, 3, 1, 0, 3250), "{t2:?}");
    assert_eq!((t2.info_requests, t2.info_credits_milli), (1, 500), "{t2:?}");
    // the bad signature's sites are nobody's
    let sites = &seen.sites["two.test"];
    assert_eq!(
        sites.iter().map(|(k, v)| (k.as_str(), *v)).collect::<Vec<_>>(),
        // the info request sent no `Origin` or `Referer`
        [("(none)", 2), ("blog.example", 2), ("shop.example", 1)]
    );

    // periodic flushes bring everything into the ledger
    let path = spool_path(&s);
    let ledger = until(
        Duration::from_secs(10),
        || sqlite_ledger(&path),
        |l| l.get("t1").map(|t| t.requests) == Some(19) && l.get("t2").map(|t| t.requests) == Some(5),
    )
    .await;
    assert_ledger_matches(&ledger, &seen, &uniques);
    let spool = Spool::open_existing(&path).unwrap();
    let month = ledger["t1"].month.clone();
    assert_eq!(spool.unique_set_size("t1", &month).unwrap(), 6);
    assert_eq!(spool.unique_set_size("t2", &month).unwrap(), 2);

    // a graceful stop adds nothing that was not there
    s.stop();
    assert_ledger_matches(&sqlite_ledger(&path), &seen, &uniques);

    // and `imgedge usage` prints the same, as JSON and as a table
    let out = Command::new(bin()).args(["usage", "--json", "-c"]).arg(&s.config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = j["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["tenant"], "t1");
    assert_eq!(rows[0]["requests"], 19);
    assert_eq!(rows[0]["unique_transforms"], 6);
    assert_eq!((rows[0]["info_requests"].as_u64(), rows[0]["unique_info"].as_u64()), (Some(6), Some(2)));
    assert_eq!(rows[1]["credits"], 3.25);
    assert_eq!(rows[1]["info_credits"], 0.5);
    assert_eq!(rows[1]["telemetry"]["sites"]["blog.example"], 2);
    assert!(rows[1]["telemetry"]["content_types"]["image/jpeg"]["bytes"].as_u64().unwrap() > 0);
    let out =
        Command::new(bin()).args(["usage", "--tenant", "t2", "--month", &month, "-c"]).arg(&s.config).output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.starts_with("MONTH"), "{table}");
    assert!(table.lines().nth(1).unwrap().starts_with(&format!("{month}  t2")), "{table}");
    // info requests, unique info requests and info credits, apart
    assert!(table.lines().next().unwrap().ends_with("INFO_REQUESTS  UNIQUE_INFO  INFO_CREDITS"), "{table}");
    let cells: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(cells[cells.len() - 3..], ["1", "1", "0.500"], "{table}");
    // no row of t1 (the ledger's path below the rows is a temporary name: it may hold "t1")
    assert!(table.lines().all(|l| l.split_whitespace().nth(1) != Some("t1")), "{table}");
    let out = Command::new(bin()).args(["usage", "-c"]).arg(&s.config).output().unwrap();
    eprintln!("client saw: {:?}\nimgedge usage:\n{}", seen.tenants, String::from_utf8_lossy(&out.stdout));
    let out = Command::new(bin()).args(["usage", "--month", "2026-13", "-c"]).arg(&s.config).output().unwrap();
    assert!(!out.status.success());
}

fn sample_value(v: &prometheus_parse::Value) -> f64 {
    match v {
        prometheus_parse::Value::Counter(x)
        | prometheus_parse::Value::Gauge(x)
        | prometheus_parse::Value::Untyped(x) => *x,
        prometheus_parse::Value::Histogram(h) => h.iter().find(|b| b.less_than.is_infinite()).map_or(0.0, |b| b.count),
        prometheus_parse::Value::Summary(_) => 0.0,
    }
}

#[tokio::test]
async fn metrics_match_the_requests_made() {
    let root = origin_root();
    let s = start(root.path(), "200ms", None).await;
    let mut seen = Seen::default();
    drive_mix(&s, &mut seen).await;
    // wait for a flush so the usage series have moved too
    let path = spool_path(&s);
    until(Duration::from_secs(10), || sqlite_ledger(&path), |l| l.get("t2").map(|t| t.requests) == Some(4)).await;

    let text = s.ops_get("/metrics").await.text().await.unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let sum = |name: &str, filter: &dyn Fn(&prometheus_parse::Labels) -> bool| -> f64 {
        scrape.samples.iter().filter(|s| s.metric == name && filter(&s.labels)).map(|s| sample_value(&s.value)).sum()
    };

    // every (operation, status class, cache) series equals what the client saw
    let mut series = BTreeMap::new();
    for s in scrape.samples.iter().filter(|s| s.metric == "imgedge_http_requests_total") {
        let key = |n: &str| s.labels.get(n).unwrap().to_owned();
        series.insert((key("operation"), key("status_class"), key("cache")), sample_value(&s.value) as u64);
    }
    assert_eq!(series, seen.series.clone().into_iter().collect());
    assert_eq!(series.values().sum::<u64>(), 21);
    assert_eq!(sum("imgedge_http_request_duration_seconds", &|_| true), 21.0);
    assert_eq!(sum("imgedge_http_response_body_bytes_total", &|_| true), seen.bytes as f64);
    assert_eq!(sum("imgedge_renders_total", &|l| l.get("outcome") == Some("ok")), 5.0);
    assert_eq!(sum("imgedge_renders_total", &|_| true), 7.0, "5 renders, a missing source, a non-image");
    assert_eq!(sum("imgedge_origin_errors_total", &|l| l.get("kind") == Some("not_found")), 1.0);
    assert!(sum("imgedge_origin_body_bytes_total", &|_| true) > 0.0);
    assert_eq!(sum("imgedge_renders_in_progress", &|_| true), 0.0);
    assert_eq!(sum("imgedge_renders_queued", &|_| true), 0.0);

    // per-tenant series only for the tenant that opted in
    let t2 = seen.tally("two.test");
    assert_eq!(sum("imgedge_tenant_http_requests_total", &|l| l.get("tenant") == Some("t2")), t2.requests as f64);
    assert_eq!(sum("imgedge_tenant_http_requests_total", &|l| l.get("tenant") != Some("t2")), 0.0);
    assert_eq!(sum("imgedge_tenant_http_response_body_bytes_total", &|_| true), t2.bytes_out as f64);

    // requests that never verified are counted apart, by tenant and reason
    let unverified = |tenant: &str, reason: &str| {
        sum("imgedge_unverified_requests_total", &|l| {
            l.get("tenant") == Some(tenant) && l.get("reason") == Some(reason)
        })
    };
    assert_eq!(unverified("t1", "bad_signature"), 2.0);
    assert_eq!(unverified("t2", "bad_signature"), 1.0);
    assert_eq!(unverified("", "unknown_host"), 1.0);

    // the flusher's own series
    assert!(sum("imgedge_usage_flushes_total", &|l| l.get("result") == Some("spooled")) >= 1.0);
    assert_eq!(sum("imgedge_usage_spool_pending_batches", &|_| true), 0.0);
    assert_eq!(sum("imgedge_usage_spool_full", &|_| true), 0.0);
    assert!(sum("imgedge_usage_last_flush_timestamp_seconds", &|_| true) > 1.7e9);
}

/// Waits until PostgreSQL's row for `tenant` has `requests` requests (≤ `limit`).
async fn pg_until(pg: &Pg, tenant: &str, requests: u64, limit: Duration) -> Totals {
    let deadline = Instant::now() + limit;
    loop {
        let rows = pg.totals(tenant).await;
        if rows.first().is_some_and(|r| r.requests == requests) || Instant::now() >= deadline {
            assert_eq!(rows.len(), 1, "{rows:?}\n{}", pg.log());
            return rows.into_iter().next().unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Batch rows a spool has delivered (payload gone, shipped_at set) and still pending.
fn spool_batches(path: &Path) -> (i64, u64) {
    let spool = Spool::open_existing(path).unwrap();
    let conn = rusqlite_count(path, "SELECT count(*) FROM batches WHERE shipped_at > 0");
    (conn, spool.pending().unwrap().0)
}

fn rusqlite_count(path: &Path, sql: &str) -> i64 {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn two_processes_share_one_postgres_ledger() {
    let pg = Pg::start();
    let root = origin_root();
    let url = pg.url();
    let (mut p1, mut p2) =
        tokio::join!(start(root.path(), "200ms", Some(&url)), start(root.path(), "200ms", Some(&url)));
    // both serve A and B (each process renders them once: separate caches), then one
    // transform each that the other never sees: four unique transforms, not six; and
    // both answer info request E: one unique info request, not two
    let (a, b) = (sign("/w:90/plain/coffee.jpg"), sign("/w:90/plain/coffee.jpg@webp"));
    let (c, d) = (sign("/w:91/plain/coffee.jpg"), sign("/w:92/plain/coffee.jpg"));
    let e = info_url("/chs:sha256/plain/coffee.jpg");
    let mut s1 = Seen::default();
    let mut s2 = Seen::default();
    let run1 = async {
        for path in [&a, &b, &e, &a, &c, &b, &a] {
            assert_eq!(s1.get(&p1, "img.test", path).await, 200);
        }
    };
    let run2 = async {
        for path in [&b, &a, &d, &a, &e, &b, &d] {
            assert_eq!(s2.get(&p2, "img.test", path).await, 200);
        }
    };
    tokio::join!(run1, run2);
    let (t1, t2) = (s1.tally("img.test"), s2.tally("img.test"));
    let row = pg_until(&pg, "t1", 14, Duration::from_secs(20)).await;
    let sum = Tally {
        requests: t1.requests + t2.requests,
        bytes_out: t1.bytes_out + t2.bytes_out,
        hits: t1.hits + t2.hits,
        misses: t1.misses + t2.misses,
        renders: t1.renders + t2.renders,
        errors: 0,
        credits_milli: t1.credits_milli + t2.credits_milli,
        info_requests: 2,
        info_credits_milli: 2000,
    };
    assert_eq!(Tally::of(&row), sum);
    assert_eq!(row.renders, 6, "each process renders its three transforms once");
    assert_eq!(row.unique_transforms, 5, "A, B and E served by both processes count once");
    assert_eq!(row.unique_info, 1, "E, answered by both processes");
    assert_telemetry_adds_up(&row);
    assert_eq!(row.telemetry.sites["(none)"], 14);
    assert_eq!(pg.count("SELECT count(*) FROM imgedge_unique_transforms WHERE tenant = 't1'").await, 5);

    // stopping both adds nothing; every spooled batch is in the ledger exactly once
    let (d1, d2) = (spool_path(&p1), spool_path(&p2));
    p1.stop();
    p2.stop();
    let after = pg_until(&pg, "t1", 14, Duration::from_secs(5)).await;
    assert_eq!(Tally::of(&after), sum);
    let ((shipped1, pending1), (shipped2, pending2)) = (spool_batches(&d1), spool_batches(&d2));
    assert_eq!((pending1, pending2), (0, 0));
    assert_eq!(pg.count("SELECT count(*) FROM imgedge_usage_batches").await, shipped1 + shipped2);
}

fn row(tenant: &str, requests: u64, keys: &[u128]) -> Row {
    Row {
        month: "2026-11".into(),
        tenant: tenant.into(),
        requests,
        bytes_out: 10 * requests,
        cache_hits: 0,
        cache_misses: requests,
        renders: requests,
        errors: 0,
        credits_milli: 1000 * requests,
        keys: keys.iter().map(|k| BillingKey(*k).to_hex()).collect(),
        ..Row::default()
    }
}

#[tokio::test]
async fn postgres_applies_a_retried_batch_once() {
    let pg = Pg::start();
    // the monthly table as the release before info requests created it, with a row
    pg.execute(
        "CREATE TABLE imgedge_usage_monthly (month date NOT NULL, tenant text NOT NULL,
            requests bigint NOT NULL DEFAULT 0, bytes_out bigint NOT NULL DEFAULT 0,
            cache_hits bigint NOT NULL DEFAULT 0, cache_misses bigint NOT NULL DEFAULT 0,
            renders bigint NOT NULL DEFAULT 0, errors bigint NOT NULL DEFAULT 0,
            credits_milli bigint NOT NULL DEFAULT 0, unique_transforms bigint NOT NULL DEFAULT 0,
            PRIMARY KEY (month, tenant));
         INSERT INTO imgedge_usage_monthly (month, tenant, requests) VALUES ('2026-10-01', 'x', 9);",
    )
    .await;
    let mut sink = PgSink::new(&pg.url()).unwrap();
    // key 2 of x is an info request
    let mut x = row("x", 3, &[1, 2]);
    (x.info_requests, x.info_credits_milli, x.info_keys) = (1, 500, vec![BillingKey(2).to_hex()]);
    let b1 = Batch { v: 1, created_at: 1, rows: vec![x, row("y", 1, &[1])] };
    let j1 = b1.to_json();
    assert_eq!(sink.apply("install-a:1", &Batch::digest(&j1), &b1).await, Ok(Applied::Applied));
    // the acknowledgement was lost and the batch comes again
    assert_eq!(sink.apply("install-a:1", &Batch::digest(&j1), &b1).await, Ok(Applied::Duplicate));
    // a different batch under a used id is refused, not merged
    let b2 = Batch { v: 1, created_at: 2, rows: vec![row("x", 5, &[3])] };
    let j2 = b2.to_json();
    assert_eq!(sink.apply("install-a:1", &Batch::digest(&j2), &b2).await, Err(SinkError::Collision));
    // the next batch repeats key 2 and adds key 3, and info key 4
    let mut x = row("x", 3, &[2, 3, 4]);
    (x.info_requests, x.info_credits_milli) = (2, 1000);
    x.info_keys = vec![BillingKey(2).to_hex(), BillingKey(4).to_hex()];
    let b3 = Batch { v: 1, created_at: 3, rows: vec![x] };
    assert_eq!(sink.apply("install-b:1", &Batch::digest(&b3.to_json()), &b3).await, Ok(Applied::Applied));
    let x = &sink.totals(Some("x"), Some("2026-11")).await.unwrap()[0];
    assert_eq!((x.month.as_str(), x.requests, x.unique_transforms, x.credits_milli), ("2026-11", 6, 4, 6000));
    assert_eq!((x.info_requests, x.unique_info, x.info_credits_milli), (3, 2, 1500));
    // the older row reads, with no info requests
    let old = &sink.totals(Some("x"), Some("2026-10")).await.unwrap()[0];
    assert_eq!((old.requests, old.info_requests, old.unique_info), (9, 0, 0));
    let y = &sink.totals(Some("y"), Some("2026-11")).await.unwrap()[0];
    assert_eq!((y.requests, y.unique_transforms), (1, 1));
    assert!(sink.totals(None, Some("2026-09")).await.unwrap().is_empty());
    assert_eq!(pg.count("SELECT count(*) FROM imgedge_usage_batches").await, 2);
}

#[tokio::test]
async fn postgres_outage_delivers_every_batch_once() {
    let pg = Pg::start();
    let root = origin_root();
    let s = start(root.path(), "200ms", Some(&pg.url())).await;
    let path = spool_path(&s);
    let mut seen = Seen::default();
    let a = sign("/w:80/plain/coffee.jpg");
    for _ in 0..5 {
        assert_eq!(seen.get(&s, "img.test", &a).await, 200);
    }
    pg_until(&pg, "t1", 5, Duration::from_secs(20)).await;

    pg.stop_server();
    // load while the ledger is down: every flush becomes a pending batch
    let paths = [a.clone(), sign("/w:81/plain/coffee.jpg"), sign("/w:82/plain/coffee.jpg@webp")];
    let outage = Instant::now();
    let mut i = 0;
    while outage.elapsed() < Duration::from_millis(1500) {
        assert_eq!(seen.get(&s, "img.test", &paths[i % paths.len()]).await, 200);
        i += 1;
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let pending = until(Duration::from_secs(5), || spool_batches(&path).1, |p| *p >= 3).await;
    assert!(pending >= 3, "batches wait in the spool during the outage: {pending}");
    assert!(s.metric("imgedge_usage_spool_pending_batches").await >= 3.0);
    assert!(s.metric(r#"imgedge_usage_deliveries_total{result="error"}"#).await >= 1.0);

    pg.start_server();
    let t = seen.tally("img.test");
    let row = pg_until(&pg, "t1", t.requests, Duration::from_secs(30)).await;
    assert_eq!(Tally::of(&row), t, "every request once\n{}", s.log());
    assert_eq!(row.unique_transforms, 3);
    assert_telemetry(&row, &seen, "img.test");
    let pending = until(Duration::from_secs(5), || spool_batches(&path).1, |p| *p == 0).await;
    assert_eq!(pending, 0);
    let (shipped, _) = spool_batches(&path);
    assert_eq!(pg.count("SELECT count(*) FROM imgedge_usage_batches").await, shipped, "each batch exactly once");
    drop(s);
    assert_eq!(Tally::of(&pg_until(&pg, "t1", t.requests, Duration::from_secs(5)).await), t);
}

#[tokio::test]
async fn kill_9_loses_at_most_the_last_flush_interval() {
    const INTERVAL: Duration = Duration::from_millis(200);
    let root = origin_root();
    let mut s = start(root.path(), "200ms", None).await;
    let path = spool_path(&s);
    let a = sign("/w:70/plain/coffee.jpg");
    assert_eq!(s.get("img.test", &a).await.status(), 200);
    // hits as fast as one client goes, each completion time noted
    let mut done = vec![Instant::now()];
    let load = Instant::now();
    while load.elapsed() < Duration::from_millis(1200) {
        assert_eq!(s.get("img.test", &a).await.status(), 200);
        done.push(Instant::now());
    }
    let killed = Instant::now();
    s.kill9();

    let ledger = sqlite_ledger(&path);
    let counted = ledger.get("t1").map_or(0, |t| t.requests) as usize;
    if let Some(row) = ledger.get("t1") {
        assert_telemetry_adds_up(row);
    }
    // a flush every INTERVAL; the margin covers the flush's own commit (an fsync) and
    // scheduling on a busy two-core machine
    let safe = done.iter().filter(|t| **t + INTERVAL + Duration::from_millis(300) <= killed).count();
    assert!(counted <= done.len(), "counted {counted} of {} requests", done.len());
    assert!(counted >= safe, "lost more than one flush interval: {counted} counted, {safe} were due");
    // what was flushed is intact: the file checks out and every batch is in the ledger
    assert_eq!(rusqlite_text(&path, "PRAGMA integrity_check"), "ok");
    assert_eq!(rusqlite_count(&path, "SELECT coalesce(sum(requests), 0) FROM batches") as usize, counted);
    eprintln!("kill -9: {} requests done, {counted} counted, {safe} due", done.len());

    // the next run continues the same spool, and a graceful stop loses nothing
    s.restart().await;
    for _ in 0..5 {
        assert_eq!(s.get("img.test", &a).await.status(), 200);
    }
    s.stop();
    let row = &sqlite_ledger(&path)["t1"];
    assert_eq!(row.requests as usize, counted + 5);
    assert_telemetry_adds_up(row);
}

fn rusqlite_text(path: &Path, sql: &str) -> String {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// Kills the process on drop unless it has exited.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[tokio::test]
async fn graceful_stop_and_upgrade_lose_nothing() {
    let root = origin_root();
    // no periodic flush: only the flushes at shutdown can record anything
    let mut old = start(root.path(), "1h", None).await;
    let path = spool_path(&old);
    let a = sign("/w:60/plain/coffee.jpg");
    for _ in 0..6 {
        assert_eq!(old.get("img.test", &a).await.status(), 200);
    }
    // pingora's graceful upgrade: the new process waits for the listeners on
    // upgrade_sock, the old one hands them over on SIGQUIT and exits
    let sock = old.dir.path().join("upgrade.sock");
    let log = std::fs::File::create(old.dir.path().join("imgedge-new.log")).unwrap();
    let new = Reaper(
        Command::new(bin())
            .args(["-u", "-c"])
            .arg(&old.config)
            .env("IMGEDGE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    until(Duration::from_secs(10), || sock.exists(), |e| *e).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    signal(old.pid(), "-QUIT");
    assert!(old.wait_exit(Duration::from_secs(20)), "old process did not exit\n{}", old.log());
    assert_eq!(sqlite_ledger(&path)["t1"].requests, 6, "the old process's final flush");
    // a fresh client: pooled connections went to the old process, which closed them
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
    for _ in 0..4 {
        let r = client.get(format!("http://{}{a}", old.edge)).header("host", "img.test").send().await.unwrap();
        assert_eq!(r.status(), 200, "served by the new process");
    }
    signal(new.0.id(), "-TERM");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut new = new;
    while new.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "new process did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(sqlite_ledger(&path)["t1"].requests, 10);
    // one spool, one install id, two batches
    assert_eq!(rusqlite_count(&path, "SELECT count(DISTINCT substr(batch_id, 1, 36)) FROM batches"), 1);
    assert_eq!(rusqlite_count(&path, "SELECT count(*) FROM batches"), 2);
}

/// Regression: the tenant's rate limit and usage were charged before the signature check,
/// so anyone who knew a tenant's hostname could 429 its traffic and inflate its bill.
#[tokio::test]
async fn an_unsigned_flood_neither_limits_nor_bills_the_tenant() {
    let root = origin_root();
    let tenant = format!(
        "  - id: t1\n    hosts: [img.test]\n    keys: [{{key: \"{KEY}\", salt: \"{SALT}\"}}]\n    origins:\n      local: {{type: local, root: \"{}\"}}\n    limits: {{rate_per_second: 10}}\n",
        root.path().display()
    );
    let extra = usage_yaml("200ms", None) + "limits:\n  unverified_rate_per_address: 20\n";
    let s = Imgedge::start_with(&tenant, DEFAULT_CACHE, &extra).await;
    let flood = format!("{BAD_SIG}/w:100/plain/coffee.jpg");
    let mut statuses = BTreeMap::<u16, u64>::new();
    for _ in 0..100 {
        *statuses.entry(s.get("img.test", &flood).await.status().as_u16()).or_default() += 1;
    }
    // the flooder gets 429 past its address's limit (20 a second), 403 before it
    let (refused, limited) = (statuses.get(&403).copied().unwrap_or(0), statuses.get(&429).copied().unwrap_or(0));
    assert!(refused >= 20 && limited >= 1 && refused + limited == 100, "{statuses:?}");
    // the tenant's signed traffic, within its own rate, is not limited by the flood
    for w in [100, 110, 120] {
        let r = s.get("img.test", &sign(&format!("/w:{w}/plain/coffee.jpg"))).await;
        assert_eq!(r.status(), 200, "signed w:{w} after the flood");
    }
    // and only it reaches the ledger
    let path = spool_path(&s);
    until(Duration::from_secs(10), || sqlite_ledger(&path), |l| l.contains_key("t1")).await;
    // a few more flush intervals: anything else counted would have arrived by now
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ledger = sqlite_ledger(&path);
    let t1 = &ledger["t1"];
    assert_eq!((t1.requests, t1.errors, t1.cache_misses), (3, 0, 3), "{t1:?}");
    let series = r#"imgedge_unverified_requests_total{reason="bad_signature",tenant="t1"}"#;
    assert_eq!(s.metric_settled(series, 100.0).await, 100.0);
    let series = r#"imgedge_limit_rejections_total{reason="unverified_address"}"#;
    assert_eq!(s.metric_settled(series, limited as f64).await, limited as f64);
}

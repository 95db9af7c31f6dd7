//! Overload and per-tenant limits through the running server: the bounded render queue
//! (503 + Retry-After, hits unaffected, immediate recovery), per-tenant rate and
//! concurrent-render limits (429 + Retry-After) and the render timeout (504).

use std::time::{Duration, Instant};

use crate::harness::{images_dir, peak_rss, sign, HttpOrigin, Imgedge, KEY, SALT};

fn tenant(base: &str, limits: &str) -> String {
    format!(
        r#"  - id: web
    hosts: [web.test]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      site: {{type: http, base_url: "{base}", allow_private: true}}
    limits: {{{limits}}}
"#
    )
}

type Answer = (u16, Option<String>, String, Duration);

/// `n` concurrent GETs of distinct `paths`; (status, retry-after, cache-control, time).
async fn burst(s: &Imgedge, paths: Vec<String>) -> Vec<Answer> {
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().unwrap();
    let tasks: Vec<_> = paths
        .into_iter()
        .map(|p| {
            let (client, url) = (client.clone(), format!("http://{}{}", s.edge, p));
            tokio::spawn(async move {
                let t = Instant::now();
                let r = client.get(url).header("host", "web.test").send().await.unwrap();
                let h = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
                let (retry, cc) = (h("retry-after"), h("cache-control").unwrap_or_default());
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                (status, retry, cc, t.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_render_queue_sheds_misses_with_503_while_hits_flow() {
    let origin = HttpOrigin::start(images_dir()).await;
    let s = Imgedge::start_with(
        &tenant(&format!("http://{}/", origin.addr), ""),
        crate::harness::DEFAULT_CACHE,
        "render:\n  workers: 1\n  queue: 2\n",
    )
    .await;
    let hit = sign("/w:77/plain/coffee_600x400.jpg");
    assert_eq!(s.get("web.test", &hit).await.headers()["x-cache"], "MISS");

    // 12 distinct misses against a 1 s origin: at most workers + queue = 3 are admitted
    let paths: Vec<String> = (0..12).map(|i| sign(&format!("/w:{}/plain/slow/coffee_600x400.jpg", 100 + i))).collect();
    let load = {
        let paths = paths.clone();
        let s = &s;
        async move { burst(s, paths).await }
    };
    let hits = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let t = Instant::now();
            let r = s.get("web.test", &hit).await;
            assert_eq!((r.status().as_u16(), r.headers()["x-cache"].to_str().unwrap()), (200, "HIT"));
            worst = worst.max(t.elapsed());
        }
        worst
    };
    let (answers, worst_hit) = tokio::join!(load, hits);
    let ok = answers.iter().filter(|a| a.0 == 200).count();
    let shed: Vec<_> = answers.iter().filter(|a| a.0 == 503).collect();
    eprintln!("overload: {ok} × 200, {} × 503, slowest hit {worst_hit:?}, answers {answers:?}", shed.len());
    assert_eq!(ok + shed.len(), answers.len(), "only 200 and 503: {answers:?}");
    assert!((1..=3).contains(&ok), "{answers:?}");
    for (_, retry, cc, took) in &shed {
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(cc, "no-store");
        assert!(*took < Duration::from_millis(900), "shed at once, not after the slow fetch: {took:?}");
    }
    assert!(worst_hit < Duration::from_millis(250), "hits unaffected: {worst_hit:?}");
    let rss = peak_rss(s.pid());
    assert!(rss < 300 << 20, "peak RSS {} MiB", rss >> 20);

    // recovery is immediate, and the 503s were not cached
    let before = origin.hits("/slow/coffee_600x400.jpg");
    let refused: Vec<String> = paths.iter().zip(&answers).filter(|(_, a)| a.0 == 503).map(|(p, _)| p.clone()).collect();
    let r = burst(&s, refused[..3].to_vec()).await;
    assert!(r.iter().all(|a| a.0 == 200), "{r:?}");
    assert!(origin.hits("/slow/coffee_600x400.jpg") > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_concurrent_render_limit_is_429() {
    let origin = HttpOrigin::start(images_dir()).await;
    let s = Imgedge::start(&tenant(&format!("http://{}/", origin.addr), "max_concurrent_renders: 1")).await;
    let paths = (0..3).map(|i| sign(&format!("/w:{}/plain/slow/coffee_600x400.jpg", 200 + i))).collect();
    let answers = burst(&s, paths).await;
    let limited: Vec<_> = answers.iter().filter(|a| a.0 == 429).collect();
    assert_eq!(answers.iter().filter(|a| a.0 == 200).count(), 1, "{answers:?}");
    assert_eq!(limited.len(), 2, "{answers:?}");
    assert!(limited.iter().all(|a| a.1.as_deref() == Some("1") && a.2 == "no-store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_rate_limit_is_429_then_recovers() {
    let origin = HttpOrigin::start(images_dir()).await;
    let s = Imgedge::start(&tenant(&format!("http://{}/", origin.addr), "rate_per_second: 5")).await;
    let path = sign("/w:90/plain/coffee_600x400.jpg");
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = s.get("web.test", &path).await;
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "1");
            assert_eq!(r.headers()["cache-control"], "no-store");
        }
        statuses.push(r.status().as_u16());
    }
    let limited = statuses.iter().filter(|&&c| c == 429).count();
    assert!(limited >= 5 && statuses.iter().all(|&c| c == 200 || c == 429), "{statuses:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(s.get("web.test", &path).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn render_timeout_is_504() {
    let origin = HttpOrigin::start(images_dir()).await;
    let s = Imgedge::start(&tenant(&format!("http://{}/", origin.addr), "render_timeout: 1ms")).await;
    let r = s.get("web.test", &sign("/rs:fit:1000:1000/plain/autumn_1920x1280_q85.jpg@webp")).await;
    assert_eq!(r.status(), 504);
    assert_eq!(r.headers()["cache-control"], "no-store");
    assert_eq!(r.text().await.unwrap().trim(), "render timed out");
}

/// Regression: a render that timed out kept its worker but gave its tenant slot back, so a
/// flood of slow requests from one tenant filled every worker with abandoned transforms
/// (large AVIF encodes) and another tenant's misses timed out behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timed_out_renders_of_one_tenant_leave_workers_to_another() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let local = |id: &str, host: &str, limits: &str| {
        format!("{}    limits: {{{limits}}}\n", crate::harness::local_tenant_at(id, host, &images_dir()))
    };
    let tenants = local("slow", "slow.test", "render_timeout: 50ms, max_concurrent_renders: 1")
        + &local("other", "other.test", "render_timeout: 5s");
    let s = Imgedge::start(&tenants).await; // render.workers: 2
    let (stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(60)).build().unwrap();
    let flood: Vec<_> = (0..6)
        .map(|task| {
            let (client, stop, sent, edge) = (client.clone(), stop.clone(), sent.clone(), s.edge);
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    // each a distinct miss: a full-size AVIF of a 1920×1280 photo, seconds of work
                    let path = sign(&format!("/w:{}/plain/autumn_1920x1280_q85.jpg@avif", 1900 - task * 100 - i));
                    let r = client.get(format!("http://{edge}{path}")).header("host", "slow.test").send().await;
                    if let Ok(r) = r {
                        assert!(matches!(r.status().as_u16(), 429 | 504), "{}", r.status());
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        })
        .collect();
    // let the flood's abandoned renders pile up
    tokio::time::sleep(Duration::from_secs(2)).await;
    for w in 101..104 {
        let r = s.get("other.test", &sign(&format!("/w:{w}/plain/coffee_600x400.jpg"))).await;
        assert_eq!(r.status(), 200, "the other tenant's miss w:{w} during the flood\n{}", s.log());
        assert_eq!(r.headers()["x-cache"], "MISS");
    }
    stop.store(true, Ordering::Relaxed);
    for t in flood {
        t.await.unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) >= 12, "the flood ran");
}

/// Regression: a hit over the tenant's rate was counted by the hit path, then again by
/// pingora's path it was handed to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_rate_is_counted_once() {
    let tenant = format!(
        "{}    limits: {{rate_per_second: 5}}\n",
        crate::harness::local_tenant_at("t1", "img.test", &images_dir())
    );
    let s = Imgedge::start(&tenant).await;
    let path = sign("/w:90/plain/coffee_600x400.jpg");
    s.fill("img.test", &path).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut limited = 0;
    for _ in 0..15 {
        // a new connection each: every request starts on the hit path
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let r = client.get(format!("http://{}{path}", s.edge)).header("host", "img.test").send().await.unwrap();
        limited += u32::from(r.status() == 429);
    }
    assert!(limited >= 1, "the rate was reached");
    let series = r#"imgedge_limit_rejections_total{reason="tenant_rate"}"#;
    assert_eq!(s.metric_settled(series, f64::from(limited)).await, f64::from(limited));
}

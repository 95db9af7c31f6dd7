//! Repeated hits are answered from the front cache (fresh hits kept ready to send): the same
//! answer pingora-cache gives on a hit (headers, body, 304, HEAD, Range), counted the same,
//! and purges reach it.

use crate::harness::{local_tenant, sign, Imgedge};

const HOST: &str = "img.test";
const TOKEN: &str = "test-admin-token-0123456789";

/// Headers that must be identical between two hits of one entry (`Age` may tick).
fn stable_headers(r: &reqwest::Response) -> Vec<(String, String)> {
    let mut h: Vec<_> = r
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "age")
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    h.sort();
    h
}

#[tokio::test]
async fn front_hits_answer_as_pingora_hits_do() {
    let s = Imgedge::start(&local_tenant()).await;
    let p = sign("/w:140/plain/coffee_600x400.jpg@webp");
    let miss = s.get(HOST, &p).await;
    assert_eq!(miss.headers()["x-cache"], "MISS");
    let rendered = miss.bytes().await.unwrap();
    // the first hit goes through pingora-cache and fills the front; the rest come from it
    let first = s.get(HOST, &p).await;
    assert_eq!(first.headers()["x-cache"], "HIT");
    assert!(first.headers().contains_key("age"));
    let want = stable_headers(&first);
    assert_eq!(first.bytes().await.unwrap(), rendered);
    for _ in 0..20 {
        // one keep-alive client: every answer leaves the connection reusable
        let r = s.get(HOST, &p).await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("age"));
        assert_eq!(stable_headers(&r), want);
        assert_eq!(r.bytes().await.unwrap(), rendered);
    }

    let head = s.request(reqwest::Method::HEAD, HOST, &p, &[]).await;
    assert_eq!(head.status(), 200);
    assert_eq!(stable_headers(&head), want);
    assert!(head.bytes().await.unwrap().is_empty());

    let etag = want.iter().find(|(k, _)| k == "etag").map(|(_, v)| v.clone()).unwrap();
    let r = s.request(reqwest::Method::GET, HOST, &p, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["x-cache"], "HIT");
    assert!(!r.headers().contains_key("content-type"));
    assert!(r.bytes().await.unwrap().is_empty());
    let r = s.request(reqwest::Method::GET, HOST, &p, &[("if-none-match", "\"other\"")]).await;
    assert_eq!(r.status(), 200);

    let r = s.request(reqwest::Method::GET, HOST, &p, &[("range", "bytes=5-14")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"].to_str().unwrap(), format!("bytes 5-14/{}", rendered.len()));
    assert_eq!(r.bytes().await.unwrap(), rendered.slice(5..15));

    // counted as hits, exactly as before the front existed (a request is counted just after
    // its answer was written: give the last one a moment)
    let hits = r#"imgedge_http_requests_total{cache="hit",operation="transform",status_class="2xx"}"#;
    let not_modified = r#"imgedge_http_requests_total{cache="hit",operation="transform",status_class="3xx"}"#;
    let mut counted = (0.0, 0.0);
    for _ in 0..50 {
        counted = (s.metric(hits).await, s.metric(not_modified).await);
        if counted == (24.0, 1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counted, (24.0, 1.0));
}

#[tokio::test]
async fn purges_reach_front_hits() {
    let admin = format!("admin:\n  token: \"{TOKEN}\"\n");
    let s = Imgedge::start_with(&local_tenant(), "  memory: 32MiB\n  max_object: 16MiB\n", &admin).await;
    let a = sign("/w:150/plain/coffee_600x400.jpg@webp");
    let b = sign("/w:160/plain/coffee_600x400.jpg@webp");
    let warm = |p: String| {
        let s = &s;
        async move {
            for _ in 0..3 {
                s.get(HOST, &p).await;
            }
            assert_eq!(s.get(HOST, &p).await.headers()["x-cache"], "HIT");
        }
    };
    let client = reqwest::Client::new();
    let purge = |q: String| {
        let req = client.post(format!("http://{}/purge?{q}", s.ops)).bearer_auth(TOKEN);
        async move { assert_eq!(req.send().await.unwrap().status(), 200) }
    };

    warm(a.clone()).await;
    warm(b.clone()).await;
    purge(format!("tenant=t1&url={a}")).await;
    assert_eq!(s.get(HOST, &a).await.headers()["x-cache"], "MISS");
    assert_eq!(s.get(HOST, &b).await.headers()["x-cache"], "HIT");

    warm(a.clone()).await;
    purge("tenant=t1&all=1".into()).await;
    assert_eq!(s.get(HOST, &a).await.headers()["x-cache"], "MISS");
    assert_eq!(s.get(HOST, &b).await.headers()["x-cache"], "MISS");
}

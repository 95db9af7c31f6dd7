//! The ops listener: health endpoints and metrics that follow the requests made.

use crate::harness::{local_tenant, sign, Imgedge};

#[tokio::test]
async fn health_endpoints() {
    let s = Imgedge::start(&local_tenant()).await;
    for path in ["/health", "/livez", "/readyz"] {
        let r = s.ops_get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "OK\n");
    }
    assert_eq!(s.ops_get("/nope").await.status(), 404);
}

#[tokio::test]
async fn metrics_count_requests_by_status_and_cache_outcome() {
    let s = Imgedge::start(&local_tenant()).await;
    let ok = sign("/w:70/plain/coffee_600x400.jpg");
    assert_eq!(s.get("img.test", &ok).await.status(), 200);
    // the miss's cache write can land just after its answer: the hits below wait for it
    assert_eq!(s.metric_settled(r#"imgedge_cache_items{tier="memory"}"#, 1.0).await, 1.0);
    for _ in 0..2 {
        assert_eq!(s.get("img.test", &ok).await.status(), 200);
    }
    for _ in 0..2 {
        assert_eq!(s.get("img.test", "/bad/w:70/plain/coffee_600x400.jpg").await.status(), 403);
    }
    assert_eq!(s.get("nobody.test", &ok).await.status(), 404);

    let req = |cache: &str, op: &str, class: &str| {
        format!(r#"imgedge_http_requests_total{{cache="{cache}",operation="{op}",status_class="{class}"}}"#)
    };
    assert_eq!(s.metric_settled(&req("miss", "transform", "2xx"), 1.0).await, 1.0);
    assert_eq!(s.metric_settled(&req("hit", "transform", "2xx"), 2.0).await, 2.0);
    // two bad signatures (403) and one unknown host (404), all rejected before parsing
    assert_eq!(s.metric_settled(&req("none", "none", "4xx"), 3.0).await, 3.0);
    assert_eq!(s.metric(r#"imgedge_renders_total{outcome="ok"}"#).await, 1.0);
    let hits = r#"imgedge_http_request_duration_seconds_count{cache="hit"}"#;
    assert_eq!(s.metric_settled(hits, 2.0).await, 2.0);
    assert!(s.metric(r#"imgedge_cache_size_bytes{tier="memory"}"#).await > 0.0);
    let text = s.ops_get("/metrics").await.text().await.unwrap();
    assert!(text.contains("# HELP imgedge_http_requests_total"), "{text}");
}

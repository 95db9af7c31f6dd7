//! The ops listener: health, liveness, readiness and Prometheus metrics, on its own
//! address so it can stay private while the edge is public.

use std::path::PathBuf;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics;

pub struct Ops {
    /// Readiness means the render service answers on its socket.
    pub render_socket: PathBuf,
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_default()
}

#[async_trait]
impl ServeHttp for Ops {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let plain = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/health" | "/livez" => text(StatusCode::OK, plain, b"OK\n".to_vec()),
            "/readyz" => match tokio::net::UnixStream::connect(&self.render_socket).await {
                Ok(_) => text(StatusCode::OK, plain, b"OK\n".to_vec()),
                Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, plain, format!("render not ready: {e}\n").into_bytes()),
            },
            "/metrics" => text(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics::gather()),
            _ => text(StatusCode::NOT_FOUND, plain, b"not found\n".to_vec()),
        }
    }
}

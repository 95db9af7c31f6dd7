//! What clients do to the edge's connections: `Host` values that are no authority.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{local_tenant, sign, Imgedge};

const HOST: &str = "img.test";

/// One answer off a raw connection: status, head (lower-cased), body. `buf` keeps what
/// follows it.
async fn answer(conn: &mut TcpStream, buf: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        read_more(conn, buf).await;
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let len =
        head.lines().find_map(|l| l.strip_prefix("content-length: ")).map_or(0, |v| v.trim().parse::<usize>().unwrap());
    let len = if status == 304 { 0 } else { len };
    while buf.len() < end + len {
        read_more(conn, buf).await;
    }
    let body = buf[end..end + len].to_vec();
    buf.drain(..end + len);
    (status, head, body)
}

/// Appends what `conn` has next to `buf`; an answer is due, so an end or a reset fails.
async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) {
    let mut chunk = [0u8; 65536];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk)).await.expect("in time");
    let n = n.expect("the answer, not a reset");
    assert!(n > 0, "closed before a whole answer: {}", String::from_utf8_lossy(buf));
    buf.extend_from_slice(&chunk[..n]);
}

/// `request` on a new connection, and its answer.
async fn once(s: &Imgedge, request: &str) -> (u16, String, Vec<u8>) {
    let mut conn = TcpStream::connect(s.edge).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    answer(&mut conn, &mut Vec::new()).await
}

fn get(path: &str, host: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n")
}

#[tokio::test]
async fn a_host_that_is_no_authority_is_a_400_on_both_paths() {
    let s = Imgedge::start(&local_tenant()).await;
    let p = sign("/w:110/plain/coffee_600x400.jpg@webp");
    // a front hit: the hit path would answer this URL itself
    s.fill(HOST, &p).await;
    assert_eq!(once(&s, &get(&p, HOST, "")).await.0, 200);

    // the request of the report: a panic in the edge's task closed the connection
    let (status, _, _) = once(&s, "GET /a/b HTTP/1.1\r\nHost: [\r\n\r\n").await;
    assert_eq!(status, 400);
    for host in ["[", "[::1", "img.test:x@b.test", "img.test:x", "img.test:99999", "img.test:", "", "img test"] {
        let (status, head, body) = once(&s, &get(&p, host, "")).await;
        assert_eq!(status, 400, "Host {host:?}: {head}");
        assert!(!head.contains("x-cache: hit"), "Host {host:?} answered from the cache");
        assert!(body.is_empty() || body == b"bad Host header\n", "Host {host:?}: {body:?}");
    }
    // a port is no part of the tenant's name
    let (status, head, _) = once(&s, &get(&p, "img.test:8080", "")).await;
    assert_eq!((status, head.contains("x-cache: hit")), (200, true));
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

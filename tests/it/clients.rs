//! What clients do to the edge's connections: `Host` values that are no authority, keep-alive
//! connections that mix misses and hits, heads that are malformed or never end, clients that
//! dribble bytes or never read.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{config_text_with, local_tenant, sign, Imgedge, DEFAULT_CACHE};

const HOST: &str = "img.test";
const HIT_PATH: &str = "imgedge_edge_hit_path_requests_total";

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

#[tokio::test]
async fn a_keep_alive_connection_comes_back_to_the_hit_path_after_pingora() {
    let s = Imgedge::start(&local_tenant()).await;
    let p = sign("/w:115/plain/coffee_600x400.jpg@webp");
    let mut conn = TcpStream::connect(s.edge).await.unwrap();
    let mut buf = Vec::new();
    // the miss, then (after its cache write) pingora's hit that fills the front, all on
    // this one connection
    let (status, head, body) = {
        conn.write_all(get(&p, HOST, "").as_bytes()).await.unwrap();
        answer(&mut conn, &mut buf).await
    };
    assert_eq!((status, head.contains("x-cache: miss")), (200, true), "{head}");
    for _ in 0..40 {
        conn.write_all(get(&p, HOST, "").as_bytes()).await.unwrap();
        if answer(&mut conn, &mut buf).await.1.contains("x-cache: hit") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let before = s.metric(HIT_PATH).await;
    hits(&mut conn, &mut buf, &p, &body, 3).await;
    assert_eq!(s.metric_settled(HIT_PATH, before + 3.0).await, before + 3.0, "hits after a miss");

    // after a Range (pingora's) and a rejection (pingora's), the hits are the hit path's again
    conn.write_all(get(&p, HOST, "Range: bytes=0-9\r\n").as_bytes()).await.unwrap();
    let (status, _, got) = answer(&mut conn, &mut buf).await;
    assert_eq!((status, got.as_slice()), (206, &body[..10]));
    hits(&mut conn, &mut buf, &p, &body, 2).await;
    conn.write_all(get("/bad/signature/plain/x.jpg", HOST, "").as_bytes()).await.unwrap();
    assert_eq!(answer(&mut conn, &mut buf).await.0, 403);
    hits(&mut conn, &mut buf, &p, &body, 2).await;
    assert_eq!(s.metric_settled(HIT_PATH, before + 7.0).await, before + 7.0, "hits after Range and a 403");
}

/// `n` hits of `path` on `conn`, each answered with `body`.
async fn hits(conn: &mut TcpStream, buf: &mut Vec<u8>, path: &str, body: &[u8], n: usize) {
    for _ in 0..n {
        conn.write_all(get(path, HOST, "").as_bytes()).await.unwrap();
        let (status, head, got) = answer(conn, buf).await;
        assert_eq!((status, head.contains("x-cache: hit")), (200, true), "{head}");
        assert!(got == body, "the body as rendered");
    }
}

#[tokio::test]
async fn a_refused_head_gets_its_answer_before_the_close() {
    let s = Imgedge::start(&local_tenant()).await;
    // a malformed head with a body the server never reads: pingora's 400 must arrive,
    // not a reset for the unread bytes
    for _ in 0..5 {
        let mut conn = TcpStream::connect(s.edge).await.unwrap();
        let mut request = b"GET /x HTTP/1.1\r\nHost: img.test\r\nBad Header\r\n\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'x', 512 * 1024));
        let (mut rd, mut wr) = conn.split();
        let write = async {
            let _ = wr.write_all(&request).await;
        };
        let read = async {
            let mut got = Vec::new();
            let mut chunk = [0u8; 4096];
            loop {
                match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut chunk)).await.expect("in time") {
                    Ok(0) => break Ok(got),
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(e) => break Err((e, got)),
                }
            }
        };
        let (_, got) = tokio::join!(write, read);
        let got = got.unwrap_or_else(|(e, got)| panic!("{e} after {:?}", String::from_utf8_lossy(&got)));
        assert!(got.starts_with(b"HTTP/1.1 400 "), "{:?}", String::from_utf8_lossy(&got));
    }
    // a head that never ends is refused at its size limit
    let mut conn = TcpStream::connect(s.edge).await.unwrap();
    let mut head = get("/x", HOST, "").trim_end().to_owned();
    while head.len() < 70 * 1024 {
        head.push_str("\r\nX-Filler: 0123456789012345678901234567890123456789");
    }
    conn.write_all(head.as_bytes()).await.unwrap();
    let (status, head, body) = answer(&mut conn, &mut Vec::new()).await;
    assert_eq!((status, head.contains("connection: close")), (431, true), "{head}");
    assert_eq!(body, b"request head too large\n");
}

/// A server with short client deadlines.
async fn strict() -> Imgedge {
    Imgedge::start_config(|dir, edge, ops| {
        let text = config_text_with(dir, edge, ops, &local_tenant(), DEFAULT_CACHE, "");
        text.replace(
            "  render_socket:",
            "  header_timeout: 1s\n  idle_timeout: 3s\n  send_timeout: 1s\n  render_socket:",
        )
    })
    .await
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn slow_clients_are_closed_at_their_deadlines_while_hits_go_on() {
    let s = strict().await;
    let small = sign("/w:120/plain/coffee_600x400.jpg@webp");
    let large = sign("/plain/coffee_600x400.jpg@png");
    s.fill(HOST, &small).await;
    s.fill(HOST, &large).await;
    let rss_before = rss(s.pid());

    // 200 connections that send their head a byte every 300 ms: each must be closed by
    // the server once its head is a second overdue, whatever it still sends
    let request = get(&small, HOST, "");
    let mut dribblers = Vec::new();
    for _ in 0..200 {
        let (edge, request) = (s.edge, request.clone());
        dribblers.push(tokio::spawn(async move {
            let mut conn = TcpStream::connect(edge).await.unwrap();
            let started = std::time::Instant::now();
            let mut probe = [0u8; 64];
            for b in request.as_bytes().iter().take(40) {
                if conn.write_all(&[*b]).await.is_err() {
                    return Some(started.elapsed());
                }
                tokio::select! {
                    r = conn.read(&mut probe) => match r {
                        Ok(0) | Err(_) => return Some(started.elapsed()),
                        Ok(_) => panic!("an answer to half a head"),
                    },
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
            None
        }));
    }
    // 20 clients that ask for large answers and never read a byte
    let mut sleepers = Vec::new();
    for _ in 0..20 {
        let mut conn = TcpStream::connect(s.edge).await.unwrap();
        conn.write_all(get(&large, HOST, "").repeat(40).as_bytes()).await.unwrap();
        sleepers.push(conn);
    }

    // meanwhile another client's hits are answered, and quickly
    let mut worst = Duration::ZERO;
    let until = std::time::Instant::now() + Duration::from_secs(3);
    let mut n = 0;
    while std::time::Instant::now() < until {
        let t = std::time::Instant::now();
        let r = s.get(HOST, &small).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        worst = worst.max(t.elapsed());
        n += 1;
    }
    assert!(worst < Duration::from_secs(1), "slowest of {n} hits: {worst:?}");

    for d in dribblers {
        let closed = d.await.unwrap();
        // 1 s deadline; the last byte of the 40 would go out after 12 s
        assert!(closed.is_some_and(|t| t < Duration::from_secs(4)), "a dribbling client was kept: {closed:?}");
    }
    // each sleeper's connection was closed after a write stalled for 1 s: reading now
    // gets what the socket buffers held, then the end, far short of the 40 answers
    let answer_len = s.get(HOST, &large).await.bytes().await.unwrap().len();
    for mut conn in sleepers {
        let mut got = 0;
        let mut chunk = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(k)) => got += k,
                Err(_) => panic!("a client that never read still holds its connection ({got} bytes read)"),
            }
        }
        assert!(got < 40 * answer_len, "{got} bytes");
    }
    let grown = rss(s.pid()).saturating_sub(rss_before);
    assert!(grown < 64 << 20, "RSS grew by {grown} bytes");
    assert!(!s.log().contains("panicked"), "{}", s.log());
}

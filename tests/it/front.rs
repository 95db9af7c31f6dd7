//! Repeated hits are answered from the front cache (fresh hits kept ready to send): the same
//! answer pingora-cache gives on a hit (headers, body, 304, HEAD, Range), counted the same,
//! and purges reach it.

use crate::harness::{local_tenant, sign, Imgedge};

const HOST: &str = "img.test";
const TOKEN: &str = "test-admin-token-0123456789";

/// Headers that must be identical between two hits of one entry (`Age` and `Date` may
/// tick between them).
fn stable_headers(r: &reqwest::Response) -> Vec<(String, String)> {
    let mut h: Vec<_> = r
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str() != "age" && k.as_str() != "date")
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
    // the miss's cache write can land just after its answer
    assert_eq!(s.metric_settled(r#"imgedge_cache_items{tier="memory"}"#, 1.0).await, 1.0);
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
    let counted = (s.metric_settled(hits, 24.0).await, s.metric_settled(not_modified, 1.0).await);
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
            // the first hit (through pingora) fills the front; the next ones come from it
            s.fill(HOST, &p).await;
            for _ in 0..2 {
                s.get(HOST, &p).await.bytes().await.unwrap();
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

/// One response read off a raw connection: status, lower-cased headers, body, and the
/// status line and headers as they were sent.
struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    status_line: String,
    raw_headers: Vec<(String, String)>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Reads one response from `buf` + `conn`; `head_only` for HEAD (no body despite
/// Content-Length). Leaves whatever follows in `buf`.
async fn fill(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut chunk = [0u8; 16384];
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), conn.read(&mut chunk));
    let n = read.await.expect("response in time").unwrap();
    assert!(n > 0, "connection closed mid-response");
    buf.extend_from_slice(&chunk[..n]);
}

async fn read_response(conn: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Raw {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(conn, buf).await;
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap().to_owned();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let raw_headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_owned(), v.trim().to_owned())
        })
        .collect();
    let headers: Vec<(String, String)> = raw_headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    buf.drain(..end);
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let len = if head_only || status == 304 { 0 } else { len };
    while buf.len() < len {
        fill(conn, buf).await;
    }
    let body = buf.drain(..len).collect();
    Raw { status, headers, body, status_line, raw_headers }
}

/// One answer on a new connection, as the bytes on the wire, with the values of `Date`
/// and `Age` (which tick) replaced by `*`.
async fn wire_answer(s: &Imgedge, request: &str) -> String {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(s.edge).await.unwrap();
    conn.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let answer = read_response(&mut conn, &mut buf, false).await;
    assert!(buf.is_empty(), "one answer only");
    let mut wire = format!("{}\r\n", answer.status_line);
    for (name, value) in &answer.raw_headers {
        let volatile = name.eq_ignore_ascii_case("date") || name.eq_ignore_ascii_case("age");
        wire.push_str(&format!("{name}: {}\r\n", if volatile { "*" } else { value }));
    }
    wire.push_str("\r\n");
    wire + &String::from_utf8_lossy(&answer.body)
}

#[tokio::test]
async fn a_hit_is_the_same_bytes_on_every_path() {
    let tenant = format!("{}    transform:\n      negotiate: [webp]\n", local_tenant());
    let s = Imgedge::start(&tenant).await;
    for (path, accept) in
        [("/w:130/plain/coffee_600x400.jpg@png", ""), ("/w:130/plain/chelsea_451x300.png", "image/webp")]
    {
        let p = sign(path);
        let accept = if accept.is_empty() { String::new() } else { format!("Accept: {accept}\r\n") };
        let get = |extra: &str| format!("GET {p} HTTP/1.1\r\nHost: {HOST}\r\n{accept}{extra}\r\n");
        assert!(wire_answer(&s, &get("")).await.contains("x-cache: MISS\r\n"));
        // the first hit is pingora-cache's own (a storage lookup, which fills the front);
        // a second miss may race the store of the first, so ask until it is a hit
        let mut storage_hit = String::new();
        for _ in 0..20 {
            storage_hit = wire_answer(&s, &get("")).await;
            if storage_hit.contains("x-cache: HIT\r\n") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let front_hit = wire_answer(&s, &get("")).await;
        // If-Modified-Since sends the request to pingora, which answers from the front
        let pingora_front_hit = wire_answer(&s, &get("If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n")).await;
        let head = |w: &str| w.split("\r\n\r\n").next().unwrap_or_default().to_owned();
        assert!(storage_hit.contains("x-cache: HIT\r\n"), "{}", head(&storage_hit));
        assert!(!storage_hit.contains("x-imgedge"), "internal headers never leave: {}", head(&storage_hit));
        assert_eq!(head(&front_hit), head(&storage_hit), "hit path vs pingora-cache's hit");
        assert_eq!(front_hit, storage_hit, "bodies");
        assert_eq!(pingora_front_hit, storage_hit, "pingora's front hit");
        assert_eq!(storage_hit.contains("vary: Accept\r\n"), !accept.is_empty());
    }
}

#[tokio::test]
async fn hit_path_keeps_http_semantics_on_raw_connections() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Imgedge::start(&local_tenant()).await;
    let p = sign("/w:120/plain/coffee_600x400.jpg@jpeg");
    let missing = sign("/w:120/plain/no_such_image.jpg@jpeg");
    for (path, items) in [(&p, 1.0), (&missing, 2.0)] {
        // the miss; its cache write can land just after its answer
        s.get(HOST, path).await.bytes().await.unwrap();
        assert_eq!(s.metric_settled(r#"imgedge_cache_items{tier="memory"}"#, items).await, items);
        s.get(HOST, path).await; // the pingora hit that fills the front
    }
    let body = s.get(HOST, &p).await.bytes().await.unwrap();

    // pipelined GET, HEAD, 404 hit and If-None-Match in one write: answered in order
    let mut conn = tokio::net::TcpStream::connect(s.edge).await.unwrap();
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}\r\n");
    let batch =
        [get(&p, ""), format!("HEAD {p} HTTP/1.1\r\nHost: {HOST}\r\n\r\n"), get(&missing, "Accept: */*\r\n")].concat();
    conn.write_all(batch.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut conn, &mut buf, false).await;
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(r.header("date").is_some() && r.header("age").is_some());
    assert_eq!(r.body, body);
    let etag = r.header("etag").unwrap().to_owned();
    let h = read_response(&mut conn, &mut buf, true).await;
    assert_eq!((h.status, h.header("content-length")), (200, Some(body.len().to_string().as_str())));
    let nf = read_response(&mut conn, &mut buf, false).await;
    assert_eq!((nf.status, nf.header("x-cache")), (404, Some("HIT")));
    assert_eq!(nf.header("accept-ranges"), None, "only 200s advertise ranges");

    // a request head split across writes, then a conditional one
    let split = get(&p, &format!("If-None-Match: W/{etag}\r\n"));
    let (a, b) = split.as_bytes().split_at(split.len() / 2);
    conn.write_all(a).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    conn.write_all(b).await.unwrap();
    let nm = read_response(&mut conn, &mut buf, false).await;
    assert_eq!((nm.status, nm.header("content-type"), nm.header("accept-ranges")), (304, None, None));
    assert_eq!(nm.header("etag"), Some(etag.as_str()));

    // what the hit path leaves to pingora still works on the same connection
    conn.write_all(get(&p, "Range: bytes=0-9\r\n").as_bytes()).await.unwrap();
    let range = read_response(&mut conn, &mut buf, false).await;
    assert_eq!((range.status, range.body.as_slice()), (206, &body[..10]));
    conn.write_all(get("/bad/path", "").as_bytes()).await.unwrap();
    let bad = read_response(&mut conn, &mut buf, false).await;
    assert_eq!(bad.status, 403);
    conn.write_all(get(&p, "Connection: close\r\n").as_bytes()).await.unwrap();
    let last = read_response(&mut conn, &mut buf, false).await;
    assert_eq!((last.status, last.header("connection")), (200, Some("close")));
    let mut rest = Vec::new();
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), conn.read_to_end(&mut rest)).await.unwrap();
    assert_eq!((n.unwrap(), buf.len()), (0, 0), "closed after Connection: close");

    // HTTP/1.0 and a malformed head go to pingora too
    let mut conn = tokio::net::TcpStream::connect(s.edge).await.unwrap();
    conn.write_all(format!("GET {p} HTTP/1.0\r\nHost: {HOST}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let old = read_response(&mut conn, &mut buf, false).await;
    assert_eq!((old.status, old.body.len()), (200, body.len()));
    let mut conn = tokio::net::TcpStream::connect(s.edge).await.unwrap();
    conn.write_all(b"GET /x HTTP/1.1\r\nHost: img.test\r\nBad Header\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_response(&mut conn, &mut buf, false).await.status, 400);

    // every answer of the hit path was counted as a hit
    let hits = r#"imgedge_http_requests_total{cache="hit",operation="transform",status_class="2xx"}"#;
    // 2 before the raw connections (a pingora hit, a front hit), then GET, HEAD, Range,
    // Connection: close and HTTP/1.0
    assert_eq!(s.metric_settled(hits, 7.0).await, 7.0);
}

#[tokio::test]
async fn large_hits_leave_from_a_sealed_file_byte_for_byte() {
    use tokio::io::AsyncWriteExt;
    let s = Imgedge::start(&local_tenant()).await;
    // a PNG of a photo: hundreds of KB, far above the size from which hits use sendfile
    let p = sign("/plain/coffee_600x400.jpg@png");
    let body_files = || {
        std::fs::read_dir(format!("/proc/{}/fd", s.pid()))
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
            .filter(|l| l.to_string_lossy().contains("memfd:imgedge-body"))
            .count()
    };
    // the miss, then pingora's hit that fills the front (the cache write may finish a
    // moment after the miss's answer: bounded retries)
    let mut body = bytes::Bytes::new();
    for _ in 0..50 {
        body = s.get(HOST, &p).await.bytes().await.unwrap();
        if body_files() > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(body.len() > 256 * 1024, "a large body: {} bytes", body.len());
    assert_eq!(body_files(), 1, "the front entry holds its body as one file");

    // eight pipelined answers to a client with a small receive window: each sendfile stops
    // part-way and resumes when the client reads; a HEAD and a 304 between them
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut conn = socket.connect(s.edge).await.unwrap();
    let etag = s.get(HOST, &p).await.headers()["etag"].to_str().unwrap().to_owned();
    let get = format!("GET {p} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    let mut batch = get.repeat(4);
    batch += &format!("HEAD {p} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
    batch += &format!("GET {p} HTTP/1.1\r\nHost: {HOST}\r\nIf-None-Match: {etag}\r\n\r\n");
    batch += &get.repeat(4);
    conn.write_all(batch.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut buf = Vec::new();
    for i in 0..10 {
        let r = read_response(&mut conn, &mut buf, i == 4).await;
        let want = match i {
            4 => (200, 0),
            5 => (304, 0),
            _ => (200, body.len()),
        };
        assert_eq!((r.status, r.body.len()), want, "answer {i}");
        assert_eq!(r.header("x-cache"), Some("HIT"));
        if want.1 > 0 {
            assert!(r.body == body, "answer {i}: the body as rendered");
        }
    }
    assert!(buf.is_empty(), "nothing after the last answer");
}

//! The edge listener's connection handler: fresh front-cache hits are answered here, below
//! pingora's HTTP/1 session machinery; everything else is handed to pingora unchanged.
//!
//! A hit is most of an image CDN's traffic, and per hit pingora's request state (header maps,
//! session, proxy phases) cost more CPU than the kernel's TCP work. Here a hit is: one read,
//! `httparse`, the same admission as the proxy ([`EdgeCore::admit`]), a front-cache lookup
//! and one write of a header prefix serialized when the entry was filled. The answer is the
//! one pingora-cache gives on a hit (same headers, `Age`, `Date`, 304, HEAD), counted the
//! same way. Anything this path does not handle itself — a miss, a rejection, `Range`,
//! `If-Modified-Since`, HTTP/1.0, a request body, `Connection` options, a malformed head,
//! HTTP/2 — goes to pingora with the bytes already read put back into the stream, so
//! pingora sees the request exactly as the client sent it. Pingora answers that one
//! request and gives the connection back (on keep-alive), so a CDN's connection that mixes
//! misses and hits keeps the hit path for its hits.
//!
//! Clients are bounded here for both paths ([`ClientTimeouts`]): a whole head is due within
//! `header_timeout` (pingora only ever sees whole heads), every write within `send_timeout`
//! or at `min_send_rate`, an idle keep-alive connection is closed after `idle_timeout`.

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use futures::FutureExt;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::conditional_filter::{to_304, weak_validate_etag};
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use rustix::net::SendFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::time::{timeout, timeout_at, Instant};

use super::admission::{expired, RequestParts};
use super::ctx::Finished;
use super::threads::{self, adopt};
use super::{caches, host, memo, Ctx, Edge, EdgeCore};
use crate::answer::{self, Answer};
use crate::cache::body_file::BodyFile;
use crate::cache::{self, key_hash, FrontEntry};
use crate::config::Listen;
use crate::metrics;

/// Request heads are read whole before anything answers them, pingora included (it would
/// read the rest one read at a time, each with its own timeout); a head not complete at
/// this size is refused (`431`).
const MAX_HEAD: usize = 64 * 1024;
const MAX_HEADERS: usize = 32;
/// A connection closed after an answer is drained this long (or this much) first, so a
/// client still sending gets the answer rather than a reset.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 1 << 20;

/// How long edge clients may take (`listen:` in the config), on both paths.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    header: Duration,
    idle: Duration,
    send: Duration,
    min_send_rate: u64,
}

impl ClientTimeouts {
    pub fn new(listen: &Listen) -> Self {
        ClientTimeouts {
            header: listen.header_timeout,
            idle: listen.idle_timeout,
            send: listen.send_timeout,
            min_send_rate: listen.min_send_rate,
        }
    }

    /// The time one write of `len` bytes may take: pingora's rule for its session (the
    /// minimum send rate, when set, wins over the send timeout; at least 1 s).
    fn write(&self, len: usize) -> Duration {
        match self.min_send_rate {
            0 => self.send,
            rate => Duration::from_secs_f64((len as u64).max(rate) as f64 / rate as f64),
        }
    }

    /// The same bounds on pingora's session for one request.
    fn apply(&self, session: &mut ServerSession, shutdown: bool) {
        // keep-alive lets pingora give the connection back; the idle wait is ours, not its
        session.set_keepalive((!shutdown).then_some(self.idle.as_secs().max(1)));
        session.set_read_timeout(Some(self.header));
        session.set_total_drain_timeout(Some(self.header));
        session.set_write_timeout(Some(self.send));
        session.set_min_send_rate((self.min_send_rate > 0).then_some(self.min_send_rate as usize));
    }
}

pub struct EdgeApp {
    core: Arc<EdgeCore>,
    proxy: Arc<HttpProxy<Edge>>,
    timeouts: ClientTimeouts,
}

impl EdgeApp {
    pub fn new(core: Arc<EdgeCore>, proxy: HttpProxy<Edge>, timeouts: ClientTimeouts) -> Self {
        EdgeApp { core, proxy: Arc::new(proxy), timeouts }
    }
}

/// What the hit path did with one request.
enum Handled {
    /// Answered; the connection may carry the next request.
    Served,
    /// Answered, but writing failed: drop the connection.
    Broken,
    /// Not ours: pingora handles it.
    Pass,
}

/// What the connection does next with the bytes read so far.
enum Step {
    /// The first `n` bytes were a request, answered.
    Served(usize),
    Broken,
    /// A whole head pingora answers.
    Pass,
    /// Not a whole head yet.
    More,
    /// No head this path or pingora should wait for: refused, and the connection closed.
    Refuse(Answer),
}

#[async_trait]
impl ServerApp for EdgeApp {
    async fn process_new(self: &Arc<Self>, stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        // Plain TCP only: putting bytes back needs the concrete stream type. TLS (and so
        // HTTP/2) connections are pingora's from the start.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) || !stream.as_any().is::<TcpStream>() {
            return self.proxy.process_new(stream, shutdown).await;
        }
        match threads::place() {
            (None, load) => self.connection(stream, shutdown, load).await,
            (Some(handle), load) => {
                // the connection lives on the less busy thread; this task only waits for it
                let (app, shutdown) = (self.clone(), shutdown.clone());
                handle.spawn(async move { app.connection(stream, &shutdown, load).await }).await.ok().flatten()
            }
        }
    }

    async fn cleanup(&self) {
        self.proxy.cleanup().await;
    }
}

impl EdgeApp {
    /// Serves a plain TCP connection on this thread: hits here, each other request through
    /// pingora, after which the connection comes back here. `_load` counts the connection
    /// on this thread until it ends.
    async fn connection(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
        _load: threads::Load,
    ) -> Option<Stream> {
        let Some((mut tcp, established)) = adopt(&stream) else {
            return self.proxy.process_new(stream, shutdown).await;
        };
        drop(stream);
        // once per connection: the request log's client address
        let client = tcp.peer_addr().ok().map(|a| a.ip());
        let mut buf = BytesMut::with_capacity(2048);
        let mut shutdown_rx = shutdown.clone();
        // a whole head is due `header` after its first byte: a client dribbling bytes
        // cannot hold the connection longer; before that byte the idle timeout applies
        let mut head_due = None;
        loop {
            if !buf.is_empty() {
                head_due.get_or_insert_with(|| Instant::now() + self.timeouts.header);
                match self.step(&buf, &mut tcp, client).await {
                    // pipelined requests stay in order: the rest of `buf` is parsed next
                    Step::Served(n) => {
                        buf.advance(n);
                        head_due = None;
                        if *shutdown.borrow() {
                            return None;
                        }
                        continue;
                    }
                    Step::Broken => return None,
                    Step::Pass => {
                        tcp = self.hand_over(tcp, &mut buf, established, shutdown).await?;
                        head_due = None;
                        continue;
                    }
                    Step::Refuse(answer) => {
                        let wire = answer.close_h1(get_cached_date().to_str().unwrap_or_default());
                        let sent = timeout(self.timeouts.write(wire.len()), tcp.write_all(&wire)).await;
                        if matches!(sent, Ok(Ok(()))) {
                            linger(tcp).await;
                        }
                        return None;
                    }
                    Step::More => {}
                }
            }
            let due = head_due.unwrap_or_else(|| Instant::now() + self.timeouts.idle);
            let read = tokio::select! {
                r = timeout_at(due, tcp.read_buf(&mut buf)) => r,
                _ = shutdown_rx.changed() => return None,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Parses `buf` and answers a hit.
    async fn step(&self, buf: &[u8], tcp: &mut tokio::net::TcpStream, client: Option<std::net::IpAddr>) -> Step {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => match self.serve(&req, tcp, client).await {
                Handled::Served => Step::Served(n),
                Handled::Broken => Step::Broken,
                Handled::Pass => Step::Pass,
            },
            // pingora has more patience (more headers, URIs it escapes) and its own 400
            Err(_) if head_end(buf) => Step::Pass,
            _ if buf.len() < MAX_HEAD => Step::More,
            Err(e) if e != httparse::Error::TooManyHeaders => {
                Step::Refuse(Answer::plain(http::StatusCode::BAD_REQUEST, "malformed request head"))
            }
            _ => {
                Step::Refuse(Answer::plain(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "request head too large"))
            }
        }
    }

    /// Has pingora answer the request at the start of `buf` (a whole head), then takes the
    /// connection back with whatever pingora left unread in `buf`; `None` when pingora
    /// closed it.
    async fn hand_over(
        &self,
        tcp: tokio::net::TcpStream,
        buf: &mut BytesMut,
        established: SystemTime,
        shutdown: &ShutdownWatch,
    ) -> Option<tokio::net::TcpStream> {
        // a duplicate of the socket outlives pingora's stream: the connection comes back
        // here after pingora's answer, or is closed here without a reset
        let Ok(ours) = tcp.as_fd().try_clone_to_owned() else {
            let stream = into_pingora(tcp, &buf[..], established);
            self.proxy.process_new(stream, shutdown).await;
            return None;
        };
        let mut session = ServerSession::new_http1(into_pingora(tcp, &buf[..], established));
        buf.clear();
        self.timeouts.apply(&mut session, *shutdown.borrow());
        let Some(reused) = self.proxy.process_new_http(session, shutdown).await else {
            linger(from_fd(ours)?).await;
            return None;
        };
        let (mut stream, _) = reused.consume();
        // bytes put back for pingora that it did not need (a pipelined request)
        while buf.len() < MAX_HEAD {
            match stream.read_buf(buf).now_or_never() {
                Some(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
        drop(stream);
        from_fd(ours)
    }
}

/// Whether `buf` holds the end of a request head (httparse also accepts bare LFs).
fn head_end(buf: &[u8]) -> bool {
    buf.windows(2).any(|w| w == b"\n\n") || buf.windows(3).any(|w| w == b"\n\r\n")
}

fn from_fd(fd: OwnedFd) -> Option<tokio::net::TcpStream> {
    tokio::net::TcpStream::from_std(std::net::TcpStream::from(fd)).ok()
}

/// Closes a connection whose last answer has been written: the write side first, then
/// what the client still sends is read and dropped for a moment, so that the kernel does
/// not answer unread bytes with a reset that could destroy the answer in flight.
async fn linger(mut tcp: tokio::net::TcpStream) {
    let _ = tcp.shutdown().await;
    let until = Instant::now() + LINGER;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < LINGER_BYTES {
        match timeout_at(until, tcp.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

impl EdgeApp {
    /// Answers the parsed head `req` if it is a fresh front-cache hit this path can serve
    /// exactly as pingora would.
    async fn serve(
        &self,
        req: &httparse::Request<'_, '_>,
        stream: &mut tokio::net::TcpStream,
        client: Option<std::net::IpAddr>,
    ) -> Handled {
        if req.version != Some(1) {
            return Handled::Pass;
        }
        let (Some(method), Some(target)) = (req.method, req.path) else { return Handled::Pass };
        let is_head = match method {
            "GET" => false,
            "HEAD" => true,
            _ => return Handled::Pass,
        };
        // origin-form with visible ASCII only, as `http::Uri` would accept it
        if !target.starts_with('/') || !target.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Handled::Pass;
        }
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let (mut host, mut accept, mut origin, mut referer) = (None, None, None, None);
        let mut inm: [Option<&[u8]>; 4] = [None; 4];
        let mut n_inm = 0;
        for h in req.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("host") {
                if host.is_some() {
                    return Handled::Pass;
                }
                host = Some(h.value);
            } else if name.eq_ignore_ascii_case("accept") {
                accept = Some(h.value);
            } else if name.eq_ignore_ascii_case("origin") {
                origin = Some(h.value);
            } else if name.eq_ignore_ascii_case("referer") {
                referer = Some(h.value);
            } else if name.eq_ignore_ascii_case("if-none-match") {
                match inm.get_mut(n_inm) {
                    Some(slot) => *slot = Some(h.value),
                    None => return Handled::Pass,
                }
                n_inm += 1;
            } else if name.eq_ignore_ascii_case("connection") {
                if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                    return Handled::Pass;
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                if h.value != b"0" {
                    return Handled::Pass;
                }
            } else if ["range", "if-range", "if-modified-since", "transfer-encoding", "upgrade", "expect"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                return Handled::Pass;
            }
        }
        // a refused Host is answered by pingora's path, the same 400 either way
        let Some(host) = host.and_then(host::name) else { return Handled::Pass };

        let now = SystemTime::now();
        let Some((mut ctx, key)) = self.admitted(host, path, accept, now) else { return Handled::Pass };
        let Some(tenant) = ctx.tenant.clone() else { return Handled::Pass };
        let Some(entry) = self.core.cache.storage.front_get_hashed(key, now) else { return Handled::Pass };
        // counted only now, for a request answered here; at the limit pingora counts it
        // (once) and refuses it
        if self.core.at_rate(&tenant) || self.core.over_rate(&tenant) {
            return Handled::Pass;
        }
        // billed as its miss was
        ctx.passthrough = entry.passthrough();
        ctx.fallback = entry.fallback();

        let not_modified = entry.status() == 200
            && entry.etag().is_some_and(|etag| inm[..n_inm].iter().flatten().any(|v| weak_validate_etag(v, etag)));
        let mut out = BytesMut::with_capacity(512);
        let code = if not_modified {
            out.put_slice(&not_modified_head(&entry, ctx.expires, now));
            304
        } else {
            match answer::expiring_cache_control(entry.stored_header(), ctx.expires, now) {
                // an expiring URL: the stored head with its own Cache-Control
                Some(cc) => out.put_slice(&head_with_cache_control(entry.stored_header(), &cc)),
                None => out.put_slice(entry.head()),
            }
            entry.status()
        };
        answer::write_tail(&mut out, entry.age(now), ctx.vary_accept);
        // what pingora's session adds to every answer it writes
        out.put_slice(b"Date: ");
        out.put_slice(get_cached_date().as_bytes());
        out.put_slice(b"\r\nConnection: keep-alive\r\n\r\n");
        let header_only = is_head || not_modified;
        let len = out.len() + if header_only { 0 } else { entry.body().len() };
        let write = async {
            match entry.file() {
                Some(file) if !header_only => send_file(stream, &out, file).await,
                _ => write_response(stream, &out, if header_only { &[] } else { entry.body() }).await,
            }
        };
        // a client that stops reading loses the connection (and its hold on the body)
        let written = matches!(timeout(self.timeouts.write(len), write).await, Ok(Ok(())));
        let bytes = if header_only || !written { 0 } else { entry.body().len() };
        ctx.count(&Finished {
            code,
            cache: cache::Outcome::Hit,
            bytes,
            content_type: entry.stored_header().headers.get(http::header::CONTENT_TYPE).map(|v| v.as_bytes()),
            origin,
            referer,
            client,
        });
        metrics::hit_path_request();
        if written {
            Handled::Served
        } else {
            Handled::Broken
        }
    }
}

impl EdgeApp {
    /// The admitted request's context and cache key hash, or `None` if admission refuses
    /// it or the tenant does not cache (pingora answers those). A head seen before on this
    /// thread reuses its admission (see [`memo`]) as long as the tenant set is the same
    /// (no reload since), the URL has not expired and the tenant's cache generation is the
    /// same (a tenant or source purge).
    fn admitted(&self, host: &str, path: &str, accept: Option<&[u8]>, now: SystemTime) -> Option<(Ctx, u128)> {
        let generation = |ctx: &Ctx| ctx.tenant.as_ref().map(|t| self.core.cache.generations.of(&t.id, &ctx.source));
        let epoch = self.core.tenants.load().epoch;
        if let Some((ctx, gen, key)) = memo::get(host, path, accept, epoch) {
            if !expired(ctx.expires, now) && generation(&ctx) == Some(gen) && self.same_watermark(&ctx) {
                return Some((ctx, key));
            }
        }
        let mut ctx = Ctx::new();
        // unverified requests go to pingora, which limits them per address
        let parts = RequestParts { get_or_head: true, host: Some(host.as_bytes()), path, accept, client: None };
        if self.core.admit(&parts, &mut ctx, false).is_err() || !caches(&ctx) || ctx.watermark_unknown() {
            return None;
        }
        let tenant = ctx.tenant.as_ref()?;
        let gen = self.core.cache.generations.of(&tenant.id, &ctx.source);
        let key = key_hash(&cache::key(&tenant.id, gen, &ctx.key_request(), ctx.format));
        // `epoch` was read before admission: a reload in between only makes the entry stale
        memo::put(host, path, accept, &ctx, epoch, gen, key);
        Some((ctx, key))
    }
}

impl EdgeApp {
    /// A remembered admission still names the watermark's current identity (checked
    /// within the tenant's `watermark.revalidate`).
    fn same_watermark(&self, ctx: &Ctx) -> bool {
        let (Some(src), Some(tenant)) = (&ctx.watermark, &ctx.tenant) else { return true };
        let revalidate = super::admission::watermark_revalidate(tenant);
        let fresh = self.core.tenants.watermarks.fresh(&tenant.id, src, revalidate);
        fresh.is_some_and(|l| ctx.watermark_id.as_deref() == Some(l.id.as_str()))
    }
}

/// Writes `head` and `body` and flushes. Together they go out in one `writev` straight
/// from the cache's memory, skipping the stream's write buffer: the edge's buffer is
/// smaller than a typical image (see `server::EDGE_WRITE_BUFFER`), and a buffer copy of
/// every hit costs more than the header's second iovec.
async fn write_response(stream: &mut tokio::net::TcpStream, head: &[u8], body: &[u8]) -> std::io::Result<()> {
    let mut done = 0;
    let total = head.len() + body.len();
    while done < total {
        let n = if done < head.len() {
            stream.write_vectored(&[IoSlice::new(&head[done..]), IoSlice::new(body)]).await?
        } else {
            stream.write(&body[done - head.len()..]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    stream.flush().await
}

/// Writes `head`, then `file` with `sendfile`. `MSG_MORE` holds the head back until the
/// body follows, so both leave in full segments, as one `writev` would send them.
async fn send_file(stream: &mut tokio::net::TcpStream, head: &[u8], file: &BodyFile) -> std::io::Result<()> {
    let mut done = 0;
    while done < head.len() {
        let n = stream
            .async_io(Interest::WRITABLE, || Ok(rustix::net::send(&*stream, &head[done..], SendFlags::MORE)?))
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        done += n;
    }
    let mut offset = 0;
    while offset < file.len() {
        let left = usize::try_from(file.len() - offset).unwrap_or(usize::MAX);
        let n = stream
            .async_io(Interest::WRITABLE, || Ok(rustix::fs::sendfile(&*stream, file, Some(&mut offset), left)?))
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
    }
    Ok(())
}

/// Pingora's stream for `tcp`, with `unread` put back in front of what it reads next.
fn into_pingora(tcp: tokio::net::TcpStream, unread: &[u8], established: SystemTime) -> Stream {
    use std::os::fd::AsRawFd;
    let mut s = TcpStream::from(tcp);
    s.set_socket_digest(SocketDigest::from_raw_fd(s.as_raw_fd()));
    s.established_ts = established;
    s.rewind(unread);
    Box::new(s)
}

/// The status line and headers of a 304 for `entry`, as pingora's `to_304` makes it,
/// without the per-answer headers (`Age`, `Date`, ...) the caller appends.
fn not_modified_head(entry: &FrontEntry, expires: Option<u64>, now: SystemTime) -> bytes::Bytes {
    let mut h = entry.stored_header().clone();
    to_304(&mut h);
    // infallible for a value made from a valid header value
    let _ = answer::bound_by_expiry(&mut h, expires, now);
    answer::stored_head(&h)
}

/// `stored` as [`answer::stored_head`] writes it, with `cache_control` instead of its own.
fn head_with_cache_control(stored: &pingora::http::ResponseHeader, cache_control: &str) -> bytes::Bytes {
    let mut h = stored.clone();
    match h.insert_header(http::header::CACHE_CONTROL, cache_control) {
        Ok(()) => answer::stored_head(&h),
        // a value we cannot set: never keep the stored one (it outlives the URL)
        Err(_) => {
            h.remove_header(&http::header::CACHE_CONTROL);
            answer::stored_head(&h)
        }
    }
}

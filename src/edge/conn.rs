//! The edge listener's connection handler: fresh front-cache hits are answered here, below
//! pingora's HTTP/1 session machinery; everything else is handed to pingora unchanged.
//!
//! A hit is most of an image CDN's traffic, and per hit pingora's request state (header maps,
//! session, proxy phases) cost more CPU than the kernel's TCP work. Here a hit is: one read,
//! `httparse`, the same admission as the proxy ([`EdgeCore::admit`]), a front-cache lookup
//! and one write of a header prefix serialized when the entry was filled. The answer is the
//! one pingora-cache gives on a hit (same headers, `Age`, `Date`, 304, HEAD), counted the
//! same way. Anything this path does not handle itself — a miss, a rejection, `Range`,
//! `If-Modified-Since`, HTTP/1.0, a request body, `Connection` options, a malformed or large
//! head, HTTP/2 — goes to pingora with the bytes already read put back into the stream, so
//! pingora sees the connection exactly as the client sent it.

use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::{Buf, BufMut, BytesMut};
use pingora::apps::ServerApp;
use pingora::protocols::http::conditional_filter::{to_304, weak_validate_etag};
use pingora::protocols::http::date::get_cached_date;
use pingora::protocols::l4::stream::Stream as TcpStream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream, ALPN};
use pingora::server::ShutdownWatch;
use pingora_proxy::HttpProxy;
use rustix::net::SendFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};

use super::admission::{expired, RequestParts};
use super::ctx::Finished;
use super::threads::{self, adopt};
use super::{caches, host, memo, Ctx, Edge, EdgeCore};
use crate::answer;
use crate::cache::body_file::BodyFile;
use crate::cache::{self, key_hash, FrontEntry};

/// Request heads longer than this (or with more headers than [`MAX_HEADERS`]) go to
/// pingora, which has its own limits and error answers.
const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;
/// How long an idle keep-alive connection (or a slow request head) is kept.
const IDLE: Duration = Duration::from_secs(60);

pub struct EdgeApp {
    core: Arc<EdgeCore>,
    proxy: Arc<HttpProxy<Edge>>,
}

impl EdgeApp {
    pub fn new(core: Arc<EdgeCore>, proxy: HttpProxy<Edge>) -> Self {
        EdgeApp { core, proxy: Arc::new(proxy) }
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
    /// Serves a plain TCP connection on this thread: hits here, the rest through pingora.
    /// `_load` counts the connection on this thread until it ends or goes back to pingora's
    /// connection loop.
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
        loop {
            let outcome = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => Some((self.serve(&req, &mut tcp, client).await, n)),
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
                    // too long or malformed: pingora answers that
                    _ => Some((Handled::Pass, 0)),
                }
            };
            match outcome {
                // pipelined requests stay in order: the rest of `buf` is parsed next
                Some((Handled::Served, n)) => {
                    buf.advance(n);
                    if *shutdown.borrow() {
                        return None;
                    }
                    if !buf.is_empty() {
                        continue;
                    }
                }
                Some((Handled::Broken, _)) => return None,
                Some((Handled::Pass, _)) => break,
                None => {}
            }
            let read = tokio::select! {
                r = tokio::time::timeout(IDLE, tcp.read_buf(&mut buf)) => r,
                _ = shutdown_rx.changed() => return None,
            };
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
        let stream = into_pingora(tcp, &buf, established);
        self.proxy.process_new(stream, shutdown).await
    }

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
        let Some((ctx, key)) = self.admitted(host, path, accept, now) else { return Handled::Pass };
        let Some(tenant) = ctx.tenant.clone() else { return Handled::Pass };
        let Some(entry) = self.core.cache.storage.front_get_hashed(key, now) else { return Handled::Pass };
        // counted only now, for a request answered here; at the limit pingora counts it
        // (once) and refuses it
        if self.core.at_rate(&tenant) || self.core.over_rate(&tenant) {
            return Handled::Pass;
        }

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
        let written = match entry.file() {
            Some(file) if !header_only => send_file(stream, &out, file).await,
            _ => write_response(stream, &out, if header_only { &[] } else { entry.body() }).await,
        }
        .is_ok();
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
            if !expired(ctx.expires, now) && generation(&ctx) == Some(gen) {
                return Some((ctx, key));
            }
        }
        let mut ctx = Ctx::new();
        // unverified requests go to pingora, which limits them per address
        let parts = RequestParts { get_or_head: true, host: Some(host.as_bytes()), path, accept, client: None };
        if self.core.admit(&parts, &mut ctx, false).is_err() || !caches(&ctx) {
            return None;
        }
        let tenant = ctx.tenant.as_ref()?;
        let gen = self.core.cache.generations.of(&tenant.id, &ctx.source);
        let key = key_hash(&cache::key(&tenant.id, gen, &ctx.canonical, ctx.format));
        // `epoch` was read before admission: a reload in between only makes the entry stale
        memo::put(host, path, accept, &ctx, epoch, gen, key);
        Some((ctx, key))
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

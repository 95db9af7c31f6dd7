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

use crate::body_file::BodyFile;
use crate::cache::{self, key_hash, FrontEntry};
use crate::edge::{caches, expired, Ctx, Edge, EdgeCore, RequestParts};

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
enum Outcome {
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
        let mut buf = BytesMut::with_capacity(2048);
        let mut shutdown_rx = shutdown.clone();
        loop {
            let outcome = {
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&buf) {
                    Ok(httparse::Status::Complete(n)) => Some((self.serve(&req, &mut tcp).await, n)),
                    Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
                    // too long or malformed: pingora answers that
                    _ => Some((Outcome::Pass, 0)),
                }
            };
            match outcome {
                // pipelined requests stay in order: the rest of `buf` is parsed next
                Some((Outcome::Served, n)) => {
                    buf.advance(n);
                    if *shutdown.borrow() {
                        return None;
                    }
                    if !buf.is_empty() {
                        continue;
                    }
                }
                Some((Outcome::Broken, _)) => return None,
                Some((Outcome::Pass, _)) => break,
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
    async fn serve(&self, req: &httparse::Request<'_, '_>, stream: &mut tokio::net::TcpStream) -> Outcome {
        if req.version != Some(1) {
            return Outcome::Pass;
        }
        let (Some(method), Some(target)) = (req.method, req.path) else { return Outcome::Pass };
        let is_head = match method {
            "GET" => false,
            "HEAD" => true,
            _ => return Outcome::Pass,
        };
        // origin-form with visible ASCII only, as `http::Uri` would accept it
        if !target.starts_with('/') || !target.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Outcome::Pass;
        }
        let path = target.split_once('?').map_or(target, |(p, _)| p);
        let (mut host, mut accept) = (None, None);
        let mut inm: [Option<&[u8]>; 4] = [None; 4];
        let mut n_inm = 0;
        for h in req.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("host") {
                if host.is_some() {
                    return Outcome::Pass;
                }
                host = Some(std::str::from_utf8(h.value).ok());
            } else if name.eq_ignore_ascii_case("accept") {
                accept = Some(h.value);
            } else if name.eq_ignore_ascii_case("if-none-match") {
                match inm.get_mut(n_inm) {
                    Some(slot) => *slot = Some(h.value),
                    None => return Outcome::Pass,
                }
                n_inm += 1;
            } else if name.eq_ignore_ascii_case("connection") {
                if !h.value.eq_ignore_ascii_case(b"keep-alive") {
                    return Outcome::Pass;
                }
            } else if name.eq_ignore_ascii_case("content-length") {
                if h.value != b"0" {
                    return Outcome::Pass;
                }
            } else if ["range", "if-range", "if-modified-since", "transfer-encoding", "upgrade", "expect"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n))
            {
                return Outcome::Pass;
            }
        }
        let Some(Some(host)) = host else { return Outcome::Pass };

        let now = SystemTime::now();
        let Some((ctx, key)) = self.admitted(host, path, accept, now) else { return Outcome::Pass };
        let Some(tenant) = ctx.tenant.clone() else { return Outcome::Pass };
        let Some(entry) = self.core.cache.storage.front_get_hashed(key, now) else { return Outcome::Pass };
        // counted only now, as pingora's path counts it once; over the limit, pingora rejects
        if self.core.over_rate(&tenant) {
            return Outcome::Pass;
        }

        let not_modified = entry.status() == 200
            && entry.etag().is_some_and(|etag| inm[..n_inm].iter().flatten().any(|v| weak_validate_etag(v, etag)));
        let mut out = BytesMut::with_capacity(512);
        let code = if not_modified {
            out.put_slice(&not_modified_head(&entry));
            304
        } else {
            out.put_slice(entry.head());
            entry.status()
        };
        out.put_slice(b"Age: ");
        out.put_slice(entry.age(now).to_string().as_bytes());
        out.put_slice(b"\r\nx-cache: HIT\r\n");
        if ctx.vary_accept {
            out.put_slice(b"vary: Accept\r\n");
        }
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
        ctx.count(code, "hit", bytes);
        if written {
            Outcome::Served
        } else {
            Outcome::Broken
        }
    }
}

impl EdgeApp {
    /// The admitted request's context and cache key hash, or `None` if admission refuses
    /// it or the tenant does not cache (pingora answers those). A head seen before on this
    /// thread reuses its admission (see [`memo`]) as long as the URL has not expired and
    /// the tenant's cache generation is the same.
    fn admitted(&self, host: &str, path: &str, accept: Option<&[u8]>, now: SystemTime) -> Option<(Ctx, u128)> {
        let generation = |ctx: &Ctx| ctx.tenant.as_ref().map(|t| self.core.cache.generations.get(&t.id));
        if let Some((ctx, gen, key)) = memo::get(host, path, accept) {
            if !expired(ctx.expires, now) && generation(&ctx) == Some(gen) {
                return Some((ctx, key));
            }
        }
        let mut ctx = Ctx::new();
        let parts = RequestParts { get_or_head: true, host: Some(host), path, accept };
        if self.core.admit(&parts, &mut ctx, false).is_err() || !caches(&ctx) {
            return None;
        }
        let tenant = ctx.tenant.as_ref()?;
        let gen = self.core.cache.generations.get(&tenant.id);
        let key = key_hash(&cache::key(&tenant.id, gen, &ctx.canonical, ctx.format));
        memo::put(host, path, accept, &ctx, gen, key);
        Some((ctx, key))
    }
}

/// Admissions of recent request heads, per thread (a connection stays on its thread).
///
/// Admission — signature HMAC, parsing the options, the canonical request, the cache key
/// hash — was 11 % of the CPU of a hit (`perf`, 12 KB hits at 64 connections), and a CDN
/// asks for the same URL again and again. An entry is reused only for the exact same
/// host, path and `Accept` bytes; the caller still checks expiry and the cache generation
/// (a tenant purge), and counts the rate limit. Tenants, keys and limits only change with a
/// restart. Only admitted requests are kept, at most [`memo::MAX_BYTES`] per thread.
mod memo {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::hash::{BuildHasher, RandomState};

    use crate::edge::Ctx;

    pub const MAX_BYTES: usize = 1 << 20;

    struct Entry {
        host: Box<str>,
        path: Box<str>,
        accept: Option<Box<[u8]>>,
        ctx: Ctx,
        generation: u64,
        key: u128,
    }

    #[derive(Default)]
    struct Memo {
        hasher: RandomState,
        map: HashMap<u64, Entry>,
        bytes: usize,
    }

    thread_local! {
        static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
    }

    fn size(host: &str, path: &str, accept: Option<&[u8]>) -> usize {
        host.len() + path.len() + accept.map_or(0, <[u8]>::len) + 256
    }

    /// A context for this request from the admission of the same head, with the cache
    /// generation and key hash it had.
    pub fn get(host: &str, path: &str, accept: Option<&[u8]>) -> Option<(Ctx, u64, u128)> {
        MEMO.with(|m| {
            let m = m.borrow();
            let e = m.map.get(&m.hasher.hash_one((host, path, accept)))?;
            (&*e.host == host && &*e.path == path && e.accept.as_deref() == accept)
                .then(|| (e.ctx.again(), e.generation, e.key))
        })
    }

    pub fn put(host: &str, path: &str, accept: Option<&[u8]>, ctx: &Ctx, generation: u64, key: u128) {
        MEMO.with(|m| {
            let mut m = m.borrow_mut();
            let bytes = size(host, path, accept);
            if m.bytes + bytes > MAX_BYTES {
                // full: start over (cheaper than tracking recency on every hit)
                m.map.clear();
                m.bytes = 0;
            }
            let hash = m.hasher.hash_one((host, path, accept));
            let entry = Entry {
                host: host.into(),
                path: path.into(),
                accept: accept.map(Into::into),
                ctx: ctx.clone(),
                generation,
                key,
            };
            if let Some(old) = m.map.insert(hash, entry) {
                m.bytes -= size(&old.host, &old.path, old.accept.as_deref());
            }
            m.bytes += bytes;
        })
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

/// Where connections live: the edge's runtime threads and how many connections each
/// serves. Pingora puts a new connection's task on a random thread; with a handful of
/// long-lived keep-alive connections that is often lopsided (8 connections on 2 threads
/// split 6:2 or worse 3 times in 10), and one thread's core saturates while the other's
/// idles. Each connection goes to a thread with the fewest, as nginx's `least_conn` would.
mod threads {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::runtime::{Handle, RuntimeFlavor};

    struct Thread {
        handle: Handle,
        load: Arc<AtomicUsize>,
    }

    /// Every runtime thread that has served a connection (they register on first use).
    static THREADS: Mutex<Vec<Thread>> = Mutex::new(Vec::new());

    thread_local! {
        static HERE: RefCell<Option<Arc<AtomicUsize>>> = const { RefCell::new(None) };
    }

    /// This thread's connection count, registering the thread on first use. `None` on a
    /// work-stealing runtime, where tasks move between threads by themselves.
    fn here() -> Option<Arc<AtomicUsize>> {
        HERE.with(|h| {
            if let Some(load) = &*h.borrow() {
                return Some(load.clone());
            }
            let handle = Handle::try_current().ok()?;
            if handle.runtime_flavor() != RuntimeFlavor::CurrentThread {
                return None;
            }
            let load = Arc::new(AtomicUsize::new(0));
            THREADS.lock().unwrap_or_else(|e| e.into_inner()).push(Thread { handle, load: load.clone() });
            *h.borrow_mut() = Some(load.clone());
            Some(load)
        })
    }

    /// Picks the thread for a new connection: this one, or the one with the fewest
    /// connections if it has fewer. The connection is counted there at once, so that
    /// connections accepted in a burst spread out before any of them has started.
    pub fn place() -> (Option<Handle>, Load) {
        let Some(mine) = here() else { return (None, Load(None)) };
        let threads = THREADS.lock().unwrap_or_else(|e| e.into_inner());
        let least = threads.iter().min_by_key(|t| t.load.load(Ordering::Relaxed));
        let (handle, load) = match least {
            Some(t) if t.load.load(Ordering::Relaxed) < mine.load(Ordering::Relaxed) => {
                (Some(t.handle.clone()), t.load.clone())
            }
            _ => (None, mine),
        };
        load.fetch_add(1, Ordering::Relaxed);
        (handle, Load(Some(load)))
    }

    /// One connection counted on its thread while this lives.
    pub struct Load(Option<Arc<AtomicUsize>>);

    impl Drop for Load {
        fn drop(&mut self) {
            if let Some(l) = &self.0 {
                l.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

/// Moves the connection onto the reactor of the thread running this task.
///
/// Pingora's accept loop registers every accepted socket with the I/O driver of the one
/// thread it runs on, then spawns the connection's task on a random thread. With
/// per-thread runtimes (`work_stealing: false`, imgedge's default) a task on another
/// thread is then woken through that thread's eventfd for every readiness event: two
/// threads and a context switch per request. Measured at 64 connections, that left a
/// sixth of the CPU idle. A duplicate of the descriptor registered here, with the original
/// closed (and so deregistered), keeps each connection's events on its own thread, as
/// nginx's workers do. `None` for anything but plain TCP, or if `dup` fails.
fn adopt(stream: &Stream) -> Option<(tokio::net::TcpStream, SystemTime)> {
    let tcp = stream.as_any().downcast_ref::<TcpStream>()?;
    let fd = duplicate(tcp)?;
    let std = std::net::TcpStream::from(fd);
    // the duplicate shares the original's file status: it is non-blocking already
    let tcp_stream = tokio::net::TcpStream::from_std(std).ok()?;
    Some((tcp_stream, tcp.established_ts))
}

#[allow(unsafe_code)]
fn duplicate(tcp: &TcpStream) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the descriptor belongs to `tcp`, which is borrowed for the whole call and so
    // stays open; the borrow ends before this function returns (only the duplicate lives on).
    let fd = unsafe { BorrowedFd::borrow_raw(tcp.as_raw_fd()) };
    fd.try_clone_to_owned().ok()
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
fn not_modified_head(entry: &FrontEntry) -> BytesMut {
    let mut h = entry.stored_header().clone();
    to_304(&mut h);
    let mut buf = BytesMut::with_capacity(512);
    crate::cache::write_head(&h, &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memo_answers_only_the_exact_same_head() {
        let mut ctx = Ctx::new();
        ctx.canonical = "w:100/plain/a.jpg".into();
        memo::put("img.test", "/sig/w:100/plain/a.jpg", Some(b"image/webp"), &ctx, 3, 42);
        let (got, generation, key) = memo::get("img.test", "/sig/w:100/plain/a.jpg", Some(b"image/webp")).unwrap();
        assert_eq!((got.canonical.as_str(), generation, key), ("w:100/plain/a.jpg", 3, 42));
        assert!(memo::get("img.test", "/sig/w:100/plain/a.jpg", None).is_none(), "another Accept");
        assert!(memo::get("img.test", "/sig/w:100/plain/a.jpg", Some(b"image/avif")).is_none());
        assert!(memo::get("other.test", "/sig/w:100/plain/a.jpg", Some(b"image/webp")).is_none(), "another host");
        assert!(memo::get("img.test", "/sig/w:101/plain/a.jpg", Some(b"image/webp")).is_none(), "another path");
    }

    #[test]
    fn new_connections_go_to_the_thread_with_the_fewest() {
        use std::sync::mpsc;
        // two single-thread runtimes on their own threads, as pingora's with
        // `work_stealing: false`; this is the only test placing connections
        let rt = || tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (a, b) = (rt(), rt());
        let first = a.block_on(async { threads::place() });
        assert!(first.0.is_none(), "the only thread keeps its connection");
        let (tx, rx) = mpsc::channel();
        let other = std::thread::spawn(move || {
            let (handle, load) = b.block_on(async { threads::place() });
            assert!(handle.is_none(), "1:0, this thread has fewer: keeps it");
            tx.send(load).unwrap();
            b // the runtime must outlive the placements that name it
        });
        let b_load = rx.recv().unwrap();
        // 1:1 now; from thread a, connections alternate: stay (2:1), move (2:2), stay, move
        let placed: Vec<_> = (0..4).map(|_| a.block_on(async { threads::place() })).collect();
        let moved: Vec<bool> = placed.iter().map(|(h, _)| h.is_some()).collect();
        assert_eq!(moved, [false, true, false, true]);
        drop((first, b_load, placed));
        drop(other.join().unwrap());
    }

    #[test]
    fn the_memo_stays_within_its_budget() {
        let ctx = Ctx::new();
        let long = "x".repeat(4000);
        for i in 0..2 * memo::MAX_BYTES / 4000 {
            memo::put("img.test", &format!("/{i}/{long}"), None, &ctx, 0, i as u128);
        }
        // the budget holds about 250 such entries: the first ones are gone, the last is there
        assert!(memo::get("img.test", &format!("/0/{long}"), None).is_none());
        let last = 2 * memo::MAX_BYTES / 4000 - 1;
        assert_eq!(memo::get("img.test", &format!("/{last}/{long}"), None).map(|e| e.2), Some(last as u128));
    }
}

//! The request log: one JSON line per edge request (`log.requests`), to standard output or
//! a file.
//!
//! The request path formats its line (no allocation: a per-thread scratch buffer, the
//! timestamp's date and time cached per second, the node name escaped once) and appends it
//! to one shared batch under a short lock; a writer thread takes the whole batch every 20 ms
//! and writes it with one `write`. Formatting where the fields are still in the cache, with
//! no per-line allocation, channel slot or hand-over to another core, is what keeps a logged
//! hit cheap: on two cores the writer's CPU is taken from the hits too. When `queue` lines
//! wait, further lines are dropped and counted (`imgedge_request_log_dropped_total`): a slow
//! disk never holds up an answer. The file is reopened on `SIGUSR1` (logrotate's
//! `postrotate`) and, with `max_size`, renamed to `{path}.1` once it grows past it.

use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use once_cell::sync::OnceCell;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cache::Outcome;
use crate::config::{RequestLog, TenantLog};
use crate::metrics;

/// One finished request, borrowed from the request's state for the time it takes to format.
pub struct Line<'a> {
    pub tenant: Option<&'a str>,
    pub operation: &'static str,
    pub status: u16,
    pub cache: Outcome,
    pub bytes: u64,
    /// The answer's `Content-Type` as sent (not UTF-8: written lossily).
    pub content_type: Option<&'a [u8]>,
    pub total_us: u64,
    pub render_us: Option<u64>,
    pub origin_us: Option<u64>,
    /// The canonical request (options and source; never the signature or the expiry).
    pub canonical: &'a str,
    /// Already truncated to the tenant's prefixes.
    pub client: Option<(IpAddr, u8)>,
    /// The hosts of the `Origin` and `Referer` headers.
    pub origin: Option<&'a str>,
    pub referer: Option<&'a str>,
}

/// Lines formatted and not yet taken by the writer.
struct Batch {
    buf: Vec<u8>,
    lines: usize,
}

struct Logger {
    /// The `node` field's value, JSON-escaped once.
    node: Box<[u8]>,
    /// Lines that may wait in `batch`.
    queue: usize,
    batch: Mutex<Batch>,
    /// Flush requests: the sender to acknowledge once everything logged before is written.
    flush: Mutex<Sender<Sender<()>>>,
}

static LOGGER: OnceCell<Logger> = OnceCell::new();
static REOPEN: AtomicBool = AtomicBool::new(false);

/// A poisoned lock only means a thread panicked while holding it; the batch is still bytes.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a request log is running: the request path builds no line otherwise.
#[inline]
pub fn enabled() -> bool {
    LOGGER.get().is_some()
}

/// Whether a cache hit of a tenant logging `ppm` hits per million is logged.
pub fn sampled(ppm: u32) -> bool {
    if ppm >= 1_000_000 {
        return true;
    }
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
    }
    // xorshift64: sampling needs no more than a spread of values, and no lock
    let x = STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        x
    });
    (x % 1_000_000) < u64::from(ppm)
}

fn seed() -> u64 {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut h = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&std::thread::current().id(), &mut h);
    (nanos ^ std::hash::Hasher::finish(&h)) | 1
}

thread_local! {
    /// This thread's line being formatted, and its cached timestamp prefix.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Formats `line` (finished now) and appends it to the writer's batch; drops and counts it
/// if `queue` lines already wait.
pub fn log(line: &Line<'_>) {
    let Some(l) = LOGGER.get() else { return };
    let appended = SCRATCH.with(|s| {
        let Ok(mut s) = s.try_borrow_mut() else { return false };
        s.buf.clear();
        let s = &mut *s;
        format_line(&mut s.buf, &mut s.clock, SystemTime::now(), &l.node, line);
        let mut batch = lock(&l.batch);
        if batch.lines >= l.queue {
            return false;
        }
        batch.buf.extend_from_slice(&s.buf);
        batch.lines += 1;
        true
    });
    if !appended {
        metrics::request_log_dropped();
    }
}

/// The client address cut to the tenant's prefix lengths (IPv4-mapped IPv6 as IPv4).
pub fn truncate(ip: IpAddr, log: &TenantLog) -> (IpAddr, u8) {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => {
            let p = log.ipv4_prefix.min(32);
            let mask = if p == 0 { 0 } else { u32::MAX << (32 - u32::from(p)) };
            (IpAddr::V4((u32::from(v4) & mask).into()), p)
        }
        IpAddr::V6(v6) => {
            let p = log.ipv6_prefix.min(128);
            let mask = if p == 0 { 0 } else { u128::MAX << (128 - u32::from(p)) };
            (IpAddr::V6((u128::from(v6) & mask).into()), p)
        }
    }
}

/// Where lines go.
enum Sink {
    Stdout,
    File { path: PathBuf, file: Option<File>, size: u64, max_size: u64 },
}

impl Sink {
    fn open(path: &Path) -> Option<(File, u64)> {
        use std::os::unix::fs::OpenOptionsExt;
        let r = std::fs::OpenOptions::new().create(true).append(true).mode(0o640).open(path);
        match r {
            Ok(f) => {
                let size = f.metadata().map_or(0, |m| m.len());
                Some((f, size))
            }
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "request log: cannot open");
                None
            }
        }
    }

    fn reopen(&mut self) {
        if let Sink::File { path, file, size, .. } = self {
            let opened = Self::open(path);
            *size = opened.as_ref().map_or(0, |o| o.1);
            *file = opened.map(|o| o.0);
        }
    }

    fn write(&mut self, buf: &[u8]) {
        match self {
            Sink::Stdout => {
                let _ = std::io::stdout().lock().write_all(buf);
            }
            Sink::File { path, file, size, max_size } => {
                if file.is_none() {
                    // a file that could not be opened is tried again with the next lines
                    let opened = Self::open(path);
                    *size = opened.as_ref().map_or(0, |o| o.1);
                    *file = opened.map(|o| o.0);
                }
                let Some(f) = file else { return };
                if let Err(e) = f.write_all(buf) {
                    tracing::error!(path = %path.display(), error = %e, "request log: write failed");
                    *file = None;
                    return;
                }
                *size += buf.len() as u64;
                if *max_size > 0 && *size >= *max_size {
                    let mut old = path.clone().into_os_string();
                    old.push(".1");
                    if let Err(e) = std::fs::rename(&*path, &old) {
                        tracing::error!(path = %path.display(), error = %e, "request log: cannot rotate");
                    }
                    *file = None;
                    *size = 0;
                }
            }
        }
    }
}

/// The host name, for the `node` field.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(|_| "unknown".to_owned(), |h| h.trim().to_owned())
}

/// Starts the writer thread and installs the logger. Called after pingora's daemon fork
/// (threads do not survive it), from the background service.
fn start(config: &RequestLog) {
    let (flush, flushes) = mpsc::channel();
    let sink = match &config.path {
        None => Sink::Stdout,
        Some(path) => Sink::File { path: path.clone(), file: None, size: 0, max_size: config.max_size },
    };
    let mut node = Vec::new();
    push_str(&mut node, &config.node.clone().unwrap_or_else(host_name));
    let logger = Logger {
        node: node.into_boxed_slice(),
        queue: config.queue,
        batch: Mutex::new(Batch { buf: Vec::with_capacity(BATCH_CAPACITY), lines: 0 }),
        flush: Mutex::new(flush),
    };
    if LOGGER.set(logger).is_err() {
        return;
    }
    let Some(logger) = LOGGER.get() else { return };
    if let Err(e) = std::thread::Builder::new().name("request-log".into()).spawn(move || writer(logger, &flushes, sink))
    {
        // lines pile up to `queue` and are then dropped and counted
        tracing::error!(error = %e, "request log: cannot start the writer thread; lines are dropped");
    }
}

/// How long the writer sleeps between batches. Senders never wake it (a futex call and a
/// context switch per line cost the hit path a quarter of its throughput), and a batch is
/// many lines per `write`.
const BATCH_EVERY: Duration = Duration::from_millis(20);

/// What a batch buffer keeps between batches (a burst's larger buffer is let go).
const BATCH_CAPACITY: usize = 256 << 10;

fn writer(logger: &Logger, flushes: &Receiver<Sender<()>>, mut sink: Sink) {
    let mut spare = Vec::with_capacity(BATCH_CAPACITY);
    loop {
        if REOPEN.swap(false, Ordering::AcqRel) {
            sink.reopen();
        }
        let mut acks = Vec::new();
        match flushes.recv_timeout(BATCH_EVERY) {
            Ok(ack) => acks.push(ack),
            Err(RecvTimeoutError::Timeout) => {}
            // the logger (a static) holds the sender: not while the process runs
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(BATCH_EVERY),
        }
        acks.extend(flushes.try_iter());
        {
            let mut batch = lock(&logger.batch);
            std::mem::swap(&mut batch.buf, &mut spare);
            batch.lines = 0;
        }
        if !spare.is_empty() {
            sink.write(&spare);
        }
        spare.clear();
        if spare.capacity() > 4 * BATCH_CAPACITY {
            spare = Vec::with_capacity(BATCH_CAPACITY);
        }
        for a in acks {
            let _ = a.send(());
        }
    }
}

/// Writes every line logged so far (the final flush at shutdown), waiting at most `limit`.
pub fn flush(limit: Duration) {
    let Some(l) = LOGGER.get() else { return };
    let (ack, done) = mpsc::channel();
    if lock(&l.flush).send(ack).is_ok() {
        let _ = done.recv_timeout(limit);
    }
}

/// Starts the writer once the server runs, and reopens the file on `SIGUSR1`.
pub struct Service(pub RequestLog);

#[async_trait]
impl BackgroundService for Service {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        start(&self.0);
        let mut usr1 = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "request log: cannot handle SIGUSR1 (no reopen)");
                let _ = shutdown.changed().await;
                return;
            }
        };
        loop {
            tokio::select! {
                _ = usr1.recv() => REOPEN.store(true, Ordering::Release),
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// A thread's formatting state.
#[derive(Default)]
struct Scratch {
    buf: Vec<u8>,
    clock: Clock,
}

/// `YYYY-MM-DDTHH:MM:SS.` of the second last formatted: lines in the same second share it.
#[derive(Default)]
struct Clock {
    secs: Option<u64>,
    prefix: [u8; 20],
}

impl Clock {
    /// Writes `time` as RFC 3339 UTC with milliseconds, quoted; `null` for a time it cannot
    /// show (before 1970 or after 9999).
    fn push(&mut self, buf: &mut Vec<u8>, time: SystemTime) {
        match time.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) if self.prefix_of(d.as_secs()) => {
                buf.push(b'"');
                buf.extend_from_slice(&self.prefix);
                let ms = d.subsec_millis();
                buf.extend_from_slice(&[b'0' + (ms / 100) as u8, b'0' + (ms / 10 % 10) as u8, b'0' + (ms % 10) as u8]);
                buf.extend_from_slice(b"Z\"");
            }
            _ => buf.extend_from_slice(b"null"),
        }
    }

    /// Makes `prefix` that of second `secs`; false if it has no 20-byte form.
    fn prefix_of(&mut self, secs: u64) -> bool {
        if self.secs == Some(secs) {
            return true;
        }
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        // "YYYY-MM-DDTHH:MM:SSZ", the `Z` replaced by the milliseconds' dot; humantime's
        // Display fails (not panics) past year 9999
        let mut text = Fixed::default();
        if std::fmt::Write::write_fmt(&mut text, format_args!("{}", humantime::format_rfc3339_seconds(t))).is_err()
            || text.len != text.buf.len()
        {
            return false;
        }
        self.prefix = text.buf;
        self.prefix[19] = b'.';
        self.secs = Some(secs);
        true
    }
}

/// A timestamp's text, on the stack; formatting past its end fails.
#[derive(Default)]
struct Fixed {
    buf: [u8; 20],
    len: usize,
}

impl std::fmt::Write for Fixed {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[i..]);
}

/// A JSON string: `"` and `\` escaped, control bytes as `\u00XX`, everything else as is
/// (the input is UTF-8, so the output is).
fn push_str(buf: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    buf.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        buf.extend_from_slice(&bytes[from..i]);
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            _ => buf.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
        from = i + 1;
    }
    buf.extend_from_slice(&bytes[from..]);
    buf.push(b'"');
}

fn push_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

/// Header bytes: invalid UTF-8 is replaced (U+FFFD), as `String::from_utf8_lossy` does.
fn push_opt_bytes(buf: &mut Vec<u8>, v: Option<&[u8]>) {
    match v.map(String::from_utf8_lossy) {
        Some(s) => push_str(buf, &s),
        None => buf.extend_from_slice(b"null"),
    }
}

/// Microseconds as milliseconds with three decimals.
fn push_ms(buf: &mut Vec<u8>, us: Option<u64>) {
    match us {
        Some(us) => {
            push_u64(buf, us / 1000);
            let f = us % 1000;
            buf.extend_from_slice(&[b'.', b'0' + (f / 100) as u8, b'0' + (f / 10 % 10) as u8, b'0' + (f % 10) as u8]);
        }
        None => buf.extend_from_slice(b"null"),
    }
}

fn push_ipv4(buf: &mut Vec<u8>, ip: Ipv4Addr) {
    for (i, o) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            buf.push(b'.');
        }
        push_u64(buf, u64::from(o));
    }
}

fn push_client(buf: &mut Vec<u8>, client: Option<(IpAddr, u8)>) {
    let Some((ip, prefix)) = client else {
        buf.extend_from_slice(b"null");
        return;
    };
    buf.push(b'"');
    let full = match ip {
        IpAddr::V4(v4) => {
            push_ipv4(buf, v4);
            prefix == 32
        }
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
            prefix == 128
        }
    };
    if !full {
        buf.push(b'/');
        push_u64(buf, u64::from(prefix));
    }
    buf.push(b'"');
}

/// One JSON line; field order is fixed (README § Request log). `node` is already a JSON string.
fn format_line(buf: &mut Vec<u8>, clock: &mut Clock, time: SystemTime, node: &[u8], r: &Line<'_>) {
    buf.extend_from_slice(b"{\"time\":");
    clock.push(buf, time);
    buf.extend_from_slice(b",\"node\":");
    buf.extend_from_slice(node);
    buf.extend_from_slice(b",\"tenant\":");
    push_opt_str(buf, r.tenant);
    buf.extend_from_slice(b",\"operation\":\"");
    buf.extend_from_slice(r.operation.as_bytes());
    buf.extend_from_slice(b"\",\"status\":");
    push_u64(buf, u64::from(r.status));
    buf.extend_from_slice(b",\"cache\":\"");
    buf.extend_from_slice(r.cache.label().as_bytes());
    buf.extend_from_slice(b"\",\"bytes\":");
    push_u64(buf, r.bytes);
    buf.extend_from_slice(b",\"content_type\":");
    push_opt_bytes(buf, r.content_type);
    buf.extend_from_slice(b",\"total_ms\":");
    push_ms(buf, Some(r.total_us));
    buf.extend_from_slice(b",\"render_ms\":");
    push_ms(buf, r.render_us);
    buf.extend_from_slice(b",\"origin_ms\":");
    push_ms(buf, r.origin_us);
    buf.extend_from_slice(b",\"request\":");
    push_opt_str(buf, (!r.canonical.is_empty()).then_some(r.canonical));
    buf.extend_from_slice(b",\"client\":");
    push_client(buf, r.client);
    buf.extend_from_slice(b",\"origin\":");
    push_opt_str(buf, r.origin);
    buf.extend_from_slice(b",\"referer\":");
    push_opt_str(buf, r.referer);
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn line(canonical: &str) -> Line<'_> {
        Line {
            tenant: None,
            operation: "transform",
            status: 200,
            cache: Outcome::Miss,
            bytes: 1234,
            content_type: Some(b"image/webp"),
            total_us: 12_345,
            render_us: Some(10_001),
            origin_us: None,
            canonical,
            client: None,
            origin: None,
            referer: None,
        }
    }

    fn json(r: &Line<'_>, time: SystemTime) -> serde_json::Value {
        let mut buf = Vec::new();
        let mut node = Vec::new();
        push_str(&mut node, "node-1");
        format_line(&mut buf, &mut Clock::default(), time, &node, r);
        assert_eq!(buf.last(), Some(&b'\n'));
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), 1, "one line");
        serde_json::from_slice(&buf).unwrap()
    }

    #[test]
    fn a_line_is_json_with_every_field() {
        let r = Line {
            client: Some(truncate(
                "203.0.113.77".parse().unwrap(),
                &TenantLog { ipv4_prefix: 24, ..TenantLog::default() },
            )),
            origin: Some("shop.example"),
            ..line("/w:100/plain/local:a \"b\".jpg")
        };
        let v = json(&r, SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let order = "time node tenant operation status cache bytes content_type total_ms render_ms origin_ms request client origin referer";
        assert_eq!(keys.len(), order.split(' ').count());
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["node"], "node-1");
        assert_eq!(v["tenant"], serde_json::Value::Null);
        assert_eq!(v["operation"], "transform");
        assert_eq!(v["status"], 200);
        assert_eq!(v["total_ms"], 12.345);
        assert_eq!(v["render_ms"], 10.001);
        assert_eq!(v["origin_ms"], serde_json::Value::Null);
        assert_eq!(v["request"], "/w:100/plain/local:a \"b\".jpg");
        assert_eq!(v["client"], "203.0.113.0/24");
        assert_eq!(v["origin"], "shop.example");
        assert_eq!(v["referer"], serde_json::Value::Null);
        assert_eq!(v["cache"], "miss");
        assert_eq!(v["bytes"], 1234);
        assert_eq!(v["content_type"], "image/webp");
        assert_eq!(json(&line(""), SystemTime::UNIX_EPOCH)["request"], serde_json::Value::Null);
        let v6 = truncate("2001:db8:1:2:3::9".parse().unwrap(), &TenantLog { ipv6_prefix: 48, ..TenantLog::default() });
        assert_eq!(v6, ("2001:db8:1::".parse().unwrap(), 48));
        let mapped = truncate("::ffff:198.51.100.9".parse().unwrap(), &TenantLog::default());
        assert_eq!(mapped, ("198.51.100.9".parse().unwrap(), 32));
        assert!(sampled(1_000_000));
        assert!(!(0..1000).any(|_| sampled(0)));
    }

    #[test]
    fn field_order_is_fixed() {
        let mut buf = Vec::new();
        format_line(&mut buf, &mut Clock::default(), SystemTime::UNIX_EPOCH, b"\"n\"", &line("/x"));
        let text = String::from_utf8(buf).unwrap();
        let at = |k: &str| text.find(&format!("\"{k}\":")).unwrap();
        let order = [
            "time",
            "node",
            "tenant",
            "operation",
            "status",
            "cache",
            "bytes",
            "content_type",
            "total_ms",
            "render_ms",
            "origin_ms",
            "request",
            "client",
            "origin",
            "referer",
        ];
        assert!(order.windows(2).all(|w| at(w[0]) < at(w[1])), "{text}");
        assert!(text.starts_with("{\"time\":\"1970-01-01T00:00:00.000Z\",\"node\":\"n\",\"tenant\":null,"), "{text}");
    }

    #[test]
    fn hostile_strings_are_escaped_and_read_back_unchanged() {
        let controls: String = (0u8..0x20).map(char::from).collect();
        let long = "a\"\\\u{1}é".repeat(20_000);
        let hostile = [
            "\"",
            "\\",
            "\\\"",
            "\"},\"status\":500,\"x\":\"",
            controls.as_str(),
            "\u{7f}\u{80}\u{2028}\u{2029}\u{feff}\u{10ffff}",
            "é 日本 😀 \\u0000",
            "\u{fffd}",
            long.as_str(),
        ];
        for s in hostile {
            let r = Line {
                tenant: Some(s),
                origin: Some(s),
                referer: Some(s),
                content_type: Some(s.as_bytes()),
                ..line(s)
            };
            let v = json(&r, SystemTime::UNIX_EPOCH);
            for k in ["tenant", "request", "content_type", "origin", "referer"] {
                assert_eq!(v[k].as_str(), Some(s), "{k} of {s:?}");
            }
            assert_eq!(v["status"], 200, "no field injected");
        }
        // control bytes as \u00XX, lower case, as before; DEL and non-ASCII as is
        let mut buf = Vec::new();
        push_str(&mut buf, "a\u{0}\u{1f}\n\t\"\\\u{7f}é");
        assert_eq!(buf, "\"a\\u0000\\u001f\\u000a\\u0009\\\"\\\\\u{7f}é\"".as_bytes());
    }

    #[test]
    fn header_bytes_that_are_not_utf8_are_replaced() {
        let bad: &[&[u8]] = &[b"image/\xff\xfe", b"\xc3", b"\xed\xa0\x80x", b"a\x00\xc3(\"\\"];
        for &b in bad {
            let v = json(&Line { content_type: Some(b), ..line("/x") }, SystemTime::UNIX_EPOCH);
            assert_eq!(v["content_type"].as_str().unwrap(), String::from_utf8_lossy(b), "{b:?}");
        }
    }

    #[test]
    fn numbers_and_addresses_read_as_before() {
        for n in [0, 1, 9, 10, 999, 1000, 1001, 123_456_789, u64::MAX] {
            let mut buf = Vec::new();
            push_u64(&mut buf, n);
            assert_eq!(buf, n.to_string().as_bytes());
            buf.clear();
            push_ms(&mut buf, Some(n));
            assert_eq!(String::from_utf8(buf).unwrap(), format!("{}.{:03}", n / 1000, n % 1000));
        }
        let cases = [
            ("0.0.0.0", 32, "\"0.0.0.0\""),
            ("255.255.255.255", 32, "\"255.255.255.255\""),
            ("10.20.0.0", 16, "\"10.20.0.0/16\""),
            ("203.0.113.0", 0, "\"203.0.113.0/0\""),
            ("2001:db8::1", 128, "\"2001:db8::1\""),
            ("2001:db8:1::", 48, "\"2001:db8:1::/48\""),
        ];
        for (ip, p, want) in cases {
            let mut buf = Vec::new();
            push_client(&mut buf, Some((ip.parse().unwrap(), p)));
            assert_eq!(String::from_utf8(buf).unwrap(), want);
        }
        let mut buf = Vec::new();
        push_client(&mut buf, None);
        assert_eq!(buf, b"null");
    }

    #[test]
    fn the_cached_timestamp_matches_a_fresh_one() {
        let mut clock = Clock::default();
        let base = SystemTime::UNIX_EPOCH + Duration::from_secs(1_798_761_599); // 2026-12-31T23:59:59Z
                                                                                // within a second, across seconds, a day and a year, and back in time
        let offsets_ms = [0, 1, 999, 1000, 1001, 1999, 86_400_000, 500, 0, 4_102_444_800_000];
        for ms in offsets_ms {
            let t = base + Duration::from_millis(ms) + Duration::from_micros(999);
            let mut buf = Vec::new();
            clock.push(&mut buf, t);
            assert_eq!(String::from_utf8(buf).unwrap(), format!("\"{}\"", humantime::format_rfc3339_millis(t)));
        }
        // times the format cannot show are null, not a broken line or a panic
        for t in [
            SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800 + 5),
            SystemTime::UNIX_EPOCH - Duration::from_secs(1),
        ] {
            let mut buf = Vec::new();
            clock.push(&mut buf, t);
            assert_eq!(buf, b"null");
        }
        let mut buf = Vec::new();
        clock.push(&mut buf, base);
        assert_eq!(buf, b"\"2026-12-31T23:59:59.000Z\"", "the cache is still right after a refusal");
    }
}

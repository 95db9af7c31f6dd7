//! The request log: one JSON line per edge request (`log.requests`), to standard output or
//! a file.
//!
//! The request path only fills a [`Record`] (a few small copies) and offers it to a bounded
//! channel; a writer thread formats and writes the lines, many per `write`. When the
//! channel is full the line is dropped and counted (`imgedge_request_log_dropped_total`):
//! a slow disk never holds up an answer. The file is reopened on `SIGUSR1` (logrotate's
//! `postrotate`) and, with `max_size`, renamed to `{path}.1` once it grows past it.

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use once_cell::sync::OnceCell;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::cache::Outcome;
use crate::config::{RequestLog, Tenant, TenantLog};
use crate::metrics;

/// One finished request, as handed to the writer.
pub struct Record {
    pub time: SystemTime,
    pub tenant: Option<Arc<Tenant>>,
    pub operation: &'static str,
    pub status: u16,
    pub cache: Outcome,
    pub bytes: u64,
    pub content_type: Option<String>,
    pub total_us: u64,
    pub render_us: Option<u64>,
    pub origin_us: Option<u64>,
    /// The canonical request (options and source; never the signature or the expiry).
    pub canonical: String,
    /// Already truncated to the tenant's prefixes.
    pub client: Option<(IpAddr, u8)>,
    pub origin: Option<String>,
    pub referer: Option<String>,
}

enum Msg {
    Line(Box<Record>),
    /// Write everything queued, then acknowledge.
    Flush(mpsc::Sender<()>),
}

struct Logger {
    tx: SyncSender<Msg>,
}

static LOGGER: OnceCell<Logger> = OnceCell::new();
static REOPEN: AtomicBool = AtomicBool::new(false);

/// Whether a request log is running: the request path builds no record otherwise.
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

/// Offers a record to the writer; drops and counts it if the writer is behind.
pub fn log(record: Record) {
    let Some(l) = LOGGER.get() else { return };
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = l.tx.try_send(Msg::Line(Box::new(record))) {
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
    let (tx, rx) = mpsc::sync_channel(config.queue);
    let sink = match &config.path {
        None => Sink::Stdout,
        Some(path) => Sink::File { path: path.clone(), file: None, size: 0, max_size: config.max_size },
    };
    let node = config.node.clone().unwrap_or_else(host_name);
    let spawned = std::thread::Builder::new().name("request-log".into()).spawn(move || writer(rx, sink, &node));
    match spawned {
        Ok(_) => {
            let _ = LOGGER.set(Logger { tx });
        }
        Err(e) => tracing::error!(error = %e, "request log: cannot start the writer thread; logging is off"),
    }
}

/// How long the writer sleeps between batches. It never blocks on the channel: a sender
/// then never has to wake it (a futex call and a context switch per line cost the hit path
/// a quarter of its throughput), and a batch is many lines per `write`.
const BATCH_EVERY: Duration = Duration::from_millis(20);

fn writer(rx: Receiver<Msg>, mut sink: Sink, node: &str) {
    let mut buf = Vec::with_capacity(64 << 10);
    loop {
        if REOPEN.swap(false, Ordering::AcqRel) {
            sink.reopen();
        }
        let mut acks = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(Msg::Line(r)) => format_line(&mut buf, &r, node),
                Ok(Msg::Flush(ack)) => acks.push(ack),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    sink.write(&buf);
                    return;
                }
            }
            if buf.len() >= 60 << 10 {
                sink.write(&buf);
                buf.clear();
            }
        }
        if !buf.is_empty() {
            sink.write(&buf);
            buf.clear();
        }
        for a in acks {
            let _ = a.send(());
        }
        std::thread::sleep(BATCH_EVERY);
    }
}

/// Writes every line queued so far (the final flush at shutdown), waiting at most `limit`.
pub fn flush(limit: Duration) {
    let Some(l) = LOGGER.get() else { return };
    let (ack, done) = mpsc::channel();
    if l.tx.send(Msg::Flush(ack)).is_ok() {
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

fn push_str(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for c in s.chars() {
        match c {
            '"' => buf.extend_from_slice(b"\\\""),
            '\\' => buf.extend_from_slice(b"\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => {
                let mut b = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    buf.push(b'"');
}

fn push_opt_str(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

fn push_ms(buf: &mut Vec<u8>, us: Option<u64>) {
    match us {
        Some(us) => {
            let _ = write!(buf, "{}.{:03}", us / 1000, us % 1000);
        }
        None => buf.extend_from_slice(b"null"),
    }
}

/// One JSON line; field order is fixed (README § Request log).
fn format_line(buf: &mut Vec<u8>, r: &Record, node: &str) {
    let _ = write!(buf, "{{\"time\":\"{}\",\"node\":", humantime::format_rfc3339_millis(r.time));
    push_str(buf, node);
    buf.extend_from_slice(b",\"tenant\":");
    push_opt_str(buf, r.tenant.as_ref().map(|t| t.id.as_str()));
    let _ = write!(
        buf,
        ",\"operation\":\"{}\",\"status\":{},\"cache\":\"{}\",\"bytes\":{},\"content_type\":",
        r.operation,
        r.status,
        r.cache.label(),
        r.bytes
    );
    push_opt_str(buf, r.content_type.as_deref());
    buf.extend_from_slice(b",\"total_ms\":");
    push_ms(buf, Some(r.total_us));
    buf.extend_from_slice(b",\"render_ms\":");
    push_ms(buf, r.render_us);
    buf.extend_from_slice(b",\"origin_ms\":");
    push_ms(buf, r.origin_us);
    buf.extend_from_slice(b",\"request\":");
    push_opt_str(buf, (!r.canonical.is_empty()).then_some(r.canonical.as_str()));
    buf.extend_from_slice(b",\"client\":");
    match r.client {
        Some((ip, p)) if p == if ip.is_ipv4() { 32 } else { 128 } => {
            let _ = write!(buf, "\"{ip}\"");
        }
        Some((ip, p)) => {
            let _ = write!(buf, "\"{ip}/{p}\"");
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"origin\":");
    push_opt_str(buf, r.origin.as_deref());
    buf.extend_from_slice(b",\"referer\":");
    push_opt_str(buf, r.referer.as_deref());
    buf.extend_from_slice(b"}\n");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_json_with_every_field() {
        let r = Record {
            time: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            tenant: None,
            operation: "transform",
            status: 200,
            cache: Outcome::Miss,
            bytes: 1234,
            content_type: Some("image/webp".into()),
            total_us: 12_345,
            render_us: Some(10_001),
            origin_us: None,
            canonical: "/w:100/plain/local:a \"b\".jpg".into(),
            client: Some(truncate(
                "203.0.113.77".parse().unwrap(),
                &TenantLog { ipv4_prefix: 24, ..TenantLog::default() },
            )),
            origin: Some("shop.example".into()),
            referer: None,
        };
        let mut buf = Vec::new();
        format_line(&mut buf, &r, "node-1");
        assert_eq!(buf.last(), Some(&b'\n'));
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["node"], "node-1");
        assert_eq!(v["tenant"], serde_json::Value::Null);
        assert_eq!(v["total_ms"], 12.345);
        assert_eq!(v["render_ms"], 10.001);
        assert_eq!(v["origin_ms"], serde_json::Value::Null);
        assert_eq!(v["request"], "/w:100/plain/local:a \"b\".jpg");
        assert_eq!(v["client"], "203.0.113.0/24");
        assert_eq!(v["cache"], "miss");
        assert_eq!(v["bytes"], 1234);
        let v6 = truncate("2001:db8:1:2:3::9".parse().unwrap(), &TenantLog { ipv6_prefix: 48, ..TenantLog::default() });
        assert_eq!(v6, ("2001:db8:1::".parse().unwrap(), 48));
        let mapped = truncate("::ffff:198.51.100.9".parse().unwrap(), &TenantLog::default());
        assert_eq!(mapped, ("198.51.100.9".parse().unwrap(), 32));
        assert!(sampled(1_000_000));
        assert!(!(0..1000).any(|_| sampled(0)));
    }
}

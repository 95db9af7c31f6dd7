//! Test harness: runs the real `imgedge` binary on ephemeral loopback ports with a
//! generated config, plus real origins (an HTTP file server with fault modes and an
//! S3 server with SigV4 enforced, both in-process on 127.0.0.1:0).

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imgedge::signature::{self, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// hex("secret") / hex("hello"): imgproxy's documented example pair.
pub const KEY: &str = "736563726574";
pub const SALT: &str = "68656c6c6f";

pub fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/images")
}

/// Copies of `../shared/bench/hostile/`: bombs, corrupt and disguised files.
pub fn hostile_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile")
}

/// Peak resident memory (VmHWM) of a process, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Signs `path` (starting with `/`) with the default test pair.
pub fn sign(path: &str) -> String {
    let pair = KeyPair { key: hex::decode(KEY).unwrap(), salt: hex::decode(SALT).unwrap() };
    format!("/{}{}", signature::sign(&pair, path, 32), path)
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A loopback port below the ephemeral range, never handed out twice by this process, for
/// a listener bound a while after its port is chosen (a fleet listener once its node
/// starts, PostgreSQL after `initdb`): a port from `free_port` could go to another test's
/// listener in between (a hop would reach another fleet, a server would fail to start).
pub fn reserved_port() -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20_000 + (std::process::id() as usize % 400) * 25;
    for _ in 0..2_000 {
        let port = (base + NEXT.fetch_add(1, Ordering::SeqCst) % 10_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    free_port()
}

/// A running imgedge process; killed on drop.
pub struct Imgedge {
    child: Child,
    pub edge: SocketAddr,
    pub ops: SocketAddr,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    client: reqwest::Client,
}

/// The binary under test; `IMGEDGE_BIN` runs the tests against another build (the release
/// one, for the measurements of `benches/load/shared-store.sh`).
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| std::env::var("IMGEDGE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_imgedge").to_owned()))
}

/// Config text for a server with the given `tenants:` YAML (a list, indented by two).
pub fn config_text(dir: &Path, edge: u16, ops: u16, tenants: &str) -> String {
    config_text_with(dir, edge, ops, tenants, DEFAULT_CACHE, "")
}

pub const DEFAULT_CACHE: &str = "  memory: 64MiB\n  max_object: 16MiB\n";

/// Like `config_text`, with the `cache:` section's body and extra top-level YAML. An
/// `extra` that starts with `render:` replaces the default render section.
pub fn config_text_with(dir: &Path, edge: u16, ops: u16, tenants: &str, cache: &str, extra: &str) -> String {
    let d = dir.display();
    let render = if extra.starts_with("render:") { "" } else { "render:\n  workers: 2\n" };
    format!(
        r#"pingora:
  threads: 2
  pid_file: {d}/imgedge.pid
  upgrade_sock: {d}/upgrade.sock
  grace_period_seconds: 0
  graceful_shutdown_timeout_seconds: 1
listen:
  edge: ["127.0.0.1:{edge}"]
  ops: "127.0.0.1:{ops}"
  render_socket: {d}/render.sock
{render}cache:
{cache}{extra}
tenants:
{tenants}"#
    )
}

/// The default test tenant: host `img.test`, local origin over tests/data/images.
pub fn local_tenant() -> String {
    local_tenant_at("t1", "img.test", &images_dir()) + "    presets:\n      thumb: \"rs:fill:100:100/q:70\"\n"
}

/// A tenant `id` on `host` signed with the test pair, with one local origin at `root`.
pub fn local_tenant_at(id: &str, host: &str, root: &Path) -> String {
    format!(
        r#"  - id: {id}
    hosts: [{host}]
    keys: [{{key: "{KEY}", salt: "{SALT}"}}]
    origins:
      local: {{type: local, root: "{}"}}
"#,
        root.display()
    )
}

impl Imgedge {
    pub async fn start(tenants: &str) -> Imgedge {
        Self::start_with(tenants, DEFAULT_CACHE, "").await
    }

    /// Starts with a custom `cache:` section body and extra top-level YAML.
    pub async fn start_with(tenants: &str, cache: &str, extra: &str) -> Imgedge {
        Self::start_config(|dir, edge, ops| config_text_with(dir, edge, ops, tenants, cache, extra)).await
    }

    /// Starts with the config text `config` makes of (directory, edge port, ops port).
    pub async fn start_config(config: impl FnOnce(&Path, u16, u16) -> String) -> Imgedge {
        let dir = tempfile::tempdir().unwrap();
        let (edge, ops) = (free_port(), free_port());
        let text = config(dir.path(), edge, ops);
        let config = dir.path().join("imgedge.yaml");
        std::fs::write(&config, text).unwrap();
        let child = spawn(dir.path(), &config);
        let client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().unwrap();
        let mut s = Imgedge {
            child,
            edge: SocketAddr::from(([127, 0, 0, 1], edge)),
            ops: SocketAddr::from(([127, 0, 0, 1], ops)),
            dir,
            config,
            client,
        };
        s.wait_ready().await;
        s
    }

    /// Graceful stop (SIGTERM), waiting up to 10 s for the process to exit.
    pub fn stop(&mut self) {
        if !self.terminate(Duration::from_secs(10)) {
            panic!("imgedge did not stop within 10 s:\n{}", self.log());
        }
    }

    /// Sends SIGTERM (pingora then cleans up its sockets) and waits up to `timeout`;
    /// true if the process is gone.
    fn terminate(&mut self, timeout: Duration) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.wait_exit(timeout)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no cleanup, no final flush.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `timeout` for the process to exit by itself; true if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Starts the process again on the same config, directory and ports.
    pub async fn restart(&mut self) {
        self.restart_after(|_| {}).await;
    }

    /// Stops the process, runs `between` on its directory (to remove its cache, say), and
    /// starts it again on the same config and ports.
    pub async fn restart_after(&mut self, between: impl FnOnce(&Path)) {
        self.stop();
        between(self.dir.path());
        self.child = spawn(self.dir.path(), &self.config);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("imgedge exited with {status}:\n{}", self.log());
            }
            let url = format!("http://{}/readyz", self.ops);
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "imgedge not ready in 30 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("imgedge.log")).unwrap_or_default()
    }

    /// GET `path` on the edge with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, host, path, &[]).await
    }

    /// GETs `path` until the edge answers it from the cache (bounded, ~1 s): the cache
    /// write of a miss can land just after its answer was read.
    pub async fn fill(&self, host: &str, path: &str) {
        for _ in 0..40 {
            let r = self.get(host, path).await;
            let hit = r.headers().get("x-cache").is_some_and(|v| v == "HIT");
            r.bytes().await.unwrap();
            if hit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{path} never became a hit\n{}", self.log());
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self.client.request(method, format!("http://{}{}", self.edge, path)).header("host", host);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap_or_else(|e| panic!("{path}: {e:?}\n{}", self.log()))
    }

    pub async fn ops_get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("http://{}{}", self.ops, path)).send().await.unwrap()
    }

    /// Value of a Prometheus sample (exact label match, labels in exposition order).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.ops_get("/metrics").await.text().await.unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| l.rsplit_once(' ').filter(|(name, _)| *name == series).map(|(_, v)| v.parse().unwrap()))
            .unwrap_or(0.0)
    }

    /// [`Imgedge::metric`] once it equals `want`, or its last value after ~2 s: a request
    /// is counted just after its answer was written, so the client can be a moment ahead.
    pub async fn metric_settled(&self, series: &str, want: f64) -> f64 {
        let mut v = self.metric(series).await;
        for _ in 0..100 {
            if v == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            v = self.metric(series).await;
        }
        v
    }
}

fn spawn(dir: &Path, config: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("imgedge.log")).unwrap();
    Command::new(bin())
        .arg("-c")
        .arg(config)
        .env("IMGEDGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl Drop for Imgedge {
    fn drop(&mut self) {
        if !self.terminate(Duration::from_secs(5)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Decodes an image response body and returns (format, width, height).
pub fn dims(body: &[u8]) -> (image::ImageFormat, u32, u32) {
    let format = image::guess_format(body).unwrap();
    let img = image::load_from_memory(body).unwrap();
    (format, img.width(), img.height())
}

/// How the HTTP test origin answers a path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Serve the file, or 404.
    None,
    /// 500 with a text body.
    ServerError,
    /// Accept, read the request, never answer.
    Stall,
    /// Send the headers and half the body, then reset the connection.
    Reset,
    /// `Content-Length` larger than the body, then close.
    Short,
    /// `Content-Length` half the body, then the whole body.
    Long,
    /// 200 `text/html` with an HTML body, whatever the extension.
    Html,
    /// 302 to the same file on `localhost` (another host than the origin's 127.0.0.1).
    RedirectOther,
    /// 302 to the same file on the same host.
    RedirectSame,
    /// Serve the file after 1 s.
    Slow,
}

impl Fault {
    /// The fault for a path and the path with the fault prefix removed.
    fn of(path: &str) -> (Fault, &str) {
        const PREFIXES: [(&str, Fault); 10] = [
            ("/fail/", Fault::ServerError),
            ("/stall/", Fault::Stall),
            ("/reset/", Fault::Reset),
            ("/short/", Fault::Short),
            ("/long/", Fault::Long),
            ("/html/", Fault::Html),
            ("/redirect-other/", Fault::RedirectOther),
            ("/redirect-same/", Fault::RedirectSame),
            ("/slow/", Fault::Slow),
            ("/", Fault::None),
        ];
        PREFIXES
            .iter()
            .find_map(|(p, f)| path.strip_prefix(p).map(|rest| (*f, rest)))
            .unwrap_or((Fault::None, path.trim_start_matches('/')))
    }
}

/// A minimal HTTP/1.1 file server on 127.0.0.1:0 that counts requests per path and
/// injects faults by path prefix (see [`Fault::of`]: `/fail/…` → 500, `/stall/…` never
/// answers, `/reset/…`, `/short/…`, `/long/…`, `/html/…`, `/redirect-other/…`,
/// `/redirect-same/…`, `/slow/…`); the rest of the path names the file.
pub struct HttpOrigin {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    pub total: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpOrigin {
    pub async fn start(root: PathBuf) -> HttpOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let total = Arc::new(AtomicUsize::new(0));
        let (h, t) = (hits.clone(), total.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else { continue };
                let (root, hits, total) = (root.clone(), h.clone(), t.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        if buf.len() > 64 << 10 {
                            return;
                        }
                    }
                    let head = String::from_utf8_lossy(&buf).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                    total.fetch_add(1, Ordering::SeqCst);
                    *hits.lock().unwrap().entry(path.clone()).or_default() += 1;
                    let (fault, rel) = Fault::of(&path);
                    let file = if rel.contains("..") { None } else { std::fs::read(root.join(rel)).ok() };
                    let resp = match (fault, file) {
                        (Fault::Stall, _) => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                        (Fault::ServerError, _) => http_response(500, "text/plain", b"boom".to_vec()),
                        (Fault::Html, _) => {
                            http_response(200, "text/html", b"<!doctype html><html><body>hi</body></html>".to_vec())
                        }
                        (Fault::RedirectOther | Fault::RedirectSame, _) => {
                            let host = if fault == Fault::RedirectOther { "localhost" } else { "127.0.0.1" };
                            format!(
                                "HTTP/1.1 302 Found\r\nlocation: http://{host}:{}/{rel}\r\ncontent-length: 0\r\n\
                                 connection: close\r\n\r\n",
                                addr.port()
                            )
                            .into_bytes()
                        }
                        (_, None) => http_response(404, "text/plain", b"not found".to_vec()),
                        (Fault::Reset, Some(body)) => {
                            let resp = http_response(200, "application/octet-stream", body.clone());
                            let _ = sock.write_all(&resp[..resp.len() - body.len() / 2]).await;
                            // linger 0: close sends RST instead of FIN
                            let _ = sock.set_zero_linger();
                            return;
                        }
                        (Fault::Short, Some(body)) => {
                            let mut resp = http_head(200, "application/octet-stream", body.len() + 1000);
                            resp.extend_from_slice(&body);
                            resp
                        }
                        (Fault::Long, Some(body)) => {
                            let mut resp = http_head(200, "application/octet-stream", body.len() / 2);
                            resp.extend_from_slice(&body);
                            resp
                        }
                        (Fault::Slow, Some(body)) => {
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            http_response(200, "application/octet-stream", body)
                        }
                        (Fault::None, Some(body)) => http_response(200, "application/octet-stream", body),
                    };
                    let _ = sock.write_all(&resp).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        HttpOrigin { addr, hits, total, task }
    }

    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

impl Drop for HttpOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn http_response(status: u16, content_type: &str, body: Vec<u8>) -> Vec<u8> {
    let mut out = http_head(status, content_type, body.len());
    out.extend_from_slice(&body);
    out
}

/// A response head declaring `content_length` bytes (which may be a lie).
fn http_head(status: u16, content_type: &str, content_length: usize) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {content_length}\r\netag: \"v1\"\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

pub const S3_ACCESS_KEY: &str = "AKIAIMGEDGETEST00000";
/// Contains `/` like real AWS secrets do, to catch encoding bugs.
pub const S3_SECRET_KEY: &str = "imgedge/Secret/Key/For/Loopback/Tests0";

/// An S3 server (s3s-fs) with SigV4 enforced, serving bucket `photos` with the test images
/// and an empty bucket `derived` (a shared derivative store). s3s-fs keeps each bucket as a
/// directory of `root()` and each object as a file at its key.
pub struct S3Server {
    pub endpoint: String,
    root: tempfile::TempDir,
    task: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl S3Server {
    pub async fn start() -> S3Server {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use hyper_util::server::conn::auto::Builder as ConnBuilder;
        use s3s::auth::SimpleAuth;
        use s3s::service::S3ServiceBuilder;

        let root = tempfile::tempdir().unwrap();
        let bucket = root.path().join("photos");
        std::fs::create_dir_all(bucket.join("nested")).unwrap();
        std::fs::create_dir_all(root.path().join("derived")).unwrap();
        for entry in std::fs::read_dir(images_dir()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), bucket.join(entry.file_name())).unwrap();
        }
        std::fs::copy(images_dir().join("coffee_600x400.jpg"), bucket.join("nested/coffee.jpg")).unwrap();
        let fs = s3s_fs::FileSystem::new(root.path()).unwrap();
        let mut b = S3ServiceBuilder::new(fs);
        b.set_auth(SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
        let service = b.build();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let held = conns.clone();
        let task = tokio::spawn(async move {
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((sock, _)) = listener.accept().await else { continue };
                // as S3 does: a small answer's last segment must not wait for the client's
                // delayed ACK (40 ms on Linux) behind Nagle's algorithm
                let _ = sock.set_nodelay(true);
                let conn = http.serve_connection(TokioIo::new(sock), service.clone()).into_owned();
                let handle = tokio::spawn(async move {
                    let _ = conn.await;
                });
                held.lock().unwrap().push(handle.abort_handle());
            }
        });
        S3Server { endpoint: format!("http://{addr}"), root, task, conns }
    }

    /// The directory holding one directory per bucket.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Stops listening and drops every open connection: the server is gone for clients.
    pub fn stop(&self) {
        self.task.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Assembles the pingora server: edge (proxy + cache), render (Unix socket), ops.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::{background_service, BackgroundService};

use crate::cache::{EdgeCache, HybridStorage};
use crate::config::Config;
use crate::edge::{ClientTimeouts, Edge, EdgeApp, EdgeCore};
use crate::fleet::serve::FleetService;
use crate::fleet::{Fleet, Health};
use crate::ops::Ops;
use crate::reload::{self, Reloader, Signals, Upgrade};
use crate::render::Render;
use crate::reqlog;
use crate::tenants::Tenants;
use crate::usage;

/// Opens the cache at start-up (recovering the disk tier off the request path) and
/// flushes it on graceful shutdown.
struct CacheLifecycle(&'static HybridStorage);

#[async_trait]
impl BackgroundService for CacheLifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if self.0.get().await.is_some() {
            self.0.publish_metrics();
        }
        let _ = shutdown.changed().await;
        self.0.close().await;
    }
}

/// Per-connection write buffer of the edge. Writes at least this large bypass it: the hit
/// path (`edge::conn`) sends header and body in one `writev` from the cache's memory, so the
/// buffer only gathers small answers (304, HEAD, errors). A buffer that held whole images
/// (64 KiB) cost a copy of every hit, and at 64 connections more memory than the L2 cache.
const EDGE_WRITE_BUFFER: usize = 4 * 1024;

/// Pingora's settings from the `pingora:` section, with imgedge's defaults.
pub fn server_conf(config: &Config) -> Result<ServerConf, String> {
    let mut conf: ServerConf = match &config.pingora {
        Some(v) => serde_yaml::from_value(v.clone()).map_err(|e| format!("{}: pingora: {e}", config.file.display()))?,
        None => ServerConf::default(),
    };
    let set = |key: &str| config.pingora.as_ref().and_then(|v| v.get(key)).is_some();
    // relative to the config file, as every other path in it
    let base = config.file.parent().unwrap_or(Path::new("."));
    for (key, path) in [("pid_file", &mut conf.pid_file), ("upgrade_sock", &mut conf.upgrade_sock)] {
        if set(key) && Path::new(path.as_str()).is_relative() {
            *path = base.join(path.as_str()).to_string_lossy().into_owned();
        }
    }
    if !set("threads") {
        conf.threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    }
    // One runtime per thread, each connection's events and task on one thread (see
    // `edge::threads::adopt`): no cross-thread wake-ups per request. Renders run on the blocking pool,
    // so no runtime thread is held by a transform.
    if !set("work_stealing") {
        conf.work_stealing = false;
    }
    conf.validate().map_err(|e| format!("{}: pingora: {e}", config.file.display()))
}

/// What `imgedge check-config` checks beyond the file's own validation (which
/// [`crate::config::load`] did): pingora's settings. A reload checks the same.
pub fn check(config: &Config) -> Result<(), String> {
    server_conf(config).map(|_| ())
}

/// Raises the soft limit on open descriptors to the hard one: every connection, cache file
/// and large cached body (`cache::body_file`) takes one.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::warn!(error = %e, "cannot raise the open file limit");
        }
    }
}

/// Creates the render socket's directory (0700) or checks the one there: a directory
/// another user owns (pre-created in a shared `/tmp`) would let them replace the socket
/// render trusts. Root's (`/run`, `/tmp` itself) is fine.
fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let err = |e: std::io::Error| format!("render socket directory {}: {e}", dir.display());
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(err)?;
    let owner = std::fs::metadata(dir).map_err(err)?.uid();
    let me = rustix::process::geteuid().as_raw();
    if owner != me && owner != 0 {
        return Err(format!(
            "render socket directory {} belongs to user {owner}, not to this user ({me}): refusing to use it",
            dir.display()
        ));
    }
    Ok(())
}

/// Builds every service and runs until shutdown, then writes the last usage batch.
/// Never returns on success.
pub fn run(config: Config, daemon: bool, upgrade: bool) -> Result<(), String> {
    let conf = server_conf(&config)?;
    reload::hold_signals();
    raise_fd_limit();
    let opt = Opt { upgrade, daemon, nocapture: false, test: false, conf: None };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();
    // usage first: an unusable spool or ledger URL fails the start, not the first flush
    let usage = usage::start(&config)?;

    let socket = config.listen.render_socket.to_string_lossy().into_owned();
    if let Some(dir) = config.listen.render_socket.parent() {
        private_dir(dir)?;
    }

    // one tenant set for edge, render and ops, swapped whole by a reload (SIGHUP)
    let tenants = Arc::new(Tenants::new(&config)?);
    let cache = Arc::new(EdgeCache::new(&config.cache)?);
    let render =
        Render::new(tenants.clone(), config.render.workers, config.render.queue).with_shared(cache.shared.clone());
    let mut render_svc = Service::new("render".to_owned(), HttpServer::new_app(render));
    render_svc.threads = Some(config.render.threads);
    // only this user may talk to render: it trusts its request headers
    render_svc.add_uds(&socket, Some(std::fs::Permissions::from_mode(0o600)));

    // before serving: the fleet's purges (or no start at all without PostgreSQL)
    let fleet_purge = match &config.fleet {
        Some(f) => Some(crate::fleet::purge::FleetPurge::prepare(f, cache.clone(), &config.cache)?),
        None => None,
    };
    let core = Arc::new(EdgeCore::new(tenants.clone(), cache.clone()));
    let fleet = config.fleet.as_ref().map(|f| Arc::new(Fleet::new(f).with_purges(fleet_purge.clone())));
    let proxy =
        pingora_proxy::http_proxy(&server.configuration, Edge::new(core.clone(), socket.clone(), fleet.clone()));
    let mut edge_svc = Service::new("edge".to_owned(), EdgeApp::new(core, proxy, ClientTimeouts::new(&config.listen)));
    for addr in &config.listen.edge {
        let buffers = L4BufferSettings::default().write(EDGE_WRITE_BUFFER);
        edge_svc.add_listener(ListenerConfig::tcp(addr.as_str()).l4_buffer(buffers));
    }

    server.add_service(background_service("cache", CacheLifecycle(cache.storage)));
    server.add_service(background_service("usage", usage::Service(usage.clone())));
    if let Some(f) = &fleet_purge {
        server.add_service(background_service("fleet purge", crate::fleet::purge::Listener(f.clone())));
    }
    if let Some(log) = &config.request_log {
        server.add_service(background_service("request log", reqlog::Service(log.clone())));
    }
    server.add_service(render_svc);
    server.add_service(edge_svc);
    if let (Some(f), Some(fleet)) = (&config.fleet, fleet) {
        // the owner's side of hops: same cache storage and lock as the edge
        let owner = FleetService::new(f, tenants.clone(), cache.clone(), socket, fleet_purge.clone());
        let mut svc = pingora_proxy::http_proxy_service_with_name(&server.configuration, owner, "fleet");
        svc.add_tcp(&f.listen.to_string());
        server.add_service(svc);
        server.add_service(background_service("fleet health", Health(fleet)));
    }
    if let Some(addr) = &config.listen.ops {
        let ops = Ops {
            render_socket: config.listen.render_socket.clone(),
            cache: cache.clone(),
            tenants: tenants.clone(),
            usage: config.usage.clone(),
            fleet: fleet_purge.clone(),
        };
        let mut ops = Service::new("ops".to_owned(), HttpServer::new_app(ops));
        ops.threads = Some(1);
        ops.add_tcp(addr);
        server.add_service(ops);
    }
    let signals =
        Signals { reloader: Reloader::new(&config, tenants), upgrade: Upgrade::new(config.file.clone(), daemon) };
    server.run(RunArgs { shutdown_signal: Box::new(signals) });
    // every service has stopped (SIGTERM, or SIGQUIT after handing the listeners to an
    // upgrade's new process): nothing can be counted any more, so this batch is the last
    usage.final_flush();
    cache.storage.final_close(std::time::Duration::from_secs(5));
    reqlog::flush(std::time::Duration::from_secs(2));
    std::process::exit(0)
}

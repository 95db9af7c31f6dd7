//! Assembles the pingora server: edge (proxy + cache), render (Unix socket), ops.

use std::os::unix::fs::PermissionsExt;

use pingora::apps::http_app::HttpServer;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::listening::Service;

use crate::cache::EdgeCache;
use crate::config::Config;
use crate::edge::{Edge, Tenants};
use crate::ops::Ops;
use crate::render::Render;

/// Pingora's settings from the `pingora:` section, with imgedge's defaults.
pub fn server_conf(config: &Config) -> Result<ServerConf, String> {
    let mut conf: ServerConf = match &config.pingora {
        Some(v) => serde_yaml::from_value(v.clone()).map_err(|e| format!("{}: pingora: {e}", config.file.display()))?,
        None => ServerConf::default(),
    };
    if config.pingora.as_ref().and_then(|v| v.get("threads")).is_none() {
        conf.threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    }
    conf.validate().map_err(|e| format!("{}: pingora: {e}", config.file.display()))
}

/// Builds every service and runs until shutdown. Never returns on success.
pub fn run(config: Config, daemon: bool, upgrade: bool) -> Result<(), String> {
    let conf = server_conf(&config)?;
    let opt = Opt { upgrade, daemon, nocapture: false, test: false, conf: None };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let socket = config.listen.render_socket.to_string_lossy().into_owned();
    if let Some(dir) = config.listen.render_socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("render socket directory {}: {e}", dir.display()))?;
    }

    let render = Render::new(&config.tenants, config.render.workers)?;
    let mut render_svc = Service::new("render".to_owned(), HttpServer::new_app(render));
    render_svc.threads = Some(config.render.threads);
    // only this user may talk to render: it trusts its request headers
    render_svc.add_uds(&socket, Some(std::fs::Permissions::from_mode(0o600)));

    let cache = EdgeCache::new(config.cache.memory_bytes, config.cache.max_object_bytes, config.cache.lock_timeout);
    let edge = Edge::new(Tenants::new(&config.tenants), cache, socket);
    let mut edge_svc = pingora_proxy::http_proxy_service_with_name(&server.configuration, edge, "edge");
    for addr in &config.listen.edge {
        edge_svc.add_tcp(addr);
    }

    server.add_service(render_svc);
    server.add_service(edge_svc);
    if let Some(addr) = &config.listen.ops {
        let mut ops = Service::new(
            "ops".to_owned(),
            HttpServer::new_app(Ops { render_socket: config.listen.render_socket.clone() }),
        );
        ops.threads = Some(1);
        ops.add_tcp(addr);
        server.add_service(ops);
    }
    server.run_forever()
}

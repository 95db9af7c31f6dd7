//! Signals: pingora's own (`SIGTERM` graceful stop, `SIGQUIT` hand the listeners to an
//! upgrade's new process, `SIGINT` fast stop), plus
//!
//! * `SIGHUP` — reload the config file: validated as `imgedge check-config` does, then
//!   tenants, keys, origins, limits, presets, prices and the admin token are swapped at
//!   once ([`crate::tenants`]); connections, the cache and counts are untouched. An invalid
//!   file is refused with every problem logged, and the running config stays. Sections a
//!   reload cannot apply (`pingora`, `listen`, `render`, `cache`, `usage`) are reported as
//!   needing an upgrade while the rest is applied.
//! * `SIGUSR2` — graceful upgrade started by the process itself: it checks that the
//!   installed binary accepts the config, starts it with `-u` and hands it the listeners as
//!   on `SIGQUIT`. Being its child, the new process stays in the service's cgroup and
//!   sandbox, so this works under systemd (`systemctl kill -s USR2 --kill-whom=main`).

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::{ShutdownSignal, ShutdownSignalWatch, UnixShutdownSignalWatch};
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::config::{self, Config};
use crate::metrics;
use crate::server;
use crate::tenants::{Changes, Tenants};
use crate::usage;

/// What a reload cannot change: the sections the process was started with.
struct Fixed {
    pingora: Option<serde_yaml::Value>,
    listen: config::Listen,
    render: config::Render,
    cache: config::Cache,
    usage: config::Usage,
    request_log: Option<config::RequestLog>,
    fleet: Option<config::Fleet>,
}

impl Fixed {
    fn of(c: &Config) -> Fixed {
        Fixed {
            pingora: c.pingora.clone(),
            listen: c.listen.clone(),
            render: c.render.clone(),
            cache: c.cache.clone(),
            usage: c.usage.clone(),
            request_log: c.request_log.clone(),
            fleet: c.fleet.clone(),
        }
    }

    /// Sections of `c` that differ from the running ones, named as in
    /// [`metrics::UPGRADE_SECTIONS`].
    fn changed(&self, c: &Config) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.pingora != c.pingora {
            out.push("pingora");
        }
        if self.listen != c.listen {
            out.push("listen");
        }
        if self.render != c.render {
            out.push("render");
        }
        if self.cache != c.cache {
            out.push("cache");
        }
        if self.usage != c.usage {
            out.push("usage");
        }
        if self.request_log != c.request_log {
            out.push("log");
        }
        if self.fleet != c.fleet {
            out.push("fleet");
        }
        out
    }
}

/// Applies the config file to the running process.
pub struct Reloader {
    file: PathBuf,
    tenants: Arc<Tenants>,
    fixed: Fixed,
}

/// What an applied reload did.
#[derive(Debug)]
pub struct Applied {
    pub changes: Changes,
    /// Sections that changed in the file and need an upgrade to apply.
    pub needs_upgrade: Vec<&'static str>,
}

impl Reloader {
    pub fn new(config: &Config, tenants: Arc<Tenants>) -> Reloader {
        Reloader { file: config.file.clone(), tenants, fixed: Fixed::of(config) }
    }

    /// Reads, validates and applies the file. On error nothing has changed.
    pub fn reload(&self) -> Result<Applied, String> {
        let config = config::load(&self.file).map_err(|e| e.to_string().trim_end().to_owned())?;
        server::check(&config)?;
        let (set, changes) = self.tenants.prepare(&config)?;
        let needs_upgrade = self.fixed.changed(&config);
        // metering first: a new tenant's first request, admitted once the set is current,
        // must find its row
        usage::update_tenants(&config.tenants);
        self.tenants.commit(set);
        metrics::config_loaded(config.tenants.len(), unix_now(), true);
        metrics::config_needs_upgrade(&needs_upgrade);
        Ok(Applied { changes, needs_upgrade })
    }

    /// [`Self::reload`], logged and counted.
    fn reload_logged(&self) {
        tracing::info!(file = %self.file.display(), "SIGHUP: reloading the config");
        match self.reload() {
            Ok(Applied { changes, needs_upgrade }) => {
                tracing::info!(
                    tenants = changes.tenants,
                    added = ?changes.added,
                    removed = ?changes.removed,
                    origins_rebuilt = ?changes.origins_rebuilt,
                    "config reloaded"
                );
                if !needs_upgrade.is_empty() {
                    tracing::warn!(
                        sections = ?needs_upgrade,
                        "config reloaded except these sections, which need a restart or graceful upgrade (SIGUSR2)"
                    );
                }
            }
            Err(e) => {
                metrics::config_rejected();
                tracing::error!("config reload refused, the running config is kept:\n{e}");
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How to start this process's successor for a graceful upgrade.
pub struct Upgrade {
    /// The binary as installed when this process started; a package upgrade replaces the
    /// file at this path.
    exe: Option<PathBuf>,
    conf: PathBuf,
    daemon: bool,
}

impl Upgrade {
    pub fn new(conf: PathBuf, daemon: bool) -> Upgrade {
        Upgrade { exe: std::env::current_exe().ok(), conf, daemon }
    }

    /// Starts the installed binary with `-u` after it has accepted the config; `true` if
    /// it runs and waits for the listeners. On `false` nothing changed.
    fn start(&self) -> bool {
        let Some(exe) = &self.exe else {
            tracing::error!("SIGUSR2: upgrade refused: the path of the binary is unknown");
            return false;
        };
        let checked = Command::new(exe).arg("check-config").arg("-c").arg(&self.conf).output();
        match checked {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                let err = String::from_utf8_lossy(&out.stderr);
                tracing::error!(
                    "SIGUSR2: upgrade refused, {} does not accept the config:\n{}",
                    exe.display(),
                    err.trim_end()
                );
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGUSR2: upgrade refused, cannot run {}", exe.display());
                return false;
            }
        }
        let mut cmd = Command::new(exe);
        cmd.arg("-u");
        if self.daemon {
            cmd.arg("-d");
        }
        cmd.arg("-c").arg(&self.conf);
        match cmd.spawn() {
            Ok(mut child) => {
                tracing::info!(pid = child.id(), binary = %exe.display(), "SIGUSR2: upgrade started, handing over the listeners");
                // reaped when it exits (a daemon's parent exits once the daemon is ready)
                std::thread::spawn(move || child.wait());
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGUSR2: upgrade refused, cannot start {}", exe.display());
                false
            }
        }
    }
}

/// The signal handlers of [`pingora::server::Server::run`]: pingora's three, plus reload
/// and self-started upgrade.
pub struct Signals {
    pub reloader: Reloader,
    pub upgrade: Upgrade,
}

struct Streams {
    quit: Signal,
    term: Signal,
    int: Signal,
    hup: Signal,
    usr2: Signal,
}

fn streams() -> std::io::Result<Streams> {
    Ok(Streams {
        quit: signal(SignalKind::quit())?,
        term: signal(SignalKind::terminate())?,
        int: signal(SignalKind::interrupt())?,
        hup: signal(SignalKind::hangup())?,
        usr2: signal(SignalKind::user_defined2())?,
    })
}

/// Replaces the default action (terminate) of `SIGHUP`, `SIGUSR1` (the request log's
/// reopen) and `SIGUSR2` as early as possible: one that arrives before its listener is
/// then dropped, not fatal.
pub fn hold_signals() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_io().build() else { return };
    rt.block_on(async {
        for kind in [SignalKind::hangup(), SignalKind::user_defined1(), SignalKind::user_defined2()] {
            if let Err(e) = signal(kind) {
                tracing::warn!(error = %e, "cannot handle signal {}", kind.as_raw_value());
            }
        }
    });
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let streams = streams();
        // the config the process started with is running; reported once reloads are
        // possible, so a SIGHUP sent after seeing it is never lost
        metrics::config_loaded(self.reloader.tenants.load().len(), unix_now(), false);
        let mut s = match streams {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGHUP/SIGUSR2: reload and self-upgrade are off");
                return UnixShutdownSignalWatch.recv().await;
            }
        };
        loop {
            tokio::select! {
                _ = s.quit.recv() => return ShutdownSignal::GracefulUpgrade,
                _ = s.term.recv() => return ShutdownSignal::GracefulTerminate,
                _ = s.int.recv() => return ShutdownSignal::FastShutdown,
                _ = s.hup.recv() => self.reloader.reload_logged(),
                _ = s.usr2.recv() => {
                    if self.upgrade.start() {
                        return ShutdownSignal::GracefulUpgrade;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn text(tenant_quality: u8, memory: &str) -> String {
        format!(
            "listen: {{edge: [\"127.0.0.1:8080\"], render_socket: r.sock}}\ncache: {{memory: {memory}}}\n\
             tenants:\n  - {{id: a, hosts: [a.test], allow_unsigned: true, quality: {tenant_quality},\n     \
             origins: {{o: {{type: http, base_url: \"https://a.example/\"}}}}}}\n"
        )
    }

    #[test]
    fn a_refused_file_changes_nothing_and_an_applied_one_names_sections_for_an_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("imgedge.yaml");
        std::fs::write(&file, text(80, "64MiB")).unwrap();
        let config = config::load(&file).unwrap();
        let tenants = Arc::new(Tenants::new(&config).unwrap());
        let r = Reloader::new(&config, tenants.clone());

        std::fs::write(&file, text(0, "64MiB")).unwrap();
        let e = r.reload().unwrap_err();
        assert!(e.contains("tenants[0].quality (tenant \"a\")"), "{e}");
        assert_eq!(tenants.load().epoch, 0, "nothing applied");

        std::fs::write(&file, text(70, "128MiB")).unwrap();
        let applied = r.reload().unwrap();
        assert_eq!(applied.needs_upgrade, ["cache"]);
        let set = tenants.load();
        assert_eq!((set.epoch, set.get("a").unwrap().tenant.quality), (1, 70));

        std::fs::write(&file, text(70, "64MiB")).unwrap();
        assert!(r.reload().unwrap().needs_upgrade.is_empty(), "compared with what runs, not the last file");
    }
}

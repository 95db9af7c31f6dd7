//! The shipped deployment files: the production example config passes `check-config`,
//! and the systemd unit is hardened and agrees with it (its directories are the paths the
//! config names, its stop timeout covers the config's grace periods).

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use crate::harness::bin;

fn repo(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `Key=value` settings of a unit file, each key with every value it is given.
fn unit(text: &str) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not a setting: {line}"));
        out.entry(k.to_owned()).or_default().push(v.to_owned());
    }
    out
}

#[test]
fn the_production_config_passes_check_config() {
    let out = Command::new(bin())
        .args(["check-config", "-c"])
        .arg(repo("conf/production.yaml"))
        .env("IMGEDGE_ADMIN_TOKEN", "an-admin-token-of-32-characters!")
        .env("IMGEDGE_PG_URL", "postgres://imgedge@127.0.0.1:5432/imgedge")
        .env("ACME_KEY", "0546da458f64cdac17f44250dde50735e2b3670d194a9e2c28c9c374289e79b1")
        .env("ACME_SALT", "6197edbf9ae3a116913c1c796c36b0fa")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 tenants)"));
}

/// The worked fleet example: one file for every node, the node named by its environment.
#[test]
fn the_fleet_example_passes_check_config_on_every_node() {
    for node in ["a", "b", "c"] {
        let out = Command::new(bin())
            .args(["check-config", "-c"])
            .arg(repo("conf/fleet.yaml"))
            .env("IMGEDGE_NODE", node)
            .env("IMGEDGE_FLEET_SECRET", "0123456789abcdef0123456789abcdef")
            .env("IMGEDGE_ADMIN_TOKEN", "an-admin-token-of-32-characters!")
            .env("IMGEDGE_PG_URL", "postgres://imgedge@127.0.0.1:5432/imgedge")
            .env("IMGEDGE_SHARED_KEY_ID", "AKIAEXAMPLE")
            .env("IMGEDGE_SHARED_SECRET", "example/secret")
            .env("ACME_KEY", "0546da458f64cdac17f44250dde50735e2b3670d194a9e2c28c9c374289e79b1")
            .env("ACME_SALT", "6197edbf9ae3a116913c1c796c36b0fa")
            .output()
            .unwrap();
        assert!(out.status.success(), "node {node}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = Command::new(bin()).args(["check-config", "-c"]).arg(repo("conf/fleet.yaml")).output().unwrap();
    assert!(!out.status.success(), "no node name, no secret: refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("IMGEDGE_NODE"));
}

#[test]
fn the_unit_is_hardened_and_agrees_with_the_production_config() {
    let u = unit(&std::fs::read_to_string(repo("systemd/imgedge.service")).unwrap());
    let one = |k: &str| -> &str {
        let v = u.get(k).unwrap_or_else(|| panic!("{k} is not set"));
        assert_eq!(v.len(), 1, "{k} set more than once");
        &v[0]
    };
    for (k, v) in [
        ("User", "imgedge"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("NoNewPrivileges", "yes"),
        ("CapabilityBoundingSet", ""),
        ("RuntimeDirectory", "imgedge"),
        ("RuntimeDirectoryMode", "0700"),
        ("StateDirectory", "imgedge"),
        ("CacheDirectory", "imgedge"),
        ("Type", "forking"),
        ("PIDFile", "/run/imgedge/imgedge.pid"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(one("LimitNOFILE").parse::<u64>().unwrap() >= 65536);
    let rw = one("ReadWritePaths");
    assert!(rw.contains("/var/lib/imgedge") && rw.contains("/var/cache/imgedge"), "{rw}");
    // reload is the config reload (SIGHUP), after the same check as the start's
    let reload = &u["ExecReload"];
    assert!(reload.iter().any(|r| r.contains("check-config")) && reload.last().unwrap().contains("kill -HUP $MAINPID"));

    let config: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo("conf/production.yaml")).unwrap()).unwrap();
    let p = &config["pingora"];
    let secs =
        |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("pingora.{k} is not set: pingora's default grace is 300 s"));
    // README § Service: the stop timeout is the two grace periods plus 10 s for the final
    // usage flush and delivery
    let stop: u64 = one("TimeoutStopSec").parse().unwrap();
    assert_eq!(stop, secs("grace_period_seconds") + secs("graceful_shutdown_timeout_seconds") + 10);
    assert_eq!(p["daemon_wait_for_ready"].as_bool(), Some(true), "Type=forking waits for a serving daemon");
    assert!(p.get("user").is_none() && p.get("group").is_none(), "the unit sets the user; pingora must not setuid");
    // every path the config names is one of the unit's own directories, never /tmp
    for (path, dir) in [
        (&p["pid_file"], "/run/imgedge/"),
        (&p["upgrade_sock"], "/run/imgedge/"),
        (&config["listen"]["render_socket"], "/run/imgedge/"),
        (&config["cache"]["disk"]["path"], "/var/cache/imgedge"),
        (&config["usage"]["spool"], "/var/lib/imgedge/"),
    ] {
        let path = path.as_str().unwrap();
        assert!(path.starts_with(dir), "{path} is outside {dir}");
    }
    assert_eq!(one("PIDFile"), p["pid_file"].as_str().unwrap());
}

/// `systemd-analyze security` rates the unit (offline: no running systemd needed).
#[test]
fn systemd_rates_the_unit_ok() {
    let out = match Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(repo("systemd/imgedge.service"))
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("\n*** SKIPPED deploy::systemd_rates_the_unit_ok: no systemd-analyze ({e}) ***\n");
            return;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(score) = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for imgedge.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse::<f64>().ok())
    else {
        eprintln!("\n*** SKIPPED deploy::systemd_rates_the_unit_ok: no score from systemd-analyze: {text} ***\n");
        return;
    };
    // README § Service states 1.1 (systemd 252); scores move a little between versions
    assert!(score <= 2.0, "exposure {score}: the unit lost hardening\n{text}");
}

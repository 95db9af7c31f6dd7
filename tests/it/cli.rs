//! The command line: check-config and sign.

use std::process::Command;

use crate::harness::{bin, config_text, local_tenant, Imgedge};

#[test]
fn check_config_accepts_the_demo_and_reports_every_problem() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/conf/imgedge.yaml");
    let out = Command::new(bin()).args(["check-config", "-c", demo]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let dir = tempfile::tempdir().unwrap();
    let bad = config_text(dir.path(), 1, 2, &local_tenant())
        .replace("rs:fill:100:100/q:70", "rs:fill:100:100/q:700")
        .replace("id: t1", "id: t1\n    quality: 0");
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    let out = Command::new(bin()).args(["check-config", "-c"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("tenants[0].quality (tenant \"t1\")"), "{err}");
    assert!(err.contains("tenants[0].presets.thumb (tenant \"t1\")"), "{err}");

    // schema problems (unknown keys, wrong types, a tenant without hosts) all at once,
    // each with its original path
    let second = local_tenant().replace("id: t1", "id: t2").replace("hosts: [img.test]", "colour: red");
    let bad = config_text(dir.path(), 1, 2, &format!("{}{second}", local_tenant()))
        .replace("id: t1", "id: t1\n    quality: high\n    sizes: 3")
        .replace("  memory: 64MiB", "  memory: lots");
    std::fs::write(&file, bad).unwrap();
    let out = Command::new(bin()).args(["check-config", "-c"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "5 problems",
        "cache.memory",
        "tenants[0].quality (tenant \"t1\"): invalid type",
        "tenants[0].sizes (tenant \"t1\"): unknown field `sizes`",
        "tenants[1].colour (tenant \"t2\"): unknown field `colour`",
        "tenants[1] (tenant \"t2\"): missing field `hosts`",
    ] {
        assert!(err.contains(want), "{want:?} in {err}");
    }
}

#[tokio::test]
async fn sign_prints_a_url_that_works() {
    let s = Imgedge::start(&local_tenant()).await;
    let out = Command::new(bin())
        .args(["sign", "-c"])
        .arg(&s.config)
        .args(["--tenant", "t1", "--expires-in", "600", "rs:fit:64:64/plain/coffee_600x400.jpg@webp"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let url = String::from_utf8(out.stdout).unwrap();
    let url = url.trim();
    let prefix = format!("http://img.test:{}", s.edge.port());
    let path = url.strip_prefix(&prefix).unwrap_or_else(|| panic!("{url} should start with {prefix}"));
    assert!(path.contains("/exp:"), "{path}");
    let r = s.get("img.test", path).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/webp");
}

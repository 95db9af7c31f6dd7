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

/// The render socket's directory pre-created by another user (a shared `/tmp`) would let
/// that user replace the socket render trusts: the start is refused. Needs root to make a
/// directory another user owns.
#[test]
fn a_render_socket_directory_owned_by_another_user_stops_the_start() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let theirs = dir.path().join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    if std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).is_err() {
        eprintln!("not root: cannot make a directory another user owns; skipped");
        return;
    }
    assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), 65534);
    let config = crate::harness::config_text(
        dir.path(),
        crate::harness::free_port(),
        crate::harness::free_port(),
        &local_tenant(),
    )
    .replace(
        &format!("render_socket: {}/render.sock", dir.path().display()),
        &format!("render_socket: {}/render.sock", theirs.display()),
    );
    assert!(config.contains("theirs/render.sock"), "{config}");
    let file = dir.path().join("imgedge.yaml");
    std::fs::write(&file, config).unwrap();
    let mut child = Command::new(bin())
        .arg("-c")
        .arg(&file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("started with a render socket directory another user owns");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("belongs to user 65534"), "{err}");
    assert!(!theirs.join("render.sock").exists());
}

#[test]
fn check_config_knows_the_info_metadata_switch() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.yaml");
    let with =
        |info: &str| config_text(dir.path(), 1, 2, &local_tenant().replace("id: t1", &format!("id: t1\n    {info}")));
    std::fs::write(&file, with("info: {withhold_metadata: true}")).unwrap();
    let out = Command::new(bin()).args(["check-config", "-c"]).arg(&file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(&file, with("info: {withold_metadata: true, withhold_metadata: maybe}")).unwrap();
    let out = Command::new(bin()).args(["check-config", "-c"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("tenants[0].info.withold_metadata (tenant \"t1\")"), "{err}");
    assert!(err.contains("unknown field `withold_metadata`, expected `withhold_metadata`"), "{err}");
    assert!(err.contains("tenants[0].info.withhold_metadata (tenant \"t1\"): invalid type"), "{err}");
}

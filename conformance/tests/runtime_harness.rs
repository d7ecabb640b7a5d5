//! Self-tests of the conformance harness: the leak detector must see a live container, the bundle must be
//! what the docs say, and the Drop guards must clean up.

use conformance::{bins, bundle::Bundle, leaks, require_root, runtime, runtime::Kind};
use serde_json::json;
use std::time::Duration;

#[test]
fn bundle_layout_and_config() {
    let mut b = Bundle::busybox().expect("bundle");
    assert!(b.rootfs().join("bin/busybox").is_file());
    assert!(b.rootfs().join("bin/sh").symlink_metadata().is_ok());
    let passwd = std::fs::read_to_string(b.rootfs().join("etc/passwd")).expect("passwd");
    assert!(passwd.contains("user:x:1000:1000:"));
    b.set("/linux/sysctl/net.ipv4.ip_forward", json!("1"))
        .expect("set");
    b.set("/annotations/a~1b", json!("slash")).expect("set");
    assert_eq!(b.config()["linux"]["sysctl"]["net.ipv4.ip_forward"], "1");
    assert_eq!(b.config()["annotations"]["a/b"], "slash");
    b.unset("/annotations/a~1b").remove_namespace("network");
    assert!(b.config()["annotations"].get("a/b").is_none());
    assert!(!b.config()["linux"]["namespaces"]
        .to_string()
        .contains("network"));
    b.save().expect("save");
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("config.json")).expect("read"))
            .expect("json");
    assert_eq!(&on_disk, b.config());
    assert_eq!(b.config()["process"]["terminal"], false);
    let path = b.path().to_path_buf();
    drop(b);
    assert!(!path.exists(), "bundle dir removed on drop");
}

#[test]
fn binaries_are_found() {
    // In CI the workspace is built first; locally this says what is missing.
    match bins::skiff() {
        Ok(p) => assert!(p.is_file()),
        Err(e) => eprintln!("SKIP part: {e}"),
    }
    if let Some(r) = bins::runc() {
        assert!(r.ends_with("runc"));
    }
}

#[test]
fn leak_detector_sees_a_live_container() {
    require_root!();
    let rt = match runtime::Runtime::runc() {
        Ok(rt) => rt,
        Err(e) => conformance::skip!("needs runc: {e}"),
    };
    let mut b = Bundle::busybox().expect("bundle");
    b.args(&["sleep", "1000"]);
    let mut c = rt.container(&b);
    c.run_with(&["--detach"]).ok();
    let live = leaks::find(&c.leak_scope());
    assert!(
        !live.processes.is_empty(),
        "the running init must be reported: {live}"
    );
    assert!(
        !live.cgroups.is_empty(),
        "its cgroups must be reported: {live}"
    );
    assert!(
        !live.state.is_empty(),
        "its state dir must be reported: {live}"
    );
    let after = c.cleanup();
    assert!(after.is_clean(), "{after}");
}

#[test]
fn leak_detector_sees_mounts_and_unmounts_them() {
    require_root!();
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("m");
    std::fs::create_dir(&target).expect("mkdir");
    nix::mount::mount(
        Some("tmpfs"),
        &target,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount tmpfs");
    let scope = leaks::Scope {
        dirs: vec![dir.path().to_path_buf()],
        ..Default::default()
    };
    assert_eq!(leaks::find(&scope).mounts.len(), 1);
    assert!(leaks::unmount_under(dir.path()));
    assert!(leaks::wait_clean(&scope, Duration::from_secs(1)).is_clean());
}

#[test]
fn timeouts_kill_the_command() {
    require_root!();
    let Some(runc) = bins::runc() else {
        conformance::skip!("needs runc")
    };
    let mut rt = runtime::Runtime::with_binary(Kind::Runc, runc).expect("runtime");
    rt.set_timeout(Duration::from_millis(300));
    let mut b = Bundle::busybox().expect("bundle");
    b.args(&["sleep", "1000"]);
    let c = rt.container(&b);
    let out = c.run();
    assert!(out.timed_out && !out.success(), "{out}");
}

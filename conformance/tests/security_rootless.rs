//! Rootless mode: `skiff spec --rootless` output run by an unprivileged user created for the test,
//! as runc's rootless mode does (user namespace mapping the user to root, cgroups skipped or
//! delegated).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use conformance::bundle::Bundle;
use conformance::leaks;
use conformance::{require_root, runtime, skip, unique_name};
use serde_json::json;

/// A host user made for one test and removed on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TestUser {
    fn create() -> Option<TestUser> {
        let gid = 65534; // nogroup
                         // A free uid in a range Debian does not hand out.
        let uid = (64000..64999).find(|u| {
            nix::unistd::User::from_uid((*u).into())
                .ok()
                .flatten()
                .is_none()
        })?;
        let name = format!("skiffsec{}", uid);
        let ok = Command::new("useradd")
            .args([
                "-M",
                "-N",
                "-g",
                "65534",
                "-s",
                "/bin/sh",
                "-u",
                &uid.to_string(),
                &name,
            ])
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(TestUser { name, uid, gid })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn chown_r(path: &Path, uid: u32, gid: u32) {
    let _ = Command::new("chown")
        .args(["-R", &format!("{uid}:{gid}"), &path.to_string_lossy()])
        .status();
}

/// Run the runtime as `user` with a bounded time.
fn as_user(user: &TestUser, bin: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("60").arg(bin).args(args);
    cmd.uid(user.uid)
        .gid(user.gid)
        .env_remove("XDG_RUNTIME_DIR")
        .env("HOME", "/tmp");
    cmd.output().unwrap_or_else(|e| Output {
        status: std::os::unix::process::ExitStatusExt::from_raw(255 << 8),
        stdout: Vec::new(),
        stderr: e.to_string().into_bytes(),
    })
}

/// `skiff spec --rootless` in a bundle owned by an unprivileged user, then `skiff run` as that user:
/// the process is root inside a user namespace that maps only the user's uid.
///
/// Like runc, skiff runs without a container cgroup when the unprivileged caller cannot create
/// one and the config sets no limits.
#[test]
fn rootless_spec_runs_as_unprivileged_user() {
    require_root!();
    let bin = conformance::bins::skiff().expect("skiff binary");
    let Some(user) = TestUser::create() else {
        skip!("could not create a test user with useradd");
    };
    let b = Bundle::busybox().expect("bundle");
    let state = tempfile::Builder::new()
        .prefix("skiff-rootless-state-")
        .tempdir()
        .expect("state dir");
    chown_r(b.path(), user.uid, user.gid);
    chown_r(state.path(), user.uid, user.gid);
    let bundle = b.path().to_string_lossy().to_string();
    let root = state.path().to_string_lossy().to_string();

    let _ = std::fs::remove_file(b.path().join("config.json"));
    let spec = as_user(&user, &bin, &["spec", "--rootless", "--bundle", &bundle]);
    assert!(
        spec.status.success(),
        "spec --rootless: {}",
        String::from_utf8_lossy(&spec.stderr)
    );
    let cfg_path = b.path().join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap_or_default()).expect("config.json");
    assert_eq!(
        cfg["linux"]["uidMappings"][0]["hostID"],
        serde_json::json!(user.uid),
        "spec --rootless maps the calling user: {cfg}"
    );
    cfg["process"]["terminal"] = serde_json::json!(false);
    cfg["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "id; cat /proc/self/uid_map; grep -E '^(CapEff|NoNewPrivs):' /proc/self/status"
    ]);
    std::fs::write(
        &cfg_path,
        serde_json::to_vec_pretty(&cfg).unwrap_or_default(),
    )
    .expect("write config");

    let id = unique_name("rootless");
    let out = as_user(
        &user,
        &bin,
        &["--root", &root, "run", "--bundle", &bundle, &id],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Clean up as root whatever happened.
    let _ = Command::new(&bin)
        .args(["--root", &root, "delete", "--force", &id])
        .output();
    let scope = leaks::Scope {
        ids: vec![id.clone()],
        dirs: vec![b.path().to_path_buf(), state.path().to_path_buf()],
        gone: vec![state.path().join(&id)],
    };
    let report = leaks::wait_clean(&scope, Duration::from_secs(5));

    assert!(out.status.success(), "rootless run failed: {text}");
    assert!(text.contains("uid=0(root) gid=0(root)"), "{text}");
    let map: Vec<&str> = text
        .lines()
        .find(|l| l.trim_start().starts_with('0'))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(map, ["0", &user.uid.to_string(), "1"], "{text}");
    assert!(text.contains("NoNewPrivs:\t1"), "{text}");
    assert!(report.is_clean(), "rootless container leaked:\n{report}");
}

/// Run by root with a user namespace mapping container root to host uid 100000 (rootfs chowned to
/// it): the process is root inside with the configured capabilities, but owns nothing on the host.
#[test]
fn user_namespace_container_gets_its_privileges_inside_only() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_namespace("user", None);
        b.set(
            "/linux/uidMappings",
            json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]),
        )
        .expect("uid map");
        b.set(
            "/linux/gidMappings",
            json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]),
        )
        .expect("gid map");
        // sysfs and cgroupfs cannot be mounted from a user namespace without a net/cgroup ns of
        // its own; keep the test about privileges.
        let mounts: Vec<serde_json::Value> = b.config()["mounts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|m| !m["destination"].as_str().unwrap_or("").starts_with("/sys"))
            .collect();
        b.set("/mounts", json!(mounts)).expect("mounts");
        b.user(1000, 1000);
        b.additional_gids(&[10]);
        let c = json!(["CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        b.set(
            "/process/capabilities",
            json!({ "bounding": c, "effective": c, "permitted": c, "inheritable": c, "ambient": c }),
        )
        .expect("caps");
        chown_r(&b.rootfs(), 100000, 100000);
        b.shell("id; cat /proc/self/uid_map; grep -E '^Cap(Eff|Bnd):' /proc/self/status");
        let ct = rt.container(&b);
        let out = ct.run();
        let text = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(out.code, 0, "{text}");
        assert!(
            text.contains("uid=1000(user) gid=1000(user) groups=10(wheel)"),
            "{text}"
        );
        let map: Vec<&str> = text
            .lines()
            .find(|l| l.trim_start().starts_with('0'))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        assert_eq!(map, ["0", "100000", "65536"], "{text}");
        assert!(text.contains("CapEff:\t0000000000000420"), "{text}");
        assert!(text.contains("CapBnd:\t0000000000000420"), "{text}");
    });
}

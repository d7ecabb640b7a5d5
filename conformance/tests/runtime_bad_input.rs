//! Bad input (issue 2): every case must fail with a non-zero exit and an error naming the problem, and leave
//! nothing behind (mounts, processes, cgroups, state dirs). Runs under each selected runtime; the message
//! checks are stricter for skiff where runc 1.1's wording is vaguer (noted per case).

use conformance::runtime::{Kind, Output, Runtime};
use conformance::{bundle::Bundle, leaks, require_root, runtime};
use serde_json::json;

/// Assert `out` failed with an error mentioning one of `words` (case-insensitive). `skiff_only` words are
/// required only from skiff (runc 1.1 does not name the problem there).
#[track_caller]
fn failed_naming(rt: &Runtime, out: &Output, words: &[&str], skiff_only: bool) {
    assert!(
        !out.success() && !out.timed_out,
        "[{}] should fail:\n{out}",
        rt.name()
    );
    assert!(
        !out.stderr.trim().is_empty(),
        "[{}] failure without a message:\n{out}",
        rt.name()
    );
    if skiff_only && rt.kind() != Kind::Skiff {
        return;
    }
    let err = out.stderr.to_lowercase();
    assert!(
        words.iter().any(|w| err.contains(&w.to_lowercase())),
        "[{}] error should name one of {words:?}:\n{out}",
        rt.name()
    );
}

/// Run `create` for a bundle expected to be rejected, check the message and that nothing leaked.
#[track_caller]
fn rejected(rt: &Runtime, b: &Bundle, words: &[&str], skiff_only: bool) {
    let mut c = rt.container(b);
    let out = c.create();
    failed_naming(rt, &out, words, skiff_only);
    assert!(
        !c.state().success() || c.status() != "running",
        "[{}] nothing may run",
        rt.name()
    );
    let report = leaks::find(&c.leak_scope());
    // Check before cleanup too: the runtime itself must not leave a state dir, mounts or processes.
    let c_state = rt.root().join(c.id());
    assert!(
        !c_state.exists(),
        "[{}] state dir left after failed create: {}\n{out}",
        rt.name(),
        c_state.display()
    );
    assert!(
        report.mounts.is_empty() && report.processes.is_empty() && report.cgroups.is_empty(),
        "[{}] leaked after failed create:\n{report}\n{out}",
        rt.name()
    );
    c.assert_no_leaks();
}

#[test]
fn missing_bundle() {
    require_root!();
    runtime::for_each(|rt| {
        let id = conformance::unique_name("ct-bad");
        let out = rt.cmd(["create", "--bundle", "/nonexistent/skiff-bundle", &id]);
        failed_naming(rt, &out, &["/nonexistent/skiff-bundle"], false);
        assert!(leaks::find(&rt.leak_scope(&id, &[])).is_clean());
    });
}

#[test]
fn missing_config_json() {
    require_root!();
    runtime::for_each(|rt| {
        let b = Bundle::busybox().expect("bundle");
        let c = rt.container(&b);
        std::fs::remove_file(b.path().join("config.json")).expect("rm");
        let out = c.create();
        failed_naming(rt, &out, &["config.json"], false);
    });
}

#[test]
fn invalid_json() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.write_raw_config(b"{\"ociVersion\": \"1.0.2\", \"process\": {bad")
            .expect("write");
        rejected(rt, &b, &["config.json"], true);
    });
}

#[test]
fn wrong_type_in_config() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set("/process/args", json!("sh -c true")).expect("set");
        // Naming the field or the file position of the bad value are both fine.
        rejected(rt, &b, &["args", "line"], true);
    });
}

#[test]
fn unknown_fields_are_ignored() {
    require_root!();
    runtime::for_each(|rt| {
        // runtime-spec: "Runtimes MUST ignore unknown properties".
        let mut b = Bundle::busybox().expect("bundle");
        b.set("/someFutureField", json!({ "x": 1 })).expect("set");
        b.set("/process/futureKnob", json!(true)).expect("set");
        b.set("/linux/futureThing", json!([1, 2])).expect("set");
        b.shell("echo fine");
        let c = rt.container(&b);
        assert_eq!(c.run().ok().out(), "fine");
    });
}

#[test]
fn unknown_namespace_type() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_namespace("bogus", None);
        rejected(rt, &b, &["bogus"], false);
    });
}

#[test]
fn bad_mount_options() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_mount(json!({ "destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": ["size=lots"] }));
        rejected(rt, &b, &["/mnt/t", "tmpfs"], false);
    });
}

#[test]
fn bind_mount_missing_source() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_bind(
            std::path::Path::new("/nonexistent/source-dir"),
            "/mnt/src",
            &["rbind"],
        );
        rejected(rt, &b, &["/nonexistent/source-dir"], false);
    });
}

#[test]
fn unknown_mount_type() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_mount(json!({ "destination": "/mnt/x", "type": "nosuchfs", "source": "none" }));
        rejected(rt, &b, &["/mnt/x", "nosuchfs"], true);
    });
}

#[test]
fn missing_rootfs() {
    require_root!();
    runtime::for_each(|rt| {
        let b = Bundle::busybox().expect("bundle");
        std::fs::remove_dir_all(b.rootfs()).expect("rm rootfs");
        rejected(rt, &b, &["rootfs"], false);
    });
}

#[test]
fn process_cannot_exec() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.args(&["/bin/nope"]);
        let mut c = rt.container(&b);
        let out = c.run();
        failed_naming(rt, &out, &["/bin/nope"], false);
        c.assert_no_leaks();
    });
}

#[test]
fn process_not_executable() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.write_rootfs_file("bin/plain", b"not a program", 0o644)
            .expect("write");
        b.args(&["/bin/plain"]);
        let mut c = rt.container(&b);
        let out = c.run();
        failed_naming(rt, &out, &["/bin/plain", "permission"], false);
        c.assert_no_leaks();
    });
}

#[test]
fn empty_args() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.args(&[]);
        rejected(rt, &b, &["args"], true);
    });
}

#[test]
fn commands_on_missing_id() {
    require_root!();
    runtime::for_each(|rt| {
        let id = conformance::unique_name("ct-missing");
        for args in [
            vec!["state", &id],
            vec!["start", &id],
            vec!["kill", &id, "KILL"],
            vec!["delete", &id],
            vec!["exec", &id, "true"],
            vec!["ps", &id],
        ] {
            let out = rt.cmd(&args);
            failed_naming(
                rt,
                &out,
                &[&id, "does not exist", "not exist", "no such"],
                false,
            );
        }
        // runc: `delete --force` of a missing container fails too? Record whatever both do in differential.
        assert!(leaks::find(&rt.leak_scope(&id, &[])).is_clean());
    });
}

#[test]
fn invalid_container_ids() {
    require_root!();
    runtime::for_each(|rt| {
        let b = Bundle::busybox().expect("bundle");
        b.save().expect("save");
        let outside = rt.scratch_dir().join("escaped");
        for id in ["../escaped", "a/b", "", ".", ".."] {
            let out = rt.cmd(["create", "--bundle", b.path().to_str().unwrap_or(""), id]);
            assert!(
                !out.success(),
                "[{}] id {id:?} must be rejected:\n{out}",
                rt.name()
            );
            assert!(
                !outside.exists(),
                "[{}] id {id:?} escaped the state root",
                rt.name()
            );
        }
        let left: Vec<_> = std::fs::read_dir(rt.root())
            .map(|r| r.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "[{}] state root not empty: {left:?}",
            rt.name()
        );
    });
}

#[test]
fn failed_create_leaves_id_reusable() {
    require_root!();
    runtime::for_each(|rt| {
        let mut bad = Bundle::busybox().expect("bundle");
        bad.add_mount(json!({ "destination": "/mnt/t", "type": "tmpfs", "source": "tmpfs", "options": ["size=lots"] }));
        let id = conformance::unique_name("ct-reuse");
        {
            let c = rt.container_with_id(&bad, &id);
            c.create().fail();
            std::mem::forget(c);
        }
        let mut good = Bundle::busybox().expect("bundle");
        good.shell("exit 0");
        let c = rt.container_with_id(&good, &id);
        c.run().ok();
    });
}

//! cgroups on a pure cgroup v2 host (issue 3). This machine is hybrid (v1 controllers), so the test boots a
//! qemu guest (TCG) with Debian's kernel and an initramfs holding busybox, the skiff binary, the bundles
//! prepared here and conformance/vm/cgroup-v2-guest.sh. The guest mounts cgroup2 at /sys/fs/cgroup, runs
//! skiff with limits and prints `RESULT PASS|FAIL name` lines that this test collects.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use conformance::vm::{
    boot, guest_tools, make_initrd, results, run, write_guest_script, GuestTools,
};
use conformance::{bundle::Bundle, require_root, skip};
use serde_json::{json, Value};

const GUEST_SCRIPT: &str = include_str!("../vm/cgroup-v2-guest.sh");

/// First stage /init: copy everything to a tmpfs and switch_root there (pivot_root, which containers
/// need, does not work on the initramfs root itself).
const STAGE1: &str = "#!/bin/busybox sh
/bin/busybox mount -t tmpfs -o size=900m tmpfs /newroot
/bin/busybox cp -a /bin /lib /lib64 /skiff /bundles /guest.sh /checks.sh /newroot/
/bin/busybox mkdir -p /newroot/proc /newroot/sys /newroot/dev /newroot/run /newroot/tmp
exec /bin/busybox switch_root /newroot /guest.sh
";

/// Copy a file, creating the parent directories.
fn install(src: &Path, dst: &Path) {
    if let Some(p) = dst.parent() {
        std::fs::create_dir_all(p).expect("mkdir");
    }
    std::fs::copy(src, dst)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
}

/// The shared libraries `bin` loads (from ldd), so the guest can run the dynamically linked skiff.
fn libraries(bin: &Path) -> Vec<PathBuf> {
    let out = run(Command::new("ldd").arg(bin));
    out.lines()
        .filter_map(|l| {
            l.split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(PathBuf::from)
        })
        .collect()
}

fn bundle(
    staging: &Path,
    name: &str,
    args: &[&str],
    resources: Value,
    extra: impl Fn(&mut Bundle),
) {
    let mut b = Bundle::busybox().expect("bundle");
    b.unset("/process/capabilities/ambient");
    b.args(args);
    b.set("/linux/resources", resources).expect("set");
    extra(&mut b);
    b.save().expect("save");
    let dst = staging.join("bundles").join(name);
    std::fs::create_dir_all(staging.join("bundles")).expect("mkdir");
    run(Command::new("cp").arg("-a").arg(b.path()).arg(&dst));
}

fn deny_all() -> Value {
    json!([{"allow": false, "access": "rwm"}])
}

#[test]
fn pure_cgroup_v2_in_qemu() {
    require_root!();
    let GuestTools { qemu, kernel, .. } = match guest_tools() {
        Ok(t) => t,
        Err(why) => skip!("{why}"),
    };
    let skiff = conformance::bins::skiff().expect("skiff binary");
    let tmp = tempfile::Builder::new()
        .prefix("skiff-v2vm-")
        .tempdir()
        .expect("tempdir");
    let staging = tmp.path().join("root");
    std::fs::create_dir_all(staging.join("bin")).expect("mkdir");

    // busybox and its applet links
    install(Path::new("/bin/busybox"), &staging.join("bin/busybox"));
    for applet in run(Command::new("/bin/busybox").arg("--list")).lines() {
        if applet != "busybox" {
            let _ = std::os::unix::fs::symlink("busybox", staging.join("bin").join(applet));
        }
    }
    // skiff (stripped when strip exists: the debug binary is large) and its libraries
    let guest_skiff = staging.join("skiff");
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(&guest_skiff)
        .arg(&skiff)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        install(&skiff, &guest_skiff);
    }
    for lib in libraries(&skiff) {
        install(
            &lib,
            &staging.join(lib.strip_prefix("/").expect("absolute")),
        );
    }
    std::fs::write(staging.join("init"), STAGE1).expect("init");
    run(Command::new("chmod").arg("755").arg(staging.join("init")));
    write_guest_script(&staging, GUEST_SCRIPT);
    std::fs::create_dir_all(staging.join("newroot")).expect("mkdir");

    let sleep = ["sleep", "1000"];
    let none = |_: &mut Bundle| {};
    bundle(
        &staging,
        "full",
        &sleep,
        json!({
            "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
            "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728},
            "pids": {"limit": 50},
            "blockIO": {"weight": 500},
            "devices": deny_all(),
            "unified": {"memory.high": "50331648"}
        }),
        none,
    );
    let tty_bind = |b: &mut Bundle| {
        b.add_mount(json!({"destination": "/dev/ttyS0", "type": "bind", "source": "/dev/ttyS0", "options": ["bind"]}));
    };
    bundle(
        &staging,
        "devdeny",
        &["sh", "-c", ": > /dev/ttyS0 && echo opened-ok"],
        json!({"devices": deny_all()}),
        tty_bind,
    );
    bundle(
        &staging,
        "devallow",
        &[
            "sh",
            "-c",
            ": > /dev/ttyS0 && echo opened-ok; : > /dev/null && echo null-ok",
        ],
        json!({"devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 4, "minor": 64, "access": "rw"}]}),
        tty_bind,
    );
    bundle(
        &staging,
        "busy",
        &["sh", "-c", "while :; do :; done"],
        json!({"cpu": {"quota": 20000, "period": 100000}}),
        none,
    );
    bundle(
        &staging,
        "oom",
        &["sh", "-c", "x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done"],
        json!({"memory": {"limit": 33554432, "swap": 33554432}}),
        none,
    );
    bundle(
        &staging,
        "pids",
        &[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait",
        ],
        json!({"pids": {"limit": 4}}),
        none,
    );
    bundle(
        &staging,
        "badcpus",
        &sleep,
        json!({"cpu": {"cpus": "99"}}),
        none,
    );
    bundle(
        &staging,
        "badunified",
        &sleep,
        json!({"unified": {"nosuch.file": "1"}}),
        none,
    );
    bundle(
        &staging,
        "rt",
        &sleep,
        json!({"cpu": {"realtimeRuntime": 1000, "realtimePeriod": 10000}}),
        none,
    );

    let initrd = tmp.path().join("initrd.cpio");
    make_initrd(&staging, &initrd);
    let log = boot(
        &qemu,
        &kernel,
        &initrd,
        &[],
        "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3",
        &tmp.path().join("console.log"),
        Duration::from_secs(600),
    );
    let r = results(&log);
    assert!(r.done, "guest did not finish (see console above)");
    let (passed, failed) = (r.passed, r.failed);
    eprintln!("guest checks: {passed} passed, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "v2 checks failed in the guest:\n{failed:#?}"
    );
    assert!(passed >= 30, "only {passed} checks passed");
}

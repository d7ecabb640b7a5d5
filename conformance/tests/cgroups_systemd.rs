//! `skiff --systemd-cgroup` against a real systemd (issue 3). This host has no systemd running, so
//! the test boots a qemu guest (TCG) whose PID 1 is the host's own systemd: Debian's kernel, an
//! initramfs that loads the 9p/virtio/overlay modules, mounts the host's root file system
//! read-only over virtio-9p with a tmpfs overlay on top, and `switch_root`s into
//! /lib/systemd/systemd with a oneshot unit that runs conformance/vm/systemd-guest.sh. The script
//! prints `RESULT PASS|FAIL|SKIP name` lines on the serial console, which this test collects; the
//! unit powers the guest off when the script ends.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use conformance::vm::{
    boot, guest_tools, make_initrd, results, run, write_guest_script, GuestTools,
};
use conformance::{bundle::Bundle, require_root, skip};
use serde_json::{json, Value};

const GUEST_SCRIPT: &str = include_str!("../vm/systemd-guest.sh");

/// Modules the first stage needs (with their dependencies, from modules.dep).
const MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// First stage /init: host root (9p, read-only) + tmpfs overlay as the new root, then systemd.
const STAGE1: &str = r#"#!/bin/busybox sh
B=/bin/busybox
die() { echo "RESULT FAIL stage1: $1"; $B poweroff -f; }
$B mkdir -p /proc /sys /dev /host /upper /newroot
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs dev /dev
for m in $($B cat /modules.order); do $B insmod /mods/$m.ko || die "insmod $m"; done
$B mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose hostroot /host || die "9p mount"
$B mount -t tmpfs -o size=1200m tmpfs /upper || die "tmpfs"
$B mkdir -p /upper/u /upper/w
$B mount -t overlay overlay -o lowerdir=/host,upperdir=/upper/u,workdir=/upper/w /newroot || die "overlay"
# The host may be a container (/.dockerenv): systemd would then ignore the kernel command line.
$B rm -f /newroot/.dockerenv /newroot/run/.containerenv
$B cp -a /skiff-guest /newroot/ || die "copy payload"
$B mkdir -p /newroot/etc/systemd/system
$B cp /units/skiff-test.service /units/skiff-test.target /newroot/etc/systemd/system/ || die "units"
$B umount /proc /sys /dev
exec $B switch_root /newroot /lib/systemd/systemd --unit=skiff-test.target
"#;

const TARGET_UNIT: &str = "[Unit]
Description=skiff systemd cgroup test
AllowIsolate=yes
Requires=skiff-test.service
After=skiff-test.service
";

const SERVICE_UNIT: &str = "[Unit]
Description=skiff systemd cgroup test script
DefaultDependencies=no
SuccessAction=poweroff-immediate
FailureAction=poweroff-immediate

[Service]
Type=oneshot
ExecStart=/bin/sh /skiff-guest/guest.sh
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TimeoutStartSec=400
";

/// `wanted` and their dependencies in load order, as (name, path relative to the module dir);
/// None when one is missing (a module absent from modules.dep and modules.builtin).
fn module_order(moddir: &Path, wanted: &[&str]) -> Option<Vec<(String, PathBuf)>> {
    let dep = std::fs::read_to_string(moddir.join("modules.dep")).ok()?;
    let builtin = std::fs::read_to_string(moddir.join("modules.builtin")).unwrap_or_default();
    let name_of = |p: &str| -> String {
        let file = p.rsplit('/').next().unwrap_or(p);
        file.split(".ko").next().unwrap_or(file).replace('-', "_")
    };
    let mut deps = std::collections::HashMap::new();
    for line in dep.lines() {
        if let Some((m, rest)) = line.split_once(':') {
            deps.insert(
                name_of(m),
                (
                    m.to_string(),
                    rest.split_whitespace().map(name_of).collect::<Vec<_>>(),
                ),
            );
        }
    }
    fn visit(
        name: &str,
        deps: &std::collections::HashMap<String, (String, Vec<String>)>,
        out: &mut Vec<(String, PathBuf)>,
        depth: usize,
    ) {
        if depth > 32 || out.iter().any(|(n, _)| n == name) {
            return;
        }
        if let Some((path, ds)) = deps.get(name) {
            for d in ds {
                visit(d, deps, out, depth + 1);
            }
            out.push((name.to_string(), PathBuf::from(path)));
        }
    }
    let mut out = Vec::new();
    for w in wanted {
        let is_builtin = builtin.lines().any(|l| name_of(l) == *w);
        if !deps.contains_key(*w) && !is_builtin {
            return None;
        }
        visit(w, &deps, &mut out, 0);
    }
    Some(out)
}

fn bundle(dir: &Path, name: &str, cgroups_path: &str, args: &[&str], resources: Value) {
    let mut b = Bundle::busybox().expect("bundle");
    b.unset("/process/capabilities/ambient");
    b.args(args);
    b.set("/linux/cgroupsPath", json!(cgroups_path))
        .expect("set");
    b.set("/linux/resources", resources).expect("set");
    b.save().expect("save");
    run(Command::new("cp")
        .arg("-a")
        .arg(b.path())
        .arg(dir.join(name)));
}

#[test]
fn systemd_cgroup_driver_in_qemu() {
    require_root!();
    let GuestTools {
        qemu,
        kernel,
        kernel_version: kver,
    } = match guest_tools() {
        Ok(t) => t,
        Err(why) => skip!("{why}"),
    };
    let moddir = PathBuf::from("/lib/modules").join(&kver);
    let Some(modules) = module_order(&moddir, MODULES) else {
        skip!(
            "kernel {kver}: modules {MODULES:?} not found under {}",
            moddir.display()
        )
    };
    if !Path::new("/lib/systemd/systemd").exists()
        || conformance::bins::system("systemctl").is_none()
    {
        skip!("systemd is not installed on this host (the guest boots the host's own systemd)");
    }
    if conformance::bins::system("dbus-daemon").is_none() {
        skip!("dbus-daemon is not installed (apt-get install dbus): skiff reaches systemd over the system bus");
    }
    let skiff = conformance::bins::skiff().expect("skiff binary");
    let tmp = tempfile::Builder::new()
        .prefix("skiff-sdvm-")
        .tempdir()
        .expect("tempdir");
    let staging = tmp.path().join("root");
    for d in ["bin", "mods", "units", "skiff-guest/bundles"] {
        std::fs::create_dir_all(staging.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", staging.join("bin/busybox")).expect("busybox");
    let mut order = String::new();
    for (name, rel) in &modules {
        let src = moddir.join(rel);
        let dst = staging.join("mods").join(format!("{name}.ko"));
        let ext = src.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "ko" => {
                std::fs::copy(&src, &dst).expect("copy module");
            }
            "xz" | "zst" | "gz" => {
                let tool = match ext {
                    "xz" => "xz",
                    "zst" => "zstd",
                    _ => "gzip",
                };
                if conformance::bins::system(tool).is_none() {
                    skip!("{tool} is needed to decompress {}", src.display());
                }
                let out = run(Command::new("sh").arg("-c").arg(format!(
                    "{tool} -dc '{}' > '{}'",
                    src.display(),
                    dst.display()
                )));
                drop(out);
            }
            _ => skip!("unknown module format {}", src.display()),
        }
        order.push_str(name);
        order.push('\n');
    }
    std::fs::write(staging.join("modules.order"), order).expect("modules.order");
    std::fs::write(staging.join("init"), STAGE1).expect("init");
    std::fs::write(staging.join("units/skiff-test.target"), TARGET_UNIT).expect("unit");
    std::fs::write(staging.join("units/skiff-test.service"), SERVICE_UNIT).expect("unit");
    let guest = staging.join("skiff-guest");
    write_guest_script(&guest, GUEST_SCRIPT);
    run(Command::new("chmod").arg("755").arg(staging.join("init")));
    // skiff, stripped when strip exists (the debug binary is large); its libraries come from
    // the host's root file system, which the guest runs on.
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(guest.join("skiff"))
        .arg(&skiff)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(&skiff, guest.join("skiff")).expect("copy skiff");
    }
    // skiff's D-Bus helper, which skiff looks for in its own directory.
    let helper = skiff.with_file_name("skiff-systemd");
    assert!(
        helper.is_file(),
        "{} is missing: build the whole skiff package (cargo build -p skiff), or install it next to $SKIFF_BIN",
        helper.display()
    );
    let stripped = Command::new("strip")
        .arg("-o")
        .arg(guest.join("skiff-systemd"))
        .arg(&helper)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !stripped {
        std::fs::copy(&helper, guest.join("skiff-systemd")).expect("copy skiff-systemd");
    }

    // SKIFF_SYSTEMD_GUEST_CGROUP=hybrid boots systemd with its hybrid layout (v1 controllers, as on
    // the development host) instead of pure cgroup v2.
    let hybrid = std::env::var("SKIFF_SYSTEMD_GUEST_CGROUP").as_deref() == Ok("hybrid");
    let bundles = guest.join("bundles");
    let sleep = ["sleep", "1000"];
    bundle(
        &bundles,
        "sd1",
        "system.slice:skiff:sd1",
        &sleep,
        if hybrid {
            json!({
                "cpu": {"shares": 512, "quota": 20000, "period": 100000},
                "memory": {"limit": 67108864, "swappiness": 10},
                "pids": {"limit": 50}
            })
        } else {
            json!({
                "cpu": {"shares": 512, "quota": 20000, "period": 100000},
                "memory": {"limit": 67108864},
                "pids": {"limit": 50},
                "unified": {"memory.high": "50331648", "memory.oom.group": "1"}
            })
        },
    );
    bundle(
        &bundles,
        "sd2",
        "machine-test.slice:skiff:sd2",
        &sleep,
        json!({"pids": {"limit": 7}}),
    );
    bundle(
        &bundles,
        "sd3",
        "system.slice:skiff:sd3",
        &sleep,
        json!({"cpu": {"cpus": "99"}}),
    );
    bundle(&bundles, "sd4", "a--b.slice:skiff:sd4", &sleep, json!({}));
    bundle(&bundles, "sd5", "system.slice:skiff:sd5", &sleep, json!({}));

    let initrd = tmp.path().join("initrd.cpio");
    make_initrd(&staging, &initrd);
    let append = format!(
        "console=ttyS0 rdinit=/init panic=-1 quiet loglevel=3 systemd.show_status=0 \
         fstab=no systemd.unit=skiff-test.target{}",
        if hybrid {
            " systemd.unified_cgroup_hierarchy=0"
        } else {
            ""
        }
    );
    let log = boot(
        &qemu,
        &kernel,
        &initrd,
        &[
            "-virtfs",
            "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        ],
        &append,
        &tmp.path().join("console.log"),
        Duration::from_secs(420),
    );
    let r = results(&log);
    assert!(r.done, "guest did not finish (see console above)");
    let (passed, failed, skipped) = (r.passed, r.failed, r.skipped);
    eprintln!(
        "guest checks: {passed} passed, {} failed, {} skipped {skipped:?}",
        failed.len(),
        skipped.len()
    );
    assert!(
        failed.is_empty(),
        "systemd cgroup checks failed in the guest:\n{failed:#?}"
    );
    assert!(passed >= 50, "only {passed} checks passed");
}

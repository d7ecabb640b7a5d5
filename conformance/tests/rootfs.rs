//! Root filesystem conformance: mounts, devices, masked/read-only paths, sysctl, root.readonly, and the
//! mount-destination escapes (CVE-2021-30465 family, CVE-2025-31133), observed from inside real containers
//! under every selected runtime (runc is the reference; skiff must match it), plus skiff-only checks of
//! its stricter validation.

use conformance::{bundle::Bundle, require_root, runtime, runtime::Runtime};
use serde_json::json;
use std::os::unix::fs::symlink;
use std::path::Path;

/// Run `script` in a container made from `b` and return its stdout (panics with full output on failure).
#[track_caller]
fn observe(rt: &Runtime, b: &mut Bundle, script: &str) -> String {
    b.shell(script);
    let c = rt.container(b);
    c.run().ok().stdout
}

/// The mountinfo line whose mount point is exactly `mp`.
fn mount_line<'a>(mountinfo: &'a str, mp: &str) -> Option<&'a str> {
    mountinfo.lines().rfind(|l| l.split(' ').nth(4) == Some(mp))
}

/// Per-mount options (field 6) of the mountinfo line for `mp`.
fn mount_opts(mountinfo: &str, mp: &str) -> Vec<String> {
    mount_line(mountinfo, mp)
        .and_then(|l| l.split(' ').nth(5))
        .map(|o| o.split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Filesystem type of the mountinfo line for `mp`.
fn mount_fstype(mountinfo: &str, mp: &str) -> Option<String> {
    mount_line(mountinfo, mp)
        .and_then(|l| l.split(" - ").nth(1))
        .and_then(|r| r.split(' ').next())
        .map(str::to_string)
}

#[test]
fn default_mounts_match_runc_spec() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        let mi = observe(rt, &mut b, "cat /proc/self/mountinfo");
        for (mp, fstype) in [
            ("/proc", "proc"),
            ("/dev", "tmpfs"),
            ("/dev/pts", "devpts"),
            ("/dev/shm", "tmpfs"),
            ("/dev/mqueue", "mqueue"),
            ("/sys", "sysfs"),
            ("/sys/fs/cgroup", "tmpfs"),
        ] {
            assert_eq!(
                mount_fstype(&mi, mp).as_deref(),
                Some(fstype),
                "[{}] {mp} in:\n{mi}",
                rt.name()
            );
        }
        assert!(mount_opts(&mi, "/sys").contains(&"ro".to_string()), "{mi}");
        let dev = mount_line(&mi, "/dev").expect("dev");
        assert!(
            dev.contains("mode=755") && dev.contains("size=65536k"),
            "{dev}"
        );
        let pts = mount_line(&mi, "/dev/pts").expect("pts");
        assert!(
            pts.contains("ptmxmode=666") && pts.contains("gid=5"),
            "{pts}"
        );
        // The cgroup mount (v1 on this hybrid host) exposes the container's own hierarchies read-only.
        if let Some(mem) = mount_line(&mi, "/sys/fs/cgroup/memory") {
            assert!(mem.contains(" ro,"), "{mem}");
        }
    });
}

#[test]
fn default_devices_and_links() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        let out = observe(
            rt,
            &mut b,
            "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
             for l in ptmx fd stdin stdout stderr; do echo /dev/$l=$(readlink /dev/$l); done; \
             stat -c '%n %F' /dev/pts /dev/shm",
        );
        for want in [
            "/dev/null character special file 1:3 666",
            "/dev/zero character special file 1:5 666",
            "/dev/full character special file 1:7 666",
            "/dev/random character special file 1:8 666",
            "/dev/urandom character special file 1:9 666",
            "/dev/tty character special file 5:0 666",
            "/dev/ptmx=pts/ptmx",
            "/dev/fd=/proc/self/fd",
            "/dev/stdin=/proc/self/fd/0",
            "/dev/stdout=/proc/self/fd/1",
            "/dev/stderr=/proc/self/fd/2",
            "/dev/pts directory",
            "/dev/shm directory",
        ] {
            assert!(
                out.contains(want),
                "[{}] missing {want:?} in:\n{out}",
                rt.name()
            );
        }
    });
}

#[test]
fn linux_devices_are_created() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/linux/devices",
            json!([
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640, "uid": 1, "gid": 2},
                {"path": "/dev/sub/loopx", "type": "b", "major": 7, "minor": 200, "fileMode": 0o600},
                {"path": "/dev/myfifo", "type": "p"}
            ]),
        )
        .expect("set");
        let out = observe(
            rt,
            &mut b,
            "stat -c '%n %F %t:%T %a %u:%g' /dev/fuse /dev/sub/loopx; stat -c '%n %F' /dev/myfifo",
        );
        for want in [
            "/dev/fuse character special file a:e5 640 1:2",
            "/dev/sub/loopx block special file 7:c8 600 0:0",
            "/dev/myfifo fifo",
        ] {
            assert!(
                out.contains(want),
                "[{}] missing {want:?} in:\n{out}",
                rt.name()
            );
        }
    });
}

#[test]
fn masked_and_readonly_paths() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        let out = observe(
            rt,
            &mut b,
            "echo KEYS=$(wc -c < /proc/keys); echo ACPI=$(ls -A /proc/acpi | wc -l); \
             echo FW=$(ls -A /sys/firmware | wc -l); \
             (echo 1 > /proc/sys/kernel/ns_last_pid) 2>/dev/null && echo SYS-RW || echo SYS-RO; \
             (echo h > /proc/sysrq-trigger) 2>/dev/null && echo SYSRQ-RW || echo SYSRQ-RO; \
             grep -E ' /proc/(sys|keys|acpi) ' /proc/self/mountinfo",
        );
        for want in ["KEYS=0", "ACPI=0", "FW=0", "SYS-RO", "SYSRQ-RO"] {
            assert!(
                out.contains(want),
                "[{}] missing {want:?} in:\n{out}",
                rt.name()
            );
        }
        let sys = mount_line(&out, "/proc/sys").expect("/proc/sys mount");
        assert!(sys.contains(" ro,") || sys.contains(" ro "), "{sys}");
        assert_eq!(mount_fstype(&out, "/proc/acpi").as_deref(), Some("tmpfs"));
    });
}

#[test]
fn sysctl_is_applied_in_the_container_only() {
    require_root!();
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/linux/sysctl",
            json!({"net.ipv4.ip_forward": "1", "kernel.shmmni": "2048"}),
        )
        .expect("set");
        let out = observe(
            rt,
            &mut b,
            "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
        );
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["1", "2048"],
            "[{}]",
            rt.name()
        );
    });
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default(),
        host_fwd,
        "host sysctl changed"
    );
}

#[test]
fn root_readonly() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.readonly_root(true);
        let out = observe(
            rt,
            &mut b,
            "touch /x 2>/dev/null && echo ROOT-RW || echo ROOT-RO; touch /dev/shm/x && echo SHM-RW; \
             awk '$5 == \"/\"' /proc/self/mountinfo",
        );
        assert!(
            out.contains("ROOT-RO") && out.contains("SHM-RW"),
            "[{}] {out}",
            rt.name()
        );
        assert!(mount_opts(&out, "/").contains(&"ro".to_string()), "{out}");
        assert!(!b.rootfs().join("x").exists());
    });
}

#[test]
fn tmpfs_options() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_mount(json!({
            "destination": "/scratch/deep",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "nodev", "noexec", "size=1m", "mode=1770", "uid=1000", "gid=1000"]
        }));
        let out = observe(
            rt,
            &mut b,
            "stat -c '%a %u:%g' /scratch/deep; grep ' /scratch/deep ' /proc/self/mountinfo; \
             cp /bin/busybox /scratch/deep/bb 2>/dev/null; /scratch/deep/bb true 2>/dev/null && echo EXEC || echo NOEXEC",
        );
        assert!(out.contains("1770 1000:1000"), "[{}] {out}", rt.name());
        let opts = mount_opts(&out, "/scratch/deep");
        for o in ["nosuid", "nodev", "noexec"] {
            assert!(
                opts.contains(&o.to_string()),
                "[{}] {o} not in {opts:?}",
                rt.name()
            );
        }
        assert!(out.contains("size=1024k"), "{out}");
        assert!(out.contains("NOEXEC"), "{out}");
    });
}

#[test]
fn bind_mounts_ro_and_rw() {
    require_root!();
    runtime::for_each(|rt| {
        let host = tempfile::tempdir().expect("tmp");
        std::fs::write(host.path().join("in"), "host-data\n").expect("write");
        let single = host.path().join("single");
        std::fs::write(&single, "one-file\n").expect("write");
        let mut b = Bundle::busybox().expect("bundle");
        b.add_bind(host.path(), "/ro", &["rbind", "ro", "nosuid", "nodev"]);
        b.add_bind(host.path(), "/rw", &["bind"]);
        b.add_bind(&single, "/etc/single-file", &["bind", "ro"]);
        let out = observe(
            rt,
            &mut b,
            "cat /ro/in; (echo x > /ro/nope) 2>/dev/null && echo RO-WRITABLE || echo RO-REFUSED; \
             echo made > /rw/made; cat /etc/single-file; grep -E ' /(ro|rw|etc/single-file) ' /proc/self/mountinfo",
        );
        assert!(
            out.contains("host-data") && out.contains("one-file"),
            "[{}] {out}",
            rt.name()
        );
        assert!(out.contains("RO-REFUSED"), "[{}] {out}", rt.name());
        let ro = mount_opts(&out, "/ro");
        for o in ["ro", "nosuid", "nodev"] {
            assert!(
                ro.contains(&o.to_string()),
                "[{}] {o} not in {ro:?}",
                rt.name()
            );
        }
        assert!(mount_opts(&out, "/rw").contains(&"rw".to_string()));
        assert!(mount_opts(&out, "/etc/single-file").contains(&"ro".to_string()));
        assert!(!host.path().join("nope").exists());
        assert_eq!(
            std::fs::read_to_string(host.path().join("made")).unwrap_or_default(),
            "made\n"
        );
        // A missing file destination was created as a file inside the rootfs (not a directory).
        assert!(b.rootfs().join("etc/single-file").is_file());
    });
}

#[test]
fn relative_bind_source_is_bundle_relative() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        std::fs::create_dir(b.path().join("vol")).expect("mkdir");
        std::fs::write(b.path().join("vol/f"), "bundle-vol\n").expect("write");
        b.add_mount(
            json!({"destination": "/vol", "type": "bind", "source": "vol", "options": ["rbind"]}),
        );
        let out = observe(rt, &mut b, "cat /vol/f");
        assert!(out.contains("bundle-vol"), "[{}] {out}", rt.name());
    });
}

/// CVE-2021-30465 family: the image makes mount destinations symlinks to host paths (absolute, and via
/// `..` chains). Every mount must land inside the rootfs, where the symlink would point if the rootfs
/// were `/`; the host directory must stay empty and unmounted.
#[test]
fn symlink_destinations_never_escape() {
    require_root!();
    runtime::for_each(|rt| {
        let outside = tempfile::tempdir().expect("tmp");
        let mut b = Bundle::busybox().expect("bundle");
        let rootfs = b.rootfs();
        symlink(outside.path(), rootfs.join("abs")).expect("symlink");
        symlink(
            format!("../../../../../../../../..{}", outside.path().display()),
            rootfs.join("dotdot"),
        )
        .expect("symlink");
        symlink(outside.path().join("file"), rootfs.join("filelink")).expect("symlink");
        b.add_mount(json!({"destination": "/abs/t1", "type": "tmpfs", "source": "tmpfs"}));
        b.add_mount(json!({"destination": "/dotdot/t2", "type": "tmpfs", "source": "tmpfs"}));
        b.add_bind(Path::new("/etc/hostname"), "/filelink", &["bind", "ro"]);
        b.add_mount(json!({"destination": "/abs", "type": "tmpfs", "source": "tmpfs"}));
        let out = observe(rt, &mut b, "cat /proc/self/mountinfo; echo END");
        assert!(out.contains("END"), "[{}] {out}", rt.name());
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("ls").count(),
            0,
            "[{}] host directory was written to",
            rt.name()
        );
        let host_mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(
            !host_mi.contains(&outside.path().display().to_string()),
            "[{}] host dir mounted on",
            rt.name()
        );
        let inside = rootfs.join(outside.path().strip_prefix("/").expect("abs"));
        assert!(
            inside.join("t1").is_dir(),
            "[{}] t1 not inside rootfs",
            rt.name()
        );
        assert!(
            inside.join("file").is_file(),
            "[{}] file not inside rootfs",
            rt.name()
        );
    });
}

/// CVE-2025-31133: the image ships /dev/null as a symlink to a sensitive procfs file and the config does
/// not mount a tmpfs on /dev. Masking must use the real null device (skiff replaces the planted node with a
/// real 1:3 device and verifies it before binding it over masked files), and nothing on the host may change.
/// skiff only: runc 1.1.5 (Debian's) predates the fix.
#[test]
fn planted_dev_null_does_not_redirect_masks() {
    require_root!();
    let core_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let rt = Runtime::skiff().expect("skiff");
    let mut b = Bundle::busybox().expect("bundle");
    // Drop the /dev tmpfs so the image's own /dev is used.
    let mounts = b.config()["mounts"].as_array().cloned().unwrap_or_default();
    let kept: Vec<_> = mounts
        .into_iter()
        .filter(|m| m["destination"] != "/dev")
        .collect();
    b.set("/mounts", json!(kept)).expect("set");
    symlink("/proc/sys/kernel/core_pattern", b.rootfs().join("dev/null")).expect("symlink");
    let out = observe(
        &rt,
        &mut b,
        "stat -c '%F %t:%T' /dev/null; echo KEYS=$(wc -c < /proc/keys); grep ' /proc/keys ' /proc/self/mountinfo; echo END",
    );
    assert!(out.contains("character special file 1:3"), "{out}");
    assert!(out.contains("KEYS=0") && out.contains("END"), "{out}");
    assert_ne!(
        mount_fstype(&out, "/proc/keys").as_deref(),
        Some("proc"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default(),
        core_before
    );
}

#[test]
fn no_pivot_runs() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.shell("cat /proc/self/mountinfo | wc -l; ls /bin/busybox");
        let c = rt.container(&b);
        let out = c.run_with(&["--no-pivot"]).ok();
        assert!(out.stdout.contains("/bin/busybox"), "[{}] {out}", rt.name());
    });
}

#[test]
fn rootfs_propagation_private() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set("/linux/rootfsPropagation", json!("private"))
            .expect("set");
        let out = observe(rt, &mut b, "awk '$5 == \"/\"' /proc/self/mountinfo");
        assert!(
            !out.contains("master:") && !out.contains("shared:"),
            "[{}] {out}",
            rt.name()
        );
    });
}

/// skiff's parent-side validation: bad mounts fail before anything is created, naming the entry.
#[test]
fn skiff_rejects_bad_mounts_clearly() {
    require_root!();
    let rt = Runtime::skiff().expect("skiff");
    for (mount, want) in [
        (
            json!({"destination": "relative/dir", "type": "tmpfs", "source": "tmpfs"}),
            "absolute",
        ),
        (
            json!({"destination": "/x", "type": "nosuchfs", "source": "x"}),
            "unknown filesystem type",
        ),
        (
            json!({"destination": "/x", "type": "bind", "source": "/tmp", "options": ["rbind", "bogusopt"]}),
            "bogusopt",
        ),
        (
            json!({"destination": "/x", "type": "bind", "source": "/nonexistent-skiff-src", "options": ["bind"]}),
            "nonexistent-skiff-src",
        ),
        (
            json!({"destination": "/proc/sys/kernel", "type": "tmpfs", "source": "tmpfs"}),
            "/proc",
        ),
    ] {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_mount(mount.clone());
        b.shell("true");
        let c = rt.container(&b);
        let out = c.run();
        assert!(!out.success(), "skiff accepted {mount}: {out}");
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            text.contains("mounts["),
            "no mounts[i] in error for {mount}: {text}"
        );
        assert!(
            text.contains(want),
            "error for {mount} lacks {want:?}: {text}"
        );
    }
}

#[test]
fn skiff_rejects_sysctl_outside_namespaces() {
    require_root!();
    let rt = Runtime::skiff().expect("skiff");
    let mut b = Bundle::busybox().expect("bundle");
    b.set("/linux/sysctl", json!({"vm.swappiness": "1"}))
        .expect("set");
    b.shell("true");
    let c = rt.container(&b);
    let out = c.run();
    assert!(!out.success(), "{out}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("vm.swappiness"),
        "{out}"
    );
}

/// Create (with a console socket) and start a terminal container whose script writes its findings to a
/// bind-mounted host dir; returns the create output and the findings (None if create failed).
fn run_with_console(
    rt: &Runtime,
    b: &mut Bundle,
    script: &str,
) -> (runtime::Output, Option<String>) {
    use conformance::console::ConsoleSocket;
    let out_dir = tempfile::tempdir().expect("tmp");
    b.terminal(true);
    b.add_bind(out_dir.path(), "/out", &["rbind"]);
    b.shell(&format!("({script}) > /out/result 2>&1"));
    let sock = ConsoleSocket::new().expect("console socket");
    let c = rt.container(b);
    let created = c.create_with(&["--console-socket", sock.path().to_str().unwrap_or("")]);
    if !created.success() {
        return (created, None);
    }
    let master = sock
        .receive(std::time::Duration::from_secs(10))
        .expect("pty master");
    c.start().ok();
    c.wait_status("stopped", std::time::Duration::from_secs(20));
    drop(master);
    let res = std::fs::read_to_string(out_dir.path().join("result")).ok();
    (created, res)
}

#[test]
fn console_is_the_pty_slave() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        let (created, res) = run_with_console(
            rt,
            &mut b,
            "stat -c '%F %t' /dev/console; grep ' /dev/console ' /proc/self/mountinfo",
        );
        let res = res.unwrap_or_else(|| panic!("[{}] create failed: {created}", rt.name()));
        assert!(
            res.contains("character special file 88"),
            "[{}] {res}",
            rt.name()
        );
        assert_eq!(
            mount_fstype(&res, "/dev/console").as_deref(),
            Some("devpts"),
            "{res}"
        );
    });
}

/// CVE-2025-52565: the image's /dev/console is a symlink to a procfs file (no /dev tmpfs in the config), so a
/// runtime that bind-mounts the pty "onto /dev/console" by path would mount over the link's target. skiff
/// refuses to use anything but a regular file or char device there, and the host is untouched.
#[test]
fn planted_console_symlink_is_refused() {
    require_root!();
    let core_before = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    let rt = Runtime::skiff().expect("skiff");
    let mut b = Bundle::busybox().expect("bundle");
    let mounts = b.config()["mounts"].as_array().cloned().unwrap_or_default();
    let kept: Vec<_> = mounts
        .into_iter()
        .filter(|m| m["destination"] != "/dev")
        .collect();
    b.set("/mounts", json!(kept)).expect("set");
    symlink(
        "/proc/sys/kernel/core_pattern",
        b.rootfs().join("dev/console"),
    )
    .expect("symlink");
    let (created, res) = run_with_console(&rt, &mut b, "grep ' /proc/sys' /proc/self/mountinfo");
    assert!(
        res.is_none(),
        "skiff accepted a symlinked /dev/console: {res:?}"
    );
    let text = format!("{}{}", created.stdout, created.stderr);
    assert!(
        text.contains("/dev/console"),
        "error does not name /dev/console: {text}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default(),
        core_before
    );
}

/// CVE-2021-30465: a process on the host (standing in for a second container sharing a volume) keeps
/// swapping a mount destination's parent between a directory and a symlink to a host directory while
/// containers start. Whatever interleaving happens, nothing may ever be mounted or created in the host dir.
#[test]
fn racing_symlink_swap_never_escapes() {
    require_root!();
    let rt = Runtime::skiff().expect("skiff");
    let outside = tempfile::tempdir().expect("tmp");
    let mut b = Bundle::busybox().expect("bundle");
    let vol = tempfile::tempdir().expect("tmp");
    let shared = vol.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    // The volume is bind-mounted into the container; the next mounts go below it.
    b.add_bind(&shared, "/vol", &["rbind"]);
    for i in 0..4 {
        b.add_mount(
            json!({"destination": format!("/vol/d/m{i}"), "type": "tmpfs", "source": "tmpfs"}),
        );
    }
    b.shell("true");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let stop = stop.clone();
        let shared = shared.clone();
        let target = outside.path().to_path_buf();
        std::thread::spawn(move || {
            let d = shared.join("d");
            let tmp = shared.join("d.tmp");
            let mut n = 0u32;
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && std::time::Instant::now() < deadline
                && n < 2_000_000
            {
                n += 1;
                // directory <-> symlink to the host dir, swapped atomically with rename.
                if n & 1 == 0 {
                    let _ = std::fs::create_dir(&tmp);
                } else {
                    let _ = symlink(&target, &tmp);
                }
                let _ = std::fs::rename(&tmp, &d);
                let _ = std::fs::remove_dir(&tmp);
                let _ = std::fs::remove_file(&tmp);
            }
        })
    };
    for _ in 0..15 {
        let c = rt.container(&b);
        let _ = c.run();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = flipper.join();
    let host_mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !host_mi.contains(&outside.path().display().to_string()),
        "a mount landed on the host dir"
    );
    let leaked: Vec<_> = std::fs::read_dir(outside.path())
        .expect("ls")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert!(leaked.is_empty(), "host dir written to: {leaked:?}");
}

/// A user namespace container: devices are bind-mounted from the host (mknod is not allowed there) and
/// every default mount still works.
#[test]
fn user_namespace_devices_are_bind_mounted() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_namespace("user", None);
        b.set(
            "/linux/uidMappings",
            json!([{"containerID": 0, "hostID": 200000, "size": 65536}]),
        )
        .expect("set");
        b.set(
            "/linux/gidMappings",
            json!([{"containerID": 0, "hostID": 200000, "size": 65536}]),
        )
        .expect("set");
        b.set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}))
            .expect("set");
        let out = observe(
            rt,
            &mut b,
            "echo FWD=$(cat /proc/sys/net/ipv4/ip_forward); echo x > /dev/null && echo NULL-OK; stat -c '%n %F %t:%T' /dev/null /dev/zero; \
             head -c 4 /dev/zero | wc -c; cat /proc/self/mountinfo",
        );
        assert!(out.contains("FWD=1"), "[{}] {out}", rt.name());
        assert!(out.contains("NULL-OK"), "[{}] {out}", rt.name());
        assert!(
            out.contains("/dev/null character special file 1:3"),
            "{out}"
        );
        assert_eq!(
            mount_fstype(&out, "/dev/null").as_deref(),
            Some("devtmpfs"),
            "[{}] {out}",
            rt.name()
        );
        for mp in ["/proc", "/dev", "/dev/pts", "/sys"] {
            assert!(
                mount_line(&out, mp).is_some(),
                "[{}] no {mp} in {out}",
                rt.name()
            );
        }
    });
}

/// `idmap` bind mounts (skiff only: Debian's runc 1.1 predates them): files owned by uid/gid 0 on disk
/// appear as the mapped host id.
#[test]
fn idmapped_bind_mount() {
    require_root!();
    let rt = Runtime::skiff().expect("skiff");
    let src = tempfile::tempdir().expect("tmp");
    std::fs::write(src.path().join("f"), "x").expect("write");
    std::os::unix::fs::chown(src.path().join("f"), Some(0), Some(0)).expect("chown");
    let mut b = Bundle::busybox().expect("bundle");
    b.add_mount(json!({
        "destination": "/idm",
        "type": "bind",
        "source": src.path(),
        "options": ["bind", "idmap"],
        "uidMappings": [{"containerID": 0, "hostID": 1234, "size": 1}],
        "gidMappings": [{"containerID": 0, "hostID": 4321, "size": 1}],
    }));
    b.shell("stat -c '%u:%g' /idm/f; grep ' /idm ' /proc/self/mountinfo");
    let c = rt.container(&b);
    let out = c.run();
    if !out.success() && out.stderr.contains("id-map") {
        conformance::skip!("kernel/filesystem cannot id-map this mount: {}", out.stderr);
    }
    let out = out.ok();
    assert!(out.stdout.contains("1234:4321"), "{out}");
    assert!(out.stdout.contains("idmapped"), "{out}");
}

/// CVE-2025-52881 family: the image makes /proc a symlink to a directory it controls (here: a host path),
/// hoping procfs writes (sysctl, masks) go to its fake files. The proc mount must refuse a non-directory
/// destination and nothing on the host may change.
#[test]
fn proc_destination_symlink_is_refused() {
    require_root!();
    runtime::for_each(|rt| {
        let outside = tempfile::tempdir().expect("tmp");
        let mut b = Bundle::busybox().expect("bundle");
        std::fs::remove_dir(b.rootfs().join("proc")).expect("rmdir");
        symlink(outside.path(), b.rootfs().join("proc")).expect("symlink");
        b.set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}))
            .expect("set");
        b.shell("true");
        let c = rt.container(&b);
        let out = c.run();
        assert!(
            !out.success(),
            "[{}] accepted a symlinked /proc: {out}",
            rt.name()
        );
        assert_eq!(std::fs::read_dir(outside.path()).expect("ls").count(), 0);
        let host_mi = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!host_mi.contains(&outside.path().display().to_string()));
    });
}

/// `tmpcopyup`: a tmpfs over an image directory starts with a copy of that directory's contents.
#[test]
fn tmpfs_copyup() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.write_rootfs_file("/opt/app/conf", b"image-conf\n", 0o640)
            .expect("write");
        symlink("conf", b.rootfs().join("opt/app/link")).expect("symlink");
        b.add_mount(json!({
            "destination": "/opt/app",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["tmpcopyup", "nosuid"]
        }));
        let out = observe(
            rt,
            &mut b,
            "cat /opt/app/link; stat -c '%a' /opt/app/conf; echo new > /opt/app/new; \
             grep ' /opt/app ' /proc/self/mountinfo",
        );
        assert!(
            out.contains("image-conf") && out.contains("640"),
            "[{}] {out}",
            rt.name()
        );
        assert_eq!(
            mount_fstype(&out, "/opt/app").as_deref(),
            Some("tmpfs"),
            "{out}"
        );
        assert!(
            !b.rootfs().join("opt/app/new").exists(),
            "tmpfs write reached the image"
        );
    });
}

/// With a cgroup namespace, the cgroup mount shows the container's hierarchies with their root at `/`.
#[test]
fn cgroup_mount_with_cgroupns() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_namespace("cgroup", None);
        let out = observe(
            rt,
            &mut b,
            "cat /proc/self/mountinfo; cat /proc/self/cgroup",
        );
        let sub: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|mp| mp.starts_with("/sys/fs/cgroup/"))
            })
            .collect();
        assert!(
            !sub.is_empty(),
            "[{}] no cgroup hierarchies: {out}",
            rt.name()
        );
        for l in &sub {
            assert_eq!(l.split(' ').nth(3), Some("/"), "[{}] {l}", rt.name());
            assert!(l.contains(" ro,"), "[{}] {l}", rt.name());
        }
    });
}

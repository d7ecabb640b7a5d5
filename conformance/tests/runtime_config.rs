//! Each config.json field of issue 2 checked from inside the container (what the process observes), under
//! every selected runtime.

use conformance::{bundle::Bundle, require_root, runtime, runtime::Runtime, skip};
use serde_json::json;

/// Run `script` in a container made from `b` and return its stdout (panics with full output on failure).
#[track_caller]
fn observe(rt: &Runtime, b: &mut Bundle, script: &str) -> String {
    b.shell(script);
    let c = rt.container(b);
    c.run().ok().stdout
}

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

fn features_list(rt: &Runtime, key: &str) -> Vec<String> {
    let out = rt.cmd(["features"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
    v["linux"][key]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn namespaces_new_and_shared() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_namespace("cgroup", None);
        let kinds = ["pid", "net", "ipc", "uts", "mnt", "cgroup", "user", "time"];
        let script: String = kinds
            .iter()
            .map(|k| format!("readlink /proc/self/ns/{k}; "))
            .collect();
        let out = observe(rt, &mut b, &script);
        let inside: Vec<&str> = out.lines().collect();
        assert_eq!(inside.len(), kinds.len(), "{out}");
        for (k, seen) in kinds.iter().zip(inside) {
            let shared = matches!(*k, "user" | "time");
            assert_eq!(
                seen == host_ns(k),
                shared,
                "namespace {k}: inside {seen}, host {}",
                host_ns(k)
            );
        }
    });
}

#[test]
fn namespace_joined_by_path() {
    require_root!();
    runtime::for_each(|rt| {
        let mut a = Bundle::busybox().expect("bundle");
        a.args(&["sleep", "1000"]);
        let ca = rt.container(&a);
        ca.run_with(&["--detach"]).ok();
        let pid = ca.pid();
        let mut b = Bundle::busybox().expect("bundle");
        for ns in ["net", "uts", "ipc"] {
            let kind = if ns == "net" { "network" } else { ns };
            b.add_namespace(kind, Some(&format!("/proc/{pid}/ns/{ns}")));
        }
        b.unset("/hostname");
        let inside = observe(
            rt,
            &mut b,
            "readlink /proc/self/ns/net; readlink /proc/self/ns/uts; readlink /proc/self/ns/ipc",
        );
        let want: Vec<String> = ["net", "uts", "ipc"]
            .iter()
            .map(|ns| {
                std::fs::read_link(format!("/proc/{pid}/ns/{ns}"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(inside.lines().collect::<Vec<_>>(), want);
    });
}

#[test]
fn hostname() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.hostname("box-one");
        let out = observe(rt, &mut b, "hostname; cat /proc/sys/kernel/hostname");
        assert_eq!(out.lines().collect::<Vec<_>>(), ["box-one", "box-one"]);
    });
}

#[test]
fn domainname() {
    require_root!();
    runtime::for_each(|rt| {
        if rt.kind() == runtime::Kind::Runc {
            skip!("runc 1.1 ignores `domainname` (added in runc 1.2)");
        }
        let mut b = Bundle::busybox().expect("bundle");
        b.set("/domainname", json!("example.test")).expect("set");
        let out = observe(rt, &mut b, "cat /proc/sys/kernel/domainname");
        assert_eq!(out.trim(), "example.test");
    });
}

#[test]
fn args_env_cwd() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.env("GREETING=hello world")
            .env("EMPTY=")
            .cwd("/home/user");
        b.args(&[
            "sh",
            "-c",
            "echo \"$0|$1|$GREETING|${EMPTY-unset}|$(pwd)\"",
            "arg zero",
            "a 'b' \"c\"",
        ]);
        let c = rt.container(&b);
        let out = c.run().ok();
        assert_eq!(
            out.out(),
            "arg zero|a 'b' \"c\"|hello world||/home/user",
            "{out}"
        );
        let env = {
            let mut b2 = Bundle::busybox().expect("bundle");
            b2.env("A=1");
            observe(rt, &mut b2, "env | sort")
        };
        let mut keys: Vec<&str> = env
            .lines()
            .filter_map(|l| l.split_once('=').map(|x| x.0))
            .collect();
        keys.sort();
        // Only the configured variables plus what the shell itself adds (PWD, SHLVL) and HOME.
        for k in &keys {
            assert!(
                ["A", "PATH", "TERM", "HOME", "PWD", "SHLVL"].contains(k),
                "unexpected env {k}: {env}"
            );
        }
        assert!(
            env.contains("HOME=/root"),
            "HOME is set from /etc/passwd: {env}"
        );
    });
}

#[test]
fn missing_cwd_is_created() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.readonly_root(false).cwd("/does/not/exist");
        assert_eq!(observe(rt, &mut b, "pwd").trim(), "/does/not/exist");
    });
}

#[test]
fn user_uid_gid_additional_gids_umask() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.user(1000, 1001).additional_gids(&[10, 29]);
        b.set("/process/user/umask", json!(0o027)).expect("set");
        let out = observe(
            rt,
            &mut b,
            "grep -E '^(Uid|Gid|Groups):' /proc/self/status; umask; id -u; id -g; id -G",
        );
        let lines: Vec<String> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "Uid: 1000 1000 1000 1000",
                "Gid: 1001 1001 1001 1001",
                "Groups: 10 29",
                "0027",
                "1000",
                "1001",
                "1001 10 29"
            ],
            "{out}"
        );
    });
}

#[test]
fn rlimits() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/process/rlimits",
            json!([
                { "type": "RLIMIT_NOFILE", "soft": 512, "hard": 1024 },
                { "type": "RLIMIT_CORE", "soft": 0, "hard": 0 },
                { "type": "RLIMIT_NPROC", "soft": 333, "hard": 444 },
                { "type": "RLIMIT_STACK", "soft": 4194304, "hard": 8388608 }
            ]),
        )
        .expect("set");
        let out = observe(rt, &mut b, "grep -E '^Max (open files|core file size|processes|stack size)' /proc/self/limits; ulimit -n");
        let norm: Vec<String> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert!(
            norm.contains(&"Max stack size 4194304 8388608 bytes".to_string()),
            "{out}"
        );
        assert!(
            norm.contains(&"Max core file size 0 0 bytes".to_string()),
            "{out}"
        );
        assert!(
            norm.contains(&"Max processes 333 444 processes".to_string()),
            "{out}"
        );
        assert!(
            norm.contains(&"Max open files 512 1024 files".to_string()),
            "{out}"
        );
        assert_eq!(norm.last().map(String::as_str), Some("512"), "{out}");
    });
}

fn status_field(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn capabilities_default_set() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        let out = observe(rt, &mut b, "cat /proc/self/status");
        // CAP_KILL(5) | CAP_NET_BIND_SERVICE(10) | CAP_AUDIT_WRITE(29)
        let want = format!("{:016x}", (1u64 << 5) | (1 << 10) | (1 << 29));
        for key in ["CapPrm", "CapEff", "CapBnd"] {
            assert_eq!(status_field(&out, key), want, "{key}");
        }
        // Ambient caps need the inheritable bit too, which runc's default config does not set.
        assert_eq!(status_field(&out, "CapInh"), "0000000000000000");
        assert_eq!(status_field(&out, "CapAmb"), "0000000000000000");
        assert_eq!(status_field(&out, "NoNewPrivs"), "1");
    });
}

#[test]
fn capabilities_per_set_for_non_root_user() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.user(1000, 1000);
        b.set(
            "/process/capabilities",
            json!({
                "bounding": ["CAP_CHOWN", "CAP_NET_RAW", "CAP_KILL"],
                "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN", "CAP_NET_RAW"],
                "inheritable": ["CAP_NET_RAW"],
                "ambient": ["CAP_NET_RAW"]
            }),
        )
        .expect("set");
        let out = observe(rt, &mut b, "cat /proc/self/status");
        let hex = |bits: &[u32]| format!("{:016x}", bits.iter().fold(0u64, |a, b| a | (1 << b)));
        // CHOWN=0, KILL=5, NET_RAW=13. Ambient caps are raised into permitted/effective by execve.
        assert_eq!(status_field(&out, "CapBnd"), hex(&[0, 5, 13]), "{out}");
        assert_eq!(status_field(&out, "CapInh"), hex(&[13]), "{out}");
        assert_eq!(status_field(&out, "CapAmb"), hex(&[13]), "{out}");
        assert_eq!(status_field(&out, "CapPrm"), hex(&[13]), "{out}");
        assert_eq!(status_field(&out, "CapEff"), hex(&[13]), "{out}");
    });
}

#[test]
fn no_new_privileges_off() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set("/process/noNewPrivileges", json!(false))
            .expect("set");
        let out = observe(rt, &mut b, "grep NoNewPrivs /proc/self/status");
        assert_eq!(status_field(&out, "NoNewPrivs"), "0");
    });
}

#[test]
fn oom_score_adj() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set("/process/oomScoreAdj", json!(123)).expect("set");
        assert_eq!(
            observe(rt, &mut b, "cat /proc/self/oom_score_adj").trim(),
            "123"
        );
    });
}

/// (mount point, fstype, per-mount options) from the container's mountinfo.
fn mounts(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            Some((
                f.get(4)?.to_string(),
                f.get(dash + 1)?.to_string(),
                f.get(5)?.to_string(),
            ))
        })
        .collect()
}

#[test]
fn default_mounts_present() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        let out = observe(rt, &mut b, "cat /proc/self/mountinfo");
        let m = mounts(&out);
        let find = |mp: &str| m.iter().find(|x| x.0 == mp).cloned();
        let root = find("/").expect("a / mount");
        assert!(
            root.2.split(',').any(|o| o == "ro"),
            "readonly root: {root:?}"
        );
        for (mp, fs) in [
            ("/proc", "proc"),
            ("/dev", "tmpfs"),
            ("/dev/pts", "devpts"),
            ("/dev/shm", "tmpfs"),
            ("/dev/mqueue", "mqueue"),
            ("/sys", "sysfs"),
        ] {
            let got = find(mp).unwrap_or_else(|| panic!("{mp} not mounted:\n{out}"));
            assert_eq!(got.1, fs, "{mp}: {got:?}");
        }
        let sys = find("/sys").unwrap_or_default();
        assert!(sys.2.split(',').any(|o| o == "ro"), "/sys is ro: {sys:?}");
        let shm = find("/dev/shm").unwrap_or_default();
        for o in ["nosuid", "nodev", "noexec"] {
            assert!(
                shm.2.split(',').any(|x| x == o),
                "/dev/shm has {o}: {shm:?}"
            );
        }
        assert!(
            m.iter().any(|x| x.0.starts_with("/sys/fs/cgroup")),
            "cgroup mounted:\n{out}"
        );
    });
}

#[test]
fn extra_mounts_tmpfs_and_bind() {
    require_root!();
    runtime::for_each(|rt| {
        let host = tempfile::tempdir().expect("tempdir");
        std::fs::write(host.path().join("file"), "from-host").expect("write");
        let mut b = Bundle::busybox().expect("bundle");
        b.add_mount(json!({
            "destination": "/mnt/scratch", "type": "tmpfs", "source": "tmpfs",
            "options": ["nosuid", "nodev", "size=1m", "mode=700"]
        }));
        b.add_bind(host.path(), "/mnt/ro", &["rbind", "ro"]);
        b.add_bind(host.path(), "/new/dir/rw", &["bind"]);
        let out = observe(
            rt,
            &mut b,
            "cat /proc/self/mountinfo; echo ---; cat /mnt/ro/file; echo; stat -c %a /mnt/scratch; \
             touch /mnt/ro/x 2>/dev/null && echo ro-writable || echo ro-refused; \
             echo hi > /new/dir/rw/out && echo rw-ok",
        );
        let (mi, rest) = out.split_once("---").unwrap_or((&out, ""));
        let m = mounts(mi);
        let scratch = m
            .iter()
            .find(|x| x.0 == "/mnt/scratch")
            .unwrap_or_else(|| panic!("no tmpfs:\n{out}"));
        assert_eq!(scratch.1, "tmpfs");
        assert!(
            scratch.2.contains("nosuid") && scratch.2.contains("nodev"),
            "{scratch:?}"
        );
        let ro = m
            .iter()
            .find(|x| x.0 == "/mnt/ro")
            .unwrap_or_else(|| panic!("no bind:\n{out}"));
        assert!(ro.2.split(',').any(|o| o == "ro"), "{ro:?}");
        let lines: Vec<&str> = rest.lines().filter(|l| !l.is_empty()).collect();
        assert_eq!(lines, ["from-host", "700", "ro-refused", "rw-ok"], "{out}");
        assert_eq!(
            std::fs::read_to_string(host.path().join("out")).unwrap_or_default(),
            "hi\n"
        );
    });
}

#[test]
fn masked_and_readonly_paths() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/linux/maskedPaths",
            json!(["/proc/keys", "/sys/firmware", "/proc/does-not-exist"]),
        )
        .expect("set");
        b.set(
            "/linux/readonlyPaths",
            json!(["/proc/sys", "/proc/does-not-exist-either"]),
        )
        .expect("set");
        let out = observe(
            rt,
            &mut b,
            "wc -c < /proc/keys; ls -A /sys/firmware | wc -l; \
             (echo 1 > /proc/sys/kernel/domainname) 2>/dev/null && echo sys-writable || echo sys-ro; \
             grep ' /proc/sys ' /proc/self/mountinfo | cut -d' ' -f6",
        );
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(
            lines.first().copied(),
            Some("0"),
            "masked /proc/keys reads empty: {out}"
        );
        assert_eq!(
            lines.get(1).copied(),
            Some("0"),
            "masked /sys/firmware is empty: {out}"
        );
        assert_eq!(lines.get(2).copied(), Some("sys-ro"), "{out}");
        assert!(
            lines
                .get(3)
                .is_some_and(|o| o.split(',').any(|x| x == "ro")),
            "{out}"
        );
    });
}

#[test]
fn sysctl() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/linux/sysctl",
            json!({ "net.ipv4.ip_forward": "1", "kernel.shmmni": "2048" }),
        )
        .expect("set");
        let out = observe(
            rt,
            &mut b,
            "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni",
        );
        assert_eq!(out.lines().collect::<Vec<_>>(), ["1", "2048"]);
    });
}

#[test]
fn default_devices_and_linux_devices() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.set(
            "/linux/devices",
            json!([{ "path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 0o640, "uid": 0, "gid": 0 }]),
        )
        .expect("set");
        b.set(
            "/linux/resources/devices",
            json!([{ "allow": true, "access": "rwm" }]),
        )
        .expect("set");
        let out = observe(
            rt,
            &mut b,
            "for d in null zero full random urandom tty fuse; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
             for l in fd stdin stdout stderr ptmx; do echo \"$l -> $(readlink /dev/$l)\"; done; \
             test -d /dev/pts && echo pts-dir; test -d /dev/shm && echo shm-dir; echo ok > /dev/null && echo null-writable",
        );
        let want = [
            "/dev/null character special file 1:3 666",
            "/dev/zero character special file 1:5 666",
            "/dev/full character special file 1:7 666",
            "/dev/random character special file 1:8 666",
            "/dev/urandom character special file 1:9 666",
            "/dev/tty character special file 5:0 666",
            "/dev/fuse character special file a:e5 640",
            "fd -> /proc/self/fd",
            "stdin -> /proc/self/fd/0",
            "stdout -> /proc/self/fd/1",
            "stderr -> /proc/self/fd/2",
            "ptmx -> pts/ptmx",
            "pts-dir",
            "shm-dir",
            "null-writable",
        ];
        assert_eq!(out.lines().collect::<Vec<_>>(), want, "{out}");
    });
}

#[test]
fn user_namespace_mappings() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.add_namespace("user", None);
        b.set(
            "/linux/uidMappings",
            json!([{ "containerID": 0, "hostID": 100000, "size": 65536 }]),
        )
        .expect("set");
        b.set(
            "/linux/gidMappings",
            json!([{ "containerID": 0, "hostID": 200000, "size": 65536 }]),
        )
        .expect("set");
        // A cgroup v1 mount is not allowed from a user namespace without a cgroup namespace.
        b.add_namespace("cgroup", None);
        let out = observe(
            rt,
            &mut b,
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; readlink /proc/self/ns/user",
        );
        let lines: Vec<String> = out
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines.get(..3),
            Some(
                &[
                    "0 100000 65536".to_string(),
                    "0 200000 65536".into(),
                    "0".into()
                ][..]
            ),
            "{out}"
        );
        assert_ne!(
            lines.get(3).cloned().unwrap_or_default(),
            host_ns("user"),
            "{out}"
        );
    });
}

#[test]
fn time_namespace_offsets() {
    require_root!();
    runtime::for_each(|rt| {
        if !features_list(rt, "namespaces").iter().any(|n| n == "time") {
            skip!("{} features does not list the time namespace", rt.name());
        }
        let mut b = Bundle::busybox().expect("bundle");
        b.add_namespace("time", None);
        b.set("/linux/timeOffsets", json!({ "monotonic": { "secs": 864000, "nanosecs": 0 }, "boottime": { "secs": 1728000, "nanosecs": 0 } }))
            .expect("set");
        let out = observe(
            rt,
            &mut b,
            "cut -d. -f1 /proc/uptime; readlink /proc/self/ns/time",
        );
        let uptime: u64 = out
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            uptime >= 1_728_000,
            "boottime offset visible in /proc/uptime: {out}"
        );
        assert_ne!(out.lines().nth(1).unwrap_or(""), host_ns("time"), "{out}");
    });
}

#[test]
fn readonly_root_off_allows_writes() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.readonly_root(false);
        observe(rt, &mut b, "echo x > /written");
        assert_eq!(
            std::fs::read_to_string(b.rootfs().join("written")).unwrap_or_default(),
            "x\n"
        );
        b.readonly_root(true);
        let out = observe(
            rt,
            &mut b,
            "(echo y > /written2) 2>/dev/null && echo writable || echo refused",
        );
        assert_eq!(out.trim(), "refused");
    });
}

#[test]
fn no_inherited_fds() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        // fds 0-2 plus the one `ls` opens for the directory listing.
        let out = observe(rt, &mut b, "ls /proc/self/fd | sort -n | tr '\\n' ' '");
        assert_eq!(
            out.trim(),
            "0 1 2 3",
            "only stdio reaches the process: {out}"
        );
    });
}

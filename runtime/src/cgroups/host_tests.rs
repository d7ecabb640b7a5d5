//! Root-only tests on the host's real cgroups: create, apply, read back, freeze, destroy.
//!
//! Each test uses a unique cgroup and a Drop guard that kills its child and removes the cgroup.
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;

use super::{fs, CgroupManager, Version};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A child parked on `read` until released, plus its cgroup manager; cleaned up on drop.
struct Guard {
    child: Child,
    mgr: CgroupManager,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.mgr.thaw();
        kill_all(&self.mgr);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.mgr.destroy();
    }
}

impl Guard {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Let the child run its workload (it waits for one line on stdin).
    fn release(&mut self) {
        if let Some(stdin) = self.child.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
        }
    }
}

/// SIGKILL every process left in the cgroup (background children of the shell).
fn kill_all(mgr: &CgroupManager) {
    for p in mgr.pids().unwrap_or_default() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::SIGKILL);
    }
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".into());
    }
    if !std::path::Path::new("/sys/fs/cgroup").exists() {
        return Some("no /sys/fs/cgroup".into());
    }
    None
}

macro_rules! require_root {
    () => {
        if let Some(r) = skip_reason() {
            eprintln!("SKIP: {r}");
            return;
        }
    };
}

fn unique_path() -> String {
    format!(
        "/skiff-ut-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// Spawn `sh -c "read x; <script>"` so the workload starts only once it is in the cgroup.
fn spawn(script: &str) -> Child {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("read x; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn /bin/sh")
}

fn resources(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("resources json")
}

fn setup(script: &str, json: &str) -> Guard {
    let mgr = CgroupManager::new(Some(&unique_path()), "ut", false).expect("manager");
    let child = spawn(script);
    let g = Guard { child, mgr };
    g.mgr
        .apply(g.pid(), Some(&resources(json)))
        .expect("apply resources");
    g
}

fn read(g: &Guard, ctrl: &str, file: &str) -> String {
    let dir = g.mgr.dir_for(ctrl).expect("controller dir");
    fs::read(dir, file).expect("read").trim().to_string()
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn resources_are_written_and_read_back() {
    require_root!();
    let g = setup(
        "sleep 100",
        r#"{"cpu":{"shares":512,"quota":20000,"period":100000,"cpus":"0","mems":"0"},
            "memory":{"limit":67108864,"reservation":33554432,"swap":134217728,"swappiness":10},
            "pids":{"limit":50},"blockIO":{"weight":500},
            "devices":[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":1,"minor":3,"access":"rwm"}]}"#,
    );
    assert!(g.mgr.pids().expect("pids").contains(&g.pid()));
    match g.mgr.version() {
        Version::V1 | Version::Hybrid => {
            assert_eq!(read(&g, "cpu", "cpu.shares"), "512");
            assert_eq!(read(&g, "cpu", "cpu.cfs_quota_us"), "20000");
            assert_eq!(read(&g, "cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(read(&g, "cpuset", "cpuset.cpus"), "0");
            assert_eq!(read(&g, "cpuset", "cpuset.mems"), "0");
            assert_eq!(read(&g, "memory", "memory.limit_in_bytes"), "67108864");
            assert_eq!(read(&g, "memory", "memory.soft_limit_in_bytes"), "33554432");
            assert_eq!(
                read(&g, "memory", "memory.memsw.limit_in_bytes"),
                "134217728"
            );
            assert_eq!(read(&g, "memory", "memory.swappiness"), "10");
            assert_eq!(read(&g, "pids", "pids.max"), "50");
            let blkio = g.mgr.dir_for("blkio").expect("blkio");
            let w = fs::read(blkio, "blkio.weight")
                .or_else(|_| fs::read(blkio, "blkio.bfq.weight"))
                .expect("weight");
            assert!(w.trim() == "500" || w.contains("default 500"), "{w}");
            // Same list runc 1.1 produces for this config on this kernel.
            let devices = read(&g, "devices", "devices.list");
            let expected = "b *:* m\nc *:* m\nc 1:3 rwm\nc 1:5 rwm\nc 1:7 rwm\nc 1:8 rwm\nc 1:9 rwm\nc 5:0 rwm\nc 5:2 rwm\nc 10:200 rwm\nc 136:* rwm";
            let mut got: Vec<&str> = devices.lines().collect();
            got.sort();
            let mut want: Vec<&str> = expected.lines().collect();
            want.sort();
            assert_eq!(got, want);
            // Every hierarchy holds the process.
            for (key, dir) in g.mgr.dirs() {
                let procs = fs::read(dir, "cgroup.procs").expect("procs");
                assert!(
                    procs.lines().any(|l| l.trim() == g.pid().to_string()),
                    "{key}: {procs}"
                );
            }
        }
        Version::V2 => {
            assert_eq!(read(&g, "cpu", "cpu.weight"), "20");
            assert_eq!(read(&g, "cpu", "cpu.max"), "20000 100000");
            assert_eq!(read(&g, "memory", "memory.max"), "67108864");
            assert_eq!(read(&g, "memory", "memory.low"), "33554432");
            assert_eq!(read(&g, "pids", "pids.max"), "50");
        }
    }
}

#[test]
fn freeze_thaw_update_stats_destroy() {
    require_root!();
    let mut g = setup("sleep 100", r#"{"pids":{"limit":20}}"#);
    g.release();
    assert!(!g.mgr.is_frozen().expect("is_frozen"));
    g.mgr.freeze().expect("freeze");
    assert!(g.mgr.is_frozen().expect("is_frozen"));
    let status = std::fs::read_to_string(format!("/proc/{}/status", g.pid())).expect("status");
    assert!(status.contains("State:"), "{status}");
    g.mgr.thaw().expect("thaw");
    assert!(!g.mgr.is_frozen().expect("is_frozen"));

    g.mgr
        .update(&resources(
            r#"{"memory":{"limit":33554432},"pids":{"limit":7},"cpu":{"quota":50000,"period":100000}}"#,
        ))
        .expect("update");
    assert_eq!(read(&g, "pids", "pids.max"), "7");
    if g.mgr.version() != Version::V2 {
        assert_eq!(read(&g, "memory", "memory.limit_in_bytes"), "33554432");
        assert_eq!(read(&g, "cpu", "cpu.cfs_quota_us"), "50000");
    }
    // Raising memory above the current memsw limit must reorder the writes.
    if g.mgr.version() != Version::V2 {
        g.mgr
            .update(&resources(
                r#"{"memory":{"limit":268435456,"swap":268435456}}"#,
            ))
            .expect("update memory+swap");
        assert_eq!(read(&g, "memory", "memory.limit_in_bytes"), "268435456");
    }

    let stats = g.mgr.stats().expect("stats");
    assert!(stats.pids.current >= 1);
    assert_eq!(stats.pids.limit, 7);
    let json = serde_json::to_value(&stats).expect("json");
    assert!(json["memory"]["usage"]["limit"].as_u64().is_some());

    let dirs: Vec<PathBuf> = g.mgr.dirs().values().cloned().collect();
    // Even a paused container dies at once: signal_all thaws after signalling.
    g.mgr.freeze().expect("freeze");
    g.mgr.signal_all(libc::SIGKILL).expect("signal_all");
    assert!(!g.mgr.is_frozen().expect("is_frozen"));
    let _ = g.child.wait();
    // Killed tasks leave the cgroup asynchronously; wait (bounded) until it is empty.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !g.mgr.pids().unwrap_or_default().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    g.mgr.destroy().expect("destroy");
    for d in dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

#[test]
fn failed_apply_leaves_nothing() {
    require_root!();
    let path = unique_path();
    let mgr = CgroupManager::new(Some(&path), "ut", false).expect("manager");
    let child = spawn("sleep 100");
    let g = Guard { child, mgr };
    let before = std::fs::read_to_string(format!("/proc/{}/cgroup", g.pid())).expect("cgroup");
    // CPU 999 does not exist: the cpuset write fails after the directories were made.
    let err = g
        .mgr
        .apply(g.pid(), Some(&resources(r#"{"cpu":{"cpus":"999"}}"#)))
        .expect_err("must fail");
    assert!(err.to_string().contains("cpuset.cpus"), "{err}");
    for d in g.mgr.dirs().values() {
        assert!(!d.exists(), "{} left behind", d.display());
    }
    let after = std::fs::read_to_string(format!("/proc/{}/cgroup", g.pid())).expect("cgroup");
    assert_eq!(before, after);
    // Validation errors come before anything is created.
    for bad in [
        r#"{"cpu":{"quota":-5}}"#,
        r#"{"memory":{"limit":-2}}"#,
        r#"{"memory":{"swappiness":101}}"#,
        r#"{"blockIO":{"weight":5}}"#,
        r#"{"devices":[{"allow":true,"type":"c","access":"rwx"}]}"#,
    ] {
        let err = g.mgr.apply(g.pid(), Some(&resources(bad))).expect_err(bad);
        assert!(err.to_string().contains("linux.resources"), "{bad}: {err}");
        for d in g.mgr.dirs().values() {
            assert!(!d.exists(), "{bad}: {} left behind", d.display());
        }
    }
    if g.mgr.version() != Version::V2 {
        let err = g
            .mgr
            .apply(
                g.pid(),
                Some(&resources(r#"{"unified":{"memory.high":"1000000"}}"#)),
            )
            .expect_err("unified on v1");
        assert!(err.to_string().contains("unified"), "{err}");
    }
    assert!(CgroupManager::new(Some("/a/../../etc"), "x", false).is_err());
    let err = CgroupManager::new(None, "x", true).expect_err("systemd");
    assert!(err.to_string().contains("systemd"), "{err}");
}

#[test]
fn cpu_quota_limits_a_busy_loop_to_about_20_percent() {
    require_root!();
    let mut g = setup(
        "while :; do :; done",
        r#"{"cpu":{"quota":20000,"period":100000}}"#,
    );
    g.release();
    std::thread::sleep(Duration::from_millis(300));
    let usage = |g: &Guard| -> u64 { g.mgr.stats().map(|s| s.cpu.usage.total).unwrap_or(0) };
    let u0 = usage(&g);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let used = usage(&g).saturating_sub(u0) as f64;
    let wall = t0.elapsed().as_nanos() as f64;
    let share = used / wall;
    eprintln!(
        "busy loop with quota 20000/100000: {:.1}% of one CPU",
        share * 100.0
    );
    assert!(
        (0.08..=0.35).contains(&share),
        "cpu share {share:.3} outside 8%..35%"
    );
}

#[test]
fn memory_limit_oom_kills_an_allocating_process() {
    require_root!();
    let mut g = setup(
        "exec tail /dev/zero",
        r#"{"memory":{"limit":16777216,"swap":16777216}}"#,
    );
    assert_eq!(g.mgr.oom_kill_count(), 0);
    g.release();
    let status = wait_exit(&mut g.child, Duration::from_secs(60)).expect("OOM kill within 60s");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "{status:?}");
    assert!(g.mgr.oom_kill_count() >= 1);
}

#[test]
fn pids_limit_makes_fork_fail() {
    require_root!();
    let mut g = setup(
        "for i in 1 2 3 4 5 6 7 8; do sleep 30 & done; echo done",
        r#"{"pids":{"limit":4}}"#,
    );
    g.release();
    let _ = wait_exit(&mut g.child, Duration::from_secs(20));
    let count = g.mgr.pids().expect("pids").len();
    // The background sleeps hold stderr open: kill them before reading it.
    kill_all(&g.mgr);
    let mut out = String::new();
    if let Some(mut e) = g.child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut out);
    }
    assert!(
        out.contains("fork") || out.contains("Resource temporarily unavailable"),
        "stderr: {out}"
    );
    assert!(count <= 4, "{count} processes with pids.max 4");
}

/// The v2 device program, checked on any cgroup2 mount (the hybrid host's unified tree works too).
#[test]
fn bpf_device_filter_denies_and_allows() {
    require_root!();
    let Some(root) = super::layout::Layout::detect()
        .ok()
        .and_then(|l| l.unified.map(|u| u.mount_point))
    else {
        eprintln!("SKIP: no cgroup2 mount");
        return;
    };
    let dir = root.join(unique_path().trim_start_matches('/'));
    std::fs::create_dir(&dir).expect("mkdir");
    struct Rm(PathBuf);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = fs::remove_dir(&self.0);
        }
    }
    let _rm = Rm(dir.clone());
    let mut rules = vec![super::DeviceRule {
        allow: false,
        kind: 'a',
        major: None,
        minor: None,
        access: "rwm".into(),
    }];
    rules.extend(super::devices::default_allowed());
    super::bpf::attach_device_filter(&dir, &rules).expect("attach");
    // Replacing the program works too (update path).
    super::bpf::attach_device_filter(&dir, &rules).expect("re-attach");
    // A failed redirection on a special builtin ends sh, so /dev/kmsg goes last.
    let mut child = spawn(": > /dev/null && echo null-ok; : > /dev/kmsg; echo kmsg-opened");
    fs::write(&dir, "cgroup.procs", &child.id().to_string()).expect("join");
    if let Some(stdin) = child.stdin.as_mut() {
        let _ = stdin.write_all(b"go\n");
    }
    let out = child.wait_with_output().expect("wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("null-ok"), "{stdout} {stderr}");
    assert!(!stdout.contains("kmsg-opened"), "{stdout} {stderr}");
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
}

/// The less common fields: burst, idle, realtime, OOM killer, kernel TCP, hugetlb (v1 or the
/// hybrid host's cgroup2 tree), and a clear error for controllers the host lacks.
#[test]
fn less_common_resources() {
    require_root!();
    let probe = CgroupManager::new(Some(&unique_path()), "ut", false).expect("manager");
    if probe.version() == Version::V2 {
        eprintln!("SKIP: v1-specific files (the v2 guest test covers v2)");
        return;
    }
    let mut json = serde_json::json!({
        "cpu": {"burst": 1000, "idle": 0, "realtimePeriod": 100000, "realtimeRuntime": 1000},
        "memory": {"limit": 67108864, "disableOOMKiller": true, "kernelTCP": 16777216}
    });
    let huge = super::stats::hugepage_sizes().contains(&"2MB".to_string());
    if huge {
        json["hugepageLimits"] = serde_json::json!([{"pageSize": "2MB", "limit": 4194304}]);
    }
    let g = setup("sleep 100", &json.to_string());
    assert_eq!(read(&g, "cpu", "cpu.cfs_burst_us"), "1000");
    assert_eq!(read(&g, "cpu", "cpu.idle"), "0");
    assert_eq!(read(&g, "cpu", "cpu.rt_period_us"), "100000");
    assert_eq!(read(&g, "cpu", "cpu.rt_runtime_us"), "1000");
    assert!(read(&g, "memory", "memory.oom_control").contains("oom_kill_disable 1"));
    assert_eq!(
        read(&g, "memory", "memory.kmem.tcp.limit_in_bytes"),
        "16777216"
    );
    if huge {
        let v = match g.mgr.dir_for("hugetlb") {
            Some(d) => fs::read(d, "hugetlb.2MB.limit_in_bytes"),
            None => fs::read(g.mgr.unified_dir().expect("unified"), "hugetlb.2MB.max"),
        };
        assert_eq!(v.expect("hugetlb file").trim(), "4194304");
    }
    for (ctrl, res) in [
        ("net_cls", r#"{"network":{"classID":1048577}}"#),
        (
            "net_prio",
            r#"{"network":{"priorities":[{"name":"lo","priority":5}]}}"#,
        ),
        ("rdma", r#"{"rdma":{"mlx5_0":{"hcaHandles":3}}}"#),
    ] {
        if g.mgr.dir_for(ctrl).is_none() {
            let m = CgroupManager::new(Some(&unique_path()), "ut", false).expect("manager");
            let err = m.apply(0, Some(&resources(res))).expect_err(ctrl);
            assert!(err.to_string().contains(ctrl), "{err}");
            assert!(!m.exists(), "{ctrl}: cgroup left behind");
        }
    }
}

/// Relative cgroupsPath (and the default from the id) hang below PID 1's cgroup in every
/// hierarchy, whatever cgroup the caller runs in.
#[test]
fn relative_paths_resolve_below_pid1() {
    require_root!();
    let m = CgroupManager::new(None, "rel-id", false).expect("manager");
    let pid1 = super::layout::proc_cgroups("1").expect("pid 1 cgroups");
    for (key, dir) in m.dirs() {
        assert!(dir.ends_with("rel-id"), "{key}: {}", dir.display());
    }
    if pid1.iter().all(|(_, _, p)| p == "/") {
        for dir in m.dirs().values() {
            let parent = dir.parent().expect("parent");
            assert!(
                parent.join("cgroup.procs").exists(),
                "{} is not a hierarchy root",
                parent.display()
            );
        }
    }
    let m = CgroupManager::new(Some("a/b"), "x", false).expect("manager");
    assert_eq!(m.path(), "a/b");
    assert!(m.dirs().values().all(|d| d.ends_with("a/b")));
    let m = CgroupManager::new(Some("/abs/c"), "x", false).expect("manager");
    assert!(m.dirs().values().all(|d| d.ends_with("abs/c")));
}

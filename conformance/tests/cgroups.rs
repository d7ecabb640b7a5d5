//! cgroups (issue 3): resources read back from the cgroup files (differential against runc), the seed
//! scenarios (cpu quota ~20%, memory OOM with an `oom` event, pids limit), update/pause/resume/ps/events,
//! and bad input leaving nothing behind.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use conformance::runtime::{self, Kind, Runtime};
use conformance::{bundle::Bundle, require_root, skip};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);

/// A busybox bundle; ambient capabilities are dropped as they are not what these tests are about.
fn busybox() -> Bundle {
    let mut b = Bundle::busybox().expect("bundle");
    b.unset("/process/capabilities/ambient");
    b
}

fn sleeper(resources: Value) -> Bundle {
    let mut b = busybox();
    b.args(&["sleep", "1000"]);
    b.set("/linux/resources", resources).expect("resources");
    b
}

/// Mount points of the cgroup hierarchies: key (`memory`, `cpu,cpuacct`, `` for cgroup2) -> dir.
fn mounts() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let key = match post[0] {
            "cgroup2" => String::new(),
            "cgroup" => post[2]
                .split(',')
                .filter(|o| {
                    !matches!(
                        *o,
                        "rw" | "ro" | "nosuid" | "nodev" | "noexec" | "relatime" | "clone_children"
                    )
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => continue,
        };
        out.entry(key).or_insert_with(|| PathBuf::from(pre[4]));
    }
    out
}

/// The cgroup directory of `pid` in the hierarchy holding `controller` (cgroup2 on a pure v2 host).
fn cgroup_dir(pid: i64, controller: &str) -> Option<PathBuf> {
    let m = mounts();
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
        let hit = if ctrls.is_empty() {
            !m.keys().any(|k| k.split(',').any(|c| c == controller))
        } else {
            ctrls.split(',').any(|c| c == controller)
        };
        if hit {
            return Some(m.get(ctrls)?.join(path.trim_start_matches('/')));
        }
    }
    None
}

fn is_v1() -> bool {
    mounts().keys().any(|k| k.split(',').any(|c| c == "memory"))
}

fn read_cg(pid: i64, controller: &str, file: &str) -> String {
    let dir =
        cgroup_dir(pid, controller).unwrap_or_else(|| panic!("no {controller} cgroup for {pid}"));
    std::fs::read_to_string(dir.join(file))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|e| format!("<{e}>"))
}

/// The files runc writes for our test config, on this host's layout.
fn observed_files(pid: i64) -> BTreeMap<String, String> {
    let files: &[(&str, &str)] = if is_v1() {
        &[
            ("cpu", "cpu.shares"),
            ("cpu", "cpu.cfs_quota_us"),
            ("cpu", "cpu.cfs_period_us"),
            ("cpuset", "cpuset.cpus"),
            ("cpuset", "cpuset.mems"),
            ("memory", "memory.limit_in_bytes"),
            ("memory", "memory.soft_limit_in_bytes"),
            ("memory", "memory.memsw.limit_in_bytes"),
            ("memory", "memory.swappiness"),
            ("pids", "pids.max"),
            ("blkio", "blkio.bfq.weight"),
            ("blkio", "blkio.weight"),
            ("blkio", "blkio.throttle.read_bps_device"),
            ("blkio", "blkio.throttle.write_iops_device"),
            ("devices", "devices.list"),
        ]
    } else {
        &[
            ("cpu", "cpu.weight"),
            ("cpu", "cpu.max"),
            ("cpuset", "cpuset.cpus"),
            ("memory", "memory.max"),
            ("memory", "memory.low"),
            ("memory", "memory.swap.max"),
            ("pids", "pids.max"),
            ("io", "io.max"),
        ]
    };
    files
        .iter()
        .map(|(c, f)| {
            let mut v = read_cg(pid, c, f);
            if *f == "devices.list" {
                let mut lines: Vec<&str> = v.lines().collect();
                lines.sort();
                v = lines.join("\n");
            }
            (f.to_string(), v)
        })
        .collect()
}

/// major:minor of a real block device for the throttle settings (loop0 exists on most hosts).
fn block_device() -> Option<(u64, u64)> {
    let mut names: Vec<_> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    let dev = names
        .iter()
        .find_map(|p| std::fs::read_to_string(p.join("dev")).ok())?;
    let (a, b) = dev.trim().split_once(':')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

fn full_resources() -> Value {
    let mut blkio = json!({"weight": 500});
    if let Some((major, minor)) = block_device() {
        blkio["throttleReadBpsDevice"] = json!([{"major": major, "minor": minor, "rate": 1048576}]);
        blkio["throttleWriteIOPSDevice"] = json!([{"major": major, "minor": minor, "rate": 100}]);
    }
    json!({
        "cpu": {"shares": 512, "quota": 20000, "period": 100000, "cpus": "0", "mems": "0"},
        "memory": {"limit": 67108864, "reservation": 33554432, "swap": 134217728, "swappiness": 10},
        "pids": {"limit": 50},
        "blockIO": blkio,
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}
        ]
    })
}

#[test]
fn resources_written_like_runc() {
    require_root!();
    runtime::compare(|rt| {
        let b = sleeper(full_resources());
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let files = observed_files(c.pid());
        eprintln!("[{}] {files:#?}", rt.name());
        files
    });
}

#[test]
fn container_sees_its_own_cgroup_and_execs_join_it() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = sleeper(json!({"memory": {"limit": 33554432}, "pids": {"limit": 40}}));
        b.add_namespace("cgroup", None);
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        // cgroupns: the container's cgroups are its roots.
        let out = c.exec(&["cat", "/proc/self/cgroup"]).ok();
        for line in out.out().lines() {
            assert!(
                line.ends_with(":/"),
                "exec'd process not at its cgroup root: {line}\n{out}"
            );
        }
        // The exec'd process is in the container's cgroup (seen from the host).
        let pids = c.ps(&["--format", "json"]).ok().json();
        assert_eq!(pids.as_array().map(Vec::len), Some(1), "{pids}");
        let init = c.pid();
        let limit = if is_v1() {
            read_cg(init, "memory", "memory.limit_in_bytes")
        } else {
            read_cg(init, "memory", "memory.max")
        };
        assert_eq!(limit, "33554432");
        let file = if is_v1() {
            "/sys/fs/cgroup/memory/memory.limit_in_bytes"
        } else {
            "/sys/fs/cgroup/memory.max"
        };
        let seen = c.exec(&["cat", file]);
        assert_eq!(
            seen.out(),
            "33554432",
            "a cgroup mount inside shows the container's own cgroup:\n{seen}"
        );
    });
}

/// CPU time of the container's cgroup in nanoseconds, via `events --stats`.
fn cpu_ns(rt: &Runtime, id: &str) -> u64 {
    let out = rt.cmd(["events", "--stats", id]).ok();
    let v: Value =
        serde_json::from_str(out.out().lines().next().unwrap_or("")).expect("stats json");
    v["data"]["cpu"]["usage"]["total"].as_u64().unwrap_or(0)
}

#[test]
fn seed_cpu_quota_gives_about_20_percent() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = busybox();
        b.args(&["sh", "-c", "while :; do :; done"]);
        b.set(
            "/linux/resources",
            json!({"cpu": {"quota": 20000, "period": 100000}}),
        )
        .expect("set");
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        std::thread::sleep(Duration::from_millis(300));
        let u0 = cpu_ns(rt, c.id());
        let t0 = Instant::now();
        std::thread::sleep(Duration::from_secs(3));
        let used = cpu_ns(rt, c.id()).saturating_sub(u0) as f64;
        let share = used / t0.elapsed().as_nanos() as f64;
        eprintln!(
            "[{}] busy loop with quota 20000/100000: {:.1}% of a CPU",
            rt.name(),
            share * 100.0
        );
        assert!(
            (0.08..=0.35).contains(&share),
            "cpu share {share:.3} outside 8%..35%"
        );
    });
}

#[test]
fn seed_memory_limit_oom_kills_with_oom_event() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = busybox();
        // Wait for the events stream to attach, then double a string until the limit is hit.
        b.args(&[
            "sh",
            "-c",
            "sleep 1; x=aaaaaaaaaaaaaaaa; while :; do x=$x$x; done",
        ]);
        b.set(
            "/linux/resources",
            json!({"memory": {"limit": 33554432, "swap": 33554432}}),
        )
        .expect("set");
        let c = rt.container(&b);
        c.create().ok();
        let events = rt
            .invocation(["events", "--interval", "1s", c.id()])
            .timeout(Duration::from_secs(60))
            .spawn()
            .expect("spawn events");
        std::thread::sleep(Duration::from_millis(300));
        c.start().ok();
        assert_eq!(c.wait_status("stopped", Duration::from_secs(60)), "stopped");
        // runc's stream never ends by itself; give it a moment to print, then stop it.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !events.stdout_so_far().contains("\"oom\"") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let so_far = events.stdout_so_far();
        let _ = events.signal(nix::sys::signal::Signal::SIGKILL);
        let out = events.wait();
        let oom = so_far
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["type"] == "oom");
        let oom = oom.unwrap_or_else(|| panic!("no oom event:\n{so_far}\n{out}"));
        assert_eq!(oom["id"], c.id(), "{oom}");
    });
}

#[test]
fn seed_pids_limit_makes_fork_fail() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = busybox();
        b.args(&[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8; do sleep 2 & done; wait",
        ]);
        b.set("/linux/resources", json!({"pids": {"limit": 4}}))
            .expect("set");
        let c = rt.container(&b);
        let out = c.run();
        assert!(
            out.stderr.contains("can't fork"),
            "fork should fail:\n{out}"
        );
    });
}

#[test]
fn update_pause_resume_ps_events() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper(json!({"memory": {"limit": 67108864}, "pids": {"limit": 50}}));
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let pid = c.pid();
        rt.cmd([
            "update",
            "--memory",
            "128m",
            "--memory-swap",
            "256m",
            "--pids-limit",
            "10",
            "--cpu-quota",
            "30000",
            "--cpu-period",
            "100000",
            "--cpu-share",
            "256",
            c.id(),
        ])
        .ok();
        assert_eq!(read_cg(pid, "pids", "pids.max"), "10");
        if is_v1() {
            assert_eq!(read_cg(pid, "memory", "memory.limit_in_bytes"), "134217728");
            assert_eq!(
                read_cg(pid, "memory", "memory.memsw.limit_in_bytes"),
                "268435456"
            );
            assert_eq!(read_cg(pid, "cpu", "cpu.cfs_quota_us"), "30000");
            assert_eq!(read_cg(pid, "cpu", "cpu.shares"), "256");
        } else {
            assert_eq!(read_cg(pid, "memory", "memory.max"), "134217728");
            assert_eq!(read_cg(pid, "cpu", "cpu.max"), "30000 100000");
        }
        rt.invocation(["update", "-r", "-", c.id()])
            .stdin(br#"{"pids":{"limit":12},"memory":{"reservation":33554432}}"#)
            .output()
            .ok();
        assert_eq!(read_cg(pid, "pids", "pids.max"), "12");

        // ps: json is the pid list; the table is ps -ef filtered to the container.
        let pids = c.ps(&["--format", "json"]).ok().json();
        assert_eq!(pids, json!([pid]));
        let table = c.ps(&[]).ok();
        assert!(
            table.stdout.lines().next().unwrap_or("").contains("PID"),
            "{table}"
        );
        assert!(table.stdout.contains("sleep 1000"), "{table}");
        assert_eq!(table.stdout.lines().count(), 2, "{table}");
        let custom = rt.cmd(["ps", c.id(), "-o", "pid,comm"]).ok();
        assert!(custom.stdout.contains(&pid.to_string()), "{custom}");

        c_pause_resume(rt, c.id(), pid);
        assert_eq!(c.status(), "running");

        let stats = rt.cmd(["events", "--stats", c.id()]).ok();
        let v: Value = serde_json::from_str(stats.out()).expect("stats json");
        assert_eq!(v["type"], "stats");
        assert_eq!(v["id"], c.id());
        for key in ["cpu", "memory", "pids", "blkio", "hugetlb"] {
            assert!(v["data"].get(key).is_some(), "no {key} in {v}");
        }
        assert_eq!(v["data"]["pids"]["current"], 1, "{v}");
        assert_eq!(v["data"]["pids"]["limit"], 12, "{v}");

        c.kill("KILL").ok();
        assert_eq!(c.wait_status("stopped", WAIT), "stopped");
        let up = rt.cmd(["update", "--pids-limit", "5", c.id()]).fail();
        assert!(up.stderr.contains("container not running"), "{up}");
        // ps of a stopped (not yet deleted) container: header only, `null` pid list, as runc.
        let table = c.ps(&[]).ok();
        assert_eq!(table.stdout.lines().count(), 1, "{table}");
        assert_eq!(c.ps(&["--format", "json"]).ok().out(), "null");
        rt.cmd(["pause", c.id()]).fail();
        rt.cmd(["resume", c.id()]).fail();
    });
}

fn c_pause_resume(rt: &Runtime, id: &str, pid: i64) {
    rt.cmd(["pause", id]).ok();
    let st = rt.cmd(["state", id]).ok().json();
    assert_eq!(st["status"], "paused", "{st}");
    let freezer = if is_v1() {
        read_cg(pid, "freezer", "freezer.state")
    } else {
        read_cg(pid, "cgroup", "cgroup.freeze")
    };
    assert!(freezer == "FROZEN" || freezer == "1", "{freezer}");
    rt.cmd(["resume", id]).ok();
    let st = rt.cmd(["state", id]).ok().json();
    assert_eq!(st["status"], "running", "{st}");
    rt.cmd(["resume", id]).fail();
}

#[test]
fn delete_removes_the_cgroups_it_created() {
    require_root!();
    runtime::for_each(|rt| {
        let parent = conformance::unique_name("cgparent");
        // Declared before the container so it is dropped (removing the parent) after it.
        let _parent_guard = RemoveCgroups(parent.clone());
        let b = {
            let mut b = sleeper(json!({"pids": {"limit": 10}}));
            b.set("/linux/cgroupsPath", json!(format!("/{parent}/inner")))
                .expect("set");
            b
        };
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let dir = cgroup_dir(c.pid(), "pids").expect("pids dir");
        assert!(
            dir.ends_with(format!("{parent}/inner")),
            "{}",
            dir.display()
        );
        c.delete_force().ok();
        assert!(!dir.exists(), "{} left behind", dir.display());
        // The parent is not the container's own cgroup (runc leaves it too): the guard removes it.
    });
}

/// Removes (depth first) every cgroup directory with this name, even when the test fails.
struct RemoveCgroups(String);

impl Drop for RemoveCgroups {
    fn drop(&mut self) {
        fn rm(dir: &std::path::Path) {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        rm(&e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
        for d in conformance::leaks::cgroups(std::slice::from_ref(&self.0)) {
            rm(&d);
        }
    }
}

/// skiff-only: bad input fails clearly and leaves no cgroup, state dir or process behind.
#[test]
fn bad_input_is_rejected_and_leaves_nothing() {
    require_root!();
    let rt = match Runtime::new(Kind::Skiff) {
        Ok(rt) => rt,
        Err(e) => panic!("skiff: {e}"),
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/linux/cgroupsPath", json!("/skiff-bad/../../escape"), ".."),
        (
            "/linux/resources",
            json!({"memory": {"limit": -5}}),
            "memory.limit",
        ),
        (
            "/linux/resources",
            json!({"cpu": {"quota": -7}}),
            "cpu.quota",
        ),
        (
            "/linux/resources",
            json!({"memory": {"swappiness": 200}}),
            "swappiness",
        ),
        (
            "/linux/resources",
            json!({"blockIO": {"weight": 5}}),
            "weight",
        ),
        (
            "/linux/resources",
            json!({"cpu": {"cpus": "999"}}),
            "cpuset.cpus",
        ),
        (
            "/linux/resources",
            json!({"devices": [{"allow": true, "type": "c", "access": "rwz"}]}),
            "access",
        ),
    ];
    for (ptr, value, needle) in cases {
        let mut b = sleeper(json!({}));
        b.set(ptr, value.clone()).expect("set");
        let mut c = rt.container(&b);
        let out = c.run_with(&["--detach"]).fail();
        assert!(
            out.stderr.contains(needle),
            "{ptr}={value}: error should mention {needle:?}:\n{out}"
        );
        let leaks = conformance::leaks::cgroups(&[c.id().to_string()]);
        assert!(leaks.is_empty(), "{ptr}={value}: cgroups left: {leaks:?}");
        c.assert_no_leaks();
    }
    // A create that fails after the cgroups were made (the process cannot exec) removes them too.
    {
        let mut b = sleeper(json!({"pids": {"limit": 10}}));
        b.args(&["/nonexistent-binary"]);
        let mut c = rt.container(&b);
        c.run_with(&["--detach"]).fail();
        let leaks = conformance::leaks::cgroups(&[c.id().to_string()]);
        assert!(
            leaks.is_empty(),
            "cgroups left after a failed run: {leaks:?}"
        );
        c.assert_no_leaks();
    }
    if is_v1() {
        let b = sleeper(json!({"unified": {"memory.high": "1000000"}}));
        let mut c = rt.container(&b);
        let out = c.run_with(&["--detach"]).fail();
        assert!(out.stderr.contains("unified"), "{out}");
        c.assert_no_leaks();
    }
    if !std::path::Path::new("/run/systemd/system").exists() {
        let b = sleeper(json!({}));
        let mut c = rt.container(&b);
        let b_arg = b.path().display().to_string();
        let out = rt
            .cmd([
                "--systemd-cgroup",
                "run",
                "--detach",
                "--bundle",
                &b_arg,
                c.id(),
            ])
            .fail();
        assert!(out.stderr.contains("systemd"), "{out}");
        c.assert_no_leaks();
    } else {
        skip!("systemd is running; the no-systemd error path cannot be checked");
    }
}

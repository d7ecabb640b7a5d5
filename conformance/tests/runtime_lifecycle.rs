//! Lifecycle of the runc CLI (issue 2): create/start/state/kill/delete, run variants, list, exec, kill,
//! hooks and the console socket. Every scenario runs under each selected runtime (runc and skiff by default).

use conformance::console::ConsoleSocket;
use conformance::{bundle::Bundle, require_root, runtime, skip};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

fn sleeper() -> Bundle {
    let mut b = Bundle::busybox().expect("bundle");
    b.args(&["sleep", "1000"]);
    b
}

#[test]
fn create_start_kill_delete() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.create().ok();
        let st = c.state_json();
        assert_eq!(st["status"], "created", "{st}");
        assert_eq!(st["id"], c.id(), "{st}");
        assert!(
            st["pid"].as_i64().unwrap_or(0) > 0,
            "created container has a pid: {st}"
        );
        assert_eq!(
            st["bundle"].as_str(),
            Some(b.path().to_str().unwrap_or("")),
            "{st}"
        );
        let pid = st["pid"].as_i64().unwrap_or(0);
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "init {pid} should be alive"
        );
        c.start().ok();
        assert_eq!(c.wait_status("running", WAIT), "running");
        assert_eq!(c.pid(), pid, "start keeps the init pid");
        c.kill("KILL").ok();
        assert_eq!(c.wait_status("stopped", WAIT), "stopped");
        c.delete().ok();
        let gone = c.state();
        assert!(!gone.success(), "state after delete must fail:\n{gone}");
    });
}

#[test]
fn run_foreground_exit_codes() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        // Without a pid namespace the shell is not an init, so signals it sends itself kill it.
        b.remove_namespace("pid");
        for (script, code) in [
            ("exit 0", 0),
            ("exit 3", 3),
            ("kill -9 $$", 137),
            ("kill -15 $$", 143),
        ] {
            b.shell(script);
            let c = rt.container(&b);
            let out = c.run();
            assert_eq!(out.code, code, "`{script}`:\n{out}");
        }
    });
}

#[test]
fn run_foreground_output_and_stdin() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.shell("read line; echo \"got:$line\"; echo err >&2");
        let c = rt.container(&b);
        let out = c.run_invocation(&[]).stdin(b"hello\n").output().ok();
        assert_eq!(out.out(), "got:hello", "{out}");
        assert!(out.stderr.contains("err"), "{out}");
    });
}

#[test]
fn run_foreground_forwards_signals() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.remove_namespace("pid");
        b.shell("echo ready; sleep 1000");
        let c = rt.container(&b);
        let running = c.run_invocation(&[]).spawn().expect("spawn run");
        let deadline = Instant::now() + WAIT;
        while !running.stdout_so_far().contains("ready") && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        running
            .signal(nix::sys::signal::Signal::SIGTERM)
            .expect("signal runtime");
        let out = running.wait();
        assert_eq!(out.code, 143, "SIGTERM forwarded to the container:\n{out}");
    });
}

#[test]
fn run_detach_and_keep() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        assert_eq!(c.wait_status("running", WAIT), "running");
        c.delete_force().ok();
        assert!(
            !c.state().success(),
            "delete --force removed the running container"
        );

        let mut b2 = Bundle::busybox().expect("bundle");
        b2.shell("exit 5");
        let c2 = rt.container(&b2);
        c2.run_with(&["--keep"]).code_is(5);
        assert_eq!(c2.status(), "stopped", "--keep leaves a stopped container");
        c2.delete().ok();
    });
}

#[test]
fn pid_file_matches_state() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        let pf = rt.scratch_path("pid");
        c.create_with(&["--pid-file", pf.to_str().unwrap_or("")])
            .ok();
        let text = std::fs::read_to_string(&pf).expect("pid file written");
        assert_eq!(
            text.trim().parse::<i64>().ok(),
            Some(c.pid()),
            "pid file {text:?}"
        );
    });
}

#[test]
fn list_formats() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c1 = rt.container(&b);
        let c2 = rt.container(&b);
        c1.create().ok();
        c2.run_with(&["--detach"]).ok();
        let q = rt.cmd(["list", "-q"]).ok();
        let mut ids: Vec<&str> = q.stdout.lines().collect();
        ids.sort();
        let mut want = vec![c1.id(), c2.id()];
        want.sort();
        assert_eq!(ids, want, "{q}");

        let table = rt.list().ok();
        let header: Vec<&str> = table
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(
            header,
            ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"],
            "{table}"
        );
        assert!(
            table
                .stdout
                .lines()
                .any(|l| l.starts_with(c1.id()) && l.contains("created")),
            "{table}"
        );
        assert!(
            table
                .stdout
                .lines()
                .any(|l| l.starts_with(c2.id()) && l.contains("running")),
            "{table}"
        );

        let js = rt.cmd(["list", "--format", "json"]).ok();
        let arr = js.json();
        let arr = arr.as_array().expect("list json is an array");
        assert_eq!(arr.len(), 2, "{js}");
        for e in arr {
            for key in [
                "ociVersion",
                "id",
                "pid",
                "status",
                "bundle",
                "rootfs",
                "created",
                "owner",
            ] {
                assert!(e.get(key).is_some(), "list json entry lacks {key}: {e}");
            }
        }
    });
}

#[test]
fn list_empty_root() {
    require_root!();
    runtime::for_each(|rt| {
        rt.cmd(["list", "-q"]).ok();
        let js = rt.cmd(["list", "--format", "json"]).ok();
        let v = js.json();
        assert!(
            v.is_null() || v.as_array().is_some_and(|a| a.is_empty()),
            "{js}"
        );
    });
}

#[test]
fn create_existing_id_fails_and_keeps_first() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.create().ok();
        let before = c.state_json();
        let b2 = sleeper();
        let dup = rt.container_with_id(&b2, c.id());
        let out = dup.create().fail();
        assert!(
            !out.stderr.trim().is_empty(),
            "an error message is expected:\n{out}"
        );
        let after = c.state_json();
        assert_eq!(before, after, "the first container must be untouched");
        c.start().ok();
        assert_eq!(c.wait_status("running", WAIT), "running");
        std::mem::forget(dup); // same id: the first guard cleans up
    });
}

#[test]
fn exec_into_running_container() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let out = c.exec(&["echo", "hello", "world"]).ok();
        assert_eq!(out.out(), "hello world", "{out}");
        c.exec(&["sh", "-c", "exit 7"]).code_is(7);
        c.exec(&["sh", "-c", "kill -9 $$"]).code_is(137);
        let env = c
            .exec_with(&["--env", "FOO=bar baz"], &["sh", "-c", "echo \"$FOO\""])
            .ok();
        assert_eq!(env.out(), "bar baz", "{env}");
        let cwd = c.exec_with(&["--cwd", "/tmp"], &["pwd"]).ok();
        assert_eq!(cwd.out(), "/tmp", "{cwd}");
        let user = c
            .exec_with(
                &["--user", "1000:1001"],
                &["sh", "-c", "echo $(id -u) $(id -g)"],
            )
            .ok();
        assert_eq!(user.out(), "1000 1001", "{user}");
        // The exec'd process shares the init's pid namespace: it sees pid 1 = sleep.
        let comm = c.exec(&["cat", "/proc/1/comm"]).ok();
        assert_eq!(comm.out(), "sleep", "{comm}");
    });
}

#[test]
fn exec_process_json() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let p = rt.scratch_path("process.json");
        let process = json!({
            "terminal": false,
            "user": { "uid": 1000, "gid": 1000, "additionalGids": [29] },
            "args": ["sh", "-c", "echo $FOO; pwd; id -u; id -G"],
            "env": ["PATH=/bin:/usr/bin", "FOO=from-json"],
            "cwd": "/home/user",
            "noNewPrivileges": true
        });
        std::fs::write(&p, process.to_string()).expect("write process.json");
        let out = c.exec_with(&["-p", p.to_str().unwrap_or("")], &[]).ok();
        let lines: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            lines,
            ["from-json", "/home/user", "1000", "1000 29"],
            "{out}"
        );
    });
}

#[test]
fn exec_detach_with_pid_file() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = sleeper();
        b.readonly_root(false);
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let pf = rt.scratch_path("exec.pid");
        c.exec_with(
            &["--detach", "--pid-file", pf.to_str().unwrap_or("")],
            &["sh", "-c", "echo $$ > /exec-ran; sleep 1000"],
        )
        .ok();
        let pid: i64 = std::fs::read_to_string(&pf)
            .expect("exec pid file")
            .trim()
            .parse()
            .expect("pid file holds a number");
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "detached exec process {pid} runs"
        );
        assert!(!wait_for_file(&b.rootfs().join("exec-ran"), "\n").is_empty());
        let ps = c.ps(&["--format", "json"]).ok().json();
        assert!(
            ps.as_array()
                .is_some_and(|a| a.iter().any(|p| p.as_i64() == Some(pid))),
            "ps lists the exec'd pid {pid}: {ps}"
        );
    });
}

#[test]
fn no_pivot_still_confines_root() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.shell("ls /; test -e /etc/passwd && echo has-passwd; test -d /work && echo sees-host || echo confined");
        let c = rt.container(&b);
        let out = c.run_with(&["--no-pivot"]).ok();
        assert!(
            out.stdout.contains("has-passwd") && out.stdout.contains("confined"),
            "{out}"
        );
    });
}

#[test]
fn exec_failures() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.create().ok();
        let unknown = rt.cmd(["exec", "no-such-container", "true"]).fail();
        assert!(!unknown.stderr.trim().is_empty(), "{unknown}");
        c.start().ok();
        let nope = c.exec(&["/bin/nope"]).fail();
        assert!(
            nope.stderr.contains("nope"),
            "error names the missing binary:\n{nope}"
        );
        c.kill("KILL").ok();
        assert_eq!(c.wait_status("stopped", WAIT), "stopped");
        let stopped = c.exec(&["true"]).fail();
        assert!(
            !stopped.stderr.trim().is_empty(),
            "exec into a stopped container:\n{stopped}"
        );
    });
}

fn wait_for_file(path: &std::path::Path, want: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.contains(want) || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn kill_signal_names_and_numbers() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.readonly_root(false);
        b.shell(
            "trap 'echo USR1 >> /log' USR1; trap 'echo USR2 >> /log' USR2; trap 'echo HUP >> /log' HUP; \
             echo ready > /log; while true; do sleep 0.05; done",
        );
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let log = b.rootfs().join("log");
        // pid 1 ignores signals it has no handler for: wait until the traps are installed.
        let ready = wait_for_file(&log, "ready");
        assert!(
            ready.contains("ready"),
            "container did not start its script: {ready:?}"
        );
        for (sig, want) in [
            ("USR1", "USR1"),
            ("SIGUSR2", "USR2"),
            ("1", "HUP"),
            ("SIGHUP", "HUP\nHUP"),
        ] {
            c.kill(sig).ok();
            let got = wait_for_file(&log, want);
            assert!(got.contains(want), "after kill {sig}: log is {got:?}");
        }
        let bad = c.kill("SIGNOPE").fail();
        assert!(!bad.stderr.trim().is_empty(), "{bad}");
        c.kill("9").ok();
        assert_eq!(c.wait_status("stopped", WAIT), "stopped");
    });
}

#[test]
fn kill_all_processes() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.shell("sleep 1000 & sleep 1000 & wait");
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        // Wait until both children exist.
        let deadline = Instant::now() + WAIT;
        loop {
            let ps = c.exec(&["sh", "-c", "ls -d /proc/[0-9]* | wc -l"]);
            if ps.out().parse::<u32>().unwrap_or(0) >= 4 || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.kill_all("KILL").ok();
        assert_eq!(c.wait_status("stopped", WAIT), "stopped");
        c.delete().ok();
    });
}

#[test]
fn delete_running_without_force_fails() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let out = c.delete().fail();
        assert!(!out.stderr.trim().is_empty(), "{out}");
        assert_eq!(c.status(), "running", "failed delete leaves it running");
        c.delete_force().ok();
    });
}

#[test]
fn ps_lists_container_processes() {
    require_root!();
    runtime::for_each(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let js = c.ps(&["--format", "json"]).ok();
        let pids = js.json();
        let pids: Vec<i64> = pids
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default();
        assert!(
            pids.contains(&c.pid()),
            "ps json has the init pid {}:\n{js}",
            c.pid()
        );
        let table = c.ps(&[]).ok();
        let header = table.stdout.lines().next().unwrap_or("");
        assert!(header.contains("PID") && header.contains("CMD"), "{table}");
        assert!(table.stdout.contains("sleep 1000"), "{table}");
    });
}

fn hook(marker: &std::path::Path) -> Value {
    json!({ "path": "/bin/sh", "args": ["sh", "-c", format!("cat > {}", marker.display())] })
}

#[test]
fn hooks_run_with_state_on_stdin() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.readonly_root(false);
        b.shell("exit 0");
        let dir = rt.scratch_path("hooks");
        std::fs::create_dir(&dir).expect("mkdir");
        let mut hooks = serde_json::Map::new();
        for name in [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop",
        ] {
            hooks.insert(name.into(), json!([hook(&dir.join(name))]));
        }
        // startContainer runs inside the container (after pivot_root), so its marker is in the rootfs.
        hooks.insert(
            "startContainer".into(),
            json!([{ "path": "/bin/sh", "args": ["sh", "-c", "cat > /startContainer"] }]),
        );
        b.set("/hooks", Value::Object(hooks)).expect("set hooks");
        let c = rt.container(&b);
        c.run().ok();
        for name in [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
        ] {
            let path = if name == "startContainer" {
                b.rootfs().join(name)
            } else {
                dir.join(name)
            };
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{name} hook did not run ({e})"));
            let st: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{name} stdin is not JSON: {e}: {text:?}"));
            assert_eq!(st["id"], c.id(), "{name}: {st}");
            assert_eq!(st["bundle"].as_str(), b.path().to_str(), "{name}: {st}");
        }
    });
}

#[test]
fn failing_create_runtime_hook_fails_create() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = sleeper();
        b.set("/hooks/createRuntime", json!([{ "path": "/bin/false" }]))
            .expect("set");
        let mut c = rt.container(&b);
        let out = c.create().fail();
        assert!(!out.stderr.trim().is_empty(), "{out}");
        assert!(
            !c.state().success() || c.status() == "stopped",
            "no live container after a failed hook"
        );
        c.assert_no_leaks();
    });
}

#[test]
fn console_socket_receives_pty_master() {
    require_root!();
    runtime::for_each(|rt| {
        use std::io::{Read, Write};
        let mut b = Bundle::busybox().expect("bundle");
        b.terminal(true);
        b.args(&["sh"]);
        let sock = match ConsoleSocket::new() {
            Ok(s) => s,
            Err(e) => skip!("cannot bind a unix socket: {e}"),
        };
        let c = rt.container(&b);
        c.create_with(&["--console-socket", sock.path().to_str().unwrap_or("")])
            .ok();
        let master = sock.receive(WAIT).expect("receive pty master");
        c.start().ok();
        let mut f = std::fs::File::from(master);
        f.write_all(b"echo marker-$((40+2)); tty\n")
            .expect("write to pty");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let mut seen = String::new();
        let deadline = Instant::now() + WAIT;
        while !seen.contains("marker-42") || !seen.contains("/dev/pts/") {
            if Instant::now() >= deadline {
                break;
            }
            let mut pfd = [nix::poll::PollFd::new(
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                nix::poll::PollFlags::POLLIN,
            )];
            if nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(200u16)).unwrap_or(0) > 0 {
                let mut buf = [0u8; 4096];
                match f.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
                }
            }
        }
        assert!(seen.contains("marker-42"), "pty output: {seen:?}");
        assert!(seen.contains("/dev/pts/"), "stdin is a pty: {seen:?}");
        let _ = f.write_all(b"exit 0\n");
    });
}

#[test]
fn concurrent_creates_of_one_id() {
    require_root!();
    runtime::for_each(|rt| {
        if rt.kind() != runtime::Kind::Skiff {
            // runc 1.1 has no per-id lock: in CI-like runs its racing creates sometimes all lost
            // ("exec fifo already exists") and sometimes two won, leaving an orphaned init. The
            // property is skiff's; racing the reference only leaks its processes.
            eprintln!("SKIP: {} has no per-id create lock (known race)", rt.name());
            return;
        }
        let b = sleeper();
        let c = rt.container(&b);
        let bundle = b.path().to_str().unwrap_or("").to_string();
        let running: Vec<_> = (0..4)
            .map(|_| {
                rt.invocation(["create", "--bundle", &bundle, c.id()])
                    .spawn()
                    .expect("spawn create")
            })
            .collect();
        let outs: Vec<_> = running.into_iter().map(|r| r.wait()).collect();
        let ok = outs.iter().filter(|o| o.success()).count();
        let all: String = outs.iter().map(|o| format!("{o}\n")).collect();
        assert_eq!(ok, 1, "exactly one concurrent create wins:\n{all}");
        assert_eq!(c.status(), "created", "{all}");
        c.start().ok();
        assert_eq!(c.wait_status("running", WAIT), "running");
    });
}

#[test]
fn failing_hooks_fail_and_clean_up() {
    require_root!();
    runtime::for_each(|rt| {
        for hook in ["createContainer", "prestart", "startContainer"] {
            let mut b = Bundle::busybox().expect("bundle");
            b.args(&["true"]);
            b.set(&format!("/hooks/{hook}"), json!([{ "path": "/bin/false" }]))
                .expect("set");
            let mut c = rt.container(&b);
            // Foreground: with --detach runc reports a startContainer failure only on stderr.
            let out = c.run();
            assert!(
                !out.success(),
                "a failing {hook} hook must fail run:\n{out}"
            );
            assert!(
                !c.state().success() || c.status() != "running",
                "{hook}: nothing may keep running"
            );
            c.assert_no_leaks();
        }
    });
}

#[test]
fn hook_timeout() {
    require_root!();
    runtime::for_each(|rt| {
        let mut b = sleeper();
        b.set(
            "/hooks/createRuntime",
            json!([{ "path": "/bin/sh", "args": ["sh", "-c", "sleep 30"], "timeout": 1 }]),
        )
        .expect("set");
        let mut c = rt.container(&b);
        let out = c.create();
        assert!(
            !out.success() && !out.timed_out,
            "a hook exceeding its timeout fails create (and does not hang):\n{out}"
        );
        c.assert_no_leaks();
    });
}

//! The skiff shim (and skiff as runc's drop-in) under a real containerd, driven with `ctr`.
//!
//! Every scenario runs twice in the same test: with the setup under test and with containerd's
//! own runc v2 shim + runc, and the two observations are printed side by side and compared.

mod containerd_fixture;

use conformance::{bins, unique_name};
use containerd_fixture::{available, Containerd, IMAGE, RUNC_SHIM, SKIFF_SHIM};

/// How a container gets run: containerd runtime name plus extra `ctr run` flags.
#[derive(Clone)]
struct Setup {
    label: &'static str,
    runtime: &'static str,
    run_flags: Vec<String>,
}

/// One observed fact of a scenario.
type Facts = Vec<(String, String)>;

fn run_args<'a>(s: &'a Setup, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["run", "--runtime", s.runtime];
    v.extend(s.run_flags.iter().map(String::as_str));
    v.extend_from_slice(extra);
    v
}

/// Container side of the resize check: waits (bounded) for the first non-zero terminal size,
/// prints it, waits (bounded) for it to change, prints the new one. (`stty` can fail in the
/// first moments of a container's terminal, with runc too: such a reading counts as no size.)
const TTY_SIZES: &str = r#"i=0; s=''; while { [ -z "$s" ] || [ "$s" = '0 0' ]; } && [ $i -lt 300 ]; do sleep 0.1; s=$(stty size 2>/dev/null); i=$((i+1)); done; echo "first=$s"; i=0; t=$s; while [ "$t" = "$s" ] && [ $i -lt 300 ]; do sleep 0.1; t=$(stty size 2>/dev/null); [ -z "$t" ] && t=$s; i=$((i+1)); done; echo "second=$t""#;

/// The two sizes TTY_SIZES printed.
fn tty_sizes(out: &str) -> (String, String) {
    let find = |key: &str| {
        out.lines()
            // The terminal may echo a control character before the first line.
            .find_map(|l| l.split_once(key).map(|(_, v)| v.trim().to_string()))
            .unwrap_or_default()
    };
    (find("first="), find("second="))
}

/// Runs all scenarios with one setup and returns what was observed.
fn scenarios(cd: &Containerd, s: &Setup) -> Facts {
    let mut f: Facts = Vec::new();
    let mut fact = |k: &str, v: String| f.push((k.to_string(), v));

    // 1. ctr run --rm: output and exit code propagation.
    let id = unique_name("rm");
    let out = cd.ctr(&run_args(
        s,
        &["--rm", IMAGE, &id, "sh", "-c", "echo hello; exit 3"],
    ));
    fact("run --rm stdout", out.stdout.trim().to_string());
    fact("run --rm exit", out.code.to_string());
    fact("run --rm leftover", cd.task_status(&id));

    // 2. stdin through the fifo.
    let id = unique_name("in");
    let out = cd.ctr_stdin(
        &run_args(s, &["--rm", IMAGE, &id, "sh"]),
        "echo from-stdin\nexit 4\n",
    );
    fact("stdin stdout", out.stdout.trim().to_string());
    fact("stdin exit", out.code.to_string());

    // 3. detached container: exec, ps, pause/resume, metrics, kill, delete.
    let id = unique_name("d");
    let out = cd.ctr(&run_args(s, &["-d", IMAGE, &id, "sleep", "1000"]));
    fact("run -d exit", out.code.to_string());
    fact("run -d status", cd.task_status(&id));
    let out = cd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        &id,
        "sh",
        "-c",
        "echo in-exec; exit 5",
    ]);
    fact("exec stdout", out.stdout.trim().to_string());
    fact("exec exit", out.code.to_string());
    let _ = cd.ctr(&["task", "exec", "-d", "--exec-id", "e2", &id, "sleep", "100"]);
    let out = cd.ctr(&["task", "ps", &id]);
    let rows = out
        .stdout
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    fact("ps exit", out.code.to_string());
    fact("ps rows", rows.to_string());
    let out = cd.ctr_tty(&[
        "task",
        "exec",
        "-t",
        "--exec-id",
        "et",
        &id,
        "sh",
        "-c",
        "tty; exit 6",
    ]);
    fact("exec tty exit", out.code.to_string());
    fact(
        "exec tty sees /dev/pts",
        out.stdout.contains("/dev/pts/").to_string(),
    );
    let out = cd.ctr(&["task", "pause", &id]);
    fact("pause exit", out.code.to_string());
    fact("paused status", cd.task_status(&id));
    let out = cd.ctr(&["task", "resume", &id]);
    fact("resume exit", out.code.to_string());
    fact("resumed status", cd.task_status(&id));
    let out = cd.ctr(&["task", "metrics", &id]);
    fact("metrics exit", out.code.to_string());
    fact(
        "metrics has pids.current",
        out.stdout.contains("pids.current").to_string(),
    );
    fact(
        "metrics has memory usage",
        out.stdout.contains("memory.usage_in_bytes").to_string(),
    );
    let out = cd.ctr(&["task", "kill", "-s", "KILL", &id]);
    fact("kill exit", out.code.to_string());
    fact(
        "stopped after kill",
        cd.wait_status(&id, "STOPPED").to_string(),
    );
    let out = cd.ctr(&["task", "delete", &id]);
    fact("task delete exit", out.code.to_string());
    let out = cd.ctr(&["containers", "rm", &id]);
    fact("container rm exit", out.code.to_string());

    // 4. kill --all of a running container with an exec'd child.
    let id = unique_name("ka");
    let _ = cd.ctr(&run_args(s, &["-d", IMAGE, &id, "sleep", "1000"]));
    let out = cd.ctr(&["task", "kill", "-a", "-s", "KILL", &id]);
    fact("kill --all exit", out.code.to_string());
    fact(
        "stopped after kill --all",
        cd.wait_status(&id, "STOPPED").to_string(),
    );
    cd.remove(&id);

    // 5. a terminal container through a pty.
    let id = unique_name("t");
    let out = cd.ctr_tty(&run_args(
        s,
        &["--rm", "-t", IMAGE, &id, "sh", "-c", "tty; exit 7"],
    ));
    fact("tty exit", out.code.to_string());
    fact(
        "tty sees /dev/pts",
        out.stdout.contains("/dev/pts/").to_string(),
    );

    // 5b. ResizePty: the container sees the terminal's size, then the new size after the
    // user's terminal is resized, for the init process and for an exec.
    let id = unique_name("rs");
    let ready = format!("$CTR task ls 2>/dev/null | grep -q '^{id} .*RUNNING'");
    let out = cd.ctr_tty_resized(
        &run_args(s, &["--rm", "-t", IMAGE, &id, "sh", "-c", TTY_SIZES]),
        &ready,
    );
    let (first, second) = tty_sizes(&out.stdout);
    fact("tty size at start", first);
    fact("tty size after resize", second);
    let id = unique_name("rx");
    let _ = cd.ctr(&run_args(s, &["-d", IMAGE, &id, "sleep", "1000"]));
    let ready = format!("[ $($CTR task ps {id} 2>/dev/null | wc -l) -ge 3 ]");
    let out = cd.ctr_tty_resized(
        &[
            "task",
            "exec",
            "-t",
            "--exec-id",
            "rx",
            &id,
            "sh",
            "-c",
            TTY_SIZES,
        ],
        &ready,
    );
    let (first, second) = tty_sizes(&out.stdout);
    fact("exec tty size at start", first);
    fact("exec tty size after resize", second);
    cd.remove(&id);

    // 6. a memory limit.
    let id = unique_name("m");
    let _ = cd.ctr(&run_args(
        s,
        &[
            "-d",
            "--memory-limit",
            "33554432",
            IMAGE,
            &id,
            "sleep",
            "1000",
        ],
    ));
    let out = cd.ctr(&["task", "metrics", &id]);
    let limit = out
        .stdout
        .lines()
        .find(|l| l.starts_with("memory.limit_in_bytes"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_string();
    fact("memory limit", limit);
    cd.remove(&id);
    f
}

fn compare(cd: &Containerd, under_test: &Setup, reference: &Setup) {
    let got = scenarios(cd, under_test);
    let mut want = scenarios(cd, reference);
    if got != want {
        // The reference itself is not deterministic: containerd 1.6's runc v2 shim + runc once lost
        // the stdout of `ctr run --rm … echo hello` (a fast exit) in a CI run. Observe the reference
        // a second time before blaming the setup under test; its own facts are never re-run.
        eprintln!(
            "facts differ from {}; observing it once more",
            reference.label
        );
        want = scenarios(cd, reference);
    }
    eprintln!(
        "{:<28} | {:<30} | {}",
        "fact", under_test.label, reference.label
    );
    let mut diffs = Vec::new();
    for ((k, a), (_, b)) in got.iter().zip(want.iter()) {
        let mark = if a == b { " " } else { "!" };
        eprintln!("{mark}{k:<27} | {a:<30} | {b}");
        if a != b {
            diffs.push(format!(
                "{k}: {} gave {a:?}, {} gave {b:?}",
                under_test.label, reference.label
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} differs from {}:\n{}\ncontainerd log:\n{}",
        under_test.label,
        reference.label,
        diffs.join("\n"),
        cd.log_tail()
    );
}

fn runc_reference() -> Setup {
    Setup {
        label: "runc-shim+runc",
        runtime: RUNC_SHIM,
        run_flags: vec![],
    }
}

/// Sanity check of the expectations themselves with the reference setup.
fn check_reference(cd: &Containerd) {
    let facts = scenarios(cd, &runc_reference());
    let get = |k: &str| {
        facts
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(get("run --rm stdout"), "hello");
    assert_eq!(get("run --rm exit"), "3");
    assert_eq!(get("exec exit"), "5");
    assert_eq!(get("tty exit"), "7");
    assert_eq!(get("tty size at start"), "33 77");
    assert_eq!(get("tty size after resize"), "40 100");
    assert_eq!(get("exec tty size at start"), "33 77");
    assert_eq!(get("exec tty size after resize"), "40 100");
    assert_eq!(get("memory limit"), "33554432");
}

#[test]
fn containerd_skiff_shim_drives_runc() {
    if !available() {
        return;
    }
    let shim = match bins::shim() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let Some(runc) = bins::runc() else {
        eprintln!("SKIP: runc is not installed");
        return;
    };
    let runc_s = runc.to_string_lossy().into_owned();
    let cd = match Containerd::start("shrunc", &shim, &[("SKIFF_SHIM_RUNTIME", &runc_s)]) {
        Ok(cd) => cd,
        Err(e) => panic!("{e}"),
    };
    check_reference(&cd);
    let setup = Setup {
        label: "skiff-shim+runc",
        runtime: SKIFF_SHIM,
        run_flags: vec![],
    };
    compare(&cd, &setup, &runc_reference());
}

#[test]
fn containerd_skiff_shim_drives_skiff() {
    if !available() {
        return;
    }
    let (shim, skiff) = match (bins::shim(), bins::skiff()) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("missing binaries: {:?} {:?}", a.err(), b.err()),
    };
    let skiff_s = skiff.to_string_lossy().into_owned();
    let cd = match Containerd::start("shskiff", &shim, &[("SKIFF_SHIM_RUNTIME", &skiff_s)]) {
        Ok(cd) => cd,
        Err(e) => panic!("{e}"),
    };
    let setup = Setup {
        label: "skiff-shim+skiff",
        runtime: SKIFF_SHIM,
        run_flags: vec![],
    };
    compare(&cd, &setup, &runc_reference());
}

#[test]
fn containerd_runc_shim_drives_skiff_as_dropin() {
    if !available() {
        return;
    }
    let (shim, skiff) = match (bins::shim(), bins::skiff()) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => panic!("missing binaries: {:?} {:?}", a.err(), b.err()),
    };
    let cd = match Containerd::start("rcskiff", &shim, &[]) {
        Ok(cd) => cd,
        Err(e) => panic!("{e}"),
    };
    let setup = Setup {
        label: "runc-shim+skiff",
        runtime: RUNC_SHIM,
        run_flags: vec!["--runc-binary".into(), skiff.to_string_lossy().into_owned()],
    };
    compare(&cd, &setup, &runc_reference());
}

/// Starts `ctr events` in the background; returns the child (stdout piped).
fn events_stream(cd: &Containerd) -> std::process::Child {
    let mut c = cd.ctr_cmd(&["events"]);
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    match c.spawn() {
        Ok(child) => child,
        Err(e) => panic!("ctr events: {e}"),
    }
}

/// Stops an events stream and returns what it printed.
fn stop_stream(mut child: std::process::Child) -> String {
    let _ = child.kill();
    match child.wait_with_output() {
        Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
        Err(_) => String::new(),
    }
}

/// The shim publishes the task events containerd expects (incl. OOM), and containers in
/// one group share one shim process.
#[test]
fn containerd_skiff_shim_events_and_grouping() {
    if !available() {
        return;
    }
    let shim = match bins::shim() {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    };
    let Some(runc) = bins::runc() else {
        eprintln!("SKIP: runc is not installed");
        return;
    };
    // The runtime binary: skiff when built, else runc (so the shim's own logic is still tested).
    let rt = bins::skiff().unwrap_or(runc);
    let rt_s = rt.to_string_lossy().into_owned();
    let cd = match Containerd::start("shev", &shim, &[("SKIFF_SHIM_RUNTIME", &rt_s)]) {
        Ok(cd) => cd,
        Err(e) => panic!("{e}"),
    };
    let stream = events_stream(&cd);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let id = unique_name("ev");
    let out = cd.ctr(&[
        "run",
        "-d",
        "--runtime",
        SKIFF_SHIM,
        IMAGE,
        &id,
        "sleep",
        "1000",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = cd.ctr(&["task", "exec", "--exec-id", "x1", &id, "true"]);
    assert_eq!(out.code, 0, "{out:?}");
    let out = cd.ctr(&["task", "checkpoint", &id]);
    assert_ne!(out.code, 0, "checkpoint must fail: {out:?}");
    assert!(
        out.stderr.contains("not supported"),
        "unclear checkpoint error: {out:?}"
    );
    assert_eq!(cd.ctr(&["task", "pause", &id]).code, 0);
    assert_eq!(cd.ctr(&["task", "resume", &id]).code, 0);
    cd.remove(&id);
    // OOM: a tiny memory limit and a process that allocates past it.
    let oom = unique_name("oom");
    let out = cd.ctr(&[
        "run",
        "--rm",
        "--runtime",
        SKIFF_SHIM,
        "--memory-limit",
        "8388608",
        IMAGE,
        &oom,
        "sh",
        "-c",
        "x=a; while true; do x=$x$x; done",
    ]);
    eprintln!("oom run: {out:?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let events = stop_stream(stream);
    eprintln!("events:\n{events}");
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
        "/tasks/oom",
    ] {
        assert!(events.contains(topic), "no {topic} event seen:\n{events}");
    }

    // Grouping: two containers with the same group annotation share one shim.
    let a = unique_name("ga");
    let b = unique_name("gb");
    for id in [&a, &b] {
        let out = cd.ctr(&[
            "run",
            "-d",
            "--runtime",
            SKIFF_SHIM,
            "--annotation",
            "io.containerd.runc.v2.group=g1",
            IMAGE,
            id,
            "sleep",
            "1000",
        ]);
        assert_eq!(out.code, 0, "{out:?}");
    }
    let shims = cd.shim_pids();
    assert_eq!(
        shims.len(),
        1,
        "expected one shim for the group, found {shims:?}"
    );
    cd.remove(&a);
    // The shim stays for the remaining container and still serves it.
    assert_eq!(cd.task_status(&b), "RUNNING");
    assert_eq!(
        cd.ctr(&["task", "exec", "--exec-id", "y", &b, "true"]).code,
        0
    );
    cd.remove(&b);
    let mut gone = false;
    for _ in 0..50 {
        if cd.shim_pids().is_empty() {
            gone = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        gone,
        "shim did not exit after its last container was deleted"
    );
}

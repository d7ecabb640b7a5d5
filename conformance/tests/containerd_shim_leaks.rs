//! Many create/delete and exec cycles through the skiff shim leave no fd, thread, process,
//! mount, fifo or runtime state behind, in the shim or on the host.

mod containerd_fixture;

use std::{fs, path::Path, thread, time::Duration};

use conformance::{bins, unique_name};
use containerd_fixture::{available, Containerd, IMAGE, SKIFF_SHIM};

fn count_dir(p: &Path) -> usize {
    fs::read_dir(p).map(|r| r.count()).unwrap_or(0)
}

/// Children of `pid` that are zombies (exited but never reaped).
fn zombies_of(pid: i32) -> Vec<i32> {
    let mut z = Vec::new();
    if let Ok(rd) = fs::read_dir("/proc") {
        for e in rd.flatten() {
            let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            // Fields after the ")" of the command name: state ppid ...
            if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() > 1 && f[0] == "Z" && f[1] == pid.to_string() {
                    z.push(p);
                }
            }
        }
    }
    z
}

#[derive(Debug, PartialEq)]
struct Snapshot {
    shim_fds: usize,
    shim_threads: usize,
    shims: usize,
    mounts: usize,
    fifos: usize,
    runtime_state: usize,
    zombies: usize,
}

fn snapshot(cd: &Containerd, shim: i32, fifo_dir: &Path, state_dir: &Path) -> Snapshot {
    Snapshot {
        shim_fds: count_dir(Path::new(&format!("/proc/{shim}/fd"))),
        shim_threads: count_dir(Path::new(&format!("/proc/{shim}/task"))),
        shims: cd.shim_pids().len(),
        mounts: cd.mounts().len(),
        fifos: count_dir(fifo_dir),
        runtime_state: count_dir(state_dir),
        zombies: zombies_of(shim).len(),
    }
}

#[test]
fn containerd_skiff_shim_no_leaks_over_many_cycles() {
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
    let rt = bins::skiff().unwrap_or(runc);
    let rt_name = rt
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rt_s = rt.to_string_lossy().into_owned();
    let cycles: usize = if std::env::var_os("CI").is_some() {
        100
    } else {
        20
    };
    let cd = match Containerd::start("shleak", &shim, &[("SKIFF_SHIM_RUNTIME", &rt_s)]) {
        Ok(cd) => cd,
        Err(e) => panic!("{e}"),
    };
    let fifo_dir = cd.dir.join("fifo");
    fs::create_dir_all(&fifo_dir).expect("fifo dir");
    let fifo_s = fifo_dir.to_string_lossy().into_owned();
    let state_dir = Path::new("/run/containerd").join(&rt_name).join(&cd.ns);

    let long = unique_name("long");
    let out = cd.ctr(&[
        "run",
        "-d",
        "--fifo-dir",
        &fifo_s,
        "--runtime",
        SKIFF_SHIM,
        IMAGE,
        &long,
        "sleep",
        "100000",
    ]);
    assert_eq!(out.code, 0, "{out:?}");
    let shims = cd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    let shim_pid = shims[0];
    // Warm up (thread pools, lazily opened files), then measure.
    let cycle = |n: usize| {
        let out = cd.ctr(&[
            "task",
            "exec",
            "--fifo-dir",
            &fifo_s,
            "--exec-id",
            &format!("e{n}"),
            &long,
            "true",
        ]);
        assert_eq!(out.code, 0, "exec cycle {n}: {out:?}");
        let id = unique_name("c");
        let out = cd.ctr(&[
            "run",
            "--rm",
            "--fifo-dir",
            &fifo_s,
            "--runtime",
            SKIFF_SHIM,
            IMAGE,
            &id,
            "true",
        ]);
        assert_eq!(out.code, 0, "run cycle {n}: {out:?}");
    };
    for n in 0..3 {
        cycle(n);
    }
    thread::sleep(Duration::from_millis(500));
    let before = snapshot(&cd, shim_pid, &fifo_dir, &state_dir);
    for n in 3..3 + cycles {
        cycle(n);
    }
    let mut after = snapshot(&cd, shim_pid, &fifo_dir, &state_dir);
    for _ in 0..50 {
        if after.shim_fds <= before.shim_fds
            && after.shims == before.shims
            && after.mounts == before.mounts
            && after.fifos == before.fifos
            && after.runtime_state == before.runtime_state
            && after.zombies == 0
            && after.shim_threads <= before.shim_threads + 2
        {
            break;
        }
        thread::sleep(Duration::from_millis(100));
        after = snapshot(&cd, shim_pid, &fifo_dir, &state_dir);
    }
    eprintln!("{cycles} cycles ({rt_name}): before {before:?}\n after {after:?}");
    assert!(
        after.shim_fds <= before.shim_fds,
        "shim fds grew: {before:?} -> {after:?}"
    );
    // ttrpc's worker pool may hold a couple of extra idle threads; a per-cycle leak would not fit.
    assert!(
        after.shim_threads <= before.shim_threads + 2,
        "shim threads grew: {before:?} -> {after:?}"
    );
    assert_eq!(after.shims, before.shims, "shim processes left behind");
    assert_eq!(after.mounts, before.mounts, "mounts left behind");
    assert_eq!(after.fifos, before.fifos, "fifos left behind");
    assert_eq!(
        after.runtime_state, before.runtime_state,
        "runtime state left behind"
    );
    assert_eq!(after.zombies, 0, "unreaped children of the shim");
}

//! Benchmarks of skiff against runc and crun (issue 2 "Speed"): `skiff-bench runtime [--iterations N]`.
//!
//! What is measured, interleaved in one run (each iteration runs every runtime once, in rotating order):
//! - `run`: wall time of `<rt> run --bundle B <id>` for a busybox bundle whose process is `/bin/true`
//!   (the runtime does create + start + wait + delete in that one command);
//! - `exec`: wall time of `<rt> exec <id> /bin/true` into a container kept running (`sleep`) for the
//!   whole benchmark;
//! - peak RSS: `ru_maxrss` from `wait4` of the runtime process, i.e. the largest resident set of any single
//!   process in the runtime's process tree that the runtime itself reaped (the runtime and e.g. its
//!   `init` child that becomes the container process) — a maximum, not a sum. Processes are spawned by
//!   fork+exec from this small process; a forked child starts with the parent's RSS high-water mark, so
//!   the "spawn floor" row shows what spawning a static `true` reports the same way (values at the floor
//!   are not meaningful).
//!
//! crun 1.8 refuses hybrid cgroup hosts; each crun process first enters a private mount namespace where
//! /sys/fs/cgroup/unified/cgroup.controllers is covered by /dev/null (done in the forked child before exec,
//! so it adds no process and no RSS to crun's numbers).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use conformance::bundle::Bundle;
use conformance::runtime::{Kind, Runtime};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "skiff benchmarks")]
struct Cli {
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// run /bin/true, exec latency and peak RSS for skiff, runc and crun.
    Runtime {
        /// Measured iterations per runtime.
        #[arg(long, default_value_t = 50)]
        iterations: usize,
        /// Unmeasured warm-up iterations per runtime.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// skiff binary (default: target/<profile>/skiff next to this benchmark, or $SKIFF_BIN).
        #[arg(long)]
        skiff: Option<PathBuf>,
        /// Runtimes to compare, comma-separated.
        #[arg(long, default_value = "skiff,runc,crun")]
        runtimes: String,
    },
}

/// One measured command.
struct Sample {
    wall: Duration,
    maxrss_kib: i64,
    ok: bool,
}

/// fork+exec `cmd`, wait4 it, and return wall time, ru_maxrss and success.
fn measure(mut cmd: Command) -> Result<Sample> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Same spawn path (fork, not posix_spawn/vfork) for every runtime, so the RSS floor is the same.
    // SAFETY: the closure does nothing.
    unsafe {
        cmd.pre_exec(|| Ok(()));
    }
    let start = Instant::now();
    let child = cmd.spawn().context("spawn")?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain syscall with valid out-pointers.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = start.elapsed();
    if r != pid {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    std::mem::forget(child); // already reaped
    Ok(Sample {
        wall,
        maxrss_kib: ru.ru_maxrss,
        ok: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
    })
}

#[derive(Default)]
struct Series {
    run: Vec<Sample>,
    exec: Vec<Sample>,
}

struct Subject {
    rt: Runtime,
    exec_id: Option<String>,
    exec_error: Option<String>,
    series: Series,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

struct Stats {
    median_ms: f64,
    p90_ms: f64,
    rss_mib: f64,
    failures: usize,
    n: usize,
}

fn stats(samples: &[Sample]) -> Stats {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.ok).collect();
    let mut ms: Vec<f64> = ok.iter().map(|s| s.wall.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.total_cmp(b));
    let mut rss: Vec<f64> = ok.iter().map(|s| s.maxrss_kib as f64 / 1024.0).collect();
    rss.sort_by(|a, b| a.total_cmp(b));
    Stats {
        median_ms: percentile(&ms, 0.5),
        p90_ms: percentile(&ms, 0.9),
        rss_mib: percentile(&rss, 0.5),
        failures: samples.len() - ok.len(),
        n: samples.len(),
    }
}

/// A runtime only counts if `run` really runs the container: `exit 7` must come back as exit code 7.
fn functional(rt: &Runtime) -> Result<()> {
    let mut b = Bundle::busybox()?;
    b.shell("exit 7");
    b.save()?;
    let id = conformance::unique_name(&format!("bench-check-{}", rt.name()));
    let out = rt
        .invocation(["run", "--bundle", b.path().to_str().unwrap_or(""), &id])
        .timeout(Duration::from_secs(30))
        .output();
    rt.force_delete(&id);
    if out.code != 7 {
        bail!(
            "not functional: `run` of `exit 7` returned {} ({})",
            out.code,
            out.stderr.trim()
        );
    }
    Ok(())
}

fn bench_runtime(
    iterations: usize,
    warmup: usize,
    skiff: Option<PathBuf>,
    runtimes: &str,
) -> Result<()> {
    if !conformance::is_root() {
        bail!("the runtime benchmark creates containers: run it as root");
    }
    let mut run_bundle = Bundle::busybox().context("building the busybox bundle")?;
    run_bundle.args(&["/bin/true"]);
    run_bundle.save()?;
    let mut exec_bundle = Bundle::busybox().context("building the busybox bundle")?;
    exec_bundle.args(&["sleep", "1000000"]);
    exec_bundle.save()?;

    let mut subjects = Vec::new();
    for name in runtimes.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(kind) = Kind::parse(name) else {
            bail!("unknown runtime {name:?} (skiff, runc, crun)");
        };
        let rt = match (kind, &skiff) {
            (Kind::Skiff, Some(p)) => Runtime::with_binary(kind, p.clone()),
            _ => Runtime::new(kind),
        };
        let rt = rt
            .map_err(anyhow::Error::from)
            .and_then(|rt| functional(&rt).map(|()| rt));
        match rt {
            Ok(rt) => subjects.push(Subject {
                rt,
                exec_id: None,
                exec_error: None,
                series: Series::default(),
            }),
            Err(e) => println!("SKIP {name}: {e}"),
        }
    }
    for s in &subjects {
        println!("{:6} {}", s.rt.name(), s.rt.binary().display());
    }

    // Long-running containers for exec.
    for s in &mut subjects {
        let id = conformance::unique_name(&format!("bench-exec-{}", s.rt.name()));
        let out =
            s.rt.invocation([
                "run",
                "--detach",
                "--bundle",
                exec_bundle.path().to_str().unwrap_or(""),
                &id,
            ])
            .timeout(Duration::from_secs(30))
            .output();
        if out.success() {
            s.exec_id = Some(id);
        } else {
            s.rt.force_delete(&id);
            s.exec_error = Some(out.stderr.lines().last().unwrap_or("").trim().to_string());
        }
    }

    let floor = {
        let mut v = Vec::new();
        for _ in 0..5 {
            let mut c = Command::new(conformance::bundle::HOST_BUSYBOX);
            c.arg("true");
            v.push(measure(c)?);
        }
        stats(&v)
    };

    let total = warmup + iterations;
    let bundle_arg = run_bundle.path().to_str().unwrap_or("").to_string();
    for i in 0..total {
        let n = subjects.len();
        for k in 0..n {
            let s = &mut subjects[(i + k) % n];
            let id = format!("bench-run-{}-{}-{i}", s.rt.name(), std::process::id());
            let run = measure(s.rt.command(["run", "--bundle", &bundle_arg, &id]))?;
            if !run.ok || s.rt.root().join(&id).exists() {
                s.rt.force_delete(&id);
            }
            let exec = match &s.exec_id {
                Some(eid) => Some(measure(s.rt.command(["exec", eid, "/bin/true"]))?),
                None => None,
            };
            if i >= warmup {
                s.series.run.push(run);
                if let Some(e) = exec {
                    s.series.exec.push(e);
                }
            }
        }
        if i + 1 == warmup {
            println!("warm-up done ({warmup} per runtime); measuring {iterations} interleaved iterations");
        }
    }
    for s in &subjects {
        if let Some(id) = &s.exec_id {
            s.rt.force_delete(id);
        }
    }

    println!();
    println!(
        "{:8} | {:>10} {:>9} {:>9} | {:>10} {:>9} {:>9} | failures",
        "runtime", "run med ms", "p90 ms", "RSS MiB", "exec med ms", "p90 ms", "RSS MiB"
    );
    println!("{}", "-".repeat(92));
    let mut rows = Vec::new();
    for s in &subjects {
        let r = stats(&s.series.run);
        let e = stats(&s.series.exec);
        let fails = format!(
            "run {}/{}, exec {}",
            r.failures,
            r.n,
            match &s.exec_error {
                Some(err) => format!("unavailable ({err})"),
                None => format!("{}/{}", e.failures, e.n),
            }
        );
        println!(
            "{:8} | {:>10.2} {:>9.2} {:>9.2} | {:>11.2} {:>9.2} {:>9.2} | {}",
            s.rt.name(),
            r.median_ms,
            r.p90_ms,
            r.rss_mib,
            e.median_ms,
            e.p90_ms,
            e.rss_mib,
            fails
        );
        rows.push((s.rt.kind(), r, e));
    }
    println!(
        "{:8} | {:>10} {:>9} {:>9.2} | {:>11} {:>9} {:>9.2} | spawn floor: static busybox `true` spawned the same way",
        "floor", "", "", floor.rss_mib, "", "", floor.rss_mib
    );

    let find = |k: Kind| rows.iter().find(|r| r.0 == k);
    if let Some(sk) = find(Kind::Skiff) {
        println!();
        for base in [Kind::Runc, Kind::Crun] {
            if let Some(b) = find(base) {
                println!(
                    "skiff / {:4}: run {:.2}x, exec {:.2}x, run RSS {:.2}x, exec RSS {:.2}x  (<1 = skiff better)",
                    base.name(),
                    sk.1.median_ms / b.1.median_ms,
                    sk.2.median_ms / b.2.median_ms,
                    sk.1.rss_mib / b.1.rss_mib,
                    sk.2.rss_mib / b.2.rss_mib,
                );
            }
        }
        if sk.1.failures > 0 {
            println!(
                "NOTE: skiff failed {} of {} runs; its numbers cover successful runs only",
                sk.1.failures, sk.1.n
            );
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.what {
        What::Runtime {
            iterations,
            warmup,
            skiff,
            runtimes,
        } => bench_runtime(iterations, warmup, skiff, &runtimes),
    }
}

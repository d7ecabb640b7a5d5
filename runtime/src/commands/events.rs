//! `skiff events`: resource statistics (`--stats` once, or a stream every `--interval`) and
//! `oom` events, in runc's JSON shapes, one object per line.
use std::io::Write;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::GlobalOptions;
use crate::cgroups::Stats;
use crate::state::{StateDir, Status};

/// Arguments of `skiff events`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Set the stats collection interval (Go duration: 5s, 500ms, 1m).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// Display the container's stats then exit.
    #[arg(long)]
    pub stats: bool,
    /// Container id.
    pub id: String,
}

/// One line of output: `{"type":"stats","id":..,"data":{..}}` or `{"type":"oom","id":..}`.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    /// `stats` or `oom`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// Container id.
    pub id: &'a str,
    /// The statistics for `stats` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Stats>,
}

/// Parse a Go-style duration (`1m30s`, `250ms`, `2.5s`).
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let bad = || anyhow::anyhow!("invalid duration {s:?} (want e.g. 5s, 500ms, 1m)");
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let secs = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        total += n * secs;
        rest = &rest[u_end..];
    }
    if total <= 0.0 || total > 1e9 {
        anyhow::bail!("duration for --interval must be greater than 0");
    }
    Ok(Duration::from_secs_f64(total))
}

fn emit(out: &mut impl Write, ev: &Event<'_>) -> anyhow::Result<()> {
    serde_json::to_writer(&mut *out, ev)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Run `skiff events`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let interval = parse_duration(&args.interval)?;
    // Hold the state lock only while reading it, so a stream does not block other commands.
    let (st, cg) = {
        let dir = StateDir::open(&global.root, &args.id)?;
        let st = dir.load()?;
        if st.status(&dir) == Status::Stopped {
            anyhow::bail!("container with id {} is not running", args.id);
        }
        let cg = st.cgroup()?;
        (st, cg)
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if args.stats {
        let ev = Event {
            kind: "stats",
            id: &st.id,
            data: Some(cg.stats()?),
        };
        emit(&mut out, &ev)?;
        return Ok(0);
    }
    // OOM kills are noticed from the counter within 100ms; stats go out every interval.
    let mut ooms = cg.oom_kill_count();
    let mut next_stats = Instant::now() + interval;
    let tick = interval.min(Duration::from_millis(100));
    loop {
        std::thread::sleep(tick);
        let n = cg.oom_kill_count();
        if n > ooms {
            ooms = n;
            emit(
                &mut out,
                &Event {
                    kind: "oom",
                    id: &st.id,
                    data: None,
                },
            )?;
        }
        if !st.init_alive() || !global.root.join(&st.id).exists() {
            return Ok(0);
        }
        if Instant::now() >= next_stats {
            next_stats += interval;
            match cg.stats() {
                Ok(s) => emit(
                    &mut out,
                    &Event {
                        kind: "stats",
                        id: &st.id,
                        data: Some(s),
                    },
                )?,
                Err(e) => crate::logging::warn(&format!("events: collecting stats: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").ok(), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_duration("250ms").ok(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_duration("1m30s").ok(), Some(Duration::from_secs(90)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
        let ev = Event {
            kind: "oom",
            id: "c1",
            data: None,
        };
        assert_eq!(
            serde_json::to_string(&ev).ok().as_deref(),
            Some(r#"{"type":"oom","id":"c1"}"#)
        );
    }
}

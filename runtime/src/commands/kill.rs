//! `skiff kill`: send a signal to the container's init (or, with --all, every process).
use super::GlobalOptions;
use crate::signals::parse_signal;
use crate::state::{StateDir, Status};

/// Arguments of `skiff kill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Send the specified signal to all processes inside the container.
    #[arg(long, short = 'a')]
    pub all: bool,
    /// Container id.
    pub id: String,
    /// Signal name or number (default SIGTERM).
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

/// Run `skiff kill`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let dir = StateDir::open(&global.root, &args.id)?;
    let st = dir.load()?;
    let sig = parse_signal(&args.signal)?;
    if st.pid <= 1 {
        anyhow::bail!("container state has an invalid pid {}", st.pid);
    }
    let status = st.status(&dir);
    if status == Status::Stopped {
        anyhow::bail!("container not running");
    }
    if args.all {
        let cg = st.cgroup().map_err(|e| anyhow::anyhow!("{e}"))?;
        let pids = cg.pids().map_err(|e| anyhow::anyhow!("{e}"))?;
        if pids.is_empty() {
            // Cgroup unavailable: at least signal the init.
            // SAFETY: signalling the verified init pid.
            unsafe { libc::kill(st.pid, sig) };
        }
        for p in pids.into_iter().filter(|p| *p > 1) {
            // SAFETY: signalling processes of the container's cgroup.
            unsafe { libc::kill(p, sig) };
        }
        return Ok(0);
    }
    // SAFETY: signalling the verified init pid.
    if unsafe { libc::kill(st.pid, sig) } != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("sending signal {sig} to {}: {e}", st.pid);
    }
    Ok(0)
}

//! `skiff run`: create and start a container; in the foreground, wait for it and return its
//! exit status (128+N for signal N), deleting it unless `--keep`.
use super::GlobalOptions;
use crate::container;
use crate::{signals, tty};

/// Arguments of `skiff run` (runc's flags): those of `create` plus `--detach` and `--keep`.
#[derive(Debug, clap::Args)]
#[group(skip)]
pub struct Args {
    /// Detach from the container's process.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Do not delete the container after it exits.
    #[arg(long)]
    pub keep: bool,
    /// The flags `run` shares with `create`.
    #[command(flatten)]
    pub create: super::create::Args,
}

/// Run `skiff run`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let opts = args.create.options(!args.detach);
    if !args.detach {
        // Orphaned container processes (e.g. without a pid namespace) are reaped by us.
        // SAFETY: prctl with constant arguments.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    }
    let mut created = container::create(global, &opts)?;
    let pid = created.state.pid;
    if args.detach {
        container::start(&created.dir, &mut created.state)?;
        return Ok(0);
    }
    // Foreground: take every signal synchronously and forward it to the container.
    signals::block_all();
    let fg = tty::Foreground::attach(created.console.take());
    let id = created.state.id.clone();
    if let Err(e) = container::start(&created.dir, &mut created.state) {
        drop(fg);
        let _ = container::destroy(&created.dir, &created.state);
        return Err(e);
    }
    // Let other commands (state, kill, exec) work on the container while we wait.
    let root = created.dir.path.clone();
    drop(created);
    let code = signals::forward_and_wait(pid, || fg.resize());
    fg.finish();
    if !args.keep {
        let root_dir = root.parent().map(|p| p.to_path_buf()).unwrap_or_default();
        if let Ok(dir) = crate::state::StateDir::open(&root_dir, &id) {
            if let Ok(st) = dir.load() {
                let _ = container::destroy(&dir, &st);
            }
        }
    }
    Ok(code)
}

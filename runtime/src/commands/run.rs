//! `skiff run`: create and start a container; in the foreground, wait for it and return its
//! exit status (128+N for signal N), deleting it unless `--keep`.
use std::path::PathBuf;

use super::GlobalOptions;
use crate::container::{self, CreateOptions};
use crate::{signals, tty};

/// Arguments of `skiff run` (runc's flags).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to the root of the bundle directory, defaults to the current directory.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Path to an AF_UNIX socket which will receive the console's pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Detach from the container's process.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Do not delete the container after it exits.
    #[arg(long)]
    pub keep: bool,
    /// Specify the file to write the process id to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot root to jail process inside rootfs.
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N additional file descriptors to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container id.
    pub id: String,
}

/// Run `skiff run`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let opts = CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        pid_file: args.pid_file.clone(),
        console_socket: args.console_socket.clone(),
        no_pivot: args.no_pivot,
        no_new_keyring: args.no_new_keyring,
        preserve_fds: args.preserve_fds,
        foreground: !args.detach,
    };
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
    let console = created.console.take();
    let raw = console.as_ref().and_then(|_| tty::RawMode::enter(0));
    let mut winch_target = None;
    if let Some(m) = &console {
        use std::os::fd::AsRawFd;
        if let Some((r, c)) = tty::get_size(0) {
            let _ = tty::set_size(m.as_raw_fd(), r, c);
        }
        winch_target = Some(m.as_raw_fd());
    }
    let copier = console.map(tty::proxy);
    let id = created.state.id.clone();
    if let Err(e) = container::start(&created.dir, &mut created.state) {
        drop(raw);
        let _ = container::destroy(&created.dir, &created.state);
        return Err(e);
    }
    // Let other commands (state, kill, exec) work on the container while we wait.
    let root = created.dir.path.clone();
    drop(created);
    let code = signals::forward_and_wait(pid, || {
        if let (Some(fd), Some((r, c))) = (winch_target, tty::get_size(0)) {
            let _ = tty::set_size(fd, r, c);
        }
    });
    if let Some(h) = copier {
        let _ = h.join();
    }
    drop(raw);
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

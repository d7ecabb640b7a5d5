//! `skiff create`: create a container whose init waits for `start`.
use std::path::PathBuf;

use super::GlobalOptions;
use crate::container::{self, CreateOptions};

/// Arguments of `skiff create` (runc's flags).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to the root of the bundle directory, defaults to the current directory.
    #[arg(long, short = 'b', default_value = ".")]
    pub bundle: PathBuf,
    /// Path to an AF_UNIX socket which will receive a file descriptor referencing the master
    /// end of the console's pseudoterminal.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Specify the file to write the process id to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot root to jail process inside rootfs.
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring for the container.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass N additional file descriptors to the container (stdio + $LISTEN_FDS + N in total).
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Container id.
    pub id: String,
}

impl Args {
    /// The create options these flags describe.
    pub fn options(&self, foreground: bool) -> CreateOptions {
        CreateOptions {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds,
            foreground,
        }
    }
}

/// Run `skiff create`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    container::create(global, &args.options(false))?;
    Ok(0)
}

//! `skiff spec`: write runc's default config.json into the bundle.
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::GlobalOptions;

/// Arguments of `skiff spec`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to the root of the bundle directory.
    #[arg(long, short = 'b')]
    pub bundle: Option<PathBuf>,
    /// Generate a configuration for a rootless container.
    #[arg(long)]
    pub rootless: bool,
}

/// Run `skiff spec`; returns the exit code.
pub fn run(_global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let path = match &args.bundle {
        Some(dir) => dir.join("config.json"),
        None => PathBuf::from("config.json"),
    };
    if path.exists() {
        anyhow::bail!("File {} exists. Remove it first", path.display());
    }
    // SAFETY: getuid/getgid have no preconditions.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let text = crate::spec::text(args.rootless, uid, gid);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("open {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(0)
}

//! `skiff resume` (cgroups engineer).
use super::GlobalOptions;

/// Arguments of `skiff resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff resume`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let _ = global;
    anyhow::bail!("resume of {}: not implemented yet", args.id)
}

//! `skiff ps` (cgroups engineer).
use super::GlobalOptions;

/// Arguments of `skiff ps`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff ps`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let _ = global;
    anyhow::bail!("ps of {}: not implemented yet", args.id)
}

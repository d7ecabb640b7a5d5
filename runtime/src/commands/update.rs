//! `skiff update` (cgroups engineer).
use super::GlobalOptions;

/// Arguments of `skiff update`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff update`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let _ = global;
    anyhow::bail!("update of {}: not implemented yet", args.id)
}

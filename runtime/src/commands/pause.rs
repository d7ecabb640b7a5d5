//! `skiff pause` (cgroups engineer).
use super::GlobalOptions;

/// Arguments of `skiff pause`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff pause`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let _ = global;
    anyhow::bail!("pause of {}: not implemented yet", args.id)
}

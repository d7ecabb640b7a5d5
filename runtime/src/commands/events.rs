//! `skiff events` (cgroups engineer).
use super::GlobalOptions;

/// Arguments of `skiff events`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff events`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let _ = global;
    anyhow::bail!("events of {}: not implemented yet", args.id)
}

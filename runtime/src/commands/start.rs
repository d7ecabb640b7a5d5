//! `skiff start`: release a created container's init to exec the user process.
use super::GlobalOptions;
use crate::container;
use crate::state::StateDir;

/// Arguments of `skiff start`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff start`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let dir = StateDir::open(&global.root, &args.id)?;
    let mut st = dir.load()?;
    container::start(&dir, &mut st)?;
    Ok(0)
}

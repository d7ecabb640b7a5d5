//! `skiff pause`: freeze every process of the container (freezer v1, cgroup.freeze v2).
use super::GlobalOptions;
use crate::state::{StateDir, Status};

/// Arguments of `skiff pause`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff pause`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let dir = StateDir::open(&global.root, &args.id)?;
    let st = dir.load()?;
    match st.status(&dir) {
        Status::Running | Status::Created => {}
        _ => anyhow::bail!("container not running"),
    }
    let cg = st.cgroup()?;
    cg.freeze()?;
    Ok(0)
}

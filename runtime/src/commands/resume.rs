//! `skiff resume`: thaw a paused container.
use super::GlobalOptions;
use crate::state::{StateDir, Status};

/// Arguments of `skiff resume`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff resume`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let dir = StateDir::open(&global.root, &args.id)?;
    let st = dir.load()?;
    let cg = st.cgroup()?;
    // A created container can be frozen too; its status then still reads "created".
    let frozen = st.init_alive() && cg.is_frozen()?;
    if !frozen || st.status(&dir) == Status::Stopped {
        anyhow::bail!("container not paused");
    }
    cg.thaw()?;
    Ok(0)
}

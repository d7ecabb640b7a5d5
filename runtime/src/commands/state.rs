//! `skiff state`: print the OCI state JSON of a container.
use super::GlobalOptions;
use crate::state::StateDir;

/// Arguments of `skiff state`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Container id.
    pub id: String,
}

/// Run `skiff state`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let dir = StateDir::open(&global.root, &args.id)?;
    let st = dir.load()?;
    let oci = st.oci(st.status(&dir));
    println!("{}", serde_json::to_string_pretty(&oci)?);
    Ok(0)
}

//! `skiff features`: print the OCI features JSON.
use super::GlobalOptions;

/// Arguments of `skiff features` (none).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run `skiff features`; returns the exit code.
pub fn run(_global: &GlobalOptions, _args: Args) -> anyhow::Result<i32> {
    println!(
        "{}",
        serde_json::to_string_pretty(&crate::features::features())?
    );
    Ok(0)
}

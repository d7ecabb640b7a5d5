//! `skiff checkpoint` / `skiff restore`: not supported (no CRIU integration).
use super::GlobalOptions;

/// Arguments of `skiff checkpoint`/`restore`: everything is accepted and ignored.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Any flags and the container id.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub rest: Vec<String>,
}

/// Fail clearly: skiff does not implement checkpoint/restore.
pub fn run(_global: &GlobalOptions, what: &str, _args: Args) -> anyhow::Result<i32> {
    anyhow::bail!("{what} is not supported by skiff (no CRIU support)")
}

//! `skiff delete`: remove a stopped (or created, or with --force any) container.
use super::GlobalOptions;
use crate::container;
use crate::state::{StateDir, Status};

/// Arguments of `skiff delete`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Forcibly deletes the container if it is still running (uses SIGKILL).
    #[arg(long, short = 'f')]
    pub force: bool,
    /// Container id.
    pub id: String,
}

/// Run `skiff delete`; returns the exit code.
pub fn run(global: &GlobalOptions, args: Args) -> anyhow::Result<i32> {
    let dir = match StateDir::open(&global.root, &args.id) {
        Ok(d) => d,
        Err(e) => {
            if args.force && e.to_string() == "container does not exist" {
                return Ok(0);
            }
            return Err(e);
        }
    };
    let st = dir.load()?;
    match st.status(&dir) {
        Status::Stopped | Status::Created => {}
        s if args.force => {
            let _ = s;
        }
        s => anyhow::bail!(
            "cannot delete container {} that is not stopped: {}",
            args.id,
            s.as_str()
        ),
    }
    container::destroy(&dir, &st)?;
    Ok(0)
}

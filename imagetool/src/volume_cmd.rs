//! `skiff-image volume ...`: list, create, inspect and remove the store's volumes.

use anyhow::{Context, Result};
use clap::Subcommand;
use skiff_image::store::Store;
use skiff_image::volumes;

/// Volume subcommands (Docker's `docker volume` verbs).
#[derive(Subcommand)]
pub enum VolumeCmd {
    /// List volumes: NAME, KIND (anonymous|named), MOUNTPOINT (host path).
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only print names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Create an empty named volume (no-op if it exists); prints its name.
    Create {
        /// Name: [A-Za-z0-9][A-Za-z0-9_.-]*.
        name: String,
    },
    /// Print volumes as a JSON array (Name, Mountpoint, Anonymous, CreatedAt, UsedBy).
    Inspect {
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes; refused while a bundle still uses one (rm-bundle it first).
    Rm {
        /// Remove even when a bundle still uses the volume.
        #[arg(short, long)]
        force: bool,
        /// Volume names.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes no bundle uses: anonymous ones, or all with --all; prints their names.
    Prune {
        /// Named volumes too.
        #[arg(short, long)]
        all: bool,
    },
}

/// Run one volume subcommand against `store`.
pub fn run(store: &Store, cmd: VolumeCmd) -> Result<()> {
    match cmd {
        VolumeCmd::Ls { json, quiet } => {
            let list = volumes::list(store)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if quiet {
                for v in list {
                    println!("{}", v.name);
                }
            } else {
                println!("{:<64} {:<9} MOUNTPOINT", "NAME", "KIND");
                for v in list {
                    let kind = if v.anonymous { "anonymous" } else { "named" };
                    println!("{:<64} {:<9} {}", v.name, kind, v.mountpoint.display());
                }
            }
        }
        VolumeCmd::Create { name } => {
            let v =
                volumes::create(store, &name).with_context(|| format!("volume create {name}"))?;
            println!("{}", v.name);
        }
        VolumeCmd::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(
                    volumes::inspect(store, n).with_context(|| format!("volume inspect {n}"))?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCmd::Rm { force, names } => {
            for n in &names {
                volumes::remove(store, n, force).with_context(|| format!("volume rm {n}"))?;
                println!("{n}");
            }
        }
        VolumeCmd::Prune { all } => {
            for n in volumes::prune(store, all).context("volume prune")? {
                println!("{n}");
            }
        }
    }
    Ok(())
}

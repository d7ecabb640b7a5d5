//! One module per CLI command; each exposes a clap `Args` struct and `run`.
//!
//! The cgroups engineer owns `pause`, `resume`, `update`, `events` and `ps`; the lifecycle
//! engineer owns the rest and the dispatch in `cli.rs`.
use std::path::PathBuf;

pub mod checkpoint;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod resume;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

/// Options given before the command name, shared by every command.
#[derive(Debug, Clone, Default)]
pub struct GlobalOptions {
    /// `--root`: directory holding container state (default /run/skiff).
    pub root: PathBuf,
    /// `--systemd-cgroup`: cgroupsPath is `slice:prefix:name` managed through systemd.
    pub systemd_cgroup: bool,
    /// `--rootless`: `auto`, `true` or `false` as runc.
    pub rootless: Option<String>,
    /// `--debug`.
    pub debug: bool,
}

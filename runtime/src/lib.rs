//! skiff: a runc-compatible OCI runtime.
//!
//! Module ownership (one owner per file while the crate is being built in parallel):
//! - lifecycle/CLI: `cli`, `commands`, `state`, `container`, `process`, `init`, `namespaces`,
//!   `hooks`, `tty`, `signals`, `logging`, `spec`, `features`, `sync`
//! - filesystem: `rootfs`, `mounts`, `devices`, `paths`, `sysctl`
//! - resources: `cgroups`
//! - security: `seccomp`, `capabilities`, `privileges`, `lsm`

pub mod capabilities;
pub mod cgroups;
pub mod cli;
pub mod commands;
pub mod container;
pub mod devices;
pub mod features;
pub mod hooks;
pub mod init;
pub mod logging;
pub mod lsm;
pub mod mounts;
pub mod namespaces;
pub mod paths;
pub mod privileges;
pub mod process;
pub mod rootfs;
pub mod sealed_exe;
pub mod seccomp;
pub mod signals;
pub mod spec;
pub mod state;
pub mod sync;
pub mod sysctl;
pub mod tty;

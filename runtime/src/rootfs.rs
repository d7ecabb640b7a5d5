//! Container root filesystem: mounts, devices, pivot_root, masked and read-only paths.
//!
//! CONTRACT (called by the init process; bodies owned by the filesystem engineer).
use std::path::Path;

use oci_spec::runtime::Spec;

/// Errors while preparing the container's root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A system call failed; `context` names the path or mount concerned.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done (e.g. "mount proc on /proc").
        context: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration asks for something invalid (field named in the message).
    #[error("{0}")]
    Invalid(String),
}

/// What the init process knows when it sets up the root filesystem.
#[derive(Debug, Clone, Copy)]
pub struct RootfsContext<'a> {
    /// The container's configuration.
    pub spec: &'a Spec,
    /// Absolute host path of the rootfs (`root.path` resolved against the bundle).
    pub rootfs: &'a Path,
    /// Absolute host path of the bundle (relative mount sources resolve against it).
    pub bundle: &'a Path,
    /// `--no-pivot`: use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// The container has its own user namespace (devices are bind-mounted, not mknod'ed).
    pub in_user_ns: bool,
}

/// Parent-side validation before any fork, so bad mounts fail fast and leave nothing behind.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), RootfsError> {
    let _ = (spec, bundle);
    Ok(())
}

/// In the init, inside its new mount namespace and before pivot: propagation, rootfs bind,
/// `mounts` in order, default and `linux.devices`, /dev symlinks.
pub fn prepare(ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    let _ = ctx;
    Ok(())
}

/// Switch root: pivot_root into the rootfs (or MS_MOVE + chroot with `no_pivot`); cwd is `/` after.
pub fn pivot(ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    let _ = ctx;
    Ok(())
}

/// After pivot, when `process.terminal`: bind the pty slave (a host-side path such as
/// /dev/pts/N of the container's devpts) onto /dev/console safely.
pub fn setup_console(slave: &Path) -> Result<(), RootfsError> {
    let _ = slave;
    Ok(())
}

/// After pivot (and console): sysctls, maskedPaths, readonlyPaths, `root.readonly`.
pub fn finalize(ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    let _ = ctx;
    Ok(())
}

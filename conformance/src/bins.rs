//! Locating the binaries under test and the reference tools they are compared against.
//!
//! Workspace binaries come from an env var (`SKIFF_BIN`, `SKIFF_IMAGE_BIN`, `SKIFF_BUILD_BIN`, `SKIFF_SHIM_BIN`)
//! or, failing that, from the cargo target dir found by walking up from the running executable
//! (`target/<profile>/deps/test-xxxx` -> `target/<profile>/skiff`). Reference tools come from `PATH`
//! plus the sbin directories (runc lives in /usr/sbin, which `cargo test` environments often lack).

use std::path::{Path, PathBuf};

/// Why a workspace binary could not be found; the message says what to build or set.
#[derive(Debug, thiserror::Error)]
pub enum BinError {
    /// The env var points at something that is not a file.
    #[error("${var} is set to {path:?}, which is not a file")]
    BadEnv {
        /// Env var consulted.
        var: String,
        /// Value it held.
        path: PathBuf,
    },
    /// Neither the env var nor the target dir had the binary.
    #[error("binary {name:?} not found: set ${var} or run `cargo build -p {package}` (searched upwards from {from:?})")]
    NotFound {
        /// Binary name.
        name: String,
        /// Env var that would override the search.
        var: String,
        /// Cargo package that builds it.
        package: String,
        /// Executable the search started from.
        from: PathBuf,
    },
}

/// The `skiff` runtime binary (`$SKIFF_BIN` or target/<profile>/skiff).
pub fn skiff() -> Result<PathBuf, BinError> {
    workspace_bin("skiff", "SKIFF_BIN", "skiff")
}

/// The `skiff-image` tool (`$SKIFF_IMAGE_BIN` or target/<profile>/skiff-image).
pub fn skiff_image() -> Result<PathBuf, BinError> {
    workspace_bin("skiff-image", "SKIFF_IMAGE_BIN", "skiff-image")
}

/// The `skiff-build` tool (`$SKIFF_BUILD_BIN` or target/<profile>/skiff-build).
pub fn skiff_build() -> Result<PathBuf, BinError> {
    workspace_bin("skiff-build", "SKIFF_BUILD_BIN", "skiff-build")
}

/// The containerd shim (`$SKIFF_SHIM_BIN` or target/<profile>/containerd-shim-skiff-v2).
pub fn shim() -> Result<PathBuf, BinError> {
    workspace_bin(
        "containerd-shim-skiff-v2",
        "SKIFF_SHIM_BIN",
        "containerd-shim-skiff-v2",
    )
}

/// Find a binary built by this workspace: `$var` if set, else the nearest `<ancestor>/<name>` of the current
/// executable (which finds target/<profile>/ from both test executables in deps/ and binaries).
pub fn workspace_bin(name: &str, var: &str, package: &str) -> Result<PathBuf, BinError> {
    if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(v);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(BinError::BadEnv {
                var: var.to_string(),
                path: p,
            })
        };
    }
    let exe = std::env::current_exe().unwrap_or_default();
    for dir in exe.ancestors().skip(1).take(4) {
        let candidate = dir.join(name);
        if candidate.is_file() && candidate != exe {
            return Ok(candidate);
        }
    }
    Err(BinError::NotFound {
        name: name.to_string(),
        var: var.to_string(),
        package: package.to_string(),
        from: exe,
    })
}

/// Find a system tool on `PATH` or in the sbin directories; `None` if it is not installed.
pub fn system(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = [
        "/usr/local/sbin",
        "/usr/sbin",
        "/sbin",
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
    ];
    std::env::split_paths(&path)
        .chain(extra.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

/// runc from the Debian package, the reference runtime for differential tests.
pub fn runc() -> Option<PathBuf> {
    system("runc")
}

/// crun, the speed reference (needs the hybrid-cgroup workaround, see [`crate::runtime::Kind::Crun`]).
pub fn crun() -> Option<PathBuf> {
    system("crun")
}

/// umoci, the reference for image unpacking.
pub fn umoci() -> Option<PathBuf> {
    system("umoci")
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

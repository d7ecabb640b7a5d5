//! cgroups v1, v2 and hybrid: placing container processes and applying `linux.resources`.
//!
//! CONTRACT (used by the lifecycle code; bodies owned by the cgroups engineer).
use oci_spec::runtime::LinuxResources;

/// Errors from cgroup operations.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file operation failed.
    #[error("cgroup {path}: {source}")]
    Io {
        /// The cgroup file or directory.
        path: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is invalid or cannot be honoured on this host.
    #[error("{0}")]
    Invalid(String),
}

/// Handle on one container's cgroup(s); cheap to rebuild from the state file.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    path: String,
}

impl CgroupManager {
    /// Resolve `linux.cgroupsPath` (or the default derived from the id) on this host's layout.
    pub fn new(
        cgroups_path: Option<&str>,
        container_id: &str,
        systemd: bool,
    ) -> Result<Self, CgroupError> {
        let _ = systemd;
        Ok(Self {
            path: cgroups_path
                .map(str::to_string)
                .unwrap_or_else(|| format!("/skiff/{container_id}")),
        })
    }

    /// The resolved cgroup path (relative to each hierarchy's root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Create the cgroup(s), apply `resources`, and move `pid` in (before the user process runs).
    pub fn apply(&self, pid: i32, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let _ = (pid, resources);
        Ok(())
    }

    /// Move another process (an `exec`) into the existing cgroup(s).
    pub fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        let _ = pid;
        Ok(())
    }

    /// Every pid in the container's cgroup.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        Ok(Vec::new())
    }

    /// Whether the container's cgroup is frozen (state reports `paused`).
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        Ok(false)
    }

    /// Remove the cgroup(s) this container created (and only those).
    pub fn destroy(&self) -> Result<(), CgroupError> {
        Ok(())
    }
}

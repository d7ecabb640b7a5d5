//! Linux security modules: AppArmor profiles and SELinux labels.
//!
//! Both are "on next exec" labels written to procfs by the container's init (or exec'd process)
//! just before execve. The procfs file is opened through a `pathrs` procfs handle (a private,
//! verified procfs instance; lookups may not cross mounts or follow symlinks), never through the
//! container's `/proc` path, so a hostile rootfs cannot redirect the write (CVE-2025-52881).
use std::io::Write;

use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};

/// Errors about LSM labels.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    /// The config asks for an LSM the host does not have enabled.
    #[error("{field}: {lsm} is not enabled on this host, cannot apply {value:?}")]
    Unsupported {
        /// Config field, e.g. `process.apparmorProfile`.
        field: &'static str,
        /// "AppArmor" or "SELinux".
        lsm: &'static str,
        /// The requested profile or label.
        value: String,
    },
    /// The value cannot be written (contains NUL or newline).
    #[error("{field}: invalid value {value:?}")]
    Invalid {
        /// Config field.
        field: &'static str,
        /// The requested profile or label.
        value: String,
    },
    /// Writing the label failed.
    #[error("setting {lsm} exec label: {msg}")]
    Apply {
        /// "AppArmor" or "SELinux".
        lsm: &'static str,
        /// What failed.
        msg: String,
    },
}

/// Whether AppArmor is enabled on the host (for `features` and validation). The module parameter
/// is the primary source; without /sys (e.g. asked from inside a container) the per-LSM procfs
/// directory tells whether AppArmor is an active LSM.
pub fn apparmor_enabled() -> bool {
    match std::fs::read_to_string("/sys/module/apparmor/parameters/enabled") {
        Ok(s) => s.trim().starts_with('Y'),
        // Reading fails with EINVAL when AppArmor is compiled in but not the active LSM.
        Err(_) => std::fs::read("/proc/thread-self/attr/apparmor/current").is_ok(),
    }
}

/// Whether SELinux is enabled on the host (for `features` and validation): selinuxfs is mounted,
/// or (without /sys) the kernel registered selinuxfs, which it only does when SELinux is enabled.
pub fn selinux_enabled() -> bool {
    const SELINUX_MAGIC: u64 = 0xf97c_ff8c;
    if let Ok(st) = nix::sys::statfs::statfs("/sys/fs/selinux") {
        if (st.filesystem_type().0 as u64) & 0xffff_ffff == SELINUX_MAGIC {
            return true;
        }
    }
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("selinuxfs"))
        })
        .unwrap_or(false)
}

/// The `linux.apparmor` and `linux.selinux` objects of `skiff features`.
pub fn features() -> (serde_json::Value, serde_json::Value) {
    (
        serde_json::json!({ "enabled": apparmor_enabled() }),
        serde_json::json!({ "enabled": selinux_enabled() }),
    )
}

/// Validated exec labels, computed before fork.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecLabels {
    apparmor: Option<String>,
    selinux: Option<String>,
}

fn check(field: &'static str, v: &str) -> Result<(), LsmError> {
    if v.contains('\0') || v.contains('\n') {
        return Err(LsmError::Invalid {
            field,
            value: v.to_string(),
        });
    }
    Ok(())
}

impl ExecLabels {
    /// Validate `process.apparmorProfile` / `process.selinuxLabel` against the host.
    pub fn prepare(apparmor: Option<&str>, selinux: Option<&str>) -> Result<Self, LsmError> {
        let apparmor = apparmor.filter(|s| !s.is_empty());
        let selinux = selinux.filter(|s| !s.is_empty());
        if let Some(p) = apparmor {
            check("process.apparmorProfile", p)?;
            if !apparmor_enabled() {
                return Err(LsmError::Unsupported {
                    field: "process.apparmorProfile",
                    lsm: "AppArmor",
                    value: p.to_string(),
                });
            }
        }
        if let Some(l) = selinux {
            check("process.selinuxLabel", l)?;
            if !selinux_enabled() {
                return Err(LsmError::Unsupported {
                    field: "process.selinuxLabel",
                    lsm: "SELinux",
                    value: l.to_string(),
                });
            }
        }
        Ok(Self {
            apparmor: apparmor.map(str::to_string),
            selinux: selinux.map(str::to_string),
        })
    }

    /// Whether there is anything to apply.
    pub fn is_empty(&self) -> bool {
        self.apparmor.is_none() && self.selinux.is_none()
    }

    /// Write the labels for the next execve of this thread. Needs a usable procfs handle.
    pub fn apply(&self) -> Result<(), LsmError> {
        if self.is_empty() {
            return Ok(());
        }
        let fail = |lsm: &'static str, msg: String| LsmError::Apply { lsm, msg };
        let procfs = ProcfsHandle::new()
            .map_err(|e| fail("LSM", format!("opening a private procfs handle: {e}")))?;
        // This thread's attr file for the label of its next execve.
        let open_attr = |name: &str| {
            procfs.open(
                ProcfsBase::ProcThreadSelf,
                name,
                OpenFlags::O_WRONLY | OpenFlags::O_CLOEXEC,
            )
        };
        if let Some(profile) = &self.apparmor {
            // Newer kernels have a per-LSM directory; fall back to the shared attr file.
            let f = open_attr("attr/apparmor/exec")
                .or_else(|_| open_attr("attr/exec"))
                .map_err(|e| fail("AppArmor", format!("opening attr/exec: {e}")))?;
            write_all(f, format!("exec {profile}").as_bytes())
                .map_err(|e| fail("AppArmor", format!("profile {profile:?}: {e}")))?;
        }
        if let Some(label) = &self.selinux {
            let f = open_attr("attr/exec")
                .map_err(|e| fail("SELinux", format!("opening attr/exec: {e}")))?;
            write_all(f, label.as_bytes())
                .map_err(|e| fail("SELinux", format!("label {label:?}: {e}")))?;
        }
        Ok(())
    }
}

fn write_all(mut f: std::fs::File, data: &[u8]) -> std::io::Result<()> {
    // procfs attr files take the whole value in a single write.
    let n = f.write(data)?;
    if n != data.len() {
        return Err(std::io::Error::other("short write"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_labels_need_nothing() {
        let l = ExecLabels::prepare(None, Some("")).expect("nothing asked");
        assert!(l.is_empty());
        assert!(l.apply().is_ok());
    }

    #[test]
    fn asking_for_a_disabled_lsm_is_a_clear_error() {
        if apparmor_enabled() {
            eprintln!("SKIP: AppArmor is enabled on this host");
        } else {
            let e = ExecLabels::prepare(Some("docker-default"), None).expect_err("must refuse");
            assert!(e.to_string().contains("process.apparmorProfile"), "{e}");
            assert!(e.to_string().contains("AppArmor is not enabled"), "{e}");
        }
        if selinux_enabled() {
            eprintln!("SKIP: SELinux is enabled on this host");
        } else {
            let e = ExecLabels::prepare(None, Some("system_u:system_r:container_t:s0"))
                .expect_err("must refuse");
            assert!(e.to_string().contains("process.selinuxLabel"), "{e}");
        }
    }

    #[test]
    fn newline_in_label_is_invalid() {
        let e = ExecLabels::prepare(Some("a\nchangeprofile b"), None).expect_err("invalid");
        assert!(matches!(e, LsmError::Invalid { .. }), "{e}");
    }
}

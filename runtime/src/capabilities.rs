//! Linux capabilities: name parsing and the five capability sets.
//!
//! Sets are kept as 64-bit masks computed in the parent, so the child applies them with raw
//! `prctl`/`capset` calls and no allocation.
use std::str::FromStr;

use oci_spec::runtime::{Capabilities, Capability as OciCapability, LinuxCapabilities};

/// Errors from capability names or from applying the sets.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    /// A name that is not a Linux capability.
    #[error("unknown capability {0:?}")]
    Unknown(String),
    /// A prctl/capset call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The five capability sets as bit masks (bit N = capability number N).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CapSets {
    /// Upper bound for every other set, kept across execve.
    pub bounding: u64,
    /// Capabilities checked by the kernel right now.
    pub effective: u64,
    /// Limiting superset of effective.
    pub permitted: u64,
    /// Preserved across execve of files with inheritable file caps.
    pub inheritable: u64,
    /// Preserved across execve of ordinary programs (needs permitted and inheritable).
    pub ambient: u64,
}

/// Every capability name this build knows, in kernel number order (for `skiff features`).
pub fn known_names() -> Vec<String> {
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.into_iter().map(|c| c.to_string()).collect()
}

/// The kernel number of a capability given as `CAP_X` or `X` (any case).
pub fn parse_name(name: &str) -> Result<u8, CapError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    caps::Capability::from_str(&full)
        .map(|c| c.index())
        .map_err(|_| CapError::Unknown(name.to_string()))
}

fn oci_index(c: &OciCapability) -> Result<u8, CapError> {
    // oci-spec's Display gives the name without the CAP_ prefix ("SYS_ADMIN").
    parse_name(&c.to_string())
}

fn mask(set: Option<&Capabilities>) -> Result<u64, CapError> {
    let mut m = 0u64;
    for c in set.into_iter().flatten() {
        m |= 1u64 << oci_index(c)?;
    }
    Ok(m)
}

/// The highest capability number the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn last_cap() -> u8 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

impl CapSets {
    /// Sets from `process.capabilities`; absent means every set empty (as runc does).
    /// Capabilities the running kernel does not know are dropped with a warning.
    pub fn from_spec(spec: Option<&LinuxCapabilities>, last_cap: u8) -> Result<Self, CapError> {
        let Some(spec) = spec else {
            return Ok(Self::default());
        };
        let sets = Self {
            bounding: mask(spec.bounding().as_ref())?,
            effective: mask(spec.effective().as_ref())?,
            permitted: mask(spec.permitted().as_ref())?,
            inheritable: mask(spec.inheritable().as_ref())?,
            ambient: mask(spec.ambient().as_ref())?,
        };
        let known = kernel_mask(last_cap);
        let all = sets.bounding | sets.effective | sets.permitted | sets.inheritable | sets.ambient;
        if all & !known != 0 {
            tracing::warn!(
                "ignoring capabilities unknown to the running kernel (mask {:#x})",
                all & !known
            );
        }
        Ok(Self {
            bounding: sets.bounding & known,
            effective: sets.effective & known,
            permitted: sets.permitted & known,
            inheritable: sets.inheritable & known,
            ambient: sets.ambient & known,
        })
    }
}

fn kernel_mask(last_cap: u8) -> u64 {
    if last_cap >= 63 {
        u64::MAX
    } else {
        (1u64 << (last_cap as u32 + 1)) - 1
    }
}

fn errno(context: &'static str) -> CapError {
    CapError::Sys {
        context,
        source: std::io::Error::last_os_error(),
    }
}

/// Drop every capability not in `sets.bounding` from the bounding set (needs CAP_SETPCAP).
pub fn apply_bounding(sets: &CapSets, last_cap: u8) -> Result<(), CapError> {
    for cap in 0..=last_cap.min(63) {
        if sets.bounding & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: plain prctl with integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // EINVAL: the kernel does not know this capability; nothing to drop.
            if err.raw_os_error() != Some(libc::EINVAL) {
                return Err(CapError::Sys {
                    context: "dropping a capability from the bounding set",
                    source: err,
                });
            }
        }
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Set effective, permitted and inheritable exactly (capset), then the ambient set.
pub fn apply_sets(sets: &CapSets) -> Result<(), CapError> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [
        CapData {
            effective: sets.effective as u32,
            permitted: sets.permitted as u32,
            inheritable: sets.inheritable as u32,
        },
        CapData {
            effective: (sets.effective >> 32) as u32,
            permitted: (sets.permitted >> 32) as u32,
            inheritable: (sets.inheritable >> 32) as u32,
        },
    ];
    // SAFETY: header and two data structs as the v3 ABI requires; the kernel only reads them.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) };
    if rc != 0 {
        return Err(errno(
            "setting effective/permitted/inheritable capabilities (capset)",
        ));
    }
    apply_ambient(sets.ambient)
}

fn apply_ambient(ambient: u64) -> Result<(), CapError> {
    // SAFETY: plain prctl with integer arguments.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EINVAL) && ambient == 0 {
            return Ok(()); // kernel without ambient capabilities (< 4.3)
        }
        return Err(CapError::Sys {
            context: "clearing the ambient capability set",
            source: err,
        });
    }
    for cap in 0..64u32 {
        if ambient & (1u64 << cap) == 0 {
            continue;
        }
        // SAFETY: plain prctl with integer arguments.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            // A capability that is not both permitted and inheritable cannot be ambient. runc
            // ignores these (its default spec lists ambient caps without inheritable ones), so
            // skiff does the same and leaves it out of the ambient set.
            if err.raw_os_error() == Some(libc::EPERM) {
                tracing::debug!(
                    cap,
                    "ambient capability not raised: not permitted+inheritable"
                );
                continue;
            }
            return Err(CapError::Sys {
                context: "raising an ambient capability",
                source: err,
            });
        }
    }
    Ok(())
}

/// The calling thread's five sets, read from `/proc/thread-self/status` (tests, diagnostics).
pub fn current() -> std::io::Result<CapSets> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    Ok(CapSets {
        bounding: field("CapBnd:"),
        effective: field("CapEff:"),
        permitted: field("CapPrm:"),
        inheritable: field("CapInh:"),
        ambient: field("CapAmb:"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_with_and_without_prefix() {
        assert_eq!(parse_name("CAP_CHOWN").ok(), Some(0));
        assert_eq!(parse_name("sys_admin").ok(), Some(21));
        assert_eq!(parse_name("CAP_CHECKPOINT_RESTORE").ok(), Some(40));
        assert!(matches!(parse_name("CAP_FLY"), Err(CapError::Unknown(_))));
        assert!(matches!(parse_name(""), Err(CapError::Unknown(_))));
    }

    #[test]
    fn known_names_are_ordered_and_complete() {
        let names = known_names();
        assert_eq!(names.first().map(String::as_str), Some("CAP_CHOWN"));
        assert!(names.iter().any(|n| n == "CAP_SYS_ADMIN"));
        assert!(names.len() >= 41);
    }

    #[test]
    fn spec_sets_become_masks() {
        let spec: LinuxCapabilities = serde_json::from_str(
            r#"{"bounding":["CAP_KILL","CAP_NET_BIND_SERVICE"],"effective":["CAP_KILL"],
                "permitted":["CAP_KILL"],"inheritable":[],"ambient":["CAP_KILL"]}"#,
        )
        .expect("valid json");
        let sets = CapSets::from_spec(Some(&spec), 40).expect("known caps");
        assert_eq!(sets.bounding, (1 << 5) | (1 << 10));
        assert_eq!(sets.effective, 1 << 5);
        assert_eq!(sets.inheritable, 0);
        assert_eq!(sets.ambient, 1 << 5);
        // A kernel that only knows caps 0..=5 loses NET_BIND_SERVICE.
        let old = CapSets::from_spec(Some(&spec), 5).expect("known caps");
        assert_eq!(old.bounding, 1 << 5);
        assert_eq!(CapSets::from_spec(None, 40).ok(), Some(CapSets::default()));
    }

    #[test]
    fn unknown_name_in_config_is_rejected_at_parse() {
        let r: Result<LinuxCapabilities, _> =
            serde_json::from_str(r#"{"bounding":["CAP_NOT_A_THING"]}"#);
        assert!(r.is_err());
    }
}

//! Device access rules: the spec's list, runc's default allow list, and their v1 encoding.
use std::path::Path;

use oci_spec::runtime::{LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType};
use serde::{Deserialize, Serialize};

use super::{fs, CgroupError};

/// One device cgroup rule, validated (type `a`, `b` or `c`; access a subset of `rwm`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// `a` (all devices), `b` or `c`.
    pub kind: char,
    /// Major number; None is the wildcard.
    pub major: Option<i64>,
    /// Minor number; None is the wildcard.
    pub minor: Option<i64>,
    /// Some of `r`, `w`, `m`.
    pub access: String,
}

impl DeviceRule {
    /// Validate one `linux.resources.devices` entry.
    pub fn from_spec(d: &LinuxDeviceCgroup) -> Result<Self, CgroupError> {
        let kind = match d.typ() {
            None | Some(LinuxDeviceType::A) => 'a',
            Some(LinuxDeviceType::B) => 'b',
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => 'c',
            Some(other) => {
                return Err(CgroupError::Invalid(format!(
                    "linux.resources.devices: invalid device type {:?} (want a, b or c)",
                    other.as_str()
                )))
            }
        };
        for (name, v) in [("major", d.major()), ("minor", d.minor())] {
            if matches!(v, Some(n) if n < 0 && n != -1) {
                return Err(CgroupError::Invalid(format!(
                    "linux.resources.devices: negative {name} number {}",
                    v.unwrap_or_default()
                )));
            }
        }
        let access = d.access().clone().unwrap_or_else(|| "rwm".into());
        let access = if access.is_empty() {
            "rwm".to_string()
        } else {
            access
        };
        if access.len() > 3
            || !access.chars().all(|c| matches!(c, 'r' | 'w' | 'm'))
            || has_dup(&access)
        {
            return Err(CgroupError::Invalid(format!(
                "linux.resources.devices: invalid access {access:?} (want a combination of r, w, m)"
            )));
        }
        Ok(Self {
            allow: d.allow(),
            kind,
            major: d.major().filter(|m| *m >= 0),
            minor: d.minor().filter(|m| *m >= 0),
            access,
        })
    }

    /// Allow rule (rwm) for a `linux.devices` node, as runc adds one per created node.
    pub fn for_node(d: &LinuxDevice) -> Option<Self> {
        let kind = match d.typ() {
            LinuxDeviceType::B => 'b',
            LinuxDeviceType::C | LinuxDeviceType::U => 'c',
            _ => return None,
        };
        Some(Self {
            allow: true,
            kind,
            major: Some(d.major()),
            minor: Some(d.minor()),
            access: "rwm".into(),
        })
    }

    /// The v1 devices.allow/devices.deny line (`a` alone for all devices).
    pub fn v1_line(&self) -> String {
        if self.kind == 'a' {
            return "a".into();
        }
        let n = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_else(|| "*".into());
        format!(
            "{} {}:{} {}",
            self.kind,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

fn has_dup(s: &str) -> bool {
    let mut seen = [false; 3];
    for c in s.chars() {
        let i = match c {
            'r' => 0,
            'w' => 1,
            _ => 2,
        };
        if seen[i] {
            return true;
        }
        seen[i] = true;
    }
    false
}

/// runc's always-allowed devices: mknod of anything, the standard nodes, ptys and tun.
pub fn default_allowed() -> Vec<DeviceRule> {
    let r = |kind, major: Option<i64>, minor: Option<i64>, access: &str| DeviceRule {
        allow: true,
        kind,
        major,
        minor,
        access: access.into(),
    };
    vec![
        r('c', None, None, "m"),
        r('b', None, None, "m"),
        r('c', Some(1), Some(3), "rwm"),
        r('c', Some(1), Some(8), "rwm"),
        r('c', Some(1), Some(7), "rwm"),
        r('c', Some(5), Some(0), "rwm"),
        r('c', Some(1), Some(5), "rwm"),
        r('c', Some(1), Some(9), "rwm"),
        r('c', Some(136), None, "rwm"),
        r('c', Some(5), Some(2), "rwm"),
        r('c', Some(10), Some(200), "rwm"),
    ]
}

/// Program v1 rules in order: each goes to devices.allow or devices.deny.
pub fn set_v1(dir: &Path, rules: &[DeviceRule]) -> Result<(), CgroupError> {
    for rule in rules {
        let file = if rule.allow {
            "devices.allow"
        } else {
            "devices.deny"
        };
        fs::write(dir, file, &rule.v1_line())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        let d = default_allowed();
        assert_eq!(d[0].v1_line(), "c *:* m");
        assert_eq!(d[8].v1_line(), "c 136:* rwm");
        let spec: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":false,"access":"rwm"}"#).expect("parse");
        assert_eq!(
            DeviceRule::from_spec(&spec)
                .map(|r| r.v1_line())
                .ok()
                .as_deref(),
            Some("a")
        );
        let bad: LinuxDeviceCgroup =
            serde_json::from_str(r#"{"allow":true,"type":"c","access":"rwx"}"#).expect("parse");
        assert!(DeviceRule::from_spec(&bad).is_err());
    }
}

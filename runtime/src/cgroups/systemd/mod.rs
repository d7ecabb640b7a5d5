//! `--systemd-cgroup`: the `slice:prefix:name` cgroupsPath form and systemd's cgroup driver.
//!
//! As runc's systemd driver: the container's cgroup is a transient scope unit
//! (`prefix-name.scope` in `slice`, Delegate=yes) that systemd creates over D-Bus with the init
//! pid in it and the limits it understands; skiff then writes the remaining limits into the
//! scope's cgroup itself, and every later command works on that cgroup directory.
//!
//! The D-Bus traffic goes through the `skiff-systemd` helper executable ([`protocol`]), so no
//! D-Bus code is linked into `skiff` itself.
use std::path::Path;

use oci_spec::runtime::LinuxResources;
use serde::{Deserialize, Serialize};

use super::CgroupError;
use bus::Systemd;
use protocol::{PropValue, Property};

mod bus;
mod properties;
pub mod protocol;

/// A parsed systemd cgroupsPath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemdPath {
    /// Parent slice, e.g. `system.slice`.
    pub slice: String,
    /// Scope prefix, e.g. `docker`.
    pub prefix: String,
    /// Scope name (usually the container id).
    pub name: String,
}

/// Characters systemd accepts in the parts of a unit name we build (no escaping needed).
fn valid_unit_part(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'))
}

impl SystemdPath {
    /// Parse `slice:prefix:name`; empty means runc's default (`system.slice`, `skiff`, id), an
    /// empty slice is `system.slice` and an empty name is the container id.
    pub fn parse(path: Option<&str>, id: &str) -> Result<Self, CgroupError> {
        let Some(p) = path.filter(|p| !p.is_empty()) else {
            return Self::checked("system.slice", "skiff", id, id);
        };
        let parts: Vec<&str> = p.split(':').collect();
        if parts.len() != 3 {
            return Err(CgroupError::Invalid(format!(
                "linux.cgroupsPath {p:?}: expected \"slice:prefix:name\" for systemd cgroups"
            )));
        }
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        let name = if parts[2].is_empty() { id } else { parts[2] };
        Self::checked(slice, parts[1], name, p)
    }

    fn checked(slice: &str, prefix: &str, name: &str, orig: &str) -> Result<Self, CgroupError> {
        let bad = |why: String| {
            Err(CgroupError::Invalid(format!(
                "linux.cgroupsPath {orig:?}: {why}"
            )))
        };
        for part in [slice, prefix, name] {
            if !valid_unit_part(part) || part == ".." || part == "." {
                return bad(format!(
                    "{part:?} cannot be part of a systemd unit name (allowed: letters, digits, '_', '.', '-', '@')"
                ));
            }
        }
        let Some(stem) = slice.strip_suffix(".slice") else {
            return bad(format!("{slice:?} is not a slice name (want NAME.slice)"));
        };
        // `a-b.slice` is a child of `a.slice`: no empty component (`-a`, `a--b`, `a-`), except
        // the root slice `-.slice`.
        if stem != "-" && stem.split('-').any(str::is_empty) {
            return bad(format!("{slice:?} is not a valid slice name"));
        }
        if name.ends_with(".slice") {
            return bad(format!(
                "{name:?}: creating a slice unit for a container is not supported (give a scope name)"
            ));
        }
        if name.is_empty() {
            return bad("the unit name is empty".into());
        }
        let s = Self {
            slice: slice.into(),
            prefix: prefix.into(),
            name: name.into(),
        };
        if s.unit_name().len() > 255 {
            return bad("the unit name is longer than systemd's 255 characters".into());
        }
        Ok(s)
    }

    /// The scope unit's name: `prefix-name.scope` (`name.scope` without a prefix).
    pub fn unit_name(&self) -> String {
        if self.prefix.is_empty() {
            format!("{}.scope", self.name)
        } else {
            format!("{}-{}.scope", self.prefix, self.name)
        }
    }

    /// The cgroup path systemd gives the scope: `a-b.slice` nests as /a.slice/a-b.slice, and
    /// `-.slice` is the root.
    pub fn cgroup_path(&self) -> String {
        let mut path = String::new();
        if self.slice != "-.slice" {
            let stem = self.slice.trim_end_matches(".slice");
            let mut acc = String::new();
            for (i, part) in stem.split('-').enumerate() {
                if i > 0 {
                    acc.push('-');
                }
                acc.push_str(part);
                path.push('/');
                path.push_str(&acc);
                path.push_str(".slice");
            }
        }
        format!("{path}/{}", self.unit_name())
    }
}

/// Whether systemd is the running init (the check `sd_booted()` makes).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The transient scope unit holding a container (what `--systemd-cgroup` asks systemd for).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    /// Unit name, e.g. `skiff-abc.scope`.
    pub name: String,
    /// Parent slice unit, e.g. `system.slice`.
    pub slice: String,
}

/// Resolve a systemd cgroupsPath to (cgroup path, unit); fails clearly when systemd is not
/// the running init. No D-Bus traffic: the path is where systemd puts the scope.
pub fn resolve(path: Option<&str>, id: &str) -> Result<(String, Unit), CgroupError> {
    let parsed = SystemdPath::parse(path, id)?;
    if !systemd_running() {
        return Err(CgroupError::Invalid(
            "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); \
             run without --systemd-cgroup to use the cgroupfs driver"
                .into(),
        ));
    }
    Ok((
        parsed.cgroup_path(),
        Unit {
            name: parsed.unit_name(),
            slice: parsed.slice.clone(),
        },
    ))
}

/// Properties every container scope gets: its slice, delegation of its cgroup to us, the
/// initial pid, accounting (so the controllers are enabled for it) and no default dependencies.
fn base_properties(unit: &Unit, pid: i32, unified: bool) -> Vec<Property> {
    let pid = u32::try_from(pid).unwrap_or(0);
    let io = if unified {
        "IOAccounting"
    } else {
        "BlockIOAccounting"
    };
    [
        (
            "Description",
            PropValue::Str(format!("skiff container {}", unit.name)),
        ),
        ("Slice", PropValue::Str(unit.slice.clone())),
        ("Delegate", PropValue::Bool(true)),
        ("PIDs", PropValue::U32Array(vec![pid])),
        ("MemoryAccounting", PropValue::Bool(true)),
        ("CPUAccounting", PropValue::Bool(true)),
        (io, PropValue::Bool(true)),
        ("TasksAccounting", PropValue::Bool(true)),
        ("DefaultDependencies", PropValue::Bool(false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// Ask systemd for the scope unit with `pid` in it and the limits it understands, and wait
/// until it is running. The caller writes the remaining limits into the cgroup afterwards.
///
/// `cgroup` is where skiff expects the scope (see [`SystemdPath::cgroup_path`]); if systemd put
/// it elsewhere (a systemd whose root cgroup is not ours), the unit is stopped and this fails,
/// since later commands look for the cgroup at `cgroup`.
pub fn start(
    unit: &Unit,
    cgroup: &str,
    pid: i32,
    unified: bool,
    resources: &LinuxResources,
) -> Result<(), CgroupError> {
    let mut sd = Systemd::connect()?;
    let mut props = base_properties(unit, pid, unified);
    props.extend(properties::for_resources(resources, unified, sd.version())?);
    sd.start_transient_unit(&unit.name, props)?;
    let actual = sd.unit_string(&unit.name, "org.freedesktop.systemd1.Scope", "ControlGroup");
    match actual {
        Some(actual) if actual != cgroup => {
            let _ = sd.stop_unit(&unit.name);
            Err(CgroupError::Invalid(format!(
                "--systemd-cgroup: systemd placed unit {} in cgroup {actual}, not {cgroup} \
                 (systemd's cgroup root differs from skiff's view)",
                unit.name
            )))
        }
        _ => Ok(()),
    }
}

/// Tell systemd about changed limits (`skiff update`), so it keeps them when it re-applies its
/// own view of the unit's cgroup.
pub fn update(unit: &Unit, unified: bool, resources: &LinuxResources) -> Result<(), CgroupError> {
    let mut sd = Systemd::connect()?;
    let props = properties::for_resources(resources, unified, sd.version())?;
    sd.set_unit_properties(&unit.name, props)
}

/// Stop the scope (systemd kills what is left and removes its cgroup) and forget it.
pub fn stop(unit: &Unit) -> Result<(), CgroupError> {
    Systemd::connect()?.stop_unit(&unit.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let p = SystemdPath::parse(Some("system.slice:docker:abc"), "x").expect("parse");
        assert_eq!(p.cgroup_path(), "/system.slice/docker-abc.scope");
        let p = SystemdPath::parse(Some("a-b.slice:p:n"), "x").expect("parse");
        assert_eq!(p.cgroup_path(), "/a.slice/a-b.slice/p-n.scope");
        assert!(SystemdPath::parse(Some("/foo/bar"), "x").is_err());
        assert!(SystemdPath::parse(Some("x.slice:a/b:c"), "x").is_err());
        let d = SystemdPath::parse(None, "id1").expect("default");
        assert_eq!(d.cgroup_path(), "/system.slice/skiff-id1.scope");
        assert_eq!(d.unit_name(), "skiff-id1.scope");
        let p = SystemdPath::parse(Some("machine-test.slice:skiff:c1"), "x").expect("nested");
        assert_eq!(
            p.cgroup_path(),
            "/machine.slice/machine-test.slice/skiff-c1.scope"
        );
        let p = SystemdPath::parse(Some("-.slice::c1"), "x").expect("root slice");
        assert_eq!(p.cgroup_path(), "/c1.scope");
        let p = SystemdPath::parse(Some(":skiff:"), "id2").expect("defaults");
        assert_eq!(p.cgroup_path(), "/system.slice/skiff-id2.scope");
        for bad in [
            "a--b.slice:p:n",
            "-a.slice:p:n",
            "a-.slice:p:n",
            "x.slice:p:n.slice",
            "x.slice:p q:n",
            "x.slice:p:..",
            "x.slice:p",
            "notaslice:p:n",
        ] {
            assert!(SystemdPath::parse(Some(bad), "x").is_err(), "{bad}");
        }
    }
}

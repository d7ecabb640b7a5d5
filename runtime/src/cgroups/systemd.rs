//! `--systemd-cgroup`: the `slice:prefix:name` cgroupsPath form and the systemd driver check.
use std::path::Path;

use super::CgroupError;

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

impl SystemdPath {
    /// Parse `slice:prefix:name`; empty means runc's default (`system.slice`, `skiff`, id).
    pub fn parse(path: Option<&str>, id: &str) -> Result<Self, CgroupError> {
        let Some(p) = path.filter(|p| !p.is_empty()) else {
            return Ok(Self {
                slice: "system.slice".into(),
                prefix: "skiff".into(),
                name: id.into(),
            });
        };
        let parts: Vec<&str> = p.split(':').collect();
        if parts.len() != 3 {
            return Err(CgroupError::Invalid(format!(
                "linux.cgroupsPath {p:?}: expected \"slice:prefix:name\" for systemd cgroups"
            )));
        }
        for part in &parts {
            if part.contains('/') || *part == ".." {
                return Err(CgroupError::Invalid(format!(
                    "linux.cgroupsPath {p:?}: systemd unit names cannot contain '/' or be \"..\""
                )));
            }
        }
        let slice = if parts[0].is_empty() {
            "system.slice"
        } else {
            parts[0]
        };
        if !slice.ends_with(".slice") {
            return Err(CgroupError::Invalid(format!(
                "linux.cgroupsPath {p:?}: {slice:?} is not a slice name (want NAME.slice)"
            )));
        }
        Ok(Self {
            slice: slice.into(),
            prefix: parts[1].into(),
            name: parts[2].into(),
        })
    }

    /// The cgroup path systemd gives the scope: `a-b.slice` nests as /a.slice/a-b.slice.
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
        let scope = if self.prefix.is_empty() {
            format!("{}.scope", self.name)
        } else {
            format!("{}-{}.scope", self.prefix, self.name)
        };
        format!("{path}/{scope}")
    }
}

/// Whether systemd is the running init (the check `sd_booted()` makes).
pub fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Resolve a systemd cgroupsPath; fails clearly when the systemd driver cannot be used.
pub fn cgroup_path(path: Option<&str>, id: &str) -> Result<String, CgroupError> {
    let parsed = SystemdPath::parse(path, id)?;
    if !systemd_running() {
        return Err(CgroupError::Invalid(
            "--systemd-cgroup: systemd is not running on this host (no /run/systemd/system); \
             run without --systemd-cgroup to use the cgroupfs driver"
                .into(),
        ));
    }
    Err(CgroupError::Invalid(format!(
        "--systemd-cgroup: creating the transient unit {} through systemd's D-Bus API is not supported by skiff; \
         run without --systemd-cgroup to use the cgroupfs driver",
        parsed.cgroup_path()
    )))
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
    }
}

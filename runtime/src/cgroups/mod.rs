//! cgroups v1, v2 and hybrid: placing container processes and applying `linux.resources`.
//!
//! The layout (v1, unified v2 or hybrid) is detected at run time. `linux.cgroupsPath` follows
//! runc: an absolute path is taken from each hierarchy's root, a relative one (and the default,
//! the container id) from PID 1's cgroup (on pure v2: its parent, which has no tasks).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxResources};
use serde::{Deserialize, Serialize};

pub(crate) mod bpf;
pub mod devices;
mod fs;
#[cfg(test)]
mod host_tests;
pub mod layout;
pub mod stats;
pub mod systemd;
mod v1;
mod v2;

pub use devices::DeviceRule;
use layout::Layout;
pub use stats::Stats;

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

/// Which cgroup hierarchies a container uses (decides which file names are written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    /// v1 controllers only.
    V1,
    /// v1 controllers plus a cgroup2 hierarchy (joined, used for controllers v1 lacks).
    Hybrid,
    /// cgroup2 only.
    V2,
}

/// Key of the cgroup2 hierarchy in [`CgroupManager::dirs`].
const UNIFIED_KEY: &str = "";

/// Handle on one container's cgroup(s); cheap to rebuild from the state file.
///
/// It is serialisable so callers may store the resolved directories (like runc's
/// `cgroup_paths`): a relative cgroupsPath resolves against the caller's own cgroup, which can
/// differ between `create` and a later `delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CgroupManager {
    path: String,
    version: Version,
    /// Hierarchy key (`cpu`, `cpu,cpuacct`, `name=systemd`, `""` for cgroup2) -> directory.
    dirs: BTreeMap<String, PathBuf>,
    /// Device rules for `linux.devices` nodes, appended after runc's default allow list.
    #[serde(default)]
    extra_devices: Vec<DeviceRule>,
    /// With `--systemd-cgroup`: the scope unit systemd manages the cgroup as.
    #[serde(default)]
    systemd: Option<systemd::Unit>,
}

impl CgroupManager {
    /// Resolve `linux.cgroupsPath` (or the default derived from the id) on this host's layout.
    pub fn new(
        cgroups_path: Option<&str>,
        container_id: &str,
        systemd: bool,
    ) -> Result<Self, CgroupError> {
        if systemd {
            // The absolute path systemd gives the scope in every hierarchy it manages.
            let (path, unit) = systemd::resolve(cgroups_path, container_id)?;
            let mut m = Self::resolve(&Layout::detect()?, &path)?;
            m.systemd = Some(unit);
            return Ok(m);
        }
        let path = normalize_path(
            cgroups_path
                .filter(|p| !p.is_empty())
                .unwrap_or(container_id),
        )?;
        let layout = Layout::detect()?;
        Self::resolve(&layout, &path)
    }

    /// Resolve a normalised path on a given layout (used by `new` and by tests).
    fn resolve(layout: &Layout, path: &str) -> Result<Self, CgroupError> {
        // Relative paths hang below PID 1's cgroup (not our own, as runc does): every later
        // command (state, exec, delete) then finds the same directories whatever cgroup it
        // was started from.
        let own = layout::proc_cgroups("1").or_else(|_| layout::proc_cgroups("self"))?;
        let absolute = path.starts_with('/');
        let mut dirs = BTreeMap::new();
        let version;
        if layout.is_unified() {
            let unified = layout
                .unified
                .as_ref()
                .ok_or_else(|| CgroupError::Invalid("no cgroup2 hierarchy is mounted".into()))?;
            let cg = if absolute {
                path.to_string()
            } else {
                let own_path = own_unified_path(&own);
                // Our own cgroup may hold tasks, which forbids enabling controllers below it.
                let parent = Path::new(own_path)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "/".into());
                join_cgroup(&parent, path)
            };
            dirs.insert(UNIFIED_KEY.to_string(), unified.dir_of(&cg));
            version = Version::V2;
        } else {
            if layout.v1.is_empty() {
                return Err(CgroupError::Invalid(
                    "no cgroup hierarchy is mounted under /sys/fs/cgroup".into(),
                ));
            }
            for h in &layout.v1 {
                let cg = if absolute {
                    path.to_string()
                } else {
                    let own_path = own
                        .iter()
                        .find(|(_, c, _)| *c == h.controllers)
                        .map(|(_, _, p)| p.as_str())
                        .unwrap_or("/");
                    join_cgroup(own_path, path)
                };
                dirs.insert(h.key(), h.mount.dir_of(&cg));
            }
            version = Version::V1;
            if let Some(unified) = &layout.unified {
                let cg = if absolute {
                    path.to_string()
                } else {
                    let own_path = own_unified_path(&own);
                    join_cgroup(own_path, path)
                };
                dirs.insert(UNIFIED_KEY.to_string(), unified.dir_of(&cg));
                return Ok(Self {
                    path: path.to_string(),
                    version: Version::Hybrid,
                    dirs,
                    extra_devices: Vec::new(),
                    systemd: None,
                });
            }
        }
        Ok(Self {
            path: path.to_string(),
            version,
            dirs,
            extra_devices: Vec::new(),
            systemd: None,
        })
    }

    /// Also allow the `linux.devices` nodes (rwm), as runc adds them to the device rules.
    pub fn with_devices(mut self, devices: &[LinuxDevice]) -> Self {
        self.extra_devices = devices.iter().filter_map(DeviceRule::for_node).collect();
        self
    }

    /// The systemd scope unit of this container (`--systemd-cgroup`), if any.
    pub fn systemd_unit(&self) -> Option<&str> {
        self.systemd.as_ref().map(|u| u.name.as_str())
    }

    /// The resolved cgroup path (relative to each hierarchy's root).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Which hierarchies this container uses.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Every cgroup directory of this container, keyed by hierarchy (`""` is cgroup2).
    pub fn dirs(&self) -> &BTreeMap<String, PathBuf> {
        &self.dirs
    }

    /// The directory of the hierarchy holding v1 `controller`, or the cgroup2 directory on v2.
    pub fn dir_for(&self, controller: &str) -> Option<&Path> {
        if self.version == Version::V2 {
            return self.dirs.get(UNIFIED_KEY).map(PathBuf::as_path);
        }
        self.dirs
            .iter()
            .find(|(k, _)| k.split(',').any(|c| c == controller))
            .map(|(_, d)| d.as_path())
    }

    /// The cgroup2 directory (pure v2, or the hybrid host's unified hierarchy).
    pub fn unified_dir(&self) -> Option<&Path> {
        self.dirs.get(UNIFIED_KEY).map(PathBuf::as_path)
    }

    /// Create the cgroup(s), apply `resources`, and move `pid` in (before the user process runs).
    ///
    /// On failure nothing created here is left behind and `pid` is moved back where it was.
    pub fn apply(&self, pid: i32, resources: Option<&LinuxResources>) -> Result<(), CgroupError> {
        let default = LinuxResources::default();
        let resources = resources.unwrap_or(&default);
        self.validate(resources)?;
        let before = if pid > 0 {
            layout::proc_cgroups(&pid.to_string()).ok()
        } else {
            None
        };
        if let Some(unit) = &self.systemd {
            // systemd creates the scope's cgroup(s) with `pid` in them; a failed start leaves
            // no unit behind (the skiff-systemd helper resets it).
            systemd::start(
                unit,
                &self.path,
                pid,
                self.version == Version::V2,
                resources,
            )?;
        }
        let mut created = Vec::new();
        let result = self.apply_inner(pid, resources, &mut created);
        if result.is_err() {
            if let Some(before) = before {
                self.move_back(pid, &before);
            }
            if let Some(unit) = &self.systemd {
                if let Err(e) = systemd::stop(unit) {
                    tracing::warn!(
                        "stopping systemd unit {} after a failed create: {e}",
                        unit.name
                    );
                }
            }
            fs::remove_dirs(&created);
        }
        match result {
            // Rootless, as runc: an unprivileged caller that asked for no limits runs without a
            // cgroup of its own when the hierarchy is not delegated to it.
            Err(e) if rootless_may_skip(&e, resources) => {
                tracing::debug!("rootless: running without a container cgroup: {e}");
                Ok(())
            }
            other => other,
        }
    }

    fn apply_inner(
        &self,
        pid: i32,
        resources: &LinuxResources,
        created: &mut Vec<PathBuf>,
    ) -> Result<(), CgroupError> {
        for (key, dir) in &self.dirs {
            let new_dirs = fs::create_dirs(dir)?;
            created.extend(new_dirs.iter().cloned());
            if key.split(',').any(|c| c == "cpuset") && self.version != Version::V2 {
                v1::init_cpuset(&new_dirs)?;
            }
            if key == UNIFIED_KEY {
                if let Some(root) = self.unified_root_opt() {
                    if self.version == Version::V2 {
                        v2::enable_controllers(&root, dir, None)?;
                    } else if resources
                        .hugepage_limits()
                        .as_ref()
                        .is_some_and(|h| !h.is_empty())
                        && v1::hybrid_hugetlb(self)
                    {
                        v2::enable_controllers(&root, dir, Some(&["hugetlb"]))?;
                    }
                }
            }
        }
        let rules = self.device_rules(resources)?;
        self.set(resources, rules.as_deref())?;
        if pid > 0 {
            self.add_task(pid)?;
        }
        Ok(())
    }

    /// The mount point of the cgroup2 hierarchy this container uses.
    fn unified_root_opt(&self) -> Option<PathBuf> {
        self.unified_dir()?;
        Layout::detect().ok()?.unified.map(|u| u.mount_point)
    }

    /// The device rules to program: the spec's, then runc's default allow list and linux.devices.
    fn device_rules(
        &self,
        resources: &LinuxResources,
    ) -> Result<Option<Vec<DeviceRule>>, CgroupError> {
        let mut rules = Vec::new();
        for r in resources.devices().iter().flatten() {
            rules.push(DeviceRule::from_spec(r)?);
        }
        rules.extend(devices::default_allowed());
        rules.extend(self.extra_devices.iter().cloned());
        Ok(Some(rules))
    }

    /// Write `resources` into existing cgroups; `devices` None leaves the device rules alone.
    fn set(
        &self,
        resources: &LinuxResources,
        devices: Option<&[DeviceRule]>,
    ) -> Result<(), CgroupError> {
        match self.version {
            Version::V2 => {
                let dir = self.unified_dir().ok_or_else(missing_unified)?;
                v2::set(dir, resources, devices)
            }
            Version::V1 | Version::Hybrid => v1::set(self, resources, devices),
        }
    }

    /// Check values before anything is created, so bad input leaves nothing behind.
    fn validate(&self, r: &LinuxResources) -> Result<(), CgroupError> {
        v1::validate_common(r)?;
        if self.version != Version::V2 {
            v1::validate_host(self, r)
        } else {
            v2::validate(r)
        }
    }

    /// Apply new limits to a running container (`skiff update`): only the fields given.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        self.validate(resources)?;
        for dir in self.dirs.values() {
            if !dir.is_dir() {
                return Err(CgroupError::Invalid(format!(
                    "cgroup {} does not exist (is the container running?)",
                    dir.display()
                )));
            }
        }
        let rules = match resources.devices() {
            Some(_) => self.device_rules(resources)?,
            None => None,
        };
        if let Some(unit) = &self.systemd {
            // First systemd's own view of the limits, so it does not revert the files later.
            systemd::update(unit, self.version == Version::V2, resources)?;
        }
        self.set(resources, rules.as_deref())
    }

    fn move_back(&self, pid: i32, before: &[(u32, Vec<String>, String)]) {
        let Ok(layout) = Layout::detect() else {
            return;
        };
        for (id, ctrls, path) in before {
            let mount = if *id == 0 && ctrls.is_empty() {
                layout.unified.as_ref()
            } else {
                layout
                    .v1
                    .iter()
                    .find(|h| h.controllers == *ctrls)
                    .map(|h| &h.mount)
            };
            if let Some(m) = mount {
                let _ = fs::write(&m.dir_of(path), "cgroup.procs", &pid.to_string());
            }
        }
    }

    /// Move another process (an `exec`) into the existing cgroup(s).
    pub fn add_task(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::Invalid(format!("invalid pid {pid}")));
        }
        if !self.exists() && !nix::unistd::geteuid().is_root() {
            // A rootless container that `apply` ran without a cgroup: nothing to join.
            return Ok(());
        }
        for (key, dir) in &self.dirs {
            match fs::write(dir, "cgroup.procs", &pid.to_string()) {
                Ok(()) => {}
                // Joining the hybrid host's extra cgroup2 tree is best effort, as in runc.
                Err(_) if key == UNIFIED_KEY && self.version == Version::Hybrid => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every pid in the container's cgroup (and its sub-cgroups).
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let dir = self
            .dir_for("pids")
            .or_else(|| self.dir_for("freezer"))
            .or_else(|| self.dirs.values().next().map(PathBuf::as_path))
            .ok_or_else(missing_unified)?;
        let mut pids = Vec::new();
        fs::procs_recursive(dir, &mut pids)?;
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// Whether the container's cgroup is frozen (state reports `paused`).
    pub fn is_frozen(&self) -> Result<bool, CgroupError> {
        match self.version {
            Version::V2 => {
                let dir = self.unified_dir().ok_or_else(missing_unified)?;
                match fs::read(dir, "cgroup.freeze") {
                    Ok(s) => Ok(s.trim() == "1"),
                    Err(CgroupError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                }
            }
            _ => match self.dir_for("freezer") {
                Some(dir) => match fs::read(dir, "freezer.state") {
                    Ok(s) => Ok(s.trim() == "FROZEN"),
                    Err(CgroupError::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Ok(false)
                    }
                    Err(e) => Err(e),
                },
                None => Ok(false),
            },
        }
    }

    /// Freeze every process of the container (`skiff pause`); waits until the kernel reports it.
    pub fn freeze(&self) -> Result<(), CgroupError> {
        self.set_frozen(true)
    }

    /// Thaw the container (`skiff resume`).
    pub fn thaw(&self) -> Result<(), CgroupError> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<(), CgroupError> {
        match self.version {
            Version::V2 => {
                let dir = self.unified_dir().ok_or_else(missing_unified)?;
                v2::set_frozen(dir, frozen)
            }
            _ => {
                let dir = self.dir_for("freezer").ok_or_else(|| {
                    CgroupError::Invalid("the freezer cgroup controller is not mounted".into())
                })?;
                v1::set_frozen(dir, frozen)
            }
        }
    }

    /// Signal every process of the container (`kill --all`, `delete --force`): the cgroup is
    /// frozen while the list is taken so no fork escapes, then thawed so the signal is delivered
    /// (a frozen task never dies), as runc does.
    pub fn signal_all(&self, signal: i32) -> Result<(), CgroupError> {
        let _ = self.freeze();
        let pids = self.pids();
        for pid in pids.iter().flatten() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(*pid, signal) };
        }
        let thawed = self.thaw();
        pids.map(|_| ())?;
        thawed
    }

    /// Current resource usage, in the shape `skiff events` prints.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        stats::collect(self)
    }

    /// How many processes of the container the OOM killer has killed so far.
    pub fn oom_kill_count(&self) -> u64 {
        match self.version {
            Version::V2 => self
                .unified_dir()
                .map(|d| fs::keyed_value(d, "memory.events", "oom_kill"))
                .unwrap_or(0),
            _ => self
                .dir_for("memory")
                .map(|d| fs::keyed_value(d, "memory.oom_control", "oom_kill"))
                .unwrap_or(0),
        }
    }

    /// Whether the container's cgroup directories exist.
    pub fn exists(&self) -> bool {
        self.dirs.values().any(|d| d.is_dir())
    }

    /// Remove the cgroup(s) this container created (and only those).
    pub fn destroy(&self) -> Result<(), CgroupError> {
        // Frozen tasks never finish exiting; thaw first so the directories can go.
        if self.is_frozen().unwrap_or(false) {
            let _ = self.thaw();
        }
        let mut first_err = None;
        if let Some(unit) = &self.systemd {
            // systemd removes the cgroups it made; the loop below removes the rest (v1
            // controllers systemd does not manage, such as freezer or cpuset).
            if let Err(e) = systemd::stop(unit) {
                first_err = Some(e);
            }
        }
        for dir in self.dirs.values() {
            if let Err(e) = fs::remove_dir(dir) {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Our own cgroup2 path from /proc/PID/cgroup entries (`0::PATH`), `/` when there is none.
fn own_unified_path(own: &[(u32, Vec<String>, String)]) -> &str {
    own.iter()
        .find(|(id, c, _)| *id == 0 && c.is_empty())
        .map(|(_, _, p)| p.as_str())
        .unwrap_or("/")
}

/// Whether a failed `apply` may be ignored: the caller is not root, the kernel refused access,
/// and the config sets no limit (so nothing the user asked for is lost).
fn rootless_may_skip(err: &CgroupError, resources: &LinuxResources) -> bool {
    let denied = matches!(err, CgroupError::Io { source, .. }
        if matches!(source.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS)));
    denied && !nix::unistd::geteuid().is_root() && no_limits(resources)
}

/// True when `resources` asks for nothing beyond device rules (which a rootless container
/// cannot program and which its user namespace already restricts).
fn no_limits(r: &LinuxResources) -> bool {
    r.cpu().is_none()
        && r.memory().is_none()
        && r.pids().is_none()
        && r.block_io().is_none()
        && r.hugepage_limits().as_ref().is_none_or(|h| h.is_empty())
        && r.network().is_none()
        && r.unified().as_ref().is_none_or(|u| u.is_empty())
        && r.rdma().as_ref().is_none_or(|m| m.is_empty())
}

fn missing_unified() -> CgroupError {
    CgroupError::Invalid("the container has no cgroup2 directory".into())
}

/// Clean a cgroupfs cgroupsPath: drop `.` and empty parts; `..` is refused, not resolved.
pub fn normalize_path(path: &str) -> Result<String, CgroupError> {
    let mut parts = Vec::new();
    for comp in path.split('/') {
        match comp {
            "" | "." => {}
            ".." => {
                return Err(CgroupError::Invalid(format!(
                    "linux.cgroupsPath {path:?}: \"..\" is not allowed (the cgroup must stay inside the hierarchy)"
                )))
            }
            c if c.contains('\0') || c.contains('\n') => {
                return Err(CgroupError::Invalid(format!(
                    "linux.cgroupsPath {path:?}: invalid character"
                )))
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        return Err(CgroupError::Invalid(format!(
            "linux.cgroupsPath {path:?}: refers to the hierarchy root; a container needs its own cgroup"
        )));
    }
    let joined = parts.join("/");
    Ok(if path.starts_with('/') {
        format!("/{joined}")
    } else {
        joined
    })
}

/// Join a relative cgroup path below `base` (both in hierarchy terms).
fn join_cgroup(base: &str, rel: &str) -> String {
    let base = base.trim_end_matches('/');
    format!("{base}/{}", rel.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize_path("/a//b/./c/").ok().as_deref(), Some("/a/b/c"));
        assert_eq!(normalize_path("x/y").ok().as_deref(), Some("x/y"));
        assert!(normalize_path("/a/../../etc").is_err());
        assert!(normalize_path("/").is_err());
        assert_eq!(join_cgroup("/", "x"), "/x");
        assert_eq!(join_cgroup("/a/b", "x/y"), "/a/b/x/y");
    }

    #[test]
    fn unified_keys_are_limits_only() {
        for (json, ok) in [
            (r#"{"unified":{"memory.high":"1"}}"#, true),
            (r#"{"unified":{"cgroup.max.depth":"3"}}"#, true),
            (r#"{"unified":{"cgroup.procs":"1"}}"#, false),
            (r#"{"unified":{"cgroup.kill":"1"}}"#, false),
            (r#"{"unified":{"../x.y":"1"}}"#, false),
        ] {
            let r: LinuxResources = serde_json::from_str(json).expect("json");
            assert_eq!(v1::validate_common(&r).is_ok(), ok, "{json}");
        }
    }
}

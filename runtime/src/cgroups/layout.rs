//! Host cgroup layout detection: v1 (legacy), v2 (unified) or hybrid, found at run time.
use std::path::{Path, PathBuf};

use super::CgroupError;

/// Where the cgroup filesystems of this host are mounted (as seen by this process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// v1 hierarchies (empty on a pure v2 host).
    pub v1: Vec<V1Hierarchy>,
    /// The cgroup2 mount: the only hierarchy on a unified host, the extra one on a hybrid host.
    pub unified: Option<MountedHierarchy>,
    /// True when /sys/fs/cgroup itself is cgroup2 (pure v2: no v1 controllers are used).
    pub pure_v2: bool,
}

/// One mounted cgroup hierarchy: where it is mounted and which cgroup its mount root is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedHierarchy {
    /// The mount point, e.g. /sys/fs/cgroup/memory.
    pub mount_point: PathBuf,
    /// The cgroup path shown at the mount point (`/` unless the mount is a sub-tree).
    pub mount_root: String,
}

/// A v1 hierarchy with the controllers bound to it (e.g. `cpu`, `cpuacct` or `name=systemd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Controllers (and `name=...` for named hierarchies) from the mount's super options.
    pub controllers: Vec<String>,
    /// Where it is mounted.
    pub mount: MountedHierarchy,
}

impl V1Hierarchy {
    /// The key naming this hierarchy (`cpu,cpuacct`, `memory`, `name=systemd`), as in /proc/PID/cgroup.
    pub fn key(&self) -> String {
        self.controllers.join(",")
    }
}

/// v1 controllers the kernel may offer; other super options of a cgroup mount are flags.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "net_cls",
    "net_prio",
    "hugetlb",
    "perf_event",
    "rdma",
    "misc",
];

impl Layout {
    /// Detect the layout from /proc/self/mountinfo and the file system type of /sys/fs/cgroup.
    pub fn detect() -> Result<Self, CgroupError> {
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").map_err(|source| CgroupError::Io {
                path: "/proc/self/mountinfo".into(),
                source,
            })?;
        let pure_v2 = cgroups_rs::fs::hierarchies::is_cgroup2_unified_mode();
        Ok(Self::parse(&mountinfo, pure_v2))
    }

    /// Build the layout from mountinfo text (separate from `detect` so it is unit-testable).
    pub fn parse(mountinfo: &str, pure_v2: bool) -> Self {
        let mut v1: Vec<V1Hierarchy> = Vec::new();
        let mut unified: Option<MountedHierarchy> = None;
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 5 || post.len() < 3 {
                continue;
            }
            let mount = MountedHierarchy {
                mount_root: unescape(pre[3]),
                mount_point: PathBuf::from(unescape(pre[4])),
            };
            match post[0] {
                "cgroup2" => {
                    let wanted = !pure_v2 || mount.mount_point == Path::new("/sys/fs/cgroup");
                    if unified.is_none() && wanted {
                        unified = Some(mount);
                    }
                }
                "cgroup" if !pure_v2 => {
                    let controllers: Vec<String> = post[2]
                        .split(',')
                        .filter(|o| V1_CONTROLLERS.contains(o) || o.starts_with("name="))
                        .map(str::to_string)
                        .collect();
                    if controllers.is_empty() || v1.iter().any(|h| h.controllers == controllers) {
                        continue;
                    }
                    v1.push(V1Hierarchy { controllers, mount });
                }
                _ => {}
            }
        }
        Self {
            v1,
            unified,
            pure_v2,
        }
    }

    /// Whether v2 is the only hierarchy in use.
    pub fn is_unified(&self) -> bool {
        self.pure_v2 || (self.v1.is_empty() && self.unified.is_some())
    }

    /// The v1 hierarchy holding `controller`, if mounted.
    pub fn v1_hierarchy(&self, controller: &str) -> Option<&V1Hierarchy> {
        self.v1
            .iter()
            .find(|h| h.controllers.iter().any(|c| c == controller))
    }
}

impl MountedHierarchy {
    /// The directory of cgroup `cgroup_path` (a path in this hierarchy, starting with `/`).
    pub fn dir_of(&self, cgroup_path: &str) -> PathBuf {
        let rel = cgroup_path
            .strip_prefix(self.mount_root.as_str())
            .filter(|_| self.mount_root != "/")
            .unwrap_or(cgroup_path);
        let rel = rel.trim_start_matches('/');
        if rel.is_empty() {
            self.mount_point.clone()
        } else {
            self.mount_point.join(rel)
        }
    }
}

/// Decode mountinfo's octal escapes (`\040` for space and friends).
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let oct = &bytes[i + 1..i + 4];
            if oct.iter().all(|b| (b'0'..=b'7').contains(b)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroups of process `pid` ("self" for this one) as (hierarchy id, controllers, path).
pub fn proc_cgroups(pid: &str) -> Result<Vec<(u32, Vec<String>, String)>, CgroupError> {
    let file = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&file).map_err(|source| CgroupError::Io {
        path: file.clone(),
        source,
    })?;
    Ok(parse_proc_cgroup(&text))
}

/// Parse the /proc/PID/cgroup format.
pub fn parse_proc_cgroup(text: &str) -> Vec<(u32, Vec<String>, String)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?.parse().ok()?;
            let ctrls = it.next()?;
            let path = it.next()?.to_string();
            let ctrls = if ctrls.is_empty() {
                Vec::new()
            } else {
                ctrls.split(',').map(str::to_string).collect()
            };
            Some((id, ctrls, path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
30 25 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
32 30 0:28 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
33 30 0:29 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
34 30 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,nosuid,cpu,cpuacct
";

    #[test]
    fn parses_hybrid() {
        let l = Layout::parse(HYBRID, false);
        assert_eq!(l.v1.len(), 4);
        assert_eq!(l.v1[2].key(), "name=systemd");
        assert_eq!(l.v1[3].key(), "cpu,cpuacct");
        assert_eq!(
            l.unified.as_ref().map(|u| u.mount_point.clone()),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert!(!l.is_unified());
        assert_eq!(
            l.v1_hierarchy("memory").map(|h| h.mount.dir_of("/a/b")),
            Some(PathBuf::from("/sys/fs/cgroup/memory/a/b"))
        );
    }

    #[test]
    fn sub_tree_mount_root() {
        let m = MountedHierarchy {
            mount_point: "/sys/fs/cgroup".into(),
            mount_root: "/kube/pod".into(),
        };
        assert_eq!(m.dir_of("/kube/pod/c1"), PathBuf::from("/sys/fs/cgroup/c1"));
        assert_eq!(m.dir_of("/"), PathBuf::from("/sys/fs/cgroup"));
    }

    #[test]
    fn proc_cgroup() {
        let v = parse_proc_cgroup("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/x\n");
        assert_eq!(v[0], (4, vec!["memory".to_string()], "/a/b".to_string()));
        assert_eq!(v[2], (0, vec![], "/x".to_string()));
        assert_eq!(unescape("a\\040b"), "a b");
    }
}

//! Finding what a container left behind: mounts, processes, cgroups and state dirs.
//!
//! A [`Scope`] names what belongs to one test (container ids and temp dirs); [`find`] scans the host for
//! anything still tied to it and [`wait_clean`] retries briefly (a killed process takes a moment to vanish).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What belongs to one test: container ids (cgroup names, /proc/*/cgroup paths) and directories (bundles,
/// state roots) that nothing may still use or have mounted afterwards.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Container ids.
    pub ids: Vec<String>,
    /// Directories owned by the test.
    pub dirs: Vec<PathBuf>,
    /// Paths that must no longer exist (e.g. `<root>/<id>` state dirs).
    pub gone: Vec<PathBuf>,
}

/// Everything found still tied to a [`Scope`]; empty means clean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// mountinfo lines whose mount point is under a scope dir.
    pub mounts: Vec<String>,
    /// `pid (comm): why` for live processes tied to the scope.
    pub processes: Vec<String>,
    /// cgroup directories named after a scope id.
    pub cgroups: Vec<PathBuf>,
    /// State paths that should be gone but exist.
    pub state: Vec<PathBuf>,
}

impl Report {
    /// Whether nothing leaked.
    pub fn is_clean(&self) -> bool {
        self.mounts.is_empty()
            && self.processes.is_empty()
            && self.cgroups.is_empty()
            && self.state.is_empty()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_clean() {
            return write!(f, "no leaks");
        }
        for m in &self.mounts {
            writeln!(f, "leaked mount: {m}")?;
        }
        for p in &self.processes {
            writeln!(f, "leaked process: {p}")?;
        }
        for c in &self.cgroups {
            writeln!(f, "leaked cgroup: {}", c.display())?;
        }
        for s in &self.state {
            writeln!(f, "leaked state: {}", s.display())?;
        }
        Ok(())
    }
}

/// Scan the host once for leftovers of `scope`.
pub fn find(scope: &Scope) -> Report {
    Report {
        mounts: mounts_under(&scope.dirs),
        processes: processes(scope),
        cgroups: cgroups(&scope.ids),
        state: scope
            .gone
            .iter()
            .filter(|p| p.symlink_metadata().is_ok())
            .cloned()
            .collect(),
    }
}

/// [`find`] repeatedly (bounded by `timeout`) until it comes back clean; returns the last report.
pub fn wait_clean(scope: &Scope, timeout: Duration) -> Report {
    let deadline = Instant::now() + timeout;
    loop {
        let r = find(scope);
        if r.is_clean() || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Mount points (from /proc/self/mountinfo, in order) equal to or below one of `dirs`.
pub fn mounts_under(dirs: &[PathBuf]) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter(|l| {
            let mp = l.split(' ').nth(4).map(unescape).unwrap_or_default();
            dirs.iter().any(|d| Path::new(&mp).starts_with(d))
        })
        .map(str::to_string)
        .collect()
}

/// Lazily unmount everything at or below `dir` (deepest first); true when nothing is mounted there afterwards.
///
/// Used before removing temp dirs so a leaked bind mount of a host directory is never recursed into.
pub fn unmount_under(dir: &Path) -> bool {
    for _ in 0..3 {
        let mut points: Vec<String> = mounts_under(&[dir.to_path_buf()])
            .iter()
            .filter_map(|l| l.split(' ').nth(4).map(unescape))
            .collect();
        if points.is_empty() {
            return true;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_under(&[dir.to_path_buf()]).is_empty()
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

fn processes(scope: &Scope) -> Vec<String> {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = e.path();
        let stat = std::fs::read_to_string(base.join("stat")).unwrap_or_default();
        // "pid (comm) S ..." — comm may hold spaces or parens, so split at the last ')'.
        let (comm, state) = match stat.rsplit_once(')') {
            Some((head, tail)) => (
                head.split_once('(').map(|x| x.1).unwrap_or("?").to_string(),
                tail.trim_start().chars().next().unwrap_or('?'),
            ),
            None => continue,
        };
        if state == 'Z' || state == 'X' {
            continue;
        }
        let mut why = Vec::new();
        let cg = std::fs::read_to_string(base.join("cgroup")).unwrap_or_default();
        for id in &scope.ids {
            if cg.lines().any(|l| {
                l.rsplit(':')
                    .next()
                    .is_some_and(|p| p.split('/').any(|c| c == id))
            }) {
                why.push(format!("in cgroup of {id}"));
            }
        }
        for link in ["cwd", "root"] {
            if let Ok(t) = std::fs::read_link(base.join(link)) {
                if scope.dirs.iter().any(|d| t.starts_with(d)) {
                    why.push(format!("{link} is {}", t.display()));
                }
            }
        }
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if scope
            .dirs
            .iter()
            .any(|d| cmdline.contains(d.to_string_lossy().as_ref()))
        {
            why.push(format!("cmdline {:?}", cmdline.trim()));
        }
        if !why.is_empty() {
            out.push(format!("{pid} ({comm}): {}", why.join(", ")));
        }
    }
    out
}

/// Directories named after one of `ids` anywhere (depth-bounded) under /sys/fs/cgroup.
pub fn cgroups(ids: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if ids.is_empty() {
        return out;
    }
    walk_cgroups(Path::new("/sys/fs/cgroup"), ids, 0, &mut out);
    out
}

fn walk_cgroups(dir: &Path, ids: &[String], depth: usize, out: &mut Vec<PathBuf>) {
    if depth > 5 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let name = e.file_name();
        let p = e.path();
        if ids.iter().any(|id| name.to_str() == Some(id.as_str())) {
            out.push(p);
        } else {
            walk_cgroups(&p, ids, depth + 1, out);
        }
    }
}

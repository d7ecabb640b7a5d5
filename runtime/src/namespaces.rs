//! Linux namespaces: which to create and which to join (`path`), uid/gid maps, time offsets.
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

/// clone/unshare/setns flag for a namespace type.
pub fn flag(t: LinuxNamespaceType) -> libc::c_int {
    match t {
        LinuxNamespaceType::Mount => libc::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => libc::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => libc::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => libc::CLONE_NEWIPC,
        LinuxNamespaceType::User => libc::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => libc::CLONE_NEWPID,
        LinuxNamespaceType::Network => libc::CLONE_NEWNET,
        LinuxNamespaceType::Time => libc::CLONE_NEWTIME,
    }
}

/// Name of the namespace's file under /proc/PID/ns/.
pub fn proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Every namespace type, in the order they are joined (user first so the rest are permitted).
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Mount,
];

/// The container's namespace configuration, split into new ones and joined ones.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Namespaces to create.
    pub new: Vec<LinuxNamespaceType>,
    /// Namespaces to join, with their paths.
    pub join: Vec<(LinuxNamespaceType, PathBuf)>,
}

impl Plan {
    /// Read `linux.namespaces`, rejecting duplicates.
    pub fn from_spec(spec: &Spec) -> Result<Plan> {
        let mut plan = Plan::default();
        let list = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default();
        for ns in list {
            let t = ns.typ();
            if plan.has(t) {
                bail!(
                    "linux.namespaces: duplicate namespace type {}",
                    proc_name(t)
                );
            }
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => plan.join.push((t, p.clone())),
                _ => plan.new.push(t),
            }
        }
        Ok(plan)
    }

    /// Whether the container has its own namespace of type `t` (new or joined).
    pub fn has(&self, t: LinuxNamespaceType) -> bool {
        self.new.contains(&t) || self.join.iter().any(|(j, _)| *j == t)
    }

    /// Whether a namespace of type `t` is created fresh.
    pub fn is_new(&self, t: LinuxNamespaceType) -> bool {
        self.new.contains(&t)
    }

    /// The path to join for type `t`.
    pub fn join_path(&self, t: LinuxNamespaceType) -> Option<&Path> {
        self.join
            .iter()
            .find(|(j, _)| *j == t)
            .map(|(_, p)| p.as_path())
    }
}

/// Join the namespace at `path` (must be a namespace of type `t`).
pub fn join(t: LinuxNamespaceType, path: &Path) -> Result<()> {
    let f = File::open(path)
        .with_context(|| format!("opening {} namespace {}", proc_name(t), path.display()))?;
    setns_fd(&f, t)
        .with_context(|| format!("joining {} namespace {}", proc_name(t), path.display()))
}

/// setns on an open namespace file.
pub fn setns_fd(f: &File, t: LinuxNamespaceType) -> std::io::Result<()> {
    // SAFETY: setns on a valid fd with a valid flag.
    if unsafe { libc::setns(f.as_raw_fd(), flag(t)) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// unshare(flags) with a readable error.
pub fn unshare(flags: libc::c_int, what: &str) -> Result<()> {
    if flags == 0 {
        return Ok(());
    }
    // SAFETY: plain syscall.
    if unsafe { libc::unshare(flags) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("unshare {what} namespace(s)"));
    }
    Ok(())
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    let mut s = String::new();
    for m in maps {
        s.push_str(&format!(
            "{} {} {}\n",
            m.container_id(),
            m.host_id(),
            m.size()
        ));
    }
    s
}

/// Write `uid_map`/`gid_map` of `pid` (runtime side, before the child continues).
pub fn write_id_maps(pid: i32, spec: &Spec) -> Result<()> {
    let linux = spec.linux().as_ref();
    let uids = linux
        .and_then(|l| l.uid_mappings().clone())
        .unwrap_or_default();
    let gids = linux
        .and_then(|l| l.gid_mappings().clone())
        .unwrap_or_default();
    if uids.is_empty() || gids.is_empty() {
        bail!("user namespaces enabled, but no user/group mapping found (linux.uidMappings/gidMappings)");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Unprivileged writers must give up setgroups before writing gid_map.
        let p = format!("/proc/{pid}/setgroups");
        std::fs::write(&p, "deny").with_context(|| format!("writing {p}"))?;
    }
    for (file, text) in [("uid_map", map_text(&uids)), ("gid_map", map_text(&gids))] {
        let p = format!("/proc/{pid}/{file}");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .with_context(|| format!("opening {p}"))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("writing {p} ({})", text.trim().replace('\n', ", ")))?;
    }
    Ok(())
}

/// Write `linux.timeOffsets` into /proc/self/timens_offsets (after unshare(CLONE_NEWTIME),
/// before any process is created in the new time namespace).
pub fn write_time_offsets(spec: &Spec) -> Result<()> {
    let Some(offs) = spec.linux().as_ref().and_then(|l| l.time_offsets().clone()) else {
        return Ok(());
    };
    let mut text = String::new();
    for (clock, off) in offs {
        let name = match clock.as_str() {
            "monotonic" => "monotonic",
            "boottime" => "boottime",
            other => bail!("linux.timeOffsets: unknown clock {other:?}"),
        };
        text.push_str(&format!(
            "{name} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    if text.is_empty() {
        return Ok(());
    }
    std::fs::write("/proc/self/timens_offsets", text.as_bytes())
        .context("writing /proc/self/timens_offsets")
}

/// Identity (device, inode) of a namespace file, to tell whether two processes share one.
pub fn ns_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Bring up `lo` in a freshly created network namespace, as runc's loopback strategy does, so
/// a container can reach its own services on 127.0.0.1.
pub fn loopback_up() -> std::io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    let raw = std::os::fd::AsRawFd::as_raw_fd(&sock);
    // SAFETY: SIOCGIFFLAGS reads into the ifreq we own.
    if unsafe { libc::ioctl(raw, libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the union's flags member is what SIOCGIFFLAGS filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(raw, libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_split() {
        let spec: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"network","path":"/proc/1/ns/net"},{"type":"mount"}]}}"#,
        )
        .expect("spec");
        let p = Plan::from_spec(&spec).expect("plan");
        assert!(p.is_new(LinuxNamespaceType::Pid));
        assert!(p.is_new(LinuxNamespaceType::Mount));
        assert!(!p.is_new(LinuxNamespaceType::Network));
        assert!(p.has(LinuxNamespaceType::Network));
        assert_eq!(
            p.join_path(LinuxNamespaceType::Network),
            Some(Path::new("/proc/1/ns/net"))
        );
        let dup: Spec = serde_json::from_str(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"pid"}]}}"#,
        )
        .expect("spec");
        assert!(Plan::from_spec(&dup).is_err());
    }
}

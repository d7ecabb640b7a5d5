//! `linux.sysctl`: which keys a container may set, and writing them only to the real procfs.
//!
//! Writes go through a private procfs instance (pathrs' `ProcfsHandle`, made with fsopen where
//! possible) opened with no symlinks, no magic links and no mount crossings, and the opened file
//! is checked to be on procfs before anything is written (CVE-2025-52881: a container-controlled
//! mount or symlink must not redirect the write to another file).
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

/// Sysctls that live in the IPC namespace.
const IPC_KEYS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Does the config give the container its own namespace of type `t` (new, or a path that is not
/// the host's own namespace)?
fn has_own_ns(spec: &Spec, t: LinuxNamespaceType, host_ns_file: &str) -> bool {
    let Some(nss) = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref()) else {
        return false;
    };
    nss.iter().filter(|n| n.typ() == t).any(|n| match n.path() {
        None => true,
        Some(p) => !same_file(p, Path::new(host_ns_file)),
    })
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The procfs-relative path of a sysctl key (`net.ipv4.ip_forward` -> `sys/net/ipv4/ip_forward`).
pub fn key_path(key: &str) -> Result<PathBuf, String> {
    let rel = key.replace('.', "/");
    if rel.is_empty()
        || rel.starts_with('/')
        || rel.split('/').any(|c| c.is_empty() || c == "..")
        || rel.contains('\0')
    {
        return Err(format!("linux.sysctl: invalid key {key:?}"));
    }
    Ok(Path::new("sys").join(rel))
}

/// Check every key against the namespaces the container gets (as runc's validator does).
pub fn validate(spec: &Spec) -> Result<(), String> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    let mut keys: Vec<&String> = map.keys().collect();
    keys.sort();
    for key in keys {
        key_path(key)?;
        let k = key.as_str();
        let ok = if IPC_KEYS.contains(&k) || k.starts_with("fs.mqueue.") {
            has_own_ns(spec, LinuxNamespaceType::Ipc, "/proc/self/ns/ipc")
        } else if k.starts_with("net.") {
            has_own_ns(spec, LinuxNamespaceType::Network, "/proc/self/ns/net")
        } else if k == "kernel.domainname" || k == "kernel.hostname" {
            has_own_ns(spec, LinuxNamespaceType::Uts, "/proc/self/ns/uts")
        } else {
            return Err(format!(
                "linux.sysctl[{key:?}]: not a namespaced sysctl, refusing to change it for the host"
            ));
        };
        if !ok {
            return Err(format!(
                "linux.sysctl[{key:?}]: the container shares this namespace with the host"
            ));
        }
    }
    Ok(())
}

/// Write one sysctl through a verified procfs (call inside the container's namespaces).
pub fn write(key: &str, value: &str) -> io::Result<()> {
    let rel = key_path(key).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    write_proc(pathrs::procfs::ProcfsBase::ProcRoot, &rel, value.as_bytes())
}

/// Write a file of the calling process's own /proc/self (e.g. `attr/exec`, `oom_score_adj`,
/// `setgroups`) so that no container-controlled mount or symlink can redirect it (CVE-2025-52881).
pub fn write_proc_self(subpath: &Path, value: &[u8]) -> io::Result<()> {
    write_proc(pathrs::procfs::ProcfsBase::ProcSelf, subpath, value)
}

/// Open `rel` under a private procfs with no symlinks, magic links or mount crossings, check the
/// file is on procfs, then write `value` in one call.
fn write_proc(base: pathrs::procfs::ProcfsBase, rel: &Path, value: &[u8]) -> io::Result<()> {
    use pathrs::flags::OpenFlags;
    use pathrs::procfs::ProcfsHandleBuilder;
    let proc = ProcfsHandleBuilder::new()
        .unmasked()
        .build()
        .map_err(|e| io::Error::other(format!("open a private procfs: {e}")))?;
    let mut f = proc
        .open(
            base,
            rel,
            OpenFlags::O_WRONLY | OpenFlags::O_NOFOLLOW | OpenFlags::O_CLOEXEC,
        )
        .map_err(|e| io::Error::other(format!("open /proc/.../{}: {e}", rel.display())))?;
    let sfs = nix::sys::statfs::fstatfs(f.as_fd()).map_err(io::Error::from)?;
    if sfs.filesystem_type() != nix::sys::statfs::PROC_SUPER_MAGIC {
        return Err(io::Error::other(format!(
            "{} is not on procfs, refusing to write",
            rel.display()
        )));
    }
    f.write_all(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_with(ns: &[&str], sysctl: &[(&str, &str)]) -> Spec {
        let j = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": {
                "namespaces": ns.iter().map(|t| serde_json::json!({"type": t})).collect::<Vec<_>>(),
                "sysctl": sysctl.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            }
        });
        serde_json::from_value(j).expect("spec")
    }

    #[test]
    fn key_paths() {
        assert_eq!(
            key_path("net.ipv4.ip_forward").expect("ok"),
            PathBuf::from("sys/net/ipv4/ip_forward")
        );
        assert!(key_path("net..x").is_err());
        assert!(key_path("").is_err());
    }

    #[test]
    fn namespace_rules() {
        assert!(validate(&spec_with(&["network"], &[("net.ipv4.ip_forward", "1")])).is_ok());
        assert!(validate(&spec_with(&["ipc"], &[("net.ipv4.ip_forward", "1")])).is_err());
        assert!(validate(&spec_with(&["ipc"], &[("kernel.shmmax", "1")])).is_ok());
        assert!(validate(&spec_with(&["ipc"], &[("fs.mqueue.msg_max", "1")])).is_ok());
        assert!(validate(&spec_with(&[], &[("kernel.shmmax", "1")])).is_err());
        assert!(validate(&spec_with(&["uts"], &[("kernel.domainname", "x")])).is_ok());
        let e = validate(&spec_with(
            &["ipc", "network", "uts"],
            &[("vm.swappiness", "1")],
        ))
        .expect_err("must be rejected");
        assert!(e.contains("vm.swappiness"), "{e}");
    }
}

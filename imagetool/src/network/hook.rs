//! `skiff-image net-hook add|del`: the OCI hooks that attach a container to its CNI network
//! (createRuntime) and detach it (poststop), with the network namespace pinned under
//! `/run/skiff-net/ID` so teardown works after the container's init is gone.

use super::cni::{self, Invocation};
use super::{NetError, NetworkFile, NETWORK_FILE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where per-container network state lives (pinned netns, saved results).
pub const RUN_DIR: &str = "/run/skiff-net";
/// Name of the pinned network namespace file in a container's run dir.
pub const NETNS_FILE: &str = "netns";
/// Name of the saved ADD progress/result file in a container's run dir.
pub const STATE_FILE: &str = "state.json";

/// The parts of the OCI state document the hook needs.
#[derive(Debug, Deserialize)]
pub struct HookState {
    /// Container id.
    pub id: String,
    /// Pid of the container's init (0 or absent after it died).
    #[serde(default)]
    pub pid: i64,
    /// Absolute bundle path.
    #[serde(default)]
    pub bundle: PathBuf,
}

/// What `add` saves after each step so `del` (or a failing `add`) undoes exactly that.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedState {
    /// The network settings used.
    pub network: NetworkFile,
    /// Whether loopback ADD was attempted.
    pub loopback: bool,
    /// How many plugins of the list ADD was attempted for.
    pub attempted: usize,
    /// How many of those succeeded (a failed ADD's own DEL errors are expected and not reported).
    #[serde(default)]
    pub added: usize,
    /// The result of the last successful plugin (prevResult for DEL).
    pub result: Option<Value>,
}

/// Parse the state JSON a runtime writes to a hook's stdin.
pub fn parse_state(data: &[u8]) -> Result<HookState, NetError> {
    let st: HookState = serde_json::from_slice(data)
        .map_err(|e| NetError::Hook(format!("state on stdin is not OCI state JSON: {e}")))?;
    validate_id(&st.id)?;
    Ok(st)
}

/// A container id usable as one path component (runc's rule: `[A-Za-z0-9_+.-]+`, not `.`/`..`).
pub fn validate_id(id: &str) -> Result<(), NetError> {
    let ok = !id.is_empty()
        && id.len() <= 200
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'+' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(NetError::Hook(format!("invalid container id {id:?}")))
    }
}

fn read_stdin_state() -> Result<HookState, NetError> {
    let mut buf = Vec::new();
    std::io::stdin()
        .take(1 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| NetError::Hook(format!("reading state from stdin: {e}")))?;
    parse_state(&buf)
}

/// Mark every inherited fd above 2 close-on-exec so plugins get none of the runtime's fds.
fn cloexec_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// A directory that must be a real directory (never a symlink) owned by root.
fn ensure_real_dir(path: &Path, create: bool) -> Result<bool, NetError> {
    use std::os::unix::fs::MetadataExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() && m.uid() == 0 => Ok(true),
        Ok(_) => Err(NetError::Hook(format!(
            "{} exists but is not a root-owned directory (symlink?)",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !create {
                return Ok(false);
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(path)
                .map_err(|e| NetError::io("creating", path, e))?;
            ensure_real_dir(path, false)
        }
        Err(e) => Err(NetError::io("inspecting", path, e)),
    }
}

fn run_dir(id: &str) -> PathBuf {
    Path::new(RUN_DIR).join(id)
}

fn save(dir: &Path, st: &SavedState) -> Result<(), NetError> {
    let p = dir.join(STATE_FILE);
    let tmp = dir.join(".state.json.tmp");
    let data = serde_json::to_vec_pretty(st)
        .map_err(|e| NetError::Hook(format!("encoding state: {e}")))?;
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| NetError::io("creating", &tmp, e))?;
    f.write_all(&data)
        .and_then(|_| f.sync_all())
        .map_err(|e| NetError::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, &p).map_err(|e| NetError::io("renaming", &p, e))
}

fn load_network_file(bundle: &Path) -> Result<NetworkFile, NetError> {
    let p = bundle.join(NETWORK_FILE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
        .map_err(|e| NetError::io("opening", &p, e))?;
    let mut data = Vec::new();
    f.take(1 << 20)
        .read_to_end(&mut data)
        .map_err(|e| NetError::io("reading", &p, e))?;
    let mut nf: NetworkFile = serde_json::from_slice(&data)
        .map_err(|e| NetError::Hook(format!("{}: {e}", p.display())))?;
    nf.conflist = cni::validate_conflist(&p.display().to_string(), nf.conflist)?;
    if nf.ifname.is_empty()
        || nf.ifname.len() > 15
        || !nf
            .ifname
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    {
        return Err(NetError::Hook(format!(
            "{}: ifname {:?} is not an interface name",
            p.display(),
            nf.ifname
        )));
    }
    Ok(nf)
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.to_string_lossy();
    mi.lines()
        .any(|l| l.split(' ').nth(4).map(|m| m == want).unwrap_or(false))
}

fn pin_netns(pid: i64, target: &Path) -> Result<(), NetError> {
    if pid <= 0 || pid > i64::from(i32::MAX) {
        return Err(NetError::Hook(format!("state has no usable pid ({pid})")));
    }
    let src = PathBuf::from(format!("/proc/{pid}/ns/net"));
    // Attaching the host's own namespace would rename/readdress host interfaces: refuse.
    let ns_id = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(p).map(|m| (m.dev(), m.ino()))
    };
    let theirs = ns_id(&src).map_err(|e| NetError::io("inspecting", &src, e))?;
    if ns_id(Path::new("/proc/self/ns/net")).ok() == Some(theirs) {
        return Err(NetError::Hook(format!(
            "container (pid {pid}) shares the host's network namespace; bridge networking needs \
             its own (is \"network\" missing from linux.namespaces?)"
        )));
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .custom_flags(libc::O_NOFOLLOW)
        .open(target)
        .map_err(|e| NetError::io("creating", target, e))?;
    nix::mount::mount(
        Some(&src),
        target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| NetError::io("bind-mounting the network namespace on", target, e.into()))
}

/// DEL what `saved` says was added, unmount the pin and remove the run dir. Every step runs
/// even when an earlier one fails; the errors are returned together.
fn teardown(id: &str, dir: &Path, saved: Option<&SavedState>) -> Vec<String> {
    let mut errors = Vec::new();
    let netns = dir.join(NETNS_FILE);
    if let Some(s) = saved {
        let inv = Invocation {
            cni_path: &s.network.cni_path,
            container_id: id,
            netns: &netns,
            ifname: &s.network.ifname,
        };
        let list = &s.network.conflist;
        let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
        let n = s.attempted.min(plugins.len());
        let prev = s
            .result
            .as_ref()
            .filter(|_| cni::del_takes_prev_result(list["cniVersion"].as_str().unwrap_or("")));
        for (i, p) in plugins[..n].iter().enumerate().rev() {
            let conf = cni::plugin_config(list, p, prev, &s.network.port_mappings);
            if let Err(e) = cni::exec_plugin(&inv, "DEL", &conf) {
                if i < s.added {
                    errors.push(e.to_string());
                }
            }
        }
        if s.loopback {
            let lo = Invocation {
                ifname: "lo",
                ..inv.clone()
            };
            if let Err(e) = cni::exec_plugin(&lo, "DEL", &cni::loopback_conf()) {
                errors.push(e.to_string());
            }
        }
    }
    if is_mount_point(&netns) {
        if let Err(e) = nix::mount::umount2(&netns, nix::mount::MntFlags::MNT_DETACH) {
            errors.push(format!("unmounting {}: {e}", netns.display()));
        }
    }
    for f in [NETNS_FILE, STATE_FILE, ".state.json.tmp"] {
        let p = dir.join(f);
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                errors.push(format!("removing {}: {e}", p.display()));
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != std::io::ErrorKind::NotFound {
            errors.push(format!("removing {}: {e}", dir.display()));
        }
    }
    errors
}

fn load_saved(dir: &Path) -> Option<SavedState> {
    let p = dir.join(STATE_FILE);
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(p)
        .ok()?;
    let mut data = Vec::new();
    f.take(4 << 20).read_to_end(&mut data).ok()?;
    serde_json::from_slice(&data).ok()
}

/// Undo whatever exists for container `id` (idempotent: nothing there = Ok).
pub fn del(id: &str) -> Result<(), NetError> {
    validate_id(id)?;
    let base = Path::new(RUN_DIR);
    if !ensure_real_dir(base, false)? {
        return Ok(());
    }
    let dir = run_dir(id);
    if !ensure_real_dir(&dir, false)? {
        return Ok(());
    }
    let saved = load_saved(&dir);
    let errors = teardown(id, &dir, saved.as_ref());
    if errors.is_empty() {
        Ok(())
    } else {
        Err(NetError::Hook(format!(
            "teardown of {id}: {}",
            errors.join("; ")
        )))
    }
}

/// Rewrite the bundle's hosts file in place (it is already bind-mounted) with the container IP.
fn write_hosts(bundle: &Path, hostname: &str, ip: std::net::Ipv4Addr) -> Result<(), NetError> {
    let p = bundle.join("hosts");
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&p)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(NetError::io("opening", &p, e)),
    };
    let data = super::hosts_content(hostname, Some(ip));
    f.set_len(0)
        .and_then(|_| f.write_all(data.as_bytes()))
        .map_err(|e| NetError::io("writing", &p, e))
}

/// Attach container `st.id` (init `st.pid`) to the network described in its bundle.
pub fn add(st: &HookState) -> Result<(), NetError> {
    validate_id(&st.id)?;
    if !st.bundle.is_absolute() {
        return Err(NetError::Hook(format!(
            "state.bundle {:?} is not an absolute path",
            st.bundle
        )));
    }
    let network = load_network_file(&st.bundle)?;
    ensure_real_dir(Path::new(RUN_DIR), true)?;
    let dir = run_dir(&st.id);
    if ensure_real_dir(&dir, false)? {
        // Left over from a container of the same id that was never torn down.
        tracing::warn!("cleaning up stale {}", dir.display());
        del(&st.id)?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| NetError::io("creating", &dir, e))?;
    let mut saved = SavedState {
        network,
        loopback: false,
        attempted: 0,
        added: 0,
        result: None,
    };
    let r = add_steps(st, &dir, &mut saved);
    if let Err(e) = r {
        let errs = teardown(&st.id, &dir, Some(&saved));
        if errs.is_empty() {
            return Err(e);
        }
        return Err(NetError::Hook(format!(
            "{e} (undoing the partial setup also failed: {})",
            errs.join("; ")
        )));
    }
    Ok(())
}

fn add_steps(st: &HookState, dir: &Path, saved: &mut SavedState) -> Result<(), NetError> {
    let netns = dir.join(NETNS_FILE);
    save(dir, saved)?;
    pin_netns(st.pid, &netns)?;
    let inv = Invocation {
        cni_path: &saved.network.cni_path.clone(),
        container_id: &st.id,
        netns: &netns,
        ifname: &saved.network.ifname.clone(),
    };
    saved.loopback = true;
    save(dir, saved)?;
    cni::exec_plugin(
        &Invocation {
            ifname: "lo",
            ..inv.clone()
        },
        "ADD",
        &cni::loopback_conf(),
    )?;
    let list = saved.network.conflist.clone();
    let plugins = list["plugins"].as_array().cloned().unwrap_or_default();
    for p in &plugins {
        let conf = cni::plugin_config(
            &list,
            p,
            saved.result.as_ref(),
            &saved.network.port_mappings,
        );
        saved.attempted += 1;
        save(dir, saved)?;
        let res = cni::exec_plugin(&inv, "ADD", &conf)?;
        saved.result = res;
        saved.added += 1;
        save(dir, saved)?;
    }
    if let Some(ip) = saved.result.as_ref().and_then(cni::container_ipv4) {
        write_hosts(&st.bundle, &saved.network.hostname, ip)?;
    }
    Ok(())
}

/// Entry point of the hidden `net-hook` subcommand: `add` or `del` with the state on stdin.
pub fn main(command: &str) -> Result<(), NetError> {
    cloexec_inherited_fds();
    let st = read_stdin_state()?;
    match command {
        "add" => add(&st),
        "del" => del(&st.id),
        o => Err(NetError::Hook(format!("unknown command {o:?} (add|del)"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["abc", "a.b-c_d+e", "0123456789abcdef"] {
            validate_id(ok).expect(ok);
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            "a\0b",
            &"x".repeat(201),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn state_parsing() {
        let st = parse_state(
            br#"{"ociVersion":"1.0.2","id":"c1","status":"created","pid":42,"bundle":"/b"}"#,
        )
        .expect("state");
        assert_eq!((st.id.as_str(), st.pid), ("c1", 42));
        assert!(parse_state(br#"{"id":"../etc","pid":1,"bundle":"/b"}"#).is_err());
        assert!(parse_state(b"not json").is_err());
    }

    #[test]
    fn add_refuses_bad_bundles_before_touching_the_host() {
        let rel = parse_state(br#"{"id":"c1","pid":1,"bundle":"relative"}"#).expect("state");
        assert!(add(&rel)
            .expect_err("relative")
            .to_string()
            .contains("absolute"));
        let d = tempfile::tempdir().expect("tmp");
        let st = HookState {
            id: "skiff-net-unit-no-such".into(),
            pid: 1,
            bundle: d.path().to_path_buf(),
        };
        let e = add(&st).expect_err("no network.json");
        assert!(e.to_string().contains(NETWORK_FILE), "{e}");
        assert!(!run_dir(&st.id).exists());
    }

    #[test]
    fn refuses_to_pin_the_hosts_own_namespace() {
        let d = tempfile::tempdir().expect("tmp");
        let target = d.path().join("netns");
        let e = pin_netns(i64::from(std::process::id()), &target).expect_err("own netns");
        assert!(e.to_string().contains("shares the host"), "{e}");
        assert!(!target.exists());
        assert!(pin_netns(0, &target).is_err());
    }

    #[test]
    fn del_of_unknown_id_is_ok() {
        del("skiff-net-test-never-existed").expect("idempotent");
    }
}

//! Container state: the internal state file under `--root/<id>/`, the per-id lock, and the
//! OCI state JSON that `skiff state` prints.
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::{CgroupError, CgroupManager};

/// OCI version reported in state JSON (what runc 1.1 reports).
pub const OCI_VERSION: &str = "1.0.2-dev";
/// Name of the state file inside the container's state directory.
const STATE_FILE: &str = "state.json";
/// Name of the socket the blocked init listens on until `start` (exists only while `created`).
pub const EXEC_SOCK: &str = "exec.sock";

/// Lifecycle status as the OCI runtime-spec (plus runc's `paused`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being created (state file not final yet).
    Creating,
    /// Created, init blocked waiting for `start`.
    Created,
    /// The user process runs.
    Running,
    /// The cgroup is frozen.
    Paused,
    /// The init exited.
    Stopped,
}

impl Status {
    /// The lowercase name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }
}

/// What later commands need to know about a container (persisted as `state.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    /// Container id.
    pub id: String,
    /// Host pid of the container's init (0 before it exists).
    pub pid: i32,
    /// Start time (field 22 of /proc/PID/stat) of that pid, to detect pid reuse.
    pub pid_start: u64,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// RFC 3339 creation time.
    pub created: String,
    /// The config snapshot (exec, hooks, cgroups and delete need it).
    pub config: Spec,
    /// `--systemd-cgroup` at create time.
    pub systemd_cgroup: bool,
    /// `--no-pivot` at create time (exec must chroot the same way).
    pub no_pivot: bool,
    /// Whether `start` already released the init.
    pub started: bool,
}

/// The OCI state (plus runc's extra fields) printed by `skiff state` and `list -f json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OciState {
    /// Spec version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// Container id.
    pub id: String,
    /// Init pid (0 when stopped).
    pub pid: i32,
    /// Status name.
    pub status: String,
    /// Bundle path.
    pub bundle: PathBuf,
    /// Rootfs path (runc extra).
    pub rootfs: PathBuf,
    /// Creation time (runc extra).
    pub created: String,
    /// Owner (runc extra; empty in `state`, a user name in `list`).
    pub owner: String,
    /// Annotations from config.json.
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// An open, locked state directory for one container id.
#[derive(Debug)]
pub struct StateDir {
    /// `--root/<id>`.
    pub path: PathBuf,
    /// The directory, held open; it carries the flock.
    pub dir: File,
}

/// Container ids as runc accepts them: `[A-Za-z0-9_+.-]+`, not `.`/`..`, at most 1024 bytes.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if !ok {
        bail!("invalid container id format: {id:?}");
    }
    Ok(())
}

fn flock(dir: &File, op: libc::c_int) -> Result<()> {
    loop {
        // SAFETY: flock on an fd we own.
        let r = unsafe { libc::flock(dir.as_raw_fd(), op) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e).context("locking container state");
        }
    }
}

fn open_dir(path: &Path) -> std::io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

impl StateDir {
    /// Claim a new id: mkdir is the atomic claim, so a second create fails without touching
    /// the first. Returns the directory locked exclusively.
    pub fn create(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(root)
            .with_context(|| format!("creating state root {}", root.display()))?;
        let path = root.join(id);
        match fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                bail!("container with given ID already exists")
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
        let dir = open_dir(&path).with_context(|| format!("opening {}", path.display()))?;
        flock(&dir, libc::LOCK_EX)?;
        Ok(StateDir { path, dir })
    }

    /// Open and lock an existing container's state ("container does not exist" otherwise).
    pub fn open(root: &Path, id: &str) -> Result<StateDir> {
        validate_id(id).map_err(|_| anyhow::anyhow!("container does not exist"))?;
        let path = root.join(id);
        let dir = match open_dir(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("container does not exist")
            }
            Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
        };
        flock(&dir, libc::LOCK_EX)?;
        // The directory may have been removed while we waited for the lock.
        if !path.join(STATE_FILE).exists() {
            bail!("container does not exist");
        }
        Ok(StateDir { path, dir })
    }

    /// Read the state file.
    pub fn load(&self) -> Result<ContainerState> {
        let p = self.path.join(STATE_FILE);
        let data = fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_slice(&data).with_context(|| format!("parsing {}", p.display()))
    }

    /// Write the state file atomically (temp file + rename).
    pub fn save(&self, st: &ContainerState) -> Result<()> {
        let tmp = self.path.join(".state.json.tmp");
        let data = serde_json::to_vec(st)?;
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(&tmp)
                .with_context(|| format!("writing {}", tmp.display()))?;
            f.write_all(&data)?;
        }
        fs::rename(&tmp, self.path.join(STATE_FILE)).context("renaming state file")?;
        Ok(())
    }

    /// Remove the whole state directory.
    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {}", self.path.display())),
        }
    }

    /// Whether the init is still waiting for `start`.
    pub fn exec_sock_exists(&self) -> bool {
        self.path.join(EXEC_SOCK).exists()
    }
}

/// Start time of `pid` (field 22 of /proc/PID/stat) and whether it is a zombie.
pub fn proc_start_time(pid: i32) -> Option<(u64, bool)> {
    if pid <= 0 {
        return None;
    }
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

/// Parse the part of /proc/PID/stat after the command name: (starttime, is_zombie_or_dead).
fn parse_stat(s: &str) -> Option<(u64, bool)> {
    let rest = &s[s.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22 -> index 19.
    let state = fields.first()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, matches!(*state, "Z" | "X" | "x")))
}

impl ContainerState {
    /// Whether the recorded init is still that process and alive (not a zombie).
    pub fn init_alive(&self) -> bool {
        match proc_start_time(self.pid) {
            Some((start, zombie)) => start == self.pid_start && !zombie,
            None => false,
        }
    }

    /// Status computed like runc: alive? still waiting for start? frozen?
    pub fn status(&self, dir: &StateDir) -> Status {
        if !self.init_alive() {
            return Status::Stopped;
        }
        if !self.started && dir.exec_sock_exists() {
            return Status::Created;
        }
        let frozen = self.cgroup().and_then(|m| m.is_frozen()).unwrap_or(false);
        if frozen {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// The container's cgroup, resolved as at create (cgroupsPath, id, cgroup driver).
    pub fn cgroup(&self) -> Result<CgroupManager, CgroupError> {
        CgroupManager::new(
            self.cgroups_path().as_deref(),
            &self.id,
            self.systemd_cgroup,
        )
    }

    /// `linux.cgroupsPath` from the config snapshot.
    pub fn cgroups_path(&self) -> Option<String> {
        self.config
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The OCI state for this container with `status`.
    pub fn oci(&self, status: Status) -> OciState {
        OciState {
            oci_version: OCI_VERSION.to_string(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status: status.as_str().to_string(),
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            owner: String::new(),
            annotations: self.config.annotations().clone().unwrap_or_default(),
        }
    }
}

/// Current time as RFC 3339 with nanoseconds, like runc's `created`.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// User name for `uid` from /etc/passwd (runc's `list` OWNER column), `#uid` if unknown.
pub fn user_name(uid: u32) -> String {
    if let Ok(pw) = fs::read_to_string("/etc/passwd") {
        for line in pw.lines() {
            let mut it = line.split(':');
            let (Some(name), _, Some(u)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if u.parse::<u32>().ok() == Some(uid) {
                return name.to_string();
            }
        }
    }
    format!("#{uid}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.3+x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "../x"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stat_parsing() {
        let s = "123 (a) b) c) S 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 98765 1000 10";
        assert_eq!(parse_stat(s), Some((98765, false)));
        let z = "123 (x) Z 1 123 123 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(z), Some((5, true)));
        let me = proc_start_time(std::process::id() as i32).expect("self");
        assert!(!me.1);
    }

    #[test]
    fn oci_state_shape() {
        let st = ContainerState {
            id: "c".into(),
            pid: 7,
            pid_start: 1,
            bundle: "/b".into(),
            rootfs: "/b/rootfs".into(),
            created: now_rfc3339(),
            config: Spec::default(),
            systemd_cgroup: false,
            no_pivot: false,
            started: false,
        };
        let v = serde_json::to_value(st.oci(Status::Created)).expect("json");
        for k in [
            "ociVersion",
            "id",
            "pid",
            "status",
            "bundle",
            "rootfs",
            "created",
            "owner",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["status"], "created");
        let stopped = serde_json::to_value(st.oci(Status::Stopped)).expect("json");
        assert_eq!(stopped["pid"], 0);
    }
}

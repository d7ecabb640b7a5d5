//! Throw-away OCI bundles with a busybox rootfs, for tests that really run containers.
//!
//! [`Bundle::busybox`] makes `<tmp>/skiff-bundle-XXXX/{config.json, rootfs/}` where rootfs holds a copy of the
//! host's static busybox (Debian `busybox-static`), a symlink per applet at its usual path, `/etc/passwd` and
//! `/etc/group` with a few users, and empty mount points. The config starts as [`default_config`] (what
//! `runc spec` writes, with `terminal: false`) and is mutated through the builder methods or raw JSON
//! ([`Bundle::config_mut`], [`Bundle::set`]). It is written to disk when a container is made from the bundle
//! (see [`crate::runtime::Runtime::container`]) or by [`Bundle::save`].

use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Host busybox that gets copied into every rootfs; must be statically linked.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Users in the rootfs /etc/passwd: (name, uid, gid, home).
pub const USERS: &[(&str, u32, u32, &str)] = &[
    ("root", 0, 0, "/root"),
    ("daemon", 1, 1, "/usr/sbin"),
    ("user", 1000, 1000, "/home/user"),
    ("other", 1001, 1001, "/home/other"),
    ("nobody", 65534, 65534, "/nonexistent"),
];

/// Groups in the rootfs /etc/group: (name, gid, members).
pub const GROUPS: &[(&str, u32, &str)] = &[
    ("root", 0, ""),
    ("daemon", 1, ""),
    ("wheel", 10, "user"),
    ("audio", 29, "user,other"),
    ("user", 1000, ""),
    ("other", 1001, ""),
    ("nogroup", 65534, ""),
];

/// Why a bundle could not be built or written.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Filesystem work on the bundle failed.
    #[error("{what} {path:?}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Path involved.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The host has no static busybox to copy.
    #[error("{HOST_BUSYBOX} is missing (apt-get install busybox-static)")]
    NoBusybox,
    /// A JSON pointer given to [`Bundle::set`] cannot be created.
    #[error("cannot set config pointer {0:?}")]
    BadPointer(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BundleError + 'a {
    move |source| BundleError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A bundle directory that is removed (after unmounting anything a buggy runtime left inside) on drop.
pub struct Bundle {
    dir: Option<tempfile::TempDir>,
    config: Value,
    raw_config: bool,
}

impl Bundle {
    /// A busybox bundle with the default config (args `sh`); see the module docs for the rootfs contents.
    pub fn busybox() -> Result<Bundle, BundleError> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-bundle-")
            .tempdir()
            .map_err(io("create temp dir", Path::new("/tmp")))?;
        let b = Bundle {
            dir: Some(dir),
            config: default_config(),
            raw_config: false,
        };
        populate_rootfs(&b.rootfs())?;
        b.save()?;
        Ok(b)
    }

    /// The bundle directory (what `--bundle` gets).
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// The rootfs directory (`<bundle>/rootfs`).
    pub fn rootfs(&self) -> PathBuf {
        self.path().join("rootfs")
    }

    /// The in-memory config.json that [`Bundle::save`] writes.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// Mutable raw access for anything the builder methods do not cover.
    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// Set the value at a JSON pointer (`/process/cwd`, `/linux/sysctl/net.ipv4.ip_forward`), creating
    /// missing objects on the way. A `/` inside a key is written `~1` as RFC 6901 says.
    pub fn set(&mut self, pointer: &str, value: Value) -> Result<&mut Self, BundleError> {
        set_pointer(&mut self.config, pointer, value)
            .ok_or_else(|| BundleError::BadPointer(pointer.to_string()))?;
        Ok(self)
    }

    /// Remove the value at a JSON pointer, if present.
    pub fn unset(&mut self, pointer: &str) -> &mut Self {
        if let Some((parent, key)) = pointer.rsplit_once('/') {
            let key = key.replace("~1", "/").replace("~0", "~");
            match self.config.pointer_mut(parent) {
                Some(Value::Object(m)) => {
                    m.remove(&key);
                }
                Some(Value::Array(a)) => {
                    if let Ok(i) = key.parse::<usize>() {
                        if i < a.len() {
                            a.remove(i);
                        }
                    }
                }
                _ => {}
            }
        }
        self
    }

    /// `process.args`.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.config["process"]["args"] = json!(args);
        self
    }

    /// `process.args = ["sh", "-c", script]`.
    pub fn shell(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Append `KEY=value` to `process.env`.
    pub fn env(&mut self, kv: &str) -> &mut Self {
        push(&mut self.config["process"]["env"], json!(kv));
        self
    }

    /// `process.cwd`.
    pub fn cwd(&mut self, cwd: &str) -> &mut Self {
        self.config["process"]["cwd"] = json!(cwd);
        self
    }

    /// `process.user.uid` and `.gid`.
    pub fn user(&mut self, uid: u32, gid: u32) -> &mut Self {
        self.config["process"]["user"]["uid"] = json!(uid);
        self.config["process"]["user"]["gid"] = json!(gid);
        self
    }

    /// `process.user.additionalGids`.
    pub fn additional_gids(&mut self, gids: &[u32]) -> &mut Self {
        self.config["process"]["user"]["additionalGids"] = json!(gids);
        self
    }

    /// `process.terminal`.
    pub fn terminal(&mut self, on: bool) -> &mut Self {
        self.config["process"]["terminal"] = json!(on);
        self
    }

    /// `hostname`.
    pub fn hostname(&mut self, name: &str) -> &mut Self {
        self.config["hostname"] = json!(name);
        self
    }

    /// `root.readonly`.
    pub fn readonly_root(&mut self, ro: bool) -> &mut Self {
        self.config["root"]["readonly"] = json!(ro);
        self
    }

    /// Add (or replace) a `linux.namespaces` entry of this type, joining `path` when given.
    pub fn add_namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        self.remove_namespace(kind);
        let mut ns = json!({ "type": kind });
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        push(&mut self.config["linux"]["namespaces"], ns);
        self
    }

    /// Remove the `linux.namespaces` entry of this type (the container then shares the host's).
    pub fn remove_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(a) = self.config["linux"]["namespaces"].as_array_mut() {
            a.retain(|n| n["type"] != kind);
        }
        self
    }

    /// Append an entry to `mounts`.
    pub fn add_mount(&mut self, mount: Value) -> &mut Self {
        push(&mut self.config["mounts"], mount);
        self
    }

    /// Append a bind mount (`options` e.g. `["rbind", "ro"]`).
    pub fn add_bind(&mut self, source: &Path, destination: &str, options: &[&str]) -> &mut Self {
        self.add_mount(json!({
            "destination": destination,
            "type": "bind",
            "source": source,
            "options": options,
        }))
    }

    /// Write config.json from the in-memory config (pretty-printed), unless [`Bundle::write_raw_config`] was
    /// used, in which case the raw file is left alone.
    pub fn save(&self) -> Result<(), BundleError> {
        if self.raw_config {
            return Ok(());
        }
        let path = self.path().join("config.json");
        let text = serde_json::to_vec_pretty(&self.config).unwrap_or_default();
        std::fs::write(&path, text).map_err(io("write", &path))
    }

    /// Replace config.json with arbitrary bytes (invalid JSON tests); later saves leave it alone.
    pub fn write_raw_config(&mut self, text: &[u8]) -> Result<(), BundleError> {
        self.raw_config = true;
        let path = self.path().join("config.json");
        std::fs::write(&path, text).map_err(io("write", &path))
    }

    /// Write a file inside the rootfs (creating parents), e.g. a script or fixture. `rel` must be relative and
    /// free of `..`; this is test-side setup, not something a runtime does.
    pub fn write_rootfs_file(
        &self,
        rel: &str,
        contents: &[u8],
        mode: u32,
    ) -> Result<PathBuf, BundleError> {
        use std::os::unix::fs::PermissionsExt;
        let rel = rel.trim_start_matches('/');
        if rel.split('/').any(|c| c == "..") {
            return Err(BundleError::BadPointer(rel.to_string()));
        }
        let path = self.rootfs().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("mkdir", parent))?;
        }
        std::fs::write(&path, contents).map_err(io("write", &path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io("chmod", &path))?;
        Ok(path)
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        // A runtime bug may leave mounts (even of host dirs) inside the bundle: never recurse into them.
        if !crate::leaks::unmount_under(dir.path()) {
            eprintln!(
                "WARNING: mounts remain under {:?}; leaving the directory in place",
                dir.path()
            );
            let _ = dir.keep();
            return;
        }
        if let Err(e) = dir.close() {
            eprintln!("WARNING: removing bundle: {e}");
        }
    }
}

fn push(slot: &mut Value, v: Value) {
    if !slot.is_array() {
        *slot = json!([]);
    }
    if let Some(a) = slot.as_array_mut() {
        a.push(v);
    }
}

fn set_pointer(root: &mut Value, pointer: &str, value: Value) -> Option<()> {
    if pointer.is_empty() {
        *root = value;
        return Some(());
    }
    let mut cur = root;
    let parts: Vec<String> = pointer
        .strip_prefix('/')?
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, init) = parts.split_last()?;
    for p in init {
        cur = match cur {
            Value::Object(m) => m.entry(p.clone()).or_insert_with(|| json!({})),
            Value::Array(a) => a.get_mut(p.parse::<usize>().ok()?)?,
            Value::Null => {
                *cur = json!({});
                cur.as_object_mut()?
                    .entry(p.clone())
                    .or_insert_with(|| json!({}))
            }
            _ => return None,
        };
    }
    match cur {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                *a.get_mut(last.parse::<usize>().ok()?)? = value;
            }
        }
        Value::Null => {
            *cur = json!({ last.clone(): value });
        }
        _ => return None,
    }
    Some(())
}

fn populate_rootfs(rootfs: &Path) -> Result<(), BundleError> {
    use std::os::unix::fs::PermissionsExt;
    if !Path::new(HOST_BUSYBOX).is_file() {
        return Err(BundleError::NoBusybox);
    }
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "proc",
        "sys",
        "dev",
        "tmp",
        "root",
        "home/user",
        "home/other",
        "var",
        "run",
        "mnt",
    ] {
        let p = rootfs.join(d);
        std::fs::create_dir_all(&p).map_err(io("mkdir", &p))?;
    }
    let tmp = rootfs.join("tmp");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777))
        .map_err(io("chmod", &tmp))?;
    for (name, uid, gid) in [("home/user", 1000, 1000), ("home/other", 1001, 1001)] {
        let p = rootfs.join(name);
        std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(io("chown", &p))?;
    }
    let bb = rootfs.join("bin/busybox");
    std::fs::copy(HOST_BUSYBOX, &bb).map_err(io("copy busybox to", &bb))?;
    for applet in applet_paths()? {
        let rel = applet.trim_start_matches('/');
        if rel.is_empty()
            || rel == "bin/busybox"
            || rel.split('/').any(|c| c == ".." || c.is_empty())
        {
            continue;
        }
        let link = rootfs.join(rel);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent).map_err(io("mkdir", parent))?;
        }
        match std::os::unix::fs::symlink("/bin/busybox", &link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("symlink", &link)(e)),
        }
    }
    let passwd: String = USERS
        .iter()
        .map(|(n, u, g, h)| format!("{n}:x:{u}:{g}:{n}:{h}:/bin/sh\n"))
        .collect();
    let group: String = GROUPS
        .iter()
        .map(|(n, g, m)| format!("{n}:x:{g}:{m}\n"))
        .collect();
    for (name, text) in [
        ("etc/passwd", passwd),
        ("etc/group", group),
        ("etc/hostname", "skiff\n".to_string()),
        ("etc/hosts", "127.0.0.1 localhost\n".to_string()),
    ] {
        let p = rootfs.join(name);
        std::fs::write(&p, text).map_err(io("write", &p))?;
    }
    Ok(())
}

/// Applet install paths (`bin/sh`, `usr/bin/id`, ...) from the host busybox, computed once per process.
fn applet_paths() -> Result<&'static [String], BundleError> {
    use std::sync::OnceLock;
    static LIST: OnceLock<Vec<String>> = OnceLock::new();
    if let Some(l) = LIST.get() {
        return Ok(l);
    }
    let out = std::process::Command::new(HOST_BUSYBOX)
        .arg("--list-full")
        .output()
        .map_err(io("run", Path::new(HOST_BUSYBOX)))?;
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    Ok(LIST.get_or_init(|| list))
}

/// The config `runc spec` writes (runc 1.1), except `process.terminal` is false so tests need no pty.
pub fn default_config() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "ambient": caps
            },
            "rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "runc",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
              "options": ["nosuid", "strictatime", "mode=755", "size=65536k"] },
            { "destination": "/dev/pts", "type": "devpts", "source": "devpts",
              "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"] },
            { "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
              "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"] },
            { "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
              "options": ["nosuid", "noexec", "nodev"] },
            { "destination": "/sys", "type": "sysfs", "source": "sysfs",
              "options": ["nosuid", "noexec", "nodev", "ro"] },
            { "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
              "options": ["nosuid", "noexec", "nodev", "relatime", "ro"] }
        ],
        "linux": {
            "resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
            "namespaces": [
                { "type": "pid" }, { "type": "network" }, { "type": "ipc" }, { "type": "uts" }, { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [ "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger" ]
        }
    })
}

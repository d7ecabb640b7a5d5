//! Generating a runtime `config.json` from an image config, the way umoci and containerd do, on
//! top of `runc spec`'s defaults (terminal off).

use crate::error::{Error, Result};
use crate::fsops;
use oci_spec::image::ImageConfiguration;
use serde_json::{json, Value};
use std::path::Path;

/// PATH used when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Caller overrides applied on top of the image config.
#[derive(Debug, Clone, Default)]
pub struct SpecOptions {
    /// Replace the image's Cmd (Entrypoint is kept), like `docker run IMAGE CMD...`.
    pub cmd: Option<Vec<String>>,
    /// Replace the image's Entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Extra `KEY=VALUE` environment (overrides the image's).
    pub env: Vec<String>,
    /// `-v` arguments: `/CTR` (anonymous), `/HOST:/CTR[:ro|rw]` (bind), `NAME:/CTR[:ro|rw]`
    /// (named); see [`crate::volumes::parse_volume`].
    pub volumes: Vec<String>,
    /// Container hostname.
    pub hostname: Option<String>,
    /// Make the rootfs read-only.
    pub read_only: bool,
    /// Override the user (same syntax as the image's User).
    pub user: Option<String>,
    /// Override the working directory.
    pub cwd: Option<String>,
    /// Network mode, published ports, hooks and /etc files (see [`crate::network`]).
    pub network: crate::network::NetworkOptions,
}

/// The `runc spec` default document with `terminal: false` and a writable root.
pub fn default_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2-dev",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [DEFAULT_PATH, "TERM=xterm"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "skiff",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Resolved process identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// primary gid.
    pub gid: u32,
    /// supplementary gids from /etc/group.
    pub additional_gids: Vec<u32>,
}

fn parse_passwd(data: &str) -> Vec<(String, u32, u32)> {
    data.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?))
        })
        .collect()
}

fn parse_group(data: &str) -> Vec<(String, u32, Vec<String>)> {
    data.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolve an image `User` (`user`, `uid`, `user:group`, `uid:gid`, ...) through the rootfs'
/// /etc/passwd and /etc/group, read confined to the rootfs.
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser> {
    if user.is_empty() {
        return Ok(ResolvedUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        });
    }
    let read = |f: &str| -> Result<String> {
        Ok(fsops::read_file_in_root(rootfs, f, 16 << 20)?
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default())
    };
    let passwd = parse_passwd(&read("etc/passwd")?);
    let groups = parse_group(&read("etc/group")?);
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let entry = passwd
        .iter()
        .find(|(n, uid, _)| n == u || u.parse::<u32>().ok() == Some(*uid));
    let (uid, mut gid, uname) = match (u.parse::<u32>(), entry) {
        (_, Some((n, uid, gid))) => (*uid, *gid, Some(n.clone())),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), None) => {
            return Err(Error::Invalid(format!(
                "image user {u:?} not found in the rootfs' /etc/passwd"
            )))
        }
    };
    let mut additional = Vec::new();
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|(n, _, _)| n == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "image group {g:?} not found in the rootfs' /etc/group"
                    ))
                })?,
        };
    } else if let Some(name) = uname {
        for (_, id, members) in &groups {
            if members.contains(&name) && *id != gid && !additional.contains(id) {
                additional.push(*id);
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

/// Build the runtime spec for `config` with `rootfs` (for user lookup) and bundle dir `bundle`.
/// Volumes (`opts.volumes` and image VOLUMEs) are added by [`crate::bundle::unpack`], which
/// creates them in the store ([`crate::volumes`]).
pub fn generate(
    config: &ImageConfiguration,
    rootfs: &Path,
    _bundle: &Path,
    opts: &SpecOptions,
) -> Result<Value> {
    let mut spec = default_spec();
    let c = config.config().clone().unwrap_or_default();
    // args = Entrypoint + Cmd
    let entry = opts
        .entrypoint
        .clone()
        .or_else(|| c.entrypoint().clone())
        .unwrap_or_default();
    let cmd = match &opts.cmd {
        Some(cmd) => cmd.clone(),
        None if opts.entrypoint.is_some() => Vec::new(),
        None => c.cmd().clone().unwrap_or_default(),
    };
    let mut args: Vec<String> = entry.into_iter().chain(cmd).collect();
    if args.is_empty() {
        args = vec!["sh".to_string()];
    }
    spec["process"]["args"] = json!(args);
    // Env: image, then overrides by key.
    let mut env: Vec<String> = c.env().clone().unwrap_or_default();
    for e in &opts.env {
        let k = e.split('=').next().unwrap_or(e);
        env.retain(|x| x.split('=').next() != Some(k));
        env.push(e.clone());
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    spec["process"]["env"] = json!(env);
    let cwd = opts
        .cwd
        .clone()
        .or_else(|| c.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(Error::Invalid(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }
    spec["process"]["cwd"] = json!(cwd);
    let user = opts
        .user
        .clone()
        .or_else(|| c.user().clone())
        .unwrap_or_default();
    let ru = resolve_user(rootfs, &user)?;
    let mut u = json!({"uid": ru.uid, "gid": ru.gid});
    if !ru.additional_gids.is_empty() {
        u["additionalGids"] = json!(ru.additional_gids);
    }
    spec["process"]["user"] = u;
    match &opts.hostname {
        Some(h) => spec["hostname"] = json!(h),
        None => {
            if let Some(o) = spec.as_object_mut() {
                o.remove("hostname");
            }
        }
    }
    spec["root"]["readonly"] = json!(opts.read_only);
    // Annotations: labels, exposed ports, stop signal and provenance, as umoci does.
    let mut ann = serde_json::Map::new();
    if let Some(labels) = c.labels() {
        for (k, v) in labels {
            ann.insert(k.clone(), json!(v));
        }
    }
    if let Some(ports) = c.exposed_ports() {
        if !ports.is_empty() {
            let mut p = ports.clone();
            p.sort();
            ann.insert(
                "org.opencontainers.image.exposedPorts".into(),
                json!(p.join(",")),
            );
        }
    }
    if let Some(sig) = c.stop_signal() {
        ann.insert("org.opencontainers.image.stopSignal".into(), json!(sig));
    }
    if let Some(created) = config.created() {
        ann.insert("org.opencontainers.image.created".into(), json!(created));
    }
    if let Some(a) = config.author() {
        ann.insert("org.opencontainers.image.author".into(), json!(a));
    }
    ann.insert(
        "org.opencontainers.image.architecture".into(),
        json!(config.architecture().to_string()),
    );
    ann.insert(
        "org.opencontainers.image.os".into(),
        json!(config.os().to_string()),
    );
    spec["annotations"] = Value::Object(ann);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("etc")).expect("etc");
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\nstaff:x:50:\n",
        )
        .expect("group");
        d
    }

    #[test]
    fn user_forms() {
        let r = rootfs();
        let u = |s: &str| resolve_user(r.path(), s).expect(s);
        assert_eq!(
            u(""),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            u("app"),
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![10]
            }
        );
        assert_eq!(
            u("1000"),
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![10]
            }
        );
        assert_eq!(
            u("app:staff"),
            ResolvedUser {
                uid: 1000,
                gid: 50,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            u("4242:4343"),
            ResolvedUser {
                uid: 4242,
                gid: 4343,
                additional_gids: vec![]
            }
        );
        assert_eq!(
            u("4242"),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![]
            }
        );
        assert!(resolve_user(r.path(), "nosuch").is_err());
        assert!(resolve_user(r.path(), "app:nosuchgroup").is_err());
    }

    #[test]
    fn passwd_symlink_stays_in_root() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).expect("rm");
        // An absolute symlink must resolve inside the rootfs, never to the host's /etc/passwd.
        std::os::unix::fs::symlink("/etc/shadow-does-not-exist", r.path().join("etc/passwd"))
            .expect("symlink");
        assert!(resolve_user(r.path(), "root").is_err());
    }

    #[test]
    fn args_env() {
        let r = rootfs();
        let cfg: ImageConfiguration = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": ["/ep"], "Cmd": ["a", "b"], "Env": ["A=1", "B=2"], "Volumes": {"/v": {}}},
            "rootfs": {"type": "layers", "diff_ids": []}
        }))
        .expect("config");
        let opts = SpecOptions {
            cmd: Some(vec!["c".into()]),
            env: vec!["B=3".into()],
            volumes: vec!["/host:/ctr:ro".into()],
            ..Default::default()
        };
        let s = generate(&cfg, r.path(), Path::new("/b"), &opts).expect("generate");
        assert_eq!(s["process"]["args"], json!(["/ep", "c"]));
        let env = s["process"]["env"].as_array().expect("env");
        assert!(
            env.contains(&json!("A=1"))
                && env.contains(&json!("B=3"))
                && !env.contains(&json!("B=2"))
        );
        assert!(env
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.starts_with("PATH="))));
    }
}

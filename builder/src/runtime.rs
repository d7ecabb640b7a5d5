//! Running a RUN step's container through an OCI runtime's command line
//! (`RUNTIME --root DIR run --bundle BUNDLE ID`), so skiff, runc or crun can be used.

use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

/// The capabilities docker gives RUN steps (a build may chown, mknod, setuid...).
pub const BUILD_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// How a RUN container is networked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// Share the host's network namespace (the default for builds).
    Host,
    /// A new, empty network namespace.
    None,
}

/// An extra mount for a RUN container.
#[derive(Debug, Clone)]
pub struct ExtraMount {
    /// Absolute path in the container.
    pub destination: String,
    /// `bind` or `tmpfs`.
    pub kind: String,
    /// Host path (bind) or `tmpfs`.
    pub source: String,
    /// Mount options.
    pub options: Vec<String>,
}

/// A runtime binary and the state directory it keeps its containers in.
#[derive(Debug, Clone)]
pub struct Runtime {
    /// Program name or path (`skiff`, `runc`, `/usr/sbin/runc`...).
    pub program: String,
    /// `--root` state directory.
    pub root: PathBuf,
}

/// How a RUN ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Exit code (128+signal when killed).
    pub code: i32,
    /// The last part of the combined output (for error messages).
    pub tail: Vec<u8>,
}

const TAIL_BYTES: usize = 64 * 1024;

/// Patch an unpacked bundle's config.json for a build step.
pub fn patch_spec(
    spec: &mut Value,
    network: Network,
    insecure: bool,
    mounts: &[ExtraMount],
    hostname: &str,
) {
    let caps: Vec<&str> = if insecure {
        let mut all = BUILD_CAPS.to_vec();
        all.extend([
            "CAP_SYS_ADMIN",
            "CAP_NET_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_SYS_MODULE",
            "CAP_SYS_RAWIO",
            "CAP_DAC_READ_SEARCH",
            "CAP_IPC_LOCK",
            "CAP_LINUX_IMMUTABLE",
        ]);
        all
    } else {
        BUILD_CAPS.to_vec()
    };
    spec["process"]["terminal"] = json!(false);
    spec["process"]["capabilities"] = json!({
        "bounding": caps, "effective": caps, "permitted": caps,
    });
    spec["process"]["noNewPrivileges"] = json!(false);
    spec["hostname"] = json!(hostname);
    if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
        if network == Network::Host {
            ns.retain(|n| n["type"] != "network");
        } else if !ns.iter().any(|n| n["type"] == "network") {
            ns.push(json!({"type": "network"}));
        }
    }
    if insecure {
        if let Some(l) = spec["linux"].as_object_mut() {
            l.remove("maskedPaths");
            l.remove("readonlyPaths");
        }
    }
    if network == Network::Host {
        // Host networking: the sysfs of another netns cannot be mounted; bind the host's.
        if let Some(ms) = spec["mounts"].as_array_mut() {
            for m in ms.iter_mut() {
                if m["destination"] == "/sys" {
                    *m = json!({"destination": "/sys", "type": "bind", "source": "/sys",
                                "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]});
                }
            }
            ms.retain(|m| m["destination"] != "/sys/fs/cgroup");
        }
    }
    if let Some(ms) = spec["mounts"].as_array_mut() {
        for m in mounts {
            ms.push(json!({
                "destination": m.destination,
                "type": m.kind,
                "source": m.source,
                "options": m.options,
            }));
        }
    }
}

impl Runtime {
    /// Run the bundle as container `id`, streaming its combined output to `out`; the container
    /// is deleted afterwards whatever happens.
    pub fn run(
        &self,
        bundle: &Path,
        id: &str,
        out: &mut dyn FnMut(&[u8]),
    ) -> io::Result<RunOutcome> {
        std::fs::create_dir_all(&self.root)?;
        let (r, w) = nix::unistd::pipe().map_err(io::Error::from)?;
        let w2: OwnedFd = w.try_clone()?;
        let mut child = Command::new(&self.program)
            .arg("--root")
            .arg(&self.root)
            .arg("run")
            .arg("--bundle")
            .arg(bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::from(w))
            .stderr(Stdio::from(w2))
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot start runtime '{}': {e}", self.program),
                )
            })?;
        let mut reader = std::fs::File::from(r);
        let mut tail: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        let mut stop_attempts = 0u32;
        let mut last_stop = std::time::Instant::now();
        loop {
            // Wait for output at most 250 ms at a time, so an interrupt is noticed promptly
            // even if the signal arrived while we were not blocked in read().
            if crate::interrupt::requested()
                && (stop_attempts == 0 || last_stop.elapsed() >= std::time::Duration::from_secs(1))
                && stop_attempts < 60
            {
                // Ask the runtime to stop the container (again, in case it was still being
                // created); its output still drains and the loop ends when the pipe closes.
                stop_attempts += 1;
                last_stop = std::time::Instant::now();
                if stop_attempts == 1 {
                    // SAFETY: plain kill(2) of our own child.
                    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
                }
                self.kill(id);
            }
            let mut fds = [libc::pollfd {
                fd: reader.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 1, 250) };
            if r == 0 || (r < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted)
            {
                continue;
            }
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out(&buf[..n]);
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * TAIL_BYTES {
                        tail.drain(..tail.len() - TAIL_BYTES);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.delete(id);
                    return Err(e);
                }
            }
        }
        let status = child.wait()?;
        self.delete(id);
        use std::os::unix::process::ExitStatusExt;
        let code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        if tail.len() > TAIL_BYTES {
            tail.drain(..tail.len() - TAIL_BYTES);
        }
        Ok(RunOutcome { code, tail })
    }

    /// Best-effort SIGKILL of a container's processes.
    pub fn kill(&self, id: &str) {
        let _ = Command::new(&self.program)
            .arg("--root")
            .arg(&self.root)
            .arg("kill")
            .arg(id)
            .arg("KILL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// Best-effort removal of a container's state (it may already be gone).
    pub fn delete(&self, id: &str) {
        let _ = Command::new(&self.program)
            .arg("--root")
            .arg(&self.root)
            .arg("delete")
            .arg("--force")
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

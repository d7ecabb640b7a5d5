//! Drives an OCI runtime (skiff, runc, crun) through its runc-compatible command line.

use std::{
    env,
    ffi::OsString,
    fs,
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use containerd_shim::monitor::{monitor_subscribe, wait_pid, Topic};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Environment variable that overrides the runtime binary (for tests and benchmarks).
pub const RUNTIME_ENV: &str = "SKIFF_SHIM_RUNTIME";

/// Name of the file in the bundle that records which runtime a container was created with,
/// so a later `delete` action (after a shim crash) uses the same binary and state root.
pub const RUNTIME_RECORD: &str = "skiff-shim.json";

/// The runtime binary plus the state root it keeps containers under.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Runtime {
    /// Path or name of the runtime executable.
    pub binary: PathBuf,
    /// Value passed as `--root`.
    pub root: PathBuf,
}

/// Output of a finished runtime command.
pub struct Finished {
    /// Exit status (128+N when killed by signal N).
    pub status: i32,
    /// Captured standard output (empty unless captured).
    pub stdout: Vec<u8>,
}

/// The stdio a runtime command (and the container process it starts) gets.
pub struct CommandIo {
    /// Standard input.
    pub stdin: Stdio,
    /// Standard output.
    pub stdout: Stdio,
    /// Standard error.
    pub stderr: Stdio,
}

impl CommandIo {
    /// All three streams on /dev/null.
    pub fn null() -> Self {
        CommandIo {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        }
    }
}

/// Picks the runtime binary: the runtime options' BinaryName, then `$SKIFF_SHIM_RUNTIME`,
/// then `skiff` next to the shim executable, then `skiff` on PATH.
pub fn resolve_binary(binary_name: &str) -> PathBuf {
    if !binary_name.is_empty() {
        return PathBuf::from(binary_name);
    }
    if let Some(v) = env::var_os(RUNTIME_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(v);
    }
    if let Ok(exe) = env::current_exe() {
        if let Some(dir) = exe.parent() {
            let cand = dir.join("skiff");
            if cand.is_file() {
                return cand;
            }
        }
    }
    PathBuf::from("skiff")
}

/// Finds an executable by name on PATH (a name with a slash is returned as is).
fn lookup(binary: &Path) -> Result<PathBuf> {
    if binary.components().count() > 1 || binary.is_absolute() {
        if binary.is_file() {
            return Ok(binary.to_path_buf());
        }
        return Err(Error::Runtime(format!(
            "runtime binary {} does not exist",
            binary.display()
        )));
    }
    let path =
        env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/sbin:/usr/bin:/sbin:/bin"));
    for dir in env::split_paths(&path) {
        let cand = dir.join(binary);
        if cand.is_file() {
            return Ok(cand);
        }
    }
    Err(Error::Runtime(format!(
        "runtime binary {} not found on PATH",
        binary.display()
    )))
}

impl Runtime {
    /// Builds the runtime for a namespace: default root is `/run/containerd/<binary name>/<ns>`.
    pub fn new(binary_name: &str, root: &str, namespace: &str) -> Result<Self> {
        let binary = lookup(&resolve_binary(binary_name))?;
        let root = if root.is_empty() {
            let name = binary
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "skiff".into());
            PathBuf::from("/run/containerd").join(name).join(namespace)
        } else {
            PathBuf::from(root).join(namespace)
        };
        Ok(Runtime { binary, root })
    }

    /// Saves this runtime choice in the bundle for a later crash cleanup.
    pub fn record(&self, bundle: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| Error::Runtime(e.to_string()))?;
        fs::write(bundle.join(RUNTIME_RECORD), data)
            .map_err(|e| Error::Io(format!("write {}", RUNTIME_RECORD), e))
    }

    /// Loads the runtime recorded in a bundle, if any.
    pub fn load(bundle: &Path) -> Option<Self> {
        let data = fs::read(bundle.join(RUNTIME_RECORD)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    /// Runs `binary --root R [--log L --log-format json] ARGS` and waits for it through the
    /// shim's reaper (the shim is a subreaper and reaps every child itself).
    pub fn run(
        &self,
        args: &[&str],
        log: Option<&Path>,
        io: CommandIo,
        capture_stdout: bool,
    ) -> Result<Finished> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        if let Some(log) = log {
            let _ = fs::remove_file(log);
            cmd.arg("--log").arg(log).arg("--log-format").arg("json");
        }
        cmd.args(args);
        cmd.stdin(io.stdin);
        if capture_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(io.stdout);
        }
        if log.is_none() {
            cmd.stderr(Stdio::piped());
        } else {
            cmd.stderr(io.stderr);
        }
        let sub = monitor_subscribe(Topic::Pid)
            .map_err(|e| Error::Runtime(format!("subscribe to exits: {e}")))?;
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Io(format!("spawn runtime {}", self.binary.display()), e))?;
        drop(cmd);
        let mut stdout = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let _ = out.read_to_end(&mut stdout);
        }
        let mut stderr = Vec::new();
        if let Some(mut err) = child.stderr.take() {
            let _ = err.read_to_end(&mut stderr);
        }
        let pid = child.id() as i32;
        let status = wait_pid(pid, sub);
        if status != 0 {
            let mut msg = String::new();
            if let Some(log) = log {
                msg = last_log_error(log);
            }
            if msg.is_empty() {
                msg = String::from_utf8_lossy(&stderr).trim().to_string();
            }
            return Err(Error::Runtime(format!(
                "{} {} failed (exit {}): {}",
                self.binary.display(),
                args.first().copied().unwrap_or(""),
                status,
                msg
            )));
        }
        Ok(Finished { status, stdout })
    }

    /// Runs a command with nothing attached, returning its error text on failure.
    pub fn simple(&self, args: &[&str]) -> Result<Finished> {
        self.run(args, None, CommandIo::null(), false)
    }
}

/// Extracts the last error message from a runc-style JSON log file.
fn last_log_error(log: &Path) -> String {
    let Ok(text) = fs::read_to_string(log) else {
        return String::new();
    };
    let mut last = String::new();
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            let level = v.get("level").and_then(|l| l.as_str()).unwrap_or("");
            if level == "error" || level == "fatal" {
                if let Some(m) = v.get("msg").and_then(|m| m.as_str()) {
                    last = m.to_string();
                }
            }
        } else if !line.trim().is_empty() {
            last = line.trim().to_string();
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_error_takes_last_error_line() {
        let dir = std::env::temp_dir().join(format!("skiff-shim-log-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("test setup");
        let log = dir.join("log.json");
        fs::write(
            &log,
            "{\"level\":\"info\",\"msg\":\"x\"}\n{\"level\":\"error\",\"msg\":\"boom\"}\n",
        )
        .expect("test setup");
        assert_eq!(last_log_error(&log), "boom");
        fs::write(&log, "plain text failure\n").expect("test setup");
        assert_eq!(last_log_error(&log), "plain text failure");
        fs::remove_dir_all(&dir).expect("test setup");
    }

    #[test]
    fn binary_name_option_wins() {
        assert_eq!(resolve_binary("/x/runc"), PathBuf::from("/x/runc"));
    }

    #[test]
    fn missing_binary_is_a_clear_error() {
        let e = Runtime::new("/nonexistent/skiff", "", "default").expect_err("must fail");
        assert!(e.to_string().contains("/nonexistent/skiff"), "{e}");
    }

    #[test]
    fn default_root_is_per_binary_and_namespace() {
        let r = Runtime::new("/bin/sh", "", "k8s.io").expect("test setup");
        assert_eq!(r.root, PathBuf::from("/run/containerd/sh/k8s.io"));
        let r = Runtime::new("/bin/sh", "/run/x", "ns").expect("test setup");
        assert_eq!(r.root, PathBuf::from("/run/x/ns"));
    }
}

//! skiff's side of the systemd manager client: a `skiff-systemd` helper process that speaks
//! D-Bus for us (see [`super::protocol`]), started once per connection.
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use super::protocol::{Property, Request, Response, HELPER_NAME};
use crate::cgroups::CgroupError;

/// An open connection to systemd's manager, through the helper process.
pub struct Systemd {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

fn invalid(msg: String) -> CgroupError {
    CgroupError::Invalid(msg)
}

/// Where the helper is: next to the running skiff, else on PATH.
///
/// cgroups are set up by the skiff process started from the installed binary (only the
/// container's init re-executes a sealed copy, see `sealed_exe`), so /proc/self/exe names the
/// real file; a sealed memfd copy (`/memfd:skiff (deleted)`) has no usable directory and falls
/// through to PATH.
pub fn helper_path() -> Result<PathBuf, CgroupError> {
    find_helper(
        std::env::current_exe().ok().as_deref(),
        std::env::var_os("PATH").as_deref(),
    )
}

/// [`helper_path`] for a given executable path and PATH value.
fn find_helper(exe: Option<&Path>, path: Option<&OsStr>) -> Result<PathBuf, CgroupError> {
    let beside = exe.and_then(Path::parent).map(|d| d.join(HELPER_NAME));
    if let Some(p) = beside.as_ref().filter(|p| p.is_file()) {
        return Ok(p.clone());
    }
    for dir in path
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let p = dir.join(HELPER_NAME);
        if dir.is_absolute() && p.is_file() {
            return Ok(p);
        }
    }
    Err(invalid(format!(
        "--systemd-cgroup: the D-Bus helper {HELPER_NAME} was not found {}or on PATH; \
         install it in the same directory as skiff",
        beside
            .as_ref()
            .and_then(|p| p.parent())
            .map(|d| format!("in {} ", d.display()))
            .unwrap_or_default()
    )))
}

impl Systemd {
    /// Start the helper and connect it to systemd through the system bus
    /// (`DBUS_SYSTEM_BUS_ADDRESS`, else unix:path=/run/dbus/system_bus_socket), as runc does.
    pub fn connect() -> Result<Self, CgroupError> {
        let helper = helper_path()?;
        Self::connect_with(Command::new(&helper), &helper)
    }

    /// [`Systemd::connect`] through the helper command `cmd` (`helper` names it in errors).
    fn connect_with(mut cmd: Command, helper: &Path) -> Result<Self, CgroupError> {
        // Only what the D-Bus client needs from our environment.
        cmd.env_clear();
        if let Some(addr) = std::env::var_os("DBUS_SYSTEM_BUS_ADDRESS") {
            cmd.env("DBUS_SYSTEM_BUS_ADDRESS", addr);
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // SAFETY: the closure only makes the async-signal-safe close_range syscall, so no fd
        // we hold (state dir locks, container sockets, the pty master) reaches the helper.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| {
            invalid(format!(
                "--systemd-cgroup: starting the D-Bus helper {}: {e}",
                helper.display()
            ))
        })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(invalid(
                "--systemd-cgroup: the D-Bus helper has no stdin/stdout pipes".into(),
            ));
        };
        let mut sd = Self {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        };
        match sd.call(&Request::Connect)? {
            Response::Ok => Ok(sd),
            other => Err(sd.unexpected(other)),
        }
    }

    /// Send one request and read its response; a helper error becomes a CgroupError.
    fn call(&mut self, req: &Request) -> Result<Response, CgroupError> {
        let broken = |e: String| {
            invalid(format!(
                "--systemd-cgroup: talking to the D-Bus helper {HELPER_NAME}: {e}"
            ))
        };
        let mut line = serde_json::to_string(req).map_err(|e| broken(e.to_string()))?;
        line.push('\n');
        let stdin = self.stdin.as_mut().ok_or_else(|| broken("closed".into()))?;
        let exited = |child: &mut std::process::Child| {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            broken(format!("it exited unexpectedly ({status})"))
        };
        match stdin
            .write_all(line.as_bytes())
            .and_then(|()| stdin.flush())
        {
            Ok(()) => {}
            // It died before reading the request: say so, as when it dies before answering.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                return Err(exited(&mut self.child))
            }
            Err(e) => return Err(broken(e.to_string())),
        }
        let mut answer = String::new();
        let n = self
            .stdout
            .read_line(&mut answer)
            .map_err(|e| broken(e.to_string()))?;
        if n == 0 {
            return Err(exited(&mut self.child));
        }
        match serde_json::from_str::<Response>(&answer) {
            Ok(Response::Error(msg)) => Err(invalid(msg)),
            Ok(r) => Ok(r),
            Err(e) => Err(broken(format!("bad response {:?}: {e}", answer.trim_end()))),
        }
    }

    fn unexpected(&self, r: Response) -> CgroupError {
        invalid(format!(
            "--systemd-cgroup: unexpected answer from the D-Bus helper {HELPER_NAME}: {r:?}"
        ))
    }

    /// systemd's major version (0 when unknown), to leave out properties it does not know.
    pub fn version(&mut self) -> u32 {
        match self.call(&Request::Version) {
            Ok(Response::Version(v)) => v,
            _ => 0,
        }
    }

    fn expect_ok(&mut self, req: &Request) -> Result<(), CgroupError> {
        match self.call(req)? {
            Response::Ok => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    /// Start transient unit `name` with `props` and wait until systemd has finished the job
    /// (a leftover failed unit of the same name is reset and the start retried once).
    pub fn start_transient_unit(
        &mut self,
        name: &str,
        props: Vec<Property>,
    ) -> Result<(), CgroupError> {
        self.expect_ok(&Request::StartTransientUnit {
            name: name.into(),
            props,
        })
    }

    /// Stop unit `name` (waiting for the job) and clear a failed state so systemd forgets it.
    /// A unit that no longer exists counts as stopped.
    pub fn stop_unit(&mut self, name: &str) -> Result<(), CgroupError> {
        self.expect_ok(&Request::StopUnit { name: name.into() })
    }

    /// Change properties of a running unit (runtime only, like `systemctl set-property --runtime`).
    pub fn set_unit_properties(
        &mut self,
        name: &str,
        props: Vec<Property>,
    ) -> Result<(), CgroupError> {
        if props.is_empty() {
            return Ok(());
        }
        self.expect_ok(&Request::SetUnitProperties {
            name: name.into(),
            props,
        })
    }

    /// A string property of unit `name` (e.g. `ControlGroup` of a scope); None when unknown.
    pub fn unit_string(&mut self, name: &str, iface: &str, prop: &str) -> Option<String> {
        match self.call(&Request::UnitString {
            name: name.into(),
            iface: iface.into(),
            prop: prop.into(),
        }) {
            Ok(Response::Str(s)) => s,
            _ => None,
        }
    }
}

impl Drop for Systemd {
    /// Closing stdin makes the helper exit; reap it so no zombie is left.
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_helper_beside_then_on_path() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let exe = a.path().join("skiff");
        let path = std::env::join_paths([Path::new("relative"), b.path()]).expect("PATH");
        // Nowhere: the error names the helper and where it was looked for.
        let e = find_helper(Some(&exe), Some(&path))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("skiff-systemd"), "{e}");
        assert!(e.contains(&a.path().display().to_string()), "{e}");
        // On PATH.
        std::fs::write(b.path().join(HELPER_NAME), "").expect("write");
        assert_eq!(
            find_helper(Some(&exe), Some(&path)).ok(),
            Some(b.path().join(HELPER_NAME))
        );
        // Beside skiff wins.
        std::fs::write(a.path().join(HELPER_NAME), "").expect("write");
        assert_eq!(
            find_helper(Some(&exe), Some(&path)).ok(),
            Some(a.path().join(HELPER_NAME))
        );
        // A sealed memfd copy has no useful directory.
        assert!(find_helper(Some(Path::new("/memfd:skiff (deleted)")), None).is_err());
    }

    fn fake(script: &str) -> Result<Systemd, CgroupError> {
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c").arg(script);
        Systemd::connect_with(cmd, Path::new("/bin/sh"))
    }

    #[test]
    fn helper_errors_reach_the_caller() {
        // The helper's message is passed through unchanged.
        let e = fake(r#"read l; echo '{"error":"--systemd-cgroup: no bus here"}'"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--systemd-cgroup: no bus here"), "{e}");
        // A helper that dies is named.
        let e = fake("exit 3")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("skiff-systemd") && e.contains("exited"), "{e}");
        // A working exchange: connect, then version and a unit property.
        let mut sd = fake(
            r#"read l; echo '"ok"'; read l; echo '{"version":252}'; read l; echo '{"str":"/x.scope"}'"#,
        )
        .expect("connect");
        assert_eq!(sd.version(), 252);
        assert_eq!(
            sd.unit_string("x.scope", "org.freedesktop.systemd1.Scope", "ControlGroup")
                .as_deref(),
            Some("/x.scope")
        );
    }
}

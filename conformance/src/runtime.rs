//! Driving a runtime CLI (skiff, runc or crun) the way a test or an orchestrator does.
//!
//! Each [`Runtime`] has its own private state root (`--root`) in a temp dir, so tests never see each other's
//! containers. Commands run with a timeout, their stdout/stderr go to files (a detached container inherits
//! them, so pipes would never reach EOF) and come back as an [`Output`] that prints the command line and both
//! streams when a test fails. A [`Container`] is a Drop guard: it force-deletes its container and then fails
//! the test if anything leaked (see [`crate::leaks`]).
//!
//! [`for_each`] runs a scenario under every selected runtime (env `SKIFF_RUNTIMES`, default `runc,skiff`),
//! [`compare`] runs it under runc and each other runtime and asserts the (normalised) results are equal.

use crate::bundle::Bundle;
use crate::leaks;
use serde_json::Value;
use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The runtimes the harness knows how to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// skiff from this workspace (see [`crate::bins::skiff`]).
    Skiff,
    /// runc from PATH, the reference.
    Runc,
    /// crun from PATH. crun 1.8 refuses hybrid cgroup hosts, so on those each crun process first enters a
    /// private mount namespace where /sys/fs/cgroup/unified/cgroup.controllers is covered by /dev/null
    /// (done in the forked child before exec, so no extra process is involved).
    Crun,
}

impl Kind {
    /// Lowercase binary-style name (`skiff`, `runc`, `crun`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Skiff => "skiff",
            Kind::Runc => "runc",
            Kind::Crun => "crun",
        }
    }

    /// Parse a name as [`Kind::name`] prints it.
    pub fn parse(s: &str) -> Option<Kind> {
        match s.trim() {
            "skiff" => Some(Kind::Skiff),
            "runc" => Some(Kind::Runc),
            "crun" => Some(Kind::Crun),
            _ => None,
        }
    }

    /// Locate this runtime's binary.
    pub fn binary(self) -> Result<PathBuf, RuntimeError> {
        match self {
            Kind::Skiff => crate::bins::skiff().map_err(RuntimeError::Bin),
            Kind::Runc => crate::bins::runc().ok_or(RuntimeError::NotInstalled("runc")),
            Kind::Crun => crate::bins::crun().ok_or(RuntimeError::NotInstalled("crun")),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a runtime cannot be driven.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A workspace binary is missing.
    #[error(transparent)]
    Bin(#[from] crate::bins::BinError),
    /// A system runtime is not installed.
    #[error("{0} is not installed")]
    NotInstalled(&'static str),
    /// Temp dir creation failed.
    #[error("creating the runtime state root: {0}")]
    Io(#[from] std::io::Error),
}

/// The result of one runtime command; `Display` shows everything needed to debug a failure.
#[derive(Debug, Clone)]
pub struct Output {
    /// Shell-like rendering of the command line.
    pub cmdline: String,
    /// Exit code; 128+N when killed by signal N; -1 when it could not be spawned or timed out.
    pub code: i32,
    /// Captured stdout (lossy UTF-8).
    pub stdout: String,
    /// Captured stderr (lossy UTF-8).
    pub stderr: String,
    /// Whether the timeout hit and the command was killed.
    pub timed_out: bool,
}

impl Output {
    /// Exit code 0 and no timeout.
    pub fn success(&self) -> bool {
        self.code == 0 && !self.timed_out
    }

    /// Panic (showing the command and its output) unless it succeeded; returns self for chaining.
    #[track_caller]
    pub fn ok(self) -> Self {
        assert!(self.success(), "command failed:\n{self}");
        self
    }

    /// Panic (showing the command and its output) if it succeeded or timed out; returns self.
    #[track_caller]
    pub fn fail(self) -> Self {
        assert!(
            !self.success() && !self.timed_out,
            "command should have failed:\n{self}"
        );
        self
    }

    /// Panic unless the exit code is `code`.
    #[track_caller]
    pub fn code_is(self, code: i32) -> Self {
        assert_eq!(self.code, code, "unexpected exit code:\n{self}");
        self
    }

    /// Parse stdout as JSON, panicking with the output if it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        match serde_json::from_str(&self.stdout) {
            Ok(v) => v,
            Err(e) => panic!("stdout is not JSON ({e}):\n{self}"),
        }
    }

    /// stdout with surrounding whitespace trimmed.
    pub fn out(&self) -> &str {
        self.stdout.trim()
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "$ {}", self.cmdline)?;
        writeln!(
            f,
            "exit code: {}{}",
            self.code,
            if self.timed_out {
                " (TIMED OUT, killed)"
            } else {
                ""
            }
        )?;
        writeln!(f, "--- stdout ---\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr ---\n{}", self.stderr.trim_end())
    }
}

/// Default per-command timeout: `$SKIFF_TEST_TIMEOUT` seconds, else 60 (the machine is shared and slow).
pub fn default_timeout() -> Duration {
    let secs = std::env::var("SKIFF_TEST_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// A runtime binary plus a private state root; dropping it force-deletes whatever containers remain there.
pub struct Runtime {
    kind: Kind,
    binary: PathBuf,
    scratch: Option<tempfile::TempDir>,
    seq: AtomicUsize,
    timeout: Duration,
}

impl Runtime {
    /// A runtime of this kind with a fresh temp state root.
    pub fn new(kind: Kind) -> Result<Runtime, RuntimeError> {
        let binary = kind.binary()?;
        Runtime::with_binary(kind, binary)
    }

    /// Like [`Runtime::new`] but with an explicit binary (e.g. a release build for benchmarks).
    pub fn with_binary(kind: Kind, binary: PathBuf) -> Result<Runtime, RuntimeError> {
        let scratch = tempfile::Builder::new()
            .prefix(&format!("skiff-rt-{}-", kind.name()))
            .tempdir()?;
        std::fs::create_dir(scratch.path().join("root"))?;
        std::fs::create_dir(scratch.path().join("io"))?;
        Ok(Runtime {
            kind,
            binary,
            scratch: Some(scratch),
            seq: AtomicUsize::new(0),
            timeout: default_timeout(),
        })
    }

    /// skiff from this workspace.
    pub fn skiff() -> Result<Runtime, RuntimeError> {
        Runtime::new(Kind::Skiff)
    }

    /// runc from PATH.
    pub fn runc() -> Result<Runtime, RuntimeError> {
        Runtime::new(Kind::Runc)
    }

    /// crun from PATH (with the hybrid-cgroup workaround).
    pub fn crun() -> Result<Runtime, RuntimeError> {
        Runtime::new(Kind::Crun)
    }

    /// Which runtime this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its name, for messages.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The binary being run.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// The private state root passed as `--root`.
    pub fn root(&self) -> PathBuf {
        self.scratch_dir().join("root")
    }

    /// A scratch directory owned by this runtime (removed on drop) for pid files, sockets, process.json...
    pub fn scratch_dir(&self) -> &Path {
        self.scratch
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    /// A new unique path inside [`Runtime::scratch_dir`] (not created), e.g. for `--pid-file`.
    pub fn scratch_path(&self, name: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.scratch_dir().join(format!("{n}-{name}"))
    }

    /// Change the per-command timeout (default [`default_timeout`]).
    pub fn set_timeout(&mut self, t: Duration) {
        self.timeout = t;
    }

    /// A `std::process::Command` for `<runtime> --root <root> <args>` (with crun's workaround applied), for
    /// callers that need full control (benchmarks). Most tests want [`Runtime::invocation`].
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(self.root()).args(args);
        if self.kind == Kind::Crun {
            apply_crun_workaround(&mut cmd);
        }
        cmd
    }

    /// A command ready to run with a timeout and captured output.
    pub fn invocation<I, S>(&self, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let mut shown = vec![
            self.binary.display().to_string(),
            "--root".into(),
            self.root().display().to_string(),
        ];
        shown.extend(args.iter().map(|a| shell_quote(&a.to_string_lossy())));
        Invocation {
            cmd: self.command(&args),
            cmdline: shown.join(" "),
            stdin: None,
            timeout: self.timeout,
            io_base: self.scratch_path("io"),
        }
    }

    /// Run `<runtime> --root <root> <args>` to completion.
    pub fn cmd<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.invocation(args).output()
    }

    /// `list` (table) output.
    pub fn list(&self) -> Output {
        self.cmd(["list"])
    }

    /// A guard for a container with a fresh unique id made from `bundle` (whose config.json is written now).
    #[track_caller]
    pub fn container<'a>(&'a self, bundle: &'a Bundle) -> Container<'a> {
        let id = crate::unique_name(&format!("ct-{}", self.name()));
        self.container_with_id(bundle, &id)
    }

    /// Like [`Runtime::container`] with a chosen id (the guard still deletes it).
    #[track_caller]
    pub fn container_with_id<'a>(&'a self, bundle: &'a Bundle, id: &str) -> Container<'a> {
        if let Err(e) = bundle.save() {
            panic!("writing config.json: {e}");
        }
        Container {
            rt: self,
            bundle,
            id: id.to_string(),
            cleaned: false,
        }
    }

    /// The leak scope for container `id` of this runtime: its cgroups, its state dir (must be gone, nothing
    /// mounted there), and `dirs` (nothing mounted below, no process using them).
    pub fn leak_scope(&self, id: &str, dirs: &[&Path]) -> leaks::Scope {
        let state = self.root().join(id);
        let mut all: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
        all.push(state.clone());
        leaks::Scope {
            ids: vec![id.to_string()],
            dirs: all,
            gone: vec![state],
        }
    }

    /// Force-delete container `id` (kill -9, `delete --force`), ignoring errors: cleanup, not a check.
    pub fn force_delete(&self, id: &str) {
        let quick = |args: &[&str]| {
            let _ = self
                .invocation(args)
                .timeout(Duration::from_secs(20))
                .output();
        };
        quick(&["kill", id, "KILL"]);
        quick(&["delete", "--force", id]);
        // Some runtimes refuse `delete --force` of a container that is still being torn down: once more.
        if self.root().join(id).exists() {
            std::thread::sleep(Duration::from_millis(100));
            quick(&["delete", "--force", id]);
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let root = self.root();
        if let Ok(rd) = std::fs::read_dir(&root) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    if let Some(id) = e.file_name().to_str() {
                        self.force_delete(id);
                    }
                }
            }
        }
        if let Some(dir) = self.scratch.take() {
            if leaks::unmount_under(dir.path()) {
                let _ = dir.close();
            } else {
                eprintln!("WARNING: mounts remain under {:?}; leaving it", dir.path());
                let _ = dir.keep();
            }
        }
    }
}

fn apply_crun_workaround(cmd: &mut Command) {
    let target = "/sys/fs/cgroup/unified/cgroup.controllers";
    if !Path::new(target).exists() {
        return;
    }
    let (Ok(root), Ok(null), Ok(target), Ok(none)) = (
        CString::new("/"),
        CString::new("/dev/null"),
        CString::new(target),
        CString::new("none"),
    ) else {
        return;
    };
    // SAFETY: the closure only makes raw syscalls on data prepared before fork (async-signal-safe).
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                none.as_ptr(),
                root.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if libc::mount(
                null.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Quote `s` for a POSIX shell (as-is when it needs no quoting), for command lines shown in
/// failures and for `sh -c` strings.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// A runtime command being prepared: add stdin data, a timeout, then [`Invocation::output`] or
/// [`Invocation::spawn`].
pub struct Invocation {
    cmd: Command,
    cmdline: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    io_base: PathBuf,
}

impl Invocation {
    /// Any program (not a runtime, e.g. skiff-image) run the same way: default timeout, stdout and
    /// stderr captured in `io_base`.out/.err (give each command its own base when a detached
    /// process may keep writing to an earlier one's files).
    pub fn program<I, S>(program: &Path, args: I, io_base: PathBuf) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<OsString> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let shown: Vec<String> = std::iter::once(program.display().to_string())
            .chain(args.iter().map(|a| shell_quote(&a.to_string_lossy())))
            .collect();
        let mut cmd = Command::new(program);
        cmd.args(&args);
        Invocation {
            cmd,
            cmdline: shown.join(" "),
            stdin: None,
            timeout: default_timeout(),
            io_base,
        }
    }

    /// Feed these bytes on stdin (default: /dev/null).
    pub fn stdin(mut self, data: &[u8]) -> Self {
        self.stdin = Some(data.to_vec());
        self
    }

    /// Kill the command (and its process group) after this long.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Set an environment variable for the runtime process.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Start the command in its own process group; stdout/stderr go to files read by [`Running::wait`].
    pub fn spawn(mut self) -> std::io::Result<Running> {
        let out_path = self.io_base.with_extension("out");
        let err_path = self.io_base.with_extension("err");
        let stdin = match &self.stdin {
            Some(data) => {
                let p = self.io_base.with_extension("in");
                std::fs::write(&p, data)?;
                Stdio::from(File::open(&p)?)
            }
            None => Stdio::null(),
        };
        self.cmd
            .stdin(stdin)
            .stdout(File::create(&out_path)?)
            .stderr(File::create(&err_path)?)
            .process_group(0);
        let child = self.cmd.spawn()?;
        Ok(Running {
            child: Some(child),
            cmdline: self.cmdline,
            out_path,
            err_path,
            deadline: Instant::now() + self.timeout,
        })
    }

    /// Run to completion (or timeout). Never panics: a spawn failure comes back as code -1 with the error in
    /// stderr.
    pub fn output(self) -> Output {
        let cmdline = self.cmdline.clone();
        match self.spawn() {
            Ok(r) => r.wait(),
            Err(e) => Output {
                cmdline,
                code: -1,
                stdout: String::new(),
                stderr: format!("spawn failed: {e}"),
                timed_out: false,
            },
        }
    }
}

/// A runtime command in flight (e.g. a foreground `run` a test sends signals to); killed if dropped.
pub struct Running {
    child: Option<Child>,
    cmdline: String,
    out_path: PathBuf,
    err_path: PathBuf,
    deadline: Instant,
}

impl Running {
    /// The runtime process's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    /// Send a signal to the runtime process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) -> nix::Result<()> {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig)
    }

    /// What it has written to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.out_path).unwrap_or_default()).into_owned()
    }

    /// Wait (bounded by the timeout; then the process group is killed) and collect the output.
    pub fn wait(mut self) -> Output {
        let mut timed_out = false;
        let mut code = -1;
        if let Some(mut child) = self.child.take() {
            loop {
                match child.try_wait() {
                    Ok(Some(st)) => {
                        code = st.code().unwrap_or_else(|| 128 + st.signal().unwrap_or(0));
                        break;
                    }
                    Ok(None) if Instant::now() < self.deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Ok(None) => {
                        timed_out = true;
                        kill_group(&mut child);
                        break;
                    }
                    Err(_) => break,
                }
            }
        }
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        Output {
            cmdline: self.cmdline.clone(),
            code: if timed_out { -1 } else { code },
            stdout: read(&self.out_path),
            stderr: read(&self.err_path),
            timed_out,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(&mut child);
        }
    }
}

fn kill_group(child: &mut Child) {
    let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
    let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// One container of one runtime, made from one bundle. Its methods run the runtime's subcommands for this id.
/// Dropping it force-deletes the container and panics (unless already panicking) if anything leaked.
pub struct Container<'a> {
    rt: &'a Runtime,
    bundle: &'a Bundle,
    id: String,
    cleaned: bool,
}

impl<'a> Container<'a> {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The runtime driving it.
    pub fn runtime(&self) -> &'a Runtime {
        self.rt
    }

    /// The bundle it was made from.
    pub fn bundle(&self) -> &'a Bundle {
        self.bundle
    }

    fn bundle_arg(&self) -> String {
        self.bundle.path().display().to_string()
    }

    /// `create --bundle B <id>`.
    pub fn create(&self) -> Output {
        self.create_with(&[])
    }

    /// `create --bundle B <flags...> <id>`.
    pub fn create_with(&self, flags: &[&str]) -> Output {
        let b = self.bundle_arg();
        let mut args = vec!["create", "--bundle", &b];
        args.extend_from_slice(flags);
        args.push(&self.id);
        self.rt.cmd(args)
    }

    /// `start <id>`.
    pub fn start(&self) -> Output {
        self.rt.cmd(["start", &self.id])
    }

    /// Foreground `run --bundle B <id>`: exit code is the container's.
    pub fn run(&self) -> Output {
        self.run_with(&[])
    }

    /// `run --bundle B <flags...> <id>` (e.g. `--detach`, `--keep`, `--pid-file F`).
    pub fn run_with(&self, flags: &[&str]) -> Output {
        self.run_invocation(flags).output()
    }

    /// The `run` invocation, to add stdin or spawn it and send signals to the runtime.
    pub fn run_invocation(&self, flags: &[&str]) -> Invocation {
        let b = self.bundle_arg();
        let mut args = vec!["run", "--bundle", &b];
        args.extend_from_slice(flags);
        args.push(&self.id);
        self.rt.invocation(args)
    }

    /// `state <id>`.
    pub fn state(&self) -> Output {
        self.rt.cmd(["state", &self.id])
    }

    /// `state <id>` parsed; panics with the output if it fails or is not JSON.
    #[track_caller]
    pub fn state_json(&self) -> Value {
        self.state().ok().json()
    }

    /// The `status` field of the state.
    #[track_caller]
    pub fn status(&self) -> String {
        self.state_json()["status"]
            .as_str()
            .unwrap_or("<missing>")
            .to_string()
    }

    /// The `pid` field of the state (0 if missing).
    #[track_caller]
    pub fn pid(&self) -> i64 {
        self.state_json()["pid"].as_i64().unwrap_or(0)
    }

    /// `kill <id> <signal>`.
    pub fn kill(&self, signal: &str) -> Output {
        self.rt.cmd(["kill", &self.id, signal])
    }

    /// `kill --all <id> <signal>`.
    pub fn kill_all(&self, signal: &str) -> Output {
        self.rt.cmd(["kill", "--all", &self.id, signal])
    }

    /// `delete <id>`.
    pub fn delete(&self) -> Output {
        self.rt.cmd(["delete", &self.id])
    }

    /// `delete --force <id>`.
    pub fn delete_force(&self) -> Output {
        self.rt.cmd(["delete", "--force", &self.id])
    }

    /// `exec <id> <args...>`.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_with(&[], args)
    }

    /// `exec <flags...> <id> <args...>` (e.g. `--env`, `--cwd`, `--user`, `-p FILE`, `--detach`).
    pub fn exec_with(&self, flags: &[&str], args: &[&str]) -> Output {
        let mut v = vec!["exec"];
        v.extend_from_slice(flags);
        v.push(&self.id);
        v.extend_from_slice(args);
        self.rt.cmd(v)
    }

    /// `ps <flags...> <id> [-- ps args]`.
    pub fn ps(&self, flags: &[&str]) -> Output {
        let mut v = vec!["ps"];
        v.extend_from_slice(flags);
        v.push(&self.id);
        self.rt.cmd(v)
    }

    /// Wait (bounded) until the state's status is `want`; returns the last status seen.
    pub fn wait_status(&self, want: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.state();
            let s = if st.success() {
                serde_json::from_str::<Value>(&st.stdout)
                    .ok()
                    .and_then(|v| v["status"].as_str().map(str::to_string))
                    .unwrap_or_default()
            } else {
                format!("<state failed: {}>", st.stderr.trim())
            };
            if s == want || Instant::now() >= deadline {
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The leak scope of this container (its id, bundle, state dir).
    pub fn leak_scope(&self) -> leaks::Scope {
        self.rt.leak_scope(&self.id, &[self.bundle.path()])
    }

    /// Force-delete now and return what (if anything) leaked; the guard then does nothing on drop.
    pub fn cleanup(&mut self) -> leaks::Report {
        self.cleaned = true;
        self.rt.force_delete(&self.id);
        leaks::wait_clean(&self.leak_scope(), Duration::from_secs(5))
    }

    /// Like [`Container::cleanup`] but panics with the report if anything leaked.
    #[track_caller]
    pub fn assert_no_leaks(&mut self) {
        let r = self.cleanup();
        assert!(
            r.is_clean(),
            "[{}] container {} leaked:\n{r}",
            self.rt.name(),
            self.id
        );
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        let r = self.cleanup();
        if !r.is_clean() {
            let msg = format!("[{}] container {} leaked:\n{r}", self.rt.name(), self.id);
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// The runtimes tests run under: `$SKIFF_RUNTIMES` (comma-separated, e.g. `runc,crun,skiff`) or `runc,skiff`.
pub fn selected() -> Vec<Kind> {
    let spec = std::env::var("SKIFF_RUNTIMES").unwrap_or_else(|_| "runc,skiff".to_string());
    spec.split(',').filter_map(Kind::parse).collect()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "<non-string panic>".to_string()
    }
}

/// Run `scenario` under each [`selected`] runtime, each with its own fresh [`Runtime`]. A runtime that is
/// not installed (runc, crun) is skipped with a `SKIP` line; skiff missing is a failure. All runtimes run
/// even when one fails; the test then fails naming every failing runtime. `skip!` inside the closure skips
/// just that runtime.
#[track_caller]
pub fn for_each(scenario: impl Fn(&Runtime)) {
    let mut failed = Vec::new();
    for kind in selected() {
        let rt = match Runtime::new(kind) {
            Ok(rt) => rt,
            Err(e) if kind != Kind::Skiff => {
                eprintln!("SKIP [{kind}]: {e}");
                continue;
            }
            Err(e) => {
                failed.push(format!("{kind}: {e}"));
                continue;
            }
        };
        eprintln!("=== [{kind}]");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&rt)));
        drop(rt);
        if let Err(p) = r {
            failed.push(format!("{kind}: {}", panic_message(p.as_ref())));
        }
    }
    assert!(
        failed.is_empty(),
        "scenario failed under:\n{}",
        failed.join("\n---\n")
    );
}

/// Differential check: run `observe` under runc (the reference) and under every other selected runtime, and
/// assert each result equals runc's. `observe` should normalise ids, pids, paths and times. Skips (with a
/// `SKIP` line) when runc is not installed.
#[track_caller]
pub fn compare<T: PartialEq + fmt::Debug>(observe: impl Fn(&Runtime) -> T) {
    let reference = match Runtime::runc() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("SKIP: differential test needs runc: {e}");
            return;
        }
    };
    eprintln!("=== [runc] (reference)");
    let expected = observe(&reference);
    drop(reference);
    let mut failed = Vec::new();
    for kind in selected().into_iter().filter(|k| *k != Kind::Runc) {
        let rt = match Runtime::new(kind) {
            Ok(rt) => rt,
            Err(e) if kind != Kind::Skiff => {
                eprintln!("SKIP [{kind}]: {e}");
                continue;
            }
            Err(e) => {
                failed.push(format!("{kind}: {e}"));
                continue;
            }
        };
        eprintln!("=== [{kind}]");
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| observe(&rt))) {
            Ok(got) if got == expected => {}
            Ok(got) => failed.push(format!(
                "{kind} differs from runc (- runc, + {kind}):\n{}",
                line_diff(&format!("{expected:#?}"), &format!("{got:#?}"))
            )),
            Err(p) => failed.push(format!("{kind}: {}", panic_message(p.as_ref()))),
        }
    }
    assert!(
        failed.is_empty(),
        "differential check failed:\n{}",
        failed.join("\n---\n")
    );
}

/// A minimal line diff (LCS) of two texts: differing lines prefixed `-`/`+`, with one line of context.
fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    if a.len() * b.len() > 16_000_000 {
        return format!(
            "(too long to diff)\n--- runc ---\n{}\n--- other ---\n{}",
            a.join("\n"),
            b.join("\n")
        );
    }
    // lcs[i][j] = LCS length of a[i..] and b[j..]
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops: Vec<(char, &str)> = Vec::new();
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(('+', b[j]));
            j += 1;
        } else {
            ops.push(('-', a[i]));
            i += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(1)..(k + 2).min(ops.len())]
            .iter()
            .any(|o| o.0 != ' ')
    };
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if *op != ' ' || near(k) {
            if skipped {
                out.push_str("  ...\n");
                skipped = false;
            }
            out.push_str(&format!("{op} {line}\n"));
        } else {
            skipped = true;
        }
    }
    out
}

//! Container lifecycle on the runtime side: create (fork the sealed init and drive the sync
//! protocol), start, destroy.
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::CgroupManager;
use crate::commands::GlobalOptions;
use crate::init::{self, InitRequest, Mode};
use crate::namespaces::{self, Plan};
use crate::state::{self, ContainerState, StateDir, Status};
use crate::sync::{Channel, Msg};
use crate::{hooks, logging, rootfs, sealed_exe, tty};

/// Options of `create` (and the create half of `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Container id.
    pub id: String,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// `--pid-file`.
    pub pid_file: Option<PathBuf>,
    /// `--console-socket`.
    pub console_socket: Option<PathBuf>,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// `--preserve-fds`.
    pub preserve_fds: u32,
    /// Foreground `run`: the runtime stays and may proxy the terminal itself.
    pub foreground: bool,
}

/// A container whose init is blocked waiting for `start`.
#[derive(Debug)]
pub struct Created {
    /// Locked state directory.
    pub dir: StateDir,
    /// Persisted state.
    pub state: ContainerState,
    /// The pty master when the runtime proxies the terminal (foreground run).
    pub console: Option<OwnedFd>,
}

/// Load and check `config.json` of `bundle`; returns (absolute bundle, spec, absolute rootfs).
pub fn load_bundle(bundle: &Path) -> Result<(PathBuf, Spec, PathBuf)> {
    let bundle =
        std::fs::canonicalize(bundle).with_context(|| format!("bundle {}", bundle.display()))?;
    let cfg = bundle.join("config.json");
    let data = std::fs::read(&cfg).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            anyhow::anyhow!("JSON specification file config.json not found")
        } else {
            anyhow::anyhow!("reading {}: {e}", cfg.display())
        }
    })?;
    let spec: Spec = serde_json::from_slice(&data)
        .map_err(|e| anyhow::anyhow!("parsing {}: {e}", cfg.display()))?;
    let process = spec
        .process()
        .as_ref()
        .context("config.json: process is missing")?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        bail!("args must not be empty");
    }
    if spec.linux().is_none() {
        bail!("config.json: linux section is missing");
    }
    let root = spec
        .root()
        .as_ref()
        .context("config.json: root is missing")?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    let rootfs = std::fs::canonicalize(&rootfs)
        .map_err(|e| anyhow::anyhow!("rootfs ({}) does not exist: {e}", rootfs.display()))?;
    if !rootfs.is_dir() {
        bail!("rootfs ({}) is not a directory", rootfs.display());
    }
    Ok((bundle, spec, rootfs))
}

/// Saved namespaces of the runtime itself, restored after the child was forked.
struct NsRestore {
    pid: Option<File>,
    time: Option<File>,
}

impl NsRestore {
    fn restore(self) {
        if let Some(f) = self.pid {
            let _ = namespaces::setns_fd(&f, LinuxNamespaceType::Pid);
        }
        if let Some(f) = self.time {
            let _ = namespaces::setns_fd(&f, LinuxNamespaceType::Time);
        }
    }
}

/// Without a user namespace, move our *children* into the container's pid/time namespaces
/// now, so the forked init is already pid 1 and needs no second fork.
fn enter_child_namespaces(spec: &Spec, plan: &Plan) -> Result<NsRestore> {
    let mut r = NsRestore {
        pid: None,
        time: None,
    };
    if plan.has(LinuxNamespaceType::Pid) {
        r.pid = Some(File::open("/proc/self/ns/pid").context("opening /proc/self/ns/pid")?);
        match plan.join_path(LinuxNamespaceType::Pid) {
            Some(p) => namespaces::join(LinuxNamespaceType::Pid, p)?,
            None => namespaces::unshare(libc::CLONE_NEWPID, "pid")?,
        }
    }
    if plan.has(LinuxNamespaceType::Time) {
        r.time = Some(File::open("/proc/self/ns/time").context("opening /proc/self/ns/time")?);
        match plan.join_path(LinuxNamespaceType::Time) {
            Some(p) => namespaces::join(LinuxNamespaceType::Time, p)?,
            None => {
                namespaces::unshare(libc::CLONE_NEWTIME, "time")?;
                namespaces::write_time_offsets(spec)?;
            }
        }
    }
    Ok(r)
}

/// Cleanup guard for a create that has not finished: kills the init, removes the cgroup and
/// the state directory.
struct CreateGuard {
    pids: Vec<i32>,
    cgroup: Option<CgroupManager>,
    dir: Option<StateDir>,
}

impl Drop for CreateGuard {
    fn drop(&mut self) {
        for &p in self.pids.iter().filter(|p| **p > 1) {
            // SAFETY: signalling processes we created.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        for &p in &self.pids {
            wait_gone(p, 2000);
        }
        if let Some(cg) = self.cgroup.take() {
            let _ = cg.destroy();
        }
        if let Some(d) = self.dir.take() {
            let _ = d.remove();
        }
    }
}

/// Reap `pid` if it is our child, else poll until it is gone (bounded by `ms`).
fn wait_gone(pid: i32, ms: u64) {
    for _ in 0..ms {
        let mut status = 0;
        // SAFETY: waitpid on a pid; ECHILD if not our child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return;
        }
        match state::proc_start_time(pid) {
            None => return,
            Some((_, true)) if r < 0 => return,
            _ => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Create a container: its init ends up blocked waiting for `start`.
pub fn create(global: &GlobalOptions, opts: &CreateOptions) -> Result<Created> {
    let (bundle, spec, rootfs_path) = load_bundle(&opts.bundle)?;
    rootfs::validate(&spec, &bundle).map_err(|e| anyhow::anyhow!("{e}"))?;
    let plan = Plan::from_spec(&spec)?;
    let process = spec.process().as_ref().context("process missing")?;
    let terminal = process.terminal().unwrap_or(false);
    if terminal && opts.console_socket.is_none() && !opts.foreground {
        bail!("cannot allocate tty if runc will detach without setting console socket");
    }
    if !terminal && opts.console_socket.is_some() {
        bail!("cannot use console socket if runc will not detach or allocate tty");
    }
    let linux = spec.linux().as_ref().context("linux missing")?;
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    // Prevent pid-reuse races on /proc/PID/exe of our children before they re-exec.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };

    let dir = StateDir::create(&global.root, &opts.id)?;
    let mut guard = CreateGuard {
        pids: Vec::new(),
        cgroup: None,
        dir: None,
    };
    let dir_fd = dir.dir.as_raw_fd();
    guard.dir = Some(StateDir {
        path: dir.path.clone(),
        dir: dir.dir.try_clone().context("dup state dir")?,
    });
    // linux.devices nodes get device-cgroup allow rules too, as runc adds them.
    let devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().clone())
        .unwrap_or_default();
    let cgroup = CgroupManager::new(cgroups_path.as_deref(), &opts.id, global.systemd_cgroup)
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .with_devices(&devices);
    let console = match &opts.console_socket {
        Some(p) => Some(tty::connect_console_socket(p)?),
        None => None,
    };
    let listener = UnixListener::bind(init::fd_path(dir_fd, state::EXEC_SOCK))
        .context("creating the start socket")?;
    let exe = sealed_exe::Exe::choose().context("preparing the protected init binary")?;
    let (mut chan, child_end) = Channel::pair().context("creating sync socketpair")?;

    let userns = plan.has(LinuxNamespaceType::User);
    let restore = if userns {
        None
    } else {
        Some(enter_child_namespaces(&spec, &plan)?)
    };
    let mut pass = vec![listener.as_raw_fd()];
    if let Some(c) = &console {
        pass.push(c.as_raw_fd());
    }
    let spawned = init::spawn(&exe, &child_end, &pass);
    if let Some(r) = restore {
        r.restore();
    }
    let child = spawned?;
    guard.pids.push(child);
    drop(child_end);
    let mount_ns_done = exe.new_mount_ns();
    drop(exe);

    if let Some(adj) = process.oom_score_adj() {
        std::fs::write(format!("/proc/{child}/oom_score_adj"), adj.to_string())
            .with_context(|| format!("setting process.oomScoreAdj {adj}"))?;
    }
    guard.cgroup = Some(cgroup.clone());
    if let Err(e) = cgroup.apply(child, linux.resources().as_ref()) {
        // Rootless (unprivileged, or --rootless true) containers run without a cgroup when
        // the host does not delegate one, as runc does.
        if rootless(global) {
            logging::debug(&format!("rootless: ignoring cgroup error: {e}"));
        } else {
            return Err(anyhow::anyhow!("{e}"));
        }
    }

    let listen_fds = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|n| *n > 0);
    let req = InitRequest {
        mode: Mode::Create,
        id: opts.id.clone(),
        spec: spec.clone(),
        bundle: bundle.clone(),
        rootfs: rootfs_path.clone(),
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
        preserve_fds: opts.preserve_fds + listen_fds.unwrap_or(0),
        listen_fds,
        console_fd: console.as_ref().map(|c| c.as_raw_fd()),
        console_to_parent: terminal && opts.console_socket.is_none(),
        start_listener_fd: Some(listener.as_raw_fd()),
        pid_ns_done: !userns,
        mount_ns_done,
        ns_fds: Vec::new(),
        root_fd: None,
    };
    chan.send(&Msg::Request(Box::new(req)))
        .context("sending the configuration to init")?;

    let mut st = ContainerState {
        id: opts.id.clone(),
        pid: 0,
        pid_start: 0,
        bundle: bundle.clone(),
        rootfs: rootfs_path.clone(),
        created: state::now_rfc3339(),
        config: spec.clone(),
        systemd_cgroup: global.systemd_cgroup,
        no_pivot: opts.no_pivot,
        started: false,
    };
    let mut init_pid = child;
    let mut pty = None;
    loop {
        match chan.recv().context("reading from init")? {
            Some(Msg::MapsPlease(pid)) => {
                let host_pid = if pid > 0 && state::proc_start_time(pid).is_some() {
                    pid
                } else {
                    child
                };
                namespaces::write_id_maps(host_pid, &spec)?;
                chan.send(&Msg::Proceed)?;
            }
            Some(Msg::Pid(p)) => {
                if p <= 1 {
                    bail!("init reported an invalid pid {p}");
                }
                init_pid = p;
                if p != child {
                    guard.pids.insert(0, p);
                    wait_gone(child, 1000);
                }
            }
            Some(Msg::HooksPlease) => {
                st.pid = init_pid;
                let json = serde_json::to_string(&st.oci(Status::Creating))?;
                let h = spec.hooks().clone().unwrap_or_default();
                let res = (|| -> Result<()> {
                    if let Some(v) = h.create_runtime() {
                        hooks::run("createRuntime", v, &json)?;
                    }
                    if let Some(v) = h.prestart() {
                        hooks::run("prestart", v, &json)?;
                    }
                    Ok(())
                })();
                match res {
                    Ok(()) => chan.send(&Msg::State(json))?,
                    Err(e) => {
                        let _ = chan.send(&Msg::Error(format!("{e:#}")));
                        return Err(e);
                    }
                }
            }
            Some(Msg::ConsoleFollows) => {
                pty = Some(tty::recv_fd(chan.raw()).context("receiving the pty master")?);
            }
            Some(Msg::Ready) => break,
            Some(Msg::Error(e)) => bail!("unable to start container process: {e}"),
            Some(other) => bail!("unexpected message from init: {other:?}"),
            None => bail!("unable to start container process: init exited unexpectedly"),
        }
    }
    st.pid = init_pid;
    st.pid_start = state::proc_start_time(init_pid)
        .map(|(s, _)| s)
        .context("container init vanished")?;
    dir.save(&st)?;
    if let Some(p) = &opts.pid_file {
        write_pid_file(p, init_pid)?;
    }
    drop(listener);
    // Success: disarm the guard without cleaning up.
    guard.pids.clear();
    guard.cgroup = None;
    guard.dir = None;
    Ok(Created {
        dir,
        state: st,
        console: pty,
    })
}

/// Whether cgroup errors are tolerated: `--rootless true`, or `auto`/unset as non-root.
fn rootless(global: &GlobalOptions) -> bool {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    match global.rootless.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => euid != 0,
    }
}

/// Write a pid file atomically, as runc does.
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    };
    let tmp = abs.with_file_name(format!(
        ".{}.tmp",
        abs.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default()
    ));
    std::fs::write(&tmp, pid.to_string()).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &abs).with_context(|| format!("writing {}", abs.display()))
}

/// Release a created container's init; then run poststart hooks.
pub fn start(dir: &StateDir, st: &mut ContainerState) -> Result<()> {
    match st.status(dir) {
        Status::Created => {}
        Status::Stopped => bail!("cannot start a container that has stopped"),
        _ => bail!("cannot start an already running container"),
    }
    let sock = init::fd_path(dir.dir.as_raw_fd(), state::EXEC_SOCK);
    let res = init::release(&sock);
    let _ = std::fs::remove_file(dir.path.join(state::EXEC_SOCK));
    st.started = true;
    dir.save(st)?;
    res?;
    let poststart = st
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststart().clone());
    run_hooks_warning("poststart", poststart, st, Status::Running)
}

/// Run hooks whose failure the spec says only to log (poststart, poststop).
fn run_hooks_warning(
    name: &str,
    hooks: Option<Vec<oci_spec::runtime::Hook>>,
    st: &ContainerState,
    status: Status,
) -> Result<()> {
    if let Some(h) = hooks {
        let json = serde_json::to_string(&st.oci(status))?;
        if let Err(e) = hooks::run(name, &h, &json) {
            logging::warn(&format!("{e:#}"));
        }
    }
    Ok(())
}

/// Kill what is left of the container, remove its cgroup, run poststop hooks and remove its
/// state.
pub fn destroy(dir: &StateDir, st: &ContainerState) -> Result<()> {
    let cg = st.cgroup().map_err(|e| anyhow::anyhow!("{e}"))?;
    if st.pid > 1 && st.init_alive() {
        // SAFETY: signalling the verified init pid.
        unsafe { libc::kill(st.pid, libc::SIGKILL) };
    }
    let own_pidns = Plan::from_spec(&st.config)
        .map(|p| p.has(LinuxNamespaceType::Pid))
        .unwrap_or(true);
    if !own_pidns {
        if let Ok(pids) = cg.pids() {
            for p in pids.into_iter().filter(|p| *p > 1) {
                // SAFETY: signalling processes in the container's cgroup.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
        }
    }
    // A frozen task never dies: thaw a paused container so the SIGKILLs are delivered.
    if cg.is_frozen().unwrap_or(false) {
        let _ = cg.thaw();
    }
    if st.pid > 0 && state::proc_start_time(st.pid).is_some_and(|(s, _)| s == st.pid_start) {
        wait_gone(st.pid, 10_000);
    }
    if let Err(e) = cg.destroy() {
        logging::warn(&format!("removing cgroup: {e}"));
    }
    let poststop = st
        .config
        .hooks()
        .as_ref()
        .and_then(|h| h.poststop().clone());
    run_hooks_warning("poststop", poststop, st, Status::Stopped)?;
    dir.remove()
}

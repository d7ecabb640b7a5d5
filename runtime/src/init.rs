//! The process that becomes the container: launched by the runtime as a sealed re-exec of
//! skiff (`skiff init`, hidden), it reads its instructions from an inherited socket, sets up
//! namespaces, rootfs and the process, then waits for `start` (create) or execs at once (exec).
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::namespaces::{self, Plan};
use crate::sync::{Channel, Msg};
use crate::{hooks, privileges, process, rootfs, sealed_exe, seccomp, signals, tty};

/// Environment variable carrying the sync socket's fd number into the re-executed init.
pub const INIT_ENV: &str = "_SKIFF_INIT";

/// Which job the init does.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Mode {
    /// Become a new container's init and wait for `start`.
    Create,
    /// Join a running container and exec a process in it.
    Exec,
}

/// Everything the init needs, sent by the runtime over the sync channel.
#[derive(Debug, Serialize, Deserialize)]
pub struct InitRequest {
    /// Create or exec.
    pub mode: Mode,
    /// Container id.
    pub id: String,
    /// The configuration (for exec: the snapshot with `process` replaced).
    pub spec: Spec,
    /// Absolute bundle path.
    pub bundle: PathBuf,
    /// Absolute rootfs path.
    pub rootfs: PathBuf,
    /// `--no-pivot`.
    pub no_pivot: bool,
    /// `--no-new-keyring`.
    pub no_new_keyring: bool,
    /// `--preserve-fds` (plus LISTEN_FDS).
    pub preserve_fds: u32,
    /// LISTEN_FDS the runtime received (socket activation), passed through like runc.
    pub listen_fds: Option<u32>,
    /// Connected `--console-socket` fd, if any.
    pub console_fd: Option<RawFd>,
    /// Send the pty master back over the sync channel (foreground run/exec with a terminal).
    pub console_to_parent: bool,
    /// Create: the listening socket `start` connects to.
    pub start_listener_fd: Option<RawFd>,
    /// The child is already in a fresh private mount namespace (read-only-bind re-exec).
    pub mount_ns_done: bool,
    /// Create: the runtime already unshared pid/time, so no extra fork is needed.
    pub pid_ns_done: bool,
    /// Exec: namespace fds to join (proc name, fd), user first.
    pub ns_fds: Vec<(String, RawFd)>,
    /// Exec: fd of /proc/INIT/root to chroot into after joining the mount namespace.
    pub root_fd: Option<RawFd>,
}

/// Hidden entry point: run as the re-executed init. Never returns.
pub fn main(fd_text: &str) -> ! {
    let Ok(fd) = fd_text.parse::<RawFd>() else {
        eprintln!("skiff init: bad {INIT_ENV}");
        std::process::exit(1)
    };
    // SAFETY: the runtime passed us this socket and nothing else owns it.
    let mut chan = unsafe { Channel::from_raw(fd) };
    // SAFETY: setting FD_CLOEXEC on our own socket so it vanishes at the final exec.
    unsafe { libc::fcntl(chan.raw(), libc::F_SETFD, libc::FD_CLOEXEC) };
    let req = match chan.recv() {
        Ok(Some(Msg::Request(r))) => r,
        _ => std::process::exit(1),
    };
    let res = match req.mode {
        Mode::Create => run_create(&mut chan, &req),
        Mode::Exec => run_exec(&mut chan, &req),
    };
    if let Err(e) = res {
        let _ = chan.send(&Msg::Error(format!("{e:#}")));
    }
    std::process::exit(1)
}

/// The process settings all modes need before exec.
struct Prepared {
    path: PathBuf,
    args: Vec<String>,
    env: Vec<String>,
    privs: privileges::Privileges,
    seccomp: Option<seccomp::SeccompProgram>,
    personality: Option<String>,
}

fn prepare_process(req: &InitRequest) -> Result<Prepared> {
    let p = req
        .spec
        .process()
        .as_ref()
        .context("config.json: process is missing")?;
    let args = p.args().clone().unwrap_or_default();
    if args.is_empty() {
        bail!("args must not be empty");
    }
    let mut env = p.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        // Like runc: HOME from the container's /etc/passwd for the process uid, else "/".
        let home = container_home(p.user().uid()).unwrap_or_else(|| "/".to_string());
        env.push(format!("HOME={home}"));
    }
    if let Some(n) = req.listen_fds {
        env = process::merge_env(&env, &[format!("LISTEN_FDS={n}"), "LISTEN_PID=1".into()]);
    }
    process::enter_cwd(p.cwd())?;
    let path = process::find_executable(&args[0], &env)?;
    let privs = privileges::prepare(p).map_err(|e| anyhow::anyhow!("{e}"))?;
    let seccomp = seccomp::compile(req.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let personality = req
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.personality().as_ref())
        .map(|p| format!("{:?}", p.domain()))
        .map(|d| {
            if d.contains("32") {
                "LINUX32".to_string()
            } else {
                "LINUX".to_string()
            }
        });
    Ok(Prepared {
        path,
        args,
        env,
        privs,
        seccomp,
        personality,
    })
}

/// Home directory of `uid` in the container's /etc/passwd (read after pivot/chroot).
fn container_home(uid: u32) -> Option<String> {
    let pw = std::fs::read_to_string("/etc/passwd").ok()?;
    pw.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid) && !f[5].is_empty())
            .then(|| f[5].to_string())
    })
}

/// Last steps before the user process: process attributes, privileges, fds, exec.
fn finish_and_exec(req: &InitRequest, prep: Prepared) -> anyhow::Error {
    let step = || -> Result<()> {
        let p = req.spec.process().as_ref().context("process missing")?;
        process::apply_scheduler(p)?;
        process::apply_io_priority(p)?;
        process::apply_personality(prep.personality.as_deref())?;
        signals::reset_for_exec();
        process::seal_fds(req.preserve_fds);
        privileges::apply(&prep.privs, prep.seccomp.as_ref())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    };
    if let Err(e) = step() {
        return e;
    }
    process::execve(&prep.path, &prep.args, &prep.env)
}

fn set_names(spec: &Spec, plan: &Plan) -> Result<()> {
    for (val, is_domain) in [(spec.hostname(), false), (spec.domainname(), true)] {
        let Some(name) = val.as_deref().filter(|s| !s.is_empty()) else {
            continue;
        };
        if !plan.has(LinuxNamespaceType::Uts) {
            bail!(
                "unable to set {} without a private UTS namespace",
                if is_domain { "domainname" } else { "hostname" }
            );
        }
        // SAFETY: sethostname/setdomainname with a valid buffer and length.
        let r = unsafe {
            if is_domain {
                libc::setdomainname(name.as_ptr() as *const libc::c_char, name.len())
            } else {
                libc::sethostname(name.as_ptr() as *const libc::c_char, name.len())
            }
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("setting hostname/domainname {name:?}"));
        }
    }
    Ok(())
}

/// Whether the init now lives in a user namespace of the container's (new or joined).
fn in_userns_now(plan: &Plan) -> bool {
    plan.has(LinuxNamespaceType::User)
}

fn become_root_in_userns() {
    // SAFETY: plain credential syscalls; failure (0 unmapped) leaves our ids as they are.
    unsafe {
        libc::setresgid(0, 0, 0);
        libc::setresuid(0, 0, 0);
    }
}

fn run_create(chan: &mut Channel, req: &InitRequest) -> Result<()> {
    let spec = &req.spec;
    let plan = Plan::from_spec(spec)?;

    // 1. Join namespaces given by path (user first, then the rest); pid/time only when the
    //    runtime did not already do it for us.
    for t in namespaces::JOIN_ORDER {
        if matches!(t, LinuxNamespaceType::Cgroup) {
            continue;
        }
        if req.pid_ns_done && matches!(t, LinuxNamespaceType::Pid | LinuxNamespaceType::Time) {
            continue;
        }
        if let Some(p) = plan.join_path(t) {
            namespaces::join(t, p)?;
        }
    }
    // 2. A new user namespace: the runtime writes our maps.
    if plan.is_new(LinuxNamespaceType::User) {
        namespaces::unshare(libc::CLONE_NEWUSER, "user")?;
        // SAFETY: getpid has no preconditions.
        chan.send(&Msg::MapsPlease(unsafe { libc::getpid() }))?;
        chan.expect_proceed()?;
        become_root_in_userns();
    } else if plan.join_path(LinuxNamespaceType::User).is_some() {
        become_root_in_userns();
    }
    // 3. The other new namespaces (cgroup comes after the runtime placed us).
    let mut flags = 0;
    if plan.is_new(LinuxNamespaceType::Mount) && (!req.mount_ns_done || in_userns_now(&plan)) {
        flags |= libc::CLONE_NEWNS;
    }
    for t in [
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
    ] {
        if plan.is_new(t) {
            flags |= namespaces::flag(t);
        }
    }
    let mut need_fork = false;
    if !req.pid_ns_done {
        if plan.is_new(LinuxNamespaceType::Pid) {
            flags |= libc::CLONE_NEWPID;
        }
        if plan.is_new(LinuxNamespaceType::Time) {
            flags |= libc::CLONE_NEWTIME;
        }
        need_fork = plan.has(LinuxNamespaceType::Pid) || plan.has(LinuxNamespaceType::Time);
    }
    namespaces::unshare(flags, "container")?;
    if flags & libc::CLONE_NEWNET != 0 {
        namespaces::loopback_up().context("bring up lo in the new network namespace")?;
    }
    if flags & libc::CLONE_NEWTIME != 0 {
        namespaces::write_time_offsets(spec)?;
    }
    // 4. The new pid/time namespaces only apply to children: fork the real init.
    if need_fork {
        // SAFETY: single-threaded process; the child continues with plain Rust code.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(std::io::Error::last_os_error()).context("fork into pid namespace");
        }
        if child > 0 {
            let _ = chan.send(&Msg::Pid(child));
            // SAFETY: leave without running destructors shared with the child.
            unsafe { libc::_exit(0) };
        }
    }
    // From here on we are the container's init.
    // SAFETY: setsid has no preconditions; we become a session leader for the tty.
    unsafe { libc::setsid() };
    if plan.is_new(LinuxNamespaceType::Cgroup) {
        namespaces::unshare(libc::CLONE_NEWCGROUP, "cgroup")?;
    } else if let Some(p) = plan.join_path(LinuxNamespaceType::Cgroup) {
        namespaces::join(LinuxNamespaceType::Cgroup, p)?;
    }
    if !req.no_new_keyring {
        // Best effort, like runc: a fresh session keyring named after the container.
        let name = CString::new(format!("_ses.{}", req.id)).unwrap_or_default();
        // SAFETY: keyctl(JOIN_SESSION_KEYRING, name).
        unsafe { libc::syscall(libc::SYS_keyctl, 1, name.as_ptr()) };
    }
    set_names(spec, &plan)?;

    // 5. Root filesystem.
    let in_user_ns = plan.has(LinuxNamespaceType::User);
    let ctx = rootfs::RootfsContext {
        spec,
        rootfs: &req.rootfs,
        bundle: &req.bundle,
        no_pivot: req.no_pivot,
        in_user_ns,
    };
    if !plan.has(LinuxNamespaceType::Mount) {
        bail!("the container needs a mount namespace (linux.namespaces has no \"mount\")");
    }
    rootfs::prepare(&ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    let hooks = spec.hooks().clone().unwrap_or_default();
    let mut state_json = String::new();
    let any_hooks = [
        hooks.create_runtime(),
        hooks.prestart(),
        hooks.create_container(),
        hooks.start_container(),
    ]
    .iter()
    .any(|h| h.as_ref().is_some_and(|v| !v.is_empty()));
    if any_hooks {
        chan.send(&Msg::HooksPlease)?;
        match chan.recv()? {
            Some(Msg::State(s)) => state_json = s,
            Some(Msg::Error(e)) => bail!("{e}"),
            _ => bail!("runtime went away during hooks"),
        }
        if let Some(h) = hooks.create_container() {
            hooks::run("createContainer", h, &state_json)?;
        }
    }
    rootfs::pivot(&ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    if wants_terminal(req) {
        setup_terminal(chan, req)?;
    }
    rootfs::finalize(&ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    let prep = prepare_process(req)?;

    // 6. Tell the runtime we are ready and wait for `start`.
    let listener_fd = req
        .start_listener_fd
        .context("internal error: no start socket")?;
    // SAFETY: the runtime passed us this listening socket.
    let listener = unsafe { UnixListener::from_raw_fd(listener_fd) };
    chan.send(&Msg::Ready)?;
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => {
                let mut b = [0u8; 1];
                let mut c2 = c;
                if c2.read_exact(&mut b).is_ok() && b[0] == b'S' {
                    break c2;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("waiting for start"),
        }
    };
    drop(listener);
    let res = (|| -> Result<()> {
        if let Some(h) = hooks.start_container() {
            hooks::run("startContainer", h, &state_json)?;
        }
        Ok(())
    })();
    let err = match res {
        Ok(()) => finish_and_exec(req, prep),
        Err(e) => e,
    };
    let _ = conn.write_all(format!("{err:#}").as_bytes());
    std::process::exit(1)
}

/// Whether the process asks for a terminal (`process.terminal`), for create and exec alike.
fn wants_terminal(req: &InitRequest) -> bool {
    req.spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
}

fn setup_terminal(chan: &mut Channel, req: &InitRequest) -> Result<()> {
    let (master, slave) = tty::open_pty()?;
    if let Some(sz) = req.spec.process().as_ref().and_then(|p| p.console_size()) {
        tty::set_size(master.as_raw_fd(), sz.height() as u16, sz.width() as u16)
            .context("setting consoleSize")?;
    }
    if req.mode == Mode::Create {
        rootfs::setup_console(&slave).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if let Some(fd) = req.console_fd {
        tty::send_fd(fd, master.as_raw_fd(), c"/dev/ptmx")
            .context("sending pty master to console socket")?;
        // SAFETY: done with the console socket.
        unsafe { libc::close(fd) };
    } else if req.console_to_parent {
        chan.send(&Msg::ConsoleFollows)?;
        tty::send_fd(chan.raw(), master.as_raw_fd(), c"/dev/ptmx")
            .context("sending pty master to the runtime")?;
    } else {
        bail!("cannot allocate tty if runc will detach without setting console socket");
    }
    drop(master);
    tty::attach_slave(&slave)
}

fn run_exec(chan: &mut Channel, req: &InitRequest) -> Result<()> {
    // Do not let container processes read our memory or fds through /proc while we still
    // hold host resources (the final exec resets this).
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    for (name, fd) in &req.ns_fds {
        let t = match name.as_str() {
            "user" => LinuxNamespaceType::User,
            "mnt" => LinuxNamespaceType::Mount,
            "net" => LinuxNamespaceType::Network,
            "ipc" => LinuxNamespaceType::Ipc,
            "uts" => LinuxNamespaceType::Uts,
            "cgroup" => LinuxNamespaceType::Cgroup,
            other => bail!("internal error: namespace {other}"),
        };
        // SAFETY: the runtime passed us this fd; wrap it without taking ownership twice.
        let f = unsafe { std::fs::File::from_raw_fd(*fd) };
        namespaces::setns_fd(&f, t)
            .with_context(|| format!("joining the container's {name} namespace"))?;
        if t == LinuxNamespaceType::User {
            become_root_in_userns();
        }
    }
    if let Some(fd) = req.root_fd {
        // SAFETY: fchdir/chroot into the container's root directory fd.
        unsafe {
            if libc::fchdir(fd) != 0 || libc::chroot(c".".as_ptr()) != 0 {
                return Err(std::io::Error::last_os_error()).context("entering the container root");
            }
            libc::close(fd);
        }
        std::env::set_current_dir("/").context("chdir /")?;
    }
    // SAFETY: setsid so a terminal can become our controlling tty.
    if wants_terminal(req) {
        setup_terminal(chan, req)?;
    }
    let prep = prepare_process(req)?;
    chan.send(&Msg::Ready)?;
    Err(finish_and_exec(req, prep))
}

/// Runtime side: fork and re-exec skiff (protected, see [`crate::sealed_exe`]) as
/// `skiff init` with `child_end` and `pass` inherited. Returns the child's pid. The parent
/// must be single-threaded.
pub fn spawn(exe: &sealed_exe::Exe, child_end: &Channel, pass: &[RawFd]) -> Result<i32> {
    let argv0 = c"skiff";
    let argv1 = c"init";
    let env = CString::new(format!("{INIT_ENV}={}", child_end.raw())).context("env")?;
    let argv = [argv0.as_ptr(), argv1.as_ptr(), std::ptr::null()];
    let envp = [env.as_ptr(), std::ptr::null()];
    let sync = child_end.raw();
    // SAFETY: fork in a single-threaded process; the child only makes raw syscalls
    // (fcntl, unshare, mount, exec, write, _exit) before exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: see above; all pointers stay valid in the child's copy of memory.
        unsafe {
            libc::fcntl(sync, libc::F_SETFD, 0);
            for fd in pass {
                libc::fcntl(*fd, libc::F_SETFD, 0);
            }
            sealed_exe::exec_child(exe, argv.as_ptr(), envp.as_ptr());
            let msg = b"skiff: cannot execute the protected init binary\n";
            libc::write(2, msg.as_ptr() as *const libc::c_void, msg.len());
            libc::_exit(127);
        }
    }
    Ok(pid)
}

/// Path helper so callers can reach a file in a state dir through an fd-relative name.
pub fn fd_path(dir: RawFd, name: &str) -> PathBuf {
    Path::new(&format!("/proc/self/fd/{dir}")).join(name)
}

/// Connect to a created container's start socket and release it; returns an error text the
/// init sent back if its final steps (startContainer hooks, privileges, exec) failed.
pub fn release(sock_path: &Path) -> Result<()> {
    let mut s = UnixStream::connect(sock_path).context("connecting to the container's init")?;
    s.write_all(b"S")
        .context("releasing the container's init")?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    if !out.is_empty() {
        bail!("{out}");
    }
    Ok(())
}

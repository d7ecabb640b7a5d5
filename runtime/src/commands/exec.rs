//! `skiff exec`: run a new process inside a running container (joins all of its namespaces
//! and its cgroup, same privilege and seccomp rules), returning its exit status.
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use oci_spec::runtime::{LinuxCapabilities, LinuxNamespaceType, Process};

use super::GlobalOptions;
use crate::init::{self, InitRequest, Mode};
use crate::namespaces;
use crate::state::{ContainerState, StateDir, Status};
use crate::sync::{Channel, Msg};
use crate::{container, process, sealed_exe, signals, tty};

/// Arguments of `skiff exec` (runc's flags).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Path to an AF_UNIX socket which will receive the console's pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Current working directory in the container.
    #[arg(long)]
    pub cwd: Option<String>,
    /// Set environment variables.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(long, short = 't')]
    pub tty: bool,
    /// UID (format: <uid>[:<gid>]).
    #[arg(long, short = 'u')]
    pub user: Option<String>,
    /// Additional gids.
    #[arg(long, short = 'g')]
    pub additional_gids: Vec<u32>,
    /// Path to the process.json.
    #[arg(long, short = 'p')]
    pub process: Option<PathBuf>,
    /// Detach from the container's process.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// Specify the file to write the process id to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Set the asm process label for the process commonly used with selinux.
    #[arg(long)]
    pub process_label: Option<String>,
    /// Set the apparmor profile for the process.
    #[arg(long)]
    pub apparmor: Option<String>,
    /// Set the no new privileges value for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Add a capability to the bounding set for the process.
    #[arg(long, short = 'c')]
    pub cap: Vec<String>,
    /// Pass N additional file descriptors to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Allow exec in a paused container.
    #[arg(long)]
    pub ignore_paused: bool,
    /// Container id.
    pub id: String,
    /// Command and arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// Run `skiff exec`; returns the process's exit code (errors exit 255 like runc).
pub fn run(global: &GlobalOptions, args: Args) -> Result<i32> {
    match exec(global, args) {
        Ok(code) => Ok(code),
        Err(e) => {
            crate::logging::fatal(&format!("exec failed: {e:#}"));
            Ok(255)
        }
    }
}

/// The process to run: `-p process.json`, or the config's process with the flags applied.
fn build_process(st: &ContainerState, args: &Args) -> Result<Process> {
    let mut p: Process = match &args.process {
        Some(path) => {
            let data =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))?
        }
        None => {
            let mut p = st
                .config
                .process()
                .clone()
                .context("config snapshot has no process")?;
            if args.command.is_empty() {
                bail!("process args cannot be empty");
            }
            p.set_args(Some(args.command.clone()));
            p.set_terminal(Some(args.tty));
            p
        }
    };
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        bail!("process args cannot be empty");
    }
    if args.tty {
        p.set_terminal(Some(true));
    }
    if let Some(cwd) = &args.cwd {
        p.set_cwd(PathBuf::from(cwd));
    }
    if !args.env.is_empty() {
        let base = p.env().clone().unwrap_or_default();
        p.set_env(Some(process::merge_env(&base, &args.env)));
    }
    if let Some(u) = &args.user {
        let (uid, gid) = match u.split_once(':') {
            Some((a, b)) => (a, Some(b)),
            None => (u.as_str(), None),
        };
        let mut user = p.user().clone();
        user.set_uid(
            uid.parse()
                .with_context(|| format!("parsing --user {u:?}"))?,
        );
        if let Some(g) = gid {
            user.set_gid(g.parse().with_context(|| format!("parsing --user {u:?}"))?);
        }
        p.set_user(user);
    }
    if !args.additional_gids.is_empty() {
        let mut user = p.user().clone();
        user.set_additional_gids(Some(args.additional_gids.clone()));
        p.set_user(user);
    }
    if !args.cap.is_empty() {
        let mut caps: LinuxCapabilities = p.capabilities().clone().unwrap_or_default();
        let add = |set: Option<oci_spec::runtime::Capabilities>| -> Result<oci_spec::runtime::Capabilities> {
            let mut s = set.unwrap_or_default();
            for c in &args.cap {
                let name = if c.to_ascii_uppercase().starts_with("CAP_") {
                    c.to_ascii_uppercase()
                } else {
                    format!("CAP_{}", c.to_ascii_uppercase())
                };
                let cap: oci_spec::runtime::Capability = name
                    .parse()
                    .map_err(|_| anyhow::anyhow!("unknown capability {c:?}"))?;
                s.insert(cap);
            }
            Ok(s)
        };
        caps.set_bounding(Some(add(caps.bounding().clone())?));
        caps.set_effective(Some(add(caps.effective().clone())?));
        caps.set_permitted(Some(add(caps.permitted().clone())?));
        p.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    if let Some(a) = &args.apparmor {
        p.set_apparmor_profile(Some(a.clone()));
    }
    if let Some(l) = &args.process_label {
        p.set_selinux_label(Some(l.clone()));
    }
    Ok(p)
}

/// Namespace files joined by the exec child (by /proc name) and by the runtime itself.
type NsFiles = (Vec<(String, File)>, Vec<(LinuxNamespaceType, File)>);

/// Namespaces of the init that differ from ours, opened for joining.
fn open_namespaces(pid: i32) -> Result<NsFiles> {
    let mut in_child = Vec::new();
    let mut in_parent = Vec::new();
    for t in namespaces::JOIN_ORDER {
        let name = namespaces::proc_name(t);
        let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
        let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
        let (Some(a), b) = (namespaces::ns_id(&theirs), namespaces::ns_id(&ours)) else {
            continue;
        };
        if Some(a) == b {
            continue;
        }
        let f = File::open(&theirs).with_context(|| format!("opening {}", theirs.display()))?;
        match t {
            LinuxNamespaceType::Pid | LinuxNamespaceType::Time => in_parent.push((t, f)),
            _ => in_child.push((name.to_string(), f)),
        }
    }
    Ok((in_child, in_parent))
}

fn exec(global: &GlobalOptions, args: Args) -> Result<i32> {
    let (st, pid) = {
        let dir = StateDir::open(&global.root, &args.id)?;
        let st = dir.load()?;
        match st.status(&dir) {
            Status::Stopped => bail!("cannot exec in a stopped container"),
            Status::Paused if !args.ignore_paused => {
                bail!("cannot exec in a paused container (use --ignore-paused to override)")
            }
            _ => {}
        }
        let pid = st.pid;
        (st, pid)
    };
    let proc_ = build_process(&st, &args)?;
    let terminal = proc_.terminal().unwrap_or(false);
    if terminal && args.detach && args.console_socket.is_none() {
        bail!("cannot allocate tty if runc will detach without setting console socket");
    }
    if !terminal && args.console_socket.is_some() {
        bail!("cannot use console socket if runc will not detach or allocate tty");
    }
    let mut spec = st.config.clone();
    spec.set_process(Some(proc_));
    // SAFETY: prctl with constant arguments.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let (ns_child, ns_parent) = open_namespaces(pid)?;
    let root = File::open(format!("/proc/{pid}/root")).context("opening the container root")?;
    let console: Option<OwnedFd> = match &args.console_socket {
        Some(p) => Some(tty::connect_console_socket(p)?),
        None => None,
    };
    let exe = sealed_exe::Exe::choose().context("preparing the protected init binary")?;
    let (mut chan, child_end) = Channel::pair()?;

    // Our children are born in the container's pid and time namespaces.
    let mut restore = Vec::new();
    for (t, f) in &ns_parent {
        let name = namespaces::proc_name(*t);
        restore.push((*t, File::open(format!("/proc/self/ns/{name}"))?));
        namespaces::setns_fd(f, *t)
            .with_context(|| format!("joining the container's {name} namespace"))?;
    }
    let mut pass: Vec<i32> = ns_child.iter().map(|(_, f)| f.as_raw_fd()).collect();
    pass.push(root.as_raw_fd());
    if let Some(c) = &console {
        pass.push(c.as_raw_fd());
    }
    let spawned = init::spawn(&exe, &child_end, &pass);
    for (t, f) in &restore {
        let _ = namespaces::setns_fd(f, *t);
    }
    let child = spawned?;
    drop(child_end);
    let kill_child = |e: anyhow::Error| -> anyhow::Error {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
        e
    };
    let cg = st
        .cgroup()
        .map_err(|e| anyhow::anyhow!("{e}"))
        .map_err(kill_child)?;
    if let Err(e) = cg.add_task(child) {
        return Err(kill_child(anyhow::anyhow!("{e}")));
    }
    let req = InitRequest {
        mode: Mode::Exec,
        id: st.id.clone(),
        spec,
        bundle: st.bundle.clone(),
        rootfs: st.rootfs.clone(),
        no_pivot: st.no_pivot,
        no_new_keyring: true,
        preserve_fds: args.preserve_fds,
        listen_fds: None,
        console_fd: console.as_ref().map(|c| c.as_raw_fd()),
        console_to_parent: terminal && args.console_socket.is_none(),
        start_listener_fd: None,
        pid_ns_done: true,
        mount_ns_done: exe.new_mount_ns(),
        ns_fds: ns_child
            .iter()
            .map(|(n, f)| (n.clone(), f.as_raw_fd()))
            .collect(),
        root_fd: Some(root.as_raw_fd()),
    };
    chan.send(&Msg::Request(Box::new(req)))
        .map_err(|e| kill_child(e.into()))?;
    drop(ns_child);
    drop(root);
    drop(console);
    let mut pty = None;
    loop {
        match chan.recv() {
            Ok(Some(Msg::ConsoleFollows)) => {
                pty = Some(tty::recv_fd(chan.raw()).map_err(|e| kill_child(e.into()))?);
            }
            Ok(Some(Msg::Ready)) => {}
            Ok(Some(Msg::Error(e))) => {
                return Err(kill_child(anyhow::anyhow!(
                    "unable to start container process: {e}"
                )))
            }
            Ok(Some(other)) => {
                return Err(kill_child(anyhow::anyhow!("unexpected message {other:?}")))
            }
            Ok(None) => break,
            Err(e) => return Err(kill_child(e.into())),
        }
    }
    if let Some(p) = &args.pid_file {
        container::write_pid_file(p, child)?;
    }
    if args.detach {
        return Ok(0);
    }
    signals::block_all();
    let fg = tty::Foreground::attach(pty);
    let code = signals::forward_and_wait(child, || fg.resize());
    fg.finish();
    Ok(code)
}

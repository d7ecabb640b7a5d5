//! The long-lived shim server: ttrpc listener, subreaper and reaper loop.
//!
//! The containerd-shim crate's own server only registers the Task API under its v3 service
//! name; containerd 1.6 (Debian 12) calls `containerd.task.v2.Task`, whose messages are the
//! same, so this server registers every method under both names.

use std::{
    collections::HashMap,
    os::{fd::IntoRawFd, unix::net::UnixListener},
    path::Path,
    sync::Arc,
};

use containerd_shim::{
    monitor::monitor_notify_by_pid,
    protos::{
        shim_sync::create_task,
        ttrpc::{MethodHandler, Server},
    },
    publisher::RemotePublisher,
    ExitSignal, Flags,
};
use log::{info, warn};
use nix::{
    errno::Errno,
    sys::wait::{waitpid, WaitPidFlag, WaitStatus},
    unistd::Pid,
};
use signal_hook::{
    consts::{SIGCHLD, SIGINT, SIGPIPE, SIGTERM},
    iterator::Signals,
};

use crate::{error::Error, task::TaskService};

type Methods = HashMap<String, Box<dyn MethodHandler + Send + Sync>>;

/// Adds the `containerd.task.v2.Task` aliases of the v3 methods.
fn with_v2_names(v3: Methods) -> Methods {
    let mut all = Methods::new();
    for (name, handler) in v3 {
        if let Some(rest) = name.strip_prefix("/containerd.task.v3.Task/") {
            let v3_name = name.clone();
            // The handler is shared by both names through an Arc.
            let shared: Arc<dyn MethodHandler + Send + Sync> = Arc::from(handler);
            all.insert(
                format!("/containerd.task.v2.Task/{rest}"),
                Box::new(Shared(shared.clone())),
            );
            all.insert(v3_name, Box::new(Shared(shared)));
        } else {
            all.insert(name, handler);
        }
    }
    all
}

/// A method handler registered under two names.
struct Shared(Arc<dyn MethodHandler + Send + Sync>);

impl MethodHandler for Shared {
    fn handler(
        &self,
        ctx: containerd_shim::protos::ttrpc::TtrpcContext,
        req: containerd_shim::protos::ttrpc::Request,
    ) -> containerd_shim::protos::ttrpc::Result<()> {
        self.0.handler(ctx, req)
    }
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

/// Makes stdout point at stderr so the `start` parent reading our stdout sees EOF.
fn signal_started() {
    // SAFETY: dup2 on the standard descriptors has no memory-safety preconditions.
    unsafe {
        libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO);
    }
}

/// Reaps every child and hands exits to the monitor (runtime commands and container
/// processes both wait through it).
fn reap_loop(mut signals: Signals) {
    for sig in signals.forever() {
        if sig != SIGCHLD {
            continue;
        }
        loop {
            match waitpid(Some(Pid::from_raw(-1)), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    let _ = monitor_notify_by_pid(pid.as_raw(), code);
                }
                Ok(WaitStatus::Signaled(pid, s, _)) => {
                    let _ = monitor_notify_by_pid(pid.as_raw(), 128 + s as i32);
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                Err(e) => {
                    warn!("waitpid: {e}");
                    break;
                }
            }
        }
    }
}

/// Runs the shim server until Shutdown.
pub fn serve(flags: &Flags) -> Result<(), Error> {
    let rt = |m: String| Error::Runtime(m);
    if flags.namespace.is_empty() || flags.socket.is_empty() {
        return Err(rt("shim needs -namespace and -socket".into()));
    }
    let signals = Signals::new([SIGTERM, SIGINT, SIGPIPE, SIGCHLD])
        .map_err(|e| Error::Io("install signal handlers".into(), e))?;
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(Error::Io(
            "become subreaper".into(),
            std::io::Error::last_os_error(),
        ));
    }
    if let Err(e) = containerd_shim::logger::init(flags.debug, "info", &flags.namespace, &flags.id)
    {
        eprintln!("shim logger: {e}");
    }
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(move || reap_loop(signals))
        .map_err(|e| Error::Io("spawn reaper".into(), e))?;

    let path = socket_path(&flags.socket).to_string();
    if let Some(parent) = Path::new(&path).parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::Io(format!("create {}", parent.display()), e))?;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if std::os::unix::net::UnixStream::connect(&path).is_ok() {
                // A live shim for this group already serves this socket: reuse it.
                let _ = containerd_shim::util::write_address(&flags.socket);
                signal_started();
                return Ok(());
            }
            let _ = std::fs::remove_file(&path);
            UnixListener::bind(&path).map_err(|e| Error::Io(format!("bind {path}"), e))?
        }
        Err(e) => return Err(Error::Io(format!("bind {path}"), e)),
    };

    let ttrpc_address =
        std::env::var("TTRPC_ADDRESS").map_err(|_| rt("TTRPC_ADDRESS is not set".into()))?;
    let publisher = RemotePublisher::new(&ttrpc_address).map_err(|e| {
        rt(format!(
            "connect to containerd events at {ttrpc_address}: {e}"
        ))
    })?;
    let exit = Arc::new(ExitSignal::default());
    let task = TaskService::new(&flags.namespace, publisher, exit.clone());
    let methods = with_v2_names(create_task(Arc::new(task)));
    let mut server = Server::new()
        .add_listener(listener.into_raw_fd())
        .map_err(|e| rt(format!("ttrpc listener: {e}")))?
        .register_service(methods);
    server
        .start()
        .map_err(|e| rt(format!("ttrpc start: {e}")))?;
    signal_started();
    info!("skiff shim serving on {}", flags.socket);
    exit.wait();
    info!("skiff shim shutting down");
    server.shutdown();
    let _ = std::fs::remove_file(&path);
    Ok(())
}

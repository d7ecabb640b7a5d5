//! Watches a cgroup v1 memory controller for OOM events (eventfd + cgroup.event_control),
//! so the shim can publish TaskOOM.

use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    os::fd::{AsRawFd, FromRawFd},
    path::PathBuf,
    thread,
};

use crate::error::{io, Error, Result};

/// Starts a thread that calls `on_oom` for every OOM in `memory_dir`; it ends when the cgroup
/// is removed (the kernel signals the eventfd on removal too).
pub fn watch(memory_dir: PathBuf, on_oom: impl Fn() + Send + 'static) -> Result<()> {
    let oom_control =
        File::open(memory_dir.join("memory.oom_control")).map_err(io("open memory.oom_control"))?;
    // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
    let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if efd < 0 {
        return Err(Error::Io("eventfd".into(), std::io::Error::last_os_error()));
    }
    // SAFETY: efd is a fresh fd owned by nobody else.
    let mut event = unsafe { File::from_raw_fd(efd) };
    let mut control = OpenOptions::new()
        .write(true)
        .open(memory_dir.join("cgroup.event_control"))
        .map_err(io("open cgroup.event_control"))?;
    control
        .write_all(format!("{} {}", event.as_raw_fd(), oom_control.as_raw_fd()).as_bytes())
        .map_err(io("register oom event"))?;
    drop(control);
    thread::Builder::new()
        .name("oom".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let _keep = oom_control;
            let mut buf = [0u8; 8];
            while event.read_exact(&mut buf).is_ok() {
                if !memory_dir.join("cgroup.event_control").exists() {
                    break;
                }
                on_oom();
            }
        })
        .map_err(io("spawn oom thread"))?;
    Ok(())
}

//! CVE-2019-5736 defence: the process that enters a container never runs from a writable
//! view of the host's skiff binary.
//!
//! A container process could otherwise reach the host binary through /proc/PID/exe of a
//! runtime process inside its namespaces (or by making its entrypoint `#!/proc/self/exe`, so
//! the kernel re-executes the runtime inside the container) and overwrite it once it exits.
//!
//! Two equivalent ways are implemented:
//! * [`Exe::Memfd`]: a memfd copy sealed against writes, shrinking and growing; /proc/PID/exe
//!   is an immutable anonymous file (writes fail with EPERM). Costs a copy of the binary
//!   (~5 MB, several ms on a loaded host), so it is the fallback.
//! * [`Exe::ReadOnlyBind`] (default): the forked child first enters a *new, private* mount
//!   namespace (which the container needs anyway), bind-mounts the binary onto itself and
//!   remounts that bind read-only, then execs it. /proc/PID/exe then names the file through a
//!   read-only mount: opening it for writing fails with EROFS. The mount exists only in that
//!   namespace (root made rslave first, so nothing propagates to the host); pivot_root's
//!   detach of the old root (or leaving the temporary namespace, for exec and user-namespace
//!   containers) detaches it, and a detached mount can no longer be remounted read-write
//!   (the kernel refuses remounts of mounts outside the caller's namespace). Only a container
//!   holding CAP_SYS_ADMIN over the host user namespace with `--no-pivot` could remount it,
//!   and such a container can write host files anyway.
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const MFD_EXEC: libc::c_uint = 0x0010;
const F_SEAL_EXEC: libc::c_int = 0x0020;

/// How the child re-executes skiff.
#[derive(Debug)]
pub enum Exe {
    /// execveat() a sealed memfd copy.
    Memfd(OwnedFd),
    /// New mount namespace, read-only self-bind of this path, execve() it.
    ReadOnlyBind(CString),
}

impl Exe {
    /// The cheap read-only-bind method when possible, else the sealed memfd
    /// (`SKIFF_SEALED_EXE=memfd` forces the memfd).
    pub fn choose() -> io::Result<Exe> {
        // SAFETY: geteuid has no preconditions. Unprivileged (rootless) runtimes cannot
        // create mount namespaces outside a user namespace: use the memfd.
        let unprivileged = unsafe { libc::geteuid() } != 0;
        if unprivileged || std::env::var_os("SKIFF_SEALED_EXE").is_some_and(|v| v == "memfd") {
            return create().map(Exe::Memfd);
        }
        match std::fs::read_link("/proc/self/exe") {
            Ok(p) if p.is_absolute() && p.exists() => {
                match CString::new(p.into_os_string().into_encoded_bytes()) {
                    Ok(c) => Ok(Exe::ReadOnlyBind(c)),
                    Err(_) => create().map(Exe::Memfd),
                }
            }
            _ => create().map(Exe::Memfd),
        }
    }

    /// Whether the child will already be in a fresh mount namespace after exec.
    pub fn new_mount_ns(&self) -> bool {
        matches!(self, Exe::ReadOnlyBind(_))
    }
}

/// In the forked child (raw syscalls only): switch to the protected binary. Returns only on
/// failure.
///
/// # Safety
/// `argv`/`envp` must be NULL-terminated arrays of valid C strings.
pub unsafe fn exec_child(
    exe: &Exe,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) {
    // SAFETY: raw syscalls with valid pointers, per the caller's contract.
    unsafe {
        match exe {
            Exe::Memfd(fd) => {
                libc::syscall(
                    libc::SYS_execveat,
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    argv,
                    envp,
                    libc::AT_EMPTY_PATH,
                );
            }
            Exe::ReadOnlyBind(path) => {
                let p = path.as_ptr();
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return;
                }
                if libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                ) != 0
                {
                    return;
                }
                if libc::mount(p, p, std::ptr::null(), libc::MS_BIND, std::ptr::null()) != 0 {
                    return;
                }
                let ro = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                if libc::mount(std::ptr::null(), p, std::ptr::null(), ro, std::ptr::null()) != 0 {
                    return;
                }
                libc::execve(p, argv, envp);
            }
        }
    }
}

/// A sealed, executable in-memory copy of /proc/self/exe.
pub fn create() -> io::Result<OwnedFd> {
    let src = File::open("/proc/self/exe")?;
    let len = src.metadata()?.len();
    // SAFETY: memfd_create with a literal name; the fd is owned right after.
    let mut fd = unsafe {
        libc::memfd_create(
            c"skiff".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING | MFD_EXEC,
        )
    };
    if fd < 0 {
        // Kernels before 6.3 do not know MFD_EXEC.
        // SAFETY: as above.
        fd = unsafe {
            libc::memfd_create(
                c"skiff".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            )
        };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut left = len as usize;
    while left > 0 {
        // SAFETY: sendfile between two fds we own; offset NULL uses the file position.
        let n =
            unsafe { libc::sendfile(mem.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        left -= n as usize;
    }
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on our memfd.
    if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, seals | F_SEAL_EXEC) } != 0 {
        // SAFETY: as above (F_SEAL_EXEC needs 6.3+).
        if unsafe { libc::fcntl(mem.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(mem)
}

/// Whether `fd` is a memfd with the write seals in place.
pub fn is_sealed(fd: &OwnedFd) -> bool {
    // SAFETY: F_GET_SEALS on our fd.
    let s = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    s >= 0 && s & libc::F_SEAL_WRITE != 0 && s & libc::F_SEAL_SEAL != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn choose_defaults_to_bind() {
        let e = Exe::choose().expect("choose");
        // SAFETY: geteuid has no preconditions.
        assert_eq!(e.new_mount_ns(), unsafe { libc::geteuid() } == 0);
    }

    #[test]
    fn sealed_copy_is_not_writable() {
        let fd = create().expect("memfd");
        assert!(is_sealed(&fd));
        let mut f = File::from(fd);
        assert!(f.write_all(b"x").is_err());
    }
}

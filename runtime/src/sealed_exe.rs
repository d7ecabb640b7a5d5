//! CVE-2019-5736 defence: the process that enters a container runs from a sealed memfd copy
//! of the skiff binary, never from the host file.
//!
//! A container process could otherwise reach the host binary through /proc/PID/exe of a
//! runtime process inside its namespaces (or by making its entrypoint `#!/proc/self/exe`, so
//! the kernel re-executes the runtime inside the container) and overwrite it once it exits.
//! With a memfd sealed against writes, shrinking and growing, /proc/PID/exe points at an
//! immutable anonymous file: writing it fails with EPERM and the host binary is never exposed.
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const MFD_EXEC: libc::c_uint = 0x0010;
const F_SEAL_EXEC: libc::c_int = 0x0020;

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
        fd = unsafe { libc::memfd_create(c"skiff".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    let mem = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut left = len as usize;
    while left > 0 {
        // SAFETY: sendfile between two fds we own; offset NULL uses the file position.
        let n = unsafe {
            libc::sendfile(mem.as_raw_fd(), src.as_raw_fd(), std::ptr::null_mut(), left)
        };
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
    fn sealed_copy_is_not_writable() {
        let fd = create().expect("memfd");
        assert!(is_sealed(&fd));
        let mut f = File::from(fd);
        assert!(f.write_all(b"x").is_err());
    }
}

//! A `--console-socket` server: receives the pty master a runtime sends over SCM_RIGHTS, as runc's recvtty does.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A listening unix socket in its own temp dir; pass [`ConsoleSocket::path`] as `--console-socket`.
pub struct ConsoleSocket {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Bind a fresh socket.
    pub fn new() -> io::Result<ConsoleSocket> {
        let dir = tempfile::Builder::new()
            .prefix("skiff-console-")
            .tempdir()?;
        let path = dir.path().join("console.sock");
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        Ok(ConsoleSocket {
            _dir: dir,
            path,
            listener,
        })
    }

    /// Socket path for `--console-socket`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept one connection and receive the fd sent with it (bounded by `timeout`).
    pub fn receive(&self, timeout: Duration) -> io::Result<OwnedFd> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))?;
        let mut buf = [0u8; 4096];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        let mut fds = Vec::new();
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmRights(v) = c {
                fds.extend(v);
            }
        }
        let mut it = fds.into_iter();
        let first = it.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no fd received on the console socket",
            )
        })?;
        for extra in it {
            // SAFETY: fds received via SCM_RIGHTS are new and owned by us.
            drop(unsafe { OwnedFd::from_raw_fd(extra) });
        }
        // SAFETY: as above.
        Ok(unsafe { OwnedFd::from_raw_fd(first) })
    }
}

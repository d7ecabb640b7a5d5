//! Terminals: allocating the container's pty and handing the master to `--console-socket`
//! (SCM_RIGHTS, as runc does), consoleSize, and making the slave the controlling terminal.
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use anyhow::{Context, Result};

/// Open a new pty pair from the (container's) /dev/ptmx: (master, slave path).
pub fn open_pty() -> Result<(OwnedFd, PathBuf)> {
    // SAFETY: open/ioctl on a path literal and the fd we just got.
    unsafe {
        let fd = libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error()).context("opening /dev/ptmx");
        }
        let master = OwnedFd::from_raw_fd(fd);
        let mut unlock: libc::c_int = 0;
        if libc::ioctl(fd, libc::TIOCSPTLCK, &mut unlock) != 0 {
            return Err(io::Error::last_os_error()).context("unlocking pty");
        }
        let mut n: libc::c_uint = 0;
        if libc::ioctl(fd, libc::TIOCGPTN, &mut n) != 0 {
            return Err(io::Error::last_os_error()).context("getting pty number");
        }
        Ok((master, PathBuf::from(format!("/dev/pts/{n}"))))
    }
}

/// Set the terminal size (consoleSize / the caller's window size).
pub fn set_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ with a valid winsize.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Get the window size of `fd` if it is a terminal.
pub fn get_size(fd: RawFd) -> Option<(u16, u16)> {
    // SAFETY: TIOCGWINSZ into a zeroed winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) != 0 {
            return None;
        }
        Some((ws.ws_row, ws.ws_col))
    }
}

/// Open the slave, make it our controlling terminal and stdin/stdout/stderr.
pub fn attach_slave(slave: &std::path::Path) -> Result<()> {
    let c = std::ffi::CString::new(slave.as_os_str().as_encoded_bytes())
        .context("pty path contains NUL")?;
    // SAFETY: plain syscalls on our own fds.
    unsafe {
        let fd = libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("opening {}", slave.display()));
        }
        libc::setsid();
        if libc::ioctl(fd, libc::TIOCSCTTY, 0) != 0 {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e).context("setting controlling terminal");
        }
        for target in 0..3 {
            if libc::dup2(fd, target) < 0 {
                let e = io::Error::last_os_error();
                libc::close(fd);
                return Err(e).context("dup2 pty slave");
            }
        }
        if fd > 2 {
            libc::close(fd);
        }
    }
    Ok(())
}

/// Connect to `--console-socket` (in the runtime, before fork).
pub fn connect_console_socket(path: &std::path::Path) -> Result<OwnedFd> {
    let s = std::os::unix::net::UnixStream::connect(path)
        .with_context(|| format!("connecting to console socket {}", path.display()))?;
    Ok(OwnedFd::from(s))
}

/// Send `fd` over the unix socket `sock` with SCM_RIGHTS, with `name` as the payload.
pub fn send_fd(sock: RawFd, fd: RawFd, name: &CStr) -> io::Result<()> {
    let bytes = name.to_bytes();
    // SAFETY: building a msghdr with one iovec and one SCM_RIGHTS cmsg on local buffers.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut libc::c_void,
            iov_len: bytes.len(),
        };
        let mut cbuf = one_fd_cmsg_buf();
        let msg = one_fd_msghdr(&mut iov, &mut cbuf);
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receive one fd sent with [`send_fd`].
pub fn recv_fd(sock: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: recvmsg into local buffers; the received fd is owned by us afterwards.
    unsafe {
        let mut data = [0u8; 256];
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let mut cbuf = one_fd_cmsg_buf();
        let mut msg = one_fd_msghdr(&mut iov, &mut cbuf);
        if libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) < 0 {
            return Err(io::Error::last_os_error());
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null()
            || (*cmsg).cmsg_level != libc::SOL_SOCKET
            || (*cmsg).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::other("no file descriptor received"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const RawFd);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// A zeroed control buffer with room for exactly one SCM_RIGHTS fd.
fn one_fd_cmsg_buf() -> Vec<u8> {
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    vec![0u8; space]
}

/// The message header send_fd and recv_fd share: one iovec and `cbuf` as control data.
///
/// The header points into `iov` and `cbuf`; use it only while both are alive and unmoved.
fn one_fd_msghdr(iov: &mut libc::iovec, cbuf: &mut [u8]) -> libc::msghdr {
    // SAFETY: msghdr is plain old data; all zeroes is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = cbuf.len();
    msg
}

/// Put the caller's terminal in raw mode; restores the saved settings on drop.
#[derive(Debug)]
pub struct RawMode {
    fd: RawFd,
    saved: libc::termios,
}

impl RawMode {
    /// Enter raw mode on `fd` if it is a terminal.
    pub fn enter(fd: RawFd) -> Option<RawMode> {
        // SAFETY: tcgetattr/tcsetattr on a terminal fd.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            libc::tcsetattr(fd, libc::TCSANOW, &t);
            Some(RawMode { fd, saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes we saved.
        unsafe {
            libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved);
        }
    }
}

/// Copy between our stdin/stdout and the pty master until the master closes (the container
/// exited). Runs on a helper thread of the (already forked) foreground runtime.
pub fn proxy(master: OwnedFd) -> std::thread::JoinHandle<()> {
    let mfd = master.as_raw_fd();
    // SAFETY: dup gives the writer thread its own fd.
    let wfd = unsafe { libc::dup(mfd) };
    if wfd >= 0 {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                // SAFETY: read/write on fds we own.
                let n = unsafe { libc::read(0, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
                if n <= 0 {
                    break;
                }
                if !write_all_fd(wfd, &buf[..n as usize]) {
                    return;
                }
            }
        });
    }
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: read/write on fds we own.
            let n = unsafe { libc::read(mfd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n <= 0 {
                break;
            }
            // Output our stdout cannot take is dropped; keep draining so the container never
            // blocks on a full pty.
            let _ = write_all_fd(1, &buf[..n as usize]);
        }
        drop(master);
    })
}

/// Write all of `buf` to `fd`; false when a write fails or writes nothing.
fn write_all_fd(fd: RawFd, buf: &[u8]) -> bool {
    let mut off = 0usize;
    while off < buf.len() {
        // SAFETY: write from a live slice to an fd the caller owns.
        let w = unsafe {
            libc::write(
                fd,
                buf[off..].as_ptr() as *const libc::c_void,
                buf.len() - off,
            )
        };
        if w <= 0 {
            return false;
        }
        off += w as usize;
    }
    true
}

/// The caller's terminal joined to a container's pty for a foreground `run` or `exec`: raw
/// mode, our window size copied to the pty (again on every [`Foreground::resize`]), and the
/// I/O proxied until the pty closes.
#[derive(Debug)]
pub struct Foreground {
    raw: Option<RawMode>,
    master: Option<RawFd>,
    copier: Option<std::thread::JoinHandle<()>>,
}

impl Foreground {
    /// Attach to the pty master `console`; `None` (no terminal) attaches nothing.
    pub fn attach(console: Option<OwnedFd>) -> Self {
        let raw = console.as_ref().and_then(|_| RawMode::enter(0));
        let master = console.as_ref().map(|m| m.as_raw_fd());
        let mut fg = Foreground {
            raw,
            master,
            copier: None,
        };
        fg.resize();
        fg.copier = console.map(proxy);
        fg
    }

    /// Copy our terminal's size to the container's pty (on start and on SIGWINCH).
    pub fn resize(&self) {
        if let (Some(fd), Some((r, c))) = (self.master, get_size(0)) {
            let _ = set_size(fd, r, c);
        }
    }

    /// Wait for the proxy to end (the container's pty closed), then restore our terminal.
    pub fn finish(self) {
        if let Some(h) = self.copier {
            let _ = h.join();
        }
        drop(self.raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_passing() {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let f = std::fs::File::open("/dev/null").expect("null");
        send_fd(a.as_raw_fd(), f.as_raw_fd(), c"/dev/ptmx").expect("send");
        let got = recv_fd(b.as_raw_fd()).expect("recv");
        assert!(got.as_raw_fd() >= 0);
    }
}

//! Connects a container process's stdio to the fifos containerd hands the shim: pipes and
//! copy threads for plain stdio, a pty master received over a console socket for terminals.

use std::{
    fs::{File, OpenOptions},
    io::{IoSliceMut, Read, Write},
    os::{
        fd::{FromRawFd, OwnedFd},
        unix::{fs::OpenOptionsExt, net::UnixListener},
    },
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        mpsc::{channel, Receiver, Sender},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use nix::{
    fcntl::OFlag,
    sys::socket::{recvmsg, ControlMessageOwned, MsgFlags},
    unistd::pipe2,
};

use crate::{
    error::{errno, io, Error, Result},
    runtime::CommandIo,
};

/// The fifo paths containerd gave for one process.
#[derive(Clone, Debug, Default)]
pub struct StdioPaths {
    /// stdin fifo ("" for none).
    pub stdin: String,
    /// stdout fifo ("" for none).
    pub stdout: String,
    /// stderr fifo ("" for none).
    pub stderr: String,
    /// Whether the process gets a terminal.
    pub terminal: bool,
}

/// A process's live stdio plumbing in the shim.
pub struct ProcessIo {
    paths: StdioPaths,
    stdin: Arc<Mutex<Option<File>>>,
    console: Option<File>,
    done_rx: Receiver<()>,
    pending: usize,
}

/// Stdio prepared before the runtime command runs; completed into [`ProcessIo`] after.
pub struct PreparedIo {
    paths: StdioPaths,
    console: Option<ConsoleSocket>,
    stdin: Arc<Mutex<Option<File>>>,
    done_tx: Sender<()>,
    done_rx: Receiver<()>,
    pending: usize,
}

/// The unix socket the runtime sends a pty master through (`--console-socket`).
struct ConsoleSocket {
    path: PathBuf,
    listener: UnixListener,
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Opens a fifo for writing without blocking on a reader (O_RDWR never blocks on a fifo).
fn open_output(path: &str) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(io(format!("open stdio fifo {path}")))
}

/// Copies src to dst until EOF or error, then signals done.
fn spawn_copy(mut src: File, mut dst: File, done: Option<Sender<()>>) -> Result<()> {
    thread::Builder::new()
        .name("stdio-out".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            loop {
                match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if dst.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            drop(dst);
            if let Some(done) = done {
                let _ = done.send(());
            }
        })
        .map(|_| ())
        .map_err(io("spawn stdio thread"))
}

/// Copies the stdin fifo into the process input (pipe or pty master) until EOF or CloseIO.
fn spawn_stdin(path: String, sink: Arc<Mutex<Option<File>>>) -> Result<()> {
    thread::Builder::new()
        .name("stdio-in".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            // Blocks until a writer opens the fifo (or cleanup unblocks it).
            let Ok(mut fifo) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&path)
            else {
                return;
            };
            let mut buf = [0u8; 16 * 1024];
            loop {
                let n = match fifo.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                let target = match sink.lock() {
                    Ok(g) => g.as_ref().and_then(|f| f.try_clone().ok()),
                    Err(_) => None,
                };
                let Some(mut target) = target else { break };
                if target.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            if let Ok(mut g) = sink.lock() {
                g.take();
            }
        })
        .map(|_| ())
        .map_err(io("spawn stdin thread"))
}

/// Makes a CLOEXEC pipe, returning (read end, write end).
fn pipe() -> Result<(File, File)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(errno("pipe"))?;
    Ok((File::from(r), File::from(w)))
}

impl PreparedIo {
    /// Sets up pipes (or a console socket) and returns the stdio for the runtime command.
    pub fn prepare(paths: &StdioPaths) -> Result<(Self, CommandIo)> {
        let (done_tx, done_rx) = channel();
        let mut me = PreparedIo {
            paths: paths.clone(),
            console: None,
            stdin: Arc::new(Mutex::new(None)),
            done_tx,
            done_rx,
            pending: 0,
        };
        if paths.terminal {
            // A fresh 0700 directory, so nobody else can race for the socket path.
            let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("skiff-pty-XXXXXX"))
                .map_err(errno("create console socket dir"))?;
            let path = dir.join("console.sock");
            let listener = match UnixListener::bind(&path) {
                Ok(l) => l,
                Err(e) => {
                    let _ = std::fs::remove_dir(&dir);
                    return Err(Error::Io(
                        format!("bind console socket {}", path.display()),
                        e,
                    ));
                }
            };
            me.console = Some(ConsoleSocket { path, listener });
            return Ok((me, CommandIo::null()));
        }
        let mut cio = CommandIo::null();
        if !paths.stdin.is_empty() {
            let (r, w) = pipe()?;
            cio.stdin = Stdio::from(r);
            *me.stdin.lock().map_err(|_| poisoned())? = Some(w);
            spawn_stdin(paths.stdin.clone(), me.stdin.clone())?;
        }
        if !paths.stdout.is_empty() {
            let (r, w) = pipe()?;
            me.copy_to_fifo(r, &paths.stdout)?;
            cio.stdout = Stdio::from(w);
        }
        if !paths.stderr.is_empty() {
            let (r, w) = pipe()?;
            me.copy_to_fifo(r, &paths.stderr)?;
            cio.stderr = Stdio::from(w);
        }
        Ok((me, cio))
    }

    /// Copies `src` (a pipe or the pty master) into the output fifo at `path` on a thread;
    /// the copy stays pending until it has drained.
    fn copy_to_fifo(&mut self, src: File, path: &str) -> Result<()> {
        let fifo = open_output(path)?;
        spawn_copy(src, fifo, Some(self.done_tx.clone()))?;
        self.pending += 1;
        Ok(())
    }

    /// The `--console-socket` path to give the runtime, when a terminal was asked for.
    pub fn console_socket(&self) -> Option<&Path> {
        self.console.as_ref().map(|c| c.path.as_path())
    }

    /// After the runtime command succeeded: receives the pty master (terminal case) and
    /// starts copying it to and from the fifos.
    pub fn finish(mut self) -> Result<ProcessIo> {
        let mut console = None;
        if let Some(sock) = self.console.take() {
            let master = receive_master(&sock.listener)?;
            if !self.paths.stdout.is_empty() {
                let src = master.try_clone().map_err(io("dup pty master"))?;
                let path = self.paths.stdout.clone();
                self.copy_to_fifo(src, &path)?;
            }
            if !self.paths.stdin.is_empty() {
                let dst = master.try_clone().map_err(io("dup pty master"))?;
                *self.stdin.lock().map_err(|_| poisoned())? = Some(dst);
                spawn_stdin(self.paths.stdin.clone(), self.stdin.clone())?;
            }
            console = Some(master);
        }
        Ok(ProcessIo {
            paths: self.paths,
            stdin: self.stdin,
            console,
            done_rx: self.done_rx,
            pending: self.pending,
        })
    }

    /// Abandons the setup after a failed runtime command, unblocking any stdin opener.
    pub fn abort(self) {
        if let Ok(mut g) = self.stdin.lock() {
            g.take();
        }
        unblock_stdin(&self.paths.stdin);
    }
}

fn poisoned() -> Error {
    Error::Runtime("stdio lock poisoned".into())
}

/// Accepts the runtime's connection on the console socket and takes the fd it sent.
fn receive_master(listener: &UnixListener) -> Result<File> {
    listener
        .set_nonblocking(true)
        .map_err(io("console socket nonblocking"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(Error::Io("accept on console socket".into(), e)),
        }
    };
    stream
        .set_nonblocking(false)
        .map_err(io("console stream blocking"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io("console stream timeout"))?;
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    use std::os::fd::AsRawFd;
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(errno("receive pty master"))?;
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(errno("parse console message"))? {
        if let ControlMessageOwned::ScmRights(r) = c {
            fds.extend(r);
        }
    }
    let mut it = fds.into_iter();
    let Some(first) = it.next() else {
        return Err(Error::Runtime(
            "console socket: runtime sent no pty master".into(),
        ));
    };
    // SAFETY: the fd was just received via SCM_RIGHTS and is owned by nobody else.
    let master = unsafe { File::from_raw_fd(first) };
    for extra in it {
        // SAFETY: as above; extra fds are closed.
        drop(unsafe { OwnedFd::from_raw_fd(extra) });
    }
    Ok(master)
}

/// Opens the stdin fifo for writing without blocking, so a reader stuck in open(2) returns.
fn unblock_stdin(path: &str) {
    if path.is_empty() {
        return;
    }
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
}

impl ProcessIo {
    /// Closes the process's stdin (CloseIO).
    pub fn close_stdin(&self) {
        if let Ok(mut g) = self.stdin.lock() {
            g.take();
        }
    }

    /// Sets the terminal size (ResizePty).
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(console) = &self.console else {
            return Err(Error::FailedPrecondition("process has no terminal".into()));
        };
        let ws = libc::winsize {
            ws_row: height.min(u16::MAX as u32) as u16,
            ws_col: width.min(u16::MAX as u32) as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
        let rc = unsafe { libc::ioctl(console.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(Error::Io(
                "resize pty".into(),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Takes what is needed to wait for the output copies to drain.
    pub fn take_drain(&mut self) -> (Receiver<()>, usize) {
        let (_tx, rx) = channel();
        let pending = std::mem::take(&mut self.pending);
        (std::mem::replace(&mut self.done_rx, rx), pending)
    }

    /// Releases everything: closes stdin and the pty master, unblocks a stdin opener.
    pub fn close(&mut self) {
        self.close_stdin();
        self.console = None;
        unblock_stdin(&self.paths.stdin);
    }
}

/// Waits up to `limit` for `pending` output copies to finish.
pub fn drain(rx: Receiver<()>, pending: usize, limit: Duration) {
    let deadline = Instant::now() + limit;
    for _ in 0..pending {
        let left = deadline.saturating_duration_since(Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
}

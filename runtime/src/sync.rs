//! Parent <-> init synchronisation: a length-prefixed message channel over a socketpair.
//!
//! The runtime (`skiff create`/`run`/`exec`) and the process it forks (which re-executes a
//! sealed copy of skiff as a hidden `init` entry) talk over one `AF_UNIX` stream socketpair.
//! Each message is a 4-byte little-endian length followed by a JSON body, so errors from the
//! child travel back as text and `create` can print the real reason.
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

use crate::init::InitRequest;

/// Largest message accepted (a config with a big seccomp profile fits easily).
const MAX_MSG: usize = 16 << 20;

/// Messages exchanged between the runtime and the init/exec process.
#[derive(Debug, Serialize, Deserialize)]
pub enum Msg {
    /// Runtime -> child: everything the child needs to set the container up.
    Request(Box<InitRequest>),
    /// Child -> runtime: I unshared a user namespace, write my uid/gid maps (pid given).
    MapsPlease(i32),
    /// Runtime -> child: generic "go on" acknowledgement.
    Proceed,
    /// Child -> runtime: the container's init has this host pid (after the pid-ns fork).
    Pid(i32),
    /// Child -> runtime: namespaces and mounts exist; run createRuntime/prestart hooks now.
    HooksPlease,
    /// Runtime -> child: runtime hooks done; the state JSON for the container's own hooks.
    State(String),
    /// Child -> runtime: the pty master follows as SCM_RIGHTS on this socket.
    ConsoleFollows,
    /// Child -> runtime: set up and waiting for `start` (or, for exec, about to exec).
    Ready,
    /// Either way: something failed; the text is shown to the user.
    Error(String),
}

/// One end of the channel.
#[derive(Debug)]
pub struct Channel {
    sock: UnixStream,
}

impl Channel {
    /// A connected pair (both ends close-on-exec; the child clears the flag on its end).
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Channel { sock: a }, Channel { sock: b }))
    }

    /// Adopt an inherited descriptor (used by the re-executed init).
    ///
    /// # Safety
    /// `fd` must be an open socket owned by nobody else.
    pub unsafe fn from_raw(fd: RawFd) -> Channel {
        // SAFETY: guaranteed by the caller.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Channel {
            sock: UnixStream::from(owned),
        }
    }

    /// The raw descriptor (to pass it across exec).
    pub fn raw(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    /// Send one message.
    pub fn send(&mut self, msg: &Msg) -> io::Result<()> {
        let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let mut buf = Vec::with_capacity(body.len() + 4);
        buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
        buf.extend_from_slice(&body);
        self.sock.write_all(&buf)
    }

    /// Receive one message; `Ok(None)` when the peer closed the channel (e.g. it exec'd).
    pub fn recv(&mut self) -> io::Result<Option<Msg>> {
        let mut len = [0u8; 4];
        match self.sock.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ECONNRESET) => return Ok(None),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_MSG {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "sync message too large",
            ));
        }
        let mut body = vec![0u8; len];
        self.sock.read_exact(&mut body)?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Receive and require a specific acknowledgement, turning `Error` into an error.
    pub fn expect_proceed(&mut self) -> io::Result<()> {
        match self.recv()? {
            Some(Msg::Proceed) => Ok(()),
            Some(Msg::Error(e)) => Err(io::Error::other(e)),
            Some(other) => Err(io::Error::other(format!(
                "unexpected sync message {other:?}"
            ))),
            None => Err(io::Error::other("runtime closed the sync channel")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_eof() {
        let (mut a, mut b) = Channel::pair().expect("pair");
        a.send(&Msg::Pid(42)).expect("send");
        a.send(&Msg::Error("exec: \"/bin/nope\": no such file".into()))
            .expect("send");
        assert!(matches!(b.recv().expect("recv"), Some(Msg::Pid(42))));
        match b.recv().expect("recv") {
            Some(Msg::Error(e)) => assert!(e.contains("/bin/nope")),
            other => panic!("unexpected {other:?}"),
        }
        drop(a);
        assert!(b.recv().expect("recv").is_none());
    }
}

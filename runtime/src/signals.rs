//! Signal names and numbers (`kill` accepts `KILL`, `SIGKILL`, `9`, and `RTMIN+N`), plus the
//! foreground forwarding loop used by `run` and `exec`.
use anyhow::{bail, Result};

/// Signal names known to `kill`, without the SIG prefix.
const NAMES: &[(&str, i32)] = &[
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("BUS", libc::SIGBUS),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("FPE", libc::SIGFPE),
    ("HUP", libc::SIGHUP),
    ("ILL", libc::SIGILL),
    ("INT", libc::SIGINT),
    ("IO", libc::SIGIO),
    ("IOT", libc::SIGIOT),
    ("KILL", libc::SIGKILL),
    ("PIPE", libc::SIGPIPE),
    ("POLL", libc::SIGPOLL),
    ("PROF", libc::SIGPROF),
    ("PWR", libc::SIGPWR),
    ("QUIT", libc::SIGQUIT),
    ("SEGV", libc::SIGSEGV),
    ("STKFLT", libc::SIGSTKFLT),
    ("STOP", libc::SIGSTOP),
    ("SYS", libc::SIGSYS),
    ("TERM", libc::SIGTERM),
    ("TRAP", libc::SIGTRAP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("VTALRM", libc::SIGVTALRM),
    ("WINCH", libc::SIGWINCH),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
];

/// Parse a signal as runc does: a number (0 only probes the process), or a name with or
/// without `SIG` (case-insensitive).
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (0..=libc::SIGRTMAX()).contains(&n) {
            return Ok(n);
        }
        bail!("unknown signal {s:?}");
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some((_, n)) = NAMES.iter().find(|(k, _)| *k == name) {
        return Ok(*n);
    }
    if let Some(rest) = name.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("unknown signal {s:?}"))?
        };
        let n = libc::SIGRTMIN() + off;
        if n <= libc::SIGRTMAX() {
            return Ok(n);
        }
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| anyhow::anyhow!("unknown signal {s:?}"))?
        };
        let n = libc::SIGRTMAX() - off;
        if n >= libc::SIGRTMIN() {
            return Ok(n);
        }
    }
    bail!("unknown signal {s:?}")
}

/// Exit code of a wait status the way runc reports it (128+N for signal N).
pub fn exit_code(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        255
    }
}

/// Block every signal in this (single-threaded) process so the forwarding loop can take
/// them with `sigwaitinfo`; returns the previous mask.
pub fn block_all() -> libc::sigset_t {
    // SAFETY: plain sigset manipulation on local storage.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// Reset dispositions and the mask before exec'ing the container process, so it does not
/// inherit Rust's ignored SIGPIPE or our blocked mask.
pub fn reset_for_exec() {
    // SAFETY: resetting dispositions to SIG_DFL and emptying the mask is always valid.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            libc::signal(sig, libc::SIG_DFL);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// Foreground wait: forward every signal we receive to `pid`, reap children (we are a
/// subreaper), and return `pid`'s exit code. Call with all signals blocked.
/// `on_winch` is called on SIGWINCH (terminal resize) instead of forwarding.
pub fn forward_and_wait(pid: i32, mut on_winch: impl FnMut()) -> i32 {
    // SAFETY: sigwaitinfo/waitpid/kill on plain values.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        loop {
            // Reap first: the child may have exited before we started waiting.
            loop {
                let mut status = 0;
                let r = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if r <= 0 {
                    break;
                }
                if r == pid {
                    return exit_code(status);
                }
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&all, &mut info);
            if sig < 0 {
                continue;
            }
            match sig {
                libc::SIGCHLD => {}
                libc::SIGWINCH => on_winch(),
                // Job-control stops of the terminal must not stop the runtime itself.
                libc::SIGTTIN | libc::SIGTTOU | libc::SIGTSTP => {
                    libc::kill(pid, sig);
                }
                _ => {
                    libc::kill(pid, sig);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse_signal("KILL").expect("k"), 9);
        assert_eq!(parse_signal("SIGKILL").expect("k"), 9);
        assert_eq!(parse_signal("sigterm").expect("t"), 15);
        assert_eq!(parse_signal("9").expect("9"), 9);
        assert_eq!(parse_signal("SIGUSR1").expect("u"), libc::SIGUSR1);
        assert_eq!(parse_signal("RTMIN+1").expect("r"), libc::SIGRTMIN() + 1);
        assert!(parse_signal("FOO").is_err());
        assert_eq!(parse_signal("0").expect("0"), 0);
        assert!(parse_signal("-1").is_err());
        assert!(parse_signal("999").is_err());
        assert!(parse_signal("").is_err());
    }

    #[test]
    fn exit_codes() {
        // Exited with 3 -> 3; killed by 9 -> 137.
        assert_eq!(exit_code(3 << 8), 3);
        assert_eq!(exit_code(9), 137);
    }
}

//! Test harness shared by skiff's conformance, differential and security suites.
//!
//! The pieces, from the bottom up:
//! - [`bins`]: find the binaries under test (skiff, skiff-image, ...) and reference tools (runc, crun, umoci).
//! - [`bundle`]: build a throw-away busybox OCI bundle whose `config.json` mirrors `runc spec` (terminal off)
//!   and is easy to mutate.
//! - [`runtime`]: drive a runtime CLI (skiff, runc or crun) with a private `--root`, with timeouts, captured
//!   output and a [`runtime::Container`] Drop guard that force-deletes and checks for leaks.
//! - [`leaks`]: find mounts, processes, cgroups and state dirs a container left behind.
//! - [`console`]: a `--console-socket` server receiving the pty master over SCM_RIGHTS.
//! - [`skip!`], [`require!`], [`require_root!`]: print `SKIP: reason` and return early.
//!
//! Environment knobs: `SKIFF_RUNTIMES` (runtimes for [`runtime::for_each`]/[`runtime::compare`], default
//! `runc,skiff`; add `crun` to include it), `SKIFF_TEST_TIMEOUT` (seconds per runtime command, default 60),
//! `SKIFF_BIN`/`SKIFF_IMAGE_BIN`/`SKIFF_BUILD_BIN`/`SKIFF_SHIM_BIN` (binaries under test). Setting
//! `SKIFF_BIN=/usr/sbin/runc SKIFF_RUNTIMES=skiff` runs the differential tests runc-against-runc, which
//! checks that they are deterministic.
//!
//! A typical test:
//! ```no_run
//! use conformance::{bundle::Bundle, runtime};
//! runtime::for_each(|rt| {
//!     let mut b = Bundle::busybox().expect("bundle");
//!     b.args(&["sh", "-c", "exit 3"]);
//!     let c = rt.container(&b);
//!     assert_eq!(c.run().code, 3);
//! });
//! ```

pub mod bins;
pub mod bundle;
pub mod console;
pub mod leaks;
pub mod runtime;
pub mod vm;

/// Print `SKIP: <reason>` on stderr and return from the current (unit-returning) test function.
///
/// Tests must never pass silently when the host lacks something; this makes the skip visible in the output.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        eprintln!("SKIP: {}", format_args!($($arg)*));
        return;
    }};
}

/// Unwrap an `Option`, or print `SKIP: <reason>` and return from the current test when it is `None`.
///
/// Example: `let runc = require!(conformance::bins::runc(), "runc is not installed");`
#[macro_export]
macro_rules! require {
    ($opt:expr, $($arg:tt)*) => {
        match $opt {
            Some(v) => v,
            None => $crate::skip!($($arg)*),
        }
    };
}

/// Skip the current test unless it runs as root (containers need it).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip!("needs root (euid is not 0)");
        }
    };
}

/// Whether this process runs with euid 0, which creating real containers requires.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A process-wide unique, short, lowercase name (`<prefix>-<pid>-<n>`) so parallel tests never share ids.
///
/// Used for container ids, which also become cgroup and state dir names.
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 100_000)
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

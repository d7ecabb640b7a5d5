//! SIGINT/SIGTERM handling: the build stops at the next safe point (the running RUN container
//! is asked to stop), unwinds through its cleanup guards, and exits, leaving no bundle, mount or
//! container behind.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Install the handlers (without SA_RESTART, so blocking reads return EINTR and notice).
pub fn install() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only performs an atomic store.
        let _ = unsafe { sigaction(s, &act) };
    }
}

/// Whether the user asked the build to stop.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

//! Process identity and privileges: rlimits, user/groups, capabilities, no_new_privs, umask.
//!
//! CONTRACT (used by the lifecycle code; bodies owned by the security engineer).
use oci_spec::runtime::Process;

use crate::seccomp::SeccompProgram;

/// Errors while validating or applying process privileges.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The configuration is invalid (field named in the message).
    #[error("{0}")]
    Invalid(String),
    /// A system call failed.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Validated privilege settings, computed in the parent before fork.
#[derive(Debug, Clone, Default)]
pub struct Privileges {
    _private: (),
}

/// Validate `process` (capability names, rlimit names, user) before fork.
pub fn prepare(process: &Process) -> Result<Privileges, PrivilegeError> {
    let _ = process;
    Ok(Privileges::default())
}

/// The last step in the child before closing fds and exec: rlimits, setgroups/setgid/setuid,
/// the five capability sets, no_new_privs, umask, then seccomp as late as the kernel allows.
pub fn apply(p: &Privileges, seccomp: Option<&SeccompProgram>) -> Result<(), PrivilegeError> {
    let _ = (p, seccomp);
    Ok(())
}

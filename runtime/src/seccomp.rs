//! seccomp: compiling `linux.seccomp` to BPF and installing it right before exec.
//!
//! CONTRACT (used by the lifecycle code; bodies owned by the security engineer).
use oci_spec::runtime::LinuxSeccomp;

/// Errors while compiling or installing a seccomp filter.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile is invalid or unsupported (field named in the message).
    #[error("linux.seccomp: {0}")]
    Invalid(String),
    /// The kernel refused the filter.
    #[error("installing seccomp filter: {0}")]
    Install(#[source] std::io::Error),
}

/// A compiled filter, made in the parent before fork so the child only installs it.
#[derive(Debug, Clone, Default)]
pub struct SeccompProgram {
    _private: (),
}

/// Compile the profile; `None` when the config has no seccomp section.
pub fn compile(cfg: Option<&LinuxSeccomp>) -> Result<Option<SeccompProgram>, SeccompError> {
    let _ = cfg;
    Ok(None)
}

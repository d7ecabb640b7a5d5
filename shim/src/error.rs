//! Errors of the shim library, mapped onto ttrpc status codes for containerd.

use containerd_shim::protos::ttrpc::{self, Code};

/// Everything that can go wrong while serving a task request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A container or process id containerd named is not known.
    #[error("{0}: not found")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. id exists, process running).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The operation is not supported by this shim.
    #[error("{0}")]
    Unimplemented(String),
    /// The runtime binary failed.
    #[error("{0}")]
    Runtime(String),
    /// A system call or file operation failed.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// Result alias of the shim library.
pub type Result<T> = std::result::Result<T, Error>;

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::NotFound(_) => Code::NOT_FOUND,
            Error::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            Error::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            Error::Unimplemented(_) => Code::UNIMPLEMENTED,
            Error::Runtime(_) | Error::Io(..) => Code::UNKNOWN,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

/// Wraps an io error with what was being done.
pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |e| Error::Io(what, e)
}

/// Wraps a nix errno with what was being done.
pub fn errno(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> Error {
    let what = what.into();
    move |e| Error::Io(what, std::io::Error::from(e))
}

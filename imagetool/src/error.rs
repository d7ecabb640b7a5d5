//! Error type of the skiff-image library.

use std::path::Path;

/// Every failure the library reports; each message names the file, field or entry at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call or file operation failed on the named object.
    #[error("{context}: {err}")]
    Io {
        /// What was being done, including the path.
        context: String,
        /// The underlying OS error (already part of the message, so not chained as a source).
        err: std::io::Error,
    },
    /// A layer entry tried to escape or corrupt the rootfs; nothing was written for it.
    #[error("refusing hostile layer entry {path:?}: {reason}")]
    Hostile {
        /// The entry path as found in the tar.
        path: String,
        /// Which rule it breaks.
        reason: String,
    },
    /// Content did not hash to the digest that referenced it.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    Digest {
        /// Which blob or diff_id.
        what: String,
        /// Digest from the manifest/config.
        expected: String,
        /// Digest of the bytes actually read.
        actual: String,
    },
    /// A layer decompressed to more than the configured limit (decompression bomb).
    #[error("{what} exceeds the uncompressed size limit of {limit} bytes")]
    TooLarge {
        /// Which layer.
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
    /// The named image or reference does not exist.
    #[error("image not found: {0}")]
    NotFound(String),
    /// A reference string could not be parsed.
    #[error("invalid reference {reference:?}: {reason}")]
    BadReference {
        /// The reference as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A JSON document (manifest, config, index) is malformed.
    #[error("{context}: {err}")]
    Json {
        /// Which document.
        context: String,
        /// Parser error (already part of the message).
        err: serde_json::Error,
    },
    /// Any other invalid input, with a full message.
    #[error("{0}")]
    Invalid(String),
}

/// Result alias used throughout the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Build an I/O error with a context message.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            err: source,
        }
    }
    /// Build an I/O error naming a path.
    pub(crate) fn at(what: &str, path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            context: format!("{what} {}", path.display()),
            err: source,
        }
    }
    /// Build a hostile-entry error.
    pub(crate) fn hostile(path: impl AsRef<[u8]>, reason: impl Into<String>) -> Self {
        Error::Hostile {
            path: String::from_utf8_lossy(path.as_ref()).into_owned(),
            reason: reason.into(),
        }
    }
    /// Build a JSON error.
    pub(crate) fn json(context: impl Into<String>, source: serde_json::Error) -> Self {
        Error::Json {
            context: context.into(),
            err: source,
        }
    }
}

/// Attach a context string to io::Result values.
pub(crate) trait IoContext<T> {
    /// Convert an io error into [`Error::Io`] with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}

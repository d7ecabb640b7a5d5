//! Errors of the Dockerfile front end, each carrying where in the file it happened.

use std::fmt;

/// A place in a Dockerfile, so every message can point the user at the exact spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Position {
    /// 1-based physical line.
    pub line: usize,
    /// 1-based column (in characters) on that line.
    pub column: usize,
}

/// A syntax or semantic error in a Dockerfile, naming file, line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// The Dockerfile's name as given by the caller (usually its path).
    pub file: String,
    /// Where the problem is.
    pub pos: Position,
    /// What was wrong and what was expected.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.column, self.message
        )
    }
}

/// A failure while expanding `$variables` in an instruction's words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExpandError {
    /// What went wrong (e.g. a missing `}`).
    pub message: String,
}

impl ExpandError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

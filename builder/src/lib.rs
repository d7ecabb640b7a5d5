//! skiff-build: Dockerfile parser and image builder.
//!
//! The front end ([`parser`], [`instructions`], [`expand`], [`vars`]) turns a Dockerfile into
//! typed instructions and evaluates variables exactly as the Dockerfile reference says; the
//! back end builds images with skiff-image as a library and a runtime through its CLI.

pub mod archive;
pub mod copy;
pub mod dockerignore;
pub mod engine;
pub mod error;
pub mod expand;
pub mod fetch;
#[doc(hidden)]
pub mod fuzzing;
pub mod instructions;
pub mod interrupt;
pub mod parser;
pub mod reproducible;
pub mod rootfs;
pub mod runtime;
pub mod vars;

pub use error::{ExpandError, ParseError, Position};
pub use instructions::{Dockerfile, Instruction, Located};
pub use parser::parse;

//! Typed Dockerfile instructions: what the parser produces and the builder consumes.
//!
//! Words are kept as written (quotes and `$variables` intact) because their meaning depends on
//! the build state; the builder expands them with [`crate::expand`] when it runs the step.

use serde::Serialize;

use crate::error::Position;

/// A parsed Dockerfile: its parser directives and its instructions in order.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` said otherwise).
    pub escape: char,
    /// The `# syntax=` directive, recorded but not acted upon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub syntax: Option<String>,
    /// The `# check=` directive, recorded but not acted upon.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
    /// The instructions, in file order.
    pub instructions: Vec<Located>,
    /// Remarks for the user (ignored directives, empty continuation lines...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// An instruction with the place it came from, for messages and history.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Located {
    /// Where the instruction's keyword is.
    pub pos: Position,
    /// The logical line as written (continuations joined), for history and progress output.
    pub source: String,
    /// The instruction itself.
    pub instruction: Instruction,
}

/// The command of RUN, CMD, ENTRYPOINT and HEALTHCHECK CMD.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// JSON array: run directly, no shell.
    Exec(Vec<String>),
    /// A string given to the SHELL (default `/bin/sh -c`).
    Shell(String),
}

/// A here-document attached to RUN, COPY or ADD.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Heredoc {
    /// The delimiter word (quotes removed).
    pub name: String,
    /// The body, each line ending in a newline (leading tabs removed for `<<-`).
    pub content: String,
    /// Whether the builder expands variables in the body (false when the delimiter was quoted).
    pub expand: bool,
    /// Whether this was `<<-` (tabs stripped).
    pub chomp: bool,
    /// Optional file descriptor number written before `<<` (e.g. `3<<EOF`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
}

/// A `RUN --mount=...` specification (values unexpanded).
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct MountSpec {
    /// bind, cache, tmpfs, secret or ssh.
    pub kind: String,
    /// Mount point in the container (may be defaulted for secret/ssh).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Path inside `from` (or the context).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Stage or image the source comes from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Cache or secret id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Read-write (bind) / read-only (cache) flags.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readonly: Option<bool>,
    /// Cache sharing mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sharing: Option<String>,
    /// Octal mode for a new cache dir or the secret file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Owner of a new cache dir or the secret file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Group of a new cache dir or the secret file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gid: Option<String>,
    /// Whether a missing secret is an error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// Secret exposed as this environment variable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// tmpfs size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// Sources, destination and options of COPY and ADD.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct CopySpec {
    /// Source words (unexpanded); heredoc sources appear as `<<NAME`.
    pub sources: Vec<String>,
    /// Destination word (unexpanded).
    pub dest: String,
    /// Heredocs used as sources.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub heredocs: Vec<Heredoc>,
    /// `--from=stage|image`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chown: Option<String>,
    /// `--chmod=mode`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chmod: Option<String>,
    /// `--link`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub link: bool,
    /// `--parents`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub parents: bool,
    /// `--exclude=pattern` (repeatable).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// ADD `--checksum=sha256:...`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// ADD `--unpack=bool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unpack: Option<bool>,
    /// ADD `--keep-git-dir=bool`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_git_dir: Option<bool>,
}

/// HEALTHCHECK contents.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// `HEALTHCHECK NONE`: disable an inherited check.
    None,
    /// `HEALTHCHECK [OPTIONS] CMD ...`.
    Check {
        /// The test command.
        command: Command,
        /// Nanoseconds between checks (0 = default).
        interval_ns: u64,
        /// Nanoseconds before a check counts as failed (0 = default).
        timeout_ns: u64,
        /// Nanoseconds of start period (0 = default).
        start_period_ns: u64,
        /// Nanoseconds between checks during the start period (0 = default).
        start_interval_ns: u64,
        /// Consecutive failures before unhealthy (0 = default).
        retries: u32,
    },
}

/// A `name[=default]` of ARG, or a `key=value` of ENV/LABEL (value unexpanded).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyValue {
    /// The name (unexpanded for LABEL keys and ENV keys).
    pub key: String,
    /// The raw value; `None` for an ARG without default.
    pub value: Option<String>,
}

/// Every Dockerfile instruction, with its arguments as written.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Instruction {
    /// Start a stage.
    From {
        /// Image reference, `scratch` or an earlier stage's name (unexpanded).
        image: String,
        /// `--platform=...` (unexpanded).
        #[serde(skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
        /// `AS name` (lower-cased, as stage names are case-insensitive).
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Run a command in a container and keep its changes as a layer.
    Run {
        /// What to run.
        command: Command,
        /// Here-documents following the line.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        heredocs: Vec<Heredoc>,
        /// `--mount=...` specs.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        mounts: Vec<MountSpec>,
        /// `--network=default|none|host`.
        #[serde(skip_serializing_if = "Option::is_none")]
        network: Option<String>,
        /// `--security=sandbox|insecure`.
        #[serde(skip_serializing_if = "Option::is_none")]
        security: Option<String>,
        /// `--device=...` requests.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        devices: Vec<String>,
    },
    /// Default command.
    Cmd {
        /// The command.
        command: Command,
    },
    /// Default executable.
    Entrypoint {
        /// The command.
        command: Command,
    },
    /// Environment variables for later steps and the image.
    Env {
        /// Pairs in order.
        vars: Vec<KeyValue>,
    },
    /// Build arguments.
    Arg {
        /// Declarations in order.
        args: Vec<KeyValue>,
    },
    /// Copy from context, stage or image.
    Copy(CopySpec),
    /// Copy with URL download and tar extraction.
    Add(CopySpec),
    /// Working directory.
    Workdir {
        /// Path (unexpanded).
        path: String,
    },
    /// Ports the image listens on.
    Expose {
        /// `port[/proto]` words (unexpanded).
        ports: Vec<String>,
    },
    /// Volume mount points.
    Volume {
        /// Paths (unexpanded).
        paths: Vec<String>,
    },
    /// Default user.
    User {
        /// `user[:group]` (unexpanded).
        user: String,
    },
    /// Image labels.
    Label {
        /// Pairs in order.
        labels: Vec<KeyValue>,
    },
    /// Deprecated author field.
    Maintainer {
        /// Author.
        name: String,
    },
    /// Trigger for downstream builds.
    Onbuild {
        /// The trigger as written (stored in the image config).
        expression: String,
        /// The trigger, parsed (validated now, run later).
        instruction: Box<Instruction>,
    },
    /// Signal to stop the container.
    Stopsignal {
        /// Signal name or number (unexpanded).
        signal: String,
    },
    /// Container health check.
    Healthcheck(Health),
    /// Shell used for shell-form commands.
    Shell {
        /// Executable and arguments.
        shell: Vec<String>,
    },
}

impl Instruction {
    /// The keyword, upper case, for progress lines and history.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::From { .. } => "FROM",
            Instruction::Run { .. } => "RUN",
            Instruction::Cmd { .. } => "CMD",
            Instruction::Entrypoint { .. } => "ENTRYPOINT",
            Instruction::Env { .. } => "ENV",
            Instruction::Arg { .. } => "ARG",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Workdir { .. } => "WORKDIR",
            Instruction::Expose { .. } => "EXPOSE",
            Instruction::Volume { .. } => "VOLUME",
            Instruction::User { .. } => "USER",
            Instruction::Label { .. } => "LABEL",
            Instruction::Maintainer { .. } => "MAINTAINER",
            Instruction::Onbuild { .. } => "ONBUILD",
            Instruction::Stopsignal { .. } => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Shell { .. } => "SHELL",
        }
    }
}

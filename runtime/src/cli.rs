//! Command line (runc-compatible): global flags, command dispatch, runc-style errors.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands::{self, GlobalOptions};
use crate::logging;

/// skiff: a runc-compatible OCI container runtime.
#[derive(Debug, Parser)]
#[command(
    name = "skiff",
    version,
    disable_version_flag = true,
    about = "Open Container Initiative runtime (runc-compatible)"
)]
struct Cli {
    /// Print the version.
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: Option<bool>,
    /// Root directory for storage of container state (this should be located in tmpfs).
    #[arg(long, default_value = "/run/skiff")]
    root: PathBuf,
    /// Set the log file to write skiff logs to (default is '/dev/stderr').
    #[arg(long)]
    log: Option<PathBuf>,
    /// Set the log format ('text' (default), or 'json').
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Enable debug logging.
    #[arg(long)]
    debug: bool,
    /// Enable systemd cgroup support: cgroupsPath is "slice:prefix:name" and the container's
    /// cgroup is a transient scope unit (prefix-name.scope in slice) that systemd creates over
    /// the D-Bus system bus; needs systemd as init. Recorded at create for later commands.
    #[arg(long)]
    systemd_cgroup: bool,
    /// Ignore cgroup permission errors ('true', 'false', or 'auto').
    #[arg(long, value_name = "value")]
    rootless: Option<String>,
    /// Path to the criu binary used for checkpoint and restore (accepted, unused).
    #[arg(long)]
    criu: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checkpoint a running container (not supported).
    Checkpoint(commands::checkpoint::Args),
    /// Create a container.
    Create(commands::create::Args),
    /// Delete any resources held by the container often used with detached container.
    Delete(commands::delete::Args),
    /// Display container events such as OOM notifications, cpu, memory, and IO usage statistics.
    Events(commands::events::Args),
    /// Execute new process inside the container.
    Exec(commands::exec::Args),
    /// Show the enabled features.
    Features(commands::features::Args),
    /// Kill sends the specified signal (default: SIGTERM) to the container's init process.
    Kill(commands::kill::Args),
    /// Lists containers started by skiff with the given root.
    #[command(alias = "ls")]
    List(commands::list::Args),
    /// Pause suspends all processes inside the container.
    Pause(commands::pause::Args),
    /// Ps displays the processes running inside a container.
    Ps(commands::ps::Args),
    /// Restore a container from a previous checkpoint (not supported).
    Restore(commands::checkpoint::Args),
    /// Resumes all processes that have been previously paused.
    Resume(commands::resume::Args),
    /// Create and run a container.
    Run(commands::run::Args),
    /// Create a new specification file.
    Spec(commands::spec::Args),
    /// Executes the user defined process in a created container.
    Start(commands::start::Args),
    /// Output the state of a container.
    State(commands::state::Args),
    /// Update container resource constraints.
    Update(commands::update::Args),
}

/// Entry point used by `main.rs`; returns the process exit code.
pub fn main() -> i32 {
    // The hidden init entry (a sealed re-exec of ourselves) skips argument parsing entirely.
    if let Ok(fd) = std::env::var(crate::init::INIT_ENV) {
        if std::env::args_os().nth(1).is_some_and(|a| a == "init") {
            crate::init::main(&fd);
        }
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let format = match cli.log_format.as_str() {
        "text" => logging::Format::Text,
        "json" => logging::Format::Json,
        other => {
            logging::init(cli.log.clone(), logging::Format::Text, cli.debug);
            logging::fatal(&format!("invalid log-format: {other}"));
            return 1;
        }
    };
    logging::init(cli.log.clone(), format, cli.debug);
    let _ = &cli.criu;
    let global = GlobalOptions {
        root: absolute(&cli.root),
        systemd_cgroup: cli.systemd_cgroup,
        rootless: cli.rootless.clone(),
        debug: cli.debug,
    };
    let (name, res) = dispatch(&global, cli.command);
    match res {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{e:#}");
            let msg = match name {
                "create" | "run" => format!("skiff {name} failed: {msg}"),
                _ => msg,
            };
            logging::fatal(&msg);
            1
        }
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

fn dispatch(g: &GlobalOptions, c: Command) -> (&'static str, anyhow::Result<i32>) {
    match c {
        Command::Checkpoint(a) => ("checkpoint", commands::checkpoint::run(g, "checkpoint", a)),
        Command::Create(a) => ("create", commands::create::run(g, a)),
        Command::Delete(a) => ("delete", commands::delete::run(g, a)),
        Command::Events(a) => ("events", commands::events::run(g, a)),
        Command::Exec(a) => ("exec", commands::exec::run(g, a)),
        Command::Features(a) => ("features", commands::features::run(g, a)),
        Command::Kill(a) => ("kill", commands::kill::run(g, a)),
        Command::List(a) => ("list", commands::list::run(g, a)),
        Command::Pause(a) => ("pause", commands::pause::run(g, a)),
        Command::Ps(a) => ("ps", commands::ps::run(g, a)),
        Command::Restore(a) => ("restore", commands::checkpoint::run(g, "restore", a)),
        Command::Resume(a) => ("resume", commands::resume::run(g, a)),
        Command::Run(a) => ("run", commands::run::run(g, a)),
        Command::Spec(a) => ("spec", commands::spec::run(g, a)),
        Command::Start(a) => ("start", commands::start::run(g, a)),
        Command::State(a) => ("state", commands::state::run(g, a)),
        Command::Update(a) => ("update", commands::update::run(g, a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_definition_is_consistent() {
        // clap's own checks (unique ids and groups across flattened structs, e.g. run = create + 2).
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn parses_runc_style_invocations() {
        let c = Cli::try_parse_from([
            "skiff",
            "--root",
            "/tmp/r",
            "--log-format",
            "json",
            "run",
            "-d",
            "-b",
            "/b",
            "--pid-file",
            "/p",
            "id1",
        ])
        .expect("run");
        assert!(matches!(c.command, Command::Run(ref a) if a.detach && a.create.id == "id1"));
        let c = Cli::try_parse_from(["skiff", "kill", "--all", "c", "KILL"]).expect("kill");
        assert!(matches!(c.command, Command::Kill(ref a) if a.all && a.signal == "KILL"));
        let c = Cli::try_parse_from(["skiff", "exec", "-e", "A=1", "-t", "c", "sh", "-c", "x"])
            .expect("exec");
        assert!(
            matches!(c.command, Command::Exec(ref a) if a.tty && a.command == ["sh", "-c", "x"])
        );
        let c = Cli::try_parse_from(["skiff", "--rootless=true", "run", "c"]).expect("rootless");
        assert_eq!(c.rootless.as_deref(), Some("true"));
        let c = Cli::try_parse_from(["skiff", "list", "-q"]).expect("list");
        assert!(matches!(c.command, Command::List(ref a) if a.quiet));
    }
}

//! `skiff-build`: build an OCI image from a Dockerfile into the skiff image store.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Parser;
use skiff_build::engine::{self, BuildOptions, Builder, Output, Progress};
use skiff_build::runtime::Network;

/// Build an image from a Dockerfile (RUN steps go through an OCI runtime's CLI).
#[derive(Debug, Parser)]
#[command(name = "skiff-build", version)]
struct Cli {
    /// Build context directory.
    #[arg(default_value = ".")]
    context: PathBuf,
    /// Dockerfile (default CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Name the image NAME[:TAG] in the store (repeatable).
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Build argument NAME=VALUE (a bare NAME takes the value from the environment).
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Image label KEY=VALUE (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Build this stage (and only what it needs).
    #[arg(long)]
    target: Option<String>,
    /// Do not use the build cache.
    #[arg(long)]
    no_cache: bool,
    /// OCI runtime used for RUN (skiff, runc, crun or a path).
    #[arg(long, env = "SKIFF_RUNTIME", default_value = "skiff")]
    runtime: String,
    /// State directory passed to the runtime as --root.
    #[arg(long, default_value = "/run/skiff-build")]
    runtime_root: PathBuf,
    /// Also write the image as type=oci,dest=FILE or type=docker,dest=FILE (repeatable).
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Write the image id to this file.
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Print only the image id.
    #[arg(short, long)]
    quiet: bool,
    /// Progress output: auto, plain or tty.
    #[arg(long, default_value = "auto")]
    progress: String,
    /// Secret for RUN --mount=type=secret: id=ID,src=PATH (repeatable).
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// Default network for RUN: host (default) or none.
    #[arg(long, default_value = "host")]
    network: String,
    /// Extra trusted CAs for ADD https://: every *.crt (PEM) file in this directory
    /// (as buildah's --cert-dir). SSL_CERT_FILE / SSL_CERT_DIR replace the system trust store.
    #[arg(long, value_name = "DIR")]
    cert_dir: Option<PathBuf>,
    /// Verify the certificates of ADD https:// servers (default true); `--tls-verify=false`
    /// turns verification off (as buildah's flag; insecure).
    #[arg(long, value_name = "BOOL", default_value_t = true, num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// Image store directory.
    #[arg(long, env = "SKIFF_STORE", default_value = skiff_image::store::DEFAULT_STORE)]
    store: PathBuf,
    /// Write log messages to this file as well.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Parse the Dockerfile, print its instructions as JSON and exit.
    #[arg(long, hide = true)]
    print_instructions: bool,
}

fn main() {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("skiff-build: error: {e:#}");
            std::process::exit(if skiff_build::interrupt::requested() {
                130
            } else {
                1
            });
        }
    }
}

fn parse_output(s: &str) -> Result<Output> {
    let mut ty = None;
    let mut dest = None;
    for f in s.split(',') {
        match f.split_once('=') {
            Some(("type", v)) => ty = Some(v.to_string()),
            Some(("dest", v)) => dest = Some(PathBuf::from(v)),
            _ => bail!("invalid --output '{s}': expected type=oci|docker,dest=FILE"),
        }
    }
    let dest = dest.with_context(|| format!("--output '{s}': dest=FILE is required"))?;
    match ty.as_deref() {
        Some("oci") => Ok(Output::OciArchive(dest)),
        Some("docker") => Ok(Output::DockerArchive(dest)),
        other => bail!("--output '{s}': unsupported type {other:?}: expected oci or docker"),
    }
}

fn run(cli: Cli) -> Result<()> {
    if cli.print_instructions {
        let path = cli
            .file
            .clone()
            .unwrap_or_else(|| cli.context.join("Dockerfile"));
        let src = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let df = skiff_build::parse(&path.display().to_string(), &src)?;
        println!("{}", serde_json::to_string_pretty(&df)?);
        return Ok(());
    }
    let progress = if cli.quiet {
        Progress::Quiet
    } else {
        match cli.progress.as_str() {
            "plain" => Progress::Plain,
            "tty" => Progress::Tty,
            "auto" => {
                if std::io::stderr().is_terminal() {
                    Progress::Tty
                } else {
                    Progress::Plain
                }
            }
            o => bail!("invalid --progress '{o}': expected auto, plain or tty"),
        }
    };
    let network = match cli.network.as_str() {
        "host" | "default" => Network::Host,
        "none" => Network::None,
        o => bail!("invalid --network '{o}': expected host or none"),
    };
    let mut build_args = Vec::new();
    for a in &cli.build_args {
        match engine::parse_build_arg(a) {
            Some(kv) => build_args.push(kv),
            None if !a.contains('=') => {}
            None => bail!("invalid --build-arg '{a}': expected NAME=VALUE"),
        }
    }
    let source_date_epoch = match std::env::var("SOURCE_DATE_EPOCH").ok().or_else(|| {
        build_args
            .iter()
            .find(|(k, _)| k == "SOURCE_DATE_EPOCH")
            .map(|(_, v)| v.clone())
    }) {
        Some(v) if !v.is_empty() => Some(
            v.parse::<i64>()
                .with_context(|| format!("SOURCE_DATE_EPOCH '{v}' is not a number of seconds"))?,
        ),
        _ => None,
    };
    let mut labels = Vec::new();
    for l in &cli.labels {
        labels.push(
            engine::parse_label(l)
                .with_context(|| format!("invalid --label '{l}': expected KEY=VALUE"))?,
        );
    }
    let mut outputs = Vec::new();
    for o in &cli.outputs {
        outputs.push(parse_output(o)?);
    }
    let secret_tmp = tempfile::tempdir().context("creating a temp dir for secrets")?;
    let mut secrets = Vec::new();
    for s in &cli.secrets {
        secrets.push(engine::parse_secret(s, secret_tmp.path()).map_err(anyhow::Error::msg)?);
    }
    for t in &cli.tags {
        skiff_image::full_name(t).with_context(|| format!("invalid tag '{t}'"))?;
    }
    let opts = BuildOptions {
        context: cli.context.clone(),
        dockerfile: cli.file.clone(),
        tags: cli.tags.clone(),
        build_args,
        labels,
        target: cli.target.clone(),
        no_cache: cli.no_cache,
        runtime: cli.runtime.clone(),
        runtime_root: cli.runtime_root.clone(),
        outputs,
        iidfile: cli.iidfile.clone(),
        progress,
        secrets,
        network,
        source_date_epoch,
        store: cli.store.clone(),
        tls: skiff_build::fetch::TlsOptions {
            cert_dir: cli.cert_dir.clone(),
            verify: cli.tls_verify,
        },
    };
    let mut logfile = match &cli.log {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening log file {}", p.display()))?,
        ),
        None => None,
    };
    let json = cli.log_format == "json";
    let mut log = |line: &str| {
        eprintln!("{line}");
        if let Some(f) = logfile.as_mut() {
            let _ = if json {
                writeln!(
                    f,
                    "{}",
                    serde_json::json!({"level": "info", "msg": line, "time": chrono::Utc::now().to_rfc3339()})
                )
            } else {
                writeln!(f, "{line}")
            };
        }
    };
    if !cli.tls_verify {
        log("warning: --tls-verify=false: certificates of ADD https:// servers are NOT verified");
    }
    if let Some(d) = &cli.cert_dir {
        if !d.is_dir() {
            bail!("--cert-dir {}: not a directory", d.display());
        }
    }
    skiff_build::interrupt::install();
    let builder = Builder::new(opts, &mut log)?;
    let result = builder.build()?;
    println!("{}", result.image_id);
    Ok(())
}

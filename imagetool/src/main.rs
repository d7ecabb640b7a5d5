//! `skiff-image` binary: command-line front end of the skiff_image library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use skiff_image::{bundle, store::Store, transfer, Mode, SpecOptions, UnpackOptions};
use std::io::IsTerminal;
use std::path::PathBuf;

mod volume_cmd;

#[derive(Parser)]
#[command(
    name = "skiff-image",
    version,
    about = "OCI image store: import/export, unpack (copy|overlay), commit"
)]
struct Cli {
    /// Store directory (an OCI image layout).
    #[arg(long, global = true, env = "SKIFF_STORE", default_value = skiff_image::store::DEFAULT_STORE)]
    store: PathBuf,
    /// Log file (default stderr).
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long = "log-format", global = true, default_value = "text")]
    log_format: String,
    /// Debug logging.
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

const UNPACK_NETWORK_HELP: &str = "\
Networking (docker run -p): with -p/--net bridge, config.json gets OCI hooks
  createRuntime: <this skiff-image> net-hook add    poststop: <this skiff-image> net-hook del
that attach the container to the CNI network `skiff` (bridge skiff0, host-local 10.99.0.0/16,
portmap, loopback for lo; plugins from /usr/lib/cni, package containernetworking-plugins, and
iptables) and detach it again. Settings are in BUNDLE/network.json; while the container exists its
pinned network namespace and saved CNI result are in /run/skiff-net/ID/. Deleting the container
removes its veth, IP allocation and iptables rules; the skiff0 bridge and ip_forward=1 stay (like
docker0). Works with skiff and runc alike. BUNDLE/{hostname,hosts,resolv.conf} are bind-mounted on
/etc and never committed; the hostname defaults to a random 12-hex-digit name.
Example: skiff-image unpack helloworld /tmp/hw -p 4000:80 && cd /tmp/hw && skiff run -d hw1 &&
         curl http://localhost:4000";

#[derive(Subcommand)]
enum Cmd {
    /// Import an OCI layout/archive, docker archive, rootfs tarball or rootfs directory.
    Import {
        /// Source: PATH, oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG].
        source: String,
        /// NAME[:TAG] to give it in the store.
        name: Option<String>,
        /// Platform to pick from an index (os/arch[/variant]).
        #[arg(long)]
        platform: Option<String>,
        /// Cmd for a rootfs import (repeat for each word).
        #[arg(long = "cmd", num_args = 1..)]
        cmd: Option<Vec<String>>,
        /// Entrypoint for a rootfs import (repeat for each word).
        #[arg(long = "entrypoint", num_args = 1..)]
        entrypoint: Option<Vec<String>>,
        /// Extra KEY=VALUE env for a rootfs import.
        #[arg(long = "env")]
        env: Vec<String>,
    },
    /// Export an image to oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME:TAG].
    Export {
        /// Image reference.
        image: String,
        /// Destination.
        dest: String,
    },
    /// List images.
    Images {
        /// Print JSON.
        #[arg(long)]
        json: bool,
        /// Only print names.
        #[arg(short, long)]
        quiet: bool,
    },
    /// Print manifest and config as JSON.
    Inspect {
        /// Image reference.
        image: String,
        /// Platform to pick from an index.
        #[arg(long)]
        platform: Option<String>,
    },
    /// Give an image another name.
    Tag {
        /// Existing image.
        source: String,
        /// New NAME[:TAG].
        target: String,
    },
    /// Remove image names (blobs go on gc).
    Rm {
        /// NAME[:TAG]...
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove unreferenced blobs and cached layers.
    Gc,
    /// Show an image's history.
    History {
        /// Image reference.
        image: String,
    },
    /// Unpack an image into an OCI bundle.
    #[command(after_long_help = UNPACK_NETWORK_HELP)]
    Unpack {
        /// Image reference.
        image: String,
        /// Bundle directory (created; must be empty).
        bundle: PathBuf,
        /// copy or overlay (default overlay when the kernel has it).
        #[arg(long)]
        mode: Option<String>,
        /// Override the image's Cmd (one or more words).
        #[arg(long = "cmd", num_args = 1.., allow_hyphen_values = true)]
        cmd: Option<Vec<String>>,
        /// Override the Entrypoint.
        #[arg(long = "entrypoint", num_args = 1.., allow_hyphen_values = true)]
        entrypoint: Option<Vec<String>>,
        /// KEY=VALUE environment.
        #[arg(short, long = "env")]
        env: Vec<String>,
        /// Volume: /CTR (anonymous, in the store), /HOST:/CTR[:ro|rw] (bind; HOST must exist) or
        /// NAME:/CTR[:ro|rw] (named store volume, created if missing). New store volumes get the
        /// image's content at CTR copied in; volume contents are never committed. Repeatable.
        #[arg(short = 'v', long = "volume", value_name = "SPEC")]
        volume: Vec<String>,
        /// Hostname.
        #[arg(long)]
        hostname: Option<String>,
        /// Read-only rootfs.
        #[arg(long = "read-only")]
        read_only: bool,
        /// User override.
        #[arg(long)]
        user: Option<String>,
        /// Platform to pick from an index.
        #[arg(long)]
        platform: Option<String>,
        /// Per-layer uncompressed size limit in bytes.
        #[arg(long = "max-layer-size")]
        max_layer_size: Option<u64>,
        #[command(flatten)]
        resources: Box<skiff_image::ResourceFlags>,
        /// Publish a port: [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp] (repeatable; implies --net bridge).
        #[arg(short = 'p', long = "publish")]
        publish: Vec<String>,
        /// Network: none (own netns, only lo; default), bridge (CNI network `skiff` on bridge
        /// skiff0, 10.99.0.0/16, set up by OCI hooks; default with -p) or host.
        #[arg(long = "net")]
        net: Option<String>,
        /// CNI network config list to use instead of the built-in `skiff` network (implies bridge).
        #[arg(long = "cni-conflist")]
        cni_conflist: Option<PathBuf>,
    },
    /// OCI hook: attach (add, createRuntime) or detach (del, poststop) a container's network;
    /// reads the OCI state on stdin.
    #[command(hide = true)]
    NetHook {
        /// add or del.
        command: String,
    },
    /// Unmount an overlay bundle's rootfs.
    Umount {
        /// Bundle directory.
        bundle: PathBuf,
    },
    /// Mount an overlay bundle's rootfs again after umount.
    Mount {
        /// Bundle directory.
        bundle: PathBuf,
    },
    /// Unmount and delete a bundle (its volumes stay unless --volumes).
    RmBundle {
        /// Bundle directory.
        bundle: PathBuf,
        /// Also remove the bundle's anonymous volumes (named volumes always stay), like `docker rm -v`.
        #[arg(short = 'v', long = "volumes")]
        volumes: bool,
    },
    /// Manage store volumes (STORE/volumes/NAME/_data).
    #[command(subcommand)]
    Volume(volume_cmd::VolumeCmd),
    /// Commit a bundle's changes as a new image.
    Commit {
        /// Bundle directory.
        bundle: PathBuf,
        /// NAME[:TAG] for the new image.
        name: String,
        /// History comment.
        #[arg(short, long)]
        message: Option<String>,
    },
}

fn init_logging(cli: &Cli) -> Result<()> {
    let level = if cli.debug { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKIFF_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let b = tracing_subscriber::fmt().with_env_filter(filter);
    match &cli.log {
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("opening log {}", p.display()))?;
            let w = std::sync::Mutex::new(f);
            if cli.log_format == "json" {
                b.json().with_writer(w).init();
            } else {
                b.with_ansi(false).with_writer(w).init();
            }
        }
        None => {
            if cli.log_format == "json" {
                b.json().with_writer(std::io::stderr).init();
            } else {
                b.with_ansi(std::io::stderr().is_terminal())
                    .with_writer(std::io::stderr)
                    .init();
            }
        }
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("skiff-image: {e:#}");
        std::process::exit(1);
    }
    let log_to_file = cli.log.is_some();
    if let Err(e) = run(cli) {
        if log_to_file {
            tracing::error!("{e:#}");
        }
        eprintln!("skiff-image: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Cmd::NetHook { command } = &cli.cmd {
        return skiff_image::network::hook::main(command)
            .with_context(|| format!("net-hook {command}"));
    }
    let store = Store::open(&cli.store)
        .with_context(|| format!("opening store {}", cli.store.display()))?;
    match cli.cmd {
        Cmd::Import {
            source,
            name,
            platform,
            cmd,
            entrypoint,
            env,
        } => {
            let opts = transfer::ImportOptions {
                platform,
                cmd,
                entrypoint,
                env,
            };
            let img = transfer::import(&store, &source, name.as_deref(), &opts)
                .with_context(|| format!("importing {source}"))?;
            println!(
                "{}",
                img.name
                    .clone()
                    .unwrap_or_else(|| img.manifest_digest.clone())
            );
        }
        Cmd::Export { image, dest } => {
            let img = transfer::resolve(&store, &image, None)
                .with_context(|| format!("resolving {image}"))?;
            transfer::export(&store, &img, &dest)
                .with_context(|| format!("exporting {image} to {dest}"))?;
        }
        Cmd::Images { json, quiet } => {
            let list = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if quiet {
                for i in list {
                    println!("{}:{}", i.name, i.tag);
                }
            } else {
                println!(
                    "{:<30} {:<15} {:<14} {:<22} {:>10}",
                    "NAME", "TAG", "ID", "CREATED", "SIZE"
                );
                for i in list {
                    let id: String =
                        i.id.trim_start_matches("sha256:")
                            .chars()
                            .take(12)
                            .collect();
                    let created: String = i.created.unwrap_or_default().chars().take(19).collect();
                    println!(
                        "{:<30} {:<15} {:<14} {:<22} {:>10}",
                        i.name,
                        i.tag,
                        id,
                        created,
                        human(i.size)
                    );
                }
            }
        }
        Cmd::Inspect { image, platform } => {
            let img = transfer::resolve(&store, &image, platform.as_deref())
                .with_context(|| format!("resolving {image}"))?;
            let out = serde_json::json!({
                "Name": img.name, "Digest": img.manifest_digest, "Id": img.config_digest,
                "MediaType": img.manifest_media_type,
                "Manifest": serde_json::from_slice::<serde_json::Value>(&store.read_blob(&img.manifest_digest)?)?,
                "Config": serde_json::from_slice::<serde_json::Value>(&store.read_blob(&img.config_digest)?)?,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Cmd::Tag { source, target } => {
            let img = transfer::resolve(&store, &source, None)
                .with_context(|| format!("resolving {source}"))?;
            store.tag(&img, &target)?;
        }
        Cmd::Rm { names } => {
            for n in names {
                store.remove(&n).with_context(|| format!("removing {n}"))?;
            }
        }
        Cmd::Gc => {
            let (b, l) = store.gc()?;
            println!("removed {b} blobs, {l} cached layers");
        }
        Cmd::History { image } => {
            let img = transfer::resolve(&store, &image, None)
                .with_context(|| format!("resolving {image}"))?;
            println!("{:<32} {:<8} CREATED BY", "CREATED", "LAYER");
            for h in img.config.history().clone().unwrap_or_default() {
                let created: String = h
                    .created()
                    .clone()
                    .unwrap_or_default()
                    .chars()
                    .take(30)
                    .collect();
                let empty = if h.empty_layer().unwrap_or(false) {
                    "-"
                } else {
                    "yes"
                };
                println!(
                    "{:<32} {:<8} {}",
                    created,
                    empty,
                    h.created_by().clone().unwrap_or_default()
                );
            }
        }
        Cmd::Unpack {
            image,
            bundle,
            mode,
            cmd,
            entrypoint,
            env,
            volume,
            hostname,
            read_only,
            user,
            platform,
            max_layer_size,
            resources,
            publish,
            net,
            cni_conflist,
        } => {
            let network = skiff_image::network::NetworkOptions {
                mode: net.map(|n| n.parse()).transpose()?,
                publish,
                cni_conflist,
                hook_exe: Some(std::env::current_exe().context("locating skiff-image for hooks")?),
                etc_files: true,
            };
            skiff_image::network::check(&network)?;
            let img = transfer::resolve(&store, &image, platform.as_deref())
                .with_context(|| format!("resolving {image}"))?;
            let mode = mode.map(|m| m.parse::<Mode>()).transpose()?;
            let opts = UnpackOptions {
                mode,
                spec: SpecOptions {
                    cmd,
                    entrypoint,
                    env,
                    volumes: volume,
                    hostname,
                    read_only,
                    user,
                    cwd: None,
                    network,
                },
                max_layer_size,
                progress: std::io::stderr().is_terminal(),
                resources: resources.resolve()?,
            };
            bundle::unpack(&store, &img, &bundle, &opts)
                .with_context(|| format!("unpacking {image} into {}", bundle.display()))?;
        }
        Cmd::NetHook { .. } => {}
        Cmd::Umount { bundle } => bundle::umount(&bundle)?,
        Cmd::Mount { bundle } => bundle::remount(&store, &bundle)?,
        Cmd::RmBundle { bundle, volumes } => {
            if volumes {
                bundle::remove_bundle_and_volumes(&bundle)?
            } else {
                bundle::remove_bundle(&bundle)?
            }
        }
        Cmd::Volume(cmd) => volume_cmd::run(&store, cmd)?,
        Cmd::Commit {
            bundle,
            name,
            message,
        } => {
            let b = bundle::read_meta(&bundle)?;
            let st = if b.store != cli.store {
                Store::open(&b.store)?
            } else {
                store
            };
            let h = skiff_image::History {
                created_by: format!("skiff-image commit {}", bundle.display()),
                comment: message,
                author: None,
            };
            let img = bundle::commit(&st, &bundle, &name, Some(h))
                .with_context(|| format!("committing {}", bundle.display()))?;
            println!("{}", img.config_digest);
        }
    }
    Ok(())
}

fn human(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    format!("{v:.1}{}", units[i])
}

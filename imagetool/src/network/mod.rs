//! Container networking for unpacked bundles, `docker run -p` style: the bundle's config.json
//! gets OCI hooks (`skiff-image net-hook add|del`) that attach the container's network
//! namespace to a CNI network (bridge + host-local + portmap, plus loopback for `lo`) when it
//! is created and detach it on poststop, the way nerdctl wires CNI through hooks. Also the
//! Docker-like per-container /etc/hostname, /etc/hosts and /etc/resolv.conf.

pub mod cni;
pub mod hook;
pub mod ports;

pub use ports::{parse_publish, PortMapping};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Name of the network settings file in a bundle (read by the hook through `state.bundle`).
pub const NETWORK_FILE: &str = "network.json";
/// Bundle files bind-mounted on /etc/hostname, /etc/hosts and /etc/resolv.conf.
pub const ETC_FILES: [(&str, &str); 3] = [
    ("hostname", "/etc/hostname"),
    ("hosts", "/etc/hosts"),
    ("resolv.conf", "/etc/resolv.conf"),
];
/// Interface name of the container's end of the veth.
pub const DEFAULT_IFNAME: &str = "eth0";
/// Timeout (seconds) written into the hooks (each plugin call is bounded too).
pub const HOOK_TIMEOUT: i64 = 120;

/// Errors of network setup (bad `-p`/`--net`/conflist values, plugin failures, hook input).
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A bad `-p` value.
    #[error("invalid port mapping {0}")]
    Port(String),
    /// A bad network configuration list.
    #[error("invalid CNI network config {0}")]
    Conflist(String),
    /// Contradicting or unknown network options.
    #[error("{0}")]
    Options(String),
    /// A CNI plugin failed.
    #[error("CNI plugin {plugin}: {msg}")]
    Plugin {
        /// Plugin type.
        plugin: String,
        /// What went wrong (the plugin's error msg when it gave one).
        msg: String,
    },
    /// Hook input (state JSON, container id, network.json) is unusable.
    #[error("{0}")]
    Hook(String),
    /// A filesystem or mount operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The operation.
        what: &'static str,
        /// The path it was applied to.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl NetError {
    fn io(what: &'static str, path: &Path, source: std::io::Error) -> NetError {
        NetError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

impl From<NetError> for crate::error::Error {
    fn from(e: NetError) -> Self {
        crate::error::Error::Invalid(e.to_string())
    }
}

/// `--net`: which network namespace the container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetMode {
    /// Own network namespace attached to a CNI bridge network (needed for `-p`).
    Bridge,
    /// The host's network namespace.
    Host,
    /// Own network namespace with only `lo`.
    None,
}

impl std::str::FromStr for NetMode {
    type Err = NetError;
    fn from_str(s: &str) -> Result<NetMode, NetError> {
        match s {
            "bridge" => Ok(NetMode::Bridge),
            "host" => Ok(NetMode::Host),
            "none" => Ok(NetMode::None),
            o => Err(NetError::Options(format!(
                "unknown --net {o:?} (bridge|host|none)"
            ))),
        }
    }
}

/// Network options of an unpack. The default (no mode, no files) leaves config.json as
/// library callers such as skiff-build always had it; the CLI turns `etc_files` on.
#[derive(Debug, Clone, Default)]
pub struct NetworkOptions {
    /// `--net`; `None` = bridge when ports or a conflist are given, else none.
    pub mode: Option<NetMode>,
    /// `-p` values.
    pub publish: Vec<String>,
    /// `--cni-conflist`: network config used instead of the built-in `skiff` network.
    pub cni_conflist: Option<PathBuf>,
    /// Absolute path of the skiff-image executable the hooks call.
    pub hook_exe: Option<PathBuf>,
    /// Generate /etc/hostname, /etc/hosts, /etc/resolv.conf and a random default hostname.
    pub etc_files: bool,
}

/// What the bundle's `network.json` holds for the hook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkFile {
    /// The CNI network configuration list.
    pub conflist: Value,
    /// Published ports (the portMappings capability).
    pub port_mappings: Vec<PortMapping>,
    /// Container interface name.
    pub ifname: String,
    /// Plugin directories.
    pub cni_path: Vec<PathBuf>,
    /// Container hostname (for the /etc/hosts line the hook writes).
    pub hostname: String,
}

/// Resolve `--net` against `-p`/`--cni-conflist`.
pub fn resolve_mode(opts: &NetworkOptions) -> Result<NetMode, NetError> {
    let wants_bridge = !opts.publish.is_empty() || opts.cni_conflist.is_some();
    match (opts.mode, wants_bridge) {
        (None, true) | (Some(NetMode::Bridge), _) => Ok(NetMode::Bridge),
        (None, false) => Ok(NetMode::None),
        (Some(m), true) => Err(NetError::Options(format!(
            "-p/--publish and --cni-conflist need --net bridge, not --net {}",
            if m == NetMode::Host { "host" } else { "none" }
        ))),
        (Some(m), false) => Ok(m),
    }
}

/// Check the options (mode, ports, conflist file) before any unpacking work is done.
pub fn check(opts: &NetworkOptions) -> Result<(), NetError> {
    resolve_mode(opts)?;
    ports::parse_all(&opts.publish)?;
    if let Some(p) = &opts.cni_conflist {
        cni::load_conflist(p)?;
    }
    Ok(())
}

/// A Docker-like random 12-hex-digit hostname.
pub fn random_hostname() -> Result<String, NetError> {
    crate::random::hex_id(6)
        .map_err(|e| NetError::Options(format!("cannot pick a random hostname: {e}")))
}

fn read_host_file(path: &str) -> String {
    std::fs::File::open(path)
        .and_then(|f| {
            let mut s = String::new();
            f.take(1 << 20).read_to_string(&mut s).map(|_| s)
        })
        .unwrap_or_default()
}

/// /etc/hosts for a container with its own network namespace; `ip` is its address when known.
pub fn hosts_content(hostname: &str, ip: Option<std::net::Ipv4Addr>) -> String {
    let own = ip
        .map(|i| i.to_string())
        .unwrap_or_else(|| "127.0.1.1".to_string());
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n{own}\t{hostname}\n"
    )
}

/// The host's resolv.conf without nameservers on loopback addresses (unreachable from
/// another network namespace).
pub fn filter_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    for line in host.lines() {
        let mut w = line.split_whitespace();
        if w.next() == Some("nameserver") {
            let addr = w.next().unwrap_or_default();
            let addr = addr.split('%').next().unwrap_or_default();
            if addr
                .parse::<std::net::IpAddr>()
                .map(|a| a.is_loopback())
                .unwrap_or(false)
            {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn write_new(path: &Path, data: &str) -> Result<(), NetError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| NetError::io("creating", path, e))?;
    f.write_all(data.as_bytes())
        .map_err(|e| NetError::io("writing", path, e))
}

fn hostname_valid(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.' || c == b'_')
}

/// Apply the network options to a freshly generated `spec` of `bundle` (an absolute path):
/// hostname, namespaces, /etc files, hooks and `network.json`. Returns the container paths
/// of the generated files (never committed).
pub fn prepare_bundle(
    bundle: &Path,
    opts: &NetworkOptions,
    spec: &mut Value,
) -> Result<Vec<String>, NetError> {
    let mode = resolve_mode(opts)?;
    let ports = ports::parse_all(&opts.publish)?;
    let conflist = match &opts.cni_conflist {
        Some(p) => Some(cni::load_conflist(p)?),
        None if mode == NetMode::Bridge => Some(cni::default_conflist()),
        None => None,
    };
    if mode == NetMode::Host {
        if let Some(ns) = spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != "network");
        }
    }
    if !opts.etc_files && mode == NetMode::None {
        return Ok(Vec::new());
    }
    let hostname = match spec["hostname"].as_str() {
        Some(h) => h.to_string(),
        None if mode == NetMode::Host => match nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
        {
            Some(h) => h,
            None => random_hostname()?,
        },
        None => random_hostname()?,
    };
    if !hostname_valid(&hostname) {
        return Err(NetError::Options(format!(
            "hostname {hostname:?} is not a valid host name"
        )));
    }
    spec["hostname"] = json!(hostname);
    let mut generated = Vec::new();
    if opts.etc_files {
        let hosts = if mode == NetMode::Host {
            read_host_file("/etc/hosts")
        } else {
            hosts_content(&hostname, None)
        };
        let resolv = read_host_file("/etc/resolv.conf");
        let resolv = if mode == NetMode::Host {
            resolv
        } else {
            filter_resolv_conf(&resolv)
        };
        let contents = [format!("{hostname}\n"), hosts, resolv];
        let mounts = spec["mounts"]
            .as_array_mut()
            .ok_or_else(|| NetError::Options("internal: spec has no mounts".into()))?;
        for ((file, dest), data) in ETC_FILES.iter().zip(contents) {
            // A user's own mount on that path (-v HOST:/etc/hosts) wins, as in Docker.
            if mounts
                .iter()
                .any(|m| m["destination"].as_str().map(|d| d.trim_end_matches('/')) == Some(dest))
            {
                continue;
            }
            let src = bundle.join(file);
            write_new(&src, &data)?;
            mounts.push(json!({
                "destination": dest, "type": "bind", "source": src,
                "options": ["rbind", "rw"]
            }));
            generated.push(dest.to_string());
        }
    }
    if let Some(conflist) = conflist {
        let exe = opts.hook_exe.clone().ok_or_else(|| {
            NetError::Options("bridge networking needs the skiff-image path for its hooks".into())
        })?;
        if !exe.is_absolute() {
            return Err(NetError::Options(format!(
                "hook executable {} is not an absolute path",
                exe.display()
            )));
        }
        let cni_path: Vec<PathBuf> = cni::DEFAULT_CNI_PATH.iter().map(PathBuf::from).collect();
        for p in conflist["plugins"].as_array().into_iter().flatten() {
            let ty = p["type"].as_str().unwrap_or_default();
            if let Err(e) = cni::find_plugin(&cni_path, ty) {
                tracing::warn!("{e}: the container will fail to start on this host");
            }
        }
        let nf = NetworkFile {
            conflist,
            port_mappings: ports,
            ifname: DEFAULT_IFNAME.to_string(),
            cni_path,
            hostname,
        };
        let data = serde_json::to_string_pretty(&nf)
            .map_err(|e| NetError::Options(format!("encoding {NETWORK_FILE}: {e}")))?;
        write_new(&bundle.join(NETWORK_FILE), &data)?;
        let hook = |cmd: &str| json!({"path": exe, "args": ["skiff-image", "net-hook", cmd], "timeout": HOOK_TIMEOUT});
        if !spec["hooks"].is_object() {
            spec["hooks"] = json!({});
        }
        for (kind, cmd) in [("createRuntime", "add"), ("poststop", "del")] {
            if !spec["hooks"][kind].is_array() {
                spec["hooks"][kind] = json!([]);
            }
            if let Some(a) = spec["hooks"][kind].as_array_mut() {
                a.push(hook(cmd));
            }
        }
    }
    Ok(generated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(mode: Option<NetMode>, publish: &[&str]) -> NetworkOptions {
        NetworkOptions {
            mode,
            publish: publish.iter().map(|s| s.to_string()).collect(),
            cni_conflist: None,
            hook_exe: Some(PathBuf::from("/usr/bin/skiff-image")),
            etc_files: true,
        }
    }

    #[test]
    fn mode_resolution() {
        assert_eq!(resolve_mode(&opts(None, &[])).expect("m"), NetMode::None);
        assert_eq!(
            resolve_mode(&opts(None, &["1:2"])).expect("m"),
            NetMode::Bridge
        );
        assert_eq!(
            resolve_mode(&opts(Some(NetMode::Host), &[])).expect("m"),
            NetMode::Host
        );
        for m in [NetMode::Host, NetMode::None] {
            let e = resolve_mode(&opts(Some(m), &["1:2"])).expect_err("conflict");
            assert!(e.to_string().contains("--net"), "{e}");
        }
        assert!("bogus".parse::<NetMode>().is_err());
    }

    #[test]
    fn bridge_bundle_has_hooks_files_and_network_json() {
        let d = tempfile::tempdir().expect("tmp");
        let mut spec = crate::spec::default_spec();
        spec.as_object_mut().expect("o").remove("hostname");
        let gen = prepare_bundle(d.path(), &opts(None, &["4000:80"]), &mut spec).expect("prep");
        assert_eq!(gen.len(), 3);
        let h = spec["hostname"].as_str().expect("hostname");
        assert!(
            h.len() == 12 && h.bytes().all(|c| c.is_ascii_hexdigit()),
            "{h}"
        );
        assert_eq!(
            spec["hooks"]["createRuntime"][0]["args"],
            json!(["skiff-image", "net-hook", "add"])
        );
        assert_eq!(
            spec["hooks"]["poststop"][0]["args"],
            json!(["skiff-image", "net-hook", "del"])
        );
        assert_eq!(spec["hooks"]["poststop"][0]["path"], "/usr/bin/skiff-image");
        assert!(spec["linux"]["namespaces"]
            .as_array()
            .expect("ns")
            .iter()
            .any(|n| n["type"] == "network"));
        let nf: NetworkFile =
            serde_json::from_slice(&std::fs::read(d.path().join(NETWORK_FILE)).expect("read"))
                .expect("parse");
        assert_eq!(nf.port_mappings[0].host_port, 4000);
        assert_eq!(nf.conflist["name"], "skiff");
        assert!(std::fs::read_to_string(d.path().join("hosts"))
            .expect("hosts")
            .contains(&format!("127.0.1.1\t{h}")));
        let dests: Vec<&str> = spec["mounts"]
            .as_array()
            .expect("m")
            .iter()
            .filter_map(|m| m["destination"].as_str())
            .collect();
        assert!(dests.contains(&"/etc/hosts") && dests.contains(&"/etc/resolv.conf"));
    }

    #[test]
    fn host_and_none() {
        let d = tempfile::tempdir().expect("tmp");
        let mut spec = crate::spec::default_spec();
        spec.as_object_mut().expect("o").remove("hostname");
        prepare_bundle(d.path(), &opts(Some(NetMode::Host), &[]), &mut spec).expect("prep");
        assert!(!spec["linux"]["namespaces"]
            .as_array()
            .expect("ns")
            .iter()
            .any(|n| n["type"] == "network"));
        assert!(spec.get("hooks").is_none());
        let d = tempfile::tempdir().expect("tmp");
        let mut spec = crate::spec::default_spec();
        let mut o = opts(None, &[]);
        o.etc_files = false;
        prepare_bundle(d.path(), &o, &mut spec).expect("prep");
        assert_eq!(
            spec,
            crate::spec::default_spec(),
            "library default changes nothing"
        );
    }

    #[test]
    fn user_mount_on_etc_file_wins() {
        let d = tempfile::tempdir().expect("tmp");
        let mut spec = crate::spec::default_spec();
        if let Some(m) = spec["mounts"].as_array_mut() {
            m.push(json!({"destination": "/etc/resolv.conf", "type": "bind", "source": "/x"}));
        }
        let gen = prepare_bundle(d.path(), &opts(None, &[]), &mut spec).expect("prep");
        assert_eq!(
            gen,
            vec!["/etc/hostname".to_string(), "/etc/hosts".to_string()]
        );
        let n = spec["mounts"]
            .as_array()
            .expect("m")
            .iter()
            .filter(|m| m["destination"] == "/etc/resolv.conf")
            .count();
        assert_eq!(n, 1);
        assert!(!d.path().join("resolv.conf").exists());
    }

    #[test]
    fn resolv_filter() {
        let r = "search x\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.1.1.1\noptions a\n";
        assert_eq!(
            filter_resolv_conf(r),
            "search x\nnameserver 10.1.1.1\noptions a\n"
        );
        assert!(
            hosts_content("h", Some("10.99.0.5".parse().expect("ip"))).contains("10.99.0.5\th\n")
        );
    }
}

//! CNI network configuration lists and plugin invocation, per the CNI spec: each plugin is
//! exec'd from `CNI_PATH` with `CNI_*` variables and its network config on stdin, and answers
//! with a result or an error JSON on stdout.

use super::ports::PortMapping;
use super::NetError;
use serde_json::{json, Map, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// CNI spec version skiff speaks (Debian's plugins 1.1.1 support 0.1.0 to 1.0.0).
pub const CNI_VERSION: &str = "1.0.0";
/// Where Debian's containernetworking-plugins and upstream installs put the plugins.
pub const DEFAULT_CNI_PATH: &[&str] = &["/usr/lib/cni", "/usr/libexec/cni", "/opt/cni/bin"];
/// Name of the built-in network (also host-local's data directory under /var/lib/cni/networks).
pub const DEFAULT_NETWORK: &str = "skiff";
/// Bridge of the built-in network.
pub const DEFAULT_BRIDGE: &str = "skiff0";
/// Subnet of the built-in network.
pub const DEFAULT_SUBNET: &str = "10.99.0.0/16";
/// PATH handed to plugins (hooks run with an empty environment; portmap execs iptables).
pub const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How long one plugin call may take before it is killed.
pub const PLUGIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest plugin output read (results are small).
const MAX_OUTPUT: u64 = 1 << 20;

/// The built-in `skiff` network: bridge skiff0 with host-local IPAM, then portmap.
pub fn default_conflist() -> Value {
    json!({
        "cniVersion": CNI_VERSION,
        "name": DEFAULT_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": DEFAULT_BRIDGE,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": DEFAULT_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true
            }
        ]
    })
}

/// The loopback network that brings `lo` up in the container.
pub fn loopback_conf() -> Value {
    json!({"cniVersion": CNI_VERSION, "name": "skiff-lo", "type": "loopback"})
}

fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// Check a network configuration list (`origin` names it in errors) and return it normalized:
/// a single plugin config (`type` at top level) becomes a one-plugin list.
pub fn validate_conflist(origin: &str, v: Value) -> Result<Value, NetError> {
    let bad = |field: &str, why: &str| NetError::Conflist(format!("{origin}: {field}: {why}"));
    let Value::Object(mut top) = v else {
        return Err(bad("(top level)", "not a JSON object"));
    };
    if top.contains_key("type") && !top.contains_key("plugins") {
        let mut plugin = top.clone();
        plugin.remove("cniVersion");
        plugin.remove("name");
        top.retain(|k, _| k == "cniVersion" || k == "name");
        top.insert("plugins".into(), json!([Value::Object(plugin)]));
    }
    match top.get("cniVersion") {
        Some(Value::String(s)) if !s.is_empty() => {}
        Some(_) => return Err(bad("cniVersion", "not a non-empty string")),
        None => return Err(bad("cniVersion", "missing")),
    }
    match top.get("name") {
        Some(Value::String(s)) if valid_name(s) => {}
        Some(_) => {
            return Err(bad(
                "name",
                "not a network name ([A-Za-z0-9][A-Za-z0-9_.-]*, at most 128)",
            ))
        }
        None => return Err(bad("name", "missing")),
    }
    let plugins = match top.get("plugins") {
        Some(Value::Array(p)) if !p.is_empty() => p,
        Some(_) => return Err(bad("plugins", "not a non-empty array")),
        None => return Err(bad("plugins", "missing")),
    };
    if plugins.len() > 32 {
        return Err(bad("plugins", "more than 32 plugins"));
    }
    for (i, p) in plugins.iter().enumerate() {
        let Value::Object(p) = p else {
            return Err(bad(&format!("plugins[{i}]"), "not an object"));
        };
        match p.get("type") {
            Some(Value::String(t)) if valid_name(t) => {}
            Some(_) => {
                return Err(bad(
                    &format!("plugins[{i}].type"),
                    "not a plugin name (no '/', no leading '.')",
                ))
            }
            None => return Err(bad(&format!("plugins[{i}].type"), "missing")),
        }
        if let Some(c) = p.get("capabilities") {
            if !c.is_object() {
                return Err(bad(&format!("plugins[{i}].capabilities"), "not an object"));
            }
        }
    }
    Ok(Value::Object(top))
}

/// Parse and check a conflist file.
pub fn load_conflist(path: &Path) -> Result<Value, NetError> {
    let origin = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| NetError::Conflist(format!("{origin}: cannot read: {e}")))?;
    if meta.len() > MAX_OUTPUT {
        return Err(NetError::Conflist(format!("{origin}: larger than 1 MiB")));
    }
    let data = std::fs::read(path)
        .map_err(|e| NetError::Conflist(format!("{origin}: cannot read: {e}")))?;
    let v: Value = serde_json::from_slice(&data)
        .map_err(|e| NetError::Conflist(format!("{origin}: invalid JSON: {e}")))?;
    validate_conflist(&origin, v)
}

/// Everything one plugin call needs besides the command.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// Directories searched for plugin binaries.
    pub cni_path: &'a [PathBuf],
    /// Container id (`CNI_CONTAINERID`).
    pub container_id: &'a str,
    /// Path of the (pinned) network namespace (`CNI_NETNS`).
    pub netns: &'a Path,
    /// Interface name in the container (`CNI_IFNAME`).
    pub ifname: &'a str,
}

/// The stdin document for plugin `plugin` of list `list`: the plugin's config plus the list's
/// cniVersion and name, the previous result, and the runtime config for capabilities it declares.
pub fn plugin_config(
    list: &Value,
    plugin: &Value,
    prev: Option<&Value>,
    ports: &[PortMapping],
) -> Value {
    let mut conf: Map<String, Value> = plugin.as_object().cloned().unwrap_or_default();
    conf.insert("cniVersion".into(), list["cniVersion"].clone());
    conf.insert("name".into(), list["name"].clone());
    if let Some(p) = prev {
        conf.insert("prevResult".into(), p.clone());
    }
    let wants_ports = plugin["capabilities"]["portMappings"] == json!(true);
    conf.remove("runtimeConfig");
    if wants_ports && !ports.is_empty() {
        conf.insert("runtimeConfig".into(), json!({ "portMappings": ports }));
    }
    Value::Object(conf)
}

/// Whether `version` (`a.b.c`) is at least 0.4.0: only then does DEL get a `prevResult` (as
/// libcni does; older plugins do not expect one there).
pub fn del_takes_prev_result(version: &str) -> bool {
    let mut it = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    major > 0 || minor >= 4
}

/// Find plugin `ty` in `cni_path`.
pub fn find_plugin(cni_path: &[PathBuf], ty: &str) -> Result<PathBuf, NetError> {
    if !valid_name(ty) {
        return Err(NetError::Plugin {
            plugin: ty.to_string(),
            msg: "invalid plugin name".into(),
        });
    }
    for d in cni_path {
        let p = d.join(ty);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(NetError::Plugin {
        plugin: ty.to_string(),
        msg: format!(
            "plugin not found in {} (install containernetworking-plugins)",
            cni_path
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(":")
        ),
    })
}

/// Read up to [`MAX_OUTPUT`] bytes in a thread; the receiver gets them at EOF.
fn read_bounded<R: Read + Send + 'static>(r: R) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.take(MAX_OUTPUT).read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Output collected by [`read_bounded`], waiting at most until `deadline` (a plugin that left a
/// child holding the pipe open must not hang the hook).
fn collect(rx: Option<std::sync::mpsc::Receiver<Vec<u8>>>, deadline: Instant) -> Vec<u8> {
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(100));
    rx.and_then(|r| r.recv_timeout(wait).ok())
        .unwrap_or_default()
}

/// Turn a plugin's failure output into a message: the CNI error JSON's `msg` (and `details`),
/// else its raw output.
pub fn error_message(stdout: &[u8], stderr: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<Value>(stdout) {
        if let Some(msg) = v["msg"].as_str() {
            let code = v["code"]
                .as_u64()
                .map(|c| format!(" (code {c})"))
                .unwrap_or_default();
            return match v["details"].as_str().filter(|d| !d.is_empty()) {
                Some(d) => format!("{msg}: {d}{code}"),
                None => format!("{msg}{code}"),
            };
        }
    }
    let text = String::from_utf8_lossy(if stdout.is_empty() { stderr } else { stdout });
    let t = text.trim();
    if t.is_empty() {
        "no output".into()
    } else {
        t.chars().take(2000).collect()
    }
}

/// Run one plugin `command` (`ADD`/`DEL`) with `conf` on stdin; ADD returns the parsed result.
pub fn exec_plugin(
    inv: &Invocation<'_>,
    command: &str,
    conf: &Value,
) -> Result<Option<Value>, NetError> {
    exec_plugin_within(inv, command, conf, PLUGIN_TIMEOUT)
}

fn exec_plugin_within(
    inv: &Invocation<'_>,
    command: &str,
    conf: &Value,
    timeout: Duration,
) -> Result<Option<Value>, NetError> {
    let ty = conf["type"].as_str().unwrap_or_default().to_string();
    let perr = |msg: String| NetError::Plugin {
        plugin: ty.clone(),
        msg,
    };
    let bin = find_plugin(inv.cni_path, &ty)?;
    let cni_path =
        std::env::join_paths(inv.cni_path).map_err(|e| perr(format!("bad CNI_PATH: {e}")))?;
    let input = serde_json::to_vec(conf).map_err(|e| perr(format!("encoding config: {e}")))?;
    let mut child = Command::new(&bin)
        .env_clear()
        .env("PATH", PLUGIN_PATH)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.ifname)
        .env("CNI_PATH", cni_path)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| perr(format!("starting {}: {e}", bin.display())))?;
    let out = child.stdout.take().map(read_bounded);
    let err = child.stderr.take().map(read_bounded);
    if let Some(mut stdin) = child.stdin.take() {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(perr(format!(
                    "{command} timed out after {}s",
                    timeout.as_secs()
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(perr(format!("waiting: {e}"))),
        }
    };
    let stdout = collect(out, deadline);
    let stderr = collect(err, deadline);
    if !status.success() {
        return Err(perr(format!(
            "{command} failed ({status}): {}",
            error_message(&stdout, &stderr)
        )));
    }
    if command != "ADD" {
        return Ok(None);
    }
    let v: Value = serde_json::from_slice(&stdout).map_err(|e| {
        perr(format!(
            "ADD result is not JSON ({e}): {}",
            String::from_utf8_lossy(&stdout)
                .chars()
                .take(500)
                .collect::<String>()
        ))
    })?;
    if !v.is_object() {
        return Err(perr("ADD result is not a JSON object".into()));
    }
    Ok(Some(v))
}

/// The first IPv4 address (without prefix) a CNI result gives the container interface.
pub fn container_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"].as_array()?.iter().find_map(|ip| {
        let a = ip["address"].as_str()?;
        a.split('/').next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_list_is_valid() {
        let v = validate_conflist("builtin", default_conflist()).expect("valid");
        assert_eq!(v["name"], "skiff");
        assert_eq!(v["plugins"][0]["type"], "bridge");
        assert_eq!(v["plugins"][0]["bridge"], "skiff0");
        assert_eq!(
            v["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.99.0.0/16"
        );
        assert_eq!(v["plugins"][1]["capabilities"]["portMappings"], true);
    }

    #[test]
    fn validation_names_field() {
        let cases = [
            (json!([]), "(top level)"),
            (
                json!({"name": "n", "plugins": [{"type": "bridge"}]}),
                "cniVersion",
            ),
            (
                json!({"cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}),
                "name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "a/b", "plugins": [{"type": "x"}]}),
                "name",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": []}),
                "plugins",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "ok"}, {}]}),
                "plugins[1].type",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../../bin/sh"}]}),
                "plugins[0].type",
            ),
            (
                json!({"cniVersion": "1.0.0", "name": "n", "plugins": [3]}),
                "plugins[0]",
            ),
        ];
        for (v, field) in cases {
            let e = validate_conflist("f.conflist", v.clone()).expect_err(&v.to_string());
            let s = e.to_string();
            assert!(s.contains("f.conflist") && s.contains(field), "{v}: {s}");
        }
        // A single plugin config becomes a list.
        let v = validate_conflist(
            "x",
            json!({"cniVersion": "0.4.0", "name": "n", "type": "bridge", "bridge": "b"}),
        )
        .expect("single");
        assert_eq!(v["plugins"][0], json!({"type": "bridge", "bridge": "b"}));
    }

    #[test]
    fn plugin_config_chains_and_passes_capabilities() {
        let list = default_conflist();
        let ports = vec![PortMapping {
            host_port: 4000,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: String::new(),
        }];
        let first = plugin_config(&list, &list["plugins"][0], None, &ports);
        assert_eq!(first["name"], "skiff");
        assert_eq!(first["cniVersion"], CNI_VERSION);
        assert!(first.get("prevResult").is_none() && first.get("runtimeConfig").is_none());
        let prev = json!({"cniVersion": CNI_VERSION, "ips": [{"address": "10.99.0.2/16"}]});
        let second = plugin_config(&list, &list["plugins"][1], Some(&prev), &ports);
        assert_eq!(second["prevResult"], prev);
        assert_eq!(
            second["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 4000, "containerPort": 80, "protocol": "tcp"}]})
        );
        assert_eq!(
            container_ipv4(&prev),
            Some("10.99.0.2".parse().expect("ip"))
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            error_message(br#"{"code": 7, "msg": "bad", "details": "why"}"#, b""),
            "bad: why (code 7)"
        );
        assert_eq!(error_message(b"", b"  oops\n"), "oops");
        assert_eq!(error_message(b"", b""), "no output");
    }

    fn fake_plugins() -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let scripts = [
            (
                "fake",
                "#!/bin/sh\nin=$(cat)\n\
                 printf '%s|%s|%s|%s|%s|%s\\n' \"$CNI_COMMAND\" \"$CNI_CONTAINERID\" \"$CNI_NETNS\" \
                 \"$CNI_IFNAME\" \"$CNI_PATH\" \"$PATH\" > \"$(dirname \"$0\")/env.$CNI_COMMAND\"\n\
                 printf '%s' \"$in\" > \"$(dirname \"$0\")/stdin.$CNI_COMMAND\"\n\
                 [ \"$CNI_COMMAND\" = ADD ] && echo '{\"cniVersion\":\"1.0.0\",\"ips\":[{\"address\":\"10.1.2.3/24\"}]}'\n\
                 exit 0\n",
            ),
            (
                "fail",
                "#!/bin/sh\ncat >/dev/null\necho '{\"cniVersion\":\"1.0.0\",\"code\":11,\"msg\":\"no luck\"}'\nexit 1\n",
            ),
            ("garbage", "#!/bin/sh\ncat >/dev/null\necho not json\n"),
            ("slow", "#!/bin/sh\nexec sleep 10\n"),
        ];
        for (name, body) in scripts {
            let p = d.path().join(name);
            std::fs::write(&p, body).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        d
    }

    #[test]
    fn plugin_protocol() {
        let d = fake_plugins();
        let path = vec![PathBuf::from("/nonexistent"), d.path().to_path_buf()];
        let inv = Invocation {
            cni_path: &path,
            container_id: "c1",
            netns: Path::new("/run/skiff-net/c1/netns"),
            ifname: "eth0",
        };
        let list =
            json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "fake", "x": 1}]});
        let conf = plugin_config(&list, &list["plugins"][0], None, &[]);
        let r = exec_plugin(&inv, "ADD", &conf)
            .expect("add")
            .expect("result");
        assert_eq!(container_ipv4(&r), Some("10.1.2.3".parse().expect("ip")));
        let env = std::fs::read_to_string(d.path().join("env.ADD")).expect("env");
        let cni_path = format!("/nonexistent:{}", d.path().display());
        assert_eq!(
            env.trim(),
            format!("ADD|c1|/run/skiff-net/c1/netns|eth0|{cni_path}|{PLUGIN_PATH}")
        );
        let stdin: Value =
            serde_json::from_slice(&std::fs::read(d.path().join("stdin.ADD")).expect("stdin"))
                .expect("stdin json");
        assert_eq!(
            stdin,
            json!({"cniVersion": "1.0.0", "name": "n", "type": "fake", "x": 1})
        );
        assert_eq!(exec_plugin(&inv, "DEL", &conf).expect("del"), None);
        let e = exec_plugin(&inv, "ADD", &json!({"type": "fail"})).expect_err("fail");
        let s = e.to_string();
        assert!(s.contains("fail") && s.contains("no luck (code 11)"), "{s}");
        let e = exec_plugin(&inv, "ADD", &json!({"type": "garbage"})).expect_err("garbage");
        assert!(e.to_string().contains("not JSON"), "{e}");
        let e = exec_plugin_within(
            &inv,
            "ADD",
            &json!({"type": "slow"}),
            Duration::from_millis(200),
        )
        .expect_err("slow");
        assert!(e.to_string().contains("timed out"), "{e}");
    }

    #[test]
    fn missing_plugin_is_named() {
        let e = find_plugin(&[PathBuf::from("/nonexistent")], "bridge").expect_err("missing");
        assert!(e.to_string().contains("bridge"), "{e}");
        assert!(find_plugin(&[PathBuf::from("/usr/bin")], "../sh").is_err());
    }
}

//! `skiff spec`: runc's default config.json (and its `--rootless` variant).
use serde_json::{json, Value};

/// The default configuration, identical to what `runc spec` writes.
pub const DEFAULT_CONFIG: &str = r##"
{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": true,
		"user": {
			"uid": 0,
			"gid": 0
		},
		"args": [
			"sh"
		],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"effective": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"permitted": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			],
			"ambient": [
				"CAP_AUDIT_WRITE",
				"CAP_KILL",
				"CAP_NET_BIND_SERVICE"
			]
		},
		"rlimits": [
			{
				"type": "RLIMIT_NOFILE",
				"hard": 1024,
				"soft": 1024
			}
		],
		"noNewPrivileges": true
	},
	"root": {
		"path": "rootfs",
		"readonly": true
	},
	"hostname": "runc",
	"mounts": [
		{
			"destination": "/proc",
			"type": "proc",
			"source": "proc"
		},
		{
			"destination": "/dev",
			"type": "tmpfs",
			"source": "tmpfs",
			"options": [
				"nosuid",
				"strictatime",
				"mode=755",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/pts",
			"type": "devpts",
			"source": "devpts",
			"options": [
				"nosuid",
				"noexec",
				"newinstance",
				"ptmxmode=0666",
				"mode=0620",
				"gid=5"
			]
		},
		{
			"destination": "/dev/shm",
			"type": "tmpfs",
			"source": "shm",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"mode=1777",
				"size=65536k"
			]
		},
		{
			"destination": "/dev/mqueue",
			"type": "mqueue",
			"source": "mqueue",
			"options": [
				"nosuid",
				"noexec",
				"nodev"
			]
		},
		{
			"destination": "/sys",
			"type": "sysfs",
			"source": "sysfs",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"ro"
			]
		},
		{
			"destination": "/sys/fs/cgroup",
			"type": "cgroup",
			"source": "cgroup",
			"options": [
				"nosuid",
				"noexec",
				"nodev",
				"relatime",
				"ro"
			]
		}
	],
	"linux": {
		"resources": {
			"devices": [
				{
					"allow": false,
					"access": "rwm"
				}
			]
		},
		"namespaces": [
			{
				"type": "pid"
			},
			{
				"type": "network"
			},
			{
				"type": "ipc"
			},
			{
				"type": "uts"
			},
			{
				"type": "mount"
			}
		],
		"maskedPaths": [
			"/proc/acpi",
			"/proc/asound",
			"/proc/kcore",
			"/proc/keys",
			"/proc/latency_stats",
			"/proc/timer_list",
			"/proc/timer_stats",
			"/proc/sched_debug",
			"/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/bus",
			"/proc/fs",
			"/proc/irq",
			"/proc/sys",
			"/proc/sysrq-trigger"
		]
	}
}"##;

/// The default spec as JSON; `rootless` applies runc's rootless changes for `uid`/`gid`.
pub fn default_spec(rootless: bool, uid: u32, gid: u32) -> Value {
    let mut v: Value = serde_json::from_str(DEFAULT_CONFIG).unwrap_or(Value::Null);
    if !rootless {
        return v;
    }
    // runc's ToRootless: no network namespace, a user namespace mapping us to root, /sys
    // bind-mounted, devpts without gid=5, no device cgroup rules.
    if let Some(linux) = v.get_mut("linux").and_then(Value::as_object_mut) {
        linux.remove("resources");
        linux.insert(
            "uidMappings".into(),
            json!([{"containerID": 0, "hostID": uid, "size": 1}]),
        );
        linux.insert(
            "gidMappings".into(),
            json!([{"containerID": 0, "hostID": gid, "size": 1}]),
        );
        if let Some(ns) = linux.get_mut("namespaces").and_then(Value::as_array_mut) {
            ns.retain(|n| n["type"] != "network" && n["type"] != "user");
            ns.push(json!({"type": "user"}));
        }
    }
    if let Some(mounts) = v.get_mut("mounts").and_then(Value::as_array_mut) {
        for m in mounts.iter_mut() {
            if m["destination"] == "/sys" {
                *m = json!({
                    "destination": "/sys",
                    "type": "none",
                    "source": "/sys",
                    "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]
                });
            }
            if let Some(opts) = m.get_mut("options").and_then(Value::as_array_mut) {
                opts.retain(|o| o != "gid=5");
            }
        }
    }
    v
}

/// What `skiff spec` writes: runc's exact bytes for the default, tab-indented JSON otherwise.
pub fn text(rootless: bool, uid: u32, gid: u32) -> String {
    if !rootless {
        return DEFAULT_CONFIG.trim().to_string();
    }
    render(&default_spec(true, uid, gid))
}

/// Render like runc: tab-indented JSON.
pub fn render(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if serde::Serialize::serialize(v, &mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_parses_as_oci_spec() {
        let v = default_spec(false, 0, 0);
        let s: oci_spec::runtime::Spec = serde_json::from_value(v).expect("oci spec");
        assert_eq!(s.version(), "1.0.2-dev");
        assert_eq!(
            s.process().as_ref().and_then(|p| p.args().clone()),
            Some(vec!["sh".to_string()])
        );
    }

    #[test]
    fn rootless_has_userns_and_no_netns() {
        let v = default_spec(true, 1000, 1000);
        let ns = v["linux"]["namespaces"].as_array().expect("ns");
        assert!(ns.iter().any(|n| n["type"] == "user"));
        assert!(!ns.iter().any(|n| n["type"] == "network"));
        assert_eq!(v["linux"]["uidMappings"][0]["hostID"], 1000);
        assert!(v["linux"].get("resources").is_none());
    }

    #[test]
    fn render_is_tab_indented() {
        let s = render(&default_spec(true, 0, 0));
        assert!(s.starts_with("{\n\t\""));
        assert!(text(false, 0, 0).starts_with("{\n\t\"ociVersion\": \"1.0.2-dev\""));
    }
}

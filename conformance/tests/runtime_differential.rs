//! Differential tests (issue 2): the same bundle and commands under runc (reference) and skiff, comparing
//! normalised state JSON shape, exit codes, error behaviour, list/ps output shape and what the container sees.

use conformance::runtime::{compare, Container, Runtime};
use conformance::{bundle::Bundle, require_root};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// Key -> JSON type name (and the value itself for `status`), the "shape" of a state document.
fn shape(v: &Value) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            let t = match x {
                Value::Null => "null".to_string(),
                Value::Bool(_) => "bool".into(),
                Value::Number(_) => "number".into(),
                Value::String(s) if k == "status" => format!("string:{s}"),
                Value::String(_) => "string".into(),
                Value::Array(_) => "array".into(),
                Value::Object(_) => "object".into(),
            };
            m.insert(k.clone(), t);
        }
    }
    m
}

fn sleeper() -> Bundle {
    let mut b = Bundle::busybox().expect("bundle");
    b.args(&["sleep", "1000"]);
    b
}

#[test]
fn state_json_shape_through_lifecycle() {
    require_root!();
    compare(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.create().ok();
        let created = shape(&c.state_json());
        c.start().ok();
        c.wait_status("running", WAIT);
        let running = shape(&c.state_json());
        c.kill("KILL").ok();
        c.wait_status("stopped", WAIT);
        let stopped = c.state_json();
        // A stopped container's pid is 0 in runc; compare the value too.
        (created, running, shape(&stopped), stopped["pid"].clone())
    });
}

#[test]
fn state_values_normalised() {
    require_root!();
    compare(|rt| {
        let mut b = sleeper();
        b.set("/annotations", json!({ "org.example/key": "value" }))
            .expect("set");
        let c = rt.container(&b);
        c.create().ok();
        let st = c.state_json();
        (
            st["id"] == c.id(),
            st["bundle"].as_str() == b.path().to_str(),
            st["rootfs"].as_str() == b.rootfs().to_str(),
            st["annotations"].clone(),
            st["owner"].clone(),
            st["created"]
                .as_str()
                .is_some_and(|s| s.contains('T') && (s.ends_with('Z') || s.contains('+'))),
        )
    });
}

#[test]
fn exit_codes() {
    require_root!();
    compare(|rt| {
        let mut codes = Vec::new();
        for (args, pidns) in [
            (vec!["true"], true),
            (vec!["false"], true),
            (vec!["sh", "-c", "exit 42"], true),
            (vec!["sh", "-c", "exit 255"], true),
            (vec!["sh", "-c", "kill -9 $$"], false),
            (vec!["sh", "-c", "kill -TERM $$"], false),
            (vec!["sh", "-c", "kill -TERM $$; exit 9"], true), // init ignores default-action signals from inside
            (vec!["/bin/nope"], true),
            (vec!["nope-not-in-path"], true),
        ] {
            let mut b = Bundle::busybox().expect("bundle");
            b.args(&args);
            if !pidns {
                b.remove_namespace("pid");
            }
            let c = rt.container(&b);
            let out = c.run();
            codes.push((args.join(" "), pidns, out.code));
        }
        codes
    });
}

#[test]
fn exec_exit_codes_and_errors() {
    require_root!();
    compare(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.create().ok();
        let before_start = c.exec(&["true"]).success();
        c.start().ok();
        let codes: Vec<i32> = [
            vec!["true"],
            vec!["sh", "-c", "exit 3"],
            vec!["sh", "-c", "kill -KILL $$"],
            vec!["/bin/nope"],
        ]
        .iter()
        .map(|a| c.exec(a).code)
        .collect();
        let user = c.exec_with(&["--user", "1000"], &["id", "-u"]).stdout;
        (before_start, codes, user)
    });
}

#[test]
fn error_behaviour() {
    require_root!();
    compare(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        let mut r = Vec::new();
        let mut rec = |what: &str, out: conformance::runtime::Output| {
            r.push((what.to_string(), out.success()))
        };
        rec("state before create", c.state());
        rec("start before create", c.start());
        rec("delete before create", c.delete());
        rec("delete --force before create", c.delete_force());
        rec("kill before create", c.kill("KILL"));
        rec("create", c.create());
        rec("create again", c.create());
        rec("kill 0 created", c.kill("0"));
        rec("delete created", c.delete());
        rec("create after delete", c.create());
        rec("start", c.start());
        rec("start running", c.start());
        rec("delete running", c.delete());
        rec("kill KILL", c.kill("KILL"));
        c.wait_status("stopped", WAIT);
        rec("kill stopped", c.kill("KILL"));
        rec("start stopped", c.start());
        rec("exec stopped", c.exec(&["true"]));
        rec("delete stopped", c.delete());
        rec("state after delete", c.state());
        r
    });
}

#[test]
fn list_and_ps_shape() {
    require_root!();
    compare(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let table = rt.list().ok();
        let header: Vec<String> = table
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        let row: Vec<String> = table
            .stdout
            .lines()
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        let row_shape = (
            row.len(),
            row.get(2).cloned(),
            row.first().map(|x| x == c.id()),
        );
        let js = rt.cmd(["list", "--format", "json"]).ok().json();
        let entry = js
            .as_array()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or(Value::Null);
        let ps_json = c.ps(&["--format", "json"]).ok().json();
        let ps_len = ps_json.as_array().map(|a| a.len());
        let ps_table = c.ps(&[]).ok();
        let ps_header: Vec<String> = ps_table
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .map(String::from)
            .collect();
        let ps_custom = rt.cmd(["ps", c.id(), "-o", "pid,comm"]).ok();
        let custom_header = ps_custom
            .stdout
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let custom_rows = ps_custom
            .stdout
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
            .collect::<Vec<_>>();
        (
            header,
            row_shape,
            shape(&entry),
            ps_len,
            ps_header,
            custom_header,
            custom_rows,
        )
    });
}

/// What a process sees inside, with ids, the bundle path and cgroup parents normalised.
fn view(c: &Container<'_>, out: &str) -> Vec<String> {
    let bundle = c.bundle().path().display().to_string();
    out.lines()
        .map(|l| l.replace(c.id(), "<ID>").replace(&bundle, "<BUNDLE>"))
        .map(|l| {
            // The parent of a container's cgroup (e.g. the caller's memory cgroup) depends on the host.
            l.split(' ')
                .map(|t| match t.find("<ID>") {
                    Some(i) => match t[..i].rfind(':') {
                        Some(colon) => format!("{}.../<ID>", &t[..=colon]),
                        None => ".../<ID>".to_string(),
                    },
                    None => t.to_string(),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .map(|l| {
            // mountinfo: drop mount ids, parent ids and device numbers; keep root, mount point, options, fs.
            let f: Vec<&str> = l.split(' ').collect();
            if f.len() > 6 && f.contains(&"-") && f[0].parse::<u32>().is_ok() {
                f[3..].join(" ")
            } else {
                l
            }
        })
        .collect()
}

const VIEW_SCRIPT: &str = "echo '# status'; grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups|Umask)' /proc/self/status; \
    echo '# limits'; cat /proc/self/limits; \
    echo '# id'; id; hostname; pwd; umask; cat /proc/self/oom_score_adj; \
    echo '# env'; env | sort; \
    echo '# fds'; ls /proc/self/fd; \
    echo '# mounts'; cat /proc/self/mountinfo; \
    echo '# dev'; for f in $(find /dev | sort); do stat -c '%n %F %a %u:%g %t:%T' $f; done; \
    echo '# cgroup'; cat /proc/self/cgroup; \
    echo '# pid'; echo $$; cat /proc/1/comm; \
    echo '# proc masked'; for p in /proc/acpi /proc/keys /proc/timer_list /proc/scsi /sys/firmware; do ls -A $p 2>&1 | wc -l; done";

#[test]
fn container_view_default_config() {
    require_root!();
    compare(|rt| {
        let mut b = Bundle::busybox().expect("bundle");
        b.shell(VIEW_SCRIPT);
        let c = rt.container(&b);
        let out = c.run().ok();
        view(&c, &out.stdout)
    });
}

#[test]
fn container_view_configured() {
    require_root!();
    compare(|rt: &Runtime| {
        let host = tempfile::tempdir().expect("tempdir");
        let mut b = Bundle::busybox().expect("bundle");
        b.user(1000, 1000)
            .additional_gids(&[10])
            .cwd("/home/user")
            .hostname("diff-host")
            .readonly_root(false);
        b.env("X=1");
        b.set("/process/oomScoreAdj", json!(42)).expect("set");
        b.set(
            "/process/rlimits",
            json!([{ "type": "RLIMIT_NOFILE", "soft": 100, "hard": 200 }]),
        )
        .expect("set");
        b.set("/linux/sysctl", json!({ "net.ipv4.ip_forward": "1" }))
            .expect("set");
        b.add_mount(json!({ "destination": "/data", "type": "tmpfs", "source": "tmpfs", "options": ["size=2m", "noexec"] }));
        b.add_bind(host.path(), "/host", &["rbind", "ro", "nosuid"]);
        b.add_namespace("cgroup", None);
        b.shell(&format!(
            "{VIEW_SCRIPT}; echo '# sysctl'; cat /proc/sys/net/ipv4/ip_forward"
        ));
        let c = rt.container(&b);
        let out = c.run().ok();
        view(
            &c,
            &out.stdout
                .replace(host.path().to_str().unwrap_or("<none>"), "<HOST>"),
        )
    });
}

#[test]
fn exec_view_matches() {
    require_root!();
    compare(|rt| {
        let b = sleeper();
        let c = rt.container(&b);
        c.run_with(&["--detach"]).ok();
        let out = c.exec(&["sh", "-c", VIEW_SCRIPT]).ok();
        let v = view(&c, &out.stdout);
        // The exec'd shell's own pid differs; keep everything else.
        v.into_iter()
            .filter(|l| l.parse::<u32>().is_err())
            .collect::<Vec<_>>()
    });
}

/// `spec` writes runc's default config.json (normalised: ociVersion may differ).
#[test]
fn spec_matches_runc() {
    require_root!();
    for rootless in [false, true] {
        compare(|rt| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut args = vec!["spec", "--bundle", dir.path().to_str().unwrap_or("")];
            if rootless {
                args.push("--rootless");
            }
            rt.cmd(&args).ok();
            let text = std::fs::read_to_string(dir.path().join("config.json"))
                .expect("config.json written");
            let mut v: Value = serde_json::from_str(&text).expect("spec output is JSON");
            v["ociVersion"] = json!("<normalised>");
            // Rootless mappings use the caller's ids, which are the same for both runtimes here.
            let again = rt.cmd(&args);
            (v, again.success())
        });
    }
}

/// `features` has the OCI features document shape (keys present; values may legitimately differ).
#[test]
fn features_shape() {
    require_root!();
    compare(|rt| {
        let v = rt.cmd(["features"]).ok().json();
        let top: Vec<String> = v
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let linux: Vec<String> = v["linux"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        let has_ns = |n: &str| {
            v["linux"]["namespaces"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == n))
        };
        let core_ns = ["pid", "network", "ipc", "uts", "mount", "user", "cgroup"]
            .iter()
            .all(|n| has_ns(n));
        (
            top.contains(&"ociVersionMin".to_string()),
            top.contains(&"ociVersionMax".to_string()),
            top.contains(&"mountOptions".to_string()),
            linux.contains(&"namespaces".to_string()),
            linux.contains(&"capabilities".to_string()),
            core_ns,
        )
    });
}

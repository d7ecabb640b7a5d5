//! `docker run -p 4000:80` with skiff: `skiff-image unpack -p` writes a bundle whose OCI hooks
//! attach the container to the CNI network `skiff` (bridge skiff0 + host-local + portmap +
//! loopback); the published port serves the container's page; `delete` removes the veth, the
//! IP allocation, the iptables rules, the pinned netns and its run dir. Also `--net host|none`
//! and bad input. Runs on skiff and, when installed, runc (same bundle).
//!
//! The tests share the host's skiff0 bridge, so they run one at a time (a lock) to compare the
//! host's network state before and after.

mod image_support;

use conformance::runtime::Runtime;
use image_support::{ok, si, stderr, TestDir};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static SERIAL: Mutex<()> = Mutex::new(());

const CNI_DIR: &str = "/usr/lib/cni";
const RUN_DIR: &str = "/run/skiff-net";
const IPAM_DIR: &str = "/var/lib/cni/networks/skiff";
const PAGE: &str = "hello from a skiff container";

/// Why this host cannot run the network tests, if it cannot.
fn missing_prerequisite() -> Option<String> {
    if !conformance::is_root() {
        return Some("needs root".into());
    }
    for p in ["bridge", "host-local", "portmap", "loopback"] {
        if !Path::new(CNI_DIR).join(p).is_file() {
            return Some(format!(
                "CNI plugin {CNI_DIR}/{p} missing (apt-get install containernetworking-plugins)"
            ));
        }
    }
    for t in ["iptables", "iptables-save", "ip"] {
        if conformance::bins::system(t).is_none() {
            return Some(format!("{t} missing (apt-get install iptables iproute2)"));
        }
    }
    if !Path::new("/bin/busybox").is_file() {
        return Some("/bin/busybox missing (apt-get install busybox-static)".into());
    }
    None
}

macro_rules! prerequisites {
    () => {
        if let Some(why) = missing_prerequisite() {
            eprintln!("SKIP: {why}");
            return;
        }
    };
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A store holding `web:1`: busybox httpd serving /www on port 80.
fn make_image(t: &TestDir) -> PathBuf {
    let root = t.join("rootfs-src");
    for d in ["bin", "www", "etc", "tmp"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", root.join("bin/sh")).expect("symlink");
    std::fs::write(root.join("www/index.html"), format!("<p>{PAGE}</p>\n")).expect("index");
    let store = t.join("store");
    let mut args = vec![
        "import".to_string(),
        root.display().to_string(),
        "web:1".into(),
    ];
    for w in ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"] {
        args.push(format!("--cmd={w}"));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&si(&store, &args), "import web image");
    store
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("addr").port()
}

/// GET / from 127.0.0.1:port, retried for at most 10 s.
fn http_get(port: u16) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = String::new();
    for _ in 0..100 {
        if Instant::now() >= deadline {
            break;
        }
        let r = (|| -> std::io::Result<String> {
            let mut s =
                TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
            let mut buf = Vec::new();
            s.take(1 << 20).read_to_end(&mut buf)?;
            Ok(String::from_utf8_lossy(&buf).into_owned())
        })();
        match r {
            Ok(body) if body.contains(PAGE) => return Ok(body),
            Ok(body) => last = format!("unexpected answer: {body:?}"),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last)
}

fn curl(url: &str) -> Option<String> {
    let curl = conformance::bins::system("curl")?;
    let o = Command::new(curl)
        .args(["-sS", "-m", "5", "--retry", "3", "--retry-connrefused", url])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
}

fn host_cmd(prog: &str, args: &[&str]) -> String {
    let p = conformance::bins::system(prog).unwrap_or_else(|| PathBuf::from(prog));
    Command::new(p)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn iptables_rules() -> String {
    host_cmd("iptables-save", &[])
}

/// iptables-save lines of the CNI plugins' rules for container `id` (their comments say
/// `id: \"ID\"`).
fn rules_naming(id: &str) -> Vec<String> {
    let needle = format!("id: \\\"{id}\\\"");
    iptables_rules()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(str::to_string)
        .collect()
}

fn links() -> String {
    host_cmd("ip", &["-o", "link"])
}

fn ipam_files_naming(id: &str) -> Vec<String> {
    let mut hits = Vec::new();
    if let Ok(rd) = std::fs::read_dir(IPAM_DIR) {
        for e in rd.flatten() {
            if std::fs::read_to_string(e.path())
                .map(|s| s.lines().any(|l| l.trim() == id))
                .unwrap_or(false)
            {
                hits.push(e.path().display().to_string());
            }
        }
    }
    hits
}

fn mounts_mentioning(s: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(s))
        .map(str::to_string)
        .collect()
}

/// Last-resort cleanup of a container: `delete --force` (runs poststop), then the hook's own
/// `del` in case the runtime could not run it.
struct ContainerGuard<'a> {
    rt: &'a Runtime,
    id: String,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        self.rt.force_delete(&self.id);
        if Path::new(RUN_DIR).join(&self.id).exists() {
            net_hook_del(&self.id);
        }
    }
}

fn net_hook_del(id: &str) -> std::process::Output {
    let mut c = Command::new(image_support::skiff_image())
        .args(["net-hook", "del"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn net-hook");
    if let Some(mut i) = c.stdin.take() {
        let _ = i.write_all(
            serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": "stopped", "bundle": "/nonexistent"})
                .to_string()
                .as_bytes(),
        );
    }
    c.wait_with_output().expect("net-hook del")
}

/// Everything the container had on the host is gone.
fn assert_clean(id: &str, veth: Option<&str>) {
    if let Some(v) = veth {
        assert!(
            !links().contains(&format!(": {v}@")),
            "{id}: host veth {v} still exists:\n{}",
            links()
        );
    }
    let rules = rules_naming(id);
    assert!(rules.is_empty(), "{id}: iptables rules left: {rules:#?}");
    let ipam = ipam_files_naming(id);
    assert!(
        ipam.is_empty(),
        "{id}: host-local allocations left: {ipam:?}"
    );
    assert!(
        !Path::new(RUN_DIR).join(id).exists(),
        "{id}: {RUN_DIR}/{id} left"
    );
    let m = mounts_mentioning(&format!("{RUN_DIR}/{id}"));
    assert!(m.is_empty(), "{id}: mounts left: {m:#?}");
}

fn runtimes() -> Vec<Runtime> {
    let mut v = vec![Runtime::skiff().expect("skiff runtime (cargo build -p skiff)")];
    match Runtime::runc() {
        Ok(r) => v.push(r),
        Err(e) => eprintln!("runc not available ({e}): testing skiff only"),
    }
    v
}

fn unpack(store: &Path, bundle: &Path, extra: &[&str]) {
    let mut args = vec!["unpack", "web:1", bundle.to_str().unwrap_or_default()];
    args.extend_from_slice(extra);
    ok(&si(store, &args), "unpack");
}

#[test]
fn publish_serves_the_page_and_delete_cleans_up() {
    prerequisites!();
    let _serial = lock();
    let t = TestDir::new("net-publish");
    let store = make_image(&t);
    for rt in runtimes() {
        let name = rt.name();
        let bundle = t.join(&format!("bundle-{name}"));
        let port = free_port();
        unpack(&store, &bundle, &["-p", &format!("{port}:80")]);
        let spec = read_json(&bundle.join("config.json"));
        let hostname = spec["hostname"].as_str().unwrap_or_default().to_string();
        assert!(
            hostname.len() == 12 && hostname.bytes().all(|c| c.is_ascii_hexdigit()),
            "random hostname expected, got {hostname:?}"
        );
        assert_eq!(spec["hooks"]["createRuntime"][0]["args"][1], "net-hook");
        let id = conformance::unique_name(&format!("net-{name}"));
        let guard = ContainerGuard {
            rt: &rt,
            id: id.clone(),
        };
        let o = rt.cmd([
            "run",
            "-d",
            "--bundle",
            bundle.to_str().unwrap_or_default(),
            &id,
        ]);
        assert!(o.success(), "{name} run -d: {o}");
        let state = net_state(&id);
        let veth = state["result"]["interfaces"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|i| i["name"].as_str().is_some_and(|n| n.starts_with("veth")))
            })
            .and_then(|i| i["name"].as_str())
            .map(str::to_string);
        assert!(
            veth.is_some(),
            "{name}: no host veth in the CNI result: {state}"
        );
        let veth = veth.unwrap_or_default();
        let master = host_cmd("ip", &["-o", "link", "show", "master", "skiff0"]);
        assert!(
            master.contains(&veth),
            "{name}: {veth} not on skiff0: {master}"
        );
        assert!(
            !ipam_files_naming(&id).is_empty(),
            "{name}: no host-local allocation for {id}"
        );
        assert!(
            rules_naming(&id).len() >= 3,
            "{name}: no iptables rule names {id}"
        );
        let hosts = std::fs::read_to_string(bundle.join("hosts")).expect("hosts");
        assert!(
            hosts.contains("10.99.") && hosts.contains(&hostname),
            "{name}: /etc/hosts lacks the container address: {hosts}"
        );
        let body = http_get(port);
        assert!(body.is_ok(), "{name}: GET 127.0.0.1:{port}: {body:?}");
        if let Some(out) = curl(&format!("http://localhost:{port}/")) {
            assert!(out.contains(PAGE), "{name}: curl localhost:{port}: {out}");
        }
        let o = rt.cmd(["kill", &id, "KILL"]);
        assert!(o.success(), "{name} kill: {o}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let st = rt.cmd(["state", &id]);
            if st.out().contains("\"stopped\"") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let o = rt.cmd(["delete", &id]);
        assert!(o.success(), "{name} delete: {o}");
        assert_clean(&id, Some(&veth));
        drop(guard);
        assert!(
            http_get(port).is_err(),
            "{name}: port {port} still answers after delete"
        );
    }
}

#[test]
fn two_containers_have_their_own_address_and_port() {
    prerequisites!();
    let _serial = lock();
    let t = TestDir::new("net-two");
    let store = make_image(&t);
    let rt = Runtime::skiff().expect("skiff");
    let mut ids = Vec::new();
    let mut guards = Vec::new();
    let mut ports = Vec::new();
    for i in 0..2 {
        let b = t.join(&format!("b{i}"));
        let port = free_port();
        unpack(&store, &b, &["-p", &format!("127.0.0.1:{port}:80")]);
        let id = conformance::unique_name(&format!("net-two{i}"));
        guards.push(ContainerGuard {
            rt: &rt,
            id: id.clone(),
        });
        let o = rt.cmd(["run", "-d", "--bundle", b.to_str().unwrap_or_default(), &id]);
        assert!(o.success(), "run -d {id}: {o}");
        ids.push(id);
        ports.push(port);
    }
    let ip_of = |id: &str| -> String {
        net_state(id)["result"]["ips"][0]["address"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let (a, b) = (ip_of(&ids[0]), ip_of(&ids[1]));
    assert!(
        a.starts_with("10.99.") && b.starts_with("10.99.") && a != b,
        "{a} {b}"
    );
    for p in &ports {
        assert!(http_get(*p).is_ok(), "port {p} does not serve the page");
    }
    // Deleting the first leaves the second working.
    let o = rt.cmd(["delete", "--force", &ids[0]]);
    assert!(o.success(), "delete: {o}");
    assert_clean(&ids[0], None);
    assert!(http_get(ports[1]).is_ok(), "second container lost its port");
    assert!(
        !rules_naming(&ids[1]).is_empty(),
        "second container lost its rules"
    );
    let o = rt.cmd(["delete", "--force", &ids[1]]);
    assert!(o.success(), "delete: {o}");
    assert_clean(&ids[1], None);
    drop(guards);
}

#[test]
fn force_delete_of_running_container_cleans_up() {
    prerequisites!();
    let _serial = lock();
    let t = TestDir::new("net-force");
    let store = make_image(&t);
    let rt = Runtime::skiff().expect("skiff");
    let bundle = t.join("bundle");
    let port = free_port();
    unpack(
        &store,
        &bundle,
        &["-p", &format!("127.0.0.1:{port}:80/tcp")],
    );
    let id = conformance::unique_name("net-force");
    let guard = ContainerGuard {
        rt: &rt,
        id: id.clone(),
    };
    let before = links();
    let o = rt.cmd([
        "run",
        "-d",
        "--bundle",
        bundle.to_str().unwrap_or_default(),
        &id,
    ]);
    assert!(o.success(), "run -d: {o}");
    assert!(
        http_get(port).is_ok(),
        "page not served on 127.0.0.1:{port}"
    );
    let o = rt.cmd(["delete", "--force", &id]);
    assert!(o.success(), "delete --force: {o}");
    assert_clean(&id, None);
    let veths = |s: &str| -> Vec<String> {
        link_names(s)
            .into_iter()
            .filter(|n| n.starts_with("veth"))
            .collect()
    };
    let after = links();
    let new: Vec<String> = veths(&after)
        .into_iter()
        .filter(|v| !veths(&before).contains(v))
        .collect();
    assert!(new.is_empty(), "veths left: {new:?}");
    // del is idempotent: nothing left to do is success.
    let o = net_hook_del(&id);
    assert!(o.status.success(), "second del: {o:?}");
    drop(guard);
}

#[test]
fn failing_add_undoes_its_work() {
    prerequisites!();
    let _serial = lock();
    let t = TestDir::new("net-fail");
    let store = make_image(&t);
    // The bridge succeeds, then portmap rejects its config: the hook must DEL the bridge.
    let conf = t.join("broken.conflist");
    std::fs::write(
        &conf,
        serde_json::to_vec(&serde_json::json!({
            "cniVersion": "1.0.0", "name": "skiff",
            "plugins": [
                {"type": "bridge", "bridge": "skiff0", "isGateway": true, "ipMasq": true,
                 "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": true}, "snat": "not-a-bool"}
            ]
        }))
        .expect("json"),
    )
    .expect("write conflist");
    let bundle = t.join("bundle");
    unpack(
        &store,
        &bundle,
        &[
            "--cni-conflist",
            conf.to_str().unwrap_or_default(),
            "-p",
            &format!("{}:80", free_port()),
        ],
    );
    for rt in runtimes() {
        let id = conformance::unique_name(&format!("net-fail-{}", rt.name()));
        let guard = ContainerGuard {
            rt: &rt,
            id: id.clone(),
        };
        let before = links();
        let o = rt.cmd([
            "run",
            "-d",
            "--bundle",
            bundle.to_str().unwrap_or_default(),
            &id,
        ]);
        assert!(
            !o.success(),
            "{}: run with a broken portmap config succeeded",
            rt.name()
        );
        assert!(
            o.stderr.contains("portmap"),
            "error does not name the plugin: {o}"
        );
        // The hook undid its own work: checked before the guard's cleanup could mask anything.
        assert_clean(&id, None);
        let count = |s: &str| s.lines().filter(|l| l.contains("master skiff0")).count();
        assert_eq!(count(&before), count(&links()), "veth left on skiff0");
        drop(guard);
    }
}

/// A JSON file the runtime or skiff-image wrote (config.json, state.json).
fn read_json(path: &Path) -> serde_json::Value {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&data).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The skiff-net hook's saved state of container `id` (holds the CNI result).
fn net_state(id: &str) -> serde_json::Value {
    read_json(&Path::new(RUN_DIR).join(id).join("state.json"))
}

/// Interface names in `ip -o link` output (without the `@peer` suffix).
fn link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_string())
        .collect()
}

fn run_foreground(rt: &Runtime, bundle: &Path) -> String {
    let id = conformance::unique_name(&format!("net-{}", rt.name()));
    let _g = ContainerGuard { rt, id: id.clone() };
    let o = rt.cmd(["run", "--bundle", bundle.to_str().unwrap_or_default(), &id]);
    assert!(o.success(), "{} run: {o}", rt.name());
    o.stdout.clone()
}

#[test]
fn foreground_bridge_container_sees_its_network_and_files() {
    prerequisites!();
    let _serial = lock();
    let t = TestDir::new("net-fg");
    let store = make_image(&t);
    let script = "hostname; /bin/busybox ip -o -4 addr show eth0; /bin/busybox cat /etc/hosts; \
                  /bin/busybox ip -o link show lo";
    for rt in runtimes() {
        let name = rt.name();
        let b = t.join(&format!("fg-{name}"));
        unpack(
            &store,
            &b,
            &[
                "--net",
                "bridge",
                "--hostname",
                "webhost",
                "--cmd",
                "/bin/sh",
                "-c",
                script,
            ],
        );
        let before = links();
        let id = conformance::unique_name(&format!("net-fg-{name}"));
        let guard = ContainerGuard {
            rt: &rt,
            id: id.clone(),
        };
        let o = rt.cmd(["run", "--bundle", b.to_str().unwrap_or_default(), &id]);
        assert!(o.success(), "{name} run: {o}");
        let out = o.stdout.clone();
        // `run` tears the container down when it exits; delete whatever a runtime keeps.
        if rt.root().join(&id).exists() {
            let o = rt.cmd(["delete", &id]);
            assert!(o.success(), "{name} delete: {o}");
        }
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("webhost"), "{name}: {out}");
        let addr = out
            .split_whitespace()
            .find(|w| w.starts_with("10.99."))
            .and_then(|a| a.split('/').next())
            .map(str::to_string);
        assert!(addr.is_some(), "{name}: eth0 has no 10.99.x address: {out}");
        let addr = addr.unwrap_or_default();
        assert!(
            out.contains(&format!("{addr}\twebhost")),
            "{name}: /etc/hosts does not map webhost to {addr}: {out}"
        );
        assert!(
            out.contains("lo:") && out.contains("UP"),
            "{name}: lo not up: {out}"
        );
        // The runtime ran poststop (the guard's fallback cleanup has not run yet).
        assert_clean(&id, None);
        drop(guard);
        let count = |s: &str| s.lines().filter(|l| l.contains("master skiff0")).count();
        assert_eq!(
            count(&before),
            count(&links()),
            "{name}: veth left on skiff0"
        );
    }
}

#[test]
fn net_host_and_net_none() {
    prerequisites!();
    let _serial = lock();
    let t = TestDir::new("net-modes");
    let store = make_image(&t);
    let host_names = link_names(&links());
    let host_hostname = host_cmd("hostname", &[]).trim().to_string();
    for rt in runtimes() {
        let name = rt.name();
        let script = "hostname; /bin/busybox ip -o link";
        let b = t.join(&format!("host-{name}"));
        unpack(
            &store,
            &b,
            &["--net", "host", "--cmd", "/bin/sh", "-c", script],
        );
        let spec = read_json(&b.join("config.json"));
        assert!(
            !spec["linux"]["namespaces"].to_string().contains("network"),
            "--net host keeps a network namespace"
        );
        let out = run_foreground(&rt, &b);
        let mut lines = out.lines();
        assert_eq!(
            lines.next().unwrap_or_default(),
            host_hostname,
            "{name}: {out}"
        );
        let seen = link_names(&lines.collect::<Vec<_>>().join("\n"));
        assert!(
            seen.iter().any(|n| n != "lo" && host_names.contains(n)),
            "{name}: --net host does not see the host's interfaces: {out}"
        );
        let b = t.join(&format!("none-{name}"));
        unpack(
            &store,
            &b,
            &["--net", "none", "--cmd", "/bin/sh", "-c", script],
        );
        let out = run_foreground(&rt, &b);
        let ifs = link_names(&out.lines().skip(1).collect::<Vec<_>>().join("\n"));
        assert_eq!(ifs, vec!["lo"], "{name}: --net none: {out}");
    }
}

#[test]
fn bad_network_options_are_refused() {
    if !conformance::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    if !Path::new("/bin/busybox").is_file() {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    let t = TestDir::new("net-bad");
    let store = make_image(&t);
    let bad_conf = t.join("bad.conflist");
    std::fs::write(
        &bad_conf,
        br#"{"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "bridge"}, {"nope": 1}]}"#,
    )
    .expect("write");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-p".into(), "4000:80".into(), "--net".into(), "host".into()],
            "--net",
        ),
        (
            vec!["-p".into(), "4000:80".into(), "--net".into(), "none".into()],
            "--net",
        ),
        (vec!["--net".into(), "overlay".into()], "overlay"),
        (vec!["-p".into(), "0:80".into()], "0"),
        (vec!["-p".into(), "4000:70000".into()], "70000"),
        (vec!["-p".into(), "4000:80/sctp".into()], "sctp"),
        (vec!["-p".into(), "999.1.1.1:4000:80".into()], "999.1.1.1"),
        (
            vec!["--cni-conflist".into(), bad_conf.display().to_string()],
            "plugins[1].type",
        ),
        (
            vec![
                "--cni-conflist".into(),
                t.join("missing").display().to_string(),
            ],
            "missing",
        ),
    ];
    for (i, (extra, want)) in cases.iter().enumerate() {
        let b = t.join(&format!("b{i}"));
        let mut args = vec!["unpack", "web:1", b.to_str().unwrap_or_default()];
        args.extend(extra.iter().map(String::as_str));
        let o = si(&store, &args);
        assert!(!o.status.success(), "{extra:?} accepted");
        assert!(stderr(&o).contains(want), "{extra:?}: {}", stderr(&o));
        assert!(!b.exists(), "{extra:?}: bundle dir left behind");
    }
    // The hook refuses ids that are not one path component.
    let o = net_hook_del("../etc");
    assert!(!o.status.success(), "net-hook accepted id ../etc");
}

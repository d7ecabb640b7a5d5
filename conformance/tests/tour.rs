//! The seed walkthrough of docs/tour.md (issue 8) as one end-to-end test, with skiff's own tools:
//!
//! 1. `docker import`: a busybox-static root dir, tarred with `--numeric-owner --exclude=./proc
//!    --exclude=./sys`, imported with `skiff-image import` as busybox:latest.
//! 2. `docker build -t helloworld .`: `skiff-build` of examples/helloworld.
//! 3. `docker run -p PORT:80 helloworld`: `skiff-image unpack -p`, `skiff run -d`, curl the page.
//! 4. `docker exec -it ID /bin/sh`: `skiff exec -t` under a pty (`script`), `touch /app/test.txt`.
//! 5. `docker commit`: the new image has test.txt, the original is unchanged.
//! 6. volumes: bind and anonymous volumes; writes seen on the host, kept after delete, never committed.
//! 7. `--cpu-period=100000 --cpu-quota=20000`: a busy loop gets about 20% of a CPU.
//! 8. clean up: delete, rm-bundle, rm, gc leave no mount, cgroup, veth, iptables rule, IP or blob.
//!
//! Everything uses a private image store (`SKIFF_STORE` in a temp dir), a private `skiff --root`,
//! unique container ids and a free host port; the [`Tour`] guard deletes containers and bundles and
//! unmounts on the way out even when a step fails. A step whose prerequisite is missing (CNI plugins,
//! iptables, curl, script) prints `SKIP: reason` and the later steps carry on.

use conformance::runtime::{shell_quote, Invocation};
use serde_json::Value;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's containernetworking-plugins directory and the plugins the `skiff` network uses.
const CNI_DIR: &str = "/usr/lib/cni";
const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "portmap", "loopback"];
/// The bridge and host-local data dir of skiff's default CNI network.
const BRIDGE: &str = "skiff0";
const IPAM_DIR: &str = "/var/lib/cni/networks/skiff";
/// Per-container network state the hooks keep.
const NET_RUN_DIR: &str = "/run/skiff-net";
/// The first line of the page served by examples/helloworld.
const GREETING: &str = "<h3>Hello World!</h3><b>Hostname:</b> ";

/// One finished command (the conformance harness's result type).
type Out = conformance::runtime::Output;

/// What this host and these binaries can do; a missing piece turns its step into a SKIP.
#[derive(Debug)]
struct Caps {
    cni: Result<(), String>,
    curl: Option<PathBuf>,
    script: Option<PathBuf>,
}

/// The tour's private world and its cleanup guard: containers are force-deleted, bundles removed
/// (with their anonymous volumes) and everything under the temp dir unmounted, even on panic.
struct Tour {
    dir: Option<tempfile::TempDir>,
    skiff: PathBuf,
    image: PathBuf,
    build: PathBuf,
    ids: Vec<String>,
    bundles: Vec<PathBuf>,
    seq: usize,
}

impl Tour {
    fn new() -> Result<Tour, String> {
        let bin = |r: Result<PathBuf, conformance::bins::BinError>| r.map_err(|e| e.to_string());
        let dir = tempfile::Builder::new()
            .prefix("skiff-tour-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        for d in ["root", "io", "store"] {
            std::fs::create_dir(dir.path().join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        Ok(Tour {
            dir: Some(dir),
            skiff: bin(conformance::bins::skiff())?,
            image: bin(conformance::bins::skiff_image())?,
            build: bin(conformance::bins::skiff_build())?,
            ids: Vec::new(),
            bundles: Vec::new(),
            seq: 0,
        })
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .map(|d| d.path())
            .unwrap_or(Path::new("/nonexistent"))
    }

    fn store(&self) -> PathBuf {
        self.dir().join("store")
    }

    fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    /// A new container id, deleted by the guard.
    fn new_id(&mut self, what: &str) -> String {
        let id = conformance::unique_name(&format!("tour-{what}"));
        self.ids.push(id.clone());
        id
    }

    /// A new (not yet existing) bundle path, removed by the guard.
    fn new_bundle(&mut self, what: &str) -> PathBuf {
        let b = self.dir().join(format!("bundle-{what}"));
        self.bundles.push(b.clone());
        b
    }

    /// Run `program args` with stdin from `stdin` (or /dev/null), output to files (a detached
    /// container inherits them) and a time limit after which its process group is killed.
    fn run<S: AsRef<OsStr>>(
        &mut self,
        program: &Path,
        args: &[S],
        stdin: Option<&[u8]>,
        limit: Duration,
    ) -> Out {
        self.seq += 1;
        let base = self.dir().join("io").join(self.seq.to_string());
        let store = self.store().display().to_string();
        let mut inv = Invocation::program(program, args, base)
            .env("SKIFF_STORE", &store)
            .timeout(limit);
        if let Some(data) = stdin {
            inv = inv.stdin(data);
        }
        inv.output()
    }

    /// `skiff-image ARGS` on the private store.
    fn si(&mut self, args: &[&str]) -> Out {
        let image = self.image.clone();
        self.run(&image, args, None, Duration::from_secs(120))
    }

    /// `skiff --root ROOT ARGS`.
    fn sk(&mut self, args: &[&str]) -> Out {
        let (skiff, root) = (self.skiff.clone(), self.root());
        let mut all = vec!["--root".to_string(), root.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        self.run(&skiff, &all, None, Duration::from_secs(60))
    }

    /// `skiff run -d` of a bundle as `id`.
    #[track_caller]
    fn run_detached(&mut self, bundle: &Path, id: &str) {
        let b = bundle.display().to_string();
        self.sk(&["run", "-d", "--bundle", &b, id]).ok();
        let st: Value =
            serde_json::from_str(&self.sk(&["state", id]).ok().stdout).unwrap_or_default();
        assert_eq!(st["status"], "running", "state of {id}: {st}");
    }

    /// Poll `skiff exec ID ARGS` until it succeeds (bounded: 50 tries, 10 s).
    fn exec_until_ok(&mut self, id: &str, args: &[&str]) -> Out {
        let mut all = vec!["exec", id];
        all.extend_from_slice(args);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut tries = 0;
        loop {
            let o = self.sk(&all);
            tries += 1;
            if o.success() || tries >= 50 || Instant::now() > deadline {
                return o;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The container's pid from `skiff state`.
    #[track_caller]
    fn pid(&mut self, id: &str) -> i64 {
        let st: Value =
            serde_json::from_str(&self.sk(&["state", id]).ok().stdout).unwrap_or_default();
        st["pid"].as_i64().unwrap_or(0)
    }

    /// The image's manifest digest and layer digests, from `skiff-image inspect`.
    #[track_caller]
    fn image_digests(&mut self, name: &str) -> (String, Vec<String>) {
        let v: Value =
            serde_json::from_str(&self.si(&["inspect", name]).ok().stdout).unwrap_or_default();
        let layers = v["Manifest"]["layers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|l| l["digest"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        (v["Digest"].as_str().unwrap_or_default().to_string(), layers)
    }

    /// Unpack, run in the foreground and return the output of a one-shot command.
    #[track_caller]
    fn run_once(&mut self, image: &str, what: &str, cmd: &[&str]) -> Out {
        let b = self.new_bundle(what);
        let bs = b.display().to_string();
        let mut args = vec!["unpack", image, bs.as_str(), "--cmd"];
        args.extend_from_slice(cmd);
        self.si(&args).ok();
        let id = self.new_id(what);
        let out = self.sk(&["run", "--bundle", &bs, &id]);
        self.si(&["rm-bundle", &bs]).ok();
        out
    }
}

impl Drop for Tour {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut self.ids);
        for id in &ids {
            if self.root().join(id).exists() {
                let _ = self.sk(&["kill", id, "KILL"]);
                let _ = self.sk(&["delete", "--force", id]);
            }
        }
        for b in std::mem::take(&mut self.bundles) {
            if b.exists() {
                let bs = b.display().to_string();
                if !self.si(&["rm-bundle", "--volumes", &bs]).success() {
                    let _ = self.si(&["rm-bundle", &bs]);
                }
            }
        }
        if let Some(dir) = self.dir.take() {
            if conformance::leaks::unmount_under(dir.path()) {
                let _ = dir.close();
            } else {
                eprintln!("WARNING: mounts remain under {:?}; leaving it", dir.path());
                let _ = dir.keep();
            }
        }
    }
}

fn step(n: u32, what: &str) {
    eprintln!("\n=== tour step {n}: {what}");
}

fn caps() -> Caps {
    let cni = (|| {
        for p in CNI_PLUGINS {
            if !Path::new(CNI_DIR).join(p).is_file() {
                return Err(format!(
                    "CNI plugin {CNI_DIR}/{p} missing (apt-get install containernetworking-plugins)"
                ));
            }
        }
        if conformance::bins::system("iptables").is_none() {
            return Err("iptables is not installed".into());
        }
        Ok(())
    })();
    Caps {
        cni,
        curl: conformance::bins::system("curl"),
        script: conformance::bins::system("script"),
    }
}

/// A host TCP port nothing listens on and no DNAT rule uses, near the primer's 4000.
fn free_port() -> Option<u16> {
    let rules = iptables_save();
    let start = 4000 + (std::process::id() % 500) as u16;
    (start..start + 500).find(|p| {
        std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok()
            && !rules.contains(&format!("--dport {p} "))
    })
}

fn iptables_save() -> String {
    Command::new("iptables-save")
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Host interface name with this ifindex.
fn ifname_by_index(index: &str) -> Option<String> {
    std::fs::read_dir("/sys/class/net")
        .ok()?
        .flatten()
        .find_map(|e| {
            let i = std::fs::read_to_string(e.path().join("ifindex")).ok()?;
            (i.trim() == index).then(|| e.file_name().to_string_lossy().into_owned())
        })
}

/// Host-local allocation files (named by IP) whose content names this container id.
fn ipam_allocations(id: &str) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(IPAM_DIR) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path())
                .map(|s| s.lines().any(|l| l.trim() == id))
                .unwrap_or(false)
        })
        .map(|e| e.path())
        .collect()
}

/// Everything network-related still tied to a deleted container: empty means clean.
fn network_leftovers(id: &str, veth: Option<&str>, port: u16) -> Vec<String> {
    let mut left = Vec::new();
    if let Some(v) = veth {
        if Path::new("/sys/class/net").join(v).exists() {
            left.push(format!("veth {v} still exists"));
        }
    }
    for a in ipam_allocations(id) {
        left.push(format!("host-local allocation {} names {id}", a.display()));
    }
    let rules = iptables_save();
    for l in rules.lines() {
        if l.contains(id) || l.contains(&format!("--dport {port} ")) {
            left.push(format!("iptables rule: {l}"));
        }
    }
    let run = Path::new(NET_RUN_DIR).join(id);
    if run.exists() {
        left.push(format!("{} still exists", run.display()));
    }
    left
}

/// The v1 mount point of a cgroup controller (from mountinfo super options).
fn v1_mount(controller: &str) -> Option<PathBuf> {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mi.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let mut post = post.split(' ');
        if post.next()? != "cgroup" {
            return None;
        }
        let opts = post.nth(1)?;
        opts.split(',')
            .any(|o| o == controller)
            .then(|| PathBuf::from(pre.split(' ').nth(4).unwrap_or_default()))
    })
}

/// Where a process's CPU limit and CPU usage are read: cgroup v1 (cpu + cpuacct) or v2 files.
enum CpuCgroup {
    /// v1: cpu.cfs_quota_us/cfs_period_us in the cpu hierarchy, cpuacct.usage (ns).
    V1 { cpu: PathBuf, cpuacct: PathBuf },
    /// v2: cpu.max and cpu.stat usage_usec.
    V2 { dir: PathBuf },
}

impl CpuCgroup {
    fn of(pid: i64) -> Option<CpuCgroup> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path_of = |ctl: &str| {
            text.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, ctls, p) = (f.next()?, f.next()?, f.next()?);
                ctls.split(',')
                    .any(|c| c == ctl)
                    .then(|| p.trim_start_matches('/').to_string())
            })
        };
        if let (Some(cpu), Some(acct), Some(mc), Some(ma)) = (
            path_of("cpu"),
            path_of("cpuacct"),
            v1_mount("cpu"),
            v1_mount("cpuacct"),
        ) {
            return Some(CpuCgroup::V1 {
                cpu: mc.join(cpu),
                cpuacct: ma.join(acct),
            });
        }
        let p = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let dir = Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/'));
        dir.join("cpu.max")
            .exists()
            .then_some(CpuCgroup::V2 { dir })
    }

    /// (quota, period) in microseconds as the cgroup files say.
    fn limit(&self) -> Option<(i64, i64)> {
        let read = |p: PathBuf| std::fs::read_to_string(p).ok();
        match self {
            CpuCgroup::V1 { cpu, .. } => Some((
                read(cpu.join("cpu.cfs_quota_us"))?.trim().parse().ok()?,
                read(cpu.join("cpu.cfs_period_us"))?.trim().parse().ok()?,
            )),
            CpuCgroup::V2 { dir } => {
                let t = read(dir.join("cpu.max"))?;
                let mut w = t.split_whitespace();
                Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
            }
        }
    }

    /// CPU time used so far, in nanoseconds.
    fn usage_ns(&self) -> Option<u64> {
        match self {
            CpuCgroup::V1 { cpuacct, .. } => std::fs::read_to_string(cpuacct.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse()
                .ok(),
            CpuCgroup::V2 { dir } => {
                let t = std::fs::read_to_string(dir.join("cpu.stat")).ok()?;
                t.lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))?
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .map(|u| u * 1000)
            }
        }
    }

    fn describe(&self) -> String {
        match self {
            CpuCgroup::V1 { cpu, cpuacct } => format!(
                "{}/cpu.cfs_quota_us, {}/cpuacct.usage",
                cpu.display(),
                cpuacct.display()
            ),
            CpuCgroup::V2 { dir } => format!("{}/cpu.max, cpu.stat", dir.display()),
        }
    }
}

/// The mount source config.json gives for a container path.
fn mount_source(bundle: &Path, dest: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(bundle.join("config.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v["mounts"].as_array()?.iter().find_map(|m| {
        (m["destination"] == dest)
            .then(|| m["source"].as_str().map(PathBuf::from))
            .flatten()
    })
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn seed_walkthrough_end_to_end() {
    conformance::require_root!();
    if !Path::new(conformance::bundle::HOST_BUSYBOX).is_file() {
        conformance::skip!("/bin/busybox missing (apt-get install busybox-static)");
    }
    if conformance::bins::system("tar").is_none() {
        conformance::skip!("tar is not installed");
    }
    let mut t = match Tour::new() {
        Ok(t) => t,
        Err(e) => panic!("setting up the tour: {e}"),
    };
    let caps = caps();
    eprintln!("capabilities: {caps:?}");
    let dir = t.dir().to_path_buf();

    // ---- 1. docker import ----
    step(
        1,
        "rootfs dir -> tar --numeric-owner --exclude=./proc --exclude=./sys -> skiff-image import",
    );
    let rootfs = dir.join("rootfs");
    let sh = PathBuf::from("/bin/sh");
    let script = examples_dir().join("make-busybox-rootfs.sh");
    let r = rootfs.display().to_string();
    t.run(
        &sh,
        &[script.display().to_string(), r.clone()],
        None,
        Duration::from_secs(60),
    )
    .ok();
    let tarball = dir.join("base.tar").display().to_string();
    let tar = PathBuf::from("tar");
    let tar_args = [
        "--numeric-owner",
        "--exclude=./proc",
        "--exclude=./sys",
        "-C",
        &r,
        "-cf",
        &tarball,
        ".",
    ];
    t.run(&tar, &tar_args, None, Duration::from_secs(60)).ok();
    let listing = t
        .run(&tar, &["-tf", &tarball], None, Duration::from_secs(30))
        .ok();
    assert!(
        listing.stdout.lines().any(|l| l == "./bin/busybox")
            && !listing
                .stdout
                .lines()
                .any(|l| l.starts_with("./proc") || l.starts_with("./sys")),
        "tarball content unexpected:\n{}",
        listing.stdout
    );
    t.si(&["import", &tarball, "busybox:latest"]).ok();
    let images = t.si(&["images"]).ok();
    eprintln!("{}", images.stdout.trim_end());
    assert!(images.stdout.contains("busybox"), "{images}");
    let (_, base_layers) = t.image_digests("busybox:latest");
    assert_eq!(base_layers.len(), 1, "an imported rootfs is one layer");

    // ---- 2. docker build ----
    step(2, "skiff-build -t helloworld examples/helloworld");
    let (build, skiff) = (t.build.clone(), t.skiff.clone());
    let ctx = examples_dir().join("helloworld").display().to_string();
    let built = t.run(
        &build,
        &[
            "--runtime",
            &skiff.display().to_string(),
            "-t",
            "helloworld",
            &ctx,
        ],
        None,
        Duration::from_secs(180),
    );
    let built = built.ok();
    eprintln!("{}", built.stderr.trim_end());
    let history = t.si(&["history", "helloworld"]).ok();
    eprintln!("{}", history.stdout.trim_end());
    for want in [
        "WORKDIR /app",
        "COPY . /app",
        "EXPOSE 80",
        "ENV NAME=World",
        "CMD",
    ] {
        assert!(
            history.stdout.contains(want),
            "history lacks {want:?}:\n{history}"
        );
    }
    let cfg: Value =
        serde_json::from_str(&t.si(&["inspect", "helloworld"]).ok().stdout).unwrap_or_default();
    let config = &cfg["Config"]["config"];
    assert!(
        config["Env"]
            .as_array()
            .is_some_and(|e| e.iter().any(|v| v == "NAME=World")),
        "{config}"
    );
    assert!(config["ExposedPorts"].get("80/tcp").is_some(), "{config}");
    assert_eq!(config["Cmd"][0], "httpd", "{config}");
    let (orig_digest, orig_layers) = t.image_digests("helloworld");
    assert_eq!(orig_layers.len(), 2, "base layer + COPY layer");

    // ---- 3. docker run -p PORT:80 ----
    step(
        3,
        "skiff-image unpack -p PORT:80, skiff run -d, curl http://127.0.0.1:PORT",
    );
    let web = t.new_bundle("web");
    let web_s = web.display().to_string();
    let web_id = t.new_id("web");
    let mut port = 0u16;
    let mut veth: Option<String> = None;
    let networked = match (&caps.cni, &caps.curl, free_port()) {
        (Ok(()), Some(_), Some(p)) => {
            port = p;
            true
        }
        (Err(e), _, _) => {
            eprintln!("SKIP: step 3's published port: {e}");
            false
        }
        (_, None, _) => {
            eprintln!("SKIP: step 3's published port: curl is not installed");
            false
        }
        (_, _, None) => {
            eprintln!("SKIP: step 3's published port: no free port found");
            false
        }
    };
    if networked {
        let publish = format!("{port}:80");
        t.si(&["unpack", "helloworld", &web_s, "-p", &publish]).ok();
        let conf: Value = serde_json::from_str(
            &std::fs::read_to_string(web.join("config.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert!(
            conf["hooks"]["createRuntime"].is_array() && conf["hooks"]["poststop"].is_array(),
            "config.json lacks the network hooks: {}",
            conf["hooks"]
        );
    } else {
        t.si(&["unpack", "helloworld", &web_s]).ok();
    }
    t.run_detached(&web, &web_id);
    let hostname = t
        .exec_until_ok(&web_id, &["hostname"])
        .ok()
        .out()
        .to_string();
    let page = if networked {
        let curl = caps.curl.clone().unwrap_or_default();
        let url = format!("http://127.0.0.1:{port}/");
        let mut last = None;
        for _ in 0..50 {
            let o = t.run(
                &curl,
                &["-s", "--max-time", "2", &url],
                None,
                Duration::from_secs(10),
            );
            if o.success() && o.stdout.contains(GREETING) {
                last = Some(o);
                break;
            }
            last = Some(o);
            std::thread::sleep(Duration::from_millis(200));
        }
        let o = last.unwrap_or_else(|| panic!("curl never ran"));
        assert!(o.success(), "curl {url} failed:\n{o}");
        // The container's veth on the host: the peer of its eth0.
        let iflink = t
            .sk(&["exec", &web_id, "cat", "/sys/class/net/eth0/iflink"])
            .ok();
        veth = ifname_by_index(iflink.out());
        let v = veth.clone().unwrap_or_default();
        let master = std::fs::read_link(Path::new("/sys/class/net").join(&v).join("master"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        assert_eq!(
            master.as_deref(),
            Some(BRIDGE),
            "veth {v:?} of {web_id} is not on {BRIDGE}"
        );
        assert!(
            !ipam_allocations(&web_id).is_empty(),
            "no host-local allocation names {web_id}"
        );
        assert!(
            iptables_save().contains(&format!("--dport {port} ")),
            "no iptables rule for port {port}"
        );
        eprintln!("veth {v} on {BRIDGE}, port {port} mapped, hostname {hostname}");
        o.stdout
    } else {
        t.exec_until_ok(&web_id, &["wget", "-qO-", "http://127.0.0.1:80/"])
            .ok()
            .stdout
    };
    eprintln!("page: {}", page.trim_end());
    assert_eq!(
        page.trim_end(),
        format!("{GREETING}{hostname}<br/>"),
        "the page shows the container's hostname"
    );
    if networked {
        let host = nix::unistd::gethostname().unwrap_or_default();
        assert_ne!(
            Some(hostname.as_str()),
            host.to_str(),
            "the container has its own hostname"
        );
    }

    // ---- 4. docker exec -it ----
    step(
        4,
        "skiff exec -t ID /bin/sh under a pty; touch /app/test.txt",
    );
    match &caps.script {
        Some(script) => {
            let inner = format!(
                "{} --root {} exec -t {} /bin/sh",
                shell_quote(&skiff.display().to_string()),
                shell_quote(&t.root().display().to_string()),
                web_id
            );
            let typed = b"tty\ntouch /app/test.txt\necho TOUR-$((6*7))\nexit\n";
            let script = script.clone();
            let o = t.run(
                &script,
                &["-qec", &inner, "/dev/null"],
                Some(typed),
                Duration::from_secs(30),
            );
            let o = o.ok();
            eprintln!("{}", o.stdout.trim_end());
            assert!(
                o.stdout.contains("/dev/pts/") && o.stdout.contains("TOUR-42"),
                "the shell did not run on a pty:\n{o}"
            );
        }
        None => {
            eprintln!(
                "SKIP: step 4's terminal: `script` (util-linux) is not installed; plain exec"
            );
            t.sk(&["exec", &web_id, "touch", "/app/test.txt"]).ok();
        }
    }
    t.sk(&["exec", &web_id, "test", "-f", "/app/test.txt"]).ok();

    // ---- 5. docker commit ----
    step(
        5,
        "skiff-image commit BUNDLE helloworld:v2; the original is unchanged",
    );
    t.si(&["commit", &web_s, "helloworld:v2"]).ok();
    let (new_digest, new_layers) = t.image_digests("helloworld:v2");
    let (after_digest, after_layers) = t.image_digests("helloworld");
    assert_eq!((&after_digest, &after_layers), (&orig_digest, &orig_layers));
    assert_ne!(new_digest, orig_digest);
    assert_eq!(new_layers.len(), orig_layers.len() + 1, "one layer added");
    assert_eq!(
        new_layers[..orig_layers.len()],
        orig_layers[..],
        "built on the original"
    );
    let o = t.run_once("helloworld:v2", "v2", &["ls", "/app"]).ok();
    assert!(
        o.stdout.lines().any(|l| l == "test.txt"),
        "new image lacks test.txt:\n{o}"
    );
    let o = t.run_once("helloworld", "orig", &["ls", "/app"]).ok();
    assert!(
        !o.stdout.contains("test.txt") && o.stdout.contains("cgi-bin"),
        "original image changed:\n{o}"
    );

    // Deleting the container removes its networking (poststop hook).
    t.sk(&["delete", "--force", &web_id]).ok();
    if networked {
        let left = network_leftovers(&web_id, veth.as_deref(), port);
        assert!(
            left.is_empty(),
            "after delete of {web_id}:\n{}",
            left.join("\n")
        );
        eprintln!("after delete: veth, IP allocation and port mapping of {web_id} are gone");
    }
    t.si(&["rm-bundle", &web_s]).ok();

    // ---- 6. volumes ----
    step(6, "-v HOSTDIR:/test (bind) and -v /data (anonymous)");
    {
        let home = dir.join("home");
        std::fs::create_dir(&home).unwrap_or_else(|e| panic!("mkdir {}: {e}", home.display()));
        let bind = format!("{}:/test", home.display());
        let b = t.new_bundle("vol");
        let bs = b.display().to_string();
        let id = t.new_id("vol");
        t.si(&[
            "unpack",
            "helloworld",
            &bs,
            "-v",
            &bind,
            "-v",
            "/data",
            "-v",
            "/app/cgi-bin",
        ])
        .ok();
        let anon = mount_source(&b, "/data")
            .unwrap_or_else(|| panic!("no mount for /data in {bs}/config.json"));
        let anon_cgi = mount_source(&b, "/app/cgi-bin")
            .unwrap_or_else(|| panic!("no mount for /app/cgi-bin in {bs}/config.json"));
        let volumes = t.store().join("volumes");
        assert!(
            anon.starts_with(&volumes) && anon.ends_with("_data"),
            "anonymous volume {} is not <store>/volumes/<id>/_data",
            anon.display()
        );
        assert!(
            anon_cgi.join("index.cgi").is_file(),
            "a new volume gets the image's content at its path"
        );
        t.run_detached(&b, &id);
        t.sk(&[
            "exec",
            &id,
            "sh",
            "-c",
            "echo bind > /test/b.txt && echo anon > /data/a.txt",
        ])
        .ok();
        let read = |p: PathBuf| std::fs::read_to_string(&p).unwrap_or_default();
        assert_eq!(
            read(home.join("b.txt")),
            "bind\n",
            "bind volume write not on the host"
        );
        assert_eq!(
            read(anon.join("a.txt")),
            "anon\n",
            "anonymous volume write not on the host"
        );
        t.sk(&["delete", "--force", &id]).ok();
        assert_eq!(
            read(home.join("b.txt")),
            "bind\n",
            "bind volume lost on delete"
        );
        assert_eq!(
            read(anon.join("a.txt")),
            "anon\n",
            "anonymous volume lost on delete"
        );
        t.si(&["commit", &bs, "helloworld:vol"]).ok();
        let o = t
            .run_once(
                "helloworld:vol",
                "volcheck",
                &["ls", "-A", "/test", "/data"],
            )
            .ok();
        assert!(
            !o.stdout.contains("b.txt") && !o.stdout.contains("a.txt"),
            "volume content was committed:\n{o}"
        );
        eprintln!("volumes: host sees writes, they survive delete, commit has empty mount points");
        t.si(&["rm-bundle", "--volumes", &bs]).ok();
        assert!(
            !anon.exists(),
            "rm-bundle --volumes left {}",
            anon.display()
        );
    }

    // ---- 7. CPU limit ----
    step(7, "--cpu-period=100000 --cpu-quota=20000 and a busy loop");
    {
        let b = t.new_bundle("cpu");
        let bs = b.display().to_string();
        let id = t.new_id("cpu");
        let busy = ["--cmd", "sh", "-c", "while :; do :; done"];
        let mut args = vec!["unpack", "helloworld", &bs];
        args.extend(["--cpu-period", "100000", "--cpu-quota", "20000"]);
        args.extend(busy);
        t.si(&args).ok();
        let conf: Value = serde_json::from_str(
            &std::fs::read_to_string(b.join("config.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        let cpu = &conf["linux"]["resources"]["cpu"];
        assert_eq!(
            (cpu["period"].as_i64(), cpu["quota"].as_i64()),
            (Some(100000), Some(20000))
        );
        t.run_detached(&b, &id);
        let pid = t.pid(&id);
        match CpuCgroup::of(pid) {
            None => eprintln!("SKIP: step 7's measurement: no cpu cgroup found for pid {pid}"),
            Some(cg) => {
                assert_eq!(cg.limit(), Some((20000, 100000)), "{}", cg.describe());
                let (u0, t0) = (cg.usage_ns(), Instant::now());
                std::thread::sleep(Duration::from_millis(2500));
                let (u1, t1) = (cg.usage_ns(), Instant::now());
                let (Some(u0), Some(u1)) = (u0, u1) else {
                    panic!("cannot read CPU usage ({})", cg.describe());
                };
                let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
                eprintln!(
                    "CPU used by the busy loop: {:.1} ms in {:.1} ms = {:.0}% of a CPU ({})",
                    (u1 - u0) as f64 / 1e6,
                    (t1 - t0).as_secs_f64() * 1e3,
                    share * 100.0,
                    cg.describe()
                );
                assert!(
                    (0.08..=0.35).contains(&share),
                    "a 20% quota gave {:.0}% of a CPU",
                    share * 100.0
                );
            }
        }
        t.sk(&["delete", "--force", &id]).ok();
        t.si(&["rm-bundle", &bs]).ok();
    }

    // ---- 8. clean up ----
    step(8, "delete, rm-bundle, skiff-image rm, gc: nothing left");
    let ids = t.ids.clone();
    for id in &ids {
        if t.root().join(id).exists() {
            t.sk(&["delete", "--force", id]).ok();
        }
    }
    for b in t.bundles.clone() {
        if b.exists() {
            t.si(&["rm-bundle", &b.display().to_string()]).ok();
        }
    }
    let names = t.si(&["images", "-q"]).ok().stdout;
    let names: Vec<&str> = names
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!names.is_empty(), "no images listed");
    let mut rm = vec!["rm"];
    rm.extend(names.iter().copied());
    t.si(&rm).ok();
    let gc = t.si(&["gc"]).ok();
    eprintln!("{}", gc.out());
    let mut gone: Vec<PathBuf> = ids.iter().map(|id| t.root().join(id)).collect();
    gone.extend(ids.iter().map(|id| Path::new(NET_RUN_DIR).join(id)));
    let scope = conformance::leaks::Scope {
        ids: ids.clone(),
        dirs: vec![dir.clone()],
        gone,
    };
    let report = conformance::leaks::wait_clean(&scope, Duration::from_secs(5));
    assert!(report.is_clean(), "leftovers:\n{report}");
    if networked {
        let mut left = Vec::new();
        for id in &ids {
            left.extend(network_leftovers(id, veth.as_deref(), port));
        }
        assert!(left.is_empty(), "network leftovers:\n{}", left.join("\n"));
    }
    let blobs: Vec<_> = std::fs::read_dir(t.store().join("blobs/sha256"))
        .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(blobs.is_empty(), "gc left blobs: {blobs:?}");
    if let Ok(rd) = std::fs::read_dir(t.store().join("volumes")) {
        let v: Vec<_> = rd.flatten().map(|e| e.file_name()).collect();
        assert!(v.is_empty(), "volumes left in the store: {v:?}");
    }
    eprintln!(
        "clean: no mounts under {}, no cgroups/state for {} containers, no blobs{}",
        dir.display(),
        ids.len(),
        if networked {
            ", no veth/IP/iptables rule"
        } else {
            ""
        }
    );
}

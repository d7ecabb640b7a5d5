//! A private containerd (Debian's package) for shim tests: own root, state, socket, config and
//! namespace, a busybox OCI image made here, `ctr` helpers, and cleanup on drop.
#![allow(dead_code)]

use std::{
    fs,
    io::Write,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

/// Image reference the fixture imports.
pub const IMAGE: &str = "docker.io/library/skiff-busybox:latest";

/// Runtime name of the skiff shim.
pub const SKIFF_SHIM: &str = "io.containerd.skiff.v2";

/// Runtime name of containerd's own runc v2 shim.
pub const RUNC_SHIM: &str = "io.containerd.runc.v2";

/// The containerd namespace the CRI plugin keeps everything in.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// Result of one ctr invocation.
#[derive(Debug, Clone)]
pub struct Out {
    /// Exit code (-1 when killed by the timeout).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

/// A running private containerd.
pub struct Containerd {
    /// Work dir holding root, state, socket, config, log.
    pub dir: PathBuf,
    /// Namespace used for everything.
    pub ns: String,
    child: Option<Child>,
}

/// Whether the host can run these tests; prints the reason when not.
pub fn available() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: containerd tests need root");
        return false;
    }
    for bin in ["/usr/bin/containerd", "/usr/bin/ctr"] {
        if !Path::new(bin).exists() {
            eprintln!("SKIP: {bin} is not installed");
            return false;
        }
    }
    true
}

fn sha_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The image the containerd tests run, made the way a user would: a busybox base imported with
/// `skiff-image`, a Dockerfile built by `skiff-build` (RUN through skiff), exported as a
/// `docker save`-style archive named [`IMAGE`] for `ctr images import`.
pub fn skiff_built_archive(work: &Path, out: &Path) -> Result<(), String> {
    let bin = |r: Result<PathBuf, conformance::bins::BinError>| r.map_err(|e| e.to_string());
    let (skiff, image, build) = (
        bin(conformance::bins::skiff())?,
        bin(conformance::bins::skiff_image())?,
        bin(conformance::bins::skiff_build())?,
    );
    let store = work.join("image-store");
    let ctx = work.join("image-context");
    fs::create_dir_all(&ctx).map_err(|e| format!("{}: {e}", ctx.display()))?;
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo skiff-build > /etc/built-by\nCMD [\"sh\"]\n",
    )
    .map_err(|e| format!("Dockerfile: {e}"))?;
    let base_script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/make-busybox-base.sh");
    let steps: Vec<(&str, Command)> = vec![
        ("make-busybox-base.sh", {
            let mut c = Command::new("sh");
            c.arg(&base_script)
                .arg("busybox:latest")
                .env("SKIFF_IMAGE", &image)
                .env("SKIFF_STORE", &store);
            c
        }),
        ("skiff-build", {
            let mut c = Command::new(&build);
            c.arg("--store")
                .arg(&store)
                .arg("--runtime")
                .arg(&skiff)
                .args(["-q", "-t", "skiff-busybox:latest"])
                .arg(&ctx);
            c
        }),
        ("skiff-image export", {
            let mut c = Command::new(&image);
            c.arg("--store").arg(&store).args([
                "export",
                "skiff-busybox:latest",
                &format!("docker-archive:{}:skiff-busybox:latest", out.display()),
            ]);
            c
        }),
    ];
    for (what, cmd) in steps {
        let o = run_limited(cmd, 120);
        if o.code != 0 {
            return Err(format!("{what} failed: {o:?}"));
        }
    }
    Ok(())
}

/// Builds a one-layer busybox OCI layout tar (what `ctr images import` takes).
pub fn busybox_oci_archive(out: &Path) -> std::io::Result<()> {
    busybox_oci_archive_named(out, IMAGE, &["/bin/sh"])
}

/// A one-layer busybox OCI layout tar named `name` whose image config runs `cmd`.
pub fn busybox_oci_archive_named(out: &Path, name: &str, cmd: &[&str]) -> std::io::Result<()> {
    let mut layer = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, name: &str, mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, name, std::io::empty())
    };
    for (d, m) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("proc", 0o755),
        ("sys", 0o755),
        ("dev", 0o755),
        ("root", 0o700),
    ] {
        dir(&mut layer, d, m)?;
    }
    let busybox = fs::read("/bin/busybox")?;
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o755);
    h.set_size(busybox.len() as u64);
    h.set_mtime(0);
    layer.append_data(&mut h, "bin/busybox", busybox.as_slice())?;
    let list = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        if applet == "busybox" || applet.contains('/') {
            continue;
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        layer.append_link(&mut h, format!("bin/{applet}"), "busybox")?;
    }
    for (name, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(text.len() as u64);
        h.set_mtime(0);
        layer.append_data(&mut h, name, text.as_bytes())?;
    }
    let layer = layer.into_inner()?;
    let layer_d = sha_hex(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_d}")]}
    })
    .to_string()
    .into_bytes();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": format!("sha256:{}", sha_hex(&config)), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": format!("sha256:{layer_d}"), "size": layer.len()}]
    })
    .to_string()
    .into_bytes();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": format!("sha256:{}", sha_hex(&manifest)), "size": manifest.len(),
                       "annotations": {"io.containerd.image.name": name,
                                       "org.opencontainers.image.ref.name": "latest"}}]
    })
    .to_string()
    .into_bytes();
    let mut archive = tar::Builder::new(fs::File::create(out)?);
    let blobs = [
        (
            "oci-layout".to_string(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
        ("index.json".to_string(), index),
        (format!("blobs/sha256/{layer_d}"), layer),
        (format!("blobs/sha256/{}", sha_hex(&config)), config),
        (format!("blobs/sha256/{}", sha_hex(&manifest)), manifest),
    ];
    for (name, data) in blobs {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        archive.append_data(&mut h, name, data.as_slice())?;
    }
    archive.into_inner()?.flush()
}

/// Runs a command with a hard time limit (via timeout(1)), capturing output.
pub fn run_limited(cmd: Command, limit_secs: u32) -> Out {
    let prog = cmd.get_program().to_owned();
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let mut t = Command::new("timeout");
    t.arg("-k")
        .arg("5")
        .arg(limit_secs.to_string())
        .arg(prog)
        .args(args);
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => t.env(k, v),
            None => t.env_remove(k),
        };
    }
    let out = t.stdin(Stdio::null()).output();
    match out {
        Ok(o) => Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        },
        Err(e) => Out {
            code: -1,
            stdout: String::new(),
            stderr: e.to_string(),
        },
    }
}

impl Containerd {
    /// Starts containerd with the shim on its PATH and `env` in its environment, imports the
    /// busybox image into a fresh namespace. None (with SKIP printed) if it cannot start.
    pub fn start(tag: &str, shim: &Path, env: &[(&str, &str)]) -> Result<Containerd, String> {
        Self::start_with(tag, shim, env, None)
    }

    /// Like [`Containerd::start`]; with `cri` the CRI plugin is enabled, configured by the TOML
    /// `cri` returns for the work dir (its `[plugins."io.containerd.grpc.v1.cri"]` tables),
    /// containerd runs in a private mount namespace (a tmpfs over /var/lib/cni), and the image
    /// goes into the CRI's `k8s.io` namespace.
    pub fn start_with(
        tag: &str,
        shim: &Path,
        env: &[(&str, &str)],
        cri: Option<&dyn Fn(&Path) -> String>,
    ) -> Result<Containerd, String> {
        let dir = PathBuf::from(format!("/tmp/skcd-{}-{}", tag, std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).map_err(|e| e.to_string())?;
        symlink(shim, dir.join("bin/containerd-shim-skiff-v2")).map_err(|e| e.to_string())?;
        let mut config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             [grpc]\n  address = \"{d}/c.sock\"\n[ttrpc]\n  address = \"{d}/c.sock.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n",
            d = dir.display()
        );
        match cri {
            Some(cri) => config.push_str(&cri(&dir)),
            None => config.insert_str(0, "disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n"),
        }
        fs::write(dir.join("config.toml"), config).map_err(|e| e.to_string())?;
        let log = fs::File::create(dir.join("containerd.log")).map_err(|e| e.to_string())?;
        let path = format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            dir.join("bin").display()
        );
        let mut cmd = if cri.is_some() {
            // The CRI's CNI library keeps its result cache in /var/lib/cni (not configurable in
            // containerd 1.6): run this containerd (and so its shims) in a private mount
            // namespace with a tmpfs there, so the host's /var/lib/cni is never written. The
            // namespace, and every mount made in it, goes away with its last process.
            let mut c = Command::new("unshare");
            c.args([
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                "if [ -d /var/lib/cni ]; then t=/var/lib/cni; else t=/var/lib; fi; \
                 mount -t tmpfs -o mode=0755,size=16m skiff-test-cni \"$t\" && \
                 exec /usr/bin/containerd \"$@\"",
                "sh",
            ]);
            c
        } else {
            Command::new("/usr/bin/containerd")
        };
        cmd.arg("--config")
            .arg(dir.join("config.toml"))
            .env("PATH", path)
            .env_remove("SKIFF_SHIM_RUNTIME")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().map_err(|e| format!("spawn containerd: {e}"))?;
        let ns = match cri {
            Some(_) => CRI_NAMESPACE.to_string(),
            None => format!("sk{}{}", tag.replace(['-', '_'], ""), std::process::id()),
        };
        let me = Containerd {
            dir,
            ns,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if me.ctr(&["version"]).code == 0 {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("containerd did not come up: {}", me.log_tail()));
            }
            thread::sleep(Duration::from_millis(100));
        }
        let archive = me.dir.join("skiff-built.tar");
        skiff_built_archive(&me.dir, &archive)?;
        let imp = me.ctr(&["images", "import", &archive.to_string_lossy()]);
        if imp.code != 0 {
            return Err(format!("image import failed: {imp:?}"));
        }
        Ok(me)
    }

    /// The containerd socket.
    pub fn sock(&self) -> PathBuf {
        self.dir.join("c.sock")
    }

    /// A ctr command for this containerd and namespace.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/bin/ctr");
        c.arg("-a")
            .arg(self.sock())
            .arg("-n")
            .arg(&self.ns)
            .args(args);
        c
    }

    /// Runs ctr with a 60 s limit.
    pub fn ctr(&self, args: &[&str]) -> Out {
        run_limited(self.ctr_cmd(args), 60)
    }

    /// Runs ctr with stdin fed from `input`.
    pub fn ctr_stdin(&self, args: &[&str], input: &str) -> Out {
        let mut c = Command::new("timeout");
        c.arg("-k").arg("5").arg("60").arg("/usr/bin/ctr");
        c.arg("-a")
            .arg(self.sock())
            .arg("-n")
            .arg(&self.ns)
            .args(args);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let Ok(mut child) = c.spawn() else {
            return Out {
                code: -1,
                stdout: String::new(),
                stderr: "spawn ctr".into(),
            };
        };
        if let Some(mut sin) = child.stdin.take() {
            let _ = sin.write_all(input.as_bytes());
        }
        match child.wait_with_output() {
            Ok(o) => Out {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
            },
            Err(e) => Out {
                code: -1,
                stdout: String::new(),
                stderr: e.to_string(),
            },
        }
    }

    /// Runs ctr inside a pseudo-terminal (script(1)), as a user at a terminal would.
    pub fn ctr_tty(&self, args: &[&str]) -> Out {
        let mut line = format!("/usr/bin/ctr -a {} -n {}", self.sock().display(), self.ns);
        for a in args {
            line.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        }
        let mut c = Command::new("script");
        c.arg("-qec").arg(line).arg("/dev/null");
        run_limited(c, 60)
    }

    /// Runs `ctr ARGS` in a pseudo-terminal sized 33x77 rows x cols, and resizes that terminal to
    /// 40x100 (a user resizing their window: ctr forwards SIGWINCH as ResizePty) one second after
    /// the shell condition `ready` holds (bounded to 30 s; `$CTR` in it is this containerd's ctr).
    pub fn ctr_tty_resized(&self, args: &[&str], ready: &str) -> Out {
        let ctr = format!("/usr/bin/ctr -a {} -n {}", self.sock().display(), self.ns);
        let mut line = format!(
            "stty rows 33 cols 77; CTR='{ctr}'; \
             (i=0; until {ready} || [ $i -ge 300 ]; do sleep 0.1; i=$((i+1)); done; \
              sleep 1; stty rows 40 cols 100 </dev/tty) & {ctr}"
        );
        for a in args {
            line.push_str(&format!(" '{}'", a.replace('\'', "'\\''")));
        }
        line.push_str("; rc=$?; wait; exit $rc");
        let mut c = Command::new("script");
        c.arg("-qec").arg(line).arg("/dev/null");
        run_limited(c, 90)
    }

    /// Last lines of containerd's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Task status (RUNNING/PAUSED/STOPPED...) from `ctr task ls`, or "" if absent.
    pub fn task_status(&self, id: &str) -> String {
        let out = self.ctr(&["task", "ls"]);
        for line in out.stdout.lines() {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.first() == Some(&id) && cols.len() >= 3 {
                return cols[2].to_string();
            }
        }
        String::new()
    }

    /// Waits (bounded) until a task reaches `status`.
    pub fn wait_status(&self, id: &str, status: &str) -> bool {
        for _ in 0..100 {
            if self.task_status(id) == status {
                return true;
            }
            thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// Kills and deletes a task and its container, ignoring errors.
    pub fn remove(&self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "KILL", id]);
        self.wait_status(id, "STOPPED");
        let _ = self.ctr(&["task", "delete", id]);
        let _ = self.ctr(&["containers", "rm", id]);
    }

    /// Processes whose command line mentions this containerd's socket (its shims).
    pub fn shim_pids(&self) -> Vec<i32> {
        let needle = self.sock().to_string_lossy().into_owned();
        let mut pids = Vec::new();
        if let Ok(rd) = fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                    continue;
                };
                let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                if cmd.contains("containerd-shim") && cmd.contains(&needle) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Mount points under the fixture directory.
    pub fn mounts(&self) -> Vec<String> {
        let prefix = self.dir.to_string_lossy().into_owned();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&prefix))
            .collect()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Remove every task and container of our namespace.
        let list = self.ctr(&["containers", "ls", "-q"]);
        for id in list.stdout.lines().map(str::trim).filter(|l| !l.is_empty()) {
            self.remove(id);
        }
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
        for pid in self.shim_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let mut mounts = self.mounts();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = fs::remove_dir_all(&self.dir);
        for rt in ["runc", "skiff"] {
            let _ = fs::remove_dir(Path::new("/run/containerd").join(rt).join(&self.ns));
        }
        // containerd puts each container's cgroup under /<namespace>/; the runtimes remove the
        // container's own cgroup, the namespace's parent directory is ours to remove. (CRI pods
        // use the cgroup parent their test chose; it removes that.)
        if self.ns != CRI_NAMESPACE {
            remove_namespace_cgroups(&self.ns);
        }
    }
}

/// Remove the (by now empty) `/<ns>` cgroup directory of every hierarchy.
pub fn remove_namespace_cgroups(ns: &str) {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut dirs: Vec<std::path::PathBuf> =
        hierarchies.flatten().map(|h| h.path().join(ns)).collect();
    // cgroup v2 directly under /sys/fs/cgroup.
    dirs.push(Path::new("/sys/fs/cgroup").join(ns));
    for dir in dirs.into_iter().filter(|d| d.is_dir()) {
        if let Ok(children) = fs::read_dir(&dir) {
            for c in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = fs::remove_dir(c.path());
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}

//! Helpers for skiff-build's end-to-end tests: a private store with a busybox base image, a
//! runtime to run RUN steps with, and a way to run the `skiff-build` binary and inspect results.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Print `SKIP: reason` and return from the test.
#[macro_export]
macro_rules! skip {
    ($($arg:tt)*) => {{
        eprintln!("SKIP: {}", format_args!($($arg)*));
        return;
    }};
}

/// A throw-away build environment; everything lives under one temp dir removed on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: PathBuf,
    pub runtime: String,
    pub runtime_root: PathBuf,
}

/// Why the host cannot run the end-to-end tests, if it cannot.
pub fn host_problem() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (overlay mounts and containers)".into());
    }
    if !Path::new("/bin/busybox").exists() {
        return Some("/bin/busybox (busybox-static) is not installed".into());
    }
    if runtime().is_none() {
        return Some("no OCI runtime: install runc or set SKIFF_BUILD_TEST_RUNTIME".into());
    }
    None
}

/// The runtime the tests use: `$SKIFF_BUILD_TEST_RUNTIME`, else runc.
pub fn runtime() -> Option<String> {
    if let Ok(r) = std::env::var("SKIFF_BUILD_TEST_RUNTIME") {
        return Some(r);
    }
    [
        "/usr/sbin/runc",
        "/usr/bin/runc",
        "/usr/local/sbin/runc",
        "/usr/local/bin/runc",
    ]
    .iter()
    .find(|p| Path::new(p).exists())
    .map(|p| p.to_string())
}

/// Make a busybox rootfs directory (busybox + applet symlinks + passwd/group).
pub fn busybox_rootfs(dir: &Path) {
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "tmp", "var/www", "proc", "sys",
        "dev", "run",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", dir.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet == "bin/busybox" || applet.is_empty() {
            continue;
        }
        let p = dir.join(applet);
        let _ = std::os::unix::fs::symlink("/bin/busybox", p);
    }
    std::fs::write(dir.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n").unwrap();
    std::fs::write(
        dir.join("etc/group"),
        "root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n",
    )
    .unwrap();
}

impl Env {
    /// A new store holding `busybox:latest`.
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("skiff-build-test-")
            .tempdir()
            .unwrap();
        let store = dir.path().join("store");
        let s = skiff_image::Store::open(&store).unwrap();
        let rootfs = dir.path().join("busybox-rootfs");
        busybox_rootfs(&rootfs);
        let opts = skiff_image::ImportOptions {
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        skiff_image::import(
            &s,
            &rootfs.display().to_string(),
            Some("busybox:latest"),
            &opts,
        )
        .unwrap();
        let runtime_root = dir.path().join("runtime-root");
        Env {
            store,
            runtime: runtime().unwrap_or_default(),
            runtime_root,
            dir,
        }
    }

    /// A context directory with the given files (path, content).
    pub fn context(&self, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let c = self.dir.path().join(name);
        std::fs::create_dir_all(&c).unwrap();
        for (p, content) in files {
            let f = c.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, content).unwrap();
        }
        c
    }

    /// Run skiff-build with `args` (store and runtime filled in).
    pub fn build(&self, args: &[&str]) -> Output {
        self.build_env(args, &[])
    }

    /// A skiff-build command with this environment's store and runtime (for tests that need
    /// to spawn it, set its environment or stdio themselves).
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_skiff-build"));
        c.arg("--store")
            .arg(&self.store)
            .arg("--runtime")
            .arg(&self.runtime)
            .arg("--runtime-root")
            .arg(&self.runtime_root);
        c
    }

    /// Like [`Env::build`] with extra environment variables.
    pub fn build_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command();
        c.arg("--progress")
            .arg("plain")
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Build and require success; returns (image id, stderr).
    pub fn build_ok(&self, args: &[&str]) -> (String, String) {
        let o = self.build(args);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "skiff-build {args:?} failed:\n{err}");
        (String::from_utf8_lossy(&o.stdout).trim().to_string(), err)
    }

    pub fn store(&self) -> skiff_image::Store {
        skiff_image::Store::open(&self.store).unwrap()
    }

    /// The image config JSON of a stored image.
    pub fn config(&self, name: &str) -> Value {
        let s = self.store();
        let img = s.image(name).unwrap();
        serde_json::from_slice(&s.read_blob(&img.config_digest).unwrap()).unwrap()
    }

    /// Unpack an image in copy mode into a fresh dir; returns the bundle path.
    pub fn unpack(&self, name: &str, bundle: &str) -> PathBuf {
        let s = self.store();
        let img = s.image(name).unwrap();
        let b = self.dir.path().join(bundle);
        let opts = skiff_image::UnpackOptions {
            mode: Some(skiff_image::Mode::Copy),
            ..Default::default()
        };
        skiff_image::unpack(&s, &img, &b, &opts).unwrap();
        b
    }

    /// Nothing of a build may stay behind: no bundle dirs, no mounts under the store.
    pub fn assert_clean(&self) {
        let tmp = self.store.join("build-cache/tmp");
        if let Ok(rd) = std::fs::read_dir(&tmp) {
            let left: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            assert!(left.is_empty(), "bundles left behind: {left:?}");
        }
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let store = self.store.display().to_string();
        let leaked: Vec<&str> = mi
            .lines()
            .filter(|l| l.contains(&format!("{store}/build-cache")))
            .collect();
        assert!(leaked.is_empty(), "mounts left behind: {leaked:?}");
    }
}

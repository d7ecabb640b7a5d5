//! The seeds' Flask app (examples/flask) end to end: a Debian base made with debootstrap by
//! examples/make-debian-base.sh, `skiff-build` running `apt-get install python3-flask`, then the
//! app started in a container and its page fetched from inside.
//!
//! Opt-in: it downloads from the Debian mirror (outside 127.0.0.0/8, against the test rules for
//! CI) and takes minutes, so it runs only with `SKIFF_TEST_DEBIAN=1`. The base image and the
//! build cache are kept in a dedicated store, `/var/tmp/skiff-test-debian-store` (override with
//! `SKIFF_TEST_DEBIAN_STORE`), so later runs skip debootstrap and reuse the apt-get layer; delete
//! that directory to start cold. The test removes its own tag, bundle and container.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const DEFAULT_STORE: &str = "/var/tmp/skiff-test-debian-store";
const BASE: &str = "debian:bookworm";

fn examples() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples")).to_path_buf()
}

/// A workspace binary next to this test's (target/<profile>/NAME), if built.
fn workspace_bin(name: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join(name);
    p.exists().then_some(p)
}

/// Deletes the container, the bundle and the test's tag, whatever happens.
struct Cleanup {
    runtime: String,
    runtime_root: PathBuf,
    id: String,
    bundle: PathBuf,
    store: PathBuf,
    tag: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new(&self.runtime)
            .arg("--root")
            .arg(&self.runtime_root)
            .args(["delete", "-f", &self.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if self.bundle.exists() {
            let _ = skiff_image::remove_bundle_and_volumes(&self.bundle);
        }
        if let Ok(s) = skiff_image::Store::open(&self.store) {
            let _ = s.remove(&self.tag);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_root);
    }
}

#[test]
fn flask_example_builds_and_serves() {
    if std::env::var("SKIFF_TEST_DEBIAN").as_deref() != Ok("1") {
        skip!("set SKIFF_TEST_DEBIAN=1 to run: it downloads Debian packages from the mirror (network beyond 127.0.0.1) and takes 1-4 minutes");
    }
    if let Some(why) = common::host_problem() {
        skip!("{why}");
    }
    if Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_err()
    {
        skip!("debootstrap is not installed (apt-get install debootstrap)");
    }
    let Some(skiff_image_bin) = workspace_bin("skiff-image") else {
        skip!("target/<profile>/skiff-image is not built (cargo build --workspace)");
    };
    let mirror = std::env::var("DEBIAN_MIRROR").ok();
    let mirror_host = mirror
        .as_deref()
        .and_then(|m| m.split("://").nth(1))
        .and_then(|r| r.split(['/', ':']).next())
        .unwrap_or("deb.debian.org")
        .to_string();
    let reachable = std::net::ToSocketAddrs::to_socket_addrs(&(mirror_host.as_str(), 80))
        .ok()
        .and_then(|mut a| a.next())
        .is_some_and(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok());
    if !reachable {
        skip!("the Debian mirror {mirror_host} is not reachable");
    }
    // The runtime: skiff when built, else the builder tests' runtime (runc).
    let runtime = workspace_bin("skiff")
        .map(|p| p.display().to_string())
        .or_else(common::runtime)
        .unwrap();

    let store = PathBuf::from(
        std::env::var("SKIFF_TEST_DEBIAN_STORE").unwrap_or_else(|_| DEFAULT_STORE.into()),
    );
    std::fs::create_dir_all(&store).unwrap();
    let have_base = skiff_image::Store::open(&store)
        .unwrap()
        .image(BASE)
        .is_ok();
    if !have_base {
        let t = std::time::Instant::now();
        let o = Command::new("sh")
            .arg(examples().join("make-debian-base.sh"))
            .arg(BASE)
            .env("SKIFF_IMAGE", &skiff_image_bin)
            .env("SKIFF_STORE", &store)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "make-debian-base.sh failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        eprintln!("made {BASE} in {:.1?}", t.elapsed());
    }

    let work = tempfile::Builder::new()
        .prefix("skiff-flask-test-")
        .tempdir()
        .unwrap();
    let tag = format!("flask-test:{}", std::process::id());
    let guard = Cleanup {
        runtime: runtime.clone(),
        runtime_root: work.path().join("runtime-root"),
        id: format!("sb-flask-{}", std::process::id()),
        bundle: work.path().join("bundle"),
        store: store.clone(),
        tag: tag.clone(),
    };

    let t = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_skiff-build"))
        .arg("--store")
        .arg(&store)
        .arg("--runtime")
        .arg(&runtime)
        .arg("--runtime-root")
        .arg(&guard.runtime_root)
        .args(["--progress", "plain", "-t", &tag])
        .arg(examples().join("flask"))
        .env_remove("SOURCE_DATE_EPOCH")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "building examples/flask failed:\n{err}");
    eprintln!("built examples/flask in {:.1?}", t.elapsed());

    let s = skiff_image::Store::open(&store).unwrap();
    let img = s.image(&tag).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&s.read_blob(&img.config_digest).unwrap()).unwrap();
    let c = &cfg["config"];
    assert_eq!(c["Cmd"], serde_json::json!(["python3", "app.py"]));
    assert_eq!(c["WorkingDir"], "/app");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
    assert!(
        c["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "NAME=World"),
        "{c}"
    );

    // Unpack and run the app, fetching its page from inside the container (bounded retries).
    skiff_image::unpack(
        &s,
        &img,
        &guard.bundle,
        &skiff_image::UnpackOptions::default(),
    )
    .unwrap();
    assert!(guard.bundle.join("rootfs/app/app.py").exists());
    assert!(
        !guard.bundle.join("rootfs/app/Dockerfile").exists(),
        ".dockerignore keeps the Dockerfile out"
    );
    let cfgp = guard.bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfgp).unwrap()).unwrap();
    spec["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "python3 app.py >/tmp/app.log 2>&1 & i=0; while [ $i -lt 100 ]; do \
         python3 -c \"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:80/', timeout=2).read().decode())\" 2>/dev/null && exit 0; \
         i=$((i+1)); sleep 0.2; done; cat /tmp/app.log; exit 1"
    ]);
    spec["process"]["terminal"] = serde_json::json!(false);
    std::fs::write(&cfgp, serde_json::to_vec(&spec).unwrap()).unwrap();
    let out = Command::new(&runtime)
        .arg("--root")
        .arg(&guard.runtime_root)
        .args(["run", "--bundle"])
        .arg(&guard.bundle)
        .arg(&guard.id)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the app did not serve:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("<h3>Hello World!</h3><b>Hostname:</b> "),
        "{stdout}"
    );
    eprintln!("page: {}", stdout.trim());
    drop(guard);
}

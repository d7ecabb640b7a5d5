//! skiff-image store, round trips through skopeo/umoci/podman/containerd, bad input, commit and
//! running unpacked bundles.

mod image_support;

use image_support::*;
use std::path::Path;
use std::process::Command;

macro_rules! need_root {
    () => {
        if !conformance::is_root() {
            eprintln!("SKIP: needs root");
            return;
        }
    };
}

fn import_busybox(t: &TestDir, store: &Path, name: &str) -> bool {
    let Some(tar) = busybox_tar(&t.path) else {
        return false;
    };
    ok(
        &si(
            store,
            &[
                "import",
                tar.to_str().unwrap_or_default(),
                name,
                "--cmd",
                "sh",
            ],
        ),
        "import busybox",
    );
    true
}

fn tool(name: &str) -> Option<std::path::PathBuf> {
    conformance::bins::system(name)
}

#[test]
fn import_list_inspect_tag_rm_gc() {
    need_root!();
    let t = TestDir::new("imgs-basic");
    let store = t.join("store");
    if !import_busybox(&t, &store, "bb:1") {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    let o = si(&store, &["images"]);
    ok(&o, "images");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("bb") && out.contains('1'), "images: {out}");
    let o = si(&store, &["inspect", "bb:1"]);
    ok(&o, "inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect json");
    assert_eq!(v["Config"]["config"]["Cmd"][0], "sh");
    assert_eq!(v["Manifest"]["layers"].as_array().map(|a| a.len()), Some(1));
    ok(&si(&store, &["tag", "bb:1", "other"]), "tag");
    ok(&si(&store, &["inspect", "other:latest"]), "inspect tagged");
    let o = si(&store, &["history", "other"]);
    ok(&o, "history");
    assert!(String::from_utf8_lossy(&o.stdout).contains("skiff-image import"));
    // The store is an OCI layout: ref names are in the index.
    let idx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(store.join("index.json")).expect("index"))
            .expect("json");
    let names: Vec<String> = idx["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .filter_map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(
        names.contains(&"bb:1".to_string()) && names.contains(&"other:latest".to_string()),
        "{names:?}"
    );
    // gc keeps referenced blobs; after rm of all names it removes them and the cached layers.
    let b = t.join("b");
    ok(
        &si(
            &store,
            &[
                "unpack",
                "bb:1",
                b.to_str().unwrap_or_default(),
                "--mode",
                "overlay",
            ],
        ),
        "unpack",
    );
    ok(
        &si(&store, &["rm-bundle", b.to_str().unwrap_or_default()]),
        "rm-bundle",
    );
    ok(&si(&store, &["gc"]), "gc");
    let (_, blobs) = store_state(&store);
    assert_eq!(blobs.len(), 3, "gc removed referenced blobs: {blobs:?}");
    ok(&si(&store, &["rm", "bb:1", "other"]), "rm");
    let o = si(&store, &["rm", "bb:1"]);
    assert!(
        !o.status.success() && stderr(&o).contains("not found"),
        "rm of missing name: {}",
        stderr(&o)
    );
    let o = si(&store, &["gc"]);
    ok(&o, "gc");
    let (_, blobs) = store_state(&store);
    assert!(blobs.is_empty(), "gc left blobs: {blobs:?}");
    assert!(
        list_all(&store.join("layers")).iter().all(|p| p == "empty"),
        "gc left cached layers"
    );
}

#[test]
fn store_is_readable_by_skopeo_and_umoci() {
    need_root!();
    let t = TestDir::new("imgs-layout");
    let store = t.join("store");
    if !import_busybox(&t, &store, "bb:latest") {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    match tool("umoci") {
        Some(u) => {
            let o = Command::new(u)
                .args(["stat", "--image"])
                .arg(format!("{}:bb:latest", store.display()))
                .output()
                .expect("umoci");
            ok(&o, "umoci stat on the store");
        }
        None => eprintln!("SKIP: umoci not installed"),
    }
    let exp = t.join("exp");
    ok(
        &si(
            &store,
            &["export", "bb", &format!("oci:{}:v1", exp.display())],
        ),
        "export oci",
    );
    if let Some(u) = tool("umoci") {
        let o = Command::new(u)
            .args(["stat", "--image"])
            .arg(format!("{}:v1", exp.display()))
            .output()
            .expect("umoci");
        ok(&o, "umoci stat on export");
    }
    match tool("skopeo") {
        Some(s) => {
            let o = Command::new(&s)
                .args(["inspect", &format!("oci:{}:v1", exp.display())])
                .output()
                .expect("skopeo");
            ok(&o, "skopeo inspect oci:");
            let oa = t.join("bb-oci.tar");
            ok(
                &si(
                    &store,
                    &["export", "bb", &format!("oci-archive:{}", oa.display())],
                ),
                "export oci-archive",
            );
            let o = Command::new(&s)
                .args(["inspect", &format!("oci-archive:{}", oa.display())])
                .output()
                .expect("skopeo");
            ok(&o, "skopeo inspect oci-archive:");
            let da = t.join("bb-docker.tar");
            ok(
                &si(
                    &store,
                    &[
                        "export",
                        "bb",
                        &format!("docker-archive:{}:bb:v1", da.display()),
                    ],
                ),
                "export docker-archive",
            );
            let o = Command::new(&s)
                .args(["inspect", &format!("docker-archive:{}", da.display())])
                .output()
                .expect("skopeo");
            ok(&o, "skopeo inspect docker-archive:");
            // skopeo can copy our docker archive into a fresh OCI layout, which we import back.
            let back = t.join("back");
            let o = Command::new(&s)
                .args([
                    "copy",
                    &format!("docker-archive:{}", da.display()),
                    &format!("oci:{}:x", back.display()),
                ])
                .output()
                .expect("skopeo copy");
            ok(&o, "skopeo copy docker-archive -> oci");
            ok(
                &si(
                    &store,
                    &[
                        "import",
                        &format!("oci:{}:x", back.display()),
                        "roundtrip:skopeo",
                    ],
                ),
                "import skopeo output",
            );
        }
        None => eprintln!("SKIP: skopeo not installed"),
    }
}

fn diff_ids(store: &Path, name: &str) -> Vec<String> {
    let o = si(store, &["inspect", name]);
    ok(&o, "inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    v["Config"]["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .iter()
        .map(|x| x.as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn export_import_round_trips() {
    need_root!();
    let t = TestDir::new("imgs-rt");
    let store = t.join("store");
    if !import_busybox(&t, &store, "bb") {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    let want = diff_ids(&store, "bb");
    let s2 = t.join("store2");
    let oa = t.join("a.tar");
    ok(
        &si(
            &store,
            &["export", "bb", &format!("oci-archive:{}", oa.display())],
        ),
        "export oci-archive",
    );
    ok(
        &si(
            &s2,
            &[
                "import",
                &format!("oci-archive:{}", oa.display()),
                "from-oci",
            ],
        ),
        "import oci-archive",
    );
    assert_eq!(diff_ids(&s2, "from-oci"), want);
    let da = t.join("d.tar");
    ok(
        &si(
            &store,
            &[
                "export",
                "bb",
                &format!("docker-archive:{}:bb:latest", da.display()),
            ],
        ),
        "export docker-archive",
    );
    ok(
        &si(
            &s2,
            &[
                "import",
                &format!("docker-archive:{}", da.display()),
                "from-docker",
            ],
        ),
        "import docker-archive",
    );
    assert_eq!(diff_ids(&s2, "from-docker"), want);
    // Auto-detection of plain paths.
    ok(
        &si(&s2, &["import", da.to_str().unwrap_or_default()]),
        "import docker archive by path",
    );
    ok(
        &si(&s2, &["inspect", "bb:latest"]),
        "name carried by docker archive",
    );
    let od = t.join("od");
    ok(
        &si(&store, &["export", "bb", &format!("oci:{}", od.display())]),
        "export oci",
    );
    ok(
        &si(
            &s2,
            &["import", od.to_str().unwrap_or_default(), "from-dir"],
        ),
        "import layout dir by path",
    );
    assert_eq!(diff_ids(&s2, "from-dir"), want);
    // A rootfs directory imports as one layer with the same content.
    let b = t.join("b");
    ok(
        &si(
            &store,
            &[
                "unpack",
                "bb",
                b.to_str().unwrap_or_default(),
                "--mode",
                "copy",
            ],
        ),
        "unpack",
    );
    ok(
        &si(
            &s2,
            &[
                "import",
                b.join("rootfs").to_str().unwrap_or_default(),
                "from-rootfs-dir",
            ],
        ),
        "import rootfs dir",
    );
    let b2 = t.join("b2");
    ok(
        &si(
            &s2,
            &[
                "unpack",
                "from-rootfs-dir",
                b2.to_str().unwrap_or_default(),
                "--mode",
                "copy",
            ],
        ),
        "unpack dir import",
    );
    let d = diff_trees(
        &capture(&b.join("rootfs"), true),
        &capture(&b2.join("rootfs"), true),
        "orig",
        "dir-import",
    );
    assert!(d.is_empty(), "rootfs dir import differs:\n{}", d.join("\n"));
}

#[test]
fn podman_loads_our_archives() {
    need_root!();
    let Some(podman) = tool("podman") else {
        eprintln!("SKIP: podman not installed");
        return;
    };
    let t = TestDir::new("imgs-podman");
    let store = t.join("store");
    if !import_busybox(&t, &store, "bb") {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    for (kind, dest) in [
        ("docker-archive", "d.tar:skiffbb:v1"),
        ("oci-archive", "o.tar"),
    ] {
        let file = t.join(dest.split(':').next().unwrap_or(dest));
        let target = format!(
            "{kind}:{}{}",
            file.display(),
            dest.strip_prefix(
                file.file_name()
                    .and_then(|f| f.to_str())
                    .unwrap_or_default()
            )
            .unwrap_or("")
        );
        ok(&si(&store, &["export", "bb", &target]), "export");
        let o = Command::new(&podman)
            .arg("--root")
            .arg(t.join("podman-root"))
            .arg("--runroot")
            .arg(t.join("podman-run"))
            .args(["--storage-driver", "vfs", "load", "-i"])
            .arg(&file)
            .output()
            .expect("podman");
        ok(&o, &format!("podman load {kind}"));
    }
    let o = Command::new(&podman)
        .arg("--root")
        .arg(t.join("podman-root"))
        .arg("--runroot")
        .arg(t.join("podman-run"))
        .args(["--storage-driver", "vfs", "images"])
        .output()
        .expect("podman images");
    ok(&o, "podman images");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("skiffbb"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

struct Daemon(std::process::Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        for _ in 0..50 {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn containerd_imports_our_archives() {
    need_root!();
    let (Some(containerd), Some(ctr)) = (tool("containerd"), tool("ctr")) else {
        eprintln!("SKIP: containerd/ctr not installed");
        return;
    };
    let t = TestDir::new("imgs-ctrd");
    let store = t.join("store");
    if !import_busybox(&t, &store, "bb") {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    let sock = t.join("c.sock");
    let cfg = t.join("config.toml");
    std::fs::write(&cfg, "version = 2\n[grpc]\n").expect("config");
    let log = std::fs::File::create(t.join("containerd.log")).expect("log");
    let child = Command::new(containerd)
        .arg("--config")
        .arg(&cfg)
        .arg("--root")
        .arg(t.join("root"))
        .arg("--state")
        .arg(t.join("state"))
        .arg("--address")
        .arg(&sock)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start containerd");
    let _d = Daemon(child);
    let mut up = false;
    for _ in 0..100 {
        if sock.exists() {
            let o = Command::new(&ctr)
                .arg("-a")
                .arg(&sock)
                .arg("version")
                .output()
                .expect("ctr");
            if o.status.success() {
                up = true;
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if !up {
        eprintln!(
            "SKIP: private containerd did not come up: {}",
            std::fs::read_to_string(t.join("containerd.log")).unwrap_or_default()
        );
        return;
    }
    let da = t.join("d.tar");
    ok(
        &si(
            &store,
            &[
                "export",
                "bb",
                &format!("docker-archive:{}:skiffbb:v1", da.display()),
            ],
        ),
        "export docker",
    );
    let o = Command::new(&ctr)
        .arg("-a")
        .arg(&sock)
        .args(["-n", "skifftest", "images", "import", "--no-unpack"])
        .arg(&da)
        .output()
        .expect("ctr");
    ok(&o, "ctr images import docker-archive");
    let oa = t.join("o.tar");
    ok(
        &si(
            &store,
            &["export", "bb", &format!("oci-archive:{}:v2", oa.display())],
        ),
        "export oci",
    );
    let o = Command::new(&ctr)
        .arg("-a")
        .arg(&sock)
        .args([
            "-n",
            "skifftest",
            "images",
            "import",
            "--no-unpack",
            "--base-name",
            "skiffbb",
        ])
        .arg(&oa)
        .output()
        .expect("ctr");
    ok(&o, "ctr images import oci-archive");
    let o = Command::new(&ctr)
        .arg("-a")
        .arg(&sock)
        .args(["-n", "skifftest", "images", "ls", "-q"])
        .output()
        .expect("ctr");
    ok(&o, "ctr images ls");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("skiffbb"), "ctr images: {out}");
}

#[test]
fn bad_input_leaves_store_unchanged() {
    need_root!();
    let t = TestDir::new("imgs-bad");
    let store = t.join("store");
    if !import_busybox(&t, &store, "bb") {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    let state = store_state(&store);
    let b = t.join("bundle");
    let bs = b.to_str().unwrap_or_default().to_string();
    // Unknown reference.
    let o = si(&store, &["unpack", "nosuch:tag", &bs]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    assert!(!b.exists());
    let o = si(
        &store,
        &[
            "import",
            &format!("oci:{}", t.join("nonexistent").display()),
            "x",
        ],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("not an OCI image layout"),
        "{}",
        stderr(&o)
    );
    let o = si(&store, &["export", "bb", "ftp:somewhere"]);
    assert!(!o.status.success(), "bad export destination accepted");
    assert_eq!(store_state(&store), state);
    // Missing index.json.
    let lay = t.join("noindex");
    layout_from_tars(&lay, &[Layer::new().file("f", 0o644, b"x").finish()]);
    std::fs::remove_file(lay.join("index.json")).expect("rm index");
    let o = si(
        &store,
        &["import", &format!("oci:{}", lay.display()), "noindex"],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("index.json"),
        "{}",
        stderr(&o)
    );
    assert_eq!(store_state(&store), state);
    // Corrupt blob in a source layout: refused, and nothing it copied stays.
    let lay2 = t.join("corrupt");
    layout_from_tars(
        &lay2,
        &[Layer::new().file("f", 0o644, b"some content").finish()],
    );
    let mut biggest = None;
    for e in std::fs::read_dir(lay2.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
    {
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        if biggest.as_ref().map(|(l, _)| len > *l).unwrap_or(true) {
            biggest = Some((len, e.path()));
        }
    }
    let (_, layer_blob) = biggest.expect("a blob");
    let mut data = std::fs::read(&layer_blob).expect("read");
    data[600] ^= 0xff;
    std::fs::write(&layer_blob, data).expect("corrupt");
    let o = si(
        &store,
        &["import", &format!("oci:{}", lay2.display()), "corrupt"],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("digest mismatch"),
        "{}",
        stderr(&o)
    );
    assert_eq!(store_state(&store), state);
    // Truncated gzip rootfs.
    let tar = Layer::new()
        .file("big", 0o644, &vec![7u8; 300_000])
        .file("x", 0o644, b"y")
        .finish();
    let gz = gzip(&tar);
    let tr = t.join("trunc.tar.gz");
    std::fs::write(&tr, &gz[..gz.len() / 2]).expect("write");
    let o = si(
        &store,
        &["import", tr.to_str().unwrap_or_default(), "trunc"],
    );
    assert!(!o.status.success(), "truncated gzip accepted");
    assert_eq!(store_state(&store), state);
    // A corrupt blob inside the store: unpack refuses, no bundle left, store untouched.
    let lay3 = t.join("good");
    layout_from_tars(
        &lay3,
        &[Layer::new().file("f", 0o644, b"good content here").finish()],
    );
    ok(
        &si(
            &store,
            &["import", &format!("oci:{}", lay3.display()), "good"],
        ),
        "import good",
    );
    let o = si(&store, &["inspect", "good"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let ld = v["Manifest"]["layers"][0]["digest"]
        .as_str()
        .expect("digest")
        .trim_start_matches("sha256:")
        .to_string();
    let state2 = store_state(&store);
    let bp = store.join("blobs/sha256").join(&ld);
    let mut data = std::fs::read(&bp).expect("blob");
    data[520] ^= 0x01;
    std::fs::write(&bp, &data).expect("corrupt");
    for mode in ["copy", "overlay"] {
        let o = si(&store, &["unpack", "good", &bs, "--mode", mode]);
        assert!(!o.status.success(), "corrupt blob unpacked ({mode})");
        assert!(stderr(&o).contains("digest mismatch"), "{}", stderr(&o));
        assert!(!b.exists(), "bundle left after failure");
    }
    assert_eq!(store_state(&store), state2);
    assert!(list_all(&store.join("layers"))
        .iter()
        .all(|p| !p.starts_with(".extract")));
    // Non-empty bundle dir is refused and untouched.
    std::fs::create_dir_all(b.join("keep")).expect("mk");
    let o = si(&store, &["unpack", "bb", &bs]);
    assert!(!o.status.success() && stderr(&o).contains("not empty"));
    assert!(b.join("keep").exists());
}

fn run_runc(bundle: &Path, id: &str) -> std::process::Output {
    let runc = conformance::bins::runc().unwrap_or_else(|| "runc".into());
    let root = bundle
        .parent()
        .unwrap_or(Path::new("/tmp"))
        .join("runc-root");
    let o = Command::new(runc)
        .arg("--root")
        .arg(&root)
        .args(["run", id])
        .current_dir(bundle)
        .output()
        .expect("runc");
    let _ = Command::new(conformance::bins::runc().unwrap_or_else(|| "runc".into()))
        .arg("--root")
        .arg(&root)
        .args(["delete", "-f", id])
        .output();
    o
}

#[test]
fn unpacked_bundles_run_and_config_is_generated() {
    need_root!();
    if conformance::bins::runc().is_none() {
        eprintln!("SKIP: runc not installed");
        return;
    }
    let t = TestDir::new("imgs-run");
    let store = t.join("store");
    let Some(tar) = busybox_tar(&t.path) else {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    };
    // An image with Entrypoint, Cmd, Env, WorkingDir, User, labels, ports, volumes, stop signal.
    let tarb = std::fs::read(&tar).expect("tar");
    let lay = t.join("lay");
    make_layout(
        &lay,
        &[(
            tarb.clone(),
            "application/vnd.oci.image.layer.v1.tar",
            format!("sha256:{}", sha256_hex(&tarb)),
        )],
        serde_json::json!({
            "Entrypoint": ["sh", "-c"], "Cmd": ["id; pwd; echo $GREETING"], "Env": ["PATH=/bin", "GREETING=hello"],
            "WorkingDir": "/tmp", "User": "app", "Labels": {"org.example": "yes"},
            "ExposedPorts": {"80/tcp": {}}, "Volumes": {"/data": {}}, "StopSignal": "SIGTERM"
        }),
    );
    ok(
        &si(
            &store,
            &["import", &format!("oci:{}", lay.display()), "cfg"],
        ),
        "import",
    );
    for mode in ["copy", "overlay"] {
        let b = t.join(&format!("b-{mode}"));
        ok(
            &si(
                &store,
                &[
                    "unpack",
                    "cfg",
                    b.to_str().unwrap_or_default(),
                    "--mode",
                    mode,
                    "--hostname",
                    "box",
                    "-e",
                    "EXTRA=1",
                ],
            ),
            "unpack",
        );
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(b.join("config.json")).expect("config"))
                .expect("json");
        assert_eq!(
            spec["process"]["args"],
            serde_json::json!(["sh", "-c", "id; pwd; echo $GREETING"])
        );
        assert_eq!(spec["process"]["user"]["uid"], 1000);
        assert_eq!(spec["process"]["user"]["gid"], 1000);
        assert_eq!(
            spec["process"]["user"]["additionalGids"],
            serde_json::json!([2000])
        );
        assert_eq!(spec["process"]["cwd"], "/tmp");
        assert_eq!(spec["process"]["terminal"], false);
        assert_eq!(spec["hostname"], "box");
        assert_eq!(spec["annotations"]["org.example"], "yes");
        assert_eq!(
            spec["annotations"]["org.opencontainers.image.exposedPorts"],
            "80/tcp"
        );
        assert_eq!(
            spec["annotations"]["org.opencontainers.image.stopSignal"],
            "SIGTERM"
        );
        let env: Vec<String> = spec["process"]["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect();
        assert!(
            env.contains(&"EXTRA=1".to_string()) && env.contains(&"GREETING=hello".to_string()),
            "{env:?}"
        );
        let mounts = spec["mounts"].as_array().expect("mounts");
        assert!(
            mounts
                .iter()
                .any(|m| m["destination"] == "/data" && m["type"] == "bind"),
            "no volume mount"
        );
        assert_eq!(
            spec["linux"]["maskedPaths"].as_array().map(|a| a.len()),
            Some(10)
        );
        let o = run_runc(&b, &conformance::unique_name("imgrun"));
        ok(&o, &format!("runc run ({mode})"));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("uid=1000") && out.contains("/tmp") && out.contains("hello"),
            "{mode}: {out}"
        );
        ok(
            &si(&store, &["rm-bundle", b.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
        assert!(!b.exists());
    }
    // --cmd, --read-only and -v.
    let b = t.join("b-ro");
    let host = t.join("hostdir");
    std::fs::create_dir_all(&host).expect("host");
    std::fs::write(host.join("hello.txt"), "from host").expect("w");
    ok(
        &si(
            &store,
            &[
                "unpack",
                "cfg",
                b.to_str().unwrap_or_default(),
                "--read-only",
                "-v",
                &format!("{}:/mnt:ro", host.display()),
                "--user",
                "0",
                "--cmd",
                "cat /mnt/hello.txt; touch /x || echo readonly",
            ],
        ),
        "unpack ro",
    );
    let o = run_runc(&b, &conformance::unique_name("imgro"));
    ok(&o, "runc run ro");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("from host") && out.contains("readonly"),
        "{out}"
    );
    ok(
        &si(&store, &["rm-bundle", b.to_str().unwrap_or_default()]),
        "rm-bundle",
    );
}

#[test]
fn commit_overlay_and_copy() {
    need_root!();
    if conformance::bins::runc().is_none() {
        eprintln!("SKIP: runc not installed");
        return;
    }
    let t = TestDir::new("imgs-commit");
    let store = t.join("store");
    let Some(tar) = busybox_tar(&t.path) else {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    };
    let tarb = std::fs::read(&tar).expect("tar");
    let extra = Layer::new()
        .dir("data", 0o755)
        .file("data/from-image", 0o644, b"i")
        .dir("opq", 0o755)
        .file("opq/old", 0o644, b"old")
        .dir("etc", 0o755)
        .file("etc/hostname", 0o644, b"imagehost\n")
        .finish();
    let lay = t.join("lay");
    make_layout(
        &lay,
        &[
            (
                tarb.clone(),
                "application/vnd.oci.image.layer.v1.tar",
                format!("sha256:{}", sha256_hex(&tarb)),
            ),
            (
                extra.clone(),
                "application/vnd.oci.image.layer.v1.tar",
                format!("sha256:{}", sha256_hex(&extra)),
            ),
        ],
        serde_json::json!({"Volumes": {"/data": {}}}),
    );
    ok(
        &si(
            &store,
            &["import", &format!("oci:{}", lay.display()), "base"],
        ),
        "import",
    );
    let script = "echo new > /root/new; rm /bin/vi; chmod 4711 /bin/busybox; rm -rf /opq; mkdir /opq; echo n > /opq/fresh; \
                  echo injected > /etc/hosts; echo h > /etc/hostname; echo vol > /data/in-volume; mkfifo /root/fifo; ln /root/new /root/new-link";
    for mode in ["overlay", "copy"] {
        let b = t.join(&format!("b-{mode}"));
        ok(
            &si(
                &store,
                &[
                    "unpack",
                    "base",
                    b.to_str().unwrap_or_default(),
                    "--mode",
                    mode,
                    "--cmd",
                    "sh",
                    "-c",
                    script,
                ],
            ),
            "unpack",
        );
        let o = run_runc(&b, &conformance::unique_name("imgcommit"));
        ok(&o, "runc run");
        let name = format!("committed:{mode}");
        ok(
            &si(
                &store,
                &[
                    "commit",
                    b.to_str().unwrap_or_default(),
                    &name,
                    "-m",
                    "test",
                ],
            ),
            "commit",
        );
        let o = si(&store, &["history", &name]);
        assert!(
            String::from_utf8_lossy(&o.stdout).lines().count() >= 4,
            "history not updated"
        );
        assert_eq!(diff_ids(&store, &name).len(), 3);
        let c = t.join(&format!("check-{mode}"));
        ok(
            &si(
                &store,
                &[
                    "unpack",
                    &name,
                    c.to_str().unwrap_or_default(),
                    "--mode",
                    "copy",
                ],
            ),
            "unpack committed",
        );
        let r = c.join("rootfs");
        assert_eq!(
            std::fs::read_to_string(r.join("root/new")).expect("new"),
            "new\n"
        );
        assert!(
            !r.join("bin/vi").exists() && std::fs::symlink_metadata(r.join("bin/vi")).is_err(),
            "{mode}: deletion not committed"
        );
        use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
        assert_eq!(
            std::fs::metadata(r.join("bin/busybox"))
                .expect("bb")
                .permissions()
                .mode()
                & 0o7777,
            0o4711
        );
        assert!(
            !r.join("opq/old").exists(),
            "{mode}: opaque dir not committed"
        );
        assert!(r.join("opq/fresh").exists());
        assert!(std::fs::symlink_metadata(r.join("root/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo());
        assert_eq!(
            std::fs::metadata(r.join("root/new")).expect("n").ino(),
            std::fs::metadata(r.join("root/new-link")).expect("l").ino()
        );
        assert!(
            !r.join("etc/hosts").exists(),
            "{mode}: /etc/hosts was committed"
        );
        assert_eq!(
            std::fs::read_to_string(r.join("etc/hostname")).expect("hostname"),
            "imagehost\n",
            "{mode}: /etc/hostname committed"
        );
        assert!(
            r.join("data").is_dir(),
            "{mode}: volume mount point missing"
        );
        assert!(
            !r.join("data/in-volume").exists(),
            "{mode}: volume content committed"
        );
        for d in ["proc", "sys", "dev"] {
            assert!(
                !r.join(d).exists(),
                "{mode}: runtime mount point /{d} was committed"
            );
        }
        for bd in [&b, &c] {
            ok(
                &si(&store, &["rm-bundle", bd.to_str().unwrap_or_default()]),
                "rm-bundle",
            );
        }
    }
}

#[test]
fn second_overlay_bundle_reuses_cache() {
    need_root!();
    let t = TestDir::new("imgs-cache");
    let store = t.join("store");
    if !import_busybox(&t, &store, "bb") {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    let b1 = t.join("b1");
    ok(
        &si(
            &store,
            &[
                "unpack",
                "bb",
                b1.to_str().unwrap_or_default(),
                "--mode",
                "overlay",
            ],
        ),
        "unpack 1",
    );
    let cached: Vec<String> = list_all(&store.join("layers"))
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    let b2 = t.join("b2");
    ok(
        &si(
            &store,
            &[
                "unpack",
                "bb",
                b2.to_str().unwrap_or_default(),
                "--mode",
                "overlay",
            ],
        ),
        "unpack 2",
    );
    let cached2: Vec<String> = list_all(&store.join("layers"))
        .into_iter()
        .filter(|p| !p.contains('/'))
        .collect();
    assert_eq!(cached, cached2, "second unpack re-extracted layers");
    // The bundles are independent: a write in one is not seen in the other.
    std::fs::write(b1.join("rootfs/root/only-b1"), "x").expect("write");
    assert!(!b2.join("rootfs/root/only-b1").exists());
    // gc keeps layers of mounted bundles even when the image is gone.
    ok(&si(&store, &["rm", "bb"]), "rm");
    ok(&si(&store, &["gc"]), "gc");
    assert!(
        b2.join("rootfs/bin/busybox").exists(),
        "gc broke a mounted bundle"
    );
    ok(
        &si(&store, &["umount", b1.to_str().unwrap_or_default()]),
        "umount",
    );
    assert!(!b1.join("rootfs/bin").exists());
    for b in [&b1, &b2] {
        ok(
            &si(&store, &["rm-bundle", b.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
    }
}

#[test]
fn unpacked_bundle_runs_with_skiff() {
    need_root!();
    let Ok(skiff) = conformance::bins::skiff() else {
        eprintln!("SKIP: skiff runtime binary not built");
        return;
    };
    let t = TestDir::new("imgs-skiff");
    let store = t.join("store");
    if !import_busybox(&t, &store, "bb") {
        eprintln!("SKIP: /bin/busybox missing");
        return;
    }
    for mode in ["overlay", "copy"] {
        let b = t.join(&format!("b-{mode}"));
        ok(
            &si(
                &store,
                &[
                    "unpack",
                    "bb",
                    b.to_str().unwrap_or_default(),
                    "--mode",
                    mode,
                    "--cmd",
                    "sh",
                    "-c",
                    "echo skiff-ran; cat /etc/passwd | head -1",
                ],
            ),
            "unpack",
        );
        let id = conformance::unique_name("imgskiff");
        let root = t.join("skiff-root");
        let o = Command::new(&skiff)
            .arg("--root")
            .arg(&root)
            .args(["run", &id])
            .current_dir(&b)
            .output()
            .expect("skiff run");
        let _ = Command::new(&skiff)
            .arg("--root")
            .arg(&root)
            .args(["delete", "-f", &id])
            .output();
        ok(&o, &format!("skiff run ({mode})"));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("skiff-ran"),
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        ok(
            &si(&store, &["rm-bundle", b.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
    }
}

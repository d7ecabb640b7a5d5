//! skiff-image input formats: Docker schema 2 media types, image indexes with platform
//! selection, gzip and zstd layers, and concurrent commands on one store.

mod image_support;

use image_support::*;
use std::path::Path;
use std::process::Command;

fn compress(tool: &str, data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    conformance::bins::system(tool)?;
    let mut c = Command::new(tool)
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = c.stdin.take()?;
    let d = data.to_vec();
    let t = std::thread::spawn(move || {
        let _ = stdin.write_all(&d);
    });
    let o = c.wait_with_output().ok()?;
    let _ = t.join();
    Some(o.stdout)
}

fn put(dir: &Path, b: &[u8]) -> String {
    let h = sha256_hex(b);
    std::fs::create_dir_all(dir.join("blobs/sha256")).expect("blobs");
    std::fs::write(dir.join("blobs/sha256").join(&h), b).expect("blob");
    format!("sha256:{h}")
}

#[test]
fn docker_media_types_and_compressions() {
    if !conformance::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let t = TestDir::new("imgf-docker");
    let l1 = Layer::new()
        .dir("a", 0o755)
        .file("a/gz", 0o644, b"gzip layer")
        .finish();
    let l2 = Layer::new()
        .dir("a", 0o755)
        .file("a/zst", 0o644, b"zstd layer")
        .finish();
    let l3 = Layer::new()
        .file("plain", 0o644, b"plain layer")
        .whiteout("a", "gz")
        .finish();
    let gz = gzip(&l1);
    let Some(zst) = compress("zstd", &l2) else {
        eprintln!("SKIP: zstd CLI not installed");
        return;
    };
    let lay = t.join("lay");
    let cfg = serde_json::json!({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": [
            format!("sha256:{}", sha256_hex(&l1)), format!("sha256:{}", sha256_hex(&l2)), format!("sha256:{}", sha256_hex(&l3))]},
        "container_config": {"Cmd": ["docker", "only"]}});
    let cb = serde_json::to_vec(&cfg).expect("cfg");
    let m = serde_json::json!({
    "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": put(&lay, &cb), "size": cb.len()},
    "layers": [
        {"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": put(&lay, &gz), "size": gz.len()},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": put(&lay, &zst), "size": zst.len()},
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(&lay, &l3), "size": l3.len()},
    ]});
    let mb = serde_json::to_vec(&m).expect("m");
    let md = put(&lay, &mb);
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "digest": md, "size": mb.len(), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(
        lay.join("index.json"),
        serde_json::to_vec(&idx).expect("idx"),
    )
    .expect("w");
    std::fs::write(lay.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("w");
    let store = t.join("store");
    ok(
        &si(
            &store,
            &[
                "import",
                &format!("oci:{}:latest", lay.display()),
                "docker:img",
            ],
        ),
        "import docker-typed layout",
    );
    for mode in ["copy", "overlay"] {
        let b = t.join(&format!("b-{mode}"));
        ok(
            &si(
                &store,
                &[
                    "unpack",
                    "docker:img",
                    b.to_str().unwrap_or_default(),
                    "--mode",
                    mode,
                ],
            ),
            "unpack",
        );
        let r = b.join("rootfs");
        assert_eq!(std::fs::read(r.join("a/zst")).expect("zst"), b"zstd layer");
        assert_eq!(
            std::fs::read(r.join("plain")).expect("plain"),
            b"plain layer"
        );
        assert!(
            !r.join("a/gz").exists(),
            "{mode}: whiteout over gzip layer not applied"
        );
        ok(
            &si(&store, &["rm-bundle", b.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
    }
    // Committing on top of a docker-typed image produces a valid OCI image.
    let b = t.join("bc");
    ok(
        &si(
            &store,
            &[
                "unpack",
                "docker:img",
                b.to_str().unwrap_or_default(),
                "--mode",
                "copy",
            ],
        ),
        "unpack",
    );
    std::fs::write(b.join("rootfs/added"), "x").expect("w");
    ok(
        &si(
            &store,
            &["commit", b.to_str().unwrap_or_default(), "docker:committed"],
        ),
        "commit",
    );
    let o = si(&store, &["inspect", "docker:committed"]);
    ok(&o, "inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["MediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        v["Manifest"]["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert!(v["Config"].get("container_config").is_none());
    if let Some(umoci) = conformance::bins::umoci() {
        let o = Command::new(umoci)
            .args(["stat", "--image"])
            .arg(format!("{}:docker:committed", store.display()))
            .output()
            .expect("umoci");
        ok(&o, "umoci stat committed image");
    }
}

#[test]
fn index_platform_selection() {
    if !conformance::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let t = TestDir::new("imgf-index");
    let lay = t.join("lay");
    let mut descs = Vec::new();
    for (arch, content) in [("arm64", "arm"), ("amd64", "amd")] {
        let l = Layer::new()
            .file("arch", 0o644, content.as_bytes())
            .finish();
        let cfg = serde_json::json!({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256_hex(&l))]}});
        let cb = serde_json::to_vec(&cfg).expect("cfg");
        let m = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(&lay, &cb), "size": cb.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": put(&lay, &l), "size": l.len()}]});
        let mb = serde_json::to_vec(&m).expect("m");
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(&lay, &mb), "size": mb.len(),
            "platform": {"architecture": arch, "os": "linux"}}));
    }
    let inner = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs});
    let ib = serde_json::to_vec(&inner).expect("i");
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": put(&lay, &ib), "size": ib.len(), "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(
        lay.join("index.json"),
        serde_json::to_vec(&idx).expect("idx"),
    )
    .expect("w");
    std::fs::write(lay.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).expect("w");
    let store = t.join("store");
    let r = format!("oci:{}:multi", lay.display());
    let b = t.join("b");
    ok(
        &si(
            &store,
            &[
                "unpack",
                &r,
                b.to_str().unwrap_or_default(),
                "--mode",
                "copy",
            ],
        ),
        "unpack default platform",
    );
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/arch")).expect("arch"),
        "amd"
    );
    let b2 = t.join("b2");
    ok(
        &si(
            &store,
            &[
                "unpack",
                &r,
                b2.to_str().unwrap_or_default(),
                "--mode",
                "copy",
                "--platform",
                "linux/arm64",
            ],
        ),
        "unpack arm64",
    );
    assert_eq!(
        std::fs::read_to_string(b2.join("rootfs/arch")).expect("arch"),
        "arm"
    );
    let o = si(&store, &["import", &r, "m", "--platform", "linux/s390x"]);
    assert!(
        !o.status.success() && stderr(&o).contains("platform"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn concurrent_commands_on_one_store() {
    if !conformance::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let t = TestDir::new("imgf-conc");
    let store = t.join("store");
    let mut layouts = Vec::new();
    for i in 0..6 {
        let lay = t.join(&format!("lay{i}"));
        layout_from_tars(
            &lay,
            &[
                Layer::new().file("common", 0o644, b"same in all").finish(),
                Layer::new()
                    .file(&format!("f{i}"), 0o644, format!("{i}").as_bytes())
                    .finish(),
            ],
        );
        layouts.push(lay);
    }
    let handles: Vec<_> = layouts
        .iter()
        .enumerate()
        .map(|(i, lay)| {
            let store = store.clone();
            let src = format!("oci:{}:latest", lay.display());
            let bundle = t.join(&format!("b{i}"));
            std::thread::spawn(move || {
                let o = si(&store, &["import", &src, &format!("conc:{i}")]);
                ok(&o, "concurrent import");
                let o = si(
                    &store,
                    &[
                        "unpack",
                        &format!("conc:{i}"),
                        bundle.to_str().unwrap_or_default(),
                        "--mode",
                        "overlay",
                    ],
                );
                ok(&o, "concurrent unpack");
                assert_eq!(
                    std::fs::read_to_string(bundle.join(format!("rootfs/f{i}"))).expect("f"),
                    format!("{i}")
                );
                ok(
                    &si(&store, &["rm-bundle", bundle.to_str().unwrap_or_default()]),
                    "rm-bundle",
                );
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    let o = si(&store, &["images", "-q"]);
    ok(&o, "images");
    let names = String::from_utf8_lossy(&o.stdout);
    for i in 0..6 {
        assert!(
            names.contains(&format!("conc:{i}")),
            "lost concurrent tag {i}: {names}"
        );
    }
    assert_blobs_valid(&store);
    assert!(
        list_all(&store.join("tmp")).is_empty(),
        "temp files left in the store"
    );
}

#[test]
fn hostile_archives_are_refused() {
    if !conformance::is_root() {
        eprintln!("SKIP: needs root");
        return;
    }
    let t = TestDir::new("imgf-hostile");
    let store = t.join("store");
    ok(&si(&store, &["images"]), "init store");
    let state = store_state(&store);
    // An oci-archive trying to write outside the extraction dir.
    let evil = Layer::new()
        .file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)
        .raw(
            b"../../../../tmp/skiff-archive-pwned",
            tar::EntryType::Regular,
            None,
            b"x",
        )
        .finish();
    let f = t.join("evil-oci.tar");
    std::fs::write(&f, evil).expect("w");
    let o = si(
        &store,
        &["import", &format!("oci-archive:{}", f.display()), "evil"],
    );
    assert!(
        !o.status.success() && stderr(&o).contains(".."),
        "{}",
        stderr(&o)
    );
    assert!(!Path::new("/tmp/skiff-archive-pwned").exists());
    // A docker archive whose manifest points outside the archive.
    let evil = Layer::new()
        .file(
            "manifest.json",
            0o644,
            br#"[{"Config":"../../../etc/passwd","RepoTags":["x:y"],"Layers":[]}]"#,
        )
        .finish();
    let f = t.join("evil-docker.tar");
    std::fs::write(&f, evil).expect("w");
    let o = si(
        &store,
        &["import", &format!("docker-archive:{}", f.display())],
    );
    assert!(
        !o.status.success() && stderr(&o).contains(".."),
        "{}",
        stderr(&o)
    );
    // A docker archive whose manifest points at a symlink to the host.
    let evil = Layer::new()
        .symlink("cfg.json", "/etc/passwd")
        .file(
            "manifest.json",
            0o644,
            br#"[{"Config":"cfg.json","RepoTags":["x:y"],"Layers":[]}]"#,
        )
        .finish();
    let f = t.join("evil-docker2.tar");
    std::fs::write(&f, evil).expect("w");
    let o = si(
        &store,
        &["import", &format!("docker-archive:{}", f.display())],
    );
    assert!(
        !o.status.success() && stderr(&o).contains("not a regular file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(store_state(&store), state);
    assert!(
        list_all(&store.join("tmp")).is_empty(),
        "extraction dirs left in the store"
    );
}

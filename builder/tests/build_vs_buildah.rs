//! Differential tests: the same Dockerfiles built by skiff-build and by `buildah build` (from
//! the same locally made busybox base) must give the same root filesystem (paths, types,
//! modes, owners, sizes, contents, link targets) and the same config fields that matter.

#![allow(clippy::unwrap_used)]

mod common;

use common::Env;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

fn buildah() -> Option<PathBuf> {
    ["/usr/bin/buildah", "/usr/local/bin/buildah"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// path -> description (type, mode, owner, size, content hash or link target).
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let ft = m.file_type();
            let desc = if ft.is_symlink() {
                format!("link -> {}", std::fs::read_link(&p).unwrap().display())
            } else if ft.is_dir() {
                stack.push(p.clone());
                format!("dir {:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid())
            } else if ft.is_file() {
                let mut h = Sha256::new();
                h.update(std::fs::read(&p).unwrap());
                format!(
                    "file {:o} {}:{} {} {}",
                    m.mode() & 0o7777,
                    m.uid(),
                    m.gid(),
                    m.len(),
                    hex::encode(h.finalize())
                )
            } else {
                format!("other {:o}", m.mode())
            };
            out.insert(rel, desc);
        }
    }
    out
}

const FIELDS: &[&str] = &[
    "Env",
    "Cmd",
    "Entrypoint",
    "WorkingDir",
    "User",
    "ExposedPorts",
    "Volumes",
    "Labels",
];

fn fields(cfg: &serde_json::Value) -> BTreeMap<&'static str, serde_json::Value> {
    let c = &cfg["config"];
    FIELDS
        .iter()
        .map(|f| {
            let mut v = c.get(*f).cloned().unwrap_or(serde_json::Value::Null);
            // buildah stamps its version as a label; empty values count as absent.
            // Env order: BuildKit replaces a variable in place, buildah moves it to the end;
            // the environment is the same.
            if *f == "Env" {
                if let Some(a) = v.as_array_mut() {
                    a.sort_by_key(|x| x.to_string());
                }
            }
            if *f == "Labels" {
                if let Some(o) = v.as_object_mut() {
                    o.remove("io.buildah.version");
                }
            }
            let empty = v.is_null()
                || v.as_object().is_some_and(|o| o.is_empty())
                || v.as_array().is_some_and(|a| a.is_empty())
                || v.as_str().is_some_and(|s| s.is_empty());
            (*f, if empty { serde_json::Value::Null } else { v })
        })
        .collect()
}

/// Build `ctx` with both tools and compare.
fn compare(env: &Env, bh: &Path, name: &str, ctx: &Path, extra: &[&str]) {
    // skiff-build.
    let tag = format!("{name}:skiff");
    let mut args: Vec<&str> = vec!["-t", &tag];
    args.extend_from_slice(extra);
    args.push(ctx.to_str().unwrap());
    env.build_ok(&args);
    // buildah, from the same base exported as an OCI archive.
    let work = env.dir.path().join(format!("buildah-{name}"));
    std::fs::create_dir_all(&work).unwrap();
    let base = work.join("busybox.tar");
    let s = env.store();
    let img = s.image("busybox:latest").unwrap();
    skiff_image::export(&s, &img, &format!("oci-archive:{}", base.display())).unwrap();
    let bctx = work.join("ctx");
    let st = Command::new("cp")
        .arg("-a")
        .arg(ctx)
        .arg(&bctx)
        .status()
        .unwrap();
    assert!(st.success());
    let df = std::fs::read_to_string(bctx.join("Dockerfile")).unwrap();
    let df: String = df
        .lines()
        .map(|l| {
            if l.trim_start()
                .to_ascii_uppercase()
                .starts_with("FROM BUSYBOX")
            {
                l.replacen("busybox", &format!("oci-archive:{}", base.display()), 1)
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n";
    std::fs::write(bctx.join("Dockerfile"), df).unwrap();
    let root = work.join("root");
    let runroot = work.join("runroot");
    let common = |c: &mut Command| {
        c.arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .arg("--storage-driver")
            .arg("vfs");
    };
    let mut c = Command::new(bh);
    common(&mut c);
    c.args([
        "build",
        "--isolation",
        "chroot",
        "-t",
        &format!("localhost/{name}:bh"),
    ]);
    for e in extra {
        c.arg(e);
    }
    c.arg(&bctx);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "buildah build failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let layout = work.join("out");
    let mut c = Command::new(bh);
    common(&mut c);
    c.args([
        "push",
        &format!("localhost/{name}:bh"),
        &format!("oci:{}:bh", layout.display()),
    ]);
    let o = c.output().unwrap();
    assert!(
        o.status.success(),
        "buildah push failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    skiff_image::import(
        &s,
        &format!("oci:{}:bh", layout.display()),
        Some(&format!("{name}:buildah")),
        &Default::default(),
    )
    .unwrap();
    // Compare root filesystems.
    let ours = tree(&env.unpack(&tag, &format!("{name}-skiff")).join("rootfs"));
    let theirs = tree(
        &env.unpack(&format!("{name}:buildah"), &format!("{name}-buildah"))
            .join("rootfs"),
    );
    let mut diffs = Vec::new();
    for (k, v) in &ours {
        match theirs.get(k) {
            None => diffs.push(format!("only skiff-build: {k} ({v})")),
            Some(t) if t != v => diffs.push(format!("differs: {k}: skiff-build {v} / buildah {t}")),
            _ => {}
        }
    }
    for (k, v) in &theirs {
        // buildah leaves the empty mount points of the files it injects into RUN containers
        // (BuildKit does not, and neither do we): not a difference in what was built.
        let injected = [
            "etc/hostname",
            "etc/hosts",
            "etc/resolv.conf",
            "run/.containerenv",
        ]
        .contains(&k.as_str())
            && v.contains(" 0 e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        if !ours.contains_key(k) && !injected {
            diffs.push(format!("only buildah: {k} ({v})"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{name}: root filesystems differ:\n{}",
        diffs.join("\n")
    );
    // Compare config fields.
    let a = fields(&env.config(&tag));
    let b = fields(&env.config(&format!("{name}:buildah")));
    assert_eq!(a, b, "{name}: config fields differ");
    // Clean buildah's storage (vfs layers may hold immutable-looking dirs; plain removal works).
    let mut c = Command::new(bh);
    common(&mut c);
    let _ = c.args(["rmi", "--all", "--force"]).output();
}

#[test]
fn examples_match_buildah() {
    if let Some(why) = common::host_problem() {
        skip!("{why}");
    }
    let Some(bh) = buildah() else {
        skip!("buildah is not installed (dpkg -l buildah)");
    };
    let env = Env::new();
    let ex = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"));
    compare(&env, &bh, "hello", &ex.join("hello"), &[]);
    compare(
        &env,
        &bh,
        "multistage",
        &ex.join("multistage"),
        &["--build-arg", "GREETING=bonjour"],
    );
    let ctx = env.context("features", &[
        ("Dockerfile", concat!(
            "FROM busybox\n",
            "ARG WHO=builder\n",
            "ENV GREETING=\"hello there\" PATH=/usr/local/bin:$PATH\n",
            "LABEL maintainer.name=\"$WHO\" version=1.0\n",
            "WORKDIR /app\n",
            "COPY --chown=33:33 src/ ./src/\n",
            "COPY --chmod=755 run.sh /usr/local/bin/run\n",
            "COPY *.conf /etc/app/\n",
            "RUN mkdir -p /var/lib/app && echo \"$GREETING from $WHO\" > /var/lib/app/motd && rmdir /var/www && rm /bin/vi\n",
            "RUN ln -s /var/lib/app/motd /motd && chmod 4755 /usr/local/bin/run\n",
            "USER www-data\n",
            "VOLUME [\"/data\"]\n",
            "EXPOSE 8080 9090/udp\n",
            "ENTRYPOINT [\"/usr/local/bin/run\"]\n",
            "CMD [\"--serve\"]\n",
                "WORKDIR /srv/data\n",
        )),
        ("src/main.txt", "main\n"),
        ("src/lib/util.txt", "util\n"),
        ("run.sh", "#!/bin/sh\ncat /motd\n"),
        ("a.conf", "a=1\n"),
        ("b.conf", "b=2\n"),
    ]);
    compare(&env, &bh, "features", &ctx, &[]);
}

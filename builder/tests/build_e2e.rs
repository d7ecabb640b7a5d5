//! End-to-end builds with the real `skiff-build` binary, a private store and a real OCI
//! runtime (runc unless `SKIFF_BUILD_TEST_RUNTIME` names another, e.g. target/debug/skiff).

#![allow(clippy::unwrap_used)]

mod common;

use common::Env;
use std::path::Path;

fn examples() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples"))
}

macro_rules! need_host {
    () => {
        if let Some(why) = common::host_problem() {
            skip!("{why}");
        }
    };
}

#[test]
fn hello_example_builds_and_serves() {
    need_host!();
    let env = Env::new();
    let ctx = examples().join("hello");
    let (id, _) = env.build_ok(&["-t", "hello:test", ctx.to_str().unwrap()]);
    assert!(id.starts_with("sha256:"), "image id printed: {id}");
    let cfg = env.config("hello:test");
    let c = &cfg["config"];
    assert_eq!(
        c["Cmd"],
        serde_json::json!(["busybox", "httpd", "-f", "-v", "-p", "80", "-h", "/var/www"])
    );
    assert!(c["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "NAME=world"));
    assert_eq!(c["ExposedPorts"], serde_json::json!({"80/tcp": {}}));
    assert_eq!(c["WorkingDir"], "/var/www");
    // History: one entry per instruction, metadata ones marked empty_layer.
    let hist = cfg["history"].as_array().unwrap();
    let empty = hist.iter().filter(|h| h["empty_layer"] == true).count();
    let layers = cfg["rootfs"]["diff_ids"].as_array().unwrap().len();
    assert_eq!(hist.len() - empty, layers);
    assert_eq!(layers, 3, "base + COPY + RUN");
    // The rootfs has the page with the ENV substituted by the RUN.
    let b = env.unpack("hello:test", "hello-bundle");
    let page = std::fs::read_to_string(b.join("rootfs/var/www/index.html")).unwrap();
    assert!(page.contains("Hello, world!"), "{page}");
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/var/www/healthz")).unwrap(),
        "ok\n"
    );
    // And it runs: start httpd and fetch the page from inside the container.
    let cfgp = b.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfgp).unwrap()).unwrap();
    spec["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "busybox httpd -p 80 -h /var/www && sleep 0.3 && wget -qO- http://127.0.0.1:80/"
    ]);
    std::fs::write(&cfgp, serde_json::to_vec(&spec).unwrap()).unwrap();
    let id = format!("sb-hello-{}", std::process::id());
    let out = std::process::Command::new(&env.runtime)
        .arg("--root")
        .arg(&env.runtime_root)
        .args(["run", "--bundle"])
        .arg(&b)
        .arg(&id)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = std::process::Command::new(&env.runtime)
        .arg("--root")
        .arg(&env.runtime_root)
        .args(["delete", "-f", &id])
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Hello, world!"));
    env.assert_clean();
}

fn count(s: &str, needle: &str) -> usize {
    s.matches(needle).count()
}

#[test]
fn cache_hit_miss_and_only_downstream() {
    need_host!();
    let env = Env::new();
    let ctx = env.context("cachectx", &[
        ("Dockerfile", "FROM busybox\nRUN echo one > /one\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy-of-a\nCOPY b.txt /b.txt\n"),
        ("a.txt", "A1\n"),
        ("b.txt", "B1\n"),
    ]);
    let c = ctx.to_str().unwrap();
    let (id1, err1) = env.build_ok(&["-t", "c:1", c]);
    assert_eq!(count(&err1, "CACHED"), 0, "{err1}");
    // Hit: nothing changes, every filesystem step is cached.
    let (_, err2) = env.build_ok(&["-t", "c:2", c]);
    assert_eq!(count(&err2, "CACHED"), 4, "{err2}");
    // Miss after change: a.txt changes -> its COPY and everything after rebuild, RUN one stays.
    std::fs::write(ctx.join("a.txt"), "A2\n").unwrap();
    let (id3, err3) = env.build_ok(&["-t", "c:3", c]);
    assert_eq!(count(&err3, "CACHED"), 1, "{err3}");
    let after_run_one = err3.split("RUN echo one > /one").nth(1).unwrap();
    assert!(
        after_run_one.trim_start().starts_with("---> CACHED"),
        "{err3}"
    );
    assert_ne!(id1, id3);
    let b = env.unpack("c:3", "c3");
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/copy-of-a")).unwrap(),
        "A2\n"
    );
    // Metadata (mtime only) changes do not invalidate.
    let f = std::fs::File::options()
        .write(true)
        .open(ctx.join("b.txt"))
        .unwrap();
    f.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000))
        .unwrap();
    let (_, err4) = env.build_ok(&["-t", "c:4", c]);
    assert_eq!(count(&err4, "CACHED"), 4, "{err4}");
    // Mode changes do.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(ctx.join("b.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, err5) = env.build_ok(&["-t", "c:5", c]);
    assert_eq!(count(&err5, "CACHED"), 3, "{err5}");
    // --no-cache rebuilds everything.
    let (_, err6) = env.build_ok(&["--no-cache", "-t", "c:6", c]);
    assert_eq!(count(&err6, "CACHED"), 0, "{err6}");
    // A build arg used by RUN (as env) invalidates that RUN only when its value changes.
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nRUN echo one > /one\nARG V=1\nCOPY b.txt /b2.txt\nRUN echo $V > /v\n",
    )
    .unwrap();
    env.build_ok(&["-t", "c:7", c]);
    let (_, e8) = env.build_ok(&["-t", "c:8", c]);
    assert_eq!(count(&e8, "CACHED"), 3, "{e8}");
    // The COPY after the ARG does not use it and stays cached; the RUN misses.
    let (_, e9) = env.build_ok(&["--build-arg", "V=2", "-t", "c:9", c]);
    assert_eq!(count(&e9, "CACHED"), 2, "{e9}");
    assert!(
        e9.split("RUN echo $V")
            .nth(1)
            .is_some_and(|t| !t.contains("CACHED")),
        "{e9}"
    );
    env.assert_clean();
}

#[test]
fn source_date_epoch_gives_identical_images() {
    need_host!();
    let env = Env::new();
    let ctx = env.context(
        "sde",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY f /f\nRUN date > /built && touch /x\nENV A=b\nCMD [\"sh\"]\n",
            ),
            ("f", "content\n"),
        ],
    );
    let c = ctx.to_str().unwrap();
    let run = |tag: &str| {
        let o = env.build_env(
            &["--no-cache", "-t", tag, c],
            &[("SOURCE_DATE_EPOCH", "1700000000")],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let a = run("sde:a");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = run("sde:b");
    // `date` output differs between runs... so only the metadata/timestamps are pinned;
    // use a deterministic RUN to compare whole images.
    let _ = (a, b);
    std::fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY f /f\nRUN echo fixed > /built && touch /x && mkdir -p /d/e\nENV A=b\nCMD [\"sh\"]\n").unwrap();
    let a = run("sde:c");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let b = run("sde:d");
    assert_eq!(
        a, b,
        "two --no-cache builds with SOURCE_DATE_EPOCH must give the same image id"
    );
    let cfg = env.config("sde:c");
    assert_eq!(cfg["created"], "2023-11-14T22:13:20Z");
    env.assert_clean();
}

#[test]
fn failed_run_reports_and_leaves_nothing() {
    need_host!();
    let env = Env::new();
    let ctx = env.context(
        "fail",
        &[(
            "Dockerfile",
            "FROM busybox\nRUN echo before-failing && echo to-stderr >&2 && exit 7\n",
        )],
    );
    let o = env.build(&["-t", "fail:x", ctx.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("exit code 7"), "{err}");
    assert!(
        err.contains("before-failing") && err.contains("to-stderr"),
        "{err}"
    );
    assert!(
        env.store().image("fail:x").is_err(),
        "no image may be tagged"
    );
    env.assert_clean();
}

#[test]
fn multistage_builds_only_what_the_target_needs() {
    need_host!();
    let env = Env::new();
    let ctx = examples().join("multistage");
    let (_, err) = env.build_ok(&["-t", "ms:1", ctx.to_str().unwrap()]);
    assert!(
        !err.contains("this stage is not needed"),
        "unused stage ran:\n{err}"
    );
    let b = env.unpack("ms:1", "ms1");
    let mut names: Vec<String> = std::fs::read_dir(b.join("rootfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["bin", "greeting.txt"]);
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/greeting.txt")).unwrap(),
        "hello from a multi-stage skiff build\n"
    );
    let cfg = env.config("ms:1");
    assert_eq!(
        cfg["config"]["Entrypoint"],
        serde_json::json!(["/bin/busybox"])
    );
    assert_eq!(
        cfg["config"]["Labels"]["org.opencontainers.image.title"],
        "multistage example"
    );
    // --build-arg reaches the global ARG re-declared in the stage.
    env.build_ok(&[
        "--build-arg",
        "GREETING=hi",
        "-t",
        "ms:2",
        ctx.to_str().unwrap(),
    ]);
    let b2 = env.unpack("ms:2", "ms2");
    assert_eq!(
        std::fs::read_to_string(b2.join("rootfs/greeting.txt")).unwrap(),
        "hi from a multi-stage skiff build\n"
    );
    // --target picks an intermediate stage.
    env.build_ok(&["--target", "build", "-t", "ms:build", ctx.to_str().unwrap()]);
    assert_eq!(env.config("ms:build")["config"]["WorkingDir"], "/src");
    // An unknown target is an error naming the stages.
    let o = env.build(&["--target", "nope", ctx.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope"));
    env.assert_clean();
}

#[test]
fn copy_add_rules() {
    need_host!();
    let env = Env::new();
    // A tarball for ADD auto-extraction.
    let tarp = env.dir.path().join("payload.tar.gz");
    {
        let f = std::fs::File::create(&tarp).unwrap();
        let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
        let mut t = tar::Builder::new(gz);
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o640);
        h.set_cksum();
        t.append_data(&mut h, "inner/file.txt", &b"tar\n"[..])
            .unwrap();
        t.into_inner().unwrap().finish().unwrap();
    }
    let ctx = env.context(
        "copyctx",
        &[
            (
                "Dockerfile",
                concat!(
                    "FROM busybox\n",
                    "COPY *.txt /globbed/\n",
                    "COPY dir /into-dir\n",
                    "COPY dir/ /trailing/\n",
                    "COPY one.txt /renamed\n",
                    "COPY --chown=33:33 --chmod=600 one.txt /owned/\n",
                    "COPY --chown=www-data one.txt /named-owner\n",
                    "WORKDIR /work\n",
                    "COPY one.txt rel/\n",
                    "ADD payload.tar.gz /extracted/\n",
                    "ADD --unpack=false payload.tar.gz /kept/\n",
                    "COPY <<EOF /heredoc.txt\n",
                    "value=$V\n",
                    "EOF\n",
                    "COPY . /all/\n",
                    "COPY --parents dir/sub/deep.txt one.txt /parents/\n",
                ),
            ),
            ("one.txt", "1\n"),
            ("two.txt", "2\n"),
            ("dir/sub/deep.txt", "deep\n"),
            ("dir/top.txt", "top\n"),
            ("secret.key", "do not copy\n"),
            ("logs/a.log", "log\n"),
            ("logs/keep.log", "keep\n"),
            ("nested/x/y/z.log", "zlog\n"),
            ("private/hidden.txt", "hidden\n"),
            ("private/public.txt", "public\n"),
            (
                ".dockerignore",
                "secret.key\n**/*.log\n!logs/keep.log\nprivate\n!private/public.txt\n",
            ),
        ],
    );
    std::fs::copy(&tarp, ctx.join("payload.tar.gz")).unwrap();
    let _ = std::fs::write(
        ctx.join("Dockerfile"),
        std::fs::read_to_string(ctx.join("Dockerfile"))
            .unwrap()
            .replace("FROM busybox\n", "FROM busybox\nARG V=expanded\n"),
    );
    env.build_ok(&["-t", "cp:1", ctx.to_str().unwrap()]);
    let b = env.unpack("cp:1", "cp1");
    let r = b.join("rootfs");
    let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("globbed/one.txt"), "1\n");
    assert_eq!(read("globbed/two.txt"), "2\n");
    assert_eq!(read("into-dir/top.txt"), "top\n");
    assert_eq!(read("into-dir/sub/deep.txt"), "deep\n");
    assert_eq!(read("trailing/top.txt"), "top\n");
    assert_eq!(read("renamed"), "1\n");
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(r.join("owned/one.txt")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (33, 33, 0o600));
    let m = std::fs::metadata(r.join("named-owner")).unwrap();
    assert_eq!(m.uid(), 33);
    let m = std::fs::metadata(r.join("renamed")).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (0, 0),
        "context files are owned by root"
    );
    assert_eq!(read("work/rel/one.txt"), "1\n");
    assert_eq!(read("extracted/inner/file.txt"), "tar\n");
    assert!(r.join("kept/payload.tar.gz").is_file());
    assert_eq!(read("heredoc.txt"), "value=expanded\n");
    // .dockerignore: excluded files are not in the context, exceptions are.
    assert!(!r.join("all/secret.key").exists());
    assert!(!r.join("all/logs/a.log").exists());
    assert!(!r.join("all/nested/x/y/z.log").exists());
    assert_eq!(read("all/logs/keep.log"), "keep\n");
    assert_eq!(read("all/private/public.txt"), "public\n");
    assert!(!r.join("all/private/hidden.txt").exists());
    assert_eq!(read("all/one.txt"), "1\n");
    assert_eq!(read("parents/dir/sub/deep.txt"), "deep\n");
    assert_eq!(read("parents/one.txt"), "1\n");
    env.assert_clean();
}

#[test]
fn copy_errors() {
    need_host!();
    let env = Env::new();
    for (df, want) in [
        (
            "FROM busybox\nCOPY ../outside /x\n",
            "outside the build context",
        ),
        ("FROM busybox\nCOPY missing.txt /x\n", "not found"),
        ("FROM busybox\nCOPY secret.key /x\n", "not found"),
        (
            "FROM busybox\nCOPY a.txt b.txt /notadir\n",
            "must be a directory",
        ),
        ("FROM nosuchimage\n", "not found"),
        (
            "FROM busybox\nCOPY --chown=nosuchuser a.txt /x\n",
            "nosuchuser",
        ),
    ] {
        let ctx = env.context(
            "errctx",
            &[
                ("Dockerfile", df),
                ("a.txt", "a"),
                ("b.txt", "b"),
                ("secret.key", "s"),
                (".dockerignore", "secret.key\n"),
            ],
        );
        let o = env.build(&[ctx.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{df} should fail");
        assert!(err.contains(want), "{df}: expected '{want}' in:\n{err}");
    }
    env.assert_clean();
}

#[test]
fn run_mounts_secrets_and_network_none() {
    need_host!();
    let env = Env::new();
    let secret = env.dir.path().join("token");
    std::fs::write(&secret, "s3cr3t\n").unwrap();
    let ctx = env.context("mounts", &[
        ("Dockerfile", concat!(
            "FROM busybox\n",
            "RUN --mount=type=cache,target=/cache sh -c 'echo x >> /cache/count; wc -l < /cache/count > /count'\n",
            "RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /secret-len\n",
            "RUN --mount=type=secret,id=token,mode=0440,uid=7,gid=9 stat -c '%a %u %g' /run/secrets/token > /secret-meta\n",
            "RUN --mount=type=cache,id=owned,target=/owned,mode=0750,uid=5,gid=6 stat -c '%a %u %g' /owned > /cache-meta\n",
            "RUN --mount=type=bind,source=data,target=/data cp /data/in.txt /copied.txt\n",
            "RUN --network=none sh -c 'ls /sys/class/net > /ifaces'\n",
        )),
        ("data/in.txt", "bound\n"),
    ]);
    let secret_arg = format!("id=token,src={}", secret.display());
    env.build_ok(&["--secret", &secret_arg, "-t", "m:1", ctx.to_str().unwrap()]);
    let b = env.unpack("m:1", "m1");
    let r = b.join("rootfs");
    assert_eq!(
        std::fs::read_to_string(r.join("count")).unwrap().trim(),
        "1"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("secret-len"))
            .unwrap()
            .trim(),
        "7"
    );
    // A mount's mode/uid/gid reach the staged secret file and the new cache dir.
    assert_eq!(
        std::fs::read_to_string(r.join("secret-meta"))
            .unwrap()
            .trim(),
        "440 7 9"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("cache-meta"))
            .unwrap()
            .trim(),
        "750 5 6"
    );
    assert!(
        !r.join("run/secrets/token").exists(),
        "secret mount point must not be committed"
    );
    assert!(
        !r.join("run/secrets").exists(),
        "secret mount point dir must not be committed"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("copied.txt")).unwrap(),
        "bound\n"
    );
    assert!(
        !r.join("data").exists(),
        "bind mount point must not be committed"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("ifaces")).unwrap().trim(),
        "lo"
    );
    // The secret never lands in any layer blob.
    let s = env.store();
    let img = s.image("m:1").unwrap();
    for (digest, _, _) in img.layers() {
        let blob = s.read_blob(&digest).unwrap();
        let mut gz = flate2::read::GzDecoder::new(&blob[..]);
        let mut raw = Vec::new();
        let _ = std::io::Read::read_to_end(&mut gz, &mut raw);
        assert!(
            !raw.windows(6).any(|w| w == b"s3cr3t"),
            "secret found in layer {digest}"
        );
    }
    // The cache mount persists (but does not invalidate the step): --no-cache sees it.
    env.build_ok(&[
        "--no-cache",
        "--secret",
        &secret_arg,
        "-t",
        "m:2",
        ctx.to_str().unwrap(),
    ]);
    let b2 = env.unpack("m:2", "m2");
    assert_eq!(
        std::fs::read_to_string(b2.join("rootfs/count"))
            .unwrap()
            .trim(),
        "2"
    );
    env.assert_clean();
}

#[test]
fn onbuild_triggers_run_in_the_child() {
    need_host!();
    let env = Env::new();
    let parent = env.context(
        "parent",
        &[(
            "Dockerfile",
            "FROM busybox\nONBUILD RUN echo triggered > /trigger\nONBUILD COPY marker /marker\n",
        )],
    );
    env.build_ok(&["-t", "onb:parent", parent.to_str().unwrap()]);
    assert_eq!(
        env.config("onb:parent")["config"]["OnBuild"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let child = env.context(
        "child",
        &[
            (
                "Dockerfile",
                "FROM onb:parent\nRUN cat /trigger /marker > /both\n",
            ),
            ("marker", "m\n"),
        ],
    );
    env.build_ok(&["-t", "onb:child", child.to_str().unwrap()]);
    let b = env.unpack("onb:child", "onb");
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/both")).unwrap(),
        "triggered\nm\n"
    );
    assert!(
        env.config("onb:child")["config"].get("OnBuild").is_none(),
        "triggers are not inherited by grandchildren"
    );
    env.assert_clean();
}

#[test]
fn outputs_iidfile_labels_and_metadata() {
    need_host!();
    let env = Env::new();
    let ctx = env.context(
        "meta",
        &[(
            "Dockerfile",
            concat!(
                "FROM busybox\n",
                "LABEL a=1 \"b c\"=\"d e\"\n",
                "USER nobody\n",
                "VOLUME /data /logs\n",
                "EXPOSE 53/udp 8000-8001\n",
                "STOPSIGNAL SIGINT\n",
                "ENTRYPOINT [\"sh\"]\n",
                "HEALTHCHECK --interval=5s CMD true\n",
                "SHELL [\"/bin/sh\", \"-ec\"]\n",
                "CMD echo hi\n",
            ),
        )],
    );
    let oci = env.dir.path().join("out.oci.tar");
    let docker = env.dir.path().join("out.docker.tar");
    let iid = env.dir.path().join("iid");
    let (id, _) = env.build_ok(&[
        "-t",
        "meta:1",
        "-t",
        "meta:2",
        "--label",
        "from-cli=yes",
        "--output",
        &format!("type=oci,dest={}", oci.display()),
        "--output",
        &format!("type=docker,dest={}", docker.display()),
        "--iidfile",
        iid.to_str().unwrap(),
        ctx.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&iid).unwrap(), id);
    assert!(oci.metadata().unwrap().len() > 1024 && docker.metadata().unwrap().len() > 1024);
    let c = env.config("meta:2");
    let cc = &c["config"];
    assert_eq!(
        cc["Labels"],
        serde_json::json!({"a": "1", "b c": "d e", "from-cli": "yes"})
    );
    assert_eq!(cc["User"], "nobody");
    assert_eq!(cc["Volumes"], serde_json::json!({"/data": {}, "/logs": {}}));
    assert_eq!(
        cc["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8000/tcp": {}, "8001/tcp": {}})
    );
    assert_eq!(cc["StopSignal"], "SIGINT");
    assert_eq!(cc["Entrypoint"], serde_json::json!(["sh"]));
    assert_eq!(cc["Cmd"], serde_json::json!(["/bin/sh", "-ec", "echo hi"]));
    assert_eq!(
        cc["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "true"])
    );
    // -q prints only the id.
    let o = env.build(&["-q", ctx.to_str().unwrap()]);
    assert!(o.status.success());
    let q = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        q.starts_with("sha256:") && q.lines().count() == 1,
        "-q output: {q:?}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).trim().is_empty(),
        "-q prints nothing on stderr"
    );
    env.assert_clean();
}

#[test]
fn add_from_http_on_localhost() {
    need_host!();
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        // Serve at most 4 requests, then stop.
        for _ in 0..4 {
            let Ok((mut s, _)) = listener.accept() else {
                return;
            };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 65536 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let req = String::from_utf8_lossy(&req).to_string();
            if req.starts_with("GET /stop") {
                return;
            }
            let body = "downloaded\n";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    });
    let env = Env::new();
    let ctx = env.context("http", &[("Dockerfile", &format!("FROM busybox\nADD http://127.0.0.1:{port}/files/remote.txt /dl/\nADD http://127.0.0.1:{port}/x /named\n"))]);
    env.build_ok(&["-t", "http:1", ctx.to_str().unwrap()]);
    let _ = std::net::TcpStream::connect(("127.0.0.1", port))
        .and_then(|mut s| s.write_all(b"GET /stop HTTP/1.1\r\n\r\n"));
    let _ = server.join();
    let b = env.unpack("http:1", "http1");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::read_to_string(b.join("rootfs/dl/remote.txt")).unwrap(),
        "downloaded\n"
    );
    assert_eq!(
        std::fs::metadata(b.join("rootfs/named")).unwrap().mode() & 0o777,
        0o600
    );
    env.assert_clean();
}

#[test]
fn killed_build_is_cleaned_up_by_the_next() {
    need_host!();
    let env = Env::new();
    let ctx = env.context("killed", &[("Dockerfile", "FROM busybox\nRUN sleep 60\n")]);
    let mut child = env
        .command()
        .arg(&ctx)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) until the RUN container exists, then kill the builder outright.
    let mut started = false;
    for _ in 0..200 {
        if std::fs::read_dir(&env.runtime_root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            started = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    assert!(started, "the RUN container never started");
    // The next build (any Dockerfile) removes the dead build's container, mount and bundle.
    let ok = env.context("after", &[("Dockerfile", "FROM busybox\nENV A=1\n")]);
    env.build_ok(&[ok.to_str().unwrap()]);
    let left: Vec<_> = std::fs::read_dir(&env.runtime_root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "runtime state left: {left:?}");
    env.assert_clean();
}

#[test]
fn run_heredocs() {
    need_host!();
    let env = Env::new();
    let ctx = env.context(
        "heredocs",
        &[(
            "Dockerfile",
            concat!(
                "FROM busybox\n",
                "ENV WHO=env\n",
                "RUN <<EOT\n",
                "  echo first > /h1\n",
                "  echo \"$WHO\" >> /h1\n",
                "EOT\n",
                "RUN <<EOT\n",
                "#!/bin/sh\n",
                "echo \"script $0\" > /h2\n",
                "EOT\n",
                "RUN <<FILE1 cat > /f1 && <<FILE2 cat > /f2\n",
                "I am\n",
                "first\n",
                "FILE1\n",
                "I am\n",
                "second\n",
                "FILE2\n",
                "RUN <<-'EOF' sh\n",
                "\techo '$WHO' literal > /h3\n",
                "\tEOF\n",
            ),
        )],
    );
    env.build_ok(&["-t", "hd:1", ctx.to_str().unwrap()]);
    let b = env.unpack("hd:1", "hd");
    let r = b.join("rootfs");
    let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap();
    assert_eq!(read("h1"), "first\nenv\n");
    assert!(
        read("h2").starts_with("script /dev/pipes/EOT"),
        "{}",
        read("h2")
    );
    assert_eq!(read("f1"), "I am\nfirst\n");
    assert_eq!(read("f2"), "I am\nsecond\n");
    assert_eq!(read("h3"), "$WHO literal\n");
    assert!(!r.join("dev/pipes").exists());
    env.assert_clean();
}

#[test]
fn sigterm_stops_the_build_and_cleans_up() {
    need_host!();
    let env = Env::new();
    let ctx = env.context("term", &[("Dockerfile", "FROM busybox\nRUN sleep 60\n")]);
    let mut child = env
        .command()
        .arg("-t")
        .arg("term:x")
        .arg(&ctx)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut started = false;
    for _ in 0..200 {
        if std::fs::read_dir(&env.runtime_root)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false)
        {
            started = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // SAFETY: plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    // Bounded wait for it to finish on its own.
    let mut status = None;
    for _ in 0..300 {
        if let Some(s) = child.try_wait().unwrap() {
            status = Some(s);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        // A later build removes what the killed one left (container, mount, bundle).
        let ok = env.context("cleanup", &[("Dockerfile", "FROM busybox\nENV A=1\n")]);
        let _ = env.build(&[ok.to_str().unwrap()]);
    }
    assert!(started, "the RUN container never started");
    let status = status.expect("skiff-build did not stop within 30 s of SIGTERM");
    assert_eq!(status.code(), Some(130));
    assert!(env.store().image("term:x").is_err());
    let left: Vec<_> = std::fs::read_dir(&env.runtime_root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "runtime state left: {left:?}");
    env.assert_clean();
}

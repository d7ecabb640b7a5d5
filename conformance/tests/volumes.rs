//! Volumes and resource limits on `skiff-image unpack` (issue 8, steps 6 and 7): bind, anonymous
//! and named volumes run with skiff, writes land on the host and survive the container, new store
//! volumes get the image's content copied in, commits leave volume contents out, `rm-bundle
//! --volumes` removes anonymous volumes only, `volume ls/create/inspect/rm`, bad input, and the
//! `--cpu-*`/`--memory`/`--pids-limit` values reaching the container's cgroup.

mod image_support;

use image_support::*;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

macro_rules! need_root {
    () => {
        if !conformance::is_root() {
            eprintln!("SKIP: needs root");
            return;
        }
    };
}

/// A test's private store and skiff state root (inside a [`TestDir`] that unmounts and deletes
/// everything on drop); containers left in the root are force-deleted first.
struct Env {
    t: TestDir,
    skiff: PathBuf,
}

impl Env {
    /// None (after printing SKIP) when the host lacks root, busybox or the skiff binary.
    fn new(prefix: &str) -> Option<Env> {
        if !conformance::is_root() {
            eprintln!("SKIP: needs root");
            return None;
        }
        let Ok(skiff) = conformance::bins::skiff() else {
            eprintln!("SKIP: skiff runtime binary not built (cargo build -p skiff)");
            return None;
        };
        let t = TestDir::new(prefix);
        let env = Env { t, skiff };
        if !env.make_image() {
            eprintln!("SKIP: /bin/busybox missing");
            return None;
        }
        Some(env)
    }
    fn store(&self) -> PathBuf {
        self.t.join("store")
    }
    fn si(&self, args: &[&str]) -> Output {
        si(&self.store(), args)
    }
    /// busybox + a layer with /data (owner 33:33, mode 0777, data/sub/f) and /imgvol/seed; the
    /// config declares `VOLUME /imgvol`. Imported as `bbvol:1`.
    fn make_image(&self) -> bool {
        let Some(bb) = busybox_tar(&self.t.path) else {
            return false;
        };
        let base = std::fs::read(bb).expect("busybox tar");
        let data = Layer::new()
            .dir_owned("data", 0o777, 33, 33)
            .dir("data/sub", 0o755)
            .file("data/sub/f", 0o644, b"from-image\n")
            .dir("imgvol", 0o755)
            .file("imgvol/seed", 0o644, b"seeded\n")
            .finish();
        let ls: Vec<(Vec<u8>, &str, String)> = [base, data]
            .into_iter()
            .map(|t| {
                let d = format!("sha256:{}", sha256_hex(&t));
                (t, "application/vnd.oci.image.layer.v1.tar", d)
            })
            .collect();
        let layout = self.t.join("layout");
        make_layout(
            &layout,
            &ls,
            serde_json::json!({"Volumes": {"/imgvol": {}}}),
        );
        ok(
            &self.si(&["import", &format!("oci:{}", layout.display()), "bbvol:1"]),
            "import test image",
        );
        true
    }
    fn unpack(&self, bundle: &Path, extra: &[&str], script: &str) {
        self.unpack_image("bbvol:1", bundle, extra, script)
    }
    fn unpack_image(&self, image: &str, bundle: &Path, extra: &[&str], script: &str) {
        let b = bundle.to_str().expect("utf8 path");
        let mut args = vec!["unpack", image, b];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--cmd", "sh", "-c", script]);
        ok(&self.si(&args), &format!("unpack {extra:?}"));
    }
    /// `skiff run` in the foreground; the guard deletes the container even if asserts fail.
    fn run(&self, bundle: &Path) -> Output {
        let g = Ctr {
            skiff: self.skiff.clone(),
            root: self.t.join("skiff-root"),
            id: conformance::unique_name("vol"),
        };
        let o = Command::new(&g.skiff)
            .arg("--root")
            .arg(&g.root)
            .args(["run", &g.id])
            .current_dir(bundle)
            .output()
            .expect("skiff run");
        ok(&o, "skiff run");
        o
    }
    fn meta(&self, bundle: &Path) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(bundle.join("skiff-image.json")).expect("meta"))
            .expect("meta json")
    }
    fn volume_names(&self) -> Vec<String> {
        let o = self.si(&["volume", "ls", "-q"]);
        ok(&o, "volume ls -q");
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Deletes a container on drop.
struct Ctr {
    skiff: PathBuf,
    root: PathBuf,
    id: String,
}

impl Drop for Ctr {
    fn drop(&mut self) {
        let _ = Command::new(&self.skiff)
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "-f", &self.id])
            .output();
    }
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Host directory of the volume mounted at `dest`, from the bundle metadata.
fn source_of(meta: &serde_json::Value, dest: &str) -> (String, PathBuf) {
    let m = meta["volume_mounts"]
        .as_array()
        .and_then(|a| a.iter().find(|m| m["destination"] == dest))
        .unwrap_or_else(|| panic!("no volume mount for {dest} in {meta}"));
    (
        m["kind"].as_str().unwrap_or_default().to_string(),
        PathBuf::from(m["source"].as_str().unwrap_or_default()),
    )
}

/// Paths in the last layer of `image` (leading `./` and trailing `/` trimmed).
fn last_layer_paths(store: &Path, image: &str) -> Vec<String> {
    let o = si(store, &["inspect", image]);
    ok(&o, "inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect json");
    let layers = v["Manifest"]["layers"].as_array().expect("layers");
    let d = layers
        .last()
        .and_then(|l| l["digest"].as_str())
        .expect("digest");
    let blob = store
        .join("blobs/sha256")
        .join(d.trim_start_matches("sha256:"));
    let o = Command::new("tar")
        .arg("-tf")
        .arg(&blob)
        .output()
        .expect("tar -t");
    ok(&o, "tar -t layer");
    out(&o)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect()
}

const SCRIPT: &str = "echo bind > /test/b && echo anon > /anon/a && echo named > /data/n \
    && cat /data/sub/f && cat /imgvol/seed && stat -c 'own=%u:%g:%a' /data && echo done";

fn modes() -> Vec<&'static str> {
    let overlay = std::fs::read_to_string("/proc/filesystems")
        .map(|s| s.contains("\toverlay"))
        .unwrap_or(false);
    if overlay {
        vec!["overlay", "copy"]
    } else {
        eprintln!("SKIP (overlay mode): kernel has no overlayfs");
        vec!["copy"]
    }
}

#[test]
fn bind_anonymous_and_named_volumes_run_survive_and_stay_out_of_commits() {
    let Some(env) = Env::new("vols-e2e") else {
        return;
    };
    for mode in modes() {
        let host = env.t.join(&format!("host-{mode}"));
        std::fs::create_dir_all(&host).expect("host dir");
        let b = env.t.join(&format!("b-{mode}"));
        let named = format!("named-{mode}");
        let bind = format!("{}:/test", host.display());
        let nv = format!("{named}:/data");
        env.unpack(
            &b,
            &["--mode", mode, "-v", &bind, "-v", "/anon", "-v", &nv],
            SCRIPT,
        );
        let o = env.run(&b);
        let stdout = out(&o);
        // The named volume was seeded from the image's /data (content, owner and mode).
        assert!(
            stdout.contains("from-image") && stdout.contains("seeded"),
            "{mode}: {stdout}"
        );
        assert!(stdout.contains("own=33:33:777"), "{mode}: {stdout}");
        assert!(stdout.contains("done"), "{mode}: {stdout}");
        // Writes are on the host, after the container is gone.
        let meta = env.meta(&b);
        assert_eq!(
            std::fs::read_to_string(host.join("b")).expect("bind write"),
            "bind\n"
        );
        let (kind, anon) = source_of(&meta, "/anon");
        assert_eq!(kind, "anonymous");
        assert!(
            anon.starts_with(env.store().join("volumes")) && anon.ends_with("_data"),
            "{anon:?}"
        );
        assert_eq!(
            std::fs::read_to_string(anon.join("a")).expect("anon"),
            "anon\n"
        );
        let (kind, nsrc) = source_of(&meta, "/data");
        assert_eq!(kind, "named");
        assert_eq!(nsrc, env.store().join("volumes").join(&named).join("_data"));
        assert_eq!(
            std::fs::read_to_string(nsrc.join("n")).expect("named"),
            "named\n"
        );
        assert_eq!(
            std::fs::read_to_string(nsrc.join("sub/f")).expect("copied"),
            "from-image\n"
        );
        let md = std::fs::metadata(&nsrc).expect("named md");
        assert_eq!((md.uid(), md.gid(), md.mode() & 0o7777), (33, 33, 0o777));
        let (kind, imgvol) = source_of(&meta, "/imgvol");
        assert_eq!(
            kind, "anonymous",
            "image VOLUME is an anonymous store volume"
        );
        assert!(imgvol.join("seed").exists());
        // volume ls shows both kinds.
        let o = env.si(&["volume", "ls"]);
        ok(&o, "volume ls");
        let ls = out(&o);
        assert!(
            ls.contains(&named) && ls.contains("anonymous") && ls.contains("named"),
            "{ls}"
        );
        // Commit: no file from any volume in the new layer; mount points at most empty dirs.
        let img = format!("committed-{mode}:1");
        ok(
            &env.si(&["commit", b.to_str().unwrap_or_default(), &img]),
            "commit",
        );
        let paths = last_layer_paths(&env.store(), &img);
        for p in &paths {
            for v in ["test", "anon", "data", "imgvol"] {
                assert!(
                    !p.starts_with(&format!("{v}/")),
                    "{mode}: committed layer holds volume content {p}: {paths:?}"
                );
            }
        }
        // The committed image runs: /test and /anon are empty dirs, /data is the image's.
        let before = env.volume_names();
        let b2 = env.t.join(&format!("b2-{mode}"));
        env.unpack_image(
            &img,
            &b2,
            &["--mode", mode],
            "echo T=$(ls -A /test) A=$(ls -A /anon) D=$(ls -A /data)",
        );
        assert_eq!(out(&env.run(&b2)), "T= A= D=sub\n", "{mode}");
        let b3 = env.t.join(&format!("b3-{mode}"));
        env.unpack_image(&img, &b3, &["--mode", "copy"], "true");
        let r3 = b3.join("rootfs");
        assert!(r3.join("data/sub/f").exists(), "image content kept");
        assert!(!r3.join("data/n").exists(), "volume write committed");
        for d in ["test", "anon"] {
            let l = list_all(&r3.join(d));
            assert!(
                r3.join(d).is_dir() && l.is_empty(),
                "{mode}: /{d} in the committed image: {l:?}"
            );
        }
        // A named volume in use cannot be removed.
        let o = env.si(&["volume", "rm", &named]);
        assert!(
            !o.status.success() && stderr(&o).contains("in use"),
            "volume rm of a used volume: {}",
            stderr(&o)
        );
        // rm-bundle keeps volumes; rm-bundle --volumes removes anonymous ones only.
        for x in ["b2", "b3"] {
            ok(
                &env.si(&[
                    "rm-bundle",
                    "--volumes",
                    env.t
                        .join(&format!("{x}-{mode}"))
                        .to_str()
                        .unwrap_or_default(),
                ]),
                "rm-bundle --volumes (committed image bundles)",
            );
        }
        assert_eq!(env.volume_names(), before, "other bundles' volumes kept");
        ok(
            &env.si(&["rm-bundle", "--volumes", b.to_str().unwrap_or_default()]),
            "rm-bundle --volumes",
        );
        assert!(!b.exists());
        assert!(
            !anon.exists() && !imgvol.exists(),
            "anonymous volumes removed"
        );
        assert_eq!(env.volume_names(), vec![named.clone()], "named volume kept");
        assert_eq!(
            std::fs::read_to_string(host.join("b")).expect("bind"),
            "bind\n"
        );
        // A reused named volume is not re-seeded and keeps the earlier writes.
        let b4 = env.t.join(&format!("b4-{mode}"));
        env.unpack(&b4, &["--mode", mode, "-v", &nv], "cat /data/n");
        let o = env.run(&b4);
        assert_eq!(out(&o), "named\n");
        ok(
            &env.si(&["rm-bundle", b4.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
        // The anonymous /imgvol volume of b4 stays after a plain rm-bundle.
        assert_eq!(env.volume_names().len(), 2, "{:?}", env.volume_names());
        let o = env.si(&["volume", "rm", &named]);
        ok(&o, "volume rm");
        assert!(!nsrc.exists());
        for n in env.volume_names() {
            ok(&env.si(&["volume", "rm", &n]), "volume rm anonymous");
        }
        assert!(env.volume_names().is_empty());
    }
    let left = conformance::leaks::mounts_under(std::slice::from_ref(&env.t.path));
    assert!(left.is_empty(), "mounts left: {left:?}");
}

#[test]
fn volume_commands_and_bad_input() {
    let Some(env) = Env::new("vols-cli") else {
        return;
    };
    ok(&env.si(&["volume", "create", "v1"]), "volume create");
    ok(&env.si(&["volume", "create", "v1"]), "volume create again");
    let o = env.si(&["volume", "inspect", "v1"]);
    ok(&o, "volume inspect");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("inspect json");
    let mp = PathBuf::from(v[0]["Mountpoint"].as_str().expect("Mountpoint"));
    assert_eq!(mp, env.store().join("volumes/v1/_data"));
    assert!(mp.is_dir());
    assert_eq!(v[0]["Anonymous"], false);
    for (args, want) in [
        (vec!["volume", "create", "bad/name"], "invalid volume name"),
        (vec!["volume", "create", "-x"], ""),
        (vec!["volume", "inspect", "nosuch"], "no such volume"),
        (vec!["volume", "rm", "nosuch"], "no such volume"),
    ] {
        let o = env.si(&args);
        assert!(
            !o.status.success() && stderr(&o).contains(want),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Bad unpack input: a clear error naming the flag, no bundle and no volume left behind.
    let missing = env.t.join("no-such-host-dir");
    let bind = format!("{}:/x", missing.display());
    for (extra, want) in [
        (vec!["-v", bind.as_str()], "does not exist"),
        (vec!["-v", "/x:ro"], "-v/--volume"),
        (vec!["-v", "rel/dir:/x"], "-v/--volume"),
        (vec!["-v", "/x", "-v", "n:/x"], "duplicate mount point"),
        (vec!["-v", "/"], "-v/--volume"),
        (vec!["-v", "a:/x:rx"], "-v/--volume"),
        (vec!["-v", "/anon", "--cpu-quota", "999"], "--cpu-quota"),
        (vec!["--cpu-period", "100"], "--cpu-period"),
        (vec!["--cpus", "0.5", "--cpu-quota", "5000"], "--cpus"),
        (vec!["--memory", "1m"], "--memory"),
        (vec!["--memory", "64x"], "--memory"),
        (vec!["--memory-swap", "1g"], "--memory-swap"),
        (vec!["--pids-limit", "many"], "--pids-limit"),
        (vec!["--cpuset-cpus", "3-1"], "--cpuset-cpus"),
        (vec!["-v", "fresh:/x", "--user", "nosuchuser"], "nosuchuser"),
    ] {
        let b = env.t.join("bad-bundle");
        let mut args = vec!["unpack", "bbvol:1", b.to_str().unwrap_or_default()];
        args.extend_from_slice(&extra);
        let o = env.si(&args);
        assert!(
            !o.status.success() && stderr(&o).contains(want),
            "{extra:?}: want {want:?} in: {}",
            stderr(&o)
        );
        assert!(!b.exists(), "{extra:?}: half-made bundle left");
        assert_eq!(env.volume_names(), vec!["v1".to_string()], "{extra:?}");
    }
    // rm-bundle of a bundle whose volume is gone still works; volume rm --force of a used one.
    let b = env.t.join("b");
    env.unpack(&b, &["-v", "v1:/v", "-v", "/a"], "true");
    ok(
        &env.si(&["volume", "create", "unused"]),
        "volume create unused",
    );
    // prune -a removes what no bundle uses and keeps the bundle's volumes (v1, /a, /imgvol).
    let o = env.si(&["volume", "prune", "--all"]);
    ok(&o, "volume prune --all");
    assert_eq!(out(&o), "unused\n");
    assert_eq!(env.volume_names().len(), 3, "{:?}", env.volume_names());
    let o = env.si(&["volume", "rm", "v1"]);
    assert!(!o.status.success() && stderr(&o).contains("in use"));
    ok(
        &env.si(&["volume", "rm", "--force", "v1"]),
        "volume rm --force",
    );
    ok(
        &env.si(&["rm-bundle", "--volumes", b.to_str().unwrap_or_default()]),
        "rm-bundle",
    );
    assert!(env.volume_names().is_empty(), "{:?}", env.volume_names());
    assert!(
        list_all(&env.store().join("tmp")).is_empty(),
        "temp files left in the store"
    );
}

fn cgroup_value(stdout: &str, key: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
}

#[test]
fn resource_limits_reach_the_cgroup() {
    need_root!();
    if !Path::new("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").exists()
        && !Path::new("/sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us").exists()
    {
        eprintln!("SKIP: needs cgroup v1 cpu controller (this test reads v1 files)");
        return;
    }
    let Some(env) = Env::new("vols-res") else {
        return;
    };
    let b = env.t.join("b");
    let script = "for f in cpu/cpu.cfs_quota_us cpu/cpu.cfs_period_us cpu/cpu.shares \
        memory/memory.limit_in_bytes memory/memory.memsw.limit_in_bytes pids/pids.max; do \
        echo \"$f=$(cat /sys/fs/cgroup/$f 2>/dev/null || echo missing)\"; done";
    env.unpack(
        &b,
        &[
            "--cpu-period=100000",
            "--cpu-quota=20000",
            "--cpu-shares",
            "512",
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--pids-limit",
            "50",
        ],
        script,
    );
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).expect("config"))
            .expect("config json");
    let r = &cfg["linux"]["resources"];
    assert_eq!(
        r["cpu"],
        serde_json::json!({"period": 100000, "quota": 20000, "shares": 512})
    );
    assert_eq!(
        r["memory"],
        serde_json::json!({"limit": 67108864, "swap": 134217728})
    );
    assert_eq!(r["pids"]["limit"], 50);
    let o = env.run(&b);
    let s = out(&o);
    eprintln!("cgroup values seen in the container:\n{s}");
    let want = [
        ("cpu/cpu.cfs_quota_us", "20000"),
        ("cpu/cpu.cfs_period_us", "100000"),
        ("cpu/cpu.shares", "512"),
        ("memory/memory.limit_in_bytes", "67108864"),
        ("pids/pids.max", "50"),
    ];
    for (k, v) in want {
        assert_eq!(cgroup_value(&s, k).as_deref(), Some(v), "{k} in:\n{s}");
    }
    match cgroup_value(&s, "memory/memory.memsw.limit_in_bytes").as_deref() {
        Some("missing") | None => eprintln!("SKIP (swap): no memory.memsw files on this host"),
        Some(v) => assert_eq!(v, "134217728"),
    }
    ok(
        &env.si(&["rm-bundle", b.to_str().unwrap_or_default()]),
        "rm-bundle",
    );
    // --cpus and a quota without a period.
    let b = env.t.join("b-cpus");
    env.unpack(&b, &["--cpus", "0.5"], "true");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).expect("config"))
            .expect("config json");
    assert_eq!(
        cfg["linux"]["resources"]["cpu"],
        serde_json::json!({"period": 100000, "quota": 50000})
    );
    let b = env.t.join("b-quota");
    env.unpack(&b, &["--cpu-quota", "30000", "--pids-limit", "-1"], "true");
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.join("config.json")).expect("config"))
            .expect("config json");
    assert_eq!(
        cfg["linux"]["resources"]["cpu"],
        serde_json::json!({"period": 100000, "quota": 30000})
    );
    assert_eq!(cfg["linux"]["resources"]["pids"]["limit"], -1);
}

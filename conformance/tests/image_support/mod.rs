//! Shared helpers for the skiff-image tests: hand-made layers, OCI layouts, tree capture and
//! comparison, and Drop guards that unmount and delete everything a test made.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A temp dir that unmounts anything mounted below it and deletes itself on drop.
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(prefix: &str) -> TestDir {
        let path = PathBuf::from(format!("/tmp/{}", conformance::unique_name(prefix)));
        std::fs::create_dir_all(&path).expect("create test dir");
        TestDir { path }
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.path.join(p)
    }
}

pub fn umount_below(root: &Path) {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mps: Vec<String> = mi
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| Path::new(m).starts_with(root))
        .collect();
    mps.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in mps {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        umount_below(&self.path);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn skiff_image() -> PathBuf {
    conformance::bins::skiff_image().expect("skiff-image binary (cargo build -p skiff-image)")
}

/// Run skiff-image with a store.
pub fn si(store: &Path, args: &[&str]) -> Output {
    Command::new(skiff_image())
        .arg("--store")
        .arg(store)
        .args(args)
        .output()
        .expect("run skiff-image")
}

pub fn ok(o: &Output, what: &str) {
    assert!(
        o.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---------- building layers ----------

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    loop {
        let l = base + len.to_string().len();
        if l == len {
            break;
        }
        len = l;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// A layer under construction (uncompressed tar).
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

pub const MTIME: u64 = 1_600_000_000;

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer {
            b: tar::Builder::new(Vec::new()),
        }
    }
    fn hdr(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(MTIME);
        h.set_size(0);
        h
    }
    /// Raw entry with a name written verbatim into the header (bypasses the tar crate's checks).
    pub fn raw(
        mut self,
        name: &[u8],
        kind: tar::EntryType,
        link: Option<&[u8]>,
        data: &[u8],
    ) -> Self {
        let mut h = Self::hdr(kind, 0o644, 0, 0);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            if let Some(l) = link {
                old.linkname = [0; 100];
                old.linkname[..l.len()].copy_from_slice(l);
            }
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.b.append(&h, data).expect("append raw");
        self
    }
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        let mut data = Vec::new();
        for (k, v) in records {
            data.extend(pax_record(k, v));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeaders/x").expect("pax path");
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.b.append(&h, &data[..]).expect("append pax");
        self
    }
    pub fn dir(self, p: &str, mode: u32) -> Self {
        self.dir_owned(p, mode, 0, 0)
    }
    pub fn dir_owned(mut self, p: &str, mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = Self::hdr(tar::EntryType::Directory, mode, uid, gid);
        self.b
            .append_data(&mut h, p, std::io::empty())
            .expect("dir");
        self
    }
    pub fn file(self, p: &str, mode: u32, data: &[u8]) -> Self {
        self.file_owned(p, mode, 0, 0, data)
    }
    pub fn file_owned(mut self, p: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Self {
        let mut h = Self::hdr(tar::EntryType::Regular, mode, uid, gid);
        h.set_size(data.len() as u64);
        self.b.append_data(&mut h, p, data).expect("file");
        self
    }
    pub fn symlink(mut self, p: &str, target: &str) -> Self {
        let mut h = Self::hdr(tar::EntryType::Symlink, 0o777, 0, 0);
        self.b.append_link(&mut h, p, target).expect("symlink");
        self
    }
    pub fn hardlink(mut self, p: &str, target: &str) -> Self {
        let mut h = Self::hdr(tar::EntryType::Link, 0o644, 0, 0);
        self.b.append_link(&mut h, p, target).expect("hardlink");
        self
    }
    pub fn dev(mut self, p: &str, kind: tar::EntryType, major: u32, minor: u32, mode: u32) -> Self {
        let mut h = Self::hdr(kind, mode, 0, 0);
        h.set_device_major(major).expect("major");
        h.set_device_minor(minor).expect("minor");
        self.b
            .append_data(&mut h, p, std::io::empty())
            .expect("dev");
        self
    }
    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, 0o644, b"")
    }
    pub fn opaque(self, dir: &str) -> Self {
        self.file(&format!("{dir}/.wh..wh..opq"), 0o644, b"")
    }
    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().expect("finish tar")
    }
}

// ---------- OCI layouts ----------

/// Write blobs + manifest + config + index for `layers` (already in final blob form) to `dir`.
/// `diff_ids` default to the digests of uncompressed layers.
pub fn make_layout(
    dir: &Path,
    layers: &[(Vec<u8>, &str, String)],
    config_extra: serde_json::Value,
) -> String {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs");
    let put = |b: &[u8]| -> String {
        let h = sha256_hex(b);
        std::fs::write(blobs.join(&h), b).expect("write blob");
        format!("sha256:{h}")
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    for (blob, mt, diff_id) in layers {
        let d = put(blob);
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
        diff_ids.push(diff_id.clone());
    }
    let mut cfg = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "test"})).collect::<Vec<_>>(),
    });
    if let (Some(c), Some(extra)) = (
        cfg.get_mut("config").and_then(|c| c.as_object_mut()),
        config_extra.as_object(),
    ) {
        for (k, v) in extra {
            c.insert(k.clone(), v.clone());
        }
    }
    let cb = serde_json::to_vec(&cfg).expect("cfg");
    let cd = put(&cb);
    let m = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cb.len()},
        "layers": descs,
    });
    let mb = serde_json::to_vec(&m).expect("manifest");
    let md = put(&mb);
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mb.len(),
        "annotations": {"org.opencontainers.image.ref.name": "latest"}}]});
    std::fs::write(
        dir.join("index.json"),
        serde_json::to_vec(&idx).expect("idx"),
    )
    .expect("index");
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
        .expect("oci-layout");
    md
}

/// Layout from uncompressed layer tars.
pub fn layout_from_tars(dir: &Path, tars: &[Vec<u8>]) -> String {
    let ls: Vec<(Vec<u8>, &str, String)> = tars
        .iter()
        .map(|t| {
            (
                t.clone(),
                "application/vnd.oci.image.layer.v1.tar",
                format!("sha256:{}", sha256_hex(t)),
            )
        })
        .collect();
    make_layout(dir, &ls, serde_json::json!({}))
}

/// gzip bytes with the gzip CLI.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut c = Command::new("gzip")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = c.stdin.take().expect("stdin");
    let d = data.to_vec();
    let t = std::thread::spawn(move || {
        let _ = stdin.write_all(&d);
    });
    let o = c.wait_with_output().expect("gzip output");
    let _ = t.join();
    o.stdout
}

// ---------- tree capture ----------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub sha: String,
    pub link: String,
    pub rdev: u64,
    pub xattrs: BTreeMap<String, String>,
    pub mtime: Option<i64>,
}

pub struct Tree {
    pub nodes: BTreeMap<String, Node>,
    pub hardlink_groups: Vec<Vec<String>>,
}

fn xattrs_of(p: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Ok(c) = CString::new(p.as_os_str().as_bytes()) else {
        return out;
    };
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid buffer.
    let n =
        unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if n <= 0 {
        return out;
    }
    buf.truncate(n as usize);
    for name in buf.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let Ok(cn) = CString::new(name) else { continue };
        let mut v = vec![0u8; 65536];
        // SAFETY: valid buffer.
        let m = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cn.as_ptr(),
                v.as_mut_ptr() as *mut libc::c_void,
                v.len(),
            )
        };
        if m < 0 {
            continue;
        }
        v.truncate(m as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), hex::encode(v));
    }
    out
}

/// Capture a tree (no symlinks followed). `mtimes` records non-directory mtimes too.
pub fn capture(root: &Path, mtimes: bool) -> Tree {
    let mut nodes = BTreeMap::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    fn walk(
        root: &Path,
        dir: &Path,
        nodes: &mut BTreeMap<String, Node>,
        inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
        mtimes: bool,
    ) {
        let mut ents: Vec<_> = std::fs::read_dir(dir)
            .expect("read_dir")
            .flatten()
            .collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("prefix")
                .to_string_lossy()
                .into_owned();
            let md = std::fs::symlink_metadata(&p).expect("lstat");
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "other"
            };
            let sha = if ft.is_file() {
                sha256_hex(&std::fs::read(&p).expect("read"))
            } else {
                String::new()
            };
            let link = if ft.is_symlink() {
                std::fs::read_link(&p)
                    .expect("readlink")
                    .to_string_lossy()
                    .into_owned()
            } else {
                String::new()
            };
            if !ft.is_dir() && md.nlink() > 1 {
                inodes
                    .entry((md.dev(), md.ino()))
                    .or_default()
                    .push(rel.clone());
            }
            let mut xattrs = xattrs_of(&p);
            xattrs.retain(|k, _| !k.starts_with("trusted.overlay."));
            nodes.insert(
                rel.clone(),
                Node {
                    kind: kind.to_string(),
                    mode: md.mode() & 0o7777,
                    uid: md.uid(),
                    gid: md.gid(),
                    size: if ft.is_dir() { 0 } else { md.size() },
                    sha,
                    link,
                    rdev: if ft.is_char_device() || ft.is_block_device() {
                        md.rdev()
                    } else {
                        0
                    },
                    xattrs,
                    mtime: if mtimes && !ft.is_dir() && !ft.is_symlink() {
                        Some(md.mtime())
                    } else {
                        None
                    },
                },
            );
            if ft.is_dir() {
                walk(root, &p, nodes, inodes, mtimes);
            }
        }
    }
    walk(root, root, &mut nodes, &mut inodes, mtimes);
    let mut hardlink_groups: Vec<Vec<String>> =
        inodes.into_values().filter(|v| v.len() > 1).collect();
    for g in &mut hardlink_groups {
        g.sort();
    }
    hardlink_groups.sort();
    Tree {
        nodes,
        hardlink_groups,
    }
}

/// Compare two trees; returns a readable list of differences (empty when equal).
pub fn diff_trees(a: &Tree, b: &Tree, an: &str, bn: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in &a.nodes {
        match b.nodes.get(k) {
            None => out.push(format!("{k}: only in {an} ({v:?})")),
            Some(w) if w != v => out.push(format!("{k}: {an}={v:?} {bn}={w:?}")),
            _ => {}
        }
    }
    for k in b.nodes.keys() {
        if !a.nodes.contains_key(k) {
            out.push(format!("{k}: only in {bn} ({:?})", b.nodes[k]));
        }
    }
    if a.hardlink_groups != b.hardlink_groups {
        out.push(format!(
            "hardlink groups: {an}={:?} {bn}={:?}",
            a.hardlink_groups, b.hardlink_groups
        ));
    }
    out
}

/// Every file below `dir` (for "nothing was written" checks).
pub fn list_all(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                out.push(
                    p.strip_prefix(root)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .into_owned(),
                );
                if std::fs::symlink_metadata(&p)
                    .map(|m| m.is_dir())
                    .unwrap_or(false)
                {
                    walk(root, &p, out);
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// A valid v2 security.capability value granting CAP_NET_BIND_SERVICE (effective).
pub fn cap_net_bind() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes());
    v.extend_from_slice(&(1u32 << 10).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v
}

/// A busybox-static rootfs tarball (busybox + applet symlinks + passwd/group), like the team's base image.
pub fn busybox_tar(dir: &Path) -> Option<PathBuf> {
    let bb = Path::new("/bin/busybox");
    if !bb.exists() {
        return None;
    }
    let list = Command::new(bb).arg("--list").output().ok()?;
    let mut l = Layer::new()
        .dir("bin", 0o755)
        .dir("etc", 0o755)
        .dir("tmp", 0o1777)
        .dir("root", 0o700);
    l = l.file("bin/busybox", 0o755, &std::fs::read(bb).ok()?);
    for a in String::from_utf8_lossy(&list.stdout).lines() {
        if a != "busybox" && !a.is_empty() {
            l = l.symlink(&format!("bin/{a}"), "busybox");
        }
    }
    l = l
        .file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n")
        .file("etc/group", 0o644, b"root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n");
    let p = dir.join("busybox.tar");
    std::fs::write(&p, l.finish()).ok()?;
    Some(p)
}

/// Sorted list of index.json entries and blob files: the observable state of a store.
pub fn store_state(store: &Path) -> (String, Vec<String>) {
    let idx = std::fs::read_to_string(store.join("index.json")).unwrap_or_default();
    let mut blobs: Vec<String> = std::fs::read_dir(store.join("blobs/sha256"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    blobs.sort();
    (idx, blobs)
}

/// Every blob in a store hashes to its name.
pub fn assert_blobs_valid(store: &Path) {
    for e in std::fs::read_dir(store.join("blobs/sha256"))
        .expect("blobs")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(e.path()).expect("blob");
        assert_eq!(sha256_hex(&data), name, "blob {name} is corrupt/partial");
    }
}

/// Unpack `tars` with skiff-image in copy mode, in overlay mode (cold, then from the cached
/// layers) when `compare_overlay`, and with umoci when `compare_umoci` (and installed): every
/// tree must equal copy mode's. `name` prefixes the test dir and the messages.
pub fn compare_unpackers(
    name: &str,
    tars: Vec<Vec<u8>>,
    compare_overlay: bool,
    compare_umoci: bool,
) {
    if !conformance::is_root() {
        eprintln!("SKIP: {name}: needs root");
        return;
    }
    let t = TestDir::new(name);
    let layout = t.join("layout");
    layout_from_tars(&layout, &tars);
    let store = t.join("store");
    let oref = format!("oci:{}:latest", layout.display());
    let copy = t.join("copy");
    ok(
        &si(
            &store,
            &[
                "unpack",
                &oref,
                copy.to_str().unwrap_or_default(),
                "--mode",
                "copy",
            ],
        ),
        "unpack copy",
    );
    let copy_tree = capture(&copy.join("rootfs"), true);
    assert!(!copy_tree.nodes.is_empty(), "{name}: copy rootfs is empty");
    if compare_overlay {
        let ov = t.join("overlay");
        ok(
            &si(
                &store,
                &[
                    "unpack",
                    &oref,
                    ov.to_str().unwrap_or_default(),
                    "--mode",
                    "overlay",
                ],
            ),
            "unpack overlay",
        );
        let ov_tree = capture(&ov.join("rootfs"), true);
        let d = diff_trees(&copy_tree, &ov_tree, "copy", "overlay");
        ok(
            &si(&store, &["rm-bundle", ov.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
        assert!(
            d.is_empty(),
            "{name}: copy and overlay differ:\n{}",
            d.join("\n")
        );
        // Second bundle from the cached layers must work too.
        let ov2 = t.join("overlay2");
        ok(
            &si(&store, &["unpack", &oref, ov2.to_str().unwrap_or_default()]),
            "unpack overlay (cached)",
        );
        let d2 = diff_trees(
            &copy_tree,
            &capture(&ov2.join("rootfs"), true),
            "copy",
            "overlay-cached",
        );
        ok(
            &si(&store, &["rm-bundle", ov2.to_str().unwrap_or_default()]),
            "rm-bundle",
        );
        assert!(
            d2.is_empty(),
            "{name}: copy and cached overlay differ:\n{}",
            d2.join("\n")
        );
    }
    if !compare_umoci {
        return;
    }
    let Some(umoci) = conformance::bins::umoci() else {
        eprintln!("SKIP: {name}: umoci comparison (umoci not installed)");
        return;
    };
    let ub = t.join("umoci");
    let o = std::process::Command::new(umoci)
        .args(["unpack", "--image"])
        .arg(format!("{}:latest", layout.display()))
        .arg(&ub)
        .output()
        .expect("umoci");
    ok(&o, "umoci unpack");
    let d = diff_trees(
        &copy_tree,
        &capture(&ub.join("rootfs"), true),
        "skiff-image",
        "umoci",
    );
    assert!(
        d.is_empty(),
        "{name}: skiff-image and umoci differ:\n{}",
        d.join("\n")
    );
}

/// Unpack the image made of `tars` in every mode of `expect` (mode, text its error must
/// mention): each must fail with that text, leave no bundle, no partial cached layer, nothing
/// outside the store (a canary dir beside the bundle stays empty), and no mount.
#[allow(dead_code)] // not every test binary that includes this module refuses images
pub fn assert_refused(prefix: &str, name: &str, tars: &[Vec<u8>], expect: &[(&str, &str)]) {
    if !conformance::is_root() {
        eprintln!("SKIP: {name}: needs root");
        return;
    }
    let t = TestDir::new(&format!("{prefix}-{name}"));
    let layout = t.join("layout");
    layout_from_tars(&layout, tars);
    let canary = t.join("canary");
    std::fs::create_dir_all(&canary).expect("canary");
    let store = t.join("store");
    let oref = format!("oci:{}:latest", layout.display());
    for (mode, want) in expect {
        let outside = t.join(&format!("outside-{mode}"));
        std::fs::create_dir_all(outside.join("deep")).expect("deep dir");
        let bundle = outside.join("deep/bundle");
        let mut before = list_all(&t.path);
        before.retain(|p| !p.starts_with("store"));
        let o = si(
            &store,
            &[
                "unpack",
                &oref,
                bundle.to_str().unwrap_or_default(),
                "--mode",
                mode,
            ],
        );
        assert!(!o.status.success(), "{name} ({mode}) was accepted");
        let err = stderr(&o);
        assert!(
            err.to_lowercase().contains(&want.to_lowercase()),
            "{name} ({mode}): error does not mention {want:?}: {err}"
        );
        assert!(!bundle.exists(), "{name} ({mode}): bundle left behind");
        assert!(
            list_all(&canary).is_empty(),
            "{name} ({mode}): wrote into canary dir"
        );
        // The store may have gained the imported blobs, nothing else.
        let mut after = list_all(&t.path);
        after.retain(|p| !p.starts_with("store"));
        assert_eq!(
            before, after,
            "{name} ({mode}): files appeared outside the store"
        );
        let partial: Vec<String> = list_all(&store.join("layers"))
            .into_iter()
            .filter(|p| p.starts_with(".extract"))
            .collect();
        assert!(
            partial.is_empty(),
            "{name} ({mode}): partial cached layer left: {partial:?}"
        );
        umount_below(&t.path);
    }
}

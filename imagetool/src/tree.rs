//! Turning directory trees into layer tars: a whole directory (rootfs import), an overlay upper
//! directory (whiteout char devices and opaque xattrs become OCI whiteouts), or a copy-mode
//! rootfs compared against the snapshot taken at unpack time.

use crate::apply::{is_overlay_opaque, OPAQUE_MARKER, WHITEOUT_PREFIX};
use crate::error::{Error, IoContext, Result};
use crate::fsops;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

/// Files the runtime injects that are never committed.
pub const RUNTIME_FILES: &[&str] = &["etc/hosts", "etc/resolv.conf", "etc/hostname"];

/// Writes tar entries for files found on disk (numeric owners, xattrs, hardlinks kept).
pub struct TarWriter<W: Write> {
    b: tar::Builder<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
}

fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let base = key.len() + value.len() + 3;
    let mut len = base + 1;
    loop {
        let l = base + len.to_string().len();
        if l == len {
            break;
        }
        len = l;
    }
    let mut r = format!("{len} ").into_bytes();
    r.extend_from_slice(key);
    r.push(b'=');
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

impl<W: Write> TarWriter<W> {
    /// Start a tar stream on `w`.
    pub fn new(w: W) -> Self {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Complete);
        TarWriter {
            b,
            links: HashMap::new(),
        }
    }

    /// Finish the archive and return the writer.
    pub fn finish(self) -> io::Result<W> {
        self.b.into_inner()
    }

    fn pax(&mut self, rel: &[u8], xattrs: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let mut data = Vec::new();
        for (k, v) in xattrs {
            if k.starts_with(b"trusted.overlay.") {
                continue;
            }
            let mut key = b"SCHILY.xattr.".to_vec();
            key.extend_from_slice(k);
            data.extend(pax_record(&key, v));
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        let mut name = b"PaxHeaders/".to_vec();
        let tail: Vec<u8> = rel.iter().rev().take(80).rev().copied().collect();
        name.extend_from_slice(&tail);
        let _ = h.set_path(Path::new(OsStr::from_bytes(&name)));
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        self.b.append(&h, &data[..])
    }

    /// Append a whiteout entry for `rel` (the path of the removed file).
    pub fn whiteout(&mut self, rel: &[u8]) -> io::Result<()> {
        let (dir, name) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&rel[..=i], &rel[i + 1..]),
            None => (&b""[..], rel),
        };
        let mut p = dir.to_vec();
        p.extend_from_slice(WHITEOUT_PREFIX.as_bytes());
        p.extend_from_slice(name);
        self.empty_file(&p)
    }

    /// Append the opaque marker for directory `rel`.
    pub fn opaque(&mut self, rel: &[u8]) -> io::Result<()> {
        let mut p = rel.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(OPAQUE_MARKER.as_bytes());
        self.empty_file(&p)
    }

    fn empty_file(&mut self, p: &[u8]) -> io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        self.b
            .append_data(&mut h, Path::new(OsStr::from_bytes(p)), io::empty())
    }

    /// Append the node `name` in `dir` as tar path `rel` (no trailing slash).
    pub fn append_node(
        &mut self,
        dir: RawFd,
        name: &OsStr,
        rel: &[u8],
        st: &libc::stat,
    ) -> Result<()> {
        let ctx = || format!("archiving {:?}", String::from_utf8_lossy(rel));
        let kind = st.st_mode & libc::S_IFMT;
        let mut h = tar::Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(st.st_uid as u64);
        h.set_gid(st.st_gid as u64);
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        let path = Path::new(OsStr::from_bytes(rel));
        // Hardlinks: later names of an inode become link entries.
        if kind != libc::S_IFDIR && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                h.set_entry_type(tar::EntryType::Link);
                self.b
                    .append_link(&mut h, path, Path::new(OsStr::from_bytes(&first)))
                    .ctx(ctx)?;
                return Ok(());
            }
            self.links.insert(key, rel.to_vec());
        }
        match kind {
            libc::S_IFREG => {
                let fd = fsops::openat(dir, name, libc::O_RDONLY, 0).ctx(ctx)?;
                let x = fsops::list_xattrs_fd(fd.as_raw_fd(), false).ctx(ctx)?;
                self.pax(rel, &x).ctx(ctx)?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                let f = std::fs::File::from(fd);
                // Guard against the file changing size under us.
                use std::io::Read;
                let reader = f.take(st.st_size as u64);
                let mut padded = PadReader {
                    inner: reader,
                    left: st.st_size as u64,
                };
                self.b.append_data(&mut h, path, &mut padded).ctx(ctx)?;
            }
            libc::S_IFDIR => {
                let fd =
                    fsops::openat(dir, name, libc::O_RDONLY | libc::O_DIRECTORY, 0).ctx(ctx)?;
                let x = fsops::list_xattrs_fd(fd.as_raw_fd(), false).ctx(ctx)?;
                self.pax(rel, &x).ctx(ctx)?;
                h.set_entry_type(tar::EntryType::Directory);
                let mut p = rel.to_vec();
                p.push(b'/');
                self.b
                    .append_data(&mut h, Path::new(OsStr::from_bytes(&p)), io::empty())
                    .ctx(ctx)?;
            }
            libc::S_IFLNK => {
                let target = fsops::readlinkat(dir, name).ctx(ctx)?;
                h.set_entry_type(tar::EntryType::Symlink);
                self.b
                    .append_link(&mut h, path, Path::new(OsStr::from_bytes(&target)))
                    .ctx(ctx)?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let fd = fsops::openat(dir, name, libc::O_PATH, 0).ctx(ctx)?;
                let x = fsops::list_xattrs_fd(fd.as_raw_fd(), true).unwrap_or_default();
                self.pax(rel, &x).ctx(ctx)?;
                h.set_entry_type(match kind {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                if kind != libc::S_IFIFO {
                    h.set_device_major(libc::major(st.st_rdev)).ctx(ctx)?;
                    h.set_device_minor(libc::minor(st.st_rdev)).ctx(ctx)?;
                }
                self.b.append_data(&mut h, path, io::empty()).ctx(ctx)?;
            }
            _ => {
                tracing::warn!("skipping socket {:?}", String::from_utf8_lossy(rel));
            }
        }
        Ok(())
    }
}

/// Pads a file that shrank while being archived with zeros (keeps the tar consistent).
struct PadReader<R> {
    inner: R,
    left: u64,
}

impl<R: io::Read> io::Read for PadReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            let k = (buf.len() as u64).min(self.left) as usize;
            buf[..k].fill(0);
            self.left -= k as u64;
            return Ok(k);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// What a walk visitor wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Descend into this directory.
    Descend,
    /// Do not descend.
    Skip,
}

fn join_rel(prefix: &[u8], name: &OsStr) -> Vec<u8> {
    let mut r = prefix.to_vec();
    if !r.is_empty() {
        r.push(b'/');
    }
    r.extend_from_slice(name.as_bytes());
    r
}

/// Visitor of [`walk`]: (parent fd, name, relative path, stat) -> what to do next.
pub type Visitor<'a> = dyn FnMut(RawFd, &OsStr, &[u8], &libc::stat) -> Result<Walk> + 'a;

/// Walk a tree without following symlinks; children sorted by name. The visitor gets
/// (parent fd, name, relative path, stat).
pub fn walk(dir: RawFd, prefix: &[u8], visit: &mut Visitor<'_>) -> Result<()> {
    let mut names = fsops::read_dir_names(dir)
        .map_err(|e| Error::io(format!("listing {:?}", String::from_utf8_lossy(prefix)), e))?;
    names.sort();
    for name in names {
        let rel = join_rel(prefix, &name);
        let Some(st) = fsops::lstat_at(dir, &name)
            .map_err(|e| Error::io(format!("stat {:?}", String::from_utf8_lossy(&rel)), e))?
        else {
            continue;
        };
        let w = visit(dir, &name, &rel, &st)?;
        if w == Walk::Descend && st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let sub = fsops::openat(dir, &name, libc::O_PATH | libc::O_DIRECTORY, 0)
                .map_err(|e| Error::io(format!("open {:?}", String::from_utf8_lossy(&rel)), e))?;
            walk(sub.as_raw_fd(), &rel, visit)?;
        }
    }
    Ok(())
}

/// Write a whole directory as a layer tar (used to import a rootfs directory).
pub fn write_dir<W: Write>(root: &Path, w: W) -> Result<W> {
    let rfd = fsops::open_dir(root)?;
    let mut tw = TarWriter::new(w);
    walk(rfd.as_raw_fd(), b"", &mut |d, n, rel, st| {
        tw.append_node(d, n, rel, st)?;
        Ok(Walk::Descend)
    })?;
    tw.finish().map_err(|e| Error::io("finishing tar", e))
}

/// Rules for what a commit leaves out.
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    /// Volume mount points (relative, no leading slash): the dir is kept, its content is not.
    pub volumes: Vec<Vec<u8>>,
    /// Runtime mount points (`proc`, `sys`, `dev`) that the image did not have: when the runtime
    /// created them as empty directories they are not committed.
    pub new_runtime_dirs: Vec<Vec<u8>>,
}

/// Top-level directories a runtime creates as mount points.
pub const RUNTIME_DIRS: &[&str] = &["proc", "sys", "dev"];

impl Exclusions {
    fn skip_empty_runtime_dir(
        &self,
        dir: RawFd,
        name: &OsStr,
        rel: &[u8],
        st: &libc::stat,
    ) -> bool {
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR
            || !self.new_runtime_dirs.iter().any(|d| d.as_slice() == rel)
        {
            return false;
        }
        match fsops::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0) {
            Ok(fd) => fsops::read_dir_names(fd.as_raw_fd())
                .map(|n| n.is_empty())
                .unwrap_or(false),
            Err(_) => false,
        }
    }

    /// Names in the directory `rel` (opened relative to `dir`) that `is_new` calls new, when `rel` is
    /// `etc` and every new name is a file the runtime injects (hosts, resolv.conf, hostname): the
    /// directory then only shows up as changed because the runtime created those mount points in
    /// it, so committing its entry would record nothing the container did (Docker keeps them in a
    /// separate init layer for the same reason).
    fn only_runtime_files(
        dir: RawFd,
        name: &OsStr,
        rel: &[u8],
        is_new: impl Fn(&OsStr) -> bool,
    ) -> bool {
        if rel != b"etc" {
            return false;
        }
        let Ok(fd) = fsops::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0) else {
            return false;
        };
        let Ok(names) = fsops::read_dir_names(fd.as_raw_fd()) else {
            return false;
        };
        let new: Vec<&OsString> = names.iter().filter(|n| is_new(n)).collect();
        // An /etc with no new names at all changed for another reason (e.g. chmod): keep it.
        !new.is_empty()
            && new.iter().all(|n| {
                RUNTIME_FILES
                    .iter()
                    .any(|f| f.as_bytes().strip_prefix(b"etc/") == Some(n.as_bytes()))
            })
    }

    fn check(&self, rel: &[u8]) -> Option<Walk> {
        if RUNTIME_FILES.iter().any(|f| f.as_bytes() == rel) {
            return None;
        }
        for v in &self.volumes {
            if rel.len() > v.len() && rel.starts_with(v) && rel[v.len()] == b'/' {
                return None;
            }
            if rel == v.as_slice() {
                return Some(Walk::Skip);
            }
        }
        Some(Walk::Descend)
    }
}

/// Write an overlay upper directory as an OCI layer tar.
pub fn write_overlay_upper<W: Write>(upper: &Path, excl: &Exclusions, w: W) -> Result<W> {
    let rfd = fsops::open_dir(upper)?;
    let mut tw = TarWriter::new(w);
    walk(rfd.as_raw_fd(), b"", &mut |d, n, rel, st| {
        let Some(mut next) = excl.check(rel) else {
            return Ok(Walk::Skip);
        };
        if excl.skip_empty_runtime_dir(d, n, rel, st) {
            return Ok(Walk::Skip);
        }
        let kind = st.st_mode & libc::S_IFMT;
        if kind == libc::S_IFCHR && st.st_rdev == 0 {
            tw.whiteout(rel)
                .ctx(|| format!("writing whiteout for {}", String::from_utf8_lossy(rel)))?;
            return Ok(Walk::Skip);
        }
        if kind == libc::S_IFDIR {
            let fd = fsops::openat(d, n, libc::O_PATH | libc::O_DIRECTORY, 0)
                .ctx(|| format!("open {}", String::from_utf8_lossy(rel)))?;
            let opaque = is_overlay_opaque(fd.as_raw_fd());
            if !opaque && Exclusions::only_runtime_files(d, n, rel, |_| true) {
                // Nothing but injected files below: neither the dir entry nor its content.
                return Ok(Walk::Skip);
            }
            tw.append_node(d, n, rel, st)?;
            if opaque {
                tw.opaque(rel).ctx(|| {
                    format!("writing opaque marker for {}", String::from_utf8_lossy(rel))
                })?;
            }
        } else {
            tw.append_node(d, n, rel, st)?;
            next = Walk::Skip;
        }
        Ok(next)
    })?;
    tw.finish().map_err(|e| Error::io("finishing tar", e))
}

/// Metadata of one path recorded at unpack time (copy mode) to detect changes later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// st_mode (type + permissions).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size.
    pub size: i64,
    /// mtime seconds.
    pub mtime: i64,
    /// mtime nanoseconds.
    pub mtime_nsec: i64,
    /// Inode number (a replaced file gets a new one).
    pub ino: u64,
    /// Device number for device nodes.
    pub rdev: u64,
}

impl NodeState {
    fn of(st: &libc::stat) -> Self {
        NodeState {
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size,
            mtime: st.st_mtime,
            mtime_nsec: st.st_mtime_nsec,
            ino: st.st_ino,
            rdev: st.st_rdev,
        }
    }
    fn same(&self, other: &NodeState) -> bool {
        let dir = self.mode & libc::S_IFMT == libc::S_IFDIR;
        self.mode == other.mode
            && self.uid == other.uid
            && self.gid == other.gid
            && (dir || self.size == other.size)
            && self.mtime == other.mtime
            && self.mtime_nsec == other.mtime_nsec
            && self.ino == other.ino
            && self.rdev == other.rdev
    }
}

/// Paths (hex-free: raw bytes as lossless OsString) to their state.
pub type Snapshot = BTreeMap<OsString, NodeState>;

/// Record the state of every path under `root`.
pub fn snapshot(root: &Path) -> Result<Snapshot> {
    let rfd = fsops::open_dir(root)?;
    let mut snap = Snapshot::new();
    walk(rfd.as_raw_fd(), b"", &mut |_, _, rel, st| {
        snap.insert(OsString::from_vec(rel.to_vec()), NodeState::of(st));
        Ok(Walk::Descend)
    })?;
    Ok(snap)
}

/// Serialize a snapshot compactly (one JSON line per path, path as byte array when not UTF-8).
pub fn save_snapshot(snap: &Snapshot, path: &Path) -> Result<()> {
    let mut out = io::BufWriter::new(
        std::fs::File::create(path).map_err(|e| Error::at("creating", path, e))?,
    );
    for (k, v) in snap {
        let line = serde_json::json!([k.as_bytes(), v]);
        serde_json::to_writer(&mut out, &line).map_err(|e| Error::json("writing snapshot", e))?;
        out.write_all(b"\n")
            .map_err(|e| Error::at("writing", path, e))?;
    }
    out.flush().map_err(|e| Error::at("writing", path, e))
}

/// Load a snapshot written by [`save_snapshot`].
pub fn load_snapshot(path: &Path) -> Result<Snapshot> {
    let data = std::fs::read(path).map_err(|e| Error::at("reading", path, e))?;
    let mut snap = Snapshot::new();
    for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let (k, v): (Vec<u8>, NodeState) = serde_json::from_slice(line)
            .map_err(|e| Error::json(format!("parsing {}", path.display()), e))?;
        snap.insert(OsString::from_vec(k), v);
    }
    Ok(snap)
}

/// Write the changes of a copy-mode rootfs relative to its unpack-time snapshot as a layer tar.
pub fn write_copy_diff<W: Write>(
    root: &Path,
    before: &Snapshot,
    excl: &Exclusions,
    w: W,
) -> Result<W> {
    let rfd: OwnedFd = fsops::open_dir(root)?;
    let mut tw = TarWriter::new(w);
    let mut seen: std::collections::HashSet<OsString> = std::collections::HashSet::new();
    let mut seen_dirs: std::collections::HashSet<OsString> = std::collections::HashSet::new();
    walk(rfd.as_raw_fd(), b"", &mut |d, n, rel, st| {
        let key = OsString::from_vec(rel.to_vec());
        let Some(next) = excl.check(rel) else {
            seen.insert(key);
            return Ok(Walk::Skip);
        };
        seen.insert(key.clone());
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            seen_dirs.insert(key.clone());
        }
        if !before.contains_key(&key) && excl.skip_empty_runtime_dir(d, n, rel, st) {
            return Ok(Walk::Skip);
        }
        let now = NodeState::of(st);
        let changed = match before.get(&key) {
            Some(old) => !old.same(&now),
            None => true,
        };
        let changed = changed
            && !(now.mode & libc::S_IFMT == libc::S_IFDIR
                && before.get(&key).is_some_and(|old| {
                    old.mode == now.mode && old.uid == now.uid && old.gid == now.gid
                })
                && Exclusions::only_runtime_files(d, n, rel, |c| {
                    let mut k = rel.to_vec();
                    k.push(b'/');
                    k.extend_from_slice(c.as_bytes());
                    !before.contains_key(OsStr::from_bytes(&k))
                }));
        if changed {
            tw.append_node(d, n, rel, st)?;
        }
        Ok(next)
    })?;
    // Deletions: whiteout the top-most removed path only.
    for k in before.keys() {
        if seen.contains(k) {
            continue;
        }
        let kb = k.as_bytes();
        if excl.check(kb).is_none() {
            continue;
        }
        let parent_gone = match kb.iter().rposition(|b| *b == b'/') {
            Some(i) => {
                let p = OsString::from_vec(kb[..i].to_vec());
                !seen_dirs.contains(&p)
            }
            None => false,
        };
        if !parent_gone {
            tw.whiteout(kb)
                .ctx(|| format!("writing whiteout for {}", String::from_utf8_lossy(kb)))?;
        }
    }
    tw.finish().map_err(|e| Error::io("finishing tar", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entries(tar: &[u8]) -> Vec<String> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .expect("test setup")
            .map(|e| {
                e.expect("test setup")
                    .path()
                    .expect("test setup")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn etc_with_only_injected_files_is_not_committed() {
        let t = tempfile::tempdir().expect("test setup");
        let upper = t.path().join("upper");
        fs::create_dir_all(upper.join("etc")).expect("test setup");
        fs::write(upper.join("etc/hosts"), "").expect("test setup");
        fs::write(upper.join("etc/resolv.conf"), "").expect("test setup");
        let tar =
            write_overlay_upper(&upper, &Exclusions::default(), Vec::new()).expect("test setup");
        assert!(entries(&tar).is_empty(), "{:?}", entries(&tar));
        // A real change in /etc keeps the directory and that file, still without the injected ones.
        fs::write(upper.join("etc/motd"), "hi").expect("test setup");
        let tar =
            write_overlay_upper(&upper, &Exclusions::default(), Vec::new()).expect("test setup");
        assert_eq!(entries(&tar), vec!["etc/", "etc/motd"]);
        // An /etc that only changed its mode is still committed.
        fs::remove_dir_all(upper.join("etc")).expect("test setup");
        fs::create_dir_all(upper.join("etc")).expect("test setup");
        let tar =
            write_overlay_upper(&upper, &Exclusions::default(), Vec::new()).expect("test setup");
        assert_eq!(entries(&tar), vec!["etc/"]);
    }

    #[test]
    fn copy_mode_ignores_etc_touched_only_by_injected_files() {
        let t = tempfile::tempdir().expect("test setup");
        let root = t.path().join("rootfs");
        fs::create_dir_all(root.join("etc")).expect("test setup");
        fs::write(root.join("etc/passwd"), "root:x:0:0::/:/bin/sh\n").expect("test setup");
        let before = snapshot(&root).expect("test setup");
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(root.join("etc/hosts"), "").expect("test setup");
        fs::write(root.join("etc/hostname"), "").expect("test setup");
        let tar = write_copy_diff(&root, &before, &Exclusions::default(), Vec::new())
            .expect("test setup");
        assert!(entries(&tar).is_empty(), "{:?}", entries(&tar));
        fs::write(root.join("etc/motd"), "hi").expect("test setup");
        let tar = write_copy_diff(&root, &before, &Exclusions::default(), Vec::new())
            .expect("test setup");
        assert_eq!(entries(&tar), vec!["etc/", "etc/motd"]);
    }
}

//! Applying one layer tar stream to a directory, either merged onto the lower layers (copy mode,
//! whiteouts delete) or as a standalone overlayfs layer (whiteouts become 0/0 char devices and
//! opaque markers become `trusted.overlay.opaque=y`). All hostile entries are refused.

use crate::error::{Error, IoContext, Result};
use crate::fsops::{self, RootDir};
use crate::lower_link;
use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// How whiteouts are represented in the target directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyFormat {
    /// The target already holds the lower layers: whiteouts delete, opaque markers prune.
    Merged,
    /// The target is one overlayfs lower dir: whiteouts are recorded in overlayfs' format.
    Overlay,
}

/// Prefix of whiteout file names in OCI layers.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Name of the opaque-directory marker in OCI layers.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// Overlayfs xattr marking an opaque directory.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Whether the directory open at `fd` is marked opaque for overlayfs (its lower content hidden).
pub(crate) fn is_overlay_opaque(fd: RawFd) -> bool {
    fsops::get_xattr_fd(fd, OVERLAY_OPAQUE_XATTR.as_bytes()).as_deref() == Some(b"y")
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime_sec: i64,
    mtime_nsec: i64,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Counts returned after applying a layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct ApplyStats {
    /// Tar entries processed.
    pub entries: u64,
    /// Hardlink targets copied up from lower layers (overlay format only).
    pub copied_up: u64,
}

struct Applier<'a> {
    root: &'a RootDir,
    format: ApplyFormat,
    planted: HashSet<PathBuf>,
    created: HashSet<PathBuf>,
    dir_times: Vec<(Vec<OsString>, i64, i64)>,
    /// The last parent directory resolved (entries come grouped by directory) and what new
    /// files there get by default (looked up when the first regular file goes there).
    last_parent: Option<(Vec<OsString>, Rc<OwnedFd>, Option<DirDefaults>)>,
    /// The process umask when this layer started.
    umask: u32,
    /// Effective uid and gid are 0 (new files are owned by 0:0 unless the directory says else).
    root_ids: bool,
    /// The target was empty when this layer started and nothing but this layer's entries went
    /// into it: a path not in `created` does not exist, so it needs no lstat before creation.
    fresh: bool,
    buf: Vec<u8>,
    /// Lower layer dirs (bottom first) for hardlinks into them; `None`: not available.
    lowers: Option<Vec<RootDir>>,
    /// Targets copied up from lower layers (lower content, not created by this layer).
    copied_up: Vec<Vec<OsString>>,
    /// Directories made for copy-ups, with the lower directories' mtimes.
    copyup_dir_times: Vec<(Vec<OsString>, i64, i64)>,
}

/// Apply the (already decompressed) layer tar `reader` to `root`. In overlay format a hardlink
/// to a file of a lower layer fails with an error [`crate::lower_link::needs_lower_layers`]
/// recognises; use [`apply_layer_over`] for such layers.
pub fn apply_layer<R: Read>(root: &Path, reader: R, format: ApplyFormat) -> Result<ApplyStats> {
    apply_layer_with(root, reader, format, None)
}

/// Apply an overlay-format layer whose hardlinks may point into the extracted lower layers
/// `lowers` (bottom first): such targets are copied up into this layer.
pub fn apply_layer_over<R: Read>(root: &Path, reader: R, lowers: &[PathBuf]) -> Result<ApplyStats> {
    apply_layer_with(root, reader, ApplyFormat::Overlay, Some(lowers))
}

fn apply_layer_with<R: Read>(
    root: &Path,
    reader: R,
    format: ApplyFormat,
    lowers: Option<&[PathBuf]>,
) -> Result<ApplyStats> {
    let rootdir = RootDir::open(root)?;
    let fresh = lowers.is_none()
        && fsops::read_dir_names(rootdir.raw())
            .map(|n| n.is_empty())
            .unwrap_or(false);
    let lowers = match lowers {
        Some(ls) => Some(
            ls.iter()
                .map(|p| RootDir::open(p))
                .collect::<Result<Vec<_>>>()?,
        ),
        None => None,
    };
    let mut ap = Applier {
        root: &rootdir,
        format,
        planted: HashSet::new(),
        created: HashSet::new(),
        dir_times: Vec::new(),
        last_parent: None,
        buf: Vec::new(),
        lowers,
        copied_up: Vec::new(),
        copyup_dir_times: Vec::new(),
        umask: umask(),
        root_ids: running_as_root(),
        fresh,
    };
    let mut stats = ApplyStats::default();
    let mut ar = tar::Archive::new(reader);
    let entries = ar
        .entries()
        .map_err(|e| Error::io("reading layer tar", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("reading layer tar entry", e))?;
        ap.entry(entry)?;
        stats.entries += 1;
    }
    ap.fix_dir_times()?;
    stats.copied_up = ap.copied_up.len() as u64;
    Ok(stats)
}

/// The process umask (`/proc/self/status` reports it without changing it). Unknown counts as
/// masking everything, which only costs a chmod per file.
fn umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
}

/// What a file created in a directory gets without chown/chmod.
#[derive(Debug, Clone, Copy, Default)]
struct DirDefaults {
    /// Group 0 (from the directory, as with setgid dirs or `grpid` mounts, or from our egid).
    gid0: bool,
    /// No default ACL, so the create mode minus the umask is the file's mode.
    no_default_acl: bool,
}

/// Effective uid and gid are 0 (new files are then owned by 0:0 unless the directory is setgid).
fn running_as_root() -> bool {
    // SAFETY: plain syscalls without arguments.
    unsafe { libc::geteuid() == 0 && libc::getegid() == 0 }
}

fn ftype(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

fn parse_meta<R: Read>(e: &mut tar::Entry<'_, R>) -> Result<Meta> {
    let raw = e.path_bytes().into_owned();
    let h = e.header();
    let bad = |what: &str, err: io::Error| {
        Error::Invalid(format!(
            "layer entry {:?}: bad {what}: {err}",
            String::from_utf8_lossy(&raw)
        ))
    };
    let old = h.as_old();
    // Some writers leave numeric fields empty; like GNU tar, read those as 0.
    let blank = |f: &[u8]| f.iter().all(|b| *b == 0 || *b == b' ');
    let mut m = Meta {
        mode: if blank(&old.mode) {
            0o644
        } else {
            h.mode().map_err(|x| bad("mode", x))? & 0o7777
        },
        uid: if blank(&old.uid) {
            0
        } else {
            h.uid().map_err(|x| bad("uid", x))? as u32
        },
        gid: if blank(&old.gid) {
            0
        } else {
            h.gid().map_err(|x| bad("gid", x))? as u32
        },
        mtime_sec: if blank(&old.mtime) {
            0
        } else {
            h.mtime().map_err(|x| bad("mtime", x))? as i64
        },
        mtime_nsec: 0,
        xattrs: Vec::new(),
    };
    if let Some(exts) = e.pax_extensions().map_err(|x| bad("pax header", x))? {
        for ext in exts {
            let ext = ext.map_err(|x| bad("pax header", x))?;
            let k = ext.key_bytes();
            let v = ext.value_bytes();
            if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                m.xattrs.push((name.to_vec(), v.to_vec()));
            } else if k == b"uid" {
                if let Some(n) = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                {
                    m.uid = n;
                }
            } else if k == b"gid" {
                if let Some(n) = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                {
                    m.gid = n;
                }
            } else if k == b"mtime" {
                if let Ok(s) = std::str::from_utf8(v) {
                    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
                    if let Ok(sec) = sec.parse::<i64>() {
                        m.mtime_sec = sec;
                        let mut f: String = frac.chars().take(9).collect();
                        while f.len() < 9 {
                            f.push('0');
                        }
                        m.mtime_nsec = f.parse::<i64>().unwrap_or(0);
                    }
                }
            }
        }
    }
    Ok(m)
}

impl Applier<'_> {
    fn ctx(&self, what: &str, raw: &[u8]) -> String {
        format!(
            "{what} {:?} in {}",
            String::from_utf8_lossy(raw),
            self.root.path().display()
        )
    }

    fn mark_created(&mut self, comps: &[OsString]) {
        for i in 1..=comps.len() {
            self.created.insert(fsops::key(&comps[..i]));
        }
    }

    fn parent(
        &mut self,
        raw: &[u8],
        comps: &[OsString],
        create: bool,
    ) -> Result<Option<Rc<OwnedFd>>> {
        if let Some((k, fd, _)) = &self.last_parent {
            if k.as_slice() == comps {
                return Ok(Some(Rc::clone(fd)));
            }
        }
        let Some(fd) = self.parent_uncached(raw, comps, create)? else {
            return Ok(None);
        };
        let fd = Rc::new(fd);
        self.last_parent = Some((comps.to_vec(), Rc::clone(&fd), None));
        Ok(Some(fd))
    }

    /// Defaults for new files in `comps`; unknown (not the cached parent) counts as none.
    fn defaults(&mut self, comps: &[OsString]) -> DirDefaults {
        match &mut self.last_parent {
            Some((k, fd, d)) if k.as_slice() == comps => *d.get_or_insert_with(|| DirDefaults {
                gid0: fsops::fstat(fd.as_raw_fd())
                    .map(|st| st.st_gid == 0)
                    .unwrap_or(false),
                no_default_acl: fsops::get_xattr_fd(fd.as_raw_fd(), b"system.posix_acl_default")
                    .is_none(),
            }),
            _ => DirDefaults::default(),
        }
    }

    /// Forget the cached parent handle (after anything that removes or replaces nodes).
    fn invalidate(&mut self) {
        self.last_parent = None;
    }

    fn parent_uncached(
        &mut self,
        raw: &[u8],
        comps: &[OsString],
        create: bool,
    ) -> Result<Option<OwnedFd>> {
        let planted = &self.planted;
        let mut newly = Vec::new();
        let r = self.root.resolve_dir(
            raw,
            comps,
            create,
            &|p: &Path| planted.contains(p),
            &mut |p: &Path| newly.push(p.to_path_buf()),
        );
        for p in newly {
            self.created.insert(p);
        }
        r
    }

    fn entry<R: Read>(&mut self, mut e: tar::Entry<'_, R>) -> Result<()> {
        let raw = e.path_bytes().into_owned();
        let et = e.header().entry_type();
        if matches!(
            et,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = fsops::clean_components(&raw)?;
        let meta = parse_meta(&mut e)?;
        if comps.is_empty() {
            // The root directory itself ("./"): only metadata applies.
            if et.is_dir() {
                // Its owner/ACL may change: cached defaults for new files no longer hold.
                self.invalidate();
                let fd = self.root.raw();
                self.set_meta_fd(fd, true, &meta, &raw)?;
                self.dir_times
                    .push((Vec::new(), meta.mtime_sec, meta.mtime_nsec));
            }
            return Ok(());
        }
        let name = comps[comps.len() - 1].clone();
        let parent_comps = &comps[..comps.len() - 1];
        let nb = name.as_bytes();
        if let Some(target) = nb.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            if nb == OPAQUE_MARKER.as_bytes() {
                return self.opaque(&raw, parent_comps);
            }
            if target.is_empty()
                || target == b"."
                || target == b".."
                || target.starts_with(b".wh.") && target.len() == 4
            {
                return Err(Error::hostile(
                    &raw,
                    "whiteout names no file inside its directory",
                ));
            }
            return self.whiteout(&raw, parent_comps, OsStr::from_bytes(target));
        }
        let pfd = self
            .parent(&raw, parent_comps, true)?
            .ok_or_else(|| Error::hostile(&raw, "parent directory could not be created"))?;
        let p = pfd.as_raw_fd();
        let existing = if self.fresh && !self.created.contains(&fsops::key(&comps)) {
            None
        } else {
            fsops::lstat_at(p, &name).ctx(|| self.ctx("stat", &raw))?
        };
        let is_dir_entry = et.is_dir();
        if let Some(st) = existing {
            let keep = is_dir_entry && ftype(&st) == libc::S_IFDIR;
            if !keep {
                self.invalidate();
                if et.is_hard_link() {
                    // A hardlink to itself is a no-op.
                    if let Some(l) = e.link_name_bytes() {
                        if fsops::clean_components(&l)? == comps {
                            return Ok(());
                        }
                    }
                }
                fsops::remove_all_at(p, &name).ctx(|| self.ctx("removing existing", &raw))?;
            }
        }
        self.mark_created(&comps);
        match et {
            tar::EntryType::Directory => {
                match fsops::mkdirat(p, &name, 0o700) {
                    Ok(()) => {}
                    Err(err) if err.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(err) => return Err(Error::io(self.ctx("mkdir", &raw), err)),
                }
                let fd = fsops::openat(p, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .ctx(|| self.ctx("open dir", &raw))?;
                self.set_meta_fd(fd.as_raw_fd(), false, &meta, &raw)?;
                self.dir_times
                    .push((comps.clone(), meta.mtime_sec, meta.mtime_nsec));
                // Entries inside it usually follow: it becomes the cached parent (its defaults
                // for new files are looked up after its own owner and xattrs are set).
                self.last_parent = Some((comps.clone(), Rc::new(fd), None));
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                // Created with its final permission bits when the umask keeps them (no special
                // bits), and owned by 0:0 without a chown when that is what the kernel gives it.
                let dd = self.defaults(parent_comps);
                let perm = meta.mode & 0o777;
                let exact_mode =
                    dd.no_default_acl && meta.mode & 0o7000 == 0 && perm & self.umask == 0;
                let skip_chown = meta.uid == 0 && meta.gid == 0 && dd.gid0 && self.root_ids;
                let fd = fsops::openat(
                    p,
                    &name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                    if exact_mode { perm } else { 0o600 },
                )
                .ctx(|| self.ctx("create", &raw))?;
                let mut f = std::fs::File::from(fd);
                if et == tar::EntryType::GNUSparse {
                    let mut buf = std::mem::take(&mut self.buf);
                    let r = copy_sparse(&mut e, &mut f, &mut buf);
                    self.buf = buf;
                    r.ctx(|| self.ctx("write", &raw))?;
                } else {
                    let mut buf = std::mem::take(&mut self.buf);
                    let r = copy_data(&mut e, &mut f, &mut buf);
                    self.buf = buf;
                    r.ctx(|| self.ctx("write", &raw))?;
                }
                if !skip_chown {
                    fsops::fchown(f.as_raw_fd(), meta.uid, meta.gid)
                        .ctx(|| self.ctx("chown", &raw))?;
                }
                // After the chown, which clears setuid/setgid bits.
                if !exact_mode {
                    fsops::fchmod(f.as_raw_fd(), meta.mode).ctx(|| self.ctx("chmod", &raw))?;
                }
                // xattrs after chown: chown clears security.capability.
                self.set_xattrs(f.as_raw_fd(), false, &meta, &raw)?;
                fsops::futimes(f.as_raw_fd(), meta.mtime_sec, meta.mtime_nsec)
                    .ctx(|| self.ctx("set times", &raw))?;
            }
            tar::EntryType::Symlink => {
                // A new leaf in the cached parent: that handle and its defaults stay valid.
                let target = e
                    .link_name_bytes()
                    .ok_or_else(|| Error::hostile(&raw, "symlink without target"))?
                    .into_owned();
                fsops::symlinkat(&target, p, &name).ctx(|| self.ctx("symlink", &raw))?;
                fsops::lchownat(p, &name, meta.uid, meta.gid).ctx(|| self.ctx("chown", &raw))?;
                if !meta.xattrs.is_empty() {
                    let fd =
                        fsops::openat(p, &name, libc::O_PATH, 0).ctx(|| self.ctx("open", &raw))?;
                    self.set_xattrs(fd.as_raw_fd(), true, &meta, &raw)?;
                }
                fsops::lutimesat(p, &name, meta.mtime_sec, meta.mtime_nsec)
                    .ctx(|| self.ctx("set times", &raw))?;
                self.planted.insert(fsops::key(&comps));
            }
            tar::EntryType::Link => {
                let link = e
                    .link_name_bytes()
                    .ok_or_else(|| Error::hostile(&raw, "hardlink without target"))?
                    .into_owned();
                let lcomps = fsops::clean_components(&link).map_err(|_| {
                    Error::hostile(
                        &raw,
                        format!(
                            "hardlink target {:?} is outside the rootfs",
                            String::from_utf8_lossy(&link)
                        ),
                    )
                })?;
                if lcomps.is_empty() {
                    return Err(Error::hostile(&raw, "hardlink to the root directory"));
                }
                let tname = &lcomps[lcomps.len() - 1];
                let overlay = self.format == ApplyFormat::Overlay;
                let tpfd = match self.parent(&raw, &lcomps[..lcomps.len() - 1], false)? {
                    Some(fd) => Some(fd),
                    None if overlay => None,
                    None => {
                        return Err(Error::Invalid(format!(
                            "layer entry {:?}: hardlink target {:?} does not exist",
                            String::from_utf8_lossy(&raw),
                            String::from_utf8_lossy(&link)
                        )))
                    }
                };
                let tst = match &tpfd {
                    Some(fd) => fsops::lstat_at(fd.as_raw_fd(), tname)
                        .ctx(|| self.ctx("stat link target of", &raw))?,
                    None => None,
                };
                match (tpfd, tst) {
                    (Some(tpfd), Some(st)) => {
                        self.link_existing(&raw, &link, tpfd.as_raw_fd(), tname, &st, p, &name)?;
                    }
                    _ if overlay => {
                        if lcomps == comps {
                            // A hardlink to itself: the lower file stays as it is.
                            return Ok(());
                        }
                        self.link_from_lower(&raw, &link, &lcomps, p, &name)?;
                    }
                    _ => {
                        return Err(Error::Invalid(format!(
                            "layer entry {:?}: hardlink target {:?} does not exist",
                            String::from_utf8_lossy(&raw),
                            String::from_utf8_lossy(&link)
                        )))
                    }
                }
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind = match et {
                    tar::EntryType::Char => libc::S_IFCHR,
                    tar::EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                let major = e.header().device_major().ok().flatten().unwrap_or(0);
                let minor = e.header().device_minor().ok().flatten().unwrap_or(0);
                let dev = libc::makedev(major, minor);
                fsops::mknodat(p, &name, kind | 0o600, dev).ctx(|| self.ctx("mknod", &raw))?;
                fsops::lchownat(p, &name, meta.uid, meta.gid).ctx(|| self.ctx("chown", &raw))?;
                fsops::chmodat(p, &name, meta.mode).ctx(|| self.ctx("chmod", &raw))?;
                if !meta.xattrs.is_empty() {
                    let fd =
                        fsops::openat(p, &name, libc::O_PATH, 0).ctx(|| self.ctx("open", &raw))?;
                    self.set_xattrs(fd.as_raw_fd(), true, &meta, &raw)?;
                }
                fsops::lutimesat(p, &name, meta.mtime_sec, meta.mtime_nsec)
                    .ctx(|| self.ctx("set times", &raw))?;
            }
            other => {
                tracing::warn!(
                    "skipping layer entry {:?} of unsupported type {:?}",
                    String::from_utf8_lossy(&raw),
                    other
                );
            }
        }
        Ok(())
    }

    /// Link `dest_name` (in `dest_dir`) to the node `tname` (stat `st`) that the target holds in
    /// `tdir`: never to a directory, and in overlay format never to a whiteout.
    #[allow(clippy::too_many_arguments)]
    fn link_existing(
        &self,
        raw: &[u8],
        link: &[u8],
        tdir: RawFd,
        tname: &OsStr,
        st: &libc::stat,
        dest_dir: RawFd,
        dest_name: &OsStr,
    ) -> Result<()> {
        if ftype(st) == libc::S_IFDIR {
            return Err(Error::hostile(raw, "hardlink to a directory"));
        }
        if self.format == ApplyFormat::Overlay && ftype(st) == libc::S_IFCHR && st.st_rdev == 0 {
            return Err(Error::Invalid(format!(
                "layer entry {:?}: hardlink target {:?} was removed by a whiteout",
                String::from_utf8_lossy(raw),
                String::from_utf8_lossy(link)
            )));
        }
        fsops::linkat(tdir, tname, dest_dir, dest_name).ctx(|| self.ctx("hardlink", raw))
    }

    /// Overlay format: the link target is not in this layer; copy it up from the nearest lower
    /// layer that shows it and link to the copy.
    fn link_from_lower(
        &mut self,
        raw: &[u8],
        link: &[u8],
        lcomps: &[OsString],
        dest_dir: i32,
        dest_name: &OsStr,
    ) -> Result<()> {
        self.invalidate();
        let needs_lowers = || {
            Error::Invalid(format!(
                "layer entry {:?}: hardlink target {:?} {}",
                String::from_utf8_lossy(raw),
                String::from_utf8_lossy(link),
                lower_link::NEEDS_LOWER_MARK
            ))
        };
        let lowers = self.lowers.as_ref().ok_or_else(needs_lowers)?;
        let real = lower_link::resolve(self.root.raw(), lowers, raw, link, lcomps)?;
        let (tname, tparent) = real
            .split_last()
            .ok_or_else(|| Error::hostile(raw, "hardlink to the root directory"))?;
        if real != lcomps {
            // Through a lower symlink the target may be a node this layer already has.
            if let Some(tp) = self.parent(raw, tparent, false)? {
                let st = fsops::lstat_at(tp.as_raw_fd(), tname)
                    .ctx(|| self.ctx("stat link target of", raw))?;
                if let Some(st) = st {
                    return self.link_existing(
                        raw,
                        link,
                        tp.as_raw_fd(),
                        tname,
                        &st,
                        dest_dir,
                        dest_name,
                    );
                }
            }
        }
        let lowers = self.lowers.as_ref().ok_or_else(needs_lowers)?;
        let found = lower_link::find(self.root.raw(), lowers, raw, link, &real)?;
        let cu = lower_link::copy_up(self.root.raw(), &found, raw, &real)?;
        fsops::linkat(cu.parent.as_raw_fd(), tname, dest_dir, dest_name)
            .ctx(|| self.ctx("hardlink", raw))?;
        if cu.is_symlink {
            self.planted.insert(fsops::key(&real));
        }
        self.copyup_dir_times.extend(cu.dir_times);
        self.copied_up.push(real);
        Ok(())
    }

    /// Overlay format, opaque `dir`: lower content copied up under it is hidden too.
    fn drop_copied_up_under(&mut self, raw: &[u8], dir: &[OsString]) -> Result<()> {
        let under: Vec<Vec<OsString>> = self
            .copied_up
            .iter()
            .filter(|c| c.len() > dir.len() && c.starts_with(dir))
            .cloned()
            .collect();
        for c in under {
            let k = fsops::key(&c);
            if self.created.contains(&k) {
                continue;
            }
            if let Some(pfd) = self.parent(raw, &c[..c.len() - 1], false)? {
                fsops::remove_all_at(pfd.as_raw_fd(), &c[c.len() - 1])
                    .ctx(|| self.ctx("opaque removal under", raw))?;
            }
        }
        self.invalidate();
        Ok(())
    }

    fn set_xattrs(&self, fd: i32, path_fd: bool, meta: &Meta, raw: &[u8]) -> Result<()> {
        for (k, v) in &meta.xattrs {
            if k.starts_with(b"trusted.overlay.") {
                // A layer must never smuggle overlayfs control attributes.
                continue;
            }
            fsops::set_xattr_fd(fd, path_fd, k, v).map_err(|e| {
                Error::io(
                    format!(
                        "setting xattr {} on {:?} in {}",
                        String::from_utf8_lossy(k),
                        String::from_utf8_lossy(raw),
                        self.root.path().display()
                    ),
                    e,
                )
            })?;
        }
        Ok(())
    }

    fn set_meta_fd(&self, fd: i32, path_fd: bool, meta: &Meta, raw: &[u8]) -> Result<()> {
        if path_fd {
            // The root handle is O_PATH; reopen it for fchown/fchmod.
            let real = fsops::openat(fd, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .ctx(|| self.ctx("open", raw))?;
            return self.set_meta_fd(real.as_raw_fd(), false, meta, raw);
        }
        fsops::fchown(fd, meta.uid, meta.gid).ctx(|| self.ctx("chown", raw))?;
        fsops::fchmod(fd, meta.mode).ctx(|| self.ctx("chmod", raw))?;
        // xattrs after chown: chown clears security.capability.
        self.set_xattrs(fd, false, meta, raw)
    }

    fn whiteout(&mut self, raw: &[u8], parent: &[OsString], target: &OsStr) -> Result<()> {
        // OCI: a whiteout only applies to lower layers; what this layer created stays.
        self.invalidate();
        let mut tkey = fsops::key(parent);
        tkey.push(target);
        if self.created.contains(&tkey) {
            return Ok(());
        }
        match self.format {
            ApplyFormat::Merged => {
                let pfd = match self.parent(raw, parent, false)? {
                    Some(fd) => fd,
                    None => return Ok(()),
                };
                fsops::remove_all_at(pfd.as_raw_fd(), target).ctx(|| self.ctx("whiteout", raw))?;
            }
            ApplyFormat::Overlay => {
                let pfd = self
                    .parent(raw, parent, true)?
                    .ok_or_else(|| Error::hostile(raw, "parent directory could not be created"))?;
                fsops::remove_all_at(pfd.as_raw_fd(), target).ctx(|| self.ctx("whiteout", raw))?;
                fsops::mknodat(pfd.as_raw_fd(), target, libc::S_IFCHR, 0)
                    .ctx(|| self.ctx("creating overlay whiteout for", raw))?;
                let mut comps = parent.to_vec();
                comps.push(target.to_os_string());
                self.mark_created(&comps);
            }
        }
        Ok(())
    }

    fn opaque(&mut self, raw: &[u8], dir: &[OsString]) -> Result<()> {
        self.invalidate();
        let (pfd, name) = if dir.is_empty() {
            (None, None)
        } else {
            let pfd = self
                .parent(raw, &dir[..dir.len() - 1], true)?
                .ok_or_else(|| Error::hostile(raw, "parent directory could not be created"))?;
            (Some(pfd), Some(dir[dir.len() - 1].clone()))
        };
        let dfd = match (&pfd, &name) {
            (Some(p), Some(n)) => {
                match fsops::lstat_at(p.as_raw_fd(), n).ctx(|| self.ctx("stat", raw))? {
                    None => {
                        fsops::mkdirat(p.as_raw_fd(), n, 0o755).ctx(|| self.ctx("mkdir", raw))?;
                        self.mark_created(dir);
                    }
                    Some(st) if ftype(&st) == libc::S_IFDIR => {}
                    Some(_) => {
                        return Err(Error::hostile(raw, "opaque marker inside a non-directory"))
                    }
                }
                fsops::openat(p.as_raw_fd(), n, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .ctx(|| self.ctx("open", raw))?
            }
            _ => fsops::openat(
                self.root.raw(),
                OsStr::new("."),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )
            .ctx(|| self.ctx("open", raw))?,
        };
        match self.format {
            ApplyFormat::Overlay => {
                fsops::set_xattr_fd(
                    dfd.as_raw_fd(),
                    false,
                    OVERLAY_OPAQUE_XATTR.as_bytes(),
                    b"y",
                )
                .ctx(|| self.ctx("setting overlay opaque xattr for", raw))?;
                // Keep the dir: an opaque dir must exist in this layer.
                self.mark_created(dir);
                if !self.copied_up.is_empty() {
                    self.drop_copied_up_under(raw, dir)?;
                }
            }
            ApplyFormat::Merged => {
                let base = fsops::key(dir);
                self.prune_lower(dfd.as_raw_fd(), &base, raw)?;
            }
        }
        Ok(())
    }

    /// Remove what lower layers put under a directory, keeping what this layer created.
    fn prune_lower(&self, dfd: i32, base: &Path, raw: &[u8]) -> Result<()> {
        for child in fsops::read_dir_names(dfd).ctx(|| self.ctx("listing", raw))? {
            let p = base.join(&child);
            if self.created.contains(&p) {
                let st = fsops::lstat_at(dfd, &child).ctx(|| self.ctx("stat", raw))?;
                if let Some(st) = st {
                    if ftype(&st) == libc::S_IFDIR {
                        let sub = fsops::openat(dfd, &child, libc::O_PATH | libc::O_DIRECTORY, 0)
                            .ctx(|| self.ctx("open", raw))?;
                        self.prune_lower(sub.as_raw_fd(), &p, raw)?;
                    }
                }
            } else {
                fsops::remove_all_at(dfd, &child).ctx(|| self.ctx("opaque removal under", raw))?;
            }
        }
        Ok(())
    }

    fn fix_dir_times(&mut self) -> Result<()> {
        self.invalidate();
        // Copy-up dirs first: a directory entry of this layer wins over the lower's time.
        // (The list is walked backwards.)
        let mut times = std::mem::take(&mut self.dir_times);
        times.extend(std::mem::take(&mut self.copyup_dir_times));
        for (comps, sec, nsec) in times.iter().rev() {
            let raw = fsops::key(comps).into_os_string();
            if comps.is_empty() {
                fsops::futimes(
                    fsops::openat(
                        self.root.raw(),
                        OsStr::new("."),
                        libc::O_RDONLY | libc::O_DIRECTORY,
                        0,
                    )
                    .ctx(|| self.ctx("open", b"."))?
                    .as_raw_fd(),
                    *sec,
                    *nsec,
                )
                .ctx(|| self.ctx("set times", b"."))?;
                continue;
            }
            let pfd = match self.parent(raw.as_bytes(), &comps[..comps.len() - 1], false)? {
                Some(fd) => fd,
                None => continue,
            };
            let name = &comps[comps.len() - 1];
            match fsops::lstat_at(pfd.as_raw_fd(), name).ctx(|| self.ctx("stat", raw.as_bytes()))? {
                Some(st) if ftype(&st) == libc::S_IFDIR => {
                    fsops::lutimesat(pfd.as_raw_fd(), name, *sec, *nsec)
                        .ctx(|| self.ctx("set times", raw.as_bytes()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn copy_data<R: Read>(r: &mut R, f: &mut std::fs::File, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.len() < 256 * 1024 {
        buf.resize(256 * 1024, 0);
    }
    loop {
        let n = match r.read(&mut buf[..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        f.write_all(&buf[..n])?;
    }
}

fn copy_sparse<R: Read>(r: &mut R, f: &mut std::fs::File, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.len() < 64 * 1024 {
        buf.resize(64 * 1024, 0);
    }
    let chunk = 64 * 1024;
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf[..chunk]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf[..n].iter().all(|b| *b == 0) {
            f.seek(SeekFrom::Current(n as i64))?;
        } else {
            f.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    f.set_len(total)
}

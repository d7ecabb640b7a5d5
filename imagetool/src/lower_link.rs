//! Hardlinks in an overlay-format layer whose target exists only in a lower layer.
//!
//! An overlay lower dir cannot hold a hardlink to an inode of another lower dir, so, as
//! overlayfs' own copy-up (and containerd's apply onto a mounted snapshot) would, the target is
//! copied from the nearest lower layer that shows it into this layer and the link is made to the
//! copy; in the merged view both names then share one inode, as in copy mode. The target is
//! looked up following overlayfs' visibility rules: a whiteout or an opaque directory in this
//! layer or in any layer in between hides what lies below. Symlinks of lower layers among the
//! target's parent directories are resolved in that merged view, confined to the image root as
//! copy mode's lookup is (one made by this layer is refused, as in copy mode); the resulting
//! path is then walked one component at a time with O_NOFOLLOW inside each layer dir, so nothing
//! outside the layer dirs is ever read or written.

use crate::apply::is_overlay_opaque;
use crate::error::{Error, IoContext, Result};
use crate::fsops::{self, RootDir};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// Marker in the error raised when such a hardlink is met but no lower layers were supplied
/// (the caller extracts that layer again once its lower layers are cached).
pub const NEEDS_LOWER_MARK: &str = "is only in a lower layer";

/// Whether `e` is the error of a hardlink to a lower layer met without lower layers at hand.
pub fn needs_lower_layers(e: &Error) -> bool {
    matches!(e, Error::Invalid(m) if m.contains(NEEDS_LOWER_MARK))
}

/// Where the link target was found.
pub(crate) struct Found {
    /// For each parent directory of the target: the topmost lower dir providing it.
    parent_sources: Vec<OwnedFd>,
    /// The lower directory holding the target.
    src_dir: OwnedFd,
    /// The target's stat.
    st: libc::stat,
}

fn ftype(st: &libc::stat) -> u32 {
    st.st_mode & libc::S_IFMT
}

/// A 0/0 character device: overlayfs' whiteout.
fn is_whiteout(st: &libc::stat) -> bool {
    ftype(st) == libc::S_IFCHR && st.st_rdev == 0
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn open_dir_at(dir: RawFd, name: &OsStr) -> io::Result<OwnedFd> {
    fsops::openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
}

/// Context for an I/O error met while looking up the target `link` of entry `raw`.
fn target_ctx(what: &str, raw: &[u8], link: &[u8]) -> String {
    format!("{what} hardlink target {:?} of {:?}", text(link), text(raw))
}

fn not_found(raw: &[u8], link: &[u8], why: &str) -> Error {
    Error::Invalid(format!(
        "layer entry {:?}: hardlink target {:?} {why}",
        text(raw),
        text(link)
    ))
}

fn through_symlink(raw: &[u8], link: &[u8]) -> Error {
    Error::hostile(
        raw,
        format!(
            "hardlink target {:?} goes through a symlink of this layer",
            text(link)
        ),
    )
}

/// One directory of the merged view (this layer over the lower layers).
struct Level {
    /// This layer's directory at this level, while it has one.
    here: Option<OwnedFd>,
    /// Lower dirs still contributing at this level, topmost first.
    cands: Vec<OwnedFd>,
    /// For each directory walked so far: the topmost lower dir providing it.
    parent_sources: Vec<OwnedFd>,
}

/// Walk the directories `dirs` of the merged view of `layer` (topmost) over `lowers` (bottom
/// first). Each must be a directory; a symlink on the way is refused (resolve them first).
fn descend(
    layer: RawFd,
    lowers: &[RootDir],
    raw: &[u8],
    link: &[u8],
    dirs: &[OsString],
) -> Result<Level> {
    let ctx = |what: &str| target_ctx(what, raw, link);
    let dup = |fd: RawFd| -> Result<OwnedFd> {
        fsops::openat(fd, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)
            .ctx(|| ctx("opening a layer for"))
    };
    let mut here = Some(dup(layer)?);
    let mut cands: Vec<OwnedFd> = Vec::new();
    for l in lowers.iter().rev() {
        cands.push(dup(l.raw())?);
    }
    let mut parent_sources = Vec::new();
    for comp in dirs {
        if let Some(h) = here.take() {
            match fsops::lstat_at(h.as_raw_fd(), comp).ctx(|| ctx("looking up"))? {
                None => {}
                Some(st) if is_whiteout(&st) => {
                    return Err(not_found(raw, link, "was removed by a whiteout"))
                }
                Some(st) if ftype(&st) == libc::S_IFDIR => {
                    let fd = open_dir_at(h.as_raw_fd(), comp).ctx(|| ctx("opening"))?;
                    if is_overlay_opaque(fd.as_raw_fd()) {
                        cands.clear();
                    }
                    here = Some(fd);
                }
                Some(st) if ftype(&st) == libc::S_IFLNK => return Err(through_symlink(raw, link)),
                Some(_) => return Err(not_found(raw, link, "has a non-directory in its path")),
            }
        }
        let mut next: Vec<OwnedFd> = Vec::new();
        for c in &cands {
            match fsops::lstat_at(c.as_raw_fd(), comp).ctx(|| ctx("looking up"))? {
                None => continue,
                Some(st) if is_whiteout(&st) => break,
                Some(st) if ftype(&st) == libc::S_IFDIR => {
                    let fd = open_dir_at(c.as_raw_fd(), comp).ctx(|| ctx("opening"))?;
                    let opaque = is_overlay_opaque(fd.as_raw_fd());
                    next.push(fd);
                    if opaque {
                        break;
                    }
                }
                Some(st) => {
                    // A non-directory hides what lies below it; on top it breaks the path.
                    if next.is_empty() && here.is_none() {
                        if ftype(&st) == libc::S_IFLNK {
                            return Err(Error::hostile(
                                raw,
                                format!("hardlink target {:?} goes through a symlink", text(link)),
                            ));
                        }
                        return Err(not_found(raw, link, "has a non-directory in its path"));
                    }
                    break;
                }
            }
        }
        cands = next;
        let Some(top) = cands.first() else {
            return Err(not_found(raw, link, "does not exist"));
        };
        parent_sources.push(dup(top.as_raw_fd())?);
    }
    Ok(Level {
        here,
        cands,
        parent_sources,
    })
}

/// What the merged view shows under one name of a [`Level`].
enum Top {
    /// Nothing, or a whiteout (the reason for messages).
    Missing(&'static str),
    /// A node of the layer being extracted.
    InLayer(libc::stat),
    /// A node of the lower dir `level.cands[i]`.
    InLower(usize, libc::stat),
}

fn top_entry(level: &Level, raw: &[u8], link: &[u8], name: &OsStr) -> Result<Top> {
    let ctx = |what: &str| target_ctx(what, raw, link);
    if let Some(h) = &level.here {
        match fsops::lstat_at(h.as_raw_fd(), name).ctx(|| ctx("looking up"))? {
            None => {}
            Some(st) if is_whiteout(&st) => return Ok(Top::Missing("was removed by a whiteout")),
            Some(st) => return Ok(Top::InLayer(st)),
        }
    }
    for (i, c) in level.cands.iter().enumerate() {
        match fsops::lstat_at(c.as_raw_fd(), name).ctx(|| ctx("looking up"))? {
            None => continue,
            Some(st) if is_whiteout(&st) => {
                return Ok(Top::Missing("was removed by a whiteout in a lower layer"))
            }
            Some(st) => return Ok(Top::InLower(i, st)),
        }
    }
    Ok(Top::Missing("does not exist"))
}

/// Symlinks followed while resolving one hardlink target (the kernel's limit).
const MAX_SYMLINKS: usize = 40;
/// Path components looked at while resolving one hardlink target (each lookup walks the path
/// so far again, so a hostile path of thousands of components must stop early).
const MAX_COMPONENTS: usize = 256;

/// Resolve lower-layer symlinks among the parent directories of `target` in the merged view,
/// the way copy mode's lookup confined to the rootfs does: absolute targets start again at the
/// image root and `..` never climbs above it. Returns the symlink-free path of the target (its
/// own last component is never followed: a hardlink to a symlink links the symlink).
pub(crate) fn resolve(
    layer: RawFd,
    lowers: &[RootDir],
    raw: &[u8],
    link: &[u8],
    target: &[OsString],
) -> Result<Vec<OsString>> {
    let Some((name, parents)) = target.split_last() else {
        return Err(Error::hostile(raw, "hardlink to the root directory"));
    };
    let mut todo: std::collections::VecDeque<OsString> = parents.iter().cloned().collect();
    let mut done: Vec<OsString> = Vec::new();
    let mut followed = 0;
    let mut looked_at = 0;
    while let Some(comp) = todo.pop_front() {
        looked_at += 1;
        if looked_at > MAX_COMPONENTS {
            return Err(not_found(raw, link, "has too many path components"));
        }
        match comp.as_bytes() {
            b"" | b"." => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let level = descend(layer, lowers, raw, link, &done)?;
        let (st, lower) = match top_entry(&level, raw, link, &comp)? {
            Top::Missing(why) => return Err(not_found(raw, link, why)),
            Top::InLayer(st) => (st, None),
            Top::InLower(i, st) => (st, Some(&level.cands[i])),
        };
        match (ftype(&st), lower) {
            (libc::S_IFDIR, _) => done.push(comp),
            // Made by this layer: as in copy mode, never resolved through.
            (libc::S_IFLNK, None) => return Err(through_symlink(raw, link)),
            (libc::S_IFLNK, Some(dir)) => {
                let t = fsops::readlinkat(dir.as_raw_fd(), &comp)
                    .ctx(|| target_ctx("reading symlink in", raw, link))?;
                followed += 1;
                if followed > MAX_SYMLINKS {
                    return Err(not_found(raw, link, "goes through too many symlinks"));
                }
                if t.first() == Some(&b'/') {
                    done.clear();
                }
                for part in t.split(|b| *b == b'/').rev() {
                    todo.push_front(OsStr::from_bytes(part).to_os_string());
                }
            }
            _ => return Err(not_found(raw, link, "has a non-directory in its path")),
        }
    }
    done.push(name.clone());
    Ok(done)
}

/// Find `target` (clean components, no symlinks: see [`resolve`]) in the merged view of
/// `layer` (the layer being extracted, topmost) over `lowers` (bottom first), in a lower layer.
pub(crate) fn find(
    layer: RawFd,
    lowers: &[RootDir],
    raw: &[u8],
    link: &[u8],
    target: &[OsString],
) -> Result<Found> {
    let ctx = |what: &str| target_ctx(what, raw, link);
    let Some((name, parents)) = target.split_last() else {
        return Err(Error::hostile(raw, "hardlink to the root directory"));
    };
    let level = descend(layer, lowers, raw, link, parents)?;
    match top_entry(&level, raw, link, name)? {
        Top::Missing(why) => Err(not_found(raw, link, why)),
        Top::InLower(_, st) if ftype(&st) == libc::S_IFDIR => {
            Err(Error::hostile(raw, "hardlink to a directory"))
        }
        Top::InLower(i, st) => {
            let src_dir = fsops::openat(
                level.cands[i].as_raw_fd(),
                OsStr::new("."),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .ctx(|| ctx("opening a layer for"))?;
            Ok(Found {
                parent_sources: level.parent_sources,
                src_dir,
                st,
            })
        }
        // The caller links targets this layer has itself; none should reach here.
        Top::InLayer(_) => Err(not_found(raw, link, "is in this layer, not a lower one")),
    }
}

/// What a copy-up made in this layer.
pub(crate) struct CopiedUp {
    /// The directory (in this layer) now holding the copy.
    pub parent: OwnedFd,
    /// Directories created on the way, with the lower dir's mtime to restore at the end.
    pub dir_times: Vec<(Vec<OsString>, i64, i64)>,
    /// The copy is a symlink (later entries must never resolve through it).
    pub is_symlink: bool,
}

fn copy_xattrs(src: RawFd, src_is_path: bool, dst: RawFd, dst_is_path: bool) -> io::Result<()> {
    for (k, v) in fsops::list_xattrs_fd(src, src_is_path)? {
        if k.starts_with(b"trusted.overlay.") {
            continue;
        }
        fsops::set_xattr_fd(dst, dst_is_path, &k, &v)?;
    }
    Ok(())
}

/// Copy the found target into this layer at `target`, creating its missing parent directories
/// with the attributes of the lower directories they stand for.
pub(crate) fn copy_up(
    layer: RawFd,
    found: &Found,
    raw: &[u8],
    target: &[OsString],
) -> Result<CopiedUp> {
    let ctx = |what: &str| {
        format!(
            "{what} while copying up the hardlink target of {:?}",
            text(raw)
        )
    };
    let Some((name, parents)) = target.split_last() else {
        return Err(Error::hostile(raw, "hardlink to the root directory"));
    };
    let mut cur = fsops::openat(layer, OsStr::new("."), libc::O_PATH | libc::O_DIRECTORY, 0)
        .ctx(|| ctx("opening layer"))?;
    let mut dir_times = Vec::new();
    for (i, comp) in parents.iter().enumerate() {
        match fsops::lstat_at(cur.as_raw_fd(), comp).ctx(|| ctx("stat"))? {
            Some(st) if ftype(&st) == libc::S_IFDIR => {}
            Some(_) => return Err(Error::hostile(raw, "copy-up path is not a directory")),
            None => {
                let src = &found.parent_sources[i];
                let sst = fsops::fstat(src.as_raw_fd()).ctx(|| ctx("stat lower dir"))?;
                fsops::mkdirat(cur.as_raw_fd(), comp, 0o700).ctx(|| ctx("mkdir"))?;
                let d = fsops::openat(cur.as_raw_fd(), comp, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .ctx(|| ctx("open"))?;
                fsops::fchown(d.as_raw_fd(), sst.st_uid, sst.st_gid).ctx(|| ctx("chown"))?;
                fsops::fchmod(d.as_raw_fd(), sst.st_mode & 0o7777).ctx(|| ctx("chmod"))?;
                copy_xattrs(src.as_raw_fd(), true, d.as_raw_fd(), false)
                    .ctx(|| ctx("copying xattrs"))?;
                dir_times.push((parents[..=i].to_vec(), sst.st_mtime, sst.st_mtime_nsec));
            }
        }
        cur = open_dir_at(cur.as_raw_fd(), comp).ctx(|| ctx("open"))?;
    }
    let st = &found.st;
    let src = found.src_dir.as_raw_fd();
    let dir = cur.as_raw_fd();
    let kind = ftype(st);
    match kind {
        libc::S_IFREG => {
            let sfd = fsops::openat(src, name, libc::O_RDONLY, 0).ctx(|| ctx("open lower file"))?;
            let sst = fsops::fstat(sfd.as_raw_fd()).ctx(|| ctx("stat lower file"))?;
            if ftype(&sst) != libc::S_IFREG {
                return Err(Error::Invalid(format!(
                    "layer entry {:?}: hardlink target changed while copying it up",
                    text(raw)
                )));
            }
            let dfd = fsops::openat(
                dir,
                name,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                0o600,
            )
            .ctx(|| ctx("create"))?;
            let mut s = std::fs::File::from(sfd);
            let mut d = std::fs::File::from(dfd);
            io::copy(&mut s, &mut d).ctx(|| ctx("copy"))?;
            fsops::fchown(d.as_raw_fd(), sst.st_uid, sst.st_gid).ctx(|| ctx("chown"))?;
            fsops::fchmod(d.as_raw_fd(), sst.st_mode & 0o7777).ctx(|| ctx("chmod"))?;
            copy_xattrs(s.as_raw_fd(), false, d.as_raw_fd(), false)
                .ctx(|| ctx("copying xattrs"))?;
            fsops::futimes(d.as_raw_fd(), sst.st_mtime, sst.st_mtime_nsec)
                .ctx(|| ctx("set times"))?;
        }
        libc::S_IFLNK => {
            let t = fsops::readlinkat(src, name).ctx(|| ctx("readlink"))?;
            fsops::symlinkat(&t, dir, name).ctx(|| ctx("symlink"))?;
            fsops::lchownat(dir, name, st.st_uid, st.st_gid).ctx(|| ctx("chown"))?;
            fsops::lutimesat(dir, name, st.st_mtime, st.st_mtime_nsec).ctx(|| ctx("set times"))?;
        }
        libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK => {
            fsops::mknodat(dir, name, kind | 0o600, st.st_rdev).ctx(|| ctx("mknod"))?;
            fsops::lchownat(dir, name, st.st_uid, st.st_gid).ctx(|| ctx("chown"))?;
            fsops::chmodat(dir, name, st.st_mode & 0o7777).ctx(|| ctx("chmod"))?;
            let sp = fsops::openat(src, name, libc::O_PATH, 0).ctx(|| ctx("open lower node"))?;
            let dp = fsops::openat(dir, name, libc::O_PATH, 0).ctx(|| ctx("open"))?;
            copy_xattrs(sp.as_raw_fd(), true, dp.as_raw_fd(), true)
                .ctx(|| ctx("copying xattrs"))?;
            fsops::lutimesat(dir, name, st.st_mtime, st.st_mtime_nsec).ctx(|| ctx("set times"))?;
        }
        _ => {
            return Err(Error::Invalid(format!(
                "layer entry {:?}: hardlink target has an unsupported file type",
                text(raw)
            )))
        }
    }
    Ok(CopiedUp {
        parent: cur,
        dir_times,
        is_symlink: kind == libc::S_IFLNK,
    })
}

//! File operations scoped to a root directory that may hold hostile content (an image's
//! rootfs): every path is resolved with `openat2(RESOLVE_IN_ROOT)`, so symlinks and `..` in
//! the tree can never lead outside it, and final components are never followed when written.

use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Metadata applied to files the builder creates.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta {
    /// Permission bits (including setuid/setgid/sticky).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds, nanoseconds); `None` leaves the current time.
    pub mtime: Option<(i64, i64)>,
}

impl Meta {
    /// Access and modification times for futimens/utimensat, both the mtime (`None`: keep).
    fn times(&self) -> Option<[libc::timespec; 2]> {
        let (tv_sec, tv_nsec) = self.mtime?;
        let t = libc::timespec { tv_sec, tv_nsec };
        Some([t, t])
    }
}

/// A directory opened as the root of all later path resolution.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
const RESOLVE_IN_ROOT: u64 = 0x10;

fn cstr(s: &[u8]) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// `openat2` relative to `dirfd`, resolving inside it.
fn openat2(dirfd: RawFd, rel: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let p = cstr(if rel.is_empty() { b"." } else { rel })?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: mode as u64,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: valid pointers to a NUL-terminated path and an open_how of the right size.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                p.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel returned a fresh descriptor we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) && e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// `fstat` of an open (possibly O_PATH) descriptor.
pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH, valid out pointer.
    let r = unsafe { libc::fstatat(fd, c"".as_ptr(), &mut st, libc::AT_EMPTY_PATH) };
    if r == 0 {
        Ok(st)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `fstatat` without following a final symlink; `None` if absent.
pub fn lstat_at(dirfd: RawFd, name: &[u8]) -> io::Result<Option<libc::stat>> {
    let c = cstr(if name.is_empty() { b"." } else { name })?;
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, path and out pointer.
    let r = unsafe { libc::fstatat(dirfd, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r == 0 {
        Ok(Some(st))
    } else {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Split a cleaned relative path into (parent, final name).
fn split_parent(rel: &str) -> (&str, &str) {
    match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    }
}

/// Whether a stat describes a directory.
pub fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// Whether a stat describes a symlink.
pub fn is_symlink(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFLNK
}

/// Whether a stat describes a regular file.
pub fn is_file(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// Normalise an absolute or relative in-root path to a relative, `..`-free form (clamped at
/// the root, as path resolution inside a chroot would be).
pub fn rel_in_root(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

impl Root {
    /// Open `path` as a root.
    pub fn open(path: &Path) -> io::Result<Self> {
        let f = File::options()
            .read(true)
            .custom_flags_dir()
            .open(path)
            .map_err(|e| io::Error::new(e.kind(), format!("opening {}: {e}", path.display())))?;
        Ok(Self {
            fd: OwnedFd::from(f),
            path: path.to_path_buf(),
        })
    }

    /// The host path of the root (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Raw fd of the root directory.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Open a directory inside the root (following symlinks, scoped to the root).
    pub fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        openat2(
            self.fd(),
            rel.as_bytes(),
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
    }

    /// Open a file inside the root for reading (following symlinks, scoped to the root).
    pub fn open_read(&self, rel: &str) -> io::Result<File> {
        Ok(File::from(openat2(
            self.fd(),
            rel.as_bytes(),
            libc::O_RDONLY,
            0,
        )?))
    }

    /// `stat` of `rel`, following symlinks inside the root; `None` if it does not exist.
    pub fn stat(&self, rel: &str) -> io::Result<Option<libc::stat>> {
        match openat2(self.fd(), rel.as_bytes(), libc::O_PATH, 0) {
            Ok(fd) => fstat(fd.as_raw_fd()).map(Some),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `lstat` of `rel`: parent resolved in the root, final component not followed.
    pub fn lstat(&self, rel: &str) -> io::Result<Option<libc::stat>> {
        let rel = rel_in_root(rel);
        if rel.is_empty() {
            return fstat(self.fd()).map(Some);
        }
        let (parent, name) = split_parent(&rel);
        match self.open_dir(parent) {
            Ok(d) => lstat_at(d.as_raw_fd(), name.as_bytes()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Create every missing directory of `rel` (new ones get `meta`); returns the final dir fd.
    pub fn mkdir_all(&self, rel: &str, meta: Option<Meta>) -> io::Result<OwnedFd> {
        let rel = rel_in_root(rel);
        let mut cur = self.open_dir("")?;
        if rel.is_empty() {
            return Ok(cur);
        }
        for comp in rel.split('/') {
            let c = cstr(comp.as_bytes())?;
            match openat2(
                cur.as_raw_fd(),
                comp.as_bytes(),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            ) {
                Ok(fd) => {
                    cur = fd;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!("{comp} in {rel} is not a directory: {e}"),
                    ))
                }
            }
            let mode = meta.map(|m| m.mode).unwrap_or(0o755);
            // SAFETY: valid fd and NUL-terminated name.
            let r = unsafe { libc::mkdirat(cur.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) };
            if r != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EEXIST) {
                    return Err(e);
                }
            }
            let next = openat2(
                cur.as_raw_fd(),
                comp.as_bytes(),
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )?;
            if let Some(m) = meta {
                apply_meta_fd(next.as_raw_fd(), &m, true)?;
            } else {
                // SAFETY: valid fd.
                check(unsafe { libc::fchmod(next.as_raw_fd(), 0o755) })?;
            }
            cur = next;
        }
        Ok(cur)
    }

    /// Write a regular file at `rel` (replacing a non-directory there) from `content`.
    pub fn write_file(&self, rel: &str, content: &mut dyn Read, meta: &Meta) -> io::Result<()> {
        let rel = rel_in_root(rel);
        let (parent, name) = split_parent(&rel);
        if name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot write the root as a file",
            ));
        }
        let dir = self.mkdir_all(parent, None)?;
        write_file_at(dir.as_raw_fd(), name.as_bytes(), content, meta)
    }
}

trait DirOpen {
    fn custom_flags_dir(&mut self) -> &mut Self;
}

impl DirOpen for std::fs::OpenOptions {
    fn custom_flags_dir(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
    }
}

/// Remove `name` in `dirfd` if it is not a directory; error if it is one.
fn unlink_nondir(dirfd: RawFd, name: &[u8], what: &str) -> io::Result<()> {
    if let Some(st) = lstat_at(dirfd, name)? {
        if is_dir(&st) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "cannot copy {what} '{}': a directory with that name exists at the destination",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
        let c = cstr(name)?;
        // SAFETY: valid fd and name.
        check(unsafe { libc::unlinkat(dirfd, c.as_ptr(), 0) })?;
    }
    Ok(())
}

/// Set owner, mode and mtime on an open fd.
fn apply_meta_fd(fd: RawFd, m: &Meta, _dir: bool) -> io::Result<()> {
    // SAFETY: valid fd; ownership then mode (chown clears setuid bits).
    check(unsafe { libc::fchown(fd, m.uid, m.gid) })?;
    check(unsafe { libc::fchmod(fd, m.mode as libc::mode_t) })?;
    if let Some(ts) = m.times() {
        // SAFETY: valid fd and a two-element timespec array.
        check(unsafe { libc::futimens(fd, ts.as_ptr()) })?;
    }
    Ok(())
}

/// Create regular file `name` in `dirfd` with `content` and `meta`.
pub fn write_file_at(
    dirfd: RawFd,
    name: &[u8],
    content: &mut dyn Read,
    meta: &Meta,
) -> io::Result<()> {
    unlink_nondir(dirfd, name, "file")?;
    let c = cstr(name)?;
    // SAFETY: valid fd and name; O_EXCL|O_NOFOLLOW so nothing pre-existing is followed.
    let fd = unsafe {
        libc::openat(
            dirfd,
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    let mut f = unsafe { File::from_raw_fd(fd) };
    io::copy(content, &mut f)?;
    f.flush()?;
    apply_meta_fd(f.as_raw_fd(), meta, false)
}

/// Create symlink `name` -> `target` in `dirfd` (replacing a non-directory).
pub fn symlink_at(dirfd: RawFd, name: &[u8], target: &[u8], meta: &Meta) -> io::Result<()> {
    unlink_nondir(dirfd, name, "symlink")?;
    let c = cstr(name)?;
    let t = cstr(target)?;
    // SAFETY: valid fd and names.
    check(unsafe { libc::symlinkat(t.as_ptr(), dirfd, c.as_ptr()) })?;
    // SAFETY: valid fd and name; never follows the link.
    check(unsafe {
        libc::fchownat(
            dirfd,
            c.as_ptr(),
            meta.uid,
            meta.gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    if let Some(ts) = meta.times() {
        // SAFETY: valid fd, name and timespec array.
        check(unsafe {
            libc::utimensat(dirfd, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW)
        })?;
    }
    Ok(())
}

/// Make (or reuse) directory `name` in `dirfd`; returns its fd and whether it was created.
pub fn mkdir_at(dirfd: RawFd, name: &[u8]) -> io::Result<(OwnedFd, bool)> {
    let mut created = false;
    match lstat_at(dirfd, name)? {
        Some(st) if is_dir(&st) => {}
        Some(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "cannot copy a directory onto the existing file '{}'",
                    String::from_utf8_lossy(name)
                ),
            ))
        }
        None => {
            let c = cstr(name)?;
            // SAFETY: valid fd and name.
            check(unsafe { libc::mkdirat(dirfd, c.as_ptr(), 0o755) })?;
            created = true;
        }
    }
    let c = cstr(name)?;
    // SAFETY: valid fd and name; O_NOFOLLOW refuses a symlink swapped in meanwhile.
    let fd = unsafe {
        libc::openat(
            dirfd,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    Ok((unsafe { OwnedFd::from_raw_fd(fd) }, created))
}

/// Set metadata on an open directory fd.
pub fn set_dir_meta(fd: RawFd, meta: &Meta) -> io::Result<()> {
    apply_meta_fd(fd, meta, true)
}

/// Read a symlink's target.
pub fn readlink_at(dirfd: RawFd, name: &[u8]) -> io::Result<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid fd, name and buffer of the given length.
    let n = unsafe { libc::readlinkat(dirfd, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// Open a child of `dirfd` without following symlinks.
pub fn open_child(dirfd: RawFd, name: &[u8], dir: bool) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let flags = libc::O_RDONLY
        | libc::O_NOFOLLOW
        | libc::O_CLOEXEC
        | if dir { libc::O_DIRECTORY } else { 0 };
    // SAFETY: valid fd and name.
    let fd = unsafe { libc::openat(dirfd, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Names in an open directory (excluding `.` and `..`), sorted for reproducibility.
pub fn list_dir(fd: RawFd) -> io::Result<Vec<Vec<u8>>> {
    // SAFETY: dup gives fdopendir its own descriptor to close.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: dup is a valid directory fd; rewinddir resets a shared offset.
    let dirp = unsafe { libc::fdopendir(dup) };
    if dirp.is_null() {
        let e = io::Error::last_os_error();
        // SAFETY: dup still ours on failure.
        unsafe { libc::close(dup) };
        return Err(e);
    }
    // SAFETY: valid DIR*.
    unsafe { libc::rewinddir(dirp) };
    let mut out = Vec::new();
    loop {
        // SAFETY: valid DIR*; readdir's result is valid until the next call.
        let ent = unsafe { libc::readdir(dirp) };
        if ent.is_null() {
            break;
        }
        // SAFETY: d_name is NUL-terminated.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }
            .to_bytes()
            .to_vec();
        if name != b"." && name != b".." {
            out.push(name);
        }
    }
    // SAFETY: valid DIR*, closes dup.
    unsafe { libc::closedir(dirp) };
    out.sort();
    Ok(out)
}

/// Path display helper for byte names.
pub fn name_str(n: &[u8]) -> &str {
    std::str::from_utf8(n).unwrap_or("<non-utf8>")
}

/// `OsStr` of bytes.
pub fn os(n: &[u8]) -> &OsStr {
    OsStr::from_bytes(n)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn symlink_escape_is_contained() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink("/../../../outside", root.join("evil")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil2")).unwrap();
        let r = Root::open(&root).unwrap();
        let m = Meta {
            mode: 0o644,
            ..Default::default()
        };
        // Either refused or written inside the root; never outside.
        let _ = r.write_file("evil/x", &mut &b"hi"[..], &m);
        let _ = r.write_file("evil2/z", &mut &b"hi"[..], &m);
        r.write_file("/evil2/../../y", &mut &b"hi"[..], &m).unwrap();
        assert!(root.join("y").exists());
        assert!(!outside.join("x").exists());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        assert_eq!(rel_in_root("/a/../../b/./c/"), "b/c");
    }
}

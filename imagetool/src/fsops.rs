//! Root-confined file system primitives: every path inside a rootfs is resolved one component at
//! a time with O_NOFOLLOW (or by the kernel with openat2 RESOLVE_IN_ROOT), never by string joins.

use crate::error::{Error, Result};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Convert bytes to a C string, refusing interior NULs.
pub(crate) fn cstr(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Split a tar/OCI path into clean components: `.` and empty parts dropped; `..` and absolute
/// paths refused as hostile.
pub fn clean_components(raw: &[u8]) -> Result<Vec<OsString>> {
    if raw.first() == Some(&b'/') {
        return Err(Error::hostile(raw, "absolute path"));
    }
    let mut out = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(Error::hostile(raw, "path contains '..'")),
            p => {
                if p.contains(&0) {
                    return Err(Error::hostile(raw, "NUL byte in path"));
                }
                out.push(OsString::from_vec(p.to_vec()));
            }
        }
    }
    Ok(out)
}

/// Join clean components into a relative path key (for bookkeeping only, never for opening).
pub fn key(comps: &[OsString]) -> PathBuf {
    let mut p = PathBuf::new();
    for c in comps {
        p.push(c);
    }
    p
}

/// fstatat without following a final symlink; `Ok(None)` if absent.
pub(crate) fn lstat_at(dir: RawFd, name: &OsStr) -> io::Result<Option<libc::stat>> {
    let c = cstr(name.as_bytes())?;
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    let rc = unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOENT) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

/// fstat an fd.
pub(crate) fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: out pointer valid.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// openat with O_NOFOLLOW|O_CLOEXEC always added.
pub(crate) fn openat(
    dir: RawFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: u32,
) -> io::Result<OwnedFd> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: valid C string; fd ownership transferred on success.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    check(fd)?;
    // SAFETY: fd is new and owned.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat2 with RESOLVE_IN_ROOT: symlinks are followed but confined to `root`.
pub(crate) fn open_in_root(root: RawFd, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    let rel = if rel.is_empty() { &b"."[..] } else { rel };
    openat2(
        root,
        rel,
        flags,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// openat2 of `rel` below `root` that fails (ELOOP) on any symlink and never leaves the root.
fn open_beneath_no_symlinks(root: RawFd, rel: &[u8], flags: libc::c_int) -> io::Result<OwnedFd> {
    openat2(
        root,
        rel,
        flags,
        libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

fn openat2(root: RawFd, rel: &[u8], flags: libc::c_int, resolve: u64) -> io::Result<OwnedFd> {
    let c = cstr(rel)?;
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = resolve;
    // SAFETY: valid pointers; size matches struct.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Open a directory (host path) as an O_PATH handle.
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes()).map_err(|e| Error::at("opening", path, e))?;
    // SAFETY: valid C string.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    check(fd).map_err(|e| Error::at("opening directory", path, e))?;
    // SAFETY: new fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// mkdirat.
pub(crate) fn mkdirat(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) }).map(|_| ())
}

/// unlinkat (flags 0 or AT_REMOVEDIR).
pub(crate) fn unlinkat(dir: RawFd, name: &OsStr, flags: libc::c_int) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(|_| ())
}

/// symlinkat(target, dir, name).
pub(crate) fn symlinkat(target: &[u8], dir: RawFd, name: &OsStr) -> io::Result<()> {
    let t = cstr(target)?;
    let c = cstr(name.as_bytes())?;
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(|_| ())
}

/// readlinkat.
pub(crate) fn readlinkat(dir: RawFd, name: &OsStr) -> io::Result<Vec<u8>> {
    let c = cstr(name.as_bytes())?;
    let mut buf = vec![0u8; 4096];
    // SAFETY: buffer valid for its length.
    let n = unsafe {
        libc::readlinkat(
            dir,
            c.as_ptr(),
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// linkat without following symlinks (links the named inode itself).
pub(crate) fn linkat(odir: RawFd, oname: &OsStr, ndir: RawFd, nname: &OsStr) -> io::Result<()> {
    let o = cstr(oname.as_bytes())?;
    let n = cstr(nname.as_bytes())?;
    // SAFETY: valid C strings.
    check(unsafe { libc::linkat(odir, o.as_ptr(), ndir, n.as_ptr(), 0) }).map(|_| ())
}

/// mknodat.
pub(crate) fn mknodat(dir: RawFd, name: &OsStr, mode: u32, dev: u64) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode as libc::mode_t, dev as libc::dev_t) })
        .map(|_| ())
}

/// fchownat with AT_SYMLINK_NOFOLLOW.
pub(crate) fn lchownat(dir: RawFd, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: valid C string.
    check(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, libc::AT_SYMLINK_NOFOLLOW) })
        .map(|_| ())
}

/// fchmodat (never used on symlinks).
pub(crate) fn chmodat(dir: RawFd, name: &OsStr, mode: u32) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    // SAFETY: valid C string.
    check(unsafe { libc::fchmodat(dir, c.as_ptr(), mode as libc::mode_t, 0) }).map(|_| ())
}

/// fchown on an fd.
pub(crate) fn fchown(fd: RawFd, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchown(fd, uid, gid) }).map(|_| ())
}

/// fchmod on an fd.
pub(crate) fn fchmod(fd: RawFd, mode: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchmod(fd, mode as libc::mode_t) }).map(|_| ())
}

fn timespecs(sec: i64, nsec: i64) -> [libc::timespec; 2] {
    let ts = libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as libc::c_long,
    };
    [ts, ts]
}

/// utimensat with AT_SYMLINK_NOFOLLOW (atime = mtime).
pub(crate) fn lutimesat(dir: RawFd, name: &OsStr, sec: i64, nsec: i64) -> io::Result<()> {
    let c = cstr(name.as_bytes())?;
    let ts = timespecs(sec, nsec);
    // SAFETY: valid pointers.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), ts.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(|_| ())
}

/// futimens (atime = mtime).
pub(crate) fn futimes(fd: RawFd, sec: i64, nsec: i64) -> io::Result<()> {
    let ts = timespecs(sec, nsec);
    // SAFETY: valid pointers.
    check(unsafe { libc::futimens(fd, ts.as_ptr()) }).map(|_| ())
}

/// Set an xattr on the inode an fd refers to (works for O_PATH fds via /proc/self/fd).
pub(crate) fn set_xattr_fd(
    fd: RawFd,
    is_path_fd: bool,
    name: &[u8],
    value: &[u8],
) -> io::Result<()> {
    let n = cstr(name)?;
    if is_path_fd {
        let p = cstr(format!("/proc/self/fd/{fd}").as_bytes())?;
        // SAFETY: valid pointers.
        check(unsafe {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr() as *const libc::c_void,
                value.len(),
                0,
            )
        })
        .map(|_| ())
    } else {
        // SAFETY: valid pointers.
        check(unsafe {
            libc::fsetxattr(
                fd,
                n.as_ptr(),
                value.as_ptr() as *const libc::c_void,
                value.len(),
                0,
            )
        })
        .map(|_| ())
    }
}

/// List xattrs (name, value) of the inode an fd refers to; O_PATH fds go through /proc/self/fd.
pub(crate) fn list_xattrs_fd(fd: RawFd, is_path_fd: bool) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let proc = cstr(format!("/proc/self/fd/{fd}").as_bytes())?;
    let list = |buf: *mut libc::c_char, len: usize| -> isize {
        // SAFETY: caller passes a valid buffer.
        unsafe {
            if is_path_fd {
                libc::listxattr(proc.as_ptr(), buf, len)
            } else {
                libc::flistxattr(fd, buf, len)
            }
        }
    };
    let n = list(std::ptr::null_mut(), 0);
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(Vec::new());
        }
        return Err(e);
    }
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; n as usize + 256];
    let n = list(names.as_mut_ptr() as *mut libc::c_char, names.len());
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(n as usize);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let cn = cstr(name)?;
        let get = |buf: *mut libc::c_void, len: usize| -> isize {
            // SAFETY: valid buffer from caller.
            unsafe {
                if is_path_fd {
                    libc::getxattr(proc.as_ptr(), cn.as_ptr(), buf, len)
                } else {
                    libc::fgetxattr(fd, cn.as_ptr(), buf, len)
                }
            }
        };
        let sz = get(std::ptr::null_mut(), 0);
        if sz < 0 {
            continue;
        }
        let mut val = vec![0u8; sz as usize + 64];
        let sz = get(val.as_mut_ptr() as *mut libc::c_void, val.len());
        if sz < 0 {
            continue;
        }
        val.truncate(sz as usize);
        out.push((name.to_vec(), val));
    }
    Ok(out)
}

/// Read one xattr value from an fd, `None` if absent.
pub(crate) fn get_xattr_fd(fd: RawFd, name: &[u8]) -> Option<Vec<u8>> {
    let proc = cstr(format!("/proc/self/fd/{fd}").as_bytes()).ok()?;
    let n = cstr(name).ok()?;
    let mut val = vec![0u8; 256];
    // SAFETY: valid buffer.
    let sz = unsafe {
        libc::getxattr(
            proc.as_ptr(),
            n.as_ptr(),
            val.as_mut_ptr() as *mut libc::c_void,
            val.len(),
        )
    };
    if sz < 0 {
        return None;
    }
    val.truncate(sz as usize);
    Some(val)
}

/// Names in a directory (except `.` and `..`), read through a fresh O_RDONLY handle.
pub(crate) fn read_dir_names(dir: RawFd) -> io::Result<Vec<OsString>> {
    let fd = openat(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(io::Error::from)?;
    let mut out = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(io::Error::from)?;
        let n: &CStr = ent.file_name();
        let b = n.to_bytes();
        if b == b"." || b == b".." {
            continue;
        }
        out.push(OsString::from_vec(b.to_vec()));
    }
    Ok(out)
}

/// Remove `name` in `dir` whatever it is, recursively, never following symlinks. Absent is fine.
pub(crate) fn remove_all_at(dir: RawFd, name: &OsStr) -> io::Result<()> {
    let st = match lstat_at(dir, name)? {
        None => return Ok(()),
        Some(st) => st,
    };
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)?;
        for child in read_dir_names(sub.as_raw_fd())? {
            remove_all_at(sub.as_raw_fd(), &child)?;
        }
        drop(sub);
        unlinkat(dir, name, libc::AT_REMOVEDIR)
    } else {
        unlinkat(dir, name, 0)
    }
}

/// Remove a host directory tree (used for bundles and temp dirs we created), never following
/// symlinks and never crossing into a mount point (mounted dirs make it fail instead).
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => Path::new("/"),
    };
    let name = match path.file_name() {
        Some(n) => n,
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "no file name")),
    };
    let c = cstr(parent.as_os_str().as_bytes())?;
    // SAFETY: valid C string.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: new fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    remove_all_at(fd.as_raw_fd(), name)
}

/// Open a file (final component not followed) inside a root for reading, resolving any symlinks
/// in the path within the root (used for /etc/passwd and friends).
pub fn read_file_in_root(root: &Path, rel: &str, limit: u64) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let rfd = open_dir(root)?;
    let rel = rel.trim_start_matches('/');
    match open_in_root(rfd.as_raw_fd(), rel.as_bytes(), libc::O_RDONLY) {
        Ok(fd) => {
            let st = fstat(fd.as_raw_fd())
                .map_err(|e| Error::io(format!("stat {rel} in {}", root.display()), e))?;
            if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Ok(None);
            }
            let f = std::fs::File::from(fd);
            let mut buf = Vec::new();
            f.take(limit)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io(format!("reading {rel} in {}", root.display()), e))?;
            Ok(Some(buf))
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(Error::io(format!("opening {rel} in {}", root.display()), e)),
    }
}

/// A root directory with component-wise, symlink-aware resolution of parent directories.
pub struct RootDir {
    fd: OwnedFd,
    path: PathBuf,
}

impl RootDir {
    /// Open `path` (a host directory we control) as a root.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(RootDir {
            fd: open_dir(path)?,
            path: path.to_path_buf(),
        })
    }

    /// Raw fd of the root directory.
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Host path of the root (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolve the directory `comps` inside the root and return an O_PATH handle.
    ///
    /// Each component is opened with O_NOFOLLOW. A missing component is created (mode 0755) when
    /// `create` is set (`created` then records it). A symlink component is refused if `planted`
    /// says this layer created it; otherwise it is resolved by the kernel confined to the root.
    pub fn resolve_dir(
        &self,
        raw: &[u8],
        comps: &[OsString],
        create: bool,
        planted: &dyn Fn(&Path) -> bool,
        created: &mut dyn FnMut(&Path),
    ) -> Result<Option<OwnedFd>> {
        // Common case in one syscall: every component is already a real directory. Anything
        // else (missing, a symlink, not a directory) takes the component walk below.
        if !comps.is_empty() {
            if let Ok(fd) = open_beneath_no_symlinks(
                self.fd.as_raw_fd(),
                key(comps).as_os_str().as_bytes(),
                libc::O_PATH | libc::O_DIRECTORY,
            ) {
                return Ok(Some(fd));
            }
        }
        let mut cur: OwnedFd = self
            .fd
            .try_clone()
            .map_err(|e| Error::io("dup root fd", e))?;
        for i in 0..comps.len() {
            let name = &comps[i];
            let here = key(&comps[..=i]);
            let st = lstat_at(cur.as_raw_fd(), name).map_err(|e| {
                Error::io(
                    format!("stat {} in {}", here.display(), self.path.display()),
                    e,
                )
            })?;
            let next = match st {
                None => {
                    if !create {
                        return Ok(None);
                    }
                    match mkdirat(cur.as_raw_fd(), name, 0o755) {
                        Ok(()) => created(&here),
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                        Err(e) => {
                            return Err(Error::io(
                                format!("mkdir {} in {}", here.display(), self.path.display()),
                                e,
                            ))
                        }
                    }
                    openat(cur.as_raw_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(
                        |e| {
                            Error::io(
                                format!("open {} in {}", here.display(), self.path.display()),
                                e,
                            )
                        },
                    )?
                }
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    openat(cur.as_raw_fd(), name, libc::O_PATH | libc::O_DIRECTORY, 0).map_err(
                        |e| {
                            Error::io(
                                format!("open {} in {}", here.display(), self.path.display()),
                                e,
                            )
                        },
                    )?
                }
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFLNK => {
                    if planted(&here) {
                        return Err(Error::hostile(
                            raw,
                            format!(
                                "path goes through symlink {} planted by this layer",
                                here.display()
                            ),
                        ));
                    }
                    let fd = open_in_root(
                        self.fd.as_raw_fd(),
                        here.as_os_str().as_bytes(),
                        libc::O_PATH | libc::O_DIRECTORY,
                    );
                    match fd {
                        Ok(fd) => fd,
                        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !create => {
                            return Ok(None)
                        }
                        Err(e) => {
                            return Err(Error::io(
                                format!(
                                    "resolving symlink {} inside {}",
                                    here.display(),
                                    self.path.display()
                                ),
                                e,
                            ))
                        }
                    }
                }
                Some(_) => {
                    return Err(Error::hostile(
                        raw,
                        format!("parent {} is not a directory", here.display()),
                    ))
                }
            };
            cur = next;
        }
        Ok(Some(cur))
    }
}

/// Host path of an fd (for overlay mount options and messages).
pub fn fd_path(fd: RawFd) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
}

/// Extract the bytes of an OsStr (for tar names).
pub fn bytes(s: &OsStr) -> &[u8] {
    s.as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        let c = |s: &str| clean_components(s.as_bytes()).map(|v| key(&v));
        assert_eq!(c("./a/./b//c/").expect("ok"), PathBuf::from("a/b/c"));
        assert_eq!(c("./").expect("ok"), PathBuf::new());
        assert!(c("/etc/passwd").is_err());
        assert!(c("a/../b").is_err());
        assert!(c("..").is_err());
    }
}

//! Filesystem: safe resolution of paths inside a root.
//!
//! Every path that comes from a container (mount destinations, devices, masked paths) is resolved
//! with `openat2(2)` and `RESOLVE_IN_ROOT`, so `..`, absolute symlinks and symlinks swapped in
//! mid-setup can never leave the root (CVE-2021-30465 family). Callers get an `O_PATH` fd and act
//! on the fd (fd-based mount API), never on a string path that could be re-resolved differently.
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Upper bound on symlinks followed while creating a missing destination (same as the kernel's).
const MAX_SYMLINKS: usize = 40;
/// openat2 returns EAGAIN when a concurrent rename could have affected `..` resolution; retry a bit.
const MAX_EAGAIN_RETRIES: usize = 128;

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("path {} contains a NUL byte", p.display()),
        )
    })
}

/// Raw `openat2(2)`; retried on EAGAIN so that a racing rename cannot make setup fail spuriously.
pub fn openat2(
    dir: BorrowedFd<'_>,
    path: &Path,
    flags: i32,
    mode: u32,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let c = cstr(path)?;
    // SAFETY: open_how is plain old data; zeroed is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.mode = u64::from(mode);
    how.resolve = resolve;
    for _ in 0..MAX_EAGAIN_RETRIES {
        // SAFETY: valid fd, NUL-terminated path, pointer/size of a live open_how.
        let r = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if r >= 0 {
            // SAFETY: the kernel returned a fresh fd that we now own.
            return Ok(unsafe { OwnedFd::from_raw_fd(r as i32) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
    Err(io::Error::from_raw_os_error(libc::EAGAIN))
}

/// Strip the leading `/` so a container path can be resolved relative to a root fd.
pub fn relative(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect()
}

/// Open `path` (an in-container path) as an `O_PATH` fd, following symlinks but never leaving `root`.
pub fn open_in_root(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    open_path_in_root(root, path, libc::O_PATH)
}

/// Like [`open_in_root`] but the last component is not followed (to detect symlinked destinations).
pub fn open_in_root_nofollow(root: BorrowedFd<'_>, path: &Path) -> io::Result<OwnedFd> {
    open_path_in_root(root, path, libc::O_PATH | libc::O_NOFOLLOW)
}

/// `openat2` of an in-container path with `flags` under RESOLVE_IN_ROOT (`/` itself is `.`).
fn open_path_in_root(root: BorrowedFd<'_>, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let rel = relative(path);
    let rel = if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    };
    openat2(
        root,
        &rel,
        flags,
        0,
        libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
    )
}

/// Open a path with no symlinks at all (e.g. /dev/null, /dev/console after pivot).
pub fn open_no_symlinks(dir: BorrowedFd<'_>, path: &Path, flags: i32) -> io::Result<OwnedFd> {
    let rel = relative(path);
    openat2(
        dir,
        &rel,
        flags | libc::O_NOFOLLOW,
        0,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS | libc::RESOLVE_BENEATH,
    )
}

/// What to create when a destination does not exist yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory (mode 0755).
    Dir,
    /// An empty regular file (mode 0644), e.g. for a bind mount of a file.
    File,
}

/// Resolve `path` inside `root`, creating it (and missing parents) when absent; returns an `O_PATH` fd.
///
/// Symlinks (including dangling ones, e.g. `/etc/resolv.conf -> ../run/resolv.conf`) are followed
/// as if `root` were `/`, so whatever is created is always inside the root.
pub fn ensure_in_root(root: BorrowedFd<'_>, path: &Path, kind: NodeKind) -> io::Result<OwnedFd> {
    let mut budget = MAX_SYMLINKS;
    ensure_inner(root, &relative(path), kind, &mut budget)
}

fn ensure_inner(
    root: BorrowedFd<'_>,
    path: &Path,
    kind: NodeKind,
    budget: &mut usize,
) -> io::Result<OwnedFd> {
    let mut cur = path.to_path_buf();
    loop {
        match open_in_root(root, &cur) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let name = match cur.file_name() {
            Some(n) if !cur.ends_with("..") => n.to_os_string(),
            _ => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
        };
        let parent = cur.parent().map(Path::to_path_buf).unwrap_or_default();
        let pfd = ensure_inner(root, &parent, NodeKind::Dir, budget)?;
        create_node(pfd.as_fd(), &name, kind)?;
        let fd = openat_nofollow(pfd.as_fd(), &name)?;
        let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return Ok(fd);
        }
        // A (dangling) symlink sits where we want to create: follow it inside the root.
        if *budget == 0 {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        *budget -= 1;
        let target = readlink_fd(fd.as_fd())?;
        cur = if target.is_absolute() {
            relative(&target)
        } else {
            parent.join(target)
        };
    }
}

fn create_node(dir: BorrowedFd<'_>, name: &OsStr, kind: NodeKind) -> io::Result<()> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: valid dir fd and NUL-terminated name.
    let r = unsafe {
        match kind {
            NodeKind::Dir => libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), 0o755),
            NodeKind::File => libc::mknodat(dir.as_raw_fd(), c.as_ptr(), libc::S_IFREG | 0o644, 0),
        }
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EEXIST) {
        Ok(())
    } else {
        Err(e)
    }
}

/// `openat(dir, name, O_PATH|O_NOFOLLOW)` for a single component (no resolution at all).
pub fn openat_nofollow(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    let c = CString::new(name.as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // SAFETY: valid dir fd and NUL-terminated name.
    let r = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh fd from the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

/// Read the target of a symlink opened with `O_PATH|O_NOFOLLOW`.
pub fn readlink_fd(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buffer is valid for buf.len() bytes; empty path with an O_PATH symlink fd.
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(OsStr::from_bytes(&buf)))
}

/// The path the kernel reports for an fd (via /proc/self/fd); used to double-check containment.
pub fn fd_path(fd: BorrowedFd<'_>) -> io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Paranoid check that an fd resolved in the rootfs really is inside it (defence in depth on top
/// of RESOLVE_IN_ROOT). Returns the in-container path (starting with `/`).
pub fn verify_inside(fd: BorrowedFd<'_>, rootfs: &Path) -> io::Result<PathBuf> {
    let p = fd_path(fd)?;
    match p.strip_prefix(rootfs) {
        Ok(rest) => Ok(Path::new("/").join(rest)),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "resolved to {} which is outside the rootfs {}",
                p.display(),
                rootfs.display()
            ),
        )),
    }
}

/// Lexically check a container path: absolute, no `..` (used by validation of config paths).
pub fn is_clean_absolute(path: &Path) -> bool {
    path.is_absolute() && !path.components().any(|c| matches!(c, Component::ParentDir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn root_fd(dir: &Path) -> OwnedFd {
        let f = std::fs::File::open(dir).expect("open root");
        OwnedFd::from(f)
    }

    #[test]
    fn relative_strips_root() {
        assert_eq!(relative(Path::new("/a/b")), PathBuf::from("a/b"));
        assert_eq!(relative(Path::new("/")), PathBuf::new());
    }

    #[test]
    fn clean_absolute() {
        assert!(is_clean_absolute(Path::new("/dev/shm")));
        assert!(!is_clean_absolute(Path::new("dev/shm")));
        assert!(!is_clean_absolute(Path::new("/dev/../etc")));
    }

    #[test]
    fn symlink_escape_stays_inside() {
        let t = tempfile::tempdir().expect("tmp");
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        symlink(&outside, root.join("evil")).expect("symlink");
        symlink("../../../../outside", root.join("evil2")).expect("symlink");
        let rfd = root_fd(&root);
        let fd = ensure_in_root(rfd.as_fd(), Path::new("/evil/sub"), NodeKind::Dir).expect("ok");
        let p = fd_path(fd.as_fd()).expect("path");
        assert!(p.starts_with(&root), "{}", p.display());
        assert!(!outside.join("sub").exists());
        assert!(root
            .join(outside.strip_prefix("/").expect("abs"))
            .join("sub")
            .is_dir());
        let fd = ensure_in_root(rfd.as_fd(), Path::new("/evil2/f"), NodeKind::File).expect("ok");
        assert!(fd_path(fd.as_fd()).expect("p").starts_with(&root));
        assert!(root.join("outside/f").is_file());
    }

    #[test]
    fn dangling_final_symlink_is_followed_inside() {
        let t = tempfile::tempdir().expect("tmp");
        let root = t.path();
        std::fs::create_dir_all(root.join("etc")).expect("mkdir");
        symlink("../run/resolv.conf", root.join("etc/resolv.conf")).expect("symlink");
        let rfd = root_fd(root);
        let fd = ensure_in_root(rfd.as_fd(), Path::new("/etc/resolv.conf"), NodeKind::File)
            .expect("created");
        assert!(root.join("run/resolv.conf").is_file());
        assert_eq!(
            verify_inside(fd.as_fd(), root).expect("inside"),
            PathBuf::from("/run/resolv.conf")
        );
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let t = tempfile::tempdir().expect("tmp");
        let root = t.path();
        symlink("b", root.join("a")).expect("symlink");
        symlink("a", root.join("b")).expect("symlink");
        let rfd = root_fd(root);
        assert!(ensure_in_root(rfd.as_fd(), Path::new("/a"), NodeKind::Dir).is_err());
    }
}

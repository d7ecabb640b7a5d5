//! Device nodes in the container's /dev: the default set, `linux.devices`, and /dev symlinks.
//!
//! Nodes are created with `mknodat` relative to a directory fd resolved inside the rootfs; in a
//! user namespace (where mknod is not allowed) the host's node is bind-mounted instead, after
//! checking that it really is the requested device.
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use crate::mounts;
use crate::paths::{self, NodeKind};

/// Kind of device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevKind {
    /// Character device (`c` or `u`).
    Char,
    /// Block device (`b`).
    Block,
    /// Named pipe (`p`).
    Fifo,
}

/// A validated device to create inside the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Absolute in-container path, e.g. `/dev/null`.
    pub path: PathBuf,
    /// Node kind.
    pub kind: DevKind,
    /// Major number.
    pub major: u64,
    /// Minor number.
    pub minor: u64,
    /// Permission bits (default 0666).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Owner gid.
    pub gid: u32,
}

impl Device {
    fn default_char(path: &str, major: u64, minor: u64) -> Self {
        Device {
            path: PathBuf::from(path),
            kind: DevKind::Char,
            major,
            minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        }
    }

    /// `S_IF*` type bits for mknod.
    fn type_bits(&self) -> u32 {
        match self.kind {
            DevKind::Char => libc::S_IFCHR,
            DevKind::Block => libc::S_IFBLK,
            DevKind::Fifo => libc::S_IFIFO,
        }
    }

    /// The `dev_t` of the node (0 for fifos).
    pub fn rdev(&self) -> libc::dev_t {
        if self.kind == DevKind::Fifo {
            0
        } else {
            libc::makedev(self.major as u32, self.minor as u32)
        }
    }
}

/// The devices every container gets (as runc): null, zero, full, random, urandom, tty.
pub fn default_devices() -> Vec<Device> {
    vec![
        Device::default_char("/dev/null", 1, 3),
        Device::default_char("/dev/zero", 1, 5),
        Device::default_char("/dev/full", 1, 7),
        Device::default_char("/dev/random", 1, 8),
        Device::default_char("/dev/urandom", 1, 9),
        Device::default_char("/dev/tty", 5, 0),
    ]
}

/// Largest major/minor the kernel's dev_t encoding accepts (12 / 20 bits).
const MAX_MAJOR: i64 = 0xfff;
const MAX_MINOR: i64 = 0xfffff;

/// Validate one `linux.devices[i]` entry; the error names the field.
pub fn validate_device(i: usize, d: &LinuxDevice) -> Result<Device, String> {
    let path = d.path();
    let field = format!("linux.devices[{i}]");
    if !paths::is_clean_absolute(path) {
        return Err(format!(
            "{field}.path {:?} must be an absolute path without '..'",
            path.display()
        ));
    }
    if path == Path::new("/") || path == Path::new("/dev") {
        return Err(format!(
            "{field}.path {:?} is not a device path",
            path.display()
        ));
    }
    let kind = match d.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => DevKind::Char,
        LinuxDeviceType::B => DevKind::Block,
        LinuxDeviceType::P => DevKind::Fifo,
        LinuxDeviceType::A => {
            return Err(format!(
                "{field}.type \"a\" is not a device node type (use c, b, u or p)"
            ))
        }
    };
    if kind != DevKind::Fifo {
        if !(0..=MAX_MAJOR).contains(&d.major()) {
            return Err(format!("{field}.major {} is out of range", d.major()));
        }
        if !(0..=MAX_MINOR).contains(&d.minor()) {
            return Err(format!("{field}.minor {} is out of range", d.minor()));
        }
    }
    let mode = d.file_mode().unwrap_or(0o666);
    if mode & !0o7777 & !libc::S_IFMT != 0 {
        return Err(format!("{field}.fileMode {mode:#o} has unknown bits"));
    }
    Ok(Device {
        path: path.clone(),
        kind,
        major: d.major().max(0) as u64,
        minor: d.minor().max(0) as u64,
        mode: mode & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    })
}

/// Default devices plus `linux.devices` (a config entry overrides a default with the same path).
pub fn device_list(cfg: &[LinuxDevice]) -> Result<Vec<Device>, String> {
    let mut out = default_devices();
    for (i, d) in cfg.iter().enumerate() {
        let dev = validate_device(i, d)?;
        out.retain(|x| x.path != dev.path);
        out.push(dev);
    }
    Ok(out)
}

fn name_c(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL"))
}

/// Does the existing node behind `fd` already match `dev`?
fn node_matches(fd: BorrowedFd<'_>, dev: &Device) -> io::Result<bool> {
    let st = nix::sys::stat::fstat(fd).map_err(io::Error::from)?;
    Ok(st.st_mode & libc::S_IFMT == dev.type_bits()
        && (dev.kind == DevKind::Fifo || st.st_rdev == dev.rdev()))
}

/// Create one device inside `root` (a rootfs dir fd, before pivot). `host_bind`: bind-mount the host
/// node instead of mknod (user namespaces).
pub fn create_device(root: BorrowedFd<'_>, dev: &Device, host_bind: bool) -> io::Result<()> {
    let rel = paths::relative(&dev.path);
    let name = rel
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "device path has no name"))?
        .to_os_string();
    let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = paths::ensure_in_root(root, &parent, NodeKind::Dir)?;
    if host_bind {
        return bind_host_device(dir.as_fd(), &name, dev);
    }
    let c = name_c(&name)?;
    for attempt in 0..2 {
        // SAFETY: valid dir fd, NUL-terminated name.
        let r = unsafe {
            libc::mknodat(
                dir.as_raw_fd(),
                c.as_ptr(),
                dev.type_bits() | dev.mode,
                dev.rdev(),
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) && dev.kind != DevKind::Fifo {
            // No CAP_MKNOD here (e.g. a user namespace the caller did not tell us about): bind
            // the host's node instead, as runc does.
            return bind_host_device(dir.as_fd(), &name, dev);
        }
        if e.raw_os_error() != Some(libc::EEXIST) || attempt == 1 {
            return Err(e);
        }
        // Something is already there: keep it only if it is exactly this device; otherwise
        // (a file, a symlink planted by the image...) replace it.
        let fd = paths::openat_nofollow(dir.as_fd(), &name)?;
        if node_matches(fd.as_fd(), dev)? {
            break;
        }
        // SAFETY: valid dir fd, NUL-terminated name; unlinkat never follows symlinks.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // mknod is subject to the umask: set the exact mode and owner (never following symlinks).
    let fd = paths::openat_nofollow(dir.as_fd(), &name)?;
    if !node_matches(fd.as_fd(), dev)? {
        return Err(io::Error::other("node was replaced while being created"));
    }
    let proc_path = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|_| io::Error::other("NUL"))?;
    // SAFETY: NUL-terminated path; fchmodat through the fd's magic link targets exactly that node.
    if unsafe { libc::fchmodat(libc::AT_FDCWD, proc_path.as_ptr(), dev.mode, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: valid fd; AT_EMPTY_PATH chowns the node itself.
    if unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            dev.uid,
            dev.gid,
            libc::AT_EMPTY_PATH,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn bind_host_device(dir: BorrowedFd<'_>, name: &OsStr, dev: &Device) -> io::Result<()> {
    // The host node must be exactly the device asked for, never something else at that path.
    let host = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&dev.path)
        .map_err(|e| io::Error::new(e.kind(), format!("host {}: {e}", dev.path.display())))?;
    if !node_matches(host.as_fd(), dev)? {
        return Err(io::Error::other(format!(
            "host {} is not the requested device {}:{}",
            dev.path.display(),
            dev.major,
            dev.minor
        )));
    }
    let c = name_c(name)?;
    // SAFETY: valid dir fd, NUL-terminated name; an empty regular file as mount point.
    let r = unsafe { libc::mknodat(dir.as_raw_fd(), c.as_ptr(), libc::S_IFREG | 0o644, 0) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) {
            return Err(e);
        }
    }
    let target = paths::openat_nofollow(dir, name)?;
    let st = nix::sys::stat::fstat(&target).map_err(io::Error::from)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK || st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(io::Error::other(format!(
            "{} exists and is not a file or device",
            dev.path.display()
        )));
    }
    let tree = mounts::clone_tree(host.as_fd(), Path::new(""), false)?;
    mounts::attach(tree.as_fd(), target.as_fd())
}

/// Create a symlink `name -> target` in the dir fd, replacing whatever non-directory is there.
fn force_symlink(dir: BorrowedFd<'_>, name: &str, target: &str) -> io::Result<()> {
    let n = CString::new(name).map_err(|_| io::Error::other("NUL"))?;
    let t = CString::new(target).map_err(|_| io::Error::other("NUL"))?;
    for attempt in 0..2 {
        // SAFETY: valid fd and NUL-terminated strings.
        if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), n.as_ptr()) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EEXIST) || attempt == 1 {
            return Err(e);
        }
        let fd = paths::openat_nofollow(dir, OsStr::new(name))?;
        if nix::sys::stat::fstat(&fd).map_err(io::Error::from)?.st_mode & libc::S_IFMT
            == libc::S_IFLNK
            && paths::readlink_fd(fd.as_fd())? == Path::new(target)
        {
            return Ok(());
        }
        // SAFETY: valid fd and name; unlinkat does not follow symlinks.
        if unsafe { libc::unlinkat(dir.as_raw_fd(), n.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// /dev/ptmx -> pts/ptmx, /dev/fd, stdin/stdout/stderr, /dev/core, and the /dev/pts, /dev/shm dirs.
pub fn setup_dev_links(root: BorrowedFd<'_>) -> io::Result<()> {
    let dev = paths::ensure_in_root(root, Path::new("/dev"), NodeKind::Dir)?;
    force_symlink(dev.as_fd(), "ptmx", "pts/ptmx")?;
    force_symlink(dev.as_fd(), "fd", "/proc/self/fd")?;
    force_symlink(dev.as_fd(), "stdin", "/proc/self/fd/0")?;
    force_symlink(dev.as_fd(), "stdout", "/proc/self/fd/1")?;
    force_symlink(dev.as_fd(), "stderr", "/proc/self/fd/2")?;
    if Path::new("/proc/kcore").exists() {
        force_symlink(dev.as_fd(), "core", "/proc/kcore")?;
    }
    for d in ["/dev/pts", "/dev/shm"] {
        paths::ensure_in_root(root, Path::new(d), NodeKind::Dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceBuilder;

    fn dev(path: &str, typ: LinuxDeviceType, major: i64, minor: i64) -> LinuxDevice {
        LinuxDeviceBuilder::default()
            .path(path)
            .typ(typ)
            .major(major)
            .minor(minor)
            .build()
            .expect("build")
    }

    #[test]
    fn defaults_present() {
        let d = default_devices();
        assert_eq!(d.len(), 6);
        let null = d
            .iter()
            .find(|d| d.path == Path::new("/dev/null"))
            .expect("null");
        assert_eq!((null.major, null.minor, null.mode), (1, 3, 0o666));
    }

    #[test]
    fn validation() {
        assert!(validate_device(0, &dev("/dev/fuse", LinuxDeviceType::C, 10, 229)).is_ok());
        let e = validate_device(3, &dev("dev/x", LinuxDeviceType::C, 1, 1))
            .expect_err("must be rejected");
        assert!(e.contains("linux.devices[3].path"), "{e}");
        assert!(validate_device(0, &dev("/dev/../etc/x", LinuxDeviceType::C, 1, 1)).is_err());
        let e = validate_device(1, &dev("/dev/x", LinuxDeviceType::A, 1, 1))
            .expect_err("must be rejected");
        assert!(e.contains("type"), "{e}");
        assert!(validate_device(0, &dev("/dev/x", LinuxDeviceType::C, -1, 1)).is_err());
        assert!(validate_device(0, &dev("/dev/x", LinuxDeviceType::B, 1, 0x100000)).is_err());
        let fifo = validate_device(0, &dev("/dev/fifo", LinuxDeviceType::P, 0, 0)).expect("ok");
        assert_eq!(fifo.kind, DevKind::Fifo);
        assert_eq!(fifo.rdev(), 0);
    }

    #[test]
    fn config_overrides_default() {
        let mut d = dev("/dev/null", LinuxDeviceType::C, 1, 3);
        d.set_file_mode(Some(0o600));
        let list = device_list(&[d]).expect("ok");
        assert_eq!(
            list.iter()
                .filter(|d| d.path == Path::new("/dev/null"))
                .count(),
            1
        );
        let null = list
            .iter()
            .find(|d| d.path == Path::new("/dev/null"))
            .expect("null");
        assert_eq!(null.mode, 0o600);
    }

    #[test]
    fn fifo_and_links_in_tempdir() {
        let t = tempfile::tempdir().expect("tmp");
        let root = std::fs::File::open(t.path()).expect("open");
        let fifo = validate_device(0, &dev("/dev/sub/fifo", LinuxDeviceType::P, 0, 0)).expect("ok");
        create_device(root.as_fd(), &fifo, false).expect("mkfifo");
        let md = std::fs::symlink_metadata(t.path().join("dev/sub/fifo")).expect("stat");
        use std::os::unix::fs::FileTypeExt;
        assert!(md.file_type().is_fifo());
        setup_dev_links(root.as_fd()).expect("links");
        assert_eq!(
            std::fs::read_link(t.path().join("dev/ptmx")).expect("link"),
            PathBuf::from("pts/ptmx")
        );
        assert!(t.path().join("dev/shm").is_dir());
    }
}

//! Mount options (runc's table) and the fd-based mount API used to mount inside the rootfs.
//!
//! Options are parsed into legacy `MS_*` flags (what runc and fstab speak) plus propagation,
//! recursive attributes and filesystem data. Mounts themselves are made with the new mount API
//! (`fsopen`/`fsmount`/`open_tree`/`mount_setattr`/`move_mount`) onto an `O_PATH` fd that was
//! resolved inside the rootfs, so no string path is ever re-resolved by the kernel.
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// How the idmap option asks for the mount to be id-mapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idmap {
    /// `idmap`: only the top mount.
    Top,
    /// `ridmap`: the whole tree.
    Recursive,
}

/// The parsed `options` of one OCI mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountOptions {
    /// `MS_*` flags to set.
    pub flags: u64,
    /// `MS_*` flags explicitly cleared (`rw`, `suid`, `dev`, `exec`, `atime`...).
    pub clear: u64,
    /// Propagation changes in order (`MS_PRIVATE`, `MS_SHARED`... possibly `| MS_REC`).
    pub propagation: Vec<u64>,
    /// `MOUNT_ATTR_*` set recursively (`rro`, `rnosuid`...).
    pub rec_set: u64,
    /// `MOUNT_ATTR_*` cleared recursively (`rrw`, `rsuid`...).
    pub rec_clr: u64,
    /// Options passed to the filesystem (`mode=755`, `size=64k`, `newinstance`...).
    pub data: Vec<String>,
    /// `idmap` / `ridmap`.
    pub idmap: Option<Idmap>,
    /// `tmpcopyup` (copy the underlying directory into a fresh tmpfs).
    pub tmpcopyup: bool,
}

const MS_RDONLY: u64 = libc::MS_RDONLY;
const MS_NOSUID: u64 = libc::MS_NOSUID;
const MS_NODEV: u64 = libc::MS_NODEV;
const MS_NOEXEC: u64 = libc::MS_NOEXEC;
const MS_SYNCHRONOUS: u64 = libc::MS_SYNCHRONOUS;
const MS_REMOUNT: u64 = libc::MS_REMOUNT;
const MS_MANDLOCK: u64 = libc::MS_MANDLOCK;
const MS_DIRSYNC: u64 = libc::MS_DIRSYNC;
const MS_NOATIME: u64 = libc::MS_NOATIME;
const MS_NODIRATIME: u64 = libc::MS_NODIRATIME;
const MS_BIND: u64 = libc::MS_BIND;
const MS_REC: u64 = libc::MS_REC;
const MS_SILENT: u64 = libc::MS_SILENT;
const MS_POSIXACL: u64 = libc::MS_POSIXACL;
const MS_RELATIME: u64 = libc::MS_RELATIME;
const MS_STRICTATIME: u64 = libc::MS_STRICTATIME;
const MS_LAZYTIME: u64 = libc::MS_LAZYTIME;
const MS_I_VERSION: u64 = libc::MS_I_VERSION;
/// MS_NOSYMFOLLOW (Linux 5.10); not in every libc release.
const MS_NOSYMFOLLOW: u64 = 256;

/// (name, clears?, flag): the flag options runc accepts.
const FLAG_OPTIONS: &[(&str, bool, u64)] = &[
    ("acl", false, MS_POSIXACL),
    ("async", true, MS_SYNCHRONOUS),
    ("atime", true, MS_NOATIME),
    ("bind", false, MS_BIND),
    ("defaults", false, 0),
    ("dev", true, MS_NODEV),
    ("diratime", true, MS_NODIRATIME),
    ("dirsync", false, MS_DIRSYNC),
    ("exec", true, MS_NOEXEC),
    ("iversion", false, MS_I_VERSION),
    ("lazytime", false, MS_LAZYTIME),
    ("loud", true, MS_SILENT),
    ("mand", false, MS_MANDLOCK),
    ("noacl", true, MS_POSIXACL),
    ("noatime", false, MS_NOATIME),
    ("nodev", false, MS_NODEV),
    ("nodiratime", false, MS_NODIRATIME),
    ("noexec", false, MS_NOEXEC),
    ("noiversion", true, MS_I_VERSION),
    ("nolazytime", true, MS_LAZYTIME),
    ("nomand", true, MS_MANDLOCK),
    ("norelatime", true, MS_RELATIME),
    ("nostrictatime", true, MS_STRICTATIME),
    ("nosymfollow", false, MS_NOSYMFOLLOW),
    ("nosuid", false, MS_NOSUID),
    ("rbind", false, MS_BIND | MS_REC),
    ("relatime", false, MS_RELATIME),
    ("remount", false, MS_REMOUNT),
    ("ro", false, MS_RDONLY),
    ("rw", true, MS_RDONLY),
    ("silent", false, MS_SILENT),
    ("strictatime", false, MS_STRICTATIME),
    ("suid", true, MS_NOSUID),
    ("symfollow", true, MS_NOSYMFOLLOW),
    ("sync", false, MS_SYNCHRONOUS),
];

const ATTR_RDONLY: u64 = libc::MOUNT_ATTR_RDONLY;
const ATTR_NOSUID: u64 = libc::MOUNT_ATTR_NOSUID;
const ATTR_NODEV: u64 = libc::MOUNT_ATTR_NODEV;
const ATTR_NOEXEC: u64 = libc::MOUNT_ATTR_NOEXEC;
const ATTR_ATIME: u64 = libc::MOUNT_ATTR__ATIME;
const ATTR_NOATIME: u64 = libc::MOUNT_ATTR_NOATIME;
const ATTR_STRICTATIME: u64 = libc::MOUNT_ATTR_STRICTATIME;
const ATTR_RELATIME: u64 = libc::MOUNT_ATTR_RELATIME;
const ATTR_NODIRATIME: u64 = libc::MOUNT_ATTR_NODIRATIME;
const ATTR_NOSYMFOLLOW: u64 = libc::MOUNT_ATTR_NOSYMFOLLOW;

/// (name, clears?, attr): runc's recursive (`mount_setattr(AT_RECURSIVE)`) options.
const REC_OPTIONS: &[(&str, bool, u64)] = &[
    ("rro", false, ATTR_RDONLY),
    ("rrw", true, ATTR_RDONLY),
    ("rnosuid", false, ATTR_NOSUID),
    ("rsuid", true, ATTR_NOSUID),
    ("rnodev", false, ATTR_NODEV),
    ("rdev", true, ATTR_NODEV),
    ("rnoexec", false, ATTR_NOEXEC),
    ("rexec", true, ATTR_NOEXEC),
    ("rnodiratime", false, ATTR_NODIRATIME),
    ("rdiratime", true, ATTR_NODIRATIME),
    ("rrelatime", false, ATTR_RELATIME),
    ("rnorelatime", true, ATTR_RELATIME),
    ("rnoatime", false, ATTR_NOATIME),
    ("ratime", true, ATTR_NOATIME),
    ("rstrictatime", false, ATTR_STRICTATIME),
    ("rnostrictatime", true, ATTR_STRICTATIME),
    ("rnosymfollow", false, ATTR_NOSYMFOLLOW),
    ("rsymfollow", true, ATTR_NOSYMFOLLOW),
];

/// Parse one propagation keyword (`rootfsPropagation` or a mount option) into `MS_*` flags.
pub fn parse_propagation(s: &str) -> Option<u64> {
    Some(match s {
        "private" => libc::MS_PRIVATE,
        "rprivate" => libc::MS_PRIVATE | MS_REC,
        "shared" => libc::MS_SHARED,
        "rshared" => libc::MS_SHARED | MS_REC,
        "slave" => libc::MS_SLAVE,
        "rslave" => libc::MS_SLAVE | MS_REC,
        "unbindable" => libc::MS_UNBINDABLE,
        "runbindable" => libc::MS_UNBINDABLE | MS_REC,
        _ => return None,
    })
}

impl MountOptions {
    /// Parse OCI mount options; anything that is not a known flag becomes filesystem data.
    pub fn parse(options: &[String]) -> Self {
        let mut o = MountOptions::default();
        for opt in options {
            let opt = opt.as_str();
            if let Some(&(_, clear, flag)) = FLAG_OPTIONS.iter().find(|(n, _, _)| *n == opt) {
                if clear {
                    o.flags &= !flag;
                    o.clear |= flag;
                } else {
                    o.flags |= flag;
                    o.clear &= !flag;
                }
            } else if let Some(p) = parse_propagation(opt) {
                o.propagation.push(p);
            } else if let Some(&(_, clear, attr)) = REC_OPTIONS.iter().find(|(n, _, _)| *n == opt) {
                let is_atime = attr & ATTR_ATIME != 0 || attr == ATTR_RELATIME;
                if is_atime {
                    // Access-time attributes are one value: setting one replaces the others.
                    o.rec_clr |= ATTR_ATIME;
                    o.rec_set &= !ATTR_ATIME;
                    if !clear {
                        o.rec_set |= attr;
                    }
                } else if clear {
                    o.rec_set &= !attr;
                    o.rec_clr |= attr;
                } else {
                    o.rec_set |= attr;
                    o.rec_clr &= !attr;
                }
            } else if opt == "idmap" {
                o.idmap = Some(Idmap::Top);
            } else if opt == "ridmap" {
                o.idmap = Some(Idmap::Recursive);
            } else if opt == "tmpcopyup" {
                o.tmpcopyup = true;
            } else if !opt.is_empty() {
                o.data.push(opt.to_string());
            }
        }
        o
    }

    /// Is this a bind mount (`bind`/`rbind` option)?
    pub fn is_bind(&self) -> bool {
        self.flags & MS_BIND != 0
    }

    /// Is this a recursive bind (`rbind`)?
    pub fn is_recursive(&self) -> bool {
        self.flags & MS_REC != 0
    }

    /// Per-mount attributes (`mount_setattr` set, clear) for the flags of this mount.
    pub fn mount_attr(&self) -> (u64, u64) {
        let (mut set, mut clr) = (0u64, 0u64);
        for (ms, attr) in [
            (MS_RDONLY, ATTR_RDONLY),
            (MS_NOSUID, ATTR_NOSUID),
            (MS_NODEV, ATTR_NODEV),
            (MS_NOEXEC, ATTR_NOEXEC),
            (MS_NODIRATIME, ATTR_NODIRATIME),
            (MS_NOSYMFOLLOW, ATTR_NOSYMFOLLOW),
        ] {
            if self.flags & ms != 0 {
                set |= attr;
            } else if self.clear & ms != 0 {
                clr |= attr;
            }
        }
        if let Some(a) = self.atime_attr() {
            set |= a;
            clr |= ATTR_ATIME;
        }
        (set, clr)
    }

    /// The access-time attribute asked for, if any (they are mutually exclusive).
    fn atime_attr(&self) -> Option<u64> {
        if self.flags & MS_NOATIME != 0 {
            Some(ATTR_NOATIME)
        } else if self.flags & MS_STRICTATIME != 0 {
            Some(ATTR_STRICTATIME)
        } else if self.flags & MS_RELATIME != 0 {
            Some(ATTR_RELATIME)
        } else if self.clear & (MS_NOATIME | MS_STRICTATIME) != 0 {
            // `atime` / `nostrictatime`: back to the kernel default.
            Some(ATTR_RELATIME)
        } else {
            None
        }
    }

    /// Superblock flags for a new filesystem, as `fsconfig` flag keys.
    pub fn sb_flag_keys(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (ms, key) in [
            (MS_RDONLY, "ro"),
            (MS_SYNCHRONOUS, "sync"),
            (MS_DIRSYNC, "dirsync"),
            (MS_MANDLOCK, "mand"),
            (MS_LAZYTIME, "lazytime"),
        ] {
            if self.flags & ms != 0 {
                v.push(key);
            }
        }
        v
    }

    /// Does the filesystem data already set `key=`?
    pub fn has_data_key(&self, key: &str) -> bool {
        self.data
            .iter()
            .any(|d| d.split_once('=').map(|(k, _)| k) == Some(key))
    }

    /// Options that make no sense on a bind mount (i.e. would be silently ignored): for validation.
    pub fn unknown_for_bind(&self) -> Vec<String> {
        self.data.clone()
    }
}

/// Split filesystem data on commas, keeping quoted values (SELinux contexts) intact.
pub fn split_data(data: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in data.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                cur.push(ch);
            }
            ',' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn cstring(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))
}

fn check(r: libc::c_long) -> io::Result<libc::c_long> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn own(r: libc::c_long) -> OwnedFd {
    // SAFETY: called only with a non-negative fd the kernel just returned to us.
    unsafe { OwnedFd::from_raw_fd(r as i32) }
}

/// A filesystem context being configured (`fsopen`); the kernel's error log is read on failure.
pub struct FsContext {
    fd: OwnedFd,
    fstype: String,
}

impl FsContext {
    /// `fsopen(fstype)`.
    pub fn open(fstype: &str) -> io::Result<Self> {
        let c = cstring(fstype)?;
        // SAFETY: NUL-terminated string.
        let r = unsafe { libc::syscall(libc::SYS_fsopen, c.as_ptr(), libc::FSOPEN_CLOEXEC) };
        Ok(FsContext {
            fd: own(check(r)?),
            fstype: fstype.to_string(),
        })
    }

    fn config(&self, cmd: u32, key: Option<&str>, value: Option<&str>) -> io::Result<()> {
        let k = key.map(cstring).transpose()?;
        let v = value.map(cstring).transpose()?;
        // SAFETY: valid fd, optional NUL-terminated strings or NULL.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                self.fd.as_raw_fd(),
                cmd,
                k.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                v.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()),
                0,
            )
        };
        check(r)
            .map(|_| ())
            .map_err(|e| self.annotate(e, key, value))
    }

    /// Attach the kernel's own message (read from the fs context fd) to an error.
    fn annotate(&self, e: io::Error, key: Option<&str>, value: Option<&str>) -> io::Error {
        let mut msgs = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..8 {
            // SAFETY: buffer valid for its length.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf[..n as usize])
                .trim()
                .to_string();
            // Log lines are prefixed with their level ("e ", "w ", "i ").
            let line = match line.split_once(' ') {
                Some((lvl, rest)) if lvl.len() == 1 => rest.to_string(),
                _ => line,
            };
            msgs.push(line);
        }
        let what = match (key, value) {
            (Some(k), Some(v)) => format!(" option {k}={v}"),
            (Some(k), None) => format!(" option {k}"),
            _ => String::new(),
        };
        let kmsg = if msgs.is_empty() {
            String::new()
        } else {
            format!(" (kernel: {})", msgs.join("; "))
        };
        io::Error::new(
            e.kind(),
            format!("{} filesystem{what}: {e}{kmsg}", self.fstype),
        )
    }

    /// Set `source` (device name shown in mountinfo).
    pub fn source(&self, src: &str) -> io::Result<()> {
        self.config(libc::FSCONFIG_SET_STRING, Some("source"), Some(src))
    }

    /// Apply one data option (`key=value` or a flag `key`).
    pub fn option(&self, opt: &str) -> io::Result<()> {
        match opt.split_once('=') {
            Some((k, v)) => self.config(libc::FSCONFIG_SET_STRING, Some(k), Some(v)),
            None => self.config(libc::FSCONFIG_SET_FLAG, Some(opt), None),
        }
    }

    /// Create the superblock and return a detached mount with `attr` (MOUNT_ATTR_*) flags.
    pub fn mount(self, attr: u64) -> io::Result<OwnedFd> {
        self.config(libc::FSCONFIG_CMD_CREATE, None, None)?;
        // SAFETY: valid fs context fd.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsmount,
                self.fd.as_raw_fd(),
                libc::FSMOUNT_CLOEXEC,
                attr as libc::c_uint,
            )
        };
        check(r).map(own).map_err(|e| self.annotate(e, None, None))
    }
}

/// Make a new detached filesystem mount of `fstype` with `opts`.
pub fn new_fs(
    fstype: &str,
    source: Option<&str>,
    opts: &MountOptions,
    extra_data: &[String],
) -> io::Result<OwnedFd> {
    let fc = FsContext::open(fstype)?;
    if let Some(s) = source.filter(|s| !s.is_empty()) {
        // Some filesystems have no "source" parameter; the legacy path ignores it, so do we.
        if let Err(e) = fc.source(s) {
            if e.kind() != io::ErrorKind::InvalidInput {
                return Err(e);
            }
        }
    }
    for d in opts.data.iter().chain(extra_data) {
        for part in split_data(d) {
            fc.option(&part)?;
        }
    }
    for key in opts.sb_flag_keys() {
        fc.option(key)?;
    }
    let (set, _) = opts.mount_attr();
    fc.mount(set)
}

/// `open_tree(OPEN_TREE_CLONE)` of a host path: a detached copy of a mount (tree) for a bind.
pub fn clone_tree(dir: BorrowedFd<'_>, path: &Path, recursive: bool) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte"))?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    if path.as_os_str().is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    // SAFETY: valid fd and NUL-terminated path.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), c.as_ptr(), flags) };
    check(r).map(own)
}

/// `mount_setattr` on the mount an fd refers to (a detached tree or an attached mount root).
pub fn set_attr(
    fd: BorrowedFd<'_>,
    recursive: bool,
    set: u64,
    clr: u64,
    propagation: u64,
    userns: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    if set == 0 && clr == 0 && propagation == 0 {
        return Ok(());
    }
    let attr = libc::mount_attr {
        attr_set: set,
        attr_clr: clr,
        propagation,
        userns_fd: userns.map_or(0, |f| f.as_raw_fd() as u64),
    };
    let mut flags = libc::AT_EMPTY_PATH as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: valid fd, empty path, pointer/size of a live mount_attr.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    check(r).map(|_| ())
}

/// `move_mount` a detached mount onto the directory/file an `O_PATH` fd refers to.
pub fn attach(mnt: BorrowedFd<'_>, target: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: two valid fds with empty paths.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    check(r).map(|_| ())
}

/// Apply propagation keywords (in order) to an attached mount.
pub fn apply_propagation(mnt: BorrowedFd<'_>, props: &[u64]) -> io::Result<()> {
    for &p in props {
        let rec = p & MS_REC != 0;
        set_attr(mnt, rec, 0, 0, p & !MS_REC, None)?;
    }
    Ok(())
}

/// Legacy `mount(2)`, for the few operations that need a path (propagation of `/`, pivot).
pub fn mount_path(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: u64,
    data: Option<&str>,
) -> io::Result<()> {
    nix::mount::mount(
        source,
        target,
        fstype,
        nix::mount::MsFlags::from_bits_retain(flags),
        data,
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: &[&str]) -> MountOptions {
        MountOptions::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn flags_and_data() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k"]);
        assert_eq!(o.flags, MS_NOSUID | MS_STRICTATIME);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert!(!o.is_bind());
        let (set, clr) = o.mount_attr();
        assert_eq!(set, ATTR_NOSUID | ATTR_STRICTATIME);
        assert_eq!(clr, ATTR_ATIME);
    }

    #[test]
    fn later_option_wins() {
        let o = opts(&["ro", "rw"]);
        assert_eq!(o.flags & MS_RDONLY, 0);
        assert_eq!(o.clear & MS_RDONLY, MS_RDONLY);
        assert_eq!(o.mount_attr(), (0, ATTR_RDONLY));
        let o = opts(&["rw", "ro"]);
        assert_eq!(o.mount_attr(), (ATTR_RDONLY, 0));
    }

    #[test]
    fn bind_and_propagation() {
        let o = opts(&["rbind", "ro", "rslave", "private"]);
        assert!(o.is_bind() && o.is_recursive());
        assert_eq!(
            o.propagation,
            vec![libc::MS_SLAVE | MS_REC, libc::MS_PRIVATE]
        );
        assert!(o.data.is_empty());
        let o = opts(&["bind"]);
        assert!(o.is_bind() && !o.is_recursive());
    }

    #[test]
    fn every_runc_flag_is_known() {
        for name in [
            "ro",
            "rw",
            "nosuid",
            "suid",
            "nodev",
            "dev",
            "noexec",
            "exec",
            "sync",
            "async",
            "dirsync",
            "remount",
            "mand",
            "nomand",
            "atime",
            "noatime",
            "diratime",
            "nodiratime",
            "relatime",
            "norelatime",
            "strictatime",
            "nostrictatime",
            "bind",
            "rbind",
            "private",
            "rprivate",
            "shared",
            "rshared",
            "slave",
            "rslave",
            "unbindable",
            "runbindable",
            "tmpcopyup",
            "idmap",
            "ridmap",
            "rro",
            "rrw",
            "rnoexec",
            "lazytime",
            "defaults",
            "nosymfollow",
            "symfollow",
        ] {
            assert!(opts(&[name]).data.is_empty(), "{name} was taken as data");
        }
    }

    #[test]
    fn recursive_attrs() {
        let o = opts(&["rro", "rnosuid", "rnoatime"]);
        assert_eq!(o.rec_set, ATTR_RDONLY | ATTR_NOSUID | ATTR_NOATIME);
        assert_eq!(o.rec_clr, ATTR_ATIME);
        let o = opts(&["rro", "rrw"]);
        assert_eq!(o.rec_set, 0);
        assert_eq!(o.rec_clr, ATTR_RDONLY);
    }

    #[test]
    fn idmap_options() {
        assert_eq!(opts(&["idmap"]).idmap, Some(Idmap::Top));
        assert_eq!(opts(&["ridmap"]).idmap, Some(Idmap::Recursive));
    }

    #[test]
    fn propagation_keywords() {
        assert_eq!(parse_propagation("rslave"), Some(libc::MS_SLAVE | MS_REC));
        assert_eq!(parse_propagation("shared"), Some(libc::MS_SHARED));
        assert_eq!(parse_propagation("bogus"), None);
    }

    #[test]
    fn sb_flags() {
        let o = opts(&["ro", "sync", "nosuid"]);
        assert_eq!(o.sb_flag_keys(), vec!["ro", "sync"]);
    }

    #[test]
    fn data_splitting_keeps_quotes() {
        assert_eq!(
            split_data("mode=755,context=\"a:b:c:s0:c1,c2\",size=1k"),
            vec!["mode=755", "context=\"a:b:c:s0:c1,c2\"", "size=1k"]
        );
        assert!(opts(&["mode=700"]).has_data_key("mode"));
        assert!(!opts(&["size=1k"]).has_data_key("mode"));
    }

    #[test]
    fn atime_reset() {
        let o = opts(&["atime"]);
        assert_eq!(o.mount_attr(), (ATTR_RELATIME, ATTR_ATIME));
    }
}

//! Container root filesystem: mounts, devices, pivot_root, masked and read-only paths.
//!
//! CONTRACT (called by the init process; bodies owned by the filesystem engineer).
//!
//! Every destination inside the rootfs is resolved with `openat2(RESOLVE_IN_ROOT)` to an `O_PATH`
//! fd and mounted with the fd-based mount API (`move_mount` onto that fd), so a destination that is
//! or becomes a symlink can never place a mount outside the rootfs (CVE-2021-30465).
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};

use crate::devices;
use crate::mounts::{self, Idmap, MountOptions};
use crate::paths::{self, NodeKind};
use crate::sysctl;

/// Errors while preparing the container's root filesystem.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A system call failed; `context` names the path or mount concerned.
    #[error("{context}: {source}")]
    Sys {
        /// What was being done (e.g. "mount proc on /proc").
        context: String,
        /// The underlying OS error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration asks for something invalid (field named in the message).
    #[error("{0}")]
    Invalid(String),
}

/// What the init process knows when it sets up the root filesystem.
#[derive(Debug, Clone, Copy)]
pub struct RootfsContext<'a> {
    /// The container's configuration.
    pub spec: &'a Spec,
    /// Absolute host path of the rootfs (`root.path` resolved against the bundle).
    pub rootfs: &'a Path,
    /// Absolute host path of the bundle (relative mount sources resolve against it).
    pub bundle: &'a Path,
    /// `--no-pivot`: use MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
    /// The container has its own user namespace (devices are bind-mounted, not mknod'ed).
    pub in_user_ns: bool,
}

fn sys(context: impl Into<String>) -> impl FnOnce(io::Error) -> RootfsError {
    let context = context.into();
    move |source| RootfsError::Sys { context, source }
}

/// Files under /proc that may be bind-mounted over (lxcfs-style), as runc allows.
const PROC_BIND_ALLOWED: &[&str] = &[
    "/proc/cpuinfo",
    "/proc/diskstats",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/swaps",
    "/proc/uptime",
    "/proc/loadavg",
    "/proc/slabinfo",
    "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
];

/// Filesystem types accepted even if not (yet) listed in /proc/filesystems (module autoload).
const AUTOLOAD_FS: &[&str] = &[
    "overlay",
    "fuse",
    "squashfs",
    "nfs",
    "nfs4",
    "xfs",
    "btrfs",
    "ext4",
    "ext3",
    "ext2",
    "vfat",
    "ramfs",
    "tracefs",
    "debugfs",
    "securityfs",
    "configfs",
    "binfmt_misc",
    "bpf",
    "hugetlbfs",
    "mqueue",
    "cgroup",
    "cgroup2",
    "devpts",
    "tmpfs",
    "proc",
    "sysfs",
];

/// What kind of mount an OCI `mounts[i]` entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountKind {
    Bind,
    Cgroup,
    Fs,
}

fn mount_type(m: &Mount) -> &str {
    m.typ().as_deref().unwrap_or("")
}

fn mount_options(m: &Mount) -> MountOptions {
    MountOptions::parse(m.options().as_deref().unwrap_or(&[]))
}

fn classify(i: usize, m: &Mount, opts: &MountOptions) -> Result<MountKind, RootfsError> {
    let typ = mount_type(m);
    if opts.is_bind() || typ == "bind" {
        return Ok(MountKind::Bind);
    }
    match typ {
        "" | "none" => Err(RootfsError::Invalid(format!(
            "mounts[{i}] ({}): no type and no bind/rbind option",
            m.destination().display()
        ))),
        "cgroup" => Ok(MountKind::Cgroup),
        _ => Ok(MountKind::Fs),
    }
}

fn known_filesystems() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

fn bind_source(bundle: &Path, m: &Mount) -> Option<PathBuf> {
    let src = m.source().as_ref()?;
    Some(if src.is_absolute() {
        src.clone()
    } else {
        bundle.join(src)
    })
}

fn has_namespace(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|v| v.iter().any(|n| n.typ() == t))
}

/// Parent-side validation before any fork, so bad mounts fail fast and leave nothing behind.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), RootfsError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| RootfsError::Invalid("root: missing in config.json".into()))?;
    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    match std::fs::metadata(&rootfs) {
        Ok(md) if md.is_dir() => {}
        Ok(_) => {
            return Err(RootfsError::Invalid(format!(
                "root.path {}: not a directory",
                rootfs.display()
            )))
        }
        Err(e) => return Err(sys(format!("root.path {}", rootfs.display()))(e)),
    }
    let linux = spec.linux().as_ref();
    if let Some(p) = linux.and_then(|l| l.rootfs_propagation().as_ref()) {
        if mounts::parse_propagation(p).is_none() {
            return Err(RootfsError::Invalid(format!(
                "linux.rootfsPropagation: unknown value {p:?}"
            )));
        }
    }
    let fs_list = known_filesystems();
    let in_user_ns = has_namespace(spec, LinuxNamespaceType::User);
    for (i, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        validate_mount(i, m, bundle, &fs_list, in_user_ns)?;
    }
    if let Some(devs) = linux.and_then(|l| l.devices().as_ref()) {
        devices::device_list(devs).map_err(RootfsError::Invalid)?;
    }
    sysctl::validate(spec).map_err(RootfsError::Invalid)?;
    for (field, list) in [
        ("maskedPaths", linux.and_then(|l| l.masked_paths().as_ref())),
        (
            "readonlyPaths",
            linux.and_then(|l| l.readonly_paths().as_ref()),
        ),
    ] {
        for (i, p) in list.into_iter().flatten().enumerate() {
            if !Path::new(p).is_absolute() {
                return Err(RootfsError::Invalid(format!(
                    "linux.{field}[{i}] {p:?}: must be an absolute path"
                )));
            }
        }
    }
    Ok(())
}

fn validate_mount(
    i: usize,
    m: &Mount,
    bundle: &Path,
    fs_list: &[String],
    in_user_ns: bool,
) -> Result<(), RootfsError> {
    let dest = m.destination();
    let name = format!("mounts[{i}] ({})", dest.display());
    if !dest.is_absolute() {
        return Err(RootfsError::Invalid(format!(
            "{name}: destination must be an absolute path"
        )));
    }
    if !paths::is_clean_absolute(dest) {
        return Err(RootfsError::Invalid(format!(
            "{name}: destination must not contain '..'"
        )));
    }
    let opts = mount_options(m);
    let kind = classify(i, m, &opts)?;
    let typ = mount_type(m);
    if kind != MountKind::Bind
        && !fs_list.iter().any(|f| f == typ)
        && !AUTOLOAD_FS.contains(&typ)
        && !typ.starts_with("fuse.")
    {
        return Err(RootfsError::Invalid(format!(
            "{name}: unknown filesystem type {typ:?}"
        )));
    }
    if kind == MountKind::Bind {
        if let Some(bad) = opts.unknown_for_bind().first() {
            return Err(RootfsError::Invalid(format!(
                "{name}: unknown mount option {bad:?} for a bind mount"
            )));
        }
        let src = bind_source(bundle, m)
            .ok_or_else(|| RootfsError::Invalid(format!("{name}: bind mount without a source")))?;
        std::fs::metadata(&src).map_err(sys(format!("{name}: source {}", src.display())))?;
    }
    if opts.idmap.is_some() {
        if kind != MountKind::Bind {
            return Err(RootfsError::Invalid(format!(
                "{name}: idmap/ridmap is only supported on bind mounts"
            )));
        }
        if m.uid_mappings().is_none() || m.gid_mappings().is_none() {
            return Err(RootfsError::Invalid(format!(
                "{name}: idmap/ridmap needs uidMappings and gidMappings on the mount"
            )));
        }
        if in_user_ns {
            return Err(RootfsError::Invalid(format!(
                "{name}: id-mapped mounts inside a user namespace are not supported by skiff"
            )));
        }
    }
    if opts.tmpcopyup && typ != "tmpfs" {
        return Err(RootfsError::Invalid(format!(
            "{name}: tmpcopyup is only valid for tmpfs"
        )));
    }
    Ok(())
}

/// In the init, inside its new mount namespace and before pivot: propagation, rootfs bind,
/// `mounts` in order, default and `linux.devices`, /dev symlinks.
pub fn prepare(ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    let rootfs = std::fs::canonicalize(ctx.rootfs)
        .map_err(sys(format!("rootfs {}", ctx.rootfs.display())))?;
    let linux = ctx.spec.linux().as_ref();
    let prop = match linux.and_then(|l| l.rootfs_propagation().as_ref()) {
        Some(p) => mounts::parse_propagation(p).ok_or_else(|| {
            RootfsError::Invalid(format!("linux.rootfsPropagation: unknown value {p:?}"))
        })?,
        None => libc::MS_SLAVE | libc::MS_REC,
    };
    mounts::mount_path(None, Path::new("/"), None, prop, None)
        .map_err(sys("set propagation of / (linux.rootfsPropagation)"))?;
    make_parent_private(&rootfs)?;
    mounts::mount_path(
        Some(&rootfs),
        &rootfs,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(sys(format!("bind rootfs {} onto itself", rootfs.display())))?;
    let root = open_dir(&rootfs)?;

    let all = ctx.spec.mounts().as_deref().unwrap_or(&[]);
    for (i, m) in all.iter().enumerate() {
        mount_one(ctx, &rootfs, root.as_fd(), i, m)?;
    }

    let dev_is_bound = all
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && mount_options(m).is_bind());
    if !dev_is_bound {
        let cfg = linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]);
        let list = devices::device_list(cfg).map_err(RootfsError::Invalid)?;
        for d in &list {
            devices::create_device(root.as_fd(), d, ctx.in_user_ns)
                .map_err(sys(format!("create device {}", d.path.display())))?;
        }
        devices::setup_dev_links(root.as_fd()).map_err(sys("create /dev symlinks"))?;
    }
    // runc creates a missing process.cwd (mode 0755, inside the rootfs, symlinks confined to it).
    if let Some(cwd) = ctx.spec.process().as_ref().map(|p| p.cwd()) {
        if cwd.is_absolute() && cwd != Path::new("/") {
            paths::ensure_in_root(root.as_fd(), cwd, NodeKind::Dir)
                .map_err(sys(format!("process.cwd {}: create", cwd.display())))?;
        }
    }
    Ok(())
}

fn open_dir(p: &Path) -> Result<OwnedFd, RootfsError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(p)
        .map(OwnedFd::from)
        .map_err(sys(format!("open {}", p.display())))
}

/// One line of /proc/self/mountinfo (the fields we use).
#[derive(Debug, Clone)]
struct MountInfo {
    root: PathBuf,
    mountpoint: PathBuf,
    optional: String,
    fstype: String,
    super_opts: String,
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            Some(MountInfo {
                root: PathBuf::from(unescape(f.get(3)?)),
                mountpoint: PathBuf::from(unescape(f.get(4)?)),
                optional: f.get(6..).map(|x| x.join(" ")).unwrap_or_default(),
                fstype: p.first()?.to_string(),
                super_opts: p.get(2).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn mountinfo() -> Result<Vec<MountInfo>, RootfsError> {
    let t = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(sys("read /proc/self/mountinfo"))?;
    Ok(parse_mountinfo(&t))
}

/// pivot_root refuses a new root whose parent mount is shared: make that parent private.
fn make_parent_private(rootfs: &Path) -> Result<(), RootfsError> {
    let parent = mountinfo()?
        .into_iter()
        .filter(|m| rootfs.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.components().count());
    if let Some(p) = parent {
        if p.optional.contains("shared:") {
            mounts::mount_path(None, &p.mountpoint, None, libc::MS_PRIVATE, None)
                .map_err(sys(format!("make {} private", p.mountpoint.display())))?;
        }
    }
    Ok(())
}

fn check_proc_dest(
    name: &str,
    inside: &Path,
    typ: &str,
    kind: MountKind,
    src: Option<&Path>,
) -> Result<(), RootfsError> {
    if inside == Path::new("/proc") {
        if typ == "proc" {
            return Ok(());
        }
        if kind == MountKind::Bind {
            if let Some(s) = src {
                if let Ok(st) = nix::sys::statfs::statfs(s) {
                    if st.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC {
                        return Ok(());
                    }
                }
            }
        }
        return Err(RootfsError::Invalid(format!(
            "{name}: only a procfs may be mounted on /proc"
        )));
    }
    if inside.starts_with("/proc") && !PROC_BIND_ALLOWED.iter().any(|a| Path::new(a) == inside) {
        return Err(RootfsError::Invalid(format!(
            "{name}: resolves to {} which is inside /proc; refusing",
            inside.display()
        )));
    }
    Ok(())
}

fn mount_one(
    ctx: &RootfsContext<'_>,
    rootfs: &Path,
    root: BorrowedFd<'_>,
    i: usize,
    m: &Mount,
) -> Result<(), RootfsError> {
    let dest = m.destination();
    let typ = mount_type(m);
    let name = format!(
        "mounts[{i}] ({} on {})",
        if typ.is_empty() { "bind" } else { typ },
        dest.display()
    );
    if !paths::is_clean_absolute(dest) {
        return Err(RootfsError::Invalid(format!(
            "{name}: destination must be absolute without '..'"
        )));
    }
    let opts = mount_options(m);
    let kind = classify(i, m, &opts)?;
    match kind {
        MountKind::Bind => mount_bind(ctx, rootfs, root, &name, m, &opts),
        MountKind::Cgroup => mount_cgroup(ctx, rootfs, root, &name, m, &opts),
        MountKind::Fs => mount_fs(ctx, rootfs, root, &name, m, &opts),
    }
}

fn file_kind(p: &Path) -> io::Result<NodeKind> {
    Ok(if std::fs::metadata(p)?.is_dir() {
        NodeKind::Dir
    } else {
        NodeKind::File
    })
}

fn mount_bind(
    ctx: &RootfsContext<'_>,
    rootfs: &Path,
    root: BorrowedFd<'_>,
    name: &str,
    m: &Mount,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let src = bind_source(ctx.bundle, m)
        .ok_or_else(|| RootfsError::Invalid(format!("{name}: bind mount without a source")))?;
    let kind = file_kind(&src).map_err(sys(format!("{name}: source {}", src.display())))?;
    let (dfd, inside) = open_destination(root, rootfs, name, m.destination(), kind)?;
    check_proc_dest(name, &inside, mount_type(m), MountKind::Bind, Some(&src))?;
    if opts.flags & libc::MS_REMOUNT != 0 {
        return remount(name, dfd.as_fd(), opts);
    }
    let tree = mounts::clone_tree(unsafe_cwd(), &src, opts.is_recursive())
        .map_err(sys(format!("{name}: open_tree {}", src.display())))?;
    let (set, clr) = opts.mount_attr();
    mounts::set_attr(tree.as_fd(), false, set, clr, 0, None)
        .map_err(sys(format!("{name}: set mount flags")))?;
    set_recursive_flags(name, tree.as_fd(), opts)?;
    if let Some(idmap) = opts.idmap {
        let userns =
            idmap_userns(m).map_err(sys(format!("{name}: create id-map user namespace")))?;
        mounts::set_attr(
            tree.as_fd(),
            idmap == Idmap::Recursive,
            libc::MOUNT_ATTR_IDMAP,
            0,
            0,
            Some(userns.as_fd()),
        )
        .map_err(sys(format!(
            "{name}: id-map the mount (kernel or filesystem may not support it)"
        )))?;
    }
    attach_and_propagate(name, tree.as_fd(), dfd.as_fd(), opts)
}

/// The mount destination `dest` made (as a `kind`) and opened inside the container root, with
/// the in-container path it really resolved to (for the /proc and /sys checks).
fn open_destination(
    root: BorrowedFd<'_>,
    rootfs: &Path,
    name: &str,
    dest: &Path,
    kind: NodeKind,
) -> Result<(OwnedFd, PathBuf), RootfsError> {
    let dfd = paths::ensure_in_root(root, dest, kind)
        .map_err(sys(format!("{name}: create destination")))?;
    let inside = paths::verify_inside(dfd.as_fd(), rootfs).map_err(sys(name.to_string()))?;
    Ok((dfd, inside))
}

/// `MS_REMOUNT`: change the flags of the mount already at the destination `dfd` (nothing new
/// is mounted).
fn remount(name: &str, dfd: BorrowedFd<'_>, opts: &MountOptions) -> Result<(), RootfsError> {
    let (set, clr) = opts.mount_attr();
    mounts::set_attr(dfd, false, set, clr, 0, None).map_err(sys(format!("{name}: remount")))
}

/// The `r`-prefixed options (`rro`, `rnosuid`, ...) on a detached mount, for every mount below.
fn set_recursive_flags(
    name: &str,
    mnt: BorrowedFd<'_>,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    if opts.rec_set != 0 || opts.rec_clr != 0 {
        mounts::set_attr(mnt, true, opts.rec_set, opts.rec_clr, 0, None)
            .map_err(sys(format!("{name}: set recursive mount flags")))?;
    }
    Ok(())
}

/// Attach the detached mount `mnt` onto the destination `dfd`, then give it the mount's
/// propagation.
fn attach_and_propagate(
    name: &str,
    mnt: BorrowedFd<'_>,
    dfd: BorrowedFd<'_>,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    mounts::attach(mnt, dfd).map_err(sys(format!("{name}: move_mount")))?;
    mounts::apply_propagation(mnt, &opts.propagation)
        .map_err(sys(format!("{name}: set propagation")))
}

/// AT_FDCWD as a borrowed fd (for `open_tree` on absolute host paths).
fn unsafe_cwd() -> BorrowedFd<'static> {
    // SAFETY: AT_FDCWD is a special value the *at syscalls accept; it is never closed.
    unsafe { BorrowedFd::borrow_raw(libc::AT_FDCWD) }
}

fn mount_fs(
    ctx: &RootfsContext<'_>,
    rootfs: &Path,
    root: BorrowedFd<'_>,
    name: &str,
    m: &Mount,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let typ = mount_type(m);
    let dest = m.destination();
    if typ == "proc" || typ == "sysfs" {
        match paths::open_in_root_nofollow(root, dest) {
            Ok(fd) => {
                let st = nix::sys::stat::fstat(&fd).map_err(|e| sys(name.to_string())(e.into()))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(RootfsError::Invalid(format!(
                        "{name}: {typ} must be mounted on an ordinary directory (destination is not one)"
                    )));
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(sys(name.to_string())(e)),
        }
    }
    // runc keeps the mode of a directory the tmpfs covers, but only one that already existed.
    let existed = paths::open_in_root(root, dest).is_ok();
    let (dfd, inside) = open_destination(root, rootfs, name, dest, NodeKind::Dir)?;
    check_proc_dest(name, &inside, typ, MountKind::Fs, None)?;
    if opts.flags & libc::MS_REMOUNT != 0 {
        return remount(name, dfd.as_fd(), opts);
    }
    let mut opts = opts.clone();
    // /dev stays writable until devices exist; finalize() makes it read-only if asked.
    if inside == Path::new("/dev") {
        opts.flags &= !libc::MS_RDONLY;
    }
    let mut extra = Vec::new();
    if typ == "tmpfs" && existed && !opts.has_data_key("mode") {
        // Keep the mode of the directory the tmpfs covers (runc does the same).
        if let Ok(st) = nix::sys::stat::fstat(&dfd) {
            extra.push(format!("mode={:o}", st.st_mode & 0o7777));
        }
    }
    let source = m.source().as_ref().and_then(|s| s.to_str()).unwrap_or(typ);
    let mnt = match mounts::new_fs(typ, Some(source), &opts, &extra) {
        Ok(mnt) => mnt,
        Err(e) if typ == "sysfs" && e.raw_os_error() == Some(libc::EPERM) => {
            // No own network namespace in a user namespace: bind the host's /sys instead (runc).
            bind_host_tree(Path::new("/sys"), &opts).map_err(sys(format!("{name}: bind /sys")))?
        }
        Err(e) if typ == "mqueue" && ctx.in_user_ns && e.raw_os_error() == Some(libc::EPERM) => {
            bind_host_tree(Path::new("/dev/mqueue"), &opts)
                .map_err(sys(format!("{name}: bind /dev/mqueue")))?
        }
        Err(e) => return Err(sys(format!("{name}: mount"))(e)),
    };
    if opts.tmpcopyup {
        copy_up(dfd.as_fd(), mnt.as_fd()).map_err(sys(format!("{name}: tmpcopyup")))?;
    }
    set_recursive_flags(name, mnt.as_fd(), &opts)?;
    attach_and_propagate(name, mnt.as_fd(), dfd.as_fd(), &opts)
}

fn bind_host_tree(src: &Path, opts: &MountOptions) -> io::Result<OwnedFd> {
    let tree = mounts::clone_tree(unsafe_cwd(), src, true)?;
    let (set, clr) = opts.mount_attr();
    mounts::set_attr(tree.as_fd(), false, set, clr, 0, None)?;
    Ok(tree)
}

/// `tmpcopyup`: copy the directory being covered into the new (still detached) tmpfs.
fn copy_up(under: BorrowedFd<'_>, mnt: BorrowedFd<'_>) -> io::Result<()> {
    let from = PathBuf::from(format!("/proc/self/fd/{}", under.as_raw_fd()));
    let to = PathBuf::from(format!("/proc/self/fd/{}", mnt.as_raw_fd()));
    copy_tree(&from, &to, 0)
}

fn copy_tree(from: &Path, to: &Path, depth: usize) -> io::Result<()> {
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
    if depth > 64 {
        return Err(io::Error::other("directory tree too deep"));
    }
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let md = entry.metadata()?;
        let src = entry.path();
        let dst = to.join(entry.file_name());
        let ft = md.file_type();
        if ft.is_symlink() {
            symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_dir() {
            std::fs::create_dir(&dst)?;
            copy_tree(&src, &dst, depth + 1)?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        } else if ft.is_file() {
            std::fs::copy(&src, &dst)?;
        } else {
            continue;
        }
        let _ = std::os::unix::fs::lchown(&dst, Some(md.uid()), Some(md.gid()));
    }
    Ok(())
}

/// A user namespace fd with the mount's uid/gid mappings, for `MOUNT_ATTR_IDMAP`.
///
/// A short-lived child unshares a user namespace and reports its pid *as /proc sees it* (the init
/// may be in a new pid namespace while /proc is still the host's), the parent writes the maps and
/// opens the namespace, then the child exits.
fn idmap_userns(m: &Mount) -> io::Result<OwnedFd> {
    use nix::sched::{unshare, CloneFlags};
    use nix::unistd::{fork, ForkResult};
    fn fmt(v: &[oci_spec::runtime::LinuxIdMapping]) -> String {
        v.iter()
            .map(|x| format!("{} {} {}\n", x.container_id(), x.host_id(), x.size()))
            .collect()
    }
    let uid = fmt(m.uid_mappings().as_deref().unwrap_or(&[]));
    let gid = fmt(m.gid_mappings().as_deref().unwrap_or(&[]));
    let (done_rd, done_wr) = nix::unistd::pipe().map_err(io::Error::from)?;
    let (pid_rd, pid_wr) = nix::unistd::pipe().map_err(io::Error::from)?;
    // SAFETY: the child only calls async-signal-safe functions (unshare, readlink, write, read, _exit).
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Child => {
            drop(done_wr);
            drop(pid_rd);
            if unshare(CloneFlags::CLONE_NEWUSER).is_ok() {
                let mut buf = [0u8; 32];
                // SAFETY: readlink into a stack buffer; "/proc/self" names our pid in /proc's namespace.
                let n = unsafe {
                    libc::readlink(c"/proc/self".as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                };
                if n > 0 {
                    // SAFETY: write n bytes of our buffer to the pipe.
                    unsafe { libc::write(pid_wr.as_raw_fd(), buf.as_ptr().cast(), n as usize) };
                }
            }
            drop(pid_wr);
            let mut b = [0u8; 1];
            // SAFETY: blocking read on our pipe until the parent is done with our namespace.
            unsafe { libc::read(done_rd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
            // SAFETY: _exit is always safe in a forked child.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            drop(done_rd);
            drop(pid_wr);
            let res = (|| {
                use std::io::Read;
                let mut s = String::new();
                std::fs::File::from(pid_rd).read_to_string(&mut s)?;
                let pid: u32 = s.trim().parse().map_err(|_| {
                    io::Error::other("the helper could not create a user namespace")
                })?;
                std::fs::write(format!("/proc/{pid}/uid_map"), &uid)?;
                std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
                std::fs::write(format!("/proc/{pid}/gid_map"), &gid)?;
                std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from)
            })();
            drop(done_wr);
            let _ = nix::sys::wait::waitpid(child, None);
            res
        }
    }
}

fn own_cgroups() -> BTreeMap<String, PathBuf> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let ctrl = it.next()?;
            let path = it.next()?;
            Some((ctrl.to_string(), PathBuf::from(path)))
        })
        .collect()
}

fn mount_cgroup(
    ctx: &RootfsContext<'_>,
    rootfs: &Path,
    root: BorrowedFd<'_>,
    name: &str,
    m: &Mount,
    opts: &MountOptions,
) -> Result<(), RootfsError> {
    let (dfd, inside) = open_destination(root, rootfs, name, m.destination(), NodeKind::Dir)?;
    check_proc_dest(name, &inside, "cgroup", MountKind::Cgroup, None)?;
    let cgroupns = has_namespace(ctx.spec, LinuxNamespaceType::Cgroup);
    let unified = nix::sys::statfs::statfs("/sys/fs/cgroup")
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    let own = own_cgroups();
    if unified {
        let mnt = match mounts::new_fs("cgroup2", Some("cgroup2"), opts, &[]) {
            Ok(m) => m,
            Err(e)
                if e.raw_os_error() == Some(libc::EPERM)
                    || e.raw_os_error() == Some(libc::EBUSY) =>
            {
                let path = own.get("").cloned().unwrap_or_else(|| PathBuf::from("/"));
                let src = Path::new("/sys/fs/cgroup").join(paths::relative(&path));
                bind_host_tree(&src, opts)
                    .map_err(sys(format!("{name}: bind {}", src.display())))?
            }
            Err(e) => return Err(sys(format!("{name}: mount cgroup2"))(e)),
        };
        return attach_and_propagate(name, mnt.as_fd(), dfd.as_fd(), opts);
    }
    // cgroup v1 (or hybrid): a tmpfs with one directory per hierarchy, as runc does.
    let mut tmp_opts = opts.clone();
    tmp_opts.flags &= !libc::MS_RDONLY;
    tmp_opts.data.clear();
    let tmpfs = mounts::new_fs("tmpfs", Some("tmpfs"), &tmp_opts, &["mode=755".to_string()])
        .map_err(sys(format!("{name}: mount tmpfs")))?;
    mounts::attach(tmpfs.as_fd(), dfd.as_fd()).map_err(sys(format!("{name}: move_mount")))?;
    let mut sub_opts = opts.clone();
    sub_opts.data.clear();
    for mi in mountinfo()?.into_iter().filter(|x| x.fstype == "cgroup") {
        let Some(dirname) = mi.mountpoint.file_name().map(|s| s.to_os_string()) else {
            continue;
        };
        let subsystems: Vec<&str> = mi
            .super_opts
            .split(',')
            .filter(|o| {
                *o != "rw"
                    && *o != "ro"
                    && !o.starts_with("release_agent")
                    && *o != "clone_children"
                    && *o != "noprefix"
                    && *o != "xattr"
            })
            .collect();
        let key = own
            .keys()
            .find(|k| {
                let mut a: Vec<&str> = k.split(',').collect();
                let mut b = subsystems.clone();
                a.sort_unstable();
                b.sort_unstable();
                !k.is_empty() && a == b
            })
            .cloned();
        let Some(key) = key else { continue };
        if mi.mountpoint.parent() != Some(Path::new("/sys/fs/cgroup")) {
            continue;
        }
        let sub = {
            let c = std::ffi::CString::new(dirname.as_encoded_bytes())
                .map_err(|_| RootfsError::Invalid(format!("{name}: bad cgroup name")))?;
            // SAFETY: valid dir fd (tmpfs root) and NUL-terminated name.
            unsafe { libc::mkdirat(tmpfs.as_raw_fd(), c.as_ptr(), 0o755) };
            paths::openat_nofollow(tmpfs.as_fd(), &dirname)
                .map_err(sys(format!("{name}: mkdir {}", dirname.to_string_lossy())))?
        };
        let sub_mnt = if cgroupns {
            // runc names a named hierarchy's mount after it (`systemd` for name=systemd).
            let source = subsystems
                .iter()
                .find_map(|s| s.strip_prefix("name="))
                .unwrap_or("cgroup");
            mounts::new_fs("cgroup", Some(source), &sub_opts, &[subsystems.join(",")])
                .map_err(sys(format!("{name}: mount cgroup {key}")))?
        } else {
            let path = own.get(&key).cloned().unwrap_or_else(|| PathBuf::from("/"));
            let rel = path.strip_prefix(&mi.root).unwrap_or(Path::new(""));
            let src = mi.mountpoint.join(rel);
            bind_host_tree(&src, &sub_opts)
                .map_err(sys(format!("{name}: bind {}", src.display())))?
        };
        mounts::attach(sub_mnt.as_fd(), sub.as_fd())
            .map_err(sys(format!("{name}: move_mount {key}")))?;
        let dn = dirname.to_string_lossy().to_string();
        if dn.contains(',') {
            for part in dn.split(',') {
                let (t, n) = (
                    std::ffi::CString::new(dn.as_str()).unwrap_or_default(),
                    std::ffi::CString::new(part).unwrap_or_default(),
                );
                // SAFETY: valid dir fd and NUL-terminated strings.
                unsafe { libc::symlinkat(t.as_ptr(), tmpfs.as_raw_fd(), n.as_ptr()) };
            }
        }
    }
    // As runc: the tmpfs holding the hierarchies stays writable (mode 755, root-owned); `ro`
    // applies to the hierarchy mounts inside it, which is what protects the host's cgroups.
    mounts::apply_propagation(tmpfs.as_fd(), &opts.propagation)
        .map_err(sys(format!("{name}: set propagation")))
}

/// Switch root: pivot_root into the rootfs (or MS_MOVE + chroot with `no_pivot`); cwd is `/` after.
pub fn pivot(ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    use nix::mount::{umount2, MntFlags};
    use nix::unistd::{chdir, chroot, fchdir, pivot_root};
    let rootfs = std::fs::canonicalize(ctx.rootfs)
        .map_err(sys(format!("rootfs {}", ctx.rootfs.display())))?;
    let e = |what: &'static str| move |err: nix::Error| sys(what)(io::Error::from(err));
    if ctx.no_pivot {
        detach_foreign_mounts(&rootfs);
        chdir(&rootfs).map_err(e("chdir to rootfs"))?;
        mounts::mount_path(Some(&rootfs), Path::new("/"), None, libc::MS_MOVE, None)
            .map_err(sys("move rootfs to / (--no-pivot)"))?;
        chroot(".").map_err(e("chroot (--no-pivot)"))?;
        chdir("/").map_err(e("chdir /"))?;
        return Ok(());
    }
    let old = open_dir(Path::new("/"))?;
    let new = open_dir(&rootfs)?;
    fchdir(&new).map_err(e("chdir to rootfs"))?;
    pivot_root(".", ".").map_err(e("pivot_root"))?;
    fchdir(&old).map_err(e("chdir to old root"))?;
    mounts::mount_path(
        None,
        Path::new("."),
        None,
        libc::MS_SLAVE | libc::MS_REC,
        None,
    )
    .map_err(sys("make old root rslave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(e("unmount old root"))?;
    chdir("/").map_err(e("chdir /"))?;
    Ok(())
}

/// Before MS_MOVE (no pivot), lazily unmount host mounts that are neither the rootfs (or below
/// it) nor one of its ancestors, so they are not reachable from the container.
fn detach_foreign_mounts(rootfs: &Path) {
    let Ok(list) = mountinfo() else { return };
    let mut victims: Vec<PathBuf> = list
        .into_iter()
        .map(|m| m.mountpoint)
        .filter(|mp| !mp.starts_with(rootfs) && !rootfs.starts_with(mp))
        .collect();
    victims.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    victims.dedup();
    for v in victims {
        let _ = nix::mount::umount2(&v, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// After pivot, when `process.terminal`: bind the pty slave (a host-side path such as
/// /dev/pts/N of the container's devpts) onto /dev/console safely.
pub fn setup_console(slave: &Path) -> Result<(), RootfsError> {
    let root = open_dir(Path::new("/"))?;
    let sfd = paths::open_no_symlinks(root.as_fd(), slave, libc::O_PATH)
        .map_err(sys(format!("open console slave {}", slave.display())))?;
    let st = nix::sys::stat::fstat(&sfd).map_err(|e| sys("stat console slave")(e.into()))?;
    let major = libc::major(st.st_rdev);
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || !(136..=143).contains(&major) {
        return Err(RootfsError::Invalid(format!(
            "console slave {} is not a pty slave device",
            slave.display()
        )));
    }
    let dev = paths::open_no_symlinks(
        root.as_fd(),
        Path::new("/dev"),
        libc::O_PATH | libc::O_DIRECTORY,
    )
    .map_err(sys("open /dev for /dev/console"))?;
    let cfd = match paths::openat_nofollow(dev.as_fd(), std::ffi::OsStr::new("console")) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
            // SAFETY: valid dir fd, NUL-terminated name; creates an empty regular file.
            let r = unsafe {
                libc::mknodat(
                    dev.as_raw_fd(),
                    c"console".as_ptr(),
                    libc::S_IFREG | 0o666,
                    0,
                )
            };
            if r != 0 {
                return Err(sys("create /dev/console")(io::Error::last_os_error()));
            }
            paths::openat_nofollow(dev.as_fd(), std::ffi::OsStr::new("console"))
                .map_err(sys("open /dev/console"))?
        }
        Err(e) => return Err(sys("open /dev/console")(e)),
    };
    let ct = nix::sys::stat::fstat(&cfd).map_err(|e| sys("stat /dev/console")(e.into()))?;
    let fmt = ct.st_mode & libc::S_IFMT;
    if fmt != libc::S_IFREG && fmt != libc::S_IFCHR {
        return Err(RootfsError::Invalid(
            "/dev/console is a symlink or not a regular file/character device; refusing to mount the console over it"
                .into(),
        ));
    }
    let tree = mounts::clone_tree(sfd.as_fd(), Path::new(""), false)
        .map_err(sys("clone console slave mount"))?;
    mounts::attach(tree.as_fd(), cfd.as_fd()).map_err(sys("bind console onto /dev/console"))
}

/// After pivot (and console): sysctls, maskedPaths, readonlyPaths, `root.readonly`.
pub fn finalize(ctx: &RootfsContext<'_>) -> Result<(), RootfsError> {
    let linux = ctx.spec.linux().as_ref();
    if let Some(map) = linux.and_then(|l| l.sysctl().as_ref()) {
        let mut keys: Vec<&String> = map.keys().collect();
        keys.sort();
        for k in keys {
            sysctl::write(k, &map[k]).map_err(sys(format!("linux.sysctl[{k:?}]")))?;
        }
    }
    let root = open_dir(Path::new("/"))?;
    for (i, p) in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        readonly_path(root.as_fd(), Path::new(p))
            .map_err(sys(format!("linux.readonlyPaths[{i}] ({p})")))?;
    }
    let mut devnull: Option<OwnedFd> = None;
    for (i, p) in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        mask_path(root.as_fd(), Path::new(p), &mut devnull)
            .map_err(sys(format!("linux.maskedPaths[{i}] ({p})")))?;
    }
    let dev_ro = ctx.spec.mounts().as_deref().unwrap_or(&[]).iter().any(|m| {
        m.destination() == Path::new("/dev")
            && !mount_options(m).is_bind()
            && mount_options(m).flags & libc::MS_RDONLY != 0
    });
    if dev_ro {
        let fd = paths::open_in_root(root.as_fd(), Path::new("/dev")).map_err(sys("open /dev"))?;
        mounts::set_attr(fd.as_fd(), false, libc::MOUNT_ATTR_RDONLY, 0, 0, None)
            .map_err(sys("make /dev read-only"))?;
    }
    let readonly = ctx
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    if readonly {
        let fd = paths::open_in_root(root.as_fd(), Path::new("/")).map_err(sys("open /"))?;
        mounts::set_attr(fd.as_fd(), false, libc::MOUNT_ATTR_RDONLY, 0, 0, None)
            .map_err(sys("root.readonly: remount / read-only"))?;
    }
    Ok(())
}

/// `p` opened inside the container root, or None when it does not exist (a masked or
/// read-only path the image lacks is nothing to do).
fn open_existing(root: BorrowedFd<'_>, p: &Path) -> io::Result<Option<OwnedFd>> {
    match paths::open_in_root(root, p) {
        Ok(fd) => Ok(Some(fd)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn readonly_path(root: BorrowedFd<'_>, p: &Path) -> io::Result<()> {
    let Some(fd) = open_existing(root, p)? else {
        return Ok(());
    };
    // Only RDONLY is added (recursively); nosuid/nodev/noexec already on the mount are kept, as runc.
    let tree = mounts::clone_tree(fd.as_fd(), Path::new(""), true)?;
    mounts::set_attr(tree.as_fd(), true, libc::MOUNT_ATTR_RDONLY, 0, 0, None)?;
    mounts::attach(tree.as_fd(), fd.as_fd())
}

/// The container's /dev/null, verified to be the real null device (char 1:3), never a file,
/// symlink or other node the container put there (CVE-2025-31133).
fn verified_devnull(root: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let fd = paths::open_no_symlinks(root, Path::new("/dev/null"), libc::O_PATH)?;
    let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != libc::makedev(1, 3) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "/dev/null is not the null device (1:3); refusing to use it to mask paths",
        ));
    }
    Ok(fd)
}

fn mask_path(root: BorrowedFd<'_>, p: &Path, devnull: &mut Option<OwnedFd>) -> io::Result<()> {
    let Some(fd) = open_existing(root, p)? else {
        return Ok(());
    };
    let st = nix::sys::stat::fstat(&fd).map_err(io::Error::from)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let ro = MountOptions::parse(&["ro".to_string()]);
        let mnt = mounts::new_fs("tmpfs", Some("tmpfs"), &ro, &[])?;
        return mounts::attach(mnt.as_fd(), fd.as_fd());
    }
    if devnull.is_none() {
        *devnull = Some(verified_devnull(root)?);
    }
    let null = devnull
        .as_ref()
        .ok_or_else(|| io::Error::other("no /dev/null"))?;
    let tree = mounts::clone_tree(null.as_fd(), Path::new(""), false)?;
    mounts::attach(tree.as_fd(), fd.as_fd())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": mounts,
        }))
        .expect("spec")
    }

    fn bundle() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(t.path().join("rootfs")).expect("mkdir");
        t
    }

    #[test]
    fn validate_accepts_default_mounts() {
        let b = bundle();
        let s = spec(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid","strictatime","mode=755","size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid","noexec","nodev","relatime","ro"]},
            {"destination": "/data", "type": "bind", "source": "/tmp", "options": ["rbind","ro","rprivate"]},
        ]));
        validate(&s, b.path()).expect("valid");
    }

    #[test]
    fn validate_rejects_bad_mounts() {
        let b = bundle();
        for (m, want) in [
            (
                serde_json::json!({"destination": "relative", "type": "tmpfs"}),
                "mounts[0]",
            ),
            (
                serde_json::json!({"destination": "/x", "type": "nosuchfs"}),
                "unknown filesystem",
            ),
            (
                serde_json::json!({"destination": "/x", "type": "bind", "source": "/tmp", "options": ["bind", "bogus"]}),
                "bogus",
            ),
            (
                serde_json::json!({"destination": "/x", "source": "/nonexistent-skiff", "options": ["bind"]}),
                "source",
            ),
            (
                serde_json::json!({"destination": "/x", "type": "tmpfs", "options": ["idmap"]}),
                "idmap",
            ),
            (serde_json::json!({"destination": "/x"}), "no type"),
        ] {
            let e = validate(&spec(serde_json::json!([m])), b.path())
                .expect_err("must be rejected")
                .to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
    }

    #[test]
    fn validate_rootfs_missing() {
        let t = tempfile::tempdir().expect("tmp");
        let e = validate(&spec(serde_json::json!([])), t.path())
            .expect_err("must be rejected")
            .to_string();
        assert!(e.contains("root.path"), "{e}");
    }

    #[test]
    fn proc_destination_rules() {
        let n = "mounts[0]";
        assert!(check_proc_dest(n, Path::new("/proc"), "proc", MountKind::Fs, None).is_ok());
        assert!(check_proc_dest(n, Path::new("/proc"), "tmpfs", MountKind::Fs, None).is_err());
        assert!(check_proc_dest(n, Path::new("/proc/sys"), "tmpfs", MountKind::Fs, None).is_err());
        assert!(check_proc_dest(n, Path::new("/proc/cpuinfo"), "", MountKind::Bind, None).is_ok());
        assert!(check_proc_dest(n, Path::new("/procx"), "tmpfs", MountKind::Fs, None).is_ok());
    }

    #[test]
    fn mountinfo_parsing() {
        let t = "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n";
        let v = parse_mountinfo(t);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].mountpoint, PathBuf::from("/mnt two"));
        assert_eq!(v[0].root, PathBuf::from("/mnt1"));
        assert!(v[0].optional.contains("shared:7"));
        assert_eq!(v[0].fstype, "ext3");
        assert_eq!(v[0].super_opts, "rw,errors=continue");
    }
}

/// Root-only end-to-end driver: re-runs this test binary under `unshare` (new mount, pid, net,
/// ipc, uts namespaces) so that `prepare`/`pivot`/`finalize` run for real on a busybox rootfs and
/// a shell inside reports what it sees. Works without the rest of the runtime.
#[cfg(test)]
mod driver {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    const BUNDLE_ENV: &str = "SKIFF_FS_DRIVER_BUNDLE";
    const SCRIPT_ENV: &str = "SKIFF_FS_DRIVER_SCRIPT";

    /// Entry point inside the namespaces: set up the rootfs and exec the script.
    #[test]
    fn child() {
        let (Ok(bundle), Ok(script)) = (std::env::var(BUNDLE_ENV), std::env::var(SCRIPT_ENV))
        else {
            return; // only meaningful when started by `run_driver`
        };
        let bundle = PathBuf::from(bundle);
        let res = (|| -> Result<(), String> {
            let text =
                std::fs::read_to_string(bundle.join("config.json")).map_err(|e| e.to_string())?;
            let spec: Spec = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            let rootfs = bundle.join("rootfs");
            validate(&spec, &bundle).map_err(|e| format!("validate: {e}"))?;
            let ctx = RootfsContext {
                spec: &spec,
                rootfs: &rootfs,
                bundle: &bundle,
                no_pivot: std::env::var("SKIFF_FS_DRIVER_NOPIVOT").is_ok(),
                in_user_ns: false,
            };
            prepare(&ctx).map_err(|e| format!("prepare: {e}"))?;
            pivot(&ctx).map_err(|e| format!("pivot: {e}"))?;
            finalize(&ctx).map_err(|e| format!("finalize: {e}"))?;
            Ok(())
        })();
        if let Err(e) = res {
            println!("DRIVER-ERROR: {e}");
            std::process::exit(3);
        }
        use std::os::unix::process::CommandExt;
        let e = Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .env_clear()
            .env("PATH", "/bin")
            .exec();
        println!("DRIVER-ERROR: exec: {e}");
        std::process::exit(4);
    }

    fn can_run() -> bool {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: rootfs driver needs root");
            return false;
        }
        if !Path::new("/bin/busybox").exists() || !Path::new("/usr/bin/unshare").exists() {
            eprintln!("SKIP: rootfs driver needs /bin/busybox and /usr/bin/unshare");
            return false;
        }
        true
    }

    /// A bundle dir with a busybox rootfs and the given config.
    fn make_bundle(config: serde_json::Value) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tmp");
        let bin = t.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("copy busybox");
        let out = Command::new("/bin/busybox")
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&out.stdout).lines() {
            if !applet.is_empty() && applet != "busybox" {
                let _ = symlink("busybox", bin.join(applet));
            }
        }
        for d in ["proc", "sys", "dev", "tmp", "etc"] {
            std::fs::create_dir_all(t.path().join("rootfs").join(d)).expect("mkdir");
        }
        std::fs::write(
            t.path().join("config.json"),
            serde_json::to_vec_pretty(&config).expect("json"),
        )
        .expect("write config");
        t
    }

    fn run_driver(bundle: &Path, script: &str, extra_env: &[(&str, &str)]) -> (bool, String) {
        let exe = std::env::current_exe().expect("exe");
        let mut cmd = Command::new("/usr/bin/unshare");
        cmd.args([
            "--mount", "--pid", "--fork", "--net", "--ipc", "--uts", "--",
        ])
        .arg(exe)
        .args([
            "--exact",
            "rootfs::driver::child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(BUNDLE_ENV, bundle)
        .env(SCRIPT_ENV, script);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run unshare");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success() && !text.contains("DRIVER-ERROR"), text)
    }

    fn default_config(
        extra_mounts: serde_json::Value,
        args_linux: serde_json::Value,
    ) -> serde_json::Value {
        let mut mounts = serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid","strictatime","mode=755","size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid","noexec","newinstance","ptmxmode=0666","mode=0620","gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid","noexec","nodev","mode=1777","size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid","noexec","nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid","noexec","nodev","ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid","noexec","nodev","relatime","ro"]},
        ]);
        if let (Some(a), Some(b)) = (mounts.as_array_mut(), extra_mounts.as_array()) {
            a.extend(b.iter().cloned());
        }
        let mut linux = serde_json::json!({
            "namespaces": [{"type":"pid"},{"type":"network"},{"type":"ipc"},{"type":"uts"},{"type":"mount"}],
            "maskedPaths": ["/proc/acpi","/proc/kcore","/proc/keys","/proc/timer_list","/sys/firmware","/proc/scsi"],
            "readonlyPaths": ["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"],
        });
        if let (Some(l), Some(extra)) = (linux.as_object_mut(), args_linux.as_object()) {
            for (k, v) in extra {
                l.insert(k.clone(), v.clone());
            }
        }
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs", "readonly": true},
            "mounts": mounts,
            "linux": linux,
        })
    }

    #[test]
    fn full_setup_as_runc_default() {
        if !can_run() {
            return;
        }
        let host_dir = tempfile::tempdir().expect("tmp");
        std::fs::write(host_dir.path().join("hello"), "from-host\n").expect("write");
        let cfg = default_config(
            serde_json::json!([
                {"destination": "/data", "type": "bind", "source": host_dir.path(), "options": ["rbind","ro","nosuid"]},
                {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m","mode=700","noexec"]},
            ]),
            serde_json::json!({
                "sysctl": {"net.ipv4.ip_forward": "1"},
                "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 432}],
            }),
        );
        let b = make_bundle(cfg);
        let script = r#"
echo MOUNTINFO; cat /proc/self/mountinfo
echo DEVLS; ls -ln /dev
echo DATA=$(cat /data/hello)
touch /data/x 2>/dev/null && echo DATA-WRITABLE || echo DATA-RO
touch /newfile 2>/dev/null && echo ROOT-WRITABLE || echo ROOT-RO
touch /scratch/f && echo SCRATCH-OK
echo SCRATCH-MODE=$(stat -c %a /scratch)
echo FWD=$(cat /proc/sys/net/ipv4/ip_forward)
echo 0 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo PROCSYS-WRITABLE || echo PROCSYS-RO
echo KEYS=$(wc -c < /proc/keys)
echo ACPI=$(ls /proc/acpi | wc -l)
echo FUSE=$(stat -c '%t:%T:%a' /dev/fuse)
echo NULL=$(stat -c '%F %t:%T' /dev/null)
ls /sys/fs/cgroup
echo END
"#;
        let (ok, out) = run_driver(b.path(), script, &[]);
        assert!(ok, "driver failed:\n{out}");
        for want in [
            "DATA=from-host",
            "DATA-RO",
            "ROOT-RO",
            "SCRATCH-OK",
            "SCRATCH-MODE=700",
            "FWD=1",
            "PROCSYS-RO",
            "KEYS=0",
            "ACPI=0",
            "FUSE=a:e5:660",
            "NULL=character special file 1:3",
            "ptmx -> pts/ptmx",
            "fd -> /proc/self/fd",
            "stdin -> /proc/self/fd/0",
            " /dev/pts ",
            " /sys/fs/cgroup ",
            "memory",
            "END",
        ] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
        let scratch = out
            .lines()
            .find(|l| l.contains(" /scratch "))
            .unwrap_or_else(|| panic!("no /scratch mount:\n{out}"));
        assert!(
            scratch.contains("noexec") && scratch.contains("size=1024k"),
            "{scratch}"
        );
        let data = out
            .lines()
            .find(|l| l.contains(" /data "))
            .expect("data mount");
        assert!(data.contains(" ro,") && data.contains("nosuid"), "{data}");
        assert!(!host_dir.path().join("x").exists());
    }

    #[test]
    fn symlink_destination_cannot_escape() {
        if !can_run() {
            return;
        }
        let outside = tempfile::tempdir().expect("tmp");
        let cfg = default_config(
            serde_json::json!([
                {"destination": "/evil/sub", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/evil2/file", "type": "bind", "source": "/etc/hostname", "options": ["bind"]},
                {"destination": "/evil3", "type": "tmpfs", "source": "tmpfs"},
            ]),
            serde_json::json!({}),
        );
        let b = make_bundle(cfg);
        let rootfs = b.path().join("rootfs");
        symlink(outside.path(), rootfs.join("evil")).expect("symlink");
        symlink(
            format!("../../../../../../..{}", outside.path().display()),
            rootfs.join("evil2"),
        )
        .expect("symlink");
        symlink(outside.path(), rootfs.join("evil3")).expect("symlink");
        let (ok, out) = run_driver(b.path(), "cat /proc/self/mountinfo; echo END", &[]);
        assert!(ok, "driver failed:\n{out}");
        // Everything landed inside the rootfs, at the symlink target taken relative to it.
        let inside = rootfs.join(paths::relative(outside.path()));
        assert!(inside.join("sub").is_dir(), "{out}");
        assert!(inside.join("file").is_file(), "{out}");
        assert_eq!(
            std::fs::read_dir(outside.path()).expect("ls").count(),
            0,
            "host dir touched"
        );
        let host_mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
        assert!(!host_mounts.contains(&outside.path().display().to_string()));
    }

    #[test]
    fn no_pivot_and_ro_dev() {
        if !can_run() {
            return;
        }
        let mut cfg = default_config(serde_json::json!([]), serde_json::json!({}));
        cfg["mounts"][1]["options"] = serde_json::json!(["nosuid", "mode=755", "ro"]);
        cfg["root"]["readonly"] = serde_json::json!(false);
        let b = make_bundle(cfg);
        let script = "touch /dev/x 2>/dev/null && echo DEV-RW || echo DEV-RO; touch /y && echo ROOT-RW; ls /dev/null && echo END";
        let (ok, out) = run_driver(b.path(), script, &[("SKIFF_FS_DRIVER_NOPIVOT", "1")]);
        assert!(ok, "driver failed:\n{out}");
        for want in ["DEV-RO", "ROOT-RW", "END"] {
            assert!(out.contains(want), "missing {want:?} in:\n{out}");
        }
    }

    #[test]
    fn replaced_devnull_is_refused() {
        // CVE-2025-31133: an image (or a racing container) puts a symlink/file at /dev/null so the
        // runtime would bind *that* over masked paths. skiff must refuse anything but char 1:3.
        let t = tempfile::tempdir().expect("tmp");
        std::fs::create_dir(t.path().join("dev")).expect("mkdir");
        symlink("/proc/sys/kernel/core_pattern", t.path().join("dev/null")).expect("symlink");
        let root = open_dir(t.path()).expect("open");
        assert!(verified_devnull(root.as_fd()).is_err());
        std::fs::remove_file(t.path().join("dev/null")).expect("rm");
        std::fs::write(t.path().join("dev/null"), "").expect("file");
        assert!(verified_devnull(root.as_fd()).is_err());
    }
}

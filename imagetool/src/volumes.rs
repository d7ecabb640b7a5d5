//! Volumes the Docker way: `-v` parsing (bind, anonymous, named), store-backed volume
//! directories (`STORE/volumes/NAME/_data`), copying the image's content into a new volume, and
//! per-bundle usage records so `volume rm` can refuse a volume a bundle still uses.
//!
//! Layout of one volume: `STORE/volumes/NAME/{_data/, volume.json, users/}`; `users/` holds one
//! file per bundle using the volume (file name = hash of the bundle path, content = the path).
//! A volume is created in `STORE/tmp/` and renamed into place, so it appears fully seeded or not
//! at all, and two unpacks racing for one new named volume agree on a single winner.

use crate::apply::{self, ApplyFormat};
use crate::error::{Error, IoContext, Result};
use crate::fsops;
use crate::store::Store;
use crate::tree::{self, TarWriter, Walk};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directory under the store root holding every volume.
pub const VOLUMES_DIR: &str = "volumes";
/// Per-volume directory holding the data that gets mounted.
pub const DATA_DIR: &str = "_data";
const META: &str = "volume.json";
const USERS: &str = "users";
const MAX_NAME: usize = 255;

/// What a `-v` argument (or image VOLUME) mounts at its container path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A host directory or file (`-v /host:/ctr`).
    Bind(PathBuf),
    /// A new store volume with a random 64-hex name (`-v /ctr`, image VOLUMEs).
    Anonymous,
    /// A store volume by name, created on first use (`-v NAME:/ctr`).
    Named(String),
}

/// One parsed `-v` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// What is mounted.
    pub source: Source,
    /// Clean absolute container path (no `.`/`..`/empty components, no trailing slash).
    pub container: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Kind of a mount recorded in a bundle's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Host path bind mount.
    Bind,
    /// Store volume owned by one bundle (removed by `rm-bundle --volumes`).
    Anonymous,
    /// Store volume by name (never removed with a bundle).
    Named,
}

/// A volume mount a bundle uses, as recorded in `skiff-image.json` (so rm-bundle can release it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    /// Bind, anonymous or named.
    pub kind: Kind,
    /// Volume name (anonymous and named volumes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host directory mounted (a volume's `_data`, or the bind source).
    pub source: PathBuf,
    /// Container path.
    pub destination: String,
    /// Mounted read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// What `volume ls` / `volume inspect` show about a store volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    /// Volume name (64 hex digits for anonymous volumes).
    #[serde(rename = "Name")]
    pub name: String,
    /// Always `local` (kept for Docker-shaped output).
    #[serde(rename = "Driver")]
    pub driver: String,
    /// Host directory holding the data.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: PathBuf,
    /// Created for one bundle without a name (`-v /ctr` or an image VOLUME).
    #[serde(rename = "Anonymous")]
    pub anonymous: bool,
    /// RFC 3339 creation time, when known.
    #[serde(rename = "CreatedAt")]
    pub created_at: Option<String>,
    /// Bundles that currently use the volume.
    #[serde(rename = "UsedBy")]
    pub used_by: Vec<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct VolumeMeta {
    name: String,
    anonymous: bool,
    created: Option<String>,
}

/// Whether `name` is a valid named-volume name (`[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 255 bytes).
pub fn valid_name(name: &str) -> bool {
    let mut it = name.chars();
    match it.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return false,
    }
    name.len() <= MAX_NAME && it.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn check_name(name: &str) -> Result<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "invalid volume name {name:?}: names match [A-Za-z0-9][A-Za-z0-9_.-]* (at most {MAX_NAME} bytes)"
        )))
    }
}

/// Clean an absolute container path: `/a//b/./c/` -> `/a/b/c`; refuses relative paths, `..` and `/`.
pub fn clean_container_path(p: &str) -> std::result::Result<String, String> {
    if !p.starts_with('/') {
        return Err(format!("container path {p:?} is not absolute"));
    }
    let mut comps = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("container path {p:?} contains '..'")),
            c if c.contains('\0') => return Err(format!("container path {p:?} contains NUL")),
            c => comps.push(c),
        }
    }
    if comps.is_empty() {
        return Err("container path cannot be '/'".into());
    }
    Ok(format!("/{}", comps.join("/")))
}

/// Parse one `-v` argument: `/ctr` (anonymous), `/host:/ctr[:ro|rw]` (bind) or
/// `NAME:/ctr[:ro|rw]` (named). The host path of a bind is not checked here.
pub fn parse_volume(spec: &str) -> Result<VolumeSpec> {
    let bad = |why: String| {
        Error::Invalid(format!(
            "invalid -v/--volume {spec:?}: {why} (want /CTR, /HOST:/CTR[:ro|rw] or NAME:/CTR[:ro|rw])"
        ))
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (src, ctr, mode) = match parts.as_slice() {
        [c] => (None, *c, None),
        [_, m] if matches!(*m, "ro" | "rw") => {
            return Err(bad("an anonymous volume takes no mode".into()))
        }
        [s, c] => (Some(*s), *c, None),
        [s, c, m] => (Some(*s), *c, Some(*m)),
        _ => return Err(bad("too many ':'-separated fields".into())),
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(m) => return Err(bad(format!("unknown mode {m:?} (ro or rw)"))),
    };
    let container = clean_container_path(ctr).map_err(bad)?;
    let source = match src {
        None => Source::Anonymous,
        Some("") => return Err(bad("empty source".into())),
        Some(s) if s.starts_with('/') => Source::Bind(PathBuf::from(s)),
        Some(s) if valid_name(s) => Source::Named(s.to_string()),
        Some(s) => {
            return Err(bad(format!(
            "{s:?} is neither an absolute host path nor a volume name ([A-Za-z0-9][A-Za-z0-9_.-]*)"
        )))
        }
    };
    Ok(VolumeSpec {
        source,
        container,
        read_only,
    })
}

/// Parse the `-v` arguments plus the image's VOLUMEs into the list of mounts to set up: checks
/// bind host paths exist, refuses duplicate container paths among `-v`, lets `-v` override an
/// image VOLUME at the same path, and orders parents before children.
pub fn plan(args: &[String], image_volumes: &[String]) -> Result<Vec<VolumeSpec>> {
    let mut out: Vec<VolumeSpec> = Vec::new();
    for a in args {
        let v = parse_volume(a)?;
        if out.iter().any(|o| o.container == v.container) {
            return Err(Error::Invalid(format!(
                "-v/--volume {a:?}: duplicate mount point {}",
                v.container
            )));
        }
        if let Source::Bind(h) = &v.source {
            fs::symlink_metadata(h).map_err(|e| {
                Error::Invalid(format!(
                    "-v/--volume {a:?}: host path {} does not exist or cannot be read: {e}",
                    h.display()
                ))
            })?;
        }
        out.push(v);
    }
    let mut img: Vec<String> = image_volumes.to_vec();
    img.sort();
    for v in img {
        let c = clean_container_path(&v)
            .map_err(|why| Error::Invalid(format!("image VOLUME {v:?}: {why}")))?;
        if out.iter().any(|o| o.container == c) {
            continue;
        }
        out.push(VolumeSpec {
            source: Source::Anonymous,
            container: c,
            read_only: false,
        });
    }
    out.sort_by_key(|v| v.container.matches('/').count());
    Ok(out)
}

/// `STORE/volumes`.
pub fn volumes_dir(store: &Store) -> PathBuf {
    store.root().join(VOLUMES_DIR)
}

fn volume_dir(store: &Store, name: &str) -> Result<PathBuf> {
    check_name(name)?;
    Ok(volumes_dir(store).join(name))
}

fn random_id() -> Result<String> {
    crate::random::hex_id(32).map_err(|e| Error::io("picking a random volume id", e))
}

/// Copy the directory at `ctr` inside `rootfs` (if the image has one there) into `data`,
/// keeping owners, modes, times, xattrs and hardlinks: the tree is streamed as a tar through a
/// pipe into the layer applier. The path is resolved with openat2(RESOLVE_IN_ROOT), so symlinks
/// stay inside the rootfs; the copied tree's symlinks are copied, never followed.
fn copy_up(rootfs: &Path, ctr: &str, data: &Path) -> Result<()> {
    let rfd = fsops::open_dir(rootfs)?;
    let rel = ctr.trim_start_matches('/');
    let src = match fsops::open_in_root(
        rfd.as_raw_fd(),
        rel.as_bytes(),
        libc::O_PATH | libc::O_DIRECTORY,
    ) {
        Ok(fd) => fd,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
            return Ok(())
        }
        Err(e) => {
            return Err(Error::io(
                format!(
                    "opening {ctr} in {} to copy it into a volume",
                    rootfs.display()
                ),
                e,
            ))
        }
    };
    let st = fsops::fstat(src.as_raw_fd()).ctx(|| format!("stat {ctr} in the image"))?;
    let (mut reader, writer) = io::pipe().map_err(|e| Error::io("creating a pipe", e))?;
    let src_fd = src.as_raw_fd();
    let (wrote, applied) = std::thread::scope(|s| {
        let h = s.spawn(move || -> Result<()> {
            let mut tw = TarWriter::new(writer);
            tree::walk(src_fd, b"", &mut |d, n, rel, st| {
                tw.append_node(d, n, rel, st)?;
                Ok(Walk::Descend)
            })?;
            tw.finish().map_err(|e| Error::io("finishing tar", e))?;
            Ok(())
        });
        let applied = apply::apply_layer(data, &mut reader, ApplyFormat::Merged).and_then(|_| {
            io::copy(&mut reader, &mut io::sink())
                .map(|_| ())
                .map_err(|e| Error::io("draining the copy pipe", e))
        });
        drop(reader);
        let wrote = h
            .join()
            .unwrap_or_else(|_| Err(Error::Invalid("volume copy thread panicked".into())));
        (wrote, applied)
    });
    applied.map_err(|e| Error::Invalid(format!("copying {ctr} from the image: {e}")))?;
    wrote.map_err(|e| Error::Invalid(format!("copying {ctr} from the image: {e}")))?;
    drop(src);
    // The volume root takes the image directory's owner, mode and mtime, as Docker does.
    std::os::unix::fs::lchown(data, Some(st.st_uid), Some(st.st_gid))
        .map_err(|e| Error::at("chown", data, e))?;
    fs::set_permissions(data, fs::Permissions::from_mode(st.st_mode & 0o7777))
        .map_err(|e| Error::at("chmod", data, e))?;
    let parent = data.parent().unwrap_or(Path::new("/"));
    let pfd = fsops::open_dir(parent)?;
    fsops::lutimesat(
        pfd.as_raw_fd(),
        std::ffi::OsStr::new(DATA_DIR),
        st.st_mtime,
        st.st_mtime_nsec,
    )
    .map_err(|e| Error::at("setting times of", data, e))?;
    Ok(())
}

/// Create volume `name` unless it exists, seeding a new one from `seed` = (rootfs, container
/// path). Returns the volume directory and whether this call created it.
fn ensure(
    store: &Store,
    name: &str,
    anonymous: bool,
    seed: Option<(&Path, &str)>,
) -> Result<(PathBuf, bool)> {
    let dir = volume_dir(store, name)?;
    if dir.join(DATA_DIR).is_dir() {
        return Ok((dir, false));
    }
    if dir.exists() {
        return Err(Error::Invalid(format!(
            "volume {name}: {} exists but has no {DATA_DIR} directory",
            dir.display()
        )));
    }
    let vroot = volumes_dir(store);
    fs::create_dir_all(&vroot).map_err(|e| Error::at("creating", &vroot, e))?;
    let tmp = tempfile::Builder::new()
        .prefix("volume-")
        .tempdir_in(store.tmp_dir())
        .map_err(|e| Error::at("creating temp dir in", &store.tmp_dir(), e))?;
    let data = tmp.path().join(DATA_DIR);
    fs::create_dir(&data).map_err(|e| Error::at("creating", &data, e))?;
    fs::set_permissions(&data, fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::at("chmod", &data, e))?;
    fs::create_dir(tmp.path().join(USERS)).map_err(|e| Error::at("creating", tmp.path(), e))?;
    if let Some((rootfs, ctr)) = seed {
        copy_up(rootfs, ctr, &data)?;
    }
    let meta = VolumeMeta {
        name: name.to_string(),
        anonymous,
        created: Some(crate::store::now_rfc3339()),
    };
    let bytes = serde_json::to_vec_pretty(&meta).map_err(|e| Error::json("volume.json", e))?;
    let mp = tmp.path().join(META);
    fs::write(&mp, bytes).map_err(|e| Error::at("writing", &mp, e))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711))
        .map_err(|e| Error::at("chmod", tmp.path(), e))?;
    match fs::rename(tmp.path(), &dir) {
        Ok(()) => {
            // Already renamed: nothing left for the TempDir guard to delete.
            let _ = tmp.keep();
            Ok((dir, true))
        }
        Err(_) if dir.join(DATA_DIR).is_dir() => Ok((dir, false)),
        Err(e) => Err(Error::at("renaming new volume into", &dir, e)),
    }
}

fn user_key(bundle: &Path) -> String {
    crate::digest::of_bytes(bundle.as_os_str().as_encoded_bytes())
        .trim_start_matches("sha256:")
        .chars()
        .take(32)
        .collect()
}

fn register(dir: &Path, bundle: &Path) -> Result<()> {
    let users = dir.join(USERS);
    fs::create_dir_all(&users).map_err(|e| Error::at("creating", &users, e))?;
    let p = users.join(user_key(bundle));
    fs::write(&p, bundle.as_os_str().as_encoded_bytes()).map_err(|e| Error::at("writing", &p, e))
}

fn unregister(dir: &Path, bundle: &Path) {
    let _ = fs::remove_file(dir.join(USERS).join(user_key(bundle)));
}

/// Bundles (still existing, still naming this volume in their metadata) that use volume `name`;
/// stale records (bundles deleted by hand) are dropped on the way.
fn users_of(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir.join(USERS)) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(p) = fs::read(e.path()) else { continue };
        let bundle = PathBuf::from(String::from_utf8_lossy(&p).into_owned());
        let live = crate::bundle::read_meta(&bundle)
            .map(|m| {
                m.volume_mounts
                    .iter()
                    .any(|v| v.name.as_deref() == Some(name))
            })
            .unwrap_or(false);
        if live {
            out.push(bundle);
        } else {
            let _ = fs::remove_file(e.path());
        }
    }
    out.sort();
    out
}

/// Volumes a failed unpack must undo: the ones it created and the usage records it wrote.
#[derive(Debug, Default)]
pub(crate) struct Undo {
    created: Vec<PathBuf>,
    registered: Vec<PathBuf>,
}

impl Undo {
    /// Remove what the failed unpack of `bundle` made.
    pub(crate) fn run(self, bundle: &Path) {
        for d in &self.registered {
            unregister(d, bundle);
        }
        for d in &self.created {
            let _ = fsops::remove_tree(d);
        }
    }
}

/// Create (or find) the store volumes `specs` need, seeding new anonymous and named volumes from
/// the image content at their path in `rootfs`, and record `bundle` as their user.
pub(crate) fn setup(
    store: &Store,
    rootfs: &Path,
    bundle: &Path,
    specs: &[VolumeSpec],
    undo: &mut Undo,
) -> Result<Vec<VolumeMount>> {
    let mut out = Vec::new();
    for v in specs {
        let (kind, name) = match &v.source {
            Source::Bind(h) => {
                out.push(VolumeMount {
                    kind: Kind::Bind,
                    name: None,
                    source: h.clone(),
                    destination: v.container.clone(),
                    read_only: v.read_only,
                });
                continue;
            }
            Source::Anonymous => (Kind::Anonymous, random_id()?),
            Source::Named(n) => (Kind::Named, n.clone()),
        };
        let (dir, created) = ensure(
            store,
            &name,
            kind == Kind::Anonymous,
            Some((rootfs, &v.container)),
        )
        .map_err(|e| Error::Invalid(format!("volume for {}: {e}", v.container)))?;
        if created {
            undo.created.push(dir.clone());
        }
        register(&dir, bundle)?;
        undo.registered.push(dir.clone());
        out.push(VolumeMount {
            kind,
            name: Some(name),
            source: dir.join(DATA_DIR),
            destination: v.container.clone(),
            read_only: v.read_only,
        });
    }
    Ok(out)
}

/// Add bind mounts for `mounts` to a runtime spec's `mounts` array.
pub(crate) fn add_to_spec(spec: &mut serde_json::Value, mounts: &[VolumeMount]) -> Result<()> {
    let arr = spec["mounts"]
        .as_array_mut()
        .ok_or_else(|| Error::Invalid("internal: config.json has no mounts array".into()))?;
    for m in mounts {
        arr.push(serde_json::json!({
            "destination": m.destination, "type": "bind", "source": m.source,
            "options": ["rbind", if m.read_only { "ro" } else { "rw" }]
        }));
    }
    Ok(())
}

/// Release the store volumes a removed bundle used; with `remove_anonymous` its anonymous
/// volumes are deleted too (`rm-bundle --volumes`, like `docker rm -v`). Named volumes stay.
pub(crate) fn release(
    store: &Store,
    bundle: &Path,
    mounts: &[VolumeMount],
    remove_anonymous: bool,
) -> Result<()> {
    for m in mounts {
        let Some(name) = &m.name else { continue };
        let Ok(dir) = volume_dir(store, name) else {
            continue;
        };
        unregister(&dir, bundle);
        // The volume's own record must agree: a tampered skiff-image.json cannot get a named
        // volume deleted by calling it anonymous.
        if remove_anonymous && m.kind == Kind::Anonymous && is_anonymous(&dir) {
            remove_dir(store, &dir)?;
        }
    }
    Ok(())
}

fn read_volume_meta(dir: &Path) -> Option<VolumeMeta> {
    fs::read(dir.join(META))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn is_anonymous(dir: &Path) -> bool {
    read_volume_meta(dir).is_some_and(|m| m.anonymous)
}

/// Rename a volume dir into tmp/ first (so it vanishes atomically), then delete it.
fn remove_dir(store: &Store, dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    let tmp = tempfile::Builder::new()
        .prefix("volume-rm-")
        .tempdir_in(store.tmp_dir())
        .map_err(|e| Error::at("creating temp dir in", &store.tmp_dir(), e))?;
    let target = tmp.path().join("v");
    fs::rename(dir, &target).map_err(|e| Error::at("removing volume", dir, e))?;
    fsops::remove_tree(tmp.path()).map_err(|e| Error::at("removing volume data", &target, e))?;
    let _ = tmp.keep();
    Ok(())
}

fn info(store: &Store, name: &str) -> Result<VolumeInfo> {
    let dir = volume_dir(store, name)?;
    if !dir.join(DATA_DIR).is_dir() {
        return Err(Error::Invalid(format!("no such volume: {name}")));
    }
    let meta = read_volume_meta(&dir);
    let created_at = meta.as_ref().and_then(|m| m.created.clone()).or_else(|| {
        fs::metadata(&dir).ok().and_then(|m| {
            chrono::DateTime::from_timestamp(m.mtime(), 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        })
    });
    Ok(VolumeInfo {
        name: name.to_string(),
        driver: "local".into(),
        mountpoint: dir.join(DATA_DIR),
        anonymous: meta.map(|m| m.anonymous).unwrap_or(false),
        created_at,
        used_by: users_of(&dir, name),
    })
}

/// `volume ls`: every volume in the store, sorted by name.
pub fn list(store: &Store) -> Result<Vec<VolumeInfo>> {
    let vroot = volumes_dir(store);
    let rd = match fs::read_dir(&vroot) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::at("listing", &vroot, e)),
    };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| valid_name(n))
        .collect();
    names.sort();
    Ok(names.iter().filter_map(|n| info(store, n).ok()).collect())
}

/// `volume inspect NAME`.
pub fn inspect(store: &Store, name: &str) -> Result<VolumeInfo> {
    info(store, name)
}

/// `volume create NAME`: a new empty named volume (an existing one is returned unchanged).
pub fn create(store: &Store, name: &str) -> Result<VolumeInfo> {
    check_name(name)?;
    let _lock = store.lock(false)?;
    ensure(store, name, false, None)?;
    info(store, name)
}

/// `volume rm NAME`: refused while a bundle still uses the volume, unless `force`.
pub fn remove(store: &Store, name: &str, force: bool) -> Result<()> {
    check_name(name)?;
    let _lock = store.lock(true)?;
    let dir = volume_dir(store, name)?;
    if !dir.exists() {
        return Err(Error::Invalid(format!("no such volume: {name}")));
    }
    let users = users_of(&dir, name);
    if !users.is_empty() && !force {
        return Err(Error::Invalid(format!(
            "volume {name} is in use by bundle {} (rm-bundle it first, or volume rm --force)",
            users
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    remove_dir(store, &dir)
}

/// `volume prune`: remove the volumes no bundle uses, anonymous ones only unless `all`.
/// Returns the names removed.
pub fn prune(store: &Store, all: bool) -> Result<Vec<String>> {
    let _lock = store.lock(true)?;
    let mut removed = Vec::new();
    for v in list(store)? {
        if v.used_by.is_empty() && (all || v.anonymous) {
            remove_dir(store, &volume_dir(store, &v.name)?)?;
            removed.push(v.name);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_forms() {
        let p = |s: &str| parse_volume(s).expect(s);
        assert_eq!(
            p("/ctr"),
            VolumeSpec {
                source: Source::Anonymous,
                container: "/ctr".into(),
                read_only: false
            }
        );
        assert_eq!(
            p("/h:/c/./d//:ro"),
            VolumeSpec {
                source: Source::Bind("/h".into()),
                container: "/c/d".into(),
                read_only: true
            }
        );
        assert_eq!(
            p("my_vol.1-x:/data:rw"),
            VolumeSpec {
                source: Source::Named("my_vol.1-x".into()),
                container: "/data".into(),
                read_only: false
            }
        );
        for bad in [
            "",
            "rel",
            "/",
            "/a:/",
            "/ctr:ro",
            "/a:/b:rx",
            "/a:/b:ro:x",
            "rel/x:/b",
            "_x:/b",
            ".x:/b",
            ":/b",
            "/a:rel",
            "/a:/b/../c",
            "x:/..",
        ] {
            let e = parse_volume(bad).expect_err(bad).to_string();
            assert!(e.contains("-v/--volume"), "{bad}: {e}");
        }
        assert!(valid_name("a") && valid_name("0.-_") && !valid_name(&"a".repeat(256)));
    }

    #[test]
    fn plan_orders_and_overrides() {
        let d = tempfile::tempdir().expect("tmp");
        let host = d.path().to_str().expect("utf8").to_string();
        let args = vec![format!("{host}:/data/sub"), "v:/img".to_string()];
        let p = plan(&args, &["/img".into(), "/data".into()]).expect("plan");
        let c: Vec<&str> = p.iter().map(|v| v.container.as_str()).collect();
        assert_eq!(c, ["/img", "/data", "/data/sub"]);
        assert_eq!(p[0].source, Source::Named("v".into()));
        assert_eq!(p[1].source, Source::Anonymous);
        let e = plan(&["/x".into(), "n:/x/".into()], &[]).expect_err("dup");
        assert!(e.to_string().contains("duplicate mount point /x"), "{e}");
        let e = plan(&["/nonexistent-skiff-host:/x".into()], &[]).expect_err("missing host");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(plan(&[], &["relative".into()]).is_err());
    }

    #[test]
    fn old_bundle_metadata_still_loads() {
        let m: crate::bundle::BundleMeta = serde_json::from_value(serde_json::json!({
            "store": "/s", "image": null, "manifest_digest": "sha256:00", "manifest_size": 1,
            "manifest_media_type": "application/vnd.oci.image.manifest.v1+json",
            "mode": "overlay", "volumes": ["/data"]
        }))
        .expect("old metadata");
        assert!(m.volume_mounts.is_empty());
    }

    #[test]
    fn racing_creators_agree_on_one_new_volume() {
        let d = tempfile::tempdir().expect("tmp");
        let store = Store::open(d.path().join("store")).expect("store");
        let rootfs = d.path().join("rootfs");
        fs::create_dir_all(rootfs.join("data")).expect("mkdir");
        fs::write(rootfs.join("data/f"), b"x").expect("write");
        let created: Vec<bool> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| ensure(&store, "race", false, Some((&rootfs, "/data")))))
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("join").expect("ensure").1)
                .collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
        assert_eq!(
            fs::read(volumes_dir(&store).join("race/_data/f")).expect("seeded"),
            b"x"
        );
        assert!(list_tmp(&store).is_empty(), "{:?}", list_tmp(&store));
    }

    #[test]
    fn copy_up_never_leaves_the_rootfs() {
        let d = tempfile::tempdir().expect("tmp");
        let store = Store::open(d.path().join("store")).expect("store");
        let rootfs = d.path().join("rootfs");
        fs::create_dir_all(&rootfs).expect("mkdir");
        // Both resolve to the rootfs' own (missing) /etc, never the host's.
        std::os::unix::fs::symlink("../../../../../../../etc", rootfs.join("rel"))
            .expect("symlink");
        std::os::unix::fs::symlink("/etc", rootfs.join("abs")).expect("symlink");
        let specs = plan(&["a:/rel".into(), "b:/abs".into()], &[]).expect("plan");
        let mut undo = Undo::default();
        let mounts = setup(&store, &rootfs, &d.path().join("b"), &specs, &mut undo).expect("setup");
        for m in &mounts {
            let left: Vec<_> = fs::read_dir(&m.source).expect("ls").flatten().collect();
            assert!(
                left.is_empty(),
                "{}: host content copied: {left:?}",
                m.destination
            );
        }
    }

    fn list_tmp(store: &Store) -> Vec<PathBuf> {
        fs::read_dir(store.tmp_dir())
            .expect("tmp")
            .flatten()
            .map(|e| e.path())
            .collect()
    }

    #[test]
    fn store_volumes_lifecycle() {
        let d = tempfile::tempdir().expect("tmp");
        let store = Store::open(d.path().join("store")).expect("store");
        let rootfs = d.path().join("rootfs");
        fs::create_dir_all(rootfs.join("data/sub")).expect("mkdir");
        fs::write(rootfs.join("data/sub/f"), b"hello").expect("write");
        std::os::unix::fs::symlink("/data", rootfs.join("link")).expect("symlink");
        std::os::unix::fs::symlink("/etc", rootfs.join("data/escape")).expect("symlink");
        fs::set_permissions(rootfs.join("data"), fs::Permissions::from_mode(0o750)).expect("chmod");
        let bundle = d.path().join("bundle");
        let specs = plan(&["named:/link".into(), "/data".into()], &[]).expect("plan");
        let mut undo = Undo::default();
        let mounts = setup(&store, &rootfs, &bundle, &specs, &mut undo).expect("setup");
        assert_eq!(mounts.len(), 2);
        for m in &mounts {
            // Content copied through the in-root symlink; the inner symlink copied, not followed.
            assert_eq!(fs::read(m.source.join("sub/f")).expect("copied"), b"hello");
            assert_eq!(
                fs::read_link(m.source.join("escape")).expect("link"),
                PathBuf::from("/etc")
            );
            let md = fs::metadata(&m.source).expect("md");
            assert_eq!(md.mode() & 0o7777, 0o750);
        }
        let anon = mounts
            .iter()
            .find(|m| m.kind == Kind::Anonymous)
            .expect("anon");
        assert_eq!(anon.name.as_ref().map(|n| n.len()), Some(64));
        let l = list(&store).expect("list");
        assert_eq!(l.len(), 2);
        // A reused named volume is not re-seeded.
        fs::remove_file(mounts[0].source.join("sub/f")).expect("rm");
        let (_, created) = ensure(&store, "named", false, Some((&rootfs, "/data"))).expect("again");
        assert!(!created);
        assert!(!mounts[0].source.join("sub/f").exists());
        // Undo removes created volumes.
        undo.run(&bundle);
        assert!(list(&store).expect("list").is_empty());
        // create / inspect / rm.
        let i = create(&store, "v1").expect("create");
        assert!(!i.anonymous && i.mountpoint.ends_with("v1/_data") && i.mountpoint.is_dir());
        assert_eq!(create(&store, "v1").expect("create again"), i);
        assert!(create(&store, "bad/name").is_err());
        assert!(inspect(&store, "nosuch").is_err());
        create(&store, "v2").expect("create v2");
        let (dir, _) = ensure(&store, &random_id().expect("id"), true, None).expect("anon");
        assert_eq!(prune(&store, false).expect("prune").len(), 1);
        assert!(!dir.exists());
        assert_eq!(
            prune(&store, true).expect("prune -a"),
            vec!["v1".to_string(), "v2".to_string()]
        );
        create(&store, "v1").expect("create");
        remove(&store, "v1", false).expect("rm");
        assert!(remove(&store, "v1", false).is_err());
        assert!(list(&store).expect("list").is_empty());
    }
}

//! Bundles: unpacking an image into `rootfs/` + `config.json` (copy or overlay mode), undoing
//! it, and committing a bundle's changes as a new image layer.

use crate::apply::ApplyFormat;
use crate::error::{Error, Result};
use crate::layer;
use crate::layer_stream::LayerStream;
use crate::resources::Resources;
use crate::spec::{self, SpecOptions};
use crate::store::{History, Image, LayerInfo, Store};
use crate::tree::{self, Exclusions};
use crate::volumes::{self, VolumeMount};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Name of the metadata file skiff-image leaves in a bundle.
pub const META_FILE: &str = "skiff-image.json";
/// Name of the copy-mode snapshot file in a bundle.
pub const TREE_FILE: &str = "skiff-image.tree";

/// How the rootfs is materialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Layers applied in order into a plain directory.
    Copy,
    /// Overlay mount of cached layers, upper/work in the bundle.
    Overlay,
}

impl std::str::FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Mode> {
        match s {
            "copy" => Ok(Mode::Copy),
            "overlay" => Ok(Mode::Overlay),
            o => Err(Error::Invalid(format!(
                "unknown unpack mode {o:?} (copy|overlay)"
            ))),
        }
    }
}

/// Options for [`unpack`].
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Copy or overlay; `None` = overlay when the kernel supports it.
    pub mode: Option<Mode>,
    /// Overrides for config.json.
    pub spec: SpecOptions,
    /// Per-layer uncompressed size limit; `None` = [`layer::max_layer_size`].
    pub max_layer_size: Option<u64>,
    /// Show a progress bar (callers pass true only when stderr is a terminal).
    pub progress: bool,
    /// Resource limits written into config.json `linux.resources`.
    pub resources: Resources,
}

/// What skiff-image records in `BUNDLE/skiff-image.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleMeta {
    /// Store the image came from.
    pub store: PathBuf,
    /// Image name if unpacked by name.
    pub image: Option<String>,
    /// Manifest digest of the image.
    pub manifest_digest: String,
    /// Manifest size.
    pub manifest_size: u64,
    /// Manifest media type.
    pub manifest_media_type: String,
    /// Rootfs mode.
    pub mode: Mode,
    /// Container paths whose content is never committed (image VOLUMEs and every `-v`).
    pub volumes: Vec<String>,
    /// Volumes mounted (binds, anonymous and named store volumes), so rm-bundle can release them.
    #[serde(default)]
    pub volume_mounts: Vec<VolumeMount>,
}

/// Whether the kernel offers overlayfs.
pub fn overlay_supported() -> bool {
    if fs::read_to_string("/proc/filesystems")
        .map(|s| s.contains("\toverlay"))
        .unwrap_or(false)
    {
        return true;
    }
    // Module not yet loaded: modprobe might make it appear; be conservative.
    false
}

/// Read a bundle's metadata.
pub fn read_meta(bundle: &Path) -> Result<BundleMeta> {
    let p = bundle.join(META_FILE);
    let data = fs::read(&p).map_err(|e| {
        Error::Invalid(format!(
            "{} is not a skiff-image bundle (cannot read {}: {e})",
            bundle.display(),
            p.display()
        ))
    })?;
    serde_json::from_slice(&data).map_err(|e| Error::json(format!("parsing {}", p.display()), e))
}

fn write_file_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut t = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::at("creating temp file in", dir, e))?;
    t.write_all(data)
        .map_err(|e| Error::at("writing", path, e))?;
    t.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(|e| Error::at("chmod", path, e))?;
    t.persist(path)
        .map_err(|e| Error::at("renaming into", path, e.error))?;
    Ok(())
}

fn is_mounted(path: &Path) -> bool {
    let Ok(canon) = fs::canonicalize(path) else {
        return false;
    };
    let Ok(mi) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = canon.as_os_str().as_bytes();
    mi.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| unescape_mount(m) == want)
            .unwrap_or(false)
    })
}

fn unescape_mount(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Unpack `image` into the bundle directory `bundle` (which must not exist or be empty).
pub fn unpack(
    store: &Store,
    image: &Image,
    bundle: &Path,
    opts: &UnpackOptions,
) -> Result<BundleMeta> {
    // Bad -v or resource flags fail before anything is made.
    opts.resources.validate()?;
    let image_volumes: Vec<String> = image
        .config
        .config()
        .as_ref()
        .and_then(|c| c.volumes().clone())
        .unwrap_or_default();
    let vol_plan = volumes::plan(&opts.spec.volumes, &image_volumes)?;
    let existed = bundle.exists();
    if existed {
        let mut rd =
            fs::read_dir(bundle).map_err(|e| Error::at("reading bundle dir", bundle, e))?;
        if rd.next().is_some() {
            return Err(Error::Invalid(format!(
                "bundle directory {} exists and is not empty",
                bundle.display()
            )));
        }
    } else {
        fs::create_dir_all(bundle).map_err(|e| Error::at("creating bundle", bundle, e))?;
    }
    let bundle = fs::canonicalize(bundle).map_err(|e| Error::at("resolving", bundle, e))?;
    let mut undo = volumes::Undo::default();
    let r = unpack_inner(store, image, &bundle, opts, &vol_plan, &mut undo);
    if r.is_err() {
        undo.run(&bundle);
        let rootfs = bundle.join("rootfs");
        if is_mounted(&rootfs) {
            let _ = nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH);
        }
        if existed {
            if let Ok(rd) = fs::read_dir(&bundle) {
                for e in rd.flatten() {
                    let _ = crate::fsops::remove_tree(&e.path());
                }
            }
        } else {
            let _ = crate::fsops::remove_tree(&bundle);
        }
    }
    r
}

fn progress_bar(enabled: bool, msg: &str) -> Option<indicatif::ProgressBar> {
    if !enabled {
        return None;
    }
    let pb = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {elapsed}")
    {
        pb.set_style(style);
    }
    pb.set_message(msg.to_string());
    Some(pb)
}

fn unpack_inner(
    store: &Store,
    image: &Image,
    bundle: &Path,
    opts: &UnpackOptions,
    vol_plan: &[volumes::VolumeSpec],
    undo: &mut volumes::Undo,
) -> Result<BundleMeta> {
    let _lock = store.lock(false)?;
    let mode = opts.mode.unwrap_or(if overlay_supported() {
        Mode::Overlay
    } else {
        Mode::Copy
    });
    let limit = opts.max_layer_size.unwrap_or_else(layer::max_layer_size);
    let rootfs = bundle.join("rootfs");
    fs::create_dir(&rootfs).map_err(|e| Error::at("creating", &rootfs, e))?;
    fs::set_permissions(&rootfs, fs::Permissions::from_mode(0o755))
        .map_err(|e| Error::at("chmod", &rootfs, e))?;
    let layers = image.layers();
    let diff_ids = image.diff_ids();
    match mode {
        Mode::Copy => {
            let pb = progress_bar(opts.progress, "unpacking");
            if let Some(pb) = &pb {
                pb.set_length(layers.iter().map(|l| l.2).sum());
            }
            // Each layer decompresses in its own thread; the next one starts while the
            // current one is extracted.
            let open = |i: usize| -> Result<Option<LayerStream>> {
                match layers.get(i) {
                    Some((d, _mt, size)) => {
                        LayerStream::open(store, d, *size, &diff_ids[i], limit).map(Some)
                    }
                    None => Ok(None),
                }
            };
            let mut next = open(0)?;
            for (i, (_d, _mt, size)) in layers.iter().enumerate() {
                let Some(cur) = next.take() else { break };
                next = open(i + 1)?;
                layer::apply_stream(cur, &rootfs, ApplyFormat::Merged, limit)?;
                if let Some(pb) = &pb {
                    pb.inc(*size);
                }
            }
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let snap = tree::snapshot(&rootfs)?;
            tree::save_snapshot(&snap, &bundle.join(TREE_FILE))?;
        }
        Mode::Overlay => {
            let pb = progress_bar(opts.progress, "extracting layers");
            let dirs = layer::ensure_cached(store, image, limit, pb.as_ref())?;
            if let Some(pb) = pb {
                pb.finish_and_clear();
            }
            let upper = bundle.join("upper");
            let work = bundle.join("work");
            fs::create_dir(&upper).map_err(|e| Error::at("creating", &upper, e))?;
            fs::create_dir(&work).map_err(|e| Error::at("creating", &work, e))?;
            let mut lowers: Vec<PathBuf> = dirs.into_iter().rev().collect();
            if lowers.is_empty() {
                let empty = store.layer_cache().join("empty");
                fs::create_dir_all(&empty).map_err(|e| Error::at("creating", &empty, e))?;
                lowers.push(empty);
            }
            // The merged root takes its attributes from upper: copy them from the top layer.
            let top = fs::metadata(&lowers[0]).map_err(|e| Error::at("stat", &lowers[0], e))?;
            fs::set_permissions(&upper, fs::Permissions::from_mode(top.mode() & 0o7777))
                .map_err(|e| Error::at("chmod", &upper, e))?;
            std::os::unix::fs::chown(&upper, Some(top.uid()), Some(top.gid()))
                .map_err(|e| Error::at("chown", &upper, e))?;
            mount_overlay(&lowers, &upper, &work, &rootfs)?;
        }
    }
    let mut spec_json = spec::generate(&image.config, &rootfs, bundle, &opts.spec)?;
    let volume_mounts = volumes::setup(store, &rootfs, bundle, vol_plan, undo)?;
    volumes::add_to_spec(&mut spec_json, &volume_mounts)?;
    crate::network::prepare_bundle(bundle, &opts.spec.network, &mut spec_json)?;
    opts.resources.apply(&mut spec_json)?;
    let data = serde_json::to_vec_pretty(&spec_json)
        .map_err(|e| Error::json("serializing config.json", e))?;
    write_file_atomic(&bundle.join("config.json"), &data)?;
    let volumes: Vec<String> = volume_mounts
        .iter()
        .map(|m| m.destination.clone())
        .collect();
    let meta = BundleMeta {
        store: store.root().to_path_buf(),
        image: image.name.clone(),
        manifest_digest: image.manifest_digest.clone(),
        manifest_size: image.manifest_size,
        manifest_media_type: image.manifest_media_type.clone(),
        mode,
        volumes,
        volume_mounts,
    };
    let m = serde_json::to_vec_pretty(&meta)
        .map_err(|e| Error::json("serializing bundle metadata", e))?;
    write_file_atomic(&bundle.join(META_FILE), &m)?;
    Ok(meta)
}

fn mount_overlay(lowers: &[PathBuf], upper: &Path, work: &Path, target: &Path) -> Result<()> {
    let mut all: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
    all.push(upper);
    all.push(work);
    for p in &all {
        let b = p.as_os_str().as_bytes();
        if b.contains(&b':') || b.contains(&b',') || b.contains(&b'\\') {
            return Err(Error::Invalid(format!(
                "overlay path {} contains ':', ',' or '\\'",
                p.display()
            )));
        }
    }
    let lower = lowers
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lower},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if data.len() >= 4000 {
        return Err(Error::Invalid(format!(
            "too many layers ({}) for one overlay mount option string; use --mode copy",
            lowers.len()
        )));
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| {
        Error::io(
            format!("mounting overlay on {}", target.display()),
            e.into(),
        )
    })
}

/// Unmount an overlay bundle's rootfs (no-op for copy bundles or when not mounted).
pub fn umount(bundle: &Path) -> Result<()> {
    let rootfs = bundle.join("rootfs");
    if is_mounted(&rootfs) {
        nix::mount::umount2(&rootfs, nix::mount::MntFlags::empty())
            .or_else(|_| nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH))
            .map_err(|e| Error::io(format!("unmounting {}", rootfs.display()), e.into()))?;
    }
    Ok(())
}

/// Re-mount an overlay bundle's rootfs after [`umount`] (cached layers must still exist).
pub fn remount(store: &Store, bundle: &Path) -> Result<()> {
    let meta = read_meta(bundle)?;
    if meta.mode != Mode::Overlay {
        return Ok(());
    }
    let rootfs = bundle.join("rootfs");
    if is_mounted(&rootfs) {
        return Ok(());
    }
    let img = image_of(store, &meta)?;
    let dirs = layer::ensure_cached(store, &img, layer::max_layer_size(), None)?;
    let mut lowers: Vec<PathBuf> = dirs.into_iter().rev().collect();
    if lowers.is_empty() {
        lowers.push(store.layer_cache().join("empty"));
    }
    mount_overlay(
        &lowers,
        &bundle.join("upper"),
        &bundle.join("work"),
        &rootfs,
    )
}

/// Unmount (if needed) and delete a bundle created by [`unpack`]. Its store volumes stay (like
/// `docker rm`); see [`remove_bundle_and_volumes`].
pub fn remove_bundle(bundle: &Path) -> Result<()> {
    remove_bundle_opts(bundle, false)
}

/// [`remove_bundle`] that also deletes the bundle's anonymous volumes (never named ones), like
/// `docker rm -v`. Programs whose bundles are throw-away (builders) want this one.
pub fn remove_bundle_and_volumes(bundle: &Path) -> Result<()> {
    remove_bundle_opts(bundle, true)
}

fn remove_bundle_opts(bundle: &Path, anonymous_volumes: bool) -> Result<()> {
    let meta = read_meta(bundle)?;
    let canon = fs::canonicalize(bundle).unwrap_or_else(|_| bundle.to_path_buf());
    umount(bundle)?;
    crate::fsops::remove_tree(bundle).map_err(|e| Error::at("removing bundle", bundle, e))?;
    // A store that vanished has no volumes left to release (and must not be re-created).
    if meta.volume_mounts.iter().any(|m| m.name.is_some()) && meta.store.join("index.json").exists()
    {
        let store = Store::open(&meta.store)?;
        let _lock = store.lock(false)?;
        volumes::release(&store, &canon, &meta.volume_mounts, anonymous_volumes)?;
    }
    Ok(())
}

fn image_of(store: &Store, meta: &BundleMeta) -> Result<Image> {
    let d = crate::store::make_descriptor(
        &meta.manifest_media_type,
        &meta.manifest_digest,
        meta.manifest_size,
        None,
    )?;
    let mut img = store.image_from_descriptor(&d, None)?;
    img.name = meta.image.clone();
    Ok(img)
}

/// The image a bundle was unpacked from.
pub fn bundle_image(store: &Store, bundle: &Path) -> Result<Image> {
    image_of(store, &read_meta(bundle)?)
}

/// Compute the bundle's changes (since unpack) as a new layer blob in the store. Runtime-injected
/// files and volume contents are left out.
pub fn diff(store: &Store, bundle: &Path) -> Result<LayerInfo> {
    let meta = read_meta(bundle)?;
    let mut excl = Exclusions {
        volumes: meta
            .volumes
            .iter()
            .map(|v| v.trim_matches('/').as_bytes().to_vec())
            .filter(|v| !v.is_empty())
            .collect(),
        new_runtime_dirs: Vec::new(),
    };
    // Runtime mount points the image lacks (copy mode knows from its snapshot).
    if meta.mode == Mode::Overlay {
        let img = image_of(store, &meta)?;
        let layer_dirs = layer::cached_dirs(store, &img)?;
        for d in tree::RUNTIME_DIRS {
            let mut in_image = false;
            for dir in layer_dirs.iter().flatten() {
                if fs::symlink_metadata(dir.join(d)).is_ok() {
                    in_image = true;
                }
            }
            if !in_image {
                excl.new_runtime_dirs.push(d.as_bytes().to_vec());
            }
        }
    } else {
        excl.new_runtime_dirs = tree::RUNTIME_DIRS
            .iter()
            .map(|d| d.as_bytes().to_vec())
            .collect();
    }
    let _lock = store.lock(false)?;
    match meta.mode {
        Mode::Overlay => {
            let upper = bundle.join("upper");
            store.write_layer(|w| tree::write_overlay_upper(&upper, &excl, w).map(|_| ()))
        }
        Mode::Copy => {
            let snap = tree::load_snapshot(&bundle.join(TREE_FILE))?;
            let rootfs = bundle.join("rootfs");
            store.write_layer(|w| tree::write_copy_diff(&rootfs, &snap, &excl, w).map(|_| ()))
        }
    }
}

/// `docker commit`: the bundle's changes become a new layer on top of its image, tagged `name`.
pub fn commit(store: &Store, bundle: &Path, name: &str, history: Option<History>) -> Result<Image> {
    crate::store::full_name(name)?;
    let _lock = store.lock(false)?;
    let base = bundle_image(store, bundle)?;
    let layer = diff(store, bundle)?;
    let h = history.unwrap_or_else(|| History {
        created_by: format!("skiff-image commit {}", bundle.display()),
        comment: None,
        author: None,
    });
    let img = store.create_image(Some(&base), None, &[(layer, h)], &[])?;
    store.tag(&img, name)?;
    let mut img = img;
    img.name = Some(crate::store::full_name(name)?);
    Ok(img)
}

//! References (`NAME[:TAG]`, `oci:`, `oci-archive:`, `docker-archive:`), import into the store
//! and export out of it.

use crate::apply::{self, ApplyFormat};
use crate::digest::{self, HashReader, HashWriter};
use crate::error::{Error, IoContext, Result};
use crate::layer;
use crate::store::{self, History, Image, Store, OCI_CONFIG, OCI_MANIFEST};
use serde_json::{json, Value};
use std::fs::{self, File};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// `NAME[:TAG]` in the store.
    Store(String),
    /// `oci:DIR[:TAG]`.
    Oci {
        /// Layout directory.
        dir: PathBuf,
        /// ref.name to pick.
        tag: Option<String>,
    },
    /// `oci-archive:FILE[:TAG]`.
    OciArchive {
        /// Tar file of a layout.
        file: PathBuf,
        /// ref.name to pick.
        tag: Option<String>,
    },
    /// `docker-archive:FILE[:NAME:TAG]`.
    DockerArchive {
        /// `docker save` tar file.
        file: PathBuf,
        /// `NAME:TAG` to pick from RepoTags.
        name: Option<String>,
    },
    /// A plain path: OCI layout dir, archive, rootfs tarball or rootfs directory (import only).
    Path(PathBuf),
}

fn split_first(rest: &str) -> (PathBuf, Option<String>) {
    match rest.split_once(':') {
        Some((p, t)) if !t.is_empty() => (PathBuf::from(p), Some(t.to_string())),
        Some((p, _)) => (PathBuf::from(p), None),
        None => (PathBuf::from(rest), None),
    }
}

/// Parse a reference string.
pub fn parse_reference(s: &str) -> Result<Reference> {
    let bad = |why: &str| Error::BadReference {
        reference: s.to_string(),
        reason: why.to_string(),
    };
    if let Some(rest) = s.strip_prefix("oci:") {
        let (dir, tag) = split_first(rest);
        if dir.as_os_str().is_empty() {
            return Err(bad("missing directory"));
        }
        return Ok(Reference::Oci { dir, tag });
    }
    if let Some(rest) = s.strip_prefix("oci-archive:") {
        let (file, tag) = split_first(rest);
        if file.as_os_str().is_empty() {
            return Err(bad("missing file"));
        }
        return Ok(Reference::OciArchive { file, tag });
    }
    if let Some(rest) = s.strip_prefix("docker-archive:") {
        let (file, name) = split_first(rest);
        if file.as_os_str().is_empty() {
            return Err(bad("missing file"));
        }
        if let Some(n) = &name {
            store::split_name(n)?;
        }
        return Ok(Reference::DockerArchive { file, name });
    }
    if s.starts_with('/') || s.starts_with("./") || s.starts_with("../") {
        return Ok(Reference::Path(PathBuf::from(s)));
    }
    store::split_name(s)?;
    Ok(Reference::Store(s.to_string()))
}

/// Options for import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `os/arch[/variant]` to pick from an index (default linux/amd64).
    pub platform: Option<String>,
    /// Cmd for a rootfs import's config.
    pub cmd: Option<Vec<String>>,
    /// Entrypoint for a rootfs import's config.
    pub entrypoint: Option<Vec<String>>,
    /// Extra env for a rootfs import's config.
    pub env: Vec<String>,
}

/// Resolve a reference to an image, importing external ones into the store (untagged).
pub fn resolve(store: &Store, reference: &str, platform: Option<&str>) -> Result<Image> {
    match parse_reference(reference)? {
        Reference::Store(n) => store.image(&n),
        Reference::Path(p) if !p.exists() => Err(Error::NotFound(reference.to_string())),
        _ => {
            let opts = ImportOptions {
                platform: platform.map(str::to_string),
                ..Default::default()
            };
            import(store, reference, None, &opts)
        }
    }
}

/// Import `source` into the store, tagging it `name` when given (or with the name the source
/// carries). Returns the image.
pub fn import(
    store: &Store,
    source: &str,
    name: Option<&str>,
    opts: &ImportOptions,
) -> Result<Image> {
    if let Some(n) = name {
        store::split_name(n)?;
    }
    // Imports hold the store lock exclusively so a failed import can remove exactly the blobs
    // it added (leaving the store unchanged) without racing another import.
    let _lock = store.lock(true)?;
    let before = store.blob_names()?;
    let r = import_locked(store, source, name, opts);
    if r.is_err() && _lock.is_exclusive() {
        if let Ok(after) = store.blob_names() {
            for b in after.difference(&before) {
                let _ = fs::remove_file(store.root().join("blobs/sha256").join(b));
            }
        }
    }
    r
}

fn import_locked(
    store: &Store,
    source: &str,
    name: Option<&str>,
    opts: &ImportOptions,
) -> Result<Image> {
    let r = parse_reference(source)?;
    let (img, carried) = match r {
        Reference::Store(n) => {
            // A bare word that is an existing file/dir in cwd is a path.
            let p = PathBuf::from(&n);
            if p.exists() {
                import_path(store, &p, opts)?
            } else {
                (store.image(&n)?, None)
            }
        }
        Reference::Oci { dir, tag } => {
            import_layout(store, &dir, tag.as_deref(), opts.platform.as_deref())?
        }
        Reference::OciArchive { file, tag } => {
            import_oci_archive(store, &file, tag.as_deref(), opts.platform.as_deref())?
        }
        Reference::DockerArchive { file, name } => {
            import_docker_archive(store, &file, name.as_deref())?
        }
        Reference::Path(p) => import_path(store, &p, opts)?,
    };
    let tag_as = name.map(str::to_string).or(carried);
    let mut img = img;
    if let Some(n) = tag_as {
        store.tag(&img, &n)?;
        img.name = Some(store::full_name(&n)?);
    }
    Ok(img)
}

fn looks_like_name(s: &str) -> bool {
    s.contains(':') && store::split_name(s).is_ok()
}

/// Import one image from an OCI layout directory. Returns the image and the ref name it had.
pub fn import_layout(
    store: &Store,
    dir: &Path,
    tag: Option<&str>,
    platform: Option<&str>,
) -> Result<(Image, Option<String>)> {
    if !dir.join("oci-layout").exists() {
        return Err(Error::Invalid(format!(
            "{} is not an OCI image layout (no oci-layout file)",
            dir.display()
        )));
    }
    let idx = store::read_index_file(dir)?;
    let names = store::layout_names(&idx);
    let desc = match tag {
        Some(t) => names
            .get(t)
            .or_else(|| {
                names
                    .iter()
                    .find(|(k, _)| k.rsplit_once(':').map(|x| x.1) == Some(t) && !t.contains(':'))
                    .map(|x| x.1)
            })
            .cloned()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{t:?} in OCI layout {} (has: {})",
                    dir.display(),
                    names.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?,
        None => match idx.manifests().as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(Error::NotFound(format!(
                    "no image in OCI layout {}",
                    dir.display()
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "OCI layout {} holds several images; pick one with oci:DIR:TAG (tags: {})",
                    dir.display(),
                    names.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
        },
    };
    let carried = store::ref_name(&desc).filter(|n| looks_like_name(n));
    let mut d = desc;
    // Walk down indexes to a manifest for the platform.
    for _ in 0..4 {
        let dg = d.digest().to_string();
        store.copy_blob_from(dir, &dg)?;
        let bytes = store.read_blob(&dg)?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("parsing {dg} in {}", dir.display()), e))?;
        if v.get("manifests").is_some() {
            let sub: oci_spec::image::ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(format!("parsing index {dg}"), e))?;
            d = store::select_platform(&sub, platform)?;
            continue;
        }
        let cfg = v
            .pointer("/config/digest")
            .and_then(|x| x.as_str())
            .ok_or_else(|| Error::Invalid(format!("manifest {dg} has no config digest")))?;
        store.copy_blob_from(dir, cfg)?;
        if let Some(ls) = v.get("layers").and_then(|l| l.as_array()) {
            for l in ls {
                let ld = l.get("digest").and_then(|x| x.as_str()).ok_or_else(|| {
                    Error::Invalid(format!("manifest {dg}: layer without digest"))
                })?;
                store.copy_blob_from(dir, ld)?;
            }
        }
        let img = store.image_from_descriptor(&d, platform)?;
        return Ok((img, carried));
    }
    Err(Error::Invalid(format!(
        "too deeply nested image indexes in {}",
        dir.display()
    )))
}

/// Extract an archive (tar, possibly compressed) safely into a fresh temp dir in the store.
fn extract_archive(store: &Store, file: &Path) -> Result<tempfile::TempDir> {
    let tmp = tempfile::Builder::new()
        .prefix("archive-")
        .tempdir_in(store.tmp_dir())
        .map_err(|e| Error::at("creating temp dir in", &store.tmp_dir(), e))?;
    let f = File::open(file).map_err(|e| Error::at("opening archive", file, e))?;
    let dec = layer::decompress(BufReader::with_capacity(256 * 1024, f))
        .map_err(|e| Error::at("reading", file, e))?;
    apply::apply_layer(tmp.path(), dec, ApplyFormat::Merged).map_err(|e| match e {
        Error::Io { context, err } => Error::Io {
            context: format!("extracting {}: {context}", file.display()),
            err,
        },
        other => other,
    })?;
    Ok(tmp)
}

fn import_oci_archive(
    store: &Store,
    file: &Path,
    tag: Option<&str>,
    platform: Option<&str>,
) -> Result<(Image, Option<String>)> {
    let tmp = extract_archive(store, file)?;
    import_layout(store, tmp.path(), tag, platform)
}

fn archive_member(root: &Path, rel: &str) -> Result<PathBuf> {
    let comps = crate::fsops::clean_components(rel.as_bytes())?;
    let mut p = root.to_path_buf();
    for c in comps {
        p.push(c);
    }
    // The archive was extracted by us with no symlink escapes; refuse symlinked members anyway.
    let md = fs::symlink_metadata(&p).map_err(|e| Error::at("reading archive member", &p, e))?;
    if !md.is_file() {
        return Err(Error::Invalid(format!(
            "archive member {rel:?} is not a regular file"
        )));
    }
    Ok(p)
}

fn import_docker_archive(
    store: &Store,
    file: &Path,
    name: Option<&str>,
) -> Result<(Image, Option<String>)> {
    let tmp = extract_archive(store, file)?;
    let mpath = tmp.path().join("manifest.json");
    let mbytes = fs::read(&mpath).map_err(|_| {
        Error::Invalid(format!(
            "{} is not a docker archive (no manifest.json)",
            file.display()
        ))
    })?;
    let entries: Vec<Value> = serde_json::from_slice(&mbytes)
        .map_err(|e| Error::json(format!("parsing manifest.json in {}", file.display()), e))?;
    let norm = |s: &str| -> String {
        let s = s.strip_prefix("docker.io/").unwrap_or(s);
        let s = s.strip_prefix("library/").unwrap_or(s);
        store::full_name(s).unwrap_or_else(|_| s.to_string())
    };
    let tags_of = |e: &Value| -> Vec<String> {
        e.get("RepoTags")
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let entry = match name {
        Some(n) => {
            let want = norm(n);
            entries
                .iter()
                .find(|e| tags_of(e).iter().any(|t| norm(t) == want))
                .ok_or_else(|| {
                    Error::NotFound(format!("{n} in docker archive {}", file.display()))
                })?
        }
        None => match entries.as_slice() {
            [one] => one,
            [] => {
                return Err(Error::NotFound(format!(
                    "no image in docker archive {}",
                    file.display()
                )))
            }
            _ => {
                return Err(Error::Invalid(format!(
                    "docker archive {} holds several images; use docker-archive:FILE:NAME:TAG",
                    file.display()
                )))
            }
        },
    };
    let carried = tags_of(entry).first().map(|t| norm(t));
    let cfg_rel = entry
        .get("Config")
        .and_then(|c| c.as_str())
        .ok_or_else(|| Error::Invalid("manifest.json entry without Config".into()))?;
    let cfg_bytes = fs::read(archive_member(tmp.path(), cfg_rel)?)
        .map_err(|e| Error::io(format!("reading {cfg_rel}"), e))?;
    let cfg: Value = serde_json::from_slice(&cfg_bytes)
        .map_err(|e| Error::json(format!("parsing {cfg_rel}"), e))?;
    let want_ids: Vec<String> = cfg
        .pointer("/rootfs/diff_ids")
        .and_then(|x| x.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let layers: Vec<String> = entry
        .get("Layers")
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if layers.len() != want_ids.len() {
        return Err(Error::Invalid(format!(
            "docker archive {}: {} layers but {} diff_ids in config",
            file.display(),
            layers.len(),
            want_ids.len()
        )));
    }
    let mut descs = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = archive_member(tmp.path(), l)?;
        let comp = {
            let mut br = BufReader::new(File::open(&p).map_err(|e| Error::at("opening", &p, e))?);
            layer::sniff(&mut br).map_err(|e| Error::at("reading", &p, e))?
        };
        let diff_id = uncompressed_digest(&p)?;
        if diff_id != want_ids[i] {
            return Err(Error::Digest {
                what: format!("diff_id of layer {l} in {}", file.display()),
                expected: want_ids[i].clone(),
                actual: diff_id,
            });
        }
        let (d, size) = store.adopt_file(&p)?;
        let mt = match comp {
            layer::Compression::None => "application/vnd.oci.image.layer.v1.tar",
            layer::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            layer::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        };
        descs.push(json!({"mediaType": mt, "digest": d, "size": size}));
    }
    let cfg_digest = store.put_blob(&cfg_bytes)?;
    let manifest = json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": cfg_digest, "size": cfg_bytes.len()},
        "layers": descs,
    });
    let mb = serde_json::to_vec(&manifest).map_err(|e| Error::json("serializing manifest", e))?;
    let md = store.put_blob(&mb)?;
    let d = store::make_descriptor(OCI_MANIFEST, &md, mb.len() as u64, None)?;
    Ok((store.image_from_descriptor(&d, None)?, carried))
}

fn uncompressed_digest(p: &Path) -> Result<String> {
    let f = File::open(p).map_err(|e| Error::at("opening", p, e))?;
    let dec = layer::decompress(BufReader::with_capacity(256 * 1024, f))
        .map_err(|e| Error::at("reading", p, e))?;
    let hr = HashReader::new(dec, u64::MAX, p.display().to_string());
    let (d, _) = hr.drain().map_err(|e| Error::at("decompressing", p, e))?;
    Ok(d)
}

/// What kind of thing a plain path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PathKind {
    Layout,
    RootfsDir,
    OciArchive,
    DockerArchive,
    RootfsTar,
}

fn detect(p: &Path) -> Result<PathKind> {
    let md = fs::metadata(p).map_err(|e| Error::at("cannot import", p, e))?;
    if md.is_dir() {
        return Ok(if p.join("oci-layout").exists() {
            PathKind::Layout
        } else {
            PathKind::RootfsDir
        });
    }
    let f = File::open(p).map_err(|e| Error::at("opening", p, e))?;
    let dec = layer::decompress(BufReader::with_capacity(64 * 1024, f))
        .map_err(|e| Error::at("reading", p, e))?;
    let mut ar = tar::Archive::new(dec);
    let entries = ar.entries().map_err(|e| Error::at("reading tar", p, e))?;
    let (mut oci, mut docker) = (false, false);
    for (n, e) in entries.enumerate() {
        if n > 20000 {
            break;
        }
        let e = e.map_err(|e| {
            Error::Invalid(format!("{} is not a valid tar archive: {e}", p.display()))
        })?;
        let path = e.path_bytes();
        let path = path.strip_prefix(b"./").unwrap_or(&path);
        if path == b"oci-layout" {
            oci = true;
        } else if path == b"manifest.json" {
            docker = true;
        }
    }
    Ok(if oci {
        PathKind::OciArchive
    } else if docker {
        PathKind::DockerArchive
    } else {
        PathKind::RootfsTar
    })
}

fn import_path(store: &Store, p: &Path, opts: &ImportOptions) -> Result<(Image, Option<String>)> {
    match detect(p)? {
        PathKind::Layout => import_layout(store, p, None, opts.platform.as_deref()),
        PathKind::OciArchive => import_oci_archive(store, p, None, opts.platform.as_deref()),
        PathKind::DockerArchive => import_docker_archive(store, p, None),
        PathKind::RootfsDir => {
            let layer = store.write_layer(|w| crate::tree::write_dir(p, w).map(|_| ()))?;
            Ok((rootfs_image(store, layer, p, opts)?, None))
        }
        PathKind::RootfsTar => {
            // Keep the blob as given (plain, gzip or zstd); compute the diff_id.
            let diff_id = uncompressed_digest(p)?;
            let comp = {
                let mut br = BufReader::new(File::open(p).map_err(|e| Error::at("opening", p, e))?);
                layer::sniff(&mut br).map_err(|e| Error::at("reading", p, e))?
            };
            let mut f = File::open(p).map_err(|e| Error::at("opening", p, e))?;
            let mut w = store.blob_writer()?;
            io::copy(&mut f, &mut w).map_err(|e| Error::at("copying", p, e))?;
            let (digest, size) = w.commit(None)?;
            let media_type = match comp {
                layer::Compression::None => "application/vnd.oci.image.layer.v1.tar",
                layer::Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
                layer::Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
            }
            .to_string();
            let layer = store::LayerInfo {
                digest,
                diff_id,
                size,
                media_type,
            };
            Ok((rootfs_image(store, layer, p, opts)?, None))
        }
    }
}

fn rootfs_image(
    store: &Store,
    layer: store::LayerInfo,
    src: &Path,
    opts: &ImportOptions,
) -> Result<Image> {
    let mut env = vec![crate::spec::DEFAULT_PATH.to_string()];
    for e in &opts.env {
        let k = e.split('=').next().unwrap_or(e);
        env.retain(|x| x.split('=').next() != Some(k));
        env.push(e.clone());
    }
    let mut cfg = json!({"Env": env});
    if let Some(c) = &opts.cmd {
        cfg["Cmd"] = json!(c);
    }
    if let Some(e) = &opts.entrypoint {
        cfg["Entrypoint"] = json!(e);
    }
    let rc: oci_spec::image::Config =
        serde_json::from_value(cfg).map_err(|e| Error::json("building config", e))?;
    let h = History {
        created_by: format!("skiff-image import {}", src.display()),
        comment: Some("imported from a rootfs".into()),
        author: None,
    };
    store.create_image(None, Some(rc), &[(layer, h)], &[])
}

/// Export an image to `dest` (`oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
/// `docker-archive:FILE[:NAME:TAG]`).
pub fn export(store: &Store, image: &Image, dest: &str) -> Result<()> {
    let default_tag = image
        .name
        .as_deref()
        .and_then(|n| store::split_name(n).ok())
        .map(|(_, t)| t)
        .unwrap_or_else(|| "latest".into());
    match parse_reference(dest)? {
        Reference::Oci { dir, tag } => {
            export_layout(store, image, &dir, tag.as_deref().unwrap_or(&default_tag))
        }
        Reference::OciArchive { file, tag } => {
            let dir = tempfile::Builder::new()
                .prefix("export-")
                .tempdir_in(store.tmp_dir())
                .map_err(|e| Error::at("creating temp dir in", &store.tmp_dir(), e))?;
            export_layout(
                store,
                image,
                dir.path(),
                tag.as_deref().unwrap_or(&default_tag),
            )?;
            write_tar_atomic(&file, |b| {
                b.append_dir_all(".", dir.path())
                    .map_err(|e| Error::io("archiving layout", e))
            })
        }
        Reference::DockerArchive { file, name } => {
            let name = match name.or_else(|| image.name.clone()) {
                Some(n) => store::full_name(&n)?,
                None => {
                    return Err(Error::Invalid(
                        "docker-archive export needs a name: docker-archive:FILE:NAME:TAG".into(),
                    ))
                }
            };
            export_docker(store, image, &file, &name)
        }
        _ => Err(Error::BadReference {
            reference: dest.to_string(),
            reason: "export destination must be oci:, oci-archive: or docker-archive:".into(),
        }),
    }
}

fn write_tar_atomic(
    file: &Path,
    fill: impl FnOnce(&mut tar::Builder<io::BufWriter<File>>) -> Result<()>,
) -> Result<()> {
    let dir = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let t = tempfile::NamedTempFile::new_in(dir)
        .map_err(|e| Error::at("creating temp file in", dir, e))?;
    let (f, tpath) = t.into_parts();
    let mut b = tar::Builder::new(io::BufWriter::with_capacity(256 * 1024, f));
    b.mode(tar::HeaderMode::Deterministic);
    fill(&mut b)?;
    let w = b.into_inner().map_err(|e| Error::at("writing", file, e))?;
    w.into_inner()
        .map_err(|e| Error::at("writing", file, e.into_error()))?;
    tpath
        .persist(file)
        .map_err(|e| Error::at("renaming into", file, e.error))?;
    Ok(())
}

fn export_layout(store: &Store, image: &Image, dir: &Path, tag: &str) -> Result<()> {
    fs::create_dir_all(dir.join("blobs/sha256")).map_err(|e| Error::at("creating", dir, e))?;
    let copy = |d: &str| -> Result<()> {
        let src = store.blob_path(d)?;
        let dst = dir.join("blobs/sha256").join(digest::hex_part(d)?);
        if dst.exists() {
            return Ok(());
        }
        let tmp = dst.with_extension("tmp");
        fs::copy(&src, &tmp).map_err(|e| Error::at("copying blob", &src, e))?;
        fs::rename(&tmp, &dst).map_err(|e| Error::at("renaming", &dst, e))
    };
    for (d, _, _) in image.layers() {
        copy(&d)?;
    }
    copy(&image.config_digest)?;
    copy(&image.manifest_digest)?;
    if !dir.join("oci-layout").exists() {
        fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .ctx(|| format!("writing {}/oci-layout", dir.display()))?;
    }
    let mut idx: Value = if dir.join("index.json").exists() {
        let b = fs::read(dir.join("index.json"))
            .ctx(|| format!("reading {}/index.json", dir.display()))?;
        serde_json::from_slice(&b)
            .map_err(|e| Error::json(format!("parsing {}/index.json", dir.display()), e))?
    } else {
        json!({"schemaVersion": 2, "mediaType": store::OCI_INDEX, "manifests": []})
    };
    let mut ms: Vec<Value> = idx
        .get("manifests")
        .and_then(|m| m.as_array())
        .cloned()
        .unwrap_or_default();
    ms.retain(|m| {
        m.pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(|x| x.as_str())
            != Some(tag)
    });
    ms.push(json!({
        "mediaType": image.manifest_media_type, "digest": image.manifest_digest, "size": image.manifest_size,
        "annotations": {store::REF_NAME: tag},
        "platform": {"architecture": image.config.architecture().to_string(), "os": image.config.os().to_string()},
    }));
    idx["manifests"] = Value::Array(ms);
    let data = serde_json::to_vec(&idx).map_err(|e| Error::json("serializing index", e))?;
    let tmp = dir.join("index.json.tmp");
    fs::write(&tmp, data).map_err(|e| Error::at("writing", &tmp, e))?;
    fs::rename(&tmp, dir.join("index.json")).map_err(|e| Error::at("renaming", &tmp, e))
}

fn export_docker(store: &Store, image: &Image, file: &Path, name: &str) -> Result<()> {
    let cfg_hex = digest::hex_part(&image.config_digest)?.to_string();
    let diff_ids = image.diff_ids();
    let layers = image.layers();
    write_tar_atomic(file, |b| {
        let cfg = store.read_blob(&image.config_digest)?;
        append_bytes(b, &format!("{cfg_hex}.json"), &cfg)?;
        let mut names = Vec::new();
        for (i, (d, _mt, size)) in layers.iter().enumerate() {
            let lhex = digest::hex_part(&diff_ids[i])?;
            let lname = format!("{lhex}/layer.tar");
            let mut dh = ustar_header();
            dh.set_entry_type(tar::EntryType::Directory);
            dh.set_mode(0o755);
            dh.set_size(0);
            b.append_data(&mut dh, format!("{lhex}/"), io::empty())
                .map_err(|e| Error::io("writing archive", e))?;
            // Decompress (verifying digest and diff_id) into a temp file to learn the size.
            let mut tmp = tempfile::tempfile_in(store.tmp_dir())
                .map_err(|e| Error::at("creating temp file in", &store.tmp_dir(), e))?;
            {
                let mut blob = store.open_blob(d, Some(*size))?;
                let dec = layer::decompress(BufReader::with_capacity(256 * 1024, &mut blob))
                    .map_err(|e| Error::io(format!("reading layer {d}"), e))?;
                let mut hw = HashWriter::new(&mut tmp);
                let mut dec = dec;
                io::copy(&mut dec, &mut hw).map_err(|e| store::blob_read_error(d, e))?;
                let (_, got, _) = hw.finish();
                drop(dec);
                blob.finish().map_err(|e| store::blob_read_error(d, e))?;
                if got != diff_ids[i] {
                    return Err(Error::Digest {
                        what: format!("diff_id of layer {d}"),
                        expected: diff_ids[i].clone(),
                        actual: got,
                    });
                }
            }
            use std::io::Seek;
            tmp.seek(io::SeekFrom::Start(0))
                .map_err(|e| Error::io("rewinding temp file", e))?;
            let len = tmp
                .metadata()
                .map_err(|e| Error::io("stat temp file", e))?
                .len();
            let mut h = ustar_header();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(len);
            b.append_data(&mut h, &lname, &mut tmp)
                .map_err(|e| Error::io("writing archive", e))?;
            names.push(lname);
        }
        let manifest =
            json!([{"Config": format!("{cfg_hex}.json"), "RepoTags": [name], "Layers": names}]);
        append_bytes(
            b,
            "manifest.json",
            &serde_json::to_vec(&manifest).map_err(|e| Error::json("manifest.json", e))?,
        )?;
        let (n, t) = store::split_name(name)?;
        let top = diff_ids
            .last()
            .map(|d| d.trim_start_matches("sha256:").to_string())
            .unwrap_or_default();
        let repos = json!({n: {t: top}});
        append_bytes(
            b,
            "repositories",
            &serde_json::to_vec(&repos).map_err(|e| Error::json("repositories", e))?,
        )?;
        Ok(())
    })
}

fn ustar_header() -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_bytes<W: Write>(b: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = ustar_header();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    b.append_data(&mut h, name, data)
        .map_err(|e| Error::io(format!("writing {name} to archive"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("busybox").expect("r"),
            Reference::Store("busybox".into())
        );
        assert_eq!(
            parse_reference("reg.io:5000/a/b:1").expect("r"),
            Reference::Store("reg.io:5000/a/b:1".into())
        );
        assert_eq!(
            parse_reference("oci:/x/y:v1").expect("r"),
            Reference::Oci {
                dir: "/x/y".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            parse_reference("oci-archive:/a.tar").expect("r"),
            Reference::OciArchive {
                file: "/a.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            parse_reference("docker-archive:/d.tar:busybox:1").expect("r"),
            Reference::DockerArchive {
                file: "/d.tar".into(),
                name: Some("busybox:1".into())
            }
        );
        assert_eq!(
            parse_reference("/some/path").expect("r"),
            Reference::Path("/some/path".into())
        );
        assert!(parse_reference("oci:").is_err());
        assert!(parse_reference("").is_err());
        assert!(parse_reference("bad name").is_err());
        assert_eq!(store::full_name("a/b").expect("n"), "a/b:latest");
        assert_eq!(
            store::full_name("host:5000/a").expect("n"),
            "host:5000/a:latest"
        );
    }
}

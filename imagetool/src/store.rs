//! The image store: a plain OCI image layout (so umoci/skopeo can read it) plus `layers/`, the
//! overlay-mode cache of extracted layers keyed by diff_id, and `tmp/` for atomic writes.

use crate::digest::{self, HashWriter};
use crate::error::{Error, IoContext, Result};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Default store location when neither `--store` nor `SKIFF_STORE` is given.
pub const DEFAULT_STORE: &str = "/var/lib/skiff";
/// Annotation holding `NAME:TAG` on index entries.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Media type of OCI manifests.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of OCI indexes.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Media type of OCI image configs.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Docker schema 2 manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An opened store directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

/// A resolved image: its manifest and config, both already digest-verified.
#[derive(Debug, Clone)]
pub struct Image {
    /// `NAME:TAG` if the image was found by name.
    pub name: Option<String>,
    /// Digest of the manifest blob.
    pub manifest_digest: String,
    /// Size of the manifest blob.
    pub manifest_size: u64,
    /// Media type of the manifest (OCI or Docker schema 2).
    pub manifest_media_type: String,
    /// The parsed manifest.
    pub manifest: ImageManifest,
    /// Digest of the config blob (the image id).
    pub config_digest: String,
    /// The parsed config.
    pub config: ImageConfiguration,
}

impl Image {
    /// Layer descriptors as (digest, media type, size), bottom first.
    pub fn layers(&self) -> Vec<(String, String, u64)> {
        self.manifest
            .layers()
            .iter()
            .map(|d| (d.digest().to_string(), d.media_type().to_string(), d.size()))
            .collect()
    }
    /// The diff_ids from the config, bottom first.
    pub fn diff_ids(&self) -> Vec<String> {
        self.config.rootfs().diff_ids().clone()
    }
    /// Short image id (first 12 hex digits of the config digest), as `docker images` shows.
    pub fn short_id(&self) -> String {
        self.config_digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect()
    }
}

/// A layer blob written to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Digest of the (compressed) blob.
    pub digest: String,
    /// Digest of the uncompressed tar (goes in the config's rootfs.diff_ids).
    pub diff_id: String,
    /// Blob size in bytes.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
}

/// One row of `images`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImageSummary {
    /// Image name (without tag).
    pub name: String,
    /// Tag.
    pub tag: String,
    /// Config digest (image id).
    pub id: String,
    /// Manifest digest.
    pub digest: String,
    /// Creation time from the config.
    pub created: Option<String>,
    /// Sum of manifest, config and layer blob sizes.
    pub size: u64,
}

/// An exclusive or shared flock on the store; released on drop. Re-entrant within a process:
/// taking the lock while this process already holds it returns a guard that adds nothing.
pub struct StoreLock {
    _file: Option<File>,
    key: PathBuf,
    exclusive: bool,
}

impl StoreLock {
    /// Whether this guard holds the lock exclusively (false for nested guards).
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }
}

fn held_locks() -> &'static std::sync::Mutex<std::collections::HashMap<PathBuf, usize>> {
    static HELD: std::sync::OnceLock<std::sync::Mutex<std::collections::HashMap<PathBuf, usize>>> =
        std::sync::OnceLock::new();
    HELD.get_or_init(Default::default)
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        if let Ok(mut m) = held_locks().lock() {
            if let Some(c) = m.get_mut(&self.key) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

/// Split `NAME[:TAG]` into (name, tag), defaulting the tag to `latest`.
pub fn split_name(reference: &str) -> Result<(String, String)> {
    let bad = |reason: &str| Error::BadReference {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if reference.is_empty() {
        return Err(bad("empty name"));
    }
    let slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match reference[slash..].rfind(':') {
        Some(i) => (&reference[..slash + i], &reference[slash + i + 1..]),
        None => (reference, "latest"),
    };
    if name.is_empty() || tag.is_empty() {
        return Err(bad("empty name or tag"));
    }
    if reference
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(bad("whitespace or control characters"));
    }
    Ok((name.to_string(), tag.to_string()))
}

/// Normalize `NAME[:TAG]` to `NAME:TAG`.
pub fn full_name(reference: &str) -> Result<String> {
    let (n, t) = split_name(reference)?;
    Ok(format!("{n}:{t}"))
}

/// Whether a media type names a manifest we can unpack.
pub fn is_manifest(mt: &str) -> bool {
    mt == OCI_MANIFEST || mt == DOCKER_MANIFEST
}

/// Whether a media type names an index / manifest list.
pub fn is_index(mt: &str) -> bool {
    mt == OCI_INDEX || mt == DOCKER_LIST
}

impl Store {
    /// Open (creating if needed) a store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Store> {
        let root = path.as_ref().to_path_buf();
        for d in ["blobs/sha256", "layers", "tmp"] {
            fs::create_dir_all(root.join(d))
                .map_err(|e| Error::at("creating store directory", &root.join(d), e))?;
        }
        let s = Store { root };
        if !s.root.join("oci-layout").exists() {
            s.write_atomic(
                Path::new("oci-layout"),
                br#"{"imageLayoutVersion":"1.0.0"}"#,
            )?;
        }
        if !s.root.join("index.json").exists() {
            let _l = s.lock(true)?;
            if !s.root.join("index.json").exists() {
                s.write_atomic(
                    Path::new("index.json"),
                    br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
                )?;
            }
        }
        Ok(s)
    }

    /// Open the store named by `SKIFF_STORE`, else [`DEFAULT_STORE`].
    pub fn open_default() -> Result<Store> {
        let p = std::env::var_os("SKIFF_STORE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STORE));
        Store::open(p)
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Directory of the overlay layer cache.
    pub fn layer_cache(&self) -> PathBuf {
        self.root.join("layers")
    }

    /// Scratch directory on the store's file system (for temp files renamed into place).
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Take the store lock: exclusive for gc and import, shared for everything that adds
    /// content. A builder may hold a shared guard across a whole build so `gc` in another process
    /// cannot remove blobs that are written but not yet tagged. Nested calls in the same process
    /// return a no-op guard (so they never deadlock).
    pub fn lock(&self, exclusive: bool) -> Result<StoreLock> {
        let key = self.root.join(".lock");
        {
            let mut m = held_locks()
                .lock()
                .map_err(|_| Error::Invalid("store lock table poisoned".into()))?;
            if let Some(c) = m.get_mut(&key) {
                *c += 1;
                return Ok(StoreLock {
                    _file: None,
                    key,
                    exclusive: false,
                });
            }
        }
        let mut l = self.flock(".lock", exclusive)?;
        if let Ok(mut m) = held_locks().lock() {
            *m.entry(key.clone()).or_insert(0) += 1;
        }
        l.key = key;
        Ok(l)
    }

    fn flock(&self, name: &str, exclusive: bool) -> Result<StoreLock> {
        let p = self.root.join(name);
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| Error::at("opening lock", &p, e))?;
        let op = if exclusive {
            libc::LOCK_EX
        } else {
            libc::LOCK_SH
        };
        loop {
            // SAFETY: plain syscall on an owned fd.
            let rc = unsafe { libc::flock(f.as_raw_fd(), op) };
            if rc == 0 {
                break;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Error::at("locking", &p, e));
            }
        }
        Ok(StoreLock {
            _file: Some(f),
            key: PathBuf::new(),
            exclusive,
        })
    }

    /// Write a file in the store atomically (temp file in tmp/, fsync, rename).
    fn write_atomic(&self, rel: &Path, data: &[u8]) -> Result<()> {
        let dest = self.root.join(rel);
        let mut t = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(|e| Error::at("creating temp file in", &self.tmp_dir(), e))?;
        t.write_all(data)
            .map_err(|e| Error::at("writing", &dest, e))?;
        t.as_file()
            .sync_all()
            .map_err(|e| Error::at("syncing", &dest, e))?;
        t.persist(&dest)
            .map_err(|e| Error::at("renaming into", &dest, e.error))?;
        Ok(())
    }

    /// Path of a blob (digest validated first).
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs/sha256")
            .join(digest::hex_part(digest)?))
    }

    /// Whether the store holds a blob.
    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    /// Open a blob for streaming; the returned reader fails at EOF if the content does not
    /// match `digest` (or `size`, when given).
    pub fn open_blob(&self, digest: &str, size: Option<u64>) -> Result<VerifiedBlob> {
        let p = self.blob_path(digest)?;
        let f = File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::Invalid(format!(
                    "blob {digest} is missing from the store ({})",
                    p.display()
                ))
            } else {
                Error::at("opening blob", &p, e)
            }
        })?;
        Ok(VerifiedBlob {
            inner: io::BufReader::with_capacity(256 * 1024, f),
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
            expected: digest.to_string(),
            size,
            count: 0,
            done: false,
        })
    }

    /// Read a whole blob (manifests, configs) and verify its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let mut r = self.open_blob(digest, None)?;
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .map_err(|e| blob_read_error(digest, e))?;
        Ok(buf)
    }

    /// Store bytes as a blob; returns its digest.
    pub fn put_blob(&self, data: &[u8]) -> Result<String> {
        let d = digest::of_bytes(data);
        if !self.has_blob(&d) {
            let rel = PathBuf::from("blobs/sha256").join(digest::hex_part(&d)?);
            self.write_atomic(&rel, data)?;
        }
        Ok(d)
    }

    /// Start writing a blob of unknown digest; finish with [`BlobWriter::commit`].
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let t = tempfile::NamedTempFile::new_in(self.tmp_dir())
            .map_err(|e| Error::at("creating temp file in", &self.tmp_dir(), e))?;
        Ok(BlobWriter {
            inner: HashWriter::new(io::BufWriter::with_capacity(256 * 1024, t)),
            root: self.root.clone(),
        })
    }

    /// Move an existing file on the store's file system into blobs/ under its digest (which is
    /// computed here), avoiding a copy. Returns (digest, size).
    pub fn adopt_file(&self, path: &Path) -> Result<(String, u64)> {
        let mut f = File::open(path).map_err(|e| Error::at("opening", path, e))?;
        let mut w = HashWriter::new(io::sink());
        io::copy(&mut f, &mut w).map_err(|e| Error::at("hashing", path, e))?;
        let (_, d, n) = w.finish();
        let dest = self.blob_path(&d)?;
        if !dest.exists() {
            fs::rename(path, &dest).map_err(|e| Error::at("moving into the store", path, e))?;
        }
        Ok((d, n))
    }

    /// Copy a blob from another OCI layout directory, verifying its digest.
    pub fn copy_blob_from(&self, src_layout: &Path, digest: &str) -> Result<u64> {
        let hex = digest::hex_part(digest)?;
        let src = src_layout.join("blobs/sha256").join(hex);
        if self.has_blob(digest) {
            return fs::metadata(&src).map(|m| m.len()).or_else(|_| {
                fs::metadata(self.blob_path(digest)?)
                    .map(|m| m.len())
                    .map_err(|e| Error::at("stat", &src, e))
            });
        }
        let mut f = File::open(&src).map_err(|e| Error::at("opening blob", &src, e))?;
        let mut w = self.blob_writer()?;
        io::copy(&mut f, &mut w).map_err(|e| Error::at("copying blob", &src, e))?;
        let (d, n) = w.commit(Some(digest))?;
        debug_assert_eq!(d, digest);
        Ok(n)
    }

    /// Hex names of all blobs present (to undo a failed import).
    pub fn blob_names(&self) -> Result<HashSet<String>> {
        let d = self.root.join("blobs/sha256");
        let mut out = HashSet::new();
        for e in fs::read_dir(&d).map_err(|e| Error::at("listing", &d, e))? {
            let e = e.map_err(|e| Error::at("listing", &d, e))?;
            out.insert(e.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }

    /// Read and parse the store's index.json.
    pub fn read_index(&self) -> Result<ImageIndex> {
        read_index_file(&self.root)
    }

    /// Read-modify-write index.json under the index lock (atomic replace).
    pub fn update_index<T>(&self, f: impl FnOnce(&mut ImageIndex) -> Result<T>) -> Result<T> {
        let _l = self.flock(".index.lock", true)?;
        let mut idx = self.read_index()?;
        let r = f(&mut idx)?;
        let data =
            serde_json::to_vec(&idx).map_err(|e| Error::json("serializing index.json", e))?;
        self.write_atomic(Path::new("index.json"), &data)?;
        Ok(r)
    }

    /// Point `NAME[:TAG]` at a manifest (replacing any previous holder of that name).
    pub fn tag_manifest(
        &self,
        name: &str,
        digest: &str,
        size: u64,
        media_type: &str,
    ) -> Result<()> {
        let full = full_name(name)?;
        let desc = make_descriptor(media_type, digest, size, Some(&full))?;
        self.update_index(|idx| {
            let mut m: Vec<Descriptor> = idx
                .manifests()
                .iter()
                .filter(|d| ref_name(d).as_deref() != Some(full.as_str()))
                .cloned()
                .collect();
            m.push(desc);
            idx.set_manifests(m);
            Ok(())
        })
    }

    /// Tag an image under a (new) name.
    pub fn tag(&self, image: &Image, name: &str) -> Result<()> {
        self.tag_manifest(
            name,
            &image.manifest_digest,
            image.manifest_size,
            &image.manifest_media_type,
        )
    }

    /// Remove a name; blobs stay until `gc`.
    pub fn remove(&self, name: &str) -> Result<()> {
        let full = full_name(name)?;
        self.update_index(|idx| {
            let before = idx.manifests().len();
            let m: Vec<Descriptor> = idx
                .manifests()
                .iter()
                .filter(|d| ref_name(d).as_deref() != Some(full.as_str()))
                .cloned()
                .collect();
            if m.len() == before {
                return Err(Error::NotFound(full.clone()));
            }
            idx.set_manifests(m);
            Ok(())
        })
    }

    /// Find `NAME[:TAG]` in the index; returns its descriptor.
    pub fn lookup(&self, name: &str) -> Result<Descriptor> {
        let full = full_name(name)?;
        let idx = self.read_index()?;
        idx.manifests()
            .iter()
            .find(|d| ref_name(d).as_deref() == Some(full.as_str()))
            .cloned()
            .ok_or(Error::NotFound(full))
    }

    /// Read the image `NAME[:TAG]` from the store.
    pub fn image(&self, name: &str) -> Result<Image> {
        let d = self.lookup(name)?;
        let mut img = self.image_from_descriptor(&d, None)?;
        img.name = Some(full_name(name)?);
        Ok(img)
    }

    /// Read an image given a descriptor (manifest or index; `platform` like `linux/amd64`).
    pub fn image_from_descriptor(&self, d: &Descriptor, platform: Option<&str>) -> Result<Image> {
        let mt = d.media_type().to_string();
        let digest = d.digest().to_string();
        let bytes = self.read_blob(&digest)?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("parsing manifest {digest}"), e))?;
        let real_mt = value
            .get("mediaType")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .unwrap_or(mt);
        if is_index(&real_mt) || value.get("manifests").is_some() {
            let idx: ImageIndex = serde_json::from_slice(&bytes)
                .map_err(|e| Error::json(format!("parsing image index {digest}"), e))?;
            let chosen = select_platform(&idx, platform)?;
            return self.image_from_descriptor(&chosen, platform);
        }
        let manifest: ImageManifest = serde_json::from_slice(&bytes)
            .map_err(|e| Error::json(format!("parsing image manifest {digest}"), e))?;
        let config_digest = manifest.config().digest().to_string();
        let cbytes = self.read_blob(&config_digest)?;
        let config: ImageConfiguration = serde_json::from_slice(&cbytes)
            .map_err(|e| Error::json(format!("parsing image config {config_digest}"), e))?;
        if config.rootfs().diff_ids().len() != manifest.layers().len() {
            return Err(Error::Invalid(format!(
                "image {digest}: manifest has {} layers but config has {} diff_ids",
                manifest.layers().len(),
                config.rootfs().diff_ids().len()
            )));
        }
        Ok(Image {
            name: None,
            manifest_digest: digest,
            manifest_size: bytes.len() as u64,
            manifest_media_type: if real_mt.is_empty() {
                OCI_MANIFEST.to_string()
            } else {
                real_mt
            },
            manifest,
            config_digest,
            config,
        })
    }

    /// List all named images.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let idx = self.read_index()?;
        let mut out = Vec::new();
        for d in idx.manifests() {
            let Some(rn) = ref_name(d) else { continue };
            let (name, tag) = split_name(&rn).unwrap_or((rn.clone(), String::new()));
            match self.image_from_descriptor(d, None) {
                Ok(img) => {
                    let size = img.manifest_size
                        + img.manifest.config().size()
                        + img.manifest.layers().iter().map(|l| l.size()).sum::<u64>();
                    out.push(ImageSummary {
                        name,
                        tag,
                        id: img.config_digest.clone(),
                        digest: img.manifest_digest.clone(),
                        created: img.config.created().clone(),
                        size,
                    });
                }
                Err(e) => tracing::warn!("image {rn}: {e}"),
            }
        }
        out.sort_by(|a, b| (&a.name, &a.tag).cmp(&(&b.name, &b.tag)));
        Ok(out)
    }

    /// Write a layer from a producer of its uncompressed tar stream (gzip-compressed in the
    /// store). Returns digest, diff_id and size.
    pub fn write_layer(
        &self,
        produce: impl FnOnce(&mut dyn Write) -> Result<()>,
    ) -> Result<LayerInfo> {
        let _lock = self.lock(false)?;
        let bw = self.blob_writer()?;
        let gz = flate2::write::GzEncoder::new(bw, flate2::Compression::new(1));
        let mut tarw = HashWriter::new(gz);
        produce(&mut tarw)?;
        let (gz, diff_id, _) = tarw.finish();
        let bw = gz
            .finish()
            .map_err(|e| Error::io("finishing gzip layer", e))?;
        let (digest, size) = bw.commit(None)?;
        Ok(LayerInfo {
            digest,
            diff_id,
            size,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".to_string(),
        })
    }

    /// Write a new image on top of `base` (or from scratch): append `layers` (with one history
    /// entry each) and `empty_history` entries, use `config` as the runtime config, and return it.
    /// The image is not tagged; call [`Store::tag`].
    pub fn create_image(
        &self,
        base: Option<&Image>,
        runtime_config: Option<oci_spec::image::Config>,
        layers: &[(LayerInfo, History)],
        empty_history: &[History],
    ) -> Result<Image> {
        let _lock = self.lock(false)?;
        let mut layer_descs: Vec<Descriptor> = base
            .map(|b| b.manifest.layers().clone())
            .unwrap_or_default();
        let mut diff_ids: Vec<String> = base.map(|b| b.diff_ids()).unwrap_or_default();
        let mut cfg_json: Value = match base {
            Some(b) => {
                let raw = self.read_blob(&b.config_digest)?;
                serde_json::from_slice(&raw).map_err(|e| Error::json("parsing base config", e))?
            }
            None => {
                serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "history": []})
            }
        };
        let now = now_rfc3339();
        let mut hist: Vec<Value> = cfg_json
            .get("history")
            .and_then(|h| h.as_array())
            .cloned()
            .unwrap_or_default();
        for (l, h) in layers {
            layer_descs.push(make_descriptor(&l.media_type, &l.digest, l.size, None)?);
            diff_ids.push(l.diff_id.clone());
            hist.push(h.to_json(&now, false));
        }
        for h in empty_history {
            hist.push(h.to_json(&now, true));
        }
        if let Some(obj) = cfg_json.as_object_mut() {
            obj.insert("created".into(), Value::String(now.clone()));
            obj.insert(
                "rootfs".into(),
                serde_json::json!({"type": "layers", "diff_ids": diff_ids}),
            );
            obj.insert("history".into(), Value::Array(hist));
            if let Some(rc) = runtime_config {
                obj.insert(
                    "config".into(),
                    serde_json::to_value(rc).map_err(|e| Error::json("serializing config", e))?,
                );
            }
            // Docker-only fields describing the old container make no sense for the new image.
            obj.remove("container_config");
            obj.remove("container");
            obj.remove("id");
            obj.remove("parent");
        }
        let cfg_bytes =
            serde_json::to_vec(&cfg_json).map_err(|e| Error::json("serializing config", e))?;
        let config_digest = self.put_blob(&cfg_bytes)?;
        let manifest_json = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": cfg_bytes.len()},
            "layers": layer_descs.iter().map(|d| serde_json::json!({
                "mediaType": oci_layer_type(d.media_type().as_ref()),
                "digest": d.digest().to_string(),
                "size": d.size(),
            })).collect::<Vec<_>>(),
        });
        let mbytes = serde_json::to_vec(&manifest_json)
            .map_err(|e| Error::json("serializing manifest", e))?;
        let mdigest = self.put_blob(&mbytes)?;
        let d = make_descriptor(OCI_MANIFEST, &mdigest, mbytes.len() as u64, None)?;
        self.image_from_descriptor(&d, None)
    }

    /// Remove blobs not reachable from index.json and cached layers no image uses and no
    /// mounted bundle uses. Returns (blobs removed, cached layers removed).
    pub fn gc(&self) -> Result<(usize, usize)> {
        let _l = self.lock(true)?;
        let idx = self.read_index()?;
        let mut keep: HashSet<String> = HashSet::new();
        let mut keep_layers: HashSet<String> = HashSet::new();
        let mut stack: Vec<Descriptor> = idx.manifests().clone();
        while let Some(d) = stack.pop() {
            let dg = d.digest().to_string();
            if !keep.insert(dg.clone()) {
                continue;
            }
            let Ok(bytes) = self.read_blob(&dg) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            if let Some(ms) = v.get("manifests").and_then(|m| m.as_array()) {
                for m in ms {
                    if let Ok(d) = serde_json::from_value::<Descriptor>(m.clone()) {
                        stack.push(d);
                    }
                }
            }
            if let Some(c) = v
                .get("config")
                .and_then(|c| c.get("digest"))
                .and_then(|d| d.as_str())
            {
                keep.insert(c.to_string());
                if let Ok(cb) = self.read_blob(c) {
                    if let Ok(cv) = serde_json::from_slice::<Value>(&cb) {
                        if let Some(ids) = cv.pointer("/rootfs/diff_ids").and_then(|x| x.as_array())
                        {
                            let ids: Vec<String> = ids
                                .iter()
                                .filter_map(|x| x.as_str())
                                .map(str::to_string)
                                .collect();
                            for id in &ids {
                                keep_layers.insert(id.trim_start_matches("sha256:").to_string());
                            }
                            // Layers cached under their chain id (hardlinks into lower layers).
                            for c in digest::chain_ids(&ids) {
                                keep_layers.insert(format!(
                                    "{}{}",
                                    crate::layer::CHAIN_DIR_PREFIX,
                                    c.trim_start_matches("sha256:")
                                ));
                            }
                        }
                    }
                }
            }
            if let Some(ls) = v.get("layers").and_then(|l| l.as_array()) {
                for l in ls {
                    if let Some(d) = l.get("digest").and_then(|d| d.as_str()) {
                        keep.insert(d.to_string());
                    }
                }
            }
        }
        let mounted = mounted_lowerdirs();
        let mut removed = 0;
        let bdir = self.root.join("blobs/sha256");
        for e in fs::read_dir(&bdir).map_err(|e| Error::at("listing", &bdir, e))? {
            let e = e.map_err(|e| Error::at("listing", &bdir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            if !keep.contains(&format!("sha256:{name}")) {
                fs::remove_file(e.path()).map_err(|x| Error::at("removing", &e.path(), x))?;
                removed += 1;
            }
        }
        let mut lremoved = 0;
        let ldir = self.layer_cache();
        for e in fs::read_dir(&ldir).map_err(|e| Error::at("listing", &ldir, e))? {
            let e = e.map_err(|e| Error::at("listing", &ldir, e))?;
            let name = e.file_name().to_string_lossy().to_string();
            if name == "empty"
                || keep_layers.contains(&name)
                || mounted.iter().any(|m| m == &e.path())
            {
                continue;
            }
            crate::fsops::remove_tree(&e.path())
                .map_err(|x| Error::at("removing cached layer", &e.path(), x))?;
            lremoved += 1;
        }
        let tdir = self.tmp_dir();
        if let Ok(rd) = fs::read_dir(&tdir) {
            for e in rd.flatten() {
                let _ = crate::fsops::remove_tree(&e.path());
            }
        }
        Ok((removed, lremoved))
    }
}

/// A history entry for a new layer or config change.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// The command that made it (e.g. `RUN apt-get install x`).
    pub created_by: String,
    /// Free-form comment.
    pub comment: Option<String>,
    /// Author.
    pub author: Option<String>,
}

impl History {
    fn to_json(&self, now: &str, empty: bool) -> Value {
        let mut v = serde_json::json!({"created": now, "created_by": self.created_by});
        if let Some(c) = &self.comment {
            v["comment"] = Value::String(c.clone());
        }
        if let Some(a) = &self.author {
            v["author"] = Value::String(a.clone());
        }
        if empty {
            v["empty_layer"] = Value::Bool(true);
        }
        v
    }
}

/// Current time as RFC 3339 (what image configs use).
pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

fn oci_layer_type(mt: &str) -> String {
    match mt {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            "application/vnd.oci.image.layer.v1.tar+gzip".into()
        }
        "application/vnd.docker.image.rootfs.diff.tar" => {
            "application/vnd.oci.image.layer.v1.tar".into()
        }
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
            "application/vnd.oci.image.layer.v1.tar+zstd".into()
        }
        other => other.into(),
    }
}

/// Overlay lowerdirs of currently mounted overlays (so gc keeps them).
fn mounted_lowerdirs() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(s) = fs::read_to_string("/proc/self/mountinfo") {
        for line in s.lines() {
            if let Some(pos) = line.find("lowerdir=") {
                let rest = &line[pos + 9..];
                let end = rest.find(',').unwrap_or(rest.len());
                for p in rest[..end].split(':') {
                    out.push(PathBuf::from(p));
                }
            }
        }
    }
    out
}

/// Read the ref-name annotation of an index entry.
pub fn ref_name(d: &Descriptor) -> Option<String> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME).cloned())
}

/// Build a descriptor.
pub fn make_descriptor(
    media_type: &str,
    digest: &str,
    size: u64,
    name: Option<&str>,
) -> Result<Descriptor> {
    let dg = oci_spec::image::Digest::from_str(digest)
        .map_err(|e| Error::Invalid(format!("malformed digest {digest:?}: {e}")))?;
    let mut d = Descriptor::new(MediaType::from(media_type), size, dg);
    if let Some(n) = name {
        let mut a = std::collections::HashMap::new();
        a.insert(REF_NAME.to_string(), n.to_string());
        d.set_annotations(Some(a));
    }
    Ok(d)
}

/// Read an OCI layout's index.json.
pub fn read_index_file(layout: &Path) -> Result<ImageIndex> {
    let p = layout.join("index.json");
    let bytes = fs::read(&p).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            Error::Invalid(format!(
                "{} is missing: not an OCI image layout",
                p.display()
            ))
        } else {
            Error::at("reading", &p, e)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::json(format!("parsing {}", p.display()), e))
}

/// Choose the manifest of an index matching `platform` (`os/arch[/variant]`, default linux/amd64).
pub fn select_platform(idx: &ImageIndex, platform: Option<&str>) -> Result<Descriptor> {
    let want = platform.unwrap_or("linux/amd64");
    let mut parts = want.split('/');
    let os = parts.next().unwrap_or("linux");
    let arch = parts.next().unwrap_or("amd64");
    let variant = parts.next();
    for d in idx.manifests() {
        match d.platform() {
            Some(p) => {
                if p.os().to_string() == os
                    && p.architecture().to_string() == arch
                    && (variant.is_none() || p.variant().as_deref() == variant)
                {
                    return Ok(d.clone());
                }
            }
            None => {
                if idx.manifests().len() == 1 {
                    return Ok(d.clone());
                }
            }
        }
    }
    Err(Error::NotFound(format!(
        "no manifest for platform {want} in image index"
    )))
}

/// A blob reader that verifies digest (and size) when it reaches EOF.
pub struct VerifiedBlob {
    inner: io::BufReader<File>,
    hasher: sha2::Sha256,
    expected: String,
    size: Option<u64>,
    count: u64,
    done: bool,
}

/// Marker inside io errors for digest mismatches.
const DIGEST_MARK: &str = "skiff-image: digest mismatch";

impl Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        self.count += n as u64;
        if n == 0 && !buf.is_empty() && !self.done {
            self.done = true;
            let got = digest::finish(std::mem::take(&mut self.hasher));
            if got != self.expected {
                return Err(io::Error::other(format!(
                    "{DIGEST_MARK}|{}|{got}",
                    self.expected
                )));
            }
            if let Some(s) = self.size {
                if s != self.count {
                    return Err(io::Error::other(format!(
                        "{DIGEST_MARK}|{} (size {s})|size {}",
                        self.expected, self.count
                    )));
                }
            }
        }
        Ok(n)
    }
}

impl VerifiedBlob {
    /// Read to EOF so the digest check runs even if the consumer stopped early.
    pub fn finish(mut self) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        while self.read(&mut buf)? > 0 {}
        Ok(())
    }
}

/// Turn an io error from a [`VerifiedBlob`] into a [`Error::Digest`] when it is one.
pub fn blob_read_error(digest: &str, e: io::Error) -> Error {
    let s = e.to_string();
    if let Some(rest) = s.strip_prefix(DIGEST_MARK) {
        let mut it = rest.trim_start_matches('|').splitn(2, '|');
        let expected = it.next().unwrap_or_default().to_string();
        let actual = it.next().unwrap_or_default().to_string();
        return Error::Digest {
            what: format!("blob {digest}"),
            expected,
            actual,
        };
    }
    Error::io(format!("reading blob {digest}"), e)
}

/// Find a digest-mismatch marker anywhere in an io error chain (used after decompression).
pub fn is_digest_error(e: &io::Error) -> bool {
    e.to_string().contains(DIGEST_MARK)
}

/// Writer for a new blob; [`BlobWriter::commit`] hashes-and-renames it into place.
pub struct BlobWriter {
    inner: HashWriter<io::BufWriter<tempfile::NamedTempFile>>,
    root: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter {
    /// Finish the blob; if `expect` is given the digest must match. Returns (digest, size).
    pub fn commit(self, expect: Option<&str>) -> Result<(String, u64)> {
        let (bw, d, n) = self.inner.finish();
        let t = bw
            .into_inner()
            .map_err(|e| Error::io("flushing blob", e.into_error()))?;
        if let Some(x) = expect {
            if x != d {
                return Err(Error::Digest {
                    what: "blob".into(),
                    expected: x.to_string(),
                    actual: d,
                });
            }
        }
        let dest = self.root.join("blobs/sha256").join(digest::hex_part(&d)?);
        if !dest.exists() {
            t.persist(&dest)
                .map_err(|e| Error::at("renaming blob into", &dest, e.error))?;
        }
        Ok((d, n))
    }
}

/// Names of images (`NAME:TAG`) in an OCI layout's index.
pub fn layout_names(idx: &ImageIndex) -> BTreeMap<String, Descriptor> {
    idx.manifests()
        .iter()
        .filter_map(|d| ref_name(d).map(|n| (n, d.clone())))
        .collect()
}

/// Check a file exists (for clearer errors).
pub fn require_file(p: &Path) -> Result<()> {
    if p.exists() {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{} does not exist", p.display())))
    }
}

/// Read the whole of a small file with a context message.
pub fn read_small(p: &Path) -> Result<Vec<u8>> {
    fs::read(p).ctx(|| format!("reading {}", p.display()))
}

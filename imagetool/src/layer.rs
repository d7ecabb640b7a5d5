//! Reading layer blobs (verified, decompressed, size-limited, diff_id-checked) into a directory,
//! and the overlay-mode layer cache.

use crate::apply::{self, ApplyFormat};
use crate::digest::{self, TOO_LARGE_MARK};
use crate::error::{Error, Result};
use crate::layer_stream::LayerStream;
use crate::lower_link;
use crate::store::{self, Store};
use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Default limit on one layer's uncompressed size (decompression-bomb guard); override with
/// `SKIFF_IMAGE_MAX_LAYER_SIZE` (bytes) or the API.
pub const DEFAULT_MAX_LAYER_SIZE: u64 = 64 << 30;

/// The configured per-layer uncompressed size limit.
pub fn max_layer_size() -> u64 {
    std::env::var("SKIFF_IMAGE_MAX_LAYER_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MAX_LAYER_SIZE)
}

/// Compression of a layer stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

/// Sniff the compression from the first bytes (media types lie surprisingly often).
pub fn sniff<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    let b = r.fill_buf()?;
    Ok(if b.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    })
}

/// Wrap a buffered stream in the right decompressor.
pub fn decompress<'a, R: BufRead + 'a>(mut r: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match sniff(&mut r)? {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    })
}

/// Turn errors raised inside the stream chain into precise errors.
fn classify(e: Error, what: &str, limit: u64) -> Error {
    let s = e.to_string();
    if s.contains(TOO_LARGE_MARK) {
        return Error::TooLarge {
            what: what.to_string(),
            limit,
        };
    }
    if s.contains("skiff-image: digest mismatch|") {
        let rest = s
            .split("skiff-image: digest mismatch|")
            .nth(1)
            .unwrap_or_default();
        let mut it = rest.splitn(2, '|');
        return Error::Digest {
            what: what.to_string(),
            expected: it.next().unwrap_or_default().to_string(),
            actual: it.next().unwrap_or_default().to_string(),
        };
    }
    match e {
        Error::Io { context, err } => Error::Io {
            context: format!("{what}: {context}"),
            err,
        },
        other => other,
    }
}

/// Apply the layer blob `digest` (whose uncompressed stream must hash to `diff_id`) to `target`.
///
/// Decompression and hashing run in a producer thread ([`LayerStream`]) while this thread
/// extracts, so on two cores inflate and file creation overlap.
pub fn apply_blob(
    store: &Store,
    digest: &str,
    size: u64,
    diff_id: &str,
    target: &Path,
    format: ApplyFormat,
    limit: u64,
) -> Result<()> {
    let stream = LayerStream::open(store, digest, size, diff_id, limit)?;
    apply_stream(stream, target, format, limit)
}

/// Apply an already started [`LayerStream`] to `target` (lets callers start decompressing the
/// next layer while the previous one is still being extracted).
pub fn apply_stream(
    stream: LayerStream,
    target: &Path,
    format: ApplyFormat,
    limit: u64,
) -> Result<()> {
    apply_stream_with(stream, target, format, limit, None).map(|_| ())
}

fn apply_stream_with(
    stream: LayerStream,
    target: &Path,
    format: ApplyFormat,
    limit: u64,
    lowers: Option<&[PathBuf]>,
) -> Result<apply::ApplyStats> {
    let what = stream.what().to_string();
    let mut stats = apply::ApplyStats::default();
    let consumed = match stream.reader() {
        Some(r) => match lowers {
            Some(l) => apply::apply_layer_over(target, r, l),
            None => apply::apply_layer(target, r, format),
        }
        .map(|s| stats = s),
        None => Err(Error::Invalid(format!("{what}: stream already consumed"))),
    };
    stream
        .finish(consumed)
        .map_err(|e| classify(e, &what, limit))?;
    Ok(stats)
}

/// Path of the cached overlay layer for a diff_id.
pub fn cache_path(store: &Store, diff_id: &str) -> Result<PathBuf> {
    Ok(store.layer_cache().join(digest::hex_part(diff_id)?))
}

/// Prefix of cache dirs keyed by chain id: layers holding copies of hardlink targets from the
/// layers below them depend on that stack, not only on their own diff_id.
pub const CHAIN_DIR_PREFIX: &str = "chain-";

/// Path of the cached overlay layer keyed by its chain id.
pub fn chain_cache_path(store: &Store, chain_id: &str) -> Result<PathBuf> {
    Ok(store
        .layer_cache()
        .join(format!("{CHAIN_DIR_PREFIX}{}", digest::hex_part(chain_id)?)))
}

/// The cache dir of every layer of `image` (bottom first) that is already cached.
pub fn cached_dirs(store: &Store, image: &store::Image) -> Result<Vec<Option<PathBuf>>> {
    let diff_ids = image.diff_ids();
    let chains = digest::chain_ids(&diff_ids);
    let mut out = Vec::with_capacity(diff_ids.len());
    for (d, c) in diff_ids.iter().zip(&chains) {
        let cp = chain_cache_path(store, c)?;
        let dp = cache_path(store, d)?;
        out.push(if cp.exists() {
            Some(cp)
        } else if dp.exists() {
            Some(dp)
        } else {
            None
        });
    }
    Ok(out)
}

/// How many layers overlay mode extracts at once: `SKIFF_IMAGE_UNPACK_JOBS`, else twice the
/// CPUs (each layer also has its decompression thread; more layers in flight keep both busy
/// when one layer has far more files than the others), at most 4 (memory: each holds its
/// decompressed layer).
pub fn extract_jobs() -> usize {
    std::env::var("SKIFF_IMAGE_UNPACK_JOBS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(2)
        })
        .clamp(1, 4)
}

/// Make sure every layer of `image` is in the overlay cache, extracting missing ones in
/// parallel ([`extract_jobs`] workers, largest first). Layers with hardlinks into lower layers are then
/// extracted again in order, bottom first, with their lower layers at hand (see
/// [`crate::lower_link`]). Returns the cache dirs bottom first.
pub fn ensure_cached(
    store: &Store,
    image: &store::Image,
    limit: u64,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Vec<PathBuf>> {
    let layers = image.layers();
    let diff_ids = image.diff_ids();
    let chains = digest::chain_ids(&diff_ids);
    let mut dirs = cached_dirs(store, image)?;
    let mut todo = Vec::new();
    for (i, (d, _mt, size)) in layers.iter().enumerate() {
        if dirs[i].is_none() {
            todo.push((d.clone(), *size, diff_ids[i].clone()));
        }
    }
    // Deduplicate (the same layer may appear twice).
    todo.sort_by(|a, b| a.2.cmp(&b.2));
    todo.dedup_by(|a, b| a.2 == b.2);
    // Workers pop from the end: biggest layers first balances the two workers best.
    todo.sort_by_key(|t| t.1);
    if let Some(pb) = progress {
        pb.set_length(todo.iter().map(|t| t.1).sum());
    }
    let queue = Mutex::new(todo);
    let first_err: Mutex<Option<Error>> = Mutex::new(None);
    let workers = extract_jobs();
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let job = match queue.lock() {
                    Ok(mut q) => q.pop(),
                    Err(_) => None,
                };
                let Some((d, size, diff_id)) = job else {
                    break;
                };
                if first_err.lock().map(|e| e.is_some()).unwrap_or(true) {
                    break;
                }
                match extract_to_cache(store, &d, size, &diff_id, &diff_id, limit, None) {
                    Ok(_) => {}
                    // Needs its lower layers: done below, once they are all cached.
                    Err(e) if lower_link::needs_lower_layers(&e) => continue,
                    Err(e) => {
                        if let Ok(mut fe) = first_err.lock() {
                            fe.get_or_insert(e);
                        }
                        break;
                    }
                }
                if let Some(pb) = progress {
                    pb.inc(size);
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut out = Vec::with_capacity(dirs.len());
    for i in 0..dirs.len() {
        let dir = match dirs[i].take() {
            Some(p) => p,
            None => {
                let again = cached_dirs(store, image)?;
                match again.into_iter().nth(i).flatten() {
                    Some(p) => p,
                    None => {
                        let (d, _mt, size) = &layers[i];
                        let p = extract_to_cache(
                            store,
                            d,
                            *size,
                            &diff_ids[i],
                            &chains[i],
                            limit,
                            Some(&out),
                        )?;
                        if let Some(pb) = progress {
                            pb.inc(*size);
                        }
                        p
                    }
                }
            }
        };
        out.push(dir);
    }
    Ok(out)
}

/// Extract one layer into the cache (temp dir + rename). With `lowers`, hardlinks into them are
/// resolved by copy-up and such a layer is cached under its chain id. Returns its cache dir.
fn extract_to_cache(
    store: &Store,
    digest: &str,
    size: u64,
    diff_id: &str,
    chain_id: &str,
    limit: u64,
    lowers: Option<&[PathBuf]>,
) -> Result<PathBuf> {
    let tmp = tempfile::Builder::new()
        .prefix(".extract-")
        .tempdir_in(store.layer_cache())
        .map_err(|e| Error::at("creating temp dir in", &store.layer_cache(), e))?;
    let tmp_path = tmp.keep();
    // The layer dir itself is the overlay lowerdir root: make it world-traversable.
    std::fs::set_permissions(
        &tmp_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| Error::at("chmod", &tmp_path, e))?;
    let r = LayerStream::open(store, digest, size, diff_id, limit)
        .and_then(|st| apply_stream_with(st, &tmp_path, ApplyFormat::Overlay, limit, lowers));
    let stats = match r {
        Ok(s) => s,
        Err(e) => {
            let _ = crate::fsops::remove_tree(&tmp_path);
            return Err(e);
        }
    };
    let dest = if stats.copied_up > 0 {
        chain_cache_path(store, chain_id)?
    } else {
        cache_path(store, diff_id)?
    };
    match std::fs::rename(&tmp_path, &dest) {
        Ok(()) => Ok(dest),
        Err(_) if dest.exists() => {
            // Someone else cached it concurrently.
            let _ = crate::fsops::remove_tree(&tmp_path);
            Ok(dest)
        }
        Err(e) => {
            let _ = crate::fsops::remove_tree(&tmp_path);
            Err(Error::at("renaming cached layer into", &dest, e))
        }
    }
}

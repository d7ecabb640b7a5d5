//! SHA-256 digests and readers/writers that hash (and verify) what flows through them.

use crate::error::{Error, Result};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read, Write};

/// Format a finished hasher as `sha256:<hex>`.
pub fn finish(h: Sha256) -> String {
    format!("sha256:{}", hex::encode(h.finalize()))
}

/// Digest of a byte slice as `sha256:<hex>`.
pub fn of_bytes(b: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(b);
    finish(h)
}

/// OCI chain ids of a layer stack (bottom first): the first is its diff_id, each next one
/// `sha256(<previous chain id> + " " + <diff_id>)`. Names a layer together with all below it.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => of_bytes(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Validate `sha256:<64 lowercase hex>` and return the hex part (safe to use as a file name).
pub fn hex_part(digest: &str) -> Result<&str> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| Error::Invalid(format!("unsupported digest {digest:?} (only sha256)")))?;
    if hex.len() != 64
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(Error::Invalid(format!("malformed digest {digest:?}")));
    }
    Ok(hex)
}

/// A reader that hashes everything read, counts bytes and fails past a size limit.
pub struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
    what: String,
}

impl<R: Read> HashReader<R> {
    /// Wrap `inner`; reading more than `limit` bytes fails (decompression-bomb guard).
    pub fn new(inner: R, limit: u64, what: impl Into<String>) -> Self {
        HashReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
            what: what.into(),
        }
    }
    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }
    /// Read the rest of the stream (so the digest covers everything) and return (digest, size).
    pub fn drain(mut self) -> io::Result<(String, u64)> {
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = self.read(&mut buf)?;
            if n == 0 {
                break;
            }
        }
        Ok((finish(self.hasher), self.count))
    }
}

/// io error kind used to signal the size limit so callers can map it to [`Error::TooLarge`].
pub const TOO_LARGE_MARK: &str = "skiff-image: uncompressed size limit exceeded";

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::other(format!("{TOO_LARGE_MARK}: {}", self.what)));
        }
        Ok(n)
    }
}

/// A writer that hashes and counts everything written.
pub struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> HashWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        HashWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// Finish: (inner writer, digest, size).
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, finish(self.hasher), self.count)
    }
    /// Mutable access to the inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Convert an io error from a [`HashReader`] chain into TooLarge if it was the limit.
pub fn map_limit_error(
    e: io::Error,
    what: &str,
    limit: u64,
    context: impl FnOnce() -> String,
) -> Error {
    if e.to_string().contains(TOO_LARGE_MARK) {
        Error::TooLarge {
            what: what.to_string(),
            limit,
        }
    } else {
        Error::io(context(), e)
    }
}

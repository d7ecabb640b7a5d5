//! A layer blob turned into its uncompressed tar stream by a producer thread, so decompression
//! and hashing overlap with extraction (the tar applier consumes chunks as they are produced).
//!
//! The producer verifies the blob digest, decompresses (ordinary single-member gzip in one call
//! with libdeflate, everything else streaming through zlib-ng or zstd), enforces the per-layer
//! size limit and hashes the uncompressed bytes; the caller checks that hash against the diff_id.

use crate::digest;
use crate::error::{Error, Result};
use crate::layer::{self, Compression};
use crate::store::{self, VerifiedBlob};
use sha2::{Digest as _, Sha256};
use std::io::{self, BufReader, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes handed to the consumer per message.
const CHUNK: usize = 1 << 20;
/// Messages buffered between producer and consumer (streaming mode allocates one chunk each).
const QUEUE: usize = 8;
/// Largest compressed blob read whole into memory (bigger ones stream from the file).
const WHOLE_MAX_IN: u64 = 256 << 20;
/// Largest uncompressed layer (as its gzip trailer claims) inflated in one call.
const WHOLE_MAX_OUT: u64 = 512 << 20;

/// Message of the producer's error when the consumer failed first (never shown to users).
const ABORTED: &str = "layer extraction aborted";

fn aborted() -> Error {
    Error::Invalid(ABORTED.to_string())
}

fn is_aborted(e: &Error) -> bool {
    matches!(e, Error::Invalid(m) if m == ABORTED)
}

/// Memory all producers of this process may hold in whole-layer buffers at once; past it a
/// layer streams instead (same result, a little slower).
const WHOLE_BUDGET: u64 = 1 << 30;
static WHOLE_IN_USE: AtomicU64 = AtomicU64::new(0);

/// A share of [`WHOLE_BUDGET`], given back on drop.
struct Reservation(u64);

impl Reservation {
    fn take(n: u64) -> Option<Reservation> {
        WHOLE_IN_USE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|t| *t <= WHOLE_BUDGET)
            })
            .ok()
            .map(|_| Reservation(n))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        WHOLE_IN_USE.fetch_sub(self.0, Ordering::AcqRel);
    }
}

enum Msg {
    Data(Arc<Vec<u8>>, usize, usize),
    End,
}

/// A running producer for one layer; read it with [`LayerStream::reader`], then [`LayerStream::finish`].
pub struct LayerStream {
    rx: Option<Receiver<Msg>>,
    handle: Option<JoinHandle<Result<String>>>,
    abort: Arc<AtomicBool>,
    what: String,
    diff_id: String,
}

/// The consumer side of a [`LayerStream`]: the uncompressed tar bytes.
pub struct StreamReader<'a> {
    rx: &'a Receiver<Msg>,
    cur: Option<(Arc<Vec<u8>>, usize, usize)>,
    ended: bool,
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((data, pos, end)) = &mut self.cur {
                if *pos < *end {
                    let n = buf.len().min(*end - *pos);
                    buf[..n].copy_from_slice(&data[*pos..*pos + n]);
                    *pos += n;
                    return Ok(n);
                }
                self.cur = None;
            }
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d, s, e)) => self.cur = Some((d, s, e)),
                Ok(Msg::End) => self.ended = true,
                Err(_) => {
                    return Err(io::Error::other(
                        "the layer's decompression stopped before the end of the stream",
                    ))
                }
            }
        }
    }
}

impl LayerStream {
    /// Start verifying and decompressing the blob `digest` (manifest size `size`) whose
    /// uncompressed stream must hash to `diff_id` and stay within `limit` bytes.
    pub fn open(
        store: &store::Store,
        digest: &str,
        size: u64,
        diff_id: &str,
        limit: u64,
    ) -> Result<Self> {
        let blob = store.open_blob(digest, Some(size))?;
        let (tx, rx) = sync_channel(QUEUE);
        let abort = Arc::new(AtomicBool::new(false));
        let what = format!("layer {digest}");
        let p = Producer {
            tx,
            abort: abort.clone(),
            what: what.clone(),
            digest: digest.to_string(),
            limit,
            hasher: Sha256::new(),
            count: 0,
            receiver_gone: false,
        };
        let handle = std::thread::Builder::new()
            .name("layer-inflate".into())
            .spawn(move || p.run(blob, size))
            .map_err(|e| Error::io("starting the layer decompression thread", e))?;
        Ok(LayerStream {
            rx: Some(rx),
            handle: Some(handle),
            abort,
            what,
            diff_id: diff_id.to_string(),
        })
    }

    /// What this stream is (for messages): `layer <digest>`.
    pub fn what(&self) -> &str {
        &self.what
    }

    /// The uncompressed tar stream.
    pub fn reader(&self) -> Option<StreamReader<'_>> {
        self.rx.as_ref().map(|rx| StreamReader {
            rx,
            cur: None,
            ended: false,
        })
    }

    /// Wait for the producer and combine its outcome with the consumer's: a failed blob digest,
    /// decompression, size limit or diff_id wins over whatever the consumer saw.
    pub fn finish(mut self, consumed: Result<()>) -> Result<()> {
        if consumed.is_err() {
            self.abort.store(true, Ordering::Relaxed);
        }
        // Dropping the receiver unblocks a producer waiting on a full queue.
        self.rx = None;
        let produced = match self.handle.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(Error::Invalid(format!(
                "{}: decompression thread panicked",
                self.what
            ))),
            None => Err(Error::Invalid(format!("{}: no decompression", self.what))),
        };
        match (produced, consumed) {
            (Err(p), Err(c)) if is_aborted(&p) => Err(c),
            (Err(p), _) => Err(p),
            (Ok(_), Err(c)) => Err(c),
            (Ok(got), Ok(())) => {
                if got != self.diff_id {
                    return Err(Error::Digest {
                        what: format!("diff_id of {}", self.what),
                        expected: self.diff_id.clone(),
                        actual: got,
                    });
                }
                Ok(())
            }
        }
    }
}

impl Drop for LayerStream {
    fn drop(&mut self) {
        self.abort.store(true, Ordering::Relaxed);
        self.rx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Producer {
    tx: SyncSender<Msg>,
    abort: Arc<AtomicBool>,
    what: String,
    digest: String,
    limit: u64,
    hasher: Sha256,
    count: u64,
    receiver_gone: bool,
}

impl Producer {
    fn run(mut self, mut blob: VerifiedBlob, size: u64) -> Result<String> {
        let in_share = if size <= WHOLE_MAX_IN {
            Reservation::take(size)
        } else {
            None
        };
        if let Some(_in_share) = in_share {
            // Whole blob in memory: its digest is verified before anything is decompressed.
            let mut data = big_buffer(size as usize + 1).unwrap_or_default();
            (&mut blob)
                .take(size + 1)
                .read_to_end(&mut data)
                .map_err(|e| store::blob_read_error(&self.digest, e))?;
            if data.len() as u64 > size {
                // Longer than its descriptor: let the verifier report the size mismatch.
                blob.finish()
                    .map_err(|e| store::blob_read_error(&self.digest, e))?;
                return Err(Error::Invalid(format!(
                    "blob {} is larger than its descriptor's {size} bytes",
                    self.digest
                )));
            }
            let data = Arc::new(data);
            let comp = layer::sniff(&mut &data[..]).map_err(|e| self.io("reading layer", e))?;
            match comp {
                Compression::None => {
                    let n = data.len();
                    self.emit(&data, 0, n)?;
                }
                Compression::Gzip => match self.inflate_whole(&data) {
                    Some((out, _out_share)) => {
                        let out = Arc::new(out);
                        let n = out.len();
                        self.emit(&out, 0, n)?;
                    }
                    None => {
                        let r = layer::decompress(io::Cursor::new(&data[..]))
                            .map_err(|e| self.io("reading layer header", e))?;
                        self.stream(r)?;
                    }
                },
                Compression::Zstd => {
                    let r = layer::decompress(io::Cursor::new(&data[..]))
                        .map_err(|e| self.io("reading layer header", e))?;
                    self.stream(r)?;
                }
            }
        } else {
            let br = BufReader::with_capacity(256 * 1024, &mut blob);
            let r = layer::decompress(br).map_err(|e| self.io("reading layer header", e))?;
            self.stream(r)?;
            blob.finish()
                .map_err(|e| store::blob_read_error(&self.digest, e))?;
        }
        if !self.receiver_gone {
            let _ = self.tx.send(Msg::End);
        }
        Ok(digest::finish(std::mem::take(&mut self.hasher)))
    }

    fn io(&self, ctx: &str, e: io::Error) -> Error {
        if store::is_digest_error(&e) {
            return store::blob_read_error(&self.digest, e);
        }
        // The caller prefixes the layer (see `layer::apply_stream`).
        Error::io(ctx.to_string(), e)
    }

    /// Inflate a single-member gzip in one libdeflate call. `None` (use the streaming decoder)
    /// when the trailer's size is implausible, the data has more than one member or trailing
    /// bytes, or libdeflate rejects it (the streaming decoder then reports the precise error).
    fn inflate_whole(&self, data: &[u8]) -> Option<(Vec<u8>, Reservation)> {
        if data.len() < 18 {
            return None;
        }
        let t = &data[data.len() - 4..];
        // Untrusted: only a size hint, bounded here and checked by libdeflate against the output.
        let isize = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as u64;
        if isize > self.limit || isize > WHOLE_MAX_OUT {
            return None;
        }
        let share = Reservation::take(isize)?;
        gzip_whole::inflate(data, isize as usize).map(|out| (out, share))
    }

    /// Hash, count and hand over `data[start..end]` in chunks.
    fn emit(&mut self, data: &Arc<Vec<u8>>, start: usize, end: usize) -> Result<()> {
        let mut pos = start;
        while pos < end {
            if self.abort.load(Ordering::Relaxed) {
                return Err(aborted());
            }
            let e = end.min(pos + CHUNK);
            self.account(&data[pos..e])?;
            if !self.receiver_gone && self.tx.send(Msg::Data(Arc::clone(data), pos, e)).is_err() {
                self.gone()?;
            }
            pos = e;
        }
        Ok(())
    }

    fn account(&mut self, b: &[u8]) -> Result<()> {
        self.hasher.update(b);
        self.count += b.len() as u64;
        if self.count > self.limit {
            return Err(Error::TooLarge {
                what: self.what.clone(),
                limit: self.limit,
            });
        }
        Ok(())
    }

    /// The consumer hung up: stop if it failed, else keep hashing the rest (the diff_id covers
    /// everything, including what follows the tar end marker).
    fn gone(&mut self) -> Result<()> {
        self.receiver_gone = true;
        if self.abort.load(Ordering::Relaxed) {
            return Err(aborted());
        }
        Ok(())
    }

    fn stream<R: Read>(&mut self, mut r: R) -> Result<()> {
        loop {
            if self.abort.load(Ordering::Relaxed) {
                return Err(aborted());
            }
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            while n < CHUNK {
                match r.read(&mut buf[n..]) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(self.io("reading layer", e)),
                }
            }
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            let buf = Arc::new(buf);
            self.emit(&buf, 0, n)?;
        }
    }
}

/// An empty buffer with room for `cap` bytes (`None` if that much memory is not available).
/// Not backed by transparent huge pages on purpose: on this VM, fresh 2 MiB pages made the
/// kernel's page clearing cost more CPU than inflating (host-side faults on untouched memory).
fn big_buffer(cap: usize) -> Option<Vec<u8>> {
    let mut v: Vec<u8> = Vec::new();
    v.try_reserve_exact(cap).ok()?;
    Some(v)
}

/// One-call gzip inflate through libdeflate.
mod gzip_whole {
    use libdeflate_sys::{
        libdeflate_alloc_decompressor, libdeflate_free_decompressor, libdeflate_gzip_decompress_ex,
        libdeflate_result_LIBDEFLATE_SUCCESS,
    };

    /// Inflate `data`, which must be exactly one gzip member whose output is at most `cap`
    /// bytes; `None` otherwise. libdeflate checks the member's CRC-32 and ISIZE itself.
    pub(super) fn inflate(data: &[u8], cap: usize) -> Option<Vec<u8>> {
        let mut out = super::big_buffer(cap.max(1))?;
        // SAFETY: plain allocation; freed below on every path.
        let d = unsafe { libdeflate_alloc_decompressor() };
        if d.is_null() {
            return None;
        }
        let mut in_n = 0usize;
        let mut out_n = 0usize;
        // SAFETY: `data` is valid for its length; `out` has `cap` bytes of spare capacity that
        // libdeflate may write to (never more); the counters are valid out pointers.
        let rc = unsafe {
            libdeflate_gzip_decompress_ex(
                d,
                data.as_ptr().cast(),
                data.len(),
                out.as_mut_ptr().cast(),
                cap,
                &mut in_n,
                &mut out_n,
            )
        };
        // SAFETY: allocated above, not used after this.
        unsafe { libdeflate_free_decompressor(d) };
        if rc != libdeflate_result_LIBDEFLATE_SUCCESS || in_n != data.len() || out_n > cap {
            return None;
        }
        // SAFETY: libdeflate initialised the first `out_n` (<= cap <= capacity) bytes.
        unsafe { out.set_len(out_n) };
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        use std::io::Write;

        fn gz(data: &[u8]) -> Vec<u8> {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("write");
            e.finish().expect("finish")
        }

        #[test]
        fn single_member_roundtrip() {
            let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            let g = gz(&data);
            assert_eq!(super::inflate(&g, data.len()).as_deref(), Some(&data[..]));
            // Too small an output buffer (a lying trailer) is refused, not overrun.
            assert!(super::inflate(&g, data.len() - 1).is_none());
        }

        #[test]
        fn multi_member_and_trailing_bytes_fall_back() {
            let mut g = gz(b"hello ");
            g.extend_from_slice(&gz(b"world"));
            assert!(super::inflate(&g, 1 << 20).is_none());
            let mut g = gz(b"hello");
            g.extend_from_slice(&[0, 0, 0, 0]);
            assert!(super::inflate(&g, 1 << 20).is_none());
            let mut g = gz(b"hello");
            let n = g.len();
            g[n - 9] ^= 0xff;
            assert!(super::inflate(&g, 1 << 20).is_none());
        }
    }
}

//! A layer blob turned into its uncompressed tar stream by a producer thread, so decompression
//! and hashing overlap with extraction (the tar applier consumes chunks as they are produced).
//!
//! The producer verifies the blob digest, decompresses (gzip through zlib-ng, zstd), enforces the
//! per-layer size limit and hashes the uncompressed bytes; the caller checks that hash against the
//! diff_id. Everything streams through a few recycled chunk buffers: memory stays small and the
//! same pages are reused, which matters on VMs where every freshly touched page costs a host-side
//! fault (inflating whole layers into memory made unpacking spend more CPU clearing pages than
//! inflating them).

use crate::digest;
use crate::error::{Error, Result};
use crate::layer;
use crate::store::{self, VerifiedBlob};
use sha2::{Digest as _, Sha256};
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Bytes handed to the consumer per message.
const CHUNK: usize = 256 * 1024;
/// Messages buffered between producer and consumer.
const QUEUE: usize = 16;

/// Message of the producer's error when the consumer failed first (never shown to users).
const ABORTED: &str = "layer extraction aborted";

fn aborted() -> Error {
    Error::Invalid(ABORTED.to_string())
}

fn is_aborted(e: &Error) -> bool {
    matches!(e, Error::Invalid(m) if m == ABORTED)
}

enum Msg {
    /// A full (or the last, shorter) chunk of the uncompressed stream.
    Data(Vec<u8>),
    End,
}

/// A running producer for one layer; read it with [`LayerStream::reader`], then [`LayerStream::finish`].
pub struct LayerStream {
    rx: Option<Receiver<Msg>>,
    /// Consumed chunks go back to the producer for reuse.
    recycle: Sender<Vec<u8>>,
    handle: Option<JoinHandle<Result<String>>>,
    abort: Arc<AtomicBool>,
    what: String,
    diff_id: String,
}

/// The consumer side of a [`LayerStream`]: the uncompressed tar bytes.
pub struct StreamReader<'a> {
    rx: &'a Receiver<Msg>,
    recycle: &'a Sender<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.cur.len() {
                let n = buf.len().min(self.cur.len() - self.pos);
                buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(d)) => {
                    let done = std::mem::replace(&mut self.cur, d);
                    self.pos = 0;
                    if done.capacity() > 0 {
                        // The producer may have finished already: then the buffer just drops.
                        let _ = self.recycle.send(done);
                    }
                }
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
        let (recycle, recycled) = channel();
        let abort = Arc::new(AtomicBool::new(false));
        let what = format!("layer {digest}");
        let p = Producer {
            tx,
            recycled,
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
            .spawn(move || p.run(blob))
            .map_err(|e| Error::io("starting the layer decompression thread", e))?;
        Ok(LayerStream {
            rx: Some(rx),
            recycle,
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
            recycle: &self.recycle,
            cur: Vec::new(),
            pos: 0,
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
    recycled: Receiver<Vec<u8>>,
    abort: Arc<AtomicBool>,
    what: String,
    digest: String,
    limit: u64,
    hasher: Sha256,
    count: u64,
    receiver_gone: bool,
}

impl Producer {
    fn run(mut self, mut blob: VerifiedBlob) -> Result<String> {
        let r = layer::decompress(io::BufReader::with_capacity(256 * 1024, &mut blob))
            .map_err(|e| self.io("reading layer header", e))?;
        self.stream(r)?;
        // The decoder may stop before the blob's end (trailing bytes): the digest covers all.
        blob.finish()
            .map_err(|e| store::blob_read_error(&self.digest, e))?;
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

    /// A chunk buffer of CHUNK bytes: `spare` (kept after the consumer left), else one the
    /// consumer gave back, else a new one.
    fn buffer(&self, spare: Option<Vec<u8>>) -> Vec<u8> {
        match spare.or_else(|| self.recycled.try_recv().ok()) {
            Some(mut b) if b.capacity() >= CHUNK => {
                b.resize(CHUNK, 0);
                b
            }
            _ => vec![0u8; CHUNK],
        }
    }

    fn stream<R: Read>(&mut self, mut r: R) -> Result<()> {
        // Once the consumer is gone, one buffer is enough to hash the rest.
        let mut spare: Option<Vec<u8>> = None;
        loop {
            if self.abort.load(Ordering::Relaxed) {
                return Err(aborted());
            }
            let mut buf = self.buffer(spare.take());
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
            self.account(&buf)?;
            if self.receiver_gone {
                spare = Some(buf);
                continue;
            }
            if let Err(e) = self.tx.send(Msg::Data(buf)) {
                if let Msg::Data(b) = e.0 {
                    spare = Some(b);
                }
                self.gone()?;
            }
        }
    }
}

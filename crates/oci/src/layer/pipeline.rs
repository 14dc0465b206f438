//! The stages behind [`super::LayerWriter`]: the writing thread only builds the tar stream and
//! cuts it into 1 MiB chunks; hashing, compression and the blob file run on other threads.
//!
//! ```text
//! tar bytes ─► 1 MiB chunks ─┬─► hash thread: sha256 (diffID), length, CRC-32
//!                            └─► deflate jobs (gzip, one thread per chunk, bounded) ─► sink
//!                                sink thread: joins jobs in order (or runs zstd / copies),
//!                                writes the BlobWriter (sha256 of the blob, file writes)
//! ```
//!
//! Every channel is bounded, so memory stays a few MiB per compression thread whatever the
//! layer size. The gzip bytes depend only on the chunk contents and the level (see
//! [`deflate_chunk`]), never on the thread count or on scheduling.

use crate::blobstore::BlobWriter;
use crate::digest::{Digest, Hasher};
use std::io::{self, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Size of the independently compressed gzip chunks. Fixed: it decides the output bytes.
pub(super) const GZ_CHUNK: usize = 1 << 20;

/// Chunks queued for the hash thread (each 1 MiB).
const HASH_QUEUE: usize = 4;

/// Buffers kept for reuse. A fresh 1 MiB allocation per chunk is page faults and zeroing
/// for every MiB of the layer (glibc returns big freed blocks to the kernel); recycling them
/// keeps a layer's working set at a few MiB.
#[derive(Clone, Default)]
struct Pool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// Buffers the pool keeps at most (about 1 MiB each).
const POOL_MAX: usize = 16;

impl Pool {
    /// An empty buffer with room for at least `cap` bytes.
    fn get(&self, cap: usize) -> Vec<u8> {
        let reused = self.0.lock().ok().and_then(|mut v| v.pop());
        let mut buf = reused.unwrap_or_default();
        buf.clear();
        buf.reserve(cap);
        buf
    }

    fn put(&self, buf: Vec<u8>) {
        if let Ok(mut v) = self.0.lock() {
            if v.len() < POOL_MAX {
                v.push(buf);
            }
        }
    }

    /// Returns the buffer behind `data` to the pool if this was its last user.
    fn put_shared(&self, data: Arc<Vec<u8>>) {
        if let Ok(buf) = Arc::try_unwrap(data) {
            self.put(buf);
        }
    }
}

/// What the sink does with the stream.
#[derive(Debug, Clone, Copy)]
pub(super) enum Mode {
    /// gzip at `level` with `threads` deflate jobs in flight (1: deflate on the sink thread).
    Gzip { level: u32, threads: usize },
    /// zstd at `level` on the sink thread.
    #[cfg(feature = "zstd")]
    Zstd { level: i32 },
    /// No compression: the sink copies.
    None,
}

/// One piece of the stream, in order.
enum Piece {
    /// A chunk being deflated on its own thread.
    Deflating(JoinHandle<io::Result<Vec<u8>>>),
    /// Uncompressed bytes the sink compresses (or copies) itself.
    Raw(Arc<Vec<u8>>),
}

/// What the hash thread found.
struct HashOut {
    diff_id: Digest,
    len: u64,
    crc: u32,
}

/// What the finished pipeline gives back: the diffID, the tar's length, and the blob.
pub(super) struct Finished {
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub blob: BlobWriter,
}

/// The tar stream's consumer (an `io::Write`). Drop it without [`Pipeline::finish`] and the
/// threads are stopped and joined, and the blob writer dropped (nothing is published).
pub(super) struct Pipeline {
    mode: Mode,
    pool: Pool,
    chunk: Vec<u8>,
    hash_tx: Option<SyncSender<Arc<Vec<u8>>>>,
    hash: Option<JoinHandle<HashOut>>,
    sink_tx: Option<SyncSender<Piece>>,
    sink: Option<JoinHandle<io::Result<BlobWriter>>>,
}

impl Pipeline {
    /// Starts the threads; writes the gzip header first when compressing with gzip.
    pub(super) fn start(mut blob: BlobWriter, mode: Mode) -> io::Result<Pipeline> {
        let queue = match mode {
            Mode::Gzip { level, threads } => {
                blob.write_all(&gzip_header(level))?;
                threads.max(1)
            }
            #[cfg(feature = "zstd")]
            Mode::Zstd { .. } => 2,
            Mode::None => 2,
        };
        let pool = Pool::default();
        let (hash_tx, hash_rx) = sync_channel::<Arc<Vec<u8>>>(HASH_QUEUE);
        let p = pool.clone();
        let hash = std::thread::Builder::new()
            .name("kiln-layer-hash".into())
            .spawn(move || hash_stage(hash_rx, p))?;
        let (sink_tx, sink_rx) = sync_channel::<Piece>(queue);
        let p = pool.clone();
        let sink = std::thread::Builder::new()
            .name("kiln-layer-sink".into())
            .spawn(move || sink_stage(sink_rx, blob, mode, p))?;
        Ok(Pipeline {
            mode,
            chunk: pool.get(GZ_CHUNK),
            pool,
            hash_tx: Some(hash_tx),
            hash: Some(hash),
            sink_tx: Some(sink_tx),
            sink: Some(sink),
        })
    }

    /// Hands the current chunk to the hash thread and to the compressor.
    fn dispatch(&mut self) -> io::Result<()> {
        let next = self.pool.get(GZ_CHUNK);
        let data = Arc::new(std::mem::replace(&mut self.chunk, next));
        if let Some(tx) = &self.hash_tx {
            if tx.send(Arc::clone(&data)).is_err() {
                return Err(io::Error::other("layer hash thread stopped"));
            }
        }
        let piece = match self.mode {
            Mode::Gzip { level, threads } if threads > 1 => {
                let pool = self.pool.clone();
                Piece::Deflating(std::thread::Builder::new().name("kiln-gzip".into()).spawn(
                    move || {
                        let out = deflate_chunk(&data, level, pool.get(0));
                        pool.put_shared(data);
                        out
                    },
                )?)
            }
            _ => Piece::Raw(data),
        };
        let sent = self.sink_tx.as_ref().map(|tx| tx.send(piece).is_ok());
        if sent != Some(true) {
            // The sink stopped: its own error says why.
            return Err(self
                .stop_sink()
                .err()
                .unwrap_or_else(|| io::Error::other("layer compression thread stopped early")));
        }
        Ok(())
    }

    /// Closes the sink's channel and waits for it.
    fn stop_sink(&mut self) -> io::Result<BlobWriter> {
        self.sink_tx = None;
        match self.sink.take() {
            Some(h) => h
                .join()
                .map_err(|_| io::Error::other("layer compression thread panicked"))?,
            None => Err(io::Error::other("layer compression thread already stopped")),
        }
    }

    /// Flushes the last chunk, waits for every stage, and ends the gzip member (final block
    /// and trailer).
    pub(super) fn finish(mut self) -> io::Result<Finished> {
        if !self.chunk.is_empty() {
            self.dispatch()?;
        }
        self.hash_tx = None;
        let hashed = self
            .hash
            .take()
            .map(|h| h.join())
            .ok_or_else(|| io::Error::other("layer hash thread already stopped"))?
            .map_err(|_| io::Error::other("layer hash thread panicked"))?;
        let mut blob = self.stop_sink()?;
        if let Mode::Gzip { .. } = self.mode {
            // A final, empty fixed-Huffman block (BFINAL=1, BTYPE=01, end-of-block), then the
            // RFC 1952 trailer: CRC-32 and size mod 2^32, little-endian.
            blob.write_all(&[0x03, 0x00])?;
            blob.write_all(&hashed.crc.to_le_bytes())?;
            blob.write_all(&(hashed.len as u32).to_le_bytes())?;
        }
        Ok(Finished {
            diff_id: hashed.diff_id,
            uncompressed_size: hashed.len,
            blob,
        })
    }
}

impl Write for Pipeline {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(GZ_CHUNK - self.chunk.len());
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == GZ_CHUNK {
            self.dispatch()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        // Stop and join the stages so the blob's temporary file is gone when the layer writer
        // is (BlobWriter's drop removes it, here, on this thread).
        self.hash_tx = None;
        self.sink_tx = None;
        if let Some(h) = self.hash.take() {
            let _ = h.join();
        }
        if let Some(h) = self.sink.take() {
            let _ = h.join();
        }
    }
}

fn hash_stage(rx: Receiver<Arc<Vec<u8>>>, pool: Pool) -> HashOut {
    let mut sha = Hasher::new();
    let mut crc = flate2::Crc::new();
    for chunk in rx {
        sha.update(&chunk);
        crc.update(&chunk);
        pool.put_shared(chunk);
    }
    let (diff_id, len, _) = sha.finish();
    HashOut {
        diff_id,
        len,
        crc: crc.sum(),
    }
}

fn sink_stage(
    rx: Receiver<Piece>,
    blob: BlobWriter,
    mode: Mode,
    pool: Pool,
) -> io::Result<BlobWriter> {
    match mode {
        Mode::Gzip { level, .. } => {
            let mut blob = blob;
            for piece in rx {
                let out = match piece {
                    Piece::Deflating(job) => job
                        .join()
                        .map_err(|_| io::Error::other("gzip compression thread panicked"))??,
                    Piece::Raw(data) => {
                        let out = deflate_chunk(&data, level, pool.get(0))?;
                        pool.put_shared(data);
                        out
                    }
                };
                blob.write_all(&out)?;
                pool.put(out);
            }
            Ok(blob)
        }
        #[cfg(feature = "zstd")]
        Mode::Zstd { level } => {
            let mut enc = zstd::stream::write::Encoder::new(blob, level)?;
            for piece in rx {
                if let Piece::Raw(data) = piece {
                    enc.write_all(&data)?;
                    pool.put_shared(data);
                }
            }
            enc.finish()
        }
        Mode::None => {
            let mut blob = blob;
            for piece in rx {
                if let Piece::Raw(data) = piece {
                    blob.write_all(&data)?;
                    pool.put_shared(data);
                }
            }
            Ok(blob)
        }
    }
}

/// RFC 1952 header: deflate, no flags, mtime 0, XFL as zlib sets it, OS 255 (unknown).
fn gzip_header(level: u32) -> [u8; 10] {
    let xfl = match level {
        1 => 4,
        9 => 2,
        _ => 0,
    };
    [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 0xff]
}

/// Largest payload of one deflate stored block (RFC 1951 §3.2.4: LEN is 16 bits).
const STORED_MAX: usize = 65_535;

/// Size of `len` bytes as stored blocks: 5 header bytes (type byte, LEN, NLEN) per block.
fn stored_size(len: usize) -> usize {
    len + 5 * len.div_ceil(STORED_MAX)
}

/// `data` as non-final deflate stored blocks (RFC 1951 §3.2.4). A chunk always starts on a
/// byte boundary (after the gzip header, a sync flush, or stored blocks), so each block header
/// is one byte (BFINAL=0, BTYPE=00, five padding bits) followed by LEN and NLEN.
fn stored_blocks(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(stored_size(data.len()));
    for block in data.chunks(STORED_MAX) {
        let len = block.len() as u16;
        out.push(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
}

/// One probe sample per this many bytes of a chunk.
const PROBE_STRIDE: usize = 64 * 1024;
/// Bytes per probe sample.
const PROBE_LEN: usize = 4 * 1024;

/// True when no probe sample of `data` compresses: 4 KiB every 64 KiB (1/16 of the chunk)
/// deflated at level 1 each gains less than 2 %. Random data, and data already compressed
/// (gzip/xz/zstd archives, JPEG, PNG, video), look like that; deflating it at level 6 costs
/// ~50 ms per MiB here for a gain of a few bytes per MiB (or a loss). The probe costs about 1 %
/// of that, and stops at the first sample that compresses, so compressible data pays one
/// 4 KiB level-1 deflate per chunk.
///
/// What it can miss: compressible bytes entirely between samples (less than 60 KiB) in an
/// otherwise incompressible chunk, and redundancy only visible at distances above 4 KiB
/// (a random 16 KiB block repeated). Such a chunk is stored: still a valid, deterministic
/// layer, only larger than level 6 would make it.
fn looks_incompressible(data: &[u8]) -> bool {
    if data.len() < PROBE_STRIDE {
        return false;
    }
    let mut c = flate2::Compress::new(flate2::Compression::fast(), false);
    let mut out = Vec::with_capacity(2 * PROBE_LEN);
    for start in (0..data.len()).step_by(PROBE_STRIDE) {
        let sample = &data[start..(start + PROBE_LEN).min(data.len())];
        c.reset();
        out.clear();
        match c.compress_vec(sample, &mut out, flate2::FlushCompress::Finish) {
            // `Finish` within the 2× output space always completes; anything else (an error,
            // a partial result) is treated as "compressible": the full deflate path decides.
            Ok(flate2::Status::StreamEnd) => {}
            _ => return false,
        }
        if out.len() * 50 < sample.len() * 49 {
            return false;
        }
    }
    true
}

/// Raw deflate of one chunk, byte-aligned and not final, the same bytes for the same input and
/// level whatever thread runs it:
/// - level 0, or a chunk [`looks_incompressible`]: stored blocks (no deflate at all);
/// - otherwise deflate at `level` ended with a sync flush, unless that is not smaller than the
///   stored form, which is then used instead.
///
/// `out` is a buffer to fill (its contents are discarded), returned as the result.
pub(super) fn deflate_chunk(data: &[u8], level: u32, mut out: Vec<u8>) -> io::Result<Vec<u8>> {
    out.clear();
    if level == 0 || looks_incompressible(data) {
        stored_blocks(data, &mut out);
        return Ok(out);
    }
    let mut c = flate2::Compress::new(flate2::Compression::new(level), false);
    // Room for the worst case (zlib's deflateBound, plus the sync flush's empty stored block
    // and slack), so one call does it all whatever buffer the pool handed out.
    let len = data.len();
    out.reserve(len + (len >> 12) + (len >> 14) + (len >> 25) + 64);
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let consumed = c.total_in() as usize;
        c.compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Sync)
            .map_err(io::Error::other)?;
        // zlib's contract: the flush is complete when it left output space unused.
        if c.total_in() as usize == data.len() && out.len() < out.capacity() {
            break;
        }
    }
    if out.len() >= stored_size(data.len()) {
        out.clear();
        stored_blocks(data, &mut out);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Deterministic bytes deflate cannot compress (xorshift64).
    pub(crate) fn noise(len: usize, mut x: u64) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 8);
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        }
        v.truncate(len);
        v
    }

    fn text(len: usize) -> Vec<u8> {
        let mut v = Vec::new();
        let mut i = 0u64;
        while v.len() < len {
            v.extend_from_slice(
                format!("line {i} of some log text, status={}\n", i % 7).as_bytes(),
            );
            i += 1;
        }
        v.truncate(len);
        v
    }

    /// Inflates a raw deflate stream made of `pieces` followed by a final empty block.
    fn inflate(pieces: &[u8]) -> Vec<u8> {
        let mut stream = pieces.to_vec();
        stream.extend_from_slice(&[0x03, 0x00]);
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(&stream[..])
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn stored_blocks_inflate_to_the_input_at_block_boundaries() {
        for len in [
            0,
            1,
            STORED_MAX - 1,
            STORED_MAX,
            STORED_MAX + 1,
            3 * STORED_MAX + 7,
        ] {
            let data = noise(len, len as u64 + 1);
            let mut out = Vec::new();
            stored_blocks(&data, &mut out);
            assert_eq!(out.len(), stored_size(len), "length {len}");
            assert_eq!(inflate(&out), data, "length {len}");
        }
    }

    #[test]
    fn probe_tells_noise_from_text_and_mixed_chunks() {
        assert!(looks_incompressible(&noise(GZ_CHUNK, 7)));
        assert!(!looks_incompressible(&text(GZ_CHUNK)));
        // Text only where the 9th sample reads: the chunk must be compressed.
        let mut mixed = noise(GZ_CHUNK, 9);
        let at = 8 * PROBE_STRIDE;
        mixed[at..at + PROBE_LEN].copy_from_slice(&text(PROBE_LEN));
        assert!(!looks_incompressible(&mixed));
        // A short final chunk is never judged by the probe.
        assert!(!looks_incompressible(&noise(PROBE_STRIDE - 1, 3)));
    }

    #[test]
    fn incompressible_chunk_is_stored_and_compressible_one_deflated() {
        let n = noise(GZ_CHUNK, 11);
        for level in [0, 1, 6, 9] {
            let out = deflate_chunk(&n, level, Vec::new()).unwrap();
            assert_eq!(out.len(), stored_size(n.len()), "level {level}");
            assert_eq!(inflate(&out), n);
        }
        let t = text(GZ_CHUNK);
        let out = deflate_chunk(&t, 6, Vec::new()).unwrap();
        assert!(out.len() < t.len() / 4, "{} bytes", out.len());
        assert_eq!(inflate(&out), t);
        // A short noise chunk skips the probe but still falls back to stored blocks.
        let short = noise(1000, 5);
        assert_eq!(
            deflate_chunk(&short, 6, Vec::new()).unwrap().len(),
            stored_size(1000)
        );
    }

    #[test]
    fn chunks_of_both_kinds_concatenate_into_one_stream() {
        let parts = [
            noise(GZ_CHUNK, 1),
            text(GZ_CHUNK),
            noise(300, 2),
            text(5000),
        ];
        let mut stream = Vec::new();
        let mut all = Vec::new();
        for p in &parts {
            stream.extend(deflate_chunk(p, 6, Vec::new()).unwrap());
            all.extend_from_slice(p);
        }
        assert_eq!(inflate(&stream), all);
    }
}

//! Applying a layer tar to a rootfs: streamed, confined, with OCI whiteouts and limits.
//!
//! Semantics follow the OCI image-spec `layer.md` ("Applying Changesets", "Whiteouts"):
//! `.wh.<name>` removes `<name>` from lower layers, `.wh..wh..opq` hides every lower-layer child
//! of its directory (whether it comes before or after this layer's own entries there), and
//! whiteout files never appear in the rootfs. Names are read as GNU tar and Go `archive/tar`
//! read them: a PAX `path`/`linkpath` record wins over a GNU long name (CVE-2025-62518), a PAX
//! `size` wins over the ustar size.

use crate::error::{RootError, UnpackError};
use crate::root::{Kind, Meta, ParentCache, Root};
use kiln_oci::Digest;
use sha2::Digest as _;
use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStringExt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

/// What to do with character and block device entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DevicePolicy {
    /// Create them; where `mknod` is not permitted (unprivileged, user namespace) skip them
    /// with a warning.
    #[default]
    CreateOrSkip,
    /// Never create them; skip with a warning.
    Skip,
    /// Fail on the first one.
    Refuse,
}

/// Limits and policies of [`unpack_layer`]. Ownership and ignored paths come from the [`Root`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Most entries in one layer.
    pub max_entries: u64,
    /// Largest single file.
    pub max_entry_size: u64,
    /// Most uncompressed bytes in the layer stream (bounds gzip bombs and metadata entries).
    pub max_total_size: u64,
    /// Deepest path (components).
    pub max_depth: usize,
    /// Largest PAX extended header or GNU long name/link (read into memory).
    pub max_metadata_size: u64,
    /// Device node policy.
    pub devices: DevicePolicy,
    /// When set, the sha256 of the uncompressed stream must equal this (the config's diffID).
    pub expected_diff_id: Option<Digest>,
    /// Apply `.wh.` entries as OCI whiteouts (layers). Off for plain archives (`ADD x.tar`),
    /// where they are ordinary files, as Docker's and Kaniko's ADD extract them.
    pub whiteouts: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            max_entries: 1_000_000,
            max_entry_size: 64 << 30,
            max_total_size: 256 << 30,
            max_depth: 512,
            max_metadata_size: DEFAULT_MAX_METADATA,
            devices: DevicePolicy::default(),
            expected_diff_id: None,
            whiteouts: true,
        }
    }
}

/// What an unpack did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries read (extension headers not counted).
    pub entries: u64,
    /// Regular file bytes written.
    pub bytes: u64,
    /// Whiteouts and opaque whiteouts applied.
    pub whiteouts: u64,
    /// Device entries skipped by policy or for lack of privilege.
    pub skipped_devices: u64,
    /// Entries skipped because they resolved into an ignored path.
    pub ignored: u64,
    /// sha256 of the uncompressed layer (its diffID).
    pub diff_id: Digest,
    /// Size of the uncompressed layer.
    pub uncompressed_size: u64,
}

/// Hashes, counts and bounds the uncompressed stream.
struct Meter<R> {
    inner: R,
    sha: sha2::Sha256,
    count: u64,
    limit: u64,
    exceeded: Arc<AtomicBool>,
}

impl<R: Read> Read for Meter<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            self.exceeded.store(true, Ordering::Relaxed);
            return Err(io::Error::other("layer size limit exceeded"));
        }
        self.sha.update(&buf[..n]);
        Ok(n)
    }
}

/// Largest PAX or GNU long-name header accepted by default (Go `archive/tar` uses the same).
pub const DEFAULT_MAX_METADATA: u64 = 1 << 20;

/// Follows the tar framing of the stream (ustar sizes, PAX `size` overrides, old-GNU sparse
/// extension blocks, exactly as tar-rs frames it) to refuse an oversized extension header
/// (`x`, `g`, `L`, `K`) *before* tar-rs reads it whole into memory.
struct Guard<R> {
    inner: R,
    limit: u64,
    state: GuardState,
    pending_size: Option<u64>,
    too_big: Rc<Cell<Option<u64>>>,
}

enum GuardState {
    Header(Box<[u8; 512]>, usize),
    /// Extension blocks of an old-GNU sparse header, then `data` bytes.
    SparseExt(Box<[u8; 512]>, usize, u64),
    Data {
        left: u64,
        pax: Option<Vec<u8>>,
        len: u64,
    },
    Done,
}

fn round512(n: u64) -> u64 {
    n.div_ceil(512).saturating_mul(512)
}

fn tar_number(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .filter(|b| *b != 0 && *b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(std::str::from_utf8(&s).ok()?, 8).ok()
}

fn pax_size(data: &[u8]) -> Option<u64> {
    let mut rest = data;
    let mut found = None;
    while !rest.is_empty() {
        let sp = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..sp]).ok()?.parse().ok()?;
        if len <= sp || len > rest.len() {
            return found;
        }
        let rec = &rest[sp + 1..len];
        if let Some(v) = rec.strip_prefix(b"size=") {
            let v = v.strip_suffix(b"\n").unwrap_or(v);
            found = std::str::from_utf8(v).ok()?.parse().ok();
        }
        rest = &rest[len..];
    }
    found
}

impl<R: Read> Guard<R> {
    fn feed(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match &mut self.state {
                GuardState::Done => return Ok(()),
                GuardState::Header(h, have) | GuardState::SparseExt(h, have, _) => {
                    let n = (512 - *have).min(bytes.len());
                    h[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have == 512 {
                        self.block_done()?;
                    }
                }
                GuardState::Data { left, pax, .. } => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    if let Some(p) = pax {
                        p.extend_from_slice(&bytes[..n]);
                    }
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.data_done();
                    }
                }
            }
        }
        Ok(())
    }

    fn data_done(&mut self) {
        if let GuardState::Data {
            pax: Some(p), len, ..
        } = &self.state
        {
            let data = &p[..(*len as usize).min(p.len())];
            self.pending_size = pax_size(data);
        }
        self.state = GuardState::Header(Box::new([0; 512]), 0);
    }

    fn start_data(&mut self, size: u64, pax: bool) {
        self.state = GuardState::Data {
            left: round512(size),
            pax: pax.then(Vec::new),
            len: size,
        };
        if size == 0 {
            self.data_done();
        }
    }

    fn block_done(&mut self) -> io::Result<()> {
        let state = std::mem::replace(&mut self.state, GuardState::Done);
        match state {
            GuardState::SparseExt(h, _, data) => {
                if h[504] != 0 {
                    self.state = GuardState::SparseExt(Box::new([0; 512]), 0, data);
                } else {
                    self.start_data(data, false);
                }
            }
            GuardState::Header(h, _) => {
                if h.iter().all(|&b| b == 0) {
                    return Ok(()); // end of archive: stop following
                }
                let stored = tar_number(&h[148..156]);
                let sum: u64 = h
                    .iter()
                    .enumerate()
                    .map(|(i, &b)| {
                        if (148..156).contains(&i) {
                            32
                        } else {
                            u64::from(b)
                        }
                    })
                    .sum();
                let Some(size) = tar_number(&h[124..136]).filter(|_| stored == Some(sum)) else {
                    return Ok(()); // not a header tar-rs accepts: it will report it
                };
                match h[156] {
                    b'x' | b'g' | b'L' | b'K' => {
                        if size > self.limit {
                            self.too_big.set(Some(size));
                            return Err(io::Error::other("tar extension header too large"));
                        }
                        self.start_data(size, h[156] == b'x');
                    }
                    flag => {
                        let size = self.pending_size.take().unwrap_or(size);
                        if flag == b'S' && h[482] != 0 {
                            self.state = GuardState::SparseExt(Box::new([0; 512]), 0, size);
                        } else {
                            self.start_data(size, false);
                        }
                    }
                }
            }
            other => self.state = other,
        }
        Ok(())
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.feed(&buf[..n])?;
        Ok(n)
    }
}

/// Wraps `reader` in the decompressor its magic bytes call for: gzip (`1f 8b`), zstd
/// (`28 b5 2f fd`, with the `zstd` feature) or none.
pub fn decompress<'a>(reader: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut br = BufReader::with_capacity(256 * 1024, reader);
    let head = br.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        // MultiGzDecoder: a layer may be several concatenated gzip members (parallel writers).
        return Ok(Box::new(flate2::bufread::MultiGzDecoder::new(br)));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        #[cfg(feature = "zstd")]
        return Ok(Box::new(zstd::stream::read::Decoder::with_buffer(br)?));
        #[cfg(not(feature = "zstd"))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "zstd-compressed layer, but kiln-rootfs was built without the `zstd` feature",
        ));
    }
    Ok(Box::new(br))
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Normalises an archive name: leading `/` and `.`/empty components dropped (absolute names
/// land inside the root, as GNU tar without `-P` does); a `..` component is a breakout.
/// `None` for the root itself.
fn normalize(raw: &[u8]) -> Result<Option<Vec<u8>>, ()> {
    let mut out = Vec::with_capacity(raw.len());
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(()),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

fn parse_time(v: &[u8]) -> Option<(i64, u32)> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let mut ns: u32 = 0;
    for (i, d) in frac.bytes().take(9).enumerate() {
        if !d.is_ascii_digit() {
            return None;
        }
        ns += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
    }
    Some((secs, ns))
}

/// A directory whose mtime (and, unprivileged, mode) is set after all entries: its path, mtime,
/// mode, and its (device, inode) when created.
type DirFixup = (Vec<u8>, (i64, u32), Option<u32>, Option<(u64, u64)>);

const OPAQUE: &[u8] = b".wh..wh..opq";
const WH: &[u8] = b".wh.";

/// Applies the layer read from `reader` to `root`. The stream is decompressed by magic and never
/// held in memory: a second thread decompresses and hashes (diffID) 1 MiB ahead of the thread
/// that writes files. On error the rootfs is partly changed: the caller discards it.
pub fn unpack_layer(
    root: &Root,
    reader: impl Read + Send,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    let exceeded = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let limit = opts.max_total_size;
        let ex = exceeded.clone();
        let producer = s.spawn(move || produce(reader, limit, ex, tx));
        let chan = ChannelReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        };
        // `consume` owns the receiver: returning (even early, on error) stops the producer.
        let result = consume(root, chan, opts, &exceeded);
        let (sha, count) = producer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let mut stats = result?;
        stats.uncompressed_size = count;
        let hex = hex::encode(sha.finalize());
        stats.diff_id = Digest::from_hex(&hex).unwrap_or_else(|_| unreachable!());
        if let Some(want) = &opts.expected_diff_id {
            if *want != stats.diff_id {
                return Err(UnpackError::DiffIdMismatch {
                    expected: want.clone(),
                    found: stats.diff_id,
                });
            }
        }
        Ok(stats)
    })
}

/// The decompressing side: reads, inflates, counts, hashes and sends 1 MiB buffers.
fn produce(
    reader: impl Read,
    limit: u64,
    exceeded: Arc<AtomicBool>,
    tx: SyncSender<io::Result<Vec<u8>>>,
) -> (sha2::Sha256, u64) {
    let plain = match decompress(reader) {
        Ok(p) => p,
        Err(e) => {
            let _ = tx.send(Err(e));
            return (sha2::Sha256::new(), 0);
        }
    };
    let mut meter = Meter {
        inner: plain,
        sha: sha2::Sha256::new(),
        count: 0,
        limit,
        exceeded,
    };
    loop {
        let mut buf = Vec::with_capacity(1 << 20);
        match (&mut meter).take(1 << 20).read_to_end(&mut buf) {
            Ok(0) => break,
            Ok(_) => {
                if tx.send(Ok(buf)).is_err() {
                    break;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
                break;
            }
        }
    }
    (meter.sha, meter.count)
}

/// The receiving end of [`produce`], as a reader.
struct ChannelReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(Ok(b)) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0), // producer done: end of stream
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The tar side of [`unpack_layer`]: parses entries and applies them; drains the stream.
fn consume(
    root: &Root,
    chan: ChannelReader,
    opts: &UnpackOptions,
    exceeded: &AtomicBool,
) -> Result<UnpackStats, UnpackError> {
    let too_big = Rc::new(Cell::new(None));
    let guard = Guard {
        inner: chan,
        limit: opts.max_metadata_size,
        state: GuardState::Header(Box::new([0; 512]), 0),
        pending_size: None,
        too_big: too_big.clone(),
    };
    let mut archive = tar::Archive::new(guard);
    let mut stats = UnpackStats {
        entries: 0,
        bytes: 0,
        whiteouts: 0,
        skipped_devices: 0,
        ignored: 0,
        diff_id: Digest::of(b""),
        uncompressed_size: 0,
    };
    let last_entry: Cell<Option<String>> = Cell::new(None);
    let too_large = |e: UnpackError| {
        let entry = e.entry().map(str::to_string).or_else(|| last_entry.take());
        if let Some(size) = too_big.get() {
            UnpackError::MetadataTooLarge {
                size,
                limit: opts.max_metadata_size,
                after: entry,
            }
        } else if exceeded.load(Ordering::Relaxed) {
            UnpackError::TooLarge {
                limit: opts.max_total_size,
                entry,
            }
        } else {
            e
        }
    };
    // Paths created by this layer (and their ancestors): an opaque whiteout keeps them.
    let mut created: HashSet<Vec<u8>> = HashSet::new();
    let mut dir_times: Vec<DirFixup> = Vec::new();
    // Entries come grouped by directory: resolve each parent directory once (see ParentCache
    // for why that stays confined against a later entry replacing it).
    let mut cache = ParentCache::new();
    {
        let entries = archive.entries().map_err(UnpackError::Read)?;
        for (index, entry) in entries.enumerate() {
            let mut entry = entry
                .map_err(|source| UnpackError::Header {
                    index: index as u64,
                    source,
                })
                .map_err(too_large)?;
            last_entry.set(Some(show(&entry.path_bytes())));
            let r = apply_entry(
                root,
                &mut entry,
                opts,
                &mut stats,
                &mut created,
                &mut dir_times,
                &mut cache,
            );
            r.map_err(too_large)?;
        }
    }
    // Directory mtimes last: creating children changed them (as Docker and containerd do).
    for (path, t, mode, id) in dir_times.iter().rev() {
        // Only the directory this layer made: a later entry may have replaced the name (with a
        // hard link to a file, say), whose inode must not get the directory's mode or mtime
        // (it may be shared with other trees: kiln_rootfs::link_tree).
        let same = root.lstat(p(path)).is_ok_and(|st| {
            Some((st.st_dev, st.st_ino)) == *id && Kind::of_mode(st.st_mode) == Kind::Dir
        });
        if !same {
            continue;
        }
        if let Some(mode) = mode {
            if let Err(e) = root.set_mode(p(path), *mode) {
                tracing::warn!(path = %show(path), error = %e, "directory mode not restored");
            }
        }
        if let Err(e) = root.set_mtime(p(path), *t) {
            tracing::debug!(path = %show(path), error = %e, "directory mtime not restored");
        }
    }
    // Drain what follows the end-of-archive blocks: the diffID covers the whole stream.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(UnpackError::Read)
        .map_err(too_large)?;
    Ok(stats)
}

fn p(b: &[u8]) -> &std::path::Path {
    use std::os::unix::ffi::OsStrExt;
    std::path::Path::new(std::ffi::OsStr::from_bytes(b))
}

fn record(created: &mut HashSet<Vec<u8>>, logical: &[u8]) {
    let mut end = logical.len();
    loop {
        if !created.insert(logical[..end].to_vec()) {
            break;
        }
        match logical[..end].iter().rposition(|&b| b == b'/') {
            Some(i) => end = i,
            None => break,
        }
    }
}

fn apply_entry<R: Read>(
    root: &Root,
    entry: &mut tar::Entry<'_, R>,
    opts: &UnpackOptions,
    stats: &mut UnpackStats,
    created: &mut HashSet<Vec<u8>>,
    dir_times: &mut Vec<DirFixup>,
    cache: &mut ParentCache,
) -> Result<(), UnpackError> {
    // PAX records first: `path`/`linkpath` win over GNU long names (GNU tar, Go archive/tar).
    let mut pax_path = None;
    let mut pax_link = None;
    let mut pax_mtime = None;
    let mut xattrs: Vec<(OsString, Vec<u8>)> = Vec::new();
    let mut sparse = false;
    let raw_name = entry.path_bytes().into_owned();
    let entry_name = show(&raw_name);
    let pax = entry
        .pax_extensions()
        .map_err(|source| UnpackError::Content {
            entry: entry_name.clone(),
            source,
        })?;
    let mut forbidden = None;
    if let Some(pax) = pax {
        for rec in pax {
            let rec = rec.map_err(|source| UnpackError::Content {
                entry: entry_name.clone(),
                source,
            })?;
            let key = rec.key_bytes();
            let val = rec.value_bytes();
            match key {
                b"path" => pax_path = Some(val.to_vec()),
                b"linkpath" => pax_link = Some(val.to_vec()),
                b"mtime" => pax_mtime = parse_time(val),
                k if k.starts_with(b"GNU.sparse.") => sparse = true,
                k if k.starts_with(b"SCHILY.xattr.") => {
                    let name = &k[b"SCHILY.xattr.".len()..];
                    if name.starts_with(b"trusted.") || name.windows(9).any(|w| w == b".overlay.") {
                        forbidden = Some(show(name));
                    } else if name.starts_with(b"user.") || name == b"security.capability" {
                        xattrs.push((OsString::from_vec(name.to_vec()), val.to_vec()));
                    } else {
                        tracing::warn!(entry = %entry_name, xattr = %show(name), "xattr not applied");
                    }
                }
                _ => {}
            }
        }
    }
    let raw_name = pax_path.unwrap_or(raw_name);
    let entry_name = show(&raw_name);
    if let Some(name) = forbidden {
        return Err(UnpackError::ForbiddenXattr {
            entry: entry_name,
            name,
        });
    }
    stats.entries += 1;
    if stats.entries > opts.max_entries {
        return Err(UnpackError::TooManyEntries {
            entry: entry_name,
            limit: opts.max_entries,
        });
    }
    let etype = entry.header().entry_type();
    if etype.is_pax_global_extensions() {
        return Ok(());
    }
    let name = match normalize(&raw_name) {
        Ok(Some(n)) => n,
        Ok(None) => {
            // `.`, `./`, `/`: the root itself keeps its metadata (HOSTILE-INPUTS 13).
            tracing::debug!(entry = %entry_name, "root entry skipped");
            return Ok(());
        }
        Err(()) => return Err(UnpackError::Breakout { entry: entry_name }),
    };
    let depth = name.split(|&b| b == b'/').count();
    if depth > opts.max_depth {
        return Err(UnpackError::TooDeep {
            entry: entry_name,
            limit: opts.max_depth,
        });
    }
    if name.split(|&b| b == b'/').any(|c| c.len() > 255) {
        return Err(UnpackError::NameTooLong { entry: entry_name });
    }
    if sparse {
        return Err(UnpackError::Unsupported {
            entry: entry_name,
            what: "PAX GNU.sparse file".into(),
        });
    }
    let rootfail = |e: RootError, entry: &str| UnpackError::Root {
        entry: entry.to_string(),
        source: e,
    };

    // Whiteouts (OCI image-spec layer.md).
    let (dir, base) = match name.iter().rposition(|&b| b == b'/') {
        Some(i) => (&name[..i], &name[i + 1..]),
        None => (&name[..0], &name[..]),
    };
    if base == OPAQUE && opts.whiteouts {
        stats.whiteouts += 1;
        return match root.clear_lower(dir, &|l: &[u8]| created.contains(l)) {
            Ok(()) => Ok(()),
            Err(RootError::NotFound { .. }) => Ok(()),
            Err(RootError::Ignored { .. }) => {
                stats.ignored += 1;
                Ok(())
            }
            Err(e) => Err(rootfail(e, &entry_name)),
        };
    }
    if let Some(victim) = base.strip_prefix(WH).filter(|_| opts.whiteouts) {
        if victim.starts_with(WH) {
            // Other `.wh..wh.` names are aufs metadata (`.wh..wh.plnk`): not part of the rootfs.
            tracing::debug!(entry = %entry_name, "aufs metadata entry skipped");
            return Ok(());
        }
        if victim.is_empty() || victim == b"." || victim == b".." {
            return Err(UnpackError::InvalidWhiteout { entry: entry_name });
        }
        stats.whiteouts += 1;
        let mut target = dir.to_vec();
        if !target.is_empty() {
            target.push(b'/');
        }
        target.extend_from_slice(victim);
        return match root.remove_all(p(&target)) {
            Ok(()) | Err(RootError::NotFound { .. }) | Err(RootError::NotADirectory { .. }) => {
                Ok(())
            }
            Err(RootError::Ignored { .. }) => {
                stats.ignored += 1;
                Ok(())
            }
            Err(e) => Err(rootfail(e, &entry_name)),
        };
    }

    let h = entry.header();
    let mode = h.mode().unwrap_or(0o644) & 0o7777;
    let uid = h.uid().unwrap_or(0);
    let gid = h.gid().unwrap_or(0);
    let mtime = pax_mtime.unwrap_or((h.mtime().unwrap_or(0) as i64, 0));
    let uid = u32::try_from(uid).unwrap_or(u32::MAX - 1);
    let gid = u32::try_from(gid).unwrap_or(u32::MAX - 1);
    let meta = Meta {
        mode,
        uid,
        gid,
        mtime: Some(mtime),
        xattrs,
    };
    let size = entry.size();
    let link = pax_link.or_else(|| entry.link_name_bytes().map(|l| l.into_owned()));

    let result: Result<Vec<u8>, RootError> = match etype {
        t if t.is_dir() => {
            // Unprivileged, a directory without owner rwx would refuse the entries that follow
            // it: keep u+rwx until the end, then set the real mode with the mtime.
            let restrict = !root.privileged() && mode & 0o700 != 0o700;
            let m = Meta {
                mtime: None,
                mode: if restrict { mode | 0o700 } else { mode },
                ..meta.clone()
            };
            root.mkdir_cached(&name, &m, cache).inspect(|l| {
                let id = root.lstat(p(l)).ok().map(|st| (st.st_dev, st.st_ino));
                dir_times.push((l.clone(), mtime, restrict.then_some(mode), id));
            })
        }
        t if t.is_file() || t.is_contiguous() || t.is_gnu_sparse() => {
            if size > opts.max_entry_size {
                return Err(UnpackError::EntryTooLarge {
                    entry: entry_name,
                    size,
                    limit: opts.max_entry_size,
                });
            }
            match root.write_file_cached(&name, entry, &meta, cache) {
                Ok((n, _)) if n != size => {
                    // tar-rs ends an entry's reader quietly at the end of the stream.
                    return Err(UnpackError::Content {
                        entry: entry_name,
                        source: io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("layer ends after {n} of {size} bytes of this entry"),
                        ),
                    });
                }
                Ok((n, l)) => {
                    stats.bytes += n;
                    Ok(l)
                }
                // Reading the entry's content failed (truncated stream, limit) or writing it did.
                Err(RootError::StdIo { source, .. }) => {
                    return Err(UnpackError::Content {
                        entry: entry_name,
                        source,
                    })
                }
                Err(e) => Err(e),
            }
        }
        t if t.is_symlink() => {
            let target = link.unwrap_or_default();
            let meta = Meta {
                xattrs: Vec::new(),
                ..meta
            };
            root.symlink_cached(&name, p(&target), &meta, cache)
        }
        t if t.is_hard_link() => {
            let target = link.unwrap_or_default();
            let norm = match normalize(&target) {
                Ok(Some(n)) => n,
                _ => {
                    return Err(UnpackError::LinkBreakout {
                        entry: entry_name,
                        target: show(&target),
                    })
                }
            };
            root.hardlink(p(&name), p(&norm))
        }
        t if t.is_fifo() => root.mkfifo(p(&name), &meta),
        t if t.is_character_special() || t.is_block_special() => {
            let kind = if t.is_character_special() {
                Kind::Char
            } else {
                Kind::Block
            };
            let major = h.device_major().ok().flatten().unwrap_or(0);
            let minor = h.device_minor().ok().flatten().unwrap_or(0);
            match opts.devices {
                DevicePolicy::Refuse => {
                    return Err(UnpackError::DeviceRefused { entry: entry_name })
                }
                DevicePolicy::Skip => {
                    tracing::warn!(entry = %entry_name, "device node skipped by policy");
                    stats.skipped_devices += 1;
                    return Ok(());
                }
                DevicePolicy::CreateOrSkip => {
                    match root.mknod(p(&name), kind, major.into(), minor.into(), &meta) {
                        Err(RootError::Io {
                            source: nix::errno::Errno::EPERM,
                            ..
                        }) => {
                            tracing::warn!(entry = %entry_name, "device node skipped: mknod not permitted");
                            stats.skipped_devices += 1;
                            return Ok(());
                        }
                        other => other,
                    }
                }
            }
        }
        other => {
            tracing::warn!(entry = %entry_name, kind = ?other, "unsupported entry type skipped");
            return Ok(());
        }
    };
    match result {
        Ok(logical) => {
            record(created, &logical);
            Ok(())
        }
        Err(RootError::Ignored { path, ignored }) => {
            tracing::debug!(entry = %path, %ignored, "entry in an ignored path skipped");
            stats.ignored += 1;
            Ok(())
        }
        Err(e) => Err(rootfail(e, &entry_name)),
    }
}

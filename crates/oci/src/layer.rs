//! The streaming layer writer: tar → compressor → blob store, with the diffID (sha256 of the
//! uncompressed tar) and the digest (sha256 of the compressed blob) computed in the same pass.
//!
//! ```text
//! entries ─► tar encoder ─► 1 MiB chunks ─┬─► hash thread (diffID, CRC-32)
//!                                         └─► gzip jobs | zstd | none ─► sink thread:
//!                                             BlobWriter (digest, file) ─► rename
//! ```
//!
//! The calling thread only encodes tar; the stages are in [`pipeline`].
//!
//! Entries are written in the order they are appended: the writer streams and does not sort.
//! Callers that want reproducible layers (the snapshot differ does) append in sorted path order.
//!
//! Header format follows what Docker's archive package writes (Go `archive/tar` with
//! `FormatPAX`): a ustar header with every numeric field as zero-padded octal, empty uname and
//! gname, the mode field holding only permission and setuid/setgid/sticky bits, mtime truncated
//! to whole seconds, directory names ending in `/`, and a PAX extended header (typeflag `x`)
//! only when a value does not fit the ustar fields: a path or link target longer than 100 bytes
//! or not ASCII, uid/gid above 0o7777777, a size of 8 GiB or more, a negative or huge mtime, or
//! extended attributes (`SCHILY.xattr.<name>`, as GNU tar and Go read them). Sparse files are
//! never written sparse (the tar crate's sparse writing is not used).

use crate::blobstore::{BlobError, BlobStore};
use crate::digest::Digest;
use pipeline::{Mode, Pipeline};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

mod pipeline;

/// Errors of the layer writer.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("writing layer entry {path:?}: {source}")]
    Write {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading content of layer entry {path:?}: {source}")]
    Read {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {path:?}: content ended after {found} of {expected} bytes (file changed while the layer was written?)")]
    ShortRead {
        path: String,
        expected: u64,
        found: u64,
    },
    #[error("invalid layer entry path {path:?}: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("finishing the layer: {0}")]
    Finish(#[source] io::Error),
    #[error("publishing the layer blob: {0}")]
    Blob(#[from] BlobError),
    #[error("zstd compression requested but kiln-oci was built without the `zstd` feature")]
    ZstdUnavailable,
    #[error("invalid compression level {level} for {algorithm}")]
    InvalidLevel { algorithm: &'static str, level: i64 },
}

/// How a layer is compressed. The backend is pinned (flate2 with zlib-rs; libzstd through the
/// `zstd` crate): compressed bytes, and so digests, depend on backend and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (RFC 1952) at `level` 0..=9; header with mtime 0, no file name, OS 255 (unknown).
    /// The deflate stream is made of independent 1 MiB chunks, each ended by a sync flush, so
    /// chunks compress in parallel and the bytes are the same whatever the thread count. A
    /// chunk that does not compress (a cheap level-1 probe of 1/16 of it says so, or its
    /// deflate output is not smaller) is written as deflate stored blocks instead: faster and
    /// smaller for random or already-compressed data, and readable by any gzip decoder.
    Gzip { level: u32 },
    /// zstd at `level` 1..=22 (needs the `zstd` feature).
    Zstd { level: i32 },
    /// An uncompressed tar (digest == diffID).
    None,
}

impl Compression {
    /// The media type suffix of this compression: `+gzip`, `+zstd` or empty.
    pub fn media_type_suffix(&self) -> &'static str {
        match self {
            Compression::Gzip { .. } => "+gzip",
            Compression::Zstd { .. } => "+zstd",
            Compression::None => "",
        }
    }
}

impl Default for Compression {
    /// gzip at level 6, what `compress/gzip.DefaultCompression` (Docker, Kaniko) uses.
    fn default() -> Self {
        Compression::Gzip { level: 6 }
    }
}

/// Options of a layer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerOptions {
    /// `--reproducible`: every entry's mtime is replaced by this value (seconds since the epoch)
    /// at write time, so no second rewriting pass is needed.
    pub reproducible_mtime: Option<i64>,
}

/// Metadata of one entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// Permission bits plus setuid/setgid/sticky (`0o7777`); file-type bits are ignored.
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    /// Modification time, seconds since the epoch (sub-second parts are dropped, as Docker does).
    pub mtime: i64,
    /// Extended attributes (name, value), written as PAX `SCHILY.xattr.<name>` records, sorted.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Which device an [`LayerWriter::append_device`] entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

/// What a finished layer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the blob as stored (compressed).
    pub digest: Digest,
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids` entry).
    pub diff_id: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Size of the uncompressed tar in bytes.
    pub uncompressed_size: u64,
    /// The compression used.
    pub compression: Compression,
    /// Number of entries appended (PAX headers not counted).
    pub entries: u64,
}

const BLOCK: usize = 512;
/// Largest value of an 8-byte octal field (7 digits + NUL).
const MAX_OCTAL_8: u64 = 0o7777777;
/// Largest value of a 12-byte octal field (11 digits + NUL).
const MAX_OCTAL_12: u64 = 0o77777777777;

/// A layer being written. Append entries, then [`LayerWriter::finish`]. Dropped without
/// finishing, nothing is published (the blob store removes its temporary file).
pub struct LayerWriter {
    tar: tar::Builder<Pipeline>,
    compression: Compression,
    opts: LayerOptions,
    entries: u64,
    buf: Vec<u8>,
}

impl LayerWriter {
    /// Starts a layer that will be published into `store`, compressing on all cores.
    pub fn new(
        store: &BlobStore,
        compression: Compression,
        opts: LayerOptions,
    ) -> Result<Self, LayerError> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
        Self::with_threads(store, compression, opts, threads)
    }

    /// Like [`LayerWriter::new`] with an explicit number of compression threads (gzip only;
    /// the output bytes do not depend on it).
    pub fn with_threads(
        store: &BlobStore,
        compression: Compression,
        opts: LayerOptions,
        threads: usize,
    ) -> Result<Self, LayerError> {
        let blob = store.writer()?;
        let mode = match compression {
            Compression::Gzip { level } => {
                if level > 9 {
                    return Err(LayerError::InvalidLevel {
                        algorithm: "gzip",
                        level: level.into(),
                    });
                }
                Mode::Gzip {
                    level,
                    threads: threads.max(1),
                }
            }
            #[cfg(feature = "zstd")]
            Compression::Zstd { level } => {
                if !(1..=22).contains(&level) {
                    return Err(LayerError::InvalidLevel {
                        algorithm: "zstd",
                        level: level.into(),
                    });
                }
                Mode::Zstd { level }
            }
            #[cfg(not(feature = "zstd"))]
            Compression::Zstd { .. } => return Err(LayerError::ZstdUnavailable),
            Compression::None => Mode::None,
        };
        let pipe = Pipeline::start(blob, mode).map_err(LayerError::Finish)?;
        let mut tar = tar::Builder::new(pipe);
        // Never write sparse entries: readers disagree on GNU sparse formats.
        tar.sparse(false);
        Ok(LayerWriter {
            tar,
            compression,
            opts,
            entries: 0,
            buf: vec![0; 256 * 1024],
        })
    }

    /// Appends a directory (`path/`).
    pub fn append_dir(&mut self, path: &Path, meta: &EntryMeta) -> Result<(), LayerError> {
        let mut name = tar_name(path)?;
        if !name.ends_with(b"/") {
            name.push(b'/');
        }
        self.header(&name, b'5', meta, 0, None, None)
    }

    /// Appends a regular file of `size` bytes read from `content`. Exactly `size` bytes are
    /// written: a longer reader is cut, a shorter one is an error (the archive would be corrupt).
    pub fn append_file(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        content: &mut dyn Read,
        size: u64,
    ) -> Result<(), LayerError> {
        let name = tar_name(path)?;
        self.header(&name, b'0', meta, size, None, None)?;
        let mut left = size;
        while left > 0 {
            let want = left.min(self.buf.len() as u64) as usize;
            let n = match content.read(&mut self.buf[..want]) {
                Ok(0) => {
                    return Err(LayerError::ShortRead {
                        path: lossy(&name),
                        expected: size,
                        found: size - left,
                    })
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(LayerError::Read {
                        path: lossy(&name),
                        source,
                    })
                }
            };
            self.tar
                .get_mut()
                .write_all(&self.buf[..n])
                .map_err(|source| LayerError::Write {
                    path: lossy(&name),
                    source,
                })?;
            left -= n as u64;
        }
        self.pad(size, &name)
    }

    /// Appends a symbolic link; `target` is stored exactly as given.
    pub fn append_symlink(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        target: &Path,
    ) -> Result<(), LayerError> {
        let name = tar_name(path)?;
        self.header(
            &name,
            b'2',
            meta,
            0,
            Some(target.as_os_str().as_bytes()),
            None,
        )
    }

    /// Appends a hard link to `target`, an earlier entry of this layer (or of a lower layer),
    /// as a path relative to the layer root.
    pub fn append_hardlink(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        target: &Path,
    ) -> Result<(), LayerError> {
        let name = tar_name(path)?;
        let target = tar_name(target)?;
        self.header(&name, b'1', meta, 0, Some(&target), None)
    }

    /// Appends a FIFO.
    pub fn append_fifo(&mut self, path: &Path, meta: &EntryMeta) -> Result<(), LayerError> {
        let name = tar_name(path)?;
        self.header(&name, b'6', meta, 0, None, None)
    }

    /// Appends a character or block device.
    pub fn append_device(
        &mut self,
        path: &Path,
        meta: &EntryMeta,
        kind: DeviceKind,
        major: u32,
        minor: u32,
    ) -> Result<(), LayerError> {
        let name = tar_name(path)?;
        let flag = match kind {
            DeviceKind::Char => b'3',
            DeviceKind::Block => b'4',
        };
        self.header(&name, flag, meta, 0, None, Some((major, minor)))
    }

    /// Appends a whiteout for `path` (deleted in this layer): an empty file `dir/.wh.<name>`
    /// (OCI image-spec layer.md "Whiteouts").
    pub fn append_whiteout(&mut self, path: &Path) -> Result<(), LayerError> {
        let name = tar_name(path)?;
        let (dir, base) = match name.iter().rposition(|&b| b == b'/') {
            Some(i) => (&name[..=i], &name[i + 1..]),
            None => (&name[..0], &name[..]),
        };
        let mut wh = dir.to_vec();
        wh.extend_from_slice(b".wh.");
        wh.extend_from_slice(base);
        self.header(&wh, b'0', &EntryMeta::default(), 0, None, None)
    }

    /// Appends an opaque whiteout for directory `dir`: `dir/.wh..wh..opq` (the lower layers'
    /// children of `dir` are hidden; this layer's are kept).
    pub fn append_opaque(&mut self, dir: &Path) -> Result<(), LayerError> {
        let mut name = tar_name(dir)?;
        name.extend_from_slice(b"/.wh..wh..opq");
        self.header(&name, b'0', &EntryMeta::default(), 0, None, None)
    }

    /// Entries appended so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the end-of-archive marker, flushes the compressor and publishes the blob.
    pub fn finish(self) -> Result<LayerInfo, LayerError> {
        let pipe = self.tar.into_inner().map_err(LayerError::Finish)?;
        let done = pipe.finish().map_err(LayerError::Finish)?;
        let (digest, size) = done.blob.commit()?;
        Ok(LayerInfo {
            digest,
            diff_id: done.diff_id,
            size,
            uncompressed_size: done.uncompressed_size,
            compression: self.compression,
            entries: self.entries,
        })
    }

    fn pad(&mut self, size: u64, name: &[u8]) -> Result<(), LayerError> {
        let rem = (size % BLOCK as u64) as usize;
        if rem != 0 {
            let zeros = [0u8; BLOCK];
            self.tar
                .get_mut()
                .write_all(&zeros[..BLOCK - rem])
                .map_err(|source| LayerError::Write {
                    path: lossy(name),
                    source,
                })?;
        }
        Ok(())
    }

    /// Writes the (PAX, if needed, and) ustar header of one entry.
    fn header(
        &mut self,
        name: &[u8],
        typeflag: u8,
        meta: &EntryMeta,
        size: u64,
        link: Option<&[u8]>,
        device: Option<(u32, u32)>,
    ) -> Result<(), LayerError> {
        let mtime = self.opts.reproducible_mtime.unwrap_or(meta.mtime);
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if name.len() > 100 || !name.is_ascii() {
            pax.push(("path".into(), name.to_vec()));
        }
        if let Some(l) = link {
            if l.len() > 100 || !l.is_ascii() {
                pax.push(("linkpath".into(), l.to_vec()));
            }
        }
        if meta.uid > MAX_OCTAL_8 {
            pax.push(("uid".into(), meta.uid.to_string().into_bytes()));
        }
        if meta.gid > MAX_OCTAL_8 {
            pax.push(("gid".into(), meta.gid.to_string().into_bytes()));
        }
        if size > MAX_OCTAL_12 {
            pax.push(("size".into(), size.to_string().into_bytes()));
        }
        if mtime < 0 || mtime as u64 > MAX_OCTAL_12 {
            pax.push(("mtime".into(), mtime.to_string().into_bytes()));
        }
        for (k, v) in &meta.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        if !pax.is_empty() {
            pax.sort();
            let mut data = Vec::new();
            for (k, v) in &pax {
                pax_record(&mut data, k.as_bytes(), v);
            }
            // Go names the extended header `<dir>/PaxHeaders.0/<base>`; readers ignore it.
            let bare = name.strip_suffix(b"/").unwrap_or(name);
            let (dir, base) = match bare.iter().rposition(|&b| b == b'/') {
                Some(i) => (&bare[..=i], &bare[i + 1..]),
                None => (&bare[..0], bare),
            };
            let mut pname = dir.to_vec();
            pname.extend_from_slice(b"PaxHeaders.0/");
            pname.extend_from_slice(base);
            let h = ustar_block(&pname, b'x', 0, 0, 0, data.len() as u64, 0, None, None);
            let w = self.tar.get_mut();
            w.write_all(&h)
                .and_then(|_| w.write_all(&data))
                .map_err(|source| LayerError::Write {
                    path: lossy(name),
                    source,
                })?;
            self.pad(data.len() as u64, name)?;
        }
        let h = ustar_block(
            name,
            typeflag,
            meta.mode & 0o7777,
            meta.uid.min(MAX_OCTAL_8),
            meta.gid.min(MAX_OCTAL_8),
            size.min(MAX_OCTAL_12),
            mtime.clamp(0, MAX_OCTAL_12 as i64) as u64,
            link,
            device,
        );
        self.tar
            .get_mut()
            .write_all(&h)
            .map_err(|source| LayerError::Write {
                path: lossy(name),
                source,
            })?;
        self.entries += 1;
        Ok(())
    }
}

/// One PAX record: `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

/// Writes `v` as zero-padded octal filling `field` but its last byte (NUL).
fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0width$o}", v, width = field.len() - 1);
    let b = s.as_bytes();
    let n = field.len() - 1;
    field[..n].copy_from_slice(&b[b.len() - n..]);
    field[n] = 0;
}

#[allow(clippy::too_many_arguments)]
fn ustar_block(
    name: &[u8],
    typeflag: u8,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    mtime: u64,
    link: Option<&[u8]>,
    device: Option<(u32, u32)>,
) -> [u8; BLOCK] {
    let mut h = [0u8; BLOCK];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], mode.into());
    octal(&mut h[108..116], uid);
    octal(&mut h[116..124], gid);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = typeflag;
    if let Some(l) = link {
        let n = l.len().min(100);
        h[157..157 + n].copy_from_slice(&l[..n]);
    }
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let (major, minor) = device.unwrap_or((0, 0));
    octal(&mut h[329..337], major.into());
    octal(&mut h[337..345], minor.into());
    // Checksum: sum of all bytes with the checksum field as spaces; 6 octal digits, NUL, space.
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}");
    h[148..154].copy_from_slice(s.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    h
}

/// The archive name of `path`: relative (no leading `/` or `./`), no empty, `.` or `..`
/// components.
fn tar_name(path: &Path) -> Result<Vec<u8>, LayerError> {
    let bytes = path.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    for comp in bytes.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => continue,
            b".." => {
                return Err(LayerError::InvalidPath {
                    path: lossy(bytes),
                    reason: "`..` component",
                })
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    if out.is_empty() {
        return Err(LayerError::InvalidPath {
            path: lossy(bytes),
            reason: "empty path (the layer root itself is not an entry)",
        });
    }
    Ok(out)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn meta(mode: u32) -> EntryMeta {
        EntryMeta {
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            xattrs: vec![],
        }
    }

    fn sample(w: &mut LayerWriter) {
        w.append_dir(Path::new("/etc"), &meta(0o755)).unwrap();
        let body = b"root:x:0:0::/root:/bin/sh\n";
        w.append_file(
            Path::new("etc/passwd"),
            &meta(0o644),
            &mut &body[..],
            body.len() as u64,
        )
        .unwrap();
        let long = format!("d/{}", "x".repeat(150));
        w.append_file(Path::new(&long), &meta(0o600), &mut &b"long"[..], 4)
            .unwrap();
        w.append_symlink(Path::new("bin/sh"), &meta(0o777), Path::new("/bin/busybox"))
            .unwrap();
        w.append_hardlink(Path::new("etc/pw2"), &meta(0o644), Path::new("etc/passwd"))
            .unwrap();
        let mut m = meta(0o4755);
        m.uid = 3_000_000;
        m.xattrs = vec![("user.k".into(), b"v\0w".to_vec())];
        w.append_file(Path::new("usr/bin/su"), &m, &mut &b"x"[..], 1)
            .unwrap();
        w.append_whiteout(Path::new("var/old")).unwrap();
        w.append_opaque(Path::new("opt")).unwrap();
        w.append_fifo(Path::new("run/fifo"), &meta(0o600)).unwrap();
        w.append_file(
            Path::new(OsStr::from_bytes(b"bad\xffname")),
            &meta(0o644),
            &mut &b""[..],
            0,
        )
        .unwrap();
    }

    fn roundtrip(c: Compression) {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = LayerWriter::new(&store, c, LayerOptions::default()).unwrap();
        sample(&mut w);
        let info = w.finish().unwrap();
        let blob = std::fs::read(store.path(&info.digest)).unwrap();
        assert_eq!(Digest::of(&blob), info.digest);
        assert_eq!(blob.len() as u64, info.size);
        let tar = match c {
            Compression::Gzip { .. } => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(&blob[..])
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
            #[cfg(feature = "zstd")]
            Compression::Zstd { .. } => zstd::stream::decode_all(&blob[..]).unwrap(),
            _ => blob.clone(),
        };
        assert_eq!(Digest::of(&tar), info.diff_id);
        assert_eq!(tar.len() as u64, info.uncompressed_size);
        assert_eq!(info.entries, 10);

        let mut ar = tar::Archive::new(&tar[..]);
        let mut seen = Vec::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path_bytes().into_owned();
            let h = e.header().clone();
            let link = e.link_name_bytes().map(|l| l.into_owned());
            let mut xattrs = Vec::new();
            if let Some(exts) = e.pax_extensions().unwrap() {
                for x in exts {
                    let x = x.unwrap();
                    if let Some(k) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                        xattrs.push((k.to_string(), x.value_bytes().to_vec()));
                    }
                }
            }
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            assert!(h.username_bytes().unwrap().is_empty());
            seen.push((
                path,
                h.entry_type().as_byte(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                body,
                link,
                xattrs,
            ));
        }
        let long = format!("d/{}", "x".repeat(150)).into_bytes();
        assert_eq!(seen.len(), 10);
        assert_eq!(seen[0].0, b"etc/");
        assert_eq!(seen[0].1, b'5');
        assert_eq!(seen[1].4, b"root:x:0:0::/root:/bin/sh\n");
        assert_eq!(seen[2].0, long);
        assert_eq!(seen[2].4, b"long");
        assert_eq!(seen[3].5.as_deref(), Some(&b"/bin/busybox"[..]));
        assert_eq!(seen[4].1, b'1');
        assert_eq!(seen[4].5.as_deref(), Some(&b"etc/passwd"[..]));
        assert_eq!(seen[5].2, 0o4755);
        assert_eq!(seen[5].3, 3_000_000);
        assert_eq!(seen[5].6, vec![("user.k".to_string(), b"v\0w".to_vec())]);
        assert_eq!(seen[6].0, b"var/.wh.old");
        assert_eq!(seen[7].0, b"opt/.wh..wh..opq");
        assert_eq!(seen[8].1, b'6');
        assert_eq!(seen[9].0, b"bad\xffname");
    }

    #[test]
    fn gzip_layer_digests_and_entries() {
        roundtrip(Compression::Gzip { level: 6 });
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_layer_digests_and_entries() {
        roundtrip(Compression::Zstd { level: 3 });
    }

    #[cfg(not(feature = "zstd"))]
    #[test]
    fn zstd_without_feature_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let r = LayerWriter::new(
            &store,
            Compression::Zstd { level: 3 },
            LayerOptions::default(),
        );
        assert!(matches!(r, Err(LayerError::ZstdUnavailable)));
    }

    #[test]
    fn uncompressed_layer_digest_is_diff_id() {
        roundtrip(Compression::None);
    }

    #[test]
    fn same_input_same_bytes_and_reproducible_mtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mk = |o: LayerOptions| {
            let mut w = LayerWriter::new(&store, Compression::Gzip { level: 1 }, o).unwrap();
            sample(&mut w);
            w.finish().unwrap()
        };
        let a = mk(LayerOptions::default());
        let b = mk(LayerOptions::default());
        assert_eq!(a, b);
        let r = mk(LayerOptions {
            reproducible_mtime: Some(0),
        });
        assert_ne!(r.diff_id, a.diff_id);
        let blob = store.read(&r.digest).unwrap();
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&blob[..]));
        for e in ar.entries().unwrap() {
            assert_eq!(e.unwrap().header().mtime().unwrap(), 0);
        }
    }

    #[test]
    fn parallel_gzip_bytes_do_not_depend_on_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        // 3.5 MiB of mixed content: several chunks and a partial one.
        let mut body = Vec::new();
        let mut x: u32 = 1;
        while body.len() < 3 * (1 << 20) + (1 << 19) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            if (x >> 7) & 3 == 0 {
                body.extend_from_slice(b"abcabcabc");
            } else {
                body.extend_from_slice(&x.to_le_bytes());
            }
        }
        let mut infos = Vec::new();
        for threads in [1, 2, 4] {
            let mut w = LayerWriter::with_threads(
                &store,
                Compression::Gzip { level: 6 },
                LayerOptions::default(),
                threads,
            )
            .unwrap();
            sample(&mut w);
            w.append_file(
                Path::new("big"),
                &meta(0o644),
                &mut &body[..],
                body.len() as u64,
            )
            .unwrap();
            infos.push(w.finish().unwrap());
        }
        assert_eq!(infos[0], infos[1]);
        assert_eq!(infos[0], infos[2]);
        let blob = store.read(&infos[0].digest).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(Digest::of(&tar), infos[0].diff_id);
        if let Ok(out) = std::process::Command::new("gzip")
            .arg("-t")
            .arg(store.path(&infos[0].digest))
            .output()
        {
            assert!(
                out.status.success(),
                "gzip -t: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        } else {
            println!("skipped: gzip(1) not installed for the cross-check");
        }
    }

    /// Regression test for the stored-block path: a layer of random bytes (the 1gb-file bench
    /// workload in small) with compressible entries around it is the same blob for any thread
    /// count, decompresses to the tar, passes `gzip -t`, and is barely bigger than the tar.
    #[test]
    fn incompressible_content_is_stored_and_identical_for_any_thread_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut noise = Vec::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        while noise.len() < 5 * (1 << 20) / 2 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.extend_from_slice(&x.to_le_bytes());
        }
        let text: Vec<u8> = (0..40_000)
            .flat_map(|i| format!("{i} text\n").into_bytes())
            .collect();
        let mut infos = Vec::new();
        for threads in [1, 2, 3] {
            let mut w = LayerWriter::with_threads(
                &store,
                Compression::Gzip { level: 6 },
                LayerOptions::default(),
                threads,
            )
            .unwrap();
            sample(&mut w);
            for (name, body) in [("a.txt", &text), ("noise", &noise), ("z.txt", &text)] {
                w.append_file(
                    Path::new(name),
                    &meta(0o644),
                    &mut &body[..],
                    body.len() as u64,
                )
                .unwrap();
            }
            infos.push(w.finish().unwrap());
        }
        assert_eq!(infos[0], infos[1]);
        assert_eq!(infos[0], infos[2]);
        let info = &infos[0];
        let blob = store.read(&info.digest).unwrap();
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(Digest::of(&tar), info.diff_id);
        // The noise is stored (5 bytes per 64 KiB block), the text compressed: the blob is
        // smaller than the tar, and not bigger than the noise plus a quarter of the rest.
        assert!(info.size < info.uncompressed_size);
        let rest = info.uncompressed_size - noise.len() as u64;
        assert!(
            info.size < noise.len() as u64 + noise.len() as u64 / 1000 + rest / 4,
            "blob {} bytes for {} bytes of tar",
            info.size,
            info.uncompressed_size
        );
        match std::process::Command::new("gzip")
            .arg("-t")
            .arg(store.path(&info.digest))
            .output()
        {
            Ok(out) => assert!(
                out.status.success(),
                "gzip -t: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(_) => println!("skipped: gzip(1) not installed for the cross-check"),
        }
    }

    #[test]
    fn unfinished_gzip_layer_publishes_nothing_and_stops_its_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = LayerWriter::with_threads(
            &store,
            Compression::Gzip { level: 6 },
            LayerOptions::default(),
            2,
        )
        .unwrap();
        let body = vec![7u8; 3 << 20];
        w.append_file(
            Path::new("f"),
            &meta(0o644),
            &mut &body[..],
            body.len() as u64,
        )
        .unwrap();
        drop(w);
        // The sink thread has been joined by the drop: its temporary file is already gone.
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn short_content_is_an_error_and_nothing_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = LayerWriter::new(&store, Compression::None, LayerOptions::default()).unwrap();
        let err = w
            .append_file(Path::new("f"), &meta(0o644), &mut &b"abc"[..], 10)
            .unwrap_err();
        assert!(
            matches!(err, LayerError::ShortRead { found: 3, .. }),
            "{err}"
        );
        drop(w);
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/sha256"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn rejects_dotdot_and_empty_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = LayerWriter::new(&store, Compression::None, LayerOptions::default()).unwrap();
        assert!(w.append_dir(Path::new("a/../b"), &meta(0o755)).is_err());
        assert!(w.append_dir(Path::new("/"), &meta(0o755)).is_err());
        assert!(w.append_dir(Path::new("./"), &meta(0o755)).is_err());
    }

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", &[b'a'; 5]);
        assert_eq!(out, b"14 path=aaaaa\n");
        // 4 + 93 + 3 = 100 bytes needs a 3-digit length: the record grows to 100 exactly.
        for n in [90usize, 92, 93, 94, 995] {
            out.clear();
            pax_record(&mut out, b"path", &vec![b'a'; n]);
            let sp = out.iter().position(|&b| b == b' ').unwrap();
            let len: usize = std::str::from_utf8(&out[..sp]).unwrap().parse().unwrap();
            assert_eq!(len, out.len(), "value of {n} bytes");
        }
    }
}

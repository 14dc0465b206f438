//! What ADD does beyond COPY: a local tar archive (plain, or compressed with gzip, bzip2, xz
//! or zstd, the set docker's archive detection knows) is extracted into the destination
//! directory, through kiln-rootfs's confined unpacker (a `../` or absolute entry, or a symlink
//! pointing out, stays inside the rootfs). Like docker, the file's *content* decides, not its
//! name.
//!
//! gzip and zstd are read by kiln-rootfs itself (they are the layer compressions of the OCI
//! image spec, layer.md). bzip2 and xz are not layer compressions, so they are decoded here,
//! streaming, and the unpacker receives the plain tar.

use kiln_rootfs::{unpack_layer, Root, RootError, UnpackError, UnpackOptions};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

/// What a source file is, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// Not an archive: copied as a file.
    NotArchive,
    /// tar, plain or compressed with gzip, bzip2, xz or zstd: extracted.
    Tar,
}

/// The memory an xz stream may ask for, in KiB: twice what `xz -9` (a 64 MiB dictionary)
/// needs. An xz header can declare a dictionary of up to 1.5 GiB (xz-file-format.txt 5.3.1);
/// past this limit the archive is refused with a clear error instead of growing the build's
/// memory to whatever the file says.
const XZ_MEM_LIMIT_KIB: u32 = 128 * 1024;

/// A compression decoded here before the tar reaches the unpacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outer {
    Bzip2,
    Xz,
}

impl Outer {
    /// By magic bytes, as docker's archive detection does. bzip2: `BZh`, the block size
    /// `1`-`9`, then a block magic (0x314159265359, pi in BCD) or the end-of-stream magic
    /// (0x177245385090, sqrt(pi)); docker looks at `BZh` alone, but a text file that merely
    /// starts with "BZh" fails to decode there and is copied, which is what kiln does with it
    /// without trying. xz: the 6-byte header magic (xz-file-format.txt 2.1.1.1).
    fn detect(head: &[u8]) -> Option<Outer> {
        const BLOCK: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
        const END: [u8; 6] = [0x17, 0x72, 0x45, 0x38, 0x50, 0x90];
        if head.len() >= 10
            && head.starts_with(b"BZh")
            && (b'1'..=b'9').contains(&head[3])
            && (head[4..10] == BLOCK || head[4..10] == END)
        {
            return Some(Outer::Bzip2);
        }
        if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            return Some(Outer::Xz);
        }
        None
    }

    fn name(self) -> &'static str {
        match self {
            Outer::Bzip2 => "bzip2",
            Outer::Xz => "xz",
        }
    }

    /// A streaming decoder: memory is bounded by the format (bzip2: 900 kB blocks, about
    /// 3.6 MB of state) or by [`XZ_MEM_LIMIT_KIB`], never by the archive's size.
    /// Concatenated streams (pbzip2, `xz -T`, `cat a.xz b.xz`) are read through, as
    /// bzip2(1) and xz(1) do.
    fn decoder<'a>(self, file: File) -> Box<dyn Read + Send + 'a> {
        let buffered = BufReader::with_capacity(64 * 1024, file);
        let inner: Box<dyn Read + Send + 'a> = match self {
            Outer::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(buffered)),
            Outer::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(
                buffered,
                true,
                XZ_MEM_LIMIT_KIB,
            )),
        };
        Box::new(Labelled {
            inner,
            format: self,
        })
    }
}

/// Why a bzip2 or xz stream could not be read; reaches the user inside the `io::Error` the
/// decoder returns, after the file name and Dockerfile line the engine puts in front.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The stream ends before its end marker.
    #[error("the {format} stream is truncated ({source})")]
    Truncated {
        format: &'static str,
        #[source]
        source: io::Error,
    },
    /// A checksum, header or coded symbol is wrong.
    #[error("the {format} stream is corrupt: {source}")]
    Corrupt {
        format: &'static str,
        #[source]
        source: io::Error,
    },
    /// The stream asks for more memory than kiln allows (a huge xz dictionary).
    #[error("the {format} stream needs more than {limit_mib} MiB to decode: {source}")]
    TooMuchMemory {
        format: &'static str,
        limit_mib: u32,
        #[source]
        source: io::Error,
    },
    /// The stream uses a feature the decoder does not implement (a filter or check type).
    #[error("the {format} stream uses a feature kiln cannot decode: {source}")]
    Unsupported {
        format: &'static str,
        #[source]
        source: io::Error,
    },
    /// The operating system failed to read the file.
    #[error("reading the {format} stream: {source}")]
    Read {
        format: &'static str,
        #[source]
        source: io::Error,
    },
}

/// Puts the compression's name (and what went wrong) into the decoder's errors.
struct Labelled<R> {
    inner: R,
    format: Outer,
}

impl<R: Read> Read for Labelled<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).map_err(|source| {
            let kind = source.kind();
            let format = self.format.name();
            let err = match kind {
                // Callers retry an interrupted read: hand it back untouched.
                io::ErrorKind::Interrupted => return source,
                // An error of the operating system (EIO reading the file): not the stream's.
                _ if source.raw_os_error().is_some() => DecodeError::Read { format, source },
                io::ErrorKind::UnexpectedEof => DecodeError::Truncated { format, source },
                io::ErrorKind::OutOfMemory => DecodeError::TooMuchMemory {
                    format,
                    limit_mib: XZ_MEM_LIMIT_KIB / 1024,
                    source,
                },
                io::ErrorKind::Unsupported => DecodeError::Unsupported { format, source },
                // The decoders report bad data as InvalidData, InvalidInput or Other
                // (lzma-rust2's "dist overflow"): all of it is a damaged stream.
                _ => DecodeError::Corrupt { format, source },
            };
            io::Error::new(kind, err)
        })
    }
}

/// Reads into `buf` until it is full or the stream ends; the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The bzip2/xz compression of the file at `path`, by its first bytes.
fn outer_compression(path: &Path) -> io::Result<Option<Outer>> {
    let mut head = [0u8; 10];
    let n = read_up_to(&mut File::open(path)?, &mut head)?;
    Ok(Outer::detect(&head[..n]))
}

/// Reads a file's first bytes (following decompression for gzip, bzip2, xz and zstd) to see
/// whether docker would extract it: a tar header must follow.
///
/// A bzip2 or xz stream that fails to decode is an error (a [`DecodeError`] inside the
/// `io::Error`), not a file to copy: docker copies an archive whose first block is broken as
/// a file and fails on one broken further in; kiln fails on both, so a damaged download is
/// never shipped silently. A stream that decodes to something other than a tar (a `.txt.xz`)
/// is copied, as docker does.
pub fn sniff(path: &Path) -> io::Result<ArchiveKind> {
    let mut block = [0u8; 512];
    if let Some(outer) = outer_compression(path)? {
        let mut r = outer.decoder(File::open(path)?);
        let got = read_up_to(&mut r, &mut block)?;
        // The unpacker looks for gzip/zstd magic again in what it is given (it cannot tell a
        // layer from an ADD source). docker decompresses once, so a compressed stream inside
        // the bzip2/xz one is no tar to it: copied, and never handed to the unpacker.
        let nested =
            block.starts_with(&[0x1f, 0x8b]) || block.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        if got == 512 && !nested && is_tar_header(&block) {
            return Ok(ArchiveKind::Tar);
        }
        // Not a tar, or a damaged first block: a bzip2 block's CRC is checked only when the
        // whole block has been produced, so its first bytes may be garbage with no error yet.
        // Decoding to the end (bounded memory, output discarded) tells a damaged archive,
        // an error, from a compressed file that is simply no tar, which is copied.
        io::copy(&mut r, &mut io::sink())?;
        return Ok(ArchiveKind::NotArchive);
    }
    let mut r = kiln_rootfs::decompress(File::open(path)?)?;
    let got = match read_up_to(&mut r, &mut block) {
        Ok(got) => got,
        // A gzip stream that is not a tar, or is corrupt: not something docker extracts.
        Err(_) => return Ok(ArchiveKind::NotArchive),
    };
    Ok(if got == 512 && is_tar_header(&block) {
        ArchiveKind::Tar
    } else {
        ArchiveKind::NotArchive
    })
}

/// A ustar/GNU magic, or a header whose checksum field matches (v7 tar).
fn is_tar_header(b: &[u8; 512]) -> bool {
    if &b[257..262] == b"ustar" {
        return true;
    }
    let field = std::str::from_utf8(&b[148..156]).unwrap_or("");
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(x)
            }
        })
        .sum();
    sum == want && b[0] != 0
}

/// Why [`extract`] failed. The engine puts the source's name and the Dockerfile line in front.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The destination directory could not be made (or opened) inside the rootfs.
    #[error("creating the destination directory {dest:?}: {source}")]
    Dest {
        dest: PathBuf,
        #[source]
        source: RootError,
    },
    /// The archive file could not be opened or its first bytes read.
    #[error("reading {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The unpacker refused an entry, or the (decompressed) stream broke; a bzip2/xz stream
    /// error carries a [`DecodeError`].
    #[error(transparent)]
    Unpack(#[from] UnpackError),
}

/// Extracts `archive` into the directory `dest` (resolved inside `root`), decompressing
/// bzip2 and xz here and gzip/zstd in the unpacker, all streaming.
pub fn extract(root: &Root, archive: &Path, dest: &Path) -> Result<(), ExtractError> {
    let dest_err = |source| ExtractError::Dest {
        dest: dest.to_path_buf(),
        source,
    };
    let open_err = |source| ExtractError::Open {
        path: archive.to_path_buf(),
        source,
    };
    let dir = root
        .create_dir_all(dest, &kiln_rootfs::Meta::with_mode(0o755))
        .map_err(dest_err)?;
    let sub = Root::open(&dir)
        .map_err(dest_err)?
        .with_ownership(root.ownership().clone());
    let outer = outer_compression(archive).map_err(open_err)?;
    let f = File::open(archive).map_err(open_err)?;
    let reader: Box<dyn Read + Send> = match outer {
        Some(outer) => outer.decoder(f),
        None => Box::new(BufReader::new(f)),
    };
    // An archive given to ADD is not a layer: `.wh.` names are plain files there.
    let opts = UnpackOptions {
        whiteouts: false,
        ..UnpackOptions::default()
    };
    unpack_layer(&sub, reader, &opts)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let tar_path = tmp.path().join("a.bin");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "x", &b"hi"[..]).unwrap();
        std::fs::write(&tar_path, b.into_inner().unwrap()).unwrap();
        assert_eq!(sniff(&tar_path).unwrap(), ArchiveKind::Tar);
        let txt = tmp.path().join("a.tar");
        std::fs::write(&txt, "just text, named like an archive").unwrap();
        assert_eq!(sniff(&txt).unwrap(), ArchiveKind::NotArchive);
        // bzip2's magic with the start of a block and nothing else: a truncated stream is an
        // error naming the compression, not a file to copy.
        let bz = tmp.path().join("b");
        std::fs::write(&bz, b"BZh91AY&SY").unwrap();
        let err = sniff(&bz).unwrap_err().to_string();
        assert!(err.contains("bzip2 stream is truncated"), "{err}");
        // Text that merely starts like bzip2's magic is copied, as docker copies it.
        let text = tmp.path().join("c.tar.bz2");
        std::fs::write(&text, "BZh is how this note starts").unwrap();
        assert_eq!(sniff(&text).unwrap(), ArchiveKind::NotArchive);
    }

    /// A tar with a 0755 script, a 0640 file in a directory and a symlink, in archive order.
    fn sample_tar() -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, mode, data) in [
            ("bin/run.sh", 0o755, &b"#!/bin/sh\necho run\n"[..]),
            ("etc/app.conf", 0o640, &b"key=value\n"[..]),
        ] {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_cksum();
            b.append_data(&mut h, name, data).unwrap();
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "run", "bin/run.sh").unwrap();
        b.into_inner().unwrap()
    }

    /// bzip2 at level 1 (100 kB blocks), through the crate's encoder.
    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut enc = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        std::io::Write::write_all(&mut enc, data).unwrap();
        enc.finish().unwrap()
    }

    /// xz through the system `xz` (the decoder crate is built without its encoder); `None`,
    /// with a visible `skipped:` line, when xz is not installed.
    fn xz(data: &[u8]) -> Option<Vec<u8>> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let child = Command::new("xz")
            .args(["-z", "-c", "-6"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            println!("skipped: xz is not installed (apt-get install xz-utils)");
            return None;
        };
        let mut stdin = child.stdin.take().unwrap();
        let data = data.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&data));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(out.status.success());
        Some(out.stdout)
    }

    /// Bytes that do not compress (xorshift), so a stream cut in half still decodes its start.
    fn noise(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn sniffs_bzip2_and_xz_by_content() {
        let tmp = tempfile::tempdir().unwrap();
        let put = |name: &str, bytes: &[u8]| {
            let p = tmp.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        // Names say nothing: the tar.bz2 is called .txt, the text is called .tar.xz.
        assert_eq!(
            sniff(&put("a.txt", &bzip2(&sample_tar()))).unwrap(),
            ArchiveKind::Tar
        );
        // Compressed, but no tar inside: copied as the file it is (docker's isArchivePath).
        let notes = put("notes.bz2", &bzip2(b"just notes\n"));
        assert_eq!(sniff(&notes).unwrap(), ArchiveKind::NotArchive);
        // An empty bzip2 stream (magic + end-of-stream marker) decodes to nothing.
        assert_eq!(
            sniff(&put("empty.bz2", &bzip2(b""))).unwrap(),
            ArchiveKind::NotArchive
        );
        // docker decompresses once: a gzip tar inside bzip2 is no tar to it.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &sample_tar()).unwrap();
        let nested = put("nested.tar.gz.bz2", &bzip2(&gz.finish().unwrap()));
        assert_eq!(sniff(&nested).unwrap(), ArchiveKind::NotArchive);
        // A flipped byte inside the first block: corrupt (bzip2's block CRC).
        let mut bad = bzip2(&sample_tar());
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        let err = sniff(&put("bad.tar.bz2", &bad)).unwrap_err().to_string();
        assert!(err.contains("bzip2 stream"), "{err}");

        let Some(tar_xz) = xz(&sample_tar()) else {
            return;
        };
        assert_eq!(sniff(&put("b.bin", &tar_xz)).unwrap(), ArchiveKind::Tar);
        assert_eq!(
            sniff(&put("t.tar.xz", b"not xz at all")).unwrap(),
            ArchiveKind::NotArchive
        );
        let txt_xz = xz(b"plain text\n").unwrap();
        assert_eq!(
            sniff(&put("t.txt.xz", &txt_xz)).unwrap(),
            ArchiveKind::NotArchive
        );
        let cut = &tar_xz[..tar_xz.len() / 2];
        let err = sniff(&put("cut.tar.xz", cut)).unwrap_err().to_string();
        assert!(err.contains("xz stream is truncated"), "{err}");
        let mut bad = tar_xz.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x55;
        // xz decodes as it goes: the damage shows when sniffing or, past the first 512
        // bytes, when extracting (the LZMA2 decoder or the block's CRC64).
        let bad = put("bad.tar.xz", &bad);
        let err = match sniff(&bad) {
            Err(e) => e.to_string(),
            Ok(kind) => {
                assert_eq!(kind, ArchiveKind::Tar);
                let rootdir = tmp.path().join("root");
                std::fs::create_dir(&rootdir).unwrap();
                let root = Root::open(&rootdir).unwrap();
                extract(&root, &bad, Path::new("x"))
                    .unwrap_err()
                    .to_string()
            }
        };
        assert!(err.contains("xz stream is corrupt"), "{err}");
    }

    /// An xz block header declaring a 256 MiB dictionary (xz-file-format.txt 3.1, 5.3.1) is
    /// refused before the decoder allocates it.
    #[test]
    fn xz_dictionary_over_the_limit_is_refused() {
        let Some(mut bytes) = xz(&sample_tar()) else {
            return;
        };
        // Stream header (12 bytes), then the block header: size byte, flags, LZMA2's filter
        // id 0x21, property size 1, the dictionary byte, padding, CRC32 of all before it.
        let hdr_len = (usize::from(bytes[12]) + 1) * 4;
        assert_eq!(&bytes[14..16], &[0x21, 0x01], "one LZMA2 filter, no sizes");
        bytes[16] = 32; // 2^(32/2 + 12) = 256 MiB
        let mut crc = flate2::Crc::new();
        crc.update(&bytes[12..12 + hdr_len - 4]);
        bytes[12 + hdr_len - 4..12 + hdr_len].copy_from_slice(&crc.sum().to_le_bytes());
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("huge-dict.tar.xz");
        std::fs::write(&p, &bytes).unwrap();
        let err = sniff(&p).unwrap_err().to_string();
        assert!(
            err.contains("xz stream needs more than 128 MiB to decode"),
            "{err}"
        );
    }

    /// The extracted tree of a bzip2 and an xz tar: names, modes, contents, link target.
    #[test]
    fn extracts_bzip2_and_xz_tars() {
        let tmp = tempfile::tempdir().unwrap();
        let rootdir = tmp.path().join("root");
        std::fs::create_dir(&rootdir).unwrap();
        let root = Root::open(&rootdir).unwrap();
        let mut archives = vec![("a", tmp.path().join("x.tar.bz2"), bzip2(&sample_tar()))];
        if let Some(b) = xz(&sample_tar()) {
            archives.push(("b", tmp.path().join("y.tar.xz"), b));
        }
        for (dest, path, bytes) in &archives {
            std::fs::write(path, bytes).unwrap();
            extract(&root, path, Path::new(dest)).unwrap();
            let d = rootdir.join(dest);
            let mode = |p: &str| {
                std::os::unix::fs::PermissionsExt::mode(
                    &std::fs::symlink_metadata(d.join(p)).unwrap().permissions(),
                ) & 0o7777
            };
            assert_eq!(
                std::fs::read(d.join("bin/run.sh")).unwrap(),
                b"#!/bin/sh\necho run\n"
            );
            assert_eq!(mode("bin/run.sh"), 0o755);
            assert_eq!(
                std::fs::read(d.join("etc/app.conf")).unwrap(),
                b"key=value\n"
            );
            assert_eq!(mode("etc/app.conf"), 0o640);
            assert_eq!(
                std::fs::read_link(d.join("run")).unwrap(),
                Path::new("bin/run.sh")
            );
        }
    }

    /// The confined unpacker's rules hold for a decoded stream as for a plain tar: a symlink
    /// to `/` followed by an entry through it lands inside the destination, and `..` fails.
    #[test]
    fn bzip2_entries_stay_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let rootdir = tmp.path().join("root");
        std::fs::create_dir(&rootdir).unwrap();
        let root = Root::open(&rootdir).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, "up", "/").unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "up/escaped", &b"x"[..]).unwrap();
        let archive = tmp.path().join("s.tar.bz2");
        std::fs::write(&archive, bzip2(&b.into_inner().unwrap())).unwrap();
        extract(&root, &archive, Path::new("opt")).unwrap();
        assert_eq!(std::fs::read(rootdir.join("opt/escaped")).unwrap(), b"x");
        assert!(!tmp.path().join("escaped").exists());

        // tar::Builder refuses `..` names, so the header is written by hand.
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..12].copy_from_slice(b"../outside\0\0");
        h.set_size(1);
        h.set_mode(0o644);
        h.set_cksum();
        let mut raw = h.as_bytes().to_vec();
        raw.push(b'x');
        raw.resize(512 * 2, 0);
        raw.resize(512 * 4, 0);
        let archive = tmp.path().join("dotdot.tar.bz2");
        std::fs::write(&archive, bzip2(&raw)).unwrap();
        assert_eq!(sniff(&archive).unwrap(), ArchiveKind::Tar);
        let err = extract(&root, &archive, Path::new("opt2"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("escapes the rootfs"), "{err}");
        assert!(!rootdir.join("outside").exists() && !tmp.path().join("outside").exists());
    }

    /// A stream cut after its first blocks: sniffing sees a tar, extraction fails naming the
    /// compression; the bounded decoders never hold the whole archive.
    #[test]
    fn truncated_streams_fail_during_extraction() {
        let tmp = tempfile::tempdir().unwrap();
        let rootdir = tmp.path().join("root");
        std::fs::create_dir(&rootdir).unwrap();
        let root = Root::open(&rootdir).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let data = noise(600_000);
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "big.bin", &data[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut cases = vec![("bzip2", "big.tar.bz2", bzip2(&tar))];
        if let Some(x) = xz(&tar) {
            cases.push(("xz", "big.tar.xz", x));
        }
        for (format, name, bytes) in cases {
            let path = tmp.path().join(name);
            std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
            assert_eq!(sniff(&path).unwrap(), ArchiveKind::Tar, "{format}");
            let err = extract(&root, &path, Path::new(format))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("the {format} stream is truncated")),
                "{format}: {err}"
            );
        }
    }

    #[test]
    fn extracts_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let rootdir = tmp.path().join("root");
        std::fs::create_dir(&rootdir).unwrap();
        let root = Root::open(&rootdir).unwrap();
        let archive = tmp.path().join("x.tar");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "dir/f.txt", &b"abc"[..]).unwrap();
        std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
        extract(&root, &archive, Path::new("opt/x")).unwrap();
        assert_eq!(
            std::fs::read(rootdir.join("opt/x/dir/f.txt")).unwrap(),
            b"abc"
        );
    }
}

/// `ADD <url>`: the file name docker uses for the destination (last path segment of the URL).
pub fn url_file_name(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next()?;
    let after_scheme = path.split_once("://").map_or(path, |(_, r)| r);
    let (_, rest) = after_scheme.split_once('/')?;
    rest.rsplit('/')
        .next()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_string)
}

/// Downloads `url` to `to`, verifying `--checksum` (`sha256:<hex>`) when given.
pub fn download(url: &str, to: &Path, checksum: Option<&str>) -> Result<(), String> {
    // No total timeout (a large download may take long), but a connect timeout; redirects
    // followed up to 10, never from https to http.
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.previous().iter().any(|u| u.scheme() == "https")
            && attempt.url().scheme() == "http";
        if downgrade {
            attempt.error("refusing a redirect from https to http")
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")))
        .timeout(None)
        .connect_timeout(std::time::Duration::from_secs(30))
        .redirect(policy)
        .build()
        .map_err(|e| e.to_string())?;
    let mut resp = client
        .get(url)
        .send()
        .map_err(|e| format!("downloading {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("downloading {url}: HTTP {}", resp.status()));
    }
    let file = File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut hasher = kiln_oci::Hasher::wrap(file);
    io::copy(&mut resp, &mut hasher).map_err(|e| format!("downloading {url}: {e}"))?;
    let (digest, _, _) = hasher.finish();
    if let Some(want) = checksum {
        let want: kiln_oci::Digest = want
            .parse()
            .map_err(|e| format!("--checksum={want}: {e}"))?;
        if want != digest {
            return Err(format!(
                "checksum mismatch for {url}: expected {want}, got {digest}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn file_names_from_urls() {
        assert_eq!(
            url_file_name("https://example.com/a/b/tool.tar.gz?x=1").as_deref(),
            Some("tool.tar.gz")
        );
        assert_eq!(url_file_name("https://example.com/"), None);
        assert_eq!(url_file_name("http://h/x#frag").as_deref(), Some("x"));
    }
}

//! What ADD does beyond COPY: a local tar archive (plain, gzip or zstd) is extracted into the
//! destination directory, through kiln-rootfs's confined unpacker (a `../` or absolute entry,
//! or a symlink pointing out, stays inside the rootfs). Like docker, the file's *content*
//! decides, not its name.

use kiln_rootfs::{unpack_layer, Root, UnpackOptions};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// What a source file is, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// Not an archive: copied as a file.
    NotArchive,
    /// tar, tar+gzip or tar+zstd: extracted.
    Tar,
    /// A compressed stream kiln cannot read (bzip2, xz).
    Unsupported(&'static str),
}

/// Reads a file's first bytes (following decompression for gzip/zstd) to see whether docker
/// would extract it.
pub fn sniff(path: &Path) -> io::Result<ArchiveKind> {
    let mut head = [0u8; 6];
    let n = File::open(path)?.read(&mut head)?;
    let head = &head[..n];
    if head.starts_with(b"BZh") {
        return Ok(ArchiveKind::Unsupported("bzip2"));
    }
    if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Ok(ArchiveKind::Unsupported("xz"));
    }
    let mut r = kiln_rootfs::decompress(File::open(path)?)?;
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < 512 {
        match r.read(&mut block[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            // A gzip stream that is not a tar, or is corrupt: not something docker extracts.
            Err(_) => return Ok(ArchiveKind::NotArchive),
        }
    }
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

/// Extracts `archive` into the directory `dest` (resolved inside `root`).
pub fn extract(root: &Root, archive: &Path, dest: &Path) -> Result<(), String> {
    let dir = root
        .create_dir_all(dest, &kiln_rootfs::Meta::with_mode(0o755))
        .map_err(|e| e.to_string())?;
    let sub = Root::open(&dir)
        .map_err(|e| e.to_string())?
        .with_ownership(root.ownership().clone());
    let f = File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    // An archive given to ADD is not a layer: `.wh.` names are plain files there.
    let opts = UnpackOptions {
        whiteouts: false,
        ..UnpackOptions::default()
    };
    unpack_layer(&sub, io::BufReader::new(f), &opts)
        .map(|_| ())
        .map_err(|e| e.to_string())
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
        let bz = tmp.path().join("b");
        std::fs::write(&bz, b"BZh91AY&SY").unwrap();
        assert_eq!(sniff(&bz).unwrap(), ArchiveKind::Unsupported("bzip2"));
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

//! Shared helpers: a raw tar builder that can write any (malicious) header, and a sandbox with
//! sentinels next to the rootfs.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A tar stream built header by header, with no validation at all.
#[derive(Default)]
pub struct RawTar {
    pub buf: Vec<u8>,
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{:0w$o}", v, w = field.len() - 1);
    let b = s.as_bytes();
    let n = field.len() - 1;
    field[..n].copy_from_slice(&b[b.len() - n..]);
}

impl RawTar {
    pub fn new() -> Self {
        RawTar::default()
    }

    /// Appends a header (name cut to 100 bytes) and data padded to 512.
    pub fn raw(
        &mut self,
        name: &[u8],
        flag: u8,
        mode: u32,
        size: u64,
        link: &[u8],
        data: &[u8],
    ) -> &mut Self {
        let mut h = [0u8; 512];
        let n = name.len().min(100);
        h[..n].copy_from_slice(&name[..n]);
        octal(&mut h[100..108], mode.into());
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 1_600_000_000);
        h[156] = flag;
        let l = link.len().min(100);
        h[157..157 + l].copy_from_slice(&link[..l]);
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
        h[154] = 0;
        self.buf.extend_from_slice(&h);
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    /// A character device `major:minor`.
    pub fn chr(&mut self, name: &str, major: u64, minor: u64) -> &mut Self {
        self.raw(name.as_bytes(), b'3', 0o666, 0, b"", b"");
        let at = self.buf.len() - 512;
        let h = &mut self.buf[at..at + 512];
        octal(&mut h[329..337], major);
        octal(&mut h[337..345], minor);
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..154].copy_from_slice(format!("{sum:06o}").as_bytes());
        h[154] = 0;
        self
    }
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.file_mode(name, data, 0o644)
    }
    pub fn file_mode(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.raw(name.as_bytes(), b'0', mode, data.len() as u64, b"", data)
    }
    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(name.as_bytes(), b'5', mode, 0, b"", b"")
    }
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'2', 0o777, 0, target.as_bytes(), b"")
    }
    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.raw(name.as_bytes(), b'1', 0o644, 0, target.as_bytes(), b"")
    }
    /// A PAX extended header (typeflag `x`) for the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut data = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        self.raw(b"PaxHeaders.0/x", b'x', 0, data.len() as u64, b"", &data)
    }
    /// A GNU long-name header (typeflag `L`) for the next entry.
    pub fn gnu_longname(&mut self, name: &[u8]) -> &mut Self {
        let mut d = name.to_vec();
        d.push(0);
        self.raw(b"././@LongLink", b'L', 0, d.len() as u64, b"", &d)
    }
    pub fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.buf);
        b.extend_from_slice(&[0u8; 1024]);
        b
    }
}

/// A temporary directory holding `rootfs/`, a sentinel file and a sentinel directory.
pub struct Sandbox {
    pub tmp: tempfile::TempDir,
    pub rootfs: PathBuf,
    pub sentinel: PathBuf,
    pub sentinel_dir: PathBuf,
    before: Vec<(PathBuf, Vec<u8>, u32, i64, u64)>,
}

fn snapshot(p: &Path) -> (PathBuf, Vec<u8>, u32, i64, u64) {
    let m = fs::symlink_metadata(p).unwrap();
    let content = if m.is_file() {
        fs::read(p).unwrap()
    } else {
        Vec::new()
    };
    (p.to_path_buf(), content, m.mode(), m.mtime(), m.nlink())
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let tmp = tempfile::tempdir().unwrap();
        let rootfs = tmp.path().join("rootfs");
        fs::create_dir(&rootfs).unwrap();
        let sentinel = tmp.path().join("sentinel");
        fs::write(&sentinel, b"do not touch").unwrap();
        fs::set_permissions(&sentinel, fs::Permissions::from_mode(0o640)).unwrap();
        let sentinel_dir = tmp.path().join("sentinel_dir");
        fs::create_dir(&sentinel_dir).unwrap();
        fs::write(sentinel_dir.join("file"), b"inner").unwrap();
        fs::set_permissions(&sentinel_dir, fs::Permissions::from_mode(0o750)).unwrap();
        let mut sb = Sandbox {
            tmp,
            rootfs,
            sentinel,
            sentinel_dir,
            before: Vec::new(),
        };
        sb.before = sb.state();
        sb
    }

    fn state(&self) -> Vec<(PathBuf, Vec<u8>, u32, i64, u64)> {
        vec![
            snapshot(&self.sentinel),
            snapshot(&self.sentinel_dir),
            snapshot(&self.sentinel_dir.join("file")),
        ]
    }

    /// The sentinels are unchanged and nothing new appeared next to the rootfs or in the
    /// sentinel directory.
    pub fn check(&self) {
        assert_eq!(self.state(), self.before, "a sentinel changed");
        let mut names: Vec<_> = fs::read_dir(self.tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["rootfs", "sentinel", "sentinel_dir"],
            "something was created outside the rootfs"
        );
        let inner: Vec<_> = fs::read_dir(&self.sentinel_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(inner, ["file"], "sentinel dir contents changed");
        assert!(
            fs::symlink_metadata(&self.rootfs).unwrap().is_dir(),
            "rootfs is no longer a directory"
        );
    }

    pub fn root(&self) -> kiln_rootfs::Root {
        kiln_rootfs::Root::open(&self.rootfs).unwrap()
    }

    /// The sentinel directory's absolute host path, as a symlink target string.
    pub fn sdir(&self) -> String {
        self.sentinel_dir.to_str().unwrap().to_string()
    }
}

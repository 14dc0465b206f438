//! The local content-addressed blob store: `<root>/blobs/sha256/<hex>`.
//!
//! Blobs are written to a temporary file in the store, hashed while written, and published by
//! `rename` only once their digest is known (and, when one was expected, verified). A reader
//! never sees a half-written blob, and a blob whose bytes do not match its name is never
//! published. The layout is the same as an OCI image layout's `blobs/` directory.

use crate::digest::{Digest, Hasher};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Errors of the blob store.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("digest mismatch: expected {expected}, found {found}")]
    DigestMismatch { expected: Digest, found: Digest },
    #[error("size mismatch for {digest}: expected {expected} bytes, found {found}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        found: u64,
    },
    #[error("blob {0} not found in the local store")]
    NotFound(Digest),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A content-addressed directory of blobs.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store rooted at `root` (blobs go to `root/blobs/sha256`).
    pub fn open(root: impl Into<PathBuf>) -> Result<BlobStore, BlobError> {
        let root = root.into();
        let dir = root.join("blobs").join("sha256");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(BlobStore { root })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(digest.hex())
    }

    /// True when the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size of a present blob.
    pub fn size(&self, digest: &Digest) -> Result<u64, BlobError> {
        let p = self.path(digest);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(BlobError::NotFound(digest.clone()))
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Opens a present blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        let p = self.path(digest);
        File::open(&p).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                BlobError::NotFound(digest.clone())
            } else {
                io_err(&p)(e)
            }
        })
    }

    /// Reads a whole (small) blob, verifying its digest.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let mut buf = Vec::new();
        let p = self.path(digest);
        self.open_blob(digest)?
            .read_to_end(&mut buf)
            .map_err(io_err(&p))?;
        let found = Digest::of(&buf);
        if &found != digest {
            return Err(BlobError::DigestMismatch {
                expected: digest.clone(),
                found,
            });
        }
        Ok(buf)
    }

    /// Stores bytes, returning their digest.
    pub fn put(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        let mut w = self.writer()?;
        let p = w.tmp_path.clone();
        w.write_all(bytes).map_err(io_err(&p))?;
        Ok(w.commit()?.0)
    }

    /// Starts writing a new blob.
    pub fn writer(&self) -> Result<BlobWriter, BlobError> {
        let dir = self.root.join("blobs").join("sha256");
        let tmp = tempfile_in(&dir).map_err(io_err(&dir))?;
        Ok(BlobWriter {
            store: self.clone(),
            tmp_path: tmp.1,
            hasher: Some(Hasher::wrap(io::BufWriter::with_capacity(
                256 * 1024,
                tmp.0,
            ))),
        })
    }
}

/// Creates a uniquely named temporary file `.tmp-<pid>-<n>` in `dir`.
fn tempfile_in(dir: &Path) -> io::Result<(File, PathBuf)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = dir.join(format!(".tmp-{}-{}", std::process::id(), n));
        match fs::OpenOptions::new().write(true).create_new(true).open(&p) {
            Ok(f) => return Ok((f, p)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A blob being written: hash while writing, publish by rename on [`BlobWriter::commit`].
/// Dropped without commit, the temporary file is removed.
pub struct BlobWriter {
    store: BlobStore,
    tmp_path: PathBuf,
    /// `None` only after commit.
    hasher: Option<Hasher<io::BufWriter<File>>>,
}

impl BlobWriter {
    /// Publishes the blob under its digest; returns (digest, size).
    pub fn commit(self) -> Result<(Digest, u64), BlobError> {
        self.commit_inner(None)
    }

    /// Publishes the blob only if its digest (and size, when given) is the expected one.
    pub fn commit_expect(
        self,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<(Digest, u64), BlobError> {
        self.commit_inner(Some((expected, size)))
    }

    fn commit_inner(
        mut self,
        expected: Option<(&Digest, Option<u64>)>,
    ) -> Result<(Digest, u64), BlobError> {
        let tmp = std::mem::take(&mut self.tmp_path);
        let hasher = self.hasher.take().expect("BlobWriter used after commit");
        let result = (|| {
            let (digest, len, buf) = hasher.finish();
            let file = buf.into_inner().map_err(|e| io_err(&tmp)(e.into_error()))?;
            file.sync_data().map_err(io_err(&tmp))?;
            if let Some((want, want_size)) = expected {
                if &digest != want {
                    return Err(BlobError::DigestMismatch {
                        expected: want.clone(),
                        found: digest,
                    });
                }
                if let Some(s) = want_size {
                    if s != len {
                        return Err(BlobError::SizeMismatch {
                            digest,
                            expected: s,
                            found: len,
                        });
                    }
                }
            }
            let dest = self.store.path(&digest);
            fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
            Ok((digest, len))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.hasher.as_ref().map_or(0, Hasher::len)
    }

    /// True when nothing was written yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.hasher {
            Some(h) => h.write(buf),
            None => Err(io::Error::other("blob already committed")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.hasher {
            Some(h) => h.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp_path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_read_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put(b"abc").unwrap();
        assert_eq!(d, Digest::of(b"abc"));
        assert_eq!(store.read(&d).unwrap(), b"abc");
        assert_eq!(store.size(&d).unwrap(), 3);
    }

    #[test]
    fn mismatch_is_not_published() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut w = store.writer().unwrap();
        w.write_all(b"abc").unwrap();
        let wrong = Digest::of(b"abd");
        assert!(matches!(
            w.commit_expect(&wrong, None),
            Err(BlobError::DigestMismatch { .. })
        ));
        assert!(!store.contains(&Digest::of(b"abc")));
        let left: Vec<_> = fs::read_dir(dir.path().join("blobs/sha256"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "temp file left behind");
    }

    #[test]
    fn tampered_blob_fails_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = store.put(b"abc").unwrap();
        fs::write(store.path(&d), b"xyz").unwrap();
        assert!(matches!(
            store.read(&d),
            Err(BlobError::DigestMismatch { .. })
        ));
    }
}

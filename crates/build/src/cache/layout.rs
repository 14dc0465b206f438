//! `--cache-repo oci:/path`: the same entries as the registry cache, in an OCI image layout
//! directory, each named (`org.opencontainers.image.ref.name`) by its key.

use super::entry::{self, Reject};
use super::{CacheError, CacheKey, CachedLayer, LayerCache, Warnings};
use crate::image::LayerRecord;
use kiln_oci::layout::{IndexEntry, LayoutError, OciLayout, REF_NAME_ANNOTATION};
use kiln_oci::manifest::Parsed;
use kiln_oci::{BlobStore, Platform};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An OCI layout used as a layer cache. Thread- and process-safe: `index.json` updates are
/// serialised by an exclusive `flock(2)` on `<dir>/.kiln-cache.lock`.
#[derive(Debug)]
pub struct OciLayoutCache {
    layout: OciLayout,
    ttl: Duration,
    platform: Platform,
    warnings: Warnings,
    notes: super::MissNotes,
}

/// Holds an `flock(2)` until dropped.
pub(crate) struct FileLock(fs::File);

impl FileLock {
    pub(crate) fn exclusive(path: &Path) -> Result<FileLock, CacheError> {
        let f = open_lock(path)?;
        f.lock().map_err(|source| CacheError::Io {
            what: "locking",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileLock(f))
    }

    pub(crate) fn shared(path: &Path) -> Result<FileLock, CacheError> {
        let f = open_lock(path)?;
        f.lock_shared().map_err(|source| CacheError::Io {
            what: "locking",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(FileLock(f))
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn open_lock(path: &Path) -> Result<fs::File, CacheError> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| CacheError::Io {
            what: "opening the lock file",
            path: path.to_path_buf(),
            source,
        })
}

/// Copies a blob between stores, publishing it only if its digest (and size) match.
pub(crate) fn copy_blob(
    from: &BlobStore,
    to: &BlobStore,
    digest: &kiln_oci::Digest,
    size: Option<u64>,
) -> Result<(), CacheError> {
    if to.contains(digest) && size.is_none_or(|s| to.size(digest).ok() == Some(s)) {
        return Ok(());
    }
    let mut r = from.open_blob(digest)?;
    let mut w = to.writer()?;
    io::copy(&mut r, &mut w).map_err(|source| CacheError::Io {
        what: "copying blob",
        path: from.path(digest),
        source,
    })?;
    w.commit_expect(digest, size)?;
    Ok(())
}

impl OciLayoutCache {
    /// Opens (creating if needed) the layout at `dir`.
    pub fn open(
        dir: impl Into<PathBuf>,
        ttl: Duration,
        platform: Platform,
    ) -> Result<OciLayoutCache, CacheError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| CacheError::Io {
            what: "creating the cache layout",
            path: dir.clone(),
            source,
        })?;
        let layout = {
            let _lock = FileLock::exclusive(&dir.join(".kiln-cache.lock"))?;
            OciLayout::create(&dir)?
        };
        Ok(OciLayoutCache {
            layout,
            ttl,
            platform,
            warnings: Warnings::default(),
            notes: super::MissNotes::default(),
        })
    }

    /// The layout.
    pub fn layout(&self) -> &OciLayout {
        &self.layout
    }

    fn lock_path(&self) -> PathBuf {
        self.layout.dir().join(".kiln-cache.lock")
    }

    fn lookup_inner(
        &self,
        key: &CacheKey,
        blobs: &BlobStore,
    ) -> Result<Option<CachedLayer>, CacheError> {
        let name = format!("{}:{key}", self.layout.dir().display());
        let bad = |why: String| {
            self.warnings.push(format!(
                "cache entry {name} is not used: {why}; the step is rebuilt"
            ));
            Ok(None)
        };
        let found = {
            let _lock = FileLock::shared(&self.lock_path())?;
            match self.layout.find(Some(key.as_str())) {
                Ok(e) => e,
                Err(LayoutError::NoSuchRef { .. }) => {
                    tracing::debug!(entry = %name, "cache miss");
                    return Ok(None);
                }
                Err(e) => return bad(format!("reading the layout failed: {e}")),
            }
        };
        let src = self.layout.blobs();
        let bytes = match src.read(&found.digest) {
            Ok(b) => b,
            Err(e) => return bad(format!("its manifest: {e}")),
        };
        let im = match kiln_oci::manifest::parse(&bytes, Some(&found.media_type)) {
            Ok((_, Parsed::Image(im))) => im,
            Ok(_) => return bad("it is an index, not an image".into()),
            Err(e) => return bad(format!("its manifest does not parse: {e}")),
        };
        let cfg = match entry::config_digest(&im) {
            Ok(d) => d,
            Err(Reject::Bad(w)) | Err(Reject::Expired { created: w }) => return bad(w),
        };
        let config = match src.read(&cfg) {
            Ok(c) => c,
            Err(e) => return bad(format!("its config: {e}")),
        };
        let info = match entry::check_entry(key, &im, &config, self.ttl, SystemTime::now()) {
            Ok(i) => i,
            Err(Reject::Expired { created }) => {
                tracing::debug!(entry = %name, %created, "cache entry expired (--cache-ttl)");
                self.notes.expired(key, &created, self.ttl);
                return Ok(None);
            }
            Err(Reject::Bad(why)) => return bad(why),
        };
        if let Some(l) = &info.layer {
            if let Err(e) = copy_blob(src, blobs, &l.digest, Some(l.size)) {
                return bad(format!("its layer: {e}"));
            }
            if let Err(why) = entry::verify_layer(blobs, l) {
                return bad(why);
            }
        }
        tracing::debug!(entry = %name, "cache hit");
        Ok(Some(CachedLayer {
            key: key.clone(),
            layer: info.layer,
            created: info.created,
        }))
    }
}

impl LayerCache for OciLayoutCache {
    fn lookup(&self, key: &CacheKey, blobs: &BlobStore) -> Result<Option<CachedLayer>, CacheError> {
        self.lookup_inner(key, blobs)
    }

    fn store(
        &self,
        key: &CacheKey,
        layer: Option<&LayerRecord>,
        blobs: &BlobStore,
    ) -> Result<(), CacheError> {
        let assembled = entry::build_entry(key, layer, blobs, &self.platform, SystemTime::now())?;
        // Blobs first (content-addressed, safe without the lock), the index entry last.
        // import_blob hard-links when both stores share a file system (blobs are immutable).
        if let Some(l) = layer {
            self.layout.import_blob(blobs, &l.digest)?;
        }
        self.layout.import_blob(blobs, &assembled.config_digest)?;
        self.layout.import_blob(blobs, &assembled.manifest_digest)?;
        let _lock = FileLock::exclusive(&self.lock_path())?;
        self.layout.add_manifest(IndexEntry {
            media_type: assembled.manifest_media_type.clone(),
            digest: assembled.manifest_digest.clone(),
            size: assembled.manifest_size,
            platform: None,
            annotations: BTreeMap::from([(REF_NAME_ANNOTATION.to_string(), key.to_string())]),
        })?;
        tracing::info!(layout = %self.layout.dir().display(), %key, "stored cache entry");
        Ok(())
    }

    fn miss_note(&self, key: &CacheKey) -> Option<String> {
        self.notes.take(key)
    }

    fn take_warnings(&self) -> Vec<String> {
        self.warnings.take()
    }

    fn describe(&self) -> String {
        format!("oci layout {}", self.layout.dir().display())
    }
}

//! OCI image layout directories (image-spec `image-layout.md`): `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>`.
//!
//! A layout's `blobs/` has the same shape as kiln's [`BlobStore`], so a layout *is* a blob store
//! plus an index. Blobs are imported by hard link when both sit on one file system (no copy),
//! else copied and verified. `index.json` is written to a temporary name and renamed, so a
//! reader never sees a half-written index or one that names a missing blob.

use crate::blobstore::{BlobError, BlobStore};
use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The `imageLayoutVersion` kiln writes.
pub const LAYOUT_VERSION: &str = "1.0.0";
/// The annotation naming a manifest in `index.json` (a tag, or a full reference).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Errors of layout reading and writing.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("oci layout {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("oci layout {path}: invalid {what}: {reason}")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("oci layout {path}: no manifest named {name:?} (have: {have})")]
    NoSuchRef {
        path: PathBuf,
        name: String,
        have: String,
    },
}

/// A descriptor as stored in `index.json` (image-spec `descriptor.md`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl IndexEntry {
    /// The `org.opencontainers.image.ref.name` annotation, if any.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(REF_NAME_ANNOTATION)
            .map(String::as_str)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<IndexEntry>,
}

/// An OCI image layout directory.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
    blobs: BlobStore,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> LayoutError + '_ {
    move |source| LayoutError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl OciLayout {
    /// Creates the layout (or opens an existing one, keeping its index).
    pub fn create(dir: impl Into<PathBuf>) -> Result<OciLayout, LayoutError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(io_at(&dir))?;
        let blobs = BlobStore::open(&dir)?;
        let marker = dir.join("oci-layout");
        if !marker.exists() {
            write_atomic(
                &marker,
                format!("{{\"imageLayoutVersion\":\"{LAYOUT_VERSION}\"}}").as_bytes(),
            )?;
        }
        let index = dir.join("index.json");
        if !index.exists() {
            let layout = OciLayout { dir, blobs };
            layout.write_index(&[])?;
            return Ok(layout);
        }
        Ok(OciLayout { dir, blobs })
    }

    /// Opens an existing layout, checking its `oci-layout` marker.
    pub fn open(dir: impl Into<PathBuf>) -> Result<OciLayout, LayoutError> {
        let dir = dir.into();
        let marker = dir.join("oci-layout");
        let text = fs::read(&marker).map_err(io_at(&marker))?;
        let v: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| LayoutError::Invalid {
                path: marker.clone(),
                what: "oci-layout",
                reason: e.to_string(),
            })?;
        if v.get("imageLayoutVersion")
            .and_then(|v| v.as_str())
            .is_none()
        {
            return Err(LayoutError::Invalid {
                path: marker,
                what: "oci-layout",
                reason: "no imageLayoutVersion".into(),
            });
        }
        let blobs = BlobStore::open(&dir)?;
        Ok(OciLayout { dir, blobs })
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The layout's blobs.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Brings a blob from another store into the layout (hard link, else verified copy).
    pub fn import_blob(&self, from: &BlobStore, digest: &Digest) -> Result<(), LayoutError> {
        if self.blobs.contains(digest) {
            return Ok(());
        }
        let src = from.path(digest);
        let dst = self.blobs.path(digest);
        if fs::hard_link(&src, &dst).is_ok() {
            return Ok(());
        }
        let mut reader = from.open_blob(digest)?;
        let mut w = self.blobs.writer()?;
        io::copy(&mut reader, &mut w).map_err(io_at(&src))?;
        w.commit_expect(digest, None)?;
        Ok(())
    }

    /// The manifests listed in `index.json`.
    pub fn manifests(&self) -> Result<Vec<IndexEntry>, LayoutError> {
        let path = self.dir.join("index.json");
        let bytes = fs::read(&path).map_err(io_at(&path))?;
        let index: IndexJson =
            serde_json::from_slice(&bytes).map_err(|e| LayoutError::Invalid {
                path: path.clone(),
                what: "index.json",
                reason: e.to_string(),
            })?;
        Ok(index.manifests)
    }

    /// Finds the manifest named `name` (or the only one when `name` is `None`).
    pub fn find(&self, name: Option<&str>) -> Result<IndexEntry, LayoutError> {
        let all = self.manifests()?;
        let have = || {
            all.iter()
                .map(|e| e.ref_name().unwrap_or("<unnamed>").to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let found = match name {
            Some(n) => all.iter().find(|e| e.ref_name() == Some(n)),
            None if all.len() == 1 => all.first(),
            None => None,
        };
        found.cloned().ok_or_else(|| LayoutError::NoSuchRef {
            path: self.dir.clone(),
            name: name.unwrap_or("<the only manifest>").to_string(),
            have: have(),
        })
    }

    /// Adds (or replaces, by ref name) a manifest entry; the manifest blob must already be in
    /// the layout.
    pub fn add_manifest(&self, entry: IndexEntry) -> Result<(), LayoutError> {
        if !self.blobs.contains(&entry.digest) {
            return Err(BlobError::NotFound(entry.digest.clone()).into());
        }
        let mut all = self.manifests()?;
        match entry.ref_name() {
            Some(name) => all.retain(|e| e.ref_name() != Some(name)),
            None => all.retain(|e| e.digest != entry.digest),
        }
        all.push(entry);
        self.write_index(&all)
    }

    fn write_index(&self, manifests: &[IndexEntry]) -> Result<(), LayoutError> {
        let index = IndexJson {
            schema_version: 2,
            media_type: Some(crate::media::OCI_INDEX.to_string()),
            manifests: manifests.to_vec(),
        };
        let bytes = serde_json::to_vec(&index).map_err(|e| LayoutError::Invalid {
            path: self.dir.clone(),
            what: "index.json",
            reason: e.to_string(),
        })?;
        write_atomic(&self.dir.join("index.json"), &bytes)
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    fs::write(&tmp, bytes).map_err(io_at(&tmp))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_at(path)(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_import_and_name_manifests() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path().join("store")).unwrap();
        let manifest = store.put(b"{}").unwrap();
        let layout = OciLayout::create(tmp.path().join("layout")).unwrap();
        layout.import_blob(&store, &manifest).unwrap();
        let mut annotations = BTreeMap::new();
        annotations.insert(REF_NAME_ANNOTATION.to_string(), "latest".to_string());
        let entry = IndexEntry {
            media_type: crate::media::OCI_MANIFEST.into(),
            digest: manifest.clone(),
            size: 2,
            platform: None,
            annotations,
        };
        layout.add_manifest(entry.clone()).unwrap();
        layout.add_manifest(entry).unwrap();
        let again = OciLayout::open(layout.dir()).unwrap();
        assert_eq!(again.manifests().unwrap().len(), 1, "same name replaced");
        assert_eq!(again.find(Some("latest")).unwrap().digest, manifest);
        assert!(matches!(
            again.find(Some("nope")),
            Err(LayoutError::NoSuchRef { .. })
        ));
        assert_eq!(again.blobs().read(&manifest).unwrap(), b"{}");
    }

    #[test]
    fn manifest_must_be_present() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = OciLayout::create(tmp.path()).unwrap();
        let entry = IndexEntry {
            media_type: crate::media::OCI_MANIFEST.into(),
            digest: Digest::of(b"missing"),
            size: 7,
            platform: None,
            annotations: BTreeMap::new(),
        };
        assert!(layout.add_manifest(entry).is_err());
    }
}

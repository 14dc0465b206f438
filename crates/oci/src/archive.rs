//! docker-archive tarballs (the `docker save` / `docker load` format): `manifest.json`,
//! `repositories`, the config as `<hex>.json` and each layer blob as `<hex>.tar.gz` (or `.tar`,
//! `.tar.zst`). Layers are stored as the compressed blobs they are, like go-containerregistry's
//! `tarball.Write` (which Kaniko's `--tar-path` used): `docker load` and skopeo decompress them.
//!
//! The tarball is written to a temporary sibling and renamed, so a reader never sees half of it.

use crate::blobstore::{BlobError, BlobStore};
use crate::digest::Digest;
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Errors writing a docker-archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("docker archive {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// One layer of the image, as stored in the blob store.
#[derive(Debug, Clone)]
pub struct ArchiveLayer {
    pub digest: Digest,
    pub diff_id: Digest,
    /// The layer's media type (chooses the file extension).
    pub media_type: String,
}

/// Writes a docker-archive of one image to `path`. `repo_tags` are `name:tag` strings (the
/// archive's `RepoTags`; may be empty).
pub fn write_docker_archive(
    path: &Path,
    store: &BlobStore,
    config: &Digest,
    layers: &[ArchiveLayer],
    repo_tags: &[String],
) -> Result<(), ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let result = (|| {
        let file = File::create(&tmp).map_err(io_err)?;
        let mut tar = tar::Builder::new(BufWriter::new(file));
        tar.mode(tar::HeaderMode::Deterministic);

        let config_name = format!("{}.json", config.hex());
        append_blob(&mut tar, store, config, &config_name).map_err(|e| lift(e, path))?;
        let mut layer_names = Vec::with_capacity(layers.len());
        for layer in layers {
            let ext = if layer.media_type.ends_with("zstd") {
                "tar.zst"
            } else if layer.media_type.ends_with("gzip") {
                "tar.gz"
            } else {
                "tar"
            };
            let name = format!("{}.{ext}", layer.digest.hex());
            if !layer_names.contains(&name) {
                append_blob(&mut tar, store, &layer.digest, &name).map_err(|e| lift(e, path))?;
            }
            layer_names.push(name);
        }
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": layer_names,
        }]);
        append_bytes(&mut tar, "manifest.json", manifest.to_string().as_bytes()).map_err(io_err)?;
        // `repositories` is the legacy index `docker load` still reads: repo → tag → top layer id.
        let mut repos: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        if let Some(top) = layers.last() {
            for rt in repo_tags {
                if let Some((repo, tag)) = split_repo_tag(rt) {
                    repos
                        .entry(repo.to_string())
                        .or_default()
                        .insert(tag.to_string(), top.diff_id.hex().to_string());
                }
            }
        }
        let repos = serde_json::to_vec(&repos).unwrap_or_default();
        append_bytes(&mut tar, "repositories", &repos).map_err(io_err)?;
        let w = tar.into_inner().map_err(io_err)?;
        let file = w.into_inner().map_err(|e| io_err(e.into_error()))?;
        file.sync_all().map_err(io_err)?;
        fs::rename(&tmp, path).map_err(io_err)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Splits `host:port/repo:tag` at the tag's colon (the last colon after the last slash).
fn split_repo_tag(s: &str) -> Option<(&str, &str)> {
    let slash = s.rfind('/').map_or(0, |i| i + 1);
    let colon = s[slash..].rfind(':')? + slash;
    Some((&s[..colon], &s[colon + 1..]))
}

enum AppendError {
    Blob(BlobError),
    Io(io::Error),
}

fn lift(e: AppendError, path: &Path) -> ArchiveError {
    match e {
        AppendError::Blob(b) => ArchiveError::Blob(b),
        AppendError::Io(source) => ArchiveError::Io {
            path: path.to_path_buf(),
            source,
        },
    }
}

fn header(name: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    // Names here are short (hex + extension): a set_path failure cannot happen for them.
    let _ = h.set_path(name);
    h.set_cksum();
    h
}

fn append_blob<W: Write>(
    tar: &mut tar::Builder<W>,
    store: &BlobStore,
    digest: &Digest,
    name: &str,
) -> Result<(), AppendError> {
    let size = store.size(digest).map_err(AppendError::Blob)?;
    let file = store.open_blob(digest).map_err(AppendError::Blob)?;
    tar.append(&header(name, size), file)
        .map_err(AppendError::Io)
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, bytes: &[u8]) -> io::Result<()> {
    tar.append(&header(name, bytes.len() as u64), bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn splits_registry_port_from_tag() {
        assert_eq!(
            split_repo_tag("localhost:5000/a/b:v1"),
            Some(("localhost:5000/a/b", "v1"))
        );
        assert_eq!(split_repo_tag("localhost:5000/a"), None);
    }

    #[test]
    fn writes_manifest_config_and_layers() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path().join("s")).unwrap();
        let config = store.put(b"{\"x\":1}").unwrap();
        let layer = store.put(b"not really gzip").unwrap();
        let out = tmp.path().join("img.tar");
        write_docker_archive(
            &out,
            &store,
            &config,
            &[ArchiveLayer {
                digest: layer.clone(),
                diff_id: Digest::of(b"x"),
                media_type: crate::media::OCI_LAYER_GZIP.into(),
            }],
            &["example.com/app:1".into()],
        )
        .unwrap();
        let mut ar = tar::Archive::new(File::open(&out).unwrap());
        let mut names = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let mut s = Vec::new();
            e.read_to_end(&mut s).unwrap();
            names.insert(e.path().unwrap().to_string_lossy().into_owned(), s);
        }
        let m: serde_json::Value = serde_json::from_slice(&names["manifest.json"]).unwrap();
        assert_eq!(m[0]["Config"], format!("{}.json", config.hex()));
        assert_eq!(m[0]["Layers"][0], format!("{}.tar.gz", layer.hex()));
        assert_eq!(m[0]["RepoTags"][0], "example.com/app:1");
        assert_eq!(names[&format!("{}.json", config.hex())], b"{\"x\":1}");
        let r: serde_json::Value = serde_json::from_slice(&names["repositories"]).unwrap();
        assert!(r["example.com/app"]["1"].is_string());
    }
}

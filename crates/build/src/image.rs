//! Assembling the final image (config + manifest) and writing it out: OCI layout,
//! docker-archive, digest files. Pushing lives in `push.rs`.

use crate::error::BuildError;
use kiln_oci::archive::{write_docker_archive, ArchiveLayer};
use kiln_oci::config::ImageConfig;
use kiln_oci::layout::{IndexEntry, OciLayout, REF_NAME_ANNOTATION};
use kiln_oci::manifest::descriptor;
use kiln_oci::media::{self, ImageFormat};
use kiln_oci::{BlobStore, Digest};
use oci_spec::image::ImageManifestBuilder;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// One layer of an image, as stored in the blob store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRecord {
    pub digest: Digest,
    pub diff_id: Digest,
    pub size: u64,
    /// The media type it was pulled or written with.
    pub media_type: String,
}

/// A finished image in the blob store.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub manifest_digest: Digest,
    pub manifest_size: u64,
    pub manifest_media_type: String,
    pub manifest_bytes: Vec<u8>,
    pub config_digest: Digest,
    pub layers: Vec<LayerRecord>,
    pub format: ImageFormat,
}

impl Assembled {
    /// Total size of config + layers (what a pull downloads).
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum::<u64>() + self.manifest_size
    }
}

/// The layer media type in `format` for a layer stored with `media_type` (same bytes; only the
/// name changes between the Docker and OCI spellings).
fn layer_media_type(media_type: &str, format: ImageFormat) -> String {
    match media::layer_compression(media_type) {
        // Foreign/non-distributable layers keep their type: renaming them would change meaning.
        _ if media_type == media::DOCKER_LAYER_FOREIGN
            || media_type == media::OCI_LAYER_NONDIST_GZIP =>
        {
            media_type.to_string()
        }
        Some(c) => format
            .layer(c)
            .map(str::to_string)
            .unwrap_or_else(|| media_type.to_string()),
        None => media_type.to_string(),
    }
}

/// Writes the config and manifest blobs for `config` + `layers` into `store`.
pub fn assemble(
    store: &BlobStore,
    config: &ImageConfig,
    layers: &[LayerRecord],
    format: ImageFormat,
    annotations: &[(String, String)],
) -> Result<Assembled, BuildError> {
    let config_bytes = config.to_vec();
    let config_digest = store.put(&config_bytes)?;
    let mut layers = layers.to_vec();
    for l in &mut layers {
        l.media_type = layer_media_type(&l.media_type, format);
    }
    let layer_descs = layers
        .iter()
        .map(|l| descriptor(&l.media_type, &l.digest, l.size))
        .collect::<Vec<_>>();
    let mut manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(format.manifest())
        .config(descriptor(
            format.config(),
            &config_digest,
            config_bytes.len() as u64,
        ))
        .layers(layer_descs)
        .build()
        .map_err(|e| BuildError::Unsupported {
            what: format!("building the manifest: {e}"),
            line: None,
        })?;
    if !annotations.is_empty() {
        if format == ImageFormat::Docker {
            return Err(BuildError::Unsupported {
                what: "--annotation with Docker media types (the v2s2 manifest has no annotations; use --image-format=oci)".into(),
                line: None,
            });
        }
        let map: HashMap<String, String> = annotations.iter().cloned().collect();
        manifest.set_annotations(Some(map));
    }
    // oci-spec keeps annotations in a HashMap; serialise through serde_json::Value (whose maps
    // are sorted) so the manifest bytes, and so its digest, are the same on every run.
    let value = serde_json::to_value(&manifest).map_err(BuildError::Json)?;
    let manifest_bytes = serde_json::to_vec(&value).map_err(BuildError::Json)?;
    let manifest_digest = store.put(&manifest_bytes)?;
    Ok(Assembled {
        manifest_digest,
        manifest_size: manifest_bytes.len() as u64,
        manifest_media_type: format.manifest().to_string(),
        manifest_bytes,
        config_digest,
        layers,
        format,
    })
}

/// Writes (or adds to) an OCI image layout at `dir`, naming the manifest `ref_name`.
pub fn write_oci_layout(
    dir: &Path,
    store: &BlobStore,
    image: &Assembled,
    ref_name: Option<&str>,
) -> Result<(), BuildError> {
    let layout = OciLayout::create(dir)?;
    layout.import_blob(store, &image.config_digest)?;
    for l in &image.layers {
        layout.import_blob(store, &l.digest)?;
    }
    layout.import_blob(store, &image.manifest_digest)?;
    let mut annotations = BTreeMap::new();
    if let Some(name) = ref_name {
        annotations.insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
    }
    layout.add_manifest(IndexEntry {
        media_type: image.manifest_media_type.clone(),
        digest: image.manifest_digest.clone(),
        size: image.manifest_size,
        platform: None,
        annotations,
    })?;
    Ok(())
}

/// Writes a docker-archive tarball.
pub fn write_tarball(
    path: &Path,
    store: &BlobStore,
    image: &Assembled,
    repo_tags: &[String],
) -> Result<(), BuildError> {
    let layers = image
        .layers
        .iter()
        .map(|l| ArchiveLayer {
            digest: l.digest.clone(),
            diff_id: l.diff_id.clone(),
            media_type: l.media_type.clone(),
        })
        .collect::<Vec<_>>();
    write_docker_archive(path, store, &image.config_digest, &layers, repo_tags)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_types_follow_the_format() {
        assert_eq!(
            layer_media_type(media::DOCKER_LAYER_GZIP, ImageFormat::Oci),
            media::OCI_LAYER_GZIP
        );
        assert_eq!(
            layer_media_type(media::OCI_LAYER_GZIP, ImageFormat::Docker),
            media::DOCKER_LAYER_GZIP
        );
        assert_eq!(
            layer_media_type(media::DOCKER_LAYER_FOREIGN, ImageFormat::Oci),
            media::DOCKER_LAYER_FOREIGN
        );
    }

    #[test]
    fn manifest_is_deterministic() {
        let tmp = tempfile::tempdir().unwrap();
        let store = BlobStore::open(tmp.path()).unwrap();
        let layer = store.put(b"layer").unwrap();
        let layers = vec![LayerRecord {
            digest: layer.clone(),
            diff_id: layer,
            size: 5,
            media_type: media::OCI_LAYER_GZIP.into(),
        }];
        let ann = vec![("b".to_string(), "2".to_string()), ("a".into(), "1".into())];
        let cfg = ImageConfig::default();
        let a = assemble(&store, &cfg, &layers, ImageFormat::Oci, &ann).unwrap();
        let b = assemble(&store, &cfg, &layers, ImageFormat::Oci, &ann).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let v: serde_json::Value = serde_json::from_slice(&a.manifest_bytes).unwrap();
        assert_eq!(v["mediaType"], media::OCI_MANIFEST);
        assert_eq!(v["config"]["mediaType"], media::OCI_CONFIG);
        assert_eq!(v["annotations"]["a"], "1");
    }
}

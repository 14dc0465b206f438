//! The cache entry image (shared by the registry and OCI-layout caches) and its verification.
//!
//! An entry is what Kaniko pushes to `--cache-repo`: an image with the step's one layer (or
//! none, for a step that changed nothing), tagged with the key. Its config records what a
//! replay needs and nothing else: `rootfs.diff_ids` (the layer's diffID), `created` (judged
//! against `--cache-ttl`), the platform, and the label `dev.kiln.cache.key` naming the key it
//! was made for, so that an entry copied or re-tagged under another key is refused.

use super::{CacheError, CacheKey};
use crate::image::{self, Assembled, LayerRecord};
use kiln_oci::config::{History, ImageConfig};
use kiln_oci::manifest::{descriptor_digest, ImageManifest};
use kiln_oci::media::ImageFormat;
use kiln_oci::{BlobStore, Digest, Platform};
use std::io::{self, Read};
use std::time::{Duration, SystemTime};

/// The config label naming the key an entry was made for.
pub const KEY_LABEL: &str = "dev.kiln.cache.key";
/// Largest config or manifest of a cache entry read (they are a few hundred bytes).
pub const MAX_ENTRY_JSON: u64 = 1024 * 1024;

/// Writes the config and manifest of the entry for `key` into `blobs` (the layer blob must be
/// there already).
pub fn build_entry(
    key: &CacheKey,
    layer: Option<&LayerRecord>,
    blobs: &BlobStore,
    platform: &Platform,
    created: SystemTime,
) -> Result<Assembled, CacheError> {
    let created = super::time::format_rfc3339(created);
    let mut config = ImageConfig {
        created: Some(created.clone()),
        architecture: platform.architecture().to_string(),
        os: platform.os().to_string(),
        variant: platform.variant().map(str::to_string),
        ..ImageConfig::default()
    };
    config
        .config_mut()
        .labels
        .get_or_insert_with(Default::default)
        .insert(KEY_LABEL.to_string(), key.to_string());
    config.history.push(History {
        created: Some(created),
        created_by: Some(format!("kiln cache entry {key}")),
        empty_layer: layer.is_none(),
        ..History::default()
    });
    let layers: Vec<LayerRecord> = layer.cloned().into_iter().collect();
    config.rootfs.diff_ids = layers.iter().map(|l| l.diff_id.clone()).collect();
    image::assemble(blobs, &config, &layers, ImageFormat::Oci, &[]).map_err(|e| {
        CacheError::Assemble {
            key: key.clone(),
            source: Box::new(e),
        }
    })
}

/// Why an entry is not used.
#[derive(Debug)]
pub enum Reject {
    /// Older than the TTL: a quiet miss.
    Expired { created: String },
    /// Fails verification: a miss with a warning.
    Bad(String),
}

/// What a checked entry says about its step.
#[derive(Debug, Clone)]
pub struct EntryInfo {
    /// The layer (digest, size, media type from the manifest; diffID from the config), if any.
    pub layer: Option<LayerRecord>,
    /// The config's `created`.
    pub created: SystemTime,
}

/// Checks an entry's manifest and config against the key it was looked up under and the TTL.
pub fn check_entry(
    key: &CacheKey,
    manifest: &ImageManifest,
    config_bytes: &[u8],
    ttl: Duration,
    now: SystemTime,
) -> Result<EntryInfo, Reject> {
    let config = ImageConfig::from_slice(config_bytes)
        .map_err(|e| Reject::Bad(format!("its config does not parse: {e}")))?;
    let named = config
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(KEY_LABEL));
    if named.map(String::as_str) != Some(key.as_str()) {
        return Err(Reject::Bad(format!(
            "it was made for another key ({})",
            named.map_or("none", |s| s.as_str())
        )));
    }
    let created_s = config.created.clone().unwrap_or_default();
    let created = super::time::parse_rfc3339(&created_s)
        .ok_or_else(|| Reject::Bad(format!("its created time {created_s:?} is not RFC 3339")))?;
    if super::time::expired(created, ttl, now) {
        return Err(Reject::Expired { created: created_s });
    }
    let layers = manifest.layers();
    if layers.len() > 1 {
        return Err(Reject::Bad(format!(
            "it has {} layers, not one",
            layers.len()
        )));
    }
    if config.rootfs.diff_ids.len() != layers.len() {
        return Err(Reject::Bad(format!(
            "its manifest has {} layers but its config {} diff_ids",
            layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    let layer = match (layers.first(), config.rootfs.diff_ids.first()) {
        (Some(d), Some(diff_id)) => Some(LayerRecord {
            digest: descriptor_digest(d).map_err(|e| Reject::Bad(e.to_string()))?,
            diff_id: diff_id.clone(),
            size: d.size(),
            media_type: d.media_type().to_string(),
        }),
        _ => None,
    };
    Ok(EntryInfo { layer, created })
}

/// Checks that the blob `layer.digest` in `blobs` has that digest and size, and that its
/// uncompressed content hashes to `layer.diff_id`. `Err` says what does not match.
pub fn verify_layer(blobs: &BlobStore, layer: &LayerRecord) -> Result<(), String> {
    let file = blobs.open_blob(&layer.digest).map_err(|e| e.to_string())?;
    let mut outer = kiln_oci::Hasher::wrap(io::sink());
    let mut inner = kiln_oci::Hasher::new();
    {
        let tee = TeeReader {
            inner: file,
            hasher: &mut outer,
        };
        let mut plain =
            kiln_rootfs::decompress(tee).map_err(|e| format!("reading the layer: {e}"))?;
        io::copy(&mut plain, &mut inner).map_err(|e| format!("decompressing the layer: {e}"))?;
        // Drain what the decompressor did not read (trailing bytes still count for the digest).
        let mut rest = Vec::new();
        let _ = plain.read_to_end(&mut rest);
    }
    let (found, size, _) = outer.finish();
    // The decompressor may stop at the end of the compressed stream; hash the file itself
    // when the tee did not see all of it.
    let (found, size) = if size == blobs.size(&layer.digest).unwrap_or(size) {
        (found, size)
    } else {
        let mut f = blobs.open_blob(&layer.digest).map_err(|e| e.to_string())?;
        let mut h = kiln_oci::Hasher::new();
        io::copy(&mut f, &mut h).map_err(|e| e.to_string())?;
        let (d, n, _) = h.finish();
        (d, n)
    };
    if found != layer.digest {
        return Err(format!(
            "layer blob digest is {found}, not {}",
            layer.digest
        ));
    }
    if size != layer.size {
        return Err(format!("layer blob is {size} bytes, not {}", layer.size));
    }
    let (diff_id, _, _) = inner.finish();
    if diff_id != layer.diff_id {
        return Err(format!(
            "layer diffID is {diff_id}, not {} as its config says",
            layer.diff_id
        ));
    }
    Ok(())
}

struct TeeReader<'a, R> {
    inner: R,
    hasher: &'a mut kiln_oci::Hasher<io::Sink>,
}

impl<R: Read> Read for TeeReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The digest of a manifest's config (validated).
pub fn config_digest(manifest: &ImageManifest) -> Result<Digest, Reject> {
    descriptor_digest(manifest.config()).map_err(|e| Reject::Bad(e.to_string()))
}

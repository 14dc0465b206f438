//! Kaniko's warmer (`kiln warm`) and the base-image cache it fills (`--cache-dir`).
//!
//! Each image is stored as `<cache-dir>/<manifest digest>` (e.g. `/cache/sha256:ab…`), a
//! **docker-archive** tarball (the `docker save` format, written by `kiln_oci::archive`),
//! plus `<manifest digest>.json`, the image manifest as the registry served it. Why a
//! docker-archive and not an OCI layout directory: it is what Kaniko's warmer writes (with
//! go-containerregistry's `tarball.Write`), so a `/cache` volume filled by either tool serves
//! the other, a file can be published atomically by one rename, and `docker load` reads it.
//! Layers are kept compressed in the archive (as in the registry), so their digests are the
//! manifest's and every blob read back is verified against the manifest.

use super::{CacheError, Warnings};
use crate::image::LayerRecord;
use kiln_oci::archive::{write_docker_archive, ArchiveLayer};
use kiln_oci::manifest::{descriptor_digest, Parsed};
use kiln_oci::{BlobStore, Digest, Platform, Reference};
use kiln_registry::Client;
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What to warm.
#[derive(Debug, Clone)]
pub struct WarmOptions {
    /// `--image` references.
    pub images: Vec<String>,
    /// `--dockerfile`: every stage's base image is warmed too.
    pub dockerfile: Option<PathBuf>,
    /// `--build-arg` values for `FROM ${X}`.
    pub build_args: Vec<(String, String)>,
    /// `--cache-dir`.
    pub cache_dir: PathBuf,
    /// `--cache-ttl`: an entry younger than this is kept (unless `force`).
    pub ttl: Duration,
    /// `--force`: rewrite entries that are present and fresh.
    pub force: bool,
    /// `--customPlatform` (the host's by default).
    pub platform: Platform,
}

/// What happened to one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WarmOutcome {
    /// The reference as given (or as the Dockerfile named it).
    pub reference: String,
    /// The platform image's manifest digest (the entry's file name).
    pub digest: Digest,
    /// False when a fresh entry was already there.
    pub written: bool,
}

/// The base images a Dockerfile's stages use (not `scratch`, not other stages), with their
/// `FROM --platform` when given.
fn dockerfile_images(
    path: &Path,
    build_args: &[(String, String)],
    platform: &Platform,
) -> Result<Vec<(String, Option<String>)>, CacheError> {
    let bad = |message: String| CacheError::Dockerfile {
        file: path.to_path_buf(),
        message,
    };
    let src = fs::read(path).map_err(|source| CacheError::Io {
        what: "reading the Dockerfile",
        path: path.to_path_buf(),
        source,
    })?;
    let df = kiln_dockerfile::parse_dockerfile(&src).map_err(|e| bad(e.to_string()))?;
    let plan_for = |target: Option<String>| {
        kiln_dockerfile::plan(
            &df,
            &kiln_dockerfile::PlanOptions {
                target,
                build_args: build_args.to_vec(),
                target_platform: platform.to_string(),
                build_platform: Platform::host().to_string(),
            },
        )
        .map_err(|e| bad(e.to_string()))
    };
    // The default target's stages, plus every named stage's (Kaniko warms every stage).
    let first = plan_for(None)?;
    let mut plans = vec![first.clone()];
    for name in first.stage_names.iter().flatten() {
        plans.push(plan_for(Some(name.clone()))?);
    }
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for p in &plans {
        for s in &p.stages {
            if let kiln_dockerfile::Base::Image(name) = &s.base {
                let item = (name.clone(), s.platform.clone());
                if !out.contains(&item) {
                    out.push(item);
                }
            }
        }
    }
    Ok(out)
}

fn entry_path(dir: &Path, digest: &Digest) -> PathBuf {
    // Digest::to_string is validated `sha256:<hex>`: a safe file name.
    dir.join(digest.to_string())
}

fn fresh(path: &Path, ttl: Duration) -> bool {
    match fs::metadata(path).and_then(|m| m.modified()) {
        Ok(mtime) => !super::time::expired(mtime, ttl, SystemTime::now()),
        Err(_) => false,
    }
}

/// Fills `opts.cache_dir` with `opts.images` and the Dockerfile's base images.
pub fn warm(opts: &WarmOptions, client: &Client) -> Result<Vec<WarmOutcome>, CacheError> {
    let dir = &opts.cache_dir;
    fs::create_dir_all(dir).map_err(|source| CacheError::Io {
        what: "creating the cache directory",
        path: dir.clone(),
        source,
    })?;
    let mut wanted: Vec<(String, Platform)> = opts
        .images
        .iter()
        .map(|i| (i.clone(), opts.platform.clone()))
        .collect();
    if let Some(df) = &opts.dockerfile {
        for (name, p) in dockerfile_images(df, &opts.build_args, &opts.platform)? {
            let platform = match p {
                Some(p) => {
                    p.parse()
                        .map_err(|e: kiln_oci::PlatformError| CacheError::Dockerfile {
                            file: df.clone(),
                            message: format!("FROM --platform={p}: {e}"),
                        })?
                }
                None => opts.platform.clone(),
            };
            if !wanted.iter().any(|(n, pl)| n == &name && pl == &platform) {
                wanted.push((name, platform));
            }
        }
    }
    let mut out = Vec::new();
    for (name, platform) in wanted {
        let r: Reference =
            name.parse()
                .map_err(|e: kiln_oci::ReferenceError| CacheError::Reference {
                    reference: name.clone(),
                    reason: e.to_string(),
                })?;
        let (_, manifest, _) = client.resolve_image(&r, &platform)?;
        let digest = manifest.digest.clone();
        let path = entry_path(dir, &digest);
        let json = PathBuf::from(format!("{}.json", path.display()));
        if !opts.force && fresh(&path, opts.ttl) && json.is_file() {
            tracing::info!(image = %name, %digest, "already in the cache");
            out.push(WarmOutcome {
                reference: name,
                digest,
                written: false,
            });
            continue;
        }
        // A private scratch store inside the cache dir: same file system, removed afterwards.
        let scratch = dir.join(format!(".kiln-warm-{}", std::process::id()));
        let result =
            (|| {
                let store = BlobStore::open(&scratch)?;
                let pulled = client.pull_image(&r, &platform, &store)?;
                let config = kiln_oci::config::ImageConfig::from_slice(&pulled.config_bytes)
                    .map_err(|e| CacheError::Reference {
                        reference: name.clone(),
                        reason: e.to_string(),
                    })?;
                if config.rootfs.diff_ids.len() != pulled.layers.len() {
                    return Err(CacheError::Reference {
                        reference: name.clone(),
                        reason: format!(
                            "the manifest has {} layers but the config {} diff_ids",
                            pulled.layers.len(),
                            config.rootfs.diff_ids.len()
                        ),
                    });
                }
                let layers = pulled
                    .layers
                    .iter()
                    .zip(config.rootfs.diff_ids.iter())
                    .map(|(d, diff_id)| {
                        Ok(ArchiveLayer {
                            digest: descriptor_digest(d).map_err(|e| CacheError::Reference {
                                reference: name.clone(),
                                reason: e.to_string(),
                            })?,
                            diff_id: diff_id.clone(),
                            media_type: d.media_type().to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, CacheError>>()?;
                let tag = format!("{}:{}", r.name(), r.tag().unwrap_or("latest"));
                write_docker_archive(&path, &store, &pulled.config_digest, &layers, &[tag])?;
                let tmp = dir.join(format!(".{}.json.tmp-{}", digest.hex(), std::process::id()));
                fs::write(&tmp, &pulled.manifest.bytes)
                    .and_then(|()| fs::rename(&tmp, &json))
                    .map_err(|source| CacheError::Io {
                        what: "writing the manifest",
                        path: json.clone(),
                        source,
                    })?;
                Ok::<(), CacheError>(())
            })();
        let _ = fs::remove_dir_all(&scratch);
        result?;
        tracing::info!(image = %name, %digest, "cached base image");
        out.push(WarmOutcome {
            reference: name,
            digest,
            written: true,
        });
    }
    Ok(out)
}

/// A base image read from `--cache-dir`: its config and layers are in the caller's blob store.
#[derive(Debug, Clone)]
pub struct CachedBase {
    /// The image manifest's digest.
    pub manifest_digest: Digest,
    /// Its media type (OCI or Docker).
    pub media_type: String,
    /// The manifest bytes.
    pub manifest_bytes: Vec<u8>,
    /// The config digest.
    pub config_digest: Digest,
    /// The config bytes (also in the store).
    pub config_bytes: Vec<u8>,
    /// The layers, bottom first, with their diffIDs from the config.
    pub layers: Vec<LayerRecord>,
}

/// The read side of `--cache-dir`: finds a warmed base image before the engine pulls it.
pub struct BaseImageCache {
    dir: PathBuf,
    ttl: Duration,
    client: Option<Arc<Client>>,
    warnings: Warnings,
}

impl BaseImageCache {
    /// The cache in `dir` with `--cache-ttl` `ttl` (judged by the files' mtime, like Kaniko).
    /// Without a client only references by digest can be found.
    pub fn new(
        dir: impl Into<PathBuf>,
        ttl: Duration,
        client: Option<Arc<Client>>,
    ) -> BaseImageCache {
        BaseImageCache {
            dir: dir.into(),
            ttl,
            client,
            warnings: Warnings::default(),
        }
    }

    /// Warnings recorded since the last call (unusable entries).
    pub fn take_warnings(&self) -> Vec<String> {
        self.warnings.take()
    }

    /// The cached image for `reference` on `platform`, its blobs imported (verified) into
    /// `blobs`; `Ok(None)` when absent, expired, or unusable (with a warning). A reference by
    /// tag is resolved to its manifest digest with the client (a manifest request only; the
    /// layers then come from the cache).
    pub fn lookup(
        &self,
        reference: &Reference,
        platform: &Platform,
        blobs: &BlobStore,
    ) -> Result<Option<CachedBase>, CacheError> {
        let mut candidates: Vec<Digest> = reference.digest().cloned().into_iter().collect();
        let present = |d: &Digest| entry_path(&self.dir, d).is_file();
        if !candidates.iter().any(present) {
            if let Some(c) = &self.client {
                match c.resolve_image(reference, platform) {
                    Ok((_, m, _)) => candidates.push(m.digest),
                    Err(e) => {
                        tracing::debug!(%reference, "base image cache: could not resolve the digest: {e}");
                        return Ok(None);
                    }
                }
            }
        }
        let Some(digest) = candidates.into_iter().find(present) else {
            tracing::debug!(%reference, "not in the base image cache");
            return Ok(None);
        };
        let path = entry_path(&self.dir, &digest);
        if !fresh(&path, self.ttl) {
            tracing::debug!(%reference, "base image cache entry expired (--cache-ttl)");
            return Ok(None);
        }
        match self.read_entry(&path, &digest, platform, blobs) {
            Ok(b) => Ok(Some(b)),
            Err(why) => {
                self.warnings.push(format!(
                    "base image cache entry {} is not used: {why}; pulling instead",
                    path.display()
                ));
                Ok(None)
            }
        }
    }

    fn read_entry(
        &self,
        path: &Path,
        digest: &Digest,
        platform: &Platform,
        blobs: &BlobStore,
    ) -> Result<CachedBase, String> {
        let json = PathBuf::from(format!("{}.json", path.display()));
        let manifest_bytes = fs::read(&json).map_err(|e| format!("{}: {e}", json.display()))?;
        if &Digest::of(&manifest_bytes) != digest {
            return Err(format!("{} does not hash to its name", json.display()));
        }
        let raw = kiln_oci::RawManifest::from_bytes(manifest_bytes.clone(), None)
            .map_err(|e| format!("its manifest: {e}"))?;
        let Parsed::Image(im) = &raw.parsed else {
            return Err("its manifest is an index".into());
        };
        let config_digest = descriptor_digest(im.config()).map_err(|e| e.to_string())?;
        let mut wanted: HashMap<String, (Digest, u64)> = HashMap::new();
        wanted.insert(
            config_digest.hex().to_string(),
            (config_digest.clone(), im.config().size()),
        );
        for l in im.layers() {
            let d = descriptor_digest(l).map_err(|e| e.to_string())?;
            wanted.insert(d.hex().to_string(), (d, l.size()));
        }
        // Import the archive members named after a wanted digest (ggcr names them
        // `sha256:<hex>` or `<hex>.tar.gz`, kiln `<hex>.json` / `<hex>.tar.gz`); each is
        // published only if its bytes hash to that digest.
        // No lock: `--cache-dir` is often a read-only volume, and the warmer publishes each
        // file by rename, so a reader sees a whole archive or none.
        let file = fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut archive = tar::Archive::new(io::BufReader::new(file));
        for entry in archive.entries().map_err(|e| e.to_string())? {
            let mut entry = entry.map_err(|e| e.to_string())?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            let base = name.rsplit('/').next().unwrap_or(&name);
            let stem = base.strip_prefix("sha256:").unwrap_or(base);
            let hex: String = stem.chars().take(64).collect();
            let Some((d, size)) = wanted.get(&hex).cloned() else {
                continue;
            };
            if blobs.contains(&d) && blobs.size(&d).ok() == Some(size) {
                continue;
            }
            let mut w = blobs.writer().map_err(|e| e.to_string())?;
            io::copy(&mut entry, &mut w).map_err(|e| format!("reading {name}: {e}"))?;
            w.commit_expect(&d, Some(size))
                .map_err(|e| format!("archive member {name}: {e}"))?;
        }
        for (d, _) in wanted.values() {
            if !blobs.contains(d) {
                return Err(format!("the archive lacks blob {d}"));
            }
        }
        let config_bytes = blobs.read(&config_digest).map_err(|e| e.to_string())?;
        let config =
            kiln_oci::config::ImageConfig::from_slice(&config_bytes).map_err(|e| e.to_string())?;
        let found = Platform::new(&config.os, &config.architecture, config.variant.as_deref());
        if !platform.matches(&found) {
            return Err(format!("it is for {found}, not {platform}"));
        }
        if config.rootfs.diff_ids.len() != im.layers().len() {
            return Err(format!(
                "its manifest has {} layers but its config {} diff_ids",
                im.layers().len(),
                config.rootfs.diff_ids.len()
            ));
        }
        let layers = im
            .layers()
            .iter()
            .zip(config.rootfs.diff_ids.iter())
            .map(|(d, diff_id)| {
                Ok(LayerRecord {
                    digest: descriptor_digest(d).map_err(|e| e.to_string())?,
                    diff_id: diff_id.clone(),
                    size: d.size(),
                    media_type: d.media_type().to_string(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(CachedBase {
            manifest_digest: digest.clone(),
            media_type: raw.media_type.clone(),
            manifest_bytes,
            config_digest,
            config_bytes,
            layers,
        })
    }
}

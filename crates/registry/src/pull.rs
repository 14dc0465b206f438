//! Pulling: manifests (bounded, verified), platform selection, and blobs streamed into the
//! local store with the digest verified while streaming and resume after a broken connection.

use crate::client::{error_body, read_bounded, Client, Ctx, Req};
use crate::config::Direction;
use crate::error::{Operation, RegistryError};
use kiln_oci::manifest::{self, descriptor_digest, RawManifest, MAX_MANIFEST_SIZE};
use kiln_oci::{media, BlobStore, Descriptor, Digest, Parsed, Platform, Reference};
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode, Url};
use std::io::{Read, Write};

/// Largest image config kiln reads into memory (real configs are a few KiB; ones with long
/// histories reach a few hundred).
pub const MAX_CONFIG_SIZE: u64 = 32 * 1024 * 1024;

/// An image pulled into a [`BlobStore`]: config and layers are in the store.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The reference as asked for.
    pub reference: Reference,
    /// Where it was actually pulled from (a mirror or remapped registry, or `reference`).
    pub source: Reference,
    /// Digest of the image manifest (the platform's entry when the reference named an index).
    pub manifest_digest: Digest,
    /// Digest of the index the manifest was selected from, if any.
    pub index_digest: Option<Digest>,
    /// The image manifest: bytes as served, media type and parsed form.
    pub manifest: RawManifest,
    /// Media type of the image manifest (OCI or Docker).
    pub media_type: String,
    /// Config digest.
    pub config_digest: Digest,
    /// Config bytes (also in the store).
    pub config_bytes: Vec<u8>,
    /// Layer descriptors, bottom first (blobs in the store).
    pub layers: Vec<Descriptor>,
}

impl Client {
    /// Fetches a manifest or index by tag or digest (every media type in `Accept`), at most
    /// [`MAX_MANIFEST_SIZE`] bytes, verified against the digest when the reference has one
    /// and against `Docker-Content-Digest` when the registry sends it.
    pub fn pull_manifest(&self, r: &Reference) -> Result<RawManifest, RegistryError> {
        let ctx = Ctx::new(r, Operation::PullManifest, Direction::Pull);
        self.manifest_at(&ctx, r, &r.manifest_ref(), r.digest())
    }

    fn manifest_at(
        &self,
        ctx: &Ctx,
        r: &Reference,
        reference: &str,
        expected: Option<&Digest>,
    ) -> Result<RawManifest, RegistryError> {
        let base = self.base(ctx)?;
        let url = Url::parse(&format!(
            "{base}/v2/{}/manifests/{reference}",
            ctx.repository
        ))
        .map_err(|_| ctx.protocol("bad manifest URL"))?;
        let req = Req::new(Method::GET, url).header(ACCEPT, &media::MANIFEST_ACCEPT.join(", "));
        let (resp, attempts) = self.execute(ctx, &req)?;
        if !resp.status().is_success() {
            let st = resp.status().as_u16();
            return Err(ctx.status_err(st, error_body(resp), attempts));
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = read_bounded(resp, MAX_MANIFEST_SIZE as u64).map_err(|e| match e {
            None => RegistryError::TooLarge {
                what: "manifest",
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                limit: MAX_MANIFEST_SIZE as u64,
            },
            Some(e) => ctx.protocol(format!("reading manifest: {e}")),
        })?;
        let found = Digest::of(&bytes);
        let mismatch = |expected: Digest| RegistryError::DigestMismatch {
            what: "manifest",
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            expected,
            found: found.clone(),
        };
        if let Some(want) = expected {
            if want != &found {
                return Err(mismatch(want.clone()));
            }
        }
        if let Some(h) = header_digest {
            match h.parse::<Digest>() {
                Ok(d) if d != found => return Err(mismatch(d)),
                Ok(_) => {}
                // Another algorithm: not comparable, the body digest above still holds.
                Err(_) => tracing::debug!("ignoring Docker-Content-Digest with another algorithm"),
            }
        }
        RawManifest::from_bytes(bytes, content_type.as_deref()).map_err(|source| {
            RegistryError::Manifest {
                reference: r.to_string(),
                source,
            }
        })
    }

    /// Resolves `r` to the image manifest for `platform` (through an index if needed).
    /// Returns (image manifest, index digest). Mirrors and `--registry-map` are tried in order,
    /// then the original registry (unless `--skip-default-registry-fallback`).
    pub fn resolve_image(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<(Reference, RawManifest, Option<Digest>), RegistryError> {
        let candidates = self.cfg.pull_candidates(r.registry());
        let mut last = None;
        for (target, remapped) in &candidates {
            let src = match remap(r, target) {
                Ok(s) => s,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            match self.resolve_at(&src, platform) {
                Ok((m, ix)) => return Ok((src, m, ix)),
                Err(e) => {
                    if *remapped {
                        tracing::warn!(reference = %r, candidate = %src, "pull from mirror failed: {e}; trying next");
                    }
                    last = Some(e);
                }
            }
        }
        match last {
            Some(e) if candidates.len() > 1 => Err(RegistryError::AllCandidatesFailed {
                reference: r.to_string(),
                last: Box::new(e),
            }),
            Some(e) => Err(e),
            None => Err(RegistryError::NoDestination(r.to_string())),
        }
    }

    fn resolve_at(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<(RawManifest, Option<Digest>), RegistryError> {
        let top = self.pull_manifest(r)?;
        match &top.parsed {
            Parsed::Image(_) => Ok((top, None)),
            Parsed::Index(ix) => {
                let entry = manifest::select_platform(ix, platform).map_err(|source| {
                    RegistryError::Manifest {
                        reference: r.to_string(),
                        source,
                    }
                })?;
                let d = descriptor_digest(entry).map_err(|source| RegistryError::Manifest {
                    reference: r.to_string(),
                    source,
                })?;
                let child = self.pull_manifest(&r.with_digest(d))?;
                if !matches!(child.parsed, Parsed::Image(_)) {
                    return Err(RegistryError::Manifest {
                        reference: r.to_string(),
                        source: kiln_oci::ManifestError::UnsupportedMediaType(format!(
                            "{} (nested index)",
                            child.media_type
                        )),
                    });
                }
                Ok((child, Some(top.digest)))
            }
        }
    }

    /// Pulls the image for `platform`: its manifest, config and layers (into `store`; blobs
    /// already there are not fetched again: the store only ever publishes verified blobs).
    pub fn pull_image(
        &self,
        r: &Reference,
        platform: &Platform,
        store: &BlobStore,
    ) -> Result<PulledImage, RegistryError> {
        let (src, m, index_digest) = self.resolve_image(r, platform)?;
        let Parsed::Image(im) = &m.parsed else {
            return Err(RegistryError::Manifest {
                reference: r.to_string(),
                source: kiln_oci::ManifestError::UnsupportedMediaType(m.media_type.clone()),
            });
        };
        let manifest_err = |source| RegistryError::Manifest {
            reference: r.to_string(),
            source,
        };
        let config_digest = descriptor_digest(im.config()).map_err(manifest_err)?;
        // The config is read into memory: refuse an absurd declared size before fetching it.
        if im.config().size() > MAX_CONFIG_SIZE {
            return Err(RegistryError::TooLarge {
                what: "image config",
                registry: src.registry().to_string(),
                repository: src.repository().to_string(),
                limit: MAX_CONFIG_SIZE,
            });
        }
        let mut blobs = vec![im.config().clone()];
        blobs.extend(im.layers().iter().cloned());
        for d in &blobs {
            descriptor_digest(d).map_err(manifest_err)?;
        }
        self.fetch_blobs(&src, &blobs, store)?;
        let config_bytes = store.read(&config_digest)?;
        Ok(PulledImage {
            reference: r.clone(),
            source: src,
            manifest_digest: m.digest.clone(),
            index_digest,
            media_type: m.media_type.clone(),
            config_digest,
            config_bytes,
            layers: im.layers().clone(),
            manifest: m,
        })
    }

    /// Fetches several blobs into `store`, `max_concurrency` at a time.
    pub fn fetch_blobs(
        &self,
        r: &Reference,
        blobs: &[Descriptor],
        store: &BlobStore,
    ) -> Result<(), RegistryError> {
        crate::parallel::for_each(blobs, self.cfg.max_concurrency, |d| {
            let digest = descriptor_digest(d).map_err(|source| RegistryError::Manifest {
                reference: r.to_string(),
                source,
            })?;
            if store.contains(&digest) && store.size(&digest)? == d.size() {
                tracing::debug!(%digest, "blob already in the local store");
                return Ok(());
            }
            self.fetch_blob(r, &digest, d.size(), store)
        })
    }

    /// Streams one blob into `store`, verifying size and digest while streaming. A broken
    /// connection resumes with `Range: bytes=N-` (a 206 must start at N; a 200 restarts);
    /// attempts are bounded by the pull retry count. Nothing is kept on failure.
    pub fn fetch_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        size: u64,
        store: &BlobStore,
    ) -> Result<(), RegistryError> {
        let ctx = Ctx::new(r, Operation::PullBlob, Direction::Pull);
        let base = self.base(&ctx)?;
        let url = Url::parse(&format!("{base}/v2/{}/blobs/{digest}", ctx.repository))
            .map_err(|_| ctx.protocol("bad blob URL"))?;
        let max_resumes = self.cfg.retry.retries(Direction::Pull);
        let mut resumes = 0u32;
        let mut writer = store.writer()?;
        let size_err = |found: u64| RegistryError::SizeMismatch {
            what: "blob",
            registry: ctx.registry.clone(),
            repository: ctx.repository.clone(),
            expected: size,
            found,
        };
        loop {
            let have = writer.len();
            let mut req = Req::new(Method::GET, url.clone());
            if have > 0 {
                req = req.header(RANGE, &format!("bytes={have}-"));
            }
            let (mut resp, attempts) = self.execute(&ctx, &req)?;
            match resp.status() {
                StatusCode::OK => {
                    if have > 0 {
                        tracing::info!(%digest, "registry ignored Range; restarting the download");
                        writer = store.writer()?;
                    }
                    if let Some(n) = resp.content_length() {
                        if n != size {
                            return Err(size_err(n));
                        }
                    }
                    if let Some(h) = resp
                        .headers()
                        .get("docker-content-digest")
                        .and_then(|v| v.to_str().ok())
                    {
                        if let Ok(d) = h.parse::<Digest>() {
                            if &d != digest {
                                return Err(RegistryError::DigestMismatch {
                                    what: "blob (Docker-Content-Digest)",
                                    registry: ctx.registry.clone(),
                                    repository: ctx.repository.clone(),
                                    expected: digest.clone(),
                                    found: d,
                                });
                            }
                        }
                    }
                }
                StatusCode::PARTIAL_CONTENT => {
                    let start = resp
                        .headers()
                        .get(CONTENT_RANGE)
                        .and_then(|v| v.to_str().ok())
                        .and_then(content_range_start);
                    if start != Some(have) {
                        return Err(ctx.protocol(format!(
                            "206 response starts at {start:?}, expected byte {have}"
                        )));
                    }
                }
                st => return Err(ctx.status_err(st.as_u16(), error_body(resp), attempts)),
            }
            match copy_bounded(&mut resp, &mut writer, size, &|n| self.count_transferred(n)) {
                Ok(()) if writer.len() == size => break,
                Ok(()) => {
                    // Truncated body: resumable like a reset.
                    if resumes >= max_resumes {
                        return Err(size_err(writer.len()));
                    }
                }
                Err(CopyError::TooLong) => return Err(size_err(writer.len() + 1)),
                Err(CopyError::Write(e)) => {
                    return Err(kiln_oci::blobstore::BlobError::Io {
                        path: store.root().to_path_buf(),
                        source: e,
                    }
                    .into())
                }
                Err(CopyError::Read(e)) => {
                    if resumes >= max_resumes {
                        return Err(ctx.protocol(format!(
                            "connection broken at byte {} of {size}: {e}",
                            writer.len()
                        )));
                    }
                    tracing::info!(%digest, at = writer.len(), "blob download interrupted; resuming");
                }
            }
            std::thread::sleep(self.cfg.retry.backoff(resumes));
            resumes += 1;
        }
        writer
            .commit_expect(digest, Some(size))
            .map_err(|e| match e {
                kiln_oci::blobstore::BlobError::DigestMismatch { expected, found } => {
                    RegistryError::DigestMismatch {
                        what: "blob",
                        registry: ctx.registry.clone(),
                        repository: ctx.repository.clone(),
                        expected,
                        found,
                    }
                }
                other => other.into(),
            })?;
        tracing::info!(registry = %ctx.registry, repository = %ctx.repository, %digest, size, "pulled blob");
        Ok(())
    }

    /// A small blob (a config) read into memory, verified; at most `limit` bytes.
    pub fn fetch_blob_bytes(
        &self,
        r: &Reference,
        digest: &Digest,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let ctx = Ctx::new(r, Operation::PullBlob, Direction::Pull);
        let base = self.base(&ctx)?;
        let url = Url::parse(&format!("{base}/v2/{}/blobs/{digest}", ctx.repository))
            .map_err(|_| ctx.protocol("bad blob URL"))?;
        let (resp, attempts) = self.execute(&ctx, &Req::new(Method::GET, url))?;
        if !resp.status().is_success() {
            let st = resp.status().as_u16();
            return Err(ctx.status_err(st, error_body(resp), attempts));
        }
        let bytes = read_bounded(resp, limit).map_err(|e| match e {
            None => RegistryError::TooLarge {
                what: "blob",
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                limit,
            },
            Some(e) => ctx.protocol(format!("reading blob: {e}")),
        })?;
        let found = Digest::of(&bytes);
        if &found != digest {
            return Err(RegistryError::DigestMismatch {
                what: "blob",
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                expected: digest.clone(),
                found,
            });
        }
        Ok(bytes)
    }
}

/// `r` on another registry (a mirror or `--registry-map` target, `host[/prefix]`).
fn remap(r: &Reference, target: &str) -> Result<Reference, RegistryError> {
    if target == r.registry() {
        return Ok(r.clone());
    }
    match target.split_once('/') {
        None => Ok(r.with_registry(target)?),
        Some((host, prefix)) => {
            let moved = r.with_registry(host)?;
            Ok(moved.with_repository(&format!("{prefix}/{}", r.repository()))?)
        }
    }
}

/// `bytes START-END/TOTAL` → START.
fn content_range_start(v: &str) -> Option<u64> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    rest.split('-').next()?.trim().parse().ok()
}

enum CopyError {
    Read(std::io::Error),
    Write(std::io::Error),
    TooLong,
}

/// Copies until EOF; more than `limit` bytes in total is an error (an extra byte is caught
/// without reading on).
fn copy_bounded(
    r: &mut impl Read,
    w: &mut kiln_oci::blobstore::BlobWriter,
    limit: u64,
    moved: &dyn Fn(u64),
) -> Result<(), CopyError> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CopyError::Read(e)),
        };
        if w.len() + n as u64 > limit {
            return Err(CopyError::TooLong);
        }
        w.write_all(&buf[..n]).map_err(CopyError::Write)?;
        moved(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_and_remap() {
        assert_eq!(content_range_start("bytes 100-199/200"), Some(100));
        assert_eq!(content_range_start("bytes */200"), None);
        let r: Reference = "ubuntu:22.04".parse().unwrap();
        assert_eq!(
            remap(&r, "mirror.local:5000").unwrap().to_string(),
            "mirror.local:5000/library/ubuntu:22.04"
        );
        assert_eq!(
            remap(&r, "mirror.local/hub").unwrap().to_string(),
            "mirror.local/hub/library/ubuntu:22.04"
        );
        assert_eq!(remap(&r, "docker.io").unwrap(), r);
    }
}

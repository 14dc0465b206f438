//! Pushing: HEAD first, cross-repository mount, POST + monolithic PUT or PATCH chunks with
//! resume, and the manifest PUT only once every blob is present (distribution spec "Pushing
//! blobs", "Pushing manifests").

use crate::client::{error_body, Client, Ctx, Req, ReqBody};
use crate::config::Direction;
use crate::error::{Operation, RegistryError};
use kiln_oci::manifest::{descriptor_digest, parse};
use kiln_oci::{BlobStore, Digest, Parsed, Reference};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode, Url};
use std::collections::HashMap;
use std::sync::Arc;

/// What happened to one blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPush {
    /// Already in the repository (HEAD said so): nothing sent.
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded.
    Uploaded,
}

/// Counts of a push (for logs and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Digest of the pushed manifest or index.
    pub digest: Option<Digest>,
    /// Blobs that were already there.
    pub existed: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs uploaded.
    pub uploaded: usize,
}

impl Client {
    fn blob_url(&self, ctx: &Ctx, digest: &Digest) -> Result<Url, RegistryError> {
        let base = self.base(ctx)?;
        Url::parse(&format!("{base}/v2/{}/blobs/{digest}", ctx.repository))
            .map_err(|_| ctx.protocol("bad blob URL"))
    }

    /// True when the repository has the blob (`HEAD /v2/<name>/blobs/<digest>`).
    pub fn blob_exists(&self, target: &Reference, digest: &Digest) -> Result<bool, RegistryError> {
        let ctx = Ctx::new(target, Operation::CheckBlob, Direction::Push);
        self.head_blob(&ctx, digest)
    }

    fn head_blob(&self, ctx: &Ctx, digest: &Digest) -> Result<bool, RegistryError> {
        let ctx = ctx.with_op(Operation::CheckBlob);
        let url = self.blob_url(&ctx, digest)?;
        let (resp, attempts) = self.execute(&ctx, &Req::new(Method::HEAD, url))?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(ctx.status_err(s.as_u16(), error_body(resp), attempts)),
        }
    }

    /// Pushes one blob from `store` to the repository of `target`: HEAD, then a mount from
    /// `mount_from` (same registry) when given, else an upload.
    pub fn push_blob(
        &self,
        target: &Reference,
        digest: &Digest,
        store: &BlobStore,
        mount_from: Option<&Reference>,
    ) -> Result<BlobPush, RegistryError> {
        let ctx = Ctx::new(target, Operation::PushBlob, Direction::Push);
        if !store.contains(digest) {
            return Err(RegistryError::MissingBlob {
                digest: digest.clone(),
                reference: target.to_string(),
            });
        }
        let size = store.size(digest)?;
        if self.head_blob(&ctx, digest)? {
            tracing::debug!(%digest, repository = %ctx.repository, "blob already present");
            return Ok(BlobPush::Existed);
        }
        let base = Url::parse(&self.base(&ctx)?).map_err(|_| ctx.protocol("bad base URL"))?;
        let mut session = None;
        if let Some(from) = mount_from
            .filter(|f| f.registry() == target.registry() && f.repository() != target.repository())
        {
            match self.try_mount(&ctx, &base, digest, from) {
                Ok(MountResult::Mounted) => {
                    tracing::info!(%digest, from = %from.repository(), to = %ctx.repository, "mounted blob");
                    return Ok(BlobPush::Mounted);
                }
                Ok(MountResult::Session(u)) => session = Some(u),
                Err(e) => {
                    tracing::debug!(%digest, "mount failed ({e}); uploading instead");
                }
            }
        }
        let location = match session {
            Some(u) => u,
            None => self.start_upload(&ctx, &base)?,
        };
        let path = store.path(digest);
        if size <= self.cfg.monolithic_limit {
            self.put_monolithic(&ctx, &base, location, digest, &path, size)?;
        } else {
            self.put_chunked(&ctx, &base, location, digest, &path, size)?;
        }
        tracing::info!(registry = %ctx.registry, repository = %ctx.repository, %digest, size, "pushed blob");
        Ok(BlobPush::Uploaded)
    }

    fn try_mount(
        &self,
        ctx: &Ctx,
        base: &Url,
        digest: &Digest,
        from: &Reference,
    ) -> Result<MountResult, RegistryError> {
        let mut mctx = ctx.with_op(Operation::MountBlob);
        // The token must grant pull on the source repository as well.
        mctx.scope = format!(
            "{} repository:{}:pull",
            ctx.scope,
            from.context().repository
        );
        let mut url = base
            .join(&format!("/v2/{}/blobs/uploads/", ctx.repository))
            .map_err(|_| ctx.protocol("bad upload URL"))?;
        url.query_pairs_mut()
            .append_pair("mount", &digest.to_string())
            .append_pair("from", &from.context().repository);
        let req = Req::new(Method::POST, url).header(CONTENT_LENGTH, "0");
        let (resp, attempts) = self.execute(&mctx, &req)?;
        match resp.status() {
            StatusCode::CREATED => Ok(MountResult::Mounted),
            StatusCode::ACCEPTED => Ok(MountResult::Session(
                self.upload_location(ctx, base, &resp)?,
            )),
            s => Err(mctx.status_err(s.as_u16(), error_body(resp), attempts)),
        }
    }

    /// `POST /v2/<name>/blobs/uploads/` → 202 with the session's Location. (Distribution
    /// ignores a body on this POST, so kiln never sends one.)
    fn start_upload(&self, ctx: &Ctx, base: &Url) -> Result<Url, RegistryError> {
        let url = base
            .join(&format!("/v2/{}/blobs/uploads/", ctx.repository))
            .map_err(|_| ctx.protocol("bad upload URL"))?;
        let req = Req::new(Method::POST, url).header(CONTENT_LENGTH, "0");
        let (resp, attempts) = self.execute(ctx, &req)?;
        if resp.status() != StatusCode::ACCEPTED {
            let st = resp.status().as_u16();
            return Err(ctx.status_err(st, error_body(resp), attempts));
        }
        self.upload_location(ctx, base, &resp)
    }

    fn with_digest(location: &Url, digest: &Digest) -> Url {
        let mut u = location.clone();
        u.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        u
    }

    /// One PUT `<Location>&digest=` with the whole blob. A failed attempt re-sends the whole
    /// blob to a fresh session (the old one may be half-written).
    fn put_monolithic(
        &self,
        ctx: &Ctx,
        base: &Url,
        mut location: Url,
        digest: &Digest,
        path: &std::path::Path,
        size: u64,
    ) -> Result<(), RegistryError> {
        let max = self.cfg.retry.retries(Direction::Push) + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = Req::new(Method::PUT, Self::with_digest(&location, digest))
                .header(CONTENT_TYPE, "application/octet-stream");
            req.body = ReqBody::File {
                path: path.to_path_buf(),
                offset: 0,
                len: size,
            };
            req.retry = false;
            let result = self.execute(ctx, &req);
            match result {
                Ok((resp, _)) if resp.status() == StatusCode::CREATED => {
                    self.count_transferred(size);
                    return Ok(());
                }
                Ok((resp, _)) if retryable(resp.status()) && attempt < max => {
                    tracing::info!(%digest, status = resp.status().as_u16(), "blob upload failed; retrying with a new session");
                }
                Ok((resp, _)) => {
                    let st = resp.status().as_u16();
                    return Err(ctx.status_err(st, error_body(resp), attempt));
                }
                Err(RegistryError::Transport { .. }) if attempt < max => {
                    tracing::info!(%digest, "connection broken during upload; retrying with a new session");
                }
                Err(e) => return Err(e),
            }
            std::thread::sleep(self.cfg.retry.backoff(attempt - 1));
            location = self.start_upload(ctx, base)?;
        }
    }

    /// PATCH chunks (`Content-Range: start-end`, inclusive) then `PUT ?digest=`. After a
    /// failure (connection, 416, 5xx) the session's `GET` tells how much arrived (`Range:
    /// 0-N`) and the upload resumes at N+1.
    fn put_chunked(
        &self,
        ctx: &Ctx,
        base: &Url,
        mut location: Url,
        digest: &Digest,
        path: &std::path::Path,
        size: u64,
    ) -> Result<(), RegistryError> {
        let max_failures = self.cfg.retry.retries(Direction::Push);
        let mut failures = 0u32;
        let mut offset = 0u64;
        let chunk = self.cfg.chunk_size.max(1);
        while offset < size {
            let end = (offset + chunk).min(size);
            let mut req = Req::new(Method::PATCH, location.clone())
                .header(CONTENT_TYPE, "application/octet-stream")
                .header(
                    reqwest::header::CONTENT_RANGE,
                    &format!("{offset}-{}", end - 1),
                );
            req.body = ReqBody::File {
                path: path.to_path_buf(),
                offset,
                len: end - offset,
            };
            req.retry = false;
            let failure = match self.execute(ctx, &req) {
                Ok((resp, _)) if resp.status() == StatusCode::ACCEPTED => {
                    self.count_transferred(end - offset);
                    location = self.upload_location(ctx, base, &resp)?;
                    offset = match range_end(&resp) {
                        Some(last) if last + 1 >= offset && last < size => last + 1,
                        _ => end,
                    };
                    continue;
                }
                Ok((resp, _))
                    if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE
                        || retryable(resp.status()) =>
                {
                    format!("HTTP {}", resp.status().as_u16())
                }
                Ok((resp, attempts)) => {
                    let st = resp.status().as_u16();
                    return Err(ctx.status_err(st, error_body(resp), attempts));
                }
                Err(RegistryError::Transport { detail, .. }) => detail,
                Err(e) => return Err(e),
            };
            failures += 1;
            if failures > max_failures {
                return Err(ctx.protocol(format!(
                    "chunked upload failed at byte {offset} of {size} after {failures} failures: {failure}"
                )));
            }
            std::thread::sleep(self.cfg.retry.backoff(failures - 1));
            let (resp, _) = self.execute(ctx, &Req::new(Method::GET, location.clone()))?;
            if !resp.status().is_success() {
                // Distribution refuses a session whose `_state` is older than what it stored
                // (the answer to the last PATCH was lost): start over in a new session.
                tracing::info!(%digest, status = resp.status().as_u16(), "upload session lost; restarting the upload");
                location = self.start_upload(ctx, base)?;
                offset = 0;
                continue;
            }
            if let Ok(l) = self.upload_location(ctx, base, &resp) {
                location = l;
            }
            offset = match range_end(&resp) {
                // Distribution reports "0-0" for an empty session as well as for one byte.
                Some(0) | None => 0,
                Some(last) => (last + 1).min(size),
            };
            tracing::info!(%digest, offset, "resuming chunked upload");
        }
        let mut req = Req::new(Method::PUT, Self::with_digest(&location, digest));
        req.body = ReqBody::Bytes(Arc::new(Vec::new()));
        let (resp, attempts) = self.execute(ctx, &req)?;
        if resp.status() != StatusCode::CREATED {
            let st = resp.status().as_u16();
            return Err(ctx.status_err(st, error_body(resp), attempts));
        }
        Ok(())
    }

    /// `PUT /v2/<name>/manifests/<tag or digest>`; returns the manifest's digest (checked
    /// against `Docker-Content-Digest` when the registry sends one).
    pub fn push_manifest(
        &self,
        target: &Reference,
        manifest: &[u8],
        media_type: &str,
    ) -> Result<Digest, RegistryError> {
        let ctx = Ctx::new(target, Operation::PushManifest, Direction::Push);
        let digest = Digest::of(manifest);
        let base = self.base(&ctx)?;
        let reference = target
            .tag()
            .map_or_else(|| digest.to_string(), str::to_string);
        let url = Url::parse(&format!(
            "{base}/v2/{}/manifests/{reference}",
            ctx.repository
        ))
        .map_err(|_| ctx.protocol("bad manifest URL"))?;
        let mut req = Req::new(Method::PUT, url).header(CONTENT_TYPE, media_type);
        req.body = ReqBody::Bytes(Arc::new(manifest.to_vec()));
        let (resp, attempts) = self.execute(&ctx, &req)?;
        if !resp.status().is_success() {
            let st = resp.status().as_u16();
            return Err(ctx.status_err(st, error_body(resp), attempts));
        }
        if let Some(Ok(d)) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::parse::<Digest>)
        {
            if d != digest {
                return Err(RegistryError::DigestMismatch {
                    what: "pushed manifest (Docker-Content-Digest)",
                    registry: ctx.registry.clone(),
                    repository: ctx.repository.clone(),
                    expected: digest,
                    found: d,
                });
            }
        }
        tracing::info!(registry = %ctx.registry, repository = %ctx.repository, %reference, %digest, "pushed manifest");
        Ok(digest)
    }

    /// Pushes an image (or an index whose child manifests are blobs in `store`) to every
    /// target. Blobs go first (in parallel; HEAD skips present ones; a second repository on
    /// the same registry mounts from the first), manifests last. Returns the digest.
    pub fn push_image(
        &self,
        targets: &[Reference],
        manifest: &[u8],
        media_type: &str,
        store: &BlobStore,
    ) -> Result<Digest, RegistryError> {
        self.push_image_with_sources(targets, manifest, media_type, store, &HashMap::new())
            .map(|r| r.digest.unwrap_or_else(|| Digest::of(manifest)))
    }

    /// [`Client::push_image`] with known blob origins: a blob listed in `sources` (e.g. the
    /// base image's layers) is mounted from that repository when it is on the same registry.
    pub fn push_image_with_sources(
        &self,
        targets: &[Reference],
        manifest: &[u8],
        media_type: &str,
        store: &BlobStore,
        sources: &HashMap<Digest, Reference>,
    ) -> Result<PushReport, RegistryError> {
        let first = targets
            .first()
            .ok_or_else(|| RegistryError::NoDestination("image".into()))?;
        let manifest_err = |source| RegistryError::Manifest {
            reference: first.to_string(),
            source,
        };
        let (_, parsed) = parse(manifest, Some(media_type)).map_err(manifest_err)?;
        // Children of an index: (bytes, media type) pushed by digest before the index.
        let mut children: Vec<(Vec<u8>, String)> = Vec::new();
        let mut blobs: Vec<Digest> = Vec::new();
        let add_image = |m: &kiln_oci::ImageManifest, blobs: &mut Vec<Digest>| {
            let mut ds = vec![descriptor_digest(m.config()).map_err(manifest_err)?];
            for l in m.layers() {
                ds.push(descriptor_digest(l).map_err(manifest_err)?);
            }
            for d in ds {
                if !blobs.contains(&d) {
                    blobs.push(d);
                }
            }
            Ok::<(), RegistryError>(())
        };
        match &parsed {
            Parsed::Image(m) => add_image(m, &mut blobs)?,
            Parsed::Index(ix) => {
                for entry in ix.manifests() {
                    let d = descriptor_digest(entry).map_err(manifest_err)?;
                    let bytes = store.read(&d).map_err(|_| RegistryError::MissingBlob {
                        digest: d.clone(),
                        reference: first.to_string(),
                    })?;
                    let child_type = entry.media_type().to_string();
                    match parse(&bytes, Some(&child_type)).map_err(manifest_err)?.1 {
                        Parsed::Image(m) => add_image(&m, &mut blobs)?,
                        Parsed::Index(_) => {
                            return Err(manifest_err(
                                kiln_oci::ManifestError::UnsupportedMediaType(format!(
                                    "{child_type} (nested index)"
                                )),
                            ))
                        }
                    }
                    children.push((bytes, child_type));
                }
            }
        }
        let mut report = PushReport::default();
        let mut done_repos: Vec<Reference> = Vec::new();
        for target in targets {
            if done_repos
                .iter()
                .any(|d| d.registry() == target.registry() && d.repository() == target.repository())
            {
                continue;
            }
            let earlier = done_repos
                .iter()
                .find(|d| d.registry() == target.registry())
                .cloned();
            let outcomes = std::sync::Mutex::new(Vec::new());
            crate::parallel::for_each(&blobs, self.cfg.max_concurrency, |d| {
                let from = sources
                    .get(d)
                    .filter(|s| s.registry() == target.registry())
                    .or(earlier.as_ref());
                let o = self.push_blob(target, d, store, from)?;
                if let Ok(mut v) = outcomes.lock() {
                    v.push(o);
                }
                Ok::<(), RegistryError>(())
            })?;
            for o in outcomes.into_inner().unwrap_or_default() {
                match o {
                    BlobPush::Existed => report.existed += 1,
                    BlobPush::Mounted => report.mounted += 1,
                    BlobPush::Uploaded => report.uploaded += 1,
                }
            }
            for (bytes, child_type) in &children {
                let child = strip_tag(&target.with_digest(Digest::of(bytes)))?;
                self.push_manifest(&child, bytes, child_type)?;
            }
            done_repos.push(target.clone());
        }
        let mut digest = None;
        for target in targets {
            digest = Some(self.push_manifest(target, manifest, media_type)?);
        }
        report.digest = digest;
        Ok(report)
    }

    /// Kaniko's up-front probe: start an upload in the repository and cancel it. Fails with
    /// the registry's error (401/403 with its code) when pushing is not allowed.
    pub fn check_push_permission(&self, target: &Reference) -> Result<(), RegistryError> {
        let ctx = Ctx::new(target, Operation::CheckPushPermission, Direction::Push);
        let base = Url::parse(&self.base(&ctx)?).map_err(|_| ctx.protocol("bad base URL"))?;
        let location = self.start_upload(&ctx, &base)?;
        match self.execute(&ctx, &Req::new(Method::DELETE, location)) {
            Ok((resp, _)) if !resp.status().is_success() => {
                tracing::debug!(
                    status = resp.status().as_u16(),
                    "cancelling the probe upload failed (harmless)"
                );
            }
            Err(e) => tracing::debug!("cancelling the probe upload failed (harmless): {e}"),
            Ok(_) => {}
        }
        Ok(())
    }
}

/// A digest-only reference (manifests of an index are pushed by digest, untagged).
fn strip_tag(r: &Reference) -> Result<Reference, RegistryError> {
    let d = r.digest().cloned();
    let s = format!("{}/{}", r.registry(), r.repository());
    let base: Reference = match d {
        Some(d) => format!("{s}@{d}").parse()?,
        None => s.parse()?,
    };
    Ok(base)
}

enum MountResult {
    Mounted,
    Session(Url),
}

fn retryable(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// `Range: 0-N` of an upload session → N.
fn range_end(resp: &reqwest::blocking::Response) -> Option<u64> {
    let v = resp.headers().get(RANGE)?.to_str().ok()?;
    let v = v.trim().trim_start_matches("bytes=");
    v.split_once('-')?.1.trim().parse().ok()
}

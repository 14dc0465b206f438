//! Local first, then remote: a remote hit is copied into the local cache; a store goes to both.

use super::{CacheError, CacheKey, CachedLayer, Explanation, KeyParts, LayerCache};
use crate::image::LayerRecord;
use kiln_oci::BlobStore;

/// Two caches checked in order (usually [`super::LocalCache`] then a registry or layout
/// cache).
pub struct Tiered<L, R> {
    /// Checked first, filled from `remote` hits.
    pub local: L,
    /// Checked on a local miss.
    pub remote: R,
}

impl<L: LayerCache, R: LayerCache> Tiered<L, R> {
    /// `local` then `remote`.
    pub fn new(local: L, remote: R) -> Self {
        Tiered { local, remote }
    }
}

impl<L: LayerCache, R: LayerCache> LayerCache for Tiered<L, R> {
    fn lookup(&self, key: &CacheKey, blobs: &BlobStore) -> Result<Option<CachedLayer>, CacheError> {
        if let Some(hit) = self.local.lookup(key, blobs)? {
            return Ok(Some(hit));
        }
        let hit = self.remote.lookup(key, blobs)?;
        if let Some(h) = &hit {
            // Best effort: a full disk must not turn a hit into a failure.
            if let Err(e) = self.local.store(key, h.layer.as_ref(), blobs) {
                tracing::debug!(%key, "could not copy a remote cache hit into the local cache: {e}");
            }
        }
        Ok(hit)
    }

    fn store(
        &self,
        key: &CacheKey,
        layer: Option<&LayerRecord>,
        blobs: &BlobStore,
    ) -> Result<(), CacheError> {
        let local = self.local.store(key, layer, blobs);
        let remote = self.remote.store(key, layer, blobs);
        local.and(remote)
    }

    fn prefetch(&self, keys: &[CacheKey], blobs: &BlobStore) {
        // What the local cache has is looked up there (cheaply) by the step itself; asking
        // the remote too would fetch and verify its layer for nothing.
        let remote: Vec<CacheKey> = keys
            .iter()
            .filter(|k| !self.local.contains(k))
            .cloned()
            .collect();
        self.local.prefetch(keys, blobs);
        self.remote.prefetch(&remote, blobs);
    }

    fn contains(&self, key: &CacheKey) -> bool {
        self.local.contains(key) || self.remote.contains(key)
    }

    fn explain(&self, key: &CacheKey, parts: &KeyParts, stage: &str) -> Explanation {
        match self.local.explain(key, parts, stage) {
            Explanation::Unknown => self.remote.explain(key, parts, stage),
            known => known,
        }
    }

    fn miss_note(&self, key: &CacheKey) -> Option<String> {
        // Both asked: each note is taken once.
        let local = self.local.miss_note(key);
        let remote = self.remote.miss_note(key);
        remote.or(local)
    }

    fn take_warnings(&self) -> Vec<String> {
        let mut w = self.local.take_warnings();
        w.extend(self.remote.take_warnings());
        w
    }

    fn describe(&self) -> String {
        format!("{}, then {}", self.local.describe(), self.remote.describe())
    }
}

impl LayerCache for Box<dyn LayerCache> {
    fn lookup(&self, key: &CacheKey, blobs: &BlobStore) -> Result<Option<CachedLayer>, CacheError> {
        (**self).lookup(key, blobs)
    }
    fn store(
        &self,
        key: &CacheKey,
        layer: Option<&LayerRecord>,
        blobs: &BlobStore,
    ) -> Result<(), CacheError> {
        (**self).store(key, layer, blobs)
    }
    fn prefetch(&self, keys: &[CacheKey], blobs: &BlobStore) {
        (**self).prefetch(keys, blobs)
    }
    fn contains(&self, key: &CacheKey) -> bool {
        (**self).contains(key)
    }
    fn explain(&self, key: &CacheKey, parts: &KeyParts, stage: &str) -> Explanation {
        (**self).explain(key, parts, stage)
    }
    fn miss_note(&self, key: &CacheKey) -> Option<String> {
        (**self).miss_note(key)
    }
    fn take_warnings(&self) -> Vec<String> {
        (**self).take_warnings()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

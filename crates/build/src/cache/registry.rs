//! Kaniko's registry cache: `--cache-repo` holds one-layer images tagged by key.

use super::entry::{self, Reject, MAX_ENTRY_JSON};
use super::{CacheError, CacheKey, CachedLayer, LayerCache, Warnings};
use crate::image::LayerRecord;
use kiln_oci::manifest::Parsed;
use kiln_oci::{BlobStore, Platform, Reference};
use kiln_registry::{Client, RegistryError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

/// How many prefetch lookups run at once, over all [`LayerCache::prefetch`] calls of one
/// cache (each is a manifest, a config and possibly a layer download).
pub const PREFETCH_THREADS: usize = 4;

/// A memoised lookup: in flight, or done.
enum Slot {
    Pending,
    Done(Option<CachedLayer>),
}

struct Inner {
    client: Arc<Client>,
    repo: Reference,
    ttl: Duration,
    platform: Platform,
    warnings: Warnings,
    notes: super::MissNotes,
    memo: Mutex<HashMap<CacheKey, Slot>>,
    ready: Condvar,
    /// Prefetches not started yet, oldest first (an earlier step's key is needed sooner),
    /// and how many worker threads are draining it.
    queue: Mutex<Prefetch>,
}

#[derive(Default)]
struct Prefetch {
    todo: VecDeque<(CacheKey, BlobStore)>,
    workers: usize,
}

/// The registry cache (`--cache-repo registry/repo`). Cheap to clone; thread-safe.
#[derive(Clone)]
pub struct RegistryCache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RegistryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RegistryCache({})", self.inner.repo.name())
    }
}

impl RegistryCache {
    /// A cache in repository `repo` (its tag, if any, is ignored) with `--cache-ttl` `ttl`
    /// (zero: no age limit); entries are written for `platform` (the build's target).
    pub fn new(
        client: Arc<Client>,
        repo: Reference,
        ttl: Duration,
        platform: Platform,
    ) -> RegistryCache {
        RegistryCache {
            inner: Arc::new(Inner {
                client,
                repo,
                ttl,
                platform,
                warnings: Warnings::default(),
                notes: super::MissNotes::default(),
                memo: Mutex::new(HashMap::new()),
                ready: Condvar::new(),
                queue: Mutex::new(Prefetch::default()),
            }),
        }
    }

    /// The reference of the entry for `key`: `<repo>:<key>`.
    pub fn entry_ref(&self, key: &CacheKey) -> Result<Reference, CacheError> {
        self.inner
            .repo
            .with_tag(key.as_str())
            .map_err(|e| CacheError::Reference {
                reference: format!("{}:{key}", self.inner.repo.name()),
                reason: e.to_string(),
            })
    }
}

impl Inner {
    fn lookup_uncached(&self, key: &CacheKey, blobs: &BlobStore) -> Option<CachedLayer> {
        let r = match self.repo.with_tag(key.as_str()) {
            Ok(r) => r,
            Err(e) => {
                self.warnings.push(format!("cache: {key}: {e}"));
                return None;
            }
        };
        let bad = |why: String| {
            self.warnings.push(format!(
                "cache entry {r} is not used: {why}; the step is rebuilt"
            ));
            None
        };
        let manifest = match self.client.pull_manifest(&r) {
            Ok(m) => m,
            Err(RegistryError::Status { status: 404, .. }) => {
                tracing::debug!(entry = %r, "cache miss");
                return None;
            }
            Err(e) => return bad(format!("looking it up failed: {e}")),
        };
        let Parsed::Image(im) = &manifest.parsed else {
            return bad(format!(
                "it is an index ({}), not an image",
                manifest.media_type
            ));
        };
        let cfg_digest = match entry::config_digest(im) {
            Ok(d) => d,
            Err(Reject::Bad(why)) | Err(Reject::Expired { created: why }) => return bad(why),
        };
        let config = match self
            .client
            .fetch_blob_bytes(&r, &cfg_digest, MAX_ENTRY_JSON)
        {
            Ok(c) => c,
            Err(e) => return bad(format!("fetching its config failed: {e}")),
        };
        let info = match entry::check_entry(key, im, &config, self.ttl, SystemTime::now()) {
            Ok(i) => i,
            Err(Reject::Expired { created }) => {
                tracing::debug!(entry = %r, %created, "cache entry expired (--cache-ttl)");
                self.notes.expired(key, &created, self.ttl);
                return None;
            }
            Err(Reject::Bad(why)) => return bad(why),
        };
        if let Some(l) = &info.layer {
            let have = blobs.contains(&l.digest) && blobs.size(&l.digest).ok() == Some(l.size);
            if !have {
                if let Err(e) = self.client.fetch_blob(&r, &l.digest, l.size, blobs) {
                    return bad(format!("fetching its layer failed: {e}"));
                }
            }
            if let Err(why) = entry::verify_layer(blobs, l) {
                return bad(why);
            }
        }
        tracing::debug!(entry = %r, "cache hit");
        Some(CachedLayer {
            key: key.clone(),
            layer: info.layer,
            created: info.created,
        })
    }

    /// Drains the prefetch queue, then exits. The worker count is decremented under the same
    /// lock as the emptiness check, so a key queued concurrently always finds a worker.
    fn prefetch_worker(&self) {
        loop {
            let next = match self.queue.lock() {
                Ok(mut q) => match q.todo.pop_front() {
                    Some(job) => job,
                    None => {
                        q.workers -= 1;
                        return;
                    }
                },
                Err(_) => return,
            };
            let (key, blobs) = next;
            // Should the lookup panic, the guard releases the slot (so the step's own lookup
            // does not wait forever) and the worker count.
            let mut guard = PrefetchGuard {
                inner: self,
                key: Some(key.clone()),
            };
            // A failed prefetch is a miss plus the warning `lookup_uncached` records, exactly
            // as the same lookup made by the step itself.
            let v = self.lookup_uncached(&key, &blobs);
            self.memo_set(&key, v);
            // Disarmed: nothing is left in it to leak.
            guard.key = None;
            std::mem::forget(guard);
        }
    }

    /// Forgets a claimed slot (the lookup was never made); waiters then make it themselves.
    fn memo_release(&self, key: &CacheKey) {
        if let Ok(mut memo) = self.memo.lock() {
            memo.remove(key);
        }
        self.ready.notify_all();
    }

    /// Returns the memoised result, waiting for an in-flight prefetch; or claims the slot.
    fn memo_get_or_claim(&self, key: &CacheKey) -> Option<Option<CachedLayer>> {
        let Ok(mut memo) = self.memo.lock() else {
            return None;
        };
        loop {
            match memo.get(key) {
                Some(Slot::Done(v)) => return Some(v.clone()),
                Some(Slot::Pending) => {
                    memo = match self.ready.wait(memo) {
                        Ok(m) => m,
                        Err(_) => return None,
                    };
                }
                None => {
                    memo.insert(key.clone(), Slot::Pending);
                    return None;
                }
            }
        }
    }

    fn memo_set(&self, key: &CacheKey, v: Option<CachedLayer>) {
        if let Ok(mut memo) = self.memo.lock() {
            memo.insert(key.clone(), Slot::Done(v));
        }
        self.ready.notify_all();
    }
}

/// Undoes a prefetch worker's claims when its lookup unwinds.
struct PrefetchGuard<'a> {
    inner: &'a Inner,
    key: Option<CacheKey>,
}

impl Drop for PrefetchGuard<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.inner.memo_release(&k);
        }
        if let Ok(mut q) = self.inner.queue.lock() {
            q.workers = q.workers.saturating_sub(1);
        }
    }
}

impl LayerCache for RegistryCache {
    fn lookup(&self, key: &CacheKey, blobs: &BlobStore) -> Result<Option<CachedLayer>, CacheError> {
        if let Some(v) = self.inner.memo_get_or_claim(key) {
            // A memoised hit is still only usable if its blob is still there.
            if let Some(Some(l)) = v.as_ref().map(|c| c.layer.as_ref()) {
                if !blobs.contains(&l.digest) {
                    let fresh = self.inner.lookup_uncached(key, blobs);
                    self.inner.memo_set(key, fresh.clone());
                    return Ok(fresh);
                }
            }
            return Ok(v);
        }
        let v = self.inner.lookup_uncached(key, blobs);
        self.inner.memo_set(key, v.clone());
        Ok(v)
    }

    fn store(
        &self,
        key: &CacheKey,
        layer: Option<&LayerRecord>,
        blobs: &BlobStore,
    ) -> Result<(), CacheError> {
        let r = self.entry_ref(key)?;
        let assembled =
            entry::build_entry(key, layer, blobs, &self.inner.platform, SystemTime::now())?;
        self.inner.client.push_image(
            std::slice::from_ref(&r),
            &assembled.manifest_bytes,
            &assembled.manifest_media_type,
            blobs,
        )?;
        tracing::info!(entry = %r, "stored cache entry");
        // A later lookup in this build sees the new entry.
        self.inner.memo_set(
            key,
            Some(CachedLayer {
                key: key.clone(),
                layer: layer.cloned(),
                created: SystemTime::now(),
            }),
        );
        Ok(())
    }

    fn prefetch(&self, keys: &[CacheKey], blobs: &BlobStore) {
        let mut todo = Vec::new();
        if let Ok(mut memo) = self.inner.memo.lock() {
            for k in keys {
                if !memo.contains_key(k) {
                    memo.insert(k.clone(), Slot::Pending);
                    todo.push(k.clone());
                }
            }
        }
        if todo.is_empty() {
            return;
        }
        let spawn = match self.inner.queue.lock() {
            Ok(mut q) => {
                q.todo.extend(todo.into_iter().map(|k| (k, blobs.clone())));
                let spawn = PREFETCH_THREADS.saturating_sub(q.workers).min(q.todo.len());
                q.workers += spawn;
                spawn
            }
            Err(_) => {
                // A poisoned queue: release the claimed slots so lookups do not wait forever.
                for k in todo {
                    self.inner.memo_release(&k);
                }
                return;
            }
        };
        for _ in 0..spawn {
            let inner = self.inner.clone();
            // Detached: a result nobody asks for is simply dropped with the cache.
            std::thread::spawn(move || inner.prefetch_worker());
        }
    }

    fn miss_note(&self, key: &CacheKey) -> Option<String> {
        self.inner.notes.take(key)
    }

    fn take_warnings(&self) -> Vec<String> {
        self.inner.warnings.take()
    }

    fn describe(&self) -> String {
        format!("registry {}", self.inner.repo.name())
    }
}

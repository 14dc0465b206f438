//! The layer cache: cache keys per step, and where cached layers live.
//!
//! - [`key`]: a step's [`CacheKey`] is a framed rolling sha256 over its parent key, the
//!   platform, the expanded instruction, the build args and env it sees and the content of the
//!   files it reads ([`KeyChain`], [`StepInputs`], [`hash_tree`], [`hash_context_sources`]).
//! - [`LayerCache`]: `lookup(key)` / `store(key, layer)` with four implementations:
//!   [`RegistryCache`] (Kaniko's `--cache-repo`: one-layer images tagged `<repo>:<key>`),
//!   [`OciLayoutCache`] (`--cache-repo oci:/path`), [`LocalCache`] (the state dir's blob store
//!   plus a key index, for local builds) and [`Tiered`] (local first, then remote).
//! - [`warm`] and [`BaseImageCache`]: Kaniko's warmer and the `--cache-dir` base-image cache.
//!
//! Every entry is verified before use: the layer blob's digest *and* its diffID (the sha256 of
//! the uncompressed tar) must match what the entry claims, the entry must name the key it was
//! asked for, and it must be younger than the TTL. A bad entry is a miss plus a warning
//! (HOSTILE-INPUTS 40, CVE-2024-24557), never an error and never a stale layer. See
//! `docs/cache.md` for the design and the engine's calling sequence.

pub mod entry;
pub mod key;
pub mod layout;
pub mod local;
pub mod registry;
pub mod tiered;
pub mod time;
pub mod warm;

pub use key::{
    explain, hash_context_sources, hash_tree, is_cacheable, BaseIdentity, CacheKey, FileDigests,
    KeyChain, KeyParts, StepInputs,
};
pub use layout::OciLayoutCache;
pub use local::{LocalCache, LocalEntry, PruneReport};
pub use registry::RegistryCache;
pub use tiered::Tiered;
pub use time::{format_rfc3339, parse_rfc3339, parse_ttl, DEFAULT_TTL};
pub use warm::{warm, BaseImageCache, CachedBase, WarmOptions, WarmOutcome};

use crate::image::LayerRecord;
use kiln_oci::{BlobStore, Reference};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// Errors of the cache. A lookup never returns an error for a bad or missing *entry* (that is
/// a miss); these are for things the caller must hear about: a store that failed, an
/// unreadable local index, an invalid flag.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache: {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cache: {0}")]
    Registry(Box<kiln_registry::RegistryError>),
    #[error("cache: {0}")]
    Blob(#[from] kiln_oci::blobstore::BlobError),
    #[error("cache: {0}")]
    Layout(#[from] kiln_oci::layout::LayoutError),
    #[error("cache: {0}")]
    Archive(#[from] kiln_oci::archive::ArchiveError),
    #[error("cache: assembling the cache image for {key}: {source}")]
    Assemble {
        key: CacheKey,
        #[source]
        source: Box<crate::BuildError>,
    },
    #[error("invalid --cache-ttl {value:?}: {reason}")]
    BadTtl { value: String, reason: &'static str },
    #[error("invalid --cache-repo {value:?}: {reason}")]
    BadCacheRepo { value: String, reason: String },
    #[error("--cache needs --cache-repo (or a --destination to derive <destination>/cache from)")]
    NoCacheRepo,
    #[error("cache: invalid reference {reference:?}: {reason}")]
    Reference { reference: String, reason: String },
    #[error("warmer: {file}: {message}")]
    Dockerfile { file: PathBuf, message: String },
    #[error("cache: {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl From<kiln_registry::RegistryError> for CacheError {
    fn from(e: kiln_registry::RegistryError) -> Self {
        CacheError::Registry(Box::new(e))
    }
}

/// A verified cache hit: the step's layer is in the caller's [`BlobStore`] (digest and diffID
/// checked), or the step made no layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLayer {
    /// The key it was found under.
    pub key: CacheKey,
    /// The layer; `None` when the step changed nothing (a RUN that wrote no file).
    pub layer: Option<LayerRecord>,
    /// When the entry was made (its config's `created`).
    pub created: SystemTime,
}

/// A layer cache: the same API for a registry, an OCI layout and the local state dir.
///
/// Implementations are `Send + Sync`: lookups for later steps may run on other threads while
/// the current step runs, and stores are meant to run in the background.
pub trait LayerCache: Send + Sync {
    /// Looks `key` up. `Ok(None)` on a miss, on an expired entry and on an entry that fails
    /// verification (which also records a warning, see [`LayerCache::take_warnings`]). On a
    /// hit the layer blob is in `blobs`, verified.
    fn lookup(&self, key: &CacheKey, blobs: &BlobStore) -> Result<Option<CachedLayer>, CacheError>;

    /// Stores the outcome of the step with `key`: its layer (in `blobs`), or `None` when the
    /// step made no layer. Errors are returned so the caller can warn; a failed store never
    /// fails a build.
    fn store(
        &self,
        key: &CacheKey,
        layer: Option<&LayerRecord>,
        blobs: &BlobStore,
    ) -> Result<(), CacheError>;

    /// Starts looking up `keys` in the background (and, for hits, fetching and verifying
    /// their layers) so that later [`LayerCache::lookup`] calls return at once or wait for the
    /// request in flight. Bounded: a few lookups at a time, oldest key first. A failed
    /// prefetch is a miss with the same warning the lookup itself would give. The default
    /// does nothing (local lookups are cheap).
    fn prefetch(&self, _keys: &[CacheKey], _blobs: &BlobStore) {}

    /// Whether an entry for `key` is here, by a cheap check that verifies nothing (a later
    /// `lookup` may still miss). [`Tiered`] uses it to skip prefetching from the remote what
    /// the local cache has. The default says no.
    fn contains(&self, _key: &CacheKey) -> bool {
        false
    }

    /// Records the parts of `key` (see [`KeyChain::last_parts`]) for the stage named `stage`
    /// (a name stable across builds of the same Dockerfile stage, see [`Explanation`]), and
    /// says how the key relates to what this cache recorded before: seen already, or which
    /// parts differ from the closest step recorded with the same parent *in the same stage*.
    /// Only [`LocalCache`] keeps records (a registry cannot list a key's siblings cheaply).
    /// Call it for a stage's first key ([`KeyChain::current`] of a new chain) and every step,
    /// metadata ones included.
    fn explain(&self, _key: &CacheKey, _parts: &KeyParts, _stage: &str) -> Explanation {
        Explanation::Unknown
    }

    /// Warnings recorded since the last call (bad entries, failed prefetches), for the
    /// build's output. They are also logged at debug level.
    fn take_warnings(&self) -> Vec<String>;

    /// Why a lookup of `key` missed although an entry was there, when that is news to the
    /// person reading the log: the entry is older than `--cache-ttl` (without this, nothing
    /// tells an expired entry from a step that was never cached). Taken once.
    fn miss_note(&self, _key: &CacheKey) -> Option<String> {
        None
    }

    /// A short description for logs (`registry example.com/app/cache`, `local /var/kiln`).
    fn describe(&self) -> String;
}

/// What [`LayerCache::explain`] knows about a key.
///
/// Records are grouped by stage and parent: a step is only ever compared with earlier
/// versions of the same step, i.e. steps recorded for the same stage with the same parent
/// key. Two stages of one Dockerfile built FROM the same image share the parent key of their
/// first steps; comparing one with the other ("instruction changed") would be noise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explanation {
    /// The key was recorded before: nothing up to this step changed.
    Seen,
    /// A new key: what differs from the closest step recorded with the same parent in the
    /// same stage ("build arg V changed", "source a.txt added", "base changed").
    Changed(Vec<String>),
    /// A new key with no recorded step of this stage under its parent: nothing to compare
    /// with (a cold cache, or the parent itself is new). Also what caches that keep no
    /// records answer.
    Unknown,
}

/// Where `--cache-repo` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheRepo {
    /// A registry repository (`registry/repo`, no tag).
    Registry(Reference),
    /// An OCI layout directory (`oci:/path`).
    Layout(PathBuf),
}

impl CacheRepo {
    /// Kaniko's rule: `--cache-repo` as given (`oci:/path` is an OCI layout), else
    /// `<first destination's repository>/cache`. `Ok(None)` when neither is given.
    pub fn resolve(
        flag: Option<&str>,
        destinations: &[String],
    ) -> Result<Option<CacheRepo>, CacheError> {
        let bad = |value: &str, reason: String| CacheError::BadCacheRepo {
            value: value.to_string(),
            reason,
        };
        match flag.filter(|f| !f.is_empty()) {
            Some(f) => {
                if let Some(path) = f.strip_prefix("oci:") {
                    if path.is_empty() {
                        return Err(bad(f, "oci: needs a directory".into()));
                    }
                    return Ok(Some(CacheRepo::Layout(PathBuf::from(path))));
                }
                let r: Reference = f
                    .parse()
                    .map_err(|e: kiln_oci::ReferenceError| bad(f, e.to_string()))?;
                if r.tag().is_some() || r.digest().is_some() {
                    // Kaniko takes the value as a repository; a tag there would be overwritten
                    // by each key, so refuse it rather than guess.
                    if f.rsplit('/')
                        .next()
                        .is_some_and(|last| last.contains(':') || last.contains('@'))
                    {
                        return Err(bad(f, "a cache repository takes no tag or digest".into()));
                    }
                }
                Ok(Some(CacheRepo::Registry(r)))
            }
            None => match destinations.first() {
                Some(d) => {
                    let r: Reference =
                        d.parse()
                            .map_err(|e: kiln_oci::ReferenceError| CacheError::Reference {
                                reference: d.clone(),
                                reason: e.to_string(),
                            })?;
                    let name = format!("{}/cache", r.name());
                    let cache: Reference =
                        name.parse().map_err(|e: kiln_oci::ReferenceError| {
                            CacheError::Reference {
                                reference: name.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                    Ok(Some(CacheRepo::Registry(cache)))
                }
                None => Ok(None),
            },
        }
    }
}

/// Opens the cache `--cache-repo` names: a [`RegistryCache`] or an [`OciLayoutCache`].
pub fn open_remote(
    repo: &CacheRepo,
    client: std::sync::Arc<kiln_registry::Client>,
    ttl: std::time::Duration,
    platform: kiln_oci::Platform,
) -> Result<Box<dyn LayerCache>, CacheError> {
    Ok(match repo {
        CacheRepo::Registry(r) => Box::new(RegistryCache::new(client, r.clone(), ttl, platform)),
        CacheRepo::Layout(dir) => Box::new(OciLayoutCache::open(dir, ttl, platform)?),
    })
}

/// Collects warnings for [`LayerCache::take_warnings`] (the engine shows them) and logs them
/// at debug level.
#[derive(Debug, Default)]
pub(crate) struct Warnings(Mutex<Vec<String>>);

/// The [`LayerCache::miss_note`]s of a cache, by key (a prefetch may find an entry expired
/// long before the engine looks the step up).
#[derive(Debug, Default)]
pub(crate) struct MissNotes(Mutex<HashMap<CacheKey, String>>);

impl MissNotes {
    /// Records that `key`'s entry, made at `created` (RFC 3339), is older than `ttl`.
    pub(crate) fn expired(&self, key: &CacheKey, created: &str, ttl: std::time::Duration) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(
                key.clone(),
                format!(
                    "the cached entry for this step expired (made {created}, --cache-ttl {})",
                    time::format_ttl(ttl)
                ),
            );
        }
    }

    pub(crate) fn take(&self, key: &CacheKey) -> Option<String> {
        self.0.lock().ok()?.remove(key)
    }
}

impl Warnings {
    pub(crate) fn push(&self, message: String) {
        tracing::debug!("{message}");
        if let Ok(mut v) = self.0.lock() {
            v.push(message);
        }
    }

    pub(crate) fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

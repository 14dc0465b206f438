//! The local cache of local builds: the state dir's content-addressed blob store plus a key
//! index, `<state>/cache/index/<key>` → `{digest, diff_id, size, media_type, created}`.
//!
//! Concurrency: index files are written to a temporary name and renamed, so a reader sees a
//! whole entry or none; lookups hold a shared `flock(2)` on `<state>/cache/lock` and stores
//! and [`LocalCache::prune`] an exclusive one, so a prune never deletes a blob between a
//! lookup's index read and its verification. Two builds sharing a state dir both succeed:
//! the last store of a key wins, and both stored the same kind of thing.
//!
//! Last use is the index file's mtime: a hit touches it, and [`LocalCache::prune`] keeps the
//! most recently used entries that fit the budget.
//!
//! `<state>/cache/explain/<bucket>/<key>` records each key's [`KeyParts`] (digests only,
//! salted with the 0600 file `<state>/cache/salt`), one bucket per stage and parent, so that
//! [`LayerCache::explain`] can compare a new key with the earlier versions of the same step;
//! prune drops records older than the TTL.

use super::entry;
use super::key::Framer;
use super::layout::{copy_blob, FileLock};
use super::{CacheError, CacheKey, CachedLayer, Explanation, KeyParts, LayerCache, Warnings};
use crate::image::LayerRecord;
use kiln_oci::{BlobStore, Digest};
use sha2::{Digest as _, Sha256};
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Where the key-part records live (`parts`, their unsalted predecessor, is removed on open).
const EXPLAIN_DIR: &str = "explain";
/// The salt of the key-part records, in the cache directory.
const SALT_FILE: &str = "salt";
const SALT_LEN: usize = 32;
/// The kernel's CSPRNG (random(4)); no extra crate for 32 bytes.
const RANDOM: &str = "/dev/urandom";

/// `parts` with every digest replaced by `sha256(frame(salt, label, digest))`: comparable with
/// other records of the same cache dir, useless for guessing a value without the salt.
fn salt_parts(salt: &[u8], parts: &KeyParts) -> KeyParts {
    KeyParts {
        parts: parts
            .parts
            .iter()
            .map(|(label, d)| {
                let framed = Framer::frame("salted-part", &[salt, label.as_bytes(), d.as_bytes()]);
                (label.clone(), hex::encode(Sha256::digest(framed)))
            })
            .collect(),
    }
}

/// The on-disk form of an index entry.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct IndexFile {
    /// `None`: the step made no layer.
    digest: Option<Digest>,
    diff_id: Option<Digest>,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    media_type: String,
    created: String,
}

/// One entry of the local cache (`kiln cache ls`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// Its key.
    pub key: CacheKey,
    /// Its layer (`None`: the step made no layer).
    pub layer: Option<LayerRecord>,
    /// When it was stored.
    pub created: SystemTime,
    /// When it was last stored or hit.
    pub last_used: SystemTime,
}

/// What [`LocalCache::prune`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Index entries removed.
    pub removed_entries: usize,
    /// Layer blobs deleted (those no kept entry uses).
    pub removed_blobs: usize,
    /// Bytes of the deleted blobs.
    pub freed_bytes: u64,
    /// Bytes of the layers the kept entries use.
    pub kept_bytes: u64,
}

/// The local cache in a state directory.
#[derive(Debug)]
pub struct LocalCache {
    store: BlobStore,
    dir: PathBuf,
    ttl: Duration,
    warnings: Warnings,
    notes: super::MissNotes,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl LocalCache {
    /// Opens the cache of state directory `state_dir` (blobs in `<state>/blobs/sha256`, the
    /// index in `<state>/cache/index`), with `--cache-ttl` `ttl` (zero: no age limit).
    pub fn open(state_dir: &Path, ttl: Duration) -> Result<LocalCache, CacheError> {
        let store = BlobStore::open(state_dir)?;
        let dir = state_dir.join("cache");
        let index = dir.join("index");
        fs::create_dir_all(&index).map_err(io_err("creating the cache index", &index))?;
        // Earlier versions recorded unsalted key parts here (digests of build-arg values):
        // drop them rather than leave them readable.
        let legacy = dir.join("parts");
        if legacy.is_dir() {
            if let Err(e) = fs::remove_dir_all(&legacy) {
                tracing::debug!("could not remove {}: {e}", legacy.display());
            }
        }
        Ok(LocalCache {
            store,
            dir,
            ttl,
            warnings: Warnings::default(),
            notes: super::MissNotes::default(),
        })
    }

    /// The blob store the cache keeps its layers in (the state dir's).
    pub fn blobs(&self) -> &BlobStore {
        &self.store
    }

    fn index_path(&self, key: &CacheKey) -> PathBuf {
        // The key is validated hex: safe as a file name.
        self.dir.join("index").join(key.as_str())
    }

    fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    fn read_entry(&self, key: &CacheKey) -> Result<Option<(IndexFile, SystemTime)>, String> {
        let p = self.index_path(key);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", p.display())),
        };
        let mtime = fs::metadata(&p)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        serde_json::from_slice(&bytes)
            .map(|f| Some((f, mtime)))
            .map_err(|e| format!("{} does not parse: {e}", p.display()))
    }

    fn to_layer(f: &IndexFile) -> Result<Option<LayerRecord>, String> {
        match (&f.digest, &f.diff_id) {
            (Some(digest), Some(diff_id)) => Ok(Some(LayerRecord {
                digest: digest.clone(),
                diff_id: diff_id.clone(),
                size: f.size,
                media_type: f.media_type.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err("it has a digest without a diffID (or the reverse)".into()),
        }
    }

    /// Every entry, most recently used first.
    pub fn list(&self) -> Result<Vec<LocalEntry>, CacheError> {
        let _lock = FileLock::shared(&self.lock_path())?;
        self.list_unlocked()
    }

    fn list_unlocked(&self) -> Result<Vec<LocalEntry>, CacheError> {
        let index = self.dir.join("index");
        let mut out = Vec::new();
        for e in fs::read_dir(&index).map_err(io_err("listing the cache index", &index))? {
            let e = e.map_err(io_err("listing the cache index", &index))?;
            let Some(key) = e.file_name().to_str().and_then(CacheKey::from_hex) else {
                continue; // temporary files and strays
            };
            let Ok(Some((f, last_used))) = self.read_entry(&key) else {
                continue;
            };
            let Ok(layer) = LocalCache::to_layer(&f) else {
                continue;
            };
            let created = super::time::parse_rfc3339(&f.created).unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(LocalEntry {
                key,
                layer,
                created,
                last_used,
            });
        }
        out.sort_by(|a, b| {
            b.last_used
                .cmp(&a.last_used)
                .then_with(|| a.key.cmp(&b.key))
        });
        Ok(out)
    }

    /// The bytes of the layers the entries use, a layer shared by several entries once:
    /// what [`LocalCache::prune`] measures against its budget (`kiln cache prune` adds the
    /// tree store to it).
    pub fn total_bytes(&self) -> Result<u64, CacheError> {
        let mut seen: HashSet<Digest> = HashSet::new();
        Ok(self
            .list()?
            .into_iter()
            .filter_map(|e| e.layer)
            .filter(|l| seen.insert(l.digest.clone()))
            .map(|l| l.size)
            .fold(0, u64::saturating_add))
    }

    /// Size-based garbage collection: keeps the most recently used entries whose layers fit in
    /// `max_bytes` (a layer shared by several entries counts once), removes the other entries,
    /// and deletes the layer blobs no kept entry uses.
    pub fn prune(&self, max_bytes: u64) -> Result<PruneReport, CacheError> {
        let _lock = FileLock::exclusive(&self.lock_path())?;
        let entries = self.list_unlocked()?;
        let mut report = PruneReport::default();
        let mut kept_blobs: HashSet<Digest> = HashSet::new();
        let mut removed: Vec<&LocalEntry> = Vec::new();
        for e in &entries {
            let extra = match &e.layer {
                Some(l) if !kept_blobs.contains(&l.digest) => l.size,
                _ => 0,
            };
            if report.kept_bytes + extra <= max_bytes {
                report.kept_bytes += extra;
                if let Some(l) = &e.layer {
                    kept_blobs.insert(l.digest.clone());
                }
            } else {
                removed.push(e);
            }
        }
        for e in &removed {
            let p = self.index_path(&e.key);
            match fs::remove_file(&p) {
                Ok(()) => report.removed_entries += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(io_err("removing a cache entry", &p)(err)),
            }
        }
        let mut deleted: HashSet<Digest> = HashSet::new();
        for e in &removed {
            if let Some(l) = &e.layer {
                if kept_blobs.contains(&l.digest) || !deleted.insert(l.digest.clone()) {
                    continue;
                }
                let p = self.store.path(&l.digest);
                match fs::remove_file(&p) {
                    Ok(()) => {
                        report.removed_blobs += 1;
                        report.freed_bytes += l.size;
                    }
                    Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                    Err(err) => return Err(io_err("removing a cached layer", &p)(err)),
                }
            }
        }
        self.prune_parts();
        tracing::info!(
            removed = report.removed_entries,
            freed = report.freed_bytes,
            kept = report.kept_bytes,
            "pruned the local cache"
        );
        Ok(report)
    }

    /// `<state>/cache/explain/<bucket>/<key>` holds the (salted) parts of each key recorded
    /// for one stage under one parent: the earlier versions of a step a miss is compared
    /// with. `bucket` is a salted digest of the stage name and the parent part (`root` for
    /// a chain's first key), so the directory names say nothing either.
    fn explain_inner(
        &self,
        key: &CacheKey,
        parts: &KeyParts,
        stage: &str,
    ) -> io::Result<Explanation> {
        let salt = self.salt()?;
        let parent = parts
            .parts
            .iter()
            .find(|(l, _)| l == "parent")
            .map_or("root", |(_, d)| d.as_str());
        let bucket = hex::encode(Sha256::digest(Framer::frame(
            "explain-bucket",
            &[&salt, stage.as_bytes(), parent.as_bytes()],
        )));
        let dir = self.dir.join(EXPLAIN_DIR).join(bucket);
        if dir.join(key.as_str()).exists() {
            // Seen before: nothing changed here, whatever other siblings there are.
            return Ok(Explanation::Seen);
        }
        let salted = salt_parts(&salt, parts);
        let mut best: Option<Vec<String>> = None;
        if let Ok(rd) = fs::read_dir(&dir) {
            for e in rd.flatten() {
                let Some(other) = e.file_name().to_str().and_then(CacheKey::from_hex) else {
                    continue;
                };
                if &other == key {
                    continue;
                }
                let Ok(old) = fs::read(e.path()).map_err(|e| e.to_string()).and_then(|b| {
                    serde_json::from_slice::<KeyParts>(&b).map_err(|e| e.to_string())
                }) else {
                    continue;
                };
                let why = super::key::explain(&old, &salted);
                if best.as_ref().is_none_or(|b| why.len() < b.len()) {
                    best = Some(why);
                }
            }
        }
        fs::create_dir_all(&dir)?;
        let bytes = serde_json::to_vec(&salted).map_err(io::Error::other)?;
        let tmp = dir.join(format!(
            ".tmp-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, dir.join(key.as_str()))?;
        Ok(match best {
            // Two keys differing only in unnamed framing (counts) have equal parts; say so
            // rather than nothing.
            Some(why) if why.is_empty() => Explanation::Changed(vec!["key layout".into()]),
            Some(why) => Explanation::Changed(why),
            None => Explanation::Unknown,
        })
    }

    /// This cache directory's salt for the recorded key parts, made on first use: 32 random
    /// bytes in `<state>/cache/salt`, mode 0600. A part digest covers a build arg's or env
    /// var's value; unsalted, a low-entropy value (a short token, a PIN) could be recovered
    /// by hashing guesses by anyone who can read the records. With the salt, guessing needs
    /// the salt file too.
    fn salt(&self) -> io::Result<Vec<u8>> {
        let path = self.dir.join(SALT_FILE);
        match fs::read(&path) {
            Ok(b) if b.len() == SALT_LEN => return Ok(b),
            Ok(_) => {
                // Truncated or foreign: make a new one (old records then simply never match).
                let _ = fs::remove_file(&path);
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let mut salt = vec![0u8; SALT_LEN];
        io::Read::read_exact(&mut fs::File::open(RANDOM)?, &mut salt)?;
        // Written under a temporary name with 0600 from the start, then linked into place:
        // `link(2)` fails if another process made the salt meanwhile, and then both use that
        // one.
        let tmp = self.dir.join(format!(
            ".salt-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            io::Write::write_all(&mut f, &salt)?;
        }
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => Ok(salt),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let b = fs::read(&path)?;
                if b.len() == SALT_LEN {
                    Ok(b)
                } else {
                    Err(io::Error::other(format!(
                        "{} is not a {SALT_LEN}-byte salt",
                        path.display()
                    )))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Removes key-part records (used only to explain misses) older than the TTL.
    fn prune_parts(&self) {
        if self.ttl.is_zero() {
            return;
        }
        let now = SystemTime::now();
        let Ok(dirs) = fs::read_dir(self.dir.join(EXPLAIN_DIR)) else {
            return;
        };
        for d in dirs.flatten() {
            let Ok(files) = fs::read_dir(d.path()) else {
                continue;
            };
            for f in files.flatten() {
                let old = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| super::time::expired(t, self.ttl, now));
                if old {
                    let _ = fs::remove_file(f.path());
                }
            }
            // Succeeds only when empty.
            let _ = fs::remove_dir(d.path());
        }
    }

    fn write_index(&self, key: &CacheKey, f: &IndexFile) -> Result<(), CacheError> {
        let p = self.index_path(key);
        let bytes = serde_json::to_vec(f).map_err(|source| CacheError::Json {
            what: "writing a cache index entry",
            source,
        })?;
        let tmp = self.dir.join("index").join(format!(
            ".tmp-{}-{:?}-{}",
            std::process::id(),
            std::thread::current().id(),
            key
        ));
        fs::write(&tmp, &bytes).map_err(io_err("writing a cache index entry", &tmp))?;
        fs::rename(&tmp, &p).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("publishing a cache index entry", &p)(e)
        })
    }
}

impl LayerCache for LocalCache {
    fn lookup(&self, key: &CacheKey, blobs: &BlobStore) -> Result<Option<CachedLayer>, CacheError> {
        let _lock = FileLock::shared(&self.lock_path())?;
        let bad = |why: String| {
            self.warnings.push(format!(
                "local cache entry {key} is not used: {why}; the step is rebuilt"
            ));
            Ok(None)
        };
        let (f, _) = match self.read_entry(key) {
            Ok(Some(e)) => e,
            Ok(None) => {
                tracing::debug!(%key, "local cache miss");
                return Ok(None);
            }
            Err(why) => return bad(why),
        };
        let Some(created) = super::time::parse_rfc3339(&f.created) else {
            return bad(format!("its created time {:?} is not RFC 3339", f.created));
        };
        if super::time::expired(created, self.ttl, SystemTime::now()) {
            tracing::debug!(%key, created = %f.created, "local cache entry expired (--cache-ttl)");
            self.notes.expired(key, &f.created, self.ttl);
            return Ok(None);
        }
        let layer = match LocalCache::to_layer(&f) {
            Ok(l) => l,
            Err(why) => return bad(why),
        };
        if let Some(l) = &layer {
            if !self.store.contains(&l.digest) {
                return bad(format!(
                    "its layer {} is gone from the blob store",
                    l.digest
                ));
            }
            if let Err(why) = entry::verify_layer(&self.store, l) {
                return bad(why);
            }
            if blobs.root() != self.store.root() {
                if let Err(e) = copy_blob(&self.store, blobs, &l.digest, Some(l.size)) {
                    return bad(format!("copying its layer: {e}"));
                }
            }
        }
        // Last use, for prune: best effort (a read-only state dir still gives hits).
        let p = self.index_path(key);
        if let Ok(file) = fs::OpenOptions::new().write(true).open(&p) {
            let _ = file.set_modified(SystemTime::now());
        }
        tracing::debug!(%key, "local cache hit");
        Ok(Some(CachedLayer {
            key: key.clone(),
            layer,
            created,
        }))
    }

    fn store(
        &self,
        key: &CacheKey,
        layer: Option<&LayerRecord>,
        blobs: &BlobStore,
    ) -> Result<(), CacheError> {
        if let Some(l) = layer {
            if blobs.root() != self.store.root() {
                copy_blob(blobs, &self.store, &l.digest, Some(l.size))?;
            }
        }
        let f = IndexFile {
            digest: layer.map(|l| l.digest.clone()),
            diff_id: layer.map(|l| l.diff_id.clone()),
            size: layer.map_or(0, |l| l.size),
            media_type: layer.map(|l| l.media_type.clone()).unwrap_or_default(),
            created: super::time::format_rfc3339(SystemTime::now()),
        };
        let _lock = FileLock::exclusive(&self.lock_path())?;
        // Under the lock: a prune that ran since the layer was written may have taken it.
        if let Some(l) = layer {
            if !self.store.contains(&l.digest) {
                return Err(kiln_oci::blobstore::BlobError::NotFound(l.digest.clone()).into());
            }
        }
        self.write_index(key, &f)
    }

    fn explain(&self, key: &CacheKey, parts: &KeyParts, stage: &str) -> Explanation {
        self.explain_inner(key, parts, stage).unwrap_or_else(|e| {
            tracing::debug!(%key, "could not record or explain the cache key: {e}");
            Explanation::Unknown
        })
    }

    fn contains(&self, key: &CacheKey) -> bool {
        self.index_path(key).exists()
    }

    fn miss_note(&self, key: &CacheKey) -> Option<String> {
        self.notes.take(key)
    }

    fn take_warnings(&self) -> Vec<String> {
        self.warnings.take()
    }

    fn describe(&self) -> String {
        format!("local {}", self.dir.display())
    }
}

//! The tree store: unpacked layer chains kept in the state directory, so that a later build
//! on the same machine starts from a hard-link copy of a tree instead of unpacking (or
//! re-running) its layers again.
//!
//! A tree is the root file system of a chain of layers, named by the chain's OCI ChainID
//! (image-spec config.md: `ChainID(L0|…|Ln) = sha256(ChainID(L0|…|Ln-1) + " " + DiffID(Ln))`)
//! and by how ownership was applied (exact owners or a single-id build give different trees
//! for one chain). `<state>/trees/<flavour>-<chain hex>/rootfs` is complete once it has its
//! name: it is built in a temporary directory and renamed.
//!
//! Materializing a tree ([`TreeStore::materialize`]) and capturing one
//! ([`TreeStore::capture`]) hard-link every file (kiln_rootfs::link_tree): the store and the
//! build's rootfs share inodes, which is sound because kiln never writes an existing file in
//! place (see kiln_rootfs's linktree module); the engine uses the store only when RUN steps
//! run on an overlay, and gives a rootfs its own inodes (kiln_rootfs::break_links) before a
//! RUN would run directly in it.
//!
//! Concurrency: a build holds a shared flock(2) on a tree's directory while linking from
//! it; the clean-up (least recently used first, beyond [`KEEP`] trees) takes the exclusive
//! lock without waiting and skips a tree in use, and renames a tree away before deleting it.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use kiln_oci::Digest;
use kiln_rootfs::{LinkStats, RootError};

/// Trees kept per state directory (least recently used removed first). A tree costs the disk
/// space of the files no build rootfs or other tree shares.
pub const KEEP: usize = 12;

/// The OCI ChainIDs of every prefix of `diff_ids`: element `i` names layers `0..=i`.
pub fn chain_ids<'a>(diff_ids: impl IntoIterator<Item = &'a Digest>) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => Digest::of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Errors of the tree store. None of them fails a build: the engine unpacks instead.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("tree store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("linking tree {from} to {to}: {source}")]
    Link {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: RootError,
    },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> TreeError + '_ {
    move |source| TreeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates `dir` and its missing parents, mode 0700 (trees hold whole image file systems).
fn mkdir_private(dir: &Path) -> Result<(), TreeError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// The store under one state directory, for one ownership flavour.
#[derive(Debug, Clone)]
pub struct TreeStore {
    dir: PathBuf,
    flavour: String,
    owners: bool,
}

/// Names of tree directories start with one of these (then the id maps' hash and the chain).
const FLAVOURS: [&str; 2] = ["exact-", "single-id-"];

/// The file that says overlayfs could not be used with this state directory on this kernel.
const NO_OVERLAY: &str = "overlay-unusable";

/// The kernel release (procfs), which a remembered "no overlay" applies to.
fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A tree found in the store, locked (shared) against removal until dropped.
#[derive(Debug)]
pub struct Tree {
    rootfs: PathBuf,
    /// Holds the shared lock (flock(2), released on close).
    _lock: fs::File,
}

impl Tree {
    /// The tree's root directory.
    pub fn rootfs(&self) -> &Path {
        &self.rootfs
    }
}

impl TreeStore {
    /// Opens (creating, 0700) `<state_dir>/trees`. `owners`: files have their image owners
    /// (the build may chown), else all belong to the caller (a single-id build).
    ///
    /// The id maps this process runs with (procfs `uid_map`/`gid_map`) are part of every
    /// tree's name: stored owners are host ids, which mean other image ids under another
    /// map, and real root makes device nodes a user namespace cannot.
    pub fn open(state_dir: &Path, owners: bool) -> Result<TreeStore, TreeError> {
        let dir = state_dir.join("trees");
        mkdir_private(&dir)?;
        let maps = ["uid_map", "gid_map"]
            .map(|m| fs::read_to_string(format!("/proc/self/{m}")).unwrap_or_default())
            .join("\n");
        let maps = Digest::of(maps.as_bytes());
        let kind = if owners { FLAVOURS[0] } else { FLAVOURS[1] };
        Ok(TreeStore {
            dir,
            flavour: format!("{kind}{}", &maps.hex()[..12]),
            owners,
        })
    }

    /// Whether overlayfs was found unusable with this state directory (on this kernel).
    pub fn overlay_unusable(state_dir: &Path) -> bool {
        fs::read_to_string(state_dir.join("trees").join(NO_OVERLAY))
            .is_ok_and(|k| k.trim() == kernel_release())
    }

    /// Remembers that overlayfs cannot be used here: later builds leave the store off instead
    /// of linking trees they would have to copy again for every RUN.
    pub fn remember_no_overlay(state_dir: &Path) {
        let dir = state_dir.join("trees");
        if mkdir_private(&dir).is_ok() {
            let _ = fs::write(dir.join(NO_OVERLAY), kernel_release());
        }
    }

    fn entry(&self, chain: &Digest) -> PathBuf {
        self.dir.join(format!("{}-{}", self.flavour, chain.hex()))
    }

    /// Whether the tree of `chain` is in the store (without locking it).
    pub fn contains(&self, chain: &Digest) -> bool {
        self.entry(chain).join("rootfs").is_dir()
    }

    /// The tree of `chain`, locked against removal, or `None`. Marks it used (for the LRU).
    pub fn get(&self, chain: &Digest) -> Option<Tree> {
        let entry = self.entry(chain);
        let lock = fs::File::open(&entry).ok()?;
        lock.try_lock_shared().ok()?;
        // Removal renames a tree away before deleting it: the name must still be this
        // directory once the lock is held.
        let held = lock.metadata().ok()?;
        let named = fs::metadata(&entry).ok()?;
        if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
            return None;
        }
        let rootfs = entry.join("rootfs");
        if !rootfs.is_dir() {
            return None;
        }
        let _ = lock.set_modified(SystemTime::now());
        Some(Tree {
            rootfs,
            _lock: lock,
        })
    }

    /// Hard-links `tree` into the empty directory `root`.
    pub fn materialize(&self, tree: &Tree, root: &Path) -> Result<LinkStats, TreeError> {
        kiln_rootfs::link_tree(&tree.rootfs, root, self.owners).map_err(|source| TreeError::Link {
            from: tree.rootfs.clone(),
            to: root.to_path_buf(),
            source,
        })
    }

    /// Stores the rootfs at `root` (which holds exactly the layers of `chain`) as the tree of
    /// `chain`, unless the store has it. Returns what was linked, `None` when it was there.
    pub fn capture(&self, root: &Path, chain: &Digest) -> Result<Option<LinkStats>, TreeError> {
        let entry = self.entry(chain);
        if entry.exists() {
            return Ok(None);
        }
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        // Stages of one build may capture at the same time: the thread is part of the name.
        let tmp = self.dir.join(format!(
            "tmp-{}-{:?}-{nanos}",
            std::process::id(),
            std::thread::current().id()
        ));
        let tree = tmp.join("rootfs");
        mkdir_private(&tree)?;
        let linked =
            kiln_rootfs::link_tree(root, &tree, self.owners).map_err(|source| TreeError::Link {
                from: root.to_path_buf(),
                to: tree.clone(),
                source,
            });
        let stats = match linked {
            Ok(s) => s,
            Err(e) => {
                let _ = crate::engine::remove_tree(&tmp);
                return Err(e);
            }
        };
        if fs::rename(&tmp, &entry).is_err() {
            // Another build stored the same chain first: keep theirs.
            let _ = crate::engine::remove_tree(&tmp);
            return Ok(None);
        }
        self.clean(KEEP);
        Ok(Some(stats))
    }

    /// Removes the least recently used trees beyond `keep` (any flavour), and temporary
    /// directories of builds that died (older than an hour). Trees in use are skipped.
    pub fn clean(&self, keep: usize) -> usize {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut trees: Vec<(SystemTime, PathBuf)> = Vec::new();
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(md) = e.metadata() else { continue };
            let mtime = md.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            let tree = FLAVOURS.iter().any(|f| name.starts_with(f));
            if !tree && !name.starts_with("tmp-") && !name.starts_with("gone-") {
                continue; // the no-overlay note
            }
            if name.starts_with("tmp-") || name.starts_with("gone-") {
                let old = SystemTime::now()
                    .duration_since(mtime)
                    .is_ok_and(|a| a.as_secs() > 3600);
                if old || name.starts_with("gone-") && removable(&e.path()) {
                    let _ = crate::engine::remove_tree(&e.path());
                }
                continue;
            }
            trees.push((mtime, e.path()));
        }
        if trees.len() <= keep {
            return 0;
        }
        trees.sort();
        let excess = trees.len() - keep;
        let mut removed = 0;
        for (_, path) in trees.into_iter().take(excess) {
            let Ok(lock) = fs::File::open(&path) else {
                continue;
            };
            if lock.try_lock().is_err() {
                continue; // in use
            }
            let gone = path.with_file_name(format!(
                "gone-{}",
                path.file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default()
            ));
            if fs::rename(&path, &gone).is_ok() {
                drop(lock);
                let _ = crate::engine::remove_tree(&gone);
                removed += 1;
            }
        }
        removed
    }
}

/// A renamed-away tree nobody holds.
fn removable(path: &Path) -> bool {
    fs::File::open(path).is_ok_and(|f| f.try_lock().is_ok())
}

/// Removes every tree of the store under `state_dir` that no build is using (`kiln cache
/// prune`). Returns how many were removed.
pub fn prune(state_dir: &Path) -> usize {
    if !state_dir.join("trees").is_dir() {
        return 0;
    }
    match TreeStore::open(state_dir, true) {
        Ok(s) => s.clean(0),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let (a, b, c) = (d("a"), d("b"), d("c"));
        let ids = chain_ids([&a, &b, &c]);
        assert_eq!(ids[0], a, "the first layer's ChainID is its DiffID");
        let ab = Digest::of(format!("{a} {b}").as_bytes());
        assert_eq!(ids[1], ab);
        assert_eq!(ids[2], Digest::of(format!("{ab} {c}").as_bytes()));
        assert_ne!(chain_ids([&b, &a])[1], ids[1], "order matters");
        assert!(chain_ids(std::iter::empty::<&Digest>()).is_empty());
    }

    #[test]
    fn capture_get_materialize_and_clean() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = TreeStore::open(state.path(), false).expect("open");
        let root = tempfile::tempdir().expect("tempdir");
        fs::create_dir_all(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/os-release"), b"ID=test\n").unwrap();
        let chain = d("chain");
        assert!(store.get(&chain).is_none());
        let stats = store.capture(root.path(), &chain).expect("capture");
        assert_eq!(stats.map(|s| s.links), Some(1));
        assert!(store.contains(&chain));
        assert_eq!(store.capture(root.path(), &chain).expect("again"), None);
        let tree = store.get(&chain).expect("stored");
        let fresh = tempfile::tempdir().expect("tempdir");
        store.materialize(&tree, fresh.path()).expect("materialize");
        assert_eq!(
            fs::read(fresh.path().join("etc/os-release")).unwrap(),
            b"ID=test\n"
        );
        // In use: not removed by a clean-up, even past the limit.
        assert_eq!(store.clean(0), 0);
        assert!(store.contains(&chain));
        drop(tree);
        // Not in use: removed, and a single-id store does not see an exact one's trees.
        let exact = TreeStore::open(state.path(), true).expect("open");
        assert!(!exact.contains(&chain));
        assert_eq!(prune(state.path()), 1);
        assert!(!store.contains(&chain));
        assert!(store.get(&chain).is_none());
    }

    #[test]
    fn clean_keeps_the_most_recently_used() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = TreeStore::open(state.path(), false).expect("open");
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("f"), b"x").unwrap();
        let ids: Vec<Digest> = (0..3).map(|i| d(&format!("c{i}"))).collect();
        for (i, c) in ids.iter().enumerate() {
            store.capture(root.path(), c).expect("capture");
            // Distinct, ordered use times: c1 used last, c0 before it, c2 first.
            let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs([2, 3, 1][i]);
            fs::File::open(store.entry(c))
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        assert_eq!(store.clean(2), 1);
        assert!(!store.contains(&ids[2]), "least recently used removed");
        assert!(store.contains(&ids[0]) && store.contains(&ids[1]));
    }
}

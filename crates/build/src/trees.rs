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
//! Size: each tree records what it holds ([`TreeSize`], `<entry>/size.json`), written into
//! the temporary directory before the rename, so a tree has its record as soon as it has its
//! name. Trees stored before records existed are measured when the clean-up first meets them.
//!
//! Concurrency: a build holds a shared flock(2) on a tree's directory while linking from
//! it; the clean-up (least recently used first, beyond [`KEEP`] trees or the store's byte
//! budget) takes the exclusive lock without waiting and skips a tree in use, and renames a
//! tree away before deleting it.

use std::collections::HashSet;
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

/// The default byte budget of a store: the recorded sizes ([`TreeSize::total`]) of the kept
/// trees add up to at most this. A fixed figure rather than a share of the free space: a
/// cache whose size follows whatever else fills the disk evicts for reasons nobody can see
/// and, on a large disk, grows without bound. 4 GiB holds [`KEEP`] trees of a 300 MB
/// Debian-based image even though trees sharing a base each count the base (see
/// [`TreeSize`]); a tree larger than the budget is not kept at all.
pub const DEFAULT_BUDGET: u64 = 4 << 30;

/// The size record of a tree, next to its `rootfs`.
const SIZE_FILE: &str = "size.json";

/// What one tree holds on disk, measured when it is stored (`<entry>/size.json`).
///
/// The tree shares its files' inodes with the rootfs it was captured from and with other
/// trees of the same base, so the space a file takes is counted once per inode within a
/// tree (`st_blocks` × 512, stat(2): what is allocated, not the apparent length), but once
/// per tree across trees: the sum over the store is an upper bound of its disk use, and the
/// budget errs on the side of evicting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeSize {
    /// Bytes allocated to the tree's regular files, each inode once.
    pub bytes: u64,
    /// Regular files (inodes; a file with several names counts once).
    pub files: u64,
    /// Bytes allocated to its directories (link_tree makes them anew: never shared), as
    /// measured on the rootfs it was captured from (within a few per cent).
    pub dir_bytes: u64,
}

impl TreeSize {
    /// What the budget counts: file and directory bytes.
    pub fn total(&self) -> u64 {
        self.bytes.saturating_add(self.dir_bytes)
    }
}

/// Measures the tree at `root` without following symlinks (one lstat per entry, through
/// the directory's descriptor).
pub fn measure(root: &Path) -> Result<TreeSize, TreeError> {
    let mut size = TreeSize::default();
    // Inodes with more than one name, seen already: hard links inside the tree count once.
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            let md = e.metadata().map_err(io_err(&e.path()))?;
            let ft = md.file_type();
            if ft.is_dir() {
                size.dir_bytes = size.dir_bytes.saturating_add(md.blocks() * 512);
                dirs.push(e.path());
            } else if ft.is_file() && (md.nlink() < 2 || seen.insert((md.dev(), md.ino()))) {
                size.bytes = size.bytes.saturating_add(md.blocks() * 512);
                size.files += 1;
            }
        }
    }
    Ok(size)
}

/// Writes `size` as the record of the tree directory `entry`: to a temporary name, renamed.
fn write_size(entry: &Path, size: &TreeSize) -> Result<(), TreeError> {
    let path = entry.join(SIZE_FILE);
    let tmp = entry.join(format!(
        ".{SIZE_FILE}.{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let bytes = serde_json::to_vec(size).map_err(|e| TreeError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(&path)(e)
    })
}

/// The record of the tree directory `entry`, if it has a readable one.
fn read_size(entry: &Path) -> Option<TreeSize> {
    serde_json::from_slice(&fs::read(entry.join(SIZE_FILE)).ok()?).ok()
}

/// What a clean-up ([`TreeStore::clean`], [`prune`]) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanReport {
    /// Trees removed.
    pub removed: usize,
    /// Their recorded sizes ([`TreeSize::total`]), added up.
    pub removed_bytes: u64,
    /// Trees left (kept, or in use).
    pub kept: usize,
    /// Their recorded sizes, added up.
    pub kept_bytes: u64,
}

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
    /// The byte budget [`TreeStore::capture`] cleans to ([`DEFAULT_BUDGET`]).
    budget: u64,
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
            budget: DEFAULT_BUDGET,
        })
    }

    /// The same store with another byte budget for the clean-up after each capture.
    pub fn with_budget(mut self, bytes: u64) -> TreeStore {
        self.budget = bytes;
        self
    }

    /// The byte budget the clean-up after each capture keeps the store within.
    pub fn budget(&self) -> u64 {
        self.budget
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
        // Measured by the linking walk itself (the files are the rootfs's inodes: `bytes`
        // and `files` are exact; the new directories take about what the rootfs's do). A
        // tree larger than the whole budget would only be evicted again: removed now.
        let size = TreeSize {
            bytes: stats.file_bytes,
            files: stats.files,
            dir_bytes: stats.dir_bytes,
        };
        if size.total() > self.budget {
            tracing::debug!(
                bytes = size.total(),
                budget = self.budget,
                "tree store: the rootfs is larger than the budget; not stored"
            );
            let _ = crate::engine::remove_tree(&tmp);
            return Ok(None);
        }
        // The record goes in before the rename: a named tree always has one.
        if let Err(e) = write_size(&tmp, &size) {
            let _ = crate::engine::remove_tree(&tmp);
            return Err(e);
        }
        if fs::rename(&tmp, &entry).is_err() {
            // Another build stored the same chain first: keep theirs.
            let _ = crate::engine::remove_tree(&tmp);
            return Ok(None);
        }
        self.clean(KEEP, self.budget);
        Ok(Some(stats))
    }

    /// The recorded size of the tree directory `entry`. A tree stored before records existed
    /// is measured now, under a shared lock (a concurrent clean-up may be removing it), and
    /// given its record, keeping its last-use time. `None`: it is being removed (skip it);
    /// `Some(None)`: it cannot be measured.
    fn size_of(entry: &Path) -> Option<Option<TreeSize>> {
        if let Some(s) = read_size(entry) {
            return Some(Some(s));
        }
        let lock = fs::File::open(entry).ok()?;
        lock.try_lock_shared().ok()?;
        let held = lock.metadata().ok()?;
        let named = fs::metadata(entry).ok()?;
        if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
            return None;
        }
        let Ok(size) = measure(&entry.join("rootfs")) else {
            return Some(None);
        };
        // Writing the record changes the directory's mtime, which is its last use.
        let used = held.modified().ok();
        if write_size(entry, &size).is_ok() {
            if let Some(t) = used {
                let _ = lock.set_modified(t);
            }
        }
        Some(Some(size))
    }

    /// Removes the least recently used trees (any flavour) until at most `keep` are left
    /// whose recorded sizes add up to at most `budget` bytes, and temporary directories of
    /// builds that died (older than an hour). Trees in use are skipped and count as kept.
    pub fn clean(&self, keep: usize, budget: u64) -> CleanReport {
        let mut report = CleanReport::default();
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return report;
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
        // Oldest first (mtime is the last use: `get` sets it).
        trees.sort();
        let mut sized: Vec<(PathBuf, u64)> = Vec::new();
        for (_, path) in trees {
            match TreeStore::size_of(&path) {
                None => {}
                Some(Some(size)) => sized.push((path, size.total())),
                // Nothing says what it costs (a tree without its rootfs, an unreadable
                // directory): not kept.
                Some(None) if remove_unused(&path) => report.removed += 1,
                Some(None) => report.kept += 1,
            }
        }
        let trees = sized;
        report.kept += trees.len();
        report.kept_bytes = trees.iter().map(|(_, b)| *b).fold(0, u64::saturating_add);
        for (path, bytes) in trees {
            if report.kept <= keep && report.kept_bytes <= budget {
                break;
            }
            if remove_unused(&path) {
                report.removed += 1;
                report.removed_bytes = report.removed_bytes.saturating_add(bytes);
                report.kept -= 1;
                report.kept_bytes = report.kept_bytes.saturating_sub(bytes);
            }
        }
        report
    }
}

/// Removes the tree directory `path` unless a build holds it: takes the exclusive lock
/// without waiting, renames the tree away (a `get` that opened the old name sees that its
/// lock is not on the named directory) and deletes it. Whether it was removed.
fn remove_unused(path: &Path) -> bool {
    let Ok(lock) = fs::File::open(path) else {
        return false;
    };
    if lock.try_lock().is_err() {
        return false; // in use
    }
    let gone = path.with_file_name(format!(
        "gone-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    if fs::rename(path, &gone).is_err() {
        return false;
    }
    drop(lock);
    let _ = crate::engine::remove_tree(&gone);
    true
}

/// A renamed-away tree nobody holds.
fn removable(path: &Path) -> bool {
    fs::File::open(path).is_ok_and(|f| f.try_lock().is_ok())
}

/// Removes the least recently used trees of the store under `state_dir` (any flavour) that
/// no build is using until the recorded sizes of the rest add up to at most `max_bytes`
/// (`kiln cache prune --max-size`; 0 removes every tree not in use).
pub fn prune(state_dir: &Path, max_bytes: u64) -> CleanReport {
    if !state_dir.join("trees").is_dir() {
        return CleanReport::default();
    }
    match TreeStore::open(state_dir, true) {
        Ok(s) => s.clean(KEEP, max_bytes),
        Err(_) => CleanReport::default(),
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
        // In use: not removed by a clean-up, even past the limits.
        let r = store.clean(0, 0);
        assert_eq!((r.removed, r.kept), (0, 1), "{r:?}");
        assert!(store.contains(&chain));
        drop(tree);
        // Not in use: removed, and a single-id store does not see an exact one's trees.
        let exact = TreeStore::open(state.path(), true).expect("open");
        assert!(!exact.contains(&chain));
        assert_eq!(prune(state.path(), 0).removed, 1);
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
        assert_eq!(store.clean(2, u64::MAX).removed, 1);
        assert!(!store.contains(&ids[2]), "least recently used removed");
        assert!(store.contains(&ids[0]) && store.contains(&ids[1]));
    }

    /// A root holding one file of `len` bytes (non-zero, so none of it is a hole).
    fn root_with(len: usize) -> tempfile::TempDir {
        let root = tempfile::tempdir().expect("tempdir");
        fs::write(root.path().join("f"), vec![7u8; len]).unwrap();
        root
    }

    fn allocated(p: &Path) -> u64 {
        fs::symlink_metadata(p).unwrap().blocks() * 512
    }

    fn set_used(store: &TreeStore, c: &Digest, secs: u64) {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
        fs::File::open(store.entry(c))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn the_size_record_counts_a_hard_linked_file_once() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = TreeStore::open(state.path(), false).expect("open");
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        fs::create_dir(r.join("d")).unwrap();
        fs::write(r.join("d/big"), vec![1u8; 40_000]).unwrap();
        fs::hard_link(r.join("d/big"), r.join("d/big2")).unwrap();
        fs::write(r.join("small"), vec![2u8; 5_000]).unwrap();
        std::os::unix::fs::symlink("d/big", r.join("link")).unwrap();
        let chain = d("sized");
        store.capture(r, &chain).expect("capture");
        let entry = store.entry(&chain);
        let size = read_size(&entry).expect("a size record next to rootfs");
        let tree = entry.join("rootfs");
        let expected = TreeSize {
            bytes: allocated(&tree.join("d/big")) + allocated(&tree.join("small")),
            files: 2,
            // The rootfs's directories, as the linking walk measures them (see `capture`).
            dir_bytes: allocated(&r.join("d")),
        };
        assert_eq!(size, expected);
        assert!(size.bytes >= 45_000, "allocated, not less: {size:?}");
        let by_name = expected.bytes + allocated(&tree.join("d/big2"));
        assert!(size.bytes < by_name, "d/big2 is d/big: {size:?}");
        let again = measure(&tree).expect("measure");
        assert_eq!((again.bytes, again.files), (size.bytes, size.files));
    }

    #[test]
    fn a_tree_without_a_record_is_measured_or_else_not_kept() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = TreeStore::open(state.path(), false).expect("open");
        let root = root_with(30_000);
        let chain = d("old");
        store.capture(root.path(), &chain).expect("capture");
        let entry = store.entry(&chain);
        let recorded = read_size(&entry).expect("record");
        // As a state dir from before size records.
        fs::remove_file(entry.join(SIZE_FILE)).unwrap();
        set_used(&store, &chain, 1_000);
        let r = store.clean(KEEP, u64::MAX);
        assert_eq!((r.removed, r.kept), (0, 1), "{r:?}");
        assert_eq!(r.kept_bytes, recorded.total(), "{r:?}");
        assert_eq!(
            read_size(&entry),
            Some(recorded),
            "the record is written back"
        );
        let used = fs::metadata(&entry).unwrap().modified().unwrap();
        assert_eq!(
            used,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000),
            "measuring is not a use"
        );

        // A tree that cannot be measured is not kept, whatever the budget.
        fs::remove_file(entry.join(SIZE_FILE)).unwrap();
        fs::rename(entry.join("rootfs"), state.path().join("elsewhere")).unwrap();
        let r = store.clean(KEEP, u64::MAX);
        assert_eq!((r.removed, r.kept), (1, 0), "{r:?}");
        assert!(!entry.exists());
    }

    #[test]
    fn the_byte_budget_evicts_the_least_recently_used_and_keeps_a_tree_in_use() {
        let state = tempfile::tempdir().expect("tempdir");
        let store = TreeStore::open(state.path(), false)
            .expect("open")
            .with_budget(u64::MAX);
        // c1 is no larger than c0: had the clean-up removed c0 (in use), c1 would stay.
        let ids: Vec<Digest> = (0..4).map(|i| d(&format!("b{i}"))).collect();
        let lens = [200_000, 100_000, 50_000, 60_000];
        let mut sizes = Vec::new();
        for (c, len) in ids.iter().zip(lens).take(3) {
            store.capture(root_with(len).path(), c).expect("capture");
            sizes.push(read_size(&store.entry(c)).expect("record").total());
        }
        assert!(sizes[1] <= sizes[0] && sizes[2] > 0, "{sizes:?}");
        let in_use = store.get(&ids[0]).expect("stored");
        for (c, t) in ids.iter().zip([1, 2, 3]) {
            set_used(&store, c, t);
        }
        let budget = sizes[0] + sizes[2];
        let r = store.clean(KEEP, budget);
        assert_eq!(r.removed, 1, "{r:?}");
        assert_eq!(r.removed_bytes, sizes[1], "{r:?}");
        assert_eq!((r.kept, r.kept_bytes), (2, budget), "{r:?}");
        assert!(store.contains(&ids[0]), "in use: kept although the oldest");
        assert!(
            !store.contains(&ids[1]),
            "the least recently used tree not in use"
        );
        assert!(store.contains(&ids[2]));
        drop(in_use);

        // The clean-up after a capture keeps the store's own budget: c0, no longer in use,
        // goes first.
        let root = root_with(lens[3]);
        let small = store.clone().with_budget(sizes[2] + sizes[0] / 2);
        small.capture(root.path(), &ids[3]).expect("capture");
        assert!(!small.contains(&ids[0]), "least recently used");
        assert!(small.contains(&ids[2]) && small.contains(&ids[3]));

        // A tree larger than the whole budget is not kept.
        let tiny = store.with_budget(1);
        let big = root_with(10_000);
        tiny.capture(big.path(), &d("too big")).expect("capture");
        assert!(!tiny.contains(&d("too big")));
    }
}

//! The snapshot differ: an index of the rootfs, what changed since, and writing that as a layer.
//!
//! Cost follows what changed, not what exists: a walk compares `lstat` metadata with the index
//! and reads content only for files whose metadata moved (`full` mode), so a touched but
//! identical file is not re-added. Deletions become `.wh.<name>` whiteouts (only the topmost
//! deleted path); a directory removed and re-created is compared child by child like any
//! other (gone children become whiteouts, no opaque whiteout: BuildKit's differ does the
//! same, see docs/decisions.md); a directory replaced by a file or symlink is just the new
//! entry (applying it removes the old tree). A directory whose only change is its mtime is
//! not a change (as in containerd's `continuity` differ), but the parents of every change are
//! written (as containerd's tar writer does). Entries are sorted by their archive name.

use crate::error::{DiffError, RootError};
use crate::root::{Kind, Root};
use kiln_oci::{DeviceKind, EntryMeta, LayerWriter};
use sha2::Digest as _;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How the differ decides that a file changed (Kaniko's `--snapshot-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SnapshotMode {
    /// Type, mode, owner, xattrs, link target and content (hashed only when size, mtime, ctime
    /// or inode moved). Touched-but-identical files are not re-added.
    #[default]
    Full,
    /// mtime, size, mode, uid and gid (no content reads).
    Redo,
    /// mtime only.
    Time,
}

/// Kept xattrs of an entry, sorted by name.
type Xattrs = Box<[(OsString, Vec<u8>)]>;
/// A path relative to the root, as bytes.
type Key = Box<[u8]>;

/// One indexed entry (compact: no path, no allocation unless it has a link target or xattrs).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    ino: u64,
    rdev: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    link: Option<Box<[u8]>>,
    xattrs: Option<Xattrs>,
    hash: Option<[u8; 32]>,
}

impl Node {
    fn kind(&self) -> Kind {
        Kind::of_mode(self.mode)
    }
}

/// The index of a rootfs: path → metadata (and content hash in `full` mode).
#[derive(Debug, Clone)]
pub struct Index {
    entries: BTreeMap<Box<[u8]>, Node>,
    ignore: Vec<Vec<u8>>,
    mode: SnapshotMode,
}

/// One change of a layer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    /// The entry at this path (relative to the root) as it is now.
    Entry(PathBuf),
    /// The path was deleted (`dir/.wh.name`).
    Whiteout(PathBuf),
    /// The directory's lower-layer children are hidden (`dir/.wh..wh..opq`).
    Opaque(PathBuf),
}

impl Change {
    /// The path the change is about.
    pub fn path(&self) -> &Path {
        match self {
            Change::Entry(p) | Change::Whiteout(p) | Change::Opaque(p) => p,
        }
    }

    /// The archive name this change is written as: the sort key of a change set.
    pub fn tar_name(&self) -> Vec<u8> {
        let b = self.path().as_os_str().as_bytes();
        match self {
            Change::Entry(_) => b.to_vec(),
            Change::Opaque(_) => [b, b"/.wh..wh..opq"].concat(),
            Change::Whiteout(_) => match b.iter().rposition(|&c| c == b'/') {
                Some(i) => [&b[..=i], b".wh.", &b[i + 1..]].concat(),
                None => [b".wh.", b].concat(),
            },
        }
    }
}

/// What changed, sorted by archive name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChangeSet {
    changes: Vec<Change>,
    /// The kept xattrs of the entries, when the producer already read them (an overlay upper
    /// walk lists every entry's xattrs for overlayfs's markers): entries not in the map have
    /// none, and [`write_layer`] does not list them again. `None`: read at write time.
    xattrs: Option<HashMap<PathBuf, Xattrs>>,
}

impl ChangeSet {
    /// Builds a sorted, de-duplicated change set.
    pub fn new(mut changes: Vec<Change>) -> ChangeSet {
        changes.sort_by_cached_key(Change::tar_name);
        changes.dedup();
        ChangeSet {
            changes,
            xattrs: None,
        }
    }

    /// The kept xattrs of `path` when the change set knows them (see the field's doc).
    fn known_xattrs(&self, path: &Path) -> Option<Option<&Xattrs>> {
        self.xattrs.as_ref().map(|m| m.get(path))
    }

    /// The changes, in archive order.
    pub fn changes(&self) -> &[Change] {
        &self.changes
    }

    /// Number of changes.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The change set of an instruction that names its outputs (COPY, ADD, WORKDIR): each
    /// path (resolved inside the root, last component not followed), everything below it when
    /// it is a directory, and its parent directories, as Docker and Kaniko include them.
    pub fn from_paths(root: &Root, paths: &[PathBuf]) -> Result<ChangeSet, DiffError> {
        let mut out = BTreeSet::new();
        for p in paths {
            let rel = root.resolve_nofollow(p).map_err(|source| DiffError::Root {
                path: p.display().to_string(),
                source,
            })?;
            if rel.as_os_str().is_empty() {
                // The root itself: everything.
                for (path, _) in walk(root, &[], Xattr::None, false)? {
                    out.insert(path);
                }
                continue;
            }
            let mut anc = rel.parent();
            while let Some(a) = anc.filter(|a| !a.as_os_str().is_empty()) {
                out.insert(a.as_os_str().as_bytes().to_vec().into_boxed_slice());
                anc = a.parent();
            }
            let st = root.lstat(&rel).map_err(|source| DiffError::Root {
                path: rel.display().to_string(),
                source,
            })?;
            out.insert(rel.as_os_str().as_bytes().to_vec().into_boxed_slice());
            if Kind::of_mode(st.st_mode) == Kind::Dir {
                let host = root.path().join(&rel);
                for e in walkdir::WalkDir::new(&host).min_depth(1) {
                    let e = e.map_err(|e| DiffError::Walk {
                        path: host.clone(),
                        source: e.into(),
                    })?;
                    let sub = e.path().strip_prefix(root.path()).unwrap_or(e.path());
                    out.insert(sub.as_os_str().as_bytes().to_vec().into_boxed_slice());
                }
            }
        }
        Ok(ChangeSet::new(
            out.into_iter()
                .map(|p| Change::Entry(PathBuf::from(OsString::from_vec(p.into_vec()))))
                .collect(),
        ))
    }
}

impl ChangeSet {
    /// The change set of an overlayfs upper directory after a step ran on a merged mount
    /// (`overlayfs(5)` with `redirect_dir` and `metacopy` off, kiln's mount options): a 0/0
    /// character device is a whiteout, a directory with `trusted.overlay.opaque` or
    /// `user.overlay.opaque` (`userxattr` mounts in a user namespace) set to `y` is an opaque
    /// directory, everything else is an entry. Write it with [`write_layer`] from a [`Root`]
    /// opened on the upper directory. `ignore` lists paths never snapshotted, as for
    /// [`Index::scan`].
    ///
    /// With `lower` (the rootfs the step started from) the result is the change set
    /// [`Index::diff`] gives for the same change, so both make the same layer bytes:
    /// - entries overlayfs only copied up are dropped as the `full`-mode walk drops them
    ///   (directories with unchanged mode, owner and kept xattrs; files, links and nodes whose
    ///   type, mode, owner, xattrs and content are unchanged);
    /// - an opaque directory is expanded, as BuildKit's overlay differ does (see
    ///   docs/decisions.md, "Opaque directories in RUN layers"): its subtree is compared with
    ///   the lower one, a lower child that is gone becomes a `.wh.` whiteout and no opaque
    ///   whiteout is written;
    /// - the parent directories of every change are included (as containerd's tar writer
    ///   includes them).
    ///
    /// Without `lower`, opaque directories stay opaque and every upper entry is kept.
    pub fn from_overlay_upper(
        upper: &Path,
        lower: Option<&Root>,
        ignore: &[PathBuf],
    ) -> Result<ChangeSet, DiffError> {
        let ignore = normalise_ignore(ignore);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        // Upper directories whose path is a real directory in the lower tree too, reached
        // without a symlink: only below those is a lower path compared (a lower lookup never
        // follows a symlink the upper tree has replaced).
        let mut lower_dirs: HashSet<Box<[u8]>> = HashSet::new();
        // Opaque directories kept opaque (no lower to expand against); entries come in
        // depth-first order (a directory, then everything below it), so a stack of the open
        // ones suffices.
        let mut opaque_dirs: Vec<PathBuf> = Vec::new();
        // Kept xattrs of every entry walked (parents added by `with_parents` included).
        let mut xattrs: HashMap<PathBuf, Xattrs> = HashMap::new();
        // The upper tree is read by the parallel walk (lstat relative to directory fds, every
        // xattr: overlayfs's markers and the kept ones, one listing per entry); a RUN that
        // made 60,000 files spends most of its snapshot here.
        let upper_root = Root::open(upper).map_err(|source| DiffError::Root {
            path: upper.display().to_string(),
            source,
        })?;
        let mut entries = walk(&upper_root, &ignore, Xattr::All, false)?;
        // Depth-first order: `/` sorts before every other byte of a name.
        entries.sort_by_cached_key(|(k, _)| {
            k.iter()
                .map(|&c| if c == b'/' { 0 } else { c })
                .collect::<Vec<u8>>()
        });
        for (relb, node) in entries {
            let rel = PathBuf::from(OsString::from_vec(relb.to_vec()));
            let host = upper.join(&rel);
            while opaque_dirs.last().is_some_and(|d| !rel.starts_with(d)) {
                opaque_dirs.pop();
            }
            let kind = node.kind();
            if kind == Kind::Char && node.rdev == 0 {
                out.push(Change::Whiteout(rel));
                continue;
            }
            let ux: &[(OsString, Vec<u8>)] = node.xattrs.as_deref().unwrap_or_default();
            let has = |name: &str| ux.iter().find(|(k, _)| k.as_bytes() == name.as_bytes());
            let kept: Vec<_> = ux.iter().filter(|(k, _)| keep_xattr(k)).cloned().collect();
            if !kept.is_empty() {
                xattrs.insert(rel.clone(), kept.into_boxed_slice());
            }
            let opaque = kind == Kind::Dir
                && ["trusted.overlay.opaque", "user.overlay.opaque"]
                    .iter()
                    .any(|k| has(k).is_some_and(|(_, v)| v.as_slice() == b"y"));
            // A renamed directory (redirect_dir) or a metadata-only copy-up (metacopy) has its
            // children or data in the lower tree: refuse rather than write a wrong layer.
            for x in [
                "trusted.overlay.redirect",
                "user.overlay.redirect",
                "trusted.overlay.metacopy",
                "user.overlay.metacopy",
            ] {
                if has(x).is_some() {
                    return Err(DiffError::OverlayRedirect {
                        path: host,
                        xattr: x,
                    });
                }
            }
            let parent_in_lower = match ancestors(&relb).next() {
                None => true,
                Some(p) => lower_dirs.contains(p),
            };
            let Some(lower) = lower else {
                out.push(Change::Entry(rel.clone()));
                if opaque {
                    out.push(Change::Opaque(rel.clone()));
                    opaque_dirs.push(rel);
                }
                continue;
            };
            if !parent_in_lower {
                // New in this step (or below a replaced path): nothing lower to compare.
                out.push(Change::Entry(rel));
                continue;
            }
            // The parent is the root or a real directory in both trees (`lower_dirs`), so the
            // host path reaches the lower entry without following a symlink; its last
            // component is not followed either.
            let lower_host = lower.path().join(&rel);
            let lower_st = std::fs::symlink_metadata(&lower_host).ok();
            let lower_is_dir = lower_st.as_ref().is_some_and(|st| st.is_dir());
            if kind == Kind::Dir && lower_is_dir {
                lower_dirs.insert(relb.clone());
                if opaque {
                    // The merged view of this directory is the upper one alone: whatever
                    // the lower tree has below it and the upper lacks was deleted.
                    lower_gone(upper, lower, &rel, &ignore, &mut out)?;
                }
            }
            if let Some(st) = lower_st {
                let up = UpperEntry {
                    host: &host,
                    node: &node,
                    kept_xattrs: xattrs.get(&rel).cloned(),
                };
                if copied_up_unchanged(&up, &lower_host, &st, &rel, &mut buf)? {
                    continue;
                }
            }
            out.push(Change::Entry(rel));
        }
        let mut set = ChangeSet::new(with_parents(out));
        set.xattrs = Some(xattrs);
        Ok(set)
    }
}

impl ChangeSet {
    /// Applies a RUN's overlay upper directory to the rootfs it was mounted on (`lower`),
    /// given the change set [`ChangeSet::from_overlay_upper`] made of it (written as the layer
    /// first): whiteouts are removed, new or replaced entries are moved in with `renameat(2)`
    /// (whole new directories at once; hard links stay links), directories present in both
    /// get the upper's owner, mode, kept xattrs and mtime. The rootfs then holds what the
    /// step left, with its timestamps, as after a RUN on the rootfs itself, at the cost of
    /// metadata operations only (unpacking the layer would copy every byte again and give
    /// files the layer's timestamps). The upper directory is consumed.
    ///
    /// Returns `Ok(false)`, having changed nothing, when the two are on different file
    /// systems or the change set holds an opaque whiteout (made without a lower tree): the
    /// caller then unpacks the layer instead.
    pub fn apply_overlay_upper(&self, upper: &Path, lower: &Root) -> Result<bool, DiffError> {
        let walk_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source: std::io::Error| DiffError::Walk { path, source }
        };
        let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
        if dev(upper).map_err(walk_err(upper))?
            != dev(lower.path()).map_err(walk_err(lower.path()))?
            || self.changes.iter().any(|c| matches!(c, Change::Opaque(_)))
        {
            return Ok(false);
        }
        let root_err = |p: &Path| {
            let path = p.display().to_string();
            move |source| DiffError::Root { path, source }
        };
        // Removals first (in archive order `d/.wh.x` sorts among `d`'s new entries).
        for c in &self.changes {
            if let Change::Whiteout(p) = c {
                match lower.remove_all(p) {
                    Ok(()) | Err(RootError::Ignored { .. }) => {}
                    Err(e) => return Err(root_err(p)(e)),
                }
            }
        }
        let mut moved: HashSet<Vec<u8>> = HashSet::new();
        let mut dirs: Vec<(PathBuf, std::fs::Metadata)> = Vec::new();
        let mut parent_dir: Option<(PathBuf, std::fs::File)> = None;
        for c in &self.changes {
            let Change::Entry(p) = c else { continue };
            let b = p.as_os_str().as_bytes();
            if ancestors(b).any(|a| moved.contains(a)) {
                continue;
            }
            let host = upper.join(p);
            let md = std::fs::symlink_metadata(&host).map_err(walk_err(&host))?;
            if md.is_dir()
                && lower
                    .lstat(p)
                    .is_ok_and(|st| Kind::of_mode(st.st_mode) == Kind::Dir)
            {
                let x = read_xattrs(&host)?
                    .map(|x| x.into_vec())
                    .unwrap_or_default();
                match lower.copy_dir_meta(b, &md, &x, false) {
                    Ok(()) | Err(RootError::Ignored { .. }) => {}
                    Err(e) => return Err(root_err(p)(e)),
                }
                dirs.push((p.clone(), md));
                continue;
            }
            let (dir, name) = match b.iter().rposition(|&c| c == b'/') {
                Some(i) => (upper.join(OsStr::from_bytes(&b[..i])), &b[i + 1..]),
                None => (upper.to_path_buf(), b),
            };
            let from = match &parent_dir {
                Some((d, f)) if *d == dir => f,
                _ => {
                    use std::os::unix::fs::OpenOptionsExt;
                    let f = std::fs::OpenOptions::new()
                        .read(true)
                        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
                        .open(&dir)
                        .map_err(walk_err(&dir))?;
                    &parent_dir.insert((dir, f)).1
                }
            };
            // overlayfs's own markers (origin, impure, opaque...) must not reach the rootfs.
            if md.is_dir() {
                for e in walkdir::WalkDir::new(&host).follow_links(false) {
                    let e = e.map_err(|e| DiffError::Walk {
                        path: host.clone(),
                        source: e.into(),
                    })?;
                    strip_overlay_xattrs(e.path())?;
                }
            } else {
                strip_overlay_xattrs(&host)?;
            }
            match lower.move_in(from, name, b) {
                Ok(()) | Err(RootError::Ignored { .. }) => {}
                Err(e) => return Err(root_err(p)(e)),
            }
            if md.is_dir() {
                moved.insert(b.to_vec());
            }
        }
        // Directory mtimes last, deepest first: moving entries in changed them.
        for (p, md) in dirs.iter().rev() {
            match lower.set_mtime(p, (md.mtime(), md.mtime_nsec() as u32)) {
                Ok(()) | Err(RootError::Ignored { .. }) => {}
                Err(e) => return Err(root_err(p)(e)),
            }
        }
        Ok(true)
    }
}

/// Removes overlayfs's `trusted.overlay.*` / `user.overlay.*` xattrs from an upper entry.
fn strip_overlay_xattrs(path: &Path) -> Result<(), DiffError> {
    let names = crate::xattr::list(path).map_err(|source| DiffError::Walk {
        path: path.to_path_buf(),
        source,
    })?;
    for (k, _) in names {
        let n = k.as_bytes();
        if n.starts_with(b"trusted.overlay.") || n.starts_with(b"user.overlay.") {
            rustix::fs::lremovexattr(path, &*k).map_err(|e| DiffError::Walk {
                path: path.to_path_buf(),
                source: e.into(),
            })?;
        }
    }
    Ok(())
}

/// Adds a whiteout for every topmost path below `dir` in `lower` that the upper directory
/// (opaque at `dir`) does not have. `dir` is a real directory in both trees, reached without
/// symlinks; a lower directory is only descended when the upper has a real directory there.
fn lower_gone(
    upper: &Path,
    lower: &Root,
    dir: &Path,
    ignore: &[Vec<u8>],
    out: &mut Vec<Change>,
) -> Result<(), DiffError> {
    use std::os::unix::fs::FileTypeExt;
    let host = lower.path().join(dir);
    let mut it = walkdir::WalkDir::new(&host)
        .min_depth(1)
        .follow_links(false)
        .into_iter();
    while let Some(e) = it.next() {
        let e = e.map_err(|e| DiffError::Walk {
            path: host.clone(),
            source: e.into(),
        })?;
        let relb = rel_bytes(lower.path(), e.path());
        let descend = e.file_type().is_dir();
        if ignored(ignore, &relb) {
            if descend {
                it.skip_current_dir();
            }
            continue;
        }
        let rel = Path::new(OsStr::from_bytes(&relb));
        let up = std::fs::symlink_metadata(upper.join(rel)).ok();
        let gone = up
            .as_ref()
            .is_none_or(|m| m.file_type().is_char_device() && m.rdev() == 0);
        if gone {
            out.push(Change::Whiteout(rel.to_path_buf()));
        }
        if descend && !up.is_some_and(|m| m.is_dir()) {
            it.skip_current_dir();
        }
    }
    Ok(())
}

/// Adds the parent directories of every change as entries (the root excepted): containerd's
/// tar writer (`archive.ChangeWriter.includeParents`), which BuildKit's layers come from,
/// writes each changed path's parents, so `docker build` layers carry them, and applying a
/// layer then gives new parents their real mode and owner.
fn with_parents(mut changes: Vec<Change>) -> Vec<Change> {
    let mut parents: BTreeSet<Vec<u8>> = BTreeSet::new();
    for c in &changes {
        for a in ancestors(c.path().as_os_str().as_bytes()) {
            if !parents.insert(a.to_vec()) {
                break;
            }
        }
    }
    changes.extend(
        parents
            .into_iter()
            .map(|p| Change::Entry(PathBuf::from(OsString::from_vec(p)))),
    );
    changes
}

/// An entry of the upper directory being compared.
struct UpperEntry<'a> {
    host: &'a Path,
    node: &'a Node,
    kept_xattrs: Option<Xattrs>,
}

/// True when the upper entry is only a copy-up of the lower entry at `lower_host` (reached
/// without following a symlink; `st` is its `lstat`).
fn copied_up_unchanged(
    up: &UpperEntry<'_>,
    lower_host: &Path,
    st: &std::fs::Metadata,
    rel: &Path,
    buf: &mut [u8],
) -> Result<bool, DiffError> {
    let md = up.node;
    let kind = md.kind();
    if st.mode() != md.mode || st.uid() != md.uid || st.gid() != md.gid || st.rdev() != md.rdev {
        return Ok(false);
    }
    if kind != Kind::Symlink && up.kept_xattrs != read_xattrs(lower_host)? {
        return Ok(false);
    }
    Ok(match kind {
        Kind::File => {
            if st.size() != md.size {
                return Ok(false);
            }
            use std::os::unix::fs::OpenOptionsExt;
            let open = |p: &Path| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                    .open(p)
                    .map_err(|source| DiffError::Hash {
                        path: p.display().to_string(),
                        source,
                    })
            };
            same_content(&mut open(up.host)?, &mut open(lower_host)?, buf, rel)?
        }
        Kind::Symlink => std::fs::read_link(up.host).ok() == std::fs::read_link(lower_host).ok(),
        _ => true,
    })
}

/// Whether two files of equal size have the same bytes: compared chunk by chunk, stopping at
/// the first difference (a rewritten file usually differs early; hashing both whole would read
/// every byte twice).
fn same_content(
    a: &mut std::fs::File,
    b: &mut std::fs::File,
    buf: &mut [u8],
    rel: &Path,
) -> Result<bool, DiffError> {
    let half = buf.len() / 2;
    let (x, y) = buf.split_at_mut(half);
    let err = |source| DiffError::Hash {
        path: rel.display().to_string(),
        source,
    };
    loop {
        let n = read_full(a, x).map_err(err)?;
        let m = read_full(b, &mut y[..n.max(1).min(half)]).map_err(err)?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end of the file.
fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn rel_bytes(root: &Path, p: &Path) -> Box<[u8]> {
    p.strip_prefix(root)
        .unwrap_or(p)
        .as_os_str()
        .as_bytes()
        .to_vec()
        .into_boxed_slice()
}

/// Ignore paths as root-relative bytes without leading or trailing `/`.
fn normalise_ignore(ignore: &[PathBuf]) -> Vec<Vec<u8>> {
    ignore
        .iter()
        .map(|p| {
            let b = p.as_os_str().as_bytes();
            let b = b.strip_prefix(b"/").unwrap_or(b);
            b.strip_suffix(b"/").unwrap_or(b).to_vec()
        })
        .filter(|b| !b.is_empty())
        .collect()
}

fn ignored(ignore: &[Vec<u8>], rel: &[u8]) -> bool {
    ignore
        .iter()
        .any(|ig| rel.starts_with(ig) && (rel.len() == ig.len() || rel[ig.len()] == b'/'))
}

fn keep_xattr(name: &OsStr) -> bool {
    let n = name.as_bytes();
    (n.starts_with(b"user.") && !n.starts_with(b"user.overlay.")) || n == b"security.capability"
}

fn read_xattrs(path: &Path) -> Result<Option<Xattrs>, DiffError> {
    let x = crate::xattr::list(path).map_err(|source| DiffError::Walk {
        path: path.to_path_buf(),
        source,
    })?;
    let x: Vec<_> = x.into_iter().filter(|(k, _)| keep_xattr(k)).collect();
    Ok((!x.is_empty()).then(|| x.into_boxed_slice()))
}

fn hash_file(root: &Root, rel: &[u8], buf: &mut [u8]) -> Result<[u8; 32], DiffError> {
    let p = Path::new(OsStr::from_bytes(rel));
    let mut f = root.open_file(p).map_err(|source| DiffError::Root {
        path: p.display().to_string(),
        source,
    })?;
    hash_reader(&mut f, buf, rel)
}

fn hash_reader(f: &mut std::fs::File, buf: &mut [u8], rel: &[u8]) -> Result<[u8; 32], DiffError> {
    let mut sha = sha2::Sha256::new();
    loop {
        let n = f.read(buf).map_err(|source| DiffError::Hash {
            path: String::from_utf8_lossy(rel).into_owned(),
            source,
        })?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
    }
    Ok(sha.finalize().into())
}

/// Walks the rootfs (not following symlinks, skipping ignored paths) into unsorted nodes, on
/// several threads sharing a queue of directories. Each entry costs one `fstatat(2)` relative
/// to its directory's fd (plus `readlinkat` for symlinks, `llistxattr` when asked); with `hash`,
/// regular files are also hashed (`full`-mode scans).
fn walk(
    root: &Root,
    ignore: &[Vec<u8>],
    with_xattrs: Xattr,
    hash: bool,
) -> Result<Vec<(Key, Node)>, DiffError> {
    use std::sync::{Condvar, Mutex};
    struct Queue {
        dirs: Vec<Vec<u8>>,
        busy: usize,
        failed: bool,
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let queue = Mutex::new(Queue {
        dirs: vec![Vec::new()],
        busy: 0,
        failed: false,
    });
    let cv = Condvar::new();
    let worker = || -> Result<Vec<(Key, Node)>, DiffError> {
        let mut out = Vec::new();
        let mut buf = if hash {
            vec![0u8; 256 * 1024]
        } else {
            Vec::new()
        };
        loop {
            let dir = {
                let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if q.failed {
                        return Ok(out);
                    }
                    if let Some(d) = q.dirs.pop() {
                        q.busy += 1;
                        break d;
                    }
                    if q.busy == 0 {
                        cv.notify_all();
                        return Ok(out);
                    }
                    q = cv.wait(q).unwrap_or_else(|p| p.into_inner());
                }
            };
            let res = walk_dir(
                root,
                &dir,
                ignore,
                with_xattrs,
                hash.then_some(&mut buf[..]),
                &mut out,
            );
            let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
            q.busy -= 1;
            match res {
                Ok(subdirs) => q.dirs.extend(subdirs),
                Err(e) => {
                    q.failed = true;
                    cv.notify_all();
                    return Err(e);
                }
            }
            cv.notify_all();
        }
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut all = Vec::new();
    for r in results {
        all.extend(r?);
    }
    Ok(all)
}

/// Which xattrs a walk reads into [`Node::xattrs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Xattr {
    None,
    /// Those a layer keeps (`keep_xattr`).
    Kept,
    /// All of them (overlayfs's markers too), for an upper directory.
    All,
}

/// Reads one directory of the walk; returns its subdirectories.
fn walk_dir(
    root: &Root,
    dir: &[u8],
    ignore: &[Vec<u8>],
    with_xattrs: Xattr,
    mut hash_buf: Option<&mut [u8]>,
    out: &mut Vec<(Key, Node)>,
) -> Result<Vec<Vec<u8>>, DiffError> {
    use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
    use nix::sys::stat::{fstatat, Mode};
    let host = root.path().join(OsStr::from_bytes(dir));
    let err = |source: nix::Error| DiffError::Walk {
        path: host.clone(),
        source: source.into(),
    };
    let fd = openat(
        root.dir_fd(),
        if dir.is_empty() { &b"."[..] } else { dir },
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(err)?;
    let dup = fd.try_clone().map_err(|source| DiffError::Walk {
        path: host.clone(),
        source,
    })?;
    let mut d = nix::dir::Dir::from_fd(dup).map_err(err)?;
    let mut subdirs = Vec::new();
    for e in d.iter() {
        let e = e.map_err(err)?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut rel = Vec::with_capacity(dir.len() + name.len() + 1);
        if !dir.is_empty() {
            rel.extend_from_slice(dir);
            rel.push(b'/');
        }
        rel.extend_from_slice(name);
        if ignored(ignore, &rel) {
            continue;
        }
        let st = match fstatat(&fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            // Removed while walking (a RUN's leftovers are gone by now; be lenient).
            Err(nix::Error::ENOENT) => continue,
            Err(e) => return Err(err(e)),
        };
        let kind = Kind::of_mode(st.st_mode);
        let link = if kind == Kind::Symlink {
            Some(
                readlinkat(&fd, name)
                    .map_err(err)?
                    .into_vec()
                    .into_boxed_slice(),
            )
        } else {
            None
        };
        let xattrs = match with_xattrs {
            Xattr::None => None,
            Xattr::Kept => read_xattrs(&root.path().join(OsStr::from_bytes(&rel)))?,
            // Whiteouts (0/0 character devices) carry none worth reading.
            Xattr::All if kind == Kind::Char && st.st_rdev == 0 => None,
            Xattr::All => {
                let host = root.path().join(OsStr::from_bytes(&rel));
                let x = crate::xattr::list(&host)
                    .map_err(|source| DiffError::Walk { path: host, source })?;
                (!x.is_empty()).then(|| x.into_boxed_slice())
            }
        };
        let hash = match (&mut hash_buf, kind) {
            (Some(buf), Kind::File) => {
                let f = openat(
                    &fd,
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                    Mode::empty(),
                )
                .map_err(err)?;
                Some(hash_reader(&mut std::fs::File::from(f), buf, &rel)?)
            }
            _ => None,
        };
        if kind == Kind::Dir {
            subdirs.push(rel.clone());
        }
        out.push((
            rel.into_boxed_slice(),
            Node {
                mode: st.st_mode,
                uid: st.st_uid,
                gid: st.st_gid,
                size: st.st_size as u64,
                ino: st.st_ino,
                rdev: st.st_rdev,
                mtime: (st.st_mtime, st.st_mtime_nsec),
                ctime: (st.st_ctime, st.st_ctime_nsec),
                link,
                xattrs,
                hash,
            },
        ));
    }
    Ok(subdirs)
}

fn ancestors(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = p.len();
    std::iter::from_fn(move || {
        let i = p[..end].iter().rposition(|&b| b == b'/')?;
        end = i;
        Some(&p[..i])
    })
}

impl Index {
    /// Indexes the rootfs. `ignore` lists paths inside the root never snapshotted (`/proc`,
    /// `/sys`, `/dev`, mounted files, `--ignore-path`). In `full` mode, regular files are
    /// hashed now (once per stage), so a later touched-but-identical file is recognised.
    pub fn scan(root: &Root, ignore: &[PathBuf], mode: SnapshotMode) -> Result<Index, DiffError> {
        let ignore = normalise_ignore(ignore);
        let nodes = walk(root, &ignore, Xattr::Kept, mode == SnapshotMode::Full)?;
        Ok(Index {
            entries: nodes.into_iter().collect(),
            ignore,
            mode,
        })
    }

    /// Number of indexed paths.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the rootfs was empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The snapshot mode.
    pub fn mode(&self) -> SnapshotMode {
        self.mode
    }

    /// Walks the rootfs, returns what changed since the index was taken (or last diffed) and
    /// updates the index to the current state.
    pub fn diff(&mut self, root: &Root) -> Result<ChangeSet, DiffError> {
        let mut new: BTreeMap<Box<[u8]>, Node> = walk(root, &self.ignore, Xattr::None, false)?
            .into_iter()
            .collect();
        let mut changes = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut replaced: HashSet<Box<[u8]>> = HashSet::new();
        for (path, n) in new.iter_mut() {
            let old = self.entries.get(path);
            let entry = || Change::Entry(PathBuf::from(OsString::from_vec(path.to_vec())));
            let Some(o) = old else {
                n.xattrs = read_xattrs(&root.path().join(OsStr::from_bytes(path)))?;
                if self.mode == SnapshotMode::Full && n.kind() == Kind::File {
                    n.hash = Some(hash_file(root, path, &mut buf)?);
                }
                changes.push(entry());
                continue;
            };
            if o.kind() != n.kind() {
                n.xattrs = read_xattrs(&root.path().join(OsStr::from_bytes(path)))?;
                if self.mode == SnapshotMode::Full && n.kind() == Kind::File {
                    n.hash = Some(hash_file(root, path, &mut buf)?);
                }
                if o.kind() == Kind::Dir {
                    replaced.insert(path.clone());
                }
                changes.push(entry());
                continue;
            }
            let same_stat =
                o.size == n.size && o.mtime == n.mtime && o.ctime == n.ctime && o.ino == n.ino;
            if same_stat && o.mode == n.mode && o.uid == n.uid && o.gid == n.gid {
                // Nothing moved: carry what the index knew.
                n.xattrs = o.xattrs.clone();
                n.hash = o.hash;
                continue;
            }
            // ctime moved: xattrs may have changed.
            n.xattrs = if o.ctime == n.ctime {
                o.xattrs.clone()
            } else {
                read_xattrs(&root.path().join(OsStr::from_bytes(path)))?
            };
            let meta_changed = o.mode != n.mode
                || o.uid != n.uid
                || o.gid != n.gid
                || o.link != n.link
                || o.rdev != n.rdev
                || o.xattrs != n.xattrs;
            let changed = match self.mode {
                SnapshotMode::Time => o.mtime != n.mtime || o.link != n.link,
                SnapshotMode::Redo => {
                    o.mtime != n.mtime
                        || o.size != n.size
                        || o.mode != n.mode
                        || o.uid != n.uid
                        || o.gid != n.gid
                        || o.link != n.link
                }
                SnapshotMode::Full => {
                    if n.kind() == Kind::File {
                        if same_stat {
                            n.hash = o.hash;
                        } else {
                            n.hash = Some(hash_file(root, path, &mut buf)?);
                        }
                        meta_changed || o.size != n.size || n.hash != o.hash || o.hash.is_none()
                    } else {
                        meta_changed
                    }
                }
            };
            if self.mode == SnapshotMode::Full && n.kind() == Kind::File && n.hash.is_none() {
                n.hash = Some(hash_file(root, path, &mut buf)?);
            }
            if changed {
                changes.push(entry());
            }
        }
        let mut deleted: HashSet<Box<[u8]>> = HashSet::new();
        for (path, o) in &self.entries {
            if new.contains_key(path) {
                continue;
            }
            if ancestors(path).any(|a| deleted.contains(a) || replaced.contains(a)) {
                if o.kind() == Kind::Dir {
                    deleted.insert(path.clone());
                }
                continue;
            }
            if o.kind() == Kind::Dir {
                deleted.insert(path.clone());
            }
            changes.push(Change::Whiteout(PathBuf::from(OsString::from_vec(
                path.to_vec(),
            ))));
        }
        self.entries = new;
        Ok(ChangeSet::new(with_parents(changes)))
    }

    /// Brings the index up to date for paths an instruction wrote itself (after
    /// [`ChangeSet::from_paths`]), so the next walk does not report them again.
    pub fn record(&mut self, root: &Root, changes: &ChangeSet) -> Result<(), DiffError> {
        let mut buf = vec![0u8; 256 * 1024];
        // Removals first: in archive order an opaque `d/.wh..wh..opq` can follow `d/-x`.
        let (removals, entries): (Vec<&Change>, Vec<&Change>) = changes
            .changes()
            .iter()
            .partition(|c| !matches!(c, Change::Entry(_)));
        for c in removals.into_iter().chain(entries) {
            let rel = c.path().as_os_str().as_bytes();
            match c {
                Change::Entry(p) => {
                    let host = root.path().join(p);
                    let md = match std::fs::symlink_metadata(&host) {
                        Ok(m) => m,
                        Err(_) => {
                            self.entries.remove(rel);
                            continue;
                        }
                    };
                    let link = if md.file_type().is_symlink() {
                        std::fs::read_link(&host)
                            .ok()
                            .map(|t| t.into_os_string().into_vec().into_boxed_slice())
                    } else {
                        None
                    };
                    let mut n = Node {
                        mode: md.mode(),
                        uid: md.uid(),
                        gid: md.gid(),
                        size: md.size(),
                        ino: md.ino(),
                        rdev: md.rdev(),
                        mtime: (md.mtime(), md.mtime_nsec()),
                        ctime: (md.ctime(), md.ctime_nsec()),
                        link,
                        xattrs: read_xattrs(&host)?,
                        hash: None,
                    };
                    if self.mode == SnapshotMode::Full && n.kind() == Kind::File {
                        n.hash = Some(hash_file(root, rel, &mut buf)?);
                    }
                    self.entries.insert(rel.to_vec().into_boxed_slice(), n);
                }
                Change::Whiteout(_) | Change::Opaque(_) => {
                    let prefix = [rel, b"/"].concat();
                    let doomed: Vec<Box<[u8]>> = self
                        .entries
                        .keys()
                        .filter(|k| {
                            (matches!(c, Change::Whiteout(_)) && &k[..] == rel)
                                || k.starts_with(&prefix)
                        })
                        .cloned()
                        .collect();
                    for k in doomed {
                        self.entries.remove(&k);
                    }
                }
            }
        }
        Ok(())
    }
}

/// What [`write_layer`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Entries written (whiteouts included).
    pub entries: u64,
    /// Regular-file content bytes.
    pub bytes: u64,
    /// Entries written as hard links to an earlier entry of the layer.
    pub hardlinks: u64,
}

fn root_err(p: &Path) -> impl FnOnce(RootError) -> DiffError + '_ {
    move |source| DiffError::Root {
        path: p.display().to_string(),
        source,
    }
}

/// Files up to this size are read by the prefetching readers (larger ones are streamed by the
/// writer itself): with [`CHUNK`] entries per batch, at most 2 MiB a batch; each reader has
/// one batch queued and one being read, and the writer one being written: at most 10 MiB.
const INLINE_MAX: u64 = 32 * 1024;
/// Entries per batch handed from a reader to the writer.
const CHUNK: usize = 64;

/// The facts of one entry the writer needs, read ahead of it.
struct Prepared {
    kind: Kind,
    meta: EntryMeta,
    nlink: u64,
    dev: u64,
    ino: u64,
    size: u64,
    rdev: u64,
    /// The whole content of a regular file up to [`INLINE_MAX`] bytes (shorter when the file
    /// shrank after its `fstatat`: the writer then fails as when streaming it).
    content: Option<Vec<u8>>,
    /// A symlink's target.
    link: Option<PathBuf>,
}

/// The parent directory of the last entry resolved, reused for its siblings (entries come
/// sorted, so siblings follow each other).
type CachedParent = Option<(Vec<u8>, crate::root::Parent)>;

/// Splits `p` into its directory part and last name, and resolves the directory (confined,
/// last component not followed), reusing `cached` for siblings.
fn resolve_parent<'c>(
    root: &Root,
    p: &Path,
    cached: &'c mut CachedParent,
) -> Result<&'c mut crate::root::Parent, DiffError> {
    let bytes = p.as_os_str().as_bytes();
    let (dir, name) = match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&bytes[..0], bytes),
    };
    let reuse = matches!(&*cached, Some((d, _)) if d.as_slice() == dir)
        && !name.is_empty()
        && name != b"..";
    if reuse {
        let (_, par) = cached.as_mut().expect("checked above");
        par.name = name.to_vec();
        return Ok(par);
    }
    let par = root.parent(bytes, None).map_err(root_err(p))?;
    Ok(&mut cached.insert((dir.to_vec(), par)).1)
}

fn snapshot_io(p: &Path) -> impl Fn(nix::Error) -> DiffError + '_ {
    move |source| DiffError::Root {
        path: p.display().to_string(),
        source: RootError::Io {
            op: "snapshot",
            path: p.display().to_string(),
            source,
        },
    }
}

/// Reads what the writer needs of the entry at `p`: its `lstat`, kept xattrs, link target,
/// and the content of a small regular file.
fn prepare(
    root: &Root,
    changes: &ChangeSet,
    p: &Path,
    cached: &mut CachedParent,
) -> Result<Prepared, DiffError> {
    use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
    use nix::sys::stat::{fstatat, Mode};
    let io = snapshot_io(p);
    let parent = resolve_parent(root, p, cached)?;
    let st = fstatat(
        &parent.fd,
        parent.name.as_slice(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(&io)?;
    let kind = Kind::of_mode(st.st_mode);
    let as_meta = |x: &Xattrs| -> Vec<(String, Vec<u8>)> {
        x.iter()
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.clone()))
            .collect()
    };
    let xattrs = if kind == Kind::Symlink {
        Vec::new()
    } else if let Some(known) = changes.known_xattrs(p) {
        known.map(as_meta).unwrap_or_default()
    } else {
        let host = root.path().join(OsStr::from_bytes(&parent.logical()));
        read_xattrs(&host)?
            .as_ref()
            .map(as_meta)
            .unwrap_or_default()
    };
    let size = st.st_size as u64;
    let content = if kind == Kind::File && size <= INLINE_MAX && st.st_nlink == 1 {
        let fd = openat(
            &parent.fd,
            parent.name.as_slice(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(&io)?;
        let mut buf = Vec::with_capacity(size as usize);
        std::fs::File::from(fd)
            .take(size)
            .read_to_end(&mut buf)
            .map_err(|e| DiffError::Hash {
                path: p.display().to_string(),
                source: e,
            })?;
        Some(buf)
    } else {
        None
    };
    let link = if kind == Kind::Symlink {
        let t = readlinkat(&parent.fd, parent.name.as_slice()).map_err(&io)?;
        Some(PathBuf::from(t))
    } else {
        None
    };
    Ok(Prepared {
        kind,
        meta: EntryMeta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid.into(),
            gid: st.st_gid.into(),
            mtime: st.st_mtime,
            xattrs,
        },
        nlink: st.st_nlink,
        dev: st.st_dev,
        ino: st.st_ino,
        size,
        rdev: st.st_rdev,
        content,
        link,
    })
}

/// Calls `each` for every change in order, with its entry prepared ([`prepare`]; `None` for
/// whiteouts). A large change set is prepared ahead by reader threads, batch `i` by reader
/// `i % readers`, so the `fstatat`/`open`/`read` of the next files overlap the writing of the
/// current ones (a RUN that made 60,000 small files is otherwise one syscall-bound thread).
fn for_each_prepared(
    root: &Root,
    changes: &ChangeSet,
    mut each: impl FnMut(&Change, Option<Prepared>) -> Result<(), DiffError>,
) -> Result<(), DiffError> {
    let one = |c: &Change, cached: &mut CachedParent| match c {
        Change::Entry(p) => prepare(root, changes, p, cached).map(Some),
        Change::Whiteout(_) | Change::Opaque(_) => Ok(None),
    };
    let all = changes.changes();
    let readers = std::thread::available_parallelism().map_or(1, |n| n.get().min(2));
    if all.len() < 4 * CHUNK || readers < 2 {
        let mut cached = None;
        for c in all {
            each(c, one(c, &mut cached)?)?;
        }
        return Ok(());
    }
    let batches: Vec<&[Change]> = all.chunks(CHUNK).collect();
    type Batch = Vec<Result<Option<Prepared>, DiffError>>;
    std::thread::scope(|s| {
        let mut queues = Vec::new();
        for r in 0..readers {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(1);
            queues.push(rx);
            let (batches, one) = (&batches, &one);
            s.spawn(move || {
                let mut cached = None;
                for batch in batches.iter().skip(r).step_by(readers) {
                    let prepared = batch.iter().map(|c| one(c, &mut cached)).collect();
                    // The writer stopped (an error): so do we.
                    if tx.send(prepared).is_err() {
                        return;
                    }
                }
            });
        }
        for (i, batch) in batches.iter().enumerate() {
            // A reader that panicked dropped its sender; the scope re-raises the panic.
            let Ok(prepared) = queues[i % readers].recv() else {
                break;
            };
            for (c, p) in batch.iter().zip(prepared) {
                each(c, p?)?;
            }
        }
        Ok(())
        // Returning drops the receivers: readers still sending stop.
    })
}

/// Writes `changes` into `layer`, streaming file contents from the rootfs (through [`Root`],
/// never following a last symlink). Files with several links inside one layer are written once
/// and then as hard links to the first path. Xattrs written: `user.*` (not `user.overlay.*`)
/// and `security.capability`.
pub fn write_layer(
    root: &Root,
    changes: &ChangeSet,
    layer: &mut LayerWriter,
) -> Result<WriteStats, DiffError> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::Mode;
    let mut stats = WriteStats::default();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    // For files too large to be read ahead: their parent, resolved by this thread.
    let mut cached: CachedParent = None;
    for_each_prepared(root, changes, |c, prepared| {
        stats.entries += 1;
        let p = c.path();
        let e = match (c, prepared) {
            (Change::Whiteout(_), _) => return Ok(layer.append_whiteout(p)?),
            (Change::Opaque(_), _) => return Ok(layer.append_opaque(p)?),
            (Change::Entry(_), Some(e)) => e,
            (Change::Entry(_), None) => unreachable!("entries are prepared"),
        };
        let meta = &e.meta;
        match e.kind {
            Kind::Dir => layer.append_dir(p, meta)?,
            Kind::File => {
                if e.nlink > 1 {
                    let key = (e.dev, e.ino);
                    if let Some(first) = links.get(&key) {
                        layer.append_hardlink(p, meta, first)?;
                        stats.hardlinks += 1;
                        return Ok(());
                    }
                    links.insert(key, p.to_path_buf());
                }
                match &e.content {
                    Some(bytes) => layer.append_file(p, meta, &mut bytes.as_slice(), e.size)?,
                    None => {
                        let parent = resolve_parent(root, p, &mut cached)?;
                        let fd = openat(
                            &parent.fd,
                            parent.name.as_slice(),
                            OFlag::O_RDONLY
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_CLOEXEC
                                | OFlag::O_NONBLOCK,
                            Mode::empty(),
                        )
                        .map_err(snapshot_io(p))?;
                        let mut f = std::fs::File::from(fd);
                        layer.append_file(p, meta, &mut f, e.size)?;
                    }
                }
                stats.bytes += e.size;
            }
            Kind::Symlink => {
                let target = e.link.as_deref().unwrap_or(Path::new(""));
                layer.append_symlink(p, meta, target)?;
            }
            Kind::Fifo => layer.append_fifo(p, meta)?,
            Kind::Char | Kind::Block => {
                let dk = if e.kind == Kind::Char {
                    DeviceKind::Char
                } else {
                    DeviceKind::Block
                };
                let major = nix::sys::stat::major(e.rdev) as u32;
                let minor = nix::sys::stat::minor(e.rdev) as u32;
                layer.append_device(p, meta, dk, major, minor)?;
            }
            Kind::Socket => {
                // Sockets cannot be archived (tar has no type for them); Docker skips them.
                stats.entries -= 1;
                tracing::debug!(path = %p.display(), "socket skipped");
            }
        }
        Ok(())
    })?;
    Ok(stats)
}

//! Confined operations on a rootfs directory.
//!
//! Every path is resolved *inside* the root with the semantics of `openat2(2)`
//! `RESOLVE_IN_ROOT`: absolute symlinks and `..` are resolved relative to the root and can never
//! leave it. Resolution is done here component by component with `O_PATH|O_NOFOLLOW` directory
//! fds and `readlinkat(2)`, at most [`MAX_SYMLINK_HOPS`] symlinks per lookup (`ELOOP`, as
//! `path_resolution(7)` limits it). The last component is created, replaced or changed with
//! `*at(2)` calls that never follow it (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`).
//!
//! Safety model: kiln is the only writer while it changes a rootfs (RUN processes have exited
//! and been killed), so the tree cannot be swapped between a check and a use; what a hostile
//! *archive* or *rootfs content* can do (symlinks anywhere, `..`, absolute names) is contained.

use crate::error::RootError;
use crate::xattr;
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag};
use nix::sys::stat::{
    fchmod, fstat, fstatat, futimens, mkdirat, utimensat, FileStat, Mode, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Symlinks followed in one lookup before `ELOOP` (Linux's limit, `path_resolution(7)`).
pub const MAX_SYMLINK_HOPS: u32 = 40;

/// Metadata to apply to an entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission bits plus setuid/setgid/sticky (`0o7777`).
    pub mode: u32,
    /// Owner (applied according to the root's [`Ownership`]).
    pub uid: u32,
    /// Group (applied according to the root's [`Ownership`]).
    pub gid: u32,
    /// Modification time (seconds, nanoseconds); `None` leaves it as the kernel set it.
    pub mtime: Option<(i64, u32)>,
    /// Extended attributes to set (name, value).
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

impl Meta {
    /// Mode `mode`, owner root, no time, no xattrs.
    pub fn with_mode(mode: u32) -> Meta {
        Meta {
            mode,
            ..Meta::default()
        }
    }
}

/// How ownership from layers and [`Meta`] is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// chown to the given ids (needs privilege over them: root, or a full user-namespace map).
    Preserve,
    /// Never chown: everything stays owned by the caller (unprivileged single-id builds).
    Skip,
    /// Map ids through the given ranges before chown; unmapped ids fall back to the caller.
    Map(IdMap),
}

/// Id ranges `(inside, outside, count)` for uids and gids, as in `/proc/self/uid_map`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    /// User id ranges.
    pub uids: Vec<(u32, u32, u32)>,
    /// Group id ranges.
    pub gids: Vec<(u32, u32, u32)>,
}

impl IdMap {
    fn map(ranges: &[(u32, u32, u32)], id: u32) -> Option<u32> {
        ranges.iter().find_map(|&(inside, outside, count)| {
            let off = id.checked_sub(inside)?;
            (off < count).then(|| outside + off)
        })
    }
}

/// Kind of an entry, from `lstat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Unix socket (never archived).
    Socket,
}

impl Kind {
    /// The kind of an `st_mode`.
    pub fn of_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        }
    }
}

/// A rootfs directory, held open; all operations stay inside it.
#[derive(Debug)]
pub struct Root {
    dir: OwnedFd,
    path: PathBuf,
    ownership: Ownership,
    ignore: Vec<Vec<Vec<u8>>>,
    max_depth: usize,
    /// Euid 0 (on the host or in a user namespace): permission checks do not apply to us.
    privileged: bool,
    /// Bumped whenever a directory or symlink inside the root is removed or renamed over: the
    /// only changes that can make a resolved directory fd (a [`ParentCache`]) stale or make
    /// its path resolve elsewhere (creating a *new* name cannot change how existing names
    /// resolve). Atomic only so that `Root` stays `Sync`.
    removals: AtomicU64,
}

/// Result of a walk: the directory fd reached, its real names inside the root, and the last
/// name when the walk stopped before it.
type Walked = (OwnedFd, Vec<Vec<u8>>, Option<Vec<u8>>);

/// A path resolved to its parent directory (an open fd) and last name.
pub(crate) struct Parent {
    pub(crate) fd: OwnedFd,
    /// The parent's path inside the root, as real directory names (no symlinks, no `..`).
    pub(crate) names: Vec<Vec<u8>>,
    pub(crate) name: Vec<u8>,
}

impl Parent {
    /// The resolved path of the entry inside the root, without a leading `/`.
    pub(crate) fn logical(&self) -> Vec<u8> {
        join(&self.names, Some(&self.name))
    }
}

/// The last parent directory resolved for an entry, reused while entries keep coming in the
/// same directory (layer tars group entries by directory): one `openat` per entry instead of a
/// confined walk from the root (two syscalls per component plus the root's).
///
/// Containment: the cached fd is the directory the full confined walk reached; it is used only
/// while the unresolved directory part of the path is byte-equal to the cached key and no
/// directory or symlink in the root has been removed or renamed over since ([`Root`]'s removal
/// counter; kiln is the only writer of the tree). A later entry that replaces a directory on
/// the cached path by a symlink (or whites it out) removes that directory first, which
/// invalidates the cache, so the next entry is resolved from the root again (HOSTILE-INPUTS
/// 5, 6, 12).
#[derive(Default)]
pub(crate) struct ParentCache {
    slot: Option<(Vec<u8>, Parent, u64)>,
    /// Copy buffer for file contents, reused across entries.
    buf: Vec<u8>,
}

impl ParentCache {
    /// A cache with nothing resolved yet.
    pub(crate) fn new() -> ParentCache {
        ParentCache::default()
    }
}

fn join(names: &[Vec<u8>], last: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for n in names.iter().map(Vec::as_slice).chain(last) {
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(n);
    }
    out
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn components(p: &[u8]) -> impl Iterator<Item = &[u8]> {
    p.split(|&b| b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
}

const DIR_PATH: OFlag = OFlag::O_PATH
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC)
    .union(OFlag::O_DIRECTORY);

impl Root {
    /// Opens the rootfs at `path` (which must be a directory; it may itself be reached through
    /// symlinks on the host: that is the caller's choice, not the archive's).
    pub fn open(path: impl Into<PathBuf>) -> Result<Root, RootError> {
        let path = path.into();
        let dir = openat(
            nix::fcntl::AT_FDCWD,
            &path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| RootError::Open {
            path: path.clone(),
            source,
        })?;
        let privileged = nix::unistd::geteuid().is_root();
        let ownership = if privileged {
            Ownership::Preserve
        } else {
            Ownership::Skip
        };
        Ok(Root {
            dir,
            path,
            ownership,
            ignore: Vec::new(),
            max_depth: 1024,
            privileged,
            removals: AtomicU64::new(0),
        })
    }

    /// Sets how ownership is applied (default: `Preserve` as root, `Skip` otherwise).
    pub fn with_ownership(mut self, ownership: Ownership) -> Root {
        self.ownership = ownership;
        self
    }

    /// Paths inside the root that are never written, created in, or removed (Kaniko's ignore
    /// list: `/proc`, mounted secrets, the builder's own directory). Checked against the
    /// *resolved* path, so a symlink cannot route a write into them (HOSTILE-INPUTS 30).
    pub fn with_ignore(mut self, paths: &[PathBuf]) -> Root {
        self.ignore = paths
            .iter()
            .map(|p| {
                components(p.as_os_str().as_bytes())
                    .map(<[u8]>::to_vec)
                    .collect()
            })
            .filter(|v: &Vec<Vec<u8>>| !v.is_empty())
            .collect();
        self
    }

    /// Maximum directory depth of a resolved path (default 1024).
    pub fn with_max_depth(mut self, depth: usize) -> Root {
        self.max_depth = depth;
        self
    }

    /// The root directory's `O_PATH` fd.
    pub(crate) fn dir_fd(&self) -> &OwnedFd {
        &self.dir
    }

    /// The host path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when permission checks do not bind kiln (euid 0, possibly in a user namespace).
    pub fn privileged(&self) -> bool {
        self.privileged
    }

    /// The ownership policy.
    pub fn ownership(&self) -> &Ownership {
        &self.ownership
    }

    /// True when `logical` (a resolved path inside the root) is an ignored path or below one.
    pub fn is_ignored(&self, logical: &[u8]) -> bool {
        self.ignored_by(logical).is_some()
    }

    fn ignored_by(&self, logical: &[u8]) -> Option<String> {
        let comps: Vec<&[u8]> = components(logical).collect();
        self.ignore.iter().find_map(|ig| {
            (ig.len() <= comps.len() && ig.iter().zip(&comps).all(|(a, b)| a == b))
                .then(|| format!("/{}", show(&join(ig, None))))
        })
    }

    fn check_ignored(&self, rel: &[u8], logical: &[u8]) -> Result<(), RootError> {
        match self.ignored_by(logical) {
            Some(ignored) => Err(RootError::Ignored {
                path: show(rel),
                ignored,
            }),
            None => Ok(()),
        }
    }

    fn io(op: &'static str, path: &[u8]) -> impl FnOnce(Errno) -> RootError {
        let path = show(path);
        move |source| RootError::Io { op, path, source }
    }

    fn open_names(&self, names: &[Vec<u8>], rel: &[u8]) -> Result<OwnedFd, RootError> {
        let mut fd =
            openat(&self.dir, ".", DIR_PATH, Mode::empty()).map_err(Self::io("open", rel))?;
        for n in names {
            fd = openat(&fd, n.as_slice(), DIR_PATH, Mode::empty())
                .map_err(Self::io("open", rel))?;
        }
        Ok(fd)
    }

    /// Resolves `rel` inside the root. With `follow_last`, a symlink in the last position is
    /// followed too. Missing intermediate directories are created with `create` when given.
    /// Returns the directory fd reached and, unless the path ended on a directory that was
    /// followed into, the last name.
    fn walk(
        &self,
        rel: &[u8],
        follow_last: bool,
        create: Option<&Meta>,
    ) -> Result<Walked, RootError> {
        let mut queue: std::collections::VecDeque<Vec<u8>> =
            components(rel).map(<[u8]>::to_vec).collect();
        let mut fd = self.open_names(&[], rel)?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut hops = 0u32;
        while let Some(c) = queue.pop_front() {
            if c == b".." {
                // `..` at the root stays at the root (RESOLVE_IN_ROOT).
                if names.pop().is_some() {
                    fd = self.open_names(&names, rel)?;
                }
                continue;
            }
            let last = queue.is_empty();
            if last && !follow_last {
                return Ok((fd, names, Some(c)));
            }
            let opened = openat(
                &fd,
                c.as_slice(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            );
            let child = match opened {
                Ok(child) => child,
                Err(Errno::ENOENT) if last => return Ok((fd, names, Some(c))),
                Err(Errno::ENOENT) if create.is_some() => {
                    let meta = create.unwrap_or_else(|| unreachable!());
                    names.push(c.clone());
                    self.check_ignored(rel, &join(&names, None))?;
                    names.pop();
                    mkdirat(&fd, c.as_slice(), Mode::from_bits_truncate(0o700))
                        .map_err(Self::io("mkdir", rel))?;
                    let child = openat(&fd, c.as_slice(), DIR_PATH, Mode::empty())
                        .map_err(Self::io("open", rel))?;
                    let rw = openat(
                        &fd,
                        c.as_slice(),
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(Self::io("open", rel))?;
                    self.apply_fd(&rw, meta, rel)?;
                    child
                }
                Err(Errno::ENOENT) => {
                    return Err(RootError::NotFound { path: show(rel) });
                }
                Err(e) => return Err(Self::io("open", rel)(e)),
            };
            let st = fstat(&child).map_err(Self::io("stat", rel))?;
            match Kind::of_mode(st.st_mode) {
                Kind::Symlink => {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        return Err(RootError::TooManySymlinks {
                            path: show(rel),
                            limit: MAX_SYMLINK_HOPS,
                        });
                    }
                    // readlinkat(2) with an empty path reads the link an O_PATH fd refers to.
                    let target = readlinkat(&child, "").map_err(Self::io("readlink", rel))?;
                    let target = target.into_vec();
                    if target.starts_with(b"/") {
                        names.clear();
                        fd = self.open_names(&names, rel)?;
                    }
                    for t in components(&target).collect::<Vec<_>>().into_iter().rev() {
                        queue.push_front(t.to_vec());
                    }
                }
                Kind::Dir => {
                    names.push(c);
                    if names.len() > self.max_depth {
                        return Err(RootError::TooDeep {
                            path: show(rel),
                            limit: self.max_depth,
                        });
                    }
                    self.check_ignored(rel, &join(&names, None))?;
                    fd = child;
                }
                _ if last => return Ok((fd, names, Some(c))),
                _ => {
                    return Err(RootError::NotADirectory {
                        path: show(rel),
                        component: show(&c),
                    })
                }
            }
        }
        Ok((fd, names, None))
    }

    /// Resolves the parent of `rel` (following symlinks in it, inside the root) and returns it
    /// with the last name, which is not followed. `create` makes missing parents.
    pub(crate) fn parent(&self, rel: &[u8], create: Option<&Meta>) -> Result<Parent, RootError> {
        match self.walk(rel, false, create)? {
            (fd, names, Some(name)) if name != b".." => {
                let p = Parent { fd, names, name };
                self.check_ignored(rel, &p.logical())?;
                Ok(p)
            }
            _ => Err(RootError::NoName { path: show(rel) }),
        }
    }

    /// [`Root::parent`] with missing parents created (mode 0755), through `cache`: a hit costs
    /// no syscall. See [`ParentCache`] for why a hit is still confined.
    pub(crate) fn parent_cached<'c>(
        &self,
        rel: &[u8],
        cache: &'c mut ParentCache,
    ) -> Result<&'c Parent, RootError> {
        let generation = self.removals.load(Ordering::Relaxed);
        let (dir, name) = match rel.iter().rposition(|&b| b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        // Only plain names hit: `..`, `.` or an empty last component take the full walk (and
        // its errors), as does any path whose directory part needs normalising.
        let plain = !name.is_empty() && name != b"." && name != b"..";
        match &mut cache.slot {
            Some((key, p, g)) if plain && *g == generation && key.as_slice() == dir => {
                p.name.clear();
                p.name.extend_from_slice(name);
                // The directory's own names were checked by the walk that filled the slot.
                if !self.ignore.is_empty() {
                    self.check_ignored(rel, &p.logical())?;
                }
            }
            slot => {
                *slot = None;
                // The walk creates missing directories but removes nothing: `generation`
                // still holds after it.
                let p = self.parent(rel, Some(&Meta::with_mode(0o755)))?;
                *slot = Some((dir.to_vec(), p, generation));
            }
        }
        match &cache.slot {
            Some((_, p, _)) => Ok(p),
            None => unreachable!("slot filled above"),
        }
    }

    /// The host path `rel` resolves to (symlinks, including a last one, followed inside the
    /// root). The last component need not exist.
    pub fn resolve(&self, rel: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let (_, names, last) = self.walk(rel, true, None)?;
        let logical = join(&names, last.as_deref());
        Ok(self.path.join(OsStr::from_bytes(&logical)))
    }

    /// Like [`Root::resolve`] but the last component is not followed; returns the path inside
    /// the root (relative, no leading `/`).
    pub fn resolve_nofollow(&self, rel: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        match self.walk(rel, false, None)? {
            (_, names, Some(n)) if n != b".." => {
                Ok(PathBuf::from(OsString::from_vec(join(&names, Some(&n)))))
            }
            (_, names, _) => Ok(PathBuf::from(OsString::from_vec(join(&names, None)))),
        }
    }

    /// `lstat` of `rel` (the last component is not followed; `""` is the root).
    pub fn lstat(&self, rel: impl AsRef<Path>) -> Result<FileStat, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        match self.walk(rel, false, None)? {
            (fd, _, Some(name)) if name != b".." => {
                fstatat(&fd, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| {
                    if e == Errno::ENOENT {
                        RootError::NotFound { path: show(rel) }
                    } else {
                        Self::io("lstat", rel)(e)
                    }
                })
            }
            (fd, _, _) => fstat(&fd).map_err(Self::io("stat", rel)),
        }
    }

    /// Reads the target of the symlink `rel`.
    pub fn read_link(&self, rel: impl AsRef<Path>) -> Result<PathBuf, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let p = self.parent(rel, None)?;
        readlinkat(&p.fd, p.name.as_slice())
            .map(PathBuf::from)
            .map_err(Self::io("readlink", rel))
    }

    /// Opens the regular file `rel` for reading (never following a last symlink; a FIFO or
    /// device is refused by `O_NOFOLLOW|O_NONBLOCK` plus a type check).
    pub fn open_file(&self, rel: impl AsRef<Path>) -> Result<File, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let p = self.parent(rel, None)?;
        let st = fstatat(&p.fd, p.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(Self::io("lstat", rel))?;
        if Kind::of_mode(st.st_mode) != Kind::File {
            return Err(Self::io("open", rel)(Errno::EINVAL));
        }
        let fd = openat(
            &p.fd,
            p.name.as_slice(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map_err(Self::io("open", rel))?;
        Ok(File::from(fd))
    }

    /// Lists xattrs of `rel` (not following a last symlink).
    pub fn xattrs(&self, rel: impl AsRef<Path>) -> Result<Vec<(OsString, Vec<u8>)>, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let p = self.parent(rel, None)?;
        let host = self.path.join(OsStr::from_bytes(&p.logical()));
        xattr::list(&host).map_err(|source| RootError::StdIo {
            op: "list xattrs of",
            path: show(rel),
            source,
        })
    }

    /// Creates `rel` and its missing parents as directories with `meta` (existing ones are left
    /// as they are). Returns the resolved host path.
    pub fn create_dir_all(&self, rel: impl AsRef<Path>, meta: &Meta) -> Result<PathBuf, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let (_, names, last) = self.walk_create_all(rel, meta)?;
        debug_assert!(last.is_none());
        Ok(self.path.join(OsStr::from_bytes(&join(&names, None))))
    }

    fn walk_create_all(&self, rel: &[u8], meta: &Meta) -> Result<Walked, RootError> {
        // A trailing component that must be a directory: resolve it as an intermediate one.
        let mut p = rel.to_vec();
        p.extend_from_slice(b"/x");
        let (_, names, _) = self.walk(&p, false, Some(meta))?;
        let fd = self.open_names(&names, rel)?;
        Ok((fd, names, None))
    }

    /// Makes `rel` a directory with `meta`: an existing directory is kept (its metadata set),
    /// anything else there is removed first (a symlink is replaced, never followed:
    /// CVE-2026-33056). Missing parents are created with mode 0755.
    pub fn mkdir(&self, rel: impl AsRef<Path>, meta: &Meta) -> Result<Vec<u8>, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        self.mkdir_cached(rel, meta, &mut ParentCache::new())
    }

    /// [`Root::mkdir`] resolving the parent through `cache`.
    pub(crate) fn mkdir_cached(
        &self,
        rel: &[u8],
        meta: &Meta,
        cache: &mut ParentCache,
    ) -> Result<Vec<u8>, RootError> {
        let p = self.parent_cached(rel, cache)?;
        match fstatat(&p.fd, p.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) if Kind::of_mode(st.st_mode) == Kind::Dir => {}
            Ok(_) => {
                self.remove_at(p, rel)?;
                mkdirat(&p.fd, p.name.as_slice(), Mode::from_bits_truncate(0o700))
                    .map_err(Self::io("mkdir", rel))?;
            }
            Err(Errno::ENOENT) => {
                mkdirat(&p.fd, p.name.as_slice(), Mode::from_bits_truncate(0o700))
                    .map_err(Self::io("mkdir", rel))?
            }
            Err(e) => return Err(Self::io("lstat", rel)(e)),
        }
        let fd = openat(
            &p.fd,
            p.name.as_slice(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(Self::io("open", rel))?;
        self.apply_fd(&fd, meta, rel)?;
        Ok(p.logical())
    }

    /// Writes a regular file `rel` from `content` with `meta`, replacing whatever was there
    /// (a link is unlinked first, never written through: RUSTSEC-2018-0002). Missing parents
    /// are created with mode 0755. Returns the bytes written and the resolved path.
    pub fn write_file(
        &self,
        rel: impl AsRef<Path>,
        content: &mut dyn Read,
        meta: &Meta,
    ) -> Result<(u64, Vec<u8>), RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        self.write_file_cached(rel, content, meta, &mut ParentCache::new())
    }

    /// [`Root::write_file`] resolving the parent through `cache` and copying through its
    /// buffer.
    pub(crate) fn write_file_cached(
        &self,
        rel: &[u8],
        content: &mut dyn Read,
        meta: &Meta,
        cache: &mut ParentCache,
    ) -> Result<(u64, Vec<u8>), RootError> {
        // Large enough that a 200 MB file takes few syscalls, allocated once per unpack.
        const BUF: usize = 256 * 1024;
        let mut buf = std::mem::take(&mut cache.buf);
        buf.resize(BUF, 0);
        let result = self.write_file_with(rel, content, meta, cache, &mut buf);
        cache.buf = buf;
        result
    }

    fn write_file_with(
        &self,
        rel: &[u8],
        content: &mut dyn Read,
        meta: &Meta,
        cache: &mut ParentCache,
        buf: &mut [u8],
    ) -> Result<(u64, Vec<u8>), RootError> {
        let p = self.parent_cached(rel, cache)?;
        let create = || {
            openat(
                &p.fd,
                p.name.as_slice(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
        };
        let fd = match create() {
            Ok(fd) => fd,
            // Something is there: with O_CREAT|O_EXCL, open(2) fails on any existing name,
            // a symlink included, without following it. Remove it (never write through a
            // link: RUSTSEC-2018-0002) and create again. Trying first saves an lstat per new
            // file, the common case.
            Err(Errno::EEXIST) => {
                self.remove_at(p, rel)?;
                create().map_err(Self::io("create", rel))?
            }
            Err(e) => return Err(Self::io("create", rel)(e)),
        };
        let mut f = File::from(fd);
        let write_err = |source| RootError::StdIo {
            op: "write",
            path: show(rel),
            source,
        };
        let mut n: u64 = 0;
        loop {
            let got = match content.read(buf) {
                Ok(0) => break,
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(write_err(e)),
            };
            f.write_all(&buf[..got]).map_err(write_err)?;
            n += got as u64;
        }
        self.apply_fd(f.as_fd(), meta, rel)?;
        Ok((n, p.logical()))
    }

    /// Creates the symlink `rel -> target` (target stored exactly as given), replacing
    /// whatever was at `rel`.
    pub fn symlink(
        &self,
        rel: impl AsRef<Path>,
        target: impl AsRef<Path>,
    ) -> Result<Vec<u8>, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let p = self.prepare_new(rel)?;
        symlinkat(target.as_ref(), &p.fd, p.name.as_slice()).map_err(Self::io("symlink", rel))?;
        Ok(p.logical())
    }

    /// [`Root::symlink`] resolving the parent through `cache`, then applying `meta` to the
    /// link itself (owner, mtime; never followed).
    pub(crate) fn symlink_cached(
        &self,
        rel: &[u8],
        target: &Path,
        meta: &Meta,
        cache: &mut ParentCache,
    ) -> Result<Vec<u8>, RootError> {
        let p = self.parent_cached(rel, cache)?;
        match symlinkat(target, &p.fd, p.name.as_slice()) {
            Ok(()) => {}
            // symlinkat(2) never replaces (EEXIST): remove what is there and try again.
            Err(Errno::EEXIST) => {
                self.remove_at(p, rel)?;
                symlinkat(target, &p.fd, p.name.as_slice()).map_err(Self::io("symlink", rel))?;
            }
            Err(e) => return Err(Self::io("symlink", rel)(e)),
        }
        self.apply_at(p, meta, rel)?;
        Ok(p.logical())
    }

    /// Creates the hard link `rel` to `target`, both resolved inside the root; the target's
    /// last component is not followed (a link to a symlink links the symlink, CVE-2021-32760).
    pub fn hardlink(
        &self,
        rel: impl AsRef<Path>,
        target: impl AsRef<Path>,
    ) -> Result<Vec<u8>, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let target = target.as_ref().as_os_str().as_bytes();
        let t = self.parent(target, None)?;
        let st = fstatat(&t.fd, t.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| {
            if e == Errno::ENOENT {
                RootError::NotFound { path: show(target) }
            } else {
                Self::io("lstat", target)(e)
            }
        })?;
        if Kind::of_mode(st.st_mode) == Kind::Dir {
            return Err(RootError::LinkToDirectory {
                path: show(rel),
                target: show(target),
            });
        }
        let p = self.prepare_new(rel)?;
        if p.logical() == t.logical() {
            // `h` linked to itself: after removal there is nothing to link; keep it absent.
            return Err(RootError::NotFound { path: show(target) });
        }
        linkat(
            &t.fd,
            t.name.as_slice(),
            &p.fd,
            p.name.as_slice(),
            AtFlags::empty(),
        )
        .map_err(Self::io("link", rel))?;
        Ok(p.logical())
    }

    /// Creates a FIFO at `rel` (replacing whatever was there).
    pub fn mkfifo(&self, rel: impl AsRef<Path>, meta: &Meta) -> Result<Vec<u8>, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let p = self.prepare_new(rel)?;
        nix::unistd::mkfifoat(&p.fd, p.name.as_slice(), Mode::from_bits_truncate(0o600))
            .map_err(Self::io("mkfifo", rel))?;
        self.apply_at(&p, meta, rel)?;
        Ok(p.logical())
    }

    /// Creates a device node at `rel`; `EPERM` comes back as is so the caller can apply its
    /// policy (unprivileged and user-namespace builds cannot `mknod`).
    pub fn mknod(
        &self,
        rel: impl AsRef<Path>,
        kind: Kind,
        major: u64,
        minor: u64,
        meta: &Meta,
    ) -> Result<Vec<u8>, RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let sflag = match kind {
            Kind::Char => nix::sys::stat::SFlag::S_IFCHR,
            Kind::Block => nix::sys::stat::SFlag::S_IFBLK,
            _ => return Err(Self::io("mknod", rel)(Errno::EINVAL)),
        };
        let p = self.prepare_new(rel)?;
        nix::sys::stat::mknodat(
            &p.fd,
            p.name.as_slice(),
            sflag,
            Mode::from_bits_truncate(0o600),
            nix::sys::stat::makedev(major, minor),
        )
        .map_err(Self::io("mknod", rel))?;
        self.apply_at(&p, meta, rel)?;
        Ok(p.logical())
    }

    /// Removes `rel` and everything below it (never following a symlink; ignored paths below
    /// are kept). A missing `rel` is not an error.
    pub fn remove_all(&self, rel: impl AsRef<Path>) -> Result<(), RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let p = match self.parent(rel, None) {
            Ok(p) => p,
            Err(RootError::NotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        self.remove_at(&p, rel)
    }

    /// Opaque whiteout of directory `dir`: removes every child that `keep` (given the resolved
    /// path inside the root) does not claim, descending into kept directories.
    pub(crate) fn clear_lower(
        &self,
        dir: &[u8],
        keep: &dyn Fn(&[u8]) -> bool,
    ) -> Result<(), RootError> {
        let (fd, names, last) = self.walk(dir, true, None)?;
        if last.is_some() {
            // `dir` is missing or not a directory: nothing below it to hide.
            return Ok(());
        }
        let logical = join(&names, None);
        self.check_ignored(dir, &logical)?;
        let rd = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(&fd, ".", rd, Mode::empty()).map_err(Self::io("open", dir))?;
        self.clear_lower_at(fd, names, keep, dir)
    }

    fn clear_lower_at(
        &self,
        fd: OwnedFd,
        names: Vec<Vec<u8>>,
        keep: &dyn Fn(&[u8]) -> bool,
        rel: &[u8],
    ) -> Result<(), RootError> {
        let dup = fd.try_clone().map_err(|source| RootError::StdIo {
            op: "dup",
            path: show(rel),
            source,
        })?;
        let mut d = Dir::from_fd(dup).map_err(Self::io("read dir", rel))?;
        let mut children = Vec::new();
        for e in d.iter() {
            let e = e.map_err(Self::io("read dir", rel))?;
            let n = e.file_name().to_bytes();
            if n != b"." && n != b".." {
                children.push(n.to_vec());
            }
        }
        drop(d);
        for c in children {
            let child = Parent {
                fd: fd.try_clone().map_err(|source| RootError::StdIo {
                    op: "dup",
                    path: show(rel),
                    source,
                })?,
                names: names.clone(),
                name: c,
            };
            let logical = child.logical();
            if self.is_ignored(&logical) {
                continue;
            }
            if !keep(&logical) {
                self.remove_at(&child, rel)?;
                continue;
            }
            let st = fstatat(&fd, child.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(Self::io("lstat", rel))?;
            if Kind::of_mode(st.st_mode) == Kind::Dir {
                let sub = openat(
                    &fd,
                    child.name.as_slice(),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(Self::io("open", rel))?;
                let mut sub_names = names.clone();
                sub_names.push(child.name.clone());
                self.clear_lower_at(sub, sub_names, keep, rel)?;
            }
        }
        Ok(())
    }

    /// Sets ownership, mode, xattrs and mtime of `rel` without following a last symlink.
    /// chown comes before chmod: chown(2) clears setuid/setgid bits.
    pub fn set_metadata(&self, rel: impl AsRef<Path>, meta: &Meta) -> Result<(), RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        match self.walk(rel, false, None)? {
            (fd, names, Some(name)) if name != b".." => {
                let p = Parent { fd, names, name };
                self.apply_at(&p, meta, rel)
            }
            (fd, _, _) => {
                // The path ends on a directory (or is the root): open it through its O_PATH fd.
                let rw = openat(
                    &fd,
                    ".",
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .map_err(Self::io("open", rel))?;
                self.apply_fd(&rw, meta, rel)
            }
        }
    }

    /// Sets only the permission bits of `rel` (a symlink is left alone: Linux has no lchmod).
    pub fn set_mode(&self, rel: impl AsRef<Path>, mode: u32) -> Result<(), RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let p = self.parent(rel, None)?;
        let st = fstatat(&p.fd, p.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(Self::io("lstat", rel))?;
        if Kind::of_mode(st.st_mode) == Kind::Symlink {
            return Ok(());
        }
        nix::sys::stat::fchmodat(
            &p.fd,
            p.name.as_slice(),
            Mode::from_bits_truncate(mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(Self::io("chmod", rel))
    }

    /// Sets only the mtime of `rel` (not following a last symlink).
    pub fn set_mtime(&self, rel: impl AsRef<Path>, mtime: (i64, u32)) -> Result<(), RootError> {
        let rel = rel.as_ref().as_os_str().as_bytes();
        let p = self.parent(rel, None)?;
        let t = TimeSpec::new(mtime.0, mtime.1.into());
        utimensat(
            &p.fd,
            p.name.as_slice(),
            &t,
            &t,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(Self::io("set mtime of", rel))
    }

    /// Moves the host entry `name` of the directory `from` (a directory of kiln's own, on the
    /// same file system) to `rel` inside the root with `renameat(2)`, replacing what is there
    /// (a directory there, or anything when a directory moves in, is removed first). The
    /// parent of `rel` must exist; it is resolved inside the root, the last name never
    /// followed. Used to apply an overlay's upper directory without copying file contents.
    pub(crate) fn move_in(&self, from: &File, name: &[u8], rel: &[u8]) -> Result<(), RootError> {
        let p = self.parent(rel, None)?;
        let src =
            fstatat(from, name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(Self::io("lstat", rel))?;
        match fstatat(&p.fd, p.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st)
                if Kind::of_mode(st.st_mode) == Kind::Dir
                    || Kind::of_mode(src.st_mode) == Kind::Dir =>
            {
                self.remove_at(&p, rel)?
            }
            _ => {}
        }
        // Whatever was at the name is replaced: cached parents may be stale.
        self.removals.fetch_add(1, Ordering::Relaxed);
        nix::fcntl::renameat(from, name, &p.fd, p.name.as_slice()).map_err(Self::io("rename", rel))
    }

    /// Gives the existing directory `rel` the owner, mode, `xattrs` and (with `mtime`) the
    /// mtime of `like` (raw host ids, not mapped: `like` was made by a step on this host),
    /// leaving what already matches.
    pub(crate) fn copy_dir_meta(
        &self,
        rel: &[u8],
        like: &std::fs::Metadata,
        xattrs: &[(OsString, Vec<u8>)],
        mtime: bool,
    ) -> Result<(), RootError> {
        use std::os::unix::fs::MetadataExt;
        let p = self.parent(rel, None)?;
        let st = fstatat(&p.fd, p.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(Self::io("lstat", rel))?;
        if Kind::of_mode(st.st_mode) != Kind::Dir {
            return Err(RootError::Io {
                op: "update directory",
                path: show(rel),
                source: Errno::ENOTDIR,
            });
        }
        let fd = openat(
            &p.fd,
            p.name.as_slice(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(Self::io("open", rel))?;
        if st.st_uid != like.uid() || st.st_gid != like.gid() {
            fchown(
                &fd,
                Some(Uid::from_raw(like.uid())),
                Some(Gid::from_raw(like.gid())),
            )
            .map_err(Self::io("chown", rel))?;
        }
        // After chown, which may clear setgid (chown(2)).
        if st.st_mode & 0o7777 != like.mode() & 0o7777 || st.st_uid != like.uid() {
            fchmod(&fd, Mode::from_bits_truncate(like.mode() & 0o7777))
                .map_err(Self::io("chmod", rel))?;
        }
        for (k, v) in xattrs {
            if let Err(e) = xattr::fset(&fd, k, v) {
                tracing::warn!(path = %show(rel), xattr = ?k, error = %e, "xattr not set");
            }
        }
        if mtime {
            let t = TimeSpec::new(like.mtime(), like.mtime_nsec());
            futimens(&fd, &t, &t).map_err(Self::io("set mtime of", rel))?;
        }
        Ok(())
    }

    /// Resolves the parent of a new entry (creating missing parents 0755) and removes what is
    /// at its name.
    fn prepare_new(&self, rel: &[u8]) -> Result<Parent, RootError> {
        let p = self.parent(rel, Some(&Meta::with_mode(0o755)))?;
        self.remove_at(&p, rel)?;
        Ok(p)
    }

    pub(crate) fn remove_at(&self, p: &Parent, rel: &[u8]) -> Result<(), RootError> {
        match fstatat(&p.fd, p.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(Self::io("lstat", rel)(e)),
            Ok(st) if Kind::of_mode(st.st_mode) == Kind::Dir => {
                // A directory (and all below it) goes: any cached parent may be in it.
                self.removals.fetch_add(1, Ordering::Relaxed);
                self.remove_tree(&p.fd, &p.name, p.logical(), rel)
            }
            Ok(st) => {
                if Kind::of_mode(st.st_mode) == Kind::Symlink {
                    // A cached parent may have been reached through this link.
                    self.removals.fetch_add(1, Ordering::Relaxed);
                }
                unlinkat(&p.fd, p.name.as_slice(), UnlinkatFlags::NoRemoveDir)
                    .map_err(Self::io("unlink", rel))
            }
        }
    }

    /// Removes the directory `name` in `parent` recursively. Holds one directory fd at a time
    /// (walking back up with `..`), so depth costs memory for names only, never fds.
    fn remove_tree(
        &self,
        parent: &OwnedFd,
        name: &[u8],
        logical: Vec<u8>,
        rel: &[u8],
    ) -> Result<(), RootError> {
        struct Frame {
            name: Vec<u8>,
            logical: Vec<u8>,
            pending: Vec<Vec<u8>>,
        }
        let rd = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        if self.is_ignored(&logical) {
            return Ok(());
        }
        self.make_removable(parent, name);
        let mut cur = openat(parent, name, rd, Mode::empty()).map_err(Self::io("open", rel))?;
        let pending = self.clear_files(&cur, &logical, rel)?;
        let mut stack = vec![Frame {
            name: name.to_vec(),
            logical,
            pending,
        }];
        let mut kept = false;
        while let Some(top) = stack.last_mut() {
            if let Some(sub) = top.pending.pop() {
                let mut sub_logical = top.logical.clone();
                sub_logical.push(b'/');
                sub_logical.extend_from_slice(&sub);
                if self.is_ignored(&sub_logical) {
                    kept = true;
                    continue;
                }
                self.make_removable(&cur, &sub);
                let next = openat(&cur, sub.as_slice(), rd, Mode::empty())
                    .map_err(Self::io("open", rel))?;
                cur = next;
                let pending = self.clear_files(&cur, &sub_logical, rel)?;
                stack.push(Frame {
                    name: sub,
                    logical: sub_logical,
                    pending,
                });
            } else {
                let done = stack.pop().unwrap_or_else(|| unreachable!());
                let res = if stack.is_empty() {
                    unlinkat(parent, done.name.as_slice(), UnlinkatFlags::RemoveDir)
                } else {
                    let up =
                        openat(&cur, "..", rd, Mode::empty()).map_err(Self::io("open", rel))?;
                    cur = up;
                    unlinkat(&cur, done.name.as_slice(), UnlinkatFlags::RemoveDir)
                };
                match res {
                    Ok(()) => {}
                    Err(Errno::ENOTEMPTY) if kept => {}
                    Err(e) => return Err(Self::io("rmdir", rel)(e)),
                }
            }
        }
        Ok(())
    }

    /// Without privilege, a directory we own but may not read or write (mode 0555, 0000: as
    /// layers ship `/proc` or `/var/empty`) cannot be emptied: give the owner rwx first. Root
    /// (or root in a user namespace) needs no such help (CAP_DAC_OVERRIDE).
    fn make_removable(&self, parent: &OwnedFd, name: &[u8]) {
        if self.privileged {
            return;
        }
        if let Ok(st) = fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            if Kind::of_mode(st.st_mode) == Kind::Dir && st.st_mode & 0o700 != 0o700 {
                let _ = nix::sys::stat::fchmodat(
                    parent,
                    name,
                    Mode::from_bits_truncate((st.st_mode | 0o700) & 0o7777),
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                );
            }
        }
    }

    /// Unlinks every non-directory in `dir`; returns the names of its subdirectories.
    fn clear_files(
        &self,
        dir: &OwnedFd,
        logical: &[u8],
        rel: &[u8],
    ) -> Result<Vec<Vec<u8>>, RootError> {
        let mut subdirs = Vec::new();
        let dup = dir.try_clone().map_err(|source| RootError::StdIo {
            op: "dup",
            path: show(rel),
            source,
        })?;
        let mut d = Dir::from_fd(dup).map_err(Self::io("read dir", rel))?;
        let mut names = Vec::new();
        for e in d.iter() {
            let e = e.map_err(Self::io("read dir", rel))?;
            let n = e.file_name().to_bytes();
            if n == b"." || n == b".." {
                continue;
            }
            let is_dir = match e.file_type() {
                Some(t) => t == nix::dir::Type::Directory,
                None => fstatat(dir, n, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map(|st| Kind::of_mode(st.st_mode) == Kind::Dir)
                    .map_err(Self::io("lstat", rel))?,
            };
            names.push((n.to_vec(), is_dir));
        }
        for (n, is_dir) in names {
            if is_dir {
                subdirs.push(n);
            } else {
                let mut l = logical.to_vec();
                l.push(b'/');
                l.extend_from_slice(&n);
                if self.is_ignored(&l) {
                    continue;
                }
                unlinkat(dir, n.as_slice(), UnlinkatFlags::NoRemoveDir)
                    .map_err(Self::io("unlink", rel))?;
            }
        }
        Ok(subdirs)
    }

    fn ids(&self, meta: &Meta) -> Option<(Uid, Gid)> {
        match &self.ownership {
            Ownership::Skip => None,
            Ownership::Preserve => Some((Uid::from_raw(meta.uid), Gid::from_raw(meta.gid))),
            Ownership::Map(m) => Some((
                Uid::from_raw(
                    IdMap::map(&m.uids, meta.uid)
                        .unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
                ),
                Gid::from_raw(
                    IdMap::map(&m.gids, meta.gid)
                        .unwrap_or_else(|| nix::unistd::getegid().as_raw()),
                ),
            )),
        }
    }

    /// Applies `meta` through an fd opened for reading or writing (regular file, directory).
    fn apply_fd(&self, fd: impl AsFd, meta: &Meta, rel: &[u8]) -> Result<(), RootError> {
        let fd = fd.as_fd();
        if let Some((u, g)) = self.ids(meta) {
            fchown(fd, Some(u), Some(g)).map_err(Self::io("chown", rel))?;
        }
        fchmod(fd, Mode::from_bits_truncate(meta.mode & 0o7777)).map_err(Self::io("chmod", rel))?;
        for (k, v) in &meta.xattrs {
            match xattr::fset(fd, k, v) {
                Ok(()) => {}
                // The file system has no xattrs (EOPNOTSUPP), or we may not set this name
                // (EPERM: security.* unprivileged): the content is still right; say so.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EPERM)) => {
                    tracing::warn!(path = %show(rel), xattr = ?k, error = %e, "xattr not set");
                }
                Err(source) => {
                    return Err(RootError::StdIo {
                        op: "set xattr on",
                        path: show(rel),
                        source,
                    })
                }
            }
        }
        if let Some((s, ns)) = meta.mtime {
            let t = TimeSpec::new(s, ns.into());
            futimens(fd, &t, &t).map_err(Self::io("set mtime of", rel))?;
        }
        Ok(())
    }

    /// Applies `meta` to `p.name` in `p.fd` without following it (any type).
    fn apply_at(&self, p: &Parent, meta: &Meta, rel: &[u8]) -> Result<(), RootError> {
        let st = fstatat(&p.fd, p.name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(Self::io("lstat", rel))?;
        let kind = Kind::of_mode(st.st_mode);
        if matches!(kind, Kind::File | Kind::Dir) {
            let mut flags =
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
            if kind == Kind::Dir {
                flags |= OFlag::O_DIRECTORY;
            }
            if let Ok(fd) = openat(&p.fd, p.name.as_slice(), flags, Mode::empty()) {
                return self.apply_fd(&fd, meta, rel);
            }
        }
        if let Some((u, g)) = self.ids(meta) {
            fchownat(
                &p.fd,
                p.name.as_slice(),
                Some(u),
                Some(g),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(Self::io("chown", rel))?;
        }
        if kind != Kind::Symlink {
            // Linux has no lchmod; the name was just checked not to be a symlink and kiln is
            // the only writer of the tree.
            nix::sys::stat::fchmodat(
                &p.fd,
                p.name.as_slice(),
                Mode::from_bits_truncate(meta.mode & 0o7777),
                nix::sys::stat::FchmodatFlags::FollowSymlink,
            )
            .map_err(Self::io("chmod", rel))?;
        }
        if !meta.xattrs.is_empty() {
            let host = self.path.join(OsStr::from_bytes(&p.logical()));
            for (k, v) in &meta.xattrs {
                if let Err(e) = xattr::lset(&host, k, v) {
                    tracing::warn!(path = %show(rel), xattr = ?k, error = %e, "xattr not set");
                }
            }
        }
        if let Some((s, ns)) = meta.mtime {
            let t = TimeSpec::new(s, ns.into());
            utimensat(
                &p.fd,
                p.name.as_slice(),
                &t,
                &t,
                UtimensatFlags::NoFollowSymlink,
            )
            .map_err(Self::io("set mtime of", rel))?;
        }
        Ok(())
    }
}

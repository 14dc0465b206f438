//! Hard-link copies of whole trees, for the engine's store of unpacked layer chains.
//!
//! [`link_tree`] recreates a tree by creating its directories and hard-linking everything
//! else: link(2) shares the inode, so no file data is written and a file costs one directory
//! entry (on this project's CI disk ~10 µs, where creating and writing a small file costs
//! 0.1–0.8 ms). The copy and the original then share every non-directory inode, which is
//! safe only while nothing writes such a file in place. kiln's writers never do: the unpacker
//! and [`crate::Root`] unlink a name before creating it (RUSTSEC-2018-0002), a RUN on an
//! overlay writes to its upper directory (overlayfs copies a lower file up before changing
//! it, data or metadata), and the upper directory is renamed into the rootfs. A RUN that
//! runs directly in the rootfs (the walk fallback) would write through the links:
//! [`break_links`] gives every multiply-linked file of a tree its own inode first.
//!
//! Both walk with descriptors (`openat`/`fstatat` with `O_NOFOLLOW`), so a symlink in either
//! tree is linked as a symlink and never followed.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, futimens, mkdirat, FileStat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, linkat, unlinkat, Gid, Uid, UnlinkatFlags};

use crate::error::RootError;

/// Deeper trees are refused (the caller falls back to unpacking): each level holds two
/// descriptors while its children are linked.
const MAX_DEPTH: usize = 512;

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// What [`link_tree`] or [`break_links`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Directories created.
    pub dirs: u64,
    /// Names hard-linked.
    pub links: u64,
    /// Files given their own inode (copied) by [`break_links`].
    pub copied: u64,
    /// [`link_tree`]: regular files linked, each inode once (names of one inode count once).
    pub files: u64,
    /// [`link_tree`]: space those files take (`st_blocks` × 512, each inode once).
    pub file_bytes: u64,
    /// [`link_tree`]: space the source's directories take (`st_blocks` × 512); the new
    /// directories take about as much (ext4: within a few per cent).
    pub dir_bytes: u64,
}

fn io<'a>(op: &'static str, rel: &'a [u8]) -> impl Fn(Errno) -> RootError + 'a {
    move |source| RootError::Io {
        op,
        path: String::from_utf8_lossy(rel).into_owned(),
        source,
    }
}

fn check_depth(depth: usize, rel: &[u8]) -> Result<(), RootError> {
    if depth > MAX_DEPTH {
        return Err(RootError::TooDeep {
            path: String::from_utf8_lossy(rel).into_owned(),
            limit: MAX_DEPTH,
        });
    }
    Ok(())
}

/// Gives `fd` the access and modification times of `st`.
fn copy_times(fd: impl AsFd, st: &FileStat, rel: &[u8]) -> Result<(), RootError> {
    futimens(
        fd,
        &TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
    .map_err(io("utimens", rel))
}

fn kind_of(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = rel.to_vec();
    if !p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// The names in the directory `fd` (without `.` and `..`), read before any of them changes.
fn names(fd: &OwnedFd, rel: &[u8]) -> Result<Vec<Vec<u8>>, RootError> {
    let mut dir =
        nix::dir::Dir::openat(fd, ".", DIR_FLAGS, Mode::empty()).map_err(io("opendir", rel))?;
    let mut out = Vec::new();
    for e in dir.iter() {
        let e = e.map_err(io("readdir", rel))?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
        }
    }
    Ok(out)
}

/// Gives the directory `dst` the owner (when `owners`), xattrs, mode and times of `st`/`src`.
fn copy_dir_meta(
    src: &OwnedFd,
    dst: &OwnedFd,
    st: &FileStat,
    owners: bool,
    rel: &[u8],
) -> Result<(), RootError> {
    if owners {
        fchown(
            dst,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(io("chown", rel))?;
    }
    copy_xattrs(src, dst, rel)?;
    // After chown, which clears set-id bits.
    fchmod(dst, Mode::from_bits_truncate(st.st_mode & 0o7777)).map_err(io("chmod", rel))?;
    copy_times(dst, st, rel)
}

fn copy_xattrs(src: impl AsFd, dst: impl AsFd, rel: &[u8]) -> Result<(), RootError> {
    let xerr = |op: &'static str| {
        move |e: rustix::io::Errno| RootError::StdIo {
            op,
            path: String::from_utf8_lossy(rel).into_owned(),
            source: e.into(),
        }
    };
    let mut buf = vec![0u8; 4096];
    let n = loop {
        match rustix::fs::flistxattr(&src, &mut buf[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(()),
            Err(e) => return Err(xerr("listxattr")(e)),
        }
    };
    if n == 0 {
        return Ok(());
    }
    let mut val = vec![0u8; 64 * 1024];
    for name in buf[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::ffi::OsStr::from_bytes(name);
        let len = match rustix::fs::fgetxattr(&src, name, &mut val[..]) {
            Ok(len) => len,
            Err(rustix::io::Errno::NODATA) => continue,
            Err(e) => return Err(xerr("getxattr")(e)),
        };
        rustix::fs::fsetxattr(&dst, name, &val[..len], rustix::fs::XattrFlags::empty())
            .map_err(xerr("setxattr"))?;
    }
    Ok(())
}

/// Recreates the tree `src` in the existing, empty directory `dst`: directories are created
/// with the mode, owner (when `owners`: the caller can give any owner), xattrs and times of
/// their source, every other entry (files, symlinks, devices, FIFOs) is hard-linked; sockets
/// are left out (no layer holds one).
/// Files linked under several names in `src` stay one inode in `dst`. `dst` itself gets
/// `src`'s metadata. Both must be on one file system (else `EXDEV`). On error `dst` is
/// partly filled: the caller removes it.
pub fn link_tree(src: &Path, dst: &Path, owners: bool) -> Result<LinkStats, RootError> {
    let open = |p: &Path| {
        nix::fcntl::open(p, DIR_FLAGS, Mode::empty()).map_err(|source| RootError::Open {
            path: p.to_path_buf(),
            source,
        })
    };
    let s = open(src)?;
    let d = open(dst)?;
    let mut stats = LinkStats::default();
    let mut seen = HashSet::new();
    link_dir(&s, &d, owners, b"", 0, &mut stats, &mut seen)?;
    let st = fstat(&s).map_err(io("stat", b"."))?;
    copy_dir_meta(&s, &d, &st, owners, b".")?;
    Ok(stats)
}

fn link_dir(
    s: &OwnedFd,
    d: &OwnedFd,
    owners: bool,
    rel: &[u8],
    depth: usize,
    stats: &mut LinkStats,
    seen: &mut HashSet<(u64, u64)>,
) -> Result<(), RootError> {
    check_depth(depth, rel)?;
    for name in names(s, rel)? {
        let child = join(rel, &name);
        let st = fstatat(s, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(io("lstat", &child))?;
        if kind_of(&st) == SFlag::S_IFDIR {
            // 0700 while its entries are added (the final mode may lack u+w).
            mkdirat(d, name.as_slice(), Mode::S_IRWXU).map_err(io("mkdir", &child))?;
            let cs =
                openat(s, name.as_slice(), DIR_FLAGS, Mode::empty()).map_err(io("open", &child))?;
            let cd =
                openat(d, name.as_slice(), DIR_FLAGS, Mode::empty()).map_err(io("open", &child))?;
            link_dir(&cs, &cd, owners, &child, depth + 1, stats, seen)?;
            copy_dir_meta(&cs, &cd, &st, owners, &child)?;
            stats.dirs += 1;
            stats.dir_bytes = stats.dir_bytes.saturating_add(st.st_blocks as u64 * 512);
        } else if kind_of(&st) == SFlag::S_IFSOCK {
            // A socket a RUN left behind (gpg-agent's, say) is not in its layer (the layer
            // writer skips sockets), so it is not in the tree either: a tree holds what
            // unpacking its layers gives.
            continue;
        } else {
            linkat(s, name.as_slice(), d, name.as_slice(), AtFlags::empty())
                .map_err(io("link", &child))?;
            stats.links += 1;
            if kind_of(&st) == SFlag::S_IFREG
                && (st.st_nlink < 2 || seen.insert((st.st_dev, st.st_ino)))
            {
                stats.files += 1;
                stats.file_bytes = stats.file_bytes.saturating_add(st.st_blocks as u64 * 512);
            }
        }
    }
    Ok(())
}

/// Gives every entry of the tree at `root` that has more than one link its own inode: regular
/// files are copied (content, owner when `owners`, mode, xattrs, times), symlinks and FIFOs
/// made again, each under a temporary name renamed over the original, so that changing it in
/// place (data, chmod, lchown, utimes) no longer changes another tree linked to it. Names of
/// one inode inside `root` stay names of one (new) inode. Device nodes stay shared (making
/// them needs CAP_MKNOD; a RUN changing a device node's metadata is not worth a failure).
/// Used before a RUN runs directly in a rootfs that shares inodes with the tree store.
pub fn break_links(root: &Path, owners: bool) -> Result<LinkStats, RootError> {
    let fd =
        nix::fcntl::open(root, DIR_FLAGS, Mode::empty()).map_err(|source| RootError::Open {
            path: root.to_path_buf(),
            source,
        })?;
    let mut b = Breaker {
        root: &fd,
        owners,
        seen: HashMap::new(),
        stats: LinkStats::default(),
    };
    b.dir(&fd, b"", 0)?;
    Ok(b.stats)
}

/// The walk of [`break_links`].
struct Breaker<'a> {
    root: &'a OwnedFd,
    owners: bool,
    /// Inodes given a new one, by (device, inode): the new inode's path from the root (a
    /// path, not a descriptor: a wide tree would run out of descriptors).
    seen: HashMap<(u64, u64), Vec<u8>>,
    stats: LinkStats,
}

impl Breaker<'_> {
    fn dir(&mut self, d: &OwnedFd, rel: &[u8], depth: usize) -> Result<(), RootError> {
        check_depth(depth, rel)?;
        // New entries are created next to the old: a directory without u+w (a 0555 /usr/bin)
        // gets it for the loop and its mode back after (root ignores the bit; a single-id
        // build does not).
        let dst = fstat(d).map_err(io("stat", rel))?;
        let mode = Mode::from_bits_truncate(dst.st_mode & 0o7777);
        let widen = !mode.contains(Mode::S_IWUSR | Mode::S_IXUSR);
        if widen {
            fchmod(d, mode | Mode::S_IRWXU).map_err(io("chmod", rel))?;
        }
        let r = self.entries(d, rel, depth);
        if widen {
            fchmod(d, mode).map_err(io("chmod", rel))?;
        }
        r
    }

    fn entries(&mut self, d: &OwnedFd, rel: &[u8], depth: usize) -> Result<(), RootError> {
        for name in names(d, rel)? {
            let child = join(rel, &name);
            let st = fstatat(d, name.as_slice(), AtFlags::AT_SYMLINK_NOFOLLOW)
                .map_err(io("lstat", &child))?;
            let kind = kind_of(&st);
            if kind == SFlag::S_IFDIR {
                let cd = openat(d, name.as_slice(), DIR_FLAGS, Mode::empty())
                    .map_err(io("open", &child))?;
                self.dir(&cd, &child, depth + 1)?;
                continue;
            }
            let remake = matches!(kind, SFlag::S_IFREG | SFlag::S_IFLNK | SFlag::S_IFIFO);
            if !remake || st.st_nlink < 2 {
                continue;
            }
            let id = (st.st_dev, st.st_ino);
            if let Some(first) = self.seen.get(&id) {
                // Another name of an inode already made again: link it to the new one (the
                // path was walked as directories a moment ago and nothing runs meanwhile).
                unlinkat(d, name.as_slice(), UnlinkatFlags::NoRemoveDir)
                    .map_err(io("unlink", &child))?;
                linkat(
                    self.root,
                    first.as_slice(),
                    d,
                    name.as_slice(),
                    AtFlags::empty(),
                )
                .map_err(io("link", &child))?;
                self.stats.links += 1;
                continue;
            }
            let tmp = remake_entry(d, &name, &st, self.owners, &child)?;
            renameat(d, tmp.as_slice(), d, name.as_slice()).map_err(io("rename", &child))?;
            self.seen.insert(id, child);
            self.stats.copied += 1;
        }
        Ok(())
    }
}

/// Makes a new inode like `name` (a regular file, symlink or FIFO described by `st`) under a
/// fresh temporary name in `d`, and returns that name. A name the tree already has is never
/// touched: creation is exclusive and retried under another name.
fn remake_entry(
    d: &OwnedFd,
    name: &[u8],
    st: &FileStat,
    owners: bool,
    rel: &[u8],
) -> Result<Vec<u8>, RootError> {
    let kind = kind_of(st);
    let target = if kind == SFlag::S_IFLNK {
        Some(nix::fcntl::readlinkat(d, name).map_err(io("readlink", rel))?)
    } else {
        None
    };
    for n in 0..64 {
        let tmp = format!(".kiln-unshare-{}-{n}", st.st_ino).into_bytes();
        let made = match (kind, &target) {
            (SFlag::S_IFLNK, Some(t)) => nix::unistd::symlinkat(t.as_os_str(), d, tmp.as_slice()),
            (SFlag::S_IFIFO, _) => nix::unistd::mkfifoat(d, tmp.as_slice(), Mode::S_IRUSR),
            _ => match copy_file(d, name, &tmp, st, owners, rel) {
                Ok(()) => return Ok(tmp),
                Err(RootError::Io {
                    source: Errno::EEXIST,
                    ..
                }) => continue,
                Err(e) => {
                    let _ = unlinkat(d, tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
                    return Err(e);
                }
            },
        };
        match made {
            Ok(()) => {}
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(io("create", rel)(e)),
        }
        let meta = set_meta_at(d, &tmp, st, owners, rel, kind == SFlag::S_IFLNK);
        if let Err(e) = meta {
            let _ = unlinkat(d, tmp.as_slice(), UnlinkatFlags::NoRemoveDir);
            return Err(e);
        }
        return Ok(tmp);
    }
    Err(io("create", rel)(Errno::EEXIST))
}

/// Owner (when `owners`), mode (not for symlinks) and times of `st` on the entry `name` in
/// `d`, without following it.
fn set_meta_at(
    d: &OwnedFd,
    name: &[u8],
    st: &FileStat,
    owners: bool,
    rel: &[u8],
    symlink: bool,
) -> Result<(), RootError> {
    if owners {
        nix::unistd::fchownat(
            d,
            name,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(io("chown", rel))?;
    }
    if !symlink {
        nix::sys::stat::fchmodat(
            d,
            name,
            Mode::from_bits_truncate(st.st_mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )
        .map_err(io("chmod", rel))?;
    }
    nix::sys::stat::utimensat(
        d,
        name,
        &TimeSpec::new(st.st_atime, st.st_atime_nsec),
        &TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io("utimens", rel))
}

/// Copies the regular file `name` in `d` to the new name `tmp` (created exclusively: EEXIST
/// when taken) with `st`'s owner (when `owners`), xattrs, mode and times.
fn copy_file(
    d: &OwnedFd,
    name: &[u8],
    tmp: &[u8],
    st: &FileStat,
    owners: bool,
    rel: &[u8],
) -> Result<(), RootError> {
    let dst = openat(
        d,
        tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(io("create", rel))?;
    let src = openat(
        d,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("open", rel))?;
    let mut from = File::from(src);
    let mut to = File::from(dst);
    std::io::copy(&mut from, &mut to).map_err(|source| RootError::StdIo {
        op: "copy",
        path: String::from_utf8_lossy(rel).into_owned(),
        source,
    })?;
    if owners {
        fchown(
            &to,
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        )
        .map_err(io("chown", rel))?;
    }
    copy_xattrs(&from, &to, rel)?;
    fchmod(&to, Mode::from_bits_truncate(st.st_mode & 0o7777)).map_err(io("chmod", rel))?;
    copy_times(&to, st, rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tempdir");
        let r = t.path();
        fs::create_dir_all(r.join("a/b/c")).expect("mkdir");
        fs::write(r.join("a/f"), b"data of f").expect("write");
        fs::write(r.join("a/b/c/g"), b"g").expect("write");
        fs::hard_link(r.join("a/f"), r.join("a/b/f2")).expect("link");
        std::os::unix::fs::symlink("/etc/passwd", r.join("a/abs")).expect("symlink");
        std::os::unix::fs::symlink("../../..", r.join("a/b/up")).expect("symlink");
        nix::unistd::mkfifo(&r.join("fifo"), Mode::from_bits_truncate(0o640)).expect("fifo");
        fs::create_dir(r.join("ro")).expect("mkdir");
        fs::write(r.join("ro/x"), b"x").expect("write");
        fs::set_permissions(r.join("ro"), fs::Permissions::from_mode(0o555)).expect("chmod");
        fs::set_permissions(r.join("a/b"), fs::Permissions::from_mode(0o2751)).expect("chmod");
        let old = TimeSpec::new(1_000_000, 5);
        let dfd = nix::fcntl::open(&r.join("a/b/c"), DIR_FLAGS, Mode::empty()).expect("open");
        futimens(&dfd, &old, &old).expect("utimens");
        t
    }

    #[test]
    fn link_tree_shares_inodes_and_recreates_directories() {
        let src = tree();
        let dst = tempfile::tempdir().expect("tempdir");
        let stats = link_tree(src.path(), dst.path(), false).expect("link_tree");
        assert_eq!(stats.dirs, 4, "{stats:?}"); // a, a/b, a/b/c, ro
        assert_eq!(stats.links, 7, "{stats:?}");
        let (s, d) = (src.path(), dst.path());
        for f in [
            "a/f", "a/b/f2", "a/b/c/g", "ro/x", "fifo", "a/abs", "a/b/up",
        ] {
            let (ms, md) = (
                fs::symlink_metadata(s.join(f)).expect("src"),
                fs::symlink_metadata(d.join(f)).expect("dst"),
            );
            assert_eq!(ms.ino(), md.ino(), "{f} is the same inode");
        }
        // Two names of one inode stay one inode.
        assert_eq!(
            fs::metadata(d.join("a/f")).unwrap().ino(),
            fs::metadata(d.join("a/b/f2")).unwrap().ino()
        );
        // Symlinks are linked, not followed.
        assert_eq!(
            fs::read_link(d.join("a/abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        for dir in ["a", "a/b", "a/b/c", "ro"] {
            let (ms, md) = (
                fs::symlink_metadata(s.join(dir)).unwrap(),
                fs::symlink_metadata(d.join(dir)).unwrap(),
            );
            assert_ne!(ms.ino(), md.ino(), "{dir} is a new directory");
            assert_eq!(ms.mode(), md.mode(), "{dir} mode");
            assert_eq!(
                (ms.mtime(), ms.mtime_nsec()),
                (md.mtime(), md.mtime_nsec()),
                "{dir} mtime"
            );
        }
        assert_eq!(
            fs::symlink_metadata(d.join("a/b/c")).unwrap().mtime(),
            1_000_000
        );
        assert_eq!(fs::read(d.join("ro/x")).unwrap(), b"x");
    }

    #[test]
    fn link_tree_leaves_sockets_out() {
        let src = tempfile::tempdir().expect("tempdir");
        let _l = std::os::unix::net::UnixListener::bind(src.path().join("S.agent")).expect("bind");
        fs::write(src.path().join("f"), b"f").unwrap();
        let dst = tempfile::tempdir().expect("tempdir");
        let stats = link_tree(src.path(), dst.path(), false).expect("link_tree");
        assert_eq!(stats.links, 1);
        assert!(fs::symlink_metadata(dst.path().join("S.agent")).is_err());
    }

    #[test]
    fn break_links_never_touches_a_name_the_tree_has() {
        let src = tempfile::tempdir().expect("tempdir");
        fs::write(src.path().join("f"), b"data").unwrap();
        let ino = fs::metadata(src.path().join("f")).unwrap().ino();
        let dst = tempfile::tempdir().expect("tempdir");
        link_tree(src.path(), dst.path(), false).expect("link_tree");
        // The image already has a file named like the first temporary name.
        let taken = format!(".kiln-unshare-{ino}-0");
        fs::write(dst.path().join(&taken), b"the image's own").unwrap();
        let stats = break_links(dst.path(), false).expect("break_links");
        assert_eq!(stats.copied, 1);
        assert_eq!(
            fs::read(dst.path().join(&taken)).unwrap(),
            b"the image's own"
        );
        assert_eq!(fs::read(dst.path().join("f")).unwrap(), b"data");
        assert_ne!(fs::metadata(dst.path().join("f")).unwrap().ino(), ino);
    }

    #[test]
    fn link_tree_refuses_too_deep_trees() {
        let src = tempfile::tempdir().expect("tempdir");
        let mut p = src.path().to_path_buf();
        for _ in 0..(MAX_DEPTH + 2) {
            p.push("d");
        }
        fs::create_dir_all(&p).expect("deep");
        let dst = tempfile::tempdir().expect("tempdir");
        let e = link_tree(src.path(), dst.path(), false).expect_err("too deep");
        assert!(matches!(e, RootError::TooDeep { .. }), "{e}");
    }

    #[test]
    fn break_links_gives_linked_files_their_own_inode() {
        let src = tree();
        let dst = tempfile::tempdir().expect("tempdir");
        link_tree(src.path(), dst.path(), false).expect("link_tree");
        let (s, d) = (src.path(), dst.path());
        let before = fs::metadata(d.join("a/f")).unwrap();
        let stats = break_links(d, false).expect("break_links");
        // a/f (two names in each tree: one copy), a/b/c/g, ro/x, the FIFO and both symlinks.
        assert_eq!(stats.copied, 6, "{stats:?}");
        for f in ["a/abs", "a/b/up", "fifo"] {
            let (ms, md) = (
                fs::symlink_metadata(s.join(f)).unwrap(),
                fs::symlink_metadata(d.join(f)).unwrap(),
            );
            assert_ne!(ms.ino(), md.ino(), "{f} has its own inode");
            assert_eq!(ms.mode(), md.mode(), "{f} mode");
            assert_eq!(ms.mtime(), md.mtime(), "{f} mtime");
        }
        assert_eq!(
            fs::read_link(d.join("a/b/up")).unwrap(),
            Path::new("../../..")
        );
        assert_eq!(stats.links, 1, "{stats:?}");
        for f in ["a/f", "a/b/f2", "a/b/c/g", "ro/x"] {
            let (ms, md) = (
                fs::metadata(s.join(f)).unwrap(),
                fs::metadata(d.join(f)).unwrap(),
            );
            assert_ne!(ms.ino(), md.ino(), "{f} has its own inode");
            assert_eq!(fs::read(s.join(f)).unwrap(), fs::read(d.join(f)).unwrap());
            assert_eq!(ms.mode(), md.mode(), "{f} mode");
            assert_eq!(ms.mtime(), md.mtime(), "{f} mtime");
        }
        let (f, f2) = (
            fs::metadata(d.join("a/f")).unwrap(),
            fs::metadata(d.join("a/b/f2")).unwrap(),
        );
        assert_eq!(f.ino(), f2.ino(), "the pair is still one inode");
        assert_eq!(f.nlink(), 2);
        assert_eq!(before.mtime(), f.mtime());
        // Writing the copy leaves the source alone.
        fs::write(d.join("a/f"), b"changed").expect("write");
        assert_eq!(fs::read(s.join("a/f")).unwrap(), b"data of f");
        assert_eq!(fs::read(d.join("a/b/f2")).unwrap(), b"changed");
        // Nothing is left behind.
        let leftovers: Vec<_> = walk(d)
            .into_iter()
            .filter(|p| p.to_string_lossy().contains(".kiln-unshare-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(p: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(p).unwrap() {
            let e = e.unwrap();
            out.push(e.path());
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            }
        }
        out
    }
}

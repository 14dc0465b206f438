//! Mount targets inside a rootfs: confined resolution, stub creation, stub removal.
//!
//! Targets resolve with `openat2(RESOLVE_IN_ROOT)`, so `..` and absolute symlinks stay inside
//! the rootfs (CVE-2024-1753: a bind target through `/rootlink -> /` lands inside the root).
//! Missing components are created one at a time with `mkdirat`/`openat(O_CREAT|O_EXCL|
//! O_NOFOLLOW)` relative to the already-resolved parent, and recorded as stubs. Stubs are
//! removed after the run by re-resolving their parent with `RESOLVE_NO_SYMLINKS |
//! RESOLVE_BENEATH` and checking device+inode: if a RUN replaced a parent with a symlink to a
//! host directory (CVE-2024-23652), the walk fails and nothing is removed.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, futimens, mkdirat, Mode, SFlag};
use nix::sys::time::TimeSpec;
use nix::unistd::{unlinkat, UnlinkatFlags};

use crate::error::SandboxError;
use crate::userdb::file_kind_name;

/// Runs `op` (a create or unlink in `dir`); if that is refused with EACCES and the caller
/// owns `dir` (an unprivileged build whose rootfs has a read-only directory such as a 0555
/// `/proc` or `/sys`), grants the owner write access for the call and restores the mode,
/// which a user namespace's root would not have needed (its CAP_DAC_OVERRIDE).
fn with_write_access<T>(dir: &OwnedFd, mut op: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    match op() {
        Err(Errno::EACCES) => {}
        other => return other,
    }
    let st = fstat(dir)?;
    if st.st_uid != nix::unistd::geteuid().as_raw() {
        return Err(Errno::EACCES);
    }
    // `dir` may be an O_PATH descriptor, which fchmod(2) refuses: reopen it.
    let rw = openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mode = Mode::from_bits_truncate(st.st_mode & 0o7777);
    nix::sys::stat::fchmod(&rw, mode | Mode::S_IRWXU)?;
    let result = op();
    nix::sys::stat::fchmod(&rw, mode)?;
    result
}

/// What a mount target must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    /// A device node (chroot mode without mount rights): mode with type bits, device number.
    Node(libc::mode_t, libc::dev_t),
}

/// A file or directory the sandbox created and must remove after the run.
#[derive(Debug)]
pub(crate) struct Stub {
    /// Parent directory, relative to the root, symlink-free ("" for the root itself).
    parent_rel: PathBuf,
    name: OsString,
    kind: Kind,
    dev: u64,
    ino: u64,
    /// Parent mtime before the stub was created and right after, to restore it if the RUN
    /// did not touch the directory (so the differ does not see a changed parent).
    parent_mtime_before: TimeSpec,
    parent_mtime_after: TimeSpec,
}

impl Stub {
    /// Path inside the rootfs, with a leading `/`.
    pub(crate) fn display(&self) -> String {
        let p = self.parent_rel.join(&self.name);
        format!("/{}", p.display())
    }
}

/// An opened rootfs.
#[derive(Debug)]
pub(crate) struct Root {
    pub(crate) path: PathBuf,
    pub(crate) fd: OwnedFd,
}

/// A resolved target.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// Symlink-free absolute path in the caller's mount namespace.
    pub(crate) host_path: PathBuf,
    /// The same path relative to the root, with a leading `/`.
    pub(crate) in_root: String,
}

fn how(flags: OFlag, resolve: ResolveFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(resolve)
}

/// How often [`openat2_retrying`] tries again.
const EAGAIN_RETRIES: usize = 128;

/// `openat2`, tried again on `EAGAIN`: with RESOLVE_IN_ROOT or RESOLVE_BENEATH the kernel
/// gives up when a rename or mount anywhere on the system races with the lookup of a `..`
/// component, and openat2(2) says the caller may retry. Stages running in parallel rename
/// and mount all the time, so a lookup here can lose that race without anything being wrong.
fn openat2_retrying<P: ?Sized + nix::NixPath>(
    dirfd: std::os::fd::BorrowedFd<'_>,
    path: &P,
    how: OpenHow,
) -> nix::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match openat2(dirfd, path, how) {
            Err(Errno::EAGAIN) if tries < EAGAIN_RETRIES => tries += 1,
            r => return r,
        }
    }
}

fn mtime(st: &nix::sys::stat::FileStat) -> TimeSpec {
    TimeSpec::new(st.st_mtime, st.st_mtime_nsec)
}

impl Root {
    /// Opens `path` (canonicalised) as the root.
    pub(crate) fn open(path: &Path) -> Result<Root, SandboxError> {
        let err = |source| SandboxError::Rootfs {
            path: path.to_path_buf(),
            source,
        };
        let canonical = std::fs::canonicalize(path)
            .map_err(|e| err(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
        let fd = nix::fcntl::open(
            &canonical,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(err)?;
        Ok(Root {
            path: canonical,
            fd,
        })
    }

    fn resolve_err(&self, path: &str, source: Errno) -> SandboxError {
        SandboxError::Resolve {
            rootfs: self.path.clone(),
            path: path.to_string(),
            source,
        }
    }

    /// Where `fd` (something under the root) is, via `/proc/self/fd`.
    fn where_is(&self, fd: &OwnedFd, path: &str) -> Result<Resolved, SandboxError> {
        let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| self.resolve_err(path, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        let rel = link
            .strip_prefix(&self.path)
            .map_err(|_| self.resolve_err(path, Errno::EXDEV))?;
        Ok(Resolved {
            in_root: format!("/{}", rel.display()),
            host_path: link,
        })
    }

    /// Resolves `path` inside the root, creating missing components (directories, and the
    /// last one as `kind`) as stubs appended to `stubs`.
    pub(crate) fn ensure(
        &self,
        path: &str,
        kind: Kind,
        stubs: &mut Vec<Stub>,
    ) -> Result<Resolved, SandboxError> {
        self.ensure_depth(path, path, kind, stubs, 0)
    }

    fn ensure_depth(
        &self,
        original: &str,
        path: &str,
        kind: Kind,
        stubs: &mut Vec<Stub>,
        depth: u32,
    ) -> Result<Resolved, SandboxError> {
        let comps: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        let resolve = ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS;
        let mut current: OwnedFd = self
            .fd
            .try_clone()
            .map_err(|e| self.resolve_err(path, Errno::from_raw(e.raw_os_error().unwrap_or(0))))?;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join("/");
            let last = i + 1 == comps.len();
            let fd = match openat2_retrying(
                self.fd.as_fd(),
                prefix.as_str(),
                how(OFlag::O_PATH, resolve),
            ) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if comps[i] != ".." => {
                    let name = comps[i];
                    // A dangling symlink (e.g. /etc/resolv.conf -> ../run/systemd/resolve/
                    // stub-resolv.conf): create its target inside the root, as runc does for
                    // mount destinations; path_resolution(7) allows 40 links.
                    if let Ok(target) = nix::fcntl::readlinkat(&current, name) {
                        if depth >= 40 {
                            return Err(self.resolve_err(original, Errno::ELOOP));
                        }
                        let target = target.to_string_lossy().into_owned();
                        let base = if target.starts_with('/') {
                            String::new()
                        } else {
                            self.where_is(&current, original)?.in_root
                        };
                        let rest = comps[i + 1..].join("/");
                        let next = format!("{base}/{target}/{rest}");
                        return self.ensure_depth(original, &next, kind, stubs, depth + 1);
                    }
                    let want_dir = !last || kind == Kind::Dir;
                    let before = fstat(&current).map_err(|e| self.resolve_err(path, e))?;
                    with_write_access(&current, || {
                        if want_dir {
                            mkdirat(&current, name, Mode::from_bits_truncate(0o755))
                        } else if let (true, Kind::Node(mode, rdev)) = (last, kind) {
                            let perm = Mode::from_bits_truncate(mode & 0o7777);
                            nix::sys::stat::mknodat(
                                &current,
                                name,
                                SFlag::from_bits_truncate(mode & libc::S_IFMT),
                                perm,
                                rdev,
                            )?;
                            // mknod(2) applies the umask (0666 became 0644: a non-root step
                            // could not write /dev/null); the node is ours, just made.
                            nix::sys::stat::fchmodat(
                                &current,
                                name,
                                perm,
                                nix::sys::stat::FchmodatFlags::FollowSymlink,
                            )
                        } else {
                            openat(
                                &current,
                                name,
                                OFlag::O_CREAT
                                    | OFlag::O_EXCL
                                    | OFlag::O_NOFOLLOW
                                    | OFlag::O_WRONLY
                                    | OFlag::O_CLOEXEC,
                                Mode::from_bits_truncate(0o644),
                            )
                            .map(drop)
                        }
                    })
                    // EEXIST here: the name is a dangling symlink.
                    .map_err(|e| self.resolve_err(path, e))?;
                    let after = fstat(&current).map_err(|e| self.resolve_err(path, e))?;
                    let st = fstatat(&current, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|e| self.resolve_err(path, e))?;
                    let parent_rel = self.where_is(&current, path)?.in_root;
                    stubs.push(Stub {
                        parent_rel: PathBuf::from(parent_rel.trim_start_matches('/')),
                        name: OsString::from(name),
                        kind: if want_dir { Kind::Dir } else { Kind::File },
                        dev: st.st_dev,
                        ino: st.st_ino,
                        parent_mtime_before: mtime(&before),
                        parent_mtime_after: mtime(&after),
                    });
                    openat(
                        &current,
                        name,
                        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.resolve_err(path, e))?
                }
                Err(e) => return Err(self.resolve_err(path, e)),
            };
            let st = fstat(&fd).map_err(|e| self.resolve_err(path, e))?;
            let ft = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
            let need_dir = !last || kind == Kind::Dir;
            if need_dir != (ft == SFlag::S_IFDIR) {
                return Err(SandboxError::TargetType {
                    rootfs: self.path.clone(),
                    path: format!("/{prefix}"),
                    found: file_kind_name(ft),
                    wanted: if need_dir {
                        "directory"
                    } else {
                        "non-directory"
                    },
                });
            }
            current = fd;
        }
        self.where_is(&current, path)
    }

    /// Removes `stubs` (newest first). Returns one message per stub left in place.
    pub(crate) fn remove_stubs(&self, stubs: &mut Vec<Stub>) -> Vec<String> {
        let mut warnings = Vec::new();
        while let Some(stub) = stubs.pop() {
            if let Err(why) = self.remove_stub(&stub) {
                warnings.push(format!(
                    "left sandbox mountpoint stub {} in place: {why}",
                    stub.display()
                ));
            }
        }
        warnings
    }

    fn remove_stub(&self, stub: &Stub) -> Result<(), String> {
        // RESOLVE_NO_SYMLINKS: a parent replaced by a symlink (to the host or anywhere) is not
        // the directory the stub was created in; remove nothing (CVE-2024-23652).
        let parent_path: &Path = if stub.parent_rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &stub.parent_rel
        };
        let parent = openat2_retrying(
            self.fd.as_fd(),
            parent_path,
            how(
                OFlag::O_RDONLY | OFlag::O_DIRECTORY,
                ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH,
            ),
        )
        .map_err(|e| format!("parent no longer resolves without symlinks: {e}"))?;
        let st = fstatat(&parent, stub.name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| format!("{e}"))?;
        let is_dir = st.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFDIR.bits();
        if st.st_dev != stub.dev || st.st_ino != stub.ino || is_dir != (stub.kind == Kind::Dir) {
            return Err("replaced by the step".to_string());
        }
        let pst = fstat(&parent).map_err(|e| format!("{e}"))?;
        let flag = if is_dir {
            UnlinkatFlags::RemoveDir
        } else {
            UnlinkatFlags::NoRemoveDir
        };
        with_write_access(&parent, || unlinkat(&parent, stub.name.as_os_str(), flag))
            .map_err(|e| format!("{e}"))?;
        if mtime(&pst) == stub.parent_mtime_after {
            // The step did not change the directory otherwise: give it back its mtime.
            let omit = TimeSpec::UTIME_OMIT;
            let _ = futimens(&parent, &omit, &stub.parent_mtime_before);
        }
        Ok(())
    }
}

/// A directory docker mounts over during a RUN (`/dev`: a tmpfs) that chroot isolation without
/// CAP_SYS_ADMIN leaves as the rootfs's own: what was in it before the step, so that what the
/// step leaves there is removed after it. Without a device node, `cmd > /dev/null` writes a
/// regular file there, which would land in the layer (and so would whatever was sent to it).
pub(crate) struct Volatile {
    rel: PathBuf,
    dev: u64,
    ino: u64,
    before: std::collections::HashSet<(OsString, u64)>,
    mtime: TimeSpec,
}

/// Bound on the depth of what [`Root::clear_volatile`] removes.
const MAX_REMOVE_DEPTH: usize = 128;

fn open_dir_beneath(root: &OwnedFd, rel: &Path) -> nix::Result<OwnedFd> {
    openat2_retrying(
        root.as_fd(),
        rel,
        how(
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_BENEATH,
        ),
    )
}

fn entries(dir: &OwnedFd) -> nix::Result<Vec<(OsString, u64)>> {
    use std::os::unix::ffi::OsStrExt;
    let mut d = nix::dir::Dir::openat(
        dir,
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push((std::ffi::OsStr::from_bytes(n).to_os_string(), e.ino()));
        }
    }
    Ok(out)
}

/// Removes `name` in `dir` and, for a directory, everything below it, without following a
/// symlink anywhere (every step is relative to an already-opened directory).
fn remove_all_at(dir: &OwnedFd, name: &std::ffi::OsStr, depth: usize) -> nix::Result<()> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if st.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits() {
        return unlinkat(dir, name, UnlinkatFlags::NoRemoveDir);
    }
    if depth > MAX_REMOVE_DEPTH {
        return Err(Errno::ELOOP);
    }
    let sub = openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    for (n, _) in entries(&sub)? {
        remove_all_at(&sub, &n, depth + 1)?;
    }
    unlinkat(dir, name, UnlinkatFlags::RemoveDir)
}

impl Root {
    /// Records what the directory `in_root` (a path without symlinks) holds now; `None` when
    /// it is not there.
    pub(crate) fn volatile(&self, in_root: &str) -> Option<Volatile> {
        let rel = PathBuf::from(in_root.trim_start_matches('/'));
        let dir = open_dir_beneath(&self.fd, &rel).ok()?;
        let st = fstat(&dir).ok()?;
        Some(Volatile {
            before: entries(&dir).ok()?.into_iter().collect(),
            rel,
            dev: st.st_dev,
            ino: st.st_ino,
            mtime: mtime(&st),
        })
    }

    /// Removes what the step added to `v`'s directory (names it did not hold before, or holds
    /// as another file now) and gives the directory back its mtime. A directory the step
    /// replaced (with a symlink, say) is left alone: an error says so.
    pub(crate) fn clear_volatile(&self, v: &Volatile) -> Result<usize, String> {
        let dir = open_dir_beneath(&self.fd, &v.rel).map_err(|e| {
            format!(
                "/{} no longer resolves without symlinks: {e}",
                v.rel.display()
            )
        })?;
        let st = fstat(&dir).map_err(|e| e.to_string())?;
        if (st.st_dev, st.st_ino) != (v.dev, v.ino) {
            return Err(format!("/{} was replaced by the step", v.rel.display()));
        }
        let mut removed = 0;
        for e in entries(&dir).map_err(|e| e.to_string())? {
            if v.before.contains(&e) {
                continue;
            }
            remove_all_at(&dir, &e.0, 0)
                .map_err(|err| format!("/{}/{}: {err}", v.rel.display(), e.0.to_string_lossy()))?;
            removed += 1;
        }
        if removed > 0 {
            let _ = futimens(&dir, &TimeSpec::UTIME_OMIT, &v.mtime);
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod eagain_tests {
    use super::*;

    /// A lookup through `..` under RESOLVE_IN_ROOT while another thread renames: raw openat2
    /// fails with EAGAIN now and then; the retrying one never does.
    #[test]
    fn lookups_racing_with_renames_are_retried() {
        let root = tempfile::tempdir().expect("tempdir");
        let r = root.path();
        std::fs::create_dir_all(r.join("a/b/c")).unwrap();
        std::fs::create_dir_all(r.join("x")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let renamer = {
            let stop = stop.clone();
            let (p, q) = (r.join("x"), r.join("y"));
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = std::fs::rename(&p, &q);
                    let _ = std::fs::rename(&q, &p);
                }
            })
        };
        let dir = nix::fcntl::open(
            r,
            OFlag::O_PATH | OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open root");
        let flags = how(OFlag::O_PATH, ResolveFlag::RESOLVE_IN_ROOT);
        let (mut raw_eagain, mut retried_err) = (0, 0);
        for _ in 0..20_000 {
            if let Err(Errno::EAGAIN) = openat2(dir.as_fd(), "a/b/c/../../../a/b/../b/c/..", flags)
            {
                raw_eagain += 1;
            }
            if openat2_retrying(dir.as_fd(), "a/b/c/../../../a/b/../b/c/..", flags).is_err() {
                retried_err += 1;
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        renamer.join().unwrap();
        eprintln!("raw openat2: {raw_eagain} EAGAIN of 20000");
        assert_eq!(retried_err, 0);
    }
}

//! `USER` / `COPY --chown` resolution against a rootfs's `/etc/passwd` and `/etc/group`.
//!
//! The files come from an image and are hostile input (HOSTILE-INPUTS 29, CVE-2024-9676):
//! they are opened with `openat2(RESOLVE_IN_ROOT)` so symlinks resolve inside the rootfs,
//! opened non-blocking so a FIFO cannot hang the build, must be regular files, and are read
//! with a size bound. Ids are parsed strictly as `u32` (CVE-2024-40635: `4294967296` or `-1`
//! must not wrap to root).

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, Mode, SFlag};

/// Largest `/etc/passwd` or `/etc/group` accepted.
pub const MAX_DB_SIZE: u64 = 4 << 20;

/// The result of resolving a `USER` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// Numeric user id.
    pub uid: u32,
    /// Numeric primary group id.
    pub gid: u32,
    /// Supplementary groups (from `/etc/group` membership, only when no group was given,
    /// like runc/docker).
    pub additional_gids: Vec<u32>,
    /// Home directory from the passwd entry, `/` when there is none.
    pub home: String,
    /// The user name when a passwd entry matched.
    pub name: Option<String>,
}

/// Errors of user/group resolution.
#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    /// Empty spec or empty part.
    #[error("invalid user spec {spec:?}: {why}")]
    InvalidSpec {
        /// The spec as given.
        spec: String,
        /// What is wrong.
        why: &'static str,
    },
    /// A numeric id is out of the `u32` range or negative.
    #[error("invalid {kind} id {value:?} in user spec: must be 0..=4294967295")]
    IdOutOfRange {
        /// `user` or `group`.
        kind: &'static str,
        /// The text.
        value: String,
    },
    /// No passwd entry for a name.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser {
        /// The name.
        name: String,
    },
    /// No group entry for a name.
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup {
        /// The name.
        name: String,
    },
    /// The database file is not a regular file (symlink to /dev/zero, FIFO, directory...).
    #[error("{path} in rootfs {rootfs} is not a regular file (it is a {kind})")]
    NotRegular {
        /// The rootfs.
        rootfs: PathBuf,
        /// `/etc/passwd` or `/etc/group`.
        path: &'static str,
        /// What it is.
        kind: &'static str,
    },
    /// The database file is larger than [`MAX_DB_SIZE`].
    #[error("{path} in rootfs {rootfs} is larger than {max} bytes")]
    TooLarge {
        /// The rootfs.
        rootfs: PathBuf,
        /// The file.
        path: &'static str,
        /// The bound.
        max: u64,
    },
    /// Opening or reading failed.
    #[error("reading {path} in rootfs {rootfs}: {source}")]
    Io {
        /// The rootfs.
        rootfs: PathBuf,
        /// The file.
        path: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Resolves `name|uid[:group|gid]` against `rootfs/etc/passwd` and `rootfs/etc/group`.
///
/// Rules (docker/runc semantics): a numeric uid without passwd entry is allowed (gid 0, home
/// `/`); an unknown name is an error; an explicit group replaces the primary gid and then no
/// supplementary groups are added; otherwise supplementary groups are the groups listing the
/// user's name as a member.
pub fn resolve_user(rootfs: &Path, spec: &str) -> Result<ResolvedUser, UserDbError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user_part.is_empty() {
        return Err(UserDbError::InvalidSpec {
            spec: spec.to_string(),
            why: "empty user",
        });
    }
    if group_part == Some("") {
        return Err(UserDbError::InvalidSpec {
            spec: spec.to_string(),
            why: "empty group",
        });
    }
    let user_id = parse_id(user_part, "user")?;
    let passwd = read_db(rootfs, "/etc/passwd")?;
    let entry = passwd.as_deref().and_then(|text| {
        parse_passwd(text).find(|e| match user_id {
            Some(uid) => e.uid == Some(uid),
            None => e.name == user_part,
        })
    });
    let (uid, mut gid, home, name) = match (entry, user_id) {
        (Some(e), _) => (
            e.uid.unwrap_or_default(),
            e.gid.unwrap_or(0),
            if e.home.is_empty() {
                "/".to_string()
            } else {
                e.home.to_string()
            },
            Some(e.name.to_string()),
        ),
        (None, Some(uid)) => (uid, 0, "/".to_string(), None),
        (None, None) => {
            return Err(UserDbError::UnknownUser {
                name: user_part.to_string(),
            })
        }
    };
    let mut additional_gids = Vec::new();
    match group_part {
        Some(g) => {
            gid = match parse_id(g, "group")? {
                Some(id) => id,
                None => {
                    let groups = read_db(rootfs, "/etc/group")?;
                    groups
                        .as_deref()
                        .and_then(|t| parse_group(t).find(|e| e.name == g).and_then(|e| e.gid))
                        .ok_or_else(|| UserDbError::UnknownGroup {
                            name: g.to_string(),
                        })?
                }
            };
        }
        None => {
            if let Some(n) = &name {
                if let Some(text) = read_db(rootfs, "/etc/group")? {
                    for e in parse_group(&text) {
                        if let Some(g) = e.gid {
                            if e.members.split(',').any(|m| m.trim() == n)
                                && g != gid
                                && !additional_gids.contains(&g)
                            {
                                additional_gids.push(g);
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
        name,
    })
}

/// Home directory of `uid` from `rootfs/etc/passwd`, for the `HOME` default of a RUN.
/// `None` when there is no entry (docker then uses `/`).
pub fn home_for_uid(rootfs: &Path, uid: u32) -> Result<Option<String>, UserDbError> {
    let passwd = read_db(rootfs, "/etc/passwd")?;
    Ok(passwd.as_deref().and_then(|t| {
        parse_passwd(t)
            .find(|e| e.uid == Some(uid))
            .map(|e| e.home.to_string())
            .filter(|h| !h.is_empty())
    }))
}

/// `Some(id)` for a decimal id, `None` for a name, error for an out-of-range or negative number.
fn parse_id(text: &str, kind: &'static str) -> Result<Option<u32>, UserDbError> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if text.starts_with('-') {
            return Err(UserDbError::IdOutOfRange {
                kind,
                value: text.to_string(),
            });
        }
        return text
            .parse::<u32>()
            .map(Some)
            .map_err(|_| UserDbError::IdOutOfRange {
                kind,
                value: text.to_string(),
            });
    }
    Ok(None)
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: Option<u32>,
    gid: Option<u32>,
    home: &'a str,
}

/// passwd(5): `name:password:UID:GID:GECOS:directory:shell`. Malformed lines are skipped
/// (as glibc does); ids that do not parse as u32 never match.
fn parse_passwd(text: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    text.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || f[0].is_empty() {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: f[2].parse().ok(),
            gid: f.get(3).and_then(|g| g.parse().ok()),
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: Option<u32>,
    members: &'a str,
}

/// group(5): `group_name:password:GID:user_list`.
fn parse_group(text: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    text.lines().filter_map(|line| {
        if line.starts_with('#') {
            return None;
        }
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 3 || f[0].is_empty() {
            return None;
        }
        Some(GroupEntry {
            name: f[0],
            gid: f[2].parse().ok(),
            members: f.get(3).copied().unwrap_or(""),
        })
    })
}

/// Reads a database file inside `rootfs`, `None` when it does not exist.
fn read_db(rootfs: &Path, path: &'static str) -> Result<Option<String>, UserDbError> {
    let io = |source: std::io::Error| UserDbError::Io {
        rootfs: rootfs.to_path_buf(),
        path,
        source,
    };
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io(e.into()))?;
    // O_NONBLOCK: opening a FIFO for reading must not wait for a writer (HOSTILE-INPUTS 29).
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(root.as_fd(), path, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => return Ok(None),
        Err(e) => return Err(io(e.into())),
    };
    let st = fstat(&fd).map_err(|e| io(e.into()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    if kind != SFlag::S_IFREG {
        return Err(UserDbError::NotRegular {
            rootfs: rootfs.to_path_buf(),
            path,
            kind: file_kind_name(kind),
        });
    }
    let too_large = || UserDbError::TooLarge {
        rootfs: rootfs.to_path_buf(),
        path,
        max: MAX_DB_SIZE,
    };
    if st.st_size as u64 > MAX_DB_SIZE {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_DB_SIZE + 1)
        .read_to_end(&mut buf)
        .map_err(io)?;
    if buf.len() as u64 > MAX_DB_SIZE {
        return Err(too_large());
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// A human name for a file type.
pub(crate) fn file_kind_name(kind: SFlag) -> &'static str {
    match kind {
        SFlag::S_IFREG => "regular file",
        SFlag::S_IFDIR => "directory",
        SFlag::S_IFLNK => "symlink",
        SFlag::S_IFCHR => "character device",
        SFlag::S_IFBLK => "block device",
        SFlag::S_IFIFO => "fifo",
        SFlag::S_IFSOCK => "socket",
        _ => "unknown file type",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(passwd: &str, group: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("etc")).expect("mkdir");
        std::fs::write(d.path().join("etc/passwd"), passwd).expect("write");
        std::fs::write(d.path().join("etc/group"), group).expect("write");
        d
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n\
                          bad:x:4294967296:0::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\naudio:x:29:other\n";

    #[test]
    fn name_gives_ids_home_and_supplementary_groups() {
        let r = rootfs(PASSWD, GROUP);
        let u = resolve_user(r.path(), "app").expect("resolve");
        assert_eq!((u.uid, u.gid), (1000, 1001));
        assert_eq!(u.additional_gids, vec![10]);
        assert_eq!(u.home, "/home/app");
        assert_eq!(u.name.as_deref(), Some("app"));
    }

    #[test]
    fn explicit_group_replaces_primary_and_drops_supplementary() {
        let r = rootfs(PASSWD, GROUP);
        let u = resolve_user(r.path(), "app:audio").expect("resolve");
        assert_eq!((u.uid, u.gid), (1000, 29));
        assert!(u.additional_gids.is_empty());
        let u = resolve_user(r.path(), "0:77").expect("resolve");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 77, "/root"));
    }

    #[test]
    fn unknown_numeric_uid_is_allowed_unknown_name_is_not() {
        let r = rootfs(PASSWD, GROUP);
        let u = resolve_user(r.path(), "4242").expect("resolve");
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 0, "/"));
        let e = resolve_user(r.path(), "nobody").expect_err("unknown");
        assert!(e.to_string().contains("nobody"), "{e}");
        let e = resolve_user(r.path(), "app:nogroup").expect_err("unknown group");
        assert!(e.to_string().contains("nogroup"), "{e}");
    }

    #[test]
    fn out_of_range_ids_are_rejected() {
        // CVE-2024-40635: 4294967296 must not wrap to 0.
        let r = rootfs(PASSWD, GROUP);
        for spec in ["4294967296", "-1", "0:-1", "0:4294967296", "", "app:"] {
            assert!(resolve_user(r.path(), spec).is_err(), "{spec} accepted");
        }
    }

    #[test]
    fn hostile_passwd_symlink_fifo_and_size() {
        let r = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(r.path().join("etc")).expect("mkdir");
        // A symlink to /dev/zero resolves inside the rootfs: here to nothing at all.
        std::os::unix::fs::symlink("/dev/zero", r.path().join("etc/passwd")).expect("symlink");
        let e = resolve_user(r.path(), "app").expect_err("no passwd");
        assert!(matches!(e, UserDbError::UnknownUser { .. }), "{e}");
        // ... and to the rootfs's own /dev/zero when it exists: not a regular file.
        std::fs::create_dir_all(r.path().join("dev")).expect("mkdir");
        std::os::unix::fs::symlink("/etc", r.path().join("dev/zero")).expect("symlink");
        let e = resolve_user(r.path(), "app").expect_err("dir");
        assert!(matches!(e, UserDbError::NotRegular { .. }), "{e}");
        // A FIFO: clear error, no hang.
        std::fs::remove_file(r.path().join("etc/passwd")).expect("rm");
        nix::unistd::mkfifo(
            &r.path().join("etc/passwd"),
            Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let e = resolve_user(r.path(), "app").expect_err("fifo");
        assert!(e.to_string().contains("fifo"), "{e}");
        // Too large (sparse, so cheap).
        std::fs::remove_file(r.path().join("etc/passwd")).expect("rm");
        let f = std::fs::File::create(r.path().join("etc/passwd")).expect("create");
        f.set_len(MAX_DB_SIZE + 10).expect("set_len");
        let e = resolve_user(r.path(), "app").expect_err("big");
        assert!(matches!(e, UserDbError::TooLarge { .. }), "{e}");
    }
}

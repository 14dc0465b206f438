//! User namespace id maps (user_namespaces(7), newuidmap(1), subuid(5)).
//!
//! Three plans, chosen in this order:
//! - the caller has CAP_SETUID (root): identity map of every id the caller's namespace has,
//!   so files keep their real owners and every image user works;
//! - `/etc/subuid` and `/etc/subgid` give the caller a range and `newuidmap`/`newgidmap` exist:
//!   0 → caller, 1..=count → the subordinate range (apt's `_apt` user works);
//! - otherwise a single-id map 0 → caller; setgroups is denied and only uid/gid 0 exist.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::unistd::{Gid, Uid};

use crate::error::SandboxError;

/// One line of a map: inside, outside, count.
pub(crate) type Range = (u64, u64, u64);

/// How the ids of a new user namespace get mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MapPlan {
    /// Written directly by a privileged parent.
    Direct {
        uid: Vec<Range>,
        gid: Vec<Range>,
        /// False inside a user namespace whose creator denied setgroups(2) (e.g. a build
        /// re-executed by `unshare --map-root-user`): the denial is inherited by children.
        setgroups: bool,
    },
    /// Written by the setuid helpers.
    Helpers {
        uid: Vec<Range>,
        gid: Vec<Range>,
        newuidmap: PathBuf,
        newgidmap: PathBuf,
    },
    /// 0 → caller only.
    Single { uid: u32, gid: u32 },
}

/// Host paths the plan reads.
#[derive(Debug, Clone)]
pub(crate) struct MapSources<'a> {
    pub proc: &'a Path,
    pub subuid: &'a Path,
    pub subgid: &'a Path,
    pub newuidmap: &'a Path,
    pub newgidmap: &'a Path,
}

/// The warning logged when only a single-id map is possible.
pub(crate) const SINGLE_MAP_WARNING: &str =
    "rootless sandbox with a single-id user namespace map (no /etc/subuid+/etc/subgid range for \
     this user, or no newuidmap/newgidmap): steps run as root only, USER other than root, \
     chown to other ids and supplementary groups will fail; apt-get needs \
     `-o APT::Sandbox::User=root` (its _apt user does not exist in the map); add a range with \
     `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER`";

impl MapPlan {
    /// Chooses a plan for the calling process. The second value is a warning to log.
    pub(crate) fn choose(src: &MapSources<'_>) -> (MapPlan, Option<String>) {
        let uid = Uid::effective();
        let gid = Gid::effective();
        if uid.is_root() {
            let own = |f: &str| -> Option<Vec<Range>> {
                let text = std::fs::read_to_string(src.proc.join("self").join(f)).ok()?;
                let v: Vec<Range> = parse_map(&text)
                    .into_iter()
                    .map(|(i, _, c)| (i, i, c))
                    .collect();
                (!v.is_empty()).then_some(v)
            };
            if let (Some(u), Some(g)) = (own("uid_map"), own("gid_map")) {
                let setgroups = std::fs::read_to_string(src.proc.join("self").join("setgroups"))
                    .map_or(true, |s| s.trim() != "deny");
                return (
                    MapPlan::Direct {
                        uid: u,
                        gid: g,
                        setgroups,
                    },
                    None,
                );
            }
        }
        let name = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name);
        let group = nix::unistd::Group::from_gid(gid)
            .ok()
            .flatten()
            .map(|g| g.name);
        let subu = sub_range(src.subuid, name.as_deref(), uid.as_raw());
        // subgid(5) is keyed by user name (or uid), not group.
        let subg = sub_range(src.subgid, name.as_deref(), uid.as_raw());
        let _ = group;
        if let (Some(su), Some(sg)) = (subu, subg) {
            if src.newuidmap.exists() && src.newgidmap.exists() {
                return (
                    MapPlan::Helpers {
                        uid: vec![(0, uid.as_raw().into(), 1), (1, su.0, su.1)],
                        gid: vec![(0, gid.as_raw().into(), 1), (1, sg.0, sg.1)],
                        newuidmap: src.newuidmap.to_path_buf(),
                        newgidmap: src.newgidmap.to_path_buf(),
                    },
                    None,
                );
            }
        }
        (
            MapPlan::Single {
                uid: uid.as_raw(),
                gid: gid.as_raw(),
            },
            Some(SINGLE_MAP_WARNING.to_string()),
        )
    }

    /// Whether setgroups(2) will be allowed in the namespace.
    pub(crate) fn setgroups_allowed(&self) -> bool {
        match self {
            MapPlan::Single { .. } => false,
            MapPlan::Direct { setgroups, .. } => *setgroups,
            MapPlan::Helpers { .. } => true,
        }
    }

    /// Writes the maps for the child `pid`. On helper failure falls back to a single-id map
    /// (the maps are still unwritten then) and returns the plan actually applied.
    pub(crate) fn apply(
        &self,
        proc: &Path,
        pid: i32,
    ) -> Result<(MapPlan, Option<String>), SandboxError> {
        match self {
            MapPlan::Direct {
                uid,
                gid,
                setgroups,
            } => {
                if !setgroups {
                    // user_namespaces(7): gid_map can only be written once setgroups is denied
                    // in the child too.
                    let path = proc.join(pid.to_string()).join("setgroups");
                    std::fs::write(&path, "deny").map_err(|e| SandboxError::IdMap {
                        map: "setgroups",
                        pid,
                        detail: e.to_string(),
                    })?;
                }
                write_map(proc, pid, "uid_map", uid)?;
                write_map(proc, pid, "gid_map", gid)?;
                Ok((self.clone(), None))
            }
            MapPlan::Helpers {
                uid,
                gid,
                newuidmap,
                newgidmap,
            } => {
                let u = run_helper(newuidmap, pid, uid, "uid_map");
                let g = match &u {
                    Ok(()) => run_helper(newgidmap, pid, gid, "gid_map"),
                    Err(_) => Err(SandboxError::IdMap {
                        map: "gid_map",
                        pid,
                        detail: "skipped".into(),
                    }),
                };
                match (u, g) {
                    (Ok(()), Ok(())) => Ok((self.clone(), None)),
                    (Err(e), _) => {
                        let single = MapPlan::Single {
                            uid: Uid::effective().as_raw(),
                            gid: Gid::effective().as_raw(),
                        };
                        single.apply(proc, pid)?;
                        Ok((single, Some(format!("{e}; {SINGLE_MAP_WARNING}"))))
                    }
                    (Ok(()), Err(e)) => Err(e),
                }
            }
            MapPlan::Single { uid, gid } => {
                // user_namespaces(7): an unprivileged gid_map write needs setgroups denied first.
                let setgroups = proc.join(pid.to_string()).join("setgroups");
                std::fs::write(&setgroups, "deny").map_err(|e| SandboxError::IdMap {
                    map: "setgroups",
                    pid,
                    detail: e.to_string(),
                })?;
                write_map(proc, pid, "uid_map", &[(0, (*uid).into(), 1)])?;
                write_map(proc, pid, "gid_map", &[(0, (*gid).into(), 1)])?;
                Ok((self.clone(), None))
            }
        }
    }
}

/// Parses a `/proc/PID/uid_map`-style text.
pub(crate) fn parse_map(text: &str) -> Vec<Range> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace().map(|f| f.parse::<u64>().ok());
            Some((it.next()??, it.next()??, it.next()??))
        })
        .collect()
}

/// First `name_or_uid:start:count` entry of a subuid(5)/subgid(5) file for the caller.
pub(crate) fn sub_range(file: &Path, name: Option<&str>, id: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(file).ok()?;
    let id = id.to_string();
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let who = f.next()?;
        let start = f.next()?.parse::<u64>().ok()?;
        let count = f.next()?.parse::<u64>().ok()?;
        ((Some(who) == name || who == id) && count > 0).then_some((start, count))
    })
}

fn write_map(
    proc: &Path,
    pid: i32,
    map: &'static str,
    ranges: &[Range],
) -> Result<(), SandboxError> {
    let text: String = ranges
        .iter()
        .map(|(i, o, c)| format!("{i} {o} {c}\n"))
        .collect();
    // One write(2) call: the kernel accepts the map only as a single write.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(proc.join(pid.to_string()).join(map))
        .map_err(|e| SandboxError::IdMap {
            map,
            pid,
            detail: e.to_string(),
        })?;
    f.write_all(text.as_bytes())
        .map_err(|e| SandboxError::IdMap {
            map,
            pid,
            detail: format!("{e} (map {text:?})"),
        })
}

fn run_helper(
    helper: &Path,
    pid: i32,
    ranges: &[Range],
    map: &'static str,
) -> Result<(), SandboxError> {
    let mut cmd = Command::new(helper);
    cmd.arg(pid.to_string());
    for (i, o, c) in ranges {
        cmd.arg(i.to_string()).arg(o.to_string()).arg(c.to_string());
    }
    let out = cmd.output().map_err(|e| SandboxError::IdMap {
        map,
        pid,
        detail: format!("running {}: {e}", helper.display()),
    })?;
    if !out.status.success() {
        return Err(SandboxError::IdMap {
            map,
            pid,
            detail: format!(
                "{} failed ({}): {}",
                helper.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subuid_lookup_by_name_or_uid() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("subuid");
        std::fs::write(&f, "alice:100000:65536\n1001:200000:1000\nbad:x:1\n").expect("write");
        assert_eq!(sub_range(&f, Some("alice"), 1000), Some((100000, 65536)));
        assert_eq!(sub_range(&f, Some("bob"), 1001), Some((200000, 1000)));
        assert_eq!(sub_range(&f, Some("bad"), 5), None);
        assert_eq!(sub_range(&d.path().join("none"), Some("alice"), 1), None);
    }

    #[test]
    fn map_parsing() {
        assert_eq!(
            parse_map("         0          0 4294967295\n"),
            vec![(0, 0, 4294967295)]
        );
        assert_eq!(parse_map("0 1000 1\n1 100000 65536\n").len(), 2);
    }
}

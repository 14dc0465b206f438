//! Choosing an isolation mode, and the helpers of container (Kaniko) mode.
//!
//! Order (DESIGN.md "RUN isolation"): `userns` when an unprivileged user + mount + pid
//! namespace can be created and mounted in (a real probe: AppArmor's
//! `apparmor_restrict_unprivileged_userns` lets clone succeed but denies the mount);
//! `chroot` when root with CAP_SYS_CHROOT; `container` only when the process is detectably
//! inside a disposable container. Never `container` on a developer's machine by accident.

use std::path::{Path, PathBuf};

use crate::{Isolation, SandboxError};

/// The chosen mode and the reason, for one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// The mode.
    pub isolation: Isolation,
    /// Why, e.g. "user namespaces work (probe ok)".
    pub reason: String,
}

/// What detection looks at; fields so tests can redirect them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetectHost {
    /// procfs, normally `/proc`.
    pub proc: PathBuf,
    /// The filesystem root holding `/.dockerenv` and `/run/.containerenv`, normally `/`.
    pub root: PathBuf,
    /// Whether `KUBERNETES_SERVICE_HOST` is set.
    pub kubernetes_env: bool,
    /// Whether to run the live namespace probe (tests of the other rules turn it off).
    pub probe_userns: bool,
}

impl DetectHost {
    /// The real host: `/proc`, `/`, the process environment.
    pub fn system() -> DetectHost {
        DetectHost {
            proc: "/proc".into(),
            root: "/".into(),
            kubernetes_env: std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
            probe_userns: true,
        }
    }
}

/// Detects the isolation mode for this host. `proc_root` is procfs (normally `/proc`); the
/// rest of [`DetectHost::system`] is used. See [`detect_with`].
pub fn detect(proc_root: &Path) -> Result<Detection, SandboxError> {
    detect_with(&DetectHost {
        proc: proc_root.to_path_buf(),
        ..DetectHost::system()
    })
}

/// Detects the isolation mode from `host`.
pub fn detect_with(host: &DetectHost) -> Result<Detection, SandboxError> {
    let userns_failure = if host.probe_userns {
        match probe_userns() {
            Ok(()) => {
                return Ok(Detection {
                    isolation: Isolation::Userns,
                    reason: "user, mount and pid namespaces can be created (probe ok)".into(),
                })
            }
            Err(why) => why,
        }
    } else {
        "probe disabled".to_string()
    };
    let caps = effective_caps(&host.proc);
    let euid_root = nix::unistd::Uid::effective().is_root();
    if euid_root && caps.is_some_and(|c| c & (1 << CAP_SYS_CHROOT) != 0) {
        return Ok(Detection {
            isolation: Isolation::Chroot,
            reason: format!(
                "user namespaces unavailable ({userns_failure}); root with CAP_SYS_CHROOT"
            ),
        });
    }
    let hints = container_hints(host);
    if !hints.is_empty() {
        return Ok(Detection {
            isolation: Isolation::Container,
            reason: format!(
                "user namespaces unavailable ({userns_failure}), no CAP_SYS_CHROOT; inside a container ({})",
                hints.join(", ")
            ),
        });
    }
    Err(SandboxError::Unavailable {
        mode: "any",
        reason: format!(
            "user namespaces unavailable ({userns_failure}), not root with CAP_SYS_CHROOT, and not \
             inside a container (container mode would build on this machine's own /)"
        ),
    })
}

/// capabilities(7): CAP_SYS_CHROOT is bit 18, CAP_MKNOD 27, CAP_SYS_ADMIN 21.
const CAP_SYS_CHROOT: u32 = 18;
pub(crate) const CAP_SYS_ADMIN: u32 = 21;
pub(crate) const CAP_MKNOD: u32 = 27;

/// `CapEff` of this process from `<proc>/self/status`.
pub(crate) fn effective_caps(proc: &Path) -> Option<u64> {
    let status = std::fs::read_to_string(proc.join("self/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// Why this process looks like it runs in a disposable container (empty: it does not).
pub fn container_hints(host: &DetectHost) -> Vec<String> {
    let mut hints = Vec::new();
    if host.root.join(".dockerenv").exists() {
        hints.push("/.dockerenv exists".to_string());
    }
    if host.root.join("run/.containerenv").exists() {
        hints.push("/run/.containerenv exists".to_string());
    }
    if host.kubernetes_env {
        hints.push("KUBERNETES_SERVICE_HOST is set".to_string());
    }
    if let Ok(cg) = std::fs::read_to_string(host.proc.join("1/cgroup")) {
        for needle in [
            "kubepods",
            "docker",
            "containerd",
            "libpod",
            "lxc",
            "buildkit",
        ] {
            if cg.contains(needle) {
                hints.push(format!("/proc/1/cgroup mentions {needle}"));
                break;
            }
        }
    }
    hints
}

/// Tries to create user + mount + pid namespaces and make `/` private inside them, in a
/// short-lived child.
fn probe_userns() -> Result<(), String> {
    let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWPID;
    // SAFETY: clone(2) without CLONE_VM and a NULL stack behaves like fork(2); the child only
    // makes raw syscalls and _exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: in the child: mount with static strings, then _exit.
        unsafe {
            let r = libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            );
            libc::_exit(if r == 0 { 0 } else { 1 });
        }
    }
    if pid < 0 {
        return Err(format!("clone: {}", nix::errno::Errno::last()));
    }
    let mut status = 0;
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err("mount denied inside a new user namespace".into())
    }
}

/// Container mode's ignore list: every mount point of the container (from a mountinfo file,
/// normally `/proc/self/mountinfo`) except `/`, plus `/proc`, `/sys` and `/dev`. Paths under
/// these are never snapshotted nor written by unpacking (the caller adds its own builder
/// directory). Sorted, deduplicated.
pub fn container_ignore_list(mountinfo: &Path) -> Result<Vec<PathBuf>, SandboxError> {
    let text = std::fs::read_to_string(mountinfo).map_err(|source| SandboxError::HostFile {
        path: mountinfo.to_path_buf(),
        source,
    })?;
    let mut list: Vec<PathBuf> = ["/proc", "/sys", "/dev"]
        .iter()
        .map(PathBuf::from)
        .collect();
    for line in text.lines() {
        // proc(5) mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FS SRC SUPER
        if let Some(mp) = line.split(' ').nth(4) {
            let mp = unescape_octal(mp);
            if mp != "/" && mp.starts_with('/') {
                list.push(PathBuf::from(mp));
            }
        }
    }
    list.sort();
    list.dedup();
    Ok(list)
}

/// Whether `path` (absolute, already resolved: the caller resolves the parent first, see
/// HOSTILE-INPUTS 30) is an ignored mount point or under one.
pub fn is_ignored(ignore: &[PathBuf], path: &Path) -> bool {
    ignore.iter().any(|i| path.starts_with(i))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(files: &[(&str, &str)], k8s: bool) -> (tempfile::TempDir, DetectHost) {
        let d = tempfile::tempdir().expect("tempdir");
        for (p, content) in files {
            let p = d.path().join(p);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(p, content).expect("write");
        }
        let host = DetectHost {
            proc: d.path().join("proc"),
            root: d.path().join("root"),
            kubernetes_env: k8s,
            probe_userns: false,
        };
        (d, host)
    }

    #[test]
    fn container_hints_from_files_env_and_cgroup() {
        let (_d, host) = fake_host(
            &[
                ("root/.dockerenv", ""),
                ("proc/1/cgroup", "0::/kubepods/x\n"),
            ],
            true,
        );
        let h = container_hints(&host);
        assert_eq!(h.len(), 3, "{h:?}");
        assert!(
            h[0].contains(".dockerenv") && h[2].contains("kubepods"),
            "{h:?}"
        );
        let (_d, host) = fake_host(
            &[("proc/1/cgroup", "0::/init.scope\n"), ("root/x", "")],
            false,
        );
        assert!(container_hints(&host).is_empty());
    }

    #[test]
    fn container_mode_needs_a_container() {
        // Not root-with-chroot is simulated by a CapEff of 0.
        let status = "Name:\tx\nCapEff:\t0000000000000000\n";
        let (_d, host) = fake_host(
            &[("proc/self/status", status), ("root/run/.containerenv", "")],
            false,
        );
        if nix::unistd::Uid::effective().is_root() {
            let d = detect_with(&host).expect("detect");
            assert_eq!(d.isolation, Isolation::Container, "{}", d.reason);
            assert!(d.reason.contains(".containerenv"), "{}", d.reason);
        }
        let (_d, host) = fake_host(&[("proc/self/status", status), ("root/x", "")], false);
        let e = detect_with(&host).expect_err("no mode");
        assert!(e.to_string().contains("not inside a container"), "{e}");
    }

    #[test]
    fn chroot_when_root_with_cap_sys_chroot() {
        let status = "CapEff:\t000001fffeffffff\n";
        let (_d, host) = fake_host(
            &[("proc/self/status", status), ("root/.dockerenv", "")],
            false,
        );
        let d = detect_with(&host);
        if nix::unistd::Uid::effective().is_root() {
            assert_eq!(d.expect("detect").isolation, Isolation::Chroot);
        } else {
            assert_eq!(d.expect("detect").isolation, Isolation::Container);
        }
    }

    #[test]
    fn live_probe_here() {
        // TESTING.md: user namespaces work on this host (also for uid 65534).
        let d = detect(Path::new("/proc")).expect("detect");
        assert_eq!(d.isolation, Isolation::Userns, "{}", d.reason);
    }

    #[test]
    fn ignore_list_from_mountinfo() {
        let d = tempfile::tempdir().expect("tempdir");
        let mi = d.path().join("mountinfo");
        std::fs::write(
            &mi,
            "22 1 0:21 / / rw,relatime - overlay overlay rw\n\
             23 22 0:22 / /proc rw - proc proc rw\n\
             24 22 0:5 / /var/run/secrets/kubernetes.io/serviceaccount ro - tmpfs tmpfs ro\n\
             25 22 8:1 /x /my\\040dir rw shared:1 - ext4 /dev/sda1 rw\n\
             26 22 8:1 /kiln /kiln rw - ext4 /dev/sda1 rw\n",
        )
        .expect("write");
        let l = container_ignore_list(&mi).expect("list");
        let want: Vec<PathBuf> = [
            "/dev",
            "/kiln",
            "/my dir",
            "/proc",
            "/sys",
            "/var/run/secrets/kubernetes.io/serviceaccount",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        assert_eq!(l, want);
        assert!(is_ignored(&l, Path::new("/kiln/executor")));
        assert!(is_ignored(&l, Path::new("/proc/self/status")));
        assert!(!is_ignored(&l, Path::new("/kilnx")));
        assert!(!is_ignored(&l, Path::new("/etc/passwd")));
        assert!(container_ignore_list(&d.path().join("missing")).is_err());
    }
}

//! kiln-sandbox: run one RUN instruction's process against a rootfs directory, the way
//! `docker build` does, without privileges.
//!
//! Isolation modes ([`Isolation`]):
//! - `userns`: unprivileged user + mount + pid + uts + ipc namespaces (+ net for
//!   [`Network::None`]); `pivot_root` into the rootfs; fresh `/proc`, minimal `/dev`, and
//!   `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` bind-mounted read-only from a private
//!   scratch dir. The command is pid 1 of its pid namespace, so every leftover process dies
//!   with it.
//! - `chroot`: root with CAP_SYS_CHROOT but no namespaces (a typical pod).
//! - `container`: Kaniko's mode; the rootfs is `/` of the container kiln runs in.
//!
//! Mountpoint stubs the sandbox creates are removed afterwards (see `resolve.rs`); the mount
//! targets are returned in [`RunOutcome::excluded_paths`] for the snapshot differ.
//!
//! This is the only kiln crate with `unsafe`: `fork`/`clone` and the syscalls between fork
//! and exec (see `child.rs`).

mod child;
mod detect;
mod error;
mod idmap;
mod resolve;
mod run;
pub mod userdb;

use std::io::Write;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

pub use detect::{
    container_hints, container_ignore_list, detect, detect_with, is_ignored, DetectHost, Detection,
};
pub use error::SandboxError;
pub use run::run;
pub use userdb::{resolve_user, ResolvedUser, UserDbError};

/// The default `PATH` when the step's environment has none (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a RUN is isolated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Unprivileged user namespace + mount/pid/uts/ipc namespaces + pivot_root.
    Userns,
    /// chroot(2) as root, without namespaces.
    Chroot,
    /// Kaniko mode: the command runs directly on `/` of the current container.
    Container,
}

impl Isolation {
    /// The name used by `--isolation`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Userns => "userns",
            Isolation::Chroot => "chroot",
            Isolation::Container => "container",
        }
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Isolation {
    type Err = SandboxError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "userns" => Ok(Isolation::Userns),
            "chroot" => Ok(Isolation::Chroot),
            "container" => Ok(Isolation::Container),
            other => Err(SandboxError::InvalidSpec {
                what: format!("unknown isolation {other:?} (expected userns, chroot or container)"),
            }),
        }
    }
}

/// The step's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Network {
    /// Share the caller's network (docker build's default `--network host` behaviour for RUN).
    #[default]
    Host,
    /// An empty network namespace with only `lo` (up). Userns mode only.
    None,
}

/// The ids the command runs as (see [`resolve_user`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct User {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (replaces the inherited list; empty clears it).
    pub additional_gids: Vec<u32>,
}

impl From<&ResolvedUser> for User {
    fn from(u: &ResolvedUser) -> Self {
        User {
            uid: u.uid,
            gid: u.gid,
            additional_gids: u.additional_gids.clone(),
        }
    }
}

/// A mount the caller asks for. The caller resolves `source` safely on the host; the
/// sandbox resolves `target` inside the rootfs (symlinks and `..` cannot leave it), creates
/// it as a stub when missing and removes the stub afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// Bind mount (recursive). For `--mount=type=cache` (a state dir, read-write),
    /// `type=secret` (a file the caller wrote with mode 0400, `readonly: true`) and
    /// `type=bind` (context dir or another stage's rootfs).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path inside the rootfs.
        target: String,
        /// Remount read-only.
        readonly: bool,
    },
    /// A fresh tmpfs (mode 1777).
    Tmpfs {
        /// Absolute path inside the rootfs.
        target: String,
        /// Size limit in bytes (`None`: the kernel default, half of RAM).
        size: Option<u64>,
    },
}

impl Mount {
    /// The target path inside the rootfs.
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. } | Mount::Tmpfs { target, .. } => target,
        }
    }
}

/// Host paths the sandbox reads; fields so tests can redirect them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// procfs (`/proc`): uid_map writing, `/proc` fallback bind.
    pub proc: PathBuf,
    /// Device directory whose null/zero/full/random/urandom/tty are bound into the step.
    pub dev: PathBuf,
    /// sysfs (`/sys`): bound read-only into the step when a fresh sysfs cannot be mounted.
    pub sys: PathBuf,
    /// subuid(5) file.
    pub subuid: PathBuf,
    /// subgid(5) file.
    pub subgid: PathBuf,
    /// newuidmap(1).
    pub newuidmap: PathBuf,
    /// newgidmap(1).
    pub newgidmap: PathBuf,
    /// The resolv.conf copied into the step.
    pub resolv_conf: PathBuf,
    /// Where the private scratch dir (hosts, resolv.conf, hostname) is created.
    pub scratch: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            proc: "/proc".into(),
            dev: "/dev".into(),
            sys: "/sys".into(),
            subuid: "/etc/subuid".into(),
            subgid: "/etc/subgid".into(),
            newuidmap: "/usr/bin/newuidmap".into(),
            newgidmap: "/usr/bin/newgidmap".into(),
            resolv_conf: "/etc/resolv.conf".into(),
            scratch: std::env::temp_dir(),
        }
    }
}

/// Everything about one RUN.
#[derive(Clone)]
pub struct RunSpec {
    /// The rootfs directory (ignored in container mode, where it is `/`).
    pub rootfs: PathBuf,
    /// The final argv (shell form already turned into SHELL + text).
    pub argv: Vec<String>,
    /// The complete environment. The sandbox adds only `PATH` (when absent) and `HOME`
    /// (from the user's passwd entry, `/` without one) when absent.
    pub env: Vec<(String, String)>,
    /// Absolute working directory inside the rootfs; created (owned by the user) if missing.
    pub cwd: String,
    /// The ids the command runs as.
    pub user: User,
    /// Extra mounts, in order.
    pub mounts: Vec<Mount>,
    /// Network.
    pub network: Network,
    /// Hostname inside the step (userns mode), also written to `/etc/hostname` and `/etc/hosts`.
    pub hostname: String,
    /// Isolation mode (see [`detect`]).
    pub isolation: Isolation,
    /// Host paths.
    pub host: HostPaths,
    /// Userns mode only: run on an overlayfs (lower = `rootfs`, untouched) so the step's
    /// change set is the upper directory (deletions are 0/0 character devices, opaque
    /// directories carry the `trusted.overlay.opaque` or `user.overlay.opaque` xattr).
    pub overlay: Option<OverlayDirs>,
    /// Keep every capability (BuildKit's `RUN --security=insecure`). By default a step
    /// running as root gets docker's default capability set only (no CAP_SYS_ADMIN...).
    pub keep_all_capabilities: bool,
}

/// Upper and work directories of an overlay root (same file system, `work` empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverlayDirs {
    /// Receives every change the step makes.
    pub upper: PathBuf,
    /// overlayfs's scratch directory.
    pub work: PathBuf,
}

impl std::fmt::Debug for RunSpec {
    // The environment may hold a secret (`RUN --mount=type=secret,env=`) or a proxy password:
    // names only, never values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env_names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("RunSpec")
            .field("rootfs", &self.rootfs)
            .field("argv", &self.argv)
            .field("env", &env_names)
            .field("cwd", &self.cwd)
            .field("user", &self.user)
            .field("mounts", &self.mounts)
            .field("network", &self.network)
            .field("isolation", &self.isolation)
            .finish_non_exhaustive()
    }
}

impl RunSpec {
    /// A spec with docker's defaults: root, cwd `/`, host network, hostname `kiln`, userns.
    pub fn new(rootfs: impl Into<PathBuf>, argv: Vec<String>) -> RunSpec {
        RunSpec {
            rootfs: rootfs.into(),
            argv,
            env: Vec::new(),
            cwd: "/".into(),
            user: User::default(),
            mounts: Vec::new(),
            network: Network::Host,
            hostname: "kiln".into(),
            isolation: Isolation::Userns,
            host: HostPaths::default(),
            overlay: None,
            keep_all_capabilities: false,
        }
    }
}

/// Where the command's stdout or stderr goes.
pub enum Output<'a> {
    /// The caller's own stdout/stderr.
    Inherit,
    /// `/dev/null`.
    Null,
    /// A file descriptor the caller owns (dup'ed into the step).
    Fd(BorrowedFd<'a>),
    /// Streamed through a pipe to this writer, chunk by chunk, as the step writes.
    Writer(&'a mut dyn Write),
}

impl std::fmt::Debug for Output<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Inherit => f.write_str("Inherit"),
            Output::Null => f.write_str("Null"),
            Output::Fd(fd) => write!(f, "Fd({fd:?})"),
            Output::Writer(_) => f.write_str("Writer(..)"),
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    /// The shell convention: the code, or 128 + signal.
    pub fn code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }

    pub(crate) fn from_wait(status: i32) -> ExitStatus {
        if libc::WIFSIGNALED(status) {
            ExitStatus::Signal(libc::WTERMSIG(status))
        } else {
            ExitStatus::Code(libc::WEXITSTATUS(status))
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The result of [`run`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutcome {
    /// The command's status.
    pub status: ExitStatus,
    /// Paths inside the rootfs (leading `/`, symlink-free) that were mount targets; the
    /// snapshot differ must skip them (their stubs, if any, are already removed).
    pub excluded_paths: Vec<String>,
    /// Things that did not work as in docker (single-id map, /proc fallback, stubs left...),
    /// one line each; also logged with `tracing::warn!`.
    pub warnings: Vec<String>,
}

//! The sandbox's error type: one enum, facts in the variants.

use std::path::PathBuf;

use nix::errno::Errno;

/// Everything that can go wrong while preparing or running a sandboxed process.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The run specification is unusable (empty argv, relative cwd, NUL byte...).
    #[error("invalid run spec: {what}")]
    InvalidSpec {
        /// What is wrong, naming the field.
        what: String,
    },
    /// The rootfs directory could not be opened.
    #[error("opening rootfs {path}: {source}")]
    Rootfs {
        /// The rootfs path.
        path: PathBuf,
        /// The error.
        source: Errno,
    },
    /// A path inside the rootfs (mount target, stub) could not be resolved or created.
    #[error("resolving {path} inside rootfs {rootfs}: {source}")]
    Resolve {
        /// The rootfs.
        rootfs: PathBuf,
        /// The path inside the rootfs, as given.
        path: String,
        /// The error.
        source: Errno,
    },
    /// A mount target exists but has the wrong type (a file where a directory is needed...).
    #[error("mount target {path} in rootfs {rootfs} is a {found}, a {wanted} is needed")]
    TargetType {
        /// The rootfs.
        rootfs: PathBuf,
        /// The target inside the rootfs.
        path: String,
        /// What was found.
        found: &'static str,
        /// What the mount needs.
        wanted: &'static str,
    },
    /// Writing the private scratch files (hosts, resolv.conf, hostname) failed.
    #[error("preparing sandbox scratch file {path}: {source}")]
    Scratch {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Reading a host file (mountinfo, cgroup...) failed.
    #[error("reading {path}: {source}")]
    HostFile {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A bind mount source is unusable.
    #[error("bind mount source {path}: {source}")]
    MountSource {
        /// The host path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A system call in the parent failed.
    #[error("{call} failed: {source}")]
    Sys {
        /// The system call and what it was for.
        call: &'static str,
        /// The error.
        source: Errno,
    },
    /// Writing the user namespace id maps failed.
    #[error("writing {map} for pid {pid}: {detail}")]
    IdMap {
        /// `uid_map` or `gid_map`.
        map: &'static str,
        /// The child.
        pid: i32,
        /// What failed (errno or newuidmap's output).
        detail: String,
    },
    /// A set-up step in the child (after fork, before exec) failed.
    #[error("sandbox set-up: {step}: {source}")]
    ChildSetup {
        /// The step, naming its path.
        step: String,
        /// The error.
        source: Errno,
    },
    /// The user id is not mapped in the user namespace (single-id map).
    #[error(
        "cannot run as uid {uid}/gid {gid}: only a single-id user namespace map is available \
         (no /etc/subuid+/etc/subgid range for this user or no newuidmap); add a subordinate id range \
         (usermod --add-subuids/--add-subgids) to run steps as other users"
    )]
    UserNotMapped {
        /// The requested uid.
        uid: u32,
        /// The requested gid.
        gid: u32,
    },
    /// `argv[0]` was not found (docker: exit status 127).
    #[error("executable file not found in $PATH: {name}")]
    NotFound {
        /// `argv[0]`.
        name: String,
    },
    /// `argv[0]` exists but could not be executed (docker: exit status 126).
    #[error("cannot execute {name}: {source}")]
    CannotExecute {
        /// `argv[0]`.
        name: String,
        /// The exec error.
        source: Errno,
    },
    /// The child died before exec without a message.
    #[error("sandbox child exited before running the command (wait status {status:#x})")]
    ChildDied {
        /// Raw wait status.
        status: i32,
    },
    /// The requested isolation mode cannot work here.
    #[error("isolation {mode} is not available: {reason}")]
    Unavailable {
        /// The mode.
        mode: &'static str,
        /// Why.
        reason: String,
    },
    /// Writing the command's output to a caller sink failed.
    #[error("writing step output: {source}")]
    Output {
        /// The error.
        source: std::io::Error,
    },
}

impl SandboxError {
    /// Whether the command may have started before this error: waiting for it, reading its
    /// output, or the reaper's status failed. A caller retrying a step another way (the
    /// engine without an overlay) must not run a command twice.
    pub fn may_have_run(&self) -> bool {
        match self {
            SandboxError::Sys { call, .. } => {
                matches!(*call, "waitpid" | "poll" | "read step output")
            }
            SandboxError::Output { .. } | SandboxError::ChildDied { .. } => true,
            _ => false,
        }
    }

    /// The exit status docker would report for this error, when it stands for one
    /// (127 for "not found", 126 for "cannot execute").
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            SandboxError::NotFound { .. } => Some(127),
            SandboxError::CannotExecute { .. } => Some(126),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_after_the_start_may_have_run() {
        let setup = SandboxError::ChildSetup {
            step: "mounting overlay".into(),
            source: Errno::EPERM,
        };
        assert!(!setup.may_have_run());
        let fork = SandboxError::Sys {
            call: "fork",
            source: Errno::EAGAIN,
        };
        assert!(!fork.may_have_run());
        let wait = SandboxError::Sys {
            call: "waitpid",
            source: Errno::ECHILD,
        };
        assert!(wait.may_have_run());
        assert!(SandboxError::ChildDied { status: 9 }.may_have_run());
    }
}

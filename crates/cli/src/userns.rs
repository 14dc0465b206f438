//! Unprivileged builds: kiln re-executes itself as root of a user namespace, so that files it
//! unpacks and copies can carry the owners the image says (what `buildah unshare` and rootless
//! podman do). With a subordinate id range (`/etc/subuid`, `newuidmap` from the uidmap
//! package) every id 0..65535 is mapped and ownership is exact; without one, only root is
//! mapped (the caller), and files owned by other ids in a base image become root's — kiln
//! says so.
//!
//! util-linux's `unshare --map-root-user --map-auto` sets the maps up; kiln only decides
//! whether to use it. `KILN_USERNS` marks the re-executed child so it does not loop.

use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};

const MARK: &str = "KILN_USERNS";

fn euid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

fn probe(args: &[&str]) -> bool {
    Command::new("unshare")
        .args(args)
        .arg("true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// For an unprivileged caller, replaces this process (exec) with `unshare … -- kiln ARGS`, so
/// the build runs as root of a user namespace with the same pid, signals and exit status.
/// Returns only when kiln should go on in this process (already root, already re-executed, or
/// no user namespace available). `args` are the normalised arguments (the `executor` alias
/// already turned into `build`), without argv[0].
pub fn reexec_if_unprivileged(args: &[std::ffi::OsString]) {
    use std::os::unix::process::CommandExt;
    if euid() == 0 || std::env::var_os(MARK).is_some() {
        return;
    }
    let full = ["--user", "--map-root-user", "--map-auto"];
    let single = ["--user", "--map-root-user"];
    let (flags, kind): (&[&str], &str) = if probe(&full) {
        (&full, "full")
    } else if probe(&single) {
        (&single, "single")
    } else {
        eprintln!(
            "warning: no user namespace available: files in the image will be owned by your uid; run as root or enable unprivileged user namespaces"
        );
        return;
    };
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let err = Command::new("unshare")
        .args(flags)
        .arg("--")
        .arg(exe)
        .args(args)
        .env(MARK, kind)
        .exec();
    eprintln!("warning: could not enter a user namespace ({err}); building without one");
}

//! Shared test helpers: a tiny busybox rootfs, running a case as root and as uid 65534.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_sandbox::{run, Output, RunOutcome, RunSpec, SandboxError};

pub const BUSYBOX: &str = "/bin/busybox";
pub const APPLETS: &[&str] = &[
    "sh", "ls", "id", "cat", "echo", "sleep", "ps", "true", "false", "env", "pwd", "hostname",
    "mkdir", "rm", "mv", "ln", "touch", "sort", "grep", "readlink", "stat", "kill", "wc", "tail",
    "cut",
];
const AS_USER_ENV: &str = "KILN_SANDBOX_TEST_AS_UID";
pub const NOBODY: u32 = 65534;

/// `None` (after printing the skip line) when busybox-static is missing.
pub fn busybox_available() -> bool {
    if Path::new(BUSYBOX).is_file() {
        true
    } else {
        println!("skipped: busybox-static not installed ({BUSYBOX} missing)");
        false
    }
}

/// A rootfs with busybox, /etc/passwd and /etc/group, but deliberately without /proc, /dev,
/// /etc/hosts, /etc/resolv.conf and /etc/hostname (so stubs must be created and removed).
pub fn busybox_rootfs() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("kiln-sandbox-rootfs-")
        .tempdir()
        .expect("tempdir");
    let r = d.path();
    std::fs::set_permissions(r, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    for dir in ["bin", "etc", "tmp", "root", "home/app", "usr/bin"] {
        std::fs::create_dir_all(r.join(dir)).expect("mkdir");
    }
    std::fs::set_permissions(r.join("tmp"), std::fs::Permissions::from_mode(0o1777))
        .expect("chmod");
    std::fs::copy(BUSYBOX, r.join("bin/busybox")).expect("copy busybox");
    for a in APPLETS {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(a)).expect("symlink");
    }
    std::fs::write(
        r.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )
    .expect("passwd");
    std::fs::write(
        r.join("etc/group"),
        "root:x:0:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:app\nnogroup:x:65534:\n",
    )
    .expect("group");
    d
}

/// Runs `spec`, returning the outcome and captured stdout/stderr.
pub fn run_capture(spec: &RunSpec) -> (Result<RunOutcome, SandboxError>, String, String) {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let r = run(spec, Output::Writer(&mut out), Output::Writer(&mut err));
    (
        r,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

pub fn sh(rootfs: &Path, script: &str) -> RunSpec {
    RunSpec::new(rootfs, vec!["/bin/sh".into(), "-c".into(), script.into()])
}

/// Whether this process is the re-executed unprivileged copy.
pub fn is_unprivileged_copy() -> bool {
    std::env::var_os(AS_USER_ENV).is_some()
}

/// Runs `body` in this process, and (when root) again in a copy of this test binary
/// re-executed as uid/gid 65534 with no supplementary groups: the product must work
/// without privileges, and CI runs as root.
pub fn as_root_and_unprivileged(test_name: &str, body: impl Fn(&str)) {
    if is_unprivileged_copy() {
        body("uid 65534");
        return;
    }
    body(if nix::unistd::Uid::effective().is_root() {
        "root"
    } else {
        "caller"
    });
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipped: unprivileged re-run of {test_name} (not running as root)");
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    use std::os::unix::process::CommandExt;
    let out = Command::new(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(AS_USER_ENV, NOBODY.to_string())
        .env("TMPDIR", "/tmp")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("re-exec test binary");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "unprivileged run of {test_name} failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    for line in stdout.lines().filter(|l| l.contains("skipped:")) {
        println!("[uid 65534] {line}");
    }
    assert!(
        stdout.contains("1 passed"),
        "unprivileged run of {test_name} did not run the test:\n{stdout}"
    );
}

/// Host processes whose command line contains `needle`.
pub fn host_processes_with(needle: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(e.path());
            }
        }
    }
    found
}

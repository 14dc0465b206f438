//! git fixtures for tests of git sources: repositories made with a fixed author and branch,
//! independent of the user's git configuration.

use std::path::Path;
use std::process::Command;

/// Whether a `git` binary runs; when not, reports a counted skip.
pub fn available() -> bool {
    let ok = Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        crate::report_skip("no git binary in PATH");
    }
    ok
}

/// Runs `git ARGS` in `dir` (author t <t@t>, default branch main, no system or global
/// config) and returns its trimmed stdout; panics with git's stderr when it fails.
pub fn run(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

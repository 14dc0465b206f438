//! kiln-testkit: real components for integration tests (dev-only).
//!
//! - [`Registry`]: Debian's `docker-registry` (distribution 2.8) on `127.0.0.1:0`, with optional
//!   htpasswd Basic auth, TLS (and client certificates), or token auth; killed on drop.
//! - [`image`]: deterministic base images (busybox, Docker-v2s2 busybox, a two-platform index)
//!   as OCI layouts, pushed with `skopeo` (never with kiln's own client: the client is what
//!   these fixtures test).
//! - [`tls`]: a throw-away CA with server and client leaf certificates made with `openssl`.
//! - [`token`]: a token server issuing JWTs signed with `openssl dgst -sha256 -sign`.
//! - [`proxy`]: a fault-injecting HTTP proxy and a header-recording server.
//!
//! A component that is not installed gives [`TestkitError::NotInstalled`]; tests turn it into a
//! printed `skipped: ...` line with [`skip_or`] / the [`require!`] macro.
#![forbid(unsafe_code)]

pub mod git;
pub mod http;
pub mod image;
pub mod layout;
pub mod proxy;
pub mod registry;
pub mod tls;
pub mod token;

pub use image::{push_busybox, push_busybox_docker, push_multiplatform, ImageInfo};

pub use proxy::{Fault, FaultProxy, RecordingServer};
pub use registry::{Registry, RegistryOptions};
pub use tls::TestCa;
pub use token::{TokenPolicy, TokenServer};

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Errors of the test kit.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    #[error("{0} not installed")]
    NotInstalled(&'static str),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("docker-registry did not report its address within 10 s; log: {log}")]
    RegistryStart { log: String },
}

impl TestkitError {
    /// True when a required program is missing (the test should be skipped, not failed).
    pub fn is_not_installed(&self) -> bool {
        matches!(self, TestkitError::NotInstalled(_))
    }
}

fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> TestkitError {
    let path = path.into();
    move |source| TestkitError::Io { what, path, source }
}

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Number of tests skipped so far in this process.
pub fn skipped_count() -> usize {
    SKIPPED.load(Ordering::Relaxed)
}

/// Prints `skipped: <reason>` (to stderr and stdout so it shows with and without
/// `--nocapture`) and counts it.
pub fn report_skip(reason: &str) {
    SKIPPED.fetch_add(1, Ordering::Relaxed);
    println!("skipped: {reason}");
    eprintln!("skipped: {reason}");
}

/// `Some(value)`; or `None` after reporting a skip when a component is not installed; panics on
/// any other error.
pub fn skip_or<T>(r: Result<T, TestkitError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) if e.is_not_installed() => {
            report_skip(&e.to_string());
            None
        }
        Err(e) => panic!("test setup failed: {e}"),
    }
}

/// `let reg = require!(Registry::start());` returns from the test (printing `skipped: ...`)
/// when a component is missing.
#[macro_export]
macro_rules! require {
    ($e:expr) => {
        match $crate::skip_or($e) {
            Some(v) => v,
            None => return,
        }
    };
}

/// Finds a program on `PATH`.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A build context (`<tmp>/ctx` with a `Dockerfile`) for tests that run the kiln binary.
pub struct Project {
    /// Holds everything; removed on drop.
    pub tmp: tempfile::TempDir,
    /// The context directory.
    pub ctx: PathBuf,
}

impl Project {
    /// A fresh context whose Dockerfile is `dockerfile`.
    pub fn new(dockerfile: &str) -> Project {
        let tmp = tempfile::tempdir().expect("tempdir");
        let ctx = tmp.path().join("ctx");
        std::fs::create_dir_all(&ctx).expect("mkdir ctx");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("write Dockerfile");
        Project { tmp, ctx }
    }

    /// `rel` below the project's temporary directory.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    /// `build -c <ctx> --no-push --insecure-pull --log-format=text --kiln-dir <tmp>/<state>`
    /// followed by `extra`.
    pub fn build_args(&self, state: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "build".into(),
            "-c".into(),
            self.ctx.display().to_string(),
            "--no-push".into(),
            "--insecure-pull".into(),
            "--log-format=text".into(),
            "--kiln-dir".into(),
            self.path(state).display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }
}

/// Runs `program` with `args` (a kiln binary under test, where failing is an outcome the
/// test checks): whether it succeeded, and its standard error as text.
pub fn status_and_stderr(program: &str, args: &[String]) -> (bool, String) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a command to completion; error with its stderr when it fails.
pub fn run(cmd: &mut std::process::Command) -> Result<Vec<u8>, TestkitError> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(io_err("running", command.clone()))?;
    if !out.status.success() {
        return Err(TestkitError::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(out.stdout)
}

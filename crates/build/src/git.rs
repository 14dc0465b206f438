//! Git sources: `--context git://…` (Kaniko), `--context https://host/repo.git#ref:subdir` and
//! `ADD <git url> <dir>` (BuildKit).
//!
//! kiln shells out to the `git` binary (docs/decisions.md says why) and treats everything about
//! the remote as hostile:
//! - the URL is checked before git sees it: no `<transport>::` form (git-remote-ext runs a
//!   command, CVE-2015-7545 class), no leading `-`; `GIT_ALLOW_PROTOCOL` limits every git
//!   process, submodules included, to https/http/git/ssh (git(1), "GIT_ALLOW_PROTOCOL");
//! - the ref is checked against git-check-ref-format(1) rules and never starts with `-` or `+`
//!   and never holds `:` (it would become a refspec), and every command passes `--` before it;
//! - the repository is fetched into a fresh `git init --template=` directory (no hooks), with
//!   system and global config ignored (`GIT_CONFIG_NOSYSTEM`, `GIT_CONFIG_GLOBAL=/dev/null`,
//!   an empty `HOME`), `core.hooksPath=/dev/null`, `core.fsmonitor=false`,
//!   `protocol.ext.allow=never`, no credential helper, no terminal prompt;
//! - a subdirectory (`#ref:subdir`, `--context-sub-path`) is relative, has no `..`, and is
//!   reached without following a symlink;
//! - credentials (Kaniko's `GIT_TOKEN`, `GIT_USERNAME`/`GIT_PASSWORD`, or a URL's user info)
//!   travel as an `Authorization` header in the child's environment (`GIT_CONFIG_COUNT`),
//!   scoped to the remote's scheme, host and port; they are never put in argv, in the URL git
//!   stores, in a message or a cache key, and git's own messages are redacted before kiln shows
//!   them;
//! - an ssh remote in a Dockerfile's ADD is fetched only through the build's `--ssh default`
//!   agent ([`FetchOptions::ssh_agent`]), with an ssh command line that reads nothing of this
//!   machine's ssh setup ([`AGENT_SSH_COMMAND`]); the socket's path is in git's environment
//!   only and is redacted from its messages.

use std::ffi::OsString;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output};

/// Why fetching a git source failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `git` could not be started.
    #[error("git contexts need the git binary in PATH (running git: {source})")]
    NoGit {
        #[source]
        source: std::io::Error,
    },
    /// The URL is not one kiln fetches.
    #[error("invalid git URL {url}: {reason}")]
    BadUrl { url: String, reason: &'static str },
    /// The ref (branch, tag, commit) is malformed or dangerous.
    #[error("invalid git ref {reference:?} for {url}: {reason}")]
    BadRef {
        url: String,
        reference: String,
        reason: &'static str,
    },
    /// The subdirectory is absolute, climbs out, or goes through a symlink.
    #[error("invalid subdirectory {subdir:?} of {url}: {reason}")]
    BadSubdir {
        url: String,
        subdir: String,
        reason: &'static str,
    },
    /// An ssh remote in a Dockerfile's ADD without the build's ssh agent (BuildKit's rule: an
    /// ssh git source uses the `default` ssh id).
    #[error(
        "{url}: an ssh git remote is fetched with the build's ssh agent: pass --ssh default \
         (the agent in $SSH_AUTH_SOCK, --ssh default=SOCKET, or key files: \
         --ssh default=KEYFILE), or use an https:// URL"
    )]
    SshNeedsAgent { url: String },
    /// The remote has no such ref (or commit).
    #[error("git ref {reference:?} not found in {url}: {stderr}")]
    RefNotFound {
        url: String,
        reference: String,
        stderr: String,
    },
    /// A git command failed.
    #[error("git {what} of {url} failed: {stderr}")]
    Command {
        what: &'static str,
        url: String,
        stderr: String,
    },
    /// The checked-out commit is not the one asked for (`#ref#commit`, `ADD --checksum`).
    #[error("git source {url}: commit {found} does not match the expected {expected}")]
    CommitMismatch {
        url: String,
        expected: String,
        found: String,
    },
    /// A `--git` option kiln does not know or cannot parse.
    #[error("invalid --git option {option:?}: {reason}")]
    BadOption { option: String, reason: String },
    /// A local file-system step failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A git source: where, which ref, and which part of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The remote URL as git is given it (user info removed, see [`GitSource::credentials`]).
    pub remote: String,
    /// Branch, tag, full ref name or commit; `None`: the remote's HEAD.
    pub reference: Option<String>,
    /// Kaniko's `#ref#commit`: the commit to check out after fetching `reference`.
    pub commit: Option<String>,
    /// The subdirectory that becomes the context or ADD source.
    pub subdir: Option<String>,
    /// User info that was in the URL (`https://user:pass@host/…`), sent as a header.
    credentials: Option<Credentials>,
}

/// HTTP basic credentials. `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    username: String,
    password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(redacted)")
    }
}

impl Credentials {
    /// HTTP basic credentials.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// Kaniko's git credentials from the environment: `GIT_TOKEN` (sent as the user name with
    /// an empty password, as Kaniko's go-git BasicAuth does), else `GIT_USERNAME` and
    /// `GIT_PASSWORD`. `lookup` is `std::env::var` in the binary.
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Option<Credentials> {
        let get = |k: &str| lookup(k).filter(|v| !v.is_empty());
        if let Some(token) = get("GIT_TOKEN") {
            return Some(Credentials::new(token, ""));
        }
        let (user, pass) = (get("GIT_USERNAME"), get("GIT_PASSWORD"));
        if user.is_none() && pass.is_none() {
            return None;
        }
        Some(Credentials::new(
            user.unwrap_or_default(),
            pass.unwrap_or_default(),
        ))
    }

    fn header_value(&self) -> String {
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.username, self.password).as_bytes())
        )
    }

    /// Every form in which these credentials could appear in git's output.
    fn secrets(&self) -> Vec<String> {
        let mut v = vec![self.header_value()];
        v.push(base64(
            format!("{}:{}", self.username, self.password).as_bytes(),
        ));
        for s in [&self.password, &self.username] {
            // A one- or two-letter user name would redact half of every message.
            if s.len() >= 4 {
                v.push(s.clone());
                v.push(percent_encode(s));
            }
        }
        v
    }
}

/// Kaniko's `--git` flag: `branch=…,single-branch=…,recurse-submodules=…,insecure-skip-tls=…`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitOptions {
    /// `branch=`: a branch or tag name that replaces the context's ref.
    pub branch: Option<String>,
    /// `single-branch=`: kiln always fetches only the one ref it needs, so this changes
    /// nothing; accepted for compatibility.
    pub single_branch: bool,
    /// `recurse-submodules=`: fetch and check out submodules (recursively, shallow).
    pub recurse_submodules: bool,
    /// `insecure-skip-tls=`: do not verify the server's TLS certificate.
    pub insecure_skip_tls: bool,
}

impl GitOptions {
    /// Parses the comma-separated `key=value` list (empty: defaults).
    pub fn parse(s: &str) -> Result<GitOptions, GitError> {
        let mut o = GitOptions::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = |reason: String| GitError::BadOption {
                option: item.to_string(),
                reason,
            };
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| bad("expected key=value".into()))?;
            let flag = || match v {
                "true" | "1" | "t" | "T" | "TRUE" | "True" => Ok(true),
                "false" | "0" | "f" | "F" | "FALSE" | "False" | "" => Ok(false),
                _ => Err(bad(format!("{v:?} is not a boolean"))),
            };
            match k {
                "branch" => o.branch = (!v.is_empty()).then(|| v.to_string()),
                "single-branch" => o.single_branch = flag()?,
                "recurse-submodules" => o.recurse_submodules = flag()?,
                "insecure-skip-tls" => o.insecure_skip_tls = flag()?,
                _ => {
                    return Err(bad(
                        "known keys: branch, single-branch, recurse-submodules, insecure-skip-tls"
                            .into(),
                    ))
                }
            }
        }
        Ok(o)
    }
}

/// How to fetch.
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Keep `.git` in the checkout (`ADD --keep-git-dir=true`; Kaniko's `git://` contexts).
    pub keep_git_dir: bool,
    /// Fetch submodules.
    pub submodules: bool,
    /// Skip TLS verification (`http.sslVerify=false`).
    pub insecure_skip_tls: bool,
    /// Credentials for http(s) remotes (the URL's own user info wins).
    pub credentials: Option<Credentials>,
    /// Also allow `file://` remotes. Tests only: a Dockerfile must not read host repositories.
    pub allow_file: bool,
    /// Allow ssh remotes (`ssh://`, `git@host:path`), with this machine's ssh keys, agent and
    /// `GIT_SSH_COMMAND`. Only for a URL the caller gave (`--context`); never for a
    /// Dockerfile's ADD, which could otherwise copy any repository those keys can read into
    /// the image (BuildKit needs an explicit `--ssh` for that: see `ssh_agent`).
    pub allow_ssh: bool,
    /// The socket of the build's `--ssh default` agent: ssh remotes are fetched through this
    /// agent and nothing else of this machine's ssh setup (no `~/.ssh/config`, key files,
    /// known hosts or `GIT_SSH_COMMAND`; see [`AGENT_SSH_COMMAND`]). This is how a
    /// Dockerfile's ADD reaches an ssh remote (BuildKit mounts the `default` ssh id for git
    /// sources). Takes precedence over `allow_ssh`. The path goes to git's environment only
    /// and is redacted from git's messages.
    pub ssh_agent: Option<PathBuf>,
    /// The `git` program (default `git` from PATH).
    pub program: Option<PathBuf>,
}

/// A fetched and checked-out source.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The tree to use: the checkout directory, or its subdirectory.
    pub dir: PathBuf,
    /// The full commit id checked out.
    pub commit: String,
}

/// Whether an ADD source names a git repository, as BuildKit's Dockerfile front end decides:
/// `git://`, `ssh://` and scp-like `git@host:path` always; `http(s)://` when the path ends in
/// `.git` (optionally with a `#ref:subdir` fragment).
pub fn is_git_url(s: &str) -> bool {
    if s.starts_with("git://") || s.starts_with("ssh://") || s.starts_with("git@") {
        return true;
    }
    if s.starts_with("https://") || s.starts_with("http://") {
        let path = s.split('#').next().unwrap_or(s);
        let path = path.split('?').next().unwrap_or(path).trim_end_matches('/');
        return path.ends_with(".git");
    }
    false
}

impl GitSource {
    /// BuildKit's form: `URL[#ref[:subdir]]` (`docker build URL`, `ADD URL dir`).
    pub fn parse_url(s: &str) -> Result<GitSource, GitError> {
        let (url, fragment) = match s.split_once('#') {
            Some((u, f)) => (u, Some(f)),
            None => (s, None),
        };
        let (reference, subdir) = match fragment {
            None => (None, None),
            Some(f) => match f.split_once(':') {
                Some((r, d)) => (Some(r), Some(d)),
                None => (Some(f), None),
            },
        };
        GitSource::build(url, reference, None, subdir)
    }

    /// Kaniko's `--context git://REPO[#REF[#COMMIT]]`: `rest` is what follows `git://`. Kaniko
    /// fetches it over `pull_method` (`GIT_PULL_METHOD`: https, the default, or http), never over
    /// the git protocol.
    pub fn parse_kaniko(rest: &str, pull_method: &str) -> Result<GitSource, GitError> {
        let mut parts = rest.splitn(3, '#');
        let repo = parts.next().unwrap_or_default();
        let reference = parts.next();
        let commit = parts.next();
        let scheme = if pull_method == "http" {
            "http"
        } else {
            "https"
        };
        GitSource::build(&format!("{scheme}://{repo}"), reference, commit, None)
    }

    fn build(
        url: &str,
        reference: Option<&str>,
        commit: Option<&str>,
        subdir: Option<&str>,
    ) -> Result<GitSource, GitError> {
        let (remote, credentials) = split_user_info(url)?;
        let mut src = GitSource {
            remote,
            reference: None,
            commit: None,
            subdir: None,
            credentials,
        };
        if let Some(r) = reference.filter(|r| !r.is_empty()) {
            check_ref(&src.remote, r)?;
            src.reference = Some(r.to_string());
        }
        if let Some(c) = commit.filter(|c| !c.is_empty()) {
            if !is_hex(c) || c.len() < 7 {
                return Err(GitError::BadRef {
                    url: src.remote.clone(),
                    reference: c.to_string(),
                    reason: "a commit must be at least 7 hexadecimal digits",
                });
            }
            src.commit = Some(c.to_ascii_lowercase());
        }
        if let Some(d) = subdir.filter(|d| !d.is_empty()) {
            src.subdir = Some(check_subdir(&src.remote, d)?);
        }
        Ok(src)
    }

    /// Replaces the ref (Kaniko's `--git branch=`).
    pub fn with_reference(mut self, reference: &str) -> Result<GitSource, GitError> {
        check_ref(&self.remote, reference)?;
        self.reference = Some(reference.to_string());
        Ok(self)
    }

    /// Appends a subdirectory below the current one (`--context-sub-path`).
    pub fn with_subdir(mut self, sub: &str) -> Result<GitSource, GitError> {
        if sub.is_empty() {
            return Ok(self);
        }
        let joined = match &self.subdir {
            Some(d) => format!("{d}/{sub}"),
            None => sub.to_string(),
        };
        self.subdir = Some(check_subdir(&self.remote, &joined)?);
        Ok(self)
    }

    /// The source for messages: remote and fragment, never credentials.
    pub fn display(&self) -> String {
        let mut s = self.remote.clone();
        if let Some(r) = &self.reference {
            s.push('#');
            s.push_str(r);
        }
        if let Some(c) = &self.commit {
            s.push('#');
            s.push_str(c);
        }
        if let Some(d) = &self.subdir {
            s.push(':');
            s.push_str(d);
        }
        s
    }
}

/// Removes `user[:password]@` from an http(s) URL; other URLs are returned as they are.
/// Also rejects what git must never be given.
fn split_user_info(url: &str) -> Result<(String, Option<Credentials>), GitError> {
    let bad = |reason| GitError::BadUrl {
        url: redact_url(url),
        reason,
    };
    if url.is_empty() {
        return Err(bad("empty"));
    }
    if url.starts_with('-') {
        return Err(bad("a URL cannot start with '-'"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad("control characters or spaces"));
    }
    // `<transport>::<address>` selects a remote helper (git-remote-ext runs any command).
    let head = url.split('/').next().unwrap_or(url);
    if head.contains("::") {
        return Err(bad(
            "remote-helper (`transport::address`) URLs are not allowed",
        ));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        // scp-like `git@host:path` (ssh).
        if url.starts_with("git@") && url.contains(':') {
            return Ok((url.to_string(), None));
        }
        return Err(bad(
            "expected https://, http://, git://, ssh:// or git@host:path",
        ));
    };
    if !matches!(scheme, "https" | "http" | "git" | "ssh" | "file") {
        return Err(bad("unsupported scheme"));
    }
    if scheme == "file" {
        return Ok((url.to_string(), None));
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.is_empty() || authority.starts_with('-') {
        return Err(bad("missing or invalid host"));
    }
    match authority.rsplit_once('@') {
        Some((info, _)) if scheme == "ssh" && info.contains(':') => Err(bad(
            "a password in an ssh URL is not supported (it would be on git's command line): \
             use a key",
        )),
        Some((info, host)) if matches!(scheme, "https" | "http") => {
            let (u, p) = info.split_once(':').unwrap_or((info, ""));
            Ok((
                format!("{scheme}://{host}{path}"),
                Some(Credentials::new(percent_decode(u), percent_decode(p))),
            ))
        }
        _ => Ok((url.to_string(), None)),
    }
}

/// The URL with any user info replaced by `***`, for messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[end..]),
        None => url.to_string(),
    }
}

/// git-check-ref-format(1) rules, plus: no leading `-` (an option) or `+` (a forced refspec),
/// no `:` (a refspec separator).
fn check_ref(url: &str, r: &str) -> Result<(), GitError> {
    let bad = |reason| GitError::BadRef {
        url: url.to_string(),
        reference: r.to_string(),
        reason,
    };
    if r.starts_with('-') {
        return Err(bad("a ref cannot start with '-'"));
    }
    if r.starts_with('+') || r.contains(':') {
        return Err(bad("a ref cannot start with '+' or contain ':'"));
    }
    if r.chars().any(|c| {
        c.is_control() || c.is_whitespace() || matches!(c, '~' | '^' | '?' | '*' | '[' | '\\')
    }) {
        return Err(bad(
            "a ref cannot hold spaces, control characters or ~^?*[\\",
        ));
    }
    if r.contains("..") || r.contains("@{") || r == "@" || r.contains("//") {
        return Err(bad("a ref cannot contain '..', '@{' or '//'"));
    }
    if r.starts_with('/')
        || r.ends_with('/')
        || r.ends_with('.')
        || r.ends_with(".lock")
        || r.split('/').any(|c| c.starts_with('.'))
    {
        return Err(bad("malformed ref name (see git-check-ref-format)"));
    }
    Ok(())
}

/// A relative path without `..`, `.` or empty components (cleaned).
fn check_subdir(url: &str, d: &str) -> Result<String, GitError> {
    let bad = |reason| GitError::BadSubdir {
        url: url.to_string(),
        subdir: d.to_string(),
        reason,
    };
    if d.starts_with('/') {
        return Err(bad("must be relative to the repository root"));
    }
    let mut parts = Vec::new();
    for c in Path::new(d).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => return Err(bad("'..' is not allowed")),
        }
    }
    if parts.iter().any(|p| p == ".git") {
        return Err(bad("cannot name the .git directory"));
    }
    Ok(parts.join("/"))
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Fetches `src` into `into` (created; must be private to this build) and checks it out.
pub fn fetch(src: &GitSource, into: &Path, opts: &FetchOptions) -> Result<Checkout, GitError> {
    std::fs::create_dir_all(into).map_err(|source| GitError::Io {
        what: "creating the git checkout directory",
        path: into.to_path_buf(),
        source,
    })?;
    // The fields are public: check the remote again, whoever built the value.
    split_user_info(&src.remote)?;
    let ssh = src.remote.starts_with("ssh://") || !src.remote.contains("://");
    if ssh && !opts.allow_ssh && opts.ssh_agent.is_none() {
        return Err(GitError::SshNeedsAgent { url: src.display() });
    }
    if src.remote.starts_with("file://") && !opts.allow_file {
        return Err(GitError::BadUrl {
            url: src.remote.clone(),
            reason: "file:// remotes are not allowed",
        });
    }
    let git = Git::new(src, into, opts)?;
    git.run("init", &["init", "-q", "--template="])?;
    git.run(
        "remote add",
        &["remote", "add", "origin", "--", &src.remote],
    )?;
    let commit = git.fetch_and_resolve(src)?;
    if let Some(want) = &src.commit {
        if !commit.starts_with(want.as_str()) {
            return Err(GitError::CommitMismatch {
                url: src.remote.clone(),
                expected: want.clone(),
                found: commit,
            });
        }
    }
    git.run("checkout", &["checkout", "-q", "--detach", &commit, "--"])?;
    if opts.submodules {
        git.run(
            "submodule update",
            &[
                "submodule",
                "update",
                "--init",
                "--recursive",
                "--depth",
                "1",
            ],
        )?;
    }
    if !opts.keep_git_dir {
        remove_git_dirs(into)?;
    }
    normalize_modes(into)?;
    let dir = match &src.subdir {
        None => into.to_path_buf(),
        Some(d) => resolve_subdir(into, d, &src.remote)?,
    };
    Ok(Checkout { dir, commit })
}

/// Removes `.git` (the repository) and the `.git` files git writes into submodule work trees.
/// A tree cannot track a `.git` entry of its own (git refuses it, CVE-2014-9390), so every
/// `.git` found is git's.
fn remove_git_dirs(root: &Path) -> Result<(), GitError> {
    let mut found = Vec::new();
    let mut it = walkdir::WalkDir::new(root).follow_links(false).into_iter();
    while let Some(entry) = it.next() {
        let entry = entry.map_err(|e| GitError::Io {
            what: "walking the checkout",
            path: e
                .path()
                .map_or_else(|| root.to_path_buf(), Path::to_path_buf),
            source: e.into(),
        })?;
        if entry.depth() > 0 && entry.file_name() == ".git" {
            let is_dir = entry.file_type().is_dir();
            if is_dir {
                it.skip_current_dir();
            }
            found.push((entry.into_path(), is_dir));
        }
    }
    for (p, is_dir) in found {
        let r = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|source| GitError::Io {
            what: "removing",
            path: p.clone(),
            source,
        })?;
    }
    Ok(())
}

/// `into/sub`, checked to be a directory reached without any symlink.
fn resolve_subdir(into: &Path, sub: &str, url: &str) -> Result<PathBuf, GitError> {
    let mut p = into.to_path_buf();
    for c in sub.split('/') {
        p.push(c);
        let meta = std::fs::symlink_metadata(&p).map_err(|_| GitError::BadSubdir {
            url: url.to_string(),
            subdir: sub.to_string(),
            reason: "not found in the repository",
        })?;
        if meta.file_type().is_symlink() {
            return Err(GitError::BadSubdir {
                url: url.to_string(),
                subdir: sub.to_string(),
                reason: "goes through a symlink",
            });
        }
    }
    if !p.is_dir() {
        return Err(GitError::BadSubdir {
            url: url.to_string(),
            subdir: sub.to_string(),
            reason: "not a directory",
        });
    }
    Ok(p)
}

/// Git writes files with 0666/0777 minus the process umask; an image must not depend on the
/// umask kiln runs under. Git records only 0644 and 0755 (gitrepository-layout, "tree
/// objects"), so that is what the tree gets; directories 0755. Symlinks are left alone.
fn normalize_modes(root: &Path) -> Result<(), GitError> {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(root).follow_links(false) {
        let entry = entry.map_err(|e| GitError::Io {
            what: "walking the checkout",
            path: e
                .path()
                .map_or_else(|| root.to_path_buf(), Path::to_path_buf),
            source: e.into(),
        })?;
        let ft = entry.file_type();
        let mode = if ft.is_dir() {
            0o755
        } else if ft.is_file() {
            let m = entry
                .metadata()
                .map_err(|e| GitError::Io {
                    what: "reading",
                    path: entry.path().to_path_buf(),
                    source: e.into(),
                })?
                .permissions()
                .mode();
            if m & 0o100 != 0 {
                0o755
            } else {
                0o644
            }
        } else {
            continue;
        };
        std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode)).map_err(
            |source| GitError::Io {
                what: "setting the mode of",
                path: entry.path().to_path_buf(),
                source,
            },
        )?;
    }
    Ok(())
}

/// The ssh command git runs for a remote fetched through the build's agent
/// ([`FetchOptions::ssh_agent`]), so that the agent is the only thing of this machine ssh
/// uses (ssh(1), ssh_config(5)):
/// - `-F /dev/null`: neither `~/.ssh/config` nor `/etc/ssh/ssh_config` (a given `-F` replaces
///   both), so no `Host` block adds a `ProxyCommand`, `IdentityFile`, `CertificateFile`,
///   `ControlPath` or `LocalCommand` of the host's;
/// - `IdentityFile=none`: not even ssh's default `~/.ssh/id_*` (resolved from the passwd entry,
///   not `$HOME`) are offered; only the agent's keys are (`IdentitiesOnly=yes` would also drop
///   the agent's keys, which match no identity file);
/// - `BatchMode=yes`, no password or keyboard-interactive authentication: never a prompt that
///   would hang a CI job;
/// - host keys as BuildKit treats them for a Dockerfile's git source (its `llb.Git` scans the
///   host's key when the build starts and trusts what it gets, else `StrictHostKeyChecking=no`):
///   accepted, and this machine's known_hosts files are neither read nor written. Pin the
///   content with `ADD --checksum=<commit>` or a `#<commit>` ref when the network is not
///   trusted;
/// - `LogLevel=ERROR`: no "Permanently added ... to the list of known hosts" in the build log.
///
/// git runs `GIT_SSH_COMMAND` through the shell and adds the port, user and host after it
/// (git(1), "GIT_SSH_COMMAND"); the first word `ssh` makes git pass OpenSSH's options
/// (`-p`, `-o SendEnv=GIT_PROTOCOL`).
pub const AGENT_SSH_COMMAND: &str = "ssh -F /dev/null -o IdentityFile=none \
     -o BatchMode=yes -o PasswordAuthentication=no -o KbdInteractiveAuthentication=no \
     -o PreferredAuthentications=publickey -o StrictHostKeyChecking=no \
     -o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no \
     -o ForwardAgent=no -o ControlPath=none -o LogLevel=ERROR";

/// Which ssh setup git's ssh remotes get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SshMode {
    /// None: ssh remotes are refused, the caller's ssh variables removed.
    Off,
    /// The caller's own (`FetchOptions::allow_ssh`, a caller-given `--context`).
    Caller,
    /// The build's agent only ([`AGENT_SSH_COMMAND`]).
    Agent,
}

/// One hardened git invocation context.
struct Git<'a> {
    /// Whose ssh settings reach git.
    ssh: SshMode,
    program: OsString,
    dir: &'a Path,
    home: PathBuf,
    url: &'a str,
    env: Vec<(String, String)>,
    config: Vec<String>,
    secrets: Vec<String>,
}

impl<'a> Git<'a> {
    fn new(src: &'a GitSource, dir: &'a Path, opts: &FetchOptions) -> Result<Git<'a>, GitError> {
        // An empty HOME next to the checkout: no ~/.gitconfig, ~/.git-credentials, ~/.netrc.
        let home = dir.with_file_name(format!(
            "{}.home",
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "git".into())
        ));
        std::fs::create_dir_all(&home).map_err(|source| GitError::Io {
            what: "creating an empty HOME for git",
            path: home.clone(),
            source,
        })?;
        let ssh = if opts.ssh_agent.is_some() {
            SshMode::Agent
        } else if opts.allow_ssh {
            SshMode::Caller
        } else {
            SshMode::Off
        };
        let mut protocols = "https:http:git".to_string();
        if ssh != SshMode::Off {
            protocols.push_str(":ssh");
        }
        if opts.allow_file {
            protocols.push_str(":file");
        }
        let mut env: Vec<(String, String)> = vec![
            ("GIT_CONFIG_NOSYSTEM".into(), "1".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/dev/null".into()),
            ("GIT_TERMINAL_PROMPT".into(), "0".into()),
            ("GIT_ALLOW_PROTOCOL".into(), protocols),
            ("HOME".into(), home.display().to_string()),
            ("XDG_CONFIG_HOME".into(), home.display().to_string()),
            // English messages: kiln recognises "couldn't find remote ref".
            ("LC_ALL".into(), "C".into()),
        ];
        let mut secrets = Vec::new();
        match (&opts.ssh_agent, ssh) {
            (Some(sock), SshMode::Agent) => {
                env.push(("GIT_SSH_COMMAND".into(), AGENT_SSH_COMMAND.into()));
                env.push(("SSH_AUTH_SOCK".into(), sock.display().to_string()));
                // ssh(1) "SSH_ASKPASS_REQUIRE": never run an askpass program.
                env.push(("SSH_ASKPASS_REQUIRE".into(), "never".into()));
                // Whoever reaches the socket signs with the caller's keys: its path is shown
                // nowhere, not even in a failing fetch's message.
                secrets.push(sock.display().to_string());
            }
            _ if ssh == SshMode::Caller
                && std::env::var_os("GIT_SSH_COMMAND").is_none()
                && std::env::var_os("GIT_SSH").is_none() =>
            {
                // Never a prompt (an unknown host key, a passphrase) that hangs a CI job.
                env.push(("GIT_SSH_COMMAND".into(), "ssh -o BatchMode=yes".into()));
            }
            _ => {}
        }
        let creds = src.credentials.as_ref().or(opts.credentials.as_ref());
        if let (Some(c), Some(scope)) = (creds, http_scope(&src.remote)) {
            // In the environment, not argv: /proc/<pid>/environ is readable by the owner only,
            // /proc/<pid>/cmdline by everyone.
            env.push(("GIT_CONFIG_COUNT".into(), "1".into()));
            env.push((
                "GIT_CONFIG_KEY_0".into(),
                format!("http.{scope}.extraHeader"),
            ));
            env.push((
                "GIT_CONFIG_VALUE_0".into(),
                format!("Authorization: {}", c.header_value()),
            ));
            secrets.extend(c.secrets());
        }
        let mut config = vec![
            "core.hooksPath=/dev/null".to_string(),
            "core.fsmonitor=false".into(),
            "protocol.ext.allow=never".into(),
            "credential.helper=".into(),
            "core.askPass=".into(),
            "advice.detachedHead=false".into(),
            "init.defaultBranch=main".into(),
            "submodule.recurse=false".into(),
            "fetch.recurseSubmodules=false".into(),
            // A stalled http(s) server fails the fetch instead of hanging the build: below
            // 1 KiB/s for a minute (git-config(1), http.lowSpeedLimit).
            "http.lowSpeedLimit=1024".into(),
            "http.lowSpeedTime=60".into(),
        ];
        if opts.insecure_skip_tls {
            config.push("http.sslVerify=false".into());
        }
        Ok(Git {
            ssh,
            program: opts
                .program
                .clone()
                .map_or_else(|| OsString::from("git"), PathBuf::into_os_string),
            dir,
            home,
            url: &src.remote,
            env,
            config,
            secrets,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.program);
        // Nothing from the caller's git environment reaches the child: GIT_DIR, GIT_CONFIG_*,
        // GIT_TRACE* (which can print headers), GIT_ASKPASS, and Kaniko's credential variables.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            // The caller's ssh settings reach git only for a caller-given remote; with the
            // build's agent, kiln sets the ones git gets (and DISPLAY could start an askpass).
            let ssh_setting = k == "GIT_SSH_COMMAND" || k == "GIT_SSH" || k == "SSH_AUTH_SOCK";
            if (k.starts_with("GIT_") && !ssh_setting)
                || k == "SSH_ASKPASS"
                || (ssh_setting && self.ssh != SshMode::Caller)
                || (k == "DISPLAY" && self.ssh == SshMode::Agent)
            {
                cmd.env_remove(k.as_ref());
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.current_dir(self.dir);
        for c in &self.config {
            cmd.arg("-c").arg(c);
        }
        cmd.args(args);
        cmd.stdin(std::process::Stdio::null());
        cmd
    }

    fn output(&self, args: &[&str]) -> Result<Output, GitError> {
        tracing::debug!(args = ?args, "git");
        self.command(args)
            .output()
            .map_err(|source| GitError::NoGit { source })
    }

    fn redact(&self, text: &[u8]) -> String {
        let mut s = String::from_utf8_lossy(text).trim().to_string();
        for secret in &self.secrets {
            if !secret.is_empty() {
                s = s.replace(secret.as_str(), "***");
            }
        }
        // Keep the message short: git's last lines say what went wrong.
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(6)..].join("; ");
        redact_userinfo_everywhere(&tail)
    }

    fn run(&self, what: &'static str, args: &[&str]) -> Result<Output, GitError> {
        let out = self.output(args)?;
        if out.status.success() {
            return Ok(out);
        }
        let mut stderr = self.redact(&out.stderr);
        if stderr.is_empty() {
            stderr = out.status.to_string();
        }
        Err(GitError::Command {
            what,
            url: self.url.to_string(),
            stderr,
        })
    }

    /// Fetches what `src` names and returns the full commit id to check out.
    fn fetch_and_resolve(&self, src: &GitSource) -> Result<String, GitError> {
        let reference = src.reference.as_deref();
        // Kaniko's `#ref#commit`: the commit, shallow when the server allows fetching it by id,
        // else the ref in full.
        if let Some(commit) = &src.commit {
            if commit.len() >= 40 && self.try_fetch(&[commit.as_str()], true)?.is_ok() {
                return self.resolve("FETCH_HEAD", src);
            }
            let r = reference.unwrap_or("HEAD");
            self.fetch_or_not_found(&[r], false, src, r)?;
            return self.resolve(commit, src);
        }
        match reference {
            None => {
                self.fetch_or_not_found(&["HEAD"], true, src, "HEAD")?;
                self.resolve("FETCH_HEAD", src)
            }
            Some(r) if is_hex(r) && (r.len() == 40 || r.len() == 64) => {
                // A full commit id: shallow when the server allows fetching any reachable
                // commit (protocol v2 does), else everything.
                if self.try_fetch(&[r], true)?.is_ok() {
                    return self.resolve("FETCH_HEAD", src);
                }
                self.fetch_all(src, r)?;
                self.resolve(r, src)
            }
            Some(r) => match self.try_fetch(&[r], true)? {
                Ok(()) => self.resolve("FETCH_HEAD", src),
                Err(_) if is_hex(r) && r.len() >= 7 => {
                    // Not a ref: maybe an abbreviated commit id, found only in a full fetch.
                    self.fetch_all(src, r)?;
                    self.resolve(r, src)
                }
                Err(stderr) => Err(self.not_found_or_failed(stderr, src, r)),
            },
        }
    }

    /// `git fetch [--depth 1] origin -- refs...`; Ok(Err(stderr)) when git failed.
    fn try_fetch(&self, refs: &[&str], shallow: bool) -> Result<Result<(), String>, GitError> {
        let mut args = vec!["fetch", "-q", "--no-tags"];
        if shallow {
            args.extend(["--depth", "1"]);
        }
        args.extend(["origin", "--"]);
        args.extend(refs);
        let out = self.output(&args)?;
        Ok(if out.status.success() {
            Ok(())
        } else {
            Err(self.redact(&out.stderr))
        })
    }

    fn fetch_or_not_found(
        &self,
        refs: &[&str],
        shallow: bool,
        src: &GitSource,
        r: &str,
    ) -> Result<(), GitError> {
        match self.try_fetch(refs, shallow)? {
            Ok(()) => Ok(()),
            Err(stderr) => Err(self.not_found_or_failed(stderr, src, r)),
        }
    }

    fn fetch_all(&self, src: &GitSource, r: &str) -> Result<(), GitError> {
        self.fetch_or_not_found(
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            false,
            src,
            r,
        )
    }

    fn not_found_or_failed(&self, stderr: String, src: &GitSource, r: &str) -> GitError {
        if stderr.contains("couldn't find remote ref")
            || stderr.contains("not our ref")
            || stderr.contains("unadvertised object")
        {
            GitError::RefNotFound {
                url: src.remote.clone(),
                reference: r.to_string(),
                stderr,
            }
        } else {
            GitError::Command {
                what: "fetch",
                url: src.remote.clone(),
                stderr,
            }
        }
    }

    /// The full commit id `rev` names (`rev` is FETCH_HEAD or validated hex).
    fn resolve(&self, rev: &str, src: &GitSource) -> Result<String, GitError> {
        let spec = format!("{rev}^{{commit}}");
        let out = self.output(&["rev-parse", "-q", "--verify", "--end-of-options", &spec])?;
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !out.status.success() || !is_hex(&id) {
            return Err(GitError::RefNotFound {
                url: src.remote.clone(),
                reference: rev.to_string(),
                stderr: "no such commit after fetching".into(),
            });
        }
        Ok(id)
    }
}

impl Drop for Git<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

/// `scheme://host[:port]/` of an http(s) URL: the scope the Authorization header is sent to
/// (same host, so submodules there get it; never a redirect target elsewhere).
fn http_scope(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if !matches!(scheme, "https" | "http") {
        return None;
    }
    let host = rest.split('/').next()?;
    Some(format!("{scheme}://{host}/"))
}

/// Any `scheme://user:pass@` in free text becomes `scheme://***@`.
fn redact_userinfo_everywhere(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || c == '\'' || c == '"')
            .unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&after[at..end]);
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use kiln_testkit::git::{available as have_git, run as g};

    /// A repository with two commits on main, tag v1 on the first, branch dev.
    fn fixture(dir: &Path) -> (String, String) {
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        g(dir, &["init", "-q"]);
        std::fs::write(dir.join("a.txt"), "one\n").unwrap();
        std::fs::write(dir.join("sub/s.txt"), "sub\n").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("escape")).unwrap();
        g(dir, &["add", "-A"]);
        g(dir, &["commit", "-q", "-m", "one"]);
        g(dir, &["tag", "v1"]);
        let first = g(dir, &["rev-parse", "HEAD"]);
        g(dir, &["branch", "dev"]);
        std::fs::write(dir.join("a.txt"), "two\n").unwrap();
        g(dir, &["commit", "-q", "-am", "two"]);
        (first, g(dir, &["rev-parse", "HEAD"]))
    }

    fn opts() -> FetchOptions {
        FetchOptions {
            allow_file: true,
            ..FetchOptions::default()
        }
    }

    #[test]
    fn detects_git_urls_like_buildkit() {
        for yes in [
            "https://github.com/moby/buildkit.git",
            "https://host/r.git#v1:dir",
            "git://host/r",
            "git@github.com:org/r.git",
            "ssh://git@host/r.git",
            "http://h/r.git/",
        ] {
            assert!(is_git_url(yes), "{yes}");
        }
        for no in [
            "https://host/file.tar.gz",
            "x.git",
            "./r.git",
            "https://h/a.git.tar",
        ] {
            assert!(!is_git_url(no), "{no}");
        }
    }

    #[test]
    fn parses_fragments() {
        let s = GitSource::parse_url("https://h/r.git#v1.2:docs/site").unwrap();
        assert_eq!(s.remote, "https://h/r.git");
        assert_eq!(s.reference.as_deref(), Some("v1.2"));
        assert_eq!(s.subdir.as_deref(), Some("docs/site"));
        let k = GitSource::parse_kaniko("github.com/o/r.git#refs/heads/b#abcdef1", "").unwrap();
        assert_eq!(k.remote, "https://github.com/o/r.git");
        assert_eq!(k.reference.as_deref(), Some("refs/heads/b"));
        assert_eq!(k.commit.as_deref(), Some("abcdef1"));
        let h = GitSource::parse_kaniko("h/r.git", "http").unwrap();
        assert_eq!(h.remote, "http://h/r.git");
    }

    #[test]
    fn ssh_remotes_only_when_the_caller_allows_them() {
        // A Dockerfile's ADD must not reach repositories through this machine's ssh keys or
        // agent: refused before any git process starts (the program does not even exist).
        let tmp = tempfile::tempdir().unwrap();
        let opts = FetchOptions {
            program: Some("/nonexistent/git".into()),
            ..FetchOptions::default()
        };
        for url in [
            "git@github.com:org/private.git",
            "ssh://git@host/org/private.git",
        ] {
            let src = GitSource::parse_url(url).unwrap();
            match fetch(&src, &tmp.path().join("t"), &opts) {
                Err(e @ GitError::SshNeedsAgent { .. }) => {
                    assert!(e.to_string().contains("pass --ssh default"), "{e}")
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        // With the build's agent it gets as far as running git too.
        let with_agent = FetchOptions {
            ssh_agent: Some(tmp.path().join("agent.sock")),
            ..opts.clone()
        };
        let src = GitSource::parse_url("ssh://git@host/org/private.git#v1").unwrap();
        assert!(matches!(
            fetch(&src, &tmp.path().join("v"), &with_agent),
            Err(GitError::NoGit { .. })
        ));
        // Allowed for a caller-given URL: it gets as far as running git.
        let allowed = FetchOptions {
            allow_ssh: true,
            ..opts
        };
        let src = GitSource::parse_url("git@github.com:org/private.git").unwrap();
        assert!(matches!(
            fetch(&src, &tmp.path().join("u"), &allowed),
            Err(GitError::NoGit { .. })
        ));
        // A password in an ssh URL would sit on git's command line: refused.
        assert!(matches!(
            GitSource::parse_url("ssh://user:hunter2@host/r.git"),
            Err(GitError::BadUrl { .. })
        ));
    }

    #[test]
    fn the_build_agent_is_the_only_ssh_setup_git_gets() {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("secret-agent-dir/agent.sock");
        let src = GitSource::parse_url("ssh://git@127.0.0.1:2222/r.git#main").unwrap();
        let into = tmp.path().join("co");
        let opts = FetchOptions {
            ssh_agent: Some(sock.clone()),
            // The agent wins over the caller's own settings.
            allow_ssh: true,
            ..FetchOptions::default()
        };
        let git = Git::new(&src, &into, &opts).unwrap();
        let cmd = git.command(&["fetch"]);
        let envs: std::collections::BTreeMap<String, Option<String>> = cmd
            .get_envs()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.map(|v| v.to_string_lossy().into_owned()),
                )
            })
            .collect();
        let get = |k: &str| envs.get(k).cloned().flatten();
        assert_eq!(get("SSH_AUTH_SOCK"), Some(sock.display().to_string()));
        assert_eq!(get("GIT_SSH_COMMAND").as_deref(), Some(AGENT_SSH_COMMAND));
        assert_eq!(get("SSH_ASKPASS_REQUIRE").as_deref(), Some("never"));
        assert!(get("GIT_ALLOW_PROTOCOL")
            .unwrap()
            .split(':')
            .any(|p| p == "ssh"));
        // The socket's path is not on git's command line, and git's messages lose it.
        let argv: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(
            !argv.iter().any(|a| a.contains("secret-agent-dir")),
            "{argv:?}"
        );
        let msg = git.redact(format!("error connecting to {}: refused", sock.display()).as_bytes());
        assert!(!msg.contains("secret-agent-dir"), "{msg}");
        // The command line reads nothing of this machine's ssh setup and never prompts.
        let words: Vec<&str> = AGENT_SSH_COMMAND.split_whitespace().collect();
        assert_eq!(&words[..3], ["ssh", "-F", "/dev/null"]);
        for o in [
            "IdentityFile=none",
            "BatchMode=yes",
            "PasswordAuthentication=no",
            "UserKnownHostsFile=/dev/null",
            "GlobalKnownHostsFile=/dev/null",
        ] {
            assert!(words.contains(&o), "{o} missing: {AGENT_SSH_COMMAND}");
        }
        // Without an agent, the caller's ssh variables never reach git.
        let plain = Git::new(&src, &into, &FetchOptions::default()).unwrap();
        let cmd = plain.command(&["fetch"]);
        assert!(!cmd
            .get_envs()
            .any(|(k, v)| k == "SSH_AUTH_SOCK" && v.is_some()));
        assert!(!plain.env.iter().any(|(k, _)| k == "GIT_SSH_COMMAND"));
    }

    #[test]
    fn hostile_refs_urls_and_subdirs_are_rejected() {
        for r in [
            "-uupload-pack=touch /tmp/x",
            "+refs/heads/x",
            "a:b",
            "a..b",
            "a b",
            "@{1}",
        ] {
            assert!(
                matches!(
                    GitSource::parse_kaniko(&format!("h/r.git#{r}"), ""),
                    Err(GitError::BadRef { .. })
                ),
                "{r}"
            );
        }
        for u in [
            "ext::sh -c touch% /tmp/pwned",
            "-oProxyCommand=x",
            "fd::17",
            "/local/path",
        ] {
            assert!(
                matches!(GitSource::parse_url(u), Err(GitError::BadUrl { .. })),
                "{u}"
            );
        }
        for d in ["../x", "a/../../x", "/etc", ".git/hooks"] {
            assert!(
                matches!(
                    GitSource::parse_url(&format!("https://h/r.git#main:{d}")),
                    Err(GitError::BadSubdir { .. })
                ),
                "{d}"
            );
        }
    }

    #[test]
    fn url_user_info_becomes_a_header_and_is_never_shown() {
        let s = GitSource::parse_url("https://bob:s3cr%40t@h/r.git#main").unwrap();
        assert_eq!(s.remote, "https://h/r.git");
        assert!(!format!("{s:?}").contains("s3cr"));
        assert_eq!(s.credentials, Some(Credentials::new("bob", "s3cr@t")));
        assert_eq!(
            redact_userinfo_everywhere("fatal: unable to access 'https://bob:pw@h/r.git/': x"),
            "fatal: unable to access 'https://***@h/r.git/': x"
        );
        assert_eq!(base64(b"token:"), "dG9rZW46");
        assert_eq!(base64(b"ab"), "YWI=");
    }

    #[test]
    fn kaniko_env_credentials() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Credentials::from_env(&env(&[("GIT_TOKEN", "tok"), ("GIT_USERNAME", "u")])),
            Some(Credentials::new("tok", ""))
        );
        assert_eq!(
            Credentials::from_env(&env(&[("GIT_USERNAME", "u"), ("GIT_PASSWORD", "p")])),
            Some(Credentials::new("u", "p"))
        );
        assert_eq!(Credentials::from_env(&env(&[])), None);
    }

    #[test]
    fn git_options() {
        let o =
            GitOptions::parse("branch=dev,single-branch=true,recurse-submodules=false").unwrap();
        assert_eq!(o.branch.as_deref(), Some("dev"));
        assert!(o.single_branch && !o.recurse_submodules && !o.insecure_skip_tls);
        assert_eq!(GitOptions::parse("").unwrap(), GitOptions::default());
        assert!(GitOptions::parse("depth=1").is_err());
        assert!(GitOptions::parse("single-branch=maybe").is_err());
    }

    #[test]
    fn fetches_branches_tags_commits_and_subdirs() {
        if !have_git() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        let (first, second) = fixture(&repo);
        let url = format!("file://{}", repo.display());
        let cases: Vec<(String, &str, &str)> = vec![
            (url.clone(), "two\n", second.as_str()),
            (format!("{url}#main"), "two\n", &second),
            (format!("{url}#v1"), "one\n", &first),
            (format!("{url}#dev"), "one\n", &first),
            (format!("{url}#refs/tags/v1"), "one\n", &first),
            (format!("{url}#{first}"), "one\n", &first),
            (format!("{url}#{}", &first[..10]), "one\n", &first),
        ];
        for (i, (u, content, commit)) in cases.iter().enumerate() {
            let into = tmp.path().join(format!("co{i}"));
            let c = fetch(&GitSource::parse_url(u).unwrap(), &into, &opts()).unwrap();
            assert_eq!(&c.commit, commit, "{u}");
            assert_eq!(
                std::fs::read_to_string(c.dir.join("a.txt")).unwrap(),
                *content,
                "{u}"
            );
            assert!(!into.join(".git").exists(), "{u}: .git kept");
            // The repository's symlink is checked out as a symlink, not followed.
            assert_eq!(
                std::fs::read_link(into.join("escape")).unwrap(),
                Path::new("/etc")
            );
        }
        // Kaniko's `#ref#commit` with an abbreviated commit below the ref's tip: a full fetch
        // of the ref, then that commit.
        let src = GitSource {
            remote: url.clone(),
            reference: Some("main".into()),
            commit: Some(first[..9].to_string()),
            subdir: None,
            credentials: None,
        };
        let c = fetch(&src, &tmp.path().join("short"), &opts()).unwrap();
        assert_eq!(c.commit, first);
        let src = GitSource {
            commit: Some("0000000".into()),
            ..src
        };
        let e = fetch(&src, &tmp.path().join("short-bad"), &opts()).unwrap_err();
        assert!(e.to_string().contains("0000000"), "{e}");
        let into = tmp.path().join("sub");
        let c = fetch(
            &GitSource::parse_url(&format!("{url}#v1:sub")).unwrap(),
            &into,
            &FetchOptions {
                keep_git_dir: true,
                ..opts()
            },
        )
        .unwrap();
        assert_eq!(c.dir, into.join("sub"));
        assert!(into.join(".git").is_dir());
        // The kept repository records no credentials and is a usable repository.
        assert_eq!(g(&into, &["rev-parse", "HEAD"]), first);
    }

    #[test]
    fn errors_name_the_ref_and_url() {
        if !have_git() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        fixture(&repo);
        let url = format!("file://{}", repo.display());
        let e = fetch(
            &GitSource::parse_url(&format!("{url}#no-such-branch")).unwrap(),
            &tmp.path().join("x"),
            &opts(),
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, GitError::RefNotFound { .. }), "{msg}");
        assert!(
            msg.contains("no-such-branch") && msg.contains(&url),
            "{msg}"
        );
        // A subdirectory that is a symlink (to /etc) is refused, not followed.
        let e = fetch(
            &GitSource::parse_url(&format!("{url}#main:escape")).unwrap(),
            &tmp.path().join("y"),
            &opts(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        // file:// is for tests only.
        let e = fetch(
            &GitSource::parse_url(&url).unwrap(),
            &tmp.path().join("z"),
            &FetchOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(e, GitError::BadUrl { .. }), "{e}");
        // A missing git binary is named.
        let e = fetch(
            &GitSource::parse_url(&url).unwrap(),
            &tmp.path().join("w"),
            &FetchOptions {
                program: Some(tmp.path().join("no-git-here")),
                ..opts()
            },
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("git contexts need the git binary in PATH"),
            "{e}"
        );
    }

    #[test]
    fn remote_helpers_are_refused() {
        if !have_git() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        // `ext::` never reaches git, even in a hand-built value (and git itself would refuse
        // it: GIT_ALLOW_PROTOCOL, protocol.ext.allow=never).
        let src = GitSource {
            remote: "ext::sh -c touch% /tmp/kiln-ext-pwned".into(),
            reference: None,
            commit: None,
            subdir: None,
            credentials: None,
        };
        let e = fetch(&src, &tmp.path().join("ext"), &opts()).unwrap_err();
        assert!(matches!(e, GitError::BadUrl { .. }), "{e}");
        assert!(!Path::new("/tmp/kiln-ext-pwned").exists());
    }
}

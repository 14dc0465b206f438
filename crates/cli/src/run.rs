//! Turns flags into a build configuration and runs the command.

use crate::flags::{
    BuildFlags, CacheCommand, Cli, Command, DebugCommand, LogFlags, PullFlags, PushFlags,
    RegistryFlags, WarmFlags,
};
use crate::render::{Format, Renderer};
use anyhow::{bail, Context, Result};
use kiln_build::options::{BuildOptions, SecretFrom, SecretSource, SshSource};
use kiln_build::output::{Event, Output};
use kiln_rootfs::SnapshotMode;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Version => {
            println!("kiln {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::RemoveTree { dir } => remove_tree_command(&dir),
        Command::Debug(DebugCommand::Parse { file }) => {
            let src =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            match kiln_dockerfile::parse(&src) {
                Ok(ast) => {
                    print!("{}", ast.dump());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => bail!(
                    "{}",
                    e.render(&file.display().to_string(), &String::from_utf8_lossy(&src))
                ),
            }
        }
        Command::Debug(DebugCommand::Plan {
            file,
            target,
            build_args,
            platform,
        }) => {
            let src =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let opts = kiln_build::plan_options(
                target,
                resolve_build_args(&build_args)?,
                platform.as_deref(),
            )?;
            match kiln_dockerfile::debug_plan(&src, &opts) {
                Ok(text) => {
                    print!("{text}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => bail!(
                    "{}",
                    e.render(&file.display().to_string(), &String::from_utf8_lossy(&src))
                ),
            }
        }
        Command::Build(flags) => build(&flags),
        Command::Pull(flags) => pull(&flags),
        Command::Warm(flags) => warm(&flags),
        Command::Cache(CacheCommand::Ls { kiln_dir }) => cache_ls(kiln_dir),
        Command::Cache(CacheCommand::Prune { kiln_dir, max_size }) => {
            cache_prune(kiln_dir, &max_size)
        }
        Command::Push(flags) => push(&flags),
    }
}

/// The process exit code for an error: a failing RUN's own status, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<kiln_build::BuildError>()
        .map(|b| b.exit_code())
        .unwrap_or(1)
        .clamp(1, 255) as u8
}

/// The renderer's format for these flags ([`Format::choose`], stderr's terminal-ness).
pub fn log_format(flags: &LogFlags) -> Result<Format> {
    Format::choose(
        flags.log_format.as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
    .map_err(|e| anyhow::anyhow!(e))
}

/// The libraries' `tracing` lines, in the renderer's format: no escape codes unless colour
/// is chosen (they had them whenever `--log-format` was not given), JSON lines of the
/// renderer's shape with `json`, a timestamp only with `--log-timestamp` (Kaniko's default
/// has none).
fn init_logging(flags: &LogFlags, format: Format) -> Result<()> {
    let level = match flags.verbosity.as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "error" | "fatal" | "panic" => "error",
        other => bail!(
            "invalid --verbosity {other:?}: use trace, debug, info, warn, error, fatal or panic"
        ),
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},hyper=warn,reqwest=warn,rustls=warn"))
    });
    use tracing_subscriber::prelude::*;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(format == Format::Color);
    let layer = match (format, flags.log_timestamp) {
        // JSON lines always carry their time, as logrus' do.
        (Format::Json, _) => layer.event_format(crate::render::JsonLog).boxed(),
        (_, true) => layer.boxed(),
        (_, false) => layer.without_time().boxed(),
    };
    let res = tracing_subscriber::registry()
        .with(layer.with_filter(filter))
        .try_init();
    // A second init (tests) is harmless.
    let _ = res;
    Ok(())
}

/// `--build-arg KEY=VAL` or bare `KEY` (value from the environment; absent → skipped, as Kaniko).
pub fn resolve_build_args(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            Some(_) => bail!("invalid --build-arg {a:?}: expected KEY=VALUE or KEY"),
            None => {
                if let Ok(v) = std::env::var(a) {
                    out.push((a.clone(), v));
                }
            }
        }
    }
    Ok(out)
}

fn key_values(flag: &'static str, values: &[String]) -> Result<Vec<(String, String)>> {
    values
        .iter()
        .map(|v| match v.split_once('=') {
            Some((k, val)) if !k.is_empty() => Ok((k.to_string(), val.to_string())),
            _ => bail!("invalid {flag} {v:?}: expected key=value"),
        })
        .collect()
}

fn parse_secret(spec: &str) -> Result<SecretSource> {
    let mut id = None;
    let mut src = None;
    let mut env = None;
    let mut env_type = false;
    for part in spec.split(',') {
        match part.split_once('=') {
            Some(("id", v)) => id = Some(v.to_string()),
            Some(("src" | "source", v)) => src = Some(v.to_string()),
            Some(("env", v)) => env = Some(v.to_string()),
            Some(("type", "file")) => env_type = false,
            Some(("type", "env")) => env_type = true,
            _ => bail!("invalid --secret {spec:?}: expected id=ID[,src=FILE|,env=VAR]"),
        }
    }
    let Some(id) = id else {
        bail!("invalid --secret {spec:?}: missing id=")
    };
    // buildx's rules: `env=VAR`; with `type=env`, `src=` names the variable; otherwise `src=`
    // is a file; with neither, the variable named by the id.
    let source = match (env, src) {
        (Some(var), _) => SecretFrom::Env(var),
        (None, Some(var)) if env_type => SecretFrom::Env(var),
        (None, Some(file)) => SecretFrom::File(PathBuf::from(file)),
        (None, None) => SecretFrom::Env(id.clone()),
    };
    // A missing file fails now, as `docker build --secret` does, not when the RUN that
    // mounts it is reached, maybe minutes into the build.
    if let SecretFrom::File(p) = &source {
        if let Err(e) = std::fs::metadata(p) {
            bail!("--secret id={id}: cannot read {}: {e}", p.display());
        }
    }
    Ok(SecretSource { id, source })
}

/// `--ssh` values as `docker buildx build --ssh` takes them: `ID` (the agent in
/// `auth_sock`, i.e. $SSH_AUTH_SOCK), `ID=SOCKET`, or `ID=KEYFILE[,KEYFILE...]`: private key
/// files, loaded into an ssh-agent kiln starts for this build ([`KeyAgent`]; BuildKit's
/// client serves such keys from an agent of its own). One path that is a socket is an agent;
/// anything else must be key files. Errors name the id and never a socket's path (logs may be
/// public; whoever reaches the socket signs with the caller's keys); a key file the caller
/// named is named when it cannot be used.
fn parse_ssh(
    specs: &[String],
    auth_sock: Option<std::ffi::OsString>,
    state: &Path,
    tools: &SshTools,
) -> Result<SshSetup> {
    use std::os::unix::fs::FileTypeExt;
    let mut out = SshSetup::default();
    for spec in specs {
        let (id, paths) = match spec.split_once('=') {
            Some((id, paths)) => (id, Some(paths)),
            None => (spec.as_str(), None),
        };
        if id.is_empty() || id.contains(',') {
            bail!(
                "invalid --ssh value: expected default, ID, ID=SOCKET or ID=KEYFILE[,KEYFILE...]"
            );
        }
        if out.sources.iter().any(|s| s.id == id) {
            bail!("invalid --ssh {id}: the id is given twice");
        }
        let paths: Vec<PathBuf> = match paths.filter(|p| !p.is_empty()) {
            Some(p) => p
                .split(',')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
            None => match auth_sock.as_ref().filter(|s| !s.is_empty()) {
                Some(s) => vec![PathBuf::from(s)],
                None => bail!(
                    "invalid --ssh {id}: SSH_AUTH_SOCK is not set (start ssh-agent, or give --ssh {id}=SOCKET or --ssh {id}=KEYFILE)"
                ),
            },
        };
        if let [one] = paths.as_slice() {
            let meta = std::fs::metadata(one).map_err(|e| {
                anyhow::anyhow!(
                    "invalid --ssh {id}: the agent socket or key file cannot be read: {e}"
                )
            })?;
            if meta.file_type().is_socket() {
                out.sources.push(SshSource {
                    id: id.to_string(),
                    socket: one.clone(),
                });
                continue;
            }
            if !meta.is_file() {
                bail!("invalid --ssh {id}: the path is neither an ssh-agent socket nor a key file");
            }
        }
        let agent = KeyAgent::start(id, &paths, state, tools)?;
        out.sources.push(SshSource {
            id: id.to_string(),
            socket: agent.socket.clone(),
        });
        out.agents.push(agent);
    }
    Ok(out)
}

/// What `--ssh` gives the build: the sources by id, and the agents kiln started for key
/// files (stopped when this is dropped, at the end of the build).
#[derive(Debug, Default)]
struct SshSetup {
    sources: Vec<SshSource>,
    agents: Vec<KeyAgent>,
}

/// The programs behind `--ssh ID=KEYFILE` (a test names missing ones).
struct SshTools {
    agent: PathBuf,
    add: PathBuf,
}

impl Default for SshTools {
    fn default() -> SshTools {
        SshTools {
            agent: "ssh-agent".into(),
            add: "ssh-add".into(),
        }
    }
}

/// An ssh-agent kiln started for `--ssh ID=KEYFILE[,KEYFILE...]`, its socket in the build's
/// own directory under the state dir (`<state>/tmp/ssh-<pid>-<n>/agent`, removed with the
/// build's other files, also by the signal handler).
///
/// It never outlives kiln: it is started as `ssh-agent -a SOCKET sh -c '...; exec cat'`.
/// Given a command, ssh-agent(1) forks the agent and runs the command in the original
/// process, and the agent exits (removing its socket) once that process is gone: OpenSSH's
/// ssh-agent checks its parent every 10 seconds. That process is kiln's child `cat`, reading
/// a pipe only kiln holds: when kiln ends in any way (return, error, signal, even SIGKILL) the
/// pipe closes, `cat` exits, and the agent follows. On drop (the normal end) the agent is
/// also sent SIGTERM by the pid ssh-agent told the command (`$SSH_AGENT_PID`), so it goes at
/// once.
struct KeyAgent {
    socket: PathBuf,
    watch: std::process::Child,
    agent_pid: i32,
    _dir: TempDir,
}

impl std::fmt::Debug for KeyAgent {
    // Not the socket's path (see `SshSource`'s Debug).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyAgent(pid {})", self.agent_pid)
    }
}

impl Drop for KeyAgent {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.agent_pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        drop(self.watch.stdin.take());
        let _ = self.watch.kill();
        let _ = self.watch.wait();
    }
}

/// `sun_path` holds 108 bytes with the terminating NUL (unix(7)).
const MAX_SOCKET_PATH: usize = 107;

impl KeyAgent {
    /// Starts the agent and loads `keys` into it, with no prompt: a key protected by a
    /// passphrase is an error naming the file (kiln never asks for a passphrase: a build has
    /// no one to answer).
    fn start(id: &str, keys: &[PathBuf], state: &Path, tools: &SshTools) -> Result<KeyAgent> {
        use std::io::BufRead;
        use std::process::Stdio;
        let missing = || {
            anyhow::anyhow!(
                "--ssh {id}=KEYFILE needs ssh-agent and ssh-add (openssh-client) on PATH; pass an agent socket instead"
            )
        };
        for key in keys {
            let meta = std::fs::metadata(key).with_context(|| {
                format!(
                    "invalid --ssh {id}: key file {}: cannot be read",
                    key.display()
                )
            })?;
            if !meta.is_file() {
                bail!("invalid --ssh {id}: {} is not a key file", key.display());
            }
            // A private key is a few KiB; a bigger file is not one (and is not read whole).
            let mut head = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(
                    std::fs::File::open(key).with_context(|| {
                        format!(
                            "invalid --ssh {id}: key file {}: cannot be read",
                            key.display()
                        )
                    })?,
                    1 << 20,
                ),
                &mut head,
            )
            .with_context(|| format!("invalid --ssh {id}: reading key file {}", key.display()))?;
            if key_is_encrypted(&head) {
                bail!(
                    "invalid --ssh {id}: the key file {} is protected by a passphrase, which kiln cannot ask for: load it into an ssh-agent (ssh-add) and pass --ssh {id} or --ssh {id}=SOCKET",
                    key.display()
                );
            }
        }
        let dir = temp_dir(state, "ssh")?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("creating {}", dir.0.display()))?;
        }
        let socket = dir.0.join("agent");
        let len = socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            bail!(
                "--ssh {id}=KEYFILE: the state directory's path is too long for an ssh-agent socket ({len} bytes, at most {MAX_SOCKET_PATH}): use a shorter --kiln-dir"
            );
        }
        let shown = socket.to_string_lossy().into_owned();
        let hide = |text: &[u8]| {
            String::from_utf8_lossy(text)
                .trim()
                .replace(&shown, "<agent socket>")
        };
        let mut watch = std::process::Command::new(&tools.agent)
            .arg("-a")
            .arg(&socket)
            // Printed by the command ssh-agent runs after forking the agent; then `cat` waits
            // for the end of a pipe only kiln writes to.
            .args(["sh", "-c", "echo \"$SSH_AGENT_PID\"; exec cat"])
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_AGENT_PID")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => missing(),
                _ => anyhow::anyhow!("--ssh {id}: starting ssh-agent: {e}"),
            })?;
        let mut line = String::new();
        if let Some(out) = watch.stdout.take() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
        let Some(agent_pid) = line.trim().parse::<i32>().ok().filter(|p| *p > 1) else {
            drop(watch.stdin.take());
            let _ = watch.kill();
            let out = watch.wait_with_output();
            let stderr = out.map(|o| hide(&o.stderr)).unwrap_or_default();
            bail!("--ssh {id}: ssh-agent did not start: {stderr}");
        };
        let agent = KeyAgent {
            socket,
            watch,
            agent_pid,
            _dir: dir,
        };
        let out = std::process::Command::new(&tools.add)
            .arg("-q")
            .arg("--")
            .args(keys)
            .env("SSH_AUTH_SOCK", &agent.socket)
            // No prompt of any kind: no askpass program (ssh-add(1), SSH_ASKPASS_REQUIRE),
            // no terminal input.
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env_remove("SSH_ASKPASS")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => missing(),
                _ => anyhow::anyhow!("--ssh {id}: running ssh-add: {e}"),
            })?;
        if !out.status.success() {
            let stderr = hide(&out.stderr);
            let names = keys
                .iter()
                .map(|k| k.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            if stderr.contains("passphrase") {
                bail!(
                    "invalid --ssh {id}: a key file ({names}) is protected by a passphrase, which kiln cannot ask for: load it into an ssh-agent (ssh-add) and pass --ssh {id} or --ssh {id}=SOCKET"
                );
            }
            bail!("invalid --ssh {id}: ssh-add could not load {names}: {stderr}");
        }
        Ok(agent)
    }
}

/// Whether a private key file is encrypted, judged without a passphrase: OpenSSH's format
/// names its cipher (PROTOCOL.key: `"openssh-key-v1\0"`, then the cipher name, `none` when
/// the key is not encrypted), PKCS#8 says `ENCRYPTED PRIVATE KEY` (RFC 5958), and PEM's
/// traditional format has a `Proc-Type: 4,ENCRYPTED` header (RFC 1421). ssh-add would
/// otherwise ask for the passphrase.
fn key_is_encrypted(text: &[u8]) -> bool {
    let text = String::from_utf8_lossy(text);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return true;
    }
    const BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    let Some(body) = text.split(BEGIN).nth(1) else {
        return false;
    };
    let body = body.split("-----END").next().unwrap_or_default();
    let bytes = base64_decode(body);
    let Some(rest) = bytes.strip_prefix(b"openssh-key-v1\0") else {
        return false;
    };
    let Some(len) = rest
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    else {
        return false;
    };
    rest.get(4..4 + len).is_some_and(|cipher| cipher != b"none")
}

/// Standard base64 (RFC 4648), skipping whitespace; decoding stops at padding or a byte that
/// is not base64.
fn base64_decode(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace()) {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => break,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn opt_path(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// The state directory a build with these flags uses ([`build_state_dir`] with the
/// process's environment).
pub fn state_dir_of(flags: &BuildFlags) -> PathBuf {
    state_dir(flags)
}

fn state_dir(flags: &BuildFlags) -> PathBuf {
    build_state_dir(flags, &|k| std::env::var_os(k))
}

/// A build's state directory: `--kiln-dir`, `--kaniko-dir`, `$KILN_DIR`, `$KANIKO_DIR`, in that
/// order (a flag on the command line is the job's own choice and beats an image's
/// environment; at each level kiln's name beats Kaniko's), else [`default_state_dir`]. Kaniko
/// keeps all its work files under `--kaniko-dir`/`KANIKO_DIR`: a job pointing it at a
/// scratch volume gets kiln's state there too, not in `$HOME`.
fn build_state_dir(
    flags: &BuildFlags,
    env: &dyn Fn(&str) -> Option<std::ffi::OsString>,
) -> PathBuf {
    let from_env = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let given = flags
        .kiln_dir
        .clone()
        .or_else(|| flags.kaniko_dir.clone())
        .or_else(|| from_env("KILN_DIR"))
        .or_else(|| from_env("KANIKO_DIR"));
    default_state_dir(given.as_ref())
}

/// The state directory: the given one, else `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`,
/// else `/kiln` (the executor image, where HOME may be unset).
fn default_state_dir(given: Option<&PathBuf>) -> PathBuf {
    if let Some(d) = given {
        return d.clone();
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("kiln");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|v| !v.is_empty() && v != "/") {
        return PathBuf::from(h).join(".cache").join("kiln");
    }
    PathBuf::from("/kiln")
}

/// A directory kiln made for this build (an extracted context, a Dockerfile from stdin),
/// removed when the build ends.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(state: &Path, what: &str) -> Result<TempDir> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let dir = state
        .join("tmp")
        .join(format!("{what}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}

/// Extracts a context tarball (plain or gzip; a file or stdin) through the confined unpacker.
fn extract_context(reader: impl std::io::Read + Send, into: &Path, what: &str) -> Result<()> {
    let root = kiln_rootfs::Root::open(into)
        .with_context(|| format!("opening {}", into.display()))?
        .with_ownership(kiln_rootfs::Ownership::Skip);
    kiln_rootfs::unpack_layer(
        &root,
        std::io::BufReader::new(reader),
        &kiln_rootfs::UnpackOptions::default(),
    )
    .with_context(|| format!("extracting the build context {what}"))?;
    Ok(())
}

/// Fetches a git context into a directory under the state directory (removed at the end):
/// Kaniko's `git://REPO#REF#COMMIT` (over `GIT_PULL_METHOD`, https by default) or docker's
/// `https://host/repo.git#ref:subdir`; `--git` options and `--context-sub-path` applied.
/// Kaniko's `git://` contexts keep `.git` (go-git clones it), docker's URL form does not
/// (BuildKit's default).
fn git_context(flags: &BuildFlags, state: &Path) -> Result<(PathBuf, Option<TempDir>)> {
    use kiln_build::git::{fetch, Credentials, FetchOptions, GitOptions, GitSource};
    let c = flags.context.as_str();
    let options = GitOptions::parse(&flags.git)?;
    let (src, kaniko) = match c.strip_prefix("git://") {
        Some(rest) => {
            let method = std::env::var("GIT_PULL_METHOD").unwrap_or_default();
            (GitSource::parse_kaniko(rest, &method)?, true)
        }
        None => (GitSource::parse_url(c)?, false),
    };
    let src = match &options.branch {
        Some(b) => src.with_reference(b)?,
        None => src,
    };
    let src = src.with_subdir(&flags.context_sub_path)?;
    let t = temp_dir(state, "git-context")?;
    tracing::info!(source = %src.display(), "fetching the git build context");
    let opts = FetchOptions {
        keep_git_dir: kaniko,
        submodules: options.recurse_submodules,
        insecure_skip_tls: options.insecure_skip_tls,
        credentials: Credentials::from_env(&|k| std::env::var(k).ok()),
        // The caller named this URL: their ssh keys and agent may serve it.
        allow_ssh: true,
        ..FetchOptions::default()
    };
    let checkout = fetch(&src, &t.0.join("tree"), &opts)
        .with_context(|| format!("fetching the build context {}", src.display()))?;
    tracing::info!(commit = %checkout.commit, "git build context checked out");
    Ok((checkout.dir, Some(t)))
}

/// Resolves `--context` to a local directory: a directory, `dir://DIR`, `tar://FILE`
/// / `tar://stdin` (extracted under the state directory, removed at the end), or a git
/// repository ([`git_context`]).
fn context_dir(flags: &BuildFlags, state: &Path) -> Result<(PathBuf, Option<TempDir>)> {
    let c = flags.context.as_str();
    if c.starts_with("git://") || kiln_build::git::is_git_url(c) {
        return git_context(flags, state);
    }
    let (dir, temp) = if let Some(rest) = c.strip_prefix("dir://") {
        (PathBuf::from(rest), None)
    } else if let Some(rest) = c.strip_prefix("tar://") {
        let t = temp_dir(state, "context")?;
        if rest == "stdin" {
            extract_context(std::io::stdin(), &t.0, "from stdin")?;
        } else {
            let f = std::fs::File::open(rest)
                .with_context(|| format!("build context tarball {rest}: not readable"))?;
            extract_context(f, &t.0, rest)?;
        }
        (t.0.clone(), Some(t))
    } else if let Some((scheme, _)) = c.split_once("://") {
        bail!("not supported yet: --context {scheme}:// (use a directory, dir:// or tar://)")
    } else {
        (PathBuf::from(c), None)
    };
    let dir = if flags.context_sub_path.is_empty() {
        dir
    } else {
        dir.join(&flags.context_sub_path)
    };
    let meta = std::fs::metadata(&dir)
        .with_context(|| format!("build context {}: not found", dir.display()))?;
    if !meta.is_dir() {
        bail!("build context {}: not a directory", dir.display());
    }
    Ok((dir, temp))
}

/// `--dockerfile`: `-` (stdin), as given, then relative to the context (Kaniko's order).
fn dockerfile_path(
    flags: &BuildFlags,
    context: &Path,
    state: &Path,
) -> Result<(PathBuf, Option<TempDir>)> {
    if flags.dockerfile == "-" {
        if flags.context == "tar://stdin" {
            bail!("--dockerfile - and --context tar://stdin cannot both read standard input");
        }
        let t = temp_dir(state, "dockerfile")?;
        let path = t.0.join("Dockerfile");
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut text)
            .context("reading the Dockerfile from standard input")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        return Ok((path, Some(t)));
    }
    if flags.dockerfile.starts_with("http://") || flags.dockerfile.starts_with("https://") {
        bail!(
            "not supported yet: --dockerfile from a URL ({})",
            flags.dockerfile
        );
    }
    let given = PathBuf::from(&flags.dockerfile);
    let in_context = context.join(&flags.dockerfile);
    // A path inside the context is resolved inside it: the context may be someone else's
    // (a git branch, a tarball), and a Dockerfile symlinked to /proc/self/environ or
    // ~/.docker/config.json must not be read from the host and echoed in a parse error.
    let inside = |p: &Path| -> Option<PathBuf> {
        let abs = std::path::absolute(p).ok()?;
        let root = std::path::absolute(context).ok()?;
        abs.strip_prefix(&root).ok().map(Path::to_path_buf)
    };
    let confined = |rel: &Path| -> Result<Option<PathBuf>> {
        match kiln_rootfs::Root::open(context)
            .with_context(|| format!("opening the build context {}", context.display()))?
            .resolve(rel)
        {
            Ok(p) if p.is_file() => Ok(Some(p)),
            Ok(_)
            | Err(kiln_rootfs::RootError::NotFound { .. })
            | Err(kiln_rootfs::RootError::NotADirectory { .. }) => Ok(None),
            Err(e) => Err(anyhow::anyhow!("Dockerfile {}: {e}", in_context.display())),
        }
    };
    match inside(&given) {
        Some(rel) => {
            if let Some(p) = confined(&rel)? {
                return Ok((p, None));
            }
        }
        // Outside the context: the caller's own file, read as given (Kaniko's first try).
        None if given.is_file() => return Ok((given, None)),
        None => {}
    }
    if given.is_relative() {
        if let Some(p) = confined(&given)? {
            return Ok((p, None));
        }
    }
    bail!(
        "Dockerfile {}: not found (also tried {})",
        given.display(),
        in_context.display()
    )
}

/// Flags accepted for compatibility that change nothing, with the reason.
fn no_effect_warnings(flags: &BuildFlags) -> Vec<String> {
    let mut w = Vec::new();
    let mut say = |cond: bool, msg: &str| {
        if cond {
            w.push(msg.to_string());
        }
    };
    say(
        !flags.bucket.is_empty(),
        "--bucket has no effect: GCS contexts are not supported",
    );
    say(
        flags.no_cache && flags.cache,
        "--cache=true has no effect: --no-cache turns the layer cache off",
    );
    say(
        !flags.compressed_caching,
        "--compressed-caching=false has no effect: kiln always streams layers with bounded memory",
    );
    say(
        flags.use_new_run,
        "--use-new-run has no effect: kiln's snapshotter always compares metadata first",
    );
    say(
        flags.force_build_metadata,
        "--force-build-metadata has no effect: metadata-only instructions never make layers",
    );
    if let (Some(kiln), Some(kaniko)) = (&flags.kiln_dir, &flags.kaniko_dir) {
        say(
            kiln != kaniko,
            &format!(
                "--kaniko-dir {} is not used: --kiln-dir {} is given",
                kaniko.display(),
                kiln.display()
            ),
        );
    }
    say(
        flags.registry.image_fs_extract_retry > 0,
        "--image-fs-extract-retry has no effect: extraction reads verified local blobs",
    );
    say(
        flags.force,
        "--force has no effect: kiln builds in a private root file system, never on /",
    );
    say(
        flags.registry.push_ignore_immutable_tag_errors,
        "--push-ignore-immutable-tag-errors is accepted but not implemented yet",
    );
    let git_context =
        flags.context.starts_with("git://") || kiln_build::git::is_git_url(&flags.context);
    say(
        !flags.git.is_empty() && !git_context,
        "--git has no effect: the build context is not a git repository",
    );
    w
}

fn build(flags: &BuildFlags) -> Result<ExitCode> {
    let format = log_format(&flags.log)?;
    init_logging(&flags.log, format)?;
    let renderer = Renderer::new(format, flags.log.log_timestamp);
    for w in no_effect_warnings(flags) {
        renderer.event(Event::Warning(&w));
    }
    for (flag, value) in [
        ("--digest-file", &flags.digest_file),
        (
            "--image-name-with-digest-file",
            &flags.image_name_with_digest_file,
        ),
        (
            "--image-name-tag-with-digest-file",
            &flags.image_name_tag_with_digest_file,
        ),
    ] {
        if value.starts_with("http://") || value.starts_with("https://") {
            bail!("not supported yet: {flag} with a URL ({value}); give a file path");
        }
    }
    if let Some(t) = flags.docker_tags.first() {
        bail!(
            "-t/--tag {t:?}: kiln keeps no local image store, so it does not tag images: push \
             with -d REGISTRY/REPO:TAG (--destination), or keep the image with --no-push \
             --tar-path FILE (then `podman load -i FILE`) or --oci-layout-path DIR"
        );
    }
    if flags.destinations.is_empty() && !flags.no_push {
        bail!(
            "no --destination given: pass one or more, or --no-push (with --tar-path FILE or \
             --oci-layout-path DIR to keep the image)"
        );
    }
    let state = state_dir(flags);
    let (context, _context_tmp) = context_dir(flags, &state)?;
    let (dockerfile, _dockerfile_tmp) = dockerfile_path(flags, &context, &state)?;
    let snapshot_mode = match flags.snapshot_mode.as_str() {
        "full" => SnapshotMode::Full,
        "redo" => SnapshotMode::Redo,
        "time" => SnapshotMode::Time,
        other => bail!("invalid --snapshot-mode {other:?}: use full, redo or time"),
    };
    let image_format = match flags.image_format.as_str() {
        "" => None,
        f => Some(
            f.parse()
                .map_err(|_| anyhow::anyhow!("invalid --image-format {f:?}: use oci or docker"))?,
        ),
    };
    let compression = match (flags.compression.as_str(), flags.compression_level) {
        ("gzip", -1) => kiln_oci::layer::Compression::default(),
        ("gzip", l @ 0..=9) => kiln_oci::layer::Compression::Gzip { level: l as u32 },
        ("zstd", -1) => kiln_oci::layer::Compression::Zstd { level: 3 },
        ("zstd", l @ 1..=22) => kiln_oci::layer::Compression::Zstd { level: l },
        (c, l) => bail!(
            "invalid --compression {c:?} with --compression-level {l}: gzip takes 0-9, zstd 1-22"
        ),
    };
    let mut ignore_paths = flags.ignore_paths.clone();
    if flags.ignore_var_run == Some(true) {
        ignore_paths.push("/var/run".into());
    }
    // Started before the build and kept until it ends: the agents kiln runs for key files.
    let mut ssh = parse_ssh(
        &flags.ssh,
        std::env::var_os("SSH_AUTH_SOCK"),
        &state,
        &SshTools::default(),
    )?;
    let opts = BuildOptions {
        context,
        dockerfile,
        state_dir: state,
        destinations: flags.destinations.clone(),
        push: !flags.no_push,
        tar_path: opt_path(&flags.tar_path),
        oci_layout_path: opt_path(&flags.oci_layout_path),
        digest_file: opt_path(&flags.digest_file),
        image_name_with_digest_file: opt_path(&flags.image_name_with_digest_file),
        image_name_tag_with_digest_file: opt_path(&flags.image_name_tag_with_digest_file),
        build_args: resolve_build_args(&flags.build_args)?,
        target: (!flags.target.is_empty()).then(|| flags.target.clone()),
        labels: key_values("--label", &flags.labels)?,
        annotations: key_values("--annotation", &flags.annotations)?,
        platform: (!flags.custom_platform.is_empty()).then(|| flags.custom_platform.clone()),
        image_format,
        reproducible: flags.reproducible,
        snapshot_mode,
        single_snapshot: flags.single_snapshot,
        overlay_snapshots: flags.overlay_snapshots,
        // Kaniko's --cleanup: nothing of the build stays once kiln exits (several builds in
        // one container): no trees stored or used, the build directory removed before exit.
        tree_store: flags.cache_unpacked_trees && !flags.cleanup,
        parallel_stages: flags.parallel_stages,
        detach_cleanup: !flags.cleanup,
        progress_interval: Some(std::time::Duration::from_secs_f64(flags.progress_interval)),
        kaniko_volumes: flags.compat == "kaniko",
        volume_mkdir: !std::env::var("FF_KANIKO_VOLUME_SKIP_MKDIR")
            .ok()
            .and_then(|v| crate::flags::parse_go_bool(&v).ok())
            .unwrap_or(false),
        ignore_paths,
        // kiln's default is BuildKit's (and the maintained Kaniko fork's): unused stages are
        // skipped unless the caller says false, as a Kaniko pipeline relying on its default may.
        skip_unused_stages: flags.skip_unused_stages.unwrap_or(true),
        isolation: run_isolation(&flags.isolation, &renderer),
        secrets: flags
            .secrets
            .iter()
            .map(|s| parse_secret(s))
            .collect::<Result<_>>()?,
        ssh: std::mem::take(&mut ssh.sources),
        compression,
        registry: registry_options(&flags.registry)?,
        credentials: credentials(),
        skip_push_permission_check: flags.registry.skip_push_permission_check,
        push_retry: flags.registry.push_retry,
        cache: if flags.cache && !flags.no_cache {
            Some(kiln_build::options::CacheOptions {
                repo: (!flags.cache_repo.is_empty()).then(|| flags.cache_repo.clone()),
                dir: (!flags.cache_dir.is_empty()).then(|| PathBuf::from(&flags.cache_dir)),
                ttl: kiln_build::cache::parse_ttl(&flags.cache_ttl).map_err(|e| {
                    anyhow::anyhow!("invalid --cache-ttl {:?}: {e}", flags.cache_ttl)
                })?,
                run_layers: flags.cache_run_layers,
                copy_layers: flags.cache_copy_layers,
                store: !flags.no_push_cache,
            })
        } else {
            None
        },
    };
    let outcome = kiln_build::build(&opts, &renderer)?;
    drop(ssh);
    if let Some(dir) = outcome.leftover {
        remove_in_background(&dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// The RUN isolation for the build: `--isolation`, else the first that works here
/// ([`kiln_sandbox::detect`]), said once per build (docs/ci.md promises it; the engine asked
/// for every RUN and said nothing). Where none works (or only Kaniko's container mode, which
/// builds on the live /), the engine decides at the first RUN and its error says why; a
/// Dockerfile without RUN still builds.
fn run_isolation(flag: &str, out: &dyn Output) -> Option<String> {
    if !flag.is_empty() {
        out.event(Event::Info(&format!("RUN isolation: {flag} (--isolation)")));
        return Some(flag.to_string());
    }
    match kiln_sandbox::detect(Path::new("/proc")) {
        Ok(d) if d.isolation != kiln_sandbox::Isolation::Container => {
            out.event(Event::Info(&format!(
                "RUN isolation: {} ({})",
                d.isolation, d.reason
            )));
            Some(d.isolation.as_str().to_string())
        }
        _ => None,
    }
}

/// Removes a finished build's directory in a detached `kiln __remove-tree` process, so the
/// build returns as soon as its image is out (the directory holds no secrets: a RUN's secrets
/// are removed when it ends). Spawned from this process, the remover is in the same user
/// namespace and may delete what the build's steps created. If it cannot start, the
/// directory is removed here.
fn remove_in_background(dir: &Path) {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let spawned = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            // argv[0] picks the personality: a copy of the binary named `executor` (the CI
            // image's /kaniko/executor) would read `__remove-tree` as a build flag.
            .arg0("kiln")
            .arg("__remove-tree")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C in the terminal does not stop it half way.
            .process_group(0)
            .spawn()
    });
    if spawned.is_err() {
        let _ = kiln_build::remove_tree(dir);
    }
}

/// `kiln __remove-tree DIR`: the background half of [`remove_in_background`]. Only a
/// directory directly below a `builds` directory is touched; it is first renamed to carry this
/// process's id, so a concurrent build's sweep of stale build directories leaves it alone.
fn remove_tree_command(dir: &Path) -> Result<ExitCode> {
    let Some(builds) = dir
        .parent()
        .filter(|p| p.file_name().is_some_and(|n| n == "builds"))
    else {
        bail!(
            "__remove-tree removes build directories only: {}",
            dir.display()
        );
    };
    let mine = builds.join(format!("{}-removing", std::process::id()));
    let target = if std::fs::rename(dir, &mine).is_ok() {
        mine
    } else {
        dir.to_path_buf()
    };
    kiln_build::remove_tree(&target).with_context(|| format!("removing {}", target.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// The registry client's configuration from Kaniko's registry flags.
fn registry_options(flags: &RegistryFlags) -> Result<kiln_registry::RegistryConfig> {
    let mut c = kiln_registry::RegistryConfig {
        insecure_push: flags.insecure,
        insecure_pull: flags.insecure_pull,
        insecure_registries: flags.insecure_registries.clone(),
        skip_verify_push: flags.skip_tls_verify,
        skip_verify_pull: flags.skip_tls_verify_pull,
        skip_verify_registries: flags.skip_tls_verify_registries.clone(),
        mirrors: flags
            .registry_mirrors
            .iter()
            .filter(|m| !m.is_empty())
            .cloned()
            .collect(),
        skip_default_fallback: flags.skip_default_registry_fallback,
        ..Default::default()
    };
    for v in &flags.registry_certificates {
        c.ca_certificates
            .push(kiln_registry::RegistryConfig::parse_certificate_flag(v)?);
    }
    for v in &flags.registry_client_certs {
        c.client_certificates
            .push(kiln_registry::RegistryConfig::parse_client_cert_flag(v)?);
    }
    for v in &flags.registry_maps {
        c.add_map_flag(v)?;
    }
    // `--push-retry` repeats the whole push (Kaniko's meaning: its pushes retry each request
    // too, in go-containerregistry); the client keeps its own per-request retries. It set
    // those before, so 1 to 3 changed nothing and no value gave Kaniko's attempts.
    if flags.image_download_retry > 0 {
        c.retry.pull_retries = flags.image_download_retry;
    }
    Ok(c)
}

/// Credentials: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (Kaniko's executor
/// image sets DOCKER_CONFIG=/kaniko/.docker).
fn credentials() -> kiln_registry::CredentialSource {
    let docker_config = std::env::var_os("DOCKER_CONFIG").map(PathBuf::from);
    let home = std::env::var_os("HOME").map(PathBuf::from);
    kiln_registry::CredentialSource {
        docker_config: kiln_registry::default_docker_config_path(
            docker_config.as_deref(),
            home.as_deref(),
        ),
        ..Default::default()
    }
}

fn client(flags: &RegistryFlags) -> Result<kiln_registry::Client> {
    Ok(kiln_registry::Client::new(
        registry_options(flags)?,
        credentials(),
    ))
}

/// `kiln pull`: an image (the platform's entry of an index) into an OCI layout.
fn pull(flags: &PullFlags) -> Result<ExitCode> {
    let reference: kiln_oci::reference::Reference = flags
        .reference
        .parse()
        .with_context(|| format!("invalid reference {:?}", flags.reference))?;
    let platform = match &flags.custom_platform {
        Some(p) => p
            .parse()
            .with_context(|| format!("invalid --custom-platform {p:?}"))?,
        None => kiln_oci::platform::Platform::host(),
    };
    let layout = kiln_oci::layout::OciLayout::create(&flags.oci_layout_path)?;
    let pulled = client(&flags.registry)?.pull_image(&reference, &platform, layout.blobs())?;
    let digest = layout.blobs().put(&pulled.manifest.bytes)?;
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        kiln_oci::layout::REF_NAME_ANNOTATION.to_string(),
        reference.tag().unwrap_or("latest").to_string(),
    );
    layout.add_manifest(kiln_oci::layout::IndexEntry {
        media_type: pulled.media_type.clone(),
        digest: digest.clone(),
        size: pulled.manifest.bytes.len() as u64,
        platform: Some(serde_json::to_value(platform.to_oci())?),
        annotations,
    })?;
    println!(
        "{reference}@{digest} -> {}",
        flags.oci_layout_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `kiln push`: an OCI layout's image to every destination.
fn push(flags: &PushFlags) -> Result<ExitCode> {
    let layout = kiln_oci::layout::OciLayout::open(&flags.from)
        .with_context(|| format!("--from {}: not an OCI image layout", flags.from.display()))?;
    let entry = layout.find(flags.tag_in_layout.as_deref())?;
    let manifest = layout.blobs().read(&entry.digest)?;
    let refs = flags
        .destinations
        .iter()
        .map(|d| {
            d.parse::<kiln_oci::reference::Reference>()
                .with_context(|| format!("invalid --destination {d:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    let client = client(&flags.registry)?;
    // `--push-retry`: the whole push again after a failure, as `kiln build` does.
    let mut attempt = 0;
    let digest = loop {
        match client.push_image(&refs, &manifest, &entry.media_type, layout.blobs()) {
            Err(e) if attempt < flags.registry.push_retry => {
                eprintln!("warning: push failed, trying again (--push-retry): {e}");
                std::thread::sleep(client.config().retry.backoff(attempt));
                attempt += 1;
            }
            r => break r?,
        }
    };
    for r in &refs {
        println!("{r}@{digest}");
    }
    if let Some(p) = &flags.digest_file {
        std::fs::write(p, digest.to_string())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `kiln warm`: Kaniko's warmer, filling `--cache-dir` with base images.
fn warm(flags: &WarmFlags) -> Result<ExitCode> {
    init_logging(&flags.log, log_format(&flags.log)?)?;
    let platform = match &flags.custom_platform {
        Some(p) => p
            .parse()
            .with_context(|| format!("invalid --customPlatform {p:?}"))?,
        None => kiln_oci::platform::Platform::host(),
    };
    if flags.images.is_empty() && flags.dockerfile.is_none() {
        bail!("nothing to warm: give --image (repeatable) and/or --dockerfile");
    }
    let opts = kiln_build::cache::WarmOptions {
        images: flags.images.clone(),
        dockerfile: flags.dockerfile.clone(),
        build_args: resolve_build_args(&flags.build_args)?,
        cache_dir: flags.cache_dir.clone(),
        ttl: kiln_build::cache::parse_ttl(&flags.cache_ttl)
            .map_err(|e| anyhow::anyhow!("invalid --cache-ttl {:?}: {e}", flags.cache_ttl))?,
        force: flags.force,
        platform,
    };
    let outcomes = kiln_build::cache::warm(&opts, &client(&flags.registry)?)?;
    for o in outcomes {
        let what = if o.written {
            "cached"
        } else {
            "already cached"
        };
        println!("{what} {} as {}", o.reference, o.digest);
    }
    Ok(ExitCode::SUCCESS)
}

fn cache_ls(kiln_dir: Option<PathBuf>) -> Result<ExitCode> {
    let state = default_state_dir(kiln_dir.as_ref());
    let cache = kiln_build::cache::LocalCache::open(&state, kiln_build::cache::DEFAULT_TTL)?;
    let entries = cache.list()?;
    for e in &entries {
        let age = e.created.elapsed().map(|d| d.as_secs()).unwrap_or(0);
        match &e.layer {
            Some(l) => println!("{}  {}  {} bytes  {}s old", e.key, l.digest, l.size, age),
            None => println!("{}  (no layer)  {}s old", e.key, age),
        }
    }
    println!("{} entries in {}", entries.len(), state.display());
    Ok(ExitCode::SUCCESS)
}

/// Sizes like `500MB`, `2GiB`, `1000` (bytes).
fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("invalid size {s:?}: expected e.g. 500MB or 2GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        other => bail!("invalid size {s:?}: unknown unit {other:?}"),
    };
    Ok((n * mult) as u64)
}

fn cache_prune(kiln_dir: Option<PathBuf>, max_size: &str) -> Result<ExitCode> {
    let state = default_state_dir(kiln_dir.as_ref());
    let max = parse_size(max_size)?;
    let cache = kiln_build::cache::LocalCache::open(&state, kiln_build::cache::DEFAULT_TTL)?;
    // One budget for both. Unpacked trees are a cache of unpacking (rebuilt from the layers on
    // demand), so they go first, least recently used first, until the layers and the trees
    // left fit; the layer cache then gets what the trees kept (in use, or fitting) leave.
    let layers = cache.total_bytes()?;
    let trees = kiln_build::trees::prune(&state, max.saturating_sub(layers));
    let report = cache.prune(max.saturating_sub(trees.kept_bytes))?;
    let human = crate::render::human;
    println!(
        "unpacked trees: removed {} ({}), kept {} ({})",
        trees.removed,
        human(trees.removed_bytes),
        trees.kept,
        human(trees.kept_bytes)
    );
    println!(
        "layer cache: removed {} entries and {} layers ({}), kept {}",
        report.removed_entries,
        report.removed_blobs,
        human(report.freed_bytes),
        human(report.kept_bytes)
    );
    Ok(ExitCode::SUCCESS)
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and so in every thread spawned later) and
/// waits for them on a dedicated thread, which removes this process's build directories under
/// `state` (stage root file systems, RUN scratch directories that may hold a mounted secret,
/// an extracted context) and exits with 128 + the signal, as a shell reports it. RUN steps
/// reset their signal mask and die with kiln (PR_SET_PDEATHSIG).
pub fn cleanup_on_signals(state: &Path) {
    use nix::sys::signal::{SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    let state = state.to_path_buf();
    std::thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        eprintln!("kiln: {sig:?} received, removing this build's files");
        remove_own_dirs(&state);
        std::process::exit(128 + sig as i32);
    });
}

/// Removes `<state>/builds/<pid>-*` and `<state>/tmp/*-<pid>-*` of this process.
fn remove_own_dirs(state: &Path) {
    let pid = std::process::id().to_string();
    for (dir, matches) in [
        (
            "builds",
            Box::new(|n: &str| n.starts_with(&format!("{pid}-"))) as Box<dyn Fn(&str) -> bool>,
        ),
        ("tmp", Box::new(|n: &str| n.contains(&format!("-{pid}-")))),
    ] {
        let Ok(rd) = std::fs::read_dir(state.join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            if matches(&e.file_name().to_string_lossy()) {
                let _ = kiln_build::remove_tree(&e.path());
            }
        }
    }
}

#[cfg(test)]
mod state_dir_tests {
    use super::build_state_dir;
    use crate::flags::{BuildFlags, Cli, Command};
    use clap::Parser;
    use std::path::PathBuf;

    fn flags(args: &[&str]) -> BuildFlags {
        let mut argv = vec!["kiln", "build"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).expect("flags parse").command {
            Command::Build(b) => *b,
            other => panic!("not build: {other:?}"),
        }
    }

    #[test]
    fn secret_sources_follow_buildx() {
        use super::{parse_secret, SecretFrom};
        let env = |s: &str| match parse_secret(s).unwrap().source {
            SecretFrom::Env(v) => Some(v),
            SecretFrom::File(_) => None,
        };
        assert_eq!(
            env("id=tok,type=env,src=GITHUB_TOKEN").as_deref(),
            Some("GITHUB_TOKEN")
        );
        assert_eq!(env("id=tok,env=TOKEN_VAR").as_deref(), Some("TOKEN_VAR"));
        assert_eq!(env("id=tok").as_deref(), Some("tok"));
        // A file source must exist (checked before the build).
        assert!(parse_secret("id=tok,src=/nonexistent/kiln-secret").is_err());
        assert!(parse_secret("id=tok,type=file,src=/nonexistent/kiln-secret").is_err());
        let exe = std::env::current_exe().unwrap();
        assert!(matches!(
            parse_secret(&format!("id=tok,src={}", exe.display()))
                .unwrap()
                .source,
            SecretFrom::File(_)
        ));
    }

    #[test]
    fn docker_build_spellings_are_understood() {
        let f = flags(&[
            "--file",
            "Other.Dockerfile",
            "--platform",
            "linux/arm64",
            "--no-cache",
            "--cache=true",
        ]);
        assert_eq!(f.dockerfile, "Other.Dockerfile");
        assert_eq!(f.custom_platform, "linux/arm64");
        assert!(f.no_cache && f.cache);
        assert!(super::no_effect_warnings(&f)
            .iter()
            .any(|w| w.starts_with("--cache=true has no effect")));
        let f = flags(&["-t", "app:1"]);
        assert_eq!(f.docker_tags, ["app:1"]);
        assert!(f.destinations.is_empty(), "-t is not a destination");
    }

    #[test]
    fn kaniko_dir_is_the_state_dir_unless_kilns_own_is_given() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let dir = |args: &[&str], vars: &'static [(&'static str, &'static str)]| {
            build_state_dir(&flags(args), &env(vars))
        };
        let both: &[(&str, &str)] = &[("KILN_DIR", "/e/kiln"), ("KANIKO_DIR", "/e/kaniko")];
        let kaniko_env: &[(&str, &str)] = &[("KANIKO_DIR", "/e/kaniko")];
        let empty_kiln: &[(&str, &str)] = &[("KILN_DIR", ""), ("KANIKO_DIR", "/e/kaniko")];
        let p = PathBuf::from;
        assert_eq!(
            dir(&["--kiln-dir", "/f/kiln", "--kaniko-dir", "/f/k"], both),
            p("/f/kiln")
        );
        assert_eq!(dir(&["--kaniko-dir", "/f/k"], both), p("/f/k"));
        assert_eq!(dir(&[], both), p("/e/kiln"));
        assert_eq!(dir(&[], kaniko_env), p("/e/kaniko"));
        assert_eq!(dir(&[], empty_kiln), p("/e/kaniko"));
        assert_eq!(dir(&["--kiln-dir=/f/kiln"], kaniko_env), p("/f/kiln"));
    }
}

#[cfg(test)]
mod ssh_flag_tests {
    use super::{key_is_encrypted, parse_ssh, SshTools};
    use std::path::Path;

    fn which(p: &str) -> Option<std::path::PathBuf> {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|d| d.join(p))
            .find(|p| p.is_file())
    }

    #[test]
    fn ssh_values_as_buildx_takes_them() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let sock = tmp.path().join("agent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let env = Some(sock.clone().into_os_string());
        let specs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // `default` and a bare id take $SSH_AUTH_SOCK; `id=PATH` takes the path.
        let got = parse_ssh(
            &specs(&["default", "b", &format!("c={}", sock.display())]),
            env.clone(),
            &state,
            &SshTools::default(),
        )
        .unwrap();
        let ids: Vec<&str> = got.sources.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["default", "b", "c"]);
        assert!(got.sources.iter().all(|s| s.socket == sock));
        assert!(got.agents.is_empty());
        let err = |v: &[&str], env: Option<std::ffi::OsString>| {
            format!(
                "{:#}",
                parse_ssh(&specs(v), env, &state, &SshTools::default()).unwrap_err()
            )
        };
        assert!(err(&["default"], None).contains("SSH_AUTH_SOCK is not set"));
        assert!(err(&["a", "a"], env.clone()).contains("--ssh a: the id is given twice"));
        assert!(err(&["=x"], env.clone()).starts_with("invalid --ssh value"));
        let e = err(&["default=/nonexistent/agent"], None);
        assert!(
            e.contains("invalid --ssh default: the agent socket or key file cannot be read"),
            "{e}"
        );
        assert!(!e.contains("/nonexistent/agent"), "{e}");
        assert!(err(&[&format!("d={}", tmp.path().display())], None)
            .contains("neither an ssh-agent socket nor a key file"));
    }

    #[test]
    fn key_files_need_openssh_and_no_passphrase() {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        let key = tmp.path().join("id_test");
        std::fs::write(&key, "not really a key\n").unwrap();
        let spec = vec![format!("default={}", key.display())];
        // Without the tools: the message says what is needed and what to do instead.
        let none = SshTools {
            agent: tmp.path().join("no-ssh-agent"),
            add: tmp.path().join("no-ssh-add"),
        };
        let e = format!("{:#}", parse_ssh(&spec, None, &state, &none).unwrap_err());
        assert_eq!(
            e,
            "--ssh default=KEYFILE needs ssh-agent and ssh-add (openssh-client) on PATH; pass an agent socket instead"
        );
        let Some(keygen) = which("ssh-keygen").filter(|_| which("ssh-agent").is_some()) else {
            println!("skipped: openssh-client not installed (./scripts/test.sh installs it)");
            return;
        };
        let gen = |name: &str, pass: &str| {
            let k = tmp.path().join(name);
            let out = std::process::Command::new(&keygen)
                .args(["-q", "-t", "ed25519", "-C", "kiln-test", "-N", pass, "-f"])
                .arg(&k)
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            k
        };
        let plain = gen("plain", "");
        let locked = gen("locked", "a passphrase");
        assert!(!key_is_encrypted(&std::fs::read(&plain).unwrap()));
        assert!(key_is_encrypted(&std::fs::read(&locked).unwrap()));
        assert!(key_is_encrypted(
            b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"
        ));
        assert!(key_is_encrypted(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n"));
        // A passphrase-protected key: a clear error naming the file, and no agent left.
        let spec = vec![format!("default={},{}", plain.display(), locked.display())];
        let e = format!(
            "{:#}",
            parse_ssh(&spec, None, &state, &SshTools::default()).unwrap_err()
        );
        assert!(
            e.contains("is protected by a passphrase") && e.contains(&*locked.to_string_lossy()),
            "{e}"
        );
        // Not a key: ssh-add's own complaint, with the file's name.
        let e = format!(
            "{:#}",
            parse_ssh(
                &[format!("k={}", key.display())],
                None,
                &state,
                &SshTools::default()
            )
            .unwrap_err()
        );
        assert!(
            e.contains("ssh-add could not load") && e.contains("id_test"),
            "{e}"
        );
        // Two key files: one agent holding both, its socket in the state dir; gone on drop.
        let spec = vec![
            format!(
                "default={},{}",
                plain.display(),
                gen("second", "").display()
            ),
            format!("other={}", plain.display()),
        ];
        let setup = parse_ssh(&spec, None, &state, &SshTools::default()).unwrap();
        assert_eq!(setup.agents.len(), 2);
        let sock = setup.sources[0].socket.clone();
        assert!(sock.starts_with(state.join("tmp")), "{}", sock.display());
        let list = std::process::Command::new(which("ssh-add").unwrap())
            .arg("-l")
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&list.stdout).lines().count(),
            2,
            "{list:?}"
        );
        let pid = setup.agents[0].agent_pid;
        drop(setup);
        assert!(!sock.exists(), "the agent's socket outlived the build");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while Path::new(&format!("/proc/{pid}/status")).exists()
            && !std::fs::read_to_string(format!("/proc/{pid}/status"))
                .unwrap_or_default()
                .contains("State:\tZ")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent outlived the build"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

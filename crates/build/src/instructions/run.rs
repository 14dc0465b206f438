//! RUN: a command in the sandbox, against the stage's rootfs.
//!
//! The process gets the image config's environment plus the build args in scope (ENV wins on a
//! name clash), the config's USER and WORKDIR, the stage's SHELL for shell form, and heredoc
//! bodies as BuildKit passes them: a lone `RUN <<EOF` runs its body as the script (`#!` bodies
//! are executed as a file), any other heredoc is handed to the shell inline so that it does the
//! redirections itself. `--mount`s become sandbox mounts; secrets are written to a private file
//! outside the rootfs, mounted read-only, and removed after the step; ssh mounts bind a
//! forwarding socket to the caller's agent ([`super::ssh_agent`]) that lives as long as the step.

use super::ssh_agent::{AgentForward, ForwardError};
use crate::options::{SecretFrom, SecretSource, SshSource};
use kiln_dockerfile::{CommandLine, Heredoc, MountSpec, MountType, RunInstr, Sharing};
use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a RUN could not be set up (the command's own failure is an exit status, not this).
#[derive(Debug, thiserror::Error)]
pub enum RunSetupError {
    #[error("secret {id:?} is required but was not given (use --secret id={id},src=FILE)")]
    MissingSecret { id: String },
    #[error("reading secret {id:?} from {}: {source}", path.display())]
    SecretRead {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ssh agent {id:?} is required but was not given (use --ssh {id}=SOCKET, or --ssh {id} for $SSH_AUTH_SOCK)")]
    MissingSsh { id: String },
    #[error("--ssh {id}: {source}")]
    SshForward {
        id: String,
        #[source]
        source: ForwardError,
    },
    #[error("--mount: {0}")]
    Mount(String),
    #[error("preparing mount {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The argv of a RUN given the stage's shell.
pub fn argv(
    run: &RunInstr,
    shell: &[String],
    scratch: &Path,
) -> Result<Vec<String>, RunSetupError> {
    match &run.cmd {
        CommandLine::Exec(v) => Ok(v.clone()),
        CommandLine::Shell(text) => {
            if run.heredocs.is_empty() {
                let mut v = shell.to_vec();
                v.push(text.clone());
                return Ok(v);
            }
            let only = run.heredocs.len() == 1 && is_lone_heredoc(text, &run.heredocs[0]);
            if only {
                let body = run.heredocs[0].chomped();
                if body.starts_with("#!") {
                    // Run the body as an executable file, as BuildKit does for shebang scripts.
                    let path = scratch.join("heredoc-script");
                    write_private(&path, body.as_bytes(), 0o755)?;
                    return Ok(vec![format!("/.kiln-run/{}", "heredoc-script")]);
                }
                let mut v = shell.to_vec();
                v.push(body);
                return Ok(v);
            }
            // BuildKit reconstitutes the heredocs after the command line and lets the shell
            // handle them: `cmd\n<body><NAME>` for each.
            let mut script = text.clone();
            for h in &run.heredocs {
                script.push('\n');
                script.push_str(&h.content);
                script.push_str(&h.name);
            }
            let mut v = shell.to_vec();
            v.push(script);
            Ok(v)
        }
    }
}

fn is_lone_heredoc(text: &str, h: &Heredoc) -> bool {
    let t = text.trim();
    let rest = t
        .strip_prefix("<<-")
        .or_else(|| t.strip_prefix("<<"))
        .unwrap_or("");
    rest.trim_matches(['"', '\'']) == h.name
}

fn write_private(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RunSetupError> {
    let io = |source| RunSetupError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    std::io::Write::write_all(&mut f, bytes).map_err(io)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(())
}

/// Everything a RUN's mounts need from the engine.
pub struct MountContext<'a> {
    /// Per-step private directory outside the rootfs (secrets, scripts); removed afterwards.
    pub scratch: &'a Path,
    /// Persistent directory for `type=cache` mounts.
    pub cache_root: &'a Path,
    pub secrets: &'a [SecretSource],
    /// `--ssh` agents, by id.
    pub ssh: &'a [SshSource],
    /// The environment the RUN gets before its mounts (`SSH_AUTH_SOCK` is set only when this
    /// does not set it, as BuildKit does).
    pub env: &'a [(String, String)],
    /// Resolves `from=` of a bind mount to the host path of `source` inside that stage's root.
    pub resolve_from: &'a dyn Fn(&str, &str) -> Result<PathBuf, String>,
    /// Resolves `source` inside the build context.
    pub resolve_context: &'a dyn Fn(&str) -> Result<PathBuf, String>,
    /// The step's workdir (relative mount targets are relative to it).
    pub workdir: &'a str,
}

/// Copies `src` (a file, or a directory tree with symlinks copied as symlinks, never
/// followed; fifos, sockets and devices left out) to `dst`, for a `type=bind,rw` mount or
/// the first use of a `type=cache,from=` mount.
/// Directory modes are set after their contents are in (a 0555 directory would refuse them).
fn copy_for_rw(src: &Path, dst: &Path) -> Result<(), RunSetupError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RunSetupError::Io { path, source }
    };
    let mut dirs = Vec::new();
    for e in walkdir::WalkDir::new(src).follow_links(false) {
        let e = e.map_err(|e| RunSetupError::Io {
            path: src.to_path_buf(),
            source: e.into(),
        })?;
        let rel = e.path().strip_prefix(src).unwrap_or(Path::new(""));
        let to = if rel.as_os_str().is_empty() {
            dst.to_path_buf()
        } else {
            dst.join(rel)
        };
        let md = e.metadata().map_err(|err| RunSetupError::Io {
            path: e.path().to_path_buf(),
            source: err.into(),
        })?;
        let ft = e.file_type();
        if ft.is_dir() {
            fs::create_dir_all(&to).map_err(io(&to))?;
            dirs.push((to.clone(), md.permissions()));
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path()).map_err(io(e.path()))?;
            std::os::unix::fs::symlink(target, &to).map_err(io(&to))?;
        } else if ft.is_file() {
            fs::copy(e.path(), &to).map_err(io(e.path()))?;
        } else {
            continue;
        }
        // The source's owner, so a non-root step can write where it could in the source
        // (an id this user namespace does not map stays the copier's: best effort).
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::lchown(&to, Some(md.uid()), Some(md.gid()));
    }
    for (dir, perm) in dirs.into_iter().rev() {
        fs::set_permissions(&dir, perm).map_err(io(&dir))?;
    }
    Ok(())
}

fn abs_target(target: &str, workdir: &str) -> String {
    if target.starts_with('/') {
        target.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), target)
    }
}

/// What a RUN's `--mount` flags give it: sandbox mounts, and environment variables for that
/// RUN's process only, never in the config, the history or a cache key: secrets
/// (`type=secret,env=NAME`) and `SSH_AUTH_SOCK` for ssh mounts.
#[derive(Default)]
pub struct StepMounts {
    pub mounts: Vec<kiln_sandbox::Mount>,
    /// Set (replacing a same-named variable) in the RUN's environment.
    pub secret_env: Vec<(String, String)>,
    /// flock(2)s on the step's cache mounts (`sharing=`); keep them until the step ends.
    pub cache_locks: Vec<fs::File>,
    /// The relays behind the step's ssh mounts; keep them until the step ends (dropping one
    /// closes its socket and every connection through it).
    pub ssh_agents: Vec<AgentForward>,
}

impl std::fmt::Debug for StepMounts {
    // Never the secret values.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.secret_env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("StepMounts")
            .field("mounts", &self.mounts)
            .field("secret_env", &names)
            .field("ssh_agents", &self.ssh_agents.len())
            .finish()
    }
}

/// The sandbox mounts (and secret environment) for a RUN's `--mount` flags.
pub fn mounts(specs: &[MountSpec], mc: &MountContext<'_>) -> Result<StepMounts, RunSetupError> {
    let mut out = Vec::new();
    let mut secret_env = Vec::new();
    let mut locks = Vec::new();
    let mut ssh_agents = Vec::new();
    let mut ssh_index = 0usize;
    // Shared and locked caches are locked once per step, in the strongest mode any of its
    // mounts asks for, and in name order: two mounts of one cache in a step (or two builds
    // taking two caches in opposite orders) would otherwise wait for each other forever, as
    // flock(2) locks belong to each open file. Private caches never wait (try-lock).
    let mut held: std::collections::BTreeMap<String, Sharing> = std::collections::BTreeMap::new();
    for m in specs.iter().filter(|m| m.kind == MountType::Cache) {
        let sharing = m.sharing.unwrap_or(Sharing::Shared);
        if sharing == Sharing::Private {
            continue;
        }
        let Some(target) = &m.target else { continue };
        let id =
            m.id.clone()
                .unwrap_or_else(|| abs_target(target, mc.workdir));
        let name = kiln_oci::Digest::of(id.as_bytes()).hex().to_string();
        let e = held.entry(name).or_insert(sharing);
        if sharing == Sharing::Locked {
            *e = Sharing::Locked;
        }
    }
    for (name, sharing) in &held {
        let (_, lock) = cache_instance(mc.cache_root, name, Some(*sharing))?;
        locks.push(lock);
    }
    for (i, m) in specs.iter().enumerate() {
        match m.kind {
            MountType::Secret => {
                let id =
                    m.id.clone()
                        .or_else(|| {
                            m.target
                                .as_deref()
                                .and_then(|t| t.rsplit('/').next())
                                .map(str::to_string)
                        })
                        .ok_or_else(|| {
                            RunSetupError::Mount("type=secret needs id= or target=".into())
                        })?;
                let Some(src) = mc.secrets.iter().find(|s| s.id == id) else {
                    if m.required {
                        return Err(RunSetupError::MissingSecret { id });
                    }
                    continue;
                };
                let bytes = match &src.source {
                    SecretFrom::File(p) => {
                        fs::read(p).map_err(|source| RunSetupError::SecretRead {
                            id: id.clone(),
                            path: p.clone(),
                            source,
                        })?
                    }
                    SecretFrom::Env(var) => match std::env::var_os(var) {
                        Some(v) => std::os::unix::ffi::OsStrExt::as_bytes(v.as_os_str()).to_vec(),
                        None if m.required => return Err(RunSetupError::MissingSecret { id }),
                        None => continue,
                    },
                };
                if let Some(var) = &m.env {
                    secret_env.push((var.clone(), String::from_utf8_lossy(&bytes).into_owned()));
                    if m.target.is_none() {
                        // env= alone: no file (BuildKit mounts a file only when a target is given).
                        continue;
                    }
                }
                let path = mc.scratch.join(format!("secret-{i}"));
                write_private(&path, &bytes, m.mode.unwrap_or(0o400))?;
                if m.uid.is_some() || m.gid.is_some() {
                    let _ = nix_chown(&path, m.uid, m.gid);
                }
                let target = m
                    .target
                    .clone()
                    .unwrap_or_else(|| format!("/run/secrets/{id}"));
                out.push(kiln_sandbox::Mount::Bind {
                    source: path,
                    target: abs_target(&target, mc.workdir),
                    readonly: true,
                });
            }
            MountType::Cache => {
                let target = m
                    .target
                    .clone()
                    .ok_or_else(|| RunSetupError::Mount("type=cache needs target=".into()))?;
                let target = abs_target(&target, mc.workdir);
                // `from=` (a stage, or an image) and `source=` (a path in it, default its
                // root): what a new cache directory starts as (BuildKit: "a base of the
                // cache mount"); an existing one keeps what earlier steps left.
                let seed = match &m.from {
                    Some(from) => Some(
                        (mc.resolve_from)(from, m.source.as_deref().unwrap_or("/"))
                            .map_err(RunSetupError::Mount)?,
                    ),
                    None => None,
                };
                // The id was validated by the parser (no `..`, no `/` escapes); hash it to a
                // fixed-length directory name so it can never form a path.
                let id = m.id.clone().unwrap_or_else(|| target.clone());
                let name = kiln_oci::Digest::of(id.as_bytes()).hex().to_string();
                let dir = if held.contains_key(&name) {
                    mc.cache_root.join(&name)
                } else {
                    let (dir, lock) = cache_instance(mc.cache_root, &name, m.sharing)?;
                    locks.push(lock);
                    dir
                };
                if !dir.exists() {
                    // Made (empty, or seeded) under an exclusive lock of its own: a step
                    // sharing the cache id at the same time, in a parallel stage or another
                    // build on this state dir, waits and then finds it whole; a seed is
                    // copied aside and renamed in, never over a directory in use.
                    let io = |path: &Path, source| RunSetupError::Io {
                        path: path.to_path_buf(),
                        source,
                    };
                    let instance = dir.file_name().unwrap_or_default().to_string_lossy();
                    let lock_path = mc.cache_root.join(format!("{instance}.init.lock"));
                    let init = fs::OpenOptions::new()
                        .create(true)
                        .truncate(false)
                        .write(true)
                        .open(&lock_path)
                        .map_err(|e| io(&lock_path, e))?;
                    init.lock().map_err(|e| io(&lock_path, e))?;
                    match &seed {
                        _ if dir.exists() => {}
                        Some(seed) => {
                            let tmp = mc.scratch.join(format!("cache-seed-{instance}"));
                            copy_for_rw(seed, &tmp)?;
                            fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))?;
                        }
                        None => {
                            fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
                            fs::set_permissions(
                                &dir,
                                fs::Permissions::from_mode(m.mode.unwrap_or(0o755)),
                            )
                            .map_err(|e| io(&dir, e))?;
                            let _ = nix_chown(&dir, m.uid.or(Some(0)), m.gid.or(Some(0)));
                        }
                    }
                }
                out.push(kiln_sandbox::Mount::Bind {
                    source: dir,
                    target,
                    readonly: m.readonly,
                });
            }
            MountType::Bind => {
                let target = m
                    .target
                    .clone()
                    .ok_or_else(|| RunSetupError::Mount("type=bind needs target=".into()))?;
                let rw = !m.readonly
                    && m.raw.split(',').any(|kv| {
                        kv == "rw"
                            || kv == "readwrite"
                            || kv == "readonly=false"
                            || kv == "ro=false"
                    });
                let source = m.source.clone().unwrap_or_else(|| "/".into());
                let host = match &m.from {
                    Some(from) => (mc.resolve_from)(from, &source),
                    None => (mc.resolve_context)(&source),
                }
                .map_err(RunSetupError::Mount)?;
                // `rw`: BuildKit lets the step write and throws the writes away. The step gets
                // a private copy in its scratch directory (removed with it), so nothing it
                // writes reaches the context, the other stage or a layer.
                let host = if rw {
                    let copy = mc.scratch.join(format!("bind-rw-{}", out.len()));
                    copy_for_rw(&host, &copy)?;
                    copy
                } else {
                    host
                };
                out.push(kiln_sandbox::Mount::Bind {
                    source: host,
                    target: abs_target(&target, mc.workdir),
                    readonly: !rw,
                });
            }
            MountType::Tmpfs => {
                let target = m
                    .target
                    .clone()
                    .ok_or_else(|| RunSetupError::Mount("type=tmpfs needs target=".into()))?;
                out.push(kiln_sandbox::Mount::Tmpfs {
                    target: abs_target(&target, mc.workdir),
                    size: m.size,
                });
            }
            MountType::Ssh => {
                // BuildKit (client/llb/exec.go): an ssh mount without target= is at
                // /run/buildkit/ssh_agent.<n>, n counting the step's ssh mounts; the first one
                // is SSH_AUTH_SOCK unless the environment already names a socket. The variable
                // is set even when an optional mount's id was not given (the LLB is made
                // before the session is asked), so a RUN can test `-S "$SSH_AUTH_SOCK"`.
                let n = ssh_index;
                ssh_index += 1;
                let id = m.id.clone().unwrap_or_else(|| "default".into());
                let target = abs_target(
                    &m.target
                        .clone()
                        .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}")),
                    mc.workdir,
                );
                if n == 0 && !mc.env.iter().any(|(k, _)| k == "SSH_AUTH_SOCK") {
                    secret_env.push(("SSH_AUTH_SOCK".into(), target.clone()));
                }
                let Some(src) = mc.ssh.iter().find(|s| s.id == id) else {
                    if m.required {
                        return Err(RunSetupError::MissingSsh { id });
                    }
                    // Optional and not given: the step runs without the socket (BuildKit).
                    continue;
                };
                // BuildKit's defaults for the socket inside: mode 0600, owned by 0:0.
                let fwd = AgentForward::start(
                    &src.socket,
                    &mc.scratch.join(format!("ssh-{i}")),
                    m.mode.unwrap_or(0o600),
                    m.uid.unwrap_or(0),
                    m.gid.unwrap_or(0),
                )
                .map_err(|source| RunSetupError::SshForward {
                    id: id.clone(),
                    source,
                })?;
                // Read-only: the step cannot chmod the file. connect(2) checks write
                // permission on the socket inode (unix(7)), which a read-only mount keeps.
                out.push(kiln_sandbox::Mount::Bind {
                    source: fwd.socket().to_path_buf(),
                    target,
                    readonly: true,
                });
                ssh_agents.push(fwd);
            }
        }
    }
    Ok(StepMounts {
        mounts: out,
        secret_env,
        cache_locks: locks,
        ssh_agents,
    })
}

/// Picks the directory of a cache mount and locks it for the step, per `sharing=`
/// (BuildKit's semantics, across kiln processes sharing a state dir, with flock(2) on
/// `<name>.lock` next to the directory):
/// - `shared` (default): a shared lock; any number of steps use the directory at once;
/// - `locked`: an exclusive lock; the step waits until no other step uses the directory;
/// - `private`: the first instance (`<name>`, `<name>-1`, ...) nobody holds, locked
///   exclusively, so a busy cache gives the step a fresh directory instead of waiting.
fn cache_instance(
    root: &Path,
    name: &str,
    sharing: Option<Sharing>,
) -> Result<(PathBuf, fs::File), RunSetupError> {
    let open = |lock_path: &Path| {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(lock_path)
            .map_err(|source| RunSetupError::Io {
                path: lock_path.to_path_buf(),
                source,
            })
    };
    let lock_err = |lock_path: &Path, source: std::io::Error| RunSetupError::Io {
        path: lock_path.to_path_buf(),
        source,
    };
    match sharing.unwrap_or(Sharing::Shared) {
        Sharing::Shared | Sharing::Locked => {
            let lock_path = root.join(format!("{name}.lock"));
            let f = open(&lock_path)?;
            if sharing == Some(Sharing::Locked) {
                f.lock()
            } else {
                f.lock_shared()
            }
            .map_err(|e| lock_err(&lock_path, e))?;
            Ok((root.join(name), f))
        }
        Sharing::Private => {
            // Bounded: each busy instance is a running step holding it.
            for n in 0u32..1024 {
                let instance = if n == 0 {
                    name.to_string()
                } else {
                    format!("{name}-{n}")
                };
                let lock_path = root.join(format!("{instance}.lock"));
                let f = open(&lock_path)?;
                match f.try_lock() {
                    Ok(()) => return Ok((root.join(instance), f)),
                    Err(fs::TryLockError::WouldBlock) => continue,
                    Err(fs::TryLockError::Error(e)) => return Err(lock_err(&lock_path, e)),
                }
            }
            Err(RunSetupError::Mount(format!(
                "type=cache,sharing=private: 1024 instances of this cache are in use under {}",
                root.display()
            )))
        }
    }
}

fn nix_chown(path: &Path, uid: Option<u32>, gid: Option<u32>) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, uid, gid)
}

/// BuildKit's history text for a RUN: `RUN [|N K=V…] <argv joined> # buildkit`.
pub fn history(argv: &[String], history_args: &[(String, String)]) -> String {
    let mut s = String::from("RUN ");
    if !history_args.is_empty() {
        s.push_str(&format!("|{} ", history_args.len()));
        for (k, v) in history_args {
            s.push_str(&format!("{k}={v} "));
        }
    }
    s.push_str(&argv.join(" "));
    s.push_str(" # buildkit");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cache_mounted_twice_in_a_step_does_not_wait_for_itself() {
        // Found in review: two mounts of one cache id, locked or shared+locked, each took
        // its own flock(2) and the second waited for the first forever.
        let tmp = tempfile::tempdir().unwrap();
        let spec =
            |raw: &str| kiln_dockerfile::parse_mount(raw, &|v| Ok(v.to_string()), true).unwrap();
        for (a, b) in [
            ("locked", "locked"),
            ("shared", "locked"),
            ("locked", "shared"),
        ] {
            let specs = vec![
                spec(&format!("type=cache,id=x,target=/a,sharing={a}")),
                spec(&format!("type=cache,id=x,target=/b,sharing={b}")),
                spec("type=cache,id=y,target=/c,sharing=locked"),
            ];
            let dir = tmp.path().join(format!("{a}-{b}"));
            let (tx, rx) = std::sync::mpsc::channel();
            // Detached: if it hangs, the assertion below fails instead of the test hanging.
            std::thread::spawn(move || {
                let scratch = dir.join("scratch");
                let cache_root = dir.join("cache");
                std::fs::create_dir_all(&scratch).unwrap();
                std::fs::create_dir_all(&cache_root).unwrap();
                let from = |_: &str, _: &str| -> Result<PathBuf, String> { Err("no".into()) };
                let ctx = |_: &str| -> Result<PathBuf, String> { Err("no".into()) };
                let mc = MountContext {
                    scratch: &scratch,
                    cache_root: &cache_root,
                    secrets: &[],
                    ssh: &[],
                    env: &[],
                    resolve_from: &from,
                    resolve_context: &ctx,
                    workdir: "/",
                };
                let n = mounts(&specs, &mc).map(|m| m.mounts.len());
                let _ = tx.send(n.is_ok_and(|n| n == 3));
            });
            assert_eq!(
                rx.recv_timeout(std::time::Duration::from_secs(10)),
                Ok(true),
                "{a}+{b}: the step waited for its own lock"
            );
        }
    }

    #[test]
    fn ssh_mounts_targets_env_and_required() {
        let tmp = tempfile::tempdir().unwrap();
        let agent = tmp.path().join("agent.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&agent).unwrap();
        let scratch = tmp.path().join("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let spec =
            |raw: &str| kiln_dockerfile::parse_mount(raw, &|v| Ok(v.to_string()), true).unwrap();
        let ssh = [SshSource {
            id: "default".into(),
            socket: agent.clone(),
        }];
        let from = |_: &str, _: &str| -> Result<PathBuf, String> { Err("no".into()) };
        let ctx = |_: &str| -> Result<PathBuf, String> { Err("no".into()) };
        let run = |specs: &[MountSpec], env: &[(String, String)], ssh: &[SshSource]| {
            let mc = MountContext {
                scratch: &scratch,
                cache_root: tmp.path(),
                secrets: &[],
                ssh,
                env,
                resolve_from: &from,
                resolve_context: &ctx,
                workdir: "/src",
            };
            mounts(specs, &mc)
        };
        let bind_targets = |m: &StepMounts| -> Vec<String> {
            m.mounts.iter().map(|m| m.target().to_string()).collect()
        };
        // Default targets count the step's ssh mounts (not all mounts); the first is
        // SSH_AUTH_SOCK; a relative target is under the workdir; an optional mount whose id
        // was not given is skipped.
        let specs = [
            spec("type=tmpfs,target=/t"),
            spec("type=ssh"),
            spec("type=ssh,id=other"),
            spec("type=ssh,target=rel.sock"),
        ];
        let m = run(&specs, &[], &ssh).unwrap();
        assert_eq!(
            bind_targets(&m),
            ["/t", "/run/buildkit/ssh_agent.0", "/src/rel.sock"]
        );
        assert_eq!(
            m.secret_env,
            [(
                "SSH_AUTH_SOCK".to_string(),
                "/run/buildkit/ssh_agent.0".to_string()
            )]
        );
        assert_eq!(m.ssh_agents.len(), 2);
        drop(m);
        // An SSH_AUTH_SOCK the image or a build arg sets is kept (BuildKit).
        let env = [("SSH_AUTH_SOCK".to_string(), "/mine".to_string())];
        let m = run(&specs[1..2], &env, &ssh).unwrap();
        assert!(m.secret_env.is_empty());
        // Not given: the variable still names the target, no mount.
        let m = run(&specs[1..2], &[], &[]).unwrap();
        assert!(m.mounts.is_empty());
        assert_eq!(m.secret_env[0].1, "/run/buildkit/ssh_agent.0");
        // required=true: an error naming the id and the flag.
        let e = run(&[spec("type=ssh,id=deploy,required=true")], &[], &ssh).unwrap_err();
        assert!(matches!(&e, RunSetupError::MissingSsh { id } if id == "deploy"));
        assert!(e.to_string().contains("--ssh deploy"), "{e}");
    }

    #[test]
    fn cache_mount_sharing_modes() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // shared: two holders at once, same directory.
        let (a, _la) = cache_instance(r, "c", None).unwrap();
        let (b, _lb) = cache_instance(r, "c", Some(Sharing::Shared)).unwrap();
        assert_eq!(a, b);
        // private while `c` is held: the next free instance.
        let (p, lp) = cache_instance(r, "c", Some(Sharing::Private)).unwrap();
        assert_eq!(p, r.join("c-1"));
        let (p2, _lp2) = cache_instance(r, "c", Some(Sharing::Private)).unwrap();
        assert_eq!(p2, r.join("c-2"));
        drop(lp);
        let (p3, _lp3) = cache_instance(r, "c", Some(Sharing::Private)).unwrap();
        assert_eq!(p3, r.join("c-1"), "a released instance is reused");
        drop((_la, _lb));
        // locked: waits while another step holds the cache.
        let (_, held) = cache_instance(r, "d", Some(Sharing::Locked)).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let dir = r.to_path_buf();
        let waiter = std::thread::spawn(move || {
            let got = cache_instance(&dir, "d", Some(Sharing::Locked)).map(|(p, _)| p);
            tx.send(got.is_ok()).unwrap();
        });
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "locked cache entered while held"
        );
        drop(held);
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(true)
        );
        waiter.join().unwrap();
    }

    fn heredoc(name: &str, content: &str) -> Heredoc {
        Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
            chomp: false,
            file_descriptor: 0,
        }
    }

    fn run(cmd: CommandLine, heredocs: Vec<Heredoc>) -> RunInstr {
        RunInstr {
            cmd,
            heredocs,
            mounts: vec![],
            network: None,
            security: None,
        }
    }

    #[test]
    fn shell_and_exec_forms() {
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(
            argv(
                &run(CommandLine::Shell("echo hi".into()), vec![]),
                &sh,
                tmp.path()
            )
            .unwrap(),
            vec!["/bin/sh", "-c", "echo hi"]
        );
        assert_eq!(
            argv(
                &run(CommandLine::Exec(vec!["a".into()]), vec![]),
                &sh,
                tmp.path()
            )
            .unwrap(),
            vec!["a"]
        );
    }

    #[test]
    fn heredoc_forms() {
        let sh = vec!["/bin/sh".to_string(), "-c".to_string()];
        let tmp = tempfile::tempdir().unwrap();
        let lone = run(
            CommandLine::Shell("<<EOF".into()),
            vec![heredoc("EOF", "echo a\necho b\n")],
        );
        assert_eq!(
            argv(&lone, &sh, tmp.path()).unwrap(),
            vec!["/bin/sh", "-c", "echo a\necho b\n"]
        );
        let inline = run(
            CommandLine::Shell("cat <<EOF > /f".into()),
            vec![heredoc("EOF", "x\n")],
        );
        assert_eq!(
            argv(&inline, &sh, tmp.path()).unwrap(),
            vec!["/bin/sh", "-c", "cat <<EOF > /f\nx\nEOF"]
        );
    }

    #[test]
    fn history_text() {
        assert_eq!(
            history(
                &["/bin/sh".into(), "-c".into(), "make".into()],
                &[("A".into(), "1".into())]
            ),
            "RUN |1 A=1 /bin/sh -c make # buildkit"
        );
    }
}

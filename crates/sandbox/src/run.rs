//! [`run`]: prepare in the parent, fork/clone, supervise, clean up.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::pipe2;

use crate::child::{self, ChildMode, Msg, Op, OpEntry, Plan, Step, MSG_FATAL, MSG_WARN};
use crate::error::SandboxError;
use crate::idmap::{MapPlan, MapSources};
use crate::resolve::{Kind, Root, Stub, Volatile};
use crate::{ExitStatus, Isolation, Mount, Network, Output, RunOutcome, RunSpec, DEFAULT_PATH};

/// Device nodes bound from the host into the step's `/dev` (and whether they are required).
const DEV_NODES: [(&str, bool); 6] = [
    ("null", true),
    ("zero", true),
    ("full", false),
    ("random", true),
    ("urandom", true),
    ("tty", false),
];

/// Bound on the host resolv.conf copied into the step.
const MAX_RESOLV_CONF: u64 = 64 << 10;

/// Runs one RUN step: see the crate docs. Blocks until the command and every process it
/// started are gone; output is streamed to `stdout`/`stderr` meanwhile.
///
/// A command that could not be started gives an error ([`SandboxError::exit_code`] says 127
/// or 126 where docker would exit so); a command that ran gives `Ok` with its status.
pub fn run(
    spec: &RunSpec,
    stdout: Output<'_>,
    stderr: Output<'_>,
) -> Result<RunOutcome, SandboxError> {
    validate(spec)?;
    let container = spec.isolation == Isolation::Container;
    let root = Root::open(if container {
        Path::new("/")
    } else {
        &spec.rootfs
    })?;
    let mut warnings = Vec::new();
    let mut stubs: Vec<Stub> = Vec::new();
    let mut volatile: Vec<Volatile> = Vec::new();
    let mut scratch: Option<Scratch> = None;
    let result = run_in(
        spec,
        &root,
        &mut stubs,
        &mut volatile,
        &mut scratch,
        &mut warnings,
        stdout,
        stderr,
    );
    // Before the stubs: the step's leftovers come out of the directories first, then the
    // stubs (device nodes, /dev itself) can go.
    for v in &volatile {
        if let Err(e) = root.clear_volatile(v) {
            warnings.push(format!(
                "what the step left in a volatile directory stays: {e}"
            ));
        }
    }
    warnings.extend(root.remove_stubs(&mut stubs));
    drop(scratch);
    // With an outcome the caller gets the warnings (and shows them); with an error this log
    // is their only record.
    for w in &warnings {
        if result.is_ok() {
            tracing::debug!("{w}");
        } else {
            tracing::warn!("{w}");
        }
    }
    result.map(|(status, excluded_paths)| RunOutcome {
        status,
        excluded_paths,
        warnings,
    })
}

fn invalid(what: impl Into<String>) -> SandboxError {
    SandboxError::InvalidSpec { what: what.into() }
}

fn cstring(field: &str, s: impl Into<Vec<u8>>) -> Result<CString, SandboxError> {
    CString::new(s).map_err(|_| invalid(format!("{field} contains a NUL byte")))
}

fn validate(spec: &RunSpec) -> Result<(), SandboxError> {
    if spec.argv.is_empty() || spec.argv[0].is_empty() {
        return Err(invalid("argv is empty"));
    }
    if !spec.cwd.starts_with('/') {
        return Err(invalid(format!("cwd {:?} is not absolute", spec.cwd)));
    }
    for (k, _) in &spec.env {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(format!("environment variable name {k:?}")));
        }
    }
    for m in &spec.mounts {
        if !m.target().starts_with('/') {
            return Err(invalid(format!(
                "mount target {:?} is not absolute",
                m.target()
            )));
        }
    }
    // sethostname(2): at most HOST_NAME_MAX (64) bytes.
    if spec.hostname.is_empty()
        || spec.hostname.len() > 64
        || spec.hostname.contains(['/', '\n', '\0'])
    {
        return Err(invalid(format!("hostname {:?}", spec.hostname)));
    }
    if spec.network == Network::None && spec.isolation != Isolation::Userns {
        return Err(invalid(format!(
            "network none needs userns isolation, not {}",
            spec.isolation
        )));
    }
    Ok(())
}

/// The private directory holding hosts, resolv.conf and hostname; removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Scratch {
    fn create(spec: &RunSpec) -> Result<Scratch, SandboxError> {
        let template = spec.host.scratch.join("kiln-run-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template).map_err(|e| SandboxError::Scratch {
            path: template.clone(),
            source: e.into(),
        })?;
        let scratch = Scratch { dir };
        let hosts = format!(
            "127.0.0.1\tlocalhost {h}\n::1\tlocalhost ip6-localhost ip6-loopback\n",
            h = spec.hostname
        );
        let mut resolv = Vec::new();
        if let Ok(f) = std::fs::File::open(&spec.host.resolv_conf) {
            let _ = f.take(MAX_RESOLV_CONF).read_to_end(&mut resolv);
        }
        for (name, content) in [
            ("hosts", hosts.into_bytes()),
            ("resolv.conf", resolv),
            ("hostname", format!("{}\n", spec.hostname).into_bytes()),
        ] {
            let path = scratch.dir.join(name);
            std::fs::write(&path, content)
                .map_err(|source| SandboxError::Scratch { path, source })?;
        }
        // mkdtemp gives 0700; the step (any uid) must be able to read the files.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&scratch.dir, std::fs::Permissions::from_mode(0o755)).map_err(
            |source| SandboxError::Scratch {
                path: scratch.dir.clone(),
                source,
            },
        )?;
        Ok(scratch)
    }
}

/// Builds the environment: the caller's, plus PATH and HOME defaults.
fn environment(spec: &RunSpec, root: &Root, warnings: &mut Vec<String>) -> Vec<(String, String)> {
    let mut env = spec.env.clone();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        let home = match crate::userdb::home_for_uid(&root.path, spec.user.uid) {
            Ok(h) => h.unwrap_or_else(|| "/".into()),
            Err(e) => {
                warnings.push(format!("HOME set to /: {e}"));
                "/".into()
            }
        };
        env.push(("HOME".into(), home));
    }
    env
}

/// Paths execve is tried with, in order (execvp(3) semantics over the step's PATH).
fn exec_candidates(argv0: &str, env: &[(String, String)]) -> Vec<String> {
    if argv0.contains('/') {
        return vec![argv0.to_string()];
    }
    let path = env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map_or(DEFAULT_PATH, |(_, v)| v.as_str());
    path.split(':')
        .map(|d| if d.is_empty() { "." } else { d })
        .map(|d| format!("{}/{argv0}", d.trim_end_matches('/')))
        .collect()
}

/// Parent-side description of each op, for messages.
struct Ops {
    entries: Vec<OpEntry>,
    descs: Vec<String>,
}

impl Ops {
    fn push(&mut self, op: Op, optional: bool, desc: String) {
        self.entries.push(OpEntry { op, optional });
        self.descs.push(desc);
    }
}

fn host_c(p: &Path) -> Result<CString, SandboxError> {
    use std::os::unix::ffi::OsStrExt;
    cstring("path", p.as_os_str().as_bytes())
}

/// The mounts of a namespaced step, as ops on host paths.
fn plan_mounts(
    spec: &RunSpec,
    root: &Root,
    base: &Path,
    scratch: &Scratch,
    stubs: &mut Vec<Stub>,
    excluded: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Ops, SandboxError> {
    let mut ops = Ops {
        entries: Vec::new(),
        descs: Vec::new(),
    };
    let c = |s: &str| cstring("mount option", s);
    // Targets are resolved (and stubs created) in the rootfs; the mounts go on the same
    // paths under `base`, which is the rootfs itself or the overlay's mount point.
    let at = |r: &crate::resolve::Resolved| base.join(r.in_root.trim_start_matches('/'));

    let proc_ = root.ensure("/proc", Kind::Dir, stubs)?;
    ops.push(
        Op::Proc {
            target: host_c(&at(&proc_))?,
            fallback: host_c(&spec.host.proc)?,
        },
        false,
        format!("mounting proc on {}", proc_.in_root),
    );
    excluded.push(proc_.in_root);

    // Optional: a RUN that does not look at /sys must not fail where neither sysfs nor a bind
    // of the host's is allowed (a locked-down pod); the failure is a warning.
    let sys = root.ensure("/sys", Kind::Dir, stubs)?;
    ops.push(
        Op::Sys {
            target: host_c(&at(&sys))?,
            fallback: host_c(&spec.host.sys)?,
        },
        true,
        format!("mounting sysfs on {}", sys.in_root),
    );
    excluded.push(sys.in_root);

    let dev = root.ensure("/dev", Kind::Dir, stubs)?;
    let d = &at(&dev);
    ops.push(
        Op::Mount {
            src: Some(c("tmpfs")?),
            target: host_c(d)?,
            fstype: Some(c("tmpfs")?),
            flags: libc::MS_NOSUID | libc::MS_STRICTATIME,
            data: Some(c("mode=755,size=65536k")?),
        },
        false,
        format!("mounting tmpfs on {}", dev.in_root),
    );
    for (name, required) in DEV_NODES {
        let target = host_c(&d.join(name))?;
        ops.push(
            Op::Touch {
                path: target.clone(),
            },
            !required,
            format!("creating /dev/{name}"),
        );
        ops.push(
            Op::Mount {
                src: Some(host_c(&spec.host.dev.join(name))?),
                target,
                fstype: None,
                flags: libc::MS_BIND,
                data: None,
            },
            !required,
            format!(
                "binding {} on /dev/{name}",
                spec.host.dev.join(name).display()
            ),
        );
    }
    for (dir, mode) in [("pts", 0o755), ("shm", 0o1777), ("mqueue", 0o1777)] {
        ops.push(
            Op::Mkdir {
                path: host_c(&d.join(dir))?,
                mode,
            },
            false,
            format!("creating /dev/{dir}"),
        );
    }
    // devpts(5): a private instance; gid=5 is left out because it may not be mapped.
    ops.push(
        Op::Mount {
            src: Some(c("devpts")?),
            target: host_c(&d.join("pts"))?,
            fstype: Some(c("devpts")?),
            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
            data: Some(c("newinstance,ptmxmode=0666,mode=0620")?),
        },
        true,
        "mounting devpts on /dev/pts".into(),
    );
    ops.push(
        Op::Mount {
            src: Some(c("shm")?),
            target: host_c(&d.join("shm"))?,
            fstype: Some(c("tmpfs")?),
            flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data: Some(c("mode=1777,size=65536k")?),
        },
        true,
        "mounting tmpfs on /dev/shm".into(),
    );
    for (link, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ] {
        ops.push(
            Op::Symlink {
                target: c(target)?,
                path: host_c(&d.join(link))?,
            },
            true,
            format!("creating symlink /dev/{link}"),
        );
    }
    excluded.push(dev.in_root);

    for name in ["hosts", "resolv.conf", "hostname"] {
        let target = format!("/etc/{name}");
        match root.ensure(&target, Kind::File, stubs) {
            Ok(r) => {
                let t = host_c(&at(&r))?;
                ops.push(
                    Op::Mount {
                        src: Some(host_c(&scratch.dir.join(name))?),
                        target: t.clone(),
                        fstype: None,
                        flags: libc::MS_BIND,
                        data: None,
                    },
                    false,
                    format!("binding {} on {}", name, r.in_root),
                );
                ops.push(
                    Op::RemountRo { target: t },
                    false,
                    format!("remounting {} read-only", r.in_root),
                );
                excluded.push(r.in_root);
            }
            Err(e) => warnings.push(format!("{target} not provided to the step: {e}")),
        }
    }

    for m in &spec.mounts {
        match m {
            Mount::Bind {
                source,
                target,
                readonly,
            } => {
                let meta = std::fs::metadata(source).map_err(|e| SandboxError::MountSource {
                    path: source.clone(),
                    source: e,
                })?;
                let kind = if meta.is_dir() { Kind::Dir } else { Kind::File };
                let r = root.ensure(target, kind, stubs)?;
                let t = host_c(&at(&r))?;
                ops.push(
                    Op::Mount {
                        src: Some(host_c(source)?),
                        target: t.clone(),
                        fstype: None,
                        flags: libc::MS_BIND | libc::MS_REC,
                        data: None,
                    },
                    false,
                    format!("binding {} on {}", source.display(), r.in_root),
                );
                if *readonly {
                    ops.push(
                        Op::RemountRo { target: t },
                        false,
                        format!("remounting {} read-only", r.in_root),
                    );
                }
                excluded.push(r.in_root);
            }
            Mount::Tmpfs { target, size } => {
                let r = root.ensure(target, Kind::Dir, stubs)?;
                let data = match size {
                    Some(s) => format!("mode=1777,size={s}"),
                    None => "mode=1777".into(),
                };
                ops.push(
                    Op::Mount {
                        src: Some(c("tmpfs")?),
                        target: host_c(&at(&r))?,
                        fstype: Some(c("tmpfs")?),
                        flags: libc::MS_NOSUID | libc::MS_NODEV,
                        data: Some(c(&data)?),
                    },
                    false,
                    format!("mounting tmpfs on {}", r.in_root),
                );
                excluded.push(r.in_root);
            }
        }
    }
    Ok(ops)
}

/// Chroot mode without CAP_SYS_ADMIN (a typical pod): no mounts at all. Device nodes are
/// created with mknod(2) when CAP_MKNOD allows and the /etc files are written when absent,
/// all as stubs removed after the step; there is no /proc.
fn plan_static(
    spec: &RunSpec,
    root: &Root,
    scratch: &Scratch,
    caps: u64,
    stubs: &mut Vec<Stub>,
    excluded: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<(), SandboxError> {
    if let Some(m) = spec.mounts.first() {
        return Err(SandboxError::Unavailable {
            mode: "chroot",
            reason: format!(
                "mount {} needs CAP_SYS_ADMIN, which this process does not have",
                m.target()
            ),
        });
    }
    warnings.push("chroot isolation without CAP_SYS_ADMIN: no /proc in the step".into());
    let dev = root.ensure("/dev", Kind::Dir, stubs)?;
    excluded.push(dev.in_root.clone());
    if caps & (1 << crate::detect::CAP_MKNOD) != 0 {
        use std::os::unix::fs::MetadataExt;
        for (name, _) in DEV_NODES {
            let target = format!("/dev/{name}");
            if std::fs::symlink_metadata(dev.host_path.join(name)).is_ok() {
                continue;
            }
            match std::fs::metadata(spec.host.dev.join(name)) {
                Ok(m) => {
                    let r =
                        root.ensure(&target, Kind::Node(libc::S_IFCHR | 0o666, m.rdev()), stubs)?;
                    excluded.push(r.in_root);
                }
                Err(e) => warnings.push(format!("{target} not created: {e}")),
            }
        }
    } else {
        // No device node can be made: /dev/null becomes an empty regular file any user may
        // write (and redirections to it work, for root and others), removed after the step
        // with whatever was written to it; the other nodes are missing.
        warnings.push(
            "chroot isolation without CAP_MKNOD: no device nodes in /dev (/dev/null is a \
             regular file for the step)"
                .into(),
        );
        if std::fs::symlink_metadata(dev.host_path.join("null")).is_err() {
            let before = stubs.len();
            let r = root.ensure("/dev/null", Kind::File, stubs)?;
            if stubs.len() > before {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&r.host_path, std::fs::Permissions::from_mode(0o666))
                    .map_err(|source| SandboxError::Scratch {
                        path: r.host_path.clone(),
                        source,
                    })?;
            }
            excluded.push(r.in_root);
        }
    }
    for name in ["hosts", "resolv.conf", "hostname"] {
        let target = format!("/etc/{name}");
        let before = stubs.len();
        match root.ensure(&target, Kind::File, stubs) {
            Ok(r) if stubs.len() > before => {
                let content = std::fs::read(scratch.dir.join(name)).map_err(|source| {
                    SandboxError::Scratch {
                        path: scratch.dir.join(name),
                        source,
                    }
                })?;
                std::fs::write(&r.host_path, content).map_err(|source| SandboxError::Scratch {
                    path: r.host_path.clone(),
                    source,
                })?;
                excluded.push(r.in_root);
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!("{target} not provided to the step: {e}")),
        }
    }
    Ok(())
}

/// A file descriptor for the child's stdio, and the parent's read end when streamed.
struct Sink<'a, 'b> {
    child_fd: RawFd,
    _owned: Option<OwnedFd>,
    reader: Option<(OwnedFd, &'a mut (dyn std::io::Write + 'b))>,
}

fn sink<'a, 'b>(
    out: &'a mut Output<'b>,
    std_fd: RawFd,
    dev: &Path,
) -> Result<Sink<'a, 'b>, SandboxError> {
    Ok(match out {
        Output::Inherit => Sink {
            child_fd: std_fd,
            _owned: None,
            reader: None,
        },
        Output::Null => {
            let fd = nix::fcntl::open(
                &dev.join("null"),
                OFlag::O_WRONLY | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|source| SandboxError::Sys {
                call: "open /dev/null",
                source,
            })?;
            Sink {
                child_fd: fd.as_raw_fd(),
                _owned: Some(fd),
                reader: None,
            }
        }
        Output::Fd(fd) => Sink {
            child_fd: fd.as_raw_fd(),
            _owned: None,
            reader: None,
        },
        Output::Writer(w) => {
            let (r, wr) = pipe2(OFlag::O_CLOEXEC).map_err(|source| SandboxError::Sys {
                call: "pipe2 for output",
                source,
            })?;
            Sink {
                child_fd: wr.as_raw_fd(),
                _owned: Some(wr),
                reader: Some((r, &mut **w)),
            }
        }
    })
}

/// Kills and reaps a child unless disarmed.
struct ChildGuard {
    pid: libc::pid_t,
    armed: bool,
}

impl ChildGuard {
    fn wait(&mut self) -> Result<i32, SandboxError> {
        let mut status = 0;
        loop {
            // SAFETY: waitpid on our own child with a valid out-pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == self.pid {
                self.armed = false;
                return Ok(status);
            }
            let e = Errno::last();
            if e != Errno::EINTR {
                self.armed = false;
                return Err(SandboxError::Sys {
                    call: "waitpid",
                    source: e,
                });
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: signalling and reaping our own child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            let _ = self.wait();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_in(
    spec: &RunSpec,
    root: &Root,
    stubs: &mut Vec<Stub>,
    volatile: &mut Vec<Volatile>,
    scratch_slot: &mut Option<Scratch>,
    warnings: &mut Vec<String>,
    mut stdout: Output<'_>,
    mut stderr: Output<'_>,
) -> Result<(ExitStatus, Vec<String>), SandboxError> {
    let env = environment(spec, root, warnings);
    let mut excluded = Vec::new();
    let ops = match spec.isolation {
        Isolation::Userns => {
            let scratch = scratch_slot.insert(Scratch::create(spec)?);
            let base = match &spec.overlay {
                Some(_) => {
                    let merged = scratch.dir.join("merged");
                    std::fs::create_dir(&merged).map_err(|source| SandboxError::Scratch {
                        path: merged.clone(),
                        source,
                    })?;
                    merged
                }
                None => root.path.clone(),
            };
            plan_mounts(spec, root, &base, scratch, stubs, &mut excluded, warnings)?
        }
        Isolation::Chroot => {
            let scratch = scratch_slot.insert(Scratch::create(spec)?);
            let caps = crate::detect::effective_caps(&spec.host.proc).unwrap_or(0);
            if caps & (1 << crate::detect::CAP_SYS_ADMIN) != 0 {
                // The child unshares a mount namespace and mounts as in userns mode.
                plan_mounts(
                    spec,
                    root,
                    &root.path,
                    scratch,
                    stubs,
                    &mut excluded,
                    warnings,
                )?
            } else {
                plan_static(spec, root, scratch, caps, stubs, &mut excluded, warnings)?;
                // docker mounts a tmpfs on /dev: nothing a step writes there stays. Here /dev
                // is the rootfs's own directory, so what the step leaves in it is removed.
                volatile.extend(root.volatile("/dev"));
                Ops {
                    entries: Vec::new(),
                    descs: Vec::new(),
                }
            }
        }
        Isolation::Container => Ops {
            entries: Vec::new(),
            descs: Vec::new(),
        },
    };
    let mode = match spec.isolation {
        Isolation::Userns => ChildMode::Userns,
        Isolation::Chroot => ChildMode::Chroot,
        Isolation::Container => ChildMode::Container,
    };
    let candidates_s = exec_candidates(&spec.argv[0], &env);
    let mut prefixes = Vec::new();
    let mut acc = String::new();
    for comp in spec.cwd.split('/').filter(|c| !c.is_empty() && *c != ".") {
        acc.push('/');
        acc.push_str(comp);
        prefixes.push(acc.clone());
    }
    let (new_root, overlay) = match (&spec.overlay, scratch_slot.as_ref()) {
        (Some(o), Some(scratch)) if spec.isolation == Isolation::Userns => {
            // overlayfs(5) option values escape ',' and ':' would need escaping: refuse them.
            let paths = [&root.path, &o.upper, &o.work];
            if paths
                .iter()
                .any(|p| p.to_string_lossy().contains([',', ':', '\\']))
            {
                return Err(invalid("overlay paths must not contain ',', ':' or '\\'"));
            }
            // The upper directory alone must be the step's change set, so no directory
            // rename may be recorded as a redirect and no copy-up may be metadata-only.
            // Neither option is given: `userxattr` already turns redirect_dir to nofollow
            // and metacopy off (an explicit `redirect_dir=off` conflicts with it, EINVAL),
            // and without it a user namespace cannot set the trusted.* xattrs either needs.
            // kiln-rootfs ChangeSet::from_overlay_upper refuses both markers anyway.
            let data = format!(
                "lowerdir={},upperdir={},workdir={}",
                root.path.display(),
                o.upper.display(),
                o.work.display()
            );
            (
                scratch.dir.join("merged"),
                // `userxattr` first: in a non-initial user namespace trusted.* xattrs can
                // never be set, and a plain mount does not fail but falls back to "no
                // xattr" mode (dmesg: "failed to set xattr on upper"), where every opaque
                // marker overlayfs needs (rmdir of a lower directory whose children were
                // removed, mkdir over a whiteout) fails with EIO (ovl_set_opaque_xerr in
                // fs/overlayfs/util.c). Plain stays as the fallback for kernels without
                // `userxattr` (< 5.11) that still allow the mount (patched distro kernels).
                Some([
                    cstring("overlay", format!("{data},userxattr"))?,
                    cstring("overlay", data.as_str())?,
                ]),
            )
        }
        (Some(_), _) => return Err(invalid("overlay needs userns isolation")),
        (None, _) => (root.path.clone(), None),
    };
    let mut plan = Plan {
        mode,
        rootfs: host_c(&new_root)?,
        overlay,
        hostname: if spec.isolation == Isolation::Userns {
            Some(cstring("hostname", spec.hostname.as_str())?)
        } else {
            None
        },
        lo_up: spec.network == Network::None,
        ops: ops.entries,
        cwd_prefixes: prefixes
            .iter()
            .map(|p| cstring("cwd", p.as_str()))
            .collect::<Result<_, _>>()?,
        cwd: cstring("cwd", spec.cwd.as_str())?,
        uid: spec.user.uid,
        gid: spec.user.gid,
        gids: spec.user.additional_gids.clone(),
        change_ids: spec.isolation == Isolation::Userns
            || nix::unistd::Uid::effective().is_root()
            || spec.user.uid != nix::unistd::Uid::effective().as_raw()
            || spec.user.gid != nix::unistd::Gid::effective().as_raw()
            || !spec.user.additional_gids.is_empty(),
        drop_capabilities: !spec.keep_all_capabilities,
        argv: spec
            .argv
            .iter()
            .map(|a| cstring("argv", a.as_str()))
            .collect::<Result<_, _>>()?,
        argv_ptrs: Vec::new(),
        envp: env
            .iter()
            .map(|(k, v)| cstring("env", format!("{k}={v}")))
            .collect::<Result<_, _>>()?,
        envp_ptrs: Vec::new(),
        candidates: candidates_s
            .iter()
            .map(|p| cstring("argv[0]", p.as_str()))
            .collect::<Result<_, _>>()?,
        stdin: -1,
        stdout: -1,
        stderr: -1,
        children_file: host_c(&spec.host.proc.join("thread-self/children"))?,
    };
    let descs = ops.descs;

    let stdin = nix::fcntl::open(
        &spec.host.dev.join("null"),
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|source| SandboxError::Sys {
        call: "open /dev/null",
        source,
    })?;
    let mut out = sink(&mut stdout, 1, &spec.host.dev)?;
    let mut err = sink(&mut stderr, 2, &spec.host.dev)?;
    plan.stdin = stdin.as_raw_fd();
    plan.stdout = out.child_fd;
    plan.stderr = err.child_fd;
    plan.seal();

    let pipe =
        |what| pipe2(OFlag::O_CLOEXEC).map_err(|source| SandboxError::Sys { call: what, source });
    let (msg_r, msg_w) = pipe("pipe2 for child messages")?;
    let (sync_r, sync_w) = pipe("pipe2 for id-map sync")?;
    let (status_r, status_w) = pipe("pipe2 for reaper status")?;

    let map_plan = if spec.isolation == Isolation::Userns {
        let (p, w) = MapPlan::choose(&MapSources {
            proc: &spec.host.proc,
            subuid: &spec.host.subuid,
            subgid: &spec.host.subgid,
            newuidmap: &spec.host.newuidmap,
            newgidmap: &spec.host.newgidmap,
        });
        warnings.extend(w);
        if matches!(p, MapPlan::Single { .. }) && (spec.user.uid != 0 || spec.user.gid != 0) {
            return Err(SandboxError::UserNotMapped {
                uid: spec.user.uid,
                gid: spec.user.gid,
            });
        }
        Some(p)
    } else {
        None
    };

    let pid = match spec.isolation {
        Isolation::Userns => {
            let mut flags = libc::CLONE_NEWUSER
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWUTS
                | libc::CLONE_NEWIPC;
            if spec.network == Network::None {
                flags |= libc::CLONE_NEWNET;
            }
            // SAFETY: clone(2) without CLONE_VM and with a NULL stack behaves like fork(2);
            // the child runs only `child_main`, which makes raw syscalls on the sealed plan.
            // A raw clone (not unshare) because unshare(CLONE_NEWUSER) fails in a
            // multithreaded process and the pid namespace needs a new process anyway.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (flags | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            if r == 0 {
                // SAFETY: we are the fresh child.
                unsafe { child::child_main(&plan, sync_r.as_raw_fd(), msg_w.as_raw_fd()) }
            }
            if r < 0 {
                let e = Errno::last();
                return Err(SandboxError::Unavailable {
                    mode: "userns",
                    reason: format!("clone with new user/mount/pid namespaces failed: {e}"),
                });
            }
            r as libc::pid_t
        }
        Isolation::Chroot | Isolation::Container => {
            // SAFETY: fork(2); the child runs only `reaper_main` (raw syscalls on the plan).
            let r = unsafe { libc::fork() };
            if r == 0 {
                // SAFETY: we are the fresh child.
                unsafe { child::reaper_main(&plan, msg_w.as_raw_fd(), status_w.as_raw_fd()) }
            }
            if r < 0 {
                return Err(SandboxError::Sys {
                    call: "fork",
                    source: Errno::last(),
                });
            }
            r
        }
    };
    let mut guard = ChildGuard { pid, armed: true };
    drop(msg_w);
    drop(sync_r);
    drop(status_w);
    out._owned = None;
    err._owned = None;

    let mut applied = map_plan.clone();
    if let Some(p) = &map_plan {
        let (a, w) = p.apply(&spec.host.proc, pid)?;
        warnings.extend(w);
        let byte = [u8::from(a.setgroups_allowed())];
        applied = Some(a);
        nix::unistd::write(&sync_w, &byte).map_err(|source| SandboxError::Sys {
            call: "write to sandbox child",
            source,
        })?;
    }
    drop(sync_w);

    // Messages until EOF (exec succeeded or the child died).
    let mut fatal = None;
    let mut file = std::fs::File::from(msg_r);
    loop {
        let mut b = [0u8; Msg::SIZE];
        match file.read_exact(&mut b) {
            Ok(()) => {
                let m = Msg::decode(&b);
                if m.kind == MSG_FATAL {
                    fatal = Some(m);
                } else if m.kind == MSG_WARN {
                    warnings.push(describe_warning(&m, &descs, &spec.user.additional_gids));
                }
            }
            Err(_) => break,
        }
    }
    if let Some(m) = fatal {
        let _ = guard.wait();
        return Err(describe_fatal(
            &m,
            spec,
            &plan,
            &descs,
            &candidates_s,
            &prefixes,
            applied.as_ref(),
        ));
    }

    let mut readers: Vec<(OwnedFd, &mut dyn std::io::Write)> = Vec::new();
    if let Some((fd, w)) = out.reader.take() {
        readers.push((fd, w));
    }
    if let Some((fd, w)) = err.reader.take() {
        readers.push((fd, w));
    }
    let pump_result = pump(readers);
    if pump_result.is_err() {
        // The caller's sink failed: stop the step (the guard kills it).
        return pump_result.map(|()| (ExitStatus::Code(-1), excluded));
    }
    let wait_status = guard.wait()?;
    let status = match spec.isolation {
        Isolation::Userns => ExitStatus::from_wait(wait_status),
        _ => {
            let mut b = [0u8; 4];
            std::fs::File::from(status_r)
                .read_exact(&mut b)
                .map_err(|_| SandboxError::ChildDied {
                    status: wait_status,
                })?;
            ExitStatus::from_wait(i32::from_ne_bytes(b))
        }
    };
    Ok((status, excluded))
}

/// Copies the streamed outputs to their writers until every pipe is at EOF.
fn pump(mut readers: Vec<(OwnedFd, &mut dyn std::io::Write)>) -> Result<(), SandboxError> {
    let mut buf = vec![0u8; 64 << 10];
    while !readers.is_empty() {
        let mut fds: Vec<libc::pollfd> = readers
            .iter()
            .map(|(fd, _)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd of the given length; the fds are open.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if r < 0 {
            let e = Errno::last();
            if e == Errno::EINTR {
                continue;
            }
            return Err(SandboxError::Sys {
                call: "poll",
                source: e,
            });
        }
        let mut finished = Vec::new();
        for (k, p) in fds.iter().enumerate() {
            if p.revents == 0 {
                continue;
            }
            let (fd, w) = &mut readers[k];
            match nix::unistd::read(fd.as_fd(), &mut buf) {
                Ok(0) => finished.push(k),
                Ok(n) => w
                    .write_all(&buf[..n])
                    .map_err(|source| SandboxError::Output { source })?,
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => {}
                Err(source) => {
                    return Err(SandboxError::Sys {
                        call: "read step output",
                        source,
                    })
                }
            }
        }
        for k in finished.into_iter().rev() {
            let (_, w) = readers.remove(k);
            let _ = w.flush();
        }
    }
    Ok(())
}

fn errno_of(e: i32) -> Errno {
    Errno::from_raw(e)
}

fn describe_warning(m: &Msg, descs: &[String], gids: &[u32]) -> String {
    let e = errno_of(m.errno);
    match Step::from_u32(m.step) {
        Some(Step::Op) => {
            let d = descs
                .get(m.index as usize)
                .map_or("a mount step", String::as_str);
            if m.errno == 0 {
                format!(
                    "{d}: a fresh proc mount is not permitted here; bound kiln's own /proc \
                     instead (the processes of the host or container kiln runs in are visible \
                     to the step; ps and /proc/$$ do not work there)"
                )
            } else {
                format!("{d}: {e} (continuing without it)")
            }
        }
        Some(Step::Setgroups) => format!(
            "supplementary groups {gids:?} not applied: setgroups(2) is denied with a single-id map"
        ),
        Some(Step::PivotRoot) => format!("pivot_root failed ({e}); fell back to chroot"),
        Some(Step::LoopbackUp) => {
            format!("could not bring up lo in the empty network namespace: {e}")
        }
        Some(Step::UnshareMountNs) => format!(
            "no private mount namespace ({e}): /proc, /dev and the /etc files are not mounted"
        ),
        Some(Step::Hostname) => format!(
            "the step's hostname was not set ({e}; a seccomp profile may deny sethostname): it \
             runs with the hostname it inherited"
        ),
        Some(other) => format!("sandbox set-up, {}: {e}", other.what()),
        None => format!("sandbox set-up, step {}: {e}", m.step),
    }
}

fn describe_fatal(
    m: &Msg,
    spec: &RunSpec,
    plan: &Plan,
    descs: &[String],
    candidates: &[String],
    prefixes: &[String],
    applied: Option<&MapPlan>,
) -> SandboxError {
    let e = errno_of(m.errno);
    let i = m.index as usize;
    let single = matches!(applied, Some(MapPlan::Single { .. }));
    let step = Step::from_u32(m.step);
    let name = spec.argv[0].clone();
    match step {
        Some(Step::Exec) => match e {
            Errno::ENOENT | Errno::ENOTDIR if !name.contains('/') => {
                SandboxError::NotFound { name }
            }
            _ => SandboxError::CannotExecute {
                name: candidates.get(i).cloned().unwrap_or(name),
                source: e,
            },
        },
        Some(Step::Setuid) | Some(Step::Setgid) | Some(Step::Setgroups) | Some(Step::ChownCwd)
            if e == Errno::EINVAL || (single && e == Errno::EPERM) =>
        {
            SandboxError::UserNotMapped {
                uid: plan.uid,
                gid: plan.gid,
            }
        }
        Some(Step::Op) => SandboxError::ChildSetup {
            step: descs.get(i).cloned().unwrap_or_else(|| "mount".into()),
            source: e,
        },
        Some(Step::MkdirCwd) | Some(Step::ChownCwd) => SandboxError::ChildSetup {
            step: format!(
                "creating working directory {}",
                prefixes.get(i).map_or(spec.cwd.as_str(), String::as_str)
            ),
            source: e,
        },
        Some(Step::ChdirCwd) => SandboxError::ChildSetup {
            step: format!("changing to working directory {}", spec.cwd),
            source: e,
        },
        Some(Step::Chroot) | Some(Step::BindRoot) | Some(Step::ChdirRoot) => {
            SandboxError::ChildSetup {
                step: format!(
                    "{} ({})",
                    step.unwrap_or(Step::Chroot).what(),
                    spec.rootfs.display()
                ),
                source: e,
            }
        }
        other => SandboxError::ChildSetup {
            step: other.map_or_else(|| format!("step {}", m.step), |s| s.what().to_string()),
            source: e,
        },
    }
}

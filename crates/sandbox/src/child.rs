//! The code that runs between fork/clone and exec.
//!
//! Everything here is prepared by the parent ([`Plan`] holds only `CString`s, integers and
//! pointer arrays built before forking): the parent may be multithreaded, so after the fork
//! the child must not allocate, lock or touch anything but raw system calls (fork(2),
//! signal-safety(7)). Failures are reported to the parent as a fixed-size [`Msg`] on a
//! `O_CLOEXEC` pipe: EOF on that pipe means exec succeeded.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;

use libc::{c_char, c_int, c_uint, c_ulong};

/// Exit status of a child that failed before exec (the parent reports the message instead).
pub(crate) const EXIT_SETUP_FAILED: c_int = 125;

/// One step of the child's set-up, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Step {
    Sync = 1,
    Fds,
    Hostname,
    LoopbackUp,
    MakePrivate,
    BindRoot,
    Op,
    PivotRoot,
    UmountOldRoot,
    Chroot,
    ChdirRoot,
    MkdirCwd,
    ChownCwd,
    ChdirCwd,
    Setgroups,
    Setgid,
    Setuid,
    Exec,
    UnshareMountNs,
    Reaper,
    Overlay,
}

impl Step {
    /// Every step, in declaration order: `ALL[i] as u32 == i + 1` (checked by a test, so a
    /// step added to the enum but not here fails the build's tests, as `Overlay` once was).
    const ALL: [Step; 21] = {
        use Step::*;
        [
            Sync,
            Fds,
            Hostname,
            LoopbackUp,
            MakePrivate,
            BindRoot,
            Op,
            PivotRoot,
            UmountOldRoot,
            Chroot,
            ChdirRoot,
            MkdirCwd,
            ChownCwd,
            ChdirCwd,
            Setgroups,
            Setgid,
            Setuid,
            Exec,
            UnshareMountNs,
            Reaper,
            Overlay,
        ]
    };

    pub(crate) fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.get(v.checked_sub(1)? as usize).copied()
    }

    /// What the step does, for messages.
    pub(crate) fn what(self) -> &'static str {
        match self {
            Step::Sync => "waiting for the user namespace's id maps",
            Step::Fds => "setting up the step's standard descriptors",
            Step::Hostname => "setting the hostname",
            Step::LoopbackUp => "bringing up the loopback interface",
            Step::MakePrivate => "making the mount namespace private",
            Step::BindRoot => "bind-mounting the root file system",
            Step::Op => "a mount",
            Step::PivotRoot => "pivot_root into the root file system",
            Step::UmountOldRoot => "unmounting the old root",
            Step::Chroot => "chroot into the root file system",
            Step::ChdirRoot => "changing to the new root",
            Step::MkdirCwd => "creating the working directory",
            Step::ChownCwd => "giving the working directory its owner",
            Step::ChdirCwd => "changing to the working directory",
            Step::Setgroups => "setting supplementary groups",
            Step::Setgid => "setting the group id",
            Step::Setuid => "setting the user id",
            Step::Exec => "executing the command",
            Step::UnshareMountNs => "unsharing a mount namespace",
            Step::Reaper => "starting the reaper process",
            Step::Overlay => "mounting the overlay",
        }
    }
}

#[cfg(test)]
mod step_tests {
    use super::Step;

    #[test]
    fn every_step_decodes() {
        for (i, s) in Step::ALL.iter().enumerate() {
            assert_eq!(*s as u32, i as u32 + 1, "{s:?}");
            assert_eq!(Step::from_u32(*s as u32), Some(*s));
        }
        assert_eq!(
            Step::ALL.last().copied(),
            Some(Step::Overlay),
            "a new step is missing from ALL"
        );
        assert_eq!(Step::from_u32(0), None);
    }
}

/// Message kinds.
pub(crate) const MSG_FATAL: u32 = 1;
pub(crate) const MSG_WARN: u32 = 2;

/// A report from the child: `index` points into the plan's ops or cwd prefixes or exec
/// candidates depending on the step.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub(crate) struct Msg {
    pub kind: u32,
    pub step: u32,
    pub index: u32,
    pub errno: i32,
}

impl Msg {
    pub(crate) const SIZE: usize = 16;

    pub(crate) fn decode(b: &[u8; Msg::SIZE]) -> Msg {
        let w = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Msg {
            kind: u32::from_ne_bytes(w(0)),
            step: u32::from_ne_bytes(w(4)),
            index: u32::from_ne_bytes(w(8)),
            errno: i32::from_ne_bytes(w(12)),
        }
    }

    fn encode(&self) -> [u8; Msg::SIZE] {
        let mut b = [0u8; Msg::SIZE];
        b[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        b[4..8].copy_from_slice(&self.step.to_ne_bytes());
        b[8..12].copy_from_slice(&self.index.to_ne_bytes());
        b[12..16].copy_from_slice(&self.errno.to_ne_bytes());
        b
    }
}

/// A file-system operation done before entering the root (host paths).
#[derive(Debug)]
pub(crate) enum Op {
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: c_ulong,
        data: Option<CString>,
    },
    /// Read-only remount of a bind mount, keeping the locked flags (see `remount_ro`).
    RemountRo {
        target: CString,
    },
    /// Fresh procfs; on EPERM (a masked /proc in a pod) fall back to a recursive bind of
    /// `fallback` and warn.
    Proc {
        target: CString,
        fallback: CString,
    },
    /// Read-only sysfs as docker gives it; a fresh sysfs needs the network namespace to be
    /// ours (sysfs(5) in a user namespace), so with the host network fall back to a
    /// recursive read-only bind of `fallback`.
    Sys {
        target: CString,
        fallback: CString,
    },
    Mkdir {
        path: CString,
        mode: libc::mode_t,
    },
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
}

/// An op and whether its failure is only a warning.
#[derive(Debug)]
pub(crate) struct OpEntry {
    pub op: Op,
    pub optional: bool,
}

/// What the child does before exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChildMode {
    /// Namespaces already created by clone(2); mounts, then pivot_root.
    Userns,
    /// Try a private mount namespace for the ops (warnings only), then chroot.
    Chroot,
    /// Nothing: run on `/`.
    Container,
}

/// Everything the child needs, built before forking.
#[derive(Debug)]
pub(crate) struct Plan {
    pub mode: ChildMode,
    /// The directory that becomes `/` (the rootfs, or the overlay's mount point).
    pub rootfs: CString,
    /// For an overlay root: the options to try, in order (`userxattr`, then plain).
    pub overlay: Option<[CString; 2]>,
    pub hostname: Option<CString>,
    pub lo_up: bool,
    pub ops: Vec<OpEntry>,
    pub cwd_prefixes: Vec<CString>,
    pub cwd: CString,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub gids: Vec<libc::gid_t>,
    /// Whether to call setgroups/setresgid/setresuid (not when an unprivileged caller runs
    /// a chroot-less step as itself).
    pub change_ids: bool,
    /// Limit the capability bounding set to docker's default set before exec.
    pub drop_capabilities: bool,
    pub argv: Vec<CString>,
    pub argv_ptrs: Vec<*const c_char>,
    pub envp: Vec<CString>,
    pub envp_ptrs: Vec<*const c_char>,
    /// Paths to try with execve, in order (PATH search done by the parent's plan).
    pub candidates: Vec<CString>,
    pub stdin: RawFd,
    pub stdout: RawFd,
    pub stderr: RawFd,
    /// `<proc>/thread-self/children`, for the reaper.
    pub children_file: CString,
}

impl Plan {
    /// Fills the NULL-terminated pointer arrays. Must be called after the last change to
    /// `argv`/`envp` and before forking.
    pub(crate) fn seal(&mut self) {
        self.argv_ptrs = self
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        self.envp_ptrs = self
            .envp
            .iter()
            .map(|a| a.as_ptr())
            .chain([std::ptr::null()])
            .collect();
    }
}

fn errno() -> i32 {
    nix::errno::Errno::last_raw()
}

/// Writes a message (16 bytes < PIPE_BUF: atomic).
fn send(fd: c_int, kind: u32, step: Step, index: usize, errno: i32) {
    let m = Msg {
        kind,
        step: step as u32,
        index: index as u32,
        errno,
    }
    .encode();
    // SAFETY: writing a stack buffer of the stated length to a pipe fd.
    unsafe {
        libc::write(fd, m.as_ptr().cast(), m.len());
    }
}

fn fail(fd: c_int, step: Step, index: usize, errno: i32) -> ! {
    send(fd, MSG_FATAL, step, index, errno);
    // SAFETY: _exit(2) is async-signal-safe and skips atexit handlers inherited from the parent.
    unsafe { libc::_exit(EXIT_SETUP_FAILED) }
}

/// `mount(2)` with optional C strings.
fn mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> Result<(), i32> {
    let p = |s: Option<&CStr>| s.map_or(std::ptr::null(), |s| s.as_ptr());
    // SAFETY: all pointers are NUL-terminated strings owned by the plan, or NULL.
    let r = unsafe { libc::mount(p(src), target.as_ptr(), p(fstype), flags, p(data).cast()) };
    if r == 0 {
        Ok(())
    } else {
        Err(errno())
    }
}

/// Read-only remount of a bind mount. In a user namespace the flags the source mount has
/// (nosuid, nodev, noexec, atime flags) are locked and must be repeated, or the remount
/// fails with EPERM (mount(2), "MS_REMOUNT|MS_BIND" and mount_namespaces(7) on locked flags).
fn remount_ro(target: &CStr) -> Result<(), i32> {
    // glibc's statvfs(3) is statfs(2) plus a field copy (f_flag = f_flags ^ ST_VALID, Linux
    // >= 2.6.36): no allocation, so usable after fork.
    // SAFETY: statvfs fills a zeroed struct we own.
    let mut sv: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: target is a valid C string; sv is a valid out-pointer.
    if unsafe { libc::statvfs(target.as_ptr(), &mut sv) } != 0 {
        return Err(errno());
    }
    let mut flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
    for (st, ms) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if sv.f_flag & st != 0 {
            flags |= ms;
        }
    }
    mount(None, target, None, flags, None)
}

fn run_op(op: &Op) -> Result<bool, i32> {
    // Ok(true): done via a fallback worth a warning.
    match op {
        Op::Mount {
            src,
            target,
            fstype,
            flags,
            data,
        } => mount(
            src.as_deref(),
            target,
            fstype.as_deref(),
            *flags,
            data.as_deref(),
        )
        .map(|()| false),
        Op::RemountRo { target } => remount_ro(target).map(|()| false),
        Op::Proc { target, fallback } => {
            match mount(
                Some(c"proc"),
                target,
                Some(c"proc"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                None,
            ) {
                Ok(()) => Ok(false),
                Err(libc::EPERM) | Err(libc::EACCES) => mount(
                    Some(fallback.as_c_str()),
                    target,
                    None,
                    libc::MS_BIND | libc::MS_REC,
                    None,
                )
                .map(|()| true),
                Err(e) => Err(e),
            }
        }
        Op::Sys { target, fallback } => {
            let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RDONLY;
            match mount(Some(c"sysfs"), target, Some(c"sysfs"), flags, None) {
                Ok(()) => Ok(false),
                Err(libc::EPERM) | Err(libc::EACCES) => {
                    mount(
                        Some(fallback.as_c_str()),
                        target,
                        None,
                        libc::MS_BIND | libc::MS_REC,
                        None,
                    )?;
                    // Read-only all the way down (mount_setattr(2) with AT_RECURSIVE): a
                    // remount would change the top mount only, and a writable
                    // /sys/fs/cgroup below it would let a RUN create or change the host's
                    // cgroups. If that is refused, the bind goes again and the step has no /sys.
                    // SAFETY: a zeroed plain-data struct we own.
                    let mut attr: libc::mount_attr = unsafe { std::mem::zeroed() };
                    attr.attr_set = libc::MOUNT_ATTR_RDONLY
                        | libc::MOUNT_ATTR_NOSUID
                        | libc::MOUNT_ATTR_NODEV
                        | libc::MOUNT_ATTR_NOEXEC;
                    // SAFETY: target is a valid C string, attr a valid struct of the size given.
                    let r = unsafe {
                        libc::syscall(
                            libc::SYS_mount_setattr,
                            libc::AT_FDCWD,
                            target.as_ptr(),
                            libc::AT_RECURSIVE as libc::c_uint,
                            &attr as *const libc::mount_attr,
                            std::mem::size_of::<libc::mount_attr>(),
                        )
                    };
                    if r != 0 {
                        let e = errno();
                        // SAFETY: valid C string; detaching our own bind.
                        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
                        return Err(e);
                    }
                    Ok(false)
                }
                Err(e) => Err(e),
            }
        }
        Op::Mkdir { path, mode } => {
            // SAFETY: valid C string.
            let r = unsafe { libc::mkdir(path.as_ptr(), *mode) };
            if r == 0 || errno() == libc::EEXIST {
                Ok(false)
            } else {
                Err(errno())
            }
        }
        Op::Touch { path } => {
            // SAFETY: valid C string; the fd is closed right away.
            let fd = unsafe {
                libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                    0o666 as libc::c_uint,
                )
            };
            if fd < 0 {
                return Err(errno());
            }
            // SAFETY: fd was just opened by us.
            unsafe { libc::close(fd) };
            Ok(false)
        }
        Op::Symlink { target, path } => {
            // SAFETY: valid C strings.
            if unsafe { libc::symlink(target.as_ptr(), path.as_ptr()) } == 0
                || errno() == libc::EEXIST
            {
                Ok(false)
            } else {
                Err(errno())
            }
        }
    }
}

fn bring_loopback_up() -> Result<(), i32> {
    // SAFETY: plain socket/ioctl on a zeroed ifreq we own; the socket is closed before return.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(errno());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as c_char;
        ifr.ifr_name[1] = b'o' as c_char;
        let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr);
        if r == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
        }
        let e = errno();
        libc::close(s);
        if r == 0 {
            Ok(())
        } else {
            Err(e)
        }
    }
}

/// Moves the step's stdio to 0/1/2 and the message pipe to 3 (close-on-exec), closes
/// everything else. CVE-2024-21626: no inherited descriptor may reach the step, in
/// particular no directory fd a `WORKDIR /proc/self/fd/N` could chdir through.
fn setup_fds(plan: &Plan, msg: c_int) -> c_int {
    // SAFETY: fcntl/dup2/dup3/close on descriptors this process owns.
    unsafe {
        let hi = |fd: c_int| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
        let (i, o, e, m) = (hi(plan.stdin), hi(plan.stdout), hi(plan.stderr), hi(msg));
        if i < 0 || o < 0 || e < 0 || m < 0 {
            fail(msg, Step::Fds, 0, errno());
        }
        if libc::dup2(i, 0) < 0 || libc::dup2(o, 1) < 0 || libc::dup2(e, 2) < 0 {
            fail(m, Step::Fds, 1, errno());
        }
        if libc::dup3(m, 3, libc::O_CLOEXEC) < 0 {
            fail(m, Step::Fds, 2, errno());
        }
    }
    close_fds_from(4);
    3
}

/// Closes every descriptor except `keep` (any order; negative entries are ignored), without
/// allocating. Called first thing after fork/clone: the child holds a copy of every
/// descriptor the parent had open at that instant, close-on-exec or not (fork(2): the child
/// inherits copies of the parent's set of open file descriptors), and keeps them until it
/// execs. While stages run in parallel those are other stages' files and pipes: a write end
/// kept here delays the EOF another stage's RUN output reader waits for, an executable another
/// thread is writing makes that stage's exec fail with ETXTBSY, and the sync pipe's own write
/// end would hide the parent giving up. The child's wait for its id maps (newuidmap can take
/// milliseconds) made that window long.
fn close_all_except(keep: &[c_int; 8]) {
    let mut k = *keep;
    // In place, no allocation (slice::sort_unstable).
    k.sort_unstable();
    let mut from: c_uint = 0;
    for fd in k {
        let Ok(fd) = c_uint::try_from(fd) else {
            continue;
        };
        if fd < from {
            continue; // a duplicate
        }
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd + 1;
    }
    close_range(from, c_uint::MAX);
}

/// Closes every descriptor from `first` up.
fn close_fds_from(first: c_uint) {
    close_range(first, c_uint::MAX);
}

/// close_range(2) (Linux >= 5.9). Before that (ENOSYS) closes one by one below the
/// RLIMIT_NOFILE hard limit (getrlimit(2): one greater than the highest descriptor number the
/// process can open).
fn close_range(first: c_uint, last: c_uint) {
    // SAFETY: close_range/close on this process's own descriptor table.
    unsafe {
        if libc::syscall(libc::SYS_close_range, first, last, 0 as c_uint) == 0
            || errno() != libc::ENOSYS
        {
            return;
        }
        let end = last.min(nofile_limit().saturating_sub(1));
        let mut fd = first;
        while fd <= end {
            libc::close(fd as c_int);
            fd += 1;
        }
    }
}

/// The RLIMIT_NOFILE hard limit through the raw prlimit64 syscall, 2^20 (the kernel's default
/// `fs.nr_open`, the ceiling of that limit) when unknown or unlimited.
fn nofile_limit() -> c_uint {
    const DEFAULT_NR_OPEN: c_uint = 1 << 20;
    // SAFETY: a zeroed plain-data struct we own, filled by the kernel.
    let mut r: libc::rlimit64 = unsafe { std::mem::zeroed() };
    // SAFETY: prlimit64 on this process (pid 0) with no new limit and a valid out-pointer.
    let ok = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0 as libc::pid_t,
            libc::RLIMIT_NOFILE as c_int,
            std::ptr::null::<libc::rlimit64>(),
            &mut r as *mut libc::rlimit64,
        )
    } == 0;
    if !ok || r.rlim_max == libc::RLIM64_INFINITY {
        return DEFAULT_NR_OPEN;
    }
    c_uint::try_from(r.rlim_max).unwrap_or(c_uint::MAX)
}

/// Docker's default capability set for containers and RUN steps (moby
/// `oci/caps/defaults.go`): CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID,
/// SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP.
pub(crate) const DOCKER_DEFAULT_CAPS: u64 = (1 << 0)
    | (1 << 1)
    | (1 << 3)
    | (1 << 4)
    | (1 << 5)
    | (1 << 6)
    | (1 << 7)
    | (1 << 8)
    | (1 << 10)
    | (1 << 13)
    | (1 << 18)
    | (1 << 27)
    | (1 << 29)
    | (1 << 31);

/// Drops every capability outside [`DOCKER_DEFAULT_CAPS`] from the bounding set
/// (capabilities(7): a root step then gets only those at execve). Best effort: caps the
/// kernel does not know give EINVAL.
fn drop_bounding_caps() {
    for cap in 0..64u64 {
        if DOCKER_DEFAULT_CAPS & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        }
    }
}

/// Ignored signals and the signal mask survive execve(2) (signal(7)); the Rust runtime
/// ignores SIGPIPE and the caller may block or ignore others. A step starts like a fresh
/// container process: every disposition default, nothing blocked.
fn reset_signals() {
    // The kernel's struct sigaction (handler, flags, restorer, mask), used through the raw
    // syscall: glibc's sigaction refuses its internal signals 32 and 33, which a parent
    // thread may leave ignored.
    #[repr(C)]
    struct KernelSigaction {
        handler: usize,
        flags: u64,
        restorer: usize,
        mask: u64,
    }
    let dfl = KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    let empty: u64 = 0;
    // SAFETY: rt_sigaction/rt_sigprocmask with structs we own and the kernel's sigset size.
    unsafe {
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    0usize,
                    8usize,
                );
            }
        }
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            0usize,
            8usize,
        );
    }
}

/// The child: never returns.
///
/// # Safety
/// Must be called only in a freshly forked/cloned child process, with `plan` sealed.
pub(crate) unsafe fn child_main(plan: &Plan, sync_r: c_int, msg_w: c_int) -> ! {
    // Before anything else, and before waiting for the id maps: only what this child uses.
    // (setup_fds then leaves exactly 0-3; nothing later opens a descriptor it keeps.)
    close_all_except(&[0, 1, 2, plan.stdin, plan.stdout, plan.stderr, sync_r, msg_w]);
    let mut setgroups_allowed = true;
    if sync_r >= 0 {
        let mut b = [0u8; 1];
        loop {
            // SAFETY: reading one byte into a stack buffer.
            let n = unsafe { libc::read(sync_r, b.as_mut_ptr().cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 && errno() == libc::EINTR {
                continue;
            }
            // Parent gave up (EOF): exit quietly.
            // SAFETY: _exit is always safe.
            unsafe { libc::_exit(EXIT_SETUP_FAILED) };
        }
        setgroups_allowed = b[0] == 1;
    }
    let msg = setup_fds(plan, msg_w);
    // SAFETY: umask only changes this process's mask; modes below are explicit. prctl(2)
    // PR_SET_PDEATHSIG: if the builder dies, the step dies with it instead of running on.
    unsafe {
        libc::umask(0);
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
    }
    reset_signals();

    match plan.mode {
        ChildMode::Userns => {
            if let Some(h) = &plan.hostname {
                // SAFETY: valid buffer and length.
                if unsafe { libc::sethostname(h.as_ptr(), h.as_bytes().len()) } != 0 {
                    // The UTS namespace is ours, but a seccomp profile may still deny the
                    // call (podman's and CRI-O's default profiles do): the step then runs
                    // with the hostname it inherited, as a warning says. Not worth a failed
                    // build: docker's RUN hostname is a random id nobody relies on.
                    send(msg, MSG_WARN, Step::Hostname, 0, errno());
                }
            }
            if plan.lo_up {
                if let Err(e) = bring_loopback_up() {
                    send(msg, MSG_WARN, Step::LoopbackUp, 0, e);
                }
            }
            // Nothing we mount may propagate back to the caller's namespace.
            if let Err(e) = mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None) {
                fail(msg, Step::MakePrivate, 0, e);
            }
            if let Some(options) = &plan.overlay {
                // overlayfs(5) in a user namespace (Linux >= 5.11); `userxattr` comes first
                // because trusted.* xattrs are never available to the namespace (see run.rs).
                let mut last = 0;
                let mut mounted = false;
                for o in options {
                    match mount(Some(c"overlay"), &plan.rootfs, Some(c"overlay"), 0, Some(o)) {
                        Ok(()) => {
                            mounted = true;
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                if !mounted {
                    fail(msg, Step::Overlay, 0, last);
                }
            } else if let Err(e) = mount(
                // pivot_root(2) needs the new root to be a mount point.
                Some(&plan.rootfs),
                &plan.rootfs,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            ) {
                fail(msg, Step::BindRoot, 0, e);
            }
            run_ops(plan, msg, false);
            // SAFETY: valid C strings; pivot_root(".", ".") as in pivot_root(2) NOTES: the old
            // root ends up stacked on "." and is detached right away.
            unsafe {
                if libc::chdir(plan.rootfs.as_ptr()) != 0 {
                    fail(msg, Step::ChdirRoot, 0, errno());
                }
                let dot = c".".as_ptr();
                if libc::syscall(libc::SYS_pivot_root, dot, dot) == 0 {
                    if libc::umount2(dot, libc::MNT_DETACH) != 0 {
                        fail(msg, Step::UmountOldRoot, 0, errno());
                    }
                } else {
                    // e.g. a rootfs on initramfs: chroot is the fallback (weaker: the old root
                    // stays mounted in this namespace).
                    send(msg, MSG_WARN, Step::PivotRoot, 0, errno());
                    if libc::chroot(dot) != 0 {
                        fail(msg, Step::Chroot, 0, errno());
                    }
                }
                if libc::chdir(c"/".as_ptr()) != 0 {
                    fail(msg, Step::ChdirRoot, 1, errno());
                }
            }
        }
        ChildMode::Chroot => {
            // SAFETY: unshare/chroot/chdir with valid C strings.
            unsafe {
                if !plan.ops.is_empty() {
                    if libc::unshare(libc::CLONE_NEWNS) == 0 {
                        if mount(None, c"/", None, libc::MS_REC | libc::MS_PRIVATE, None).is_ok() {
                            run_ops(plan, msg, true);
                        }
                    } else {
                        send(msg, MSG_WARN, Step::UnshareMountNs, 0, errno());
                    }
                }
                if libc::chroot(plan.rootfs.as_ptr()) != 0 {
                    fail(msg, Step::Chroot, 0, errno());
                }
                if libc::chdir(c"/".as_ptr()) != 0 {
                    fail(msg, Step::ChdirRoot, 0, errno());
                }
            }
        }
        ChildMode::Container => {}
    }

    // The working directory, resolved inside the new root (CVE-2024-21626); created and
    // chowned to the user when missing, as docker does for WORKDIR.
    for (i, p) in plan.cwd_prefixes.iter().enumerate() {
        // SAFETY: valid C string.
        if unsafe { libc::mkdir(p.as_ptr(), 0o755) } == 0 {
            // SAFETY: valid C string.
            if unsafe { libc::lchown(p.as_ptr(), plan.uid, plan.gid) } != 0 {
                fail(msg, Step::ChownCwd, i, errno());
            }
        } else if errno() != libc::EEXIST {
            fail(msg, Step::MkdirCwd, i, errno());
        }
    }
    // SAFETY: valid C string; umask restores docker's default for the step.
    unsafe {
        if libc::chdir(plan.cwd.as_ptr()) != 0 {
            fail(msg, Step::ChdirCwd, 0, errno());
        }
        libc::umask(0o022);
    }

    if plan.drop_capabilities {
        drop_bounding_caps();
    }

    // Raw syscalls, not the libc wrappers: glibc's setgroups/setresuid/setresgid apply the
    // change to every thread it knows of (nptl "setxid" broadcast) and would wait forever for
    // the parent's threads, which do not exist in a raw clone(2) child.
    // SAFETY: id-changing syscalls with plain integers and a plan-owned array.
    unsafe {
        if !plan.change_ids {
        } else if setgroups_allowed {
            if libc::syscall(libc::SYS_setgroups, plan.gids.len(), plan.gids.as_ptr()) != 0 {
                fail(msg, Step::Setgroups, 0, errno());
            }
        } else if !plan.gids.is_empty() {
            send(msg, MSG_WARN, Step::Setgroups, 0, libc::EPERM);
        }
        if plan.change_ids && libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) != 0
        {
            fail(msg, Step::Setgid, 0, errno());
        }
        if plan.change_ids && libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) != 0
        {
            fail(msg, Step::Setuid, 0, errno());
        }
    }

    // execvp(3)-like search over the candidates: remember EACCES, keep going on ENOENT.
    let mut last = libc::ENOENT;
    let mut saw_eacces = None;
    for (i, c) in plan.candidates.iter().enumerate() {
        // ETXTBSY: another thread of the parent may have been writing this executable (a
        // COPY or an unpack) when some other process forked, and that child still holds the
        // write descriptor until its own exec closes it. The window is short: retry briefly
        // (execve(2) ERRORS; the classic fork/exec race of multithreaded programs).
        let mut busy_retries = 0;
        loop {
            // SAFETY: argv/envp are NULL-terminated arrays of plan-owned C strings.
            unsafe { libc::execve(c.as_ptr(), plan.argv_ptrs.as_ptr(), plan.envp_ptrs.as_ptr()) };
            last = errno();
            if last != libc::ETXTBSY || busy_retries >= 50 {
                break;
            }
            busy_retries += 1;
            let pause = libc::timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            };
            // SAFETY: nanosleep with a valid timespec and no remainder pointer.
            unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
        }
        match last {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => {
                saw_eacces.get_or_insert(i);
            }
            _ => fail(msg, Step::Exec, i, last),
        }
    }
    match saw_eacces {
        Some(i) => fail(msg, Step::Exec, i, libc::EACCES),
        None => fail(msg, Step::Exec, u32::MAX as usize, last),
    }
}

fn run_ops(plan: &Plan, msg: c_int, all_optional: bool) {
    for (i, e) in plan.ops.iter().enumerate() {
        match run_op(&e.op) {
            Ok(false) => {}
            Ok(true) => send(msg, MSG_WARN, Step::Op, i, 0),
            Err(err) if e.optional || all_optional => send(msg, MSG_WARN, Step::Op, i, err),
            Err(err) => fail(msg, Step::Op, i, err),
        }
    }
}

/// The reaper for chroot and container modes (no pid namespace): a child subreaper
/// (prctl(2) PR_SET_CHILD_SUBREAPER) forks the step, waits for it, then SIGKILLs every
/// remaining descendant (orphans are re-parented to it) until none is left, and reports the
/// step's wait status on `status_w`.
///
/// # Safety
/// Must be called only in a freshly forked child process, with `plan` sealed.
pub(crate) unsafe fn reaper_main(plan: &Plan, msg_w: c_int, status_w: c_int) -> ! {
    close_all_except(&[
        0,
        1,
        2,
        plan.stdin,
        plan.stdout,
        plan.stderr,
        msg_w,
        status_w,
    ]);
    // SAFETY: prctl/fork/close/waitpid/kill are plain syscalls.
    unsafe {
        if libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0 {
            fail(msg_w, Step::Reaper, 0, errno());
        }
        let main = libc::fork();
        if main < 0 {
            fail(msg_w, Step::Reaper, 1, errno());
        }
        if main == 0 {
            child_main(plan, -1, msg_w);
        }
        // The reaper keeps only the status pipe (as fd 3): EOF on the message and output
        // pipes must depend on the step alone.
        let st = libc::fcntl(status_w, libc::F_DUPFD_CLOEXEC, 10);
        libc::dup2(st, 3);
        close_fds_from(4);
        let mut main_status: c_int = 0;
        let mut main_done = false;
        loop {
            let mut s: c_int = 0;
            let r = libc::waitpid(-1, &mut s, 0);
            if r < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                break;
            }
            if r == main {
                main_status = s;
                main_done = true;
            }
            if main_done {
                kill_children(&plan.children_file);
            }
        }
        let b = main_status.to_ne_bytes();
        libc::write(3, b.as_ptr().cast(), b.len());
        libc::_exit(0)
    }
}

/// SIGKILLs every pid listed in `/proc/thread-self/children`.
fn kill_children(file: &CStr) {
    let mut buf = [0u8; 8192];
    // SAFETY: open/read/close into a stack buffer; kill with parsed pids.
    unsafe {
        let fd = libc::open(file.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return;
        }
        let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
        libc::close(fd);
        if n <= 0 {
            return;
        }
        let mut pid: i32 = 0;
        for &c in buf.iter().take(n as usize) {
            if c.is_ascii_digit() {
                pid = pid.saturating_mul(10).saturating_add((c - b'0') as i32);
            } else {
                if pid > 0 {
                    libc::kill(pid, libc::SIGKILL);
                }
                pid = 0;
            }
        }
        if pid > 0 {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

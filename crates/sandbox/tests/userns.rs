//! The userns mode end to end against a busybox rootfs, as root and as uid 65534.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_sandbox::{ExitStatus, SandboxError, User};

macro_rules! need_busybox {
    () => {
        if !busybox_available() {
            return;
        }
    };
}

#[test]
fn env_user_workdir_and_shell() {
    need_busybox!();
    as_root_and_unprivileged("env_user_workdir_and_shell", |who| {
        let r = busybox_rootfs();
        let mut spec = sh(
            r.path(),
            "echo \"foo=$FOO\"; id -u; pwd; echo \"home=$HOME\"; echo \"path=$PATH\"",
        );
        spec.env = vec![("FOO".into(), "bar baz".into())];
        spec.cwd = "/work/dir".into();
        let (res, out, err) = run_capture(&spec);
        let o = res.unwrap_or_else(|e| panic!("[{who}] run failed: {e}\nstderr: {err}"));
        assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "foo=bar baz", "[{who}] {out}");
        assert_eq!(lines[1], "0", "[{who}] {out}");
        assert_eq!(lines[2], "/work/dir", "[{who}] {out}");
        assert_eq!(lines[3], "home=/root", "[{who}] {out}");
        assert_eq!(
            lines[4],
            format!("path={}", kiln_sandbox::DEFAULT_PATH),
            "[{who}] {out}"
        );
        // The workdir was created in the rootfs (docker keeps it).
        assert!(r.path().join("work/dir").is_dir(), "[{who}]");
    });
}

#[test]
fn exit_codes_and_signals_propagate() {
    need_busybox!();
    as_root_and_unprivileged("exit_codes_and_signals_propagate", |who| {
        let r = busybox_rootfs();
        let (res, _, err) = run_capture(&sh(r.path(), "exit 42"));
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(42),
            "[{who}] {err}"
        );
        // The step is pid 1 of its pid namespace (as under BuildKit): signals it sends itself
        // without a handler are ignored by the kernel, so it survives `kill -9 $$`.
        let (res, out, err) = run_capture(&sh(r.path(), "kill -9 $$; echo survived"));
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(0),
            "[{who}] {err}"
        );
        assert_eq!(out, "survived\n");
        // A child killed by a signal: the shell reports 128+9.
        let (res, _, err) = run_capture(&sh(r.path(), "sh -c 'kill -9 $$'; exit $?"));
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(137),
            "[{who}] {err}"
        );
        // Death by a signal from outside is reported as such.
        let marker = format!("95{}", std::process::id());
        let killer = {
            let needle = format!("sleep {marker}");
            std::thread::spawn(move || {
                for _ in 0..200 {
                    if let Some(p) = host_processes_with(&needle).first() {
                        let pid: i32 = p
                            .file_name()
                            .and_then(|n| n.to_str())
                            .and_then(|n| n.parse().ok())
                            .expect("pid");
                        nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        )
                        .expect("kill");
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(25));
                }
                false
            })
        };
        let (res, _, err) = run_capture(&sh(r.path(), &format!("exec sleep {marker}")));
        assert!(
            killer.join().expect("killer thread"),
            "[{who}] sleep never seen"
        );
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Signal(9),
            "[{who}] {err}"
        );
    });
}

#[test]
fn heredoc_style_script_via_sh_c() {
    need_busybox!();
    as_root_and_unprivileged("heredoc_style_script_via_sh_c", |who| {
        let r = busybox_rootfs();
        let script = "set -e\ncat > /tmp/f <<'EOF'\nline one\n$NOT_EXPANDED\nEOF\ncat /tmp/f\n";
        let (res, out, err) = run_capture(&sh(r.path(), script));
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(0),
            "[{who}] {err}"
        );
        assert_eq!(out, "line one\n$NOT_EXPANDED\n", "[{who}]");
        assert_eq!(
            std::fs::read_to_string(r.path().join("tmp/f")).expect("file in rootfs"),
            "line one\n$NOT_EXPANDED\n"
        );
    });
}

#[test]
fn not_found_is_127() {
    need_busybox!();
    as_root_and_unprivileged("not_found_is_127", |who| {
        let r = busybox_rootfs();
        let spec = kiln_sandbox::RunSpec::new(r.path(), vec!["no-such-tool".into()]);
        let (res, _, _) = run_capture(&spec);
        let e = res.expect_err("must fail");
        assert!(matches!(e, SandboxError::NotFound { .. }), "[{who}] {e}");
        assert_eq!(e.exit_code(), Some(127));
        assert_eq!(
            e.to_string(),
            "executable file not found in $PATH: no-such-tool"
        );
        // Through the shell: the shell's own 127.
        let (res, _, err) = run_capture(&sh(r.path(), "no-such-tool"));
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(127),
            "[{who}] {err}"
        );
    });
}

#[test]
fn background_daemon_is_killed_with_the_step() {
    need_busybox!();
    as_root_and_unprivileged("background_daemon_is_killed_with_the_step", |who| {
        let r = busybox_rootfs();
        let marker = format!("98{}", std::process::id());
        let t = Instant::now();
        let (res, out, err) = run_capture(&sh(r.path(), &format!("sleep {marker} & echo started")));
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(0),
            "[{who}] {err}"
        );
        assert_eq!(out, "started\n");
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "[{who}] the daemon kept the run alive"
        );
        assert!(
            host_processes_with(&format!("sleep {marker}")).is_empty(),
            "[{who}] sleep survived"
        );
    });
}

#[test]
fn only_stdio_fds_reach_the_step() {
    need_busybox!();
    as_root_and_unprivileged("only_stdio_fds_reach_the_step", |who| {
        let r = busybox_rootfs();
        // Open a few extra descriptors without CLOEXEC in the caller: none may leak.
        let f = std::fs::File::open("/").expect("open /");
        let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
        // SAFETY: dup of an fd we own; the copy lacks O_CLOEXEC on purpose.
        let leaked = unsafe { libc::dup(raw) };
        let (res, out, err) = run_capture(&sh(r.path(), "ls -l /proc/self/fd"));
        // SAFETY: closing the fd we dup'ed.
        unsafe { libc::close(leaked) };
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(0),
            "[{who}] {err}"
        );
        let mut fds = Vec::new();
        for line in out.lines().filter(|l| l.contains("->")) {
            let name = line
                .split(" -> ")
                .next()
                .and_then(|l| l.split_whitespace().last())
                .expect("fd");
            let target = line.split(" -> ").nth(1).expect("target");
            let n: u32 = name.parse().expect("fd number");
            if n > 2 {
                // ls's own handle on the directory it lists.
                assert!(
                    target.starts_with("/proc/"),
                    "[{who}] leaked fd {n} -> {target}\n{out}"
                );
            }
            fds.push(n);
        }
        assert!(fds.starts_with(&[0, 1, 2]), "[{who}] {out}");
        assert!(fds.len() <= 4, "[{who}] unexpected fds:\n{out}");
    });
}

#[test]
fn workdir_through_proc_self_fd_does_not_reach_the_host() {
    // CVE-2024-21626 / HOSTILE-INPUTS 24.
    need_busybox!();
    as_root_and_unprivileged(
        "workdir_through_proc_self_fd_does_not_reach_the_host",
        |who| {
            let r = busybox_rootfs();
            for fd in 3..12 {
                let mut spec = sh(r.path(), "pwd; ls /");
                spec.cwd = format!("/proc/self/fd/{fd}");
                let (res, out, _) = run_capture(&spec);
                if let Ok(o) = res {
                    // If it ran, it ran inside the rootfs: its / is the busybox tree.
                    assert!(o.status.success() || !out.contains("usr"), "[{who}]");
                    let listing: Vec<&str> = out.lines().skip(1).collect();
                    assert!(
                        listing.contains(&"bin") && !listing.contains(&"work"),
                        "[{who}] {out}"
                    );
                }
            }
        },
    );
}

#[test]
fn etc_files_present_during_the_run_and_absent_after() {
    need_busybox!();
    as_root_and_unprivileged("etc_files_present_during_the_run_and_absent_after", |who| {
        let r = busybox_rootfs();
        let mut spec = sh(
            r.path(),
            "cat /etc/hosts; echo ---; cat /etc/hostname; hostname; test -c /dev/null && echo devnull; \
             echo x > /dev/null && echo writable; test -d /proc/1 && echo proc; \
             echo hi > /etc/hosts 2>/dev/null || echo hosts-readonly; ls /dev",
        );
        spec.hostname = "buildbox".into();
        let etc_mtime = std::fs::metadata(r.path().join("etc"))
            .expect("etc")
            .modified()
            .expect("mtime");
        let (res, out, err) = run_capture(&spec);
        let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
        assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
        assert!(out.contains("localhost"), "[{who}] {out}");
        assert!(out.contains("---\nbuildbox\nbuildbox\n"), "[{who}] {out}");
        for want in [
            "devnull",
            "writable",
            "proc",
            "hosts-readonly",
            "urandom",
            "pts",
            "shm",
        ] {
            assert!(out.contains(want), "[{who}] missing {want}: {out}");
        }
        for gone in [
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "proc",
            "dev",
        ] {
            assert!(
                std::fs::symlink_metadata(r.path().join(gone)).is_err(),
                "[{who}] stub {gone} left in the rootfs"
            );
        }
        // The parent directory's mtime is restored, so the differ sees no change in /etc.
        let after = std::fs::metadata(r.path().join("etc"))
            .expect("etc")
            .modified()
            .expect("mtime");
        assert_eq!(etc_mtime, after, "[{who}]");
        for p in [
            "/proc",
            "/dev",
            "/etc/hosts",
            "/etc/resolv.conf",
            "/etc/hostname",
        ] {
            assert!(
                o.excluded_paths.iter().any(|e| e == p),
                "[{who}] {p} not in {:?}",
                o.excluded_paths
            );
        }
    });
}

#[test]
fn user_and_groups() {
    need_busybox!();
    as_root_and_unprivileged("user_and_groups", |who| {
        let r = busybox_rootfs();
        let u = kiln_sandbox::resolve_user(r.path(), "app").expect("resolve");
        let mut spec = sh(
            r.path(),
            "id; echo \"home=$HOME\"; touch /tmp/owned; stat -c %u:%g /tmp/owned",
        );
        spec.user = User::from(&u);
        spec.cwd = "/home/app/new".into();
        let (res, out, err) = run_capture(&spec);
        if !nix::unistd::Uid::effective().is_root() && !has_system_subids() {
            // Single-id map: only root exists in the namespace.
            let e = res.expect_err("single map cannot run as uid 1000");
            assert!(
                matches!(e, SandboxError::UserNotMapped { uid: 1000, .. }),
                "[{who}] {e}"
            );
            return;
        }
        let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
        assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
        // busybox id prints getgroups(2): the supplementary list from /etc/group.
        assert!(
            out.contains("uid=1000(app) gid=1000(app) groups=10(wheel),29(audio)"),
            "[{who}] {out}"
        );
        assert!(out.contains("home=/home/app"), "[{who}] {out}");
        assert!(out.contains("1000:1000"), "[{who}] {out}");
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(r.path().join("home/app/new")).expect("workdir");
        if nix::unistd::Uid::effective().is_root() {
            // Identity map as root; with a subordinate range the host sees the mapped ids.
            assert_eq!((m.uid(), m.gid()), (1000, 1000), "[{who}] workdir owner");
        }
    });
}

#[test]
fn multithreaded_caller_does_not_deadlock_the_child() {
    // Regression: glibc's setgroups/setresuid broadcast to the caller's threads (nptl setxid)
    // hung forever in the raw clone(2) child; the engine calling run() is multithreaded.
    need_busybox!();
    as_root_and_unprivileged("multithreaded_caller_does_not_deadlock_the_child", |who| {
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
        let idle: Vec<_> = (0..4)
            .map(|_| {
                let rx = stop_rx.clone();
                std::thread::spawn(move || {
                    let _ = rx.lock().map(|r| r.recv_timeout(Duration::from_secs(60)));
                })
            })
            .collect();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let r = busybox_rootfs();
        let path = r.path().to_path_buf();
        std::thread::spawn(move || {
            let (res, out, _) = run_capture(&sh(&path, "id -u"));
            let _ = done_tx.send(res.map(|o| (o.status, out)));
        });
        let got = done_rx.recv_timeout(Duration::from_secs(30));
        drop(stop_tx);
        for t in idle {
            t.join().expect("idle thread");
        }
        let (status, out) = got
            .unwrap_or_else(|_| panic!("[{who}] run() hung"))
            .expect("run");
        assert_eq!(
            (status, out.as_str()),
            (ExitStatus::Code(0), "0\n"),
            "[{who}]"
        );
    });
}

/// Whether the caller has a range in the system's /etc/subuid and /etc/subgid (newuidmap
/// reads those, whatever `HostPaths` says).
fn has_system_subids() -> bool {
    let me = nix::unistd::Uid::effective().as_raw().to_string();
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::effective())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    ["/etc/subuid", "/etc/subgid"].iter().all(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines()
                .any(|l| l.split(':').next().is_some_and(|w| w == me || w == name))
        })
    })
}

#[test]
fn capabilities_are_dockers_default_set() {
    need_busybox!();
    as_root_and_unprivileged("capabilities_are_dockers_default_set", |who| {
        let r = busybox_rootfs();
        let (res, out, err) =
            run_capture(&sh(r.path(), "grep -E '^Cap(Bnd|Eff)' /proc/self/status"));
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(0),
            "[{who}] {err}"
        );
        assert!(out.contains("CapBnd:\t00000000a80425fb"), "[{who}] {out}");
        assert!(out.contains("CapEff:\t00000000a80425fb"), "[{who}] {out}");
        let mut spec = sh(r.path(), "grep -E '^CapBnd' /proc/self/status");
        spec.keep_all_capabilities = true;
        let (res, out, _) = run_capture(&spec);
        assert!(res.expect("run").status.success());
        assert!(!out.contains("a80425fb"), "[{who}] {out}");
    });
}

#[test]
fn failed_subuid_helper_falls_back_to_a_single_map_with_a_warning() {
    need_busybox!();
    if !common::is_unprivileged_copy() && nix::unistd::Uid::effective().is_root() {
        // Root writes maps directly; the helper path is for unprivileged callers.
        as_root_and_unprivileged(
            "failed_subuid_helper_falls_back_to_a_single_map_with_a_warning",
            |_| {},
        );
        return;
    }
    if has_system_subids() {
        println!("skipped: this user has a real subordinate id range, the helper would succeed");
        return;
    }
    let r = busybox_rootfs();
    let ids = tempfile::tempdir().expect("dir");
    let me = nix::unistd::Uid::effective().as_raw();
    for f in ["subuid", "subgid"] {
        std::fs::write(ids.path().join(f), format!("{me}:300000:65536\n")).expect("write");
    }
    let mut spec = sh(r.path(), "id -u");
    spec.host.subuid = ids.path().join("subuid");
    spec.host.subgid = ids.path().join("subgid");
    let (res, out, err) = run_capture(&spec);
    let o = res.unwrap_or_else(|e| panic!("{e} {err}"));
    assert_eq!((o.status, out.as_str()), (ExitStatus::Code(0), "0\n"));
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("newuidmap") && w.contains("APT::Sandbox::User=root")),
        "{:?}",
        o.warnings
    );
}

/// While a step's child waits for its id maps (newuidmap runs meanwhile) it must hold none of
/// the caller's descriptors: with stages running in parallel those are other stages' files and
/// pipes (a kept write end delays their reader's EOF, a kept executable fails their exec with
/// ETXTBSY). The "newuidmap" here is a script that lists the waiting child's descriptors.
#[test]
fn the_child_waiting_for_its_id_maps_holds_no_caller_descriptor() {
    const NAME: &str = "the_child_waiting_for_its_id_maps_holds_no_caller_descriptor";
    need_busybox!();
    if !common::is_unprivileged_copy() && nix::unistd::Uid::effective().is_root() {
        // Root writes its maps directly, no helper runs: the unprivileged copy tests this.
        println!("skipped: as root (maps written directly); run as uid 65534 below");
        as_root_and_unprivileged(NAME, |_| {});
        return;
    }
    let r = busybox_rootfs();
    let dir = tempfile::tempdir().expect("dir");
    let marker = dir.path().join("held-by-the-caller");
    let held = std::fs::File::create(&marker).expect("create marker");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&held);
    // SAFETY: clearing FD_CLOEXEC on a descriptor we own: the worst case, an fd another
    // thread opened without O_CLOEXEC (or has not yet marked).
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let listing = dir.path().join("listing");
    let helper = dir.path().join("newuidmap");
    // $1 is the waiting child's pid. The child may not have run its first instructions yet
    // when this starts: look again for up to two seconds, then fail (the step then runs with
    // a single-id map and a warning).
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\ni=0\nwhile [ $i -lt 100 ]; do\n  ls -l /proc/$1/fd >{l} 2>&1\n  \
             grep -q held-by-the-caller {l} || exit 1\n  sleep 0.02\n  i=$((i+1))\ndone\nexit 1\n",
            l = listing.display()
        ),
    )
    .expect("write helper");
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod helper");
    let me = nix::unistd::Uid::effective().as_raw();
    for f in ["subuid", "subgid"] {
        std::fs::write(dir.path().join(f), format!("{me}:300000:65536\n")).expect("write");
    }
    let mut spec = sh(r.path(), "ls -l /proc/self/fd");
    spec.host.subuid = dir.path().join("subuid");
    spec.host.subgid = dir.path().join("subgid");
    spec.host.newuidmap = helper.clone();
    spec.host.newgidmap = helper;
    let (res, out, err) = run_capture(&spec);
    drop(held);
    let o = res.unwrap_or_else(|e| panic!("{e} {err}"));
    assert_eq!(o.status, ExitStatus::Code(0), "{err}");
    let seen = std::fs::read_to_string(&listing).expect("the helper ran and listed the child");
    // The listing is real (the child's message and sync pipes are there) and has no marker.
    assert!(seen.contains("pipe:["), "{seen}");
    assert!(
        !seen.contains("held-by-the-caller"),
        "waiting child holds it:\n{seen}"
    );
    assert!(
        !out.contains("held-by-the-caller"),
        "the step holds it:\n{out}"
    );
}

#[test]
fn signals_start_default_and_unblocked() {
    // Rust ignores SIGPIPE in the caller; a step must start like a fresh container process
    // (`yes | head -1` ends because `yes` dies of SIGPIPE).
    need_busybox!();
    as_root_and_unprivileged("signals_start_default_and_unblocked", |who| {
        let r = busybox_rootfs();
        // The command itself, not through sh (which sets its own dispositions).
        let spec = kiln_sandbox::RunSpec::new(
            r.path(),
            ["grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status"]
                .map(String::from)
                .to_vec(),
        );
        let (res, out, err) = run_capture(&spec);
        assert_eq!(
            res.expect("run").status,
            ExitStatus::Code(0),
            "[{who}] {err}"
        );
        assert_eq!(
            out, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
            "[{who}]"
        );
    });
}

#[test]
fn output_to_caller_fd_and_null() {
    need_busybox!();
    as_root_and_unprivileged("output_to_caller_fd_and_null", |who| {
        let r = busybox_rootfs();
        let dir = tempfile::tempdir().expect("dir");
        let f = std::fs::File::create(dir.path().join("log")).expect("log");
        let o = kiln_sandbox::run(
            &sh(r.path(), "echo to-file; echo to-null >&2"),
            kiln_sandbox::Output::Fd(std::os::fd::AsFd::as_fd(&f)),
            kiln_sandbox::Output::Null,
        )
        .unwrap_or_else(|e| panic!("[{who}] {e}"));
        assert!(o.status.success(), "[{who}]");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("log")).expect("read"),
            "to-file\n"
        );
    });
}

/// Installs, on the calling thread only (children inherit it), a seccomp filter that makes
/// sethostname(2) fail with EPERM, as podman's and CRI-O's default profiles do.
fn deny_sethostname_on_this_thread() {
    // BPF: load the arch, allow anything not x86_64; load the syscall number; EPERM for
    // sethostname, allow the rest (seccomp(2), "Example").
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let ld = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    let jeq = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    let ret = (libc::BPF_RET | libc::BPF_K) as u16;
    let f = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    let mut prog = [
        f(ld, 0, 0, 4),
        f(jeq, 1, 0, AUDIT_ARCH_X86_64),
        f(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
        f(ld, 0, 0, 0),
        f(jeq, 0, 1, libc::SYS_sethostname as u32),
        f(ret, 0, 0, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        f(ret, 0, 0, libc::SECCOMP_RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: prctl with a valid filter program that outlives the call; no_new_privs first,
    // as seccomp(2) requires without CAP_SYS_ADMIN.
    unsafe {
        assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
        assert_eq!(
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog
            ),
            0,
            "{}",
            std::io::Error::last_os_error()
        );
    }
}

#[test]
fn a_seccomp_profile_denying_sethostname_does_not_fail_the_step() {
    // podman's and CRI-O's default seccomp profiles allow user namespaces but not
    // sethostname: every RUN failed there with "sandbox set-up: Hostname: EPERM".
    need_busybox!();
    if !cfg!(target_arch = "x86_64") {
        println!("skipped: the test's seccomp filter is written for x86_64");
        return;
    }
    let r = busybox_rootfs();
    let host = nix::unistd::gethostname()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (res, out, err) = std::thread::scope(|s| {
        s.spawn(|| {
            deny_sethostname_on_this_thread();
            let mut spec = sh(r.path(), "hostname");
            spec.hostname = "kiln-step".into();
            run_capture(&spec)
        })
        .join()
        .unwrap()
    });
    let o = res.unwrap_or_else(|e| panic!("run failed: {e}\nstderr: {err}"));
    assert_eq!(o.status, ExitStatus::Code(0), "{err}");
    assert_eq!(out.trim(), host, "the inherited hostname: {err}");
    assert!(
        o.warnings
            .iter()
            .any(|w| w.contains("hostname was not set")),
        "{:?}",
        o.warnings
    );
}

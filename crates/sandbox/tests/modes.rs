//! chroot and container (Kaniko) modes.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kiln_sandbox::{ExitStatus, Isolation, Mount, RunSpec};

#[test]
fn chroot_mode_runs_kills_leftovers_and_cleans_stubs() {
    if !chroot_testable() {
        return;
    }
    let r = busybox_rootfs();
    let marker = format!("97{}", std::process::id());
    let src = tempfile::tempdir().expect("src");
    std::fs::write(src.path().join("f"), "bound\n").expect("write");
    let mut spec = sh(
        r.path(),
        &format!(
            "sleep {marker} & echo \"$FOO\"; id -u; pwd; cat /etc/hostname; cat /m/f; \
             test -c /dev/null && echo devnull; ls /proc/self/fd | wc -l; exit 3"
        ),
    );
    spec.isolation = Isolation::Chroot;
    spec.env = vec![("FOO".into(), "chrooted".into())];
    spec.cwd = "/w".into();
    spec.hostname = "chroothost".into();
    spec.mounts = vec![Mount::Bind {
        source: src.path().into(),
        target: "/m".into(),
        readonly: true,
    }];
    let t = Instant::now();
    let (res, out, err) = run_capture(&spec);
    let o = res.unwrap_or_else(|e| panic!("{e} {err}"));
    assert_eq!(o.status, ExitStatus::Code(3), "{err}");
    assert_eq!(
        out, "chrooted\n0\n/w\nchroothost\nbound\ndevnull\n4\n",
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(
        host_processes_with(&format!("sleep {marker}")).is_empty(),
        "sleep survived"
    );
    for gone in [
        "proc",
        "dev",
        "etc/hosts",
        "etc/hostname",
        "etc/resolv.conf",
        "m",
    ] {
        assert!(
            std::fs::symlink_metadata(r.path().join(gone)).is_err(),
            "stub {gone} left"
        );
    }
    // Not found, as in userns mode.
    spec.argv = vec!["nope".into()];
    let e = run_capture(&spec).0.expect_err("not found");
    assert_eq!(e.exit_code(), Some(127), "{e}");
}

#[test]
fn container_mode_runs_on_slash_and_reaps_daemons() {
    // Explicitly asked for: the command runs on this machine's own / (harmless commands).
    as_root_and_unprivileged("container_mode_runs_on_slash_and_reaps_daemons", |who| {
        let marker = format!("96{}", std::process::id());
        let mut spec = RunSpec::new(
            "/",
            vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("sleep {marker} & pwd; echo \"$X\"; ls /proc/self/fd | wc -l; exit 7"),
            ],
        );
        spec.isolation = Isolation::Container;
        spec.env = vec![("X".into(), "in-container".into())];
        spec.user = kiln_sandbox::User {
            uid: nix::unistd::Uid::effective().as_raw(),
            gid: nix::unistd::Gid::effective().as_raw(),
            additional_gids: vec![],
        };
        spec.cwd = "/tmp".into();
        let (res, out, err) = run_capture(&spec);
        let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
        assert_eq!(o.status, ExitStatus::Code(7), "[{who}] {err}");
        assert_eq!(out, "/tmp\nin-container\n4\n", "[{who}] {err}");
        assert!(o.excluded_paths.is_empty());
        assert!(
            host_processes_with(&format!("sleep {marker}")).is_empty(),
            "[{who}] sleep survived"
        );
    });
}

#[test]
fn chroot_mode_without_cap_sys_admin_creates_and_removes_static_files() {
    // A pod: root with CAP_SYS_CHROOT and CAP_MKNOD but no CAP_SYS_ADMIN. The capability set
    // is read from HostPaths.proc, redirected here to a fake status file.
    if !chroot_testable() {
        return;
    }
    let fake = fake_proc(0x1ff_ffff_ffff & !(1 << 21));
    let r = busybox_rootfs();
    let mut spec = sh(
        r.path(),
        "test -c /dev/null && echo x > /dev/null && echo devnull; cat /etc/hostname; \
         test -e /proc/self || echo no-proc",
    );
    spec.isolation = Isolation::Chroot;
    spec.hostname = "podhost".into();
    spec.host.proc = fake.path().into();
    let (res, out, err) = run_capture(&spec);
    let o = res.unwrap_or_else(|e| panic!("{e} {err}"));
    assert_eq!(o.status, ExitStatus::Code(0), "{err}");
    assert_eq!(out, "devnull\npodhost\nno-proc\n", "{err}");
    assert!(
        o.warnings.iter().any(|w| w.contains("no /proc")),
        "{:?}",
        o.warnings
    );
    for gone in ["dev", "etc/hosts", "etc/hostname", "etc/resolv.conf"] {
        assert!(
            std::fs::symlink_metadata(r.path().join(gone)).is_err(),
            "static file {gone} left"
        );
    }
    assert!(
        o.excluded_paths.contains(&"/dev/null".to_string()),
        "{:?}",
        o.excluded_paths
    );
    // Mounts cannot work there: a clear error before anything runs.
    spec.mounts = vec![Mount::Tmpfs {
        target: "/t".into(),
        size: None,
    }];
    let e = run_capture(&spec).0.expect_err("mounts need CAP_SYS_ADMIN");
    assert!(e.to_string().contains("CAP_SYS_ADMIN"), "{e}");
    assert!(!r.path().join("dev").exists());
}

/// Whether chroot-mode tests can run here (busybox, root); says why not.
fn chroot_testable() -> bool {
    if !busybox_available() {
        return false;
    }
    if !nix::unistd::Uid::effective().is_root() {
        println!("skipped: chroot isolation needs root");
        return false;
    }
    true
}

/// A fake /proc whose status has `caps` as CapEff (what chroot mode reads to pick its plan).
fn fake_proc(caps: u64) -> tempfile::TempDir {
    let fake = tempfile::tempdir().expect("fake proc");
    std::fs::create_dir(fake.path().join("self")).expect("mkdir");
    std::fs::write(
        fake.path().join("self/status"),
        format!("CapEff:\t{caps:016x}\n"),
    )
    .expect("status");
    std::os::unix::fs::symlink("/proc/thread-self", fake.path().join("thread-self"))
        .expect("symlink");
    fake
}

#[test]
fn chroot_mode_without_cap_sys_admin_device_nodes_are_writable_by_any_user() {
    // mknod(2) applies the umask: the nodes were 0644, so a non-root step could not write
    // /dev/null (apt-get's helpers run as _apt and failed).
    if !chroot_testable() {
        return;
    }
    let fake = fake_proc(0x1ff_ffff_ffff & !(1 << 21));
    let r = busybox_rootfs();
    let mut spec = sh(
        r.path(),
        "stat -c %a /dev/null /dev/zero && echo x > /dev/null && id -u",
    );
    spec.isolation = Isolation::Chroot;
    spec.host.proc = fake.path().into();
    spec.user.uid = 65534;
    spec.user.gid = 65534;
    let (res, out, err) = run_capture(&spec);
    let o = res.unwrap_or_else(|e| panic!("{e} {err}"));
    assert_eq!(o.status, ExitStatus::Code(0), "{err}");
    assert_eq!(out, "666\n666\n65534\n", "{err}");
}

#[test]
fn chroot_mode_without_cap_mknod_keeps_nothing_a_step_writes_to_dev() {
    // No CAP_SYS_ADMIN (no tmpfs on /dev) and no CAP_MKNOD (no device nodes): `> /dev/null`
    // writes a regular file, which must not stay in the rootfs (the layer would publish
    // what was sent to it); what the base had in /dev stays, with its mtime.
    if !chroot_testable() {
        return;
    }
    let fake = fake_proc(0x1ff_ffff_ffff & !(1 << 21) & !(1 << 27));
    let r = busybox_rootfs();
    let dev = r.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    std::fs::write(dev.join("keep"), b"from the base").unwrap();
    let mtime = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let before = mtime(&dev);
    let mut spec = sh(
        r.path(),
        "echo secret-token > /dev/null; mkdir -p /dev/sub/deeper && echo y > /dev/sub/deeper/f \
         && chmod 0 /dev/sub && ln -s / /dev/link && cat /dev/null",
    );
    spec.isolation = Isolation::Chroot;
    spec.host.proc = fake.path().into();
    let (res, out, err) = run_capture(&spec);
    let o = res.unwrap_or_else(|e| panic!("{e} {err}"));
    assert_eq!(o.status, ExitStatus::Code(0), "{err}");
    assert_eq!(
        out, "secret-token\n",
        "the step itself sees what it wrote: {err}"
    );
    assert!(
        o.warnings.iter().any(|w| w.contains("no device nodes")),
        "{:?}",
        o.warnings
    );
    let mut left: Vec<String> = std::fs::read_dir(&dev)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["keep"], "{:?}", o.warnings);
    assert_eq!(std::fs::read(dev.join("keep")).unwrap(), b"from the base");
    assert_eq!(mtime(&dev), before, "/dev's mtime is given back");
    assert!(
        r.path().join("bin/busybox").exists(),
        "the symlink to / was not followed"
    );
    // /dev/null is a regular file any user may write for the step, gone after it.
    spec.user.uid = 65534;
    spec.user.gid = 65534;
    spec.argv[2] = "echo z > /dev/null && stat -c %a /dev/null".into();
    let (res, out, err) = run_capture(&spec);
    let o = res.unwrap_or_else(|e| panic!("{e} {err}"));
    assert_eq!(o.status, ExitStatus::Code(0), "{err}");
    assert_eq!(out, "666\n", "{err}");
    assert!(!dev.join("null").exists());
}

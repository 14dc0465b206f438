//! Caller-requested mounts and their hostile cases (HOSTILE-INPUTS 25, 27), network none.

mod common;

use common::*;
use kiln_sandbox::{ExitStatus, Mount, Network};

macro_rules! need_busybox {
    () => {
        if !busybox_available() {
            return;
        }
    };
}

#[test]
fn bind_and_tmpfs_mounts() {
    need_busybox!();
    as_root_and_unprivileged("bind_and_tmpfs_mounts", |who| {
        let r = busybox_rootfs();
        let cache = tempfile::tempdir().expect("cache dir");
        let ro = tempfile::tempdir().expect("ro dir");
        std::fs::write(ro.path().join("file"), "from the context\n").expect("write");
        let secret_dir = tempfile::tempdir().expect("secret dir");
        let secret = secret_dir.path().join("tok");
        std::fs::write(&secret, "s3cret").expect("write");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        let mut spec = sh(
            r.path(),
            "echo cached > /var/cache/x/out; cat /ctx/file; \
             echo no > /ctx/new 2>/dev/null || echo ctx-readonly; \
             cat /run/secrets/tok; echo; stat -c %a /run/secrets/tok; \
             echo t > /scratch/t && grep -q ' /scratch tmpfs' /proc/mounts && echo tmpfs-ok",
        );
        spec.mounts = vec![
            Mount::Bind {
                source: cache.path().into(),
                target: "/var/cache/x".into(),
                readonly: false,
            },
            Mount::Bind {
                source: ro.path().into(),
                target: "/ctx".into(),
                readonly: true,
            },
            Mount::Bind {
                source: secret.clone(),
                target: "/run/secrets/tok".into(),
                readonly: true,
            },
            Mount::Tmpfs {
                target: "/scratch".into(),
                size: Some(1 << 20),
            },
        ];
        let (res, out, err) = run_capture(&spec);
        let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
        assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
        assert_eq!(
            out, "from the context\nctx-readonly\ns3cret\n400\ntmpfs-ok\n",
            "[{who}] stderr: {err}"
        );
        assert_eq!(
            std::fs::read_to_string(cache.path().join("out")).expect("cache written"),
            "cached\n"
        );
        assert!(!ro.path().join("new").exists());
        // Every stub is gone, including the parents the sandbox created.
        for gone in ["var", "ctx", "run", "scratch"] {
            assert!(
                std::fs::symlink_metadata(r.path().join(gone)).is_err(),
                "[{who}] stub /{gone} left"
            );
        }
        for p in ["/var/cache/x", "/ctx", "/run/secrets/tok", "/scratch"] {
            assert!(
                o.excluded_paths.iter().any(|e| e == p),
                "[{who}] {:?}",
                o.excluded_paths
            );
        }
    });
}

#[test]
fn mount_target_through_symlink_to_root_stays_inside() {
    // HOSTILE-INPUTS 25 (CVE-2024-1753): a target through `/rootlink -> /` resolves inside.
    need_busybox!();
    as_root_and_unprivileged("mount_target_through_symlink_to_root_stays_inside", |who| {
        let r = busybox_rootfs();
        std::os::unix::fs::symlink("/", r.path().join("rootlink")).expect("symlink");
        std::os::unix::fs::symlink("../../../../../tmp", r.path().join("uplink")).expect("symlink");
        let src = tempfile::tempdir().expect("src");
        std::fs::write(src.path().join("f"), "x").expect("write");
        let marker = format!("kiln-sbx-{}", std::process::id());
        let mut spec = sh(r.path(), "ls /mnt-in/; ls /tmp/inside");
        spec.mounts = vec![
            Mount::Bind {
                source: src.path().into(),
                target: "/rootlink/mnt-in".into(),
                readonly: true,
            },
            Mount::Bind {
                source: src.path().into(),
                target: format!("/uplink/{marker}/../inside"),
                readonly: true,
            },
        ];
        let (res, out, err) = run_capture(&spec);
        let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
        assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
        assert_eq!(out, "f\nf\n", "[{who}]");
        assert!(
            o.excluded_paths.contains(&"/mnt-in".to_string()),
            "{:?}",
            o.excluded_paths
        );
        assert!(
            o.excluded_paths.contains(&"/tmp/inside".to_string()),
            "{:?}",
            o.excluded_paths
        );
        // Nothing was created on the host.
        assert!(
            !std::path::Path::new("/mnt-in").exists(),
            "[{who}] host /mnt-in created"
        );
        assert!(
            !std::path::Path::new("/tmp").join(&marker).exists(),
            "[{who}] host /tmp touched"
        );
        assert!(!r.path().join("mnt-in").exists() && !r.path().join("tmp/inside").exists());
    });
}

#[test]
fn stub_parent_replaced_by_host_symlink_removes_nothing_outside() {
    // HOSTILE-INPUTS 27 (CVE-2024-23652): the step swaps the stub's parent for a symlink to
    // a host directory holding same-named files; the cleaner must not follow it.
    need_busybox!();
    as_root_and_unprivileged(
        "stub_parent_replaced_by_host_symlink_removes_nothing_outside",
        |who| {
            let r = busybox_rootfs();
            let host = tempfile::tempdir().expect("host dir");
            std::fs::create_dir_all(host.path().join("b/stub")).expect("mkdir");
            std::fs::write(host.path().join("b/keep"), "precious").expect("write");
            let src = tempfile::tempdir().expect("src");
            let mut spec = sh(
                r.path(),
                &format!(
                    "mv /a /a-moved && ln -s {} /a && echo swapped",
                    host.path().display()
                ),
            );
            spec.mounts = vec![Mount::Bind {
                source: src.path().into(),
                target: "/a/b/stub".into(),
                readonly: false,
            }];
            let (res, out, err) = run_capture(&spec);
            let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
            assert_eq!(
                (o.status, out.as_str()),
                (ExitStatus::Code(0), "swapped\n"),
                "[{who}] {err}"
            );
            assert!(
                host.path().join("b/stub").is_dir(),
                "[{who}] host dir removed through the symlink"
            );
            assert!(host.path().join("b/keep").is_file(), "[{who}]");
            assert!(
                o.warnings
                    .iter()
                    .any(|w| w.contains("left sandbox mountpoint stub")),
                "[{who}] {:?}",
                o.warnings
            );
        },
    );
}

#[test]
fn network_none_has_only_loopback() {
    need_busybox!();
    as_root_and_unprivileged("network_none_has_only_loopback", |who| {
        let r = busybox_rootfs();
        let mut spec = sh(r.path(), "cat /proc/net/dev | tail -n +3 | cut -d: -f1");
        spec.network = Network::None;
        let (res, out, err) = run_capture(&spec);
        let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
        assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
        let ifaces: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(ifaces, ["lo"], "[{who}]");
        // With the host network the step sees more than lo (when the host has more).
        let host_ifaces = std::fs::read_to_string("/proc/net/dev")
            .expect("net/dev")
            .lines()
            .count()
            - 2;
        let mut spec = sh(r.path(), "cat /proc/net/dev | tail -n +3 | wc -l");
        spec.network = Network::Host;
        let (res, out, _) = run_capture(&spec);
        assert!(res.expect("run").status.success());
        assert_eq!(out.trim(), host_ifaces.to_string(), "[{who}]");
    });
}

#[test]
fn dangling_symlink_target_is_created_inside_the_root() {
    // Ubuntu-style /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf, target absent.
    need_busybox!();
    as_root_and_unprivileged(
        "dangling_symlink_target_is_created_inside_the_root",
        |who| {
            let r = busybox_rootfs();
            std::os::unix::fs::symlink(
                "../run/systemd/resolve/stub-resolv.conf",
                r.path().join("etc/resolv.conf"),
            )
            .expect("symlink");
            std::os::unix::fs::symlink("/../../outside-x", r.path().join("etc/hostname"))
                .expect("symlink");
            let (res, out, err) = run_capture(&sh(
                r.path(),
                "test -f /etc/resolv.conf && echo resolv; cat /etc/hostname",
            ));
            let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
            assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
            assert_eq!(out, "resolv\nkiln\n", "[{who}] {:?}", o.warnings);
            assert!(o
                .excluded_paths
                .contains(&"/run/systemd/resolve/stub-resolv.conf".to_string()));
            assert!(
                o.excluded_paths.contains(&"/outside-x".to_string()),
                "{:?}",
                o.excluded_paths
            );
            // The symlinks stay, their created targets are gone again.
            assert!(std::fs::symlink_metadata(r.path().join("etc/resolv.conf"))
                .expect("link")
                .file_type()
                .is_symlink());
            assert!(
                !r.path().join("run").exists() && !r.path().join("outside-x").exists(),
                "[{who}]"
            );
            assert!(!std::path::Path::new("/outside-x").exists());
        },
    );
}

#[test]
fn hostile_passwd_fifo_does_not_hang_home_lookup() {
    // HOSTILE-INPUTS 29: HOME comes from /etc/passwd; a FIFO there must not block.
    need_busybox!();
    as_root_and_unprivileged("hostile_passwd_fifo_does_not_hang_home_lookup", |who| {
        let r = busybox_rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).expect("rm");
        nix::unistd::mkfifo(
            &r.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .expect("mkfifo");
        let (res, out, err) = run_capture(&sh(r.path(), "echo \"$HOME\""));
        let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
        assert_eq!(out, "/\n", "[{who}]");
        assert!(
            o.warnings.iter().any(|w| w.contains("fifo")),
            "[{who}] {:?}",
            o.warnings
        );
        let e = kiln_sandbox::resolve_user(r.path(), "app").expect_err("fifo passwd");
        assert!(e.to_string().contains("not a regular file"), "{e}");
    });
}

#[test]
fn sys_is_mounted_read_only_and_leaves_no_stub() {
    // docker gives a RUN a read-only /sys; with the host network a fresh sysfs is not allowed
    // in a user namespace, so the sandbox binds the host's read-only instead.
    need_busybox!();
    as_root_and_unprivileged("sys_is_mounted_read_only_and_leaves_no_stub", |who| {
        for network in [Network::Host, Network::None] {
            let r = busybox_rootfs();
            // Every mount below /sys is read-only too: a writable /sys/fs/cgroup would let a
            // RUN create cgroups on the host.
            let mut spec = sh(
                r.path(),
                "test -d /sys/kernel && echo sys; \
                 mkdir /sys/kiln-probe 2>/dev/null || echo ro; \
                 grep ' /sys ' /proc/mounts | cut -d' ' -f4 | cut -d, -f1; \
                 grep ' /sys/' /proc/mounts | cut -d' ' -f4 | cut -d, -f1 | grep -v '^ro$' | wc -l; \
                 for d in /sys/fs/cgroup /sys/fs/cgroup/pids /sys/fs/cgroup/unified; do \
                   test -d $d && mkdir $d/kiln-probe 2>/dev/null && echo wrote $d && rmdir $d/kiln-probe; \
                 done; true",
            );
            spec.network = network;
            let (res, out, err) = run_capture(&spec);
            let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
            assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
            assert_eq!(out, "sys\nro\nro\n0\n", "[{who}] {network:?}: {err}");
            assert!(
                std::fs::symlink_metadata(r.path().join("sys")).is_err(),
                "[{who}] /sys stub left in the rootfs"
            );
        }
    });
}

#[test]
fn mount_target_under_a_read_only_directory() {
    // A bind target below a 0555 directory (as /proc or /sys are in Debian images): an
    // unprivileged caller owning the rootfs gets its stub created and removed, and the
    // directory keeps its mode.
    need_busybox!();
    as_root_and_unprivileged("mount_target_under_a_read_only_directory", |who| {
        use std::os::unix::fs::PermissionsExt;
        let r = busybox_rootfs();
        let ro = r.path().join("ro");
        std::fs::create_dir(&ro).expect("mkdir");
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let src = tempfile::tempdir().expect("src");
        std::fs::write(src.path().join("f"), "bound\n").expect("write");
        let mut spec = sh(r.path(), "cat /ro/m/f");
        spec.mounts = vec![Mount::Bind {
            source: src.path().into(),
            target: "/ro/m".into(),
            readonly: true,
        }];
        let (res, out, err) = run_capture(&spec);
        let o = res.unwrap_or_else(|e| panic!("[{who}] {e} {err}"));
        assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
        assert_eq!(out, "bound\n", "[{who}]");
        assert!(
            std::fs::symlink_metadata(ro.join("m")).is_err(),
            "[{who}] stub left"
        );
        let mode = std::fs::metadata(&ro).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o555, "[{who}] mode of /ro");
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    });
}

//! Overlay root (stretch goal): the step's changes land in the upper dir, the rootfs is
//! untouched.

mod common;

use std::os::unix::fs::FileTypeExt;

use common::*;
use kiln_sandbox::{ExitStatus, OverlayDirs};

#[test]
fn overlay_upper_holds_the_change_set() {
    if !busybox_available() {
        return;
    }
    as_root_and_unprivileged("overlay_upper_holds_the_change_set", |who| {
        let r = busybox_rootfs();
        let dirs = tempfile::tempdir().expect("overlay dirs");
        let (upper, work) = (dirs.path().join("upper"), dirs.path().join("work"));
        std::fs::create_dir(&upper).expect("mkdir");
        std::fs::create_dir(&work).expect("mkdir");
        let passwd_before = std::fs::read(r.path().join("etc/passwd")).expect("passwd");
        let mut spec = sh(
            r.path(),
            "echo new > /tmp/new && rm /etc/group && echo 'x:x:5:5::/:/bin/sh' >> /etc/passwd && \
             cat /etc/hostname && pwd",
        );
        spec.cwd = "/made/by/workdir".into();
        spec.overlay = Some(OverlayDirs {
            upper: upper.clone(),
            work: work.clone(),
        });
        let (res, out, err) = run_capture(&spec);
        let o = match res {
            Ok(o) => o,
            Err(e) => {
                println!("skipped: overlayfs in a user namespace not available here ({e})");
                return;
            }
        };
        assert_eq!(o.status, ExitStatus::Code(0), "[{who}] {err}");
        assert_eq!(out, "kiln\n/made/by/workdir\n", "[{who}]");
        // The change set is in upper...
        assert_eq!(
            std::fs::read_to_string(upper.join("tmp/new")).expect("new"),
            "new\n"
        );
        let wh = std::fs::symlink_metadata(upper.join("etc/group")).expect("whiteout");
        assert!(
            wh.file_type().is_char_device(),
            "[{who}] deletion is a 0/0 char device"
        );
        assert!(std::fs::read_to_string(upper.join("etc/passwd"))
            .expect("copied up")
            .ends_with("x:x:5:5::/:/bin/sh\n"));
        assert!(upper.join("made/by/workdir").is_dir());
        // ...and nothing of the sandbox's own mounts or stubs is.
        for absent in [
            "proc",
            "dev",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
        ] {
            assert!(
                std::fs::symlink_metadata(upper.join(absent)).is_err(),
                "[{who}] {absent} in upper"
            );
        }
        // The lower rootfs is untouched and its stubs are gone.
        assert_eq!(
            std::fs::read(r.path().join("etc/passwd")).expect("passwd"),
            passwd_before
        );
        assert!(r.path().join("etc/group").is_file());
        assert!(!r.path().join("tmp/new").exists() && !r.path().join("made").exists());
        for gone in ["proc", "dev", "etc/hosts"] {
            assert!(
                std::fs::symlink_metadata(r.path().join(gone)).is_err(),
                "[{who}] stub {gone}"
            );
        }
    });
}

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

#[test]
fn overlay_can_remove_and_recreate_a_lower_directory() {
    // Regression: the overlay was mounted without `userxattr` first; in a user namespace
    // trusted.* xattrs cannot be set, so overlayfs mounted anyway with xattrs off and
    // answered EIO to anything needing an opaque marker: `rm -rf` of a lower directory
    // with children, and `mkdir` over a whiteout.
    if !busybox_available() {
        return;
    }
    as_root_and_unprivileged("overlay_can_remove_and_recreate_a_lower_directory", |who| {
        let r = busybox_rootfs();
        for d in ["a/b", "d/e"] {
            std::fs::create_dir_all(r.path().join(d)).expect("mkdir");
        }
        std::fs::write(r.path().join("a/b/c"), "c").expect("write");
        std::fs::write(r.path().join("d/e/f"), "f").expect("write");
        let dirs = tempfile::tempdir().expect("overlay dirs");
        let (upper, work) = (dirs.path().join("upper"), dirs.path().join("work"));
        std::fs::create_dir(&upper).expect("mkdir");
        std::fs::create_dir(&work).expect("mkdir");
        let mut spec = sh(
            r.path(),
            "rm -rf /a && test ! -e /a && rm -rf /d && mkdir -p /d/e && ls -A /d/e",
        );
        spec.overlay = Some(OverlayDirs {
            upper: upper.clone(),
            work,
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
        assert_eq!(
            out, "",
            "[{who}] lower children of a recreated dir are hidden"
        );
        let wh = std::fs::symlink_metadata(upper.join("a")).expect("whiteout");
        assert!(wh.file_type().is_char_device(), "[{who}] /a is a whiteout");
        let opaque = [c"user.overlay.opaque", c"trusted.overlay.opaque"]
            .iter()
            .any(|k| xattr_is_y(&upper.join("d"), k));
        assert!(opaque, "[{who}] recreated /d carries the opaque xattr");
        assert!(r.path().join("a/b/c").is_file() && r.path().join("d/e/f").is_file());
    });
}

/// True when the xattr `name` of `path` (not followed) is exactly `y`.
fn xattr_is_y(path: &std::path::Path, name: &std::ffi::CStr) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
    let mut v = [0u8; 8];
    // SAFETY: valid C strings and a buffer of the length passed.
    let n = unsafe { libc::lgetxattr(p.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
    n == 1 && v[0] == b'y'
}

//! Unpacking as an ordinary user (uid 65534): no chown, devices skipped with a warning,
//! setuid and restrictive directory modes still applied. The test re-runs this binary as
//! uid 65534 (std's `CommandExt::uid`, so it needs root to start; otherwise it says skipped).

mod common;

use common::RawTar;
use kiln_rootfs::{unpack_layer, Ownership, Root, UnpackOptions};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;

const CHILD_ENV: &str = "KILN_ROOTFS_UNPRIVILEGED_CHILD";

fn layer() -> Vec<u8> {
    let mut t = RawTar::new();
    t.dir("var/empty", 0o555)
        .file("var/empty/inside", b"written after a 0555 dir entry")
        .file_mode("usr/bin/su", b"#!", 0o4755)
        .chr("dev/null", 1, 3)
        // Not settable without privilege: a warning, not a failed unpack.
        .pax(&[(
            "SCHILY.xattr.security.capability",
            &[0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..],
        )])
        .file_mode("bin/ping", b"x", 0o755)
        .raw(b"etc/owned-by-1000", b'0', 0o600, 1, b"", b"x")
        .dir("proc", 0o555)
        .finish()
}

/// Runs in the child, as uid 65534.
fn child(dir: &Path) {
    let root = Root::open(dir.join("rootfs")).unwrap();
    assert_eq!(root.ownership(), &Ownership::Skip);
    assert!(!root.privileged());
    let st = unpack_layer(&root, &layer()[..], &UnpackOptions::default()).unwrap();
    assert_eq!(st.skipped_devices, 1);
    // A second layer whiting out the 0555 directory: removable although not writable.
    let wh = RawTar::new().file("var/.wh.empty", b"").finish();
    unpack_layer(&root, &wh[..], &UnpackOptions::default()).unwrap();
}

#[test]
fn unprivileged_unpack() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: needs root to start a uid-65534 child");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir(&rootfs).unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(&rootfs, Some(65534), Some(65534)).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "unprivileged_unpack",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "child failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let su = fs::metadata(rootfs.join("usr/bin/su")).unwrap();
    assert_eq!(su.mode() & 0o7777, 0o4755);
    assert_eq!(su.uid(), 65534, "no chown without privilege");
    assert!(!rootfs.join("dev/null").exists());
    assert!(rootfs.join("bin/ping").is_file());
    assert!(!rootfs.join("var/empty").exists());
    assert_eq!(
        fs::metadata(rootfs.join("proc")).unwrap().mode() & 0o7777,
        0o555
    );
}

#[test]
fn ownership_map_shifts_ids() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: chown to mapped ids needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let map = kiln_rootfs::IdMap {
        uids: vec![(0, 100_000, 65_536)],
        gids: vec![(0, 200_000, 65_536)],
    };
    let root = Root::open(tmp.path())
        .unwrap()
        .with_ownership(Ownership::Map(map));
    let mut t = RawTar::new();
    t.file("root-owned", b"r");
    // uid/gid 1000 via PAX records.
    t.pax(&[("uid", b"1000"), ("gid", b"1000")])
        .file("user-owned", b"u");
    unpack_layer(&root, &t.finish()[..], &UnpackOptions::default()).unwrap();
    let m = fs::metadata(tmp.path().join("root-owned")).unwrap();
    assert_eq!((m.uid(), m.gid()), (100_000, 200_000));
    let m = fs::metadata(tmp.path().join("user-owned")).unwrap();
    assert_eq!((m.uid(), m.gid()), (101_000, 201_000));
}

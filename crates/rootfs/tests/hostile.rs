//! Malicious layers (../shared/HOSTILE-INPUTS.md items 1–23 and 30): each is contained or
//! rejected as stated, with sentinels next to the rootfs checked after each.

mod common;

use common::{RawTar, Sandbox};
use kiln_rootfs::{unpack_layer, DevicePolicy, Root, UnpackError, UnpackOptions};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

fn apply(root: &Root, tar: &[u8]) -> Result<kiln_rootfs::UnpackStats, UnpackError> {
    unpack_layer(root, tar, &UnpackOptions::default())
}

fn apply_opts(
    root: &Root,
    tar: &[u8],
    o: &UnpackOptions,
) -> Result<kiln_rootfs::UnpackStats, UnpackError> {
    unpack_layer(root, tar, o)
}

#[test]
fn item01_dotdot_entries_are_breakout_errors_naming_the_entry() {
    for name in ["../x", "../../x", "..", "a/../../x"] {
        let sb = Sandbox::new();
        let tar = RawTar::new().file(name, b"evil").finish();
        let err = apply(&sb.root(), &tar).unwrap_err();
        assert!(matches!(err, UnpackError::Breakout { .. }), "{name}: {err}");
        assert!(
            err.to_string().contains(name),
            "error does not name {name}: {err}"
        );
        sb.check();
    }
}

#[test]
fn item02_absolute_entries_land_inside_the_root() {
    let sb = Sandbox::new();
    let probe = format!("/tmp/kiln-probe-{}", std::process::id());
    let tar = RawTar::new().file(&probe, b"inside").finish();
    apply(&sb.root(), &tar).unwrap();
    assert_eq!(fs::read(sb.rootfs.join(&probe[1..])).unwrap(), b"inside");
    assert!(!PathBuf::from(&probe).exists(), "host {probe} was written");
    // `/../etc/x` has a `..`: rejected.
    let tar = RawTar::new().file("/../etc/kiln-probe-x", b"evil").finish();
    assert!(matches!(
        apply(&sb.root(), &tar),
        Err(UnpackError::Breakout { .. })
    ));
    sb.check();
}

#[test]
fn item03_symlink_to_outside_then_file_through_it_is_contained() {
    let sb = Sandbox::new();
    let depth = sb.rootfs.components().count();
    let up = "../".repeat(depth + 2);
    let rel_outside = format!("{up}{}", &sb.sdir()[1..]);
    let tar = RawTar::new()
        .symlink("l", &sb.sdir())
        .file("l/x", b"evil")
        .symlink("l2", &rel_outside)
        .file("l2/y", b"evil")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    let inside = sb.rootfs.join(&sb.sdir()[1..]);
    assert_eq!(fs::read(inside.join("x")).unwrap(), b"evil");
    assert_eq!(fs::read(inside.join("y")).unwrap(), b"evil");
    sb.check();
}

#[test]
fn item04_relative_then_absolute_symlink_chain_is_contained() {
    let sb = Sandbox::new();
    fs::create_dir(sb.rootfs.join("inner")).unwrap();
    let tar = RawTar::new()
        .symlink("inner/go_up", "..")
        .symlink("inner/go_up/escape", "../sentinel_dir")
        .file("inner/go_up/escape/newfile", b"evil")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    assert_eq!(
        fs::read(sb.rootfs.join("sentinel_dir/newfile")).unwrap(),
        b"evil"
    );
    sb.check();
}

#[test]
fn item05_symlink_override_path() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .file("foo/tmp/f", b"first")
        .symlink("foo", "/")
        .file("foo/tmp/f", b"final")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    assert_eq!(fs::read(sb.rootfs.join("tmp/f")).unwrap(), b"final");
    assert!(fs::symlink_metadata(sb.rootfs.join("foo"))
        .unwrap()
        .file_type()
        .is_symlink());
    sb.check();
}

#[test]
fn item06_directory_override_symlink_across_layers() {
    let sb = Sandbox::new();
    let lower = RawTar::new().dir("d", 0o755).file("d/old", b"x").finish();
    apply(&sb.root(), &lower).unwrap();
    let upper = RawTar::new()
        .symlink("d", &sb.sdir())
        .file("d/passwd", b"evil")
        .finish();
    apply(&sb.root(), &upper).unwrap();
    assert_eq!(
        fs::read(sb.rootfs.join(&sb.sdir()[1..]).join("passwd")).unwrap(),
        b"evil"
    );
    sb.check();
}

#[test]
fn item07_hardlinks_link_rootfs_inodes_or_fail() {
    let sb = Sandbox::new();
    let base = RawTar::new().file("etc/passwd", b"root").finish();
    apply(&sb.root(), &base).unwrap();
    let tar = RawTar::new().hardlink("h", "/etc/passwd").finish();
    apply(&sb.root(), &tar).unwrap();
    let h = fs::metadata(sb.rootfs.join("h")).unwrap();
    let p = fs::metadata(sb.rootfs.join("etc/passwd")).unwrap();
    assert_eq!((h.dev(), h.ino()), (p.dev(), p.ino()));
    let tar = RawTar::new()
        .hardlink("h2", "../../../../etc/passwd")
        .finish();
    assert!(matches!(
        apply(&sb.root(), &tar),
        Err(UnpackError::LinkBreakout { .. })
    ));
    // Through a symlink that points outside: resolved inside the root.
    let tar = RawTar::new()
        .symlink("d1", &format!("../../{}", &sb.sdir()[1..]))
        .hardlink("h3", "d1/file")
        .finish();
    match apply(&sb.root(), &tar) {
        Err(UnpackError::Root { .. }) => {}
        other => panic!("hard link through an outside symlink: {other:?}"),
    }
    assert!(!sb.rootfs.join("h3").exists());
    sb.check();
}

#[test]
fn item08_cve_2021_32760_hardlink_to_symlink_then_chmod() {
    let sb = Sandbox::new();
    let target = sb.sentinel.to_str().unwrap().to_string();
    let tar = RawTar::new()
        .symlink("s", &target)
        .hardlink("h", "s")
        .raw(b"h", b'2', 0o777, 0, target.as_bytes(), b"")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    let root = sb.root();
    root.set_metadata("h", &kiln_rootfs::Meta::with_mode(0o777))
        .unwrap();
    root.set_metadata("s", &kiln_rootfs::Meta::with_mode(0o777))
        .unwrap();
    sb.check();
}

#[test]
fn item09_hardlink_to_sibling_with_same_prefix_is_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .hardlink("x", "../rootfs-evil/secret")
        .finish();
    assert!(matches!(
        apply(&sb.root(), &tar),
        Err(UnpackError::LinkBreakout { .. })
    ));
    sb.check();
}

#[test]
fn item10_rustsec_2018_0002_link_then_file_replaces_the_link() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("x", sb.sentinel.to_str().unwrap())
        .file("x", b"overwrite?")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    let m = fs::symlink_metadata(sb.rootfs.join("x")).unwrap();
    assert!(m.is_file());
    assert_eq!(fs::read(sb.rootfs.join("x")).unwrap(), b"overwrite?");
    sb.check();
}

#[test]
fn item11_cve_2026_33056_symlink_then_directory_entry() {
    for dname in ["foo", "foo/."] {
        let sb = Sandbox::new();
        let tar = RawTar::new()
            .symlink("foo", &sb.sdir())
            .dir(dname, 0o777)
            .finish();
        apply(&sb.root(), &tar).unwrap();
        let m = fs::symlink_metadata(sb.rootfs.join("foo")).unwrap();
        assert!(m.is_dir(), "{dname}: foo should now be a directory");
        assert_eq!(m.mode() & 0o7777, 0o777);
        sb.check();
    }
}

#[test]
fn item12_tar_rs_238_symlink_dotdot_then_deep_path() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("symlink", "..")
        .file("symlink/exploit/foo/bar", b"x")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    assert!(sb.rootfs.join("exploit/foo/bar").is_file());
    sb.check();
}

#[test]
fn item13_root_entries_are_ignored_and_dotdot_rejected() {
    for (name, flag) in [
        (".", b'2'),
        ("./", b'1'),
        ("", b'0'),
        (".", b'0'),
        ("./", b'5'),
    ] {
        let sb = Sandbox::new();
        fs::set_permissions(&sb.rootfs, fs::Permissions::from_mode(0o755)).unwrap();
        let tar = RawTar::new()
            .raw(name.as_bytes(), flag, 0o700, 0, b"/", b"")
            .finish();
        apply(&sb.root(), &tar).unwrap();
        let m = fs::symlink_metadata(&sb.rootfs).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.mode() & 0o7777, 0o755, "{name:?} {flag}");
        sb.check();
    }
    for flag in [b'0', b'1', b'2'] {
        let sb = Sandbox::new();
        let tar = RawTar::new().raw(b"..", flag, 0o700, 0, b"x", b"").finish();
        assert!(apply(&sb.root(), &tar).is_err());
        sb.check();
    }
}

#[test]
fn item14_invalid_whiteouts_are_errors_and_remove_nothing() {
    for name in [".wh.", ".wh..", ".wh...", "etc/.wh.."] {
        let sb = Sandbox::new();
        fs::create_dir(sb.rootfs.join("etc")).unwrap();
        fs::write(sb.rootfs.join("etc/keep"), b"k").unwrap();
        let tar = RawTar::new().file(name, b"").finish();
        let err = apply(&sb.root(), &tar).unwrap_err();
        assert!(
            matches!(err, UnpackError::InvalidWhiteout { .. }),
            "{name}: {err}"
        );
        assert!(sb.rootfs.join("etc/keep").exists());
        sb.check();
    }
}

#[test]
fn item15_whiteout_through_lower_symlink_stays_inside() {
    let sb = Sandbox::new();
    let lower = RawTar::new()
        .file("etc/x", b"x")
        .symlink("l", "/etc")
        .symlink("l2", &sb.sdir())
        .finish();
    apply(&sb.root(), &lower).unwrap();
    let upper = RawTar::new()
        .file("l/.wh.x", b"")
        .file("l2/.wh.file", b"")
        .finish();
    apply(&sb.root(), &upper).unwrap();
    assert!(!sb.rootfs.join("etc/x").exists());
    assert!(!sb.rootfs.join("l/.wh.x").exists());
    sb.check();
}

#[test]
fn item16_whiteout_of_symlink_to_dir_removes_only_the_link() {
    let sb = Sandbox::new();
    let lower = RawTar::new()
        .file("etc/keep", b"k")
        .symlink("localetc", "/etc")
        .finish();
    apply(&sb.root(), &lower).unwrap();
    let upper = RawTar::new().file(".wh.localetc", b"").finish();
    apply(&sb.root(), &upper).unwrap();
    assert!(fs::symlink_metadata(sb.rootfs.join("localetc")).is_err());
    assert_eq!(fs::read(sb.rootfs.join("etc/keep")).unwrap(), b"k");
    sb.check();
}

#[test]
fn item17_ggcr_1897_opaque_whiteout_before_and_after_same_layer_entries() {
    for opaque_first in [true, false] {
        let sb = Sandbox::new();
        let lower = RawTar::new()
            .file("a/old", b"o")
            .file("a/b/old", b"o")
            .file("keep/x", b"k")
            .finish();
        apply(&sb.root(), &lower).unwrap();
        let mut t = RawTar::new();
        if opaque_first {
            t.file("a/.wh..wh..opq", b"").file("a/b/new", b"n");
        } else {
            t.file("a/b/new", b"n").file("a/.wh..wh..opq", b"");
        }
        apply(&sb.root(), &t.finish()).unwrap();
        assert!(
            !sb.rootfs.join("a/old").exists(),
            "opaque_first={opaque_first}"
        );
        assert!(
            !sb.rootfs.join("a/b/old").exists(),
            "opaque_first={opaque_first}"
        );
        assert_eq!(fs::read(sb.rootfs.join("a/b/new")).unwrap(), b"n");
        assert!(!sb.rootfs.join("a/.wh..wh..opq").exists());
        assert!(sb.rootfs.join("keep/x").exists());
        sb.check();
    }
}

#[test]
fn item18_opaque_whiteout_under_symlink_to_outside_is_contained() {
    let sb = Sandbox::new();
    let lower = RawTar::new().symlink("a", &sb.sdir()).finish();
    apply(&sb.root(), &lower).unwrap();
    let upper = RawTar::new().file("a/.wh..wh..opq", b"").finish();
    apply(&sb.root(), &upper).unwrap();
    sb.check();
}

#[test]
fn item19_devices_follow_policy_and_fifos_are_created() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .chr("dev/null", 1, 3)
        .raw(b"run/fifo", b'6', 0o600, 0, b"", b"")
        .finish();
    let mut o = UnpackOptions {
        devices: DevicePolicy::Skip,
        ..UnpackOptions::default()
    };
    let st = apply_opts(&sb.root(), &tar, &o).unwrap();
    assert_eq!(st.skipped_devices, 1);
    assert!(!sb.rootfs.join("dev/null").exists());
    assert!(fs::symlink_metadata(sb.rootfs.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    o.devices = DevicePolicy::Refuse;
    assert!(matches!(
        apply_opts(&sb.root(), &tar, &o),
        Err(UnpackError::DeviceRefused { .. })
    ));
    o.devices = DevicePolicy::CreateOrSkip;
    let st = apply_opts(&sb.root(), &tar, &o).unwrap();
    match fs::symlink_metadata(sb.rootfs.join("dev/null")) {
        Ok(m) => {
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), nix::sys::stat::makedev(1, 3));
        }
        Err(_) => {
            assert_eq!(st.skipped_devices, 1);
            println!("skipped: mknod not permitted here; device skipped with a warning");
        }
    }
    sb.check();
}

#[test]
fn item20_setuid_survives_chown_and_forbidden_xattrs_are_rejected() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .pax(&[("SCHILY.xattr.user.note", b"hello")])
        .file_mode("usr/bin/su", b"#!", 0o4755)
        .finish();
    apply(&sb.root(), &tar).unwrap();
    let m = fs::metadata(sb.rootfs.join("usr/bin/su")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    if nix::unistd::geteuid().is_root() {
        assert_eq!(m.uid(), 0);
    }
    let v = rustix::fs::lgetxattr(
        sb.rootfs.join("usr/bin/su"),
        "user.note",
        &mut [0u8; 64][..],
    );
    match v {
        Ok(n) => assert_eq!(n, 5),
        Err(e) => println!("skipped: user xattrs not supported here ({e})"),
    }
    for bad in ["trusted.overlay.opaque", "user.overlay.opaque", "trusted.x"] {
        let key = format!("SCHILY.xattr.{bad}");
        let tar = RawTar::new()
            .pax(&[(key.as_str(), b"y")])
            .dir("d", 0o755)
            .finish();
        let err = apply(&sb.root(), &tar).unwrap_err();
        assert!(
            matches!(err, UnpackError::ForbiddenXattr { .. }),
            "{bad}: {err}"
        );
    }
    if nix::unistd::geteuid().is_root() {
        // security.capability: v2 cap_net_bind_service, as setcap writes it.
        let cap: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let tar = RawTar::new()
            .pax(&[("SCHILY.xattr.security.capability", &cap)])
            .file_mode("bin/ping", b"x", 0o755)
            .finish();
        apply(&sb.root(), &tar).unwrap();
        let n = rustix::fs::lgetxattr(
            sb.rootfs.join("bin/ping"),
            "security.capability",
            &mut [0u8; 64][..],
        )
        .unwrap();
        assert_eq!(n, 20);
    } else {
        println!("skipped: security.capability needs root");
    }
    sb.check();
}

/// Lists `tar` with GNU tar (name per line); `None` when GNU tar is not installed.
fn gnu_tar_list(tar: &[u8]) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.tar");
    fs::write(&p, tar).unwrap();
    let out = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&p)
        .output()
        .ok()?;
    if !String::from_utf8_lossy(
        &std::process::Command::new("tar")
            .arg("--version")
            .output()
            .ok()?
            .stdout,
    )
    .contains("GNU tar")
    {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim_end_matches('/').to_string())
            .collect(),
    )
}

fn our_list(tar: &[u8]) -> Vec<String> {
    let sb = Sandbox::new();
    apply(&sb.root(), tar).unwrap();
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(&sb.rootfs)
        .min_depth(1)
        .sort_by_file_name()
    {
        let e = e.unwrap();
        if e.file_type().is_file() {
            out.push(
                e.path()
                    .strip_prefix(&sb.rootfs)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    sb.check();
    out
}

#[test]
fn item21_cve_2025_62518_pax_size_and_pax_path_win_like_gnu_tar() {
    // PAX size 1024 with a ustar size of 0: the data holds a hidden header.
    let inner = RawTar::new().file("smuggled", b"evil").buf.clone();
    let mut data = inner.clone();
    data.resize(1024, 0);
    let mut t = RawTar::new();
    t.pax(&[("size", b"1024")]);
    t.raw(b"outer", b'0', 0o644, 0, b"", &data);
    t.file("after", b"a");
    let tar = t.finish();
    let ours = our_list(&tar);
    assert_eq!(ours, ["after", "outer"]);
    match gnu_tar_list(&tar) {
        Some(mut gnu) => {
            gnu.sort();
            assert_eq!(ours, gnu);
        }
        None => println!("skipped: GNU tar not installed for the cross-check"),
    }
    // PAX path followed by a GNU long name: the PAX record wins (GNU tar and Go agree).
    let long = "g".repeat(120);
    let mut t = RawTar::new();
    t.pax(&[("path", b"from-pax")]);
    t.gnu_longname(long.as_bytes());
    t.file("short", b"x");
    let tar = t.finish();
    let ours = our_list(&tar);
    assert_eq!(ours, ["from-pax"]);
    match gnu_tar_list(&tar) {
        Some(gnu) => assert_eq!(ours, gnu),
        None => println!("skipped: GNU tar not installed for the cross-check"),
    }
}

#[test]
fn item22_truncated_huge_entry_is_a_clear_error() {
    let sb = Sandbox::new();
    let mut t = RawTar::new();
    // 8 GiB does not fit the 11 octal digits of ustar: declared with a PAX size record.
    t.pax(&[("size", b"8589934592")]);
    t.raw(b"big", b'0', 0o644, 0, b"", b"only a little");
    let tar = t.buf.clone();
    let err = apply(&sb.root(), &tar).unwrap_err();
    assert!(matches!(err, UnpackError::Content { .. }), "{err}");
    assert!(err.to_string().contains("big"));
    sb.check();
}

#[test]
fn item22_gzip_bomb_hits_the_size_limit() {
    use std::io::Write;
    let sb = Sandbox::new();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut h = RawTar::new();
    h.raw(b"zeros", b'0', 0o644, 256 << 20, b"", b"");
    gz.write_all(&h.buf).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..256 {
        gz.write_all(&chunk).unwrap();
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    let blob = gz.finish().unwrap();
    assert!(blob.len() < 8 << 20, "bomb of {} bytes", blob.len());
    let o = UnpackOptions {
        max_total_size: 32 << 20,
        ..UnpackOptions::default()
    };
    let err = apply_opts(&sb.root(), &blob, &o).unwrap_err();
    assert!(matches!(err, UnpackError::TooLarge { .. }), "{err}");
    assert_eq!(err.entry(), Some("zeros"), "{err}");
    let o = UnpackOptions {
        max_entry_size: 1 << 20,
        ..UnpackOptions::default()
    };
    let err = apply_opts(&sb.root(), &blob, &o).unwrap_err();
    assert!(matches!(err, UnpackError::EntryTooLarge { .. }), "{err}");
    sb.check();
}

#[test]
fn item22_entry_count_depth_and_name_length_limits() {
    let sb = Sandbox::new();
    let mut t = RawTar::new();
    for i in 0..101 {
        t.file(&format!("f{i}"), b"");
    }
    let o = UnpackOptions {
        max_entries: 100,
        ..UnpackOptions::default()
    };
    let err = apply_opts(&sb.root(), &t.finish(), &o).unwrap_err();
    assert!(matches!(err, UnpackError::TooManyEntries { .. }), "{err}");

    let deep = "a/".repeat(10_000) + "f";
    let tar = RawTar::new()
        .pax(&[("path", deep.as_bytes())])
        .file("x", b"")
        .finish();
    let err = apply(&sb.root(), &tar).unwrap_err();
    assert!(matches!(err, UnpackError::TooDeep { .. }), "{err}");

    let long = format!("d/{}", "n".repeat(256));
    let tar = RawTar::new()
        .pax(&[("path", long.as_bytes())])
        .file("x", b"")
        .finish();
    let err = apply(&sb.root(), &tar).unwrap_err();
    assert!(matches!(err, UnpackError::NameTooLong { .. }), "{err}");
    sb.check();
}

#[test]
fn item23_diff_id_mismatch_fails() {
    let sb = Sandbox::new();
    let tar = RawTar::new().file("f", b"x").finish();
    let st = apply(&sb.root(), &tar).unwrap();
    assert_eq!(st.diff_id, kiln_oci::Digest::of(&tar));
    let o = UnpackOptions {
        expected_diff_id: Some(kiln_oci::Digest::of(b"something else")),
        ..UnpackOptions::default()
    };
    let err = apply_opts(&sb.root(), &tar, &o).unwrap_err();
    assert!(matches!(err, UnpackError::DiffIdMismatch { .. }), "{err}");
    sb.check();
}

#[test]
fn item30_ignore_list_applies_to_the_resolved_parent() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.rootfs.join("kiln")).unwrap();
    fs::write(sb.rootfs.join("kiln/executor"), b"builder").unwrap();
    fs::create_dir_all(sb.rootfs.join("proc")).unwrap();
    let root = Root::open(&sb.rootfs).unwrap().with_ignore(&[
        PathBuf::from("/kiln"),
        PathBuf::from("/proc"),
        PathBuf::from("/var/run/secrets"),
    ]);
    let tar = RawTar::new()
        .symlink("x", "/kiln")
        .file("x/executor", b"evil")
        .file("proc/1/environ", b"evil")
        .file("var/run/secrets/token", b"evil")
        .file(".wh.kiln", b"")
        .file("ok", b"fine")
        .finish();
    let st = apply(&root, &tar).unwrap();
    assert_eq!(st.ignored, 4);
    assert_eq!(
        fs::read(sb.rootfs.join("kiln/executor")).unwrap(),
        b"builder"
    );
    assert!(!sb.rootfs.join("proc/1").exists());
    assert!(!sb.rootfs.join("var/run/secrets/token").exists());
    assert_eq!(fs::read(sb.rootfs.join("ok")).unwrap(), b"fine");
    sb.check();
}

#[test]
fn symlink_loop_is_eloop_not_a_hang() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"")
        .finish();
    let err = apply(&sb.root(), &tar).unwrap_err();
    assert!(err.to_string().contains("symlinks"), "{err}");
    sb.check();
}

#[test]
fn root_api_resolves_in_root() {
    let sb = Sandbox::new();
    let root = sb.root();
    root.symlink("abs", "/").unwrap();
    root.symlink("up", "../../..").unwrap();
    assert_eq!(root.resolve("abs/etc").unwrap(), sb.rootfs.join("etc"));
    assert_eq!(root.resolve("up/up/etc").unwrap(), sb.rootfs.join("etc"));
    assert_eq!(root.resolve("/../../x").unwrap(), sb.rootfs.join("x"));
    let made = root
        .create_dir_all("up/app/data", &kiln_rootfs::Meta::with_mode(0o750))
        .unwrap();
    assert_eq!(made, sb.rootfs.join("app/data"));
    assert_eq!(fs::metadata(&made).unwrap().mode() & 0o7777, 0o750);
    root.write_file(
        "abs/app/f",
        &mut &b"hi"[..],
        &kiln_rootfs::Meta::with_mode(0o600),
    )
    .unwrap();
    assert_eq!(fs::read(sb.rootfs.join("app/f")).unwrap(), b"hi");
    root.remove_all("up/app").unwrap();
    assert!(!sb.rootfs.join("app").exists());
    sb.check();
}

#[test]
fn item22_oversized_pax_and_long_name_headers_are_refused_before_reading() {
    use std::io::Write;
    let sb = Sandbox::new();
    // A PAX header declaring 1 GiB of zeros, gzip-compressed: refused at its header, long
    // before 1 GiB is decompressed or allocated.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut h = RawTar::new();
    h.raw(b"PaxHeaders.0/x", b'x', 0, 1 << 30, b"", b"");
    gz.write_all(&h.buf).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&chunk).unwrap();
    }
    let blob = gz.finish().unwrap();
    let err = apply(&sb.root(), &blob).unwrap_err();
    assert!(
        matches!(err, UnpackError::MetadataTooLarge { size, .. } if size == 1 << 30),
        "{err}"
    );
    let long = vec![b'n'; 2 << 20];
    let tar = RawTar::new().gnu_longname(&long).file("x", b"").finish();
    let err = apply(&sb.root(), &tar).unwrap_err();
    assert!(matches!(err, UnpackError::MetadataTooLarge { .. }), "{err}");
    sb.check();
}

#[test]
fn gnu_sparse_files_read_as_gnu_tar_writes_them() {
    let sb = Sandbox::new();
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("sparse");
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = fs::File::create(&f).unwrap();
        // Ten data segments: more than the four a GNU header holds, so extension blocks follow.
        for i in 0..10u64 {
            file.seek(SeekFrom::Start(i * (1 << 20))).unwrap();
            file.write_all(format!("segment {i}").as_bytes()).unwrap();
        }
        file.set_len(12 << 20).unwrap();
    }
    fs::write(src.path().join("after"), b"after the sparse entry").unwrap();
    let tarfile = src.path().join("s.tar");
    let ok = std::process::Command::new("tar")
        .args(["--format=gnu", "--sparse", "-cf"])
        .arg(&tarfile)
        .arg("-C")
        .arg(src.path())
        .args(["sparse", "after"])
        .status();
    if !matches!(ok, Ok(s) if s.success()) {
        println!("skipped: GNU tar not available to write an old-GNU sparse archive");
        return;
    }
    let tar = fs::read(&tarfile).unwrap();
    apply(&sb.root(), &tar).unwrap();
    assert_eq!(
        fs::read(sb.rootfs.join("sparse")).unwrap(),
        fs::read(&f).unwrap()
    );
    assert_eq!(
        fs::read(sb.rootfs.join("after")).unwrap(),
        b"after the sparse entry"
    );
    // PAX sparse formats (GNU tar's default `posix` output) are refused by name, not misread.
    let paxfile = src.path().join("p.tar");
    let ok = std::process::Command::new("tar")
        .args(["--format=posix", "--sparse", "-cf"])
        .arg(&paxfile)
        .arg("-C")
        .arg(src.path())
        .arg("sparse")
        .status()
        .unwrap();
    assert!(ok.success());
    let err = apply(&sb.root(), &fs::read(&paxfile).unwrap()).unwrap_err();
    assert!(matches!(err, UnpackError::Unsupported { .. }), "{err}");
    sb.check();
}

#[test]
fn plain_archives_keep_wh_files_as_files() {
    let sb = Sandbox::new();
    fs::write(sb.rootfs.join("x"), b"lower").unwrap();
    let tar = RawTar::new()
        .file(".wh.x", b"a file")
        .file("d/.wh..wh..opq", b"too")
        .finish();
    let o = UnpackOptions {
        whiteouts: false,
        ..UnpackOptions::default()
    };
    apply_opts(&sb.root(), &tar, &o).unwrap();
    assert_eq!(fs::read(sb.rootfs.join("x")).unwrap(), b"lower");
    assert_eq!(fs::read(sb.rootfs.join(".wh.x")).unwrap(), b"a file");
    assert!(sb.rootfs.join("d/.wh..wh..opq").is_file());
    sb.check();
}

// The unpacker reuses the last resolved parent directory for the entries that follow in the
// same directory (root.rs `ParentCache`). A later entry in the same layer that replaces a
// directory on the cached path (by a symlink, a whiteout, a file) must make the next entry
// resolve from the root again: these layers put the cache on a directory, then swap it. Entries
// that create in another directory move the cache anyway; whiteouts and hard links do not go
// through it, so the last three swap the directory under a live cache entry.

#[test]
fn parent_cache_directory_replaced_by_symlink_to_outside_then_file() {
    let sb = Sandbox::new();
    let tar = RawTar::new()
        .dir("a", 0o755)
        .file("a/f1", b"1")
        .file("a/f2", b"2")
        .symlink("a", &sb.sdir())
        .file("a/x", b"evil")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    let inside = sb.rootfs.join(&sb.sdir()[1..]);
    assert_eq!(fs::read(inside.join("x")).unwrap(), b"evil");
    assert!(fs::symlink_metadata(sb.rootfs.join("a"))
        .unwrap()
        .file_type()
        .is_symlink());
    sb.check();
}

#[test]
fn parent_cache_nested_directory_swapped_by_relative_symlink() {
    let sb = Sandbox::new();
    // Cache on `a/b`; then its ancestor `a` becomes `../sentinel_dir` (the rootfs's sibling on
    // the host): `a/b/x` must land in `rootfs/sentinel_dir/b/x`.
    let tar = RawTar::new()
        .file("a/b/f1", b"1")
        .file("a/b/f2", b"2")
        .symlink("a", "../sentinel_dir")
        .file("a/b/x", b"evil")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    assert_eq!(
        fs::read(sb.rootfs.join("sentinel_dir/b/x")).unwrap(),
        b"evil"
    );
    assert!(!sb.rootfs.join("a/b/f1").exists());
    sb.check();
}

#[test]
fn parent_cache_key_through_a_symlink_whose_target_is_swapped() {
    let sb = Sandbox::new();
    // Cache key `l` resolves to `d`; replacing `d` (not `l`, so no prefix of the key changes)
    // by a symlink to outside must still invalidate it.
    let tar = RawTar::new()
        .dir("d", 0o755)
        .symlink("l", "d")
        .file("l/f1", b"1")
        .symlink("d", &sb.sdir())
        .file("l/f2", b"evil")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    let inside = sb.rootfs.join(&sb.sdir()[1..]);
    assert_eq!(fs::read(inside.join("f2")).unwrap(), b"evil");
    assert!(!inside.join("f1").exists());
    sb.check();
}

#[test]
fn parent_cache_directory_whited_out_then_symlink_then_file() {
    let sb = Sandbox::new();
    let lower = RawTar::new().file("a/old", b"lower").finish();
    apply(&sb.root(), &lower).unwrap();
    let upper = RawTar::new()
        .file("a/f1", b"1")
        .file(".wh.a", b"")
        .file("a/new", b"recreated")
        .file("b/f", b"1")
        .file(".wh.b", b"")
        .symlink("b", &sb.sdir())
        .file("b/x", b"evil")
        .finish();
    apply(&sb.root(), &upper).unwrap();
    // `a` was whited out with its cached fd in use: `a/new` lands in a new `a`.
    assert_eq!(fs::read(sb.rootfs.join("a/new")).unwrap(), b"recreated");
    assert!(!sb.rootfs.join("a/old").exists());
    assert!(!sb.rootfs.join("a/f1").exists());
    let inside = sb.rootfs.join(&sb.sdir()[1..]);
    assert_eq!(fs::read(inside.join("x")).unwrap(), b"evil");
    assert!(!sb.rootfs.join(".wh.a").exists());
    sb.check();
}

#[test]
fn parent_cache_symlinked_directory_replaced_by_file_refuses_children() {
    let sb = Sandbox::new();
    // `s -> d`, cache on `s`; then `s` becomes a regular file: `s/g` has no directory to go to
    // (not the old `d`).
    let tar = RawTar::new()
        .dir("d", 0o755)
        .symlink("s", "d")
        .file("s/f", b"1")
        .file("s", b"now a file")
        .file("s/g", b"2")
        .finish();
    let err = apply(&sb.root(), &tar).unwrap_err();
    assert!(err.to_string().contains("s/g"), "{err}");
    assert!(!sb.rootfs.join("d/g").exists());
    assert_eq!(fs::read(sb.rootfs.join("d/f")).unwrap(), b"1");
    sb.check();
}

#[test]
fn parent_cache_directory_replaced_by_hardlink_to_symlink_to_outside() {
    let sb = Sandbox::new();
    // `a` (cached for `a/f1`) becomes, by a hard link to the symlink `s` (CVE-2021-32760's
    // shape), a symlink to the host's sentinel dir; `a/x` follows it inside the root.
    let tar = RawTar::new()
        .symlink("s", &sb.sdir())
        .dir("a", 0o755)
        .file("a/f1", b"1")
        .hardlink("a", "s")
        .file("a/x", b"evil")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    assert!(fs::symlink_metadata(sb.rootfs.join("a"))
        .unwrap()
        .file_type()
        .is_symlink());
    let inside = sb.rootfs.join(&sb.sdir()[1..]);
    assert_eq!(fs::read(inside.join("x")).unwrap(), b"evil");
    sb.check();
}

#[test]
fn parent_cache_target_of_cached_symlink_whited_out() {
    let sb = Sandbox::new();
    // Key `l` resolves to `d`; `.wh.d` removes `d` under the live cache: `l/x` recreates `d`.
    let tar = RawTar::new()
        .dir("d", 0o755)
        .symlink("l", "d")
        .file("l/f1", b"1")
        .file(".wh.d", b"")
        .file("l/x", b"2")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    assert_eq!(fs::read(sb.rootfs.join("d/x")).unwrap(), b"2");
    assert!(!sb.rootfs.join("d/f1").exists());
    sb.check();
}

#[test]
fn a_directory_replaced_later_in_the_layer_does_not_pass_its_times_to_the_replacement() {
    // `x/` then `x` as a hard link to an existing file: the directory's mtime (and mode,
    // unprivileged), set after the last entry, must not land on the linked file, whose inode
    // other trees may share (kiln_rootfs::link_tree).
    let sb = Sandbox::new();
    fs::create_dir_all(sb.rootfs.join("etc")).unwrap();
    fs::write(sb.rootfs.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
    let f = fs::File::options()
        .write(true)
        .open(sb.rootfs.join("etc/passwd"))
        .unwrap();
    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1234))
        .unwrap();
    drop(f);
    let tar = RawTar::new()
        .dir("x", 0o700)
        .hardlink("x", "etc/passwd")
        .finish();
    apply(&sb.root(), &tar).unwrap();
    let md = fs::metadata(sb.rootfs.join("etc/passwd")).unwrap();
    assert_eq!(
        md.mtime(),
        1234,
        "the directory's mtime reached the linked file"
    );
    assert_eq!(md.permissions().mode() & 0o777, 0o644);
    assert_eq!(
        fs::metadata(sb.rootfs.join("x")).unwrap().ino(),
        md.ino(),
        "x is the link"
    );
    sb.check();
}

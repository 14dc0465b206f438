//! A Debian bookworm minbase base image, and `apt-get update && apt-get install -y hello` in
//! it, with the sandbox's full id map (root here, or a subuid range): apt's `_apt` user must
//! work unchanged.
//!
//! Part of the default run (scripts/test.sh installs debootstrap; it needs the Debian mirror,
//! as apt does). The rootfs tarball comes from `KILN_DEBIAN_ROOTFS` (e.g. the one
//! bench/e2e.sh caches in /var/tmp/kiln-bench), else from a previous run's copy in the cargo
//! target dir, else it is made with `debootstrap --variant=minbase` (about 30 s).
//! `KILN_SKIP_DEBIAN=1` skips it (printed and counted), e.g. on a machine without a mirror.

use kiln_testkit::{require, Registry};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The minbase rootfs as a tarball; `Err` says why there is none.
fn debian_rootfs_tar(tmp: &Path) -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("KILN_DEBIAN_ROOTFS").map(PathBuf::from) {
        return Ok(p);
    }
    // Kept across runs: debootstrap is most of this test's time.
    let cached = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debian-bookworm-minbase.tar");
    if cached.is_file() {
        return Ok(cached);
    }
    if kiln_testkit::which("debootstrap").is_none() {
        return Err("debootstrap is not installed (scripts/test.sh installs it)".into());
    }
    let dir = tmp.join("debian");
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("URIs:").map(|u| u.trim().to_string()))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&dir)
        .arg(&mirror)
        .output()
        .map_err(|e| format!("running debootstrap: {e}"))?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stdout);
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        return Err(format!(
            "debootstrap --variant=minbase bookworm from {mirror} failed ({}):\n{}\n{}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "rm -rf {d}/var/cache/apt/archives/*.deb {d}/var/lib/apt/lists/* {d}/dev/* {d}/proc/* {d}/sys/* {d}/tmp/*",
            d = dir.display()
        ))
        .status();
    let tar = tmp.join("debian.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["--numeric-owner", "-cf"])
        .arg(&tar)
        .arg(".")
        .status()
        .map_err(|e| format!("running tar: {e}"))?
        .success();
    if !ok {
        return Err(format!("tar of {} failed", dir.display()));
    }
    // Publish by rename so a concurrent or interrupted run never sees half a tarball.
    let part = cached.with_extension("tar.part");
    if std::fs::copy(&tar, &part).is_ok() && std::fs::rename(&part, &cached).is_ok() {
        return Ok(cached);
    }
    Ok(tar)
}

fn kiln_build(ctx: &Path, state: &Path, extra: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg("-c")
        .arg(ctx)
        .args(["--insecure", "--insecure-pull", "--log-format=text"])
        .args(extra)
        .arg("--kiln-dir")
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn apt_get_install_in_debian_minbase() {
    if std::env::var_os("KILN_SKIP_DEBIAN").is_some() {
        kiln_testkit::report_skip("Debian apt-get test: KILN_SKIP_DEBIAN is set");
        return;
    }
    let reg = require!(Registry::start());
    let tmp = tempfile::tempdir().unwrap();
    let tar = match debian_rootfs_tar(tmp.path()) {
        Ok(tar) => tar,
        // Not installed: a counted skip. debootstrap failing is a failure (CI installs it and
        // reaches the mirror; a broken mirror must not pass as a skip).
        Err(why) if kiln_testkit::which("debootstrap").is_none() => {
            kiln_testkit::report_skip(&format!("Debian apt-get test: {why}"));
            return;
        }
        Err(why) => panic!("no Debian rootfs: {why}"),
    };
    // 1. The base image, built by kiln itself from the rootfs tarball.
    let base_ctx = tmp.path().join("base");
    std::fs::create_dir_all(&base_ctx).unwrap();
    std::fs::copy(&tar, base_ctx.join("rootfs.tar")).unwrap();
    std::fs::write(
        base_ctx.join("Dockerfile"),
        "FROM scratch\nADD rootfs.tar /\nCMD [\"bash\"]\n",
    )
    .unwrap();
    let base_ref = format!("{}/debian:bookworm", reg.addr());
    let (ok, err) = kiln_build(
        &base_ctx,
        &tmp.path().join("state"),
        &["-d".into(), base_ref.clone()],
    );
    assert!(ok, "building the Debian base: {err}");
    // 2. apt-get in it, unchanged (no APT::Sandbox::User override).
    let ctx = tmp.path().join("app");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {base_ref}\nRUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*\nRUN hello > /hello.out\n"
        ),
    )
    .unwrap();
    let layout = tmp.path().join("oci");
    let (ok, err) = kiln_build(
        &ctx,
        &tmp.path().join("state2"),
        &[
            "--no-push".into(),
            "--oci-layout-path".into(),
            layout.display().to_string(),
        ],
    );
    assert!(ok, "apt-get build: {err}");
    let files = kiln_testkit::layout::flatten(&layout);
    assert_eq!(
        String::from_utf8_lossy(&files["hello.out"].content),
        "Hello, world!\n"
    );
    assert!(files.contains_key("usr/bin/hello"));
}

//! The slow tier (opt-in: `KILN_SLOW_TESTS=1`): a Debian bookworm minbase base image, and
//! `apt-get update && apt-get install -y hello` in it, with the sandbox's full id map (root
//! here, or a subuid range): apt's `_apt` user must work unchanged.
//!
//! The rootfs tarball comes from `KILN_DEBIAN_ROOTFS` (e.g. the one bench/e2e.sh caches in
//! /var/tmp/kiln-bench), else it is made with `debootstrap --variant=minbase` (network to the
//! Debian mirror, about a minute).

use kiln_testkit::{require, Registry};
use std::path::{Path, PathBuf};
use std::process::Command;

fn debian_rootfs_tar(tmp: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_DEBIAN_ROOTFS").map(PathBuf::from) {
        return Some(p);
    }
    kiln_testkit::which("debootstrap")?;
    let dir = tmp.join("debian");
    let mirror = std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("URIs:").map(|u| u.trim().to_string()))
        })
        .unwrap_or_else(|| "http://deb.debian.org/debian".into());
    let ok = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(&dir)
        .arg(&mirror)
        .status()
        .ok()?
        .success();
    if !ok {
        return None;
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
        .ok()?
        .success();
    ok.then_some(tar)
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
    if std::env::var_os("KILN_SLOW_TESTS").is_none() {
        kiln_testkit::report_skip(
            "Debian apt-get test is in the slow tier: set KILN_SLOW_TESTS=1 (needs the Debian mirror)",
        );
        return;
    }
    let reg = require!(Registry::start());
    let tmp = tempfile::tempdir().unwrap();
    let Some(tar) = debian_rootfs_tar(tmp.path()) else {
        kiln_testkit::report_skip(
            "no Debian rootfs: set KILN_DEBIAN_ROOTFS or install debootstrap",
        );
        return;
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

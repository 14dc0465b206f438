//! kiln as an ordinary user (CI runs as root: the build is run as uid 65534 through setpriv):
//! it re-executes itself in a user namespace, so RUN works and the image's files are owned by
//! root, not by the unprivileged caller.

use kiln_testkit::{push_busybox, require, Registry};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn chown_tree(p: &Path, uid: u32) {
    for e in walk(p) {
        std::os::unix::fs::lchown(&e, Some(uid), Some(uid)).unwrap();
    }
}

fn walk(p: &Path) -> Vec<std::path::PathBuf> {
    let mut v = vec![p.to_path_buf()];
    let mut i = 0;
    while i < v.len() {
        if v[i].is_dir() && !v[i].is_symlink() {
            for c in std::fs::read_dir(&v[i]).unwrap() {
                v.push(c.unwrap().path());
            }
        }
        i += 1;
    }
    v
}

#[test]
fn unprivileged_build_gives_root_owned_files() {
    let me = std::fs::metadata("/proc/self").unwrap().uid();
    if me == 0 && kiln_testkit::which("setpriv").is_none() {
        kiln_testkit::report_skip("setpriv not installed: cannot drop to an ordinary user");
        return;
    }
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f.txt"), "from the context\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/library/busybox\nCOPY f.txt /f.txt\nRUN id -u > /uid && echo ran > /ran\n",
            reg.addr()
        ),
    )
    .unwrap();
    if me == 0 {
        chown_tree(tmp.path(), 65534);
    }
    let kiln = env!("CARGO_BIN_EXE_kiln");
    let mut cmd = if me == 0 {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            kiln,
        ]);
        c
    } else {
        Command::new(kiln)
    };
    let layout = tmp.path().join("oci");
    let out = cmd
        .env("HOME", tmp.path())
        .env_remove("KILN_USERNS")
        .arg("build")
        .arg("-c")
        .arg(&ctx)
        .args(["--no-push", "--insecure-pull", "--log-format=text"])
        .arg("--oci-layout-path")
        .arg(&layout)
        .arg("--kiln-dir")
        .arg(tmp.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("no user namespace available") {
        kiln_testkit::report_skip("unprivileged user namespaces are not available here");
        return;
    }
    assert!(out.status.success(), "{stderr}");
    // Every entry kiln wrote (the COPY and RUN layers) is owned by root in the image.
    let mut seen = std::collections::BTreeMap::new();
    for d in &kiln_testkit::layout::layer_digests(&layout)[1..] {
        for e in kiln_testkit::layout::layer_entries(&layout, d) {
            let text = String::from_utf8_lossy(&e.content).into_owned();
            seen.insert(e.path, (e.uid, e.gid, text));
        }
    }
    assert_eq!(seen["f.txt"], (0, 0, "from the context\n".to_string()));
    assert_eq!(
        seen["uid"],
        (0, 0, "0\n".to_string()),
        "RUN runs as root of the image"
    );
    assert_eq!(seen["ran"].0, 0);
}

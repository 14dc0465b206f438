//! A hostile build context (HOSTILE-INPUTS 28): symlinks out of the context, anywhere in a
//! source path, never make kiln read a host file, and `.dockerignore` cannot be bypassed
//! through a symlink or a RUN bind mount.

use kiln_testkit::{push_busybox, require, Registry};
use std::path::Path;
use std::process::Command;

fn build(ctx: &Path, out: &Path, extra: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg("-c")
        .arg(ctx)
        .args(["--no-push", "--insecure-pull", "--log-format=text"])
        .args(extra)
        .arg("--oci-layout-path")
        .arg(out.join("oci"))
        .arg("--kiln-dir")
        .arg(out.join("state"))
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every byte of every blob, decompressed.
fn all_layer_bytes(layout: &Path) -> Vec<u8> {
    kiln_testkit::layout::all_blob_bytes(layout).concat()
}

fn contains(hay: &[u8], needle: &str) -> bool {
    kiln_testkit::layout::contains(hay, needle.as_bytes())
}

#[test]
fn symlinks_out_of_the_context_are_resolved_inside_it() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(outside.join("sub")).unwrap();
    std::fs::write(outside.join("secret.txt"), "HOST-SECRET-1").unwrap();
    std::fs::write(outside.join("sub/f"), "HOST-SECRET-2").unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::os::unix::fs::symlink(&outside, ctx.join("link")).unwrap();
    std::os::unix::fs::symlink("../../outside", ctx.join("rel")).unwrap();
    for (i, src) in ["link/secret.txt", "link/sub", "link/*", "rel/secret.txt"]
        .iter()
        .enumerate()
    {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM scratch\nCOPY {src} /x/\n"),
        )
        .unwrap();
        let out = tmp.path().join(format!("out{i}"));
        let (ok, err) = build(&ctx, &out, &[]);
        // Resolved inside the context these paths do not exist: the build fails by name (a
        // wildcard matching nothing is allowed, as in BuildKit)...
        if !src.contains('*') {
            assert!(!ok, "COPY {src} succeeded");
            assert!(err.contains("source not found"), "{src}: {err}");
        }
        // ...and no host byte reached a layer.
        let bytes = all_layer_bytes(&out.join("oci"));
        assert!(!contains(&bytes, "HOST-SECRET"), "{src} leaked a host file");
    }
}

#[test]
fn dockerignore_cannot_be_bypassed_through_a_symlink() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("secret.env"), "IGNORED-SECRET").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret.env\n").unwrap();
    std::os::unix::fs::symlink(".", ctx.join("alias")).unwrap();
    std::os::unix::fs::symlink("secret.env", ctx.join("l2")).unwrap();
    for (i, src) in ["alias/secret.env", "l2"].iter().enumerate() {
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM scratch\nCOPY {src} /x\n"),
        )
        .unwrap();
        let out = tmp.path().join(format!("out{i}"));
        let (ok, err) = build(&ctx, &out, &[]);
        assert!(!ok, "COPY {src} of an ignored file succeeded");
        assert!(err.contains("source not found"), "{err}");
        assert!(!contains(
            &all_layer_bytes(&out.join("oci")),
            "IGNORED-SECRET"
        ));
    }
}

#[test]
fn run_bind_mount_of_the_context_hides_ignored_files() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("secret.env"), "IGNORED-SECRET").unwrap();
    std::fs::write(ctx.join("visible.txt"), "visible").unwrap();
    std::fs::write(ctx.join(".dockerignore"), "secret.env\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/library/busybox\nRUN --mount=type=bind,target=/ctx ls /ctx > /listing && cat /ctx/visible.txt > /seen\n",
            reg.addr()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    let (ok, err) = build(&ctx, &out, &[]);
    assert!(ok, "{err}");
    let bytes = all_layer_bytes(&out.join("oci"));
    assert!(contains(&bytes, "visible.txt"), "listing missing");
    assert!(
        !contains(&bytes, "secret.env"),
        "the bind mount showed an ignored file"
    );
}

/// `RUN --mount=type=bind,rw`: the step writes to its mount, the writes are thrown away
/// (BuildKit's semantics): the context is unchanged, the next step's mount shows the original,
/// no layer holds the mount's files; without `rw` the same write fails.
#[test]
fn run_bind_mount_rw_writes_are_discarded() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("data/sub")).unwrap();
    std::fs::write(ctx.join("data/a.txt"), "original-content").unwrap();
    std::fs::write(ctx.join("data/sub/b.txt"), "b").unwrap();
    let dockerfile = |third: &str| {
        format!(
            "FROM {}/library/busybox
\
             RUN --mount=type=bind,source=data,target=/mnt/data,rw echo changed-content > /mnt/data/a.txt && touch /mnt/data/sub/new-file && cat /mnt/data/a.txt > /seen
\
             RUN --mount=type=bind,source=data,target=/mnt/data cat /mnt/data/a.txt > /second && ls /mnt/data/sub > /listing
{third}",
            reg.addr()
        )
    };
    std::fs::write(ctx.join("Dockerfile"), dockerfile("")).unwrap();
    let out = tmp.path().join("out");
    let (ok, err) = build(&ctx, &out, &[]);
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read_to_string(ctx.join("data/a.txt")).unwrap(),
        "original-content"
    );
    assert!(!ctx.join("data/sub/new-file").exists());
    // The layers only (the config's history holds the commands' text).
    let files = kiln_testkit::layout::flatten(&out.join("oci"));
    let text = |p: &str| String::from_utf8_lossy(&files[p].content).into_owned();
    assert_eq!(
        text("seen").trim(),
        "changed-content",
        "the rw step saw its write"
    );
    assert_eq!(
        text("second"),
        "original-content",
        "the next step saw the original"
    );
    assert_eq!(text("listing").trim(), "b.txt");
    assert!(
        !files.keys().any(|k| k.contains("mnt")),
        "a mount's files reached a layer: {:?}",
        files
            .keys()
            .filter(|k| k.contains("mnt"))
            .collect::<Vec<_>>()
    );
    // Read-only (the default): the write fails the step.
    std::fs::write(
        ctx.join("Dockerfile"),
        dockerfile("RUN --mount=type=bind,source=data,target=/mnt/data touch /mnt/data/x\n"),
    )
    .unwrap();
    let (ok, err) = build(&ctx, &tmp.path().join("out2"), &[]);
    assert!(!ok, "a write to a read-only bind mount succeeded: {err}");
}

#[test]
fn dockerfile_and_dockerignore_symlinked_out_of_the_context_are_not_read() {
    // A context (a git branch, a tarball) whose Dockerfile is a symlink to a host file: kiln
    // must not read it (a parse error would print its first line: tokens, credentials).
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("host-secret");
    std::fs::write(&secret, "TOKEN=kiln-review-secret-5f1a\n").unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::os::unix::fs::symlink(&secret, ctx.join("Dockerfile")).unwrap();
    let (ok, err) = build(&ctx, &tmp.path().join("o1"), &[]);
    assert!(!ok);
    assert!(!err.contains("kiln-review-secret"), "{err}");
    assert!(err.contains("not found"), "{err}");
    // The same through --dockerfile naming a path in the context, and a relative symlink.
    std::fs::remove_file(ctx.join("Dockerfile")).unwrap();
    std::os::unix::fs::symlink("../host-secret", ctx.join("Dockerfile.prod")).unwrap();
    let df = ctx.join("Dockerfile.prod");
    let (ok, err) = build(&ctx, &tmp.path().join("o2"), &["-f", df.to_str().unwrap()]);
    assert!(!ok && !err.contains("kiln-review-secret"), "{err}");
    // A symlink inside the context is followed inside it.
    std::fs::write(ctx.join("real.Dockerfile"), "FROM scratch\nCOPY a /a\n").unwrap();
    std::fs::write(ctx.join("a"), "a").unwrap();
    std::os::unix::fs::symlink("real.Dockerfile", ctx.join("Dockerfile")).unwrap();
    // .dockerignore symlinked to a host file whose line would exclude `a`: not read.
    std::fs::write(tmp.path().join("host-ignore"), "a\n").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("host-ignore"), ctx.join(".dockerignore")).unwrap();
    let (ok, err) = build(&ctx, &tmp.path().join("o3"), &[]);
    assert!(ok, "{err}");
    let files = kiln_testkit::layout::flatten(&tmp.path().join("o3/oci"));
    assert!(
        files.contains_key("a"),
        "the host .dockerignore was applied"
    );
}

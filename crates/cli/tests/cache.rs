//! The layer cache end to end, against the real registry: a rebuild in a fresh state dir (an
//! ephemeral CI pod) runs no RUN and pushes no new layer; changing a context file reruns the
//! steps from the COPY that reads it; a local build reuses its own cache.

use kiln_testkit::{push_busybox, require, Registry};
use std::path::Path;
use std::process::Command;

fn kiln(args: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn layers(layout: &Path) -> Vec<String> {
    kiln_testkit::layout::layer_digests(layout)
}

#[test]
fn registry_cache_serves_a_fresh_pod_and_misses_on_change() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "one\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/library/busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && cat /proc/sys/kernel/random/uuid > /run-id\nRUN cat /proc/sys/kernel/random/uuid > /second-id\n",
            reg.addr()
        ),
    )
    .unwrap();
    let build = |n: usize| -> (String, Vec<String>) {
        let layout = tmp.path().join(format!("oci{n}"));
        let (ok, err) = kiln(&[
            "build".into(),
            "-c".into(),
            ctx.display().to_string(),
            "-d".into(),
            format!("{}/app/x:{n}", reg.addr()),
            "--cache=true".into(),
            format!("--cache-repo={}/app/cache", reg.addr()),
            "--insecure".into(),
            "--insecure-pull".into(),
            "--log-format=text".into(),
            "--oci-layout-path".into(),
            layout.display().to_string(),
            // A fresh state dir each time: nothing is remembered but the registry.
            "--kiln-dir".into(),
            tmp.path().join(format!("state{n}")).display().to_string(),
        ]);
        assert!(ok, "build {n}: {err}");
        (err, layers(&layout))
    };
    let (out1, l1) = build(1);
    assert_eq!(out1.matches("cache hit").count(), 0, "{out1}");
    let (out2, l2) = build(2);
    assert_eq!(
        out2.matches("cache hit").count(),
        2,
        "both RUNs replayed: {out2}"
    );
    assert_eq!(l1, l2, "same layers, so the RUNs did not run again");
    // Every layer is already there; at most the config is new (its `created` has second
    // resolution, so two quick builds may even share it).
    let counts = out2
        .split_once(" blobs uploaded, ")
        .and_then(|(before, after)| {
            let uploaded: usize = before.rsplit('(').next()?.trim().parse().ok()?;
            let (mounted, rest) = after.split_once(" mounted, ")?;
            let existed: usize = rest.split_whitespace().next()?.parse().ok()?;
            Some((uploaded, mounted.parse::<usize>().ok()?, existed))
        });
    let (uploaded, mounted, existed) =
        counts.unwrap_or_else(|| panic!("no push summary in: {out2}"));
    assert!(
        uploaded <= 1 && mounted == 0 && uploaded + existed == 5,
        "a cached rebuild pushes no new layer: {out2}"
    );

    std::fs::write(ctx.join("a.txt"), "two\n").unwrap();
    let (out3, l3) = build(3);
    assert_eq!(out3.matches("cache hit").count(), 0, "{out3}");
    assert_eq!(l3[0], l1[0], "base layer unchanged");
    assert_ne!(l3[1], l1[1], "COPY layer has the new file");
    assert_ne!(l3[2], l1[2], "the RUN after the COPY ran again");
    assert_ne!(l3[3], l1[3], "and so did the next one");
}

#[test]
fn local_cache_for_local_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "x").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    let state = tmp.path().join("state").display().to_string();
    let run = |n: usize| {
        kiln(&[
            "build".into(),
            "-c".into(),
            ctx.display().to_string(),
            "--no-push".into(),
            "--cache=true".into(),
            "--cache-copy-layers=true".into(),
            "--log-format=text".into(),
            "--kiln-dir".into(),
            state.clone(),
            "--oci-layout-path".into(),
            tmp.path().join(format!("oci{n}")).display().to_string(),
        ])
    };
    let (ok, err) = run(1);
    assert!(ok, "{err}");
    assert!(!err.contains("cache hit"), "{err}");
    let (ok, err) = run(2);
    assert!(ok, "{err}");
    assert!(err.contains("cache hit"), "{err}");
    let (ok, out) = kiln(&[
        "cache".into(),
        "ls".into(),
        "--kiln-dir".into(),
        state.clone(),
    ]);
    assert!(ok);
    assert!(out.is_empty() || !out.contains("error"));
}

//! End to end against the real Debian registry: a busybox base pulled from it, COPY, RUN
//! (in the sandbox) with a build arg and a secret mount, deletions, and a push back to it; the
//! pushed image is read with skopeo and flattened with umoci, and the secret is nowhere.

use kiln_testkit::{push_busybox, require, Registry};
use std::path::{Path, PathBuf};
use std::process::Command;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn have(tool: &str) -> bool {
    kiln_testkit::which(tool).is_some()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Copies the pushed image to an OCI layout and unpacks it; returns the rootfs path.
fn flatten(reg: &Registry, reference: &str, tmp: &Path) -> PathBuf {
    let layout = tmp.join("pulled");
    let out = Command::new("skopeo")
        .args(["copy", "--src-tls-verify=false"])
        .arg(format!("docker://{}/{reference}", reg.addr()))
        .arg(format!("oci:{}:t", layout.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    kiln_testkit::layout::umoci_unpack(&layout, "t", &tmp.join("bundle")).unwrap()
}

use kiln_testkit::layout::{contains, decompress};

const DOCKERFILE: &str = r#"FROM {addr}/library/busybox
ARG GREETING=hi
ENV APP=/app
WORKDIR $APP
COPY hello.txt .
RUN echo "$GREETING from run" > /app/run.txt && mkdir -p /data && echo x > /data/x && rm /etc/group
RUN --mount=type=secret,id=tok test "$(sha256sum < /run/secrets/tok | cut -d' ' -f1)" = "{secret_sha}" && cp /run/secrets/tok /tmp/seen && rm /tmp/seen
RUN <<EOF
echo heredoc > /app/heredoc.txt
id -u >> /app/heredoc.txt
EOF
USER nobody
CMD ["cat", "/app/run.txt"]
"#;

#[test]
fn busybox_run_copy_secret_push() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    if !have("skopeo") || !have("umoci") {
        kiln_testkit::report_skip(
            "skopeo or umoci not installed (./scripts/test.sh installs them)",
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    let secret_value = "s3cr3t-token-value-9f8e7d";
    write(&tmp.path().join("secrets"), "tok", secret_value);
    write(&ctx, "hello.txt", "hello from the context\n");
    let dockerfile = DOCKERFILE.replace("{addr}", reg.addr()).replace(
        "{secret_sha}",
        kiln_oci::Digest::of(secret_value.as_bytes()).hex(),
    );
    write(&ctx, "Dockerfile", &dockerfile);
    let dest = "test/app:v1";
    let out = kiln()
        .arg("build")
        .arg("-c")
        .arg(&ctx)
        .arg("-d")
        .arg(format!("{}/{dest}", reg.addr()))
        .args([
            "--insecure",
            "--insecure-pull",
            "--build-arg",
            "GREETING=hello",
            "--log-format=text",
        ])
        .arg("--secret")
        .arg(format!(
            "id=tok,src={}",
            tmp.path().join("secrets/tok").display()
        ))
        .arg("--kiln-dir")
        .arg(tmp.path().join("state"))
        .arg("--digest-file")
        .arg(tmp.path().join("digest"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "kiln build failed:\n{stderr}");
    assert!(!stderr.contains(secret_value), "secret in the build output");

    let digest = std::fs::read_to_string(tmp.path().join("digest")).unwrap();
    let raw = kiln_testkit::image::skopeo_inspect_raw(&reg, dest).unwrap();
    assert_eq!(
        kiln_oci::Digest::of(&raw).to_string(),
        digest,
        "the digest file names the pushed manifest"
    );

    let rootfs = flatten(&reg, dest, tmp.path());
    let read =
        |p: &str| std::fs::read_to_string(rootfs.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read("app/run.txt"), "hello from run\n");
    assert_eq!(read("app/hello.txt"), "hello from the context\n");
    assert_eq!(read("app/heredoc.txt"), "heredoc\n0\n");
    assert_eq!(read("data/x"), "x\n");
    assert!(!rootfs.join("etc/group").exists(), "deleted file came back");
    assert!(rootfs.join("etc/passwd").exists(), "base layer missing");
    assert!(
        !rootfs.join("run/secrets/tok").exists(),
        "secret mount stub left in the image"
    );

    // The secret is in no blob of the pushed image (layers, config, manifest).
    let blobs = tmp.path().join("pulled/blobs/sha256");
    let mut checked = 0;
    for e in std::fs::read_dir(&blobs).unwrap() {
        let bytes = std::fs::read(e.unwrap().path()).unwrap();
        assert!(
            !contains(&decompress(&bytes), secret_value.as_bytes()),
            "secret found in a blob"
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} blobs checked");

    let config = kiln_testkit::image::skopeo_inspect_config(&reg, dest).unwrap();
    assert_eq!(config["config"]["User"], "nobody");
    assert_eq!(
        config["config"]["Cmd"],
        serde_json::json!(["cat", "/app/run.txt"])
    );
    assert!(config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == "APP=/app"));
    let history: Vec<String> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        history
            .iter()
            .any(|h| h.starts_with("RUN |1 GREETING=hello /bin/sh -c echo")),
        "{history:#?}"
    );
}

#[test]
fn failing_run_exit_status_is_kilns() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox\nRUN echo before\nRUN exit 7\n",
            reg.addr()
        ),
    );
    let out = kiln()
        .arg("build")
        .arg("-c")
        .arg(tmp.path())
        .args(["--no-push", "--insecure-pull", "--log-format=text"])
        .arg("--kiln-dir")
        .arg(tmp.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("Dockerfile:3"),
        "error names the line: {stderr}"
    );
    assert!(stderr.contains("before"), "RUN output streamed: {stderr}");
}

#[test]
fn later_stage_bases_are_pulled_while_earlier_stages_run() {
    // The second stage's base goes through a recording proxy. The first stage fails after a
    // second, so the second stage never starts: its base was only asked for if the pull was
    // started ahead, in the background.
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    require!(push_busybox(&reg, "library/other"));
    let proxy = kiln_testkit::FaultProxy::start(reg.addr()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let run = |dockerfile: String, state: &str| {
        write(tmp.path(), "Dockerfile", &dockerfile);
        let out = kiln()
            .arg("build")
            .arg("-c")
            .arg(tmp.path())
            .args(["--no-push", "--insecure-pull", "--log-format=text"])
            .arg("--kiln-dir")
            .arg(tmp.path().join(state))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(
        format!(
            "FROM {}/library/busybox AS a\nRUN sleep 1; exit 3\nFROM {}/library/other\nCOPY --from=a /bin/sh /sh\n",
            reg.addr(),
            proxy.addr()
        ),
        "s1",
    );
    assert_eq!(code, Some(3), "{stderr}");
    let asked = |p: &kiln_testkit::FaultProxy| {
        p.seen()
            .iter()
            .filter(|s| s.target.contains("/library/other/manifests/"))
            .count()
    };
    assert!(
        asked(&proxy) >= 1,
        "the second stage's base was not pulled ahead: {:?}",
        proxy.seen()
    );
    // A failed background pull is retried by the stage itself, where its error would be
    // reported: the build succeeds.
    proxy.add(
        "GET",
        "/library/other/manifests/",
        1,
        kiln_testkit::Fault::Status(404, vec![]),
    );
    let (code, stderr) = run(
        format!(
            "FROM {}/library/busybox AS a\nRUN true\nFROM {}/library/other\nCOPY --from=a /bin/sh /sh\n",
            reg.addr(),
            proxy.addr()
        ),
        "s2",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("pulled"), "{stderr}");
}

#[test]
fn pull_and_push_verbs_round_trip() {
    let reg = require!(Registry::start());
    let info = require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    let out = kiln()
        .arg("pull")
        .arg(format!("{}/library/busybox:latest", reg.addr()))
        .arg("--oci-layout-path")
        .arg(&layout)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kiln()
        .args(["push", "--from"])
        .arg(&layout)
        .arg("-d")
        .arg(format!("{}/copies/busybox:v2", reg.addr()))
        .arg("--digest-file")
        .arg(tmp.path().join("digest"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = std::fs::read_to_string(tmp.path().join("digest")).unwrap();
    assert_eq!(
        digest,
        info.manifest_digest.to_string(),
        "byte-exact round trip"
    );
    if have("skopeo") {
        let raw = kiln_testkit::image::skopeo_inspect_raw(&reg, "copies/busybox:v2").unwrap();
        assert_eq!(raw, info.manifest);
    }
}

#[test]
fn single_snapshot_makes_one_layer_over_the_base() {
    let reg = require!(Registry::start());
    let base = require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "f.txt", "f\n");
    write(
        tmp.path(),
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox\nCOPY f.txt /f.txt\nRUN echo a > /a && rm /etc/group\nRUN echo b > /b\n",
            reg.addr()
        ),
    );
    let layout = tmp.path().join("oci");
    let out = kiln()
        .arg("build")
        .arg("-c")
        .arg(tmp.path())
        .args([
            "--no-push",
            "--insecure-pull",
            "--single-snapshot",
            "--log-format=text",
        ])
        .arg("--oci-layout-path")
        .arg(&layout)
        .arg("--kiln-dir")
        .arg(tmp.path().join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let layers = kiln_testkit::layout::layer_digests(&layout);
    assert_eq!(layers.len(), base.layers.len() + 1);
    // The one layer holds all three steps' changes, including the deletion.
    let names: Vec<String> = kiln_testkit::layout::layer_entries(&layout, layers.last().unwrap())
        .into_iter()
        .map(|e| e.path)
        .collect();
    for want in ["f.txt", "a", "b", "etc/.wh.group"] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} missing from {names:?}"
        );
    }
}

/// SIGTERM during a RUN that has a secret mounted: kiln exits 143 and leaves neither the
/// build directory nor the secret file behind (HOSTILE-INPUTS 31: no secret on disk).
#[test]
fn sigterm_removes_the_build_and_its_secrets() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let secret = "SIGTERM-SECRET-4242";
    write(tmp.path(), "tok", secret);
    write(
        &tmp.path().join("ctx"),
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox\nRUN --mount=type=secret,id=tok sleep 30\n",
            reg.addr()
        ),
    );
    let state = tmp.path().join("state");
    let mut child = kiln()
        .arg("build")
        .arg("-c")
        .arg(tmp.path().join("ctx"))
        .args(["--no-push", "--insecure-pull", "--log-format=text"])
        .arg("--secret")
        .arg(format!("id=tok,src={}", tmp.path().join("tok").display()))
        .arg("--kiln-dir")
        .arg(&state)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the RUN has started (its scratch directory with the secret exists).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let find_secret = || -> bool {
        let Ok(builds) = std::fs::read_dir(state.join("builds")) else {
            return false;
        };
        builds.flatten().any(|b| {
            std::fs::read_dir(b.path())
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("run-"))
                })
                .unwrap_or(false)
        })
    };
    while !find_secret() {
        assert!(
            std::time::Instant::now() < deadline,
            "the RUN never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143));
    let left: Vec<_> = std::fs::read_dir(state.join("builds"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "build directories left: {left:?}");
}

/// One RUN per change kind, each on top of the last (so earlier RUNs' results are the lower
/// tree of later ones). Not here: an in-place write to one name of a lower hard-link pair,
/// where overlayfs breaks the link as Docker's overlay2 does (docs/decisions.md).
const CHANGE_KIND_RUNS: &[&str] = &[
    "mkdir -p /a/b && echo 1 > /a/b/c && rm /etc/group && ln -s /a/b/c /link && chmod 4755 /a/b/c",
    "echo new > /a/x && touch /srv/f.txt && echo more >> /etc/passwd && rm /bin/ls",
    "mkdir -p /t/keep/sub /t/gone /t/re/inner /t/mv/deep /t/e /t/d2 && echo k > /t/keep/sub/k \
     && echo g > /t/gone/g && echo r > /t/re/inner/r && echo r2 > /t/re/r2 && echo m > /t/mv/deep/m \
     && echo h > /t/h && echo s > /t/suid && ln -s keep /t/sym && echo x > /t/d2/x",
    "echo changed > /t/h",
    "chmod 600 /t/h && chmod 700 /t/keep",
    "chown 1000:1000 /t/keep/sub/k && chown -h 5:5 /t/sym",
    "rm /t/keep/sub/k",
    "rm -rf /t/gone",
    "rm -rf /t/re && mkdir -p /t/re/inner && echo r > /t/re/inner/r && echo fresh > /t/re/fresh",
    "rm -rf /t/keep/sub && mkdir /t/keep/sub",
    "rm -rf /t/e && echo now-a-file > /t/e",
    "rm -rf /t/d2 && ln -s /tmp /t/d2",
    "rm /t/sym && mkdir /t/sym && echo s > /t/sym/s",
    "echo shared > /t/hl1 && ln /t/hl1 /t/hl2 && ln /t/hl1 /t/sym/hl3",
    "chmod 4755 /t/suid && echo g > /t/sg && chmod 2755 /t/sg",
    "mv /t/mv /t/moved",
    "touch /t /t/keep /etc/passwd",
    "mkdir -p /t/empty/nested",
    "mkfifo /t/pipe",
];

/// RUN on an overlay (its upper directory is the change set, no walk; the default) and RUN
/// compared by a walk of the tree give the same layers for every change kind: with
/// --reproducible, the same image digest.
#[test]
fn overlay_and_walk_snapshots_give_the_same_image() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    write(tmp.path(), "ctx/f.txt", "context\n");
    write(
        &tmp.path().join("ctx"),
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox\nCOPY f.txt /srv/f.txt\n{}",
            reg.addr(),
            CHANGE_KIND_RUNS
                .iter()
                .map(|r| format!("RUN {r}\n"))
                .collect::<String>()
        ),
    );
    // `None`: the default (overlay on). `state` names the --kiln-dir.
    let build = |overlay: Option<&str>, state: &str, extra: &[&str]| -> (String, PathBuf, String) {
        let name = format!("{}-{state}", overlay.unwrap_or("default"));
        let digest = tmp.path().join(format!("digest-{name}"));
        let layout = tmp.path().join(format!("layout-{name}"));
        let mut cmd = kiln();
        cmd.arg("build")
            .arg("-c")
            .arg(tmp.path().join("ctx"))
            .args([
                "--no-push",
                "--insecure-pull",
                "--reproducible",
                "--log-format=text",
                "--verbosity=debug",
            ])
            .arg("--kiln-dir")
            .arg(tmp.path().join(state))
            .arg("--oci-layout-path")
            .arg(&layout)
            .arg("--digest-file")
            .arg(&digest);
        if let Some(v) = overlay {
            cmd.arg(format!("--overlay-snapshots={v}"));
        }
        cmd.args(extra);
        let out = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        (std::fs::read_to_string(digest).unwrap(), layout, err)
    };
    let (walk, walk_layout, _) = build(Some("false"), "state-walk", &[]);
    let (overlay, overlay_layout, err) = build(None, "state-overlay", &[]);
    if err.contains("RUN on an overlay is not possible here") {
        kiln_testkit::report_skip("overlayfs in a user namespace is not available here");
        return;
    }
    // The default build really ran its RUNs on an overlay (one debug line per snapshot).
    let overlay_snapshots = err
        .matches("snapshot from the overlay's upper directory")
        .count();
    assert_eq!(overlay_snapshots, CHANGE_KIND_RUNS.len(), "{err}");
    // ...and moved each upper directory into the stage rootfs (same file system).
    assert!(!err.contains("moved=false"), "{err}");
    // Where the overlay cannot be mounted (here: the sandbox refuses overlay paths with a
    // ',', which overlayfs options cannot carry), the build falls back to the walk silently
    // (a debug log, no warning) and gives the same image.
    let (fallback, _, err) = build(None, "state,with-comma", &[]);
    assert!(
        err.contains("RUN on an overlay is not possible here"),
        "no fallback logged: {err}"
    );
    assert!(
        err.lines()
            .filter(|l| l.contains("RUN on an overlay"))
            .all(|l| l.contains("DEBUG")),
        "{err}"
    );
    assert_eq!(
        fallback, walk,
        "the fallback build differs from the walk build"
    );
    // chroot isolation (Kaniko's pods) has no overlay: RUNs are compared by the walk, with
    // overlay snapshots on by default (they once came back empty there).
    if nix::unistd::geteuid().is_root() {
        let (chroot, _, err) = build(None, "state-chroot", &["--isolation=chroot"]);
        assert_eq!(
            chroot, walk,
            "the chroot build differs from the walk build: {err}"
        );
    } else {
        kiln_testkit::report_skip("--isolation=chroot needs root");
    }
    if overlay != walk {
        // Name the first layer that differs, with both entry lists.
        let (a, b) = (
            kiln_testkit::layout::layer_digests(&overlay_layout),
            kiln_testkit::layout::layer_digests(&walk_layout),
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            if x != y {
                let names = |l: &Path, d: &str| {
                    kiln_testkit::layout::layer_entries(l, d)
                        .into_iter()
                        .map(|e| format!("{} {:o} {}:{}", e.path, e.mode, e.uid, e.gid))
                        .collect::<Vec<_>>()
                };
                panic!(
                    "layer {i} differs\noverlay: {:?}\nwalk:    {:?}",
                    names(&overlay_layout, x),
                    names(&walk_layout, y)
                );
            }
        }
    }
    assert_eq!(overlay, walk, "overlay and walk snapshots differ");
}

#[test]
fn volume_follows_kaniko_as_executor_and_buildkit_as_kiln_build() {
    // Kaniko's integration Dockerfile_test_volume_2 pattern: a RUN writes into a VOLUME that
    // no layer created. Kaniko (and `executor`) creates the directory and keeps the volume out
    // of later layers; BuildKit (`kiln build`) does neither, so the RUN fails.
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    write(
        tmp.path(),
        "Dockerfile",
        &format!(
            "FROM {}/library/busybox\nVOLUME /foo1 /data/v2\nRUN echo hello > /foo1/hello && mkdir /bar1 && echo x > /data/v2/x\nRUN test -f /foo1/hello\n",
            reg.addr()
        ),
    );
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), bin.join("executor")).unwrap();
    let run = |exe: &Path, verb: &[&str], out: &str| {
        Command::new(exe)
            .args(verb)
            .arg("-c")
            .arg(tmp.path())
            .args(["--no-push", "--insecure-pull", "--log-format=text"])
            .arg("--oci-layout-path")
            .arg(tmp.path().join(out))
            .arg("--kiln-dir")
            .arg(tmp.path().join(format!("state-{out}")))
            .output()
            .unwrap()
    };
    let out = run(&bin.join("executor"), &["--reproducible"], "kaniko");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "executor: {stderr}");
    // The walk gives the same image as the overlay (ignored paths stay in the rootfs for the
    // later RUN either way).
    let out = run(
        &bin.join("executor"),
        &["--reproducible", "--overlay-snapshots=false"],
        "kaniko-walk",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        kiln_testkit::layout::manifest(&tmp.path().join("kaniko")).to_string(),
        kiln_testkit::layout::manifest(&tmp.path().join("kaniko-walk")).to_string()
    );
    let layout = tmp.path().join("kaniko");
    let files = kiln_testkit::layout::flatten(&layout);
    assert!(
        files.contains_key("bar1"),
        "the RUN's other changes are kept"
    );
    for gone in ["foo1", "foo1/hello", "data/v2", "data/v2/x"] {
        assert!(
            !files.contains_key(gone),
            "{gone} is in a volume: not in a layer"
        );
    }
    let config = kiln_testkit::layout::config(&layout);
    let volumes = &config["config"]["Volumes"];
    assert!(
        volumes.get("/foo1").is_some() && volumes.get("/data/v2").is_some(),
        "{volumes}"
    );
    // `kiln build`: BuildKit's semantics, the directory does not exist.
    let out = run(
        Path::new(env!("CARGO_BIN_EXE_kiln")),
        &["build"],
        "buildkit",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("Dockerfile:3"), "{stderr}");
    // And `executor --compat=buildkit` too (a later --compat wins).
    let out = run(&bin.join("executor"), &["--compat=buildkit"], "explicit");
    assert!(!out.status.success());
}

#[test]
fn long_pushes_and_pulls_report_progress() {
    // An 80 MB incompressible layer (pushed in 16 MiB chunks, above the 64 MiB single-PUT
    // limit): its push and pull take longer than the 10 ms interval, so progress lines with
    // the bytes moved so far and the rate appear.
    let reg = require!(Registry::start());
    let tmp = tempfile::tempdir().unwrap();
    let mut big = vec![0u8; 80 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in big.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(tmp.path().join("big"), &big).unwrap();
    write(tmp.path(), "Dockerfile", "FROM scratch\nCOPY big /big\n");
    let image = format!("{}/progress/big", reg.addr());
    let out = kiln()
        .arg("build")
        .arg("-c")
        .arg(tmp.path())
        .args([
            "--insecure",
            "--log-format=text",
            "--progress-interval=0.01",
            "-d",
            &image,
        ])
        .arg("--kiln-dir")
        .arg(tmp.path().join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let moved = |l: &str| {
        l.split(": ")
            .nth(1)
            .and_then(|r| r.split(" MB so far").next())
            .and_then(|n| n.parse::<f64>().ok())
    };
    let pushed: Vec<f64> = stderr
        .lines()
        .filter(|l| l.contains(&format!("pushing {image}")) && l.contains("MB/s"))
        .filter_map(moved)
        .collect();
    assert!(
        pushed.iter().any(|&mb| mb > 0.0 && mb <= 84.0),
        "no push progress line with bytes moved: {stderr}"
    );
    write(
        tmp.path(),
        "Dockerfile",
        &format!("FROM {image}\nCOPY Dockerfile /d\n"),
    );
    let out = kiln()
        .arg("build")
        .arg("-c")
        .arg(tmp.path())
        .args([
            "--no-push",
            "--insecure-pull",
            "--log-format=text",
            "--progress-interval=0.01",
        ])
        .arg("--kiln-dir")
        .arg(tmp.path().join("state2"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .filter(|l| l.contains("pulling") && l.contains("MB/s"))
            .filter_map(moved)
            .any(|mb| mb > 0.0 && mb <= 84.0),
        "no pull progress line with bytes moved: {stderr}"
    );
    // Bad intervals are refused by name.
    let out = kiln()
        .args(["build", "--progress-interval=inf", "--no-push", "-c"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--progress-interval"));
}

//! Kaniko executor flags whose meaning a pipeline relies on, each found by an acceptance run of
//! kiln as a Kaniko drop-in (the test names say what was wrong).

use kiln_testkit::Project;

fn kiln(args: &[String]) -> (bool, String) {
    kiln_testkit::status_and_stderr(env!("CARGO_BIN_EXE_kiln"), args)
}

/// A gate stage the target does not read: `test` fails (its COPY source does not exist).
/// `later` comes after the target and fails too, so building it would show.
fn gated_project() -> Project {
    let p = Project::new(
        "FROM scratch AS build\nCOPY payload /payload\n\
         FROM build AS test\nCOPY no-such-test-input /t\n\
         FROM scratch AS final\nCOPY --from=build /payload /p\n\
         FROM scratch AS later\nCOPY no-such-later-input /l\n",
    );
    std::fs::write(p.ctx.join("payload"), b"built\n").expect("write payload");
    p
}

#[test]
fn skip_unused_stages_false_builds_every_stage_up_to_the_target() {
    let p = gated_project();
    let build = |extra: &[&str]| {
        let mut a = vec!["--target", "final"];
        a.extend_from_slice(extra);
        kiln(&p.build_args("state", &a))
    };
    // kiln's default (BuildKit's): the gate is skipped, and the log says so.
    let (ok, err) = build(&[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("skipping stage 1 (test): the target does not use it"),
        "{err}"
    );
    let (ok, err) = build(&["--skip-unused-stages=true"]);
    assert!(ok, "{err}");
    assert!(!err.contains("has no effect"), "{err}");
    // Kaniko's default, said explicitly: the gate runs and fails the build; the stage after
    // the target does not run.
    let (ok, err) = build(&["--skip-unused-stages=false"]);
    assert!(!ok, "the failing gate stage was not built: {err}");
    assert!(err.contains("no-such-test-input"), "{err}");
    assert!(!err.contains("no-such-later-input"), "{err}");
    assert!(!err.contains("skipping stage"), "{err}");
    // As `executor` (Kaniko's spelling, bare flag = true) the default is kept too.
    let (ok, err) = build(&["--skip-unused-stages"]);
    assert!(ok, "{err}");
}

#[test]
fn skip_unused_stages_false_with_a_passing_gate_builds_the_target() {
    let p = Project::new(
        "FROM scratch AS build\nCOPY payload /payload\n\
         FROM build AS test\nCOPY payload /checked\n\
         FROM scratch\nCOPY --from=build /payload /p\n",
    );
    std::fs::write(p.ctx.join("payload"), b"built\n").expect("write payload");
    let layout = p.path("layout");
    let layout_arg = layout.display().to_string();
    let (ok, err) = kiln(&p.build_args(
        "state",
        &[
            "--skip-unused-stages=false",
            "--oci-layout-path",
            &layout_arg,
        ],
    ));
    assert!(ok, "{err}");
    // All three stages ran; the image is the last one's.
    assert!(err.contains("[stage 3/3"), "{err}");
    let files = kiln_testkit::layout::flatten(&layout);
    assert!(files.contains_key("p"), "{:?}", files.keys());
    assert!(!files.contains_key("checked"), "{:?}", files.keys());
}

/// Runs the binary with `args` and `env` set (and kiln's own state variables cleared), HOME a
/// fresh directory so the default state dir is known.
fn kiln_env(args: &[String], env: &[(&str, &std::path::Path)]) -> (bool, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args)
        .env_remove("KILN_DIR")
        .env_remove("KANIKO_DIR")
        .env_remove("XDG_CACHE_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running kiln");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn kaniko_dir_holds_the_state_when_kilns_own_is_not_given() {
    let p = Project::new("FROM scratch\nCOPY payload /payload\n");
    std::fs::write(p.ctx.join("payload"), b"x\n").expect("write payload");
    let home = p.path("home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    // Project::build_args without its --kiln-dir.
    let mut args = p.build_args("unused", &[]);
    let at = args
        .iter()
        .position(|a| a == "--kiln-dir")
        .expect("--kiln-dir");
    args.drain(at..at + 2);
    let used = |dir: &std::path::Path| dir.join("blobs").is_dir();

    // KANIKO_DIR alone: kiln's state goes there, not to $HOME/.cache/kiln.
    let kd = p.path("kaniko-env");
    let (ok, err) = kiln_env(&args, &[("HOME", &home), ("KANIKO_DIR", &kd)]);
    assert!(ok, "{err}");
    assert!(!err.contains("has no effect"), "{err}");
    assert!(used(&kd), "KANIKO_DIR was not used: {err}");
    assert!(!home.join(".cache/kiln").exists(), "state went to $HOME");

    // --kaniko-dir (a flag) beats KILN_DIR (an image's environment).
    let flag = p.path("kaniko-flag");
    let kiln_env_dir = p.path("kiln-env");
    let mut with_flag = args.clone();
    with_flag.extend(["--kaniko-dir".into(), flag.display().to_string()]);
    let (ok, err) = kiln_env(
        &with_flag,
        &[
            ("HOME", &home),
            ("KILN_DIR", &kiln_env_dir),
            ("KANIKO_DIR", &kd),
        ],
    );
    assert!(ok, "{err}");
    assert!(used(&flag), "--kaniko-dir was not used: {err}");
    assert!(!used(&kiln_env_dir), "{err}");

    // --kiln-dir beats --kaniko-dir, and says the other is not used.
    let kiln_flag = p.path("kiln-flag");
    with_flag.extend(["--kiln-dir".into(), kiln_flag.display().to_string()]);
    let (ok, err) = kiln_env(&with_flag, &[("HOME", &home)]);
    assert!(ok, "{err}");
    assert!(used(&kiln_flag), "{err}");
    assert!(err.contains("is not used: --kiln-dir"), "{err}");
}

#[test]
fn warmer_name_fills_the_cache_dir_an_executor_build_uses() {
    use kiln_testkit::{push_busybox, require, Registry};
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {}/library/busybox\nCOPY payload /payload\n",
        reg.addr()
    ));
    std::fs::write(p.ctx.join("payload"), b"x\n").expect("write payload");
    // Kaniko's binaries by name: /kaniko/warmer and /kaniko/executor.
    let bin = p.path("bin");
    std::fs::create_dir_all(&bin).expect("mkdir bin");
    for name in ["warmer", "executor"] {
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kiln"), bin.join(name)).expect("symlink");
    }
    let run = |name: &str, args: &[String]| {
        kiln_testkit::status_and_stderr(&bin.join(name).display().to_string(), args)
    };
    let cache_dir = p.path("cache");
    let image = format!("{}/library/busybox:latest", reg.addr());
    // A Kubernetes warm-up Job's command line, Kaniko's spellings.
    let (ok, err) = run(
        "warmer",
        &[
            format!("--cache-dir={}", cache_dir.display()),
            format!("--image={image}"),
            "--insecure-pull".into(),
            "-v".into(),
            "info".into(),
            "--log-format=text".into(),
            "--log-timestamp=false".into(),
        ],
    );
    assert!(ok, "{err}");
    let entries: Vec<String> = std::fs::read_dir(&cache_dir)
        .expect("the cache dir was made")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        entries
            .iter()
            .any(|n| n.starts_with("sha256:") && n.ends_with(".json")),
        "{entries:?}"
    );
    // The executor's build takes its base from there, not from the registry.
    let (ok, err) = run(
        "executor",
        &[
            "-c".into(),
            p.ctx.display().to_string(),
            "--no-push".into(),
            "--cache=true".into(),
            format!("--cache-dir={}", cache_dir.display()),
            "--insecure-pull".into(),
            "--log-format=text".into(),
            "--kiln-dir".into(),
            p.path("state").display().to_string(),
        ],
    );
    assert!(ok, "{err}");
    assert!(
        err.contains(&format!("using {image} from the base-image cache")),
        "{err}"
    );
}

#[test]
fn push_retry_repeats_the_whole_push() {
    use kiln_testkit::{push_busybox, require, Fault, FaultProxy, Registry};
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let proxy = FaultProxy::start(reg.addr()).expect("proxy");
    let p = Project::new(&format!(
        "FROM {}/library/busybox\nCOPY payload /payload\n",
        reg.addr()
    ));
    std::fs::write(p.ctx.join("payload"), b"x\n").expect("write payload");
    // Six 503s on the manifest PUT: more than one push's per-request retries (1 + 3) take.
    // Retry-After: 0 keeps the client's own waits short.
    let fail_manifest_puts = || {
        proxy.clear();
        proxy.add(
            "PUT",
            "/manifests/",
            6,
            Fault::Status(503, vec![("Retry-After".into(), "0".into())]),
        );
    };
    let push = |state: &str, extra: &[&str]| {
        let mut a: Vec<String> = vec![
            "build".into(),
            "-c".into(),
            p.ctx.display().to_string(),
            "--insecure".into(),
            "--insecure-pull".into(),
            "--log-format=text".into(),
            "-d".into(),
            format!("{}/retry/app:1", proxy.addr()),
            "--kiln-dir".into(),
            p.path(state).display().to_string(),
        ];
        a.extend(extra.iter().map(|s| s.to_string()));
        kiln(&a)
    };
    fail_manifest_puts();
    let (ok, err) = push("s1", &[]);
    assert!(!ok, "one push absorbed six 503s: {err}");
    assert!(err.contains("503"), "{err}");
    // Kaniko's --push-retry 1: one more whole push, which gets through after two more 503s.
    fail_manifest_puts();
    let (ok, err) = push("s2", &["--push-retry", "1"]);
    assert!(ok, "{err}");
    assert!(err.contains("trying again (--push-retry)"), "{err}");
    assert_eq!(proxy.count("PUT", "/manifests/"), 4 + 4 + 3, "{err}");
}

#[test]
fn a_copy_named_executor_without_tmp_runs_steps_and_removes_its_build_directory() {
    // The CI image: the binary copied (not linked) to /kaniko/executor, FROM scratch, so no
    // /tmp. Every RUN failed there ("preparing sandbox scratch file /tmp/kiln-run-XXXXXX"),
    // and the background remover, started as `executor __remove-tree DIR`, was read as a
    // build's arguments: every build directory stayed behind.
    let reg = kiln_testkit::require!(kiln_testkit::Registry::start());
    kiln_testkit::require!(kiln_testkit::push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {}/library/busybox\nRUN echo ran > /ran\n",
        reg.addr()
    ));
    let bin = p.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), bin.join("executor")).unwrap();
    let state = p.path("state");
    let out = std::process::Command::new(bin.join("executor"))
        .arg("-c")
        .arg(&p.ctx)
        .args(["--no-push", "--insecure-pull", "--log-format=text"])
        .arg("--kiln-dir")
        .arg(&state)
        .env("TMPDIR", p.path("no-such-tmp"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left: Vec<_> = std::fs::read_dir(state.join("builds"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "build directories left: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

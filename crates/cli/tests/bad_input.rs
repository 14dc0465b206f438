//! Bad input of every kind gets one clear error naming what and where, and a non-zero exit.

use std::path::Path;
use std::process::Command;

fn kiln_build(args: &[&str], state: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .args(args)
        .args(["--no-push", "--log-format=text"])
        .arg("--kiln-dir")
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_context_dockerfile_and_sources_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let (code, err) = kiln_build(&["-c", "/nonexistent/ctx"], &state);
    assert_ne!(code, 0);
    assert!(
        err.contains("build context /nonexistent/ctx: not found"),
        "{err}"
    );

    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let ctx_s = ctx.to_str().unwrap();
    let (code, err) = kiln_build(&["-c", ctx_s, "-f", "Nope.Dockerfile"], &state);
    assert_ne!(code, 0);
    assert!(
        err.contains("Dockerfile Nope.Dockerfile: not found"),
        "{err}"
    );

    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPPY a b\n").unwrap();
    let (code, err) = kiln_build(&["-c", ctx_s], &state);
    assert_ne!(code, 0);
    assert!(
        err.contains("Dockerfile:2:1: unknown instruction: COPPY")
            && err.contains("did you mean COPY?"),
        "{err}"
    );

    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\n\nCOPY missing.txt /\n",
    )
    .unwrap();
    let (code, err) = kiln_build(&["-c", ctx_s], &state);
    assert_ne!(code, 0);
    assert!(
        err.contains("Dockerfile:3: COPY: source not found: missing.txt"),
        "{err}"
    );

    let (code, err) = kiln_build(&["-c", ctx_s, "--snapshot-mode=fast"], &state);
    assert_ne!(code, 0);
    assert!(err.contains("invalid --snapshot-mode \"fast\""), "{err}");

    // Nothing was written outside the state directory we gave, and no build dir is left.
    let builds = state.join("builds");
    let left: Vec<_> = std::fs::read_dir(&builds)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn no_destination_without_no_push_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "-c"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no --destination given"));
}

/// `kiln build DIR` as `docker build DIR`: the positional context is the context, and naming
/// both it and --context is refused.
#[test]
fn positional_context_is_the_context() {
    let p = kiln_testkit::Project::new("FROM scratch\nCOPY payload /payload\n");
    std::fs::write(p.ctx.join("payload"), b"from the positional context\n").unwrap();
    let layout = p.path("oci");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .current_dir(&p.ctx)
        .args(["build", ".", "--no-push", "--kiln-dir"])
        .arg(p.path("state"))
        .arg("--oci-layout-path")
        .arg(&layout)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(layout.join("index.json").is_file(), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", ".", "-c", "/elsewhere", "--no-push"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `docker build -t NAME` has no meaning without a local image store: refused before any
/// work, saying what to use instead (and never pushed).
#[test]
fn docker_tag_flag_says_what_to_use_instead() {
    let p = kiln_testkit::Project::new("FROM scratch\nCOPY payload /payload\n");
    std::fs::write(p.ctx.join("payload"), b"x").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["build", "-t", "app:1"])
        .arg(&p.ctx)
        .arg("--kiln-dir")
        .arg(p.path("state"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("-t/--tag \"app:1\"")
            && err.contains("--destination")
            && err.contains("--tar-path"),
        "{err}"
    );
    assert!(!err.contains("pushed"), "{err}");
}

/// A --secret file that does not exist fails the build before any step, naming id and path.
#[test]
fn missing_secret_file_fails_before_the_build_naming_it() {
    let p = kiln_testkit::Project::new("FROM scratch\nCOPY payload /payload\n");
    std::fs::write(p.ctx.join("payload"), b"x").unwrap();
    let missing = p.path("no-such-secret-file");
    let (code, err) = kiln_build(
        &[
            "-c",
            &p.ctx.display().to_string(),
            &format!("--secret=id=tok,src={}", missing.display()),
        ],
        &p.path("state"),
    );
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("--secret id=tok") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("[stage 1/1 step 1/1]"), "failed late: {err}");
}

/// A COPY source that .dockerignore excludes is "not found", as in BuildKit, and the error
/// says why; a source that is simply missing does not mention .dockerignore.
#[test]
fn a_source_excluded_by_dockerignore_says_so() {
    let p = kiln_testkit::Project::new("FROM scratch\nCOPY config/app.env /app.env\n");
    std::fs::create_dir(p.ctx.join("config")).unwrap();
    std::fs::write(p.ctx.join("config/app.env"), b"A=1").unwrap();
    std::fs::write(p.ctx.join(".dockerignore"), b"*.env\nconfig/*.env\n").unwrap();
    let (code, err) = kiln_build(&["-c", &p.ctx.display().to_string()], &p.path("state"));
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("Dockerfile:2")
            && err.contains(
                "config/app.env (it is in the context directory, but .dockerignore excludes it)"
            ),
        "{err}"
    );
    std::fs::remove_file(p.ctx.join("config/app.env")).unwrap();
    let (code, err) = kiln_build(&["-c", &p.ctx.display().to_string()], &p.path("state"));
    assert_ne!(code, 0, "{err}");
    assert!(
        err.contains("config/app.env") && !err.contains(".dockerignore"),
        "{err}"
    );
}

//! What a CI log pipeline sees on stderr: no escape codes unless colour is asked for, one JSON
//! shape for every line (the final error too) with `--log-format=json`, the RUN isolation said
//! once, and a warning repeated by every RUN step shown once. Found by an acceptance run of
//! kiln as a Kaniko drop-in (its report, P5 and P0-b).

use kiln_testkit::{push_busybox, require, Project, Registry};

fn kiln(args: &[String]) -> (bool, String) {
    kiln_testkit::status_and_stderr(env!("CARGO_BIN_EXE_kiln"), args)
}

/// `build` of `p` pushed to `reg` (so the registry client logs its INFO lines), with `extra`;
/// no `--log-format` unless `extra` gives one.
fn push_args(p: &Project, reg: &Registry, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "build".into(),
        "-c".into(),
        p.ctx.display().to_string(),
        "--insecure".into(),
        "--insecure-pull".into(),
        "-d".into(),
        format!("{}/logs/app:1", reg.addr()),
        "--kiln-dir".into(),
        p.path("state").display().to_string(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn two_runs(reg: &Registry) -> Project {
    Project::new(&format!(
        "FROM {}/library/busybox\nRUN echo one >/one\nRUN echo two >/two\n",
        reg.addr()
    ))
}

#[test]
fn default_format_off_a_terminal_has_no_escape_codes() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = two_runs(&reg);
    // stderr is a pipe here: not a terminal.
    let (ok, err) = kiln(&push_args(&p, &reg, &[]));
    assert!(ok, "{err}");
    // The registry client's tracing lines are there (they had the codes) ...
    assert!(err.contains(" INFO "), "no tracing line to check: {err}");
    // ... and nothing has an escape code.
    assert!(!err.contains('\x1b'), "{err:?}");
    // The isolation RUN steps use is said once for the build, not per step.
    assert_eq!(err.matches("RUN isolation: ").count(), 1, "{err}");
    // `color` forces colours (Kaniko's `color` does, wherever the log goes).
    let (ok, err) = kiln(&push_args(&p, &reg, &["--log-format=color"]));
    assert!(ok, "{err}");
    assert!(err.contains("\x1b["), "{err:?}");
}

#[test]
fn json_format_is_one_shape_for_events_logs_and_the_final_error() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = two_runs(&reg);
    let lines = |err: &str| -> Vec<serde_json::Value> {
        err.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("not a JSON line ({e}): {l:?}\n{err}"))
            })
            .collect()
    };
    let (ok, err) = kiln(&push_args(&p, &reg, &["--log-format=json"]));
    assert!(ok, "{err}");
    let events = lines(&err);
    let kinds: Vec<&str> = events
        .iter()
        .map(|v| v["event"].as_str().expect("every line has an event"))
        .collect();
    for kind in ["step", "info", "log", "summary"] {
        assert!(kinds.contains(&kind), "no {kind} event: {err}");
    }
    let log = events
        .iter()
        .find(|v| v["event"] == "log")
        .expect("a log line");
    // Every line has logrus' JSONFormatter fields (Kaniko's --log-format=json): level, msg,
    // time.
    assert!(log["level"].is_string() && log["msg"].is_string(), "{log}");
    assert!(
        events.iter().all(|v| v["msg"].is_string()
            && ["info", "warning", "error", "debug"].contains(&v["level"].as_str().unwrap_or(""))
            && v["time"].as_str().is_some_and(|t| t.ends_with('Z'))),
        "{err}"
    );

    // A failing build ends with the error as a JSON event too.
    std::fs::write(
        p.ctx.join("Dockerfile"),
        "FROM scratch\nCOPY missing.txt /x\n",
    )
    .expect("write Dockerfile");
    let (ok, err) = kiln(&push_args(&p, &reg, &["--log-format=json"]));
    assert!(!ok, "{err}");
    let events = lines(&err);
    let last = events.last().expect("some output");
    assert_eq!(last["event"], "error", "{err}");
    assert!(
        last["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("missing.txt"),
        "{err}"
    );
    assert_eq!(last["exit_code"], 1, "{err}");
}

#[test]
fn a_warning_every_run_step_repeats_is_shown_once() {
    // chroot isolation without CAP_SYS_ADMIN warns for every RUN that the step has no /proc.
    // setpriv takes CAP_SYS_ADMIN out of the bounding set, so kiln (root) runs without it.
    let Some(setpriv) = kiln_testkit::which("setpriv") else {
        kiln_testkit::report_skip("setpriv (util-linux) is not installed");
        return;
    };
    if !nix_is_root() {
        kiln_testkit::report_skip("not root: chroot isolation needs it");
        return;
    }
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = two_runs(&reg);
    let mut args = vec![
        "--bounding-set=-sys_admin".to_string(),
        "--inh-caps=-sys_admin".to_string(),
        "--".to_string(),
        env!("CARGO_BIN_EXE_kiln").to_string(),
    ];
    args.extend(p.build_args(
        "state",
        &["--isolation=chroot", "--overlay-snapshots=false"],
    ));
    let (ok, err) = kiln_testkit::status_and_stderr(&setpriv.display().to_string(), &args);
    assert!(ok, "{err}");
    assert_eq!(
        err.matches("without CAP_SYS_ADMIN: no /proc in the step")
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("repeated warning"), "{err}");
    assert_eq!(
        err.matches("RUN isolation: chroot (--isolation)").count(),
        1,
        "{err}"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2))
                == Some("0")
        })
        .unwrap_or(false)
}

//! Independent stages run at the same time (`--parallel-stages`, on by default): two stages
//! that each sleep one second overlap in time, which the last stage checks; one at a time
//! they do not. Their output is all there, the second stage's after the first.

use kiln_testkit::{push_busybox, require, Project, Registry};

fn kiln(args: &[String]) -> (bool, String) {
    kiln_testkit::status_and_stderr(env!("CARGO_BIN_EXE_kiln"), args)
}

#[test]
fn independent_stages_overlap_in_time() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    // Each stage records when its RUN started and ended (system uptime, shared by all
    // namespaces); the last stage fails unless the two intervals overlap.
    let timed = "RUN s=$(cut -d' ' -f1 /proc/uptime) && sleep 1 && echo \"$s $(cut -d' ' -f1 /proc/uptime)\" >/t";
    let p = Project::new(&format!(
        "FROM {0}/library/busybox AS a\n{timed}\n\
         FROM {0}/library/busybox AS b\n{timed}\n\
         FROM {0}/library/busybox\n\
         COPY --from=a /t /a\nCOPY --from=b /t /b\n\
         RUN read as ae </a && read bs be </b && echo \"a $as-$ae b $bs-$be\" && \
         awk -v as=$as -v ae=$ae -v bs=$bs -v be=$be 'BEGIN {{ exit !(as < be && bs < ae) }}'\n",
        reg.addr()
    ));
    let build = |extra: &[&str]| kiln(&p.build_args("state", extra));
    let (ok, err) = build(&[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("[stage 2/3] ran alongside other stages"),
        "{err}"
    );
    // Its start was said when it happened, while stage 1 was shown.
    let started = err
        .find("[stage 2/3] started alongside stage 1/3; its output follows when that one ends")
        .expect("the held-back stage's start is told");
    assert!(
        started < err.find("[stage 2/3] ran alongside").unwrap(),
        "{err}"
    );
    // Both stages' steps are reported, the second's after the first's.
    let a = err
        .find("[stage 1/3 step 1/1] RUN")
        .expect("stage 1's step");
    let b = err
        .find("[stage 2/3 step 1/1] RUN")
        .expect("stage 2's step");
    assert!(a < b, "{err}");
    assert_eq!(err.matches("  done in").count(), 5, "{err}");

    let (ok, err) = build(&["--parallel-stages=false"]);
    assert!(!ok, "one at a time, the stages cannot overlap: {err}");
    assert!(!err.contains("ran alongside"), "{err}");
}

#[test]
fn a_from_known_only_when_the_step_runs_waits_for_every_earlier_stage() {
    // `--from=$SRC` is read from an ENV the stage inherits: the engine learns its value only
    // when the step runs, so `c` waits for every stage before it instead of running alongside
    // `x`, which becomes ready at the same time. (The plan keeps `x` for `c` itself since the
    // planner expands `--from` with inherited ENVs; the last stage names `x` too.)
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {0}/library/busybox AS y\nRUN sleep 1\n\
         FROM y AS x\nRUN echo from-x >/f\n\
         FROM {0}/library/busybox AS base\nENV SRC=x\n\
         FROM base AS c\nCOPY --from=$SRC /f /f\nRUN grep from-x /f\n\
         FROM c\nCOPY --from=x /f /g\n",
        reg.addr()
    ));
    let (ok, err) = kiln(&p.build_args("state", &[]));
    assert!(ok, "{err}");
    assert!(!err.contains("[stage 4/5] ran alongside"), "{err}");
    assert!(
        err.contains("[stage 3/5] ran alongside other stages"),
        "{err}"
    );
}

#[test]
fn when_the_shown_stage_ends_the_next_one_is_shown_as_it_runs() {
    // `a` ends at once; `b` prints, then fails two seconds later. `b`'s output is shown as
    // soon as `a` is done, so its line comes before the failure, which is said when it happens.
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {0}/library/busybox AS a\nRUN echo a-done >/a\n\
         FROM {0}/library/busybox AS b\nRUN echo early-b && sleep 2 && exit 3\n\
         FROM {0}/library/busybox\nCOPY --from=a /a /a\nCOPY --from=b /bin/sh /b\n",
        reg.addr()
    ));
    let (ok, err) = kiln(&p.build_args("state", &[]));
    assert!(!ok, "{err}");
    let early = err.find("early-b").expect("b's output");
    // Alone by then, the failing stage does not announce its failure: the build's error does.
    assert!(!err.contains("stage 2/3 failed"), "{err}");
    let failed = err.find("exited with status 3").expect("the failure");
    assert!(early < failed, "{err}");
    assert!(
        err.contains("[stage 2/3] ran alongside other stages"),
        "{err}"
    );
}

#[test]
fn a_stage_starts_as_soon_as_the_stages_it_reads_are_done() {
    // `c` reads only `b`, which ends at once: `c` starts while `a` still sleeps.
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        kiln_testkit::report_skip("one CPU: kiln runs one stage at a time");
        return;
    }
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {0}/library/busybox AS a\n\
         RUN s=$(cut -d' ' -f1 /proc/uptime) && sleep 2 && echo \"$s $(cut -d' ' -f1 /proc/uptime)\" >/t\n\
         FROM {0}/library/busybox AS b\nRUN true\n\
         FROM b AS c\nRUN cut -d' ' -f1 /proc/uptime >/s\n\
         FROM {0}/library/busybox\nCOPY --from=a /t /a\nCOPY --from=c /s /c\n\
         RUN read as ae </a && read cs </c && echo \"a $as-$ae c $cs\" && \
         awk -v ae=$ae -v cs=$cs 'BEGIN {{ exit !(cs < ae) }}'\n",
        reg.addr()
    ));
    let (ok, err) = kiln(&p.build_args("state", &[]));
    assert!(ok, "{err}");
}

#[test]
fn an_onbuild_trigger_naming_a_stage_runs_after_that_stage() {
    // `x` is named only by the trigger `a` sets; it runs in the last stage, which must wait
    // for `x` (and `x` must be built at all).
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {0}/library/busybox AS x\nRUN sleep 1 && echo from-x >/f\n\
         FROM {0}/library/busybox AS a\nONBUILD COPY --from=x /f /f\n\
         FROM a\nRUN grep from-x /f\n",
        reg.addr()
    ));
    let (ok, err) = kiln(&p.build_args("state", &[]));
    assert!(ok, "{err}");
}

#[test]
fn stages_on_one_base_pull_it_once() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    // Two stages on the same base that run at the same time, and a third one on it too.
    let p = Project::new(&format!(
        "FROM {0}/library/busybox AS a\nRUN echo a >/a\n\
         FROM {0}/library/busybox AS b\nRUN echo b >/b\n\
         FROM {0}/library/busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        reg.addr()
    ));
    let (ok, err) = kiln(&p.build_args("state", &[]));
    assert!(ok, "{err}");
    let log = reg.log();
    let manifest_gets = log
        .lines()
        .filter(|l| l.contains("/v2/library/busybox/manifests/") && l.contains("GET"))
        .count();
    assert_eq!(
        manifest_gets, 1,
        "the base's manifest was fetched {manifest_gets} times:\n{log}"
    );
}

#[test]
fn a_stage_named_only_by_a_from_variable_of_an_inherited_env_is_built() {
    // `builder` is named only through `ENV SRC=builder` of the parent stage: the plan must
    // keep it (it was pruned: "stage 0 was not built"). `unused` would fail if it were built
    // (its source does not exist): in a chain that starts at scratch, SRC can name nothing else.
    let p = Project::new(
        "FROM scratch AS builder\nCOPY payload /payload\n\
         FROM scratch AS unused\nCOPY no-such-file /x\n\
         FROM scratch AS base\nENV SRC=builder\n\
         FROM base\nCOPY --from=$SRC /payload /copied\n",
    );
    std::fs::write(p.ctx.join("payload"), b"from the builder stage\n").expect("write payload");
    let layout = p.path("layout");
    let layout_arg = layout.display().to_string();
    let (ok, err) = kiln(&p.build_args("state", &["--oci-layout-path", &layout_arg]));
    assert!(ok, "{err}");
    let files = kiln_testkit::layout::flatten(&layout);
    let copied = files.get("copied").expect("/copied in the image");
    assert_eq!(copied.content, b"from the builder stage\n");
    assert!(!files.contains_key("payload"), "{:?}", files.keys());
}

#[test]
fn a_failing_stage_alone_does_not_say_it_waits_for_others() {
    let p = Project::new("FROM scratch\nCOPY missing /m\n");
    let (ok, err) = kiln(&p.build_args("state", &[]));
    assert!(!ok, "{err}");
    assert!(err.contains("missing"), "{err}");
    assert!(
        !err.contains("waiting for the stages running alongside"),
        "{err}"
    );
}

/// `RUN --mount=type=cache,from=STAGE,source=DIR`: a new cache starts as a copy of that
/// directory of the stage (BuildKit's "base of the cache mount"); the next step with the same
/// cache sees what the first left, and the stage itself is not changed.
#[test]
fn a_cache_mount_from_a_stage_starts_as_its_directory() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {0}/library/busybox AS seed\nRUN mkdir -p /seed && echo seeded > /seed/a\n\
         FROM {0}/library/busybox\n\
         RUN --mount=type=cache,target=/cache,from=seed,source=/seed cat /cache/a > /got && echo more > /cache/b\n\
         RUN --mount=type=cache,target=/cache,from=seed,source=/seed ls /cache > /listing\n\
         COPY --from=seed /seed /seed-after\n",
        reg.addr()
    ));
    let layout = p.path("oci");
    let (ok, err) = kiln(&p.build_args(
        "state",
        &["--oci-layout-path", &layout.display().to_string()],
    ));
    assert!(ok, "{err}");
    let files = kiln_testkit::layout::flatten(&layout);
    let text = |k: &str| String::from_utf8_lossy(&files[k].content).into_owned();
    assert_eq!(text("got"), "seeded\n");
    assert_eq!(text("listing"), "a\nb\n");
    assert!(files.contains_key("seed-after/a") && !files.contains_key("seed-after/b"));
}

//! StageEnv and plan rules the build engine relies on, asserted directly.

use kiln_dockerfile::{
    parse_dockerfile, plan, Base, ErrorKind, FromRef, Instruction, PlanOptions, StageEnv,
};

fn opts(target: Option<&str>, args: &[(&str, &str)]) -> PlanOptions {
    PlanOptions {
        target: target.map(str::to_string),
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target_platform: "linux/arm64".into(),
        build_platform: "linux/amd64".into(),
    }
}

/// Dispatches every instruction of the target stage; returns the final env and the
/// expanded instructions.
fn run(src: &str, o: &PlanOptions) -> (StageEnv, Vec<Instruction>) {
    let df = parse_dockerfile(src.as_bytes()).expect("parse");
    let p = plan(&df, o).expect("plan");
    let st = p.stage(p.target).expect("target planned");
    let mut env = StageEnv::new(&p, st.index, &[("PATH".into(), "/bin".into())]);
    let mut out = Vec::new();
    for i in &st.instructions {
        out.push(env.dispatch(&i.value).expect("dispatch"));
    }
    (env, out)
}

fn kv(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn env_after_arg_wins_and_arg_after_env_wins_in_run() {
    let (env, _) = run(
        "FROM a\nARG X=arg\nENV X=env\nENV Y=env\nARG Y=arg\nARG Z\nRUN true\n",
        &opts(None, &[]),
    );
    assert_eq!(
        env.env(),
        kv(&[("PATH", "/bin"), ("X", "env"), ("Y", "env")])
    );
    // Y was re-set by an ARG after its ENV; Z is declared without a value.
    assert_eq!(env.run_build_args(), kv(&[("Y", "arg")]));
    assert_eq!(
        env.run_env(),
        kv(&[("PATH", "/bin"), ("X", "env"), ("Y", "arg")])
    );
    assert_eq!(
        env.expand("$X-$Y-${Z:-unset}").expect("expand"),
        "env-arg-unset"
    );
}

#[test]
fn global_args_need_redeclaration_and_build_args_override() {
    let src = "ARG G=global\nARG B=default\nFROM a\nRUN x\nARG G\nARG B\nARG C=$G-c\nRUN y\n";
    let (env, _) = run(src, &opts(None, &[("B", "cli")]));
    assert_eq!(
        env.run_build_args(),
        kv(&[("G", "global"), ("B", "cli"), ("C", "global-c")])
    );
    assert_eq!(env.history_args(), env.run_build_args());
}

#[test]
fn sequential_arg_declarations_see_each_other() {
    let (env, out) = run("FROM a\nARG A=1 B=${A}2\n", &opts(None, &[]));
    assert_eq!(env.run_build_args(), kv(&[("A", "1"), ("B", "12")]));
    let Instruction::Arg(d) = &out[0] else {
        panic!("not ARG: {:?}", out[0])
    };
    assert_eq!(d[1].default.as_deref(), Some("12"));
}

#[test]
fn proxy_args_usable_undeclared_and_hidden_from_history() {
    let o = opts(
        None,
        &[("HTTP_PROXY", "http://u:p@h:3128"), ("no_proxy", "x")],
    );
    let (env, out) = run("FROM a\nARG no_proxy\nENV P=$HTTP_PROXY\nRUN x\n", &o);
    assert_eq!(
        env.env()[1],
        ("P".to_string(), "http://u:p@h:3128".to_string())
    );
    assert!(env.history_args().is_empty(), "{:?}", env.history_args());
    let run_args = env.run_build_args();
    assert!(run_args.contains(&("HTTP_PROXY".into(), "http://u:p@h:3128".into())));
    assert!(run_args.contains(&("no_proxy".into(), "x".into())));
    assert_eq!(out.len(), 3);
}

#[test]
fn platform_args_are_global() {
    let src = "FROM --platform=$BUILDPLATFORM img:$TARGETARCH\nARG TARGETOS TARGETARCH\nARG BUILDOS\nWORKDIR /$TARGETOS-$TARGETARCH-$BUILDOS\n";
    let df = parse_dockerfile(src.as_bytes()).expect("parse");
    let p = plan(&df, &opts(None, &[])).expect("plan");
    assert_eq!(p.stages[0].base, Base::Image("img:arm64".into()));
    assert_eq!(p.stages[0].platform.as_deref(), Some("linux/amd64"));
    let (_, out) = run(src, &opts(None, &[]));
    assert_eq!(out[2], Instruction::Workdir("/linux-arm64-linux".into()));
}

#[test]
fn target_pruning_and_stage_references() {
    let src = "FROM a AS One\nFROM b AS two\nFROM one AS three\nCOPY --from=1 x y\nRUN --mount=from=TWO,target=/t x\nFROM c\n";
    let df = parse_dockerfile(src.as_bytes()).expect("parse");
    let p = plan(&df, &opts(Some("THREE"), &[])).expect("plan");
    let idx: Vec<usize> = p.stages.iter().map(|s| s.index).collect();
    assert_eq!(idx, vec![0, 1, 2]);
    assert_eq!(p.target, 2);
    assert_eq!(p.stages[2].base, Base::Stage(0));
    assert_eq!(p.stages[2].deps, vec![0, 1]);
    assert_eq!(p.resolve_from(2, "two").expect("ref"), FromRef::Stage(1));
    assert_eq!(
        p.resolve_from(2, "alpine:3").expect("ref"),
        FromRef::Image("alpine:3".into())
    );
    assert!(p.resolve_from(1, "three").is_err());
    let p = plan(&df, &opts(None, &[("UNUSED", "1")])).expect("plan");
    assert_eq!(p.stages.len(), 1);
    assert_eq!(p.unused_build_args, vec!["UNUSED".to_string()]);
    let e = plan(&df, &opts(Some("four"), &[])).expect_err("unknown target");
    assert!(matches!(e.kind(), ErrorKind::UnknownTarget { .. }));
    assert!(e.hint().is_some_and(|h| h.contains("One")));
}

#[test]
fn dispatch_expands_copy_fields_and_mounts() {
    let src = "FROM a\nARG U=1000 ID=cache\nCOPY --chown=$U:$U --chmod=0${U%000}55 --from=${ID}x src/$ID /dst/$U/\nRUN --mount=type=cache,id=$ID,target=/c,uid=$U x\nCOPY <<EOF /f\n$U \"q\" \\$U\nEOF\n";
    let (_, out) = run(src, &opts(None, &[]));
    let Instruction::Copy(c) = &out[1] else {
        panic!("{:?}", out[1])
    };
    assert_eq!(c.chown.as_deref(), Some("1000:1000"));
    assert_eq!(c.chmod.as_deref(), Some("0155"));
    assert_eq!(c.from.as_deref(), Some("cachex"));
    assert_eq!(c.sources, vec!["src/cache".to_string()]);
    assert_eq!(c.dest, "/dst/1000/");
    let Instruction::Run(r) = &out[2] else {
        panic!("{:?}", out[2])
    };
    assert_eq!(r.mounts[0].id.as_deref(), Some("cache"));
    assert_eq!(r.mounts[0].uid, Some(1000));
    let Instruction::Copy(c) = &out[3] else {
        panic!("{:?}", out[3])
    };
    assert_eq!(c.heredocs[0].content, "1000 \"q\" $U\n");
}

#[test]
fn onbuild_triggers_from_a_base_image_parse_as_instructions() {
    let t = kiln_dockerfile::parse_trigger("COPY --chown=1:1 . /app", '\\', 7).expect("trigger");
    assert_eq!(t.start_line, 7);
    let Instruction::Copy(c) = &t.value else {
        panic!("{:?}", t.value)
    };
    assert_eq!(c.chown.as_deref(), Some("1:1"));
    for bad in [
        "ONBUILD RUN x",
        "FROM alpine",
        "MAINTAINER me",
        "RUNN x",
        "RUN a\nRUN b",
    ] {
        let e = kiln_dockerfile::parse_trigger(bad, '\\', 3).expect_err(bad);
        assert_eq!(e.line(), 3, "{bad}: {e}");
    }
}

#[test]
fn error_render_points_at_line_and_column() {
    let src = "FROM alpine\n  COPY --chmodd=644 a /b\n";
    let e = parse_dockerfile(src.as_bytes()).expect_err("bad flag");
    assert_eq!((e.line(), e.col()), (2, 8));
    let r = e.render("Dockerfile", src);
    assert!(
        r.starts_with("Dockerfile:2:8: unknown flag: --chmodd on COPY\n"),
        "{r}"
    );
    assert!(r.contains("\n      |        ^\n"), "{r}");
    assert!(r.ends_with("hint: did you mean --chmod?\n"), "{r}");
}

/// BuildKit expands ARG names too (`ArgCommand.Expand`): `ARG ${src}=d` declares the ARG the
/// variable names, and a --build-arg for that name applies (Kaniko's Dockerfile_test_scratch).
#[test]
fn arg_names_are_expanded() {
    let (env, ins) = run(
        "FROM scratch\nENV src=file3\nARG ${src}=default\nENV seen=$file3\n",
        &opts(None, &[("file3", "given")]),
    );
    assert!(matches!(&ins[1], Instruction::Arg(d) if d[0].name == "file3"));
    assert!(env
        .env()
        .contains(&("seen".to_string(), "given".to_string())));
}

#[test]
fn onbuild_triggers_of_a_parent_stage_make_their_from_stages_dependencies() {
    // `x` is named only by a trigger `a` sets, which runs in the last stage: it is planned,
    // and the last stage depends on it.
    let src = "FROM busybox AS x\nRUN echo x >/f\n\
               FROM busybox AS a\nONBUILD COPY --from=x /f /f\n\
               FROM a AS b\nRUN cat /f\n";
    let df = parse_dockerfile(src.as_bytes()).expect("parse");
    let p = plan(&df, &opts(None, &[])).expect("plan");
    assert!(p.stage(0).is_some(), "x is planned");
    let last = p.stage(p.target).expect("target");
    assert!(last.deps.contains(&0), "{:?}", last.deps);
    assert!(last.deps.contains(&1), "{:?}", last.deps);
    // A grandchild does not run the trigger (docker clears it): no dependency there.
    let src2 = format!("{src}FROM b AS d\nRUN true\n");
    let df = parse_dockerfile(src2.as_bytes()).expect("parse");
    let p = plan(&df, &opts(None, &[])).expect("plan");
    let d = p.stage(p.target).expect("target");
    assert_eq!(d.deps, vec![2], "{:?}", d.deps);
}

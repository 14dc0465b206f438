//! Parses a generated 10,000-line Dockerfile repeatedly and reports timings
//! (used by `bench/parse.sh`). Usage: `parse_bench [LINES] [ITERATIONS]`.
use std::time::{Duration, Instant};

use kiln_dockerfile::{debug_plan, parse, parse_dockerfile, plan, PlanOptions, StageEnv};

/// A realistic mix: stages, ARG/ENV with expansion, continuations with comments, RUN mounts,
/// heredocs, COPY --from, JSON forms, labels.
fn generate(lines: usize) -> String {
    let mut s =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\nARG VERSION=1.0\n");
    let mut stage = 0;
    while s.lines().count() < lines {
        let from = if stage == 0 {
            "${BASE}".to_string()
        } else {
            format!("s{}", stage - 1)
        };
        s.push_str(&format!(
            "FROM --platform=$BUILDPLATFORM {from} AS s{stage}\n"
        ));
        s.push_str("ARG VERSION\nARG TARGETARCH\n");
        s.push_str(&format!(
            "ENV APP_HOME=/srv/app{stage} PATH=/srv/app{stage}/bin:$PATH VERSION=${{VERSION:-dev}}\n"
        ));
        s.push_str("WORKDIR $APP_HOME\n");
        s.push_str("RUN --mount=type=cache,target=/var/cache/apt,sharing=locked \\\n");
        s.push_str("    apt-get update && \\\n    # install the toolchain\n");
        s.push_str(
            "    apt-get install -y --no-install-recommends build-essential curl git && \\\n",
        );
        s.push_str("    rm -rf /var/lib/apt/lists/*\n");
        s.push_str("COPY --chown=app:app --chmod=0644 src/ ${APP_HOME}/src/\n");
        if stage > 0 {
            s.push_str(&format!(
                "COPY --from=s{} /srv/app{}/bin/ /usr/local/bin/\n",
                stage - 1,
                stage - 1
            ));
        }
        s.push_str(
            "RUN <<EOF\nset -e\necho building $VERSION for $TARGETARCH\nmake -C src all\nEOF\n",
        );
        s.push_str("LABEL org.opencontainers.image.version=\"$VERSION\" stage=\"s\"\n");
        s.push_str(
            "HEALTHCHECK --interval=30s --timeout=3s CMD [\"/usr/local/bin/app\", \"health\"]\n",
        );
        s.push_str("EXPOSE 8080/tcp 9090/udp\nUSER app:app\n");
        s.push_str("CMD [\"app\", \"--serve\"]\n");
        stage += 1;
    }
    let mut out: Vec<&str> = s.lines().collect();
    out.truncate(lines);
    // Keep the file well-formed after truncation: end on a complete instruction.
    while out
        .last()
        .is_some_and(|l| l.ends_with('\\') || !l.starts_with(char::is_uppercase))
    {
        out.pop();
    }
    let mut text = out.join("\n");
    text.push('\n');
    while text.lines().count() < lines {
        text.push_str("LABEL pad=1\n");
    }
    text
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let lines: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let iters: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let src = generate(lines);
    let opts = PlanOptions {
        target: None,
        build_args: vec![("VERSION".into(), "2.0".into())],
        target_platform: "linux/amd64".into(),
        build_platform: "linux/amd64".into(),
    };
    let (mut t_ast, mut t_typed, mut t_plan, mut t_full) = (vec![], vec![], vec![], vec![]);
    let mut instructions = 0;
    for _ in 0..iters {
        let t = Instant::now();
        let ast = parse(src.as_bytes()).expect("parse");
        t_ast.push(t.elapsed());
        instructions = ast.nodes.len();

        let t = Instant::now();
        let df = parse_dockerfile(src.as_bytes()).expect("parse_dockerfile");
        t_typed.push(t.elapsed());

        let t = Instant::now();
        let p = plan(&df, &opts).expect("plan");
        let mut n = 0;
        for st in &p.stages {
            let mut env = StageEnv::new(&p, st.index, &[]);
            for ins in &st.instructions {
                env.dispatch(&ins.value).expect("dispatch");
                n += 1;
            }
        }
        t_plan.push(t.elapsed());
        assert!(n > 0);

        let t = Instant::now();
        let _ = debug_plan(src.as_bytes(), &opts).expect("debug_plan");
        t_full.push(t.elapsed());
    }
    println!(
        "input: {} lines, {} bytes, {instructions} instructions; {iters} iterations (min / median)",
        src.lines().count(),
        src.len()
    );
    for (name, v) in [
        ("parse (AST)", t_ast),
        ("parse_dockerfile (typed)", t_typed),
        ("plan + StageEnv dispatch of every instruction", t_plan),
        ("debug_plan (all of the above + rendering)", t_full),
    ] {
        let (min, med) = stats(v);
        println!(
            "{name:<48} {:>8.2} ms / {:>8.2} ms",
            min.as_secs_f64() * 1e3,
            med.as_secs_f64() * 1e3
        );
    }
}

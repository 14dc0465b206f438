//! No input panics, hangs or blows up: property tests over arbitrary and Dockerfile-shaped
//! input, plus hostile shapes (deep continuations, 1 MB lines, deep nesting, very many
//! heredocs/flags/variables/stages) that must finish in linear time.

use std::time::{Duration, Instant};

use kiln_dockerfile::{
    debug_plan, parse, parse_dockerfile, Dockerignore, EmptyEnv, PlanOptions, ShellLex,
};
use proptest::prelude::*;

fn opts() -> PlanOptions {
    PlanOptions {
        target: None,
        build_args: vec![("A".into(), "1".into()), ("HTTP_PROXY".into(), "x".into())],
        target_platform: "linux/arm64/v8".into(),
        build_platform: "linux/amd64".into(),
    }
}

/// The Dockerfile path: parse, dump, typed parse, error rendering, plan.
fn exercise_df(src: &[u8]) {
    if let Ok(ast) = parse(src) {
        let _ = ast.dump();
    }
    if let Err(e) = parse_dockerfile(src) {
        let _ = e.render("Dockerfile", &String::from_utf8_lossy(src));
    }
    let _ = debug_plan(src, &opts());
}

/// Everything the front end offers, on one input.
fn exercise(src: &[u8]) {
    exercise_df(src);
    let text = String::from_utf8_lossy(src);
    let lex = ShellLex::new('\\');
    let _ = lex.process_word(&text, &EmptyEnv);
    let _ = lex.process_words(&text, &vec![("A".to_string(), text.to_string())]);
    if let Ok(d) = Dockerignore::parse(&text) {
        // Paths are at most PATH_MAX (4096) bytes; patterns may be longer.
        for l in text.lines().take(20) {
            let l: String = l.chars().take(4096).collect();
            let _ = d.is_excluded(&l);
            let _ = d.must_descend(&l);
        }
    }
}

const PIECES: &[&str] = &[
    "FROM ",
    "RUN ",
    "COPY ",
    "ADD ",
    "ENV ",
    "ARG ",
    "LABEL ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "CMD ",
    "SHELL ",
    "EXPOSE ",
    "VOLUME ",
    "WORKDIR ",
    "USER ",
    "AS ",
    "scratch",
    "alpine",
    "--mount=type=cache,target=/c,id=",
    "--from=",
    "--chown=",
    "--link",
    "--platform=",
    "--network=none",
    "<<EOF",
    "<<-'E'",
    "EOF",
    "E",
    "\tE",
    "\n",
    "\r\n",
    "\\\n",
    "\\",
    "`",
    "# escape=`\n",
    "# syntax=x\n",
    "#",
    " ",
    "\t",
    "$",
    "${",
    "}",
    ":-",
    "#",
    "%%",
    "//",
    "/",
    "\"",
    "'",
    "[",
    "]",
    "\",\"",
    "=",
    "a",
    "0",
    "..",
    "NONE",
    "CMD",
    "\u{feff}",
    "é",
    "\0",
];

fn shaped() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0..PIECES.len(), 0..120)
        .prop_map(|ix| ix.iter().flat_map(|&i| PIECES[i].bytes()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(src in prop::collection::vec(any::<u8>(), 0..600)) {
        exercise(&src);
    }

    #[test]
    fn dockerfile_shaped_input_never_panics(src in shaped()) {
        exercise(&src);
    }

    #[test]
    fn dump_of_a_parse_is_stable(src in shaped()) {
        // Parsing is deterministic, and every successful typed parse has a non-empty plan
        // or a plan error, never a panic.
        let a = parse(&src).map(|a| a.dump());
        let b = parse(&src).map(|a| a.dump());
        prop_assert_eq!(a, b);
    }
}

/// Input size for the hostile cases: 1 MB in release builds; 256 KB in debug builds (the
/// normal `cargo test`), where unoptimised code is ~10x slower.
const MB: usize = 1 << 20;
// Generous: catches quadratic behaviour (minutes at these sizes) even on a loaded CI box.
const LIMIT: Duration = Duration::from_secs(30);
const BIG: usize = if cfg!(debug_assertions) { MB / 4 } else { MB };

/// Best of two runs, to damp noise from other work on the machine.
fn time_of(src: &[u8]) -> Duration {
    (0..2)
        .map(|_| {
            let t = Instant::now();
            exercise_df(src);
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// Runs `generate` at a quarter size and at full size: the time must grow roughly linearly
/// (quadratic growth would be 16x), and stay under an absolute limit.
fn linear(name: &str, generate: impl Fn(usize) -> String) {
    let small = generate(BIG / 4);
    let big = generate(BIG);
    let t1 = time_of(small.as_bytes());
    let t4 = time_of(big.as_bytes());
    println!(
        "{name}: {} bytes in {t1:?}, {} bytes in {t4:?}",
        small.len(),
        big.len()
    );
    assert!(t4 < LIMIT, "{name}: {t4:?} over {LIMIT:?}");
    assert!(
        t4 <= t1 * 12 + Duration::from_millis(250),
        "{name}: 4x input took {t4:?} vs {t1:?}: superlinear"
    );
}

#[test]
fn deep_continuations() {
    linear("continuation lines", |n| {
        let mut s = String::from("FROM alpine\nRUN echo \\\n");
        s.push_str(&"  a \\\n".repeat(n / 6));
        s.push_str("  end\n");
        s
    });
    linear("empty and comment lines in a continuation", |n| {
        format!("FROM alpine\nRUN x \\\n{}y\n", "\n# c\n  \n".repeat(n / 8))
    });
}

#[test]
fn long_lines() {
    type Gen = fn(usize) -> String;
    let cases: &[(&str, Gen)] = &[
        ("RUN long", |n| {
            format!("FROM alpine\nRUN {}\n", "a".repeat(n))
        }),
        ("ENV many self refs", |n| {
            format!("FROM alpine\nENV {}\n", "K=$K ".repeat(n / 5))
        }),
        ("global ARG many", |n| {
            format!("ARG {}\nFROM alpine\n", "A=$A ".repeat(n / 5))
        }),
        ("stage ARG many", |n| {
            format!("FROM alpine\nARG {}\nRUN x\n", "B=${A} ".repeat(n / 7))
        }),
        ("LABEL many", |n| {
            format!("FROM alpine\nLABEL {}\n", "\"k\"=\"v\" ".repeat(n / 8))
        }),
        ("RUN many mounts", |n| {
            format!(
                "FROM alpine\nRUN {} x\n",
                "--mount=type=tmpfs,target=/t ".repeat(n / 30)
            )
        }),
        ("COPY many excludes", |n| {
            format!("FROM alpine\nCOPY {} a /d\n", "--exclude=x ".repeat(n / 12))
        }),
        ("JSON long array", |n| {
            format!("FROM alpine\nCMD [{}\"x\"]\n", "\"a\",".repeat(n / 4))
        }),
        ("JSON deep nesting", |n| {
            format!("FROM alpine\nCMD {}\n", "[".repeat(n))
        }),
        ("nested ${", |n| {
            format!("FROM alpine\nWORKDIR {}\n", "${a:-".repeat(n / 5))
        }),
        ("many $", |n| {
            format!("FROM alpine\nWORKDIR {}\n", "$".repeat(n))
        }),
        ("replace all", |n| {
            format!(
                "FROM alpine\nENV V={}\nWORKDIR ${{V//a/b}}\n",
                "a".repeat(n)
            )
        }),
        ("suffix with stars", |n| {
            format!(
                "FROM alpine\nENV V={}\nWORKDIR ${{V%%*a*a*a}}\n",
                "a".repeat(n)
            )
        }),
        ("huge pattern", |n| {
            format!(
                "FROM alpine\nENV V={} P={}\nWORKDIR ${{V#$P}}\n",
                "a".repeat(n / 2),
                "*".repeat(n / 2)
            )
        }),
        ("ONBUILD chain", |n| {
            format!("FROM alpine\nONBUILD {}RUN x\n", "ONBUILD ".repeat(n / 8))
        }),
        ("quotes", |n| {
            format!("FROM alpine\nRUN {}\n", "\"".repeat(n))
        }),
        ("unknown instruction", |n| {
            format!("FROM alpine\nRUNN{}\n", "a".repeat(n))
        }),
        ("comment", |n| format!("{}\nFROM a\n", "#".repeat(n))),
        ("heredocs on one COPY", |n| {
            let k = n / 18;
            let mut s = String::from("FROM alpine\nCOPY ");
            for i in 0..k {
                s.push_str(&format!("<<H{i} "));
            }
            s.push_str("/d/\n");
            for i in 0..k {
                s.push_str(&format!("x\nH{i}\n"));
            }
            s
        }),
        ("chained stages", |n| {
            let mut s = String::from("FROM alpine AS s0\n");
            for i in 1..n / 40 {
                s.push_str(&format!(
                    "FROM s{} AS s{i}\nCOPY --from={} a b\n",
                    i - 1,
                    i / 2
                ));
            }
            s
        }),
        ("unterminated heredoc", |n| {
            format!("FROM alpine\nRUN <<A\n{}", "line\n".repeat(n / 5))
        }),
    ];
    for (name, generate) in cases {
        linear(name, generate);
    }
}

#[test]
fn hostile_dockerignore_and_words() {
    let t = Instant::now();
    let patterns = "a/**/b*/*?c/[a-z]*\n!x/**\n".repeat(1_000);
    let d = Dockerignore::parse(&patterns).expect("parse");
    let deep = "a/".repeat(200) + "bx/yc/q";
    assert!(d.is_excluded(&deep));
    let long = format!("{}\n{}*\n", "*a".repeat(MB / 2), "b".repeat(MB));
    let d = Dockerignore::parse(&long).expect("parse long");
    // A PATH_MAX-long path against megabyte patterns: no match, and no blowup.
    assert!(!d.is_excluded(&"a".repeat(1024)));
    assert!(!d.is_excluded(&"b".repeat(4096)));
    assert!(!d.is_excluded(&format!("{}b", "a".repeat(4095))));
    let lex = ShellLex::new('\\');
    // A billion-laughs chain fails cleanly at MAX_EXPANSION instead of exhausting memory.
    let a = "x".repeat(64 * 1024);
    let env = vec![("A".to_string(), a)];
    let word = "$A".repeat(1024);
    assert!(lex.process_word(&word, &env).is_err());
    let el = t.elapsed();
    println!("hostile dockerignore/words: {el:?}");
    assert!(el < LIMIT, "took {el:?}");
}

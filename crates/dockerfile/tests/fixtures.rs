//! Golden fixtures: every `tests/testdata/<case>/` holds a `Dockerfile` (or a `dockerignore`
//! plus `paths`) and the `expected` rendering. Optional `options` lines: `target=NAME`,
//! `build-arg=K=V`, `platform=os/arch`, `build-platform=os/arch`.
//! Run with `BLESS=1` to rewrite `expected` files after an intended change.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::{debug_plan, parse, parse_dockerfile, Dockerignore, PlanOptions};

fn render_dockerfile(dir: &Path, src: &[u8]) -> String {
    let text = String::from_utf8_lossy(src);
    let mut opts = PlanOptions {
        target_platform: "linux/amd64".into(),
        build_platform: "linux/amd64".into(),
        ..Default::default()
    };
    if let Ok(o) = fs::read_to_string(dir.join("options")) {
        for line in o.lines() {
            if let Some(t) = line.strip_prefix("target=") {
                opts.target = Some(t.into());
            } else if let Some(kv) = line.strip_prefix("build-arg=") {
                let (k, v) = kv.split_once('=').expect("build-arg=K=V");
                opts.build_args.push((k.into(), v.into()));
            } else if let Some(p) = line.strip_prefix("platform=") {
                opts.target_platform = p.into();
            } else if let Some(p) = line.strip_prefix("build-platform=") {
                opts.build_platform = p.into();
            }
        }
    }
    let mut out = String::new();
    match parse(src) {
        Ok(ast) => {
            out.push_str("== dump\n");
            out.push_str(&ast.dump());
        }
        Err(e) => {
            out.push_str("== parse error\n");
            out.push_str(&e.render("Dockerfile", &text));
            return out;
        }
    }
    let df = match parse_dockerfile(src) {
        Ok(df) => df,
        Err(e) => {
            out.push_str("== error\n");
            out.push_str(&e.render("Dockerfile", &text));
            return out;
        }
    };
    out.push_str("== typed\n");
    for a in &df.global_args {
        out.push_str(&format!(
            "{}-{} global {:?}\n",
            a.start_line, a.end_line, a.value
        ));
    }
    for s in &df.stages {
        out.push_str(&format!(
            "{}-{} stage {} name={:?} image={:?} platform={:?}\n",
            s.from.span.start_line,
            s.from.span.end_line,
            s.index,
            s.name,
            s.from.image,
            s.from.platform
        ));
        for i in &s.instructions {
            out.push_str(&format!(
                "{}-{}   {:?}\n",
                i.start_line, i.end_line, i.value
            ));
        }
    }
    match debug_plan(src, &opts) {
        Ok(p) => {
            out.push_str("== plan\n");
            out.push_str(&p);
        }
        Err(e) => {
            out.push_str("== plan error\n");
            out.push_str(&e.render("Dockerfile", &text));
        }
    }
    out
}

fn render_dockerignore(dir: &Path) -> String {
    let text = fs::read_to_string(dir.join("dockerignore")).expect("dockerignore");
    let paths = fs::read_to_string(dir.join("paths")).expect("paths");
    let d = match Dockerignore::parse(&text) {
        Ok(d) => d,
        Err(e) => return format!("== error\n{}", e.render(".dockerignore", &text)),
    };
    let mut out = String::from("== patterns\n");
    for p in d.patterns() {
        out.push_str(&format!(
            "{}: {}{}\n",
            p.line,
            if p.exclusion { "!" } else { "" },
            p.text
        ));
    }
    out.push_str("== paths\n");
    for p in paths.lines().filter(|l| !l.is_empty()) {
        let ex = d.is_excluded(p);
        out.push_str(&format!(
            "{} {p}{}\n",
            if ex { "excluded" } else { "included" },
            if ex && d.must_descend(p) {
                " (descend)"
            } else {
                ""
            }
        ));
    }
    out
}

#[test]
fn golden_fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata");
    let bless = std::env::var_os("BLESS").is_some();
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .expect("tests/testdata")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut failures = Vec::new();
    let mut blessed = 0;
    for dir in &dirs {
        let got = if dir.join("dockerignore").exists() {
            render_dockerignore(dir)
        } else {
            let src = fs::read(dir.join("Dockerfile")).expect("Dockerfile");
            render_dockerfile(dir, &src)
        };
        let exp_path = dir.join("expected");
        let want = fs::read_to_string(&exp_path).unwrap_or_default();
        if got != want {
            if bless {
                fs::write(&exp_path, &got).expect("write expected");
                blessed += 1;
            } else {
                failures.push(format!(
                    "{}:\n--- got\n{got}--- want\n{want}",
                    dir.display()
                ));
            }
        }
    }
    println!(
        "fixtures: {} cases, {} failed, {blessed} blessed",
        dirs.len(),
        failures.len()
    );
    assert!(dirs.len() >= 30, "fixture set went missing");
    assert!(
        failures.is_empty(),
        "{}\n(run with BLESS=1 to accept)",
        failures.join("\n")
    );
}

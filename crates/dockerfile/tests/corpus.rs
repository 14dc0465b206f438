//! Conformance with BuildKit's parser and shell-lexer test data
//! (/work/shared/corpus/buildkit-parser, see its README for the formats).

#[path = "common/minijson.rs"]
mod minijson;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_dockerfile::{parse, ShellLex};

fn corpus() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/buildkit-parser");
    if p.is_dir() {
        Some(p)
    } else {
        println!("skipped: corpus not found at {}", p.display());
        None
    }
}

fn env_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn parser_testfiles_dump_identically() {
    let Some(c) = corpus() else { return };
    let mut n = 0;
    let mut failures = Vec::new();
    let mut dirs: Vec<_> = fs::read_dir(c.join("parser/testfiles"))
        .expect("testfiles")
        .map(|e| e.expect("entry").path())
        .collect();
    dirs.sort();
    for d in dirs {
        let src = fs::read(d.join("Dockerfile")).expect("Dockerfile");
        let want = fs::read_to_string(d.join("result")).expect("result");
        n += 1;
        match parse(&src) {
            Ok(ast) => {
                let got = ast.dump();
                if got != want {
                    failures.push(format!("{}:\n--- got\n{got}--- want\n{want}", d.display()));
                }
            }
            Err(e) => failures.push(format!("{}: error {e}", d.display())),
        }
    }
    println!("parser/testfiles: {n} cases, {} failed", failures.len());
    assert_eq!(n, 33, "expected 33 cases");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn parser_negative_cases_rejected() {
    let Some(c) = corpus() else { return };
    let mut n = 0;
    for e in fs::read_dir(c.join("parser/testfiles-negative")).expect("negative") {
        let d = e.expect("entry").path();
        let src = fs::read(d.join("Dockerfile")).expect("Dockerfile");
        n += 1;
        assert!(parse(&src).is_err(), "{} accepted", d.display());
    }
    println!("parser/testfiles-negative: {n} cases rejected");
    assert_eq!(n, 4);
}

#[test]
fn testfile_line_numbers() {
    let Some(c) = corpus() else { return };
    let src = fs::read(c.join("parser/testfile-line/Dockerfile")).expect("Dockerfile");
    let exp = minijson::parse(
        &fs::read_to_string(c.join("derived/parser/testfile-line/expected.json")).expect("json"),
    );
    let ast = parse(&src).expect("parse");
    let got: Vec<(usize, usize)> = ast
        .nodes
        .iter()
        .map(|n| (n.start_line, n.end_line))
        .collect();
    let want: Vec<(usize, usize)> = exp
        .get("children_start_end")
        .arr()
        .expect("arr")
        .iter()
        .map(|p| {
            let a = p.arr().expect("pair");
            (a[0].num() as usize, a[1].num() as usize)
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(ast.start_line(), exp.get("root_start_line").num() as usize);
    assert_eq!(ast.end_line(), exp.get("root_end_line").num() as usize);
    println!("testfile-line: {} instructions match", got.len());
}

#[test]
fn heredoc_extraction() {
    let Some(c) = corpus() else { return };
    let dir = c.join("derived/parser/heredoc/extracts-heredoc");
    let src = fs::read(dir.join("Dockerfile")).expect("Dockerfile");
    let exp = minijson::parse(&fs::read_to_string(dir.join("expected.json")).expect("json"));
    let ast = parse(&src).expect("parse");
    let want = exp.get("heredocs").arr().expect("heredocs");
    assert_eq!(ast.nodes.len(), want.len() + 1);
    for (i, w) in want.iter().enumerate() {
        let got = &ast.nodes[i + 1].heredocs;
        let want_list = w.arr().unwrap_or(&[]);
        assert_eq!(got.len(), want_list.len(), "child {}", i + 1);
        for (g, w) in got.iter().zip(want_list) {
            assert_eq!(
                Some(g.name.as_str()),
                w.get("Name").str(),
                "child {}",
                i + 1
            );
            assert_eq!(
                Some(g.content.as_str()),
                w.get("Content").str(),
                "child {}",
                i + 1
            );
            assert_eq!(g.expand, w.get("Expand").bool(), "child {} expand", i + 1);
            assert_eq!(g.chomp, w.get("Chomp").bool(), "child {}", i + 1);
            assert_eq!(
                g.file_descriptor as f64,
                w.get("FileDescriptor").num(),
                "child {}",
                i + 1
            );
        }
    }
    println!(
        "heredoc/extracts-heredoc: {} instructions match",
        want.len()
    );

    let h = minijson::parse(
        &fs::read_to_string(c.join("derived/parser/heredoc/helpers.json")).expect("helpers"),
    );
    let mut n = 0;
    for w in h.get("ParseHeredoc_valid_name_EOF").arr().expect("valid") {
        let w = w.str().expect("str");
        let got = kiln_dockerfile::parser::parse_heredoc(w)
            .expect(w)
            .expect(w);
        assert_eq!(got.name, "EOF", "{w}");
        n += 1;
    }
    for w in h.get("ParseHeredoc_error").arr().expect("error") {
        let w = w.str().expect("str");
        assert!(kiln_dockerfile::parser::parse_heredoc(w).is_err(), "{w}");
        n += 1;
    }
    for w in h.get("ParseHeredoc_not_heredoc").arr().expect("not") {
        let w = w.str().expect("str");
        assert_eq!(kiln_dockerfile::parser::parse_heredoc(w), Ok(None), "{w}");
        n += 1;
    }
    for case in h.get("heredocsFromLine").arr().expect("fromline") {
        let line = case.get("line").str().expect("line");
        let want: Vec<&str> = case
            .get("names")
            .arr()
            .unwrap_or(&[])
            .iter()
            .map(|n| n.str().expect("name"))
            .collect();
        let got = kiln_dockerfile::parser::heredocs_from_line(line).expect(line);
        let got: Vec<&str> = got.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(got, want, "{line}");
        n += 1;
    }
    let df = h
        .get("json_form_has_no_heredocs_Dockerfile")
        .str()
        .expect("df");
    let ast = parse(df.as_bytes()).expect("parse json df");
    assert!(ast.nodes.iter().all(|n| n.heredocs.is_empty()));
    n += 1;
    println!("heredoc/helpers: {n} cases match");
}

#[test]
fn shell_env_var_test() {
    let Some(c) = corpus() else { return };
    let text = fs::read_to_string(c.join("shell/envVarTest")).expect("envVarTest");
    let env = env_of(&[
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]);
    let lex = ShellLex::new('\\');
    let (mut n, mut skipped) = (0, 0);
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').collect();
        assert_eq!(f.len(), 3, "bad line {line:?}");
        let (plat, input, want) = (f[0].trim(), f[1].trim(), f[2].trim());
        if plat == "W" {
            skipped += 1;
            continue;
        }
        n += 1;
        let got = lex.process_word(input, &env);
        let ok = match (&got, want) {
            (Err(_), "error") => true,
            (Ok(g), w) => g == w,
            _ => false,
        };
        if !ok {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    println!(
        "shell/envVarTest: {n} cases, {skipped} Windows-only skipped, {} failed",
        failures.len()
    );
    assert_eq!(n + skipped, 230);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shell_words_test() {
    let Some(c) = corpus() else { return };
    let text = fs::read_to_string(c.join("shell/wordsTest")).expect("wordsTest");
    let mut env: Vec<(String, String)> = Vec::new();
    let lex = ShellLex::new('\\');
    let mut n = 0;
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start();
            let (k, v) = rest.split_once('=').expect("name=value");
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let Some((input, want)) = line.split_once('|') else {
            continue;
        };
        let input = input.trim();
        let want = want.trim_start();
        n += 1;
        let got = lex.process_words(input, &env);
        let ok = match &got {
            Err(_) => want == "error",
            Ok(g) => *g == want.split(',').collect::<Vec<_>>(),
        };
        if !ok {
            failures.push(format!("{input:?}: got {got:?}, want {want:?}"));
        }
    }
    println!("shell/wordsTest: {n} cases, {} failed", failures.len());
    assert_eq!(n, 24);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shell_process_with_matches() {
    let Some(c) = corpus() else { return };
    let j = minijson::parse(
        &fs::read_to_string(c.join("derived/shell/processWithMatches.json")).expect("json"),
    );
    let lex = ShellLex::new('\\');
    let mut n = 0;
    let mut failures = Vec::new();
    for case in j.get("cases").arr().expect("cases") {
        n += 1;
        let input = case.get("input").str().expect("input");
        let env: Vec<(String, String)> = case
            .get("envs")
            .obj()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let got = lex.process_word_with_matches(input, &env);
        let ok = if case.get("expected_error").bool() {
            got.is_err()
        } else {
            match &got {
                Err(_) => false,
                Ok(e) => {
                    let set = |k: &str| -> Option<BTreeSet<String>> {
                        case.get(k).arr().map(|a| {
                            a.iter()
                                .map(|s| s.str().unwrap_or("").to_string())
                                .collect()
                        })
                    };
                    Some(e.value.as_str()) == case.get("expected").str()
                        && set("matched").is_none_or(|m| m == e.matched)
                        && set("unmatched").is_none_or(|m| m == e.unmatched)
                }
            }
        };
        if !ok {
            failures.push(format!("{input:?}: got {got:?}"));
        }
    }
    println!(
        "shell/processWithMatches: {n} cases, {} failed",
        failures.len()
    );
    assert_eq!(n, 50);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Kaniko's integration Dockerfiles are all valid for `docker build`: every one must parse
/// and plan (with the build args its test passes where a FROM needs one).
#[test]
fn kaniko_integration_dockerfiles_parse_and_plan() {
    let root =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus/kaniko-dockerfiles");
    if !root.is_dir() {
        println!("skipped: corpus not found at {}", root.display());
        return;
    }
    let mut stack = vec![root];
    let mut files = Vec::new();
    let mut ignores = Vec::new();
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let p = e.expect("entry").path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".dockerignore") {
                ignores.push(p);
            } else if name.starts_with("Dockerfile") {
                files.push(p);
            }
        }
    }
    files.sort();
    let opts = kiln_dockerfile::PlanOptions {
        build_args: vec![("image".into(), "scratch".into())],
        target_platform: "linux/amd64".into(),
        build_platform: "linux/amd64".into(),
        ..Default::default()
    };
    let mut failures = Vec::new();
    for f in &files {
        let src = fs::read(f).expect("read");
        let r = kiln_dockerfile::parse_dockerfile(&src)
            .and_then(|df| kiln_dockerfile::plan(&df, &opts).map(|_| ()));
        if let Err(e) = r {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    for f in &ignores {
        let text = fs::read_to_string(f).expect("read");
        if let Err(e) = kiln_dockerfile::Dockerignore::parse(&text) {
            failures.push(format!("{}: {e}", f.display()));
        }
    }
    println!(
        "kaniko-dockerfiles: {} Dockerfiles and {} .dockerignore files, {} failed",
        files.len(),
        ignores.len(),
        failures.len()
    );
    assert!(files.len() > 50, "corpus shrank: {}", files.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

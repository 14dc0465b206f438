//! Any bytes through every Dockerfile entry point: no panic, no hang, no unbounded memory.
#![no_main]

use kiln_dockerfile::{debug_plan, parse, parse_dockerfile, EmptyEnv, PlanOptions, ShellLex};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ast) = parse(data) {
        let dump = ast.dump();
        // The dump is one line per instruction.
        assert_eq!(dump.lines().count(), ast.nodes.len());
    }
    if let Err(e) = parse_dockerfile(data) {
        let _ = e.render("Dockerfile", &String::from_utf8_lossy(data));
    }
    let opts = PlanOptions {
        target: None,
        build_args: vec![("A".into(), "1".into()), ("HTTP_PROXY".into(), "p".into())],
        target_platform: "linux/arm64/v8".into(),
        build_platform: "linux/amd64".into(),
    };
    let _ = debug_plan(data, &opts);
    let text = String::from_utf8_lossy(data);
    let lex = ShellLex::new('\\');
    let _ = lex.process_words(&text, &EmptyEnv);
    let _ = ShellLex::new('`').process_word_with_matches(&text, &vec![("A".to_string(), "x".to_string())]);
});

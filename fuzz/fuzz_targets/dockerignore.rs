//! `.dockerignore` text plus a path: no panic, and `must_descend` is true for anything
//! not excluded.
#![no_main]

use kiln_dockerfile::Dockerignore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (patterns, path) = text.split_once('\0').unwrap_or((&text, "a/b/c"));
    if let Ok(d) = Dockerignore::parse(patterns) {
        let path: String = path.chars().take(4096).collect();
        let excluded = d.is_excluded(&path);
        assert!(excluded || d.must_descend(&path));
    }
});

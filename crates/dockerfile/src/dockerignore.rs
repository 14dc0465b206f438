//! `.dockerignore` with Docker's semantics (moby/patternmatcher and its `ignorefile` reader,
//! as used by BuildKit's fsutil): one pattern per line, `#` comments at column 1, patterns
//! cleaned like Go's `filepath.Clean` with a leading `/` dropped, `!` exceptions where the
//! last matching pattern wins, `*` and `?` not crossing `/`, `**` crossing any number of
//! directories, `[a-z]`/`[^a]` classes and `\` escapes; a pattern that matches a parent
//! directory matches everything under it.

use crate::error::{Error, ErrorKind};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(char),
    /// `?`: one char but `/`.
    Any,
    /// `*`: any run without `/`.
    Star,
    /// `**/` (or `**` followed by more): `(.*/)?`.
    AnyDirs,
    /// trailing `**`: `.*`.
    AnyTail,
    /// `[...]`.
    Class {
        neg: bool,
        items: Vec<(char, char)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Exact,
    /// `foo/**`: prefix match on the text before `**`.
    Prefix(String),
    /// `**/foo`: suffix match on the text after `**`.
    Suffix(String),
    Glob(Vec<Tok>),
}

/// One cleaned pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnorePattern {
    /// The cleaned pattern text, without `!`.
    pub text: String,
    /// `!` exception (re-includes).
    pub exclusion: bool,
    /// 1-based line in the file.
    pub line: usize,
    kind: Kind,
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerignore {
    patterns: Vec<IgnorePattern>,
}

/// Go's `path.Clean` for slash-separated paths.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

impl Dockerignore {
    /// Parses the file's text.
    pub fn parse(text: &str) -> Result<Dockerignore, Error> {
        let mut patterns = Vec::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            // A comment is a `#` in column 1 (checked before trimming, as ignorefile does).
            if raw.starts_with('#') {
                continue;
            }
            let mut p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let exclusion = p.starts_with('!');
            if exclusion {
                p = p[1..].trim();
            }
            let mut text = String::new();
            if !p.is_empty() {
                text = clean_path(p);
                if text.len() > 1 && text.starts_with('/') {
                    text.remove(0);
                }
            }
            // patternmatcher.New: a bare `!` is an error, not "exclude nothing".
            if exclusion && text.is_empty() {
                return Err(Error::new(ErrorKind::BadIgnorePattern {
                    pattern: raw.to_string(),
                    reason: "illegal exclusion pattern: \"!\"".into(),
                })
                .at(line, 1));
            }
            let kind = compile(&text).map_err(|reason| {
                Error::new(ErrorKind::BadIgnorePattern {
                    pattern: raw.to_string(),
                    reason,
                })
                .at(line, 1)
            })?;
            patterns.push(IgnorePattern {
                text,
                exclusion,
                line,
                kind,
            });
        }
        Ok(Dockerignore { patterns })
    }

    /// The patterns in file order.
    pub fn patterns(&self) -> &[IgnorePattern] {
        &self.patterns
    }

    /// Whether there are `!` exceptions.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `rel_path` (relative to the context, `/`-separated) is excluded from it.
    /// The last pattern that matches the path or one of its parents decides.
    pub fn is_excluded(&self, rel_path: &str) -> bool {
        let file = clean_path(rel_path.trim_start_matches('/'));
        // Every proper parent directory, e.g. `a`, `a/b` for `a/b/c`.
        let parents: Vec<&str> = file.match_indices('/').map(|(i, _)| &file[..i]).collect();
        let mut matched = false;
        for p in &self.patterns {
            // An exception only matters once matched; an exclusion only before.
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&file);
            if !m {
                m = parents.iter().any(|d| p.matches(d));
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// For a walker: whether it must still descend into directory `rel_dir` although
    /// [`is_excluded`](Self::is_excluded) says it is excluded, because an exception could
    /// re-include something under it (BuildKit fsutil's rule: any wildcard exception, or an
    /// exception whose text starts with `rel_dir/`). Non-excluded dirs always return true.
    pub fn must_descend(&self, rel_dir: &str) -> bool {
        if !self.is_excluded(rel_dir) {
            return true;
        }
        let dir = clean_path(rel_dir.trim_start_matches('/'));
        let dir_slash = format!("{dir}/");
        self.patterns.iter().filter(|p| p.exclusion).any(|p| {
            p.text.contains(['*', '?', '[', '\\']) || format!("{}/", p.text).starts_with(&dir_slash)
        })
    }
}

impl IgnorePattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(p) => path.starts_with(p.as_str()),
            Kind::Suffix(s) => {
                path.ends_with(s.as_str()) || s.strip_prefix('/').is_some_and(|rest| path == rest)
            }
            Kind::Glob(toks) => glob_match(toks, path),
        }
    }
}

fn compile(pattern: &str) -> Result<Kind, String> {
    #[derive(PartialEq)]
    enum M {
        Exact,
        Prefix,
        Suffix,
        Re,
    }
    let chars: Vec<char> = pattern.chars().collect();
    let mut toks = Vec::new();
    let mut mt = M::Exact;
    let mut i = 0;
    let mut step = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i >= chars.len() {
                    if mt == M::Exact {
                        mt = M::Prefix;
                    } else {
                        toks.push(Tok::AnyTail);
                        mt = M::Re;
                    }
                } else {
                    toks.push(Tok::AnyDirs);
                    mt = M::Re;
                }
                if step == 0 {
                    mt = M::Suffix;
                }
            }
            '*' => {
                // `a***b` = `a*b` (never `**` here, handled above): keep the NFA small.
                if toks.last() != Some(&Tok::Star) {
                    toks.push(Tok::Star);
                }
                mt = M::Re;
            }
            '?' => {
                toks.push(Tok::Any);
                mt = M::Re;
            }
            '\\' => {
                if i < chars.len() {
                    toks.push(Tok::Lit(chars[i]));
                    i += 1;
                    mt = M::Re;
                } else {
                    toks.push(Tok::Lit('\\'));
                }
            }
            '[' => {
                // A bracket expression as Go's regexp reads it.
                let mut neg = false;
                if chars.get(i) == Some(&'^') {
                    neg = true;
                    i += 1;
                }
                let mut items = Vec::new();
                let mut first = true;
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("missing closing ]".into());
                    };
                    i += 1;
                    if c == ']' {
                        // Go's filepath.Match (used by patternmatcher to vet patterns)
                        // rejects an empty class `[]`.
                        if first {
                            return Err("empty character class".into());
                        }
                        break;
                    }
                    first = false;
                    let lo = if c == '\\' {
                        let Some(&e) = chars.get(i) else {
                            return Err("trailing escape in class".into());
                        };
                        i += 1;
                        e
                    } else {
                        c
                    };
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&n| n != ']') {
                        let mut hi = chars[i + 1];
                        i += 2;
                        if hi == '\\' {
                            let Some(&e) = chars.get(i) else {
                                return Err("trailing escape in class".into());
                            };
                            i += 1;
                            hi = e;
                        }
                        if hi < lo {
                            return Err(format!("invalid character class range {lo}-{hi}"));
                        }
                        items.push((lo, hi));
                    } else {
                        items.push((lo, lo));
                    }
                }
                toks.push(Tok::Class { neg, items });
                mt = M::Re;
            }
            c => toks.push(Tok::Lit(c)),
        }
        step += 1;
    }
    Ok(match mt {
        M::Exact => Kind::Exact,
        M::Prefix => Kind::Prefix(pattern[..pattern.len() - 2].to_string()),
        M::Suffix => Kind::Suffix(pattern[2..].to_string()),
        M::Re => Kind::Glob(toks),
    })
}

/// Full-string match by NFA simulation over a sparse state set: O(len(path) * active
/// states), with no per-character allocation (patterns may be long, paths are short).
/// State `2*i` = at token `i`; `2*i + 1` = inside the `.*` of an `AnyDirs` token `i`.
fn glob_match(toks: &[Tok], path: &str) -> bool {
    let n = toks.len();
    let mut mark = vec![0u32; 2 * n + 2];
    let mut generation = 1u32;
    let mut cur: Vec<usize> = Vec::new();
    let mut next: Vec<usize> = Vec::new();
    // Adds a state and, for an "at token" state, the ε-moves past `*`/`**` tokens.
    let add = |id: usize, set: &mut Vec<usize>, mark: &mut Vec<u32>, generation: u32| {
        let mut id = id;
        loop {
            if mark[id] == generation {
                return;
            }
            mark[id] = generation;
            set.push(id);
            let i = id / 2;
            if id.is_multiple_of(2)
                && i < n
                && matches!(toks[i], Tok::Star | Tok::AnyDirs | Tok::AnyTail)
            {
                id = 2 * (i + 1);
            } else {
                return;
            }
        }
    };
    add(0, &mut cur, &mut mark, generation);
    for c in path.chars() {
        generation += 1;
        next.clear();
        for &id in &cur {
            let i = id / 2;
            if !id.is_multiple_of(2) {
                add(id, &mut next, &mut mark, generation);
                if c == '/' {
                    add(2 * (i + 1), &mut next, &mut mark, generation);
                }
                continue;
            }
            if i == n {
                continue;
            }
            match &toks[i] {
                Tok::Lit(l) if *l == c => add(2 * (i + 1), &mut next, &mut mark, generation),
                Tok::Any if c != '/' => add(2 * (i + 1), &mut next, &mut mark, generation),
                Tok::Star if c != '/' => add(2 * i, &mut next, &mut mark, generation),
                Tok::AnyTail => add(2 * i, &mut next, &mut mark, generation),
                Tok::AnyDirs => {
                    add(2 * i + 1, &mut next, &mut mark, generation);
                    if c == '/' {
                        add(2 * (i + 1), &mut next, &mut mark, generation);
                    }
                }
                Tok::Class { neg, items } => {
                    let hit = items.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                    if hit != *neg {
                        add(2 * (i + 1), &mut next, &mut mark, generation);
                    }
                }
                _ => {}
            }
        }
        std::mem::swap(&mut cur, &mut next);
        if cur.is_empty() {
            return false;
        }
    }
    cur.contains(&(2 * n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semantics() {
        let d = Dockerignore::parse(
            "# comment\n*.md\n!README.md\n/build/\n**/*.tmp\ndocs/**\nnode_modules\n!node_modules/keep\n",
        )
        .expect("parse");
        assert!(d.is_excluded("a.md"));
        assert!(!d.is_excluded("README.md"));
        assert!(!d.is_excluded("sub/a.md"), "* does not cross /");
        assert!(d.is_excluded("build"));
        assert!(d.is_excluded("build/x/y"));
        assert!(d.is_excluded("x.tmp"));
        assert!(d.is_excluded("a/b/x.tmp"));
        assert!(d.is_excluded("docs/a/b"));
        assert!(!d.is_excluded("docs"));
        assert!(d.is_excluded("node_modules/x"));
        assert!(!d.is_excluded("node_modules/keep"));
        assert!(d.must_descend("node_modules"));
        assert!(!d.must_descend("build"));
        assert!(d.must_descend("src"));
        assert!(!d.is_excluded("# comment"));
        assert_eq!(clean_path("a/../../b/./c/"), "../b/c");
        assert!(Dockerignore::parse("[a-").is_err());
        assert!(Dockerignore::parse("a\n!\n").is_err());
        assert!(Dockerignore::parse("[]a]").is_err());
    }
}

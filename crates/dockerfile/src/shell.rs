//! Word expansion as BuildKit's shell lexer does it (`frontend/dockerfile/shell/lex.go`):
//! quotes, the escape character, `$V`, `${V}` and the modifiers
//! `- :- + :+ ? :? # ## % %% / //`. It is not a shell: no command substitution,
//! no globbing, no arithmetic. Behaviour is pinned by BuildKit's `envVarTest`, `wordsTest`
//! and `TestProcessWithMatches` tables (see `tests/corpus.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{Error, ErrorKind};

/// Nesting bound for `${a:-${b:-...}}`. BuildKit recurses without bound; we refuse beyond
/// this so hostile input cannot exhaust the stack (no real Dockerfile nests more than a few).
pub const MAX_NESTING: usize = 64;

/// Bound on the size of one expanded word. `ENV B=$A$A$A...` chains grow exponentially
/// (a "billion laughs"); past this size expansion fails instead of exhausting memory.
pub const MAX_EXPANSION: usize = 16 * 1024 * 1024;

/// Variable lookup for expansion.
pub trait Env {
    /// The value of `name`, or `None` when unset (set-but-empty is `Some("")`).
    fn get(&self, name: &str) -> Option<String>;
}

impl Env for [(String, String)] {
    fn get(&self, name: &str) -> Option<String> {
        // Later entries win, as when ENV redefines a variable.
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

impl Env for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<String> {
        Env::get(self.as_slice(), name)
    }
}

impl Env for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        HashMap::get(self, name).cloned()
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// An environment with nothing set.
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn get(&self, _name: &str) -> Option<String> {
        None
    }
}

/// The shell-word lexer. Cheap to copy; configure with the `with_*` methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShellLex {
    escape: char,
    raw_quotes: bool,
    raw_escapes: bool,
    skip_unset_env: bool,
    skip_process_quotes: bool,
}

/// Result of [`ShellLex::process_word_with_matches`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word.
    pub value: String,
    /// Variables referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables referenced and unset.
    pub unmatched: BTreeSet<String>,
}

impl ShellLex {
    /// A lexer with escape character `escape` (`\` or `` ` ``).
    pub fn new(escape: char) -> Self {
        ShellLex {
            escape,
            raw_quotes: false,
            raw_escapes: false,
            skip_unset_env: false,
            skip_process_quotes: false,
        }
    }

    /// The escape character.
    pub fn escape(&self) -> char {
        self.escape
    }

    /// Keep quote characters in the output (they still group words).
    pub fn with_raw_quotes(mut self, on: bool) -> Self {
        self.raw_quotes = on;
        self
    }

    /// Keep escape characters in the output.
    pub fn with_raw_escapes(mut self, on: bool) -> Self {
        self.raw_escapes = on;
        self
    }

    /// Leave references to unset variables as written (`$X`, `${X}`, `${X:-y}`).
    pub fn with_skip_unset_env(mut self, on: bool) -> Self {
        self.skip_unset_env = on;
        self
    }

    /// Treat quotes as ordinary characters.
    pub fn with_skip_process_quotes(mut self, on: bool) -> Self {
        self.skip_process_quotes = on;
        self
    }

    /// Expands `word` as one word (BuildKit `ProcessWord`).
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, Error> {
        self.run(word, env, false, false).map(|r| r.0)
    }

    /// Splits `word` into words on unquoted whitespace and expands each (`ProcessWords`).
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, Error> {
        self.run(word, env, false, true).map(|r| r.1)
    }

    /// Like [`process_word`](Self::process_word) and reports which variables were used.
    pub fn process_word_with_matches(&self, word: &str, env: &dyn Env) -> Result<Expansion, Error> {
        let (value, _, matched, unmatched) = self.run(word, env, true, false)?;
        Ok(Expansion {
            value,
            matched,
            unmatched,
        })
    }

    fn run(
        &self,
        word: &str,
        env: &dyn Env,
        track: bool,
        want_words: bool,
    ) -> Result<RunOutput, Error> {
        let mut sw = ShellWord {
            want_words,
            lex: *self,
            chars: word.chars().collect(),
            pos: 0,
            env,
            track,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            depth: 0,
        };
        match sw.process_stop_on(&[], false) {
            Ok((s, words, _)) => Ok((s, words, sw.matched, sw.unmatched)),
            Err(kind) => Err(Error::new(ErrorKind::Expand {
                word: word.to_string(),
                source: Box::new(kind),
            })),
        }
    }
}

type RunOutput = (String, Vec<String>, BTreeSet<String>, BTreeSet<String>);

/// Go's `unicode.IsSpace` (same set as Unicode White_Space, which Rust implements).
fn is_space(c: char) -> bool {
    c.is_whitespace()
}

#[derive(Default)]
struct Words {
    enabled: bool,
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, c: char) {
        if !self.enabled {
            return;
        }
        if is_space(c) {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        if !self.enabled {
            return;
        }
        self.word.push(c);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        for c in s.chars() {
            self.add_char(c);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        if !self.enabled {
            return;
        }
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct ShellWord<'a> {
    /// Word splitting is only needed by `process_words`; skipping it halves the work.
    want_words: bool,
    lex: ShellLex,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    track: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    depth: usize,
}

type R<T> = Result<T, ErrorKind>;

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        let v = self.env.get(name);
        if self.track {
            if v.is_some() {
                self.matched.insert(name.to_string());
            } else {
                self.unmatched.insert(name.to_string());
            }
        }
        v
    }

    /// Processes until one of `stops` (consumed, returned) or the end (`stops` empty).
    /// `raw_escapes` keeps escape characters (used for patterns, as BuildKit does).
    fn process_stop_on(
        &mut self,
        stops: &[char],
        raw_escapes: bool,
    ) -> R<(String, Vec<String>, Option<char>)> {
        let mut result = String::new();
        let mut words = Words {
            enabled: self.want_words,
            ..Words::default()
        };
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                self.pos += 1;
                return Ok((result, words.finish(), Some(c)));
            }
            if c == '$' {
                let tmp = self.process_dollar()?;
                if result.len() + tmp.len() > MAX_EXPANSION {
                    return Err(ErrorKind::ExpansionTooLarge {
                        limit: MAX_EXPANSION,
                    });
                }
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if !self.lex.skip_process_quotes && (c == '\'' || c == '"') {
                let tmp = if c == '\'' {
                    self.process_single_quote()?
                } else {
                    self.process_double_quote()?
                };
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                self.pos += 1;
                if c == self.lex.escape {
                    if self.lex.raw_escapes || raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    // The escape escapes the next char; at the end of the word it vanishes.
                    let Some(n) = self.next() else { break };
                    words.add_raw_char(n);
                    result.push(n);
                } else {
                    words.add_char(c);
                    result.push(c);
                }
            }
        }
        if let Some(&s) = stops.first() {
            return Err(ErrorKind::UnterminatedQuote {
                what: s.to_string(),
            });
        }
        Ok((result, words.finish(), None))
    }

    fn process_single_quote(&mut self) -> R<String> {
        // sh(1): single quotes preserve every character; a ' cannot be escaped inside.
        let mut result = String::new();
        let q = self.next();
        if self.lex.raw_quotes {
            result.extend(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(ErrorKind::UnterminatedQuote {
                        what: "single-quote".into(),
                    })
                }
                Some('\'') => {
                    if self.lex.raw_quotes {
                        result.push('\'');
                    }
                    return Ok(result);
                }
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> R<String> {
        // sh(1): inside double quotes only $ and the escape (before $ " or itself) are special.
        let mut result = String::new();
        let q = self.next();
        if self.lex.raw_quotes {
            result.extend(q);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(ErrorKind::UnterminatedQuote {
                        what: "double-quote".into(),
                    })
                }
                Some('"') => {
                    self.pos += 1;
                    if self.lex.raw_quotes {
                        result.push('"');
                    }
                    return Ok(result);
                }
                Some('$') => {
                    let v = self.process_dollar()?;
                    if result.len() + v.len() > MAX_EXPANSION {
                        return Err(ErrorKind::ExpansionTooLarge {
                            limit: MAX_EXPANSION,
                        });
                    }
                    result.push_str(&v);
                }
                Some(c) => {
                    self.pos += 1;
                    if c == self.lex.escape {
                        match self.peek() {
                            None => {
                                if self.lex.raw_escapes {
                                    result.push(c);
                                }
                                continue;
                            }
                            Some(n) if n == '"' || n == '$' || n == self.lex.escape => {
                                if self.lex.raw_escapes {
                                    result.push(c);
                                }
                                self.pos += 1;
                                result.push(n);
                                continue;
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(c);
                }
            }
        }
    }

    fn process_name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(|d| d.is_ascii_digit()) {
                    self.pos += 1;
                    name.push(d);
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                name.push(c);
                return name;
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            self.pos += 1;
            name.push(c);
        }
        name
    }

    fn process_dollar(&mut self) -> R<String> {
        if self.depth >= MAX_NESTING {
            return Err(ErrorKind::NestingTooDeep { limit: MAX_NESTING });
        }
        self.depth += 1;
        let r = self.process_dollar_inner();
        self.depth -= 1;
        r
    }

    fn process_dollar_inner(&mut self) -> R<String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.process_name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err(ErrorKind::MissingBrace),
            Some('{' | '}' | ':') => return Err(ErrorKind::BadSubstitution),
            _ => {}
        }
        let name = self.process_name();
        let Some(mut ch) = self.next() else {
            return Err(ErrorKind::MissingBrace);
        };
        let mut chs = ch.to_string();
        let mut null_is_unset = false;
        match ch {
            '}' => Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.lex.skip_unset_env => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => {
                if ch == ':' {
                    null_is_unset = true;
                    match self.next() {
                        Some(c) => {
                            ch = c;
                            chs.push(c);
                        }
                        None => return Err(ErrorKind::MissingBrace),
                    }
                }
                let raw = ch == '#' || ch == '%';
                if null_is_unset && raw {
                    return Err(ErrorKind::UnsupportedModifier { modifier: chs });
                }
                let word = match self.process_stop_on(&['}'], raw) {
                    Ok((w, _, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    return Ok(format!("${{{name}{chs}{word}}}"));
                }
                let empty = value
                    .as_deref()
                    .is_none_or(|v| null_is_unset && v.is_empty());
                match ch {
                    '-' => Ok(if empty {
                        word
                    } else {
                        value.unwrap_or_default()
                    }),
                    '+' => Ok(if empty { String::new() } else { word }),
                    '?' => match value {
                        None => Err(ErrorKind::RequiredVariable {
                            name,
                            message: if word.is_empty() {
                                "is not allowed to be unset".into()
                            } else {
                                word
                            },
                        }),
                        Some(v) if null_is_unset && v.is_empty() => {
                            Err(ErrorKind::RequiredVariable {
                                name,
                                message: if word.is_empty() {
                                    "is not allowed to be empty".into()
                                } else {
                                    word
                                },
                            })
                        }
                        Some(v) => Ok(v),
                    },
                    '#' | '%' => {
                        let value = value.unwrap_or_default();
                        let (greedy, pat) = match word.strip_prefix(ch) {
                            Some(rest) => (true, rest.to_string()),
                            None => (false, word),
                        };
                        let pattern = compile_pattern(&pat)?;
                        check_budget(&pat, &pattern, &value)?;
                        Ok(if ch == '#' {
                            trim_prefix(&pattern, &value, greedy)
                        } else {
                            trim_suffix(&pattern, &value, greedy)
                        })
                    }
                    _ => Err(ErrorKind::UnsupportedModifier { modifier: chs }),
                }
            }
            '/' => {
                let replace_all = self.peek() == Some('/');
                if replace_all {
                    self.pos += 1;
                }
                let (pat, stop) = match self.process_stop_on(&['/', '}'], true) {
                    Ok((w, _, s)) => (w, s),
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                if stop != Some('/') {
                    // `${V/p}`: BuildKit requires the replacement part.
                    return Err(ErrorKind::BadSubstitution);
                }
                let repl = match self.process_stop_on(&['}'], true) {
                    Ok((w, _, _)) => w,
                    Err(e) => {
                        if self.peek().is_none() {
                            return Err(ErrorKind::MissingBrace);
                        }
                        return Err(e);
                    }
                };
                let value = self.get_env(&name);
                if self.lex.skip_unset_env && value.is_none() {
                    let slash = if replace_all { "//" } else { "/" };
                    return Ok(format!("${{{name}{slash}{pat}/{repl}}}"));
                }
                let value = value.unwrap_or_default();
                let pattern = compile_pattern(&pat)?;
                check_budget(&pat, &pattern, &value)?;
                Ok(replace(&pattern, &value, &repl, replace_all))
            }
            _ => Err(ErrorKind::UnsupportedModifier { modifier: chs }),
        }
    }
}

/// One element of a shell pattern. BuildKit turns `*` into `.*`/`.*?`, `?` into `.`, and
/// quotes everything else (brackets are literal); Go's `.` does not match `\n`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Pat {
    Star,
    Any,
    Lit(char),
}

fn compile_pattern(p: &str) -> R<Vec<Pat>> {
    let mut out = Vec::new();
    let mut it = p.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '*' => out.push(Pat::Star),
            '?' => out.push(Pat::Any),
            '\\' => {
                // `\}` and `\/` are escapes of the ${} syntax itself, not of the pattern.
                match it.peek() {
                    Some('}' | '/') => continue,
                    Some(&n @ ('*' | '?' | '\\')) => {
                        it.next();
                        out.push(Pat::Lit(n));
                    }
                    other => {
                        return Err(ErrorKind::InvalidPattern {
                            pattern: p.to_string(),
                            reason: match other {
                                Some(o) => format!("invalid escape '\\{o}'"),
                                None => "trailing escape".into(),
                            },
                        })
                    }
                }
            }
            c => out.push(Pat::Lit(c)),
        }
    }
    Ok(out)
}

/// Upper bound on value length × pattern length for `#`, `%` and `/` matching, whose cost
/// is proportional to that product: hostile input must not make expansion quadratic.
pub const MATCH_BUDGET: usize = 16 * 1024 * 1024;

fn check_budget(src: &str, pat: &[Pat], value: &str) -> R<()> {
    if value.len().saturating_mul(pat.len() + 1) > MATCH_BUDGET {
        return Err(ErrorKind::InvalidPattern {
            pattern: src.chars().take(64).collect(),
            reason: format!(
                "value ({} bytes) times pattern ({} elements) exceeds the matching budget",
                value.len(),
                pat.len()
            ),
        });
    }
    Ok(())
}

/// States reachable after the pattern prefix `pat[..i]` is consumed, closed over `*` (empty).
fn closure(pat: &[Pat], set: &mut [bool]) {
    for i in 0..pat.len() {
        if set[i] && pat[i] == Pat::Star {
            set[i + 1] = true;
        }
    }
}

fn step(pat: &[Pat], cur: &[bool], c: char, next: &mut [bool]) {
    next.iter_mut().for_each(|b| *b = false);
    for i in 0..pat.len() {
        if !cur[i] {
            continue;
        }
        match pat[i] {
            Pat::Star => {
                if c != '\n' {
                    next[i] = true;
                }
            }
            Pat::Any => {
                if c != '\n' {
                    next[i + 1] = true;
                }
            }
            Pat::Lit(l) => {
                if l == c {
                    next[i + 1] = true;
                }
            }
        }
    }
    closure(pat, next);
}

/// Lengths (in chars) of the prefixes of `s` that `pat` matches entirely: returns the
/// shortest or longest. O(len(s) * len(pat)).
fn anchored_match(pat: &[Pat], s: &[char], longest: bool) -> Option<usize> {
    let n = pat.len();
    let mut cur = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    cur[0] = true;
    closure(pat, &mut cur);
    let mut best = None;
    if cur[n] {
        best = Some(0);
        if !longest {
            return best;
        }
    }
    for (i, &c) in s.iter().enumerate() {
        step(pat, &cur, c, &mut next);
        std::mem::swap(&mut cur, &mut next);
        if cur[n] {
            best = Some(i + 1);
            if !longest {
                return best;
            }
        }
        if !cur.iter().any(|&b| b) {
            break;
        }
    }
    best
}

fn trim_prefix(pat: &[Pat], value: &str, greedy: bool) -> String {
    let chars: Vec<char> = value.chars().collect();
    match anchored_match(pat, &chars, greedy) {
        Some(k) => chars[k..].iter().collect(),
        None => value.to_string(),
    }
}

fn trim_suffix(pat: &[Pat], value: &str, greedy: bool) -> String {
    // As BuildKit does: reverse pattern and value, then trim a prefix.
    let rpat: Vec<Pat> = pat.iter().rev().copied().collect();
    let rchars: Vec<char> = value.chars().rev().collect();
    match anchored_match(&rpat, &rchars, greedy) {
        Some(k) => {
            let keep = rchars.len() - k;
            value.chars().take(keep).collect()
        }
        None => value.to_string(),
    }
}

/// Leftmost-longest match of `pat` in `s[from..]`: (start, end) in chars. O(len * pat).
fn find(pat: &[Pat], s: &[char], from: usize) -> Option<(usize, usize)> {
    let n = pat.len();
    // For each pattern state, the earliest start of a thread in it (None = inactive).
    let mut cur: Vec<Option<usize>> = vec![None; n + 1];
    let mut best: Option<(usize, usize)> = None;
    let close = |set: &mut Vec<Option<usize>>| {
        for i in 0..n {
            if let (Some(st), Pat::Star) = (set[i], pat[i]) {
                set[i + 1] = Some(set[i + 1].map_or(st, |o| o.min(st)));
            }
        }
    };
    for pos in from..=s.len() {
        if best.is_none() && cur[0].is_none() {
            cur[0] = Some(pos);
        } else if best.is_none() {
            cur[0] = Some(cur[0].map_or(pos, |o| o.min(pos)));
        }
        close(&mut cur);
        if let Some(st) = cur[n] {
            match best {
                None => best = Some((st, pos)),
                Some((bs, _)) if st <= bs => best = Some((st, pos)),
                _ => {}
            }
        }
        if let Some((bs, _)) = best {
            // Only threads that started at the match start may extend it.
            for x in cur.iter_mut() {
                if x.is_some_and(|st| st != bs) {
                    *x = None;
                }
            }
        }
        if pos == s.len() {
            break;
        }
        let c = s[pos];
        let mut next: Vec<Option<usize>> = vec![None; n + 1];
        for i in 0..n {
            let Some(st) = cur[i] else { continue };
            let target = match pat[i] {
                Pat::Star if c != '\n' => Some(i),
                Pat::Any if c != '\n' => Some(i + 1),
                Pat::Lit(l) if l == c => Some(i + 1),
                _ => None,
            };
            if let Some(t) = target {
                next[t] = Some(next[t].map_or(st, |o| o.min(st)));
            }
        }
        cur = next;
        if best.is_some() && cur.iter().all(|x| x.is_none()) {
            break;
        }
    }
    best
}

fn replace(pat: &[Pat], value: &str, repl: &str, all: bool) -> String {
    let s: Vec<char> = value.chars().collect();
    let mut out = String::new();
    let mut pos = 0;
    let mut last_match_end: Option<usize> = None;
    while pos <= s.len() {
        let Some((a, b)) = find(pat, &s, pos) else {
            break;
        };
        // Go's ReplaceAll ignores an empty match right after the previous match.
        if a == b && last_match_end == Some(a) {
            if a < s.len() {
                out.push(s[a]);
            }
            pos = a + 1;
            continue;
        }
        out.extend(&s[pos..a]);
        out.push_str(repl);
        last_match_end = Some(b);
        if a == b {
            if a < s.len() {
                out.push(s[a]);
            }
            pos = a + 1;
        } else {
            pos = b;
        }
        if !all {
            break;
        }
    }
    if pos <= s.len() {
        out.extend(&s[pos..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replace_forms() {
        let l = ShellLex::new('\\');
        let e = env(&[("F", "aXbXc"), ("E", "")]);
        assert_eq!(l.process_word("${F/X/-}", &e).unwrap(), "a-bXc");
        assert_eq!(l.process_word("${F//X/-}", &e).unwrap(), "a-b-c");
        assert_eq!(l.process_word("${F//*X/-}", &e).unwrap(), "-c");
        assert_eq!(l.process_word("${F///-}", &e).unwrap(), "-a-X-b-X-c-");
        assert_eq!(l.process_word("${F%X*}", &e).unwrap(), "aXb");
        assert_eq!(l.process_word("${F%%X*}", &e).unwrap(), "a");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let l = ShellLex::new('\\');
        let w = "${a:-".repeat(10_000) + &"}".repeat(10_000);
        assert!(l.process_word(&w, &EmptyEnv).is_err());
    }
}

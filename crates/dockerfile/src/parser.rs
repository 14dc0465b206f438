//! The line-level parser: physical lines → instruction nodes, as BuildKit's
//! `frontend/dockerfile/parser/parser.go` and `line_parsers.go` do it.
//!
//! The output ([`Ast`]) is untyped: keyword, flags (`--x=y` words), arguments as the line
//! parser split them, heredocs, spans. [`Ast::dump`] prints BuildKit's `Node.Dump()` format,
//! which the conformance test compares byte for byte with BuildKit's golden files.
//! Typed instructions are built from it by [`crate::parse_dockerfile`].

use crate::error::{Error, ErrorKind};
use crate::json::{parse_json_array, JsonArray};
use crate::shell::{EmptyEnv, ShellLex};

/// Parser directives from the top of the file (`# syntax=`, `# escape=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=` value (kiln has one built-in front end; this is reported, not fetched).
    pub syntax: Option<String>,
    /// Escape and line-continuation character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=` value, raw (e.g. `skip=all;error=true`).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

/// A heredoc attached to a RUN/COPY/ADD line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// Terminator word with quotes removed (`EOF`).
    pub name: String,
    /// Body, raw: every line with its newline, `<<-` tabs not yet stripped.
    pub content: String,
    /// False when any part of the terminator word was quoted (`<<'EOF'`): no expansion.
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the body (see [`Heredoc::chomped`]).
    pub chomp: bool,
    /// The file descriptor before `<<` (`3<<EOF`), 0 when none.
    pub file_descriptor: u32,
}

impl Heredoc {
    /// The body with leading tabs removed from each line when `chomp` is set.
    pub fn chomped(&self) -> String {
        if !self.chomp {
            return self.content.clone();
        }
        let mut out = String::with_capacity(self.content.len());
        for line in self.content.split_inclusive('\n') {
            out.push_str(line.trim_start_matches('\t'));
        }
        out
    }
}

/// One instruction as the line parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Lower-cased keyword (`run`); for an unknown instruction, the lower-cased word.
    pub keyword: String,
    /// Keyword as written, for messages.
    pub keyword_as_written: String,
    /// Leading `--flag[=value]` words, quotes removed, in order.
    pub flags: Vec<String>,
    /// Arguments as the line parser split them (see the crate docs for each instruction).
    pub args: Vec<String>,
    /// True when the arguments were a JSON array (exec form).
    pub json: bool,
    /// ONBUILD's trigger instruction.
    pub sub: Option<Box<Node>>,
    /// Heredocs in the order they appear on the line.
    pub heredocs: Vec<Heredoc>,
    /// The logical line after joining continuations (no heredoc bodies).
    pub original: String,
    /// The physical source text from the first to the last line (incl. heredoc bodies).
    pub source: String,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (heredoc terminator included).
    pub end_line: usize,
    /// 1-based column where the keyword starts.
    pub col: usize,
    /// Lines that were empty inside a continuation (BuildKit warns about these).
    pub empty_continuation_lines: Vec<usize>,
}

/// The parsed file: directives plus instruction nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ast {
    /// Parser directives.
    pub directives: Directives,
    /// Instructions in source order.
    pub nodes: Vec<Node>,
}

impl Ast {
    /// BuildKit's `Node.Dump()` of the root, plus a final newline: one line per instruction.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push('(');
            dump_node(n, &mut out);
            out.push_str(")\n");
        }
        out
    }

    /// First line of the first instruction (0 when empty).
    pub fn start_line(&self) -> usize {
        self.nodes.first().map_or(0, |n| n.start_line)
    }

    /// Last line of the last instruction (0 when empty).
    pub fn end_line(&self) -> usize {
        self.nodes.last().map_or(0, |n| n.end_line)
    }
}

fn dump_node(n: &Node, out: &mut String) {
    out.push_str(&n.keyword);
    if !n.flags.is_empty() {
        out.push_str(" [");
        for (i, f) in n.flags.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            go_quote(f, out);
        }
        out.push(']');
    }
    if let Some(sub) = &n.sub {
        out.push_str(" (");
        dump_node(sub, out);
        out.push(')');
    }
    for a in &n.args {
        out.push(' ');
        go_quote(a, out);
    }
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if (c as u32) >= 0x80 && !go_printable(c) => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Approximation of Go's `strconv.IsPrint` for non-ASCII: letters, marks, numbers,
/// punctuation, symbols and U+0020 are printable; other spaces, controls, format chars,
/// surrogates and unassigned code points are not.
fn go_printable(c: char) -> bool {
    let u = c as u32;
    if (0x80..0xa0).contains(&u) || u == 0xad {
        return false;
    }
    if c.is_whitespace() {
        return false;
    }
    // Format characters and private use / noncharacters commonly met.
    !matches!(u,
        0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb
        | 0xe000..=0xf8ff | 0xfdd0..=0xfdef | 0xfffe | 0xffff | 0xf0000..=0x10ffff)
}

/// Go's `unicode.IsSpace`.
pub(crate) fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

/// BuildKit's `reWhitespace`: `[\t\v\f\r ]+`.
fn is_ws_sep(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn split_ws_sep(s: &str) -> Vec<String> {
    s.split(is_ws_sep)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// Splits at the first run of `[\t\v\f\r ]`: `(first, rest)`.
fn split2_ws_sep(s: &str) -> (&str, Option<&str>) {
    match s.find(is_ws_sep) {
        Some(i) => {
            let rest = s[i..].trim_start_matches(is_ws_sep);
            (&s[..i], Some(rest))
        }
        None => (s, None),
    }
}

const KNOWN: &[&str] = &[
    "add",
    "arg",
    "cmd",
    "copy",
    "entrypoint",
    "env",
    "expose",
    "from",
    "healthcheck",
    "label",
    "maintainer",
    "onbuild",
    "run",
    "shell",
    "stopsignal",
    "user",
    "volume",
    "workdir",
];

/// Whether `kw` (lower-case) is a Dockerfile instruction.
pub fn is_known_instruction(kw: &str) -> bool {
    KNOWN.contains(&kw)
}

/// The instruction keyword closest to `word` (edit distance ≤ 2, or a prefix), for hints.
pub fn nearest_instruction(word: &str) -> Option<&'static str> {
    let w = word.to_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for k in KNOWN {
        let d = edit_distance(&w, k);
        if best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    match best {
        Some((d, k)) if d <= 2 || (w.len() >= 3 && k.starts_with(&w)) => Some(k),
        _ => None,
    }
}

pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().take(64).collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

struct DirectiveParser {
    done: bool,
    seen_escape: bool,
    seen_syntax: bool,
    seen_check: bool,
}

impl DirectiveParser {
    /// `^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` on a line with leading space removed.
    fn line(&mut self, line: &str, d: &mut Directives) -> Result<(), ErrorKind> {
        if self.done {
            return Ok(());
        }
        let re_space = |c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{c}');
        let parsed = (|| {
            let rest = line.strip_prefix('#')?.trim_start_matches(re_space);
            let first = rest.chars().next()?;
            if !first.is_ascii_alphabetic() {
                return None;
            }
            let end = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            let name = &rest[..end];
            let rest = rest[end..].trim_start_matches(re_space).strip_prefix('=')?;
            let value = rest.trim_matches(re_space);
            if value.is_empty() {
                return None;
            }
            Some((name.to_ascii_lowercase(), value.to_string()))
        })();
        let Some((name, value)) = parsed else {
            self.done = true;
            return Ok(());
        };
        let seen = match name.as_str() {
            "escape" => &mut self.seen_escape,
            "syntax" => &mut self.seen_syntax,
            "check" => &mut self.seen_check,
            _ => {
                self.done = true;
                return Ok(());
            }
        };
        if *seen {
            return Err(ErrorKind::DuplicateDirective { name });
        }
        *seen = true;
        match name.as_str() {
            "escape" => {
                d.escape = match value.as_str() {
                    "`" => '`',
                    "\\" => '\\',
                    _ => return Err(ErrorKind::InvalidEscape { value }),
                }
            }
            "syntax" => d.syntax = Some(value),
            _ => d.check = Some(value),
        }
        Ok(())
    }
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line)
        .trim_start_matches(is_go_space)
        .starts_with('#')
}

/// A line continues when it ends in the escape char plus optional blanks, and that escape
/// char is not itself escaped (`trailing-backslash` case: `C trailing\\`).
fn trim_continuation(line: &str, esc: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(esc) {
        if !before.ends_with(esc) {
            return (before, false);
        }
    }
    (line, true)
}

fn decode_line(raw: &[u8], line_no: usize) -> Result<&str, Error> {
    std::str::from_utf8(raw).map_err(|e| utf8_error(raw, e, line_no))
}

fn utf8_error(raw: &[u8], e: std::str::Utf8Error, line_no: usize) -> Error {
    let col = String::from_utf8_lossy(&raw[..e.valid_up_to()])
        .chars()
        .count()
        + 1;
    Error::new(ErrorKind::InvalidUtf8).at(line_no, col)
}

/// Parses Dockerfile bytes into the untyped AST, accepting what BuildKit's parser accepts
/// (unknown keywords included). Rejects: no instructions, non-string JSON arrays,
/// `ENV key` without value, bad directives, unterminated heredocs, invalid UTF-8 outside
/// comments, and `ONBUILD ONBUILD` (BuildKit rejects that one step later).
pub fn parse(src: &[u8]) -> Result<Ast, Error> {
    let mut lines: Vec<&[u8]> = src.split_inclusive(|&b| b == b'\n').collect();
    if let Some(first) = lines.first_mut() {
        if let Some(rest) = first.strip_prefix(b"\xef\xbb\xbf") {
            *first = rest;
        }
    }
    let mut d = Directives::default();
    let mut dp = DirectiveParser {
        done: false,
        seen_escape: false,
        seen_syntax: false,
        seen_check: false,
    };
    let mut nodes = Vec::new();
    let mut i = 0;
    let mut current_line = 0;
    while i < lines.len() {
        let raw = lines[i];
        i += 1;
        current_line += 1;
        let start_line = current_line;
        let first_raw_index = i - 1;
        // Comment lines may hold any bytes (old Latin-1 files); other lines must be UTF-8.
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(_) if is_comment(&String::from_utf8_lossy(raw)) => {
                dp.done = true;
                continue;
            }
            Err(e) => return Err(utf8_error(raw, e, current_line)),
        };
        let token = trim_newline(text).trim_start_matches(is_go_space);
        dp.line(token, &mut d)
            .map_err(|k| Error::new(k).at(current_line, 1))?;
        let processed = if is_comment(token) { "" } else { token };
        let lead = trim_newline(text).chars().count() - token.chars().count();
        let (first, mut eol) = trim_continuation(processed, d.escape);
        if eol && first.is_empty() {
            continue;
        }
        let mut line = first.to_string();
        let mut empty_lines = Vec::new();
        while !eol && i < lines.len() {
            let raw = lines[i];
            i += 1;
            current_line += 1;
            let text = match std::str::from_utf8(raw) {
                Ok(t) => t,
                Err(_) if is_comment(&String::from_utf8_lossy(raw)) => continue,
                Err(e) => return Err(utf8_error(raw, e, current_line)),
            };
            if is_comment(text) {
                continue;
            }
            let t = trim_newline(text);
            if t.trim_start_matches(is_go_space).is_empty() {
                empty_lines.push(current_line);
                continue;
            }
            let (cont, e) = trim_continuation(t, d.escape);
            eol = e;
            line.push_str(cont);
        }
        let mut node = node_from_line(&line, &d)
            .map_err(|e| e.at(start_line, lead + 1).through_line(current_line))?;
        node.col = lead + 1;
        node.start_line = start_line;
        node.empty_continuation_lines = empty_lines;
        if can_contain_heredoc(&node) && line.contains("<<") {
            let docs = heredocs_from_line(&line).map_err(|k| {
                Error::new(k)
                    .at(start_line, lead + 1)
                    .through_line(current_line)
            })?;
            for mut doc in docs {
                let mut terminated = false;
                while i < lines.len() {
                    let raw = lines[i];
                    i += 1;
                    current_line += 1;
                    let text = decode_line(raw, current_line)?;
                    let mut possible = trim_newline(text);
                    if doc.chomp {
                        possible = possible.trim_start_matches('\t');
                    }
                    if possible == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(text);
                }
                if !terminated {
                    return Err(Error::new(ErrorKind::UnterminatedHeredoc {
                        name: doc.name.clone(),
                    })
                    .at(start_line, lead + 1)
                    .through_line(current_line)
                    .with_hint(format!(
                        "the heredoc <<{} starts on line {start_line}; end it with a line holding only {:?}",
                        doc.name, doc.name
                    )));
                }
                node.heredocs.push(doc);
            }
        }
        node.end_line = current_line;
        node.source = lines[first_raw_index..i]
            .iter()
            .map(|l| String::from_utf8_lossy(l))
            .collect::<String>();
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(Error::new(ErrorKind::NoInstructions).at(current_line.max(1), 1));
    }
    Ok(Ast {
        directives: d,
        nodes,
    })
}

fn can_contain_heredoc(n: &Node) -> bool {
    matches!(n.keyword.as_str(), "add" | "copy" | "run") && !n.args.is_empty() && !n.json
}

fn node_from_line(line: &str, d: &Directives) -> Result<Node, Error> {
    let trimmed = line.trim_matches(is_go_space);
    let (cmd, rest) = split2_ws_sep(trimmed);
    let (args, flags) = match rest {
        Some(r) => extract_builder_flags(r),
        None => (String::new(), Vec::new()),
    };
    let args = args.trim_matches(is_go_space).to_string();
    let keyword = cmd.to_lowercase();
    let mut node = Node {
        keyword: keyword.clone(),
        keyword_as_written: cmd.to_string(),
        flags,
        args: Vec::new(),
        json: false,
        sub: None,
        heredocs: Vec::new(),
        original: line.to_string(),
        source: String::new(),
        start_line: 0,
        end_line: 0,
        col: 1,
        empty_continuation_lines: Vec::new(),
    };
    match keyword.as_str() {
        "add" | "copy" | "volume" => {
            let (a, json) = parse_maybe_json_to_list(&args)?;
            node.args = a;
            node.json = json;
        }
        "run" | "cmd" | "entrypoint" | "shell" => {
            let (a, json) = parse_maybe_json(&args)?;
            node.args = a;
            node.json = json;
        }
        "from" | "expose" => node.args = split_ws_sep(&args),
        "env" | "label" => node.args = parse_name_val(&args, &keyword, d)?,
        "arg" => node.args = parse_words(&args, d.escape),
        "healthcheck" => {
            let end = args
                .find(|c: char| c.is_ascii_whitespace())
                .unwrap_or(args.len());
            if end > 0 {
                let typ = &args[..end];
                let rest = args[end..].trim_start_matches(|c: char| c.is_ascii_whitespace());
                let (mut a, json) = parse_maybe_json(rest)?;
                a.insert(0, typ.to_string());
                node.args = a;
                node.json = json;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !args.is_empty() {
                node.args = vec![args];
            }
        }
        "onbuild" => {
            if !args.is_empty() {
                // Check before recursing: `ONBUILD ONBUILD ...` must not nest per word.
                let (first, _) = split2_ws_sep(&args);
                if first.eq_ignore_ascii_case("onbuild") {
                    return Err(Error::new(ErrorKind::OnbuildChain));
                }
                node.sub = Some(Box::new(node_from_line(&args, d)?));
            }
        }
        // BuildKit's parser keeps unknown instructions (`parseIgnore`); the typed layer
        // rejects them with a hint.
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), Error> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json_array(rest) {
        JsonArray::Strings(v) => Ok((v, true)),
        JsonArray::NotStrings => Err(Error::new(ErrorKind::NotStringArray)),
        JsonArray::Invalid => Ok((vec![rest.to_string()], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), Error> {
    match parse_json_array(rest) {
        JsonArray::Strings(v) => Ok((v, true)),
        JsonArray::NotStrings => Err(Error::new(ErrorKind::NotStringArray)),
        JsonArray::Invalid => Ok((split_ws_sep(rest), false)),
    }
}

/// BuildKit's `extractBuilderFlags`: leading `--` words become flags; quotes are removed
/// and `\` escapes inside them (always `\`, whatever `# escape=` says, as upstream).
/// Returns (rest, flags).
fn extract_builder_flags(line: &str) -> (String, Vec<String>) {
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut words = Vec::new();
    let mut pos = 0;
    loop {
        while pos < chars.len() && is_go_space(chars[pos].1) {
            pos += 1;
        }
        if pos >= chars.len() {
            return (String::new(), words);
        }
        if !(chars[pos].1 == '-' && pos + 1 < chars.len() && chars[pos + 1].1 == '-') {
            return (line[chars[pos].0..].to_string(), words);
        }
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        while pos < chars.len() {
            let c = chars[pos].1;
            if let Some(q) = quote {
                if c == q {
                    quote = None;
                } else if c == '\\' {
                    if pos + 1 == chars.len() {
                        quote = None;
                    } else {
                        pos += 1;
                        word.push(chars[pos].1);
                    }
                } else {
                    word.push(c);
                }
                pos += 1;
                continue;
            }
            if is_go_space(c) {
                break;
            }
            if c == '\'' || c == '"' {
                quote = Some(c);
                blank_ok = true;
            } else if c == '\\' {
                if pos + 1 < chars.len() {
                    pos += 1;
                    word.push(chars[pos].1);
                }
            } else {
                word.push(c);
            }
            pos += 1;
        }
        if word == "--" {
            let rest = if pos < chars.len() {
                &line[chars[pos].0..]
            } else {
                ""
            };
            return (rest.to_string(), words);
        }
        if blank_ok || !word.is_empty() {
            words.push(word);
        }
    }
}

/// BuildKit's `parseWords`: quote-aware splitting that keeps quotes and escapes.
pub(crate) fn parse_words(rest: &str, esc: char) -> Vec<String> {
    let chars: Vec<char> = rest.chars().collect();
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut blank_ok = false;
    let mut pos = 0;
    while pos < chars.len() {
        let c = chars[pos];
        if !in_word {
            if is_go_space(c) {
                pos += 1;
                continue;
            }
            in_word = true;
        }
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            if c == esc && q != '\'' {
                if pos + 1 == chars.len() {
                    quote = None;
                    pos += 1;
                    continue;
                }
                word.push(c);
                pos += 1;
                word.push(chars[pos]);
                pos += 1;
                continue;
            }
            word.push(c);
            pos += 1;
            continue;
        }
        if is_go_space(c) {
            in_word = false;
            if blank_ok || !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            blank_ok = false;
            pos += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            quote = Some(c);
            blank_ok = true;
        }
        if c == esc {
            if pos + 1 == chars.len() {
                pos += 1;
                continue;
            }
            word.push(c);
            pos += 1;
            word.push(chars[pos]);
            pos += 1;
            continue;
        }
        word.push(c);
        pos += 1;
    }
    if in_word && (blank_ok || !word.is_empty()) {
        words.push(word);
    }
    words
}

fn parse_name_val(rest: &str, keyword: &str, d: &Directives) -> Result<Vec<String>, Error> {
    let words = parse_words(rest, d.escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        // Legacy `ENV key value with spaces`.
        let (k, v) = split2_ws_sep(rest);
        let Some(v) = v else {
            return Err(Error::new(ErrorKind::MissingValue {
                instruction: keyword.to_uppercase(),
            }));
        };
        return Ok(vec![k.to_string(), v.to_string(), String::new()]);
    }
    let mut out = Vec::new();
    for w in words {
        let Some((k, v)) = w.split_once('=') else {
            return Err(Error::new(ErrorKind::MissingEquals { word: w }));
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// `^(\d*)<<(-?)\s*([^<]*)$` then lexing of the word; `Ok(None)` when not a heredoc.
pub fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, ErrorKind> {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let Some(rest) = word[digits..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match rest.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\u{c}']);
    if rest.is_empty() || rest.contains('<') {
        return Ok(None);
    }
    let fd: u32 = if digits == 0 {
        0
    } else {
        word[..digits].parse().unwrap_or(0)
    };
    // Lex the word with and without quote removal: if the counts of quote characters
    // differ, part of it was quoted and the body is not expanded (parser.go heredocFromMatch).
    let lex = ShellLex::new('\\').with_skip_unset_env(true);
    let map_err = |e: Error| match e.kind() {
        ErrorKind::Expand { source, .. } => (**source).clone(),
        k => k.clone(),
    };
    let words = lex.process_words(rest, &EmptyEnv).map_err(map_err)?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = lex
        .with_raw_quotes(true)
        .process_words(rest, &EmptyEnv)
        .map_err(map_err)?;
    if raw.len() != 1 {
        return Err(ErrorKind::BadHeredoc {
            word: word.to_string(),
            reason: "inconsistent lexing".into(),
        });
    }
    let q = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        content: String::new(),
        expand: q(&words[0]) == q(&raw[0]),
        chomp,
        file_descriptor: fd,
    }))
}

/// The heredocs opened on a logical line, in order.
pub fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, ErrorKind> {
    let lex = ShellLex::new('\\')
        .with_raw_quotes(true)
        .with_raw_escapes(true)
        .with_skip_unset_env(true);
    let Ok(words) = lex.process_words(line, &EmptyEnv) else {
        return Ok(Vec::new());
    };
    let mut docs = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut w = words[i].clone();
        // `<< EOF` / `<<- EOF`: the operator and the word are separate shell words.
        let digits = w.bytes().take_while(u8::is_ascii_digit).count();
        let op = &w[digits..];
        if (op == "<<" || op == "<<-") && i + 1 < words.len() {
            w.push(' ');
            w.push_str(&words[i + 1]);
            i += 1;
        }
        match parse_heredoc(&w) {
            Ok(Some(h)) => docs.push(h),
            Ok(None) => {}
            Err(reason) => {
                return Err(ErrorKind::BadHeredoc {
                    word: w,
                    reason: reason.to_string(),
                })
            }
        }
        i += 1;
    }
    Ok(docs)
}

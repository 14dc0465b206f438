//! A JSON validator for the exec form (`["a", "b"]`) of RUN/CMD/ENTRYPOINT/SHELL/COPY/ADD/VOLUME.
//!
//! BuildKit decides between exec and shell form by handing the text to Go's
//! `encoding/json` (`parser/line_parsers.go` `parseJSON`): any *syntax* error falls back to
//! shell form, while a syntactically valid array with a non-string element is a hard error.
//! So the whole text has to be validated as JSON, including nested values we then reject.
//! The validator is iterative (an explicit stack), so nesting depth costs heap, not stack;
//! like Go's decoder (`maxNestingDepth = 10000`) we treat deeper nesting as a syntax error.

/// Result of reading text as a JSON array of strings.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JsonArray {
    /// A valid array whose elements are all strings.
    Strings(Vec<String>),
    /// A valid JSON array with at least one non-string element.
    NotStrings,
    /// Not valid JSON, or not an array: the caller falls back to shell form.
    Invalid,
}

const MAX_DEPTH: usize = 10_000;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Reads `s` (already left-trimmed by the caller) as a JSON array of strings.
pub(crate) fn parse_json_array(s: &str) -> JsonArray {
    let s = s.trim_start_matches(crate::parser::is_go_space);
    if !s.starts_with('[') {
        return JsonArray::Invalid;
    }
    let b = s.as_bytes();
    let mut p = Parser { b, i: 0 };
    let mut out = Vec::new();
    let mut all_strings = true;
    // Container stack: true = array, false = object.
    let mut stack: Vec<bool> = Vec::new();
    // Expectation after a value or container open.
    #[derive(Clone, Copy, PartialEq)]
    enum St {
        Value,
        ValueOrClose,
        CommaOrClose,
        KeyOrClose,
        Key,
        Colon,
    }
    let mut st = St::Value;
    loop {
        p.skip_ws();
        let Some(&c) = b.get(p.i) else {
            return JsonArray::Invalid;
        };
        match st {
            St::Value | St::ValueOrClose => {
                if st == St::ValueOrClose && c == b']' {
                    p.i += 1;
                    stack.pop();
                    if stack.is_empty() {
                        break;
                    }
                    st = St::CommaOrClose;
                    continue;
                }
                let top_level_elem = stack.len() == 1;
                match c {
                    b'[' | b'{' => {
                        if stack.len() >= MAX_DEPTH {
                            return JsonArray::Invalid;
                        }
                        if top_level_elem {
                            all_strings = false;
                        }
                        p.i += 1;
                        stack.push(c == b'[');
                        st = if c == b'[' {
                            St::ValueOrClose
                        } else {
                            St::KeyOrClose
                        };
                        continue;
                    }
                    b'"' => match p.string() {
                        Some(v) => {
                            if top_level_elem {
                                out.push(v);
                            }
                        }
                        None => return JsonArray::Invalid,
                    },
                    _ => {
                        if !p.scalar() {
                            return JsonArray::Invalid;
                        }
                        if top_level_elem {
                            all_strings = false;
                        }
                    }
                }
                st = St::CommaOrClose;
            }
            St::CommaOrClose => {
                let is_array = *stack.last().unwrap_or(&true);
                p.i += 1;
                match (c, is_array) {
                    (b',', true) => st = St::Value,
                    (b',', false) => st = St::Key,
                    (b']', true) | (b'}', false) => {
                        stack.pop();
                        if stack.is_empty() {
                            break;
                        }
                        st = St::CommaOrClose;
                    }
                    _ => return JsonArray::Invalid,
                }
            }
            St::KeyOrClose | St::Key => {
                if st == St::KeyOrClose && c == b'}' {
                    p.i += 1;
                    stack.pop();
                    st = St::CommaOrClose;
                    continue;
                }
                if c != b'"' || p.string().is_none() {
                    return JsonArray::Invalid;
                }
                st = St::Colon;
            }
            St::Colon => {
                if c != b':' {
                    return JsonArray::Invalid;
                }
                p.i += 1;
                st = St::Value;
            }
        }
    }
    p.skip_ws();
    if p.i != b.len() {
        return JsonArray::Invalid;
    }
    if all_strings {
        JsonArray::Strings(out)
    } else {
        JsonArray::NotStrings
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.b.len() && is_ws(self.b[self.i]) {
            self.i += 1;
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.b.get(self.i..self.i + 4)?;
        let s = std::str::from_utf8(h).ok()?;
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        self.i += 4;
        u32::from_str_radix(s, 16).ok()
    }

    /// Reads a string starting at `"`; returns the decoded value.
    fn string(&mut self) -> Option<String> {
        self.i += 1;
        let mut out = String::new();
        let start = self.i;
        let mut run_start = start;
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    out.push_str(std::str::from_utf8(&self.b[run_start..self.i]).ok()?);
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    out.push_str(std::str::from_utf8(&self.b[run_start..self.i]).ok()?);
                    self.i += 1;
                    let e = *self.b.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let u = self.hex4()?;
                            if (0xD800..0xDC00).contains(&u) {
                                // A high surrogate combines with a following \uDC00-\uDFFF;
                                // otherwise Go substitutes U+FFFD (encoding/json decode.go).
                                let save = self.i;
                                if self.b.get(self.i) == Some(&b'\\')
                                    && self.b.get(self.i + 1) == Some(&b'u')
                                {
                                    self.i += 2;
                                    match self.hex4() {
                                        Some(l) if (0xDC00..0xE000).contains(&l) => {
                                            let cp = 0x10000 + ((u - 0xD800) << 10) + (l - 0xDC00);
                                            out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
                                        }
                                        _ => {
                                            self.i = save;
                                            out.push('\u{FFFD}');
                                        }
                                    }
                                } else {
                                    out.push('\u{FFFD}');
                                }
                            } else {
                                out.push(char::from_u32(u).unwrap_or('\u{FFFD}'));
                            }
                        }
                        _ => return None,
                    }
                    run_start = self.i;
                }
                0..=0x1f => return None,
                _ => self.i += 1,
            }
        }
    }

    /// Reads a number or literal; true if valid.
    fn scalar(&mut self) -> bool {
        for lit in [&b"true"[..], b"false", b"null"] {
            if self.b[self.i..].starts_with(lit) {
                self.i += lit.len();
                return true;
            }
        }
        let b = self.b;
        let mut i = self.i;
        if b.get(i) == Some(&b'-') {
            i += 1;
        }
        match b.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                while matches!(b.get(i), Some(b'0'..=b'9')) {
                    i += 1;
                }
            }
            _ => return false,
        }
        if b.get(i) == Some(&b'.') {
            i += 1;
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                return false;
            }
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        if matches!(b.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(b.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            if !matches!(b.get(i), Some(b'0'..=b'9')) {
                return false;
            }
            while matches!(b.get(i), Some(b'0'..=b'9')) {
                i += 1;
            }
        }
        self.i = i;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms() {
        assert_eq!(parse_json_array("[]"), JsonArray::Strings(vec![]));
        assert_eq!(
            parse_json_array(r#"[ "a", "b\u00e9" ] "#),
            JsonArray::Strings(vec!["a".into(), "bé".into()])
        );
        assert_eq!(parse_json_array(r#"["a", ["b"]]"#), JsonArray::NotStrings);
        assert_eq!(
            parse_json_array(r#"["a", {"k": [1, null]}]"#),
            JsonArray::NotStrings
        );
        assert_eq!(parse_json_array("['a']"), JsonArray::Invalid);
        assert_eq!(parse_json_array(r#"["a""#), JsonArray::Invalid);
        assert_eq!(parse_json_array(r#"["a"] x"#), JsonArray::Invalid);
        assert_eq!(parse_json_array(r#"["a",]"#), JsonArray::Invalid);
        let deep = "[".repeat(20_000) + &"]".repeat(20_000);
        assert_eq!(parse_json_array(&deep), JsonArray::Invalid);
    }
}

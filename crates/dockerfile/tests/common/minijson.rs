//! A minimal JSON reader for the corpus files (tests only; the crate takes no serde dependency).

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(BTreeMap<String, J>),
}

impl J {
    pub fn get(&self, k: &str) -> &J {
        match self {
            J::Obj(m) => m.get(k).unwrap_or(&J::Null),
            _ => &J::Null,
        }
    }
    pub fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn arr(&self) -> Option<&[J]> {
        match self {
            J::Arr(a) => Some(a),
            _ => None,
        }
    }
    pub fn bool(&self) -> bool {
        matches!(self, J::Bool(true))
    }
    pub fn num(&self) -> f64 {
        match self {
            J::Num(n) => *n,
            _ => f64::NAN,
        }
    }
    pub fn obj(&self) -> Option<&BTreeMap<String, J>> {
        match self {
            J::Obj(m) => Some(m),
            _ => None,
        }
    }
}

pub fn parse(s: &str) -> J {
    let c: Vec<char> = s.chars().collect();
    let mut i = 0;
    value(&c, &mut i)
}

fn ws(c: &[char], i: &mut usize) {
    while *i < c.len() && c[*i].is_whitespace() {
        *i += 1;
    }
}

fn value(c: &[char], i: &mut usize) -> J {
    ws(c, i);
    match c[*i] {
        '{' => {
            *i += 1;
            let mut m = BTreeMap::new();
            loop {
                ws(c, i);
                if c[*i] == '}' {
                    *i += 1;
                    return J::Obj(m);
                }
                if c[*i] == ',' {
                    *i += 1;
                    continue;
                }
                let J::Str(k) = value(c, i) else {
                    panic!("key")
                };
                ws(c, i);
                assert_eq!(c[*i], ':');
                *i += 1;
                let v = value(c, i);
                m.insert(k, v);
            }
        }
        '[' => {
            *i += 1;
            let mut a = Vec::new();
            loop {
                ws(c, i);
                if c[*i] == ']' {
                    *i += 1;
                    return J::Arr(a);
                }
                if c[*i] == ',' {
                    *i += 1;
                    continue;
                }
                a.push(value(c, i));
            }
        }
        '"' => {
            *i += 1;
            let mut s = String::new();
            loop {
                let ch = c[*i];
                *i += 1;
                match ch {
                    '"' => return J::Str(s),
                    '\\' => {
                        let e = c[*i];
                        *i += 1;
                        match e {
                            'n' => s.push('\n'),
                            't' => s.push('\t'),
                            'r' => s.push('\r'),
                            'b' => s.push('\u{8}'),
                            'f' => s.push('\u{c}'),
                            'u' => {
                                let h: String = c[*i..*i + 4].iter().collect();
                                *i += 4;
                                let u = u32::from_str_radix(&h, 16).unwrap_or(0xfffd);
                                s.push(char::from_u32(u).unwrap_or('\u{fffd}'));
                            }
                            o => s.push(o),
                        }
                    }
                    o => s.push(o),
                }
            }
        }
        't' => {
            *i += 4;
            J::Bool(true)
        }
        'f' => {
            *i += 5;
            J::Bool(false)
        }
        'n' => {
            *i += 4;
            J::Null
        }
        _ => {
            let st = *i;
            while *i < c.len() && (c[*i].is_ascii_digit() || "+-.eE".contains(c[*i])) {
                *i += 1;
            }
            let t: String = c[st..*i].iter().collect();
            J::Num(t.parse().unwrap_or(f64::NAN))
        }
    }
}

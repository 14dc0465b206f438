//! `COPY --chmod` values: octal (`0755`, `755`) or symbolic (`u+x,go-w`, `a=rX`), as BuildKit
//! accepts them.

/// A parsed `--chmod`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    Symbolic(Vec<Clause>),
}

/// One `who op perms` clause of a symbolic mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    who: u32,
    op: char,
    perms: u32,
    /// `X`: execute only for directories or files already executable by someone.
    cond_exec: bool,
}

impl Chmod {
    /// Parses a `--chmod` value.
    pub fn parse(s: &str) -> Result<Chmod, String> {
        if !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
            let v = u32::from_str_radix(s, 8).map_err(|e| e.to_string())?;
            if v > 0o7777 {
                return Err(format!("invalid --chmod {s:?}: more than 4 octal digits"));
            }
            return Ok(Chmod::Octal(v));
        }
        let mut clauses = Vec::new();
        for part in s.split(',') {
            let bad =
                || format!("invalid --chmod {s:?}: expected octal (0755) or symbolic (u+x,go-w)");
            let op_at = part.find(['+', '-', '=']).ok_or_else(bad)?;
            let (who_s, rest) = part.split_at(op_at);
            let mut who = 0;
            for c in who_s.chars() {
                who |= match c {
                    'u' => 0o4700,
                    'g' => 0o2070,
                    'o' => 0o1007,
                    'a' => 0o7777,
                    _ => return Err(bad()),
                };
            }
            if who == 0 {
                who = 0o7777;
            }
            let op = rest.chars().next().ok_or_else(bad)?;
            let mut perms = 0;
            let mut cond_exec = false;
            for c in rest[1..].chars() {
                match c {
                    'r' => perms |= 0o444,
                    'w' => perms |= 0o222,
                    'x' => perms |= 0o111,
                    'X' => cond_exec = true,
                    's' => perms |= 0o6000,
                    't' => perms |= 0o1000,
                    _ => return Err(bad()),
                }
            }
            clauses.push(Clause {
                who,
                op,
                perms,
                cond_exec,
            });
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode a file (or directory) of mode `old` gets.
    pub fn apply(&self, old: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut mode = old & 0o7777;
                for c in clauses {
                    let mut perms = c.perms;
                    if c.cond_exec && (is_dir || mode & 0o111 != 0) {
                        perms |= 0o111;
                    }
                    let bits = perms & c.who;
                    match c.op {
                        '+' => mode |= bits,
                        '-' => mode &= !bits,
                        _ => mode = (mode & !(c.who & 0o7777)) | bits,
                    }
                }
                mode
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_and_symbolic() {
        assert_eq!(Chmod::parse("755").unwrap().apply(0o644, false), 0o755);
        assert_eq!(Chmod::parse("0640").unwrap().apply(0o777, true), 0o640);
        assert_eq!(Chmod::parse("u+x").unwrap().apply(0o644, false), 0o744);
        assert_eq!(Chmod::parse("go-w").unwrap().apply(0o666, false), 0o644);
        assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o700, true), 0o555);
        assert_eq!(Chmod::parse("a=rX").unwrap().apply(0o600, false), 0o444);
        assert_eq!(Chmod::parse("+x").unwrap().apply(0o600, false), 0o711);
        assert!(Chmod::parse("8").is_err());
        assert!(Chmod::parse("u*x").is_err());
        assert!(Chmod::parse("77777").is_err());
    }
}

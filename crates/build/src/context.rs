//! The build context: a local directory, filtered by `.dockerignore`, read by COPY/ADD.
//!
//! Sources are cleaned lexically the way Docker cleans them (`../x` cannot climb above the
//! context root: `/..` is `/`), globs are matched per path component with Go's
//! `filepath.Match` rules (what Docker and BuildKit use), and excluded paths are invisible. A
//! symlink in the context is copied as a symlink, so no host file outside the context is ever
//! read through one (HOSTILE-INPUTS 28).

use kiln_dockerfile::Dockerignore;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Errors reading the context.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("reading build context {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid .dockerignore {path}: {message}")]
    Dockerignore { path: PathBuf, message: String },
    #[error("invalid pattern {pattern:?}: {reason}")]
    BadPattern {
        pattern: String,
        reason: &'static str,
    },
}

/// A build context directory.
pub struct Context {
    root: PathBuf,
    ignore: Option<Dockerignore>,
}

/// Lexically cleans `p` as an absolute path inside a root and returns it relative to that root
/// (empty for the root itself). `..` at the top stays at the top.
pub fn clean_rel(p: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn has_glob(s: &str) -> bool {
    s.bytes().any(|b| matches!(b, b'*' | b'?' | b'['))
}

impl Context {
    /// Opens the context at `root`, reading `<dockerfile>.dockerignore` if present, else
    /// `root/.dockerignore` (BuildKit's order).
    pub fn open(root: &Path, dockerfile: &Path) -> Result<Context, ContextError> {
        let specific = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
        let general = root.join(".dockerignore");
        let file = [specific, general].into_iter().find(|p| p.is_file());
        let ignore = match file {
            Some(path) => {
                let text = fs::read_to_string(&path).map_err(|source| ContextError::Io {
                    path: path.clone(),
                    source,
                })?;
                Some(
                    Dockerignore::parse(&text).map_err(|e| ContextError::Dockerignore {
                        path: path.clone(),
                        message: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        Ok(Context {
            root: root.to_path_buf(),
            ignore,
        })
    }

    /// A directory read without any `.dockerignore` (another stage's root, resolved by the
    /// caller inside that root).
    pub fn plain(root: &Path) -> Context {
        Context {
            root: root.to_path_buf(),
            ignore: None,
        }
    }

    /// The context directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// True when `.dockerignore` hides `rel`.
    pub fn is_excluded(&self, rel: &Path) -> bool {
        match (&self.ignore, rel.to_str()) {
            (Some(ig), Some(s)) if !s.is_empty() => ig.is_excluded(s),
            _ => false,
        }
    }

    /// Expands one COPY/ADD source into the context paths it names (relative, cleaned),
    /// sorted. A pattern matching nothing gives an empty list (the caller reports it).
    pub fn expand(&self, source: &str) -> Result<Vec<PathBuf>, ContextError> {
        let rel = clean_rel(source);
        if !has_glob(source) {
            let abs = self.root.join(&rel);
            return Ok(match fs::symlink_metadata(&abs) {
                Ok(_) if !self.is_excluded(&rel) => vec![rel],
                Ok(_) => Vec::new(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
                Err(source) => return Err(ContextError::Io { path: abs, source }),
            });
        }
        let parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let mut found = Vec::new();
        self.glob_walk(PathBuf::new(), &parts, &mut found)?;
        found.sort();
        Ok(found)
    }

    fn glob_walk(
        &self,
        at: PathBuf,
        parts: &[String],
        found: &mut Vec<PathBuf>,
    ) -> Result<(), ContextError> {
        let Some((first, rest)) = parts.split_first() else {
            if !self.is_excluded(&at) {
                found.push(at);
            }
            return Ok(());
        };
        if !has_glob(first) {
            let next = at.join(first);
            if fs::symlink_metadata(self.root.join(&next)).is_ok() {
                self.glob_walk(next, rest, found)?;
            }
            return Ok(());
        }
        let dir = self.root.join(&at);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(()),
            Err(source) => return Err(ContextError::Io { path: dir, source }),
        };
        for e in entries {
            let e = e.map_err(|source| ContextError::Io {
                path: dir.clone(),
                source,
            })?;
            let name = e.file_name();
            let name_s = name.to_string_lossy();
            if glob_match(first, &name_s).map_err(|reason| ContextError::BadPattern {
                pattern: first.clone(),
                reason,
            })? {
                self.glob_walk(at.join(&name), rest, found)?;
            }
        }
        Ok(())
    }

    /// Lists `rel` and everything below it that `.dockerignore` does not hide, parents before
    /// children, sorted by name. Directories that are excluded are still entered when an
    /// exception pattern could re-include something below them.
    pub fn walk(&self, rel: &Path) -> Result<Vec<PathBuf>, ContextError> {
        let mut out = Vec::new();
        let mut stack = vec![rel.to_path_buf()];
        while let Some(p) = stack.pop() {
            let abs = self.root.join(&p);
            let meta = fs::symlink_metadata(&abs).map_err(|source| ContextError::Io {
                path: abs.clone(),
                source,
            })?;
            let excluded = p != rel && self.is_excluded(&p);
            if !excluded {
                out.push(p.clone());
            }
            if meta.is_dir() {
                if excluded && !self.may_reinclude_below(&p) {
                    continue;
                }
                let mut children = fs::read_dir(&abs)
                    .and_then(|rd| {
                        rd.map(|e| e.map(|e| e.file_name()))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .map_err(|source| ContextError::Io {
                        path: abs.clone(),
                        source,
                    })?;
                children.sort();
                for c in children.into_iter().rev() {
                    stack.push(p.join(c));
                }
            }
        }
        Ok(out)
    }

    fn may_reinclude_below(&self, rel: &Path) -> bool {
        match (&self.ignore, rel.to_str()) {
            (Some(ig), Some(s)) => ig.must_descend(s),
            _ => false,
        }
    }
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]` classes with ranges and `^`
/// negation, `\` escapes.
pub fn glob_match(pattern: &str, name: &str) -> Result<bool, &'static str> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with single-star backtracking (linear in practice, no recursion).
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            match p[pi] {
                '*' => {
                    star = Some((pi, ni));
                    pi += 1;
                    continue;
                }
                '?' if ni < n.len() => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                '[' if ni < n.len() => {
                    let (matched, next) = class_match(&p, pi, n[ni])?;
                    if matched {
                        pi = next;
                        ni += 1;
                        continue;
                    }
                }
                '\\' => {
                    let Some(&lit) = p.get(pi + 1) else {
                        return Err("trailing backslash");
                    };
                    if ni < n.len() && n[ni] == lit {
                        pi += 2;
                        ni += 1;
                        continue;
                    }
                }
                c if ni < n.len() && c == n[ni] && c != '?' && c != '[' => {
                    pi += 1;
                    ni += 1;
                    continue;
                }
                _ => {}
            }
        } else if ni == n.len() {
            return Ok(true);
        }
        // Mismatch: backtrack to the last star, letting it swallow one more character.
        match star {
            Some((sp, sn)) if sn < n.len() => {
                star = Some((sp, sn + 1));
                pi = sp + 1;
                ni = sn + 1;
            }
            _ => {
                // Validate the rest of the pattern so bad classes are reported (as Go does).
                let mut i = pi;
                while i < p.len() {
                    if p[i] == '[' {
                        class_match(&p, i, 'a')?;
                    }
                    i += 1;
                }
                return Ok(false);
            }
        }
    }
}

/// Matches `c` against the class starting at `p[start] == '['`; returns (matched, index after `]`).
fn class_match(p: &[char], start: usize, c: char) -> Result<(bool, usize), &'static str> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&ch) = p.get(i) else {
            return Err("unterminated character class");
        };
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i).ok_or("trailing backslash")?
        } else {
            ch
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&x| x != ']') {
            i += 1;
            let h = if p[i] == '\\' {
                i += 1;
                *p.get(i).ok_or("trailing backslash")?
            } else {
                p[i]
            };
            i += 1;
            h
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Ok((matched != negate, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_stays_inside() {
        assert_eq!(clean_rel("../../etc/passwd"), PathBuf::from("etc/passwd"));
        assert_eq!(clean_rel("/a/./b/../c"), PathBuf::from("a/c"));
        assert_eq!(clean_rel("."), PathBuf::new());
    }

    #[test]
    fn go_glob_rules() {
        let m = |p, n| glob_match(p, n).unwrap();
        assert!(m("*.txt", "a.txt"));
        assert!(!m("*.txt", "a.txt.bak"));
        assert!(m("a?c", "abc"));
        assert!(m("[a-c]x", "bx"));
        assert!(!m("[^a-c]x", "bx"));
        assert!(m("\\*", "*"));
        assert!(m("*a*b*", "xxaybzb"));
        assert!(!m("*a*b", "xxaybzc"));
        assert!(glob_match("[a-", "a").is_err());
    }

    #[test]
    fn expands_globs_and_hides_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("d/e")).unwrap();
        for f in ["a.txt", "b.txt", "c.md", "d/x.txt", "d/e/y.txt"] {
            fs::write(root.join(f), f).unwrap();
        }
        fs::write(root.join(".dockerignore"), "b.txt\nd/e\n").unwrap();
        let ctx = Context::open(root, &root.join("Dockerfile")).unwrap();
        assert_eq!(ctx.expand("*.txt").unwrap(), vec![PathBuf::from("a.txt")]);
        assert_eq!(
            ctx.expand("../../d/*.txt").unwrap(),
            vec![PathBuf::from("d/x.txt")]
        );
        assert!(ctx.expand("b.txt").unwrap().is_empty());
        assert!(ctx.expand("nope").unwrap().is_empty());
        let walked = ctx.walk(Path::new("d")).unwrap();
        assert_eq!(walked, vec![PathBuf::from("d"), PathBuf::from("d/x.txt")]);
    }
}

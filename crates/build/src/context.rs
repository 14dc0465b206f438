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
///
/// Every path kiln reads from it is first resolved *inside* it (`scope`, kiln-rootfs's
/// RESOLVE_IN_ROOT resolution): a symlink anywhere in a source path, `link/secret` with
/// `link -> /etc`, resolves within the context, so no host file outside it is ever read
/// (HOSTILE-INPUTS 28), and `.dockerignore` is checked on the resolved path as well as the
/// named one, so an alias symlink cannot reach an excluded file.
pub struct Context {
    root: PathBuf,
    scope: Option<kiln_rootfs::Root>,
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
        let scope = Self::scope(root)?;
        // Inside the context, both are resolved inside it (a `.dockerignore` symlinked to a
        // host file is not read); a Dockerfile outside the context is the caller's own.
        let in_scope = |p: &Path| -> Option<PathBuf> {
            let rel = match p.strip_prefix(root) {
                Ok(rel) => rel,
                Err(_) if p.is_relative() => p,
                Err(_) => return Some(p.to_path_buf()).filter(|p| p.is_file()),
            };
            scope.resolve(rel).ok().filter(|h| h.is_file())
        };
        let specific = PathBuf::from(format!("{}.dockerignore", dockerfile.display()));
        let file = in_scope(&specific).or_else(|| in_scope(Path::new(".dockerignore")));
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
            scope: Some(scope),
            ignore,
        })
    }

    fn scope(root: &Path) -> Result<kiln_rootfs::Root, ContextError> {
        kiln_rootfs::Root::open(root).map_err(|e| ContextError::Io {
            path: root.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// `rel` with every symlink resolved inside the context, as a context-relative path;
    /// `None` when it does not exist.
    pub fn resolve(&self, rel: &Path) -> Result<Option<PathBuf>, ContextError> {
        let Some(scope) = &self.scope else {
            return Ok(fs::symlink_metadata(self.root.join(rel))
                .ok()
                .map(|_| rel.to_path_buf()));
        };
        if rel.as_os_str().is_empty() {
            return Ok(Some(PathBuf::new()));
        }
        match scope.resolve(rel) {
            Ok(host) => {
                let inside = host
                    .strip_prefix(&self.root)
                    .map(Path::to_path_buf)
                    .unwrap_or_default();
                Ok(fs::symlink_metadata(&host).ok().map(|_| inside))
            }
            Err(kiln_rootfs::RootError::NotFound { .. })
            | Err(kiln_rootfs::RootError::NotADirectory { .. }) => Ok(None),
            Err(e) => Err(ContextError::Io {
                path: self.root.join(rel),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }

    /// A directory read without any `.dockerignore` (another stage's root, resolved by the
    /// caller inside that root).
    pub fn plain(root: &Path) -> Context {
        Context {
            root: root.to_path_buf(),
            scope: Self::scope(root).ok(),
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
        let candidates = if !has_glob(source) {
            vec![rel]
        } else {
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let mut found = Vec::new();
            self.glob_walk(PathBuf::new(), &parts, &mut found)?;
            found
        };
        // Keep what exists inside the context and is hidden neither as named nor as resolved.
        let mut out = Vec::new();
        for c in candidates {
            if self.is_excluded(&c) {
                continue;
            }
            match self.resolve(&c)? {
                Some(r) if !self.is_excluded(&r) => out.push(c),
                _ => {}
            }
        }
        out.sort();
        Ok(out)
    }

    fn glob_walk(
        &self,
        at: PathBuf,
        parts: &[String],
        found: &mut Vec<PathBuf>,
    ) -> Result<(), ContextError> {
        let Some((first, rest)) = parts.split_first() else {
            found.push(at);
            return Ok(());
        };
        if !has_glob(first) {
            self.glob_walk(at.join(first), rest, found)?;
            return Ok(());
        }
        // List the directory as resolved inside the context.
        let Some(resolved) = self.resolve(&at)? else {
            return Ok(());
        };
        let dir = self.root.join(&resolved);
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
    ///
    /// `rel` is resolved inside the context first, and the paths returned are below the
    /// resolved path: no component of them is a symlink (entries are listed, not followed),
    /// so `root().join(path)` never leaves the context.
    pub fn walk(&self, rel: &Path) -> Result<Vec<PathBuf>, ContextError> {
        let Some(rel) = self.resolve(rel)? else {
            return Err(ContextError::Io {
                path: self.root.join(rel),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        };
        let rel = rel.as_path();
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

    /// The host path to bind-mount for `RUN --mount=type=bind` of `rel` from the context:
    /// the resolved path itself, or, when a `.dockerignore` exists, a copy of what it does not
    /// hide made under `scratch` (hard links where possible), so a RUN sees exactly what COPY
    /// would.
    pub fn bind_source(&self, rel: &Path, scratch: &Path) -> Result<PathBuf, ContextError> {
        let Some(inside) = self.resolve(rel)? else {
            return Err(ContextError::Io {
                path: self.root.join(rel),
                source: io::Error::from(io::ErrorKind::NotFound),
            });
        };
        if self.ignore.is_none() || self.is_excluded(&inside) && !inside.as_os_str().is_empty() {
            if self.ignore.is_some() {
                return Err(ContextError::Io {
                    path: self.root.join(rel),
                    source: io::Error::other("excluded by .dockerignore"),
                });
            }
            return Ok(self.root.join(inside));
        }
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ContextError::Io { path, source }
        };
        let _ = fs::remove_dir_all(scratch);
        let top = self.root.join(&inside);
        if !fs::symlink_metadata(&top).map_err(io_err(&top))?.is_dir() {
            fs::create_dir_all(scratch).map_err(io_err(scratch))?;
            let dst = scratch.join("file");
            fs::hard_link(&top, &dst)
                .or_else(|_| fs::copy(&top, &dst).map(|_| ()))
                .map_err(io_err(&top))?;
            return Ok(dst);
        }
        for p in self.walk(&inside)? {
            let sub = p.strip_prefix(&inside).unwrap_or(&p);
            let src = self.root.join(&p);
            let dst = scratch.join(sub);
            let m = fs::symlink_metadata(&src).map_err(io_err(&src))?;
            if m.is_dir() {
                fs::create_dir_all(&dst).map_err(io_err(&dst))?;
                fs::set_permissions(&dst, m.permissions()).map_err(io_err(&dst))?;
            } else if m.file_type().is_symlink() {
                let t = fs::read_link(&src).map_err(io_err(&src))?;
                std::os::unix::fs::symlink(t, &dst).map_err(io_err(&dst))?;
            } else if m.is_file() {
                fs::hard_link(&src, &dst)
                    .or_else(|_| fs::copy(&src, &dst).map(|_| ()))
                    .map_err(io_err(&src))?;
            }
        }
        Ok(scratch.to_path_buf())
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

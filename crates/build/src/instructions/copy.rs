//! COPY and ADD: files from the build context, another stage, or a heredoc into the rootfs.
//!
//! Semantics follow BuildKit: a relative destination is relative to WORKDIR; the destination is
//! a directory when it ends in `/`, when there are several sources, or when it already is a
//! directory; a source directory contributes its *contents*; owners are `--chown`'s, else 0:0
//! for the build context and the source's own for another stage; directories COPY creates on
//! the way get the `--chown` owner; a source that is itself a symlink is followed (inside its
//! root); modes come from the source unless `--chmod`; mtimes are kept. Every write goes through
//! [`kiln_rootfs::Root`], so a destination path through a symlink stays inside the rootfs.

use super::chmod::Chmod;
use crate::context::{clean_rel, Context};
use kiln_rootfs::{Meta, Root};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where COPY reads from.
pub enum Source<'a> {
    /// The build context (`.dockerignore` applied).
    Context(&'a Context),
    /// Another stage's (or image's) root file system, resolved inside that root.
    Root(&'a Root),
}

/// An expanded COPY/ADD.
pub struct CopySpec<'a> {
    pub sources: Vec<String>,
    /// Heredoc sources: (file name, content).
    pub heredocs: Vec<(String, String)>,
    pub dest: String,
    pub workdir: &'a str,
    pub owner: Option<(u32, u32)>,
    pub chmod: Option<Chmod>,
    pub exclude: Vec<String>,
}

/// Why a COPY failed.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("source not found: {0}")]
    NotFound(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error(transparent)]
    Rootfs(#[from] kiln_rootfs::RootError),
    #[error("invalid --exclude pattern {0:?}")]
    BadExclude(String),
    #[error("invalid source pattern {0:?}")]
    BadPattern(String),
}

/// The absolute destination path of a COPY (WORKDIR applied), cleaned, and whether the
/// instruction spelled it as a directory.
pub fn dest_path(dest: &str, workdir: &str) -> (PathBuf, bool) {
    let as_dir = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), dest)
    };
    (clean_rel(&joined), as_dir)
}

fn excluded(rel: &Path, patterns: &[String]) -> Result<bool, CopyError> {
    if patterns.is_empty() {
        return Ok(false);
    }
    let s = rel.to_string_lossy();
    for p in patterns {
        let comps_p: Vec<&str> = p.trim_matches('/').split('/').collect();
        let comps_s: Vec<&str> = s.split('/').collect();
        // A pattern matches a path or any of its ancestors (Docker's exclude semantics).
        if comps_s.len() >= comps_p.len() {
            let mut all = true;
            for (pp, ss) in comps_p.iter().zip(comps_s.iter()) {
                if !crate::context::glob_match(pp, ss)
                    .map_err(|_| CopyError::BadExclude(p.clone()))?
                {
                    all = false;
                    break;
                }
            }
            if all {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// A source that matched nothing; when it is in the context directory but `.dockerignore`
/// excludes it, the error says so (a classic time sink: BuildKit only says "not found").
fn not_found(source: &Source<'_>, s: &str) -> CopyError {
    if let Source::Context(ctx) = source {
        let rel = clean_rel(s);
        let on_disk =
            !rel.as_os_str().is_empty() && std::fs::symlink_metadata(ctx.root().join(&rel)).is_ok();
        if on_disk && ctx.is_excluded(&rel) {
            return CopyError::NotFound(format!(
                "{s} (it is in the context directory, but .dockerignore excludes it)"
            ));
        }
    }
    CopyError::NotFound(s.to_string())
}

/// Runs the copy; returns every path written in the rootfs (relative), for the snapshot.
pub fn copy(
    root: &Root,
    source: &Source<'_>,
    spec: &CopySpec<'_>,
) -> Result<Vec<PathBuf>, CopyError> {
    let mut matched: Vec<Matched> = Vec::new();
    for s in &spec.sources {
        let found = expand(source, s)?;
        // BuildKit copies with `AllowEmptyWildcard`: a pattern matching nothing is not an
        // error, a plain path that does not exist is.
        if found.is_empty() && !has_glob(s) {
            return Err(not_found(source, s));
        }
        matched.extend(found);
    }
    copy_matched(root, source, spec, matched)
}

/// The paths one source names in `source` (globs expanded), each resolved for reading.
fn expand(source: &Source<'_>, s: &str) -> Result<Vec<Matched>, CopyError> {
    Ok(match source {
        Source::Context(ctx) => {
            let mut v = Vec::new();
            for rel in ctx.expand(s)? {
                v.push(follow_in_context(ctx, rel)?);
            }
            v
        }
        Source::Root(r) => {
            let plain = Context::plain(r.path());
            let mut v = Vec::new();
            for rel in plain.expand(s)? {
                // Resolve inside the stage's root: a symlink such as `/rootlink -> /`
                // stays inside it (CVE-2024-1753). A symlink named as the source is
                // followed, as BuildKit's copy does (`FollowSymlinks`).
                match r.resolve(&rel) {
                    Ok(abs) if fs::symlink_metadata(&abs).is_ok() => v.push(Matched {
                        walk_rel: rel.clone(),
                        rel,
                        abs,
                    }),
                    Ok(_) | Err(kiln_rootfs::RootError::NotFound { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            v
        }
    })
}

/// Copies already expanded sources (and the spec's heredocs) to the spec's destination.
fn copy_matched(
    root: &Root,
    source: &Source<'_>,
    spec: &CopySpec<'_>,
    matched: Vec<Matched>,
) -> Result<Vec<PathBuf>, CopyError> {
    let (dest, spelled_dir) = dest_path(&spec.dest, spec.workdir);
    let preserve_owner = matches!(source, Source::Root(_));
    let n_items = matched.len() + spec.heredocs.len();
    let dest_exists_as_dir = is_dir_in(root, &dest);
    // A destination is a directory when spelled so, when it already is one, or when several
    // items go there. A pattern with a single match behaves as that one path (so
    // `COPY dir/* /foo` with one match writes the file `/foo`, as BuildKit does).
    let dest_is_dir = spelled_dir || n_items > 1 || dest_exists_as_dir;
    let owner = spec.owner.unwrap_or((0, 0));
    let mut written = Vec::new();
    // Directories COPY creates on the way get the `--chown` owner (fsutil's `MkdirAll` with
    // the copy's chowner), else root.
    let parent_meta = meta(0o755, owner, None);
    if dest_is_dir {
        if !dest.as_os_str().is_empty() {
            if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                root.create_dir_all(parent, &parent_meta)?;
            }
            if !dest_exists_as_dir {
                root.mkdir(&dest, &meta(0o755, owner, None))?;
                written.push(dest.clone());
            }
        }
    } else if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        root.create_dir_all(parent, &parent_meta)?;
    }
    for (name, content) in &spec.heredocs {
        let target = if dest_is_dir {
            dest.join(name)
        } else {
            dest.clone()
        };
        let mode = spec.chmod.as_ref().map_or(0o644, |c| c.apply(0o644, false));
        root.write_file(&target, &mut content.as_bytes(), &meta(mode, owner, None))?;
        written.push(target);
    }
    for Matched { rel, walk_rel, abs } in matched {
        let m = fs::symlink_metadata(&abs).map_err(|e| CopyError::Read {
            path: abs.clone(),
            source: e,
        })?;
        if m.is_dir() {
            // A directory contributes its contents. A destination that does not exist yet is
            // created with the source directory's mode, owner and mtime (`--chmod`/`--chown`
            // applied), as fsutil's copyDirectory does; an existing one is left as it is.
            if !dest.as_os_str().is_empty() && !is_dir_in(root, &dest) {
                copy_entry(root, &abs, &dest, spec, preserve_owner)?;
                written.push(dest.clone());
            }
            let walker = match source {
                Source::Context(ctx) => ctx.walk(&walk_rel)?,
                Source::Root(_) => Context::plain(&abs).walk(Path::new(""))?,
            };
            let base = match source {
                Source::Context(_) => walk_rel.clone(),
                Source::Root(_) => PathBuf::new(),
            };
            let src_root = match source {
                Source::Context(ctx) => ctx.root().to_path_buf(),
                Source::Root(_) => abs.clone(),
            };
            for e in walker {
                let sub = e.strip_prefix(&base).unwrap_or(&e).to_path_buf();
                if sub.as_os_str().is_empty() {
                    continue;
                }
                if excluded(&sub, &spec.exclude)? {
                    continue;
                }
                let target = dest.join(&sub);
                copy_entry(root, &src_root.join(&e), &target, spec, preserve_owner)?;
                written.push(target);
            }
        } else {
            if excluded(&rel, &spec.exclude)? {
                continue;
            }
            let target = if dest_is_dir {
                dest.join(rel.file_name().unwrap_or(rel.as_os_str()))
            } else {
                dest.clone()
            };
            copy_entry(root, &abs, &target, spec, preserve_owner)?;
            written.push(target);
        }
    }
    Ok(written)
}

/// `COPY --parents`: each match keeps its path below the source's root, or below a `/./`
/// pivot in the source (rsync's `--relative`), under the destination, which is always a
/// directory. This is BuildKit's copy of the root (or the pivot) with the source as an include
/// pattern: the destination is created 0755 with the `--chown` owner; parent directories on the
/// way are created only where a match needs them, each with its source directory's mode, owner
/// (kept for a stage or image, 0:0 for the context, `--chown` over both) and mtime, `--chmod`
/// applied (fsutil's `createParentDirs` + `copyFileInfo`); a match that is a symlink is copied
/// as the symlink (the tree walk does not follow it); a matched directory brings its tree.
pub fn copy_parents(
    root: &Root,
    source: &Source<'_>,
    spec: &CopySpec<'_>,
) -> Result<Vec<PathBuf>, CopyError> {
    let (dest, _) = dest_path(&spec.dest, spec.workdir);
    let owner = spec.owner.unwrap_or((0, 0));
    let preserve_owner = matches!(source, Source::Root(_));
    let mut written = Vec::new();
    if !dest.as_os_str().is_empty() && !is_dir_in(root, &dest) {
        root.create_dir_all(&dest, &meta(0o755, owner, None))?;
        written.push(dest.clone());
    }
    for s in &spec.sources {
        let pivot = s
            .split_once("/./")
            .map(|(before, _)| clean_rel(before))
            .unwrap_or_default();
        let found = expand_parents(source, s)?;
        if found.is_empty() && !has_glob(s) {
            return Err(not_found(source, s));
        }
        for m in found {
            let kept = m.rel.strip_prefix(&pivot).unwrap_or(&m.rel).to_path_buf();
            // Parents first, top down, each only when missing.
            let mut ancestors: Vec<&Path> = kept
                .ancestors()
                .skip(1)
                .filter(|a| !a.as_os_str().is_empty())
                .collect();
            ancestors.reverse();
            for a in ancestors {
                let target = dest.join(a);
                if is_dir_in(root, &target) {
                    continue;
                }
                let Some(host) = host_path(source, &pivot.join(a), true)? else {
                    return Err(CopyError::NotFound(pivot.join(a).display().to_string()));
                };
                copy_entry(root, &host, &target, spec, preserve_owner)?;
                written.push(target);
            }
            let target = dest.join(&kept);
            let own = host_path(source, &m.rel, false)?;
            if let Some(link) =
                own.filter(|h| fs::symlink_metadata(h).is_ok_and(|m| m.is_symlink()))
            {
                if !excluded(&m.rel, &spec.exclude)? {
                    copy_entry(root, &link, &target, spec, preserve_owner)?;
                    written.push(target);
                }
                continue;
            }
            let one = CopySpec {
                sources: Vec::new(),
                heredocs: Vec::new(),
                dest: format!("/{}", target.display()),
                workdir: "/",
                owner: spec.owner,
                chmod: spec.chmod.clone(),
                exclude: spec.exclude.clone(),
            };
            written.extend(copy_matched(root, source, &one, vec![m])?);
        }
    }
    Ok(written)
}

/// The matches of one `COPY --parents` source. BuildKit turns it into an include pattern,
/// where a `**` component matches any number of directories, none included (moby's
/// patternmatcher); other sources expand as COPY's. A match below a matched directory is
/// dropped: the directory brings its whole tree.
fn expand_parents(source: &Source<'_>, s: &str) -> Result<Vec<Matched>, CopyError> {
    let rel = clean_rel(s);
    let comps: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if !comps.iter().any(|c| c == "**") {
        return expand(source, s);
    }
    // List everything below the literal prefix (no symlink followed, .dockerignore applied
    // for the context) and match the rest of the pattern against each path.
    let split = comps
        .iter()
        .position(|c| has_glob(c))
        .unwrap_or(comps.len());
    let prefix: PathBuf = comps[..split].iter().collect();
    let pattern = &comps[split..];
    let listing = match source {
        Source::Context(ctx) => match ctx.resolve(&prefix)? {
            Some(_) => ctx.walk(&prefix)?,
            None => Vec::new(),
        },
        Source::Root(r) => {
            let plain = Context::plain(r.path());
            match plain.resolve(&prefix)? {
                Some(_) => plain.walk(&prefix)?,
                None => Vec::new(),
            }
        }
    };
    let mut out: Vec<Matched> = Vec::new();
    for p in listing {
        let Ok(sub) = p.strip_prefix(&prefix) else {
            continue;
        };
        let names: Vec<String> = sub
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if !match_components(pattern, &names).map_err(|_| CopyError::BadPattern(s.into()))? {
            continue;
        }
        // The listing is depth-first, parents before children: whatever lies below the
        // last match follows it directly.
        if out.last().is_some_and(|m| p.starts_with(&m.rel)) {
            continue;
        }
        out.push(match source {
            Source::Context(ctx) => follow_in_context(ctx, p)?,
            Source::Root(r) => Matched {
                abs: r.resolve(&p)?,
                walk_rel: p.clone(),
                rel: p,
            },
        });
    }
    Ok(out)
}

/// Whether path components `names` match pattern components, `**` matching any number of
/// components (none included), others one component each as Go's `filepath.Match`.
fn match_components(pattern: &[String], names: &[String]) -> Result<bool, &'static str> {
    let Some((first, rest)) = pattern.split_first() else {
        return Ok(names.is_empty());
    };
    if first == "**" {
        for skip in 0..=names.len() {
            if match_components(rest, &names[skip..])? {
                return Ok(true);
            }
        }
        return Ok(false);
    }
    match names.split_first() {
        Some((n, more)) if crate::context::glob_match(first, n)? => match_components(rest, more),
        _ => Ok(false),
    }
}

/// The host path of `rel` in `source`, resolved inside it; the last component is followed
/// when `follow`. `None` when a context path does not exist.
fn host_path(source: &Source<'_>, rel: &Path, follow: bool) -> Result<Option<PathBuf>, CopyError> {
    Ok(match source {
        Source::Context(ctx) => match (follow, rel.parent(), rel.file_name()) {
            (false, Some(parent), Some(name)) => {
                ctx.resolve(parent)?.map(|p| ctx.root().join(p).join(name))
            }
            _ => ctx.resolve(rel)?.map(|p| ctx.root().join(p)),
        },
        Source::Root(r) if follow => Some(r.resolve(rel)?),
        Source::Root(r) => Some(r.path().join(r.resolve_nofollow(rel)?)),
    })
}

/// One matched source: the path as named (for the destination file name), the path to walk
/// (symlinks followed), and the host path to read.
struct Matched {
    rel: PathBuf,
    walk_rel: PathBuf,
    abs: PathBuf,
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn is_dir_in(root: &Root, rel: &Path) -> bool {
    match root.resolve(rel) {
        Ok(p) => fs::metadata(p).is_ok_and(|m| m.is_dir()),
        Err(_) => false,
    }
}

/// A context path named by a COPY source. When it is itself a symlink it is followed, as
/// BuildKit does (`FollowSymlinks` on the source path), but resolved inside the context root,
/// so a link pointing out of the context never reads a host file (HOSTILE-INPUTS 28).
/// Symlinks *below* a copied directory are copied as symlinks.
fn follow_in_context(ctx: &Context, rel: PathBuf) -> Result<Matched, CopyError> {
    // Every component is resolved inside the context (a symlink named as the source is
    // followed, as BuildKit's copy does with FollowSymlinks), so `abs` never leaves it.
    let Some(walk_rel) = ctx.resolve(&rel)? else {
        return Err(CopyError::NotFound(rel.display().to_string()));
    };
    let abs = ctx.root().join(&walk_rel);
    Ok(Matched { rel, walk_rel, abs })
}

fn meta(mode: u32, owner: (u32, u32), mtime: Option<(i64, u32)>) -> Meta {
    Meta {
        mode,
        uid: owner.0,
        gid: owner.1,
        mtime,
        xattrs: Vec::new(),
    }
}

/// Copies one entry (no recursion) from a host path already known to be safe to read (inside
/// the context, or resolved inside a stage root) to `target` in `root`.
fn copy_entry(
    root: &Root,
    src: &Path,
    target: &Path,
    spec: &CopySpec<'_>,
    preserve_owner: bool,
) -> Result<(), CopyError> {
    let read_err = |e| CopyError::Read {
        path: src.to_path_buf(),
        source: e,
    };
    let m = fs::symlink_metadata(src).map_err(read_err)?;
    // Without `--chown`, files from the build context belong to root, and files from another
    // stage keep their owner (BuildKit copies the stage's uid/gid).
    let owner = spec.owner.unwrap_or(if preserve_owner {
        (m.uid(), m.gid())
    } else {
        (0, 0)
    });
    let src_mode = m.permissions().mode() & 0o7777;
    let mode = spec
        .chmod
        .as_ref()
        .map_or(src_mode, |c| c.apply(src_mode, m.is_dir()));
    let mtime = Some((m.mtime(), m.mtime_nsec() as u32));
    let ft = m.file_type();
    if ft.is_dir() {
        root.mkdir(target, &meta(mode, owner, mtime))?;
    } else if ft.is_symlink() {
        let link = fs::read_link(src).map_err(read_err)?;
        root.symlink(target, &link)?;
        root.set_metadata(target, &meta(0o777, owner, mtime))?;
    } else if ft.is_file() {
        let mut f = fs::File::open(src).map_err(read_err)?;
        root.write_file(target, &mut f, &meta(mode, owner, mtime))?;
    } else {
        // FIFOs, sockets and devices in a context are not copied by docker either.
        tracing::warn!(path = %src.display(), "skipping special file in COPY source");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(
            dest_path("./", "/srv/app"),
            (PathBuf::from("srv/app"), true)
        );
        assert_eq!(dest_path("x", "/"), (PathBuf::from("x"), false));
        assert_eq!(dest_path("/a/b/", "/w"), (PathBuf::from("a/b"), true));
        assert_eq!(dest_path("../../x", "/w"), (PathBuf::from("x"), false));
    }

    #[test]
    fn double_star_matches_any_depth() {
        let v = |s: &str| -> Vec<String> { s.split('/').map(str::to_string).collect() };
        let pat = v("**/*.txt");
        assert!(match_components(&pat, &v("a.txt")).unwrap());
        assert!(match_components(&pat, &v("x/y/c.txt")).unwrap());
        assert!(!match_components(&pat, &v("x/skip.md")).unwrap());
        assert!(!match_components(&v("x/*"), &v("x/y/z")).unwrap());
        assert!(match_components(&v("x/**"), &v("x/y/z")).unwrap());
    }

    #[test]
    fn exclude_matches_ancestors() {
        let pats = vec!["*.tmp".to_string(), "build".to_string()];
        assert!(excluded(Path::new("a.tmp"), &pats).unwrap());
        assert!(excluded(Path::new("build/x.o"), &pats).unwrap());
        assert!(!excluded(Path::new("src/a.rs"), &pats).unwrap());
    }
}

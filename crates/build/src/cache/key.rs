//! Cache keys: a framed rolling sha256 per step.
//!
//! The key of step *n* is `sha256(frame("kiln-cache-key","v1") ‖ frame("parent", key(n-1)) ‖
//! frame("platform", …) ‖ frame("instruction", …) ‖ frame("build-arg", name, value)… ‖
//! frame("env", name, value)… ‖ frame("source", path, tree digest)… ‖ …)`. A frame is the
//! tag's length and bytes, the number of values, then each value's length and bytes, so the
//! byte stream parses back into exactly one sequence of fields: two different inputs never
//! share a pre-image (no `a=b c` vs `a b=c` ambiguity, the flaw behind kaniko#2241-style
//! collisions). The chain starts from the base image's *manifest digest* (or `scratch`, or the
//! source stage's final key), so a different base, platform, build-arg value, ENV, WORKDIR,
//! HEALTHCHECK or ONBUILD value anywhere above a step changes its key (HOSTILE-INPUTS 40).
//! Metadata instructions get a key like every other step; they simply never have a layer.
//!
//! Never part of a key: secret bytes (only a secret's *id*), the proxy build args
//! (`HTTP_PROXY` & co., which Docker also keeps out of the cache and history because they
//! carry passwords), file mtimes.

use crate::context::Context;
use kiln_oci::Digest;
use sha2::{Digest as _, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const VERSION: &str = "v1";

/// A step's cache key: 64 lowercase hex characters (a sha256), usable as a registry tag and a
/// file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CacheKey(String);

impl CacheKey {
    /// The key from its hex form; `None` unless it is 64 lowercase hex characters.
    pub fn from_hex(s: &str) -> Option<CacheKey> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| CacheKey(s.to_string()))
    }

    /// The hex string (also the registry tag and the local index file name).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn of(h: Sha256) -> CacheKey {
        CacheKey(hex::encode(h.finalize()))
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CacheKey({})", &self.0[..12.min(self.0.len())])
    }
}

impl std::str::FromStr for CacheKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CacheKey::from_hex(s)
            .ok_or_else(|| format!("invalid cache key {s:?}: expected 64 hex digits"))
    }
}

impl TryFrom<String> for CacheKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<CacheKey> for String {
    fn from(k: CacheKey) -> String {
        k.0
    }
}

/// What a stage starts from: the root of its key chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseIdentity {
    /// `FROM scratch`.
    Scratch,
    /// A registry image, by the digest of its (platform-specific) image manifest, never by
    /// tag: a moved tag must change every key.
    Image(Digest),
    /// An earlier stage, by the key of its last step ([`KeyChain::current`]).
    Stage(CacheKey),
}

impl BaseIdentity {
    fn encode(&self) -> String {
        match self {
            BaseIdentity::Scratch => "scratch".into(),
            BaseIdentity::Image(d) => format!("image:{d}"),
            BaseIdentity::Stage(k) => format!("stage:{k}"),
        }
    }
}

/// Content digests of the files a step reads: one tree digest per source path, in the order
/// the instruction names them (order matters: a later source overwrites an earlier one).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileDigests {
    entries: Vec<(String, Digest)>,
}

impl FileDigests {
    /// No files.
    pub fn new() -> FileDigests {
        FileDigests::default()
    }

    /// Adds a source (`path` as the step names it, relative to its root) and its tree digest.
    pub fn push(&mut self, path: impl Into<String>, digest: Digest) {
        self.entries.push((path.into(), digest));
    }

    /// The sources and digests.
    pub fn entries(&self) -> &[(String, Digest)] {
        &self.entries
    }

    /// True when no source was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Everything a step's key covers besides its parent and platform. Build it with the
/// chained setters; only what the step really reads needs to be given.
#[derive(Debug, Clone, Default)]
pub struct StepInputs {
    instruction: String,
    build_args: Vec<(String, String)>,
    env: Vec<(String, String)>,
    sources: Option<FileDigests>,
    destination: Option<String>,
    /// Every stage the step reads (`COPY --from`, each `RUN --mount=…,from=`), in order.
    from_stages: Vec<CacheKey>,
    bind_mounts: Vec<(String, FileDigests)>,
    secret_ids: Vec<String>,
}

impl StepInputs {
    /// A step with this expanded instruction text, flags included (the engine passes
    /// `format!("{expanded:?}")` of the expanded `Instruction`: every flag and heredoc body is
    /// in it, and secret mounts carry only their ids).
    pub fn new(instruction: impl Into<String>) -> StepInputs {
        StepInputs {
            instruction: instruction.into(),
            ..StepInputs::default()
        }
    }

    /// The build args in scope (name, value). Sorted by name; the proxy args are left out.
    pub fn build_args<I, K, V>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.build_args = args
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        self
    }

    /// The environment the step sees (image config Env), sorted by name.
    pub fn env<I, K, V>(mut self, env: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        self.env = env.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        self
    }

    /// COPY/ADD: the sources' digests (see [`hash_context_sources`]).
    pub fn sources(mut self, files: FileDigests) -> Self {
        self.sources = Some(files);
        self
    }

    /// COPY/ADD: the destination (as expanded, and resolved against WORKDIR by the caller if
    /// it wishes; WORKDIR is in the chain anyway).
    pub fn destination(mut self, dest: impl Into<String>) -> Self {
        self.destination = Some(dest.into());
        self
    }

    /// `COPY --from=<stage>` (or `RUN --mount=from=<stage>`): that stage's final key. Each
    /// call adds one: a RUN binding two stages depends on both.
    pub fn from_stage(mut self, key: CacheKey) -> Self {
        self.from_stages.push(key);
        self
    }

    /// `RUN --mount=type=bind,target=…`: the bound files' digests.
    pub fn bind_mount(mut self, target: impl Into<String>, files: FileDigests) -> Self {
        self.bind_mounts.push((target.into(), files));
        self
    }

    /// `RUN --mount=type=secret,id=…`: the id only. The secret's bytes are never hashed: a
    /// rotated token must not invalidate the cache, and a key must not be a hash of a secret.
    pub fn secret_id(mut self, id: impl Into<String>) -> Self {
        self.secret_ids.push(id.into());
        self
    }
}

/// The named parts of a key, each with the sha256 of its framed bytes (never the values
/// themselves: a build arg may be sensitive). Kept so that a miss can be explained.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KeyParts {
    /// (label, sha256 hex of the field), in key order. Labels: `parent`, `platform`,
    /// `instruction`, `build arg NAME`, `env NAME`, `source PATH`, `destination`,
    /// `copy --from stage`, `bind mount TARGET`, `secret id ID`.
    pub parts: Vec<(String, String)>,
}

/// What differs between the parts of two keys, in words ("build arg VERSION changed",
/// "source src/main.rs added"). Empty when the parts are the same.
pub fn explain(old: &KeyParts, new: &KeyParts) -> Vec<String> {
    let a: BTreeMap<&str, &str> = old
        .parts
        .iter()
        .map(|(l, d)| (l.as_str(), d.as_str()))
        .collect();
    let b: BTreeMap<&str, &str> = new
        .parts
        .iter()
        .map(|(l, d)| (l.as_str(), d.as_str()))
        .collect();
    let mut out = Vec::new();
    for (label, d) in &b {
        match a.get(label) {
            None => out.push(format!("{label} added")),
            Some(x) if x != d => out.push(format!("{label} changed")),
            _ => {}
        }
    }
    for label in a.keys() {
        if !b.contains_key(label) {
            out.push(format!("{label} removed"));
        }
    }
    out
}

/// Builds a key field by field and records the parts.
pub(crate) struct Framer {
    hasher: Sha256,
    parts: Vec<(String, String)>,
}

impl Framer {
    fn new() -> Framer {
        let mut f = Framer {
            hasher: Sha256::new(),
            parts: Vec::new(),
        };
        f.raw("kiln-cache-key", &[VERSION.as_bytes()]);
        f
    }

    /// One frame: tag length and bytes, value count, each value's length and bytes.
    pub(crate) fn frame(tag: &str, values: &[&[u8]]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(16 + values.iter().map(|v| v.len() + 8).sum::<usize>());
        buf.extend_from_slice(&(tag.len() as u32).to_be_bytes());
        buf.extend_from_slice(tag.as_bytes());
        buf.extend_from_slice(&(values.len() as u32).to_be_bytes());
        for v in values {
            buf.extend_from_slice(&(v.len() as u64).to_be_bytes());
            buf.extend_from_slice(v);
        }
        buf
    }

    fn raw(&mut self, tag: &str, values: &[&[u8]]) {
        self.hasher.update(Framer::frame(tag, values));
    }

    fn field(&mut self, label: String, tag: &str, values: &[&[u8]]) {
        let bytes = Framer::frame(tag, values);
        self.hasher.update(&bytes);
        self.parts
            .push((label, hex::encode(Sha256::digest(&bytes))));
    }

    fn files(&mut self, tag: &str, label_prefix: &str, files: &FileDigests) {
        self.raw(
            &format!("{tag}-count"),
            &[&(files.entries.len() as u64).to_be_bytes()],
        );
        for (path, digest) in &files.entries {
            // The context root itself is the empty path: show it as `.`.
            let shown = if path.is_empty() { "." } else { path.as_str() };
            self.field(
                format!("{label_prefix} {shown}"),
                tag,
                &[path.as_bytes(), digest.to_string().as_bytes()],
            );
        }
    }
}

/// The key chain of one stage. Call [`KeyChain::step`] for every instruction, in order,
/// metadata ones included.
#[derive(Debug, Clone)]
pub struct KeyChain {
    platform: String,
    current: CacheKey,
    last_parts: KeyParts,
}

impl KeyChain {
    /// Starts a chain at `base` for `platform`.
    pub fn new(base: &BaseIdentity, platform: &kiln_oci::Platform) -> KeyChain {
        let platform = platform.to_string();
        let mut f = Framer::new();
        f.field("base".into(), "base", &[base.encode().as_bytes()]);
        f.field("platform".into(), "platform", &[platform.as_bytes()]);
        let current = CacheKey::of(f.hasher);
        KeyChain {
            platform,
            current,
            last_parts: KeyParts { parts: f.parts },
        }
    }

    /// The key of the last step (the base's key before any step): a stage's final key, for
    /// `FROM <stage>` and `COPY --from=<stage>` of later stages.
    pub fn current(&self) -> &CacheKey {
        &self.current
    }

    /// The parts of the last key, for explaining a miss.
    pub fn last_parts(&self) -> &KeyParts {
        &self.last_parts
    }

    /// Advances the chain by one step and returns its key.
    pub fn step(&mut self, inputs: &StepInputs) -> CacheKey {
        let mut f = Framer::new();
        f.field(
            "parent".into(),
            "parent",
            &[self.current.as_str().as_bytes()],
        );
        f.field("platform".into(), "platform", &[self.platform.as_bytes()]);
        f.field(
            "instruction".into(),
            "instruction",
            &[inputs.instruction.as_bytes()],
        );
        let mut args: BTreeMap<&str, &str> = BTreeMap::new();
        for (k, v) in &inputs.build_args {
            if !kiln_dockerfile::is_proxy_arg(k) {
                args.insert(k, v);
            }
        }
        f.raw("build-arg-count", &[&(args.len() as u64).to_be_bytes()]);
        for (k, v) in args {
            f.field(
                format!("build arg {k}"),
                "build-arg",
                &[k.as_bytes(), v.as_bytes()],
            );
        }
        let env: BTreeMap<&str, &str> = inputs
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        f.raw("env-count", &[&(env.len() as u64).to_be_bytes()]);
        for (k, v) in env {
            f.field(format!("env {k}"), "env", &[k.as_bytes(), v.as_bytes()]);
        }
        if let Some(files) = &inputs.sources {
            f.files("source", "source", files);
        }
        if let Some(d) = &inputs.destination {
            f.field("destination".into(), "destination", &[d.as_bytes()]);
        }
        f.raw(
            "from-stage-count",
            &[&(inputs.from_stages.len() as u64).to_be_bytes()],
        );
        for (i, k) in inputs.from_stages.iter().enumerate() {
            f.field(
                format!("--from stage #{i}"),
                "from-stage",
                &[k.as_str().as_bytes()],
            );
        }
        for (target, files) in &inputs.bind_mounts {
            f.field(
                format!("bind mount {target}"),
                "bind-target",
                &[target.as_bytes()],
            );
            f.files("bind-file", &format!("bind mount {target}:"), files);
        }
        for id in &inputs.secret_ids {
            f.field(format!("secret id {id}"), "secret-id", &[id.as_bytes()]);
        }
        let key = CacheKey::of(f.hasher);
        tracing::debug!(
            key = %key,
            parts = ?f.parts.iter().map(|(l, d)| loggable_part(l, d)).collect::<Vec<_>>(),
            "cache key"
        );
        self.current = key.clone();
        self.last_parts = KeyParts { parts: f.parts };
        key
    }
}

/// A part for the debug log: its label, and for parts that are not values of build args or
/// env vars a short prefix of its digest (to compare two builds' logs). An unsalted digest
/// of a value would let a reader of the log guess a low-entropy value offline.
fn loggable_part(label: &str, digest: &str) -> String {
    if label.starts_with("build arg ") || label.starts_with("env ") {
        label.to_string()
    } else {
        format!("{label}={}", &digest[..12.min(digest.len())])
    }
}

/// One entry of a tree walk, hashed into a tree digest.
fn hash_entry(h: &mut Sha256, rel: &Path, abs: &Path) -> io::Result<()> {
    let meta = fs::symlink_metadata(abs)?;
    let ft = meta.file_type();
    let (kind, payload): (&[u8], Vec<u8>) = if ft.is_file() {
        let mut f = fs::File::open(abs)?;
        let mut fh = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            fh.update(&buf[..n]);
        }
        (b"file", fh.finalize().to_vec())
    } else if ft.is_dir() {
        (b"dir", Vec::new())
    } else if ft.is_symlink() {
        (
            b"symlink",
            fs::read_link(abs)?.as_os_str().as_bytes().to_vec(),
        )
    } else if ft.is_fifo() {
        (b"fifo", Vec::new())
    } else if ft.is_char_device() || ft.is_block_device() {
        (
            if ft.is_char_device() {
                b"char"
            } else {
                b"block"
            },
            meta.rdev().to_be_bytes().to_vec(),
        )
    } else {
        (b"other", Vec::new())
    };
    // Mode includes setuid/setgid/sticky; owners matter for COPY --from and --chown-less ADD.
    let mode = (meta.mode() & 0o7777).to_be_bytes();
    let uid = meta.uid().to_be_bytes();
    let gid = meta.gid().to_be_bytes();
    h.update(Framer::frame(
        "entry",
        &[
            rel.as_os_str().as_bytes(),
            kind,
            &mode,
            &uid,
            &gid,
            &payload,
        ],
    ));
    Ok(())
}

/// Lists `top` and everything below it (no symlink is followed), parents before children,
/// children sorted by name; paths relative to `top` (`""` for `top` itself).
fn walk_sorted(top: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.as_os_str().is_empty() {
            top.to_path_buf()
        } else {
            top.join(&rel)
        };
        let meta = fs::symlink_metadata(&abs)?;
        out.push(rel.clone());
        if meta.is_dir() {
            let mut names = fs::read_dir(&abs)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()?;
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(rel.join(n));
            }
        }
    }
    Ok(out)
}

/// The digest of the tree at `path` (a file, symlink or directory, not followed): every
/// entry's relative path, type, mode, owner, and content digest or link target. Mtimes are
/// left out: a `touch` or a fresh checkout must not invalidate the cache.
pub fn hash_tree(path: &Path) -> io::Result<Digest> {
    let mut h = Sha256::new();
    for rel in walk_sorted(path)? {
        let abs = if rel.as_os_str().is_empty() {
            path.to_path_buf()
        } else {
            path.join(&rel)
        };
        hash_entry(&mut h, &rel, &abs)?;
    }
    Digest::from_hex(&hex::encode(h.finalize())).map_err(io::Error::other)
}

/// Digests of COPY/ADD sources `rel_paths` (already expanded, relative to `root`), skipping
/// every entry for which `ignore` (given the path relative to `root`) is true. Ignored
/// directories are still entered, so that `!exception` patterns below them count. The
/// parents of each source are resolved inside `root` (a context symlink cannot make kiln
/// read a host file, HOSTILE-INPUTS 28); the source itself is not followed.
pub fn hash_context_sources(
    root: &Path,
    rel_paths: &[PathBuf],
    ignore: &dyn Fn(&Path) -> bool,
) -> io::Result<FileDigests> {
    let confined = kiln_rootfs::Root::open(root).map_err(io::Error::other)?;
    let mut out = FileDigests::new();
    for rel in rel_paths {
        let inside = confined.resolve_nofollow(rel).map_err(io::Error::other)?;
        let top = root.join(&inside);
        let mut h = Sha256::new();
        for sub in walk_sorted(&top)? {
            let from_root = inside.join(&sub);
            if !sub.as_os_str().is_empty() && ignore(&from_root) {
                continue;
            }
            let abs = if sub.as_os_str().is_empty() {
                top.clone()
            } else {
                top.join(&sub)
            };
            hash_entry(&mut h, &sub, &abs)?;
        }
        let d = Digest::from_hex(&hex::encode(h.finalize())).map_err(io::Error::other)?;
        out.push(rel.to_string_lossy(), d);
    }
    Ok(out)
}

/// [`hash_context_sources`] for COPY/ADD source patterns in the build context, with exactly
/// the expansion (globs) and `.dockerignore` walk COPY itself uses.
pub(crate) fn context_sources(ctx: &Context, sources: &[String]) -> io::Result<FileDigests> {
    let mut out = FileDigests::new();
    for source in sources {
        // `**` (COPY --parents) matches at any depth, which `expand` does not do: hash every
        // file below the pattern's literal prefix instead, so any file it could match is in
        // the key (a wider key than needed, never a stale hit).
        let rels = if source.split('/').any(|c| c.contains("**")) {
            let prefix: Vec<&str> = source
                .split('/')
                .take_while(|c| !c.contains(['*', '?', '[']))
                .collect();
            let prefix = crate::context::clean_rel(&prefix.join("/"));
            match ctx.resolve(&prefix).map_err(io::Error::other)? {
                Some(_) => vec![prefix],
                None => Vec::new(),
            }
        } else {
            ctx.expand(source).map_err(io::Error::other)?
        };
        // A pattern matching nothing still counts: adding a file that matches it must change
        // the key (COPY fails on it today, but the key must not depend on that).
        out.push(
            format!("pattern {source}"),
            Digest::of(&(rels.len() as u64).to_be_bytes()),
        );
        for rel in rels {
            // Resolved as COPY resolves it (inside the context, symlinks followed).
            let Some(inside) = ctx.resolve(&rel).map_err(io::Error::other)? else {
                continue;
            };
            let mut h = Sha256::new();
            for sub in ctx.walk(&inside).map_err(io::Error::other)? {
                let within = sub.strip_prefix(&inside).unwrap_or(&sub).to_path_buf();
                hash_entry(&mut h, &within, &ctx.root().join(&sub))?;
            }
            let d = Digest::from_hex(&hex::encode(h.finalize())).map_err(io::Error::other)?;
            out.push(rel.to_string_lossy(), d);
        }
    }
    Ok(out)
}

/// Context source digests already computed, by source list, so that the engine's look-ahead
/// pass (which computes a stage's keys to prefetch their lookups) and the step itself hash a
/// COPY's sources once. Scope it to one build: the context does not change during a build.
#[derive(Debug, Default)]
pub(crate) struct SourceMemo(
    std::cell::RefCell<std::collections::HashMap<Vec<String>, FileDigests>>,
);

impl SourceMemo {
    fn get(&self, ctx: &Context, sources: &[String]) -> io::Result<FileDigests> {
        if let Some(d) = self.0.borrow().get(sources) {
            return Ok(d.clone());
        }
        let d = context_sources(ctx, sources)?;
        self.0.borrow_mut().insert(sources.to_vec(), d.clone());
        Ok(d)
    }
}

/// Whether the outcome of `expanded` may be looked up and stored (Kaniko's rule): RUN when
/// `--cache-run-layers` (default true), COPY/ADD when `--cache-copy-layers` (default false).
/// Never: metadata instructions (they have no layer; they only advance the key chain),
/// WORKDIR, ADD of a URL or git source and `COPY --from=<image>` (their content is not in the
/// key: a URL's bytes or a tag's target can change under the same text).
pub fn is_cacheable(
    expanded: &kiln_dockerfile::Instruction,
    cache_run_layers: bool,
    cache_copy_layers: bool,
    from_is_stage: &dyn Fn(&str) -> bool,
) -> bool {
    use kiln_dockerfile::Instruction;
    match expanded {
        Instruction::Run(r) => {
            cache_run_layers
                && r.mounts.iter().all(|m| {
                    m.kind != kiln_dockerfile::MountType::Bind
                        || m.from.as_deref().is_none_or(from_is_stage)
                })
        }
        Instruction::Copy(a) | Instruction::Add(a) => {
            cache_copy_layers
                && a.sources
                    .iter()
                    .all(|s| !s.contains("://") && !s.starts_with("git@"))
                && a.from.as_deref().is_none_or(from_is_stage)
        }
        _ => false,
    }
}

/// The [`StepInputs`] of one expanded instruction, as the engine dispatches it:
/// - the instruction text is `format!("{expanded:?}")` (flags, heredoc bodies, mount specs
///   with secret *ids*; never a secret's bytes, which the instruction does not hold);
/// - `env` is the image config's Env before the step, `build_args` the args in scope
///   (`StageEnv::run_build_args`);
/// - COPY/ADD from the context: every source pattern's matches, hashed through the
///   `.dockerignore` walk COPY uses, and the destination;
/// - `COPY --from` / `RUN --mount=…,from=` a stage: that stage's final key, from
///   `stage_key(from)` (`None` for an image reference: the reference text is in the key);
/// - `RUN --mount=type=bind` from the context: the bound files' digests (through `memo`).
pub(crate) fn step_inputs(
    expanded: &kiln_dockerfile::Instruction,
    env: &[(String, String)],
    build_args: &[(String, String)],
    context: &Context,
    stage_key: &dyn Fn(&str) -> Option<CacheKey>,
    memo: &SourceMemo,
) -> io::Result<StepInputs> {
    use kiln_dockerfile::{Instruction, MountType};
    let mut inputs = StepInputs::new(format!("{expanded:?}"))
        .env(env.iter().cloned())
        .build_args(build_args.iter().cloned());
    match expanded {
        Instruction::Copy(args) | Instruction::Add(args) => {
            inputs = inputs.destination(args.dest.clone());
            match &args.from {
                Some(from) => {
                    if let Some(k) = stage_key(from) {
                        inputs = inputs.from_stage(k);
                    }
                }
                None => {
                    // URLs (ADD http://…) are not files of the context: their text is in
                    // the key; their content is not (the engine does not cache them).
                    let local: Vec<String> = args
                        .sources
                        .iter()
                        .filter(|s| !s.contains("://") && !s.starts_with("git@"))
                        .cloned()
                        .collect();
                    inputs = inputs.sources(memo.get(context, &local)?);
                }
            }
        }
        Instruction::Run(r) => {
            for m in &r.mounts {
                let target = m.target.clone().unwrap_or_default();
                match m.kind {
                    MountType::Bind => match &m.from {
                        Some(from) => {
                            if let Some(k) = stage_key(from) {
                                inputs = inputs.from_stage(k);
                            }
                        }
                        None => {
                            let src = m.source.clone().unwrap_or_else(|| ".".into());
                            inputs = inputs.bind_mount(target, memo.get(context, &[src])?);
                        }
                    },
                    MountType::Secret => {
                        inputs = inputs.secret_id(m.id.clone().unwrap_or(target));
                    }
                    // Cache, tmpfs and ssh mounts: their content is deliberately not part of
                    // the key (BuildKit: a cache mount is a cache, not an input).
                    _ => {}
                }
            }
        }
        _ => {}
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> kiln_oci::Platform {
        "linux/amd64".parse().unwrap()
    }

    #[test]
    fn framing_has_no_collisions_between_field_splits() {
        let base = BaseIdentity::Scratch;
        let a = KeyChain::new(&base, &platform())
            .step(&StepInputs::new("RUN x").build_args([("A", "1 B=2")]));
        let b = KeyChain::new(&base, &platform())
            .step(&StepInputs::new("RUN x").build_args([("A", "1"), ("B", "2")]));
        let c =
            KeyChain::new(&base, &platform()).step(&StepInputs::new("RUN x").env([("A", "1 B=2")]));
        assert_ne!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn keys_are_hex_tags_and_deterministic() {
        let mut c1 = KeyChain::new(&BaseIdentity::Scratch, &platform());
        let mut c2 = KeyChain::new(&BaseIdentity::Scratch, &platform());
        let s = StepInputs::new("RUN true").build_args([("B", "2"), ("A", "1")]);
        let s2 = StepInputs::new("RUN true").build_args([("A", "1"), ("B", "2")]);
        let k1 = c1.step(&s);
        assert_eq!(k1, c2.step(&s2), "arg order must not matter");
        assert!(CacheKey::from_hex(k1.as_str()).is_some());
        assert_eq!(k1.as_str().len(), 64);
        assert!(CacheKey::from_hex("ABC").is_none());
    }

    #[test]
    fn proxy_args_and_secret_bytes_stay_out() {
        let mut c1 = KeyChain::new(&BaseIdentity::Scratch, &platform());
        let mut c2 = KeyChain::new(&BaseIdentity::Scratch, &platform());
        let k1 = c1.step(&StepInputs::new("RUN x").build_args([("HTTP_PROXY", "http://u:p1@h")]));
        let k2 = c2.step(&StepInputs::new("RUN x").build_args([("HTTP_PROXY", "http://u:p2@h")]));
        assert_eq!(k1, k2);
    }

    #[test]
    fn explains_what_changed() {
        let mut c1 = KeyChain::new(&BaseIdentity::Scratch, &platform());
        let mut c2 = KeyChain::new(&BaseIdentity::Scratch, &platform());
        c1.step(&StepInputs::new("RUN x").build_args([("V", "1"), ("W", "1")]));
        c2.step(
            &StepInputs::new("RUN x")
                .build_args([("V", "2"), ("W", "1")])
                .env([("E", "x")]),
        );
        let why = explain(c1.last_parts(), c2.last_parts());
        assert_eq!(
            why,
            vec!["build arg V changed".to_string(), "env E added".to_string()]
        );
    }

    #[test]
    fn double_star_sources_cover_every_depth() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("src/a/b/c")).unwrap();
        fs::write(root.join("src/a/b/c/deep.txt"), "1").unwrap();
        let ctx = Context::open(root, &root.join("Dockerfile")).unwrap();
        let src = ["./src/**/*.txt".to_string()];
        let d0 = context_sources(&ctx, &src).unwrap();
        fs::write(root.join("src/a/b/c/deep.txt"), "2").unwrap();
        assert_ne!(
            d0,
            context_sources(&ctx, &src).unwrap(),
            "a deep match changed"
        );
    }

    #[test]
    fn context_sources_follow_dockerignore_and_names() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("src")).unwrap();
        fs::write(root.join("src/a.txt"), "a").unwrap();
        fs::write(root.join("src/skip.log"), "1").unwrap();
        fs::write(root.join(".dockerignore"), "src/*.log\n").unwrap();
        let ctx = Context::open(root, &root.join("Dockerfile")).unwrap();
        let d0 = context_sources(&ctx, &["src".into()]).unwrap();
        fs::write(root.join("src/skip.log"), "2").unwrap();
        assert_eq!(
            d0,
            context_sources(&ctx, &["src".into()]).unwrap(),
            "ignored file counted"
        );
        fs::write(root.join("src/a.txt"), "b").unwrap();
        assert_ne!(d0, context_sources(&ctx, &["src".into()]).unwrap());
        let g0 = context_sources(&ctx, &["src/*.txt".into()]).unwrap();
        fs::rename(root.join("src/a.txt"), root.join("src/c.txt")).unwrap();
        assert_ne!(g0, context_sources(&ctx, &["src/*.txt".into()]).unwrap());
    }

    #[test]
    fn step_inputs_of_parsed_instructions() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::write(root.join("a.txt"), "1").unwrap();
        let ctx = Context::open(root, &root.join("Dockerfile")).unwrap();
        let df = kiln_dockerfile::parse_dockerfile(
            b"FROM scratch AS s\nCOPY a.txt /a\nRUN --mount=type=secret,id=tok --mount=type=bind,source=a.txt,target=/b cat /b\nCOPY --from=s /x /y\n",
        )
        .unwrap();
        let ins: Vec<_> = df.stages[0]
            .instructions
            .iter()
            .map(|i| i.value.clone())
            .collect();
        let stage = KeyChain::new(&BaseIdentity::Scratch, &platform())
            .current()
            .clone();
        let key_for = |i: &kiln_dockerfile::Instruction, from: &CacheKey| {
            let from = from.clone();
            // A fresh memo each time: the test changes the file between calls.
            let memo = SourceMemo::default();
            let inputs =
                step_inputs(i, &[], &[], &ctx, &move |_| Some(from.clone()), &memo).unwrap();
            KeyChain::new(&BaseIdentity::Scratch, &platform()).step(&inputs)
        };
        let before: Vec<CacheKey> = ins.iter().map(|i| key_for(i, &stage)).collect();
        fs::write(root.join("a.txt"), "2").unwrap();
        let after: Vec<CacheKey> = ins.iter().map(|i| key_for(i, &stage)).collect();
        assert_ne!(before[0], after[0], "COPY source content");
        assert_ne!(before[1], after[1], "RUN bind mount content");
        assert_eq!(before[2], after[2]);
        let stage_only = |f: &str| f == "s";
        assert!(
            !is_cacheable(&ins[0], true, false, &stage_only),
            "COPY needs --cache-copy-layers"
        );
        assert!(is_cacheable(&ins[0], true, true, &stage_only));
        assert!(is_cacheable(&ins[1], true, false, &stage_only));
        assert!(!is_cacheable(&ins[1], false, true, &stage_only));
        assert!(
            !is_cacheable(&ins[2], true, true, &|_| false),
            "COPY --from=<image>"
        );
        // Line numbers are not part of an instruction's value: moving a step keeps its key.
        let moved =
            kiln_dockerfile::parse_dockerfile(b"FROM scratch AS s\n\n\n# c\nCOPY a.txt /a\n")
                .unwrap();
        assert_eq!(
            key_for(&moved.stages[0].instructions[0].value, &stage),
            after[0]
        );
        let other = key_of_text("other stage");
        assert_ne!(before[2], key_for(&ins[2], &other), "COPY --from stage key");
    }

    fn key_of_text(t: &str) -> CacheKey {
        KeyChain::new(&BaseIdentity::Scratch, &platform()).step(&StepInputs::new(t))
    }

    #[test]
    fn tree_digest_covers_names_modes_and_links() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path().join("d");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("a"), "x").unwrap();
        let h0 = hash_tree(&d).unwrap();
        assert_eq!(h0, hash_tree(&d).unwrap());
        fs::rename(d.join("a"), d.join("b")).unwrap();
        let h1 = hash_tree(&d).unwrap();
        assert_ne!(h0, h1);
        fs::set_permissions(d.join("b"), fs::Permissions::from_mode(0o755)).unwrap();
        let h2 = hash_tree(&d).unwrap();
        assert_ne!(h1, h2);
        std::os::unix::fs::symlink("t1", d.join("l")).unwrap();
        let h3 = hash_tree(&d).unwrap();
        fs::remove_file(d.join("l")).unwrap();
        std::os::unix::fs::symlink("t2", d.join("l")).unwrap();
        assert_ne!(h3, hash_tree(&d).unwrap());
    }

    #[test]
    fn every_from_stage_is_in_the_key() {
        let p: kiln_oci::Platform = "linux/amd64".parse().unwrap();
        let a = CacheKey::from_hex(&"a".repeat(64)).unwrap();
        let b1 = CacheKey::from_hex(&"b".repeat(64)).unwrap();
        let b2 = CacheKey::from_hex(&"c".repeat(64)).unwrap();
        let key = |second: &CacheKey| {
            let mut chain = KeyChain::new(&BaseIdentity::Scratch, &p);
            chain.step(
                &StepInputs::new("RUN x")
                    .from_stage(a.clone())
                    .from_stage(second.clone()),
            )
        };
        assert_ne!(
            key(&b1),
            key(&b2),
            "the second bound stage must change the key"
        );
    }
}

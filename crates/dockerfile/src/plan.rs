//! The build plan: which stages a build needs and in what order, global ARGs, `--target`,
//! `--build-arg`, and [`StageEnv`], the one implementation of ARG/ENV scoping and word
//! expansion shared by the engine and `kiln debug plan`.
//!
//! Rules (Dockerfile reference, "ARG" and "Understand how ARG and FROM interact"; BuildKit
//! `dockerfile2llb/convert.go`):
//! - ARGs before the first FROM are global: usable in FROM lines, and inside a stage only
//!   after re-declaring them (`ARG NAME` with no default takes the global value).
//! - `--build-arg` overrides an ARG's default; a declared ARG without default or build arg
//!   is declared but unset.
//! - ENV wins over ARG of the same name when expanding and in a RUN's environment.
//! - Proxy args (`HTTP_PROXY` ...) given as build args are usable without declaration and
//!   are left out of the history.
//! - `TARGETPLATFORM` ... `BUILDVARIANT` are global ARGs set from the platforms.
//! - Stage names are case-insensitive; a FROM or `--from` naming an earlier stage uses it;
//!   a number in `--from` is a stage index.
//! - `--from` is expanded like the instruction's other words, which BuildKit refuses (see
//!   [`expand_from`]); the plan predicts the value so the stage it names is built.

use crate::error::{Error, ErrorKind};
use crate::instructions::{
    parse_dockerfile, parse_mount, Dockerfile, FromInstr, Instruction, Spanned,
};
use crate::shell::{Env, ShellLex};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The proxy build args Docker accepts without an ARG declaration (and keeps out of history).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Whether `name` is one of [`PROXY_ARGS`].
pub fn is_proxy_arg(name: &str) -> bool {
    PROXY_ARGS.contains(&name)
}

/// Inputs of planning.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// `--target` (case-insensitive stage name); `None` = the last stage.
    pub target: Option<String>,
    /// `--build-arg KEY=VALUE` in order; a bare `--build-arg KEY` must be resolved from the
    /// caller's environment before (and dropped when unset there).
    pub build_args: Vec<(String, String)>,
    /// Target platform, `os/arch[/variant]`, e.g. `linux/amd64`.
    pub target_platform: String,
    /// Build (host) platform, same format.
    pub build_platform: String,
}

/// A stage's base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// `FROM scratch`.
    Scratch,
    /// An image reference, expanded with the global args.
    Image(String),
    /// An earlier stage, by its original index.
    Stage(usize),
}

/// What a `COPY --from=` / `RUN --mount=from=` value refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromRef {
    /// An earlier stage by original index.
    Stage(usize),
    /// An image reference.
    Image(String),
}

/// A stage the build needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedStage {
    /// Original 0-based index in the Dockerfile.
    pub index: usize,
    /// Name as written.
    pub name: Option<String>,
    /// Base, resolved.
    pub base: Base,
    /// `FROM --platform=`, expanded.
    pub platform: Option<String>,
    /// The FROM line.
    pub from: FromInstr,
    /// Instructions, unexpanded (expand them one by one with [`StageEnv::dispatch`]).
    pub instructions: Vec<Spanned<Instruction>>,
    /// Original indices of the stages this one reads (base, `--from`, `--mount=from=`, the
    /// parent stage's ONBUILD triggers), ascending. A `--from` whose value depends on a
    /// variable only a base image's Env could set counts every earlier stage it could name, so
    /// this is a superset of what the build reads when that happens.
    pub deps: Vec<usize>,
}

/// The resolved build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Stages to build in dependency order (ascending original index; deps come first): the
    /// ones the target needs, or every one up to the target ([`plan_through_target`]).
    pub stages: Vec<PlannedStage>,
    /// Original index of the target stage (the last element of `stages`).
    pub target: usize,
    /// Build args no ARG of a needed stage or the global scope declares (a warning).
    pub unused_build_args: Vec<String>,
    /// Global scope: predefined platform args, then global ARGs, with values (None = unset).
    pub global_args: Vec<(String, Option<String>)>,
    /// The build args, as given.
    pub build_args: Vec<(String, String)>,
    /// Escape character of the file.
    pub escape: char,
    /// Names of all stages of the file, by original index (for `--from` resolution).
    pub stage_names: Vec<Option<String>>,
    globals: Arc<ArgScope>,
    names: Arc<HashMap<String, usize>>,
}

impl Plan {
    /// The planned stage with original index `index`, if needed.
    pub fn stage(&self, index: usize) -> Option<&PlannedStage> {
        self.stages.iter().find(|s| s.index == index)
    }

    /// Resolves a (expanded) `--from` value used in stage `current`.
    pub fn resolve_from(&self, current: usize, reference: &str) -> Result<FromRef, Error> {
        resolve_ref(&self.names, current, reference)
    }
}

fn resolve_ref(names: &HashMap<String, usize>, current: usize, r: &str) -> Result<FromRef, Error> {
    if !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()) {
        return match r.parse::<usize>() {
            Ok(i) if i < current => Ok(FromRef::Stage(i)),
            _ => Err(Error::new(ErrorKind::BadStageRef {
                reference: r.into(),
                reason: if r.parse::<usize>().is_ok_and(|i| i == current) {
                    "refers to the current stage".into()
                } else {
                    "no earlier stage has this index".into()
                },
            })),
        };
    }
    match names.get(&r.to_lowercase()) {
        Some(&i) if i < current => Ok(FromRef::Stage(i)),
        Some(&i) => Err(Error::new(ErrorKind::BadStageRef {
            reference: r.into(),
            reason: if i == current {
                "refers to the current stage".into()
            } else {
                "refers to a stage defined later; only earlier stages can be used".into()
            },
        })),
        None => Ok(FromRef::Image(r.into())),
    }
}

fn platform_args(prefix: &str, p: &str) -> Vec<(String, Option<String>)> {
    let mut parts = p.splitn(3, '/');
    let os = parts.next().unwrap_or("").to_string();
    let arch = parts.next().unwrap_or("").to_string();
    let variant = parts.next().unwrap_or("").to_string();
    vec![
        (format!("{prefix}PLATFORM"), Some(p.to_string())),
        (format!("{prefix}OS"), Some(os)),
        (format!("{prefix}ARCH"), Some(arch)),
        (format!("{prefix}VARIANT"), Some(variant)),
    ]
}

/// Ordered variables with a hash index: lookups and updates stay O(1) however many
/// variables a hostile file declares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Scope<V> {
    list: Vec<(String, V)>,
    index: HashMap<String, usize>,
}

impl<V: Clone> Scope<V> {
    fn set(&mut self, name: &str, v: V) {
        match self.index.get(name) {
            Some(&i) => self.list[i].1 = v,
            None => {
                self.index.insert(name.to_string(), self.list.len());
                self.list.push((name.to_string(), v));
            }
        }
    }
    fn get(&self, name: &str) -> Option<&V> {
        self.index.get(name).map(|&i| &self.list[i].1)
    }
    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

type ArgScope = Scope<Option<String>>;

impl Env for ArgScope {
    fn get(&self, name: &str) -> Option<String> {
        Scope::get(self, name).cloned().flatten()
    }
}

/// Resolves stages, target and args, keeping only the stages the target reads (directly or
/// through other stages): BuildKit's behaviour and kiln's default.
pub fn plan(df: &Dockerfile, opts: &PlanOptions) -> Result<Plan, Error> {
    plan_stages(df, opts, false)
}

/// Like [`plan`], but keeps every stage from the first up to the target, whether the target
/// reads it or not: Kaniko's `--skip-unused-stages=false` (its default), whose help says it
/// "builds by default all stages, even the unnecessaries ones until it reaches the target
/// stage". Stages after the target are not built (Kaniko stops at the target too). A stage
/// used as a gate (`FROM build AS test` + `RUN make test`) then fails the build.
pub fn plan_through_target(df: &Dockerfile, opts: &PlanOptions) -> Result<Plan, Error> {
    plan_stages(df, opts, true)
}

fn plan_stages(df: &Dockerfile, opts: &PlanOptions, all_to_target: bool) -> Result<Plan, Error> {
    let escape = df.directives.escape;
    let lex = ShellLex::new(escape);
    let mut globals = ArgScope::default();
    for (k, v) in platform_args("TARGET", &opts.target_platform)
        .into_iter()
        .chain(platform_args("BUILD", &opts.build_platform))
    {
        globals.set(&k, v);
    }
    let mut declared: HashSet<String> = HashSet::new();
    for line in &df.global_args {
        let mut vals = Vec::new();
        for a in &line.value {
            let v = match build_arg(&opts.build_args, &a.name) {
                Some(v) => Some(v),
                None => match &a.default {
                    Some(d) => Some(
                        lex.process_word(d, &globals)
                            .map_err(|e| e.at(line.start_line, 1))?,
                    ),
                    None => None,
                },
            };
            vals.push((a.name.clone(), v));
            declared.insert(a.name.clone());
        }
        for (k, v) in vals {
            globals.set(&k, v);
        }
    }
    let stage_names: Vec<Option<String>> = df.stages.iter().map(|s| s.name.clone()).collect();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (i, n) in stage_names.iter().enumerate() {
        if let Some(n) = n {
            names.entry(n.to_lowercase()).or_insert(i);
        }
    }
    let globals = Arc::new(globals);
    let build_args = Arc::new(opts.build_args.clone());
    let target = match &opts.target {
        None => df.stages.len() - 1,
        Some(t) => match df.stages.iter().position(|s| s.matches_name(t)) {
            Some(i) => i,
            None => {
                let mut e = Error::new(ErrorKind::UnknownTarget { target: t.clone() });
                let known: Vec<&str> = stage_names.iter().flatten().map(String::as_str).collect();
                e = e.with_hint(if known.is_empty() {
                    "the Dockerfile has no named stages".to_string()
                } else {
                    format!("stages are: {}", known.join(", "))
                });
                return Err(e);
            }
        },
    };
    // Walk from the target over dependencies (explicit stack: no recursion on input).
    let mut walk = Walk {
        df,
        lex: &lex,
        globals: &globals,
        build_args: &build_args,
        names: &names,
        analysed: vec![None; df.stages.len()],
        declared: &mut declared,
    };
    let mut planned: Vec<Option<PlannedStage>> = vec![None; df.stages.len()];
    let mut stack: Vec<usize> = if all_to_target {
        (0..=target).rev().collect()
    } else {
        vec![target]
    };
    while let Some(i) = stack.pop() {
        if planned[i].is_some() {
            continue;
        }
        let (base, platform, deps) = walk.analyse(i)?;
        let st = &df.stages[i];
        stack.extend(deps.iter().copied());
        planned[i] = Some(PlannedStage {
            index: i,
            name: st.name.clone(),
            base,
            platform,
            from: st.from.clone(),
            instructions: st.instructions.clone(),
            deps,
        });
    }
    let mut unused: Vec<String> = Vec::new();
    for (k, _) in &opts.build_args {
        if !declared.contains(k) && !is_proxy_arg(k) && !unused.contains(k) {
            unused.push(k.clone());
        }
    }
    Ok(Plan {
        stages: planned.into_iter().flatten().collect(),
        target,
        unused_build_args: unused,
        global_args: globals.list.clone(),
        build_args: opts.build_args.clone(),
        escape,
        stage_names,
        globals,
        names: Arc::new(names),
    })
}

/// What planning learned about one stage: its base, the stages it reads and, for the stages
/// built FROM it, its ARG/ENV state at its end.
#[derive(Debug, Clone)]
struct Analysis {
    base: Base,
    platform: Option<String>,
    deps: Vec<usize>,
    env: StageEnv,
    /// Whether the stage's variables may include some the Dockerfile does not show: its chain
    /// of in-file parent stages starts at an image, whose config `Env` (and ONBUILD triggers,
    /// which may set more) are known only once it is pulled. A stage chain that starts at
    /// `scratch` is closed: every variable it can see is written in the file.
    open: bool,
}

/// The planning walk's inputs and the stages analysed so far (by original index).
struct Walk<'a> {
    df: &'a Dockerfile,
    lex: &'a ShellLex,
    globals: &'a Arc<ArgScope>,
    build_args: &'a Arc<Vec<(String, String)>>,
    names: &'a HashMap<String, usize>,
    analysed: Vec<Option<Analysis>>,
    declared: &'a mut HashSet<String>,
}

/// Stands in for a variable whose value only a base image can tell (see [`expand_from`]).
/// NUL cannot be written in a Dockerfile word that reaches the lexer unnoticed: a `--from`
/// holding one is treated as naming any earlier stage.
const UNKNOWN: char = '\0';

/// What an expanded `--from` may name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    /// Exactly this reference.
    Exact(String),
    /// Whatever matches this pattern, [`UNKNOWN`] standing for any text.
    Pattern(String),
    /// Anything: every earlier stage.
    Any,
}

impl Walk<'_> {
    /// Stage `i`'s base and `--platform`, expanded with the global args.
    fn base(&self, i: usize) -> Result<(Base, Option<String>), Error> {
        let st = &self.df.stages[i];
        let loc = |e: Error| e.at(st.from.span.start_line, 1);
        let image = self
            .lex
            .process_word(&st.from.image, &**self.globals)
            .map_err(loc)?;
        if image.is_empty() {
            return Err(loc(Error::new(ErrorKind::EmptyBaseName {
                image: st.from.image.clone(),
            })));
        }
        let platform = match &st.from.platform {
            Some(p) => Some(self.lex.process_word(p, &**self.globals).map_err(loc)?),
            None => None,
        };
        let base = if image.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else {
            match self.names.get(&image.to_lowercase()) {
                Some(&j) if j < i => Base::Stage(j),
                Some(_) => {
                    return Err(loc(Error::new(ErrorKind::BadStageRef {
                        reference: image,
                        reason: "FROM can only use a stage defined earlier".into(),
                    })))
                }
                None => Base::Image(image),
            }
        };
        Ok((base, platform))
    }

    /// Analyses stage `i` (and, first, the in-file parent stages it is built FROM, whose end
    /// state it starts with); returns its base, platform and dependencies.
    fn analyse(&mut self, i: usize) -> Result<(Base, Option<String>, Vec<usize>), Error> {
        let mut chain = Vec::new();
        let mut k = i;
        while self.analysed[k].is_none() {
            let (base, platform) = self.base(k)?;
            let parent = match base {
                Base::Stage(p) => Some(p),
                _ => None,
            };
            chain.push((k, base, platform));
            match parent {
                Some(p) => k = p,
                None => break,
            }
        }
        while let Some((k, base, platform)) = chain.pop() {
            let a = self.analyse_one(k, base, platform)?;
            self.analysed[k] = Some(a);
        }
        match &self.analysed[i] {
            Some(a) => Ok((a.base.clone(), a.platform.clone(), a.deps.clone())),
            None => Ok((Base::Scratch, None, Vec::new())), // unreachable: filled above
        }
    }

    /// Dispatches stage `i` as the engine will (a parent stage's end state, its ONBUILD
    /// triggers, then the stage's instructions) and collects what its `--from`s may name.
    fn analyse_one(
        &mut self,
        i: usize,
        base: Base,
        platform: Option<String>,
    ) -> Result<Analysis, Error> {
        let st = &self.df.stages[i];
        let escape = self.df.directives.escape;
        let fresh =
            || StageEnv::from_parts(escape, self.globals.clone(), self.build_args.clone(), &[]);
        let mut deps = Vec::new();
        let mut triggers = Vec::new();
        // The engine starts a stage built FROM an earlier one with that stage's config Env and
        // its ARG/LLB state (`StageEnv::inherit`): the parent's end state here.
        let (mut env, open) = match &base {
            Base::Stage(p) => {
                deps.push(*p);
                // ONBUILD triggers of a parent stage run first in this stage.
                for ins in &self.df.stages[*p].instructions {
                    if let Instruction::Onbuild(t) = &ins.value {
                        // A trigger that does not parse is reported when it runs.
                        if let Ok(trigger) =
                            crate::instructions::parse_trigger(t, escape, ins.start_line)
                        {
                            triggers.push(trigger);
                        }
                    }
                }
                match &self.analysed[*p] {
                    Some(a) => (a.env.clone(), a.open),
                    None => (fresh(), true), // unreachable: parents are analysed first
                }
            }
            Base::Image(_) => (fresh(), true),
            Base::Scratch => (fresh(), false),
        };
        // Once a trigger fails to expand here, the state after it is a guess: every `$` in a
        // later `--from` of this stage then names any earlier stage. (The engine reports the
        // trigger's error when it runs it, with the base image's Env it has by then.)
        let mut lost = false;
        for t in &triggers {
            if env.dispatch(&t.value).is_err() {
                lost = true;
            }
            for word in from_words(&t.value) {
                let named = if lost && word.contains('$') {
                    Named::Any
                } else {
                    expand_from(&env, open, word).unwrap_or(Named::Any)
                };
                self.add_named(i, named, &mut deps, false)?;
            }
        }
        for ins in &st.instructions {
            let at = |e: Error| locate(e, ins);
            // COPY and RUN leave the ARG/ENV state as it was: expanding their `--from` after
            // the dispatch sees the state at the instruction, and dispatch errors come first.
            let x = env.dispatch(&ins.value).map_err(at)?;
            if let Instruction::Arg(a) = &x {
                self.declared.extend(a.iter().map(|d| d.name.clone()));
            }
            for word in from_words(&ins.value) {
                let named = if lost && word.contains('$') {
                    Named::Any
                } else {
                    expand_from(&env, open, word).map_err(at)?
                };
                self.add_named(i, named, &mut deps, true).map_err(at)?;
            }
        }
        deps.sort_unstable();
        deps.dedup();
        Ok(Analysis {
            base,
            platform,
            deps,
            env,
            open,
        })
    }

    /// Adds the earlier stages `named` (in stage `i`) may be to `deps`. A bad exact reference
    /// is an error when `strict` (the stage's own instructions), ignored otherwise (triggers:
    /// the engine reports it when it runs them).
    fn add_named(
        &self,
        i: usize,
        named: Named,
        deps: &mut Vec<usize>,
        strict: bool,
    ) -> Result<(), Error> {
        match named {
            Named::Exact(r) => match resolve_ref(self.names, i, &r) {
                Ok(FromRef::Stage(j)) => deps.push(j),
                Ok(FromRef::Image(_)) => {}
                Err(e) if strict => return Err(e),
                Err(_) => {}
            },
            Named::Pattern(p) => {
                let p = p.to_lowercase();
                deps.extend(
                    self.names
                        .iter()
                        .filter(|(n, &j)| j < i && glob_match(&p, n))
                        .map(|(_, &j)| j),
                );
                deps.extend((0..i).filter(|j| glob_match(&p, &j.to_string())));
            }
            Named::Any => deps.extend(0..i),
        }
        Ok(())
    }
}

/// The unexpanded `--from` words of an instruction: `COPY`/`ADD --from=`, `RUN --mount=from=`.
fn from_words(ins: &Instruction) -> Vec<&str> {
    match ins {
        Instruction::Copy(c) | Instruction::Add(c) => c.from.iter().map(String::as_str).collect(),
        Instruction::Run(r) => r.mounts.iter().filter_map(|m| m.from.as_deref()).collect(),
        _ => Vec::new(),
    }
}

/// Expands a `--from` word as the engine will, as far as the Dockerfile tells.
///
/// Which variables a `--from` sees: BuildKit expands none. `COPY --from=$X` fails there with
/// "variable expansion is not supported for --from, define a new stage with FROM using ARG
/// from global scope as a workaround" (moby/buildkit `frontend/dockerfile/dockerfile2llb/
/// convert.go`, `toCommand`), `RUN --mount=from=$X` with "'from' doesn't support variable
/// expansion, define alias stage instead" (`frontend/dockerfile/instructions/
/// commands_runmount.go`, `parseMount`); its maintainers keep it so because stage-scoped
/// variables would make the stage graph depend on evaluation (moby/buildkit#2374, #1677).
/// Docker's classic builder and Kaniko use the word as written. kiln expands `--from` like
/// every other word of the instruction: with the stage's state at that instruction, which is
/// BuildKit's `getEnv(d.state)` for the words it does expand (base image `Env`, the ENV and ARG
/// of the stage and of its in-file parents in order, the later one winning; ARG values from
/// `--build-arg` or defaults; proxy build args). So the plan has to predict that value, or the
/// stage it names is pruned and the build fails with "stage N was not built".
///
/// In an `open` stage (see [`Analysis::open`]) a variable the file leaves unset may come from
/// the base image: it stands for any text, and the result is a pattern. When such a variable
/// was used but the result does not show it (`${X:+name}`, `${X#?}`), anything may be named.
fn expand_from(env: &StageEnv, open: bool, word: &str) -> Result<Named, Error> {
    if !open {
        return env.expand(word).map(Named::Exact);
    }
    if word.contains(UNKNOWN) {
        return Ok(Named::Any);
    }
    let lookup = OpenLookup {
        known: Lookup(env),
        used_unknown: std::cell::Cell::new(false),
    };
    let v = env.lexer().process_word(word, &lookup)?;
    Ok(if !lookup.used_unknown.get() {
        Named::Exact(v)
    } else if v.contains(UNKNOWN) {
        Named::Pattern(v)
    } else {
        Named::Any
    })
}

/// [`Lookup`] where a variable the stage does not set reads as [`UNKNOWN`] (and is noted).
struct OpenLookup<'a> {
    known: Lookup<'a>,
    used_unknown: std::cell::Cell<bool>,
}

impl Env for OpenLookup<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.known.get(name).or_else(|| {
            self.used_unknown.set(true);
            Some(UNKNOWN.to_string())
        })
    }
}

/// Whether `s` matches `pattern`, where [`UNKNOWN`] stands for any text (possibly empty).
fn glob_match(pattern: &str, s: &str) -> bool {
    let mut parts = pattern.split(UNKNOWN);
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = s.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        return rest.is_empty(); // no UNKNOWN: the whole text
    };
    for mid in parts {
        match rest.find(mid) {
            Some(p) => rest = &rest[p + mid.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn build_arg(args: &[(String, String)], name: &str) -> Option<String> {
    args.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

/// ARG/ENV state of one stage while its instructions are dispatched in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageEnv {
    escape: char,
    /// The image config's Env: base image env plus ENVs.
    env: Scope<String>,
    /// BuildKit's LLB state env, used for expansion and RUN: ENV and ARG values together,
    /// the later one winning (`dispatchArg` calls `AddEnv`). `true` = last set by an ARG.
    state: Scope<(String, bool)>,
    /// Declared ARGs (value None = declared but unset).
    args: ArgScope,
    globals: Arc<ArgScope>,
    build_args: Arc<Vec<(String, String)>>,
}

struct Lookup<'a>(&'a StageEnv);

impl Env for Lookup<'_> {
    fn get(&self, name: &str) -> Option<String> {
        let s = self.0;
        if let Some((v, _)) = s.state.get(name) {
            return Some(v.clone());
        }
        if is_proxy_arg(name) {
            return build_arg(&s.build_args, name);
        }
        None
    }
}

impl StageEnv {
    /// State at the start of stage `stage` (original index) of `plan`, with the base image
    /// config's `Env` (for a stage base: that stage's final [`env`](Self::env)).
    pub fn new(plan: &Plan, stage: usize, base_image_env: &[(String, String)]) -> StageEnv {
        let _ = stage; // every stage starts from the same global scope
        StageEnv::from_parts(
            plan.escape,
            plan.globals.clone(),
            Arc::new(plan.build_args.clone()),
            base_image_env,
        )
    }

    fn from_parts(
        escape: char,
        globals: Arc<ArgScope>,
        build_args: Arc<Vec<(String, String)>>,
        base_env: &[(String, String)],
    ) -> StageEnv {
        let mut env = Scope::default();
        let mut state = Scope::default();
        for (k, v) in base_env {
            env.set(k, v.clone());
            state.set(k, (v.clone(), false));
        }
        StageEnv {
            escape,
            env,
            state,
            args: ArgScope::default(),
            globals,
            build_args,
        }
    }

    /// The lexer for this file's escape character.
    pub fn lexer(&self) -> ShellLex {
        ShellLex::new(self.escape)
    }

    /// Expands one word with the current ARG/ENV state.
    pub fn expand(&self, word: &str) -> Result<String, Error> {
        self.lexer().process_word(word, &Lookup(self))
    }

    fn expand_opt(&self, w: &Option<String>) -> Result<Option<String>, Error> {
        w.as_deref().map(|w| self.expand(w)).transpose()
    }

    /// The current variables for expansion (ENV and ARG, the later one winning), as an [`Env`].
    pub fn lookup(&self) -> impl Env + '_ {
        Lookup(self)
    }

    /// Returns `ins` with every field BuildKit expands expanded, and applies ARG/ENV.
    /// Errors carry no line: the caller adds the instruction's span.
    pub fn dispatch(&mut self, ins: &Instruction) -> Result<Instruction, Error> {
        let x = |w: &str| self.expand(w);
        let xo = |w: &Option<String>| -> Result<Option<String>, Error> {
            w.as_deref().map(|w| self.expand(w)).transpose()
        };
        let xs = |v: &[String]| -> Result<Vec<String>, Error> { v.iter().map(|w| x(w)).collect() };
        let out = match ins {
            Instruction::Env(pairs) => {
                let mut exp = Vec::new();
                for (k, v) in pairs {
                    exp.push((x(k)?, x(v)?));
                }
                for (k, v) in &exp {
                    self.env.set(k, v.clone());
                    self.state.set(k, (v.clone(), false));
                }
                Instruction::Env(exp)
            }
            Instruction::Label(pairs) => {
                let mut exp = Vec::new();
                for (k, v) in pairs {
                    exp.push((x(k)?, x(v)?));
                }
                Instruction::Label(exp)
            }
            Instruction::Arg(decls) => {
                // One declaration at a time, as BuildKit's dispatchArg: `ARG A=1 B=$A` sees A.
                let mut exp = Vec::new();
                for d in decls {
                    let mut d2 = d.clone();
                    // The name is expanded too (BuildKit's ArgCommand.Expand): `ARG ${X}=v`.
                    if d.name.contains('$') {
                        d2.name = self.expand(&d.name)?;
                    }
                    let d = &d2.clone();
                    let value = match build_arg(&self.build_args, &d.name) {
                        Some(v) => {
                            // Expanded for its errors; the instruction then carries the value
                            // in force, as BuildKit records it (`ARG B=<--build-arg value>`).
                            self.expand_opt(&d.default)?;
                            Some(v)
                        }
                        None => match &d.default {
                            Some(def) => {
                                let v = self.expand(def)?;
                                d2.default = Some(v.clone());
                                Some(v)
                            }
                            None => self.globals.get(&d.name).cloned().flatten(),
                        },
                    };
                    if let Some(v) = &value {
                        self.state.set(&d.name, (v.clone(), true));
                    }
                    // BuildKit's history shows `ARG K=<value in force>`, `ARG K` when unset.
                    d2.default = value.clone();
                    self.args.set(&d.name, value);
                    exp.push(d2);
                }
                Instruction::Arg(exp)
            }
            Instruction::Workdir(w) => Instruction::Workdir(x(w)?),
            Instruction::User(w) => Instruction::User(x(w)?),
            Instruction::StopSignal(w) => {
                let sig = x(w)?;
                validate_signal(&sig)?;
                Instruction::StopSignal(sig)
            }
            Instruction::Expose(v) => {
                let ports = xs(v)?;
                // An empty word (an unset `$PORT`) exposes nothing, as Docker treats it.
                for p in ports.iter().filter(|p| !p.is_empty()) {
                    validate_port(p)?;
                }
                Instruction::Expose(ports)
            }
            Instruction::Volume(v) => Instruction::Volume(xs(v)?),
            Instruction::Copy(c) | Instruction::Add(c) => {
                let mut c2 = c.clone();
                c2.sources = xs(&c.sources)?;
                c2.dest = x(&c.dest)?;
                c2.from = xo(&c.from)?;
                c2.chown = xo(&c.chown)?;
                c2.chmod = xo(&c.chmod)?;
                c2.checksum = xo(&c.checksum)?;
                c2.exclude = xs(&c.exclude)?;
                // Heredoc bodies expand variables but keep quotes (BuildKit `ExpandRaw`, which
                // uses `\` as escape whatever the file's escape directive says).
                let raw = ShellLex::new('\\').with_skip_process_quotes(true);
                for h in &mut c2.heredocs {
                    if h.expand {
                        h.content = raw.process_word(&h.content, &Lookup(self))?;
                    }
                }
                if matches!(ins, Instruction::Copy(_)) {
                    Instruction::Copy(c2)
                } else {
                    Instruction::Add(c2)
                }
            }
            Instruction::Run(r) => {
                let mut r2 = r.clone();
                r2.mounts = r
                    .mounts
                    .iter()
                    .map(|m| parse_mount(&m.raw, &|w: &str| self.expand(w), true))
                    .collect::<Result<_, _>>()?;
                Instruction::Run(r2)
            }
            // Not expanded by the builder: CMD/ENTRYPOINT/SHELL/HEALTHCHECK/RUN text (the
            // shell does it at run time), ONBUILD (expanded when it triggers), MAINTAINER.
            other => other.clone(),
        };
        Ok(out)
    }

    /// The image config `Env` after the ENVs so far.
    pub fn env(&self) -> Vec<(String, String)> {
        self.env.list.clone()
    }

    /// The ARG values a RUN adds on top of [`env`](Self::env): declared ARGs whose value was
    /// not overridden by a later ENV (an ARG after an ENV of the same name wins, as in
    /// BuildKit), then proxy build args given but not declared.
    pub fn run_build_args(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .state
            .list
            .iter()
            .filter(|(_, (_, from_arg))| *from_arg)
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        for (k, _) in self.build_args.iter() {
            if is_proxy_arg(k)
                && !self.state.contains(k)
                && !self.args.contains(k)
                && !out.iter().any(|(o, _)| o == k)
            {
                out.push((
                    k.clone(),
                    build_arg(&self.build_args, k).unwrap_or_default(),
                ));
            }
        }
        out
    }

    /// The complete environment of a RUN: [`env`](Self::env) overlaid with
    /// [`run_build_args`](Self::run_build_args), in first-set order.
    pub fn run_env(&self) -> Vec<(String, String)> {
        let mut out: Scope<String> = Scope::default();
        for (k, v) in &self.env.list {
            out.set(k, v.clone());
        }
        for (k, v) in self.run_build_args() {
            out.set(&k, v);
        }
        out.list
    }

    /// The args docker shows in RUN history as `|N K=V ...`: declared ARGs with values,
    /// proxy args excluded (they may hold credentials).
    pub fn history_args(&self) -> Vec<(String, String)> {
        // BuildKit's runCommandString: every declared ARG, with the value the command sees
        // (a later ENV of the same name wins), `K=` when unset.
        self.args
            .list
            .iter()
            .filter(|(k, _)| !is_proxy_arg(k))
            .map(|(k, v)| {
                let seen = self
                    .state
                    .get(k)
                    .map(|(sv, _)| sv.clone())
                    .or_else(|| v.clone())
                    .unwrap_or_default();
                (k.clone(), seen)
            })
            .collect()
    }

    /// A stage built `FROM` an earlier stage starts with that stage's ARGs and their values
    /// (BuildKit's `dispatchState.init` copies the parent's build args and LLB state), so
    /// `ARG NAME="$NAME-dev"` in the child sees the parent's NAME.
    pub fn inherit(&mut self, parent: &StageEnv) {
        self.args = parent.args.clone();
        self.state = parent.state.clone();
    }
}

/// Gives a dispatch error the instruction's lines, and a column when the failing word can
/// be found on the instruction's first line.
fn locate(e: Error, ins: &Spanned<Instruction>) -> Error {
    let first = ins.original.split('\n').next().unwrap_or("");
    let needle = match e.kind() {
        ErrorKind::Expand { word, .. } => Some(word.as_str()),
        ErrorKind::InvalidMount { spec, .. } => Some(spec.as_str()),
        ErrorKind::BadStageRef { reference, .. } => Some(reference.as_str()),
        _ => None,
    };
    let col = needle
        .filter(|n| !n.is_empty())
        .and_then(|n| first.find(n))
        .map_or(1, |b| first[..b].chars().count() + 1);
    e.at(ins.start_line, col).through_line(ins.end_line)
}

/// Linux signal names accepted by STOPSIGNAL (Go's `signal.ParseSignal` on Linux).
const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX",
];

/// STOPSIGNAL values: a number 1–255 or a signal name with or without `SIG`, as
/// moby/sys `signal.ParseSignal` accepts (`RTMIN+n` / `RTMAX-n` included).
pub fn validate_signal(v: &str) -> Result<(), Error> {
    let bad = || Error::new(ErrorKind::InvalidSignal { value: v.into() });
    if let Ok(n) = v.parse::<u8>() {
        return if n == 0 { Err(bad()) } else { Ok(()) };
    }
    let upper = v.to_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let ok = SIGNALS.contains(&name)
        || ["RTMIN+", "RTMAX-"].iter().any(|p| {
            name.strip_prefix(p)
                .and_then(|n| n.parse::<u8>().ok())
                .is_some_and(|n| (1..=15).contains(&n))
        });
    if ok {
        Ok(())
    } else {
        Err(bad())
    }
}

/// EXPOSE values: `port[/proto]` or `start-end[/proto]`, proto tcp/udp/sctp (docker/go-connections
/// `nat.ParsePortSpecs`; an `ip:host:` prefix is tolerated as Docker does).
pub fn validate_port(v: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Error::new(ErrorKind::InvalidPort {
            value: v.into(),
            reason: reason.into(),
        })
    };
    let (port, proto) = match v.split_once('/') {
        Some((p, proto)) => (p, proto),
        None => (v, "tcp"),
    };
    if !matches!(proto.to_lowercase().as_str(), "tcp" | "udp" | "sctp") {
        return Err(bad("protocol must be tcp, udp or sctp"));
    }
    let container = port.rsplit(':').next().unwrap_or(port);
    let num = |s: &str| {
        s.parse::<u16>()
            .map_err(|_| bad("not a port number 0-65535"))
    };
    match container.split_once('-') {
        Some((a, b)) => {
            if num(a)? > num(b)? {
                return Err(bad("range end is below its start"));
            }
        }
        None => {
            num(container)?;
        }
    }
    Ok(())
}

/// Parses, plans and expands, rendering the result for `kiln debug plan`.
pub fn debug_plan(src: &[u8], opts: &PlanOptions) -> Result<String, Error> {
    let df = parse_dockerfile(src)?;
    let p = plan(&df, opts)?;
    let mut out = String::new();
    if let Some(s) = &df.directives.syntax {
        out.push_str(&format!("syntax: {s}\n"));
    }
    if df.directives.escape != '\\' {
        out.push_str(&format!("escape: {}\n", df.directives.escape));
    }
    if let Some(c) = &df.directives.check {
        out.push_str(&format!("check: {c}\n"));
    }
    out.push_str("global args:");
    for (k, v) in &p.global_args {
        match v {
            Some(v) => out.push_str(&format!(" {k}={v:?}")),
            None => out.push_str(&format!(" {k}(unset)")),
        }
    }
    out.push('\n');
    let mut finals: Vec<Option<StageEnv>> = vec![None; df.stages.len()];
    for st in &p.stages {
        let name = st
            .name
            .as_deref()
            .map(|n| format!(" {n:?}"))
            .unwrap_or_default();
        let base = match &st.base {
            Base::Scratch => "scratch".to_string(),
            Base::Image(i) => format!("image {i}"),
            Base::Stage(j) => format!("stage {j}"),
        };
        out.push_str(&format!(
            "stage {}{name}: line {}: FROM {} -> {base}",
            st.index, st.from.span.start_line, st.from.image
        ));
        if let Some(pl) = &st.platform {
            out.push_str(&format!(" platform={pl}"));
        }
        if !st.deps.is_empty() {
            let d: Vec<String> = st.deps.iter().map(usize::to_string).collect();
            out.push_str(&format!(" deps=[{}]", d.join(",")));
        }
        out.push('\n');
        // As the engine starts it: a stage built FROM an earlier one gets that stage's Env and
        // its ARG/ENV state.
        let parent = match &st.base {
            Base::Stage(j) => finals.get(*j).and_then(Option::as_ref),
            _ => None,
        };
        let base_env = parent.map(StageEnv::env).unwrap_or_default();
        let mut senv = StageEnv::new(&p, st.index, &base_env);
        if let Some(parent) = parent {
            senv.inherit(parent);
        }
        for ins in &st.instructions {
            let x = senv.dispatch(&ins.value).map_err(|e| locate(e, ins))?;
            out.push_str(&format!("  {:>4}: {x}\n", ins.start_line));
            if let Instruction::Run(_) = x {
                let h: Vec<String> = senv
                    .history_args()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if !h.is_empty() {
                    out.push_str(&format!("        args: |{} {}\n", h.len(), h.join(" ")));
                }
                let r: Vec<String> = senv
                    .run_build_args()
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                if !r.is_empty() {
                    out.push_str(&format!("        run env +: {}\n", r.join(" ")));
                }
            }
        }
        let env = senv.env();
        if !env.is_empty() {
            let e: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("  env: {}\n", e.join(" ")));
        }
        finals[st.index] = Some(senv);
    }
    out.push_str(&format!("target: stage {}\n", p.target));
    if !p.unused_build_args.is_empty() {
        out.push_str(&format!(
            "warning: build args not consumed: {}\n",
            p.unused_build_args.join(", ")
        ));
    }
    for (l, w) in &df.warnings {
        out.push_str(&format!("warning: line {l}: {w}\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(args: &[(&str, &str)]) -> PlanOptions {
        PlanOptions {
            target: None,
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            target_platform: "linux/amd64".into(),
            build_platform: "linux/amd64".into(),
        }
    }

    fn planned(src: &str, args: &[(&str, &str)]) -> Plan {
        let df = parse_dockerfile(src.as_bytes()).expect("parse");
        plan(&df, &opts(args)).expect("plan")
    }

    /// (planned stage indices, deps of the target)
    fn shape(src: &str, args: &[(&str, &str)]) -> (Vec<usize>, Vec<usize>) {
        let p = planned(src, args);
        let idx = p.stages.iter().map(|s| s.index).collect();
        let deps = p.stage(p.target).expect("target planned").deps.clone();
        (idx, deps)
    }

    /// Kaniko's `--skip-unused-stages=false`: every stage up to the target, none after it;
    /// [`plan`] keeps only what the target reads.
    #[test]
    fn through_target_keeps_unused_stages_before_the_target_only() {
        let src = "FROM scratch AS build\nCOPY f /f\n\
                   FROM build AS test\nCOPY t /t\n\
                   FROM scratch AS final\nCOPY --from=build /f /f\n\
                   FROM scratch AS later\nCOPY l /l\n";
        let df = parse_dockerfile(src.as_bytes()).expect("parse");
        let mut o = opts(&[]);
        o.target = Some("final".into());
        let idx = |p: Plan| p.stages.iter().map(|s| s.index).collect::<Vec<_>>();
        assert_eq!(idx(plan(&df, &o).expect("plan")), vec![0, 2]);
        let all = plan_through_target(&df, &o).expect("plan");
        assert_eq!(all.target, 2);
        assert_eq!(all.stage(1).expect("test planned").deps, vec![0]);
        assert_eq!(idx(all), vec![0, 1, 2]);
        o.target = None;
        assert_eq!(
            idx(plan_through_target(&df, &o).expect("plan")),
            vec![0, 1, 2, 3]
        );
    }

    /// The regression: the stage named only through an ENV of the parent stage was pruned
    /// ("stage 0 was not built").
    #[test]
    fn from_var_set_by_an_inherited_env_keeps_the_stage_it_names() {
        let src = "FROM scratch AS builder\nCOPY f /f\n\
                   FROM scratch AS unused\nCOPY g /g\n\
                   FROM scratch AS base\nENV SRC=builder\n\
                   FROM base\nCOPY --from=$SRC /f /f\n";
        // A scratch chain is closed: SRC can only be "builder", so `unused` stays out.
        assert_eq!(shape(src, &[]), (vec![0, 2, 3], vec![0, 2]));
    }

    #[test]
    fn from_var_through_two_parents_and_a_run_mount() {
        let src = "FROM scratch AS a\nFROM scratch AS b\n\
                   FROM scratch AS p1\nENV M=a\n\
                   FROM p1 AS p2\nARG N=b\n\
                   FROM p2\nRUN --mount=from=${M},target=/m --mount=from=$N,target=/n x\n";
        assert_eq!(shape(src, &[]), (vec![0, 1, 2, 3, 4], vec![0, 1, 3]));
    }

    #[test]
    fn from_var_follows_env_order_and_build_args() {
        let src = "FROM scratch AS a\nFROM scratch AS b\nFROM scratch AS c\n\
                   FROM scratch\nARG S=a\nCOPY --from=$S /f /f\nENV S=b\nCOPY --from=$S /f /g\n";
        assert_eq!(shape(src, &[]).1, vec![0, 1]);
        assert_eq!(shape(src, &[("S", "c")]).1, vec![1, 2]);
    }

    #[test]
    fn onbuild_triggers_expand_with_the_parent_state() {
        let src = "FROM scratch AS a\nFROM scratch AS b\nFROM scratch AS c\n\
                   FROM scratch AS p\nENV T=a\nONBUILD COPY --from=$T /f /f\nONBUILD ENV U=b\n\
                   FROM p\nCOPY --from=$U /f /g\n";
        assert_eq!(shape(src, &[]), (vec![0, 1, 3, 4], vec![0, 1, 3]));
    }

    /// The base image's Env is unknown at plan time: a variable the file does not set may
    /// name any earlier stage its pattern allows.
    #[test]
    fn from_var_a_base_image_may_set_keeps_every_stage_it_could_name() {
        let pre = "FROM scratch AS build-x\nFROM scratch AS build-y\nFROM scratch AS other\n\
                   FROM busybox AS base\n";
        let (idx, deps) = shape(&format!("{pre}FROM base\nCOPY --from=$SRC /f /f\n"), &[]);
        assert_eq!((idx, deps), (vec![0, 1, 2, 3, 4], vec![0, 1, 2, 3]));
        let (idx, deps) = shape(
            &format!("{pre}FROM base\nCOPY --from=BUILD-${{FLAVOR}} /f /f\n"),
            &[],
        );
        assert_eq!((idx, deps), (vec![0, 1, 3, 4], vec![0, 1, 3]));
        // A stage index is a name too.
        let (_, deps) = shape(&format!("{pre}FROM base\nCOPY --from=${{N}}2 /f /f\n"), &[]);
        assert_eq!(deps, vec![2, 3]);
        // `${X:+b}` hides the unknown value: anything may be named.
        let (_, deps) = shape(
            &format!("{pre}FROM base\nCOPY --from=${{X:+b}} /f /f\n"),
            &[],
        );
        assert_eq!(deps, vec![0, 1, 2, 3]);
        // Set in the file, the image cannot change it.
        let (idx, deps) = shape(
            &format!("{pre}ENV SRC=build-y\nFROM base\nCOPY --from=$SRC /f /f\n"),
            &[],
        );
        assert_eq!((idx, deps), (vec![1, 3, 4], vec![1, 3]));
    }

    #[test]
    fn from_var_naming_the_current_stage_is_still_an_error() {
        let df = parse_dockerfile(b"FROM scratch AS me\nENV S=me\nCOPY --from=$S /f /f\n")
            .expect("parse");
        let e = plan(&df, &opts(&[])).expect_err("current stage");
        assert!(
            matches!(e.kind(), ErrorKind::BadStageRef { reference, .. } if reference == "me"),
            "{e}"
        );
    }

    /// `kiln debug plan` starts a child stage as the engine does: with its parent's ARGs.
    #[test]
    fn debug_plan_child_stage_sees_the_parents_args() {
        let out = debug_plan(
            b"FROM scratch AS p\nARG A=1\nENV E=x\nFROM p\nRUN echo\n",
            &opts(&[]),
        )
        .expect("debug plan");
        let child = out.split("stage 1").nth(1).expect("stage 1 shown");
        assert!(child.contains("args: |1 A=1"), "{out}");
        assert!(child.contains("env: E=x"), "{out}");
    }

    #[test]
    fn glob_matches_unknown_as_any_text() {
        let u = UNKNOWN;
        assert!(glob_match(&format!("build-{u}"), "build-x"));
        assert!(glob_match(&format!("build-{u}"), "build-"));
        assert!(!glob_match(&format!("build-{u}"), "other"));
        assert!(glob_match(&format!("{u}-{u}-z"), "a-b-z"));
        assert!(!glob_match(&format!("a{u}a"), "a"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }
}

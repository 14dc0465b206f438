#![forbid(unsafe_code)]
//! kiln's Dockerfile front end: text → typed instructions with line spans → build plan.
//!
//! Pure (no file system, no network); errors carry line and column and render with
//! [`Error::render`]. Behaviour follows BuildKit's Dockerfile front end and is pinned by its
//! parser and shell-lexer test data (`tests/corpus.rs`) and by kiln's own fixtures
//! (`tests/testdata/<case>/{Dockerfile,expected}`, `BLESS=1` rewrites).
//!
//! # Public API
//!
//! ```text
//! parse(&[u8]) -> Result<Ast, Error>                 untyped nodes as BuildKit's parser makes them
//!   Ast { directives, nodes: Vec<Node> }; Ast::dump() -> String (BuildKit Node.Dump() + "\n")
//! parse_dockerfile(&[u8]) -> Result<Dockerfile, Error>
//!   Dockerfile { directives, global_args: Vec<Spanned<Vec<ArgDecl>>>, stages: Vec<Stage>, warnings }
//!   Stage { index, name, from: FromInstr { image, platform, span }, instructions: Vec<Spanned<Instruction>> }
//!   Spanned<T> { value, start_line, end_line, original }   (Deref to T)
//!   Instruction::{Run(RunInstr), Cmd, Entrypoint(CommandLine), Shell, Env, Label, Arg,
//!                 Copy(CopyArgs), Add(CopyArgs), Workdir, User, Expose, Volume, StopSignal,
//!                 Healthcheck, Onbuild(String), Maintainer}
//!   parse_trigger(expr, escape, line) -> Result<Spanned<Instruction>, Error>   (base image ONBUILD)
//!   parse_mount(raw, expand, strict) -> Result<MountSpec, Error>
//! ShellLex::new(escape).process_word / process_words / process_word_with_matches
//! plan(&Dockerfile, &PlanOptions) -> Result<Plan, Error>
//!   Plan { stages: Vec<PlannedStage>, target, unused_build_args, global_args, .. }
//!   Plan::resolve_from(current, reference) -> FromRef::{Stage(idx), Image(ref)}
//! StageEnv::new(&plan, stage_index, base_env); dispatch(&Instruction) -> Result<Instruction, Error>;
//!   env() (config Env), run_build_args(), run_env() (= env() + run_build_args()),
//!   history_args() (proxy args excluded), expand(word), lookup() -> impl Env
//! validate_signal(&str), validate_port(&str)        (also applied by dispatch after expansion)
//! debug_plan(&[u8], &PlanOptions) -> Result<String, Error>
//! Dockerignore::parse(&str) -> Result<Dockerignore, Error>; is_excluded(path); must_descend(dir)
//! ```
//!
//! ARG/ENV follow BuildKit's `dispatchArg`/`dispatchEnv`: ARG declarations are applied one
//! at a time; a build arg beats a default, which beats the global value of a re-declared
//! global ARG; expansion and RUN see ENV and ARG values together with the later one winning
//! (`ENV X=1` then `ARG X=2` gives RUN `X=2`, while the image config keeps `X=1`); heredoc
//! bodies of COPY/ADD expand variables but keep quotes (`ExpandRaw`); RUN/CMD/ENTRYPOINT/
//! SHELL/HEALTHCHECK text and ONBUILD triggers are never expanded by the builder.
//!
//! Stage indices (`Base::Stage`, `PlannedStage::index`, `Plan::target`, `StageEnv::new`) are
//! always the stage's original 0-based position in the Dockerfile.
//!
//! Where kiln is stricter than BuildKit (each is an error with a line): invalid UTF-8 outside
//! comments, `${...}` nested deeper than [`shell::MAX_NESTING`], unknown instructions (BuildKit's
//! parser accepts them and its instruction layer rejects them), `--mount` ids or sources with a
//! `..` component, a FROM/`--from` naming the current or a later stage, an expanded word over
//! [`shell::MAX_EXPANSION`] bytes, `#`/`%`/`/` pattern matching over [`shell::MATCH_BUDGET`],
//! and `ONBUILD ONBUILD` already in [`parse`]. Costs are linear in the input: no recursion on
//! input depth (JSON and stage walks use explicit stacks; `${}` nesting is bounded).

mod dockerignore;
mod error;
mod instructions;
mod json;
pub mod parser;
mod plan;
pub mod shell;

pub use dockerignore::{clean_path, Dockerignore, IgnorePattern};
pub use error::{Error, ErrorKind};
pub use instructions::{
    parse_dockerfile, parse_go_duration, parse_mount, parse_trigger, ArgDecl, CommandLine,
    CopyArgs, Dockerfile, FromInstr, Healthcheck, HeredocFile, Instruction, MountSpec, MountType,
    Network, RunInstr, Security, Sharing, Spanned, Stage,
};
pub use parser::{parse, Ast, Directives, Heredoc, Node};
pub use plan::{
    debug_plan, is_proxy_arg, plan, plan_through_target, validate_port, validate_signal, Base,
    FromRef, Plan, PlanOptions, PlannedStage, StageEnv, PROXY_ARGS,
};
pub use shell::{EmptyEnv, Env, Expansion, ShellLex};

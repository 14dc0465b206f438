//! Typed instructions: the AST nodes checked and converted the way BuildKit's
//! `frontend/dockerfile/instructions/parse.go` does it (flags declared per instruction as in
//! `bflag.go`, mounts as in `runmount.go`), with stricter errors where BuildKit is silent.

use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use crate::parser::{nearest_instruction, parse, parse_heredoc, Directives, Heredoc, Node};

/// A value with the source lines it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// 1-based first line.
    pub start_line: usize,
    /// 1-based last line (heredoc bodies included).
    pub end_line: usize,
    /// The logical instruction line as written, continuations joined (for history).
    pub original: String,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> Spanned<T> {
    fn from_node(value: T, n: &Node) -> Self {
        Spanned {
            value,
            start_line: n.start_line,
            end_line: n.end_line,
            original: n
                .original
                .trim_matches(crate::parser::is_go_space)
                .to_string(),
        }
    }
}

/// Exec form (`["a","b"]`) or shell form (`a b`, run through the stage's SHELL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// JSON array form: run directly.
    Exec(Vec<String>),
    /// Shell form: the text, continuations joined. Never expanded by the builder.
    Shell(String),
}

/// `RUN --network=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// `default`: the builder's normal networking.
    Default,
    /// `none`: no network.
    None,
    /// `host`: the host's network namespace (needs an entitlement in BuildKit).
    Host,
}

/// `RUN --security=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// `sandbox` (default).
    Sandbox,
    /// `insecure` (needs an entitlement in BuildKit).
    Insecure,
}

/// `RUN --mount=type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    /// Bind a context path or stage/image path (read-only unless `rw`).
    Bind,
    /// Persistent cache directory.
    Cache,
    /// Empty tmpfs.
    Tmpfs,
    /// A secret file or env var.
    Secret,
    /// SSH agent socket.
    Ssh,
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Concurrent writers share the cache (default).
    Shared,
    /// A new cache is made when the cache is in use.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One parsed and validated `RUN --mount=` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    /// Mount type (default `bind`).
    pub kind: MountType,
    /// Mount point in the container (`target`/`dst`/`destination`). For secret and ssh
    /// mounts without one: `/run/secrets/<id>` and `/run/buildkit/ssh_agent.<n>`
    /// are the defaults, left for the engine to fill (this stays `None`).
    pub target: Option<String>,
    /// `source`/`src`: path in the context/`from`, or for secrets the secret file.
    pub source: Option<String>,
    /// `from`: stage name, stage index or image for bind/cache.
    pub from: Option<String>,
    /// `id` of a cache, secret or ssh mount.
    pub id: Option<String>,
    /// Cache `sharing=`.
    pub sharing: Option<Sharing>,
    /// `mode=` (octal).
    pub mode: Option<u32>,
    /// `uid=`.
    pub uid: Option<u32>,
    /// `gid=`.
    pub gid: Option<u32>,
    /// Read-only: bind mounts default to true, others to false; `ro`/`rw` override.
    pub readonly: bool,
    /// `required=` for secret/ssh (default false).
    pub required: bool,
    /// `env=` for secrets: expose the secret as this env var.
    pub env: Option<String>,
    /// `size=` of a tmpfs, in bytes.
    pub size: Option<u64>,
    /// The flag value as written (unexpanded), for re-parsing after expansion.
    pub raw: String,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstr {
    /// The command.
    pub cmd: CommandLine,
    /// Heredocs on the line (bodies raw; see [`Heredoc::chomped`]).
    pub heredocs: Vec<Heredoc>,
    /// `--mount=` flags.
    pub mounts: Vec<MountSpec>,
    /// `--network=`.
    pub network: Option<Network>,
    /// `--security=`.
    pub security: Option<Security>,
}

/// A heredoc used as a COPY/ADD source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocFile {
    /// File name (the heredoc word).
    pub name: String,
    /// Content, `<<-` tabs already stripped (expanded by `StageEnv::dispatch` when `expand`).
    pub content: String,
    /// Whether variables in the content are expanded.
    pub expand: bool,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyArgs {
    /// Source paths/URLs (heredoc sources are in `heredocs`).
    pub sources: Vec<String>,
    /// Destination.
    pub dest: String,
    /// `--from=` (COPY only).
    pub from: Option<String>,
    /// `--chown=`.
    pub chown: Option<String>,
    /// `--chmod=`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY).
    pub parents: bool,
    /// `--exclude=` patterns.
    pub exclude: Vec<String>,
    /// `--checksum=` (ADD).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD).
    pub keep_git_dir: bool,
    /// `--unpack` (ADD): `None` = default (unpack local archives, not URLs).
    pub unpack: Option<bool>,
    /// Heredoc sources.
    pub heredocs: Vec<HeredocFile>,
    /// Whether the arguments were a JSON array.
    pub json: bool,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [opts] CMD ...`.
    Cmd {
        /// The test command.
        cmd: CommandLine,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// One `name[=default]` of an ARG line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    /// Name.
    pub name: String,
    /// Default, unexpanded (quotes still in).
    pub default: Option<String>,
}

/// A typed instruction (everything but FROM, which opens a [`Stage`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// RUN.
    Run(RunInstr),
    /// CMD (`Exec(vec![])` for `CMD []`, `Shell("")` never occurs: bare CMD is `Exec(vec![])`).
    Cmd(CommandLine),
    /// ENTRYPOINT.
    Entrypoint(CommandLine),
    /// SHELL (always exec form).
    Shell(Vec<String>),
    /// ENV pairs, unexpanded.
    Env(Vec<(String, String)>),
    /// LABEL pairs, unexpanded.
    Label(Vec<(String, String)>),
    /// ARG declarations.
    Arg(Vec<ArgDecl>),
    /// COPY.
    Copy(CopyArgs),
    /// ADD.
    Add(CopyArgs),
    /// WORKDIR.
    Workdir(String),
    /// USER.
    User(String),
    /// EXPOSE ports (`80`, `80/tcp`, `8000-8010/udp`).
    Expose(Vec<String>),
    /// VOLUME paths.
    Volume(Vec<String>),
    /// STOPSIGNAL.
    StopSignal(String),
    /// HEALTHCHECK.
    Healthcheck(Healthcheck),
    /// ONBUILD trigger text (e.g. `RUN echo hi`), validated, stored as written.
    Onbuild(String),
    /// MAINTAINER (deprecated; becomes the image author).
    Maintainer(String),
}

/// FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromInstr {
    /// Image reference or stage name, unexpanded.
    pub image: String,
    /// `--platform=`, unexpanded.
    pub platform: Option<String>,
    /// Source span.
    pub span: Spanned<()>,
}

/// One build stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// 0-based position in the file.
    pub index: usize,
    /// `AS name` as written; compare with [`Stage::matches_name`] (case-insensitive).
    pub name: Option<String>,
    /// The FROM line.
    pub from: FromInstr,
    /// Instructions after FROM.
    pub instructions: Vec<Spanned<Instruction>>,
}

impl Stage {
    /// Whether `name` (any case) is this stage's name.
    pub fn matches_name(&self, name: &str) -> bool {
        self.name.as_deref().is_some_and(|n| {
            n.eq_ignore_ascii_case(name) || n.to_lowercase() == name.to_lowercase()
        })
    }
}

/// A typed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// Parser directives.
    pub directives: Directives,
    /// ARG lines before the first FROM.
    pub global_args: Vec<Spanned<Vec<ArgDecl>>>,
    /// Stages in file order.
    pub stages: Vec<Stage>,
    /// Non-fatal findings (empty continuation lines, legacy `ENV k v`, ...): `(line, message)`.
    pub warnings: Vec<(usize, String)>,
}

/// Parses and type-checks a Dockerfile.
pub fn parse_dockerfile(src: &[u8]) -> Result<Dockerfile, Error> {
    let ast = parse(src)?;
    let mut df = Dockerfile {
        directives: ast.directives.clone(),
        global_args: Vec::new(),
        stages: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some(check) = &df.directives.check {
        for w in validate_check(check).map_err(|k| Error::new(k).at(1, 1))? {
            df.warnings.push((1, w));
        }
    }
    let mut stage_names = std::collections::HashSet::new();
    for n in &ast.nodes {
        for l in &n.empty_continuation_lines {
            df.warnings
                .push((*l, "empty continuation line (will become an error)".into()));
        }
        let loc = |e: Error| e.at(n.start_line, n.col).through_line(n.end_line);
        if n.keyword == "from" {
            let (from, name) = parse_from(n).map_err(loc)?;
            if let Some(name) = &name {
                if !stage_names.insert(name.to_lowercase()) {
                    return Err(loc(Error::new(ErrorKind::DuplicateStageName {
                        name: name.clone(),
                    })));
                }
            }
            df.stages.push(Stage {
                index: df.stages.len(),
                name,
                from,
                instructions: Vec::new(),
            });
            continue;
        }
        let ins = parse_instruction(n).map_err(loc)?;
        if n.keyword == "maintainer" {
            df.warnings.push((
                n.start_line,
                "MAINTAINER is deprecated; use LABEL org.opencontainers.image.authors=...".into(),
            ));
        }
        if matches!(n.keyword.as_str(), "env" | "label")
            && n.args.get(2).is_some_and(|s| s.is_empty())
        {
            df.warnings.push((
                n.start_line,
                format!(
                    "legacy '{} key value' format; use '{} key=value'",
                    n.keyword.to_uppercase(),
                    n.keyword.to_uppercase()
                ),
            ));
        }
        match df.stages.last_mut() {
            Some(stage) => stage.instructions.push(Spanned::from_node(ins, n)),
            None => match ins {
                Instruction::Arg(a) => df.global_args.push(Spanned::from_node(a, n)),
                _ => {
                    return Err(loc(Error::new(ErrorKind::InstructionBeforeFrom {
                        instruction: n.keyword.to_uppercase(),
                    })))
                }
            },
        }
    }
    if df.stages.is_empty() {
        return Err(Error::new(ErrorKind::BadArguments {
            instruction: "Dockerfile".into(),
            message: "has no FROM instruction (no build stage)".into(),
        })
        .at(ast.end_line().max(1), 1));
    }
    Ok(df)
}

/// Checks `# check=skip=A,B;error=true;experimental=C` (BuildKit's linter directive).
/// A malformed `error=` value is an error; unknown keys are returned as warnings, since
/// newer front ends add keys.
fn validate_check(v: &str) -> Result<Vec<String>, ErrorKind> {
    let mut warnings = Vec::new();
    for part in v.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((k, val)) = part.split_once('=') else {
            return Err(ErrorKind::InvalidCheck {
                value: v.into(),
                reason: format!("{part:?} is not key=value"),
            });
        };
        match k.trim().to_lowercase().as_str() {
            "skip" | "experimental" => {}
            "error" => {
                if !matches!(val.trim().to_lowercase().as_str(), "true" | "false") {
                    return Err(ErrorKind::InvalidCheck {
                        value: v.into(),
                        reason: format!("error must be true or false, not {val:?}"),
                    });
                }
            }
            other => warnings.push(format!("unknown key {other:?} in the check directive")),
        }
    }
    Ok(warnings)
}

/// Flag kinds of BuildKit's `BFlags`.
#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    Str,
    Strs,
}

/// Parsed flags of one instruction.
struct Flags {
    values: Vec<(&'static str, Option<String>)>,
}

impl Flags {
    fn parse(
        n: &Node,
        instruction: &str,
        allowed: &[(&'static str, FlagKind)],
    ) -> Result<Flags, Error> {
        let mut values: Vec<(&'static str, Option<String>)> = Vec::new();
        for raw in &n.flags {
            let body = raw.strip_prefix("--").unwrap_or(raw);
            let (name, value) = match body.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (body, None),
            };
            // Computed only on error: a line may carry very many flags.
            let col = || col_of(n, raw);
            let Some(&(static_name, kind)) = allowed.iter().find(|(k, _)| *k == name) else {
                let mut e = Error::new(ErrorKind::UnknownFlag {
                    instruction: instruction.into(),
                    flag: name.into(),
                })
                .at(n.start_line, col());
                let names: Vec<String> = allowed.iter().map(|(k, _)| format!("--{k}")).collect();
                let near = allowed
                    .iter()
                    .map(|(k, _)| (crate::parser::edit_distance(name, k), *k))
                    .min()
                    .filter(|(d, _)| *d <= 2);
                e = e.with_hint(match near {
                    Some((_, k)) => format!("did you mean --{k}?"),
                    None if names.is_empty() => format!("{instruction} takes no flags"),
                    None => format!("{instruction} accepts {}", names.join(", ")),
                });
                return Err(e);
            };
            match kind {
                FlagKind::Bool => {
                    let b = match value.as_deref().map(str::to_lowercase).as_deref() {
                        None | Some("true") => "true",
                        Some("false") => "false",
                        Some(_) => {
                            return Err(Error::new(ErrorKind::FlagNotBool {
                                flag: name.into(),
                                value: value.unwrap_or_default(),
                            })
                            .at(n.start_line, col()))
                        }
                    };
                    if values.iter().any(|(k, _)| *k == static_name) {
                        return Err(Error::new(ErrorKind::DuplicateFlag { flag: name.into() })
                            .at(n.start_line, col()));
                    }
                    values.push((static_name, Some(b.into())));
                }
                FlagKind::Str | FlagKind::Strs => {
                    let Some(v) = value else {
                        return Err(
                            Error::new(ErrorKind::FlagMissingValue { flag: name.into() })
                                .at(n.start_line, col()),
                        );
                    };
                    if kind == FlagKind::Str && values.iter().any(|(k, _)| *k == static_name) {
                        return Err(Error::new(ErrorKind::DuplicateFlag { flag: name.into() })
                            .at(n.start_line, col()));
                    }
                    values.push((static_name, Some(v)));
                }
            }
        }
        Ok(Flags { values })
    }

    fn str(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(k, _)| *k == name)
            .and_then(|(_, v)| v.clone())
    }

    fn strs(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(k, _)| *k == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.str(name).map(|v| v == "true")
    }
}

/// Column (1-based, chars) of `needle` on the instruction's first line, else the keyword's.
fn col_of(n: &Node, needle: &str) -> usize {
    let first = n.source.split('\n').next().unwrap_or("");
    match first.find(needle) {
        Some(b) => first[..b].chars().count() + 1,
        None => {
            // Flags lose their quotes when parsed; try the flag name alone.
            let name = needle.split('=').next().unwrap_or(needle);
            first
                .find(name)
                .map_or(n.col, |b| first[..b].chars().count() + 1)
        }
    }
}

fn bad_args(instruction: &str, message: &str) -> Error {
    Error::new(ErrorKind::BadArguments {
        instruction: instruction.into(),
        message: message.into(),
    })
}

fn parse_from(n: &Node) -> Result<(FromInstr, Option<String>), Error> {
    let flags = Flags::parse(n, "FROM", &[("platform", FlagKind::Str)])?;
    let a = &n.args;
    let name = match a.len() {
        1 => None,
        3 if a[1].eq_ignore_ascii_case("as") => {
            let name = &a[2];
            let lower = name.to_lowercase();
            let mut chars = lower.chars();
            let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
                && chars.all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
                });
            if !ok {
                return Err(
                    Error::new(ErrorKind::InvalidStageName { name: name.clone() })
                        .at(n.start_line, col_of(n, name)),
                );
            }
            Some(name.clone())
        }
        3 => {
            return Err(
                bad_args("FROM", "requires either one or three arguments").with_hint(format!(
                    "expected 'FROM <image> AS <name>', found {:?}",
                    a[1]
                )),
            )
        }
        _ => return Err(bad_args("FROM", "requires either one or three arguments")),
    };
    Ok((
        FromInstr {
            image: a[0].clone(),
            platform: flags.str("platform"),
            span: Spanned::from_node((), n),
        },
        name,
    ))
}

fn command_line(n: &Node, args: &[String]) -> CommandLine {
    if n.json {
        CommandLine::Exec(args.to_vec())
    } else {
        CommandLine::Shell(args.first().cloned().unwrap_or_default())
    }
}

fn no_flags(n: &Node, instr: &str) -> Result<(), Error> {
    Flags::parse(n, instr, &[]).map(|_| ())
}

fn parse_kv_pairs(n: &Node, instr: &str) -> Result<Vec<(String, String)>, Error> {
    if n.args.is_empty() {
        return Err(bad_args(instr, "requires at least one argument"));
    }
    let mut out = Vec::new();
    for c in n.args.chunks(3) {
        let [k, v, _] = c else {
            return Err(bad_args(instr, "has malformed arguments"));
        };
        if k.is_empty() {
            return Err(bad_args(instr, "names can not be blank"));
        }
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

/// Parses one non-FROM node into a typed instruction.
fn parse_instruction(n: &Node) -> Result<Instruction, Error> {
    let kw = n.keyword.as_str();
    let upper = kw.to_uppercase();
    let i = match kw {
        "run" => {
            let flags = Flags::parse(
                n,
                "RUN",
                &[
                    ("mount", FlagKind::Strs),
                    ("network", FlagKind::Str),
                    ("security", FlagKind::Str),
                ],
            )?;
            if n.args.is_empty() || (!n.json && n.args[0].is_empty()) {
                return Err(bad_args("RUN", "requires at least one argument"));
            }
            let mut mounts = Vec::new();
            for m in flags.strs("mount") {
                let spec = parse_mount(&m, &|s: &str| Ok(s.to_string()), false)
                    .map_err(|e| e.at(n.start_line, col_of(n, &m)))?;
                mounts.push(spec);
            }
            let network = match flags.str("network").as_deref() {
                None => None,
                Some("default") => Some(Network::Default),
                Some("none") => Some(Network::None),
                Some("host") => Some(Network::Host),
                Some(v) => {
                    return Err(Error::new(ErrorKind::InvalidFlagValue {
                        flag: "network".into(),
                        value: v.into(),
                        reason: "must be one of default, none, host".into(),
                    })
                    .at(n.start_line, col_of(n, "--network")))
                }
            };
            let security = match flags.str("security").as_deref() {
                None => None,
                Some("sandbox") => Some(Security::Sandbox),
                Some("insecure") => Some(Security::Insecure),
                Some(v) => {
                    return Err(Error::new(ErrorKind::InvalidFlagValue {
                        flag: "security".into(),
                        value: v.into(),
                        reason: "must be sandbox or insecure".into(),
                    })
                    .at(n.start_line, col_of(n, "--security")))
                }
            };
            Instruction::Run(RunInstr {
                cmd: command_line(n, &n.args),
                heredocs: n.heredocs.clone(),
                mounts,
                network,
                security,
            })
        }
        "cmd" | "entrypoint" => {
            no_flags(n, &upper)?;
            let cmd = if n.args.is_empty() {
                CommandLine::Exec(Vec::new())
            } else {
                command_line(n, &n.args)
            };
            if kw == "cmd" {
                Instruction::Cmd(cmd)
            } else {
                Instruction::Entrypoint(cmd)
            }
        }
        "shell" => {
            no_flags(n, "SHELL")?;
            if !n.json {
                return Err(bad_args(
                    "SHELL",
                    "requires the arguments to be in JSON form",
                ));
            }
            if n.args.is_empty() {
                return Err(bad_args("SHELL", "requires at least one argument"));
            }
            Instruction::Shell(n.args.clone())
        }
        "env" => {
            no_flags(n, "ENV")?;
            Instruction::Env(parse_kv_pairs(n, "ENV")?)
        }
        "label" => {
            no_flags(n, "LABEL")?;
            Instruction::Label(parse_kv_pairs(n, "LABEL")?)
        }
        "arg" => {
            no_flags(n, "ARG")?;
            if n.args.is_empty() {
                return Err(bad_args("ARG", "requires at least one argument"));
            }
            let mut decls = Vec::new();
            for w in &n.args {
                let (name, default) = match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w.clone(), None),
                };
                if name.is_empty() {
                    return Err(bad_args("ARG", "names can not be blank"));
                }
                decls.push(ArgDecl { name, default });
            }
            Instruction::Arg(decls)
        }
        "copy" | "add" => {
            let is_copy = kw == "copy";
            let allowed: &[(&'static str, FlagKind)] = if is_copy {
                &[
                    ("from", FlagKind::Str),
                    ("chown", FlagKind::Str),
                    ("chmod", FlagKind::Str),
                    ("link", FlagKind::Bool),
                    ("parents", FlagKind::Bool),
                    ("exclude", FlagKind::Strs),
                ]
            } else {
                &[
                    ("chown", FlagKind::Str),
                    ("chmod", FlagKind::Str),
                    ("link", FlagKind::Bool),
                    ("keep-git-dir", FlagKind::Bool),
                    ("checksum", FlagKind::Str),
                    ("exclude", FlagKind::Strs),
                    ("unpack", FlagKind::Bool),
                ]
            };
            let flags = Flags::parse(n, &upper, allowed)?;
            let args = copy_args(n, &upper, &flags)?;
            if is_copy {
                Instruction::Copy(args)
            } else {
                Instruction::Add(args)
            }
        }
        "workdir" | "user" | "stopsignal" | "maintainer" => {
            no_flags(n, &upper)?;
            let Some(v) = n.args.first().filter(|v| !v.is_empty()) else {
                return Err(bad_args(&upper, "requires exactly one argument"));
            };
            let v = v.clone();
            match kw {
                "workdir" => Instruction::Workdir(v),
                "user" => Instruction::User(v),
                "stopsignal" => Instruction::StopSignal(v),
                _ => Instruction::Maintainer(v),
            }
        }
        "expose" => {
            no_flags(n, "EXPOSE")?;
            if n.args.is_empty() {
                return Err(bad_args("EXPOSE", "requires at least one argument"));
            }
            Instruction::Expose(n.args.clone())
        }
        "volume" => {
            no_flags(n, "VOLUME")?;
            if n.args.is_empty() {
                return Err(bad_args("VOLUME", "requires at least one argument"));
            }
            if n.args.iter().any(|v| v.trim().is_empty()) {
                return Err(bad_args("VOLUME", "specified can not be an empty string"));
            }
            Instruction::Volume(n.args.clone())
        }
        "healthcheck" => Instruction::Healthcheck(parse_healthcheck(n)?),
        "onbuild" => {
            no_flags(n, "ONBUILD")?;
            let Some(sub) = &n.sub else {
                return Err(bad_args("ONBUILD", "requires at least one argument"));
            };
            match sub.keyword.as_str() {
                "onbuild" => return Err(Error::new(ErrorKind::OnbuildChain)),
                "from" | "maintainer" => {
                    return Err(Error::new(ErrorKind::OnbuildNotAllowed {
                        instruction: sub.keyword.to_uppercase(),
                    }))
                }
                _ => {}
            }
            // Validate the trigger now so a bad one fails this build, not the child's.
            parse_instruction(sub).map_err(|e| {
                let col = col_of(n, &sub.keyword_as_written);
                e.at(n.start_line, col)
            })?;
            let text = n.original.trim_matches(crate::parser::is_go_space);
            let expr = text[n.keyword_as_written.len().min(text.len())..]
                .trim_start_matches(crate::parser::is_go_space);
            Instruction::Onbuild(expr.to_string())
        }
        "from" => {
            // Top-level FROM opens a stage in the caller; here only `ONBUILD FROM` reaches.
            return Err(Error::new(ErrorKind::OnbuildNotAllowed {
                instruction: "FROM".into(),
            }));
        }
        _ => {
            let mut e = Error::new(ErrorKind::UnknownInstruction {
                keyword: n.keyword_as_written.clone(),
            });
            if let Some(k) = nearest_instruction(&n.keyword_as_written) {
                e = e.with_hint(format!("did you mean {}?", k.to_uppercase()));
            }
            return Err(e);
        }
    };
    Ok(i)
}

fn copy_args(n: &Node, upper: &str, flags: &Flags) -> Result<CopyArgs, Error> {
    let args = &n.args;
    if args.len() < 2 && n.heredocs.is_empty() {
        return Err(bad_args(upper, "requires at least two arguments")
            .with_hint(format!("{upper} <src>... <dest>")));
    }
    if args.is_empty() {
        return Err(bad_args(upper, "requires at least two arguments"));
    }
    let dest = args[args.len() - 1].clone();
    if !n.json && matches!(parse_heredoc(&dest), Ok(Some(_))) {
        return Err(Error::new(ErrorKind::HeredocNotAllowed {
            instruction: upper.into(),
            what: "a destination".into(),
        }));
    }
    let mut sources = Vec::new();
    let mut heredocs = Vec::new();
    let bodies: std::collections::HashMap<&str, &Heredoc> =
        n.heredocs.iter().map(|h| (h.name.as_str(), h)).collect();
    for s in &args[..args.len() - 1] {
        let h = if n.json {
            None
        } else {
            parse_heredoc(s).ok().flatten()
        };
        match h {
            Some(h) => {
                let content = bodies
                    .get(h.name.as_str())
                    .map(|b| b.chomped())
                    .unwrap_or_default();
                heredocs.push(HeredocFile {
                    name: h.name,
                    content,
                    expand: h.expand,
                });
            }
            None => sources.push(s.clone()),
        }
    }
    if sources.is_empty() && heredocs.is_empty() {
        return Err(bad_args(upper, "requires at least two arguments"));
    }
    Ok(CopyArgs {
        sources,
        dest,
        from: flags.str("from"),
        chown: flags.str("chown"),
        chmod: flags.str("chmod"),
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        exclude: flags.strs("exclude"),
        checksum: flags.str("checksum"),
        keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
        unpack: flags.bool("unpack"),
        heredocs,
        json: n.json,
    })
}

fn parse_healthcheck(n: &Node) -> Result<Healthcheck, Error> {
    let flags = Flags::parse(
        n,
        "HEALTHCHECK",
        &[
            ("interval", FlagKind::Str),
            ("timeout", FlagKind::Str),
            ("start-period", FlagKind::Str),
            ("start-interval", FlagKind::Str),
            ("retries", FlagKind::Str),
        ],
    )?;
    let Some(typ) = n.args.first() else {
        return Err(bad_args(
            "HEALTHCHECK",
            "requires an argument (CMD or NONE)",
        ));
    };
    match typ.to_uppercase().as_str() {
        "NONE" => {
            if n.args.len() > 1 {
                return Err(Error::new(ErrorKind::InvalidHealthcheck {
                    reason: "HEALTHCHECK NONE takes no arguments".into(),
                }));
            }
            if !n.flags.is_empty() {
                return Err(Error::new(ErrorKind::InvalidHealthcheck {
                    reason: "HEALTHCHECK NONE takes no options".into(),
                }));
            }
            Ok(Healthcheck::None)
        }
        "CMD" => {
            let rest = &n.args[1..];
            if rest.is_empty() || (!n.json && rest[0].is_empty()) {
                return Err(Error::new(ErrorKind::InvalidHealthcheck {
                    reason: "missing command after HEALTHCHECK CMD".into(),
                }));
            }
            let dur = |name: &str| -> Result<Option<Duration>, Error> {
                let Some(v) = flags.str(name) else {
                    return Ok(None);
                };
                let d = parse_go_duration(&v).ok_or_else(|| {
                    Error::new(ErrorKind::InvalidFlagValue {
                        flag: name.into(),
                        value: v.clone(),
                        reason: "not a duration (e.g. 30s, 1m30s)".into(),
                    })
                    .at(n.start_line, col_of(n, &format!("--{name}")))
                })?;
                // BuildKit: 0 means "inherit"; otherwise at least 1ms.
                if !d.is_zero() && d < Duration::from_millis(1) {
                    return Err(Error::new(ErrorKind::InvalidFlagValue {
                        flag: name.into(),
                        value: v,
                        reason: "cannot be less than 1ms".into(),
                    })
                    .at(n.start_line, col_of(n, &format!("--{name}"))));
                }
                Ok(Some(d))
            };
            let retries = match flags.str("retries") {
                None => None,
                Some(v) => Some(v.parse::<u32>().map_err(|_| {
                    Error::new(ErrorKind::InvalidFlagValue {
                        flag: "retries".into(),
                        value: v.clone(),
                        reason: "must be a non-negative integer".into(),
                    })
                    .at(n.start_line, col_of(n, "--retries"))
                })?),
            };
            Ok(Healthcheck::Cmd {
                cmd: command_line(n, rest),
                interval: dur("interval")?,
                timeout: dur("timeout")?,
                start_period: dur("start-period")?,
                start_interval: dur("start-interval")?,
                retries,
            })
        }
        other => Err(Error::new(ErrorKind::InvalidHealthcheck {
            reason: format!("unknown type {other:?} in HEALTHCHECK (try CMD)"),
        })),
    }
}

/// Go's `time.ParseDuration` (`1h2m3.5s`, `300ms`, `2us`), non-negative only.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.is_empty() || s.starts_with('-') {
        return None;
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: f64 = 0.0;
    while i < b.len() {
        let st = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let num: f64 = s[st..i].parse().ok()?;
        let ust = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let mult = match &s[ust..i] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * mult;
    }
    if !total.is_finite() || total > 9.2e9 {
        return None;
    }
    Some(Duration::from_secs_f64(total))
}

/// Whether a path has a `..` component (an escape from the context/cache root).
fn has_dotdot(p: &str) -> bool {
    p.split(['/', '\\']).any(|c| c == "..")
}

/// Parses a `--mount=` value (`type=cache,target=/x,...`, CSV). `expand` is applied to each
/// value first; with `strict` false, values still holding `$` are not range-checked (they are
/// re-checked after expansion in `StageEnv::dispatch`).
pub fn parse_mount(
    raw: &str,
    expand: &dyn Fn(&str) -> Result<String, Error>,
    strict: bool,
) -> Result<MountSpec, Error> {
    let bad = |reason: String| {
        Error::new(ErrorKind::InvalidMount {
            spec: raw.to_string(),
            reason,
        })
    };
    let mut m = MountSpec {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        readonly: true,
        required: false,
        env: None,
        size: None,
        raw: raw.to_string(),
    };
    let mut ro: Option<bool> = None;
    let fields = split_csv(raw).map_err(bad)?;
    // `type` decides the defaults, so read it first (BuildKit does the same).
    for f in &fields {
        if let Some(v) = f.strip_prefix("type=") {
            m.kind = match expand(v)?.as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                other => return Err(bad(format!("unsupported mount type {other:?}"))),
            };
        }
    }
    let deferred = |v: &str| !strict && v.contains('$');
    for f in &fields {
        let (key, value) = match f.split_once('=') {
            Some((k, v)) => (k.trim().to_lowercase(), Some(v)),
            None => (f.trim().to_lowercase(), None),
        };
        let need = |v: Option<&str>| -> Result<String, Error> {
            match v {
                Some(v) => expand(v),
                None => Err(bad(format!("{key} requires a value"))),
            }
        };
        let parse_bool = |v: Option<&str>| -> Result<bool, Error> {
            match v.map(expand).transpose()?.as_deref() {
                None | Some("true") | Some("1") => Ok(true),
                Some("false") | Some("0") => Ok(false),
                Some(o) => Err(bad(format!("invalid value {o:?} for {key}"))),
            }
        };
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => {
                let v = need(value)?;
                if v.is_empty() {
                    return Err(bad("target must not be empty".into()));
                }
                m.target = Some(v);
            }
            "source" | "src" => {
                let v = need(value)?;
                if has_dotdot(&v) {
                    return Err(bad(format!("source {v:?} escapes its root with '..'")));
                }
                m.source = Some(v);
            }
            "from" => m.from = Some(need(value)?),
            "id" => {
                let v = need(value)?;
                if has_dotdot(&v) {
                    return Err(bad(format!("id {v:?} must not contain '..'")));
                }
                m.id = Some(v);
            }
            "readonly" | "ro" => ro = Some(parse_bool(value)?),
            "rw" | "readwrite" => ro = Some(!parse_bool(value)?),
            "required" => m.required = parse_bool(value)?,
            "sharing" => {
                m.sharing = Some(match need(value)?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    o => {
                        return Err(bad(format!(
                            "unsupported sharing value {o:?} (shared, private or locked)"
                        )))
                    }
                })
            }
            "mode" => {
                let v = need(value)?;
                if !deferred(&v) {
                    let mode = u32::from_str_radix(&v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| bad(format!("invalid mode {v:?} (octal, at most 7777)")))?;
                    m.mode = Some(mode);
                }
            }
            "uid" | "gid" => {
                let v = need(value)?;
                if !deferred(&v) {
                    let id = v
                        .parse::<u32>()
                        .ok()
                        .filter(|id| *id != u32::MAX)
                        .ok_or_else(|| bad(format!("invalid {key} {v:?}")))?;
                    if key == "uid" {
                        m.uid = Some(id);
                    } else {
                        m.gid = Some(id);
                    }
                }
            }
            "env" => {
                let v = need(value)?;
                if v.is_empty() || v.contains('=') {
                    return Err(bad(format!("invalid env name {v:?}")));
                }
                m.env = Some(v);
            }
            "size" => {
                let v = need(value)?;
                if !deferred(&v) {
                    m.size =
                        Some(parse_size(&v).ok_or_else(|| bad(format!("invalid size {v:?}")))?);
                }
            }
            other => return Err(bad(format!("unexpected key {other:?}"))),
        }
    }
    // Per-type rules (BuildKit runmount.go): which keys make sense where.
    let t = m.kind;
    let only = |ok: bool, what: &str| -> Result<(), Error> {
        if ok {
            Ok(())
        } else {
            Err(bad(format!("{what} is not allowed for this mount type")))
        }
    };
    only(m.sharing.is_none() || t == MountType::Cache, "sharing")?;
    only(m.env.is_none() || t == MountType::Secret, "env")?;
    only(m.size.is_none() || t == MountType::Tmpfs, "size")?;
    only(
        m.from.is_none() || matches!(t, MountType::Bind | MountType::Cache),
        "from",
    )?;
    only(
        m.source.is_none() || matches!(t, MountType::Bind | MountType::Cache | MountType::Secret),
        "source",
    )?;
    only(
        (m.mode.is_none() && m.uid.is_none() && m.gid.is_none())
            || matches!(t, MountType::Cache | MountType::Secret | MountType::Ssh),
        "mode/uid/gid",
    )?;
    match t {
        MountType::Bind | MountType::Cache | MountType::Tmpfs if m.target.is_none() => {
            return Err(bad("target is required".into()))
        }
        MountType::Secret if m.id.is_none() && m.target.is_none() && m.env.is_none() => {
            return Err(bad("secret mount requires id, target or env".into()))
        }
        _ => {}
    }
    m.readonly = ro.unwrap_or(t == MountType::Bind);
    Ok(m)
}

fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim().to_lowercase();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        _ => return None,
    };
    let b = num * mult;
    (b.is_finite() && (0.0..1.8e19).contains(&b)).then_some(b as u64)
}

/// Splits a CSV record as Go's `encoding/csv` does for one line (quotes group commas).
fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut in_q = false;
    let mut at_field_start = true;
    while let Some(c) = chars.next() {
        if in_q {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_q = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if at_field_start => {
                in_q = true;
                at_field_start = false;
            }
            ',' => {
                out.push(std::mem::take(&mut cur));
                at_field_start = true;
            }
            c => {
                cur.push(c);
                at_field_start = false;
            }
        }
    }
    if in_q {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out.into_iter().filter(|f| !f.is_empty()).collect())
}

// ---- rendering (for `debug plan` and history) ----

fn json_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn json_array(v: &[String]) -> String {
    let parts: Vec<String> = v.iter().map(|s| json_quote(s)).collect();
    format!("[{}]", parts.join(", "))
}

impl fmt::Display for CommandLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CommandLine::Exec(v) => f.write_str(&json_array(v)),
            CommandLine::Shell(s) => f.write_str(s),
        }
    }
}

fn fmt_dur(d: &Option<Duration>) -> Option<String> {
    d.map(|d| {
        if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else {
            format!("{}ms", d.as_millis())
        }
    })
}

impl fmt::Display for MountSpec {
    /// Canonical `key=value,...` form of the parsed fields (defaults left out).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type={}", format!("{:?}", self.kind).to_lowercase())?;
        let mut kv = |k: &str, v: &Option<String>| match v {
            Some(v) => write!(f, ",{k}={v}"),
            None => Ok(()),
        };
        kv("target", &self.target)?;
        kv("source", &self.source)?;
        kv("from", &self.from)?;
        kv("id", &self.id)?;
        kv(
            "sharing",
            &self.sharing.map(|s| format!("{s:?}").to_lowercase()),
        )?;
        kv("mode", &self.mode.map(|m| format!("{m:o}")))?;
        kv("uid", &self.uid.map(|u| u.to_string()))?;
        kv("gid", &self.gid.map(|g| g.to_string()))?;
        kv("env", &self.env)?;
        kv("size", &self.size.map(|s| s.to_string()))?;
        if self.required {
            f.write_str(",required")?;
        }
        let default_ro = self.kind == MountType::Bind;
        if self.readonly != default_ro {
            f.write_str(if self.readonly { ",ro" } else { ",rw" })?;
        }
        Ok(())
    }
}

impl fmt::Display for Instruction {
    /// A canonical one-line rendering (flags sorted as declared, values as held).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kv = |v: &[(String, String)]| {
            v.iter()
                .map(|(k, v)| format!("{k}={}", json_quote(v)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            Instruction::Run(r) => {
                f.write_str("RUN")?;
                for m in &r.mounts {
                    write!(f, " --mount={m}")?;
                }
                if let Some(n) = r.network {
                    write!(f, " --network={}", format!("{n:?}").to_lowercase())?;
                }
                if let Some(s) = r.security {
                    write!(f, " --security={}", format!("{s:?}").to_lowercase())?;
                }
                write!(f, " {}", r.cmd)?;
                for h in &r.heredocs {
                    write!(f, " [heredoc {} {} bytes]", h.name, h.content.len())?;
                }
                Ok(())
            }
            Instruction::Cmd(c) => write!(f, "CMD {c}"),
            Instruction::Entrypoint(c) => write!(f, "ENTRYPOINT {c}"),
            Instruction::Shell(v) => write!(f, "SHELL {}", json_array(v)),
            Instruction::Env(v) => write!(f, "ENV {}", kv(v)),
            Instruction::Label(v) => write!(f, "LABEL {}", kv(v)),
            Instruction::Arg(v) => {
                f.write_str("ARG")?;
                for a in v {
                    match &a.default {
                        Some(d) => write!(f, " {}={}", a.name, json_quote(d))?,
                        None => write!(f, " {}", a.name)?,
                    }
                }
                Ok(())
            }
            Instruction::Copy(c) | Instruction::Add(c) => {
                f.write_str(if matches!(self, Instruction::Copy(_)) {
                    "COPY"
                } else {
                    "ADD"
                })?;
                let opt = |f: &mut fmt::Formatter<'_>, k: &str, v: &Option<String>| match v {
                    Some(v) => write!(f, " --{k}={v}"),
                    None => Ok(()),
                };
                opt(f, "from", &c.from)?;
                opt(f, "chown", &c.chown)?;
                opt(f, "chmod", &c.chmod)?;
                opt(f, "checksum", &c.checksum)?;
                if c.link {
                    f.write_str(" --link")?;
                }
                if c.parents {
                    f.write_str(" --parents")?;
                }
                if c.keep_git_dir {
                    f.write_str(" --keep-git-dir")?;
                }
                if let Some(u) = c.unpack {
                    write!(f, " --unpack={u}")?;
                }
                for e in &c.exclude {
                    write!(f, " --exclude={e}")?;
                }
                for h in &c.heredocs {
                    write!(f, " <<{}({})", h.name, json_quote(&h.content))?;
                }
                let mut all = c.sources.clone();
                all.push(c.dest.clone());
                write!(f, " {}", json_array(&all))
            }
            Instruction::Workdir(v) => write!(f, "WORKDIR {v}"),
            Instruction::User(v) => write!(f, "USER {v}"),
            Instruction::Expose(v) => write!(f, "EXPOSE {}", v.join(" ")),
            Instruction::Volume(v) => write!(f, "VOLUME {}", json_array(v)),
            Instruction::StopSignal(v) => write!(f, "STOPSIGNAL {v}"),
            Instruction::Healthcheck(Healthcheck::None) => f.write_str("HEALTHCHECK NONE"),
            Instruction::Healthcheck(Healthcheck::Cmd {
                cmd,
                interval,
                timeout,
                start_period,
                start_interval,
                retries,
            }) => {
                f.write_str("HEALTHCHECK")?;
                for (k, v) in [
                    ("interval", fmt_dur(interval)),
                    ("timeout", fmt_dur(timeout)),
                    ("start-period", fmt_dur(start_period)),
                    ("start-interval", fmt_dur(start_interval)),
                    ("retries", retries.map(|r| r.to_string())),
                ] {
                    if let Some(v) = v {
                        write!(f, " --{k}={v}")?;
                    }
                }
                write!(f, " CMD {cmd}")
            }
            Instruction::Onbuild(s) => write!(f, "ONBUILD {s}"),
            Instruction::Maintainer(s) => write!(f, "MAINTAINER {s}"),
        }
    }
}

impl Instruction {
    /// The upper-case keyword.
    pub fn keyword(&self) -> &'static str {
        match self {
            Instruction::Run(_) => "RUN",
            Instruction::Cmd(_) => "CMD",
            Instruction::Entrypoint(_) => "ENTRYPOINT",
            Instruction::Shell(_) => "SHELL",
            Instruction::Env(_) => "ENV",
            Instruction::Label(_) => "LABEL",
            Instruction::Arg(_) => "ARG",
            Instruction::Copy(_) => "COPY",
            Instruction::Add(_) => "ADD",
            Instruction::Workdir(_) => "WORKDIR",
            Instruction::User(_) => "USER",
            Instruction::Expose(_) => "EXPOSE",
            Instruction::Volume(_) => "VOLUME",
            Instruction::StopSignal(_) => "STOPSIGNAL",
            Instruction::Healthcheck(_) => "HEALTHCHECK",
            Instruction::Onbuild(_) => "ONBUILD",
            Instruction::Maintainer(_) => "MAINTAINER",
        }
    }
}

/// Parses an ONBUILD trigger taken from a base image's config (`RUN echo hi`) into a typed
/// instruction, as if it were written in the Dockerfile at `line` (for error locations).
pub fn parse_trigger(expr: &str, escape: char, line: usize) -> Result<Spanned<Instruction>, Error> {
    let mut src = String::new();
    if escape == '`' {
        src.push_str("# escape=`\n");
    }
    src.push_str(expr);
    src.push('\n');
    let ast = parse(src.as_bytes()).map_err(|e| Error::new(e.kind().clone()).at(line, 1))?;
    let [n] = ast.nodes.as_slice() else {
        return Err(bad_args("ONBUILD", "trigger must be exactly one instruction").at(line, 1));
    };
    match n.keyword.as_str() {
        "onbuild" => return Err(Error::new(ErrorKind::OnbuildChain).at(line, 1)),
        "from" | "maintainer" => {
            return Err(Error::new(ErrorKind::OnbuildNotAllowed {
                instruction: n.keyword.to_uppercase(),
            })
            .at(line, 1))
        }
        _ => {}
    }
    let ins = parse_instruction(n).map_err(|e| Error::new(e.kind().clone()).at(line, 1))?;
    let mut sp = Spanned::from_node(ins, n);
    sp.start_line = line;
    sp.end_line = line;
    Ok(sp)
}

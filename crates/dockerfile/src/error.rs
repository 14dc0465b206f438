//! The front end's one error type: an [`ErrorKind`] (the facts) plus where it happened.

use std::fmt;

/// What went wrong. Messages are lower-case and name the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A non-comment line is not valid UTF-8.
    #[error("line is not valid UTF-8")]
    InvalidUtf8,
    /// The same parser directive appears twice.
    #[error("only one {name} parser directive can be used")]
    DuplicateDirective {
        /// Directive name, lower-cased.
        name: String,
    },
    /// `# escape=` with something other than `` ` `` or `\`.
    #[error("invalid escape token '{value}' does not match ` or \\")]
    InvalidEscape {
        /// The value given.
        value: String,
    },
    /// `# check=` with a malformed value.
    #[error("invalid check directive '{value}': {reason}")]
    InvalidCheck {
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The file holds no instruction.
    #[error("file with no instructions")]
    NoInstructions,
    /// A JSON array with a non-string element (BuildKit's `errDockerfileNotStringArray`).
    #[error("when using JSON array syntax, arrays must be comprised of strings only")]
    NotStringArray,
    /// `ENV key` / `LABEL key` with no value.
    #[error("{instruction} must have two arguments")]
    MissingValue {
        /// Upper-case instruction name.
        instruction: String,
    },
    /// `ENV a=1 b` — a word without `=` in the `k=v` form.
    #[error("syntax error - can't find = in {word:?}. Must be of the form: name=value")]
    MissingEquals {
        /// The word without `=`.
        word: String,
    },
    /// A heredoc was opened but its terminator never came.
    #[error("unterminated heredoc {name:?}")]
    UnterminatedHeredoc {
        /// The terminator word.
        name: String,
    },
    /// A heredoc word that cannot be lexed (`<<'EOF`).
    #[error("invalid heredoc {word:?}: {reason}")]
    BadHeredoc {
        /// The word.
        word: String,
        /// Lexer message.
        reason: String,
    },
    /// A heredoc where the instruction cannot take one (COPY destination).
    #[error("{instruction} cannot accept a heredoc as {what}")]
    HeredocNotAllowed {
        /// Instruction.
        instruction: String,
        /// e.g. "a destination".
        what: String,
    },
    /// `ONBUILD ONBUILD`.
    #[error("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")]
    OnbuildChain,
    /// `ONBUILD FROM` / `ONBUILD MAINTAINER`.
    #[error("{instruction} isn't allowed as an ONBUILD trigger")]
    OnbuildNotAllowed {
        /// The trigger instruction.
        instruction: String,
    },
    /// A keyword that is no Dockerfile instruction.
    #[error("unknown instruction: {keyword}")]
    UnknownInstruction {
        /// The keyword as written.
        keyword: String,
    },
    /// An instruction before the first FROM that is not ARG.
    #[error("{instruction} instruction before the first FROM (only ARG may come first)")]
    InstructionBeforeFrom {
        /// The instruction.
        instruction: String,
    },
    /// A flag the instruction does not take.
    #[error("unknown flag: --{flag} on {instruction}")]
    UnknownFlag {
        /// Instruction.
        instruction: String,
        /// Flag name without dashes.
        flag: String,
    },
    /// `--chown` with no value.
    #[error("missing a value on flag: --{flag}")]
    FlagMissingValue {
        /// Flag name.
        flag: String,
    },
    /// A single-valued flag given twice.
    #[error("duplicate flag specified: --{flag}")]
    DuplicateFlag {
        /// Flag name.
        flag: String,
    },
    /// `--link=maybe`.
    #[error("expecting boolean value for flag --{flag}, not: {value}")]
    FlagNotBool {
        /// Flag name.
        flag: String,
        /// Value given.
        value: String,
    },
    /// A flag value outside its domain (`--network=bridge`).
    #[error("invalid value {value:?} for --{flag}: {reason}")]
    InvalidFlagValue {
        /// Flag name.
        flag: String,
        /// Value given.
        value: String,
        /// What is allowed.
        reason: String,
    },
    /// Wrong number/shape of arguments.
    #[error("{instruction} {message}")]
    BadArguments {
        /// Instruction.
        instruction: String,
        /// What is wrong, e.g. "requires at least two arguments".
        message: String,
    },
    /// Stage name not matching `^[a-z][a-z0-9-_.]*$`.
    #[error(
        "invalid name for build stage: {name:?}, name can't start with a number or contain symbols"
    )]
    InvalidStageName {
        /// The name.
        name: String,
    },
    /// Two stages with the same name.
    #[error("duplicate stage name {name:?}")]
    DuplicateStageName {
        /// The name.
        name: String,
    },
    /// An invalid `RUN --mount=` value.
    #[error("invalid mount {spec:?}: {reason}")]
    InvalidMount {
        /// The mount flag value.
        spec: String,
        /// What is wrong.
        reason: String,
    },
    /// HEALTHCHECK problem.
    #[error("healthcheck: {reason}")]
    InvalidHealthcheck {
        /// What is wrong.
        reason: String,
    },
    /// Shell lexer: unterminated quote.
    #[error("unexpected end of statement while looking for matching {what}")]
    UnterminatedQuote {
        /// `single-quote`, `double-quote` or the stop char.
        what: String,
    },
    /// Shell lexer: `${x` with no `}`.
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    /// Shell lexer: `${}` or `${:x}`.
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    /// Shell lexer: `${x=y}` and friends.
    #[error("unsupported modifier ({modifier}) in substitution")]
    UnsupportedModifier {
        /// The modifier text.
        modifier: String,
    },
    /// `${x?msg}` with x unset.
    #[error("{name}: {message}")]
    RequiredVariable {
        /// Variable.
        name: String,
        /// Message.
        message: String,
    },
    /// Invalid pattern in `${x#p}`.
    #[error("invalid pattern ({pattern}) in substitution: {reason}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// `${a:-${b:-${c...}}}` beyond the nesting bound.
    #[error("variable substitution nested deeper than {limit} levels")]
    NestingTooDeep {
        /// The bound.
        limit: usize,
    },
    /// An expansion result beyond [`crate::shell::MAX_EXPANSION`] bytes.
    #[error("variable expansion result exceeds {limit} bytes")]
    ExpansionTooLarge {
        /// The bound.
        limit: usize,
    },
    /// A word failed to expand (wraps the lexer error with the word).
    #[error("failed to process {word:?}: {source}")]
    Expand {
        /// The word being expanded.
        word: String,
        /// The lexer error.
        source: Box<ErrorKind>,
    },
    /// `--target` names no stage.
    #[error("target stage {target:?} could not be found")]
    UnknownTarget {
        /// Target requested.
        target: String,
    },
    /// `COPY --from=3` / `--mount=from=` naming the current or a later stage by index.
    #[error("invalid stage reference {reference:?}: {reason}")]
    BadStageRef {
        /// The reference.
        reference: String,
        /// Why.
        reason: String,
    },
    /// FROM with an empty image after expansion.
    #[error("base name ({image}) should not be blank")]
    EmptyBaseName {
        /// The unexpanded image.
        image: String,
    },
    /// STOPSIGNAL with no such signal (after expansion).
    #[error("invalid signal: {value}")]
    InvalidSignal {
        /// The value.
        value: String,
    },
    /// EXPOSE with a malformed port (after expansion).
    #[error("invalid port {value:?}: {reason}")]
    InvalidPort {
        /// The value.
        value: String,
        /// Why.
        reason: String,
    },
    /// `.dockerignore` pattern that cannot be compiled.
    #[error("invalid .dockerignore pattern {pattern:?}: {reason}")]
    BadIgnorePattern {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
}

/// A front-end error: what ([`ErrorKind`]) and where (1-based line/column, 0 = unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    line: usize,
    end_line: usize,
    col: usize,
    hint: Option<String>,
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        None
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}", self.line)?;
            if self.col > 0 {
                write!(f, ":{}", self.col)?;
            }
            write!(f, ": ")?;
        }
        write!(f, "{}", self.kind)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

impl From<ErrorKind> for Error {
    fn from(kind: ErrorKind) -> Self {
        Error::new(kind)
    }
}

impl Error {
    /// An error with no location yet.
    pub fn new(kind: ErrorKind) -> Self {
        Error {
            kind,
            line: 0,
            end_line: 0,
            col: 0,
            hint: None,
        }
    }

    /// Sets the location unless one is already set.
    pub(crate) fn at(mut self, line: usize, col: usize) -> Self {
        if self.line == 0 {
            self.line = line;
            self.end_line = line;
            self.col = col;
        }
        self
    }

    /// Sets the end line of a multi-line instruction.
    pub(crate) fn through_line(mut self, end_line: usize) -> Self {
        if end_line > self.end_line {
            self.end_line = end_line;
        }
        self
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// 1-based line, 0 when unknown.
    pub fn line(&self) -> usize {
        self.line
    }

    /// 1-based last line of the instruction the error is in (= `line()` for one-line ones).
    pub fn end_line(&self) -> usize {
        self.end_line
    }

    /// 1-based column (in characters), 0 when unknown.
    pub fn col(&self) -> usize {
        self.col
    }

    /// A suggestion, e.g. the nearest instruction keyword.
    pub fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    /// Renders `FILE:LINE:COL: message`, then the source line with a caret, then the hint.
    ///
    /// `source` is the Dockerfile text the error came from (lossily decoded if needed).
    pub fn render(&self, file_name: &str, source: &str) -> String {
        let mut out = String::new();
        if self.line == 0 {
            out.push_str(&format!("{file_name}: {}\n", self.kind));
        } else {
            let col = self.col.max(1);
            out.push_str(&format!("{file_name}:{}:{col}: {}\n", self.line, self.kind));
            let src = source.strip_prefix('\u{feff}').unwrap_or(source);
            if let Some(text) = src.split('\n').nth(self.line - 1) {
                let text = text.trim_end_matches(['\r', '\n']);
                // Keep the excerpt readable for 1 MB lines: show at most 200 chars around COL.
                let chars: Vec<char> = text.chars().collect();
                let start = (col - 1).saturating_sub(100).min(chars.len());
                let end = (start + 200).min(chars.len());
                let shown: String = chars[start..end]
                    .iter()
                    .map(|&c| if c == '\t' { ' ' } else { c })
                    .collect();
                let gutter = format!("{:>5} | ", self.line);
                out.push_str(&gutter);
                out.push_str(&shown);
                out.push('\n');
                out.push_str(&" ".repeat(gutter.len() - 2));
                out.push_str("| ");
                out.push_str(&" ".repeat((col - 1).saturating_sub(start)));
                out.push_str("^\n");
            }
        }
        if let Some(h) = &self.hint {
            out.push_str("hint: ");
            out.push_str(h);
            out.push('\n');
        }
        out
    }
}

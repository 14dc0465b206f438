#![forbid(unsafe_code)]
//! kiln's Dockerfile front end (being written).

mod error;
mod json;
pub mod parser;
pub mod shell;

pub use error::{Error, ErrorKind};
pub use parser::{parse, Ast, Directives, Heredoc, Node};
pub use shell::{EmptyEnv, Env, Expansion, ShellLex};

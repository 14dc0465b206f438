//! One module per kind of instruction; `engine.rs` dispatches with one `match`.
//! Config-only instructions share `metadata.rs` (each is a few lines).

pub mod add;
pub mod chmod;
pub mod copy;
pub mod metadata;
pub mod run;
pub mod ssh_agent;
pub mod workdir;

//! kiln-build: the engine. Turns a Dockerfile and a context into an image and publishes it.
//!
//! [`build`] parses and plans the Dockerfile (kiln-dockerfile), then runs each needed stage in
//! order: the base (scratch, a pulled image, or an earlier stage) is unpacked into a private
//! rootfs under the state directory; each instruction is expanded with the stage's ARG/ENV
//! state and dispatched by one `match` to its module in `instructions/`; what it changed
//! becomes a layer; the config and history follow `docker build`. The target stage is then
//! assembled into a manifest and written out (OCI layout, docker-archive, registry).
#![forbid(unsafe_code)]

pub mod cache;
mod context;
mod engine;
mod error;
pub mod git;
pub mod image;
mod instructions;
pub mod options;
pub mod output;
mod snapshot;
pub mod trees;

pub use engine::{build, remove_tree, BuildOutcome};
pub use error::BuildError;

/// The plan options for a target, build args and platform (the host's when `None`).
pub fn plan_options(
    target: Option<String>,
    build_args: Vec<(String, String)>,
    platform: Option<&str>,
) -> Result<kiln_dockerfile::PlanOptions, BuildError> {
    let host = kiln_oci::platform::Platform::host();
    let target_platform = match platform {
        Some(p) => p
            .parse::<kiln_oci::platform::Platform>()
            .map_err(|e| BuildError::Option {
                flag: "--custom-platform",
                message: e.to_string(),
            })?,
        None => host.clone(),
    };
    Ok(kiln_dockerfile::PlanOptions {
        target,
        build_args,
        target_platform: target_platform.to_string(),
        build_platform: host.to_string(),
    })
}

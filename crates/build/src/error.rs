//! The engine's error: one enum with the facts in the variants.

use std::path::PathBuf;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse or plan; `message` is already rendered with file, line,
    /// column and caret.
    #[error("{message}")]
    Dockerfile { message: String },
    #[error("{what}: {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}:{line}: {instruction}: {message}")]
    Step {
        file: String,
        line: usize,
        instruction: String,
        message: String,
    },
    #[error("{file}:{line}: {instruction}: source not found in the build context: {source_path}")]
    CopySourceNotFound {
        file: String,
        line: usize,
        instruction: String,
        source_path: String,
    },
    #[error("{file}:{line}: RUN {command}: exited with status {code}")]
    RunFailed {
        file: String,
        line: usize,
        command: String,
        code: i32,
    },
    #[error("not supported yet: {what}{}", line.map(|l| format!(" (line {l})")).unwrap_or_default())]
    Unsupported { what: String, line: Option<usize> },
    #[error("invalid option {flag}: {message}")]
    Option { flag: &'static str, message: String },
    #[error(transparent)]
    Blob(#[from] kiln_oci::blobstore::BlobError),
    #[error(transparent)]
    Layout(#[from] kiln_oci::layout::LayoutError),
    #[error(transparent)]
    Archive(#[from] kiln_oci::archive::ArchiveError),
    #[error(transparent)]
    Layer(#[from] kiln_oci::layer::LayerError),
    #[error(transparent)]
    Config(#[from] kiln_oci::config::ConfigError),
    #[error(transparent)]
    Rootfs(#[from] kiln_rootfs::RootError),
    #[error("snapshot: {0}")]
    Diff(#[from] kiln_rootfs::DiffError),
    #[error("unpacking layer {digest} of {image}: {source}")]
    Unpack {
        image: String,
        digest: kiln_oci::Digest,
        #[source]
        source: Box<kiln_rootfs::UnpackError>,
    },
    #[error(transparent)]
    Registry(Box<kiln_registry::RegistryError>),
    #[error("{file}:{line}: RUN: {source}")]
    Sandbox {
        file: String,
        line: usize,
        #[source]
        source: kiln_sandbox::SandboxError,
    },
    #[error("{file}:{line}: {instruction}: {source}")]
    Copy {
        file: String,
        line: usize,
        instruction: String,
        #[source]
        source: crate::instructions::copy::CopyError,
    },
    #[error(transparent)]
    Context(#[from] crate::context::ContextError),
    #[error("layer cache: {0}")]
    Cache(Box<crate::cache::CacheError>),
    #[error("invalid reference {reference:?}: {message}")]
    Reference { reference: String, message: String },
    #[error("serialising JSON: {0}")]
    Json(#[source] serde_json::Error),
}

impl From<kiln_registry::RegistryError> for BuildError {
    fn from(e: kiln_registry::RegistryError) -> Self {
        BuildError::Registry(Box::new(e))
    }
}

impl BuildError {
    /// The exit status kiln should end with: a failing RUN's own status, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            BuildError::RunFailed { code, .. } if *code > 0 && *code < 256 => *code,
            _ => 1,
        }
    }
}

//! Error types of kiln-rootfs: one enum per domain, facts in the variants.

use std::path::PathBuf;

/// Errors of confined operations on a rootfs ([`crate::Root`]).
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("opening rootfs {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{op} {path:?} in the rootfs: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("{op} {path:?} in the rootfs: {source}")]
    StdIo {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("resolving {path:?} in the rootfs: more than {limit} symlinks (ELOOP)")]
    TooManySymlinks { path: String, limit: u32 },
    #[error("resolving {path:?} in the rootfs: deeper than {limit} directories")]
    TooDeep { path: String, limit: usize },
    #[error("resolving {path:?} in the rootfs: component {component:?} is not a directory")]
    NotADirectory { path: String, component: String },
    #[error("{path:?} does not exist in the rootfs")]
    NotFound { path: String },
    #[error("{path:?} names the rootfs itself or ends in `.`/`..`; an entry needs a name")]
    NoName { path: String },
    #[error("{path:?} resolves into ignored path {ignored:?}")]
    Ignored { path: String, ignored: String },
    #[error("hard link {path:?} -> {target:?}: the target is a directory")]
    LinkToDirectory { path: String, target: String },
}

impl UnpackError {
    /// The entry an error is about, when it names one.
    pub fn entry(&self) -> Option<&str> {
        match self {
            UnpackError::Breakout { entry }
            | UnpackError::LinkBreakout { entry, .. }
            | UnpackError::InvalidWhiteout { entry }
            | UnpackError::NameTooLong { entry }
            | UnpackError::TooDeep { entry, .. }
            | UnpackError::EntryTooLarge { entry, .. }
            | UnpackError::TooManyEntries { entry, .. }
            | UnpackError::ForbiddenXattr { entry, .. }
            | UnpackError::Unsupported { entry, .. }
            | UnpackError::DeviceRefused { entry }
            | UnpackError::Root { entry, .. }
            | UnpackError::Content { entry, .. } => Some(entry),
            UnpackError::TooLarge { entry, .. } => entry.as_deref(),
            UnpackError::MetadataTooLarge { after, .. } => after.as_deref(),
            _ => None,
        }
    }
}

/// Errors of [`crate::unpack_layer`]: every one names the entry (or its position).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("reading the layer stream: {0}")]
    Read(#[source] std::io::Error),
    #[error("layer entry #{index}: reading its header: {source}")]
    Header {
        index: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("layer entry {entry:?}: path escapes the rootfs (`..` component)")]
    Breakout { entry: String },
    #[error("layer entry {entry:?}: hard link target {target:?} escapes the rootfs")]
    LinkBreakout { entry: String, target: String },
    #[error("layer entry {entry:?}: invalid whiteout (OCI image-spec layer.md)")]
    InvalidWhiteout { entry: String },
    #[error("layer entry {entry:?}: a name component is longer than 255 bytes (ENAMETOOLONG)")]
    NameTooLong { entry: String },
    #[error("layer entry {entry:?}: nested deeper than the limit of {limit} directories")]
    TooDeep { entry: String, limit: usize },
    #[error("layer entry {entry:?}: size {size} exceeds the limit of {limit} bytes")]
    EntryTooLarge {
        entry: String,
        size: u64,
        limit: u64,
    },
    #[error("layer has more than {limit} entries (at {entry:?})")]
    TooManyEntries { entry: String, limit: u64 },
    #[error("layer has a {size}-byte PAX or GNU long-name header (after entry {after:?}); the limit is {limit} bytes")]
    MetadataTooLarge {
        size: u64,
        limit: u64,
        /// The last entry read before it, if any.
        after: Option<String>,
    },
    #[error("layer exceeds the limit of {limit} uncompressed bytes (in or after entry {entry:?})")]
    TooLarge {
        limit: u64,
        /// The entry being read when the limit was hit, if known.
        entry: Option<String>,
    },
    #[error("layer entry {entry:?}: extended attribute {name:?} is not allowed in a layer")]
    ForbiddenXattr { entry: String, name: String },
    #[error("layer entry {entry:?}: unsupported entry ({what})")]
    Unsupported { entry: String, what: String },
    #[error("layer entry {entry:?}: device nodes are refused by policy")]
    DeviceRefused { entry: String },
    #[error("layer entry {entry:?}: {source}")]
    Root {
        entry: String,
        #[source]
        source: RootError,
    },
    #[error("layer entry {entry:?}: reading its content: {source}")]
    Content {
        entry: String,
        #[source]
        source: std::io::Error,
    },
    #[error("layer diffID mismatch: expected {expected}, found {found}")]
    DiffIdMismatch {
        expected: kiln_oci::Digest,
        found: kiln_oci::Digest,
    },
}

/// Errors of the snapshot differ and of writing a change set as a layer.
#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("scanning {path}: {source}")]
    Walk {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("hashing {path:?}: {source}")]
    Hash {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("snapshot of {path:?}: {source}")]
    Root {
        path: String,
        #[source]
        source: RootError,
    },
    /// An overlay upper entry overlayfs marked as a redirect or a metadata-only copy
    /// (`redirect_dir`/`metacopy` on): its content or origin lives in the lower tree, so the
    /// upper directory alone is not the change set.
    #[error("overlay upper entry {path} has {xattr} (mount with redirect_dir=off,metacopy=off)")]
    OverlayRedirect { path: PathBuf, xattr: &'static str },
    #[error(transparent)]
    Layer(#[from] kiln_oci::LayerError),
}

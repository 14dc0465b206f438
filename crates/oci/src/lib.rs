//! kiln-oci: the OCI image model and the on-disk forms of images.
//!
//! - [`Digest`]: a validated `algorithm:hex` content address (never used to build a path
//!   without validation; CVE-2023-25153).
//! - [`BlobStore`]: the content-addressed local store (`blobs/sha256/<hex>`): hash while writing,
//!   publish by rename, verify on read.
//! - `reference`, `platform`: Docker-normalised image references and platforms.
//! - `config`, `manifest`: kiln's own image config (sorted maps, every Docker field) and the
//!   manifest/index types (oci-spec plus Docker v2s2 media types).
//! - `layer`: the streaming layer writer (tar → compressor, diffID and digest in one pass).
//! - `layout`, `archive`: OCI image layout directories and docker-archive tarballs.
#![forbid(unsafe_code)]

pub mod archive;
pub mod blobstore;
pub mod config;
pub mod digest;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod media;
pub mod platform;
pub mod reference;

pub use blobstore::BlobStore;
pub use digest::{Digest, DigestError, Hasher};
pub use layer::{
    Compression, DeviceKind, EntryMeta, LayerError, LayerInfo, LayerOptions, LayerWriter,
};
pub use manifest::{Descriptor, ImageIndex, ImageManifest, ManifestError, Parsed, RawManifest};
pub use media::ImageFormat;
pub use platform::{Platform, PlatformError};
pub use reference::{Reference, ReferenceError};

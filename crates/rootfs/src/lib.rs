//! kiln-rootfs: a build's private root file system.
//!
//! - [`Root`]: confined operations on a rootfs (scope semantics like `openat2(2)`
//!   `RESOLVE_IN_ROOT`); the engine uses it for COPY, ADD and WORKDIR too.
//! - [`unpack_layer`]: applies a (gzip, zstd or plain) layer tar to a rootfs, streamed, with
//!   OCI whiteouts, bounded resources and every write confined.
//! - [`Index`] and [`ChangeSet`]: the snapshot differ, and [`write_layer`] to turn a change set
//!   into a layer through [`kiln_oci::LayerWriter`].
#![forbid(unsafe_code)]

mod error;
mod root;
mod snapshot;
mod unpack;
mod xattr;

pub use error::{DiffError, RootError, UnpackError};
pub use root::{IdMap, Kind, Meta, Ownership, Root, MAX_SYMLINK_HOPS};
pub use snapshot::{write_layer, Change, ChangeSet, Index, SnapshotMode, WriteStats};
pub use unpack::{
    decompress, unpack_layer, DevicePolicy, UnpackOptions, UnpackStats, DEFAULT_MAX_METADATA,
};

//! kiln-rootfs: a build's private root file system.
//!
//! - [`Root`]: confined operations on a rootfs (scope semantics like `openat2(2)`
//!   `RESOLVE_IN_ROOT`); the engine uses it for COPY, ADD and WORKDIR too.
//! - [`unpack_layer`]: applies a (gzip, zstd or plain) layer tar to a rootfs, streamed, with
//!   OCI whiteouts, bounded resources and every write confined.
//! - [`Index`] and [`ChangeSet`]: the snapshot differ, and [`write_layer`] to turn a change set
//!   into a layer through [`kiln_oci::LayerWriter`].
//!
//! # Using it from the engine
//!
//! - Base layers: `unpack_layer(&root, blob, &UnpackOptions { expected_diff_id, .. })` per layer;
//!   on any error discard the staging rootfs (it is partly written) and keep the blob out of
//!   the cache. `ADD x.tar` uses `whiteouts: false`.
//! - A stage: `Index::scan(&root, &ignore, mode)` once before its first RUN; after each RUN
//!   `index.diff(&root)`, or `ChangeSet::from_overlay_upper(upper, Some(&lower), &ignore)`
//!   when the RUN ran on overlayfs (both give the same change set for the same change);
//!   after COPY/ADD/WORKDIR `ChangeSet::from_paths` then `index.record`.
//! - `write_layer(&root, &changes, &mut LayerWriter::new(..))` then `finish()`; an empty change
//!   set means no layer.
//! - [`Root::with_ignore`] refuses every operation that resolves into an ignored path
//!   (`RootError::Ignored`; `unpack_layer` counts and skips those entries).
#![forbid(unsafe_code)]

mod error;
mod linktree;
mod root;
mod snapshot;
mod unpack;
mod xattr;

pub use error::{DiffError, RootError, UnpackError};
pub use linktree::{break_links, link_tree, LinkStats};
pub use root::{IdMap, Kind, Meta, Ownership, Root, MAX_SYMLINK_HOPS};
pub use snapshot::{write_layer, Change, ChangeSet, Index, SnapshotMode, WriteStats};
pub use unpack::{
    decompress, unpack_layer, DevicePolicy, UnpackOptions, UnpackStats, DEFAULT_MAX_METADATA,
};

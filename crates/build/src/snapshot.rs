//! Turning what a step changed into a layer, with kiln-rootfs's differ.
//!
//! Steps that know what they wrote (COPY, ADD, WORKDIR) give their paths and only those are
//! read ([`ChangeSet::from_paths`]); the stage's index, if one exists yet, records them so the
//! next walk does not report them again. The index itself is taken lazily, right before the
//! first RUN of a stage: a stage made only of COPYs never walks its rootfs.

use crate::error::BuildError;
use crate::image::LayerRecord;
use crate::options::BuildOptions;
use kiln_oci::layer::{Compression, LayerOptions, LayerWriter};
use kiln_oci::BlobStore;
use kiln_rootfs::{write_layer, ChangeSet, Index, Root};
use std::path::PathBuf;

/// How layers are written.
#[derive(Debug, Clone, Copy)]
pub struct LayerSettings {
    pub compression: Compression,
    pub reproducible: bool,
}

impl LayerSettings {
    /// The media type of layers written with these settings (OCI spelling; the assembler
    /// renames for Docker images).
    pub fn media_type(&self) -> String {
        format!(
            "{}{}",
            kiln_oci::media::OCI_LAYER_TAR,
            self.compression.media_type_suffix()
        )
    }
}

/// The paths never snapshotted: `--ignore-path` values (and `/var/run` unless disabled).
pub fn ignore_list(opts: &BuildOptions) -> Vec<PathBuf> {
    opts.ignore_paths.iter().map(PathBuf::from).collect()
}

/// Writes `changes` as a layer; `None` when nothing changed (docker records an empty layer in
/// the history and adds no layer).
pub fn write(
    root: &Root,
    changes: &ChangeSet,
    store: &BlobStore,
    settings: &LayerSettings,
) -> Result<Option<LayerRecord>, BuildError> {
    if changes.is_empty() {
        return Ok(None);
    }
    let mut w = LayerWriter::new(
        store,
        settings.compression,
        LayerOptions {
            reproducible_mtime: settings.reproducible.then_some(0),
        },
    )?;
    write_layer(root, changes, &mut w)?;
    let info = w.finish()?;
    Ok(Some(LayerRecord {
        digest: info.digest,
        diff_id: info.diff_id,
        size: info.size,
        media_type: settings.media_type(),
    }))
}

/// The change set of paths a step wrote, recorded in the stage index when there is one.
pub fn from_paths(
    root: &Root,
    paths: &[PathBuf],
    index: Option<&mut Index>,
) -> Result<ChangeSet, BuildError> {
    let cs = ChangeSet::from_paths(root, paths)?;
    if let Some(ix) = index {
        ix.record(root, &cs)?;
    }
    Ok(cs)
}

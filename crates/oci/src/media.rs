//! Media types of the OCI image spec and of Docker's Image Manifest V2, Schema 2.
//!
//! Registries and tools key behaviour on these strings (a registry answers 404 for an OCI
//! manifest unless the OCI types are in `Accept`), so they are spelled once, here.

/// OCI image manifest (image-spec `manifest.md`).
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index (image-spec `image-index.md`).
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image configuration (image-spec `config.md`).
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI uncompressed layer.
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
/// OCI gzip-compressed layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI zstd-compressed layer.
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// OCI non-distributable gzip layer (deprecated by the spec, still seen on Windows bases).
pub const OCI_LAYER_NONDIST_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
/// OCI empty descriptor (`{}`), used as the config of artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Docker v2s2 image manifest.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker v2s2 manifest list (the Docker counterpart of an OCI index).
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker container image configuration.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Docker gzip-compressed layer.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker uncompressed layer (rare, but allowed by the v2s2 spec).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker foreign (non-distributable) gzip layer, e.g. Windows base layers.
pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker schema 1 signed manifest (deprecated; recognised only to give a clear error).
pub const DOCKER_MANIFEST_V1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// Every manifest and index type kiln can read, most preferred first: the `Accept` header of a
/// manifest GET. Distribution 2.8 answers 404 `MANIFEST_UNKNOWN` for an OCI manifest when the
/// OCI types are missing here.
pub const MANIFEST_ACCEPT: &[&str] = &[
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];

/// True for an image manifest type (OCI or Docker).
pub fn is_manifest(media_type: &str) -> bool {
    matches!(media_type, OCI_MANIFEST | DOCKER_MANIFEST)
}

/// True for an index / manifest-list type (OCI or Docker).
pub fn is_index(media_type: &str) -> bool {
    matches!(media_type, OCI_INDEX | DOCKER_MANIFEST_LIST)
}

/// True for an image config type (OCI or Docker).
pub fn is_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

/// Compression of a layer, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (RFC 1952).
    Gzip,
    /// zstd (RFC 8878).
    Zstd,
}

/// The compression of a layer media type, or `None` when it is not a layer type kiln knows.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        OCI_LAYER_TAR
        | DOCKER_LAYER_TAR
        | "application/vnd.oci.image.layer.nondistributable.v1.tar" => Some(Compression::None),
        OCI_LAYER_GZIP | DOCKER_LAYER_GZIP | DOCKER_LAYER_FOREIGN | OCI_LAYER_NONDIST_GZIP => {
            Some(Compression::Gzip)
        }
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(Compression::Zstd)
        }
        _ => None,
    }
}

/// The two image formats kiln writes: OCI media types or Docker v2s2 media types
/// (`--image-format oci|docker`; by default the base image's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ImageFormat {
    /// OCI image-spec media types.
    #[default]
    Oci,
    /// Docker Image Manifest V2, Schema 2 media types.
    Docker,
}

impl ImageFormat {
    /// The format of a manifest or index media type, if it is one.
    pub fn of_manifest_type(media_type: &str) -> Option<ImageFormat> {
        match media_type {
            OCI_MANIFEST | OCI_INDEX => Some(ImageFormat::Oci),
            DOCKER_MANIFEST | DOCKER_MANIFEST_LIST => Some(ImageFormat::Docker),
            _ => None,
        }
    }

    /// Manifest media type.
    pub fn manifest(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_MANIFEST,
            ImageFormat::Docker => DOCKER_MANIFEST,
        }
    }

    /// Index (manifest list) media type.
    pub fn index(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_INDEX,
            ImageFormat::Docker => DOCKER_MANIFEST_LIST,
        }
    }

    /// Config media type.
    pub fn config(self) -> &'static str {
        match self {
            ImageFormat::Oci => OCI_CONFIG,
            ImageFormat::Docker => DOCKER_CONFIG,
        }
    }

    /// Layer media type for a compression. Docker v2s2 has no zstd layer type: `None` then
    /// (Kaniko applies zstd only to OCI images for the same reason).
    pub fn layer(self, compression: Compression) -> Option<&'static str> {
        match (self, compression) {
            (ImageFormat::Oci, Compression::None) => Some(OCI_LAYER_TAR),
            (ImageFormat::Oci, Compression::Gzip) => Some(OCI_LAYER_GZIP),
            (ImageFormat::Oci, Compression::Zstd) => Some(OCI_LAYER_ZSTD),
            (ImageFormat::Docker, Compression::None) => Some(DOCKER_LAYER_TAR),
            (ImageFormat::Docker, Compression::Gzip) => Some(DOCKER_LAYER_GZIP),
            (ImageFormat::Docker, Compression::Zstd) => None,
        }
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = UnknownImageFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "oci" => Ok(ImageFormat::Oci),
            "docker" => Ok(ImageFormat::Docker),
            _ => Err(UnknownImageFormat(s.to_string())),
        }
    }
}

impl std::fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ImageFormat::Oci => "oci",
            ImageFormat::Docker => "docker",
        })
    }
}

/// An `--image-format` value that is neither `oci` nor `docker`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown image format {0:?}: expected \"oci\" or \"docker\"")]
pub struct UnknownImageFormat(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_have_consistent_types() {
        for f in [ImageFormat::Oci, ImageFormat::Docker] {
            assert!(is_manifest(f.manifest()));
            assert!(is_index(f.index()));
            assert!(is_config(f.config()));
            assert_eq!(ImageFormat::of_manifest_type(f.manifest()), Some(f));
            assert_eq!(ImageFormat::of_manifest_type(f.index()), Some(f));
            let gz = f.layer(Compression::Gzip).unwrap();
            assert_eq!(layer_compression(gz), Some(Compression::Gzip));
            assert_eq!(f.to_string().parse::<ImageFormat>().unwrap(), f);
        }
        assert_eq!(ImageFormat::Docker.layer(Compression::Zstd), None);
        assert_eq!(
            layer_compression(ImageFormat::Oci.layer(Compression::Zstd).unwrap()),
            Some(Compression::Zstd)
        );
        assert!("tar".parse::<ImageFormat>().is_err());
    }

    #[test]
    fn accept_lists_every_manifest_type() {
        for t in [
            OCI_MANIFEST,
            OCI_INDEX,
            DOCKER_MANIFEST,
            DOCKER_MANIFEST_LIST,
        ] {
            assert!(MANIFEST_ACCEPT.contains(&t), "{t} missing from Accept");
        }
        assert!(!is_manifest(OCI_CONFIG));
        assert_eq!(layer_compression(OCI_CONFIG), None);
    }
}

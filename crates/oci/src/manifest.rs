//! Manifests, indexes and descriptors: oci-spec's types, used for both OCI and Docker v2s2
//! media types (the JSON shapes are the same; oci-spec keeps an unknown `mediaType` as
//! `MediaType::Other`, so Docker types and future types round-trip unchanged).
//!
//! kiln never re-serialises a manifest it pulled: the registry's bytes are what the digest
//! covers, so [`RawManifest`] keeps them next to the parsed form.

use crate::digest::{Digest, DigestError};
use crate::media;
use crate::platform::Platform;
pub use oci_spec::image::{Descriptor, ImageIndex, ImageManifest, MediaType};

/// Largest manifest or index kiln reads (distribution itself limits manifests to 4 MiB). A
/// bigger body is refused before it is buffered (HOSTILE-INPUTS 35).
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// Errors reading manifests and indexes.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest of {size} bytes exceeds the {limit}-byte limit")]
    TooLarge { size: u64, limit: u64 },
    #[error("malformed {media_type} document: {source}")]
    Json {
        media_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported manifest media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("docker schema 1 manifests are not supported (deprecated since 2017): push the image again with a current client")]
    Schema1,
    #[error("no entry for platform {wanted} in the index (available: {available})")]
    NoPlatform { wanted: String, available: String },
    #[error("descriptor digest {digest:?}: {source}")]
    BadDigest {
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("manifest digest mismatch: expected {expected}, found {found}")]
    DigestMismatch { expected: Digest, found: Digest },
}

/// A parsed manifest or index.
// Few of these exist at a time; boxing would only complicate every match.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// An image manifest (OCI or Docker v2s2).
    Image(ImageManifest),
    /// An index or Docker manifest list.
    Index(ImageIndex),
}

/// A manifest as the registry served it: exact bytes, media type, digest and parsed form.
#[derive(Debug, Clone, PartialEq)]
pub struct RawManifest {
    /// The bytes the digest covers.
    pub bytes: Vec<u8>,
    /// Media type (from Content-Type, else the document's `mediaType`).
    pub media_type: String,
    /// sha256 of `bytes`.
    pub digest: Digest,
    /// Parsed form.
    pub parsed: Parsed,
}

impl RawManifest {
    /// Parses bytes served with `content_type` (see [`parse`]) and digests them.
    pub fn from_bytes(bytes: Vec<u8>, content_type: Option<&str>) -> Result<Self, ManifestError> {
        let (media_type, parsed) = parse(&bytes, content_type)?;
        Ok(RawManifest {
            digest: Digest::of(&bytes),
            bytes,
            media_type,
            parsed,
        })
    }

    /// Like [`RawManifest::from_bytes`], but the bytes must hash to `expected` (a manifest
    /// fetched by digest; HOSTILE-INPUTS 34).
    pub fn from_bytes_expect(
        bytes: Vec<u8>,
        content_type: Option<&str>,
        expected: &Digest,
    ) -> Result<Self, ManifestError> {
        let found = Digest::of(&bytes);
        if &found != expected {
            return Err(ManifestError::DigestMismatch {
                expected: expected.clone(),
                found,
            });
        }
        Self::from_bytes(bytes, content_type)
    }
}

/// The media type without parameters (`; charset=utf-8`), lower-cased.
pub fn essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Docker schema 1 (`...manifest.v1+json` and `...manifest.v1+prettyjws`).
fn is_schema1(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.docker.distribution.manifest.v1+")
}

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde::de::IgnoredAny>,
    layers: Option<serde::de::IgnoredAny>,
    #[serde(rename = "fsLayers")]
    fs_layers: Option<serde::de::IgnoredAny>,
}

/// Parses a manifest or index of at most [`MAX_MANIFEST_SIZE`] bytes. The media type is the
/// Content-Type when it names a manifest type, else the document's `mediaType`, else guessed
/// from its shape (`manifests` → index, `layers` → manifest; OCI allows omitting mediaType).
pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<(String, Parsed), ManifestError> {
    if bytes.len() > MAX_MANIFEST_SIZE {
        return Err(ManifestError::TooLarge {
            size: bytes.len() as u64,
            limit: MAX_MANIFEST_SIZE as u64,
        });
    }
    let json_err = |media_type: &str| {
        let media_type = media_type.to_string();
        move |source| ManifestError::Json { media_type, source }
    };
    let probe: Probe = serde_json::from_slice(bytes).map_err(json_err("manifest"))?;
    let header = content_type
        .map(essence)
        .filter(|t| media::is_manifest(t) || media::is_index(t) || is_schema1(t));
    let media_type = match (header, probe.media_type) {
        (Some(h), _) => h,
        (None, Some(m)) => m,
        (None, None) if probe.manifests.is_some() => media::OCI_INDEX.to_string(),
        (None, None) if probe.layers.is_some() => media::OCI_MANIFEST.to_string(),
        (None, None) if probe.fs_layers.is_some() || probe.schema_version == Some(1) => {
            return Err(ManifestError::Schema1)
        }
        (None, None) => return Err(ManifestError::UnsupportedMediaType(String::new())),
    };
    if probe.schema_version == Some(1) || is_schema1(&media_type) {
        return Err(ManifestError::Schema1);
    }
    let parsed = if media::is_index(&media_type) {
        Parsed::Index(serde_json::from_slice(bytes).map_err(json_err(&media_type))?)
    } else if media::is_manifest(&media_type) {
        Parsed::Image(serde_json::from_slice(bytes).map_err(json_err(&media_type))?)
    } else {
        return Err(ManifestError::UnsupportedMediaType(media_type));
    };
    Ok((media_type, parsed))
}

/// kiln's validated digest of a descriptor (sha256 only, never a path-traversal string).
pub fn descriptor_digest(d: &Descriptor) -> Result<Digest, ManifestError> {
    let s = d.digest().to_string();
    s.parse()
        .map_err(|source| ManifestError::BadDigest { digest: s, source })
}

/// A descriptor from kiln's types.
pub fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Descriptor {
    // kiln's Digest is always a valid sha256, which oci-spec's parser accepts.
    let d: oci_spec::image::Digest = digest
        .to_string()
        .parse()
        .expect("a kiln Digest is a valid OCI digest");
    Descriptor::new(MediaType::from(media_type), size, d)
}

/// True for index entries that are not runnable images: BuildKit's attestation manifests
/// (`vnd.docker.reference.type: attestation-manifest`, platform `unknown/unknown`).
fn is_attestation(d: &Descriptor) -> bool {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get("vnd.docker.reference.type"))
        .is_some_and(|v| v == "attestation-manifest")
}

/// Picks the entry of `index` for `wanted`: the best [`Platform::match_rank`], first entry on
/// a tie. Entries without a platform are skipped (the spec makes `platform` optional, but
/// nothing can be selected by it).
pub fn select_platform<'a>(
    index: &'a ImageIndex,
    wanted: &Platform,
) -> Result<&'a Descriptor, ManifestError> {
    let mut best: Option<(u8, &Descriptor)> = None;
    for d in index.manifests() {
        if is_attestation(d) {
            continue;
        }
        let Some(p) = d.platform() else { continue };
        if let Some(rank) = wanted.match_rank(&Platform::from_oci(p)) {
            if best.is_none_or(|(r, _)| rank > r) {
                best = Some((rank, d));
            }
        }
    }
    best.map(|(_, d)| d)
        .ok_or_else(|| ManifestError::NoPlatform {
            wanted: wanted.to_string(),
            available: index
                .manifests()
                .iter()
                .filter_map(|d| {
                    d.platform()
                        .as_ref()
                        .map(|p| Platform::from_oci(p).to_string())
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn docker_manifest() -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","size":7,"digest":"{D1}"}},"layers":[{{"mediaType":"{}","size":9,"digest":"{D2}"}},{{"mediaType":"application/x-future","size":1,"digest":"{D2}"}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        )
    }

    fn index(entries: &[(&str, &str)]) -> String {
        let m: Vec<String> = entries
            .iter()
            .map(|(plat, dig)| {
                let p: Platform = plat.parse().unwrap();
                let variant = p
                    .variant()
                    .map(|v| format!(r#","variant":"{v}""#))
                    .unwrap_or_default();
                format!(
                    r#"{{"mediaType":"{}","size":3,"digest":"{dig}","platform":{{"os":"{}","architecture":"{}"{variant}}}}}"#,
                    media::OCI_MANIFEST,
                    p.os(),
                    p.architecture()
                )
            })
            .collect();
        format!(r#"{{"schemaVersion":2,"manifests":[{}]}}"#, m.join(","))
    }

    #[test]
    fn docker_manifest_parses_and_round_trips_types() {
        let text = docker_manifest();
        let (mt, parsed) = parse(
            text.as_bytes(),
            Some("application/vnd.docker.distribution.manifest.v2+json; charset=utf-8"),
        )
        .unwrap();
        assert_eq!(mt, media::DOCKER_MANIFEST);
        let Parsed::Image(m) = parsed else {
            panic!("not an image")
        };
        assert_eq!(m.config().media_type().as_ref(), media::DOCKER_CONFIG);
        assert_eq!(m.layers()[1].media_type().as_ref(), "application/x-future");
        let again: serde_json::Value = serde_json::from_str(&m.to_string().unwrap()).unwrap();
        let orig: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again, orig);
        assert_eq!(descriptor_digest(m.config()).unwrap().to_string(), D1);
    }

    #[test]
    fn oci_manifest_is_not_schema1() {
        let text = docker_manifest()
            .replace(media::DOCKER_MANIFEST, media::OCI_MANIFEST)
            .replace(media::DOCKER_CONFIG, media::OCI_CONFIG);
        let (mt, p) = parse(text.as_bytes(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(mt, media::OCI_MANIFEST);
        assert!(matches!(p, Parsed::Image(_)));
        assert!(matches!(
            parse(text.as_bytes(), Some(media::DOCKER_MANIFEST_V1_SIGNED)),
            Err(ManifestError::Schema1)
        ));
    }

    #[test]
    fn media_type_from_body_or_shape() {
        let (mt, p) = parse(index(&[("linux/amd64", D1)]).as_bytes(), None).unwrap();
        assert_eq!(mt, media::OCI_INDEX);
        assert!(matches!(p, Parsed::Index(_)));
        let (mt, _) = parse(
            docker_manifest().as_bytes(),
            Some("application/octet-stream"),
        )
        .unwrap();
        assert_eq!(mt, media::DOCKER_MANIFEST);
    }

    #[test]
    fn rejects_oversize_schema1_and_garbage() {
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert!(matches!(
            parse(&big, None),
            Err(ManifestError::TooLarge { .. })
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":1,"fsLayers":[]}"#, None),
            Err(ManifestError::Schema1)
        ));
        assert!(matches!(
            parse(br#"{"schemaVersion":2,"mediaType":"text/plain"}"#, None),
            Err(ManifestError::UnsupportedMediaType(_))
        ));
        assert!(parse(b"not json", None).is_err());
        let bad = docker_manifest().replace(D2, "sha256:../../etc");
        assert!(parse(bad.as_bytes(), None).is_err());
    }

    #[test]
    fn digest_verified_when_expected() {
        let text = docker_manifest().into_bytes();
        let d = Digest::of(&text);
        assert!(RawManifest::from_bytes_expect(text.clone(), None, &d).is_ok());
        let wrong = Digest::of(b"x");
        assert!(matches!(
            RawManifest::from_bytes_expect(text, None, &wrong),
            Err(ManifestError::DigestMismatch { .. })
        ));
    }

    #[test]
    fn platform_selection() {
        let text = index(&[("linux/amd64", D1), ("linux/arm64/v8", D2)]);
        let Parsed::Index(ix) = parse(text.as_bytes(), None).unwrap().1 else {
            panic!()
        };
        let arm = select_platform(&ix, &"linux/arm64".parse().unwrap()).unwrap();
        assert_eq!(arm.digest().to_string(), D2);
        let amd = select_platform(&ix, &"linux/x86_64".parse().unwrap()).unwrap();
        assert_eq!(amd.digest().to_string(), D1);
        let err = select_platform(&ix, &"linux/s390x".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("linux/arm64"), "{err}");
        let text = index(&[("linux/arm/v6", D1), ("linux/arm/v7", D2)]);
        let Parsed::Index(ix) = parse(text.as_bytes(), None).unwrap().1 else {
            panic!()
        };
        let v7 = select_platform(&ix, &"linux/arm/v7".parse().unwrap()).unwrap();
        assert_eq!(v7.digest().to_string(), D2);
    }

    #[test]
    fn builds_descriptors() {
        let d = descriptor(media::OCI_LAYER_GZIP, &Digest::of(b"x"), 1);
        assert_eq!(descriptor_digest(&d).unwrap(), Digest::of(b"x"));
        assert_eq!(d.media_type(), &MediaType::ImageLayerGzip);
    }
}

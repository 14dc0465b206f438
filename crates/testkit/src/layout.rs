//! Reading an OCI image layout the way the tests check images: the first manifest, its config,
//! its layers as tar entries. Deliberately independent of kiln-oci's layout code, so a test
//! reads what kiln wrote with its own eyes.

use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads a JSON file; panics with the path on failure (test helper).
pub fn read_json(path: &Path) -> serde_json::Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The path of a blob (`sha256:<hex>`) in a layout.
pub fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// The first manifest named in `index.json`.
pub fn manifest(layout: &Path) -> serde_json::Value {
    let index = read_json(&layout.join("index.json"));
    let digest = index["manifests"][0]["digest"]
        .as_str()
        .expect("index.json names a manifest");
    read_json(&blob(layout, digest))
}

/// The image config of the first manifest.
pub fn config(layout: &Path) -> serde_json::Value {
    let m = manifest(layout);
    read_json(&blob(
        layout,
        m["config"]["digest"].as_str().expect("config"),
    ))
}

/// The layer digests of the first manifest, bottom first.
pub fn layer_digests(layout: &Path) -> Vec<String> {
    manifest(layout)["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect()
}

/// One tar entry of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub content: Vec<u8>,
}

/// The entries of one layer blob (gzip or plain tar), in archive order.
pub fn layer_entries(layout: &Path, digest: &str) -> Vec<Entry> {
    let bytes = std::fs::read(blob(layout, digest)).expect("layer blob");
    let plain = decompress(&bytes);
    let mut ar = tar::Archive::new(&plain[..]);
    let mut out = Vec::new();
    for e in ar.entries().expect("tar") {
        let mut e = e.expect("tar entry");
        let h = e.header().clone();
        let path = e
            .path()
            .expect("path")
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        let mut content = Vec::new();
        e.read_to_end(&mut content).expect("content");
        out.push(Entry {
            path,
            mode: h.mode().unwrap_or(0),
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            content,
        });
    }
    out
}

/// Every layer of the first manifest applied in order with plain tar semantics (no
/// whiteouts): path → last entry written there.
pub fn flatten(layout: &Path) -> std::collections::BTreeMap<String, Entry> {
    let mut files = std::collections::BTreeMap::new();
    for d in layer_digests(layout) {
        for e in layer_entries(layout, &d) {
            files.insert(e.path.clone(), e);
        }
    }
    files
}

/// Gzip-decompressed bytes, or the bytes themselves when they are not gzip.
pub fn decompress(bytes: &[u8]) -> Vec<u8> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if MultiGzDecoder::new(bytes).read_to_end(&mut out).is_ok() {
            return out;
        }
    }
    bytes.to_vec()
}

/// Every blob of a layout, decompressed where it is gzip: for "this secret is nowhere" checks.
pub fn all_blob_bytes(layout: &Path) -> Vec<Vec<u8>> {
    let Ok(rd) = std::fs::read_dir(layout.join("blobs/sha256")) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| std::fs::read(e.path()).ok())
        .map(|b| decompress(&b))
        .collect()
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// `umoci unpack` of the manifest named `tag` in `layout` into `bundle` (`--rootless` unless
/// running as root, which keeps owners); returns the rootfs path.
pub fn umoci_unpack(layout: &Path, tag: &str, bundle: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let root = std::fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    let mut cmd = std::process::Command::new("umoci");
    cmd.arg("unpack");
    if !root {
        cmd.arg("--rootless");
    }
    let out = cmd
        .arg("--image")
        .arg(format!("{}:{tag}", layout.display()))
        .arg(bundle)
        .output()
        .map_err(|e| format!("umoci: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "umoci unpack: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(bundle.join("rootfs"))
}

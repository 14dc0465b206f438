//! Deterministic base images built without network, as OCI image layouts, and pushed to a
//! test registry with `skopeo copy` (TESTING.md, "Base images without internet").
//!
//! Everything is fixed (entry order, mtime 0, uid/gid 0, gzip header without name or time), so
//! two builds give the same digests.

use crate::{io_err, run, which, Registry, TestkitError};
use flate2::write::GzEncoder;
use kiln_oci::media;
use kiln_oci::{BlobStore, Digest, Platform};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What was built (and pushed): the top manifest or index, and its parts.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Digest of `manifest`.
    pub manifest_digest: Digest,
    /// The manifest (or index) bytes.
    pub manifest: Vec<u8>,
    /// Its media type.
    pub media_type: String,
    /// Config digest (for an index: the host platform's image's).
    pub config_digest: Digest,
    /// Config bytes.
    pub config: Vec<u8>,
    /// Layer (digest, size) pairs, bottom first.
    pub layers: Vec<(Digest, u64)>,
    /// For an index: each platform and its image.
    pub platforms: Vec<(Platform, ImageInfo)>,
}

/// One file-system entry of a layer.
enum Node {
    Dir(u32),
    File(u32, Vec<u8>),
    Symlink(String),
}

/// Writes entries (sorted by path) as a deterministic tar.
fn tar_of(entries: &BTreeMap<String, Node>) -> Result<Vec<u8>, TestkitError> {
    let mut b = tar::Builder::new(Vec::new());
    let err = io_err("building tar", "<memory>");
    let mut res = Ok(());
    for (path, node) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let r = match node {
            Node::Dir(mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
            }
            Node::File(mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, path, target)
            }
        };
        if let Err(e) = r {
            res = Err(e);
            break;
        }
    }
    res.and_then(|_| b.into_inner()).map_err(err)
}

/// gzip with a fixed header (no name, mtime 0) and level.
fn gzip(data: &[u8]) -> Result<Vec<u8>, TestkitError> {
    use std::io::Write;
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data)
        .and_then(|_| e.finish())
        .map_err(io_err("compressing", "<memory>"))
}

fn add_parents(entries: &mut BTreeMap<String, Node>, path: &str) {
    let mut cur = String::new();
    let parts: Vec<&str> = path.split('/').collect();
    for p in &parts[..parts.len() - 1] {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(p);
        entries.entry(cur.clone()).or_insert(Node::Dir(0o755));
    }
}

/// Builds one image (config + one layer + manifest) into `store`.
fn build_image(
    store: &BlobStore,
    entries: &BTreeMap<String, Node>,
    format: media::ImageFormat,
    platform: &Platform,
    cmd: &[&str],
) -> Result<ImageInfo, TestkitError> {
    let store_err = |e: kiln_oci::blobstore::BlobError| TestkitError::Io {
        what: "blob store",
        path: store.root().to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    };
    let tar = tar_of(entries)?;
    let diff_id = Digest::of(&tar);
    let gz = gzip(&tar)?;
    let layer = store.put(&gz).map_err(store_err)?;
    let mut config = serde_json::json!({
        "architecture": platform.architecture(),
        "os": platform.os(),
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": cmd,
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": "kiln-testkit"}],
    });
    if let Some(v) = platform.variant() {
        config["variant"] = v.into();
    }
    let config = serde_json::to_vec(&config).map_err(|e| io_err("json", "config")(e.into()))?;
    let config_digest = store.put(&config).map_err(store_err)?;
    let layer_type = format
        .layer(media::Compression::Gzip)
        .unwrap_or(media::OCI_LAYER_GZIP);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": format.manifest(),
        "config": {"mediaType": format.config(), "digest": config_digest.to_string(), "size": config.len()},
        "layers": [{"mediaType": layer_type, "digest": layer.to_string(), "size": gz.len()}],
    });
    let manifest =
        serde_json::to_vec(&manifest).map_err(|e| io_err("json", "manifest")(e.into()))?;
    let manifest_digest = store.put(&manifest).map_err(store_err)?;
    Ok(ImageInfo {
        manifest_digest,
        manifest,
        media_type: format.manifest().to_string(),
        config_digest,
        config,
        layers: vec![(layer, gz.len() as u64)],
        platforms: Vec::new(),
    })
}

/// Writes `oci-layout` and `index.json` naming `top` as tag `latest`.
fn finish_layout(dir: &Path, top: &ImageInfo) -> Result<(), TestkitError> {
    let p = dir.join("oci-layout");
    std::fs::write(&p, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err("writing", &p))?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": top.media_type,
            "digest": top.manifest_digest.to_string(),
            "size": top.manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    let p = dir.join("index.json");
    std::fs::write(&p, index.to_string()).map_err(io_err("writing", &p))
}

fn busybox_entries() -> Result<BTreeMap<String, Node>, TestkitError> {
    let bin = PathBuf::from("/bin/busybox");
    if !bin.is_file() {
        return Err(TestkitError::NotInstalled("busybox-static (/bin/busybox)"));
    }
    let data = std::fs::read(&bin).map_err(io_err("reading", &bin))?;
    let list = run(Command::new(&bin).arg("--list-full"))?;
    let mut entries = BTreeMap::new();
    for dir in ["bin", "etc", "root", "tmp", "usr", "var"] {
        entries.insert(dir.to_string(), Node::Dir(0o755));
    }
    entries.insert("root".into(), Node::Dir(0o700));
    entries.insert("tmp".into(), Node::Dir(0o1777));
    entries.insert("bin/busybox".into(), Node::File(0o755, data));
    for applet in String::from_utf8_lossy(&list).lines() {
        let applet = applet.trim().trim_start_matches('/');
        if applet.is_empty() || applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        add_parents(&mut entries, applet);
        entries
            .entry(applet.to_string())
            .or_insert_with(|| Node::Symlink("/bin/busybox".into()));
    }
    entries.insert(
        "etc/passwd".into(),
        Node::File(
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        ),
    );
    entries.insert(
        "etc/group".into(),
        Node::File(0o644, b"root:x:0:\nnobody:x:65534:\n".to_vec()),
    );
    Ok(entries)
}

fn open_store(dir: &Path) -> Result<BlobStore, TestkitError> {
    BlobStore::open(dir).map_err(|e| TestkitError::Io {
        what: "opening layout",
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Builds the busybox image (OCI media types, host platform) as an OCI layout in `dir`,
/// tagged `latest`.
pub fn busybox_layout(dir: &Path) -> Result<ImageInfo, TestkitError> {
    busybox_layout_as(dir, media::ImageFormat::Oci)
}

/// The busybox image with Docker v2s2 media types.
pub fn busybox_layout_docker(dir: &Path) -> Result<ImageInfo, TestkitError> {
    busybox_layout_as(dir, media::ImageFormat::Docker)
}

fn busybox_layout_as(dir: &Path, format: media::ImageFormat) -> Result<ImageInfo, TestkitError> {
    let store = open_store(dir)?;
    let info = build_image(
        &store,
        &busybox_entries()?,
        format,
        &Platform::host(),
        &["/bin/sh"],
    )?;
    if format == media::ImageFormat::Docker {
        write_dir_transport(dir, &store, &info)?;
    } else {
        finish_layout(dir, &info)?;
    }
    Ok(info)
}

/// skopeo's `oci:` transport finds only OCI manifest types in `index.json`, so a Docker v2s2
/// image is pushed from its `dir:` transport form instead: `manifest.json`, blobs named by
/// their hex digest, and a `version` file.
fn write_dir_transport(
    dir: &Path,
    store: &BlobStore,
    info: &ImageInfo,
) -> Result<(), TestkitError> {
    let out = dir.join(DOCKER_DIR);
    std::fs::create_dir_all(&out).map_err(io_err("creating", &out))?;
    let w = |name: &str, bytes: &[u8]| {
        let p = out.join(name);
        std::fs::write(&p, bytes).map_err(io_err("writing", &p))
    };
    w("version", b"Directory Transport Version: 1.1\n")?;
    w("manifest.json", &info.manifest)?;
    w(info.config_digest.hex(), &info.config)?;
    for (d, _) in &info.layers {
        let src = store.path(d);
        let dst = out.join(d.hex());
        std::fs::copy(&src, &dst).map_err(io_err("copying", &src))?;
    }
    Ok(())
}

const DOCKER_DIR: &str = "docker-dir";

/// The platform of the second image in the two-platform index (`linux/arm64`, or
/// `linux/amd64` on an arm64 host).
pub fn other_platform() -> Platform {
    if Platform::host().architecture() == "arm64" {
        Platform::linux_amd64()
    } else {
        Platform::new("linux", "arm64", None)
    }
}

/// An OCI index with two platforms: the host's entry is busybox, the other
/// ([`other_platform`]) a tiny image holding `/hello` with the platform's name.
pub fn multiplatform_layout(dir: &Path) -> Result<ImageInfo, TestkitError> {
    let store = open_store(dir)?;
    let host = Platform::host();
    let busybox = build_image(
        &store,
        &busybox_entries()?,
        media::ImageFormat::Oci,
        &host,
        &["/bin/sh"],
    )?;
    let other = other_platform();
    let mut tiny = BTreeMap::new();
    tiny.insert(
        "hello".to_string(),
        Node::File(0o644, format!("{other}\n").into_bytes()),
    );
    let tiny = build_image(&store, &tiny, media::ImageFormat::Oci, &other, &["/hello"])?;
    let entry = |i: &ImageInfo, p: &Platform| {
        let mut plat = serde_json::json!({"os": p.os(), "architecture": p.architecture()});
        if let Some(v) = p.variant() {
            plat["variant"] = v.into();
        }
        serde_json::json!({
            "mediaType": i.media_type, "digest": i.manifest_digest.to_string(),
            "size": i.manifest.len(), "platform": plat,
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [entry(&busybox, &host), entry(&tiny, &other)],
    });
    let index = serde_json::to_vec(&index).map_err(|e| io_err("json", "index")(e.into()))?;
    let digest = store.put(&index).map_err(|e| TestkitError::Io {
        what: "blob store",
        path: dir.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })?;
    let info = ImageInfo {
        manifest_digest: digest,
        manifest: index,
        media_type: media::OCI_INDEX.to_string(),
        config_digest: busybox.config_digest.clone(),
        config: busybox.config.clone(),
        layers: busybox.layers.clone(),
        platforms: vec![(host, busybox), (other, tiny)],
    };
    finish_layout(dir, &info)?;
    Ok(info)
}

/// Pushes the layout in `dir` (tag `latest`; for the Docker variant its `dir:` form) to `registry/repo:tag` with skopeo, keeping the
/// digests (`--preserve-digests`). `creds` are `user:pass` for a Basic-auth registry.
pub fn push_layout(
    registry: &Registry,
    dir: &Path,
    repo: &str,
    tag: &str,
    creds: Option<(&str, &str)>,
) -> Result<(), TestkitError> {
    if which("skopeo").is_none() {
        return Err(TestkitError::NotInstalled("skopeo"));
    }
    let mut cmd = Command::new("skopeo");
    cmd.args([
        "copy",
        "--quiet",
        "--insecure-policy",
        "--all",
        "--preserve-digests",
        "--dest-tls-verify=false",
    ]);
    if let Some((u, p)) = creds {
        cmd.arg(format!("--dest-creds={u}:{p}"));
    }
    let docker_dir = dir.join(DOCKER_DIR);
    if docker_dir.join("manifest.json").is_file() {
        cmd.arg(format!("dir:{}", docker_dir.display()));
    } else {
        cmd.arg(format!("oci:{}:latest", dir.display()));
    }
    cmd.arg(format!("docker://{}/{repo}:{tag}", registry.addr()));
    // skopeo reads $HOME/.docker etc.; keep it away from the developer's credentials.
    cmd.env("REGISTRY_AUTH_FILE", dir.join("no-auth.json"));
    run(&mut cmd).map(|_| ())
}

fn push_with(
    registry: &Registry,
    repo: &str,
    build: fn(&Path) -> Result<ImageInfo, TestkitError>,
) -> Result<ImageInfo, TestkitError> {
    let dir = tempfile::tempdir().map_err(io_err("creating temp dir", "/tmp"))?;
    let info = build(dir.path())?;
    push_layout(registry, dir.path(), repo, "latest", None)?;
    Ok(info)
}

/// Builds busybox and pushes it to `registry/repo:latest`.
pub fn push_busybox(registry: &Registry, repo: &str) -> Result<ImageInfo, TestkitError> {
    push_with(registry, repo, busybox_layout)
}

/// Builds the Docker-v2s2 busybox and pushes it to `registry/repo:latest`.
pub fn push_busybox_docker(registry: &Registry, repo: &str) -> Result<ImageInfo, TestkitError> {
    push_with(registry, repo, busybox_layout_docker)
}

/// Builds the two-platform index and pushes it (all platforms) to `registry/repo:latest`.
pub fn push_multiplatform(registry: &Registry, repo: &str) -> Result<ImageInfo, TestkitError> {
    push_with(registry, repo, multiplatform_layout)
}

/// `skopeo inspect --raw` of `docker://registry/repo:tag` (the manifest bytes as stored).
pub fn skopeo_inspect_raw(registry: &Registry, reference: &str) -> Result<Vec<u8>, TestkitError> {
    if which("skopeo").is_none() {
        return Err(TestkitError::NotInstalled("skopeo"));
    }
    run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/{reference}", registry.addr()))
        .env("REGISTRY_AUTH_FILE", "/nonexistent/kiln-testkit-auth.json"))
}

/// `skopeo inspect --config` (the config JSON, re-serialised by skopeo).
pub fn skopeo_inspect_config(
    registry: &Registry,
    reference: &str,
) -> Result<serde_json::Value, TestkitError> {
    if which("skopeo").is_none() {
        return Err(TestkitError::NotInstalled("skopeo"));
    }
    let out = run(Command::new("skopeo")
        .args(["inspect", "--config", "--tls-verify=false"])
        .arg(format!("docker://{}/{reference}", registry.addr()))
        .env("REGISTRY_AUTH_FILE", "/nonexistent/kiln-testkit-auth.json"))?;
    serde_json::from_slice(&out).map_err(|e| io_err("parsing skopeo output", reference)(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_is_deterministic() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let Some(x) = crate::skip_or(busybox_layout(a.path())) else {
            return;
        };
        let y = busybox_layout(b.path()).unwrap();
        assert_eq!(x.manifest_digest, y.manifest_digest);
        let m: serde_json::Value = serde_json::from_slice(&x.manifest).unwrap();
        assert_eq!(m["layers"][0]["digest"], x.layers[0].0.to_string());
        let d = busybox_layout_docker(b.path()).unwrap();
        assert_ne!(d.manifest_digest, x.manifest_digest);
        assert_eq!(d.media_type, media::DOCKER_MANIFEST);
    }
}

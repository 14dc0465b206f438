//! End to end: the README's example (examples/hello) builds into an OCI layout and a
//! docker-archive that skopeo and umoci accept, and the flattened image holds exactly the
//! expected files, modes and owners, with the config the Dockerfile says.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn kiln() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Builds the example; returns (temp dir, layout dir, tarball path).
fn build_example() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("oci");
    let tar = tmp.path().join("image.tar");
    let out = kiln()
        .arg("build")
        .arg("-c")
        .arg(repo_root().join("examples/hello"))
        .arg("--no-push")
        .arg("--oci-layout-path")
        .arg(&layout)
        .arg("--tar-path")
        .arg(&tar)
        .arg("--kiln-dir")
        .arg(tmp.path().join("state"))
        .arg("--log-format=text")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kiln build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (tmp, layout, tar)
}

use kiln_testkit::layout::{blob, read_json};

#[test]
fn example_config_matches_the_dockerfile() {
    let (tmp, layout, _tar) = build_example();
    // The build directory is removed by a detached process after kiln returns: it is gone
    // within seconds, and only build directories are ever handed to that process.
    let builds = tmp.path().join("state/builds");
    let t0 = std::time::Instant::now();
    while std::fs::read_dir(&builds).is_ok_and(|mut d| d.next().is_some()) {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "build directory left: {:?}",
            std::fs::read_dir(&builds).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = kiln()
        .arg("__remove-tree")
        .arg(tmp.path().join("oci"))
        .output()
        .unwrap();
    assert!(!out.status.success() && layout.join("index.json").exists());
    let index = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob(
        &layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ));
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = read_json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    let c = &config["config"];
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "APP_HOME=/srv/app",
            "GREETING=hello from kiln"
        ])
    );
    assert_eq!(c["WorkingDir"], "/srv/app");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"8080/tcp": {}}));
    assert_eq!(c["Entrypoint"], serde_json::json!(["/usr/local/bin/run"]));
    assert_eq!(c["Cmd"], serde_json::json!(["--port", "8080"]));
    assert_eq!(
        c["Labels"],
        serde_json::json!({"maintainer": "kiln", "org.opencontainers.image.title": "hello"})
    );
    assert_eq!(config["os"], "linux");
    // One layer per filesystem-changing step: WORKDIR (creates the dir) and three COPYs.
    let layers = manifest["layers"].as_array().unwrap();
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(layers.len(), diff_ids.len());
    let history = config["history"].as_array().unwrap();
    let non_empty = history
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    assert_eq!(non_empty, layers.len(), "history: {history:#?}");
    let created_by: Vec<&str> = history
        .iter()
        .map(|h| h["created_by"].as_str().unwrap())
        .collect();
    assert!(
        created_by.iter().any(|c| c.starts_with("COPY app/ ./")),
        "{created_by:?}"
    );
    assert!(
        created_by.iter().any(|c| c.starts_with("USER 1000:1000")),
        "{created_by:?}"
    );
}

#[derive(Debug, PartialEq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Option<Vec<u8>>,
}

fn flatten_tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for e in walkdir(root) {
        let rel = e.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        if rel.is_empty() {
            continue;
        }
        let m = std::fs::symlink_metadata(&e).unwrap();
        let kind = if m.is_dir() {
            "dir"
        } else if m.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        out.insert(
            format!("/{rel}"),
            Entry {
                kind,
                mode: m.permissions().mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                content: m.is_file().then(|| std::fs::read(&e).unwrap()),
            },
        );
    }
    out
}

fn walkdir(root: &Path) -> Vec<PathBuf> {
    let mut v = vec![root.to_path_buf()];
    let mut i = 0;
    while i < v.len() {
        let p = v[i].clone();
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            for c in std::fs::read_dir(&p).unwrap() {
                v.push(c.unwrap().path());
            }
        }
        i += 1;
    }
    v
}

#[test]
fn example_flattens_to_the_expected_files() {
    if !have("umoci") {
        println!("skipped: umoci not installed (./scripts/test.sh installs it)");
        return;
    }
    let (tmp, layout, _tar) = build_example();
    // Tag the layout for umoci: it addresses manifests by ref name.
    let index = read_json(&layout.join("index.json"));
    let name = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or("latest")
        .to_string();
    let rootless = running_rootless();
    let rootfs =
        kiln_testkit::layout::umoci_unpack(&layout, &name, &tmp.path().join("bundle")).unwrap();
    let tree = flatten_tree(&rootfs);
    let ctx = repo_root().join("examples/hello");
    let file = |rel: &str, mode: u32| Entry {
        kind: "file",
        mode,
        uid: 0,
        gid: 0,
        content: Some(std::fs::read(ctx.join(rel)).unwrap()),
    };
    let dir = |mode: u32| Entry {
        kind: "dir",
        mode,
        uid: 0,
        gid: 0,
        content: None,
    };
    let src_mode = |rel: &str| {
        std::fs::metadata(ctx.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let mut want = BTreeMap::new();
    want.insert("/srv".to_string(), dir(0o755));
    want.insert("/srv/app".to_string(), dir(0o755));
    want.insert(
        "/srv/app/config.toml".to_string(),
        file("app/config.toml", src_mode("app/config.toml")),
    );
    want.insert("/srv/app/static".to_string(), dir(src_mode("app/static")));
    want.insert(
        "/srv/app/static/index.txt".to_string(),
        file("app/static/index.txt", src_mode("app/static/index.txt")),
    );
    want.insert(
        "/srv/app/static/robots.txt".to_string(),
        file("app/static/robots.txt", src_mode("app/static/robots.txt")),
    );
    want.insert("/srv/static".to_string(), dir(0o755));
    want.insert(
        "/srv/static/index.txt".to_string(),
        file("app/static/index.txt", src_mode("app/static/index.txt")),
    );
    want.insert(
        "/srv/static/robots.txt".to_string(),
        file("app/static/robots.txt", src_mode("app/static/robots.txt")),
    );
    want.insert("/usr".to_string(), dir(0o755));
    want.insert("/usr/local".to_string(), dir(0o755));
    want.insert("/usr/local/bin".to_string(), dir(0o755));
    want.insert("/usr/local/bin/run".to_string(), file("run.sh", 0o755));
    if rootless {
        // --rootless maps every owner to the caller: compare modes and contents only.
        for e in want.values_mut() {
            e.uid = nix_uid();
            e.gid = nix_gid();
        }
    }
    assert_eq!(tree, want);
}

#[test]
fn tarball_is_read_by_skopeo() {
    if !have("skopeo") {
        println!("skipped: skopeo not installed (./scripts/test.sh installs it)");
        return;
    }
    let (tmp, layout, tar) = build_example();
    let out = Command::new("skopeo")
        .args(["inspect", "--raw"])
        .arg(format!("docker-archive:{}", tar.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = tmp.path().join("copied");
    let out = Command::new("skopeo")
        .arg("copy")
        .arg(format!("docker-archive:{}", tar.display()))
        .arg(format!("oci:{}:t", copied.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Same config (and so same diff_ids) after the round trip through docker-archive.
    let cfg = |dir: &Path| {
        let index = read_json(&dir.join("index.json"));
        let m = read_json(&blob(
            dir,
            index["manifests"][0]["digest"].as_str().unwrap(),
        ));
        read_json(&blob(dir, m["config"]["digest"].as_str().unwrap()))
    };
    assert_eq!(cfg(&copied)["rootfs"], cfg(&layout)["rootfs"]);
    assert_eq!(cfg(&copied)["config"], cfg(&layout)["config"]);
}

fn running_rootless() -> bool {
    nix_uid() != 0
}

fn nix_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

fn nix_gid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| m.gid())
        .unwrap_or(0)
}

/// A `--reproducible` build from the directory, from `tar://FILE` and from `tar://stdin`
/// (with `-f -` for a Dockerfile from stdin too) gives the same image digest.
#[test]
fn tar_contexts_and_reproducible_builds_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = repo_root().join("examples/hello");
    let tarball = tmp.path().join("ctx.tar.gz");
    let st = Command::new("tar")
        .arg("-czf")
        .arg(&tarball)
        .arg("-C")
        .arg(&ctx)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success());
    let build = |context: String, stdin: Option<PathBuf>, dockerfile: Option<&str>, n: usize| {
        let digest_file = tmp.path().join(format!("digest{n}"));
        let mut cmd = kiln();
        cmd.arg("build")
            .arg("-c")
            .arg(&context)
            .args(["--no-push", "--reproducible", "--log-format=text"])
            .arg("--kiln-dir")
            .arg(tmp.path().join("state"))
            .arg("--digest-file")
            .arg(&digest_file);
        if let Some(d) = dockerfile {
            cmd.args(["-f", d]);
        }
        if let Some(input) = &stdin {
            cmd.stdin(std::fs::File::open(input).unwrap());
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{context}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(digest_file).unwrap()
    };
    let from_dir = build(ctx.display().to_string(), None, None, 1);
    let from_tar = build(format!("tar://{}", tarball.display()), None, None, 2);
    let from_stdin = build("tar://stdin".into(), Some(tarball.clone()), None, 3);
    let df_stdin = build(
        format!("dir://{}", ctx.display()),
        Some(ctx.join("Dockerfile")),
        Some("-"),
        4,
    );
    assert_eq!(from_dir, from_tar);
    assert_eq!(from_dir, from_stdin);
    assert_eq!(from_dir, df_stdin);
    // Nothing extracted is left behind in the state directory.
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path().join("state/tmp"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

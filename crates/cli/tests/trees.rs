//! The tree store (`--kiln-dir`/trees): a rebuild on the same machine starts from a hard-link
//! copy of the stored rootfs instead of unpacking, gives the same image as a build without it,
//! and no step of any build changes a stored tree, although they share inodes.

use kiln_testkit::{push_busybox, require, Project, Registry};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn kiln(args: &[String]) -> (bool, String) {
    kiln_testkit::status_and_stderr(env!("CARGO_BIN_EXE_kiln"), args)
}

/// The stored trees (their rootfs directories), by name.
fn trees(state: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(state.join("trees"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    let n = p.file_name().unwrap().to_string_lossy().into_owned();
                    !n.starts_with("tmp-") && !n.starts_with("gone-")
                })
                .map(|p| p.join("rootfs"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn warm_rebuild_starts_from_stored_trees_and_never_changes_them() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    // RUN 2 changes files of the stored tree through the overlay (append, chmod, delete) and
    // the COPY after it replaces one: none of that may reach the store.
    let p = Project::new(&format!(
        "FROM {}/library/busybox\n\
             RUN mkdir /deps && echo original >/deps/lib && echo other >/deps/other && echo gone >/deps/gone && chmod 644 /deps/other\n\
             COPY a.txt /app/a.txt\n\
             RUN cat /app/a.txt >>/deps/lib && chmod 600 /deps/other && rm /deps/gone && cat /deps/lib >/app/seen\n\
             COPY lib /deps/lib\n",
        reg.addr()
    ));
    std::fs::write(p.ctx.join("a.txt"), "one\n").unwrap();
    std::fs::write(p.ctx.join("lib"), "replaced by COPY\n").unwrap();
    let state = p.path("state");
    // `state`: the --kiln-dir below the project's temporary directory.
    let build = |n: usize, state: &str, extra: &[&str]| -> (String, Vec<String>) {
        let layout = p.path(&format!("oci{n}"));
        let out = layout.display().to_string();
        let mut flags = vec![
            "--reproducible",
            "--cache=true",
            "--cache-copy-layers=true",
            "--oci-layout-path",
            &out,
        ];
        flags.extend_from_slice(extra);
        let (ok, err) = kiln(&p.build_args(state, &flags));
        assert!(ok, "build {n}: {err}");
        (err, kiln_testkit::layout::layer_digests(&layout))
    };
    let check_store = |when: &str, count: usize| {
        let stored = trees(&state);
        assert_eq!(
            stored.len(),
            count,
            "{when}: the base's tree and one before each `COPY` of the context: {stored:?}"
        );
        // Before `COPY a.txt`: base + the first RUN.
        let first: Vec<&PathBuf> = stored
            .iter()
            .filter(|t| t.join("deps").exists() && !t.join("app").exists())
            .collect();
        assert_eq!(first.len(), 1, "{when}: {stored:?}");
        let t = first[0];
        assert_eq!(
            std::fs::read_to_string(t.join("deps/lib")).unwrap(),
            "original\n",
            "{when}"
        );
        let mode = std::fs::metadata(t.join("deps/other"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o777,
            0o644,
            "{when}: chmod in a RUN reached the store"
        );
        assert!(
            t.join("deps/gone").exists(),
            "{when}: rm in a RUN reached the store"
        );
        // Before `COPY lib /deps/lib` of the cold build: the COPY replaced deps/lib in the
        // rootfs, not in this tree.
        let second: Vec<&PathBuf> = stored
            .iter()
            .filter(|t| std::fs::read_to_string(t.join("app/a.txt")).is_ok_and(|s| s == "one\n"))
            .collect();
        assert_eq!(second.len(), 1, "{when}: {stored:?}");
        assert_eq!(
            std::fs::read_to_string(second[0].join("deps/lib")).unwrap(),
            "original\none\n",
            "{when}"
        );
    };

    let (out1, l1) = build(1, "state", &[]);
    assert!(!out1.contains("unpacked-tree store"), "{out1}");
    check_store("after the cold build", 3);

    // One context file changed: the first RUN is a cache hit, and the rootfs for the COPY
    // comes from the stored tree (no unpacking).
    std::fs::write(p.ctx.join("a.txt"), "two\n").unwrap();
    let (out2, l2) = build(2, "state", &[]);
    assert_eq!(out2.matches("cache hit").count(), 1, "{out2}");
    assert!(
        out2.contains("2 of 2 layers from the unpacked-tree store"),
        "{out2}"
    );
    assert_eq!(l2[..2], l1[..2], "base and first RUN reused");
    assert_ne!(l2[2], l1[2], "COPY a.txt changed");
    check_store("after the warm rebuild", 4);

    // The same build without the store (a fresh state dir) gives the same image.
    let (out3, l3) = build(3, "fresh", &["--cache-unpacked-trees=false"]);
    assert!(!out3.contains("unpacked-tree store"), "{out3}");
    assert!(
        trees(&p.path("fresh")).is_empty(),
        "--cache-unpacked-trees=false stores nothing"
    );
    assert_eq!(
        l2, l3,
        "the image does not depend on where the rootfs came from"
    );

    // Nothing changed: every step is a hit and no step needs the rootfs, so nothing is
    // unpacked or linked at all.
    let (out4, l4) = build(4, "state", &[]);
    assert_eq!(out4.matches("cache hit").count(), 4, "{out4}");
    assert!(!out4.contains("unpacked-tree store"), "{out4}");
    assert_eq!(l4, l2);

    // `kiln cache prune --max-size 0` removes the trees.
    let out = prune(&state, "0");
    assert!(out.contains("unpacked trees: removed 4 "), "{out}");
    assert!(trees(&state).is_empty(), "{:?}", trees(&state));
}

/// `kiln cache prune --max-size <max> --kiln-dir <state>`: its standard output.
fn prune(state: &Path, max: &str) -> String {
    let out = kiln_testkit::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_kiln")).args([
            "cache",
            "prune",
            "--max-size",
            max,
            "--kiln-dir",
            &state.display().to_string(),
        ]),
    )
    .expect("kiln cache prune");
    String::from_utf8_lossy(&out).into_owned()
}

/// The recorded size of a stored tree (`size.json` next to its `rootfs`): what the budget
/// counts.
fn recorded_size(rootfs: &Path) -> u64 {
    let record = rootfs.parent().unwrap().join("size.json");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("size record")).expect("json");
    let field = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    field("bytes") + field("dir_bytes")
}

/// The local layer cache: its entries (index files) and the layers they use (digest, size).
fn cached_layers(state: &Path) -> (usize, Vec<(String, u64)>) {
    let mut entries = 0;
    let mut layers: Vec<(String, u64)> = Vec::new();
    for e in std::fs::read_dir(state.join("cache/index"))
        .unwrap()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        entries += 1;
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).expect("index entry");
        if let (Some(d), Some(n)) = (v["digest"].as_str(), v["size"].as_u64()) {
            layers.push((d.to_string(), n));
        }
    }
    layers.sort();
    layers.dedup();
    (entries, layers)
}

fn blob(state: &Path, digest: &str) -> PathBuf {
    state
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

#[test]
fn cache_prune_counts_trees_and_layers_as_one_budget() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {}/library/busybox\nRUN echo one >/one\nCOPY a.txt /a.txt\n",
        reg.addr()
    ));
    std::fs::write(p.ctx.join("a.txt"), "a\n").unwrap();
    let tar = p.path("image.tar").display().to_string();
    let (ok, err) = kiln(&p.build_args(
        "state",
        &[
            "--cache=true",
            "--cache-copy-layers=true",
            "--tar-path",
            &tar,
        ],
    ));
    assert!(ok, "{err}");
    let state = p.path("state");
    let stored = trees(&state);
    assert_eq!(
        stored.len(),
        2,
        "the base's tree and the one before COPY: {stored:?}"
    );
    let (entries, layers) = cached_layers(&state);
    assert_eq!((entries, layers.len()), (2, 2), "RUN and COPY: {layers:?}");
    let layer_bytes: u64 = layers.iter().map(|(_, n)| n).sum();
    // Least recently used first: the tree directory's mtime is its last use.
    let used = |t: &PathBuf| {
        std::fs::metadata(t.parent().unwrap())
            .unwrap()
            .modified()
            .unwrap()
    };
    let newest = stored.iter().max_by_key(|t| used(t)).unwrap().clone();
    let sizes: Vec<u64> = stored.iter().map(|t| recorded_size(t)).collect();
    assert!(sizes.iter().all(|&n| n > 0), "{sizes:?}");

    // One byte short of everything: the trees alone would fit, but not with the layers. The
    // least recently used tree goes, and the layer cache keeps everything.
    let budget = layer_bytes + sizes.iter().sum::<u64>() - 1;
    let out = prune(&state, &budget.to_string());
    assert_eq!(trees(&state), vec![newest.clone()], "{out}");
    assert!(out.contains("unpacked trees: removed 1 "), "{out}");
    assert!(out.contains("layer cache: removed 0 entries"), "{out}");
    assert_eq!(cached_layers(&state), (entries, layers.clone()), "{out}");
    for (d, _) in &layers {
        assert!(blob(&state, d).is_file(), "{d} kept: {out}");
    }

    // A budget the layers alone exceed: every tree goes first, then the oldest entries.
    let out = prune(&state, &(layer_bytes - 1).to_string());
    assert!(trees(&state).is_empty(), "{out}");
    assert!(out.contains("unpacked trees: removed 1 "), "{out}");
    assert!(out.contains("layer cache: removed 1 entries"), "{out}");

    // Nothing fits 0.
    let out = prune(&state, "0");
    assert!(out.contains("layer cache: removed 1 entries"), "{out}");
    assert_eq!(cached_layers(&state), (0, vec![]), "{out}");
    for (d, _) in &layers {
        assert!(!blob(&state, d).exists(), "{d} removed: {out}");
    }
}

#[test]
fn a_rootfs_holding_more_than_its_layers_is_never_stored() {
    // Kaniko's VOLUME makes its directory in the (empty) scratch rootfs, outside every layer:
    // the rootfs the cached COPY --from then fills is not the tree of its chain.
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {}/library/busybox AS src\nFROM scratch\nVOLUME /data\nCOPY --from=src /bin/busybox /bin/busybox\nCOPY a.txt /a.txt\n",
        reg.addr()
    ));
    let state = p.path("state");
    for (n, content) in ["one\n", "two\n"].iter().enumerate() {
        std::fs::write(p.ctx.join("a.txt"), content).unwrap();
        let tar = p.path(&format!("image{n}.tar")).display().to_string();
        let (ok, err) = kiln(&p.build_args(
            "state",
            &[
                "--compat=kaniko",
                "--cache=true",
                "--cache-copy-layers=true",
                "--tar-path",
                &tar,
            ],
        ));
        assert!(ok, "build {n}: {err}");
        if n == 1 {
            assert_eq!(err.matches("cache hit").count(), 1, "{err}");
        }
    }
    let stored = trees(&state);
    assert!(!stored.is_empty(), "the busybox image's tree is stored");
    for t in &stored {
        assert!(!t.join("data").exists(), "{} holds the volume", t.display());
    }
}

#[test]
fn stages_read_by_from_are_kept_and_from_only_bases_still_build() {
    // `x` is read by COPY --from and kept; `a` is only a FROM base, whose rootfs is not
    // filled at its end: the last stage fills its own. Both give what docker builds.
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {0}/library/busybox AS x\nRUN echo from-x >/f\n\
         FROM {0}/library/busybox AS a\nRUN echo from-a >/a\n\
         FROM a\nCOPY --from=x /f /f\nRUN cat /f /a >/both\n",
        reg.addr()
    ));
    for n in 0..2 {
        let layout = p.path(&format!("oci{n}"));
        let out = layout.display().to_string();
        let (ok, err) = kiln(&p.build_args("state", &["--cache=true", "--oci-layout-path", &out]));
        assert!(ok, "build {n}: {err}");
        let layers = kiln_testkit::layout::layer_digests(&layout);
        let last = layers.last().unwrap();
        let entries: Vec<String> = kiln_testkit::layout::layer_entries(&layout, last)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert!(
            entries.iter().any(|p| p.trim_start_matches("./") == "both"),
            "build {n}: {entries:?}"
        );
    }
}

#[test]
fn cleanup_leaves_no_build_directory_and_no_tree_when_kiln_exits() {
    // Kaniko's --cleanup (several builds in one container): nothing of the build may stay on
    // disk. Without it, kiln stores trees and removes its build directory in the background.
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let p = Project::new(&format!(
        "FROM {}/library/busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt\n",
        reg.addr()
    ));
    std::fs::write(p.ctx.join("a.txt"), "a\n").unwrap();
    let (ok, err) = kiln(&p.build_args("kept", &[]));
    assert!(ok, "{err}");
    if trees(&p.path("kept")).is_empty() {
        kiln_testkit::report_skip("no tree stored here (no overlay RUN): --cleanup not checked");
        return;
    }
    let (ok, err) = kiln(&p.build_args("clean", &["--cleanup"]));
    assert!(ok, "{err}");
    let state = p.path("clean");
    assert!(trees(&state).is_empty(), "{:?}", trees(&state));
    let left: Vec<_> = std::fs::read_dir(state.join("builds"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left when kiln exited: {left:?}");
}

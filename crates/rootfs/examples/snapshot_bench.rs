//! Snapshot benchmark (run by `bench/snapshot.sh`, in release; not part of the test run).
//!
//! `snapshot_bench steps <dir> [files] [total_mb] [gzip_level]`: generates a rootfs of `files`
//! files (~`total_mb` MB), indexes it, then runs three steps (10 files changed, 1,000 files
//! changed, 100 MB added); for each prints the time of diff + layer write and of `tar -c` of
//! just the changed files piped to `gzip -1`, measured in the same run. Where overlayfs can be
//! mounted (root), each step is also made on an overlay of the rootfs first and the time from
//! the step's end to the layer being written is reported: converting the upper directory
//! (`ChangeSet::from_overlay_upper` against the lower rootfs) plus writing the layer; the
//! change set must equal the walk's.
//!
//! `snapshot_bench big <dir> [mb]`: adds `mb` MB of new files to an empty rootfs and writes them
//! as one layer; prints the process's peak RSS (VmHWM).

use kiln_oci::{BlobStore, Compression, LayerOptions, LayerWriter};
use kiln_rootfs::{write_layer, Change, ChangeSet, Index, Root, SnapshotMode};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// xorshift64*: deterministic filler.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Content that compresses roughly like binaries and text in an image (~3:1 with gzip -1).
fn content(rng: &mut Rng, size: usize) -> Vec<u8> {
    const WORDS: &[&[u8]] = &[
        b"lib",
        b"usr",
        b"share",
        b"\x00\x00\x00\x00",
        b"GLIBC_2.34",
        b"main",
        b"error",
        b"\x7fELF",
        b"config",
        b"return",
        b"static",
        b"const",
        b"0x",
        b"function",
        b" ",
        b"\n",
    ];
    let mut v = Vec::with_capacity(size + 16);
    while v.len() < size {
        let r = rng.next();
        if r & 3 == 0 {
            v.extend_from_slice(&r.to_le_bytes()[..4]);
        } else {
            v.extend_from_slice(WORDS[(r >> 8) as usize % WORDS.len()]);
        }
    }
    v.truncate(size);
    v
}

fn vm_hwm_kb() -> u64 {
    let s = fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn generate(root: &Path, files: usize, total_mb: usize, rng: &mut Rng) -> u64 {
    let avg = total_mb * 1024 * 1024 / files;
    let mut total = 0u64;
    for i in 0..files {
        let dir = root.join(format!("usr/lib/pkg{:03}/sub{}", i / 100, i % 3));
        if i % 100 == 0 || i % 100 < 3 {
            fs::create_dir_all(&dir).unwrap();
        }
        // Sizes spread 0.1x..1.9x around the average.
        let size = avg / 10 + (rng.next() as usize % (avg * 18 / 10 + 1));
        let data = content(rng, size);
        fs::write(dir.join(format!("f{i}.so")), &data).unwrap();
        total += size as u64;
    }
    total
}

fn all_files(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(root).unwrap().to_path_buf())
        .collect();
    v.sort();
    v
}

struct StepResult {
    name: String,
    changes: usize,
    layer_bytes: u64,
    diff_s: f64,
    write_s: f64,
    baseline_s: f64,
    /// (convert the upper dir, write the layer, apply it to the rootfs) on an overlay, when
    /// one could be mounted.
    overlay: Option<(f64, f64, f64)>,
}

/// One step's writes: (path relative to the rootfs, content); directories are made first.
type Writes = Vec<(PathBuf, Vec<u8>)>;

fn apply_writes(root: &Path, writes: &Writes) {
    for (p, data) in writes {
        if let Some(parent) = p.parent() {
            fs::create_dir_all(root.join(parent)).unwrap();
        }
        fs::write(root.join(p), data).unwrap();
    }
}

/// Makes `writes` on an overlay of `rootfs` (as a RUN on an overlay would), then times the
/// conversion of its upper directory and the layer write; `None` when overlayfs cannot be
/// mounted here. Returns (change set, convert s, write s, the upper directory).
fn overlay_step(
    rootfs: &Root,
    dir: &Path,
    writes: &Writes,
    store: &BlobStore,
    level: u32,
) -> Option<(ChangeSet, f64, f64, PathBuf)> {
    use nix::mount::{mount, umount, MsFlags};
    let ov = dir.join("ov");
    let _ = fs::remove_dir_all(&ov);
    let (upper, work, merged) = (ov.join("upper"), ov.join("work"), ov.join("merged"));
    for d in [&upper, &work, &merged] {
        fs::create_dir_all(d).unwrap();
    }
    // kiln's sandbox mounts with `userxattr` first (redirect_dir and metacopy then off).
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        rootfs.path().display(),
        upper.display(),
        work.display()
    );
    let mounted = [format!("{data},userxattr"), data].iter().any(|o| {
        mount(
            Some("overlay"),
            &merged,
            Some("overlay"),
            MsFlags::empty(),
            Some(o.as_str()),
        )
        .is_ok()
    });
    if !mounted {
        return None;
    }
    apply_writes(&merged, writes);
    umount(&merged).unwrap();
    let t0 = Instant::now();
    let cs = ChangeSet::from_overlay_upper(&upper, Some(rootfs), &[]).unwrap();
    let convert_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut w =
        LayerWriter::new(store, Compression::Gzip { level }, LayerOptions::default()).unwrap();
    write_layer(&Root::open(&upper).unwrap(), &cs, &mut w).unwrap();
    let info = w.finish().unwrap();
    let write_s = t1.elapsed().as_secs_f64();
    let _ = info;
    Some((cs, convert_s, write_s, upper))
}

fn snapshot(
    root: &Root,
    index: &mut Index,
    store: &BlobStore,
    level: u32,
) -> (ChangeSet, f64, f64, u64) {
    let t0 = Instant::now();
    let cs = index.diff(root).unwrap();
    let diff_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let mut w =
        LayerWriter::new(store, Compression::Gzip { level }, LayerOptions::default()).unwrap();
    write_layer(root, &cs, &mut w).unwrap();
    let info = w.finish().unwrap();
    (cs, diff_s, t1.elapsed().as_secs_f64(), info.size)
}

/// `tar -c` of the changed regular files piped to `gzip -1`, timed.
fn baseline(rootfs: &Path, cs: &ChangeSet, tmp: &Path) -> f64 {
    let list = tmp.join("changed.list");
    let mut f = fs::File::create(&list).unwrap();
    for c in cs.changes() {
        if let Change::Entry(p) = c {
            if rootfs.join(p).is_file() {
                writeln!(f, "{}", p.display()).unwrap();
            }
        }
    }
    drop(f);
    let t = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -C '{}' -cf - --no-recursion -T '{}' | gzip -1 > /dev/null",
            rootfs.display(),
            list.display()
        ))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(out.success());
    t.elapsed().as_secs_f64()
}

fn steps(dir: &Path, files: usize, total_mb: usize, level: u32) {
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(&rootfs).unwrap();
    let store = BlobStore::open(dir.join("store")).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t = Instant::now();
    let bytes = generate(&rootfs, files, total_mb, &mut rng);
    println!(
        "generated: {files} files, {:.0} MB in {:.1} s",
        bytes as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    // Drop the page cache effect of generation as far as an unprivileged run can: none; the
    // baseline reads the same warm files, so the comparison is fair.
    let root = Root::open(&rootfs).unwrap();
    let t = Instant::now();
    let mut index = Index::scan(&root, &[], SnapshotMode::Full).unwrap();
    println!(
        "index scan (full mode, hashing every file): {} entries in {:.2} s, VmHWM {} MB",
        index.len(),
        t.elapsed().as_secs_f64(),
        vm_hwm_kb() / 1024
    );
    let t = Instant::now();
    let mut idx2 = Index::scan(&root, &[], SnapshotMode::Redo).unwrap();
    println!(
        "index scan (redo mode, metadata only): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let nothing = idx2.diff(&root).unwrap();
    println!(
        "no-change diff walk: {} changes in {:.3} s",
        nothing.len(),
        t.elapsed().as_secs_f64()
    );
    drop(idx2);

    // The whole rootfs as one layer (a base image), then unpacked into an empty rootfs.
    let t = Instant::now();
    let all = ChangeSet::from_paths(&root, &[PathBuf::from("/")]).unwrap();
    let mut w =
        LayerWriter::new(&store, Compression::Gzip { level }, LayerOptions::default()).unwrap();
    write_layer(&root, &all, &mut w).unwrap();
    let base = w.finish().unwrap();
    println!(
        "whole rootfs as one layer: {} entries, {:.0} MB blob in {:.2} s",
        all.len(),
        base.size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    let target = dir.join("unpacked");
    fs::create_dir(&target).unwrap();
    let t = Instant::now();
    kiln_rootfs::unpack_layer(
        &Root::open(&target).unwrap(),
        fs::File::open(store.path(&base.digest)).unwrap(),
        &kiln_rootfs::UnpackOptions::default(),
    )
    .unwrap();
    println!("unpack of that layer: {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "mkdir '{0}/untar' && gzip -dc '{1}' | tar -C '{0}/untar' -xf -",
            dir.display(),
            store.path(&base.digest).display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    println!(
        "gzip -dc | tar -x of the same layer: {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let _ = fs::remove_dir_all(&target);
    let _ = fs::remove_dir_all(dir.join("untar"));

    let list = all_files(&rootfs);
    let mut results = Vec::new();
    let mut overlay_skip = None;
    // Steps 1 and 2: 10 and 1,000 files rewritten; step 3: 100 MB added (10 files of 10 MB).
    // Each step's content is made right before it, so at most one step's is in memory.
    let mut make_step = |i: usize| -> (&str, Writes) {
        if i < 2 {
            let (name, n) = [("10 files changed", 10usize), ("1,000 files changed", 1000)][i];
            let stride = list.len() / n;
            let writes = (0..n)
                .map(|k| {
                    let rel = list[k * stride + stride / 2].clone();
                    let size = fs::metadata(rootfs.join(&rel)).unwrap().len() as usize;
                    (rel, content(&mut rng, size))
                })
                .collect();
            (name, writes)
        } else {
            let writes = (0..10)
                .map(|k| {
                    (
                        PathBuf::from(format!("opt/big/blob{k}")),
                        content(&mut rng, 10 << 20),
                    )
                })
                .collect();
            ("100 MB added", writes)
        }
    };
    for i in 0..3 {
        let (name, writes) = make_step(i);
        let overlay = match overlay_step(&root, dir, &writes, &store, level) {
            Some(r) => Some(r),
            None => {
                overlay_skip = Some("skipped: overlay measurement (cannot mount overlayfs here)");
                None
            }
        };
        // The engine moves an overlay RUN's upper directory into the stage rootfs (the walk's
        // RUN wrote there directly): timed, and it makes the walk's change below.
        let apply_s = match &overlay {
            Some((cs, _, _, upper)) => {
                let t = Instant::now();
                assert!(
                    cs.apply_overlay_upper(upper, &root).unwrap(),
                    "{name}: not moved"
                );
                let s = t.elapsed().as_secs_f64();
                let _ = fs::remove_dir_all(dir.join("ov"));
                s
            }
            None => {
                apply_writes(&rootfs, &writes);
                0.0
            }
        };
        drop(writes);
        let (cs, diff_s, write_s, layer_bytes) = snapshot(&root, &mut index, &store, level);
        if let Some((ocs, _, _, _)) = &overlay {
            assert_eq!(
                ocs, &cs,
                "{name}: the overlay's change set differs from the walk's"
            );
        }
        let baseline_s = baseline(&rootfs, &cs, dir);
        results.push(StepResult {
            name: name.into(),
            changes: cs.len(),
            layer_bytes,
            diff_s,
            write_s,
            baseline_s,
            overlay: overlay.map(|(_, c, w, _)| (c, w, apply_s)),
        });
    }

    println!();
    println!("| step | changes | layer (gzip -{level}) | diff walk | layer write | total | tar -c \\| gzip -1 | ratio |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &results {
        let total = r.diff_s + r.write_s;
        println!(
            "| {} | {} | {:.1} MB | {:.3} s | {:.3} s | {:.3} s | {:.3} s | {:.2} |",
            r.name,
            r.changes,
            r.layer_bytes as f64 / 1e6,
            r.diff_s,
            r.write_s,
            total,
            r.baseline_s,
            total / r.baseline_s
        );
    }
    println!();
    match overlay_skip {
        Some(msg) => println!("{msg}"),
        None => {
            println!(
                "On an overlay (same change, same change set): the RUN's end to the layer written,"
            );
            println!("then moving the upper directory into the stage rootfs (the engine's overlay path does both)");
            println!();
            println!("| step | convert upper dir | layer write | to layer | walk total | walk / overlay | move into rootfs |");
            println!("|---|---:|---:|---:|---:|---:|---:|");
            for r in &results {
                if let Some((c, w, a)) = r.overlay {
                    let walk = r.diff_s + r.write_s;
                    println!(
                        "| {} | {:.4} s | {:.4} s | {:.4} s | {:.3} s | {:.1} | {:.3} s |",
                        r.name,
                        c,
                        w,
                        c + w,
                        walk,
                        walk / (c + w),
                        a
                    );
                }
            }
        }
    }
    println!(
        "\npeak RSS of the whole run (VmHWM): {} MB",
        vm_hwm_kb() / 1024
    );
    let _ = fs::remove_dir_all(dir);
}

fn big(dir: &Path, mb: usize) {
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(&rootfs).unwrap();
    let store = BlobStore::open(dir.join("store")).unwrap();
    let root = Root::open(&rootfs).unwrap();
    let mut index = Index::scan(&root, &[], SnapshotMode::Full).unwrap();
    let mut rng = Rng(42);
    fs::create_dir_all(rootfs.join("data")).unwrap();
    let chunk = 64 << 20;
    let mut left = mb << 20;
    let mut k = 0;
    while left > 0 {
        let n = left.min(chunk);
        // Written in 1 MiB pieces so the generator does not raise the peak RSS measured below.
        let mut f = fs::File::create(rootfs.join(format!("data/part{k:03}"))).unwrap();
        for _ in 0..n / (1 << 20) {
            f.write_all(&content(&mut rng, 1 << 20)).unwrap();
        }
        left -= n;
        k += 1;
    }
    let before = vm_hwm_kb();
    let t = Instant::now();
    let (cs, diff_s, write_s, size) = snapshot(&root, &mut index, &store, 1);
    println!(
        "big layer: {} MB of files in {} changes; diff {:.2} s (hashing), write {:.2} s, blob {:.0} MB; total {:.2} s",
        mb,
        cs.len(),
        diff_s,
        write_s,
        size as f64 / 1e6,
        t.elapsed().as_secs_f64()
    );
    println!(
        "VmHWM before the snapshot: {} MB; after: {} MB",
        before / 1024,
        vm_hwm_kb() / 1024
    );
    // Apply that layer to an empty rootfs: unpack throughput and memory.
    let blob = fs::read_dir(dir.join("store/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .unwrap();
    let target = dir.join("unpacked");
    fs::create_dir(&target).unwrap();
    let t = Instant::now();
    let st = kiln_rootfs::unpack_layer(
        &Root::open(&target).unwrap(),
        fs::File::open(&blob).unwrap(),
        &kiln_rootfs::UnpackOptions::default(),
    )
    .unwrap();
    println!(
        "unpack of that layer: {} entries, {:.0} MB in {:.2} s; VmHWM now {} MB",
        st.entries,
        st.bytes as f64 / 1e6,
        t.elapsed().as_secs_f64(),
        vm_hwm_kb() / 1024
    );
    let _ = fs::remove_dir_all(dir);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: &str| args.get(i).cloned().unwrap_or_else(|| d.to_string());
    match args.get(1).map(String::as_str) {
        Some("steps") => steps(
            Path::new(&arg(2, "/tmp/kiln-snapshot-bench")),
            arg(3, "60000").parse().unwrap(),
            arg(4, "500").parse().unwrap(),
            arg(5, "1").parse().unwrap(),
        ),
        Some("big") => big(
            Path::new(&arg(2, "/tmp/kiln-snapshot-big")),
            arg(3, "1024").parse().unwrap(),
        ),
        _ => eprintln!(
            "usage: snapshot_bench steps DIR [FILES] [TOTAL_MB] [GZIP_LEVEL] | big DIR [MB]"
        ),
    }
}

//! bench/layer-write.sh's driver. Subcommands (sizes in MiB):
//!
//! - `gen-big DIR MB`: one file of MB × the same 1 MiB of /dev/urandom (deflate's 32 KiB window
//!   cannot see the repetition, so it is incompressible, as in bench/e2e.sh's 1gb-file).
//! - `gen-files DIR DIRS PER_DIR`: DIRS × PER_DIR files holding `file d/f\n` (bench/e2e.sh's
//!   60k-files RUN).
//! - `gen-text DIR MB`: 1 MiB files of log-like text lines from a fixed-seed generator
//!   (compresses about 4–5× with gzip, like logs and source trees).
//! - `write DIR STORE LEVEL [THREADS]`: the whole of DIR as one gzip layer into the blob store
//!   STORE, plus a config, manifest, index.json and oci-layout there (STORE is then an OCI
//!   layout that skopeo can copy). Prints `secs size uncompressed digest vmhwm_kb`.
//! - `push STORE HOST:PORT REPO`: pushes that image with kiln-registry (plain HTTP). Prints `secs`.
use kiln_oci::{BlobStore, Compression, Digest, LayerOptions, LayerWriter, Reference};
use kiln_rootfs::{write_layer, ChangeSet, Root};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or_else(|| usage());
    match a(0) {
        "gen-big" => gen_big(Path::new(a(1)), a(2).parse().unwrap_or_else(|_| usage())),
        "gen-files" => gen_files(
            Path::new(a(1)),
            a(2).parse().unwrap_or_else(|_| usage()),
            a(3).parse().unwrap_or_else(|_| usage()),
        ),
        "gen-text" => gen_text(Path::new(a(1)), a(2).parse().unwrap_or_else(|_| usage())),
        "write" => {
            let threads = args.get(4).map(|t| t.parse().unwrap_or_else(|_| usage()));
            write(
                Path::new(a(1)),
                Path::new(a(2)),
                a(3).parse().unwrap_or_else(|_| usage()),
                threads,
            )
        }
        "push" => push(Path::new(a(1)), a(2), a(3)),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: layer-write-bench gen-big|gen-files|gen-text|write|push ... (see src/main.rs)");
    std::process::exit(2)
}

fn gen_big(dir: &Path, mb: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = vec![0u8; 1 << 20];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut seed)
        .unwrap();
    let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("big")).unwrap());
    for _ in 0..mb {
        f.write_all(&seed).unwrap();
    }
    f.flush().unwrap();
}

fn gen_files(dir: &Path, dirs: usize, per_dir: usize) {
    for d in 0..dirs {
        let sub = dir.join(format!("data/d{d}"));
        std::fs::create_dir_all(&sub).unwrap();
        for f in 0..per_dir {
            std::fs::write(sub.join(format!("f{f}")), format!("file {d}/{f}\n")).unwrap();
        }
    }
}

fn gen_text(dir: &Path, mb: usize) {
    const WORDS: &[&str] = &[
        "request", "handled", "worker", "cache", "miss", "hit", "upload", "layer", "digest",
        "status", "user", "session", "timeout", "retry", "config", "image", "registry", "build",
        "step", "copy", "error", "warning", "connection", "closed", "opened", "bytes", "path",
        "/usr/lib/x86_64-linux-gnu", "/var/log/app", "GET", "PUT", "POST", "sha256", "manifest",
    ];
    const LEVELS: &[&str] = &["INFO", "DEBUG", "WARN", "INFO", "INFO", "ERROR", "TRACE"];
    std::fs::create_dir_all(dir.join("logs")).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..mb {
        let mut s = String::with_capacity((1 << 20) + 256);
        let mut t: u64 = 1_700_000_000 + (i as u64) * 3600;
        while s.len() < 1 << 20 {
            t += next() % 3;
            let r = next();
            s.push_str(&format!(
                "{t}.{:06} {} worker-{} ",
                r % 1_000_000,
                LEVELS[(r >> 20) as usize % LEVELS.len()],
                (r >> 24) % 32
            ));
            for _ in 0..(3 + (r >> 30) % 9) {
                s.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                s.push(' ');
            }
            s.push_str(&format!("id={} in {}.{} ms\n", next() % 100_000, next() % 500, next() % 10));
        }
        s.truncate(1 << 20);
        std::fs::write(dir.join(format!("logs/app-{i:04}.log")), s).unwrap();
    }
}

fn vmhwm_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn write(dir: &Path, store_dir: &Path, level: u32, threads: Option<usize>) {
    let store = BlobStore::open(store_dir).unwrap();
    let root = Root::open(dir).unwrap();
    let t = Instant::now();
    let cs = ChangeSet::from_paths(&root, &[PathBuf::from("/")]).unwrap();
    let c = Compression::Gzip { level };
    let mut w = match threads {
        Some(n) => LayerWriter::with_threads(&store, c, LayerOptions::default(), n),
        None => LayerWriter::new(&store, c, LayerOptions::default()),
    }
    .unwrap();
    write_layer(&root, &cs, &mut w).unwrap();
    let info = w.finish().unwrap();
    let secs = t.elapsed().as_secs_f64();
    // A minimal image around the layer, so the store is also an OCI layout for skopeo.
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        info.diff_id
    );
    let cd = store.put(config.as_bytes()).unwrap();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
        config.len(),
        info.digest,
        info.size
    );
    let md = store.put(manifest.as_bytes()).unwrap();
    std::fs::write(
        store_dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"latest"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    std::fs::write(
        store_dir.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    println!(
        "{secs:.3} {} {} {} {}",
        info.size,
        info.uncompressed_size,
        info.digest,
        vmhwm_kb()
    );
}

fn push(store_dir: &Path, host: &str, repo: &str) {
    let store = BlobStore::open(store_dir).unwrap();
    let index = std::fs::read_to_string(store_dir.join("index.json")).unwrap();
    let md: Digest = index
        .split("\"digest\":\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .parse()
        .unwrap();
    let manifest = store.read(&md).unwrap();
    let target: Reference = format!("{host}/{repo}:latest").parse().unwrap();
    let mut cfg = kiln_registry::RegistryConfig {
        insecure_registries: vec![host.to_string()],
        ..Default::default()
    };
    // Experiments only: override the upload strategy (bytes).
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    if let Some(v) = env("BENCH_MONOLITHIC_LIMIT") {
        cfg.monolithic_limit = v;
    }
    if let Some(v) = env("BENCH_CHUNK_SIZE") {
        cfg.chunk_size = v;
    }
    let client = kiln_registry::Client::new(cfg, Default::default());
    let t = Instant::now();
    client
        .push_image(
            &[target],
            &manifest,
            "application/vnd.oci.image.manifest.v1+json",
            &store,
        )
        .unwrap();
    println!("{:.3} {}", t.elapsed().as_secs_f64(), vmhwm_kb());
}

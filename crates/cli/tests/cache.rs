//! The layer cache end to end, against the real registry: a rebuild in a fresh state dir (an
//! ephemeral CI pod) runs no RUN and pushes no new layer; changing a context file reruns the
//! steps from the COPY that reads it; a local build reuses its own cache.

use kiln_testkit::{push_busybox, require, Registry};
use std::path::Path;

fn kiln(args: &[String]) -> (bool, String) {
    kiln_testkit::status_and_stderr(env!("CARGO_BIN_EXE_kiln"), args)
}

fn layers(layout: &Path) -> Vec<String> {
    kiln_testkit::layout::layer_digests(layout)
}

#[test]
fn registry_cache_serves_a_fresh_pod_and_misses_on_change() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("a.txt"), "one\n").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/library/busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /b.txt && cat /proc/sys/kernel/random/uuid > /run-id\nRUN cat /proc/sys/kernel/random/uuid > /second-id\n",
            reg.addr()
        ),
    )
    .unwrap();
    let build = |n: usize| -> (String, Vec<String>) {
        let layout = tmp.path().join(format!("oci{n}"));
        let (ok, err) = kiln(&[
            "build".into(),
            "-c".into(),
            ctx.display().to_string(),
            "-d".into(),
            format!("{}/app/x:{n}", reg.addr()),
            "--cache=true".into(),
            format!("--cache-repo={}/app/cache", reg.addr()),
            "--insecure".into(),
            "--insecure-pull".into(),
            "--log-format=text".into(),
            "--oci-layout-path".into(),
            layout.display().to_string(),
            // A fresh state dir each time: nothing is remembered but the registry.
            "--kiln-dir".into(),
            tmp.path().join(format!("state{n}")).display().to_string(),
        ]);
        assert!(ok, "build {n}: {err}");
        (err, layers(&layout))
    };
    let (out1, l1) = build(1);
    assert_eq!(out1.matches("cache hit").count(), 0, "{out1}");
    let (out2, l2) = build(2);
    assert_eq!(
        out2.matches("cache hit").count(),
        2,
        "both RUNs replayed: {out2}"
    );
    assert_eq!(l1, l2, "same layers, so the RUNs did not run again");
    // Every layer is already there; at most the config is new (its `created` has second
    // resolution, so two quick builds may even share it).
    let counts = out2
        .split_once(" blobs uploaded, ")
        .and_then(|(before, after)| {
            let uploaded: usize = before.rsplit('(').next()?.trim().parse().ok()?;
            let (mounted, rest) = after.split_once(" mounted, ")?;
            let existed: usize = rest.split_whitespace().next()?.parse().ok()?;
            Some((uploaded, mounted.parse::<usize>().ok()?, existed))
        });
    let (uploaded, mounted, existed) =
        counts.unwrap_or_else(|| panic!("no push summary in: {out2}"));
    assert!(
        uploaded <= 1 && mounted == 0 && uploaded + existed == 5,
        "a cached rebuild pushes no new layer: {out2}"
    );

    std::fs::write(ctx.join("a.txt"), "two\n").unwrap();
    let (out3, l3) = build(3);
    assert_eq!(out3.matches("cache hit").count(), 0, "{out3}");
    assert_eq!(l3[0], l1[0], "base layer unchanged");
    assert_ne!(l3[1], l1[1], "COPY layer has the new file");
    assert_ne!(l3[2], l1[2], "the RUN after the COPY ran again");
    assert_ne!(l3[3], l1[3], "and so did the next one");
}

#[test]
fn local_cache_for_local_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "x").unwrap();
    std::fs::write(ctx.join("Dockerfile"), "FROM scratch\nCOPY f /f\n").unwrap();
    let state = tmp.path().join("state").display().to_string();
    let run_with = |n: usize, extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "build".into(),
            "-c".into(),
            ctx.display().to_string(),
            "--no-push".into(),
            "--cache=true".into(),
            "--cache-copy-layers=true".into(),
            "--log-format=text".into(),
            "--kiln-dir".into(),
            state.clone(),
            "--oci-layout-path".into(),
            tmp.path().join(format!("oci{n}")).display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        kiln(&args)
    };
    let run = |n: usize| run_with(n, &[]);
    let (ok, err) = run(1);
    assert!(ok, "{err}");
    assert!(!err.contains("cache hit"), "{err}");
    let (ok, err) = run(2);
    assert!(ok, "{err}");
    assert!(err.contains("cache hit"), "{err}");
    assert!(!err.contains("expired"), "{err}");
    // An entry older than --cache-ttl is a miss that says so (entries have second resolution).
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (ok, err) = run_with(3, &["--cache-ttl=1s"]);
    assert!(ok, "{err}");
    assert!(!err.contains("cache hit"), "{err}");
    assert!(
        err.contains("cache: the cached entry for this step expired (made ")
            && err.contains("--cache-ttl 1s)"),
        "{err}"
    );
    let (ok, out) = kiln(&[
        "cache".into(),
        "ls".into(),
        "--kiln-dir".into(),
        state.clone(),
    ]);
    assert!(ok);
    assert!(out.is_empty() || !out.contains("error"));
}

/// Forwards every request to `upstream` (a plain-HTTP registry), holding those whose target
/// contains `slow` for `delay` first, and records when each slow request started and ended.
struct SlowProxy {
    server: kiln_testkit::http::Server,
    spans: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, std::time::Instant)>>>,
}

impl SlowProxy {
    fn start(upstream: &str, slow: &str, delay: std::time::Duration) -> SlowProxy {
        use kiln_testkit::http::{Action, Request, Server};
        let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up, slow, rec) = (upstream.to_string(), slow.to_string(), spans.clone());
        let server = Server::start(std::sync::Arc::new(
            move |req: Request, _: &mut std::net::TcpStream| {
                let start = std::time::Instant::now();
                let held = req.target.contains(&slow);
                if held {
                    std::thread::sleep(delay);
                }
                let resp = forward(&up, &req).unwrap_or_else(|e| {
                    kiln_testkit::http::Response::new(502, format!("slow proxy: {e}"))
                });
                if held {
                    rec.lock().unwrap().push((start, std::time::Instant::now()));
                }
                Action::Respond(resp)
            },
        ))
        .unwrap();
        SlowProxy { server, spans }
    }

    /// The most slow requests that were in flight at the same time.
    fn max_in_flight(&self) -> usize {
        let spans = self.spans.lock().unwrap().clone();
        spans
            .iter()
            .map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count())
            .max()
            .unwrap_or(0)
    }
}

/// One request upstream on a fresh connection; the whole response read.
fn forward(
    upstream: &str,
    req: &kiln_testkit::http::Request,
) -> std::io::Result<kiln_testkit::http::Response> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(upstream)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (n, v) in &req.headers {
        let n_l = n.to_ascii_lowercase();
        if !matches!(
            n_l.as_str(),
            "connection" | "content-length" | "transfer-encoding"
        ) {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        req.body.len()
    ));
    s.write_all(head.as_bytes())?;
    s.write_all(&req.body)?;
    let mut r = std::io::BufReader::new(s);
    let (status_line, headers) = kiln_testkit::http::read_head(&mut r)?
        .ok_or_else(|| std::io::Error::other("no response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let body = if req.method == "HEAD" || status == 204 || status == 304 {
        Vec::new()
    } else {
        kiln_testkit::http::read_body(&mut r, &headers, true)?
    };
    Ok(kiln_testkit::http::Response {
        status,
        headers: headers
            .into_iter()
            .filter(|(n, _)| {
                !n.eq_ignore_ascii_case("transfer-encoding")
                    && !n.eq_ignore_ascii_case("connection")
                    && (req.method == "HEAD" || !n.eq_ignore_ascii_case("content-length"))
            })
            .collect(),
        body,
    })
}

/// Issue 8: "lookups run in parallel with the build". Every request to the cache repository
/// takes 200 ms more; a rebuild replaying six cached RUNs makes ~18 of them (manifest, config,
/// layer per step). Made one after the other they would take ≥ 3.6 s; prefetched they overlap
/// (at most four at a time), and the result is the same image.
#[test]
fn cache_lookups_are_prefetched_while_the_build_runs() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let delay = std::time::Duration::from_millis(200);
    let proxy = SlowProxy::start(reg.addr(), "/v2/app/cache/", delay);
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let mut df = format!("FROM {}/library/busybox\n", reg.addr());
    for i in 1..=6 {
        df.push_str(&format!("RUN echo {i} >/step{i}\n"));
    }
    std::fs::write(ctx.join("Dockerfile"), df).unwrap();
    let build = |n: usize, cache_host: &str| -> (String, Vec<String>) {
        let layout = tmp.path().join(format!("oci{n}"));
        let (ok, err) = kiln(&[
            "build".into(),
            "-c".into(),
            ctx.display().to_string(),
            "--no-push".into(),
            "--cache=true".into(),
            format!("--cache-repo={cache_host}/app/cache"),
            "--insecure".into(),
            "--insecure-pull".into(),
            "--log-format=text".into(),
            "--oci-layout-path".into(),
            layout.display().to_string(),
            "--kiln-dir".into(),
            tmp.path().join(format!("state{n}")).display().to_string(),
        ]);
        assert!(ok, "build {n}: {err}");
        (err, layers(&layout))
    };
    let (_, l1) = build(1, reg.addr());
    let (out2, l2) = build(2, proxy.server.addr());
    assert_eq!(out2.matches("cache hit").count(), 6, "{out2}");
    assert_eq!(l1, l2, "the same image as the build that ran the steps");
    let spans = proxy.spans.lock().unwrap().clone();
    assert!(
        spans.len() >= 12,
        "manifest + config (+ layer) per step: {spans:?}"
    );
    let first = spans.iter().map(|s| s.0).min().unwrap();
    let last = spans.iter().map(|s| s.1).max().unwrap();
    let in_flight = proxy.max_in_flight();
    assert!(
        (2..=4).contains(&in_flight),
        "{in_flight} cache requests in flight at once (want 2..=4)"
    );
    assert!(
        last - first < delay * spans.len() as u32,
        "{} delayed requests took {:?}: they did not overlap",
        spans.len(),
        last - first
    );
}

/// A build-arg value must not be recoverable from what the cache stores: neither its plain
/// sha256 nor the (unsalted) digest of its key part appears in the state dir (local cache,
/// explanation records), in the registry's storage (cache images: labels, annotations,
/// configs) or in the debug log.
#[test]
fn build_arg_values_are_not_stored_as_unsalted_hashes() {
    let reg = require!(Registry::start());
    require!(push_busybox(&reg, "library/busybox"));
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM {}/library/busybox\nARG TOKEN\nRUN echo \"${{#TOKEN}}\" >/token-length\n",
            reg.addr()
        ),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let build = |n: usize, token: &str| -> String {
        let (ok, err) = kiln(&[
            "build".into(),
            "-c".into(),
            ctx.display().to_string(),
            "-d".into(),
            format!("{}/app/secretish:{n}", reg.addr()),
            "--build-arg".into(),
            format!("TOKEN={token}"),
            "--cache=true".into(),
            format!("--cache-repo={}/app/cache", reg.addr()),
            "--insecure".into(),
            "--insecure-pull".into(),
            "--log-format=text".into(),
            "--verbosity=debug".into(),
            "--kiln-dir".into(),
            state.display().to_string(),
        ]);
        assert!(ok, "build {n}: {err}");
        err
    };
    let mut logs = build(1, "1234");
    // A second value: the miss is explained from the (salted) records.
    let out2 = build(2, "5678");
    assert!(
        out2.contains("changed since the cached build: build arg TOKEN changed"),
        "{out2}"
    );
    logs.push_str(&out2);
    let mut needles = Vec::new();
    for value in ["1234", "5678"] {
        needles.push(kiln_oci::Digest::of(value.as_bytes()).hex().to_string());
        let mut chain = kiln_build::cache::KeyChain::new(
            &kiln_build::cache::BaseIdentity::Scratch,
            &"linux/amd64".parse().unwrap(),
        );
        chain.step(&kiln_build::cache::StepInputs::new("x").build_args([("TOKEN", value)]));
        let part = chain
            .last_parts()
            .parts
            .iter()
            .find(|(l, _)| l == "build arg TOKEN")
            .map(|(_, d)| d.clone())
            .unwrap();
        needles.push(part);
    }
    let mut hits = Vec::new();
    for root in [state.clone(), reg.data_dir()] {
        for f in files(&root) {
            let bytes = std::fs::read(&f).unwrap_or_default();
            for n in &needles {
                if bytes.windows(n.len()).any(|w| w == n.as_bytes()) {
                    hits.push(format!("{} holds {n}", f.display()));
                }
            }
        }
    }
    for n in &needles {
        // The debug log shows parts by name, with digests only for non-value parts.
        if logs.contains(&n[..12]) {
            hits.push(format!("the debug log holds {}", &n[..12]));
        }
    }
    assert!(hits.is_empty(), "{hits:#?}");
}

/// Every regular file below `root`.
fn files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {
                for e in std::fs::read_dir(&p).into_iter().flatten().flatten() {
                    stack.push(e.path());
                }
            }
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
    out
}

/// Regression: on a cold cache, stage `b` (FROM scratch like stage `a`, so the same parent
/// key for its first step) was "explained" against stage `a`'s entry: "changed since the
/// cached build: instruction changed". Now each stage is compared with its own earlier
/// builds only, and a cold cache says so.
#[test]
fn miss_explanation_compares_a_stage_with_itself_only() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("f"), "f").unwrap();
    std::fs::write(ctx.join("g"), "g").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch AS a\nCOPY f /f\nFROM scratch AS b\nCOPY g /g\nFROM scratch\nCOPY --from=a /f /f\nCOPY --from=b /g /g\n",
    )
    .unwrap();
    let state = tmp.path().join("state").display().to_string();
    let run = |n: usize| {
        let (ok, err) = kiln(&[
            "build".into(),
            "-c".into(),
            ctx.display().to_string(),
            "--no-push".into(),
            "--cache=true".into(),
            "--cache-copy-layers=true".into(),
            "--log-format=text".into(),
            "--kiln-dir".into(),
            state.clone(),
            "--oci-layout-path".into(),
            tmp.path().join(format!("oci{n}")).display().to_string(),
        ]);
        assert!(ok, "build {n}: {err}");
        err
    };
    let cold = run(1);
    assert!(!cold.contains("changed since the cached build"), "{cold}");
    assert_eq!(
        cold.matches("cache: no cached entry for this step's parent")
            .count(),
        3,
        "one per stage: {cold}"
    );
    std::fs::write(ctx.join("g"), "g2").unwrap();
    let warm = run(2);
    let told: Vec<&str> = warm.lines().filter(|l| l.contains("cache:")).collect();
    assert!(
        told.iter()
            .any(|l| l.contains("changed since the cached build: source g changed")),
        "{warm}"
    );
    assert!(
        !told.iter().any(|l| l.contains("instruction changed")),
        "{warm}"
    );
    assert!(!warm.contains("no cached entry"), "{warm}");
}

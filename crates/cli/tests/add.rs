//! ADD beyond COPY: local archives are extracted (judged by content), URLs are downloaded
//! (mode 0600, `--checksum` verified), and what cannot be done yet fails by name.

use kiln_testkit::http::{Action, Response, Server};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

fn kiln_build(ctx: &Path, state: &Path, layout: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("build")
        .arg("-c")
        .arg(ctx)
        .args(["--no-push", "--log-format=text"])
        .arg("--oci-layout-path")
        .arg(layout)
        .arg("--kiln-dir")
        .arg(state)
        .output()
        .unwrap()
}

/// Path → (mode, content) of the image's layers applied in order.
fn flatten(layout: &Path) -> std::collections::BTreeMap<String, (u32, Vec<u8>)> {
    kiln_testkit::layout::flatten(layout)
        .into_iter()
        .map(|(k, e)| (k, (e.mode, e.content)))
        .collect()
}

fn targz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn add_extracts_archives_and_downloads_urls() {
    let server = Server::start(Arc::new(|req, _stream| {
        if req.path() == "/files/tool.txt" {
            Action::Respond(Response::new(200, "downloaded bytes\n"))
        } else {
            Action::Respond(Response::new(404, "no"))
        }
    }))
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("bundle.tar.gz"),
        targz(&[("pkg/a.txt", b"A"), ("pkg/b.txt", b"BB")]),
    )
    .unwrap();
    // Named like an archive but not one: copied as a file, as docker does.
    std::fs::write(ctx.join("notes.tar"), "plain text").unwrap();
    let sha = kiln_oci::Digest::of(b"downloaded bytes\n");
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD bundle.tar.gz /opt/\nADD --unpack=false bundle.tar.gz /raw/\nADD notes.tar /docs/\nADD --checksum={sha} http://{addr}/files/tool.txt /dl/\n",
            addr = server.addr()
        ),
    )
    .unwrap();
    let layout = tmp.path().join("oci");
    let out = kiln_build(&ctx, &tmp.path().join("state"), &layout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = flatten(&layout);
    assert_eq!(files["opt/pkg/a.txt"], (0o640, b"A".to_vec()));
    assert_eq!(files["opt/pkg/b.txt"].1, b"BB");
    assert!(
        !files.contains_key("opt/bundle.tar.gz"),
        "archive copied instead of extracted"
    );
    assert_eq!(files["docs/notes.tar"].1, b"plain text");
    assert!(
        files.contains_key("raw/bundle.tar.gz") && !files.contains_key("raw/pkg/a.txt"),
        "--unpack=false copies the archive as a file"
    );
    assert_eq!(
        files["dl/tool.txt"],
        (0o600, b"downloaded bytes\n".to_vec())
    );

    // A wrong checksum fails the build, naming both digests.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD --checksum={} http://{}/files/tool.txt /dl/\n",
            kiln_oci::Digest::of(b"other"),
            server.addr()
        ),
    )
    .unwrap();
    let out = kiln_build(&ctx, &tmp.path().join("state"), &tmp.path().join("oci2"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("checksum mismatch") && err.contains(":2:"),
        "{err}"
    );
}

/// ADD of a git repository is fetched with git (tests/git_context.rs covers it); an
/// unreachable one fails naming the line and the URL.
#[test]
fn add_of_an_unreachable_git_repository_fails_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD git://127.0.0.1:9/nothing.git#v1 /src\n",
    )
    .unwrap();
    let out = kiln_build(&ctx, &tmp.path().join("state"), &tmp.path().join("oci"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("git://127.0.0.1:9/nothing.git") && err.contains(":2:"),
        "{err}"
    );
}

/// `ADD --unpack=true <url>` (BuildKit's dockerfile 1.17): a downloaded tar archive, judged by
/// its content, is extracted into the destination; a download that is no archive is written as
/// a file; without the flag a URL is never extracted; `--checksum` is checked on the
/// downloaded bytes before anything is extracted.
#[test]
fn add_unpack_true_extracts_a_downloaded_archive() {
    let archive = targz(&[("tool/bin/run", b"#!/bin/sh\n"), ("tool/README", b"hi\n")]);
    let server = kiln_testkit::RecordingServer::start(vec![
        (
            "/dl/tool.tar.gz".into(),
            Response::new(200, archive.clone()),
        ),
        // Named like an archive, but text: BuildKit copies it as the file it is.
        (
            "/dl/notes.tar.gz".into(),
            Response::new(200, "plain notes\n"),
        ),
    ])
    .unwrap();
    let addr = server.addr().to_string();
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let sha = kiln_oci::Digest::of(&archive);
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             ADD --unpack=true --checksum={sha} http://{addr}/dl/tool.tar.gz /opt\n\
             ADD --unpack=true http://{addr}/dl/notes.tar.gz /docs/\n\
             ADD http://{addr}/dl/tool.tar.gz /raw/\n"
        ),
    )
    .unwrap();
    let layout = tmp.path().join("oci");
    let out = kiln_build(&ctx, &tmp.path().join("state"), &layout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = flatten(&layout);
    assert_eq!(files["opt/tool/bin/run"], (0o640, b"#!/bin/sh\n".to_vec()));
    assert_eq!(files["opt/tool/README"].1, b"hi\n");
    assert!(
        !files
            .keys()
            .any(|k| k.ends_with("tool.tar.gz") && k.starts_with("opt")),
        "archive written as a file instead of extracted: {:?}",
        files.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        files["docs/notes.tar.gz"],
        (0o600, b"plain notes\n".to_vec())
    );
    assert_eq!(files["raw/tool.tar.gz"], (0o600, archive.clone()));
    assert!(
        !files.contains_key("raw/tool/README"),
        "a URL without --unpack=true was extracted"
    );

    // A wrong checksum fails before extraction, naming the URL and the line.
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\nADD --unpack=true --checksum={} http://{addr}/dl/tool.tar.gz /opt\n",
            kiln_oci::Digest::of(b"other")
        ),
    )
    .unwrap();
    let out = kiln_build(&ctx, &tmp.path().join("state"), &tmp.path().join("oci2"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("checksum mismatch")
            && err.contains(&format!("http://{addr}/dl/tool.tar.gz"))
            && err.contains(":2:"),
        "{err}"
    );
}

/// BuildKit declares `--parents` for COPY only; kiln says so instead of a generic error.
#[test]
fn add_parents_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(ctx.join("a")).unwrap();
    std::fs::write(ctx.join("a/f.txt"), "f").unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nADD --parents a/f.txt /out/\n",
    )
    .unwrap();
    let out = kiln_build(&ctx, &tmp.path().join("state"), &tmp.path().join("oci"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("parents") && err.contains(":2"), "{err}");
}

/// Whether `tool --version` runs; prints a visible `skipped:` line when it does not.
fn have_tool(tool: &str, test: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!("skipped: {test}: `{tool}` is not installed (Debian: tar, bzip2, xz-utils)");
    }
    ok
}

/// `tar -c<flag>f out -C src <names>` with root ownership, as a person would make the archive.
fn system_tar(src: &Path, out: &Path, flag: &str, names: &[&str]) {
    let st = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0"])
        .arg(format!("-c{flag}f"))
        .arg(out)
        .arg("-C")
        .arg(src)
        .args(names)
        .status()
        .unwrap();
    assert!(st.success(), "tar -c{flag}f failed");
}

/// The link target of the last symlink entry at `path` in the image's layers.
fn link_target(layout: &Path, path: &str) -> Option<String> {
    let mut found = None;
    for d in kiln_testkit::layout::layer_digests(layout) {
        let bytes = std::fs::read(kiln_testkit::layout::blob(layout, &d)).unwrap();
        let plain = kiln_testkit::layout::decompress(&bytes);
        let mut ar = tar::Archive::new(&plain[..]);
        for e in ar.entries().unwrap() {
            let e = e.unwrap();
            if e.path().unwrap().to_string_lossy().trim_end_matches('/') == path {
                found = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
            }
        }
    }
    found
}

/// Bytes that do not compress (xorshift), so half of a compressed stream still decodes.
fn noise(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// `ADD x.tar.bz2 /a/` and `ADD y.tar.xz /b/` extract like docker build: the archives are made
/// by the system tar/bzip2/xz at test time, judged by content (a text file named `.tar.xz`
/// and a bzip2-compressed text file are copied as files), and `ADD --unpack=true <url>` of an
/// xz tarball extracts through the same path.
#[test]
fn add_extracts_bzip2_and_xz_archives() {
    let test = "add_extracts_bzip2_and_xz_archives";
    if !["tar", "bzip2", "xz"].iter().all(|t| have_tool(t, test)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::create_dir_all(src.join("etc/app")).unwrap();
    std::fs::write(src.join("bin/run.sh"), "#!/bin/sh\necho run\n").unwrap();
    std::fs::write(src.join("etc/app/app.conf"), "key=value\n").unwrap();
    std::os::unix::fs::symlink("bin/run.sh", src.join("run")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let chmod = |p: &str, m: u32| {
        std::fs::set_permissions(src.join(p), std::fs::Permissions::from_mode(m)).unwrap()
    };
    chmod("bin/run.sh", 0o755);
    chmod("etc/app/app.conf", 0o640);
    chmod("etc/app", 0o750);
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let names = ["bin", "etc", "run"];
    system_tar(&src, &ctx.join("x.tar.bz2"), "j", &names);
    system_tar(&src, &ctx.join("y.tar.xz"), "J", &names);
    let url_archive = tmp.path().join("z.tar.xz");
    system_tar(&src, &url_archive, "J", &["bin"]);
    std::fs::write(ctx.join("fake.tar.xz"), "named like an archive\n").unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("printf 'compressed notes\\n' | bzip2 -c > notes.txt.bz2")
        .current_dir(&ctx)
        .status()
        .unwrap();
    assert!(st.success());
    let notes_bz2 = std::fs::read(ctx.join("notes.txt.bz2")).unwrap();
    let server = kiln_testkit::RecordingServer::start(vec![(
        "/dl/z.tar.xz".into(),
        Response::new(200, std::fs::read(&url_archive).unwrap()),
    )])
    .unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        format!(
            "FROM scratch\n\
             ADD x.tar.bz2 /a/\n\
             ADD y.tar.xz /b/\n\
             ADD fake.tar.xz notes.txt.bz2 /c/\n\
             ADD --unpack=true http://{}/dl/z.tar.xz /u/\n",
            server.addr()
        ),
    )
    .unwrap();
    let layout = tmp.path().join("oci");
    let out = kiln_build(&ctx, &tmp.path().join("state"), &layout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = flatten(&layout);
    for d in ["a", "b"] {
        let below: Vec<&str> = files
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("{d}/")))
            .collect();
        assert_eq!(
            below,
            [
                "bin",
                "bin/run.sh",
                "etc",
                "etc/app",
                "etc/app/app.conf",
                "run"
            ],
            "extracted tree of /{d}"
        );
        let f = |p: &str| files[&format!("{d}/{p}")].clone();
        assert_eq!(f("bin/run.sh"), (0o755, b"#!/bin/sh\necho run\n".to_vec()));
        assert_eq!(f("etc/app/app.conf"), (0o640, b"key=value\n".to_vec()));
        assert_eq!(f("etc/app").0 & 0o7777, 0o750);
        assert_eq!(
            link_target(&layout, &format!("{d}/run")).as_deref(),
            Some("bin/run.sh")
        );
    }
    assert_eq!(files["c/fake.tar.xz"].1, b"named like an archive\n");
    assert_eq!(files["c/notes.txt.bz2"].1, notes_bz2);
    assert_eq!(
        files["u/bin/run.sh"],
        (0o755, b"#!/bin/sh\necho run\n".to_vec())
    );
    assert!(!files
        .keys()
        .any(|k| k.ends_with(".tar.bz2") || k.ends_with("y.tar.xz")));
}

/// A truncated `.tar.bz2` / `.tar.xz` fails the build with the file, the Dockerfile line and
/// what is wrong with the stream: cut inside the first block (seen when sniffing) and cut
/// after it (seen while extracting).
#[test]
fn add_of_a_truncated_bzip2_or_xz_archive_fails_by_name_and_line() {
    let test = "add_of_a_truncated_bzip2_or_xz_archive_fails_by_name_and_line";
    if !["tar", "bzip2", "xz"].iter().all(|t| have_tool(t, test)) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("small.txt"), "small\n").unwrap();
    // 600 kB that do not compress: six bzip2 blocks at level 1, several LZMA2 chunks.
    std::fs::write(src.join("big.bin"), noise(600_000)).unwrap();
    let ctx = tmp.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    let cases = [
        ("small.tar.bz2", "j", "small.txt", "bzip2"),
        ("big.tar.bz2", "j", "big.bin", "bzip2"),
        ("small.tar.xz", "J", "small.txt", "xz"),
        ("big.tar.xz", "J", "big.bin", "xz"),
    ];
    for (name, flag, member, format) in cases {
        let whole = tmp.path().join(name);
        let env_level = if format == "bzip2" {
            ("BZIP2", "-1")
        } else {
            ("XZ_OPT", "-1")
        };
        let st = Command::new("tar")
            .env(env_level.0, env_level.1)
            .args(["--numeric-owner", "--owner=0", "--group=0"])
            .arg(format!("-c{flag}f"))
            .arg(&whole)
            .arg("-C")
            .arg(&src)
            .arg(member)
            .status()
            .unwrap();
        assert!(st.success());
        let bytes = std::fs::read(&whole).unwrap();
        std::fs::write(ctx.join(name), &bytes[..bytes.len() / 2]).unwrap();
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM scratch\nADD {name} /out/\n"),
        )
        .unwrap();
        let out = kiln_build(
            &ctx,
            &tmp.path().join("state"),
            &tmp.path().join(format!("oci-{name}")),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: the build succeeded");
        assert!(
            err.contains(name)
                && err.contains(":2:")
                && err.contains(&format!("the {format} stream is truncated")),
            "{name}: {err}"
        );
    }
}

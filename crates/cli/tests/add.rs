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

//! Faults between the client and a real registry (HOSTILE-INPUTS 32-39), injected by the
//! test kit's proxy; hostile registries played by the recording server.

mod common;

use common::{client, config, repush, store};
use kiln_oci::{BlobStore, Digest, Platform, Reference};
use kiln_registry::{Client, Credential, CredentialSource, RegistryConfig, RegistryError, Secret};
use kiln_testkit::http::Response;
use kiln_testkit::image::{busybox_layout, push_layout, skopeo_inspect_raw};
use kiln_testkit::{
    push_busybox, require, Fault, FaultProxy, RecordingServer, Registry, RegistryOptions,
};
use std::time::{Duration, Instant};

fn r(addr: &str, s: &str) -> Reference {
    format!("{addr}/{s}").parse().unwrap()
}

struct Setup {
    reg: Registry,
    proxy: FaultProxy,
    info: kiln_testkit::ImageInfo,
}

fn setup() -> Option<Setup> {
    let reg = kiln_testkit::skip_or(Registry::start())?;
    let info = kiln_testkit::skip_or(push_busybox(&reg, "base/busybox"))?;
    let proxy = FaultProxy::start(reg.addr()).unwrap();
    Some(Setup { reg, proxy, info })
}

impl Setup {
    fn base(&self) -> Reference {
        r(self.proxy.addr(), "base/busybox:latest")
    }
    fn layer(&self) -> (Digest, u64) {
        self.info.layers[0].clone()
    }
    fn fetch_layer(&self, c: &Client, st: &BlobStore) -> Result<(), RegistryError> {
        let (d, size) = self.layer();
        c.fetch_blob(&self.base(), &d, size, st)
    }
}

#[test]
fn blob_503_twice_then_success_and_permanent_500() {
    let Some(s) = setup() else { return };
    let (_d, st) = store();
    let (layer, _) = s.layer();
    s.proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        2,
        Fault::Status(503, vec![]),
    );
    s.fetch_layer(&client(), &st).unwrap();
    assert!(st.contains(&layer));
    assert_eq!(s.proxy.count("GET", &format!("/blobs/{layer}")), 3);

    // Permanent 500: bounded attempts (1 + pull retries), a clear error.
    let (_d2, st2) = store();
    s.proxy.add(
        "GET",
        "/manifests/",
        100,
        Fault::ErrorCode(500, "INTERNAL_ERROR".into()),
    );
    let before = s.proxy.count("GET", "/manifests/");
    let err = client()
        .pull_image(&s.base(), &Platform::host(), &st2)
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            RegistryError::Status {
                status: 500,
                attempts: 4,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains("pull manifest")
            && msg.contains("base/busybox")
            && msg.contains("INTERNAL_ERROR"),
        "{msg}"
    );
    assert_eq!(s.proxy.count("GET", "/manifests/") - before, 4);
}

#[test]
fn retry_after_seconds_and_http_date_are_honoured() {
    let Some(s) = setup() else { return };
    let (layer, _) = s.layer();
    s.proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        1,
        Fault::Status(429, vec![("Retry-After".into(), "1".into())]),
    );
    let (_d, st) = store();
    let t = Instant::now();
    s.fetch_layer(&client(), &st).unwrap();
    let waited = t.elapsed();
    assert!(waited >= Duration::from_secs(1), "waited only {waited:?}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");

    // HTTP-date form, two seconds ahead (one-second resolution: wait at least ~1 s).
    let at = std::time::SystemTime::now() + Duration::from_secs(2);
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = std::process::Command::new("date")
        .args([
            "-u",
            "-d",
            &format!("@{secs}"),
            "+%a, %d %b %Y %H:%M:%S GMT",
        ])
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let date = String::from_utf8(out.stdout).unwrap().trim().to_string();
    s.proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        1,
        Fault::Status(503, vec![("Retry-After".into(), date)]),
    );
    let (_d, st) = store();
    let t = Instant::now();
    s.fetch_layer(&client(), &st).unwrap();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "waited only {waited:?}"
    );
    assert!(
        waited <= Duration::from_millis(3500),
        "cap exceeded: {waited:?}"
    );

    // A huge Retry-After is capped by the configuration.
    s.proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        1,
        Fault::Status(429, vec![("Retry-After".into(), "100000".into())]),
    );
    let quick = Client::new(
        RegistryConfig {
            retry: kiln_registry::RetryPolicy {
                retry_after_cap: Duration::from_millis(200),
                ..common::fast_retry()
            },
            ..config()
        },
        CredentialSource::default(),
    );
    let (_d, st) = store();
    let t = Instant::now();
    s.fetch_layer(&quick, &st).unwrap();
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn reset_mid_blob_resumes_with_range() {
    let Some(s) = setup() else { return };
    let (layer, size) = s.layer();
    let path = format!("/blobs/{layer}");
    s.proxy.add("GET", &path, 1, Fault::ResetAfter(100_000));
    let (_d, st) = store();
    s.fetch_layer(&client(), &st).unwrap();
    assert_eq!(st.read(&layer).unwrap().len() as u64, size);
    let ranges: Vec<String> = s
        .proxy
        .seen()
        .iter()
        .filter(|x| x.target.contains(&path))
        .filter_map(|x| x.header("range").map(str::to_string))
        .collect();
    assert_eq!(ranges, ["bytes=100000-"]);

    // The registry ignores Range (200): the download restarts, the digest still verifies.
    s.proxy.add("GET", &path, 1, Fault::ResetAfter(50_000));
    s.proxy.add("GET", &path, 1, Fault::DropRange);
    let (_d, st) = store();
    s.fetch_layer(&client(), &st).unwrap();
    assert!(st.contains(&layer));

    // A 206 starting at the wrong byte is an error; nothing is kept.
    s.proxy.add("GET", &path, 1, Fault::ResetAfter(50_000));
    s.proxy.add("GET", &path, 1, Fault::WrongContentRange(7));
    let (_d, st) = store();
    let err = s.fetch_layer(&client(), &st).unwrap_err();
    assert!(err.to_string().contains("206"), "{err}");
    assert!(!st.contains(&layer));
    assert_eq!(
        std::fs::read_dir(st.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0,
        "temp file left"
    );
}

#[test]
fn extra_or_missing_byte_is_rejected_and_nothing_kept() {
    let Some(s) = setup() else { return };
    let (layer, _) = s.layer();
    for fault in [Fault::ExtraByte, Fault::ShortByOne] {
        s.proxy
            .add("GET", &format!("/blobs/{layer}"), 1, fault.clone());
        let (_d, st) = store();
        let err = s.fetch_layer(&client(), &st).unwrap_err();
        assert!(
            matches!(err, RegistryError::SizeMismatch { .. }),
            "{fault:?}: {err}"
        );
        assert!(!st.contains(&layer));
    }
    // A manifest fetched by digest whose body differs is rejected.
    s.proxy.add("GET", "/manifests/", 1, Fault::ExtraByte);
    let pinned = r(
        s.proxy.addr(),
        &format!("base/busybox@{}", s.info.manifest_digest),
    );
    let err = client().pull_manifest(&pinned).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
}

#[test]
fn mismatched_docker_content_digest_and_dropped_connections() {
    let Some(s) = setup() else { return };
    let (layer, _) = s.layer();
    let wrong = Digest::of(b"something else").to_string();
    s.proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        1,
        Fault::SetHeader("Docker-Content-Digest".into(), wrong.clone()),
    );
    let (_d, st) = store();
    let err = s.fetch_layer(&client(), &st).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
    assert!(!st.contains(&layer));
    s.proxy.add(
        "GET",
        "/manifests/latest",
        1,
        Fault::SetHeader("Docker-Content-Digest".into(), wrong),
    );
    let err = client().pull_manifest(&s.base()).unwrap_err();
    assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");

    // A connection dropped before the answer is retried.
    s.proxy
        .add("GET", "/manifests/latest", 2, Fault::DropResponse);
    let before = s.proxy.count("GET", "/manifests/latest");
    let m = client().pull_manifest(&s.base()).unwrap();
    assert_eq!(m.bytes, s.info.manifest);
    assert_eq!(s.proxy.count("GET", "/manifests/latest") - before, 3);
}

#[test]
fn redirect_to_another_host_carries_no_authorization() {
    let reg = require!(Registry::start_with(RegistryOptions {
        basic: Some(("bob".into(), "builder-pw".into())),
        ..Default::default()
    }));
    let layout = tempfile::tempdir().unwrap();
    let info = require!(busybox_layout(layout.path()));
    push_layout(
        &reg,
        layout.path(),
        "base/busybox",
        "latest",
        Some(("bob", "builder-pw")),
    )
    .unwrap();
    let proxy = FaultProxy::start(reg.addr()).unwrap();
    let (layer, size) = info.layers[0].clone();
    let bytes = std::fs::read(layout.path().join("blobs/sha256").join(layer.hex())).unwrap();
    let storage = RecordingServer::start(vec![(
        format!("/bucket/{}", layer.hex()),
        Response::new(200, bytes),
    )])
    .unwrap();
    proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        1,
        Fault::Redirect(format!(
            "http://{}/bucket/{}?X-Amz-Signature=TOPSECRETSIG",
            storage.addr(),
            layer.hex()
        )),
    );
    let c = Client::new(
        config(),
        CredentialSource {
            explicit: vec![(
                proxy.addr().into(),
                Credential::Basic {
                    username: "bob".into(),
                    password: Secret::new("builder-pw"),
                },
            )],
            ..Default::default()
        },
    );
    let base = r(proxy.addr(), "base/busybox:latest");
    let (_d, st) = store();
    c.fetch_blob(&base, &layer, size, &st).unwrap();
    assert!(st.contains(&layer));
    let at_storage = storage.seen();
    assert_eq!(at_storage.len(), 1);
    assert!(
        at_storage[0].header("authorization").is_none(),
        "Authorization leaked to the storage host"
    );
    // The registry itself did get credentials.
    assert!(proxy
        .seen()
        .iter()
        .any(|x| x.header("authorization").is_some()));

    // A failing redirect target: the error does not show the signature.
    proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        10,
        Fault::Redirect(format!(
            "http://{}/missing?X-Amz-Signature=TOPSECRETSIG",
            storage.addr()
        )),
    );
    let (_d, st) = store();
    let err = c.fetch_blob(&base, &layer, size, &st).unwrap_err();
    assert!(
        !format!("{err} {err:?}").contains("TOPSECRETSIG"),
        "{err:?}"
    );
    assert!(!format!("{err:?}").contains("builder-pw"));

    // A redirect to a link-local (metadata) address is refused.
    proxy.clear();
    proxy.add(
        "GET",
        &format!("/blobs/{layer}"),
        10,
        Fault::Redirect("http://169.254.169.254/latest/meta-data".into()),
    );
    let err = c.fetch_blob(&base, &layer, size, &st).unwrap_err();
    assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
}

#[test]
fn hostile_realms_locations_and_huge_manifests_are_refused() {
    let realm = |realm: &str| {
        RecordingServer::start(vec![(
            "/v2/".into(),
            Response::new(401, "{}").with_header(
                "WWW-Authenticate",
                &format!(r#"Bearer realm="{realm}",service="x""#),
            ),
        )])
        .unwrap()
    };
    for bad in ["http://169.254.169.254/token", "file:///etc/passwd"] {
        let srv = realm(bad);
        let err = client().pull_manifest(&r(srv.addr(), "a/b:c")).unwrap_err();
        assert!(matches!(err, RegistryError::Refused { .. }), "{bad}: {err}");
    }

    // A 5 MiB token response is refused without being buffered whole.
    let tok = RecordingServer::start(vec![(
        "/token".into(),
        Response::new(200, vec![b' '; 5 * 1024 * 1024]),
    )])
    .unwrap();
    let srv = realm(&format!("http://{}/token", tok.addr()));
    let err = client().pull_manifest(&r(srv.addr(), "a/b:c")).unwrap_err();
    assert!(
        matches!(
            err,
            RegistryError::TooLarge {
                what: "token response",
                ..
            }
        ),
        "{err}"
    );

    // An upload Location on another host with a private address.
    let srv = RecordingServer::start(vec![
        ("/v2/".into(), Response::new(200, "{}")),
        (
            "/v2/a/b/blobs/uploads/".into(),
            Response::new(202, "").with_header("Location", "http://10.9.8.7/upload?_state=x"),
        ),
    ])
    .unwrap();
    let (_d, st) = store();
    let d = st.put(b"some blob").unwrap();
    let err = client()
        .push_blob(&r(srv.addr(), "a/b:c"), &d, &st, None)
        .unwrap_err();
    assert!(matches!(err, RegistryError::Refused { .. }), "{err}");
    assert!(!srv.seen().iter().any(|x| x.method == "PUT"));

    // A 5 MiB "manifest" is refused without being buffered whole.
    let big = vec![b' '; 5 * 1024 * 1024];
    let srv = RecordingServer::start(vec![
        ("/v2/".into(), Response::new(200, "{}")),
        (
            "/v2/a/b/manifests/c".into(),
            Response::new(200, big).with_header("Content-Type", kiln_oci::media::OCI_MANIFEST),
        ),
    ])
    .unwrap();
    let err = client().pull_manifest(&r(srv.addr(), "a/b:c")).unwrap_err();
    assert!(matches!(err, RegistryError::TooLarge { .. }), "{err}");
}

#[test]
fn chunked_upload_recovers_from_416_and_reset_and_digest_invalid_stops_push() {
    let Some(s) = setup() else { return };
    let (_d, st) = store();
    let p = client()
        .pull_image(&s.base(), &Platform::host(), &st)
        .unwrap();
    let chunky = Client::new(
        RegistryConfig {
            monolithic_limit: 1024,
            chunk_size: 128 * 1024,
            ..config()
        },
        CredentialSource::default(),
    );
    // Third PATCH: 416 (resume where the registry says); fifth: the connection drops after
    // the registry stored the chunk (distribution then refuses the stale session: restart).
    s.proxy
        .add("PATCH", "/v2/copy/a/blobs/uploads/", 2, Fault::Pass);
    s.proxy.add(
        "PATCH",
        "/v2/copy/a/blobs/uploads/",
        1,
        Fault::ErrorCode(416, "BLOB_UPLOAD_INVALID".into()),
    );
    s.proxy
        .add("PATCH", "/v2/copy/a/blobs/uploads/", 1, Fault::Pass);
    s.proxy
        .add("PATCH", "/v2/copy/a/blobs/uploads/", 1, Fault::DropResponse);
    let dest = r(s.proxy.addr(), "copy/a:v1");
    let d = repush(&chunky, &dest, &p, &st);
    assert_eq!(d, s.info.manifest_digest);
    assert_eq!(
        s.proxy.count("GET", "/v2/copy/a/blobs/uploads/"),
        2,
        "upload status GETs"
    );
    assert_eq!(
        skopeo_inspect_raw(&s.reg, "copy/a:v1").unwrap(),
        s.info.manifest
    );

    // DIGEST_INVALID on the final PUT: the push fails and no manifest is PUT.
    s.proxy.add(
        "PUT",
        "/v2/copy/b/blobs/uploads/",
        100,
        Fault::ErrorCode(400, "DIGEST_INVALID".into()),
    );
    let err = client()
        .push_image(
            &[r(s.proxy.addr(), "copy/b:v1")],
            &p.manifest.bytes,
            &p.media_type,
            &st,
        )
        .unwrap_err();
    assert!(err.to_string().contains("DIGEST_INVALID"), "{err}");
    assert_eq!(s.proxy.count("PUT", "/v2/copy/b/manifests/"), 0);

    // Re-run after an interrupted push: present blobs are skipped by HEAD.
    s.proxy.clear();
    let rep = client()
        .push_image_with_sources(
            &[r(s.proxy.addr(), "copy/a:v2")],
            &p.manifest.bytes,
            &p.media_type,
            &st,
            &Default::default(),
        )
        .unwrap();
    assert_eq!((rep.uploaded, rep.existed), (0, 2));
}

#[test]
fn mirrors_and_registry_map_fall_back_in_order() {
    let Some(s) = setup() else { return };
    push_busybox(&s.reg, "library/busybox").unwrap();
    let dead = RecordingServer::start(vec![("/v2/".into(), Response::new(200, "{}"))]).unwrap();
    let (_d, st) = store();
    let c = Client::new(
        RegistryConfig {
            mirrors: vec![dead.addr().into(), s.reg.addr().into()],
            ..config()
        },
        CredentialSource::default(),
    );
    let hub: Reference = "busybox".parse().unwrap();
    let p = c.pull_image(&hub, &Platform::host(), &st).unwrap();
    assert_eq!(p.manifest.bytes, s.info.manifest);
    assert_eq!(p.source.registry(), s.reg.addr());
    assert!(dead
        .seen()
        .iter()
        .any(|x| x.target.contains("/v2/library/busybox/manifests/latest")));

    // Only a failing mirror and no fallback: a clear error, docker.io never contacted.
    let c = Client::new(
        RegistryConfig {
            mirrors: vec![dead.addr().into()],
            skip_default_fallback: true,
            ..config()
        },
        CredentialSource::default(),
    );
    let err = c.pull_image(&hub, &Platform::host(), &st).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    // --registry-map with a path prefix.
    push_busybox(&s.reg, "prefix/base/busybox").unwrap();
    let mut cfg = config();
    cfg.add_map_flag(&format!("example.invalid={}/prefix", s.reg.addr()))
        .unwrap();
    cfg.skip_default_fallback = true;
    let c = Client::new(cfg, CredentialSource::default());
    let p = c
        .pull_image(
            &"example.invalid/base/busybox".parse().unwrap(),
            &Platform::host(),
            &st,
        )
        .unwrap();
    assert_eq!(p.manifest.bytes, s.info.manifest);
    assert_eq!(p.source.repository(), "prefix/base/busybox");
}

#[test]
fn mount_refused_or_unknown_falls_back_to_upload() {
    let Some(s) = setup() else { return };
    let (_d, st) = store();
    let p = client()
        .pull_image(&s.base(), &Platform::host(), &st)
        .unwrap();
    let origins = |repo: &str| -> std::collections::HashMap<Digest, Reference> {
        let mut m: std::collections::HashMap<Digest, Reference> = p
            .layers
            .iter()
            .map(|l| {
                (
                    l.digest().to_string().parse().unwrap(),
                    r(s.proxy.addr(), repo),
                )
            })
            .collect();
        m.insert(p.config_digest.clone(), r(s.proxy.addr(), repo));
        m
    };
    // 401 on the mount POST: upload normally.
    s.proxy.add(
        "POST",
        "mount=",
        10,
        Fault::ErrorCode(401, "UNAUTHORIZED".into()),
    );
    let rep = client()
        .push_image_with_sources(
            &[r(s.proxy.addr(), "m/one:v1")],
            &p.manifest.bytes,
            &p.media_type,
            &st,
            &origins("base/busybox"),
        )
        .unwrap();
    assert_eq!((rep.mounted, rep.uploaded), (0, 2), "{rep:?}");
    assert!(s.proxy.count("POST", "mount=") >= 2);
    s.proxy.clear();
    // The source repository does not have the blobs: distribution answers 202 with a session.
    let rep = client()
        .push_image_with_sources(
            &[r(s.proxy.addr(), "m/two:v1")],
            &p.manifest.bytes,
            &p.media_type,
            &st,
            &origins("no/such-repo"),
        )
        .unwrap();
    assert_eq!((rep.mounted, rep.uploaded), (0, 2), "{rep:?}");
    // The 202 session was used: no second POST per blob.
    assert_eq!(s.proxy.count("POST", "/v2/m/two/blobs/uploads/"), 2);
    assert_eq!(
        skopeo_inspect_raw(&s.reg, "m/two:v1").unwrap(),
        s.info.manifest
    );
}

//! Pull and push against the real Debian `docker-registry`, checked with skopeo.

mod common;

use common::{client, config, repush, store};
use kiln_oci::{Platform, Reference};
use kiln_registry::{Client, CredentialSource, RegistryError};
use kiln_testkit::image::{other_platform, skopeo_inspect_config, skopeo_inspect_raw};
use kiln_testkit::{push_busybox, push_busybox_docker, push_multiplatform, require, Registry};
use std::collections::HashMap;

fn r(reg: &Registry, s: &str) -> Reference {
    format!("{}/{s}", reg.addr()).parse().unwrap()
}

#[test]
fn pull_oci_and_docker_byte_exact_then_push_round_trip() {
    let reg = require!(Registry::start());
    let oci = require!(push_busybox(&reg, "base/busybox"));
    let docker = push_busybox_docker(&reg, "base/busybox-docker").unwrap();
    let c = client();
    let (_d, st) = store();
    for (name, info) in [
        ("base/busybox:latest", &oci),
        ("base/busybox-docker:latest", &docker),
    ] {
        let p = c
            .pull_image(&r(&reg, name), &Platform::host(), &st)
            .unwrap();
        assert_eq!(p.manifest.bytes, info.manifest, "{name}");
        assert_eq!(p.manifest_digest, info.manifest_digest);
        assert_eq!(p.media_type, info.media_type);
        assert_eq!(p.config_bytes, info.config);
        assert_eq!(p.layers.len(), 1);
        assert!(st.contains(&info.layers[0].0));
        assert_eq!(p.index_digest, None);

        // Push it elsewhere: skopeo reads back the same bytes.
        let dest = r(
            &reg,
            &format!("copy/{}", name.split(':').next().unwrap().replace('/', "-")),
        );
        let digest = repush(&c, &dest, &p, &st);
        assert_eq!(digest, info.manifest_digest);
        let raw = skopeo_inspect_raw(&reg, &format!("{}:latest", dest.repository())).unwrap();
        assert_eq!(raw, info.manifest, "{name} changed on push");
        let cfg = skopeo_inspect_config(&reg, &format!("{}:latest", dest.repository())).unwrap();
        assert_eq!(cfg["config"]["Cmd"][0], "/bin/sh");

        // A second push uploads nothing.
        let again = c
            .push_image_with_sources(
                std::slice::from_ref(&dest),
                &p.manifest.bytes,
                &p.media_type,
                &st,
                &HashMap::new(),
            )
            .unwrap();
        assert_eq!(
            (again.uploaded, again.mounted, again.existed),
            (0, 0, 2),
            "{name}"
        );
    }
}

#[test]
fn second_repository_mounts_and_several_tags() {
    let reg = require!(Registry::start());
    let info = require!(push_busybox(&reg, "base/busybox"));
    let c = client();
    let (_d, st) = store();
    let p = c
        .pull_image(&r(&reg, "base/busybox"), &Platform::host(), &st)
        .unwrap();
    let targets = [
        r(&reg, "app/one:v1"),
        r(&reg, "app/one:v2"),
        r(&reg, "app/two:v1"),
    ];
    let rep = c
        .push_image_with_sources(
            &targets,
            &p.manifest.bytes,
            &p.media_type,
            &st,
            &HashMap::new(),
        )
        .unwrap();
    assert_eq!(rep.uploaded, 2, "{rep:?}");
    assert_eq!(rep.mounted, 2, "second repository must mount: {rep:?}");
    for t in ["app/one:v1", "app/one:v2", "app/two:v1"] {
        assert_eq!(skopeo_inspect_raw(&reg, t).unwrap(), info.manifest, "{t}");
    }
    // Mount from the base image's repository (known origins).
    let origins: HashMap<_, _> = p
        .layers
        .iter()
        .map(|l| {
            (
                l.digest().to_string().parse().unwrap(),
                r(&reg, "base/busybox"),
            )
        })
        .chain([(p.config_digest.clone(), r(&reg, "base/busybox"))])
        .collect();
    let rep = c
        .push_image_with_sources(
            &[r(&reg, "app/three:v1")],
            &p.manifest.bytes,
            &p.media_type,
            &st,
            &origins,
        )
        .unwrap();
    assert_eq!((rep.uploaded, rep.mounted), (0, 2), "{rep:?}");
    assert!(c
        .blob_exists(&r(&reg, "app/three:v1"), &p.config_digest)
        .unwrap());
}

#[test]
fn index_selects_platform_and_round_trips() {
    let reg = require!(Registry::start());
    let multi = require!(push_multiplatform(&reg, "base/multi"));
    let c = client();
    let (_d, st) = store();
    let host = c
        .pull_image(&r(&reg, "base/multi"), &Platform::host(), &st)
        .unwrap();
    assert_eq!(host.index_digest.as_ref(), Some(&multi.manifest_digest));
    assert_eq!(host.manifest.bytes, multi.platforms[0].1.manifest);
    let other = c
        .pull_image(&r(&reg, "base/multi"), &other_platform(), &st)
        .unwrap();
    assert_eq!(other.manifest.bytes, multi.platforms[1].1.manifest);
    assert_ne!(other.config_digest, host.config_digest);
    let err = c
        .pull_image(&r(&reg, "base/multi"), &"linux/s390x".parse().unwrap(), &st)
        .unwrap_err();
    assert!(err.to_string().contains("linux/s390x"), "{err}");

    // Push the whole index: children are blobs in the store.
    for (_, img) in &multi.platforms {
        st.put(&img.manifest).unwrap();
    }
    let index = c.pull_manifest(&r(&reg, "base/multi")).unwrap();
    let dest = r(&reg, "copy/multi:latest");
    let d = c
        .push_image(
            std::slice::from_ref(&dest),
            &index.bytes,
            &index.media_type,
            &st,
        )
        .unwrap();
    assert_eq!(d, multi.manifest_digest);
    assert_eq!(
        skopeo_inspect_raw(&reg, "copy/multi:latest").unwrap(),
        multi.manifest
    );
    let tiny = &multi.platforms[1].1;
    let raw = skopeo_inspect_raw(&reg, &format!("copy/multi@{}", tiny.manifest_digest)).unwrap();
    assert_eq!(raw, tiny.manifest);
}

#[test]
fn pull_by_digest_chunked_push_and_permission_probe() {
    let reg = require!(Registry::start());
    let info = require!(push_busybox(&reg, "base/busybox"));
    let (_d, st) = store();
    let pinned = r(&reg, &format!("base/busybox@{}", info.manifest_digest));
    let c = client();
    let p = c.pull_image(&pinned, &Platform::host(), &st).unwrap();
    assert_eq!(p.manifest.bytes, info.manifest);

    // Force PATCH chunks (the layer is ~1 MB).
    let chunky = Client::new(
        kiln_registry::RegistryConfig {
            monolithic_limit: 1024,
            chunk_size: 200 * 1024,
            ..config()
        },
        CredentialSource::default(),
    );
    let dest = r(&reg, "copy/chunked:latest");
    chunky.check_push_permission(&dest).unwrap();
    let d = repush(&chunky, &dest, &p, &st);
    assert_eq!(d, info.manifest_digest);
    assert_eq!(
        skopeo_inspect_raw(&reg, "copy/chunked:latest").unwrap(),
        info.manifest
    );
}

#[test]
fn clear_errors_for_missing_things() {
    let reg = require!(Registry::start());
    let c = client();
    let err = c.pull_manifest(&r(&reg, "nothing/here:v1")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::Status { status: 404, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("MANIFEST_UNKNOWN") && msg.contains("nothing/here"),
        "{msg}"
    );
    // A manifest referencing blobs the registry does not have is refused by the client
    // before any PUT (the blobs are not in the local store either).
    let (_d, st) = store();
    let m = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;
    let err = c
        .push_image(
            &[r(&reg, "x/y:z")],
            m,
            "application/vnd.oci.image.manifest.v1+json",
            &st,
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::MissingBlob { .. }), "{err}");
    assert!(skopeo_inspect_raw(&reg, "x/y:z").is_err());
}

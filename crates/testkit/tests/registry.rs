//! The test kit against the real registry: fixtures arrive byte-exact.

use kiln_testkit::image::{skopeo_inspect_config, skopeo_inspect_raw};
use kiln_testkit::{push_busybox, push_busybox_docker, push_multiplatform, require, Registry};

#[test]
fn pushed_fixtures_read_back_byte_exact() {
    let reg = require!(Registry::start());
    let oci = require!(push_busybox(&reg, "base/busybox"));
    let raw = skopeo_inspect_raw(&reg, "base/busybox:latest").unwrap();
    assert_eq!(raw, oci.manifest, "OCI manifest changed on push");
    let cfg = skopeo_inspect_config(&reg, "base/busybox:latest").unwrap();
    assert_eq!(cfg["config"]["Cmd"][0], "/bin/sh");

    let docker = push_busybox_docker(&reg, "base/busybox-docker").unwrap();
    let raw = skopeo_inspect_raw(&reg, "base/busybox-docker:latest").unwrap();
    assert_eq!(raw, docker.manifest, "Docker manifest changed on push");

    let multi = push_multiplatform(&reg, "base/multi").unwrap();
    let raw = skopeo_inspect_raw(&reg, "base/multi:latest").unwrap();
    assert_eq!(raw, multi.manifest, "index changed on push");
    let (_, tiny) = &multi.platforms[1];
    let raw = skopeo_inspect_raw(&reg, &format!("base/multi@{}", tiny.manifest_digest)).unwrap();
    assert_eq!(raw, tiny.manifest);
}

#[test]
fn basic_auth_over_tls_registry_starts() {
    let ca = require!(kiln_testkit::TestCa::new());
    let reg = require!(Registry::start_with(kiln_testkit::RegistryOptions {
        basic: Some(("user".into(), "pass".into())),
        tls: Some(ca.registry_tls(false)),
        token: None,
    }));
    assert!(reg.url().starts_with("https://"));
    let out = std::process::Command::new("openssl")
        .args(["s_client", "-connect", reg.addr(), "-CAfile"])
        .arg(ca.ca_cert())
        .args(["-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Verification: OK"), "{text}");
}

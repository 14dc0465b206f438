//! Authentication against the real registry: Basic over TLS (CA-signed leaf), credentials
//! from config.json and a credential helper, and token auth with a test token server.

mod common;

use base64::Engine as _;
use common::{config, repush, store};
use kiln_oci::{Platform, Reference};
use kiln_registry::{Client, Credential, CredentialSource, RegistryConfig, RegistryError, Secret};
use kiln_testkit::image::{busybox_layout, push_layout};
use kiln_testkit::{
    require, Fault, FaultProxy, Registry, RegistryOptions, TestCa, TokenPolicy, TokenServer,
};

fn r(reg: &str, s: &str) -> Reference {
    format!("{reg}/{s}").parse().unwrap()
}

fn tls_config(reg: &Registry, ca: &TestCa) -> RegistryConfig {
    RegistryConfig {
        ca_certificates: vec![(reg.addr().to_string(), ca.ca_cert())],
        ..config()
    }
}

#[test]
fn basic_auth_over_tls_with_config_json_and_helper() {
    let ca = require!(TestCa::new());
    let reg = require!(Registry::start_with(RegistryOptions {
        basic: Some(("alice".into(), "wonder-pass".into())),
        tls: Some(ca.registry_tls(false)),
        token: None,
    }));
    let layout = tempfile::tempdir().unwrap();
    let info = require!(busybox_layout(layout.path()));
    push_layout(
        &reg,
        layout.path(),
        "base/busybox",
        "latest",
        Some(("alice", "wonder-pass")),
    )
    .unwrap();
    let base = r(reg.addr(), "base/busybox:latest");
    let (_d, st) = store();

    // No credentials: a clear error naming the registry.
    let anon = Client::new(tls_config(&reg, &ca), CredentialSource::default());
    let err = anon.pull_manifest(&base).unwrap_err();
    assert!(matches!(err, RegistryError::NoCredentials { .. }), "{err}");
    assert!(err.to_string().contains(reg.addr()));

    // Without the CA the certificate is rejected; with skip-verify it is accepted.
    // Not retried (an untrusted certificate stays untrusted), and the message says what to do.
    let no_ca = Client::new(config(), CredentialSource::default());
    let err = no_ca.pull_manifest(&base).unwrap_err();
    assert!(
        matches!(err, RegistryError::Transport { attempts: 1, .. }),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("--registry-certificate {}=CA.pem", reg.addr())),
        "{err}"
    );

    // Wrong password: Unauthorized, and the password is in no message.
    let wrong = Client::new(
        tls_config(&reg, &ca),
        CredentialSource {
            explicit: vec![(
                reg.addr().into(),
                Credential::Basic {
                    username: "alice".into(),
                    password: Secret::new("nope-secret"),
                },
            )],
            ..Default::default()
        },
    );
    let err = wrong.pull_manifest(&base).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!format!("{err} {err:?}").contains("nope-secret"));

    // config.json with a base64 auth entry.
    let cfgdir = tempfile::tempdir().unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:wonder-pass");
    let cfg_path = cfgdir.path().join("config.json");
    std::fs::write(
        &cfg_path,
        format!(
            r#"{{"auths":{{"https://{}":{{"auth":"{auth}"}}}}}}"#,
            reg.addr()
        ),
    )
    .unwrap();
    let c = Client::new(
        tls_config(&reg, &ca),
        CredentialSource {
            docker_config: Some(cfg_path.clone()),
            ..Default::default()
        },
    );
    let p = c.pull_image(&base, &Platform::host(), &st).unwrap();
    assert_eq!(p.manifest.bytes, info.manifest);
    let dest = r(reg.addr(), "pushed/app:v1");
    c.check_push_permission(&dest).unwrap();
    let d = repush(&c, &dest, &p, &st);
    assert_eq!(d, info.manifest_digest);

    // A credential helper named by credHelpers.
    use std::os::unix::fs::PermissionsExt;
    let helper = cfgdir.path().join("docker-credential-kilnfake");
    std::fs::write(
        &helper,
        "#!/bin/sh\nread server\necho \"{\\\"ServerURL\\\":\\\"$server\\\",\\\"Username\\\":\\\"alice\\\",\\\"Secret\\\":\\\"wonder-pass\\\"}\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &cfg_path,
        format!(r#"{{"credHelpers":{{"{}":"kilnfake"}}}}"#, reg.addr()),
    )
    .unwrap();
    let h = Client::new(
        tls_config(&reg, &ca),
        CredentialSource {
            docker_config: Some(cfg_path),
            helper_dirs: vec![cfgdir.path().to_path_buf()],
            ..Default::default()
        },
    );
    let m = h.pull_manifest(&dest).unwrap();
    assert_eq!(m.bytes, info.manifest);

    // skopeo reads back what kiln pushed.
    let out = std::process::Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            "--tls-verify=false",
            "--creds",
            "alice:wonder-pass",
        ])
        .arg(format!("docker://{}/pushed/app:v1", reg.addr()))
        .output()
        .unwrap();
    assert_eq!(
        out.stdout,
        info.manifest,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn mutual_tls_client_certificate() {
    let ca = require!(TestCa::new());
    let reg = require!(Registry::start_with(RegistryOptions {
        basic: None,
        tls: Some(ca.registry_tls(true)),
        token: None
    }));
    let probe = r(reg.addr(), "nothing/here:v1");
    let without = Client::new(tls_config(&reg, &ca), CredentialSource::default());
    assert!(matches!(
        without.pull_manifest(&probe),
        Err(RegistryError::Transport { .. })
    ));
    let with = Client::new(
        RegistryConfig {
            client_certificates: vec![(reg.addr().into(), ca.client_cert(), ca.client_key())],
            ..tls_config(&reg, &ca)
        },
        CredentialSource::default(),
    );
    let err = with.pull_manifest(&probe).unwrap_err();
    assert!(
        matches!(err, RegistryError::Status { status: 404, .. }),
        "{err}"
    );
    // --skip-tls-verify-registry accepts the server without the CA (still needs the client cert).
    let skip = Client::new(
        RegistryConfig {
            skip_verify_registries: vec![reg.addr().into()],
            client_certificates: vec![(reg.addr().into(), ca.client_cert(), ca.client_key())],
            ..config()
        },
        CredentialSource::default(),
    );
    assert!(matches!(
        skip.pull_manifest(&probe),
        Err(RegistryError::Status { status: 404, .. })
    ));
}

fn token_setup(policy: TokenPolicy) -> Option<(TokenServer, Registry, kiln_testkit::ImageInfo)> {
    let ts = kiln_testkit::skip_or(TokenServer::start(policy))?;
    let reg = kiln_testkit::skip_or(Registry::start_with(RegistryOptions {
        basic: None,
        tls: None,
        token: Some(ts.registry_auth()),
    }))?;
    // Seed through the token-less path: push with skopeo using the token server's user.
    let layout = tempfile::tempdir().unwrap();
    let info = kiln_testkit::skip_or(busybox_layout(layout.path()))?;
    push_layout(
        &reg,
        layout.path(),
        "base/busybox",
        "latest",
        Some(("user", "pass")),
    )
    .unwrap();
    Some((ts, reg, info))
}

fn creds(addr: &str, user: &str, pass: &str) -> CredentialSource {
    CredentialSource {
        explicit: vec![(
            addr.into(),
            Credential::Basic {
                username: user.into(),
                password: Secret::new(pass),
            },
        )],
        ..Default::default()
    }
}

#[test]
fn token_auth_pull_push_cache_and_insufficient_scope() {
    let Some((ts, reg, info)) = token_setup(TokenPolicy {
        read_only: vec!["reader".into()],
        users: vec![
            ("user".into(), "pass".into()),
            ("reader".into(), "rpass".into()),
        ],
        ..Default::default()
    }) else {
        return;
    };
    let (_d, st) = store();
    let c = Client::new(config(), creds(reg.addr(), "user", "pass"));
    let base = r(reg.addr(), "base/busybox:latest");
    let before = ts.requests().len();
    let p = c.pull_image(&base, &Platform::host(), &st).unwrap();
    assert_eq!(p.manifest.bytes, info.manifest);
    // One token for the pull scope, reused for manifest, config and layer.
    assert_eq!(ts.requests().len() - before, 1, "token not cached");
    let dest = r(reg.addr(), "app/pushed:v1");
    let d = repush(&c, &dest, &p, &st);
    assert_eq!(d, info.manifest_digest);
    let scopes: Vec<String> = ts
        .requests()
        .iter()
        .flat_map(|r| r.query("scope"))
        .collect();
    assert!(
        scopes
            .iter()
            .any(|s| s == "repository:app/pushed:pull,push"),
        "{scopes:?}"
    );

    // A read-only user: the push fails with insufficient scope, after one refresh, no loop.
    let ro = Client::new(config(), creds(reg.addr(), "reader", "rpass"));
    ro.pull_manifest(&base).unwrap();
    let n = ts.requests().len();
    let err = ro
        .push_image(
            &[r(reg.addr(), "app/denied:v1")],
            &p.manifest.bytes,
            &p.media_type,
            &st,
        )
        .unwrap_err();
    assert!(
        matches!(err, RegistryError::InsufficientScope { .. }),
        "{err}"
    );
    assert!(
        ts.requests().len() - n <= 4,
        "token requests looped: {}",
        ts.requests().len() - n
    );
    assert!(err.to_string().contains("app/denied"), "{err}");

    // No credentials at all: the token server refuses; the error says none are configured.
    let anon = Client::new(config(), CredentialSource::default());
    let err = anon.pull_manifest(&base).unwrap_err();
    assert!(matches!(err, RegistryError::NoCredentials { .. }), "{err}");

    // Bad password at the token server: clear error, password not echoed.
    let bad = Client::new(config(), creds(reg.addr(), "user", "wrong-horse"));
    let err = bad.pull_manifest(&base).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err}");
    assert!(!format!("{err:?}").contains("wrong-horse"));
}

#[test]
fn token_refreshed_once_on_401_mid_upload() {
    let Some((ts, reg, info)) = token_setup(TokenPolicy::default()) else {
        return;
    };
    let proxy = FaultProxy::start(reg.addr()).unwrap();
    let (_d, st) = store();
    let c = Client::new(
        RegistryConfig {
            monolithic_limit: 1024,
            chunk_size: 256 * 1024,
            ..config()
        },
        creds(proxy.addr(), "user", "pass"),
    );
    let base = r(proxy.addr(), "base/busybox:latest");
    let p = c.pull_image(&base, &Platform::host(), &st).unwrap();
    // The second PATCH gets a 401 as if the token had expired: refresh once, retry the chunk.
    let challenge = format!(
        r#"Bearer realm="{}",service="kiln-test-registry",error="invalid_token""#,
        ts.realm()
    );
    proxy.add(
        "PATCH",
        "/v2/app/refresh/blobs/uploads/",
        1,
        Fault::Status(401, vec![("WWW-Authenticate".into(), challenge)]),
    );
    let tokens_before = ts.requests().len();
    let dest = r(proxy.addr(), "app/refresh:v1");
    let d = repush(&c, &dest, &p, &st);
    assert_eq!(d, info.manifest_digest);
    assert!(proxy
        .seen()
        .iter()
        .any(|s| s.fault.as_deref().is_some_and(|f| f.contains("401"))));
    assert!(
        ts.requests().len() - tokens_before >= 2,
        "token was not refreshed"
    );
    let back = c.pull_manifest(&dest).unwrap();
    assert_eq!(back.bytes, info.manifest);
}

#[test]
fn anonymous_token_pull_and_denied_anonymous_push() {
    let Some((ts, reg, info)) = token_setup(TokenPolicy {
        anonymous_pull: true,
        ..Default::default()
    }) else {
        return;
    };
    let (_d, st) = store();
    let anon = Client::new(config(), CredentialSource::default());
    let before = ts.requests().len();
    let p = anon
        .pull_image(
            &r(reg.addr(), "base/busybox:latest"),
            &Platform::host(),
            &st,
        )
        .unwrap();
    assert_eq!(p.manifest.bytes, info.manifest);
    assert!(ts.requests()[before..]
        .iter()
        .all(|q| q.header("authorization").is_none()));
    let err = anon
        .push_image(
            &[r(reg.addr(), "app/anon:v1")],
            &p.manifest.bytes,
            &p.media_type,
            &st,
        )
        .unwrap_err();
    assert!(matches!(err, RegistryError::NoCredentials { .. }), "{err}");
}

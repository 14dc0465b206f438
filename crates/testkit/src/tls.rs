//! A throw-away certificate authority for TLS tests, made with the `openssl` command.
//!
//! rustls refuses a self-signed CA:TRUE certificate as a server certificate, so the registry
//! gets a leaf (`basicConstraints=critical,CA:FALSE`, `extendedKeyUsage=serverAuth`,
//! `subjectAltName=IP:127.0.0.1`) signed by a separate CA (TESTING.md).

use crate::{io_err, run, which, TestkitError};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA plus a server leaf for 127.0.0.1 and a client leaf, all PEM files in one directory.
#[derive(Debug)]
pub struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    /// Creates the CA, the server certificate and a client certificate (EC P-256: fast).
    pub fn new() -> Result<TestCa, TestkitError> {
        if which("openssl").is_none() {
            return Err(TestkitError::NotInstalled("openssl"));
        }
        let dir = tempfile::tempdir().map_err(io_err("creating temp dir", "/tmp"))?;
        let d = dir.path();
        let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(d).args(args));
        ossl(&[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ca.key",
        ])?;
        ossl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-sha256",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test CA",
            "-out",
            "ca.pem",
        ])?;
        leaf(
            d,
            "server",
            "serverAuth",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
        )?;
        leaf(d, "client", "clientAuth", "subjectAltName=DNS:kiln-client")?;
        Ok(TestCa { dir })
    }

    /// CA certificate (PEM): what a client trusts (`--registry-certificate`).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    /// Server leaf certificate.
    pub fn server_cert(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }
    /// Server key.
    pub fn server_key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    /// Client leaf certificate (mTLS).
    pub fn client_cert(&self) -> PathBuf {
        self.dir.path().join("client.pem")
    }
    /// Client key (PKCS#8 PEM).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client.key")
    }
    /// The directory holding all files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    /// Registry TLS files: the server leaf, and the CA as client CA when `mtls`.
    pub fn registry_tls(&self, mtls: bool) -> crate::registry::TlsFiles {
        crate::registry::TlsFiles {
            cert: self.server_cert(),
            key: self.server_key(),
            client_ca: mtls.then(|| self.ca_cert()),
        }
    }
}

fn leaf(d: &Path, name: &str, eku: &str, san: &str) -> Result<(), TestkitError> {
    let ossl = |args: &[&str]| run(Command::new("openssl").current_dir(d).args(args));
    // `genpkey` writes PKCS#8, which every TLS stack reads.
    ossl(&[
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &format!("{name}.key"),
    ])?;
    ossl(&[
        "req",
        "-new",
        "-key",
        &format!("{name}.key"),
        "-subj",
        &format!("/CN=kiln {name}"),
        "-out",
        &format!("{name}.csr"),
    ])?;
    let ext = d.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={eku}\n{san}\n"),
    )
    .map_err(io_err("writing", &ext))?;
    ossl(&[
        "x509",
        "-req",
        "-in",
        &format!("{name}.csr"),
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-sha256",
        "-extfile",
        &format!("{name}.ext"),
        "-out",
        &format!("{name}.pem"),
    ])?;
    Ok(())
}

//! A real registry per test: Debian's `docker-registry serve` (distribution 2.8.2) on
//! `127.0.0.1:0`, its port read from the `listening on 127.0.0.1:NNNNN` log line.

use crate::{io_err, which, TestkitError};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// TLS files for the registry's listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Server certificate (PEM; a CA-signed leaf, not CA:TRUE, or rustls rejects it).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// When set, client certificates signed by this CA are required (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// Token-auth settings (`auth.token` in distribution's configuration).
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// The token endpoint URL given to clients in `WWW-Authenticate`.
    pub realm: String,
    /// `service` parameter (and JWT `aud`).
    pub service: String,
    /// JWT `iss`.
    pub issuer: String,
    /// PEM certificate(s) whose keys sign the tokens.
    pub rootcertbundle: PathBuf,
}

/// How to start the registry.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// Basic auth with one user (htpasswd file written with `htpasswd -Bbn`).
    pub basic: Option<(String, String)>,
    /// Serve HTTPS.
    pub tls: Option<TlsFiles>,
    /// Token auth (exclusive with `basic`).
    pub token: Option<TokenAuth>,
}

/// A running registry; killed on drop.
pub struct Registry {
    child: Child,
    addr: String,
    tls: bool,
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Registry {
    /// An anonymous plain-HTTP registry.
    pub fn start() -> Result<Registry, TestkitError> {
        Registry::start_with(RegistryOptions::default())
    }

    /// A registry with auth and/or TLS.
    pub fn start_with(opts: RegistryOptions) -> Result<Registry, TestkitError> {
        let bin = which("docker-registry").ok_or(TestkitError::NotInstalled("docker-registry"))?;
        let dir = tempfile::tempdir().map_err(io_err("creating temp dir", "/tmp"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(io_err("creating", &data))?;
        let mut http = serde_json::json!({"addr": "127.0.0.1:0", "secret": "test-only"});
        if let Some(tls) = &opts.tls {
            let mut t = serde_json::json!({"certificate": tls.cert, "key": tls.key});
            if let Some(ca) = &tls.client_ca {
                t["clientcas"] = serde_json::json!([ca]);
            }
            http["tls"] = t;
        }
        // YAML is a superset of JSON: write the configuration as JSON.
        let mut cfg = serde_json::json!({
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": true}},
            "storage": {"filesystem": {"rootdirectory": data}, "delete": {"enabled": true}},
            "http": http,
        });
        if let Some((user, pass)) = &opts.basic {
            if which("htpasswd").is_none() {
                return Err(TestkitError::NotInstalled("htpasswd (apache2-utils)"));
            }
            let line = crate::run(Command::new("htpasswd").args(["-Bbn", user, pass]))?;
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, line).map_err(io_err("writing", &file))?;
            cfg["auth"] = serde_json::json!({"htpasswd": {"realm": "kiln-test", "path": file}});
        }
        if let Some(t) = &opts.token {
            cfg["auth"] = serde_json::json!({"token": {
                "realm": t.realm, "service": t.service, "issuer": t.issuer,
                "rootcertbundle": t.rootcertbundle,
            }});
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg.to_string()).map_err(io_err("writing", &cfg_path))?;
        let mut child = Command::new(bin)
            .arg("serve")
            .arg(&cfg_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(io_err("starting", "docker-registry"))?;
        let stderr = child.stderr.take().ok_or(TestkitError::RegistryStart {
            log: "no stderr".into(),
        })?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        // Keep draining the log after the address is known so the registry never blocks on a
        // full pipe.
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(addr) = listening_addr(&line) {
                        let _ = tx.send(addr);
                        sent = true;
                    }
                }
                if let Ok(mut l) = log2.lock() {
                    l.push(line);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = log.lock().map(|l| l.join("\n")).unwrap_or_default();
                return Err(TestkitError::RegistryStart { log });
            }
        };
        Ok(Registry {
            child,
            addr,
            tls: opts.tls.is_some(),
            dir,
            log,
        })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT` (or https).
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The registry's storage directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A scratch directory that lives as long as the registry.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// The registry's log so far (for failure messages).
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.join("\n")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address in `... msg="listening on 127.0.0.1:43121" ...` (with TLS: `..., tls`).
fn listening_addr(line: &str) -> Option<String> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    let end = rest
        .find(|c: char| c == ',' || c == '"' || c.is_whitespace())
        .unwrap_or(rest.len());
    let addr = &rest[..end];
    addr.rsplit_once(':')?.1.parse::<u16>().ok()?;
    Some(addr.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_log_line() {
        let l = r#"time="2026-01-01T00:00:00Z" level=info msg="listening on 127.0.0.1:43121" go.version=go1.19"#;
        assert_eq!(listening_addr(l).as_deref(), Some("127.0.0.1:43121"));
        let t = r#"level=info msg="listening on 127.0.0.1:5000, tls""#;
        assert_eq!(listening_addr(t).as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(listening_addr("listening on nowhere"), None);
    }
}

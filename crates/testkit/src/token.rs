//! A token server for distribution's token auth: issues RS256 JWTs signed with
//! `openssl dgst -sha256 -sign`, with the signing certificate in the `x5c` header; the same
//! certificate is the registry's `rootcertbundle`.

use crate::http::{Action, Request, Response, Server};
use crate::{io_err, run, which, TestkitError};
use base64::Engine as _;
use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Who gets which token.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Users and passwords (Basic auth on the token request).
    pub users: Vec<(String, String)>,
    /// Users limited to `pull`.
    pub read_only: Vec<String>,
    /// Identity (refresh) tokens accepted with `grant_type=refresh_token`, and their user.
    pub identity_tokens: Vec<(String, String)>,
    /// Anonymous requests get `pull`.
    pub anonymous_pull: bool,
    /// `expires_in` reported to clients.
    pub expires_in: u64,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        TokenPolicy {
            users: vec![("user".into(), "pass".into())],
            read_only: Vec::new(),
            identity_tokens: Vec::new(),
            anonymous_pull: false,
            expires_in: 300,
        }
    }
}

/// A running token server; stops on drop.
pub struct TokenServer {
    server: Server,
    dir: tempfile::TempDir,
    requests: Arc<Mutex<Vec<Request>>>,
}

/// `service` the registry and the tokens use.
pub const SERVICE: &str = "kiln-test-registry";
/// `iss` of the tokens.
pub const ISSUER: &str = "kiln-test-issuer";

struct Signer {
    key: PathBuf,
    cert_der_b64: String,
}

impl TokenServer {
    /// Generates a key and certificate and starts serving `/token`.
    pub fn start(policy: TokenPolicy) -> Result<TokenServer, TestkitError> {
        if which("openssl").is_none() {
            return Err(TestkitError::NotInstalled("openssl"));
        }
        let dir = tempfile::tempdir().map_err(io_err("creating temp dir", "/tmp"))?;
        let d = dir.path();
        run(Command::new("openssl").current_dir(d).args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "token.key",
            "-out",
            "token.pem",
            "-days",
            "2",
            "-subj",
            "/CN=kiln test token signer",
        ]))?;
        let der = run(Command::new("openssl").current_dir(d).args([
            "x509",
            "-in",
            "token.pem",
            "-outform",
            "DER",
        ]))?;
        let signer = Arc::new(Signer {
            key: d.join("token.key"),
            cert_der_b64: base64::engine::general_purpose::STANDARD.encode(der),
        });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let reqs = requests.clone();
        let server = Server::start(Arc::new(move |req: Request, _s: &mut TcpStream| {
            if let Ok(mut r) = reqs.lock() {
                r.push(req.clone());
            }
            Action::Respond(answer(&policy, &signer, &req))
        }))
        .map_err(io_err("starting token server", "127.0.0.1:0"))?;
        Ok(TokenServer {
            server,
            dir,
            requests,
        })
    }

    /// The realm URL (`http://127.0.0.1:PORT/token`).
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.server.addr())
    }

    /// The certificate to give the registry as `rootcertbundle`.
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("token.pem")
    }

    /// Registry options for token auth against this server.
    pub fn registry_auth(&self) -> crate::registry::TokenAuth {
        crate::registry::TokenAuth {
            realm: self.realm(),
            service: SERVICE.into(),
            issuer: ISSUER.into(),
            rootcertbundle: self.cert_path(),
        }
    }

    /// Token requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn user_of(policy: &TokenPolicy, req: &Request) -> Result<Option<String>, ()> {
    if req.method == "POST" {
        let form = Request {
            target: format!("/?{}", String::from_utf8_lossy(&req.body)),
            ..req.clone()
        };
        let tok = form.query("refresh_token");
        let Some(t) = tok.first() else { return Err(()) };
        return policy
            .identity_tokens
            .iter()
            .find(|(k, _)| k == t)
            .map(|(_, u)| Some(u.clone()))
            .ok_or(());
    }
    let Some(h) = req.header("authorization") else {
        return Ok(None);
    };
    let enc = h.strip_prefix("Basic ").ok_or(())?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(enc.trim())
        .map_err(|_| ())?;
    let s = String::from_utf8(raw).map_err(|_| ())?;
    let (u, p) = s.split_once(':').ok_or(())?;
    policy
        .users
        .iter()
        .find(|(uu, pp)| uu == u && pp == p)
        .map(|(u, _)| Some(u.clone()))
        .ok_or(())
}

fn answer(policy: &TokenPolicy, signer: &Signer, req: &Request) -> Response {
    let params = if req.method == "POST" {
        Request {
            target: format!("/?{}", String::from_utf8_lossy(&req.body)),
            ..req.clone()
        }
    } else {
        req.clone()
    };
    let user = match user_of(policy, req) {
        Ok(u) => u,
        Err(()) => return Response::new(401, r#"{"details":"bad credentials"}"#),
    };
    if user.is_none() && !policy.anonymous_pull {
        return Response::new(401, r#"{"details":"authentication required"}"#);
    }
    let mut access = Vec::new();
    for scope in params.query("scope") {
        for s in scope.split(' ') {
            let mut parts = s.splitn(2, ':');
            let (Some(kind), Some(rest)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some((name, actions)) = rest.rsplit_once(':') else {
                continue;
            };
            let wanted: Vec<&str> = actions.split(',').collect();
            let granted: Vec<&str> = wanted
                .into_iter()
                .filter(|a| match (&user, *a) {
                    (_, "pull") => true,
                    (Some(u), "push") => !policy.read_only.contains(u),
                    _ => false,
                })
                .collect();
            access.push(serde_json::json!({"type": kind, "name": name, "actions": granted}));
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [signer.cert_der_b64]});
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": user.clone().unwrap_or_default(), "aud": params.query("service").first().cloned().unwrap_or_default(),
        "exp": now + policy.expires_in.max(1), "nbf": now - 10, "iat": now,
        "jti": format!("{now}-{}", rand_suffix()), "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig = match sign(&signer.key, signing_input.as_bytes()) {
        Ok(s) => s,
        Err(e) => return Response::new(500, format!("signing failed: {e}")),
    };
    let jwt = format!("{signing_input}.{}", b64url(&sig));
    let body =
        serde_json::json!({"token": jwt, "access_token": jwt, "expires_in": policy.expires_in});
    Response::new(200, body.to_string()).with_header("Content-Type", "application/json")
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

fn sign(key: &std::path::Path, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(data)?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(std::io::Error::other("openssl dgst failed"));
    }
    Ok(out.stdout)
}

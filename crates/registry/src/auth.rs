//! Credentials (docker `config.json`, credential helpers), `WWW-Authenticate` challenges and
//! the bearer-token cache.
//!
//! Secrets are wrapped in [`Secret`], whose `Debug` and `Display` print `<redacted>`, so a
//! `{:?}` of any struct holding one cannot leak it into a log line.

use crate::error::RegistryError;
use base64::Engine as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A string that must never be printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (Basic auth, and the token request's Basic auth).
    Basic {
        /// User name.
        username: String,
        /// Password or access token.
        password: Secret,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json), exchanged at the token
    /// endpoint with `grant_type=refresh_token`.
    IdentityToken(Secret),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// `Basic base64(user:pass)` when this is a username/password pair.
    pub(crate) fn basic_header(&self) -> Option<String> {
        match self {
            Credential::Basic { username, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{username}:{}", password.expose()))
            )),
            Credential::IdentityToken(_) => None,
        }
    }
}

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub struct CredentialSource {
    /// Explicit credentials per registry host (`executor login`, tests); checked first.
    pub explicit: Vec<(String, Credential)>,
    /// A docker `config.json` (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`; the CLI
    /// resolves the path, see [`default_docker_config_path`]).
    pub docker_config: Option<PathBuf>,
    /// Directories searched for `docker-credential-<name>` before `PATH`.
    pub helper_dirs: Vec<PathBuf>,
}

/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json` (the values are passed in so
/// the library reads no environment itself).
pub fn default_docker_config_path(
    docker_config_env: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    match (docker_config_env, home) {
        (Some(d), _) => Some(d.join("config.json")),
        (None, Some(h)) => Some(h.join(".docker").join("config.json")),
        (None, None) => None,
    }
}

#[derive(serde::Deserialize, Default)]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, AuthEntry>,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(rename = "credHelpers", default)]
    cred_helpers: HashMap<String, String>,
}

#[derive(serde::Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
}

/// The host part of an `auths` key: `https://index.docker.io/v1/` → `index.docker.io`.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

/// Docker Hub's credentials are stored under `https://index.docker.io/v1/`.
fn hosts_equal(a: &str, b: &str) -> bool {
    let hub = |h: &str| {
        matches!(
            h,
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
        )
    };
    a == b || (hub(a) && hub(b))
}

/// The server URL a credential helper is asked about.
fn helper_server(registry: &str) -> String {
    if hosts_equal(registry, "docker.io") {
        "https://index.docker.io/v1/".to_string()
    } else {
        registry.to_string()
    }
}

/// Files larger than this are not credential files (and are not read whole).
const MAX_CONFIG_SIZE: u64 = 4 * 1024 * 1024;

impl CredentialSource {
    /// Credentials for `registry` (a host as in references: `docker.io`, `localhost:5000`), or
    /// `None` for anonymous access.
    pub fn lookup(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        if let Some((_, c)) = self
            .explicit
            .iter()
            .find(|(h, _)| hosts_equal(key_host(h), registry))
        {
            return Ok(Some(c.clone()));
        }
        let Some(path) = &self.docker_config else {
            return Ok(None);
        };
        let cfg_err = |reason: String| RegistryError::DockerConfig {
            path: path.clone(),
            reason,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(cfg_err(e.to_string())),
        };
        if !meta.is_file() || meta.len() > MAX_CONFIG_SIZE {
            return Err(cfg_err("not a regular file of at most 4 MiB".into()));
        }
        let text = std::fs::read(path).map_err(|e| cfg_err(e.to_string()))?;
        // serde_json's error names line and column only, never the content.
        let cfg: DockerConfigFile =
            serde_json::from_slice(&text).map_err(|e| cfg_err(e.to_string()))?;
        if let Some((_, helper)) = cfg
            .cred_helpers
            .iter()
            .find(|(h, _)| hosts_equal(key_host(h), registry))
        {
            return self.run_helper(helper, registry).map(Some);
        }
        if let Some((key, entry)) = cfg
            .auths
            .iter()
            .find(|(h, _)| hosts_equal(key_host(h), registry))
        {
            if let Some(c) =
                entry_credential(entry).map_err(|r| cfg_err(format!("auths entry {key:?}: {r}")))?
            {
                return Ok(Some(c));
            }
        }
        if let Some(store) = &cfg.creds_store {
            return match self.run_helper(store, registry) {
                Ok(c) => Ok(Some(c)),
                // A credsStore answers "credentials not found" for registries it does not
                // know; that is anonymous access, not an error.
                Err(RegistryError::CredentialHelper { reason, .. })
                    if reason.contains("not found") =>
                {
                    Ok(None)
                }
                Err(e) => Err(e),
            };
        }
        Ok(None)
    }

    /// Runs `docker-credential-<name> get` with the server URL on stdin (docker-credential-
    /// helpers protocol) and parses `{"Username":..,"Secret":..}`.
    fn run_helper(&self, name: &str, registry: &str) -> Result<Credential, RegistryError> {
        let err = |reason: String| RegistryError::CredentialHelper {
            helper: name.to_string(),
            registry: registry.to_string(),
            reason,
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(err("invalid helper name".into()));
        }
        let program = format!("docker-credential-{name}");
        let path = self
            .helper_dirs
            .iter()
            .map(|d| d.join(&program))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from(&program));
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(&path)
            .arg("get")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| err(format!("cannot run {}: {e}", path.display())))?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(helper_server(registry).as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| err(format!("waiting: {e}")))?;
        if !out.status.success() {
            // Helpers print "credentials not found in native keychain" and the like on stdout;
            // that text carries no secret. Keep it short.
            let msg: String = String::from_utf8_lossy(&out.stdout)
                .chars()
                .chain(String::from_utf8_lossy(&out.stderr).chars())
                .take(200)
                .collect();
            return Err(err(format!("exited with {}: {}", out.status, msg.trim())));
        }
        #[derive(serde::Deserialize)]
        struct HelperOut {
            #[serde(rename = "Username", default)]
            username: String,
            #[serde(rename = "Secret")]
            secret: String,
        }
        let h: HelperOut = serde_json::from_slice(&out.stdout)
            .map_err(|_| err("output is not {\"Username\":...,\"Secret\":...} JSON".into()))?;
        if h.username == "<token>" {
            Ok(Credential::IdentityToken(Secret(h.secret)))
        } else {
            Ok(Credential::Basic {
                username: h.username,
                password: Secret(h.secret),
            })
        }
    }
}

fn entry_credential(e: &AuthEntry) -> Result<Option<Credential>, String> {
    if let Some(t) = e.identitytoken.as_deref().filter(|t| !t.is_empty()) {
        return Ok(Some(Credential::IdentityToken(Secret(t.to_string()))));
    }
    if let Some(a) = e.auth.as_deref().filter(|a| !a.is_empty()) {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .map_err(|_| "\"auth\" is not base64".to_string())?;
        let s = String::from_utf8(raw).map_err(|_| "\"auth\" is not UTF-8".to_string())?;
        let (u, p) = s
            .split_once(':')
            .ok_or_else(|| "\"auth\" is not user:password".to_string())?;
        return Ok(Some(Credential::Basic {
            username: u.to_string(),
            password: Secret(p.to_string()),
        }));
    }
    match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Ok(Some(Credential::Basic {
            username: u.clone(),
            password: Secret(p.clone()),
        })),
        _ => Ok(None),
    }
}

/// A parsed `WWW-Authenticate` challenge (RFC 7235; distribution's token spec).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// `Basic realm="..."`.
    Basic,
    /// `Bearer realm="...",service="...",scope="...",error="..."`.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter.
        service: Option<String>,
        /// Scope the registry asked for, if it said.
        scope: Option<String>,
        /// `error` (e.g. `insufficient_scope`, `invalid_token`).
        error: Option<String>,
    },
}

/// Parses the first Basic or Bearer challenge of a header value.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let params = parse_params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    if scheme.eq_ignore_ascii_case("basic") {
        Some(Challenge::Basic)
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Some(Challenge::Bearer {
            realm: get("realm")?,
            service: get("service"),
            scope: get("scope"),
            error: get("error"),
        })
    } else {
        None
    }
}

/// `k="v", k2=v2` with quoted strings (commas and `\"` inside quotes).
fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && (b[i] == ',' || b[i].is_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < b.len() && b[i] != '=' && b[i] != ',' {
            i += 1;
        }
        let key: String = b[start..i].iter().collect::<String>().trim().to_string();
        if i >= b.len() || b[i] != '=' {
            continue;
        }
        i += 1;
        let mut val = String::new();
        if i < b.len() && b[i] == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' && i + 1 < b.len() {
                    i += 1;
                }
                val.push(b[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < b.len() && b[i] != ',' {
                val.push(b[i]);
                i += 1;
            }
            val = val.trim().to_string();
        }
        if !key.is_empty() {
            out.push((key, val));
        }
    }
    out
}

/// Bearer tokens per (registry host, scope), with expiry.
#[derive(Default)]
pub(crate) struct TokenCache {
    tokens: Mutex<HashMap<(String, String), (Secret, Instant)>>,
}

impl TokenCache {
    pub(crate) fn get(&self, host: &str, scope: &str) -> Option<Secret> {
        let map = self.tokens.lock().ok()?;
        let (tok, exp) = map.get(&(host.to_string(), scope.to_string()))?;
        (Instant::now() < *exp).then(|| tok.clone())
    }

    pub(crate) fn put(&self, host: &str, scope: &str, token: Secret, lifetime: Duration) {
        // Refresh a little early so a token does not expire between check and use.
        let margin = (lifetime / 10).min(Duration::from_secs(10));
        if let Ok(mut map) = self.tokens.lock() {
            map.insert(
                (host.to_string(), scope.to_string()),
                (token, Instant::now() + lifetime.saturating_sub(margin)),
            );
        }
    }

    pub(crate) fn forget(&self, host: &str, scope: &str) {
        if let Ok(mut map) = self.tokens.lock() {
            map.remove(&(host.to_string(), scope.to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/ubuntu:pull,push",error="insufficient_scope""#,
        )
        .unwrap();
        assert_eq!(
            c,
            Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/ubuntu:pull,push".into()),
                error: Some("insufficient_scope".into()),
            }
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="r""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate"), None);
        assert_eq!(parse_challenge("Bearer service=x"), None);
        let q = parse_challenge(r#"bearer realm="a\"b", service=s"#).unwrap();
        assert!(
            matches!(q, Challenge::Bearer { realm, service: Some(s), .. } if realm == "a\"b" && s == "s")
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let c = Credential::Basic {
            username: "u".into(),
            password: Secret::new("hunter2"),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let s = CredentialSource {
            explicit: vec![("r".into(), c)],
            ..Default::default()
        };
        assert!(!format!("{s:?}").contains("hunter2"));
        assert_eq!(format!("{}", Secret::new("x")), "<redacted>");
    }

    #[test]
    fn config_json_auths() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &p,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"reg.local:5000":{{"identitytoken":"tok"}},"http://other/v2/":{{"username":"bob","password":"pw"}}}}}}"#
            ),
        )
        .unwrap();
        let src = CredentialSource {
            docker_config: Some(p.clone()),
            ..Default::default()
        };
        match src.lookup("docker.io").unwrap() {
            Some(Credential::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.expose()), ("alice", "s3cret"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            src.lookup("reg.local:5000").unwrap(),
            Some(Credential::IdentityToken(_))
        ));
        assert!(src.lookup("other").unwrap().is_some());
        assert!(src.lookup("nowhere").unwrap().is_none());
        std::fs::write(&p, r#"{"auths":{"x":{"auth":"%%%"}}}"#).unwrap();
        let e = src.lookup("x").unwrap_err().to_string();
        assert!(e.contains("base64") && !e.contains("%%%"), "{e}");
        let missing = CredentialSource {
            docker_config: Some(dir.path().join("none.json")),
            ..Default::default()
        };
        assert!(missing.lookup("x").unwrap().is_none());
    }

    #[test]
    fn credential_helpers() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-kilntest");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\ncase \"$server\" in\n  reg.example) echo '{\"ServerURL\":\"reg.example\",\"Username\":\"hu\",\"Secret\":\"hs\"}';;\n  tok.example) echo '{\"Username\":\"<token>\",\"Secret\":\"idt\"}';;\n  *) echo 'credentials not found in native keychain'; exit 1;;\nesac\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(
            &p,
            r#"{"credsStore":"kilntest","credHelpers":{"tok.example":"kilntest"}}"#,
        )
        .unwrap();
        let src = CredentialSource {
            docker_config: Some(p),
            helper_dirs: vec![dir.path().to_path_buf()],
            ..Default::default()
        };
        match src.lookup("reg.example").unwrap() {
            Some(Credential::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.expose()), ("hu", "hs"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            src.lookup("tok.example").unwrap(),
            Some(Credential::IdentityToken(_))
        ));
        assert!(src.lookup("unknown.example").unwrap().is_none());
    }

    #[test]
    fn token_cache_expires() {
        let c = TokenCache::default();
        c.put("h", "s", Secret::new("t"), Duration::from_secs(60));
        assert!(c.get("h", "s").is_some());
        assert!(c.get("h", "other").is_none());
        c.put("h", "z", Secret::new("t"), Duration::ZERO);
        assert!(c.get("h", "z").is_none());
        c.forget("h", "s");
        assert!(c.get("h", "s").is_none());
    }
}

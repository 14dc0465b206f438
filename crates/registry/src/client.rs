//! The HTTP core: per-registry TLS clients, scheme discovery, authentication, retries with
//! backoff, and redirects followed by kiln itself.
//!
//! reqwest's own redirect policy is off: a redirect to another origin must not carry
//! `Authorization` (a presigned S3 URL must never see a registry token), an https → http
//! downgrade is refused, and link-local targets (cloud metadata, 169.254.169.254) are refused.

use crate::auth::{parse_challenge, Challenge, Credential, CredentialSource, Secret, TokenCache};
use crate::config::{Direction, RegistryConfig};
use crate::error::{Operation, RegistryError, RegistryErrorBody};
use reqwest::blocking::{Body, Client as HttpClient, Response};
use reqwest::header::{
    HeaderMap, HeaderValue, AUTHORIZATION, LOCATION, RETRY_AFTER, WWW_AUTHENTICATE,
};
use reqwest::{Method, StatusCode, Url};
use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Largest token response read.
pub(crate) const MAX_TOKEN_SIZE: u64 = 4 * 1024 * 1024;
/// Largest error body read (for the registry's error code).
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// Upload bodies (PATCH chunks, small blobs) are read into memory and sent as one buffer
/// while all such buffers of a client together stay within this; the rest stream. One
/// default-sized chunk (16 MiB) at a time: peak RSS while pushing a 1 GiB layer measured
/// 55 MB with it (bench/layer-write-report.md), and parallel transfers do not multiply it.
const UPLOAD_IN_MEMORY_MAX: u64 = 16 << 20;
/// Read buffer of a streamed (bigger) upload body.
const UPLOAD_READ_BUF: usize = 1 << 20;
/// Redirect hops followed.
const MAX_REDIRECTS: usize = 10;

/// The registry client. Cheap to share between threads (`&Client` is `Sync`).
pub struct Client {
    pub(crate) cfg: RegistryConfig,
    creds: CredentialSource,
    http: Mutex<HashMap<(String, Direction), HttpClient>>,
    bases: Mutex<HashMap<(String, Direction), String>>,
    auth: Mutex<HashMap<String, HostAuth>>,
    tokens: TokenCache,
    /// Serialises token fetches so parallel blob transfers share one token per scope.
    token_fetch: Mutex<()>,
    creds_cache: Mutex<HashMap<String, Option<Credential>>>,
    /// Upload bodies held in memory (bounded, shared by parallel transfers).
    upload_memory: UploadMemory,
    /// Blob bytes moved (see [`Client::bytes_transferred`]).
    moved: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// How a registry host wants to be authenticated (learned from its challenge).
#[derive(Debug, Clone)]
enum HostAuth {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// What a request is about: registry, repository, operation, and the token scope it needs.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// Registry name as in references (`docker.io`).
    pub registry: String,
    /// API host (`registry-1.docker.io`).
    pub host: String,
    pub repository: String,
    pub op: Operation,
    pub dir: Direction,
    /// Space-separated token scopes.
    pub scope: String,
}

impl Ctx {
    pub(crate) fn new(r: &kiln_oci::Reference, op: Operation, dir: Direction) -> Ctx {
        let c = r.context();
        let action = match dir {
            Direction::Pull => "pull",
            Direction::Push => "pull,push",
        };
        Ctx {
            registry: r.registry().to_string(),
            scope: format!("repository:{}:{action}", c.repository),
            host: c.host,
            repository: c.repository,
            op,
            dir,
        }
    }

    pub(crate) fn with_op(&self, op: Operation) -> Ctx {
        Ctx { op, ..self.clone() }
    }

    pub(crate) fn status_err(
        &self,
        status: u16,
        body: RegistryErrorBody,
        attempts: u32,
    ) -> RegistryError {
        RegistryError::Status {
            operation: self.op,
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            status,
            body,
            attempts,
        }
    }

    pub(crate) fn protocol(&self, reason: impl Into<String>) -> RegistryError {
        RegistryError::Protocol {
            operation: self.op,
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            reason: reason.into(),
        }
    }

    pub(crate) fn refused(
        &self,
        what: &'static str,
        url: &Url,
        reason: &'static str,
    ) -> RegistryError {
        RegistryError::Refused {
            operation: self.op,
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            what,
            target: redact(url),
            reason,
        }
    }

    fn transport(&self, e: reqwest::Error, attempts: u32) -> RegistryError {
        let mut detail = error_chain(&e.without_url());
        if certificate_error(&detail) {
            detail.push_str(&format!(
                " (a private CA or self-signed certificate: give its CA with \
                 --registry-certificate {0}=CA.pem, or skip verification for this registry \
                 with --skip-tls-verify-registry {0})",
                self.registry
            ));
        }
        RegistryError::Transport {
            operation: self.op,
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            attempts,
            detail,
        }
    }
}

/// An error and its causes joined with `: ` (reqwest's top-level message alone, "error
/// sending request", does not say what went wrong).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

/// A request body that can be produced again for a retry.
#[derive(Debug, Clone)]
pub(crate) enum ReqBody {
    Empty,
    Bytes(Arc<Vec<u8>>),
    /// A byte range of a file (blob uploads).
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

/// Bytes of upload bodies held in memory at once, over all transfers of a client.
#[derive(Debug, Default)]
pub(crate) struct UploadMemory(AtomicU64);

/// A share of [`UploadMemory`], given back on drop (when the request has been sent).
pub(crate) struct MemoryShare<'a> {
    pool: &'a UploadMemory,
    bytes: u64,
}

impl UploadMemory {
    /// Reserves `bytes` if the total stays within [`UPLOAD_IN_MEMORY_MAX`].
    fn reserve(&self, bytes: u64) -> Option<MemoryShare<'_>> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes)
                    .filter(|&total| total <= UPLOAD_IN_MEMORY_MAX)
            })
            .ok()
            .map(|_| MemoryShare { pool: self, bytes })
    }
}

impl Drop for MemoryShare<'_> {
    fn drop(&mut self) {
        self.pool.0.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl ReqBody {
    /// The request body. A file range goes into one in-memory buffer when `memory` grants
    /// it room (the share is returned with the body, to be dropped once the request is
    /// sent); otherwise it streams.
    fn make<'m>(
        &self,
        memory: &'m UploadMemory,
    ) -> std::io::Result<(Option<Body>, Option<MemoryShare<'m>>)> {
        Ok(match self {
            ReqBody::Empty => (None, None),
            ReqBody::Bytes(b) => (Some(Body::from(b.as_ref().clone())), None),
            ReqBody::File { path, offset, len } => {
                use std::io::Seek;
                let mut f = std::fs::File::open(path)?;
                f.seek(std::io::SeekFrom::Start(*offset))?;
                if let Some(share) = memory.reserve(*len) {
                    // One buffer: hyper writes it in a few large writes. A reader body goes
                    // through reqwest's blocking bridge 8 KiB at a time (a read, a channel
                    // hand-off and a socket write each: ~2 s of CPU per GiB here, against
                    // ~0.3 s this way; bench/layer-write-report.md). PATCH chunks are at
                    // most `chunk_size` (16 MiB by default), so big blobs take this path
                    // while no other transfer holds the memory.
                    let mut buf = Vec::with_capacity(*len as usize);
                    f.take(*len).read_to_end(&mut buf)?;
                    return Ok((Some(Body::from(buf)), Some(share)));
                }
                // Otherwise stream; the buffer saves reqwest's 8 KiB reads from being one
                // read(2) each.
                let reader = std::io::BufReader::with_capacity(UPLOAD_READ_BUF, f.take(*len));
                (Some(Body::sized(reader, *len)), None)
            }
        })
    }
}

/// A request to send (and re-send on retry).
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub method: Method,
    pub url: Url,
    pub headers: HeaderMap,
    pub body: ReqBody,
    /// Retry on retryable statuses and connection errors (off for PATCH chunks, whose
    /// recovery asks the registry how much it got).
    pub retry: bool,
}

impl Req {
    pub(crate) fn new(method: Method, url: Url) -> Req {
        Req {
            method,
            url,
            headers: HeaderMap::new(),
            body: ReqBody::Empty,
            retry: true,
        }
    }

    pub(crate) fn header(mut self, name: reqwest::header::HeaderName, value: &str) -> Req {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.insert(name, v);
        }
        self
    }
}

/// `scheme://host/path` without query or fragment: presigned URLs carry signatures in the
/// query string, which must not reach a log line or an error message.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// `host[:port]` as in references (the port only when the URL names one).
fn host_port(u: &Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Where a redirect leads, or why it is refused: only http(s), no https → http downgrade
/// (the next hop would see the request in clear text), no link-local (cloud metadata) host.
pub(crate) fn redirect_target(
    from: &Url,
    location: &str,
) -> Result<Url, (Option<Url>, &'static str)> {
    let next = from
        .join(location)
        .map_err(|_| (None, "redirect Location is not a URL"))?;
    if !matches!(next.scheme(), "http" | "https") {
        return Err((Some(next), "not an http(s) URL"));
    }
    if from.scheme() == "https" && next.scheme() == "http" {
        return Err((Some(next), "https to http downgrade"));
    }
    if is_link_local(&next) {
        return Err((Some(next), "link-local address (cloud metadata)"));
    }
    Ok(next)
}

fn host_ip(u: &Url) -> Option<IpAddr> {
    u.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Link-local addresses (169.254.0.0/16, fe80::/10) hold cloud metadata services.
pub(crate) fn is_link_local(u: &Url) -> bool {
    match host_ip(u) {
        Some(IpAddr::V4(a)) => a.is_link_local(),
        Some(IpAddr::V6(a)) => (a.segments()[0] & 0xffc0) == 0xfe80,
        None => matches!(u.host_str(), Some("metadata.google.internal")),
    }
}

/// Private, loopback or link-local IP literal.
pub(crate) fn is_private_ip(u: &Url) -> bool {
    match host_ip(u) {
        Some(IpAddr::V4(a)) => a.is_private() || a.is_loopback() || a.is_link_local(),
        Some(IpAddr::V6(a)) => {
            a.is_loopback()
                || (a.segments()[0] & 0xfe00) == 0xfc00
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
        None => false,
    }
}

fn is_loopback_host(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost" || h.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Statuses worth retrying (RFC 9110: 408, 429 and the transient 5xx).
fn retryable_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

fn retryable_error(e: &reqwest::Error) -> bool {
    // A certificate the client does not trust stays untrusted: no retry.
    (e.is_connect() || e.is_timeout() || e.is_request() || e.is_body())
        && !certificate_error(&error_chain(e))
}

/// Whether a transport error's chain says the server's certificate was refused (rustls:
/// "invalid peer certificate: UnknownIssuer", "…: NotValidForName", "…: Expired").
fn certificate_error(chain: &str) -> bool {
    chain.contains("invalid peer certificate")
}

/// `Retry-After`: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(v)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`.
pub(crate) fn parse_http_date(s: &str) -> Option<SystemTime> {
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, day, mon, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == mon)? as i64
        + 1;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [h, m, sec] = t.as_slice() else {
        return None;
    };
    if !(1..=31).contains(&day) || *h > 23 || *m > 59 || *sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    let secs = days * 86400 + h * 3600 + m * 60 + sec;
    u64::try_from(secs)
        .ok()
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
}

/// Reads at most `limit` bytes; `Err(None)` when the body is longer.
pub(crate) fn read_bounded(resp: Response, limit: u64) -> Result<Vec<u8>, Option<std::io::Error>> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(None);
    }
    let mut buf = Vec::new();
    resp.take(limit + 1).read_to_end(&mut buf).map_err(Some)?;
    if buf.len() as u64 > limit {
        return Err(None);
    }
    Ok(buf)
}

/// The first `{"errors":[{"code","message"}]}` entry of an error body.
pub(crate) fn error_body(resp: Response) -> RegistryErrorBody {
    #[derive(serde::Deserialize)]
    struct E {
        code: Option<String>,
        message: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Es {
        errors: Vec<E>,
    }
    let Ok(bytes) = read_bounded(resp, MAX_ERROR_BODY) else {
        return RegistryErrorBody::default();
    };
    match serde_json::from_slice::<Es>(&bytes) {
        Ok(es) => es
            .errors
            .into_iter()
            .next()
            .map(|e| RegistryErrorBody {
                code: e.code,
                message: e.message.map(|m| m.chars().take(300).collect()),
            })
            .unwrap_or_default(),
        Err(_) => RegistryErrorBody::default(),
    }
}

impl Client {
    /// A client with this configuration and these credentials.
    pub fn new(cfg: RegistryConfig, creds: CredentialSource) -> Client {
        Client {
            cfg,
            creds,
            http: Mutex::new(HashMap::new()),
            bases: Mutex::new(HashMap::new()),
            auth: Mutex::new(HashMap::new()),
            tokens: TokenCache::default(),
            token_fetch: Mutex::new(()),
            creds_cache: Mutex::new(HashMap::new()),
            upload_memory: UploadMemory::default(),
            moved: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Blob bytes this client has moved so far, both directions (downloads as they stream,
    /// uploads per sent chunk or blob): for progress lines.
    pub fn bytes_transferred(&self) -> u64 {
        self.moved.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn count_transferred(&self, n: u64) {
        self.moved
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    /// The configuration.
    pub fn config(&self) -> &RegistryConfig {
        &self.cfg
    }

    /// The reqwest client for a host (TLS options differ per registry).
    fn http_for(&self, registry: &str, dir: Direction) -> Result<HttpClient, RegistryError> {
        let key = (registry.to_string(), dir);
        if let Some(c) = self.http.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let same = |r: &str| crate::config::same_registry(r, registry);
        let tls_err = |path: &PathBuf, reason: String| RegistryError::Tls {
            registry: registry.to_string(),
            path: path.clone(),
            reason,
        };
        let mut b = HttpClient::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(None::<Duration>)
            .connect_timeout(self.cfg.connect_timeout)
            .user_agent(self.cfg.user_agent.clone())
            .danger_accept_invalid_certs(self.cfg.skips_verify(registry, dir));
        for (_, path) in self.cfg.ca_certificates.iter().filter(|(r, _)| same(r)) {
            let pem = std::fs::read(path).map_err(|e| tls_err(path, e.to_string()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| tls_err(path, e.to_string()))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        if let Some((_, cert, key)) = self
            .cfg
            .client_certificates
            .iter()
            .find(|(r, _, _)| same(r))
        {
            let mut pem = std::fs::read(cert).map_err(|e| tls_err(cert, e.to_string()))?;
            pem.push(b'\n');
            pem.extend(std::fs::read(key).map_err(|e| tls_err(key, e.to_string()))?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| tls_err(cert, e.to_string()))?;
            b = b.identity(id);
        }
        let c = b.build().map_err(|e| RegistryError::Tls {
            registry: registry.to_string(),
            path: PathBuf::new(),
            reason: e.without_url().to_string(),
        })?;
        if let Ok(mut m) = self.http.lock() {
            m.insert(key, c.clone());
        }
        Ok(c)
    }

    fn credential(&self, registry: &str) -> Result<Option<Credential>, RegistryError> {
        if let Some(c) = self
            .creds_cache
            .lock()
            .ok()
            .and_then(|m| m.get(registry).cloned())
        {
            return Ok(c);
        }
        let c = self.creds.lookup(registry)?;
        if let Ok(mut m) = self.creds_cache.lock() {
            m.insert(registry.to_string(), c.clone());
        }
        Ok(c)
    }

    /// `scheme://host` for the registry, found by pinging `/v2/` over https and, when plain
    /// HTTP is allowed (the `--insecure*` flags, or a loopback host as Docker does), over
    /// http. The ping also learns the registry's auth challenge.
    pub(crate) fn base(&self, ctx: &Ctx) -> Result<String, RegistryError> {
        let key = (ctx.host.clone(), ctx.dir);
        if let Some(b) = self.bases.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(b);
        }
        let ping = ctx.with_op(Operation::Ping);
        let http = self.http_for(&ctx.registry, ctx.dir)?;
        let allow_http =
            self.cfg.allows_http(&ctx.registry, ctx.dir) || is_loopback_host(&ctx.host);
        let mut last_err: Option<reqwest::Error> = None;
        let attempts = self.cfg.retry.retries(ctx.dir) + 1;
        let mut tried = 0;
        'attempts: for attempt in 0..attempts {
            tried = attempt + 1;
            for scheme in ["https", "http"] {
                if scheme == "http" && !allow_http {
                    continue;
                }
                let base = format!("{scheme}://{}", ctx.host);
                match http.get(format!("{base}/v2/")).send() {
                    // Go's TLS servers answer plain HTTP with 400 ("Client sent an HTTP
                    // request to an HTTPS server"): the https error is the real one.
                    Ok(resp)
                        if scheme == "http"
                            && resp.status() == StatusCode::BAD_REQUEST
                            && last_err.is_some() =>
                    {
                        break 'attempts;
                    }
                    Ok(resp) => {
                        if resp.status() == StatusCode::UNAUTHORIZED {
                            self.learn_challenge(&ctx.host, resp.headers());
                        }
                        if retryable_status(resp.status()) && attempt + 1 < attempts {
                            std::thread::sleep(self.cfg.retry.backoff(attempt));
                            continue 'attempts;
                        }
                        tracing::debug!(registry = %ctx.registry, %base, "registry API found");
                        if let Ok(mut m) = self.bases.lock() {
                            m.insert(key, base.clone());
                        }
                        return Ok(base);
                    }
                    Err(e) => last_err = Some(e),
                }
            }
            // An untrusted certificate stays untrusted: no retry.
            if last_err
                .as_ref()
                .is_some_and(|e| certificate_error(&error_chain(e)))
            {
                break;
            }
            if attempt + 1 < attempts {
                std::thread::sleep(self.cfg.retry.backoff(attempt));
            }
        }
        Err(match last_err {
            Some(e) => ping.transport(e, tried),
            None => ping.protocol("no usable scheme"),
        })
    }

    fn learn_challenge(&self, host: &str, headers: &HeaderMap) {
        let learned = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(parse_challenge)
            .map(|c| match c {
                Challenge::Basic => HostAuth::Basic,
                Challenge::Bearer { realm, service, .. } => HostAuth::Bearer { realm, service },
            })
            .next();
        if let (Some(a), Ok(mut m)) = (learned, self.auth.lock()) {
            m.insert(host.to_string(), a);
        }
    }

    /// The `Authorization` value for a request of `ctx`, if the host wants one.
    fn authorization(&self, ctx: &Ctx) -> Result<Option<String>, RegistryError> {
        let auth = self
            .auth
            .lock()
            .ok()
            .and_then(|m| m.get(&ctx.host).cloned());
        match auth {
            None => Ok(None),
            Some(HostAuth::Basic) => match self.credential(&ctx.registry)? {
                Some(c) => Ok(c.basic_header()),
                None => Err(RegistryError::NoCredentials {
                    operation: ctx.op,
                    registry: ctx.registry.clone(),
                    repository: ctx.repository.clone(),
                }),
            },
            Some(HostAuth::Bearer { realm, service }) => {
                if let Some(t) = self.tokens.get(&ctx.host, &ctx.scope) {
                    return Ok(Some(format!("Bearer {}", t.expose())));
                }
                let _one_at_a_time = self.token_fetch.lock();
                if let Some(t) = self.tokens.get(&ctx.host, &ctx.scope) {
                    return Ok(Some(format!("Bearer {}", t.expose())));
                }
                let t = self.fetch_token(ctx, &realm, service.as_deref())?;
                Ok(Some(format!("Bearer {}", t.expose())))
            }
        }
    }

    /// Distribution token spec: GET realm?service=&scope= (Basic auth when there are
    /// credentials), or POST grant_type=refresh_token for an identity token.
    fn fetch_token(
        &self,
        ctx: &Ctx,
        realm: &str,
        service: Option<&str>,
    ) -> Result<Secret, RegistryError> {
        let tctx = ctx.with_op(Operation::Token);
        let mut url = Url::parse(realm)
            .map_err(|_| tctx.protocol("realm in WWW-Authenticate is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(tctx.refused("token realm", &url, "not an http(s) URL"));
        }
        if is_link_local(&url) {
            return Err(tctx.refused("token realm", &url, "link-local address (cloud metadata)"));
        }
        let registry_https = self
            .bases
            .lock()
            .ok()
            .and_then(|m| m.get(&(ctx.host.clone(), ctx.dir)).cloned())
            .is_some_and(|b| b.starts_with("https:"));
        if registry_https && url.scheme() == "http" && !self.cfg.allows_http(&ctx.registry, ctx.dir)
        {
            return Err(tctx.refused(
                "token realm",
                &url,
                "plain http realm for an https registry",
            ));
        }
        let cred = self.credential(&ctx.registry)?;
        let realm_host = url.host_str().unwrap_or("").to_string()
            + &url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let http = self.http_for(&realm_host, ctx.dir)?;
        let req = match &cred {
            Some(Credential::IdentityToken(t)) => {
                let mut form: Vec<(&str, &str)> = vec![
                    ("grant_type", "refresh_token"),
                    ("refresh_token", t.expose()),
                    ("client_id", "kiln"),
                ];
                if let Some(s) = service {
                    form.push(("service", s));
                }
                let scopes: Vec<&str> = ctx.scope.split(' ').collect();
                for s in &scopes {
                    form.push(("scope", s));
                }
                // Url's query serializer is an application/x-www-form-urlencoded encoder.
                let mut enc =
                    Url::parse("http://form.invalid/").map_err(|_| tctx.protocol("form"))?;
                enc.query_pairs_mut().extend_pairs(form);
                let body = enc.query().unwrap_or("").to_string();
                http.post(url.clone())
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(body)
            }
            _ => {
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = service {
                        q.append_pair("service", s);
                    }
                    for s in ctx.scope.split(' ') {
                        q.append_pair("scope", s);
                    }
                }
                let mut r = http.get(url.clone());
                if let Some(h) = cred.as_ref().and_then(Credential::basic_header) {
                    r = r.header(AUTHORIZATION, h);
                }
                r
            }
        };
        let attempts = self.cfg.retry.retries(ctx.dir) + 1;
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            match req.try_clone().map(|r| r.send()) {
                Some(Ok(resp)) if retryable_status(resp.status()) && attempt < attempts => {
                    std::thread::sleep(self.delay(resp.headers(), attempt - 1));
                }
                Some(Ok(resp)) => break resp,
                Some(Err(e)) if retryable_error(&e) && attempt < attempts => {
                    std::thread::sleep(self.cfg.retry.backoff(attempt - 1));
                }
                Some(Err(e)) => return Err(tctx.transport(e, attempt)),
                None => return Err(tctx.protocol("token request body cannot be re-sent")),
            }
        };
        let status = resp.status();
        if (status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN) && cred.is_none()
        {
            return Err(RegistryError::NoCredentials {
                operation: Operation::Token,
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
            });
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                operation: Operation::Token,
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                body: error_body(resp),
            });
        }
        if !status.is_success() {
            return Err(tctx.status_err(status.as_u16(), error_body(resp), attempt));
        }
        let bytes = read_bounded(resp, MAX_TOKEN_SIZE).map_err(|e| match e {
            None => RegistryError::TooLarge {
                what: "token response",
                registry: ctx.registry.clone(),
                repository: ctx.repository.clone(),
                limit: MAX_TOKEN_SIZE,
            },
            Some(e) => tctx.protocol(format!("reading token response: {e}")),
        })?;
        #[derive(serde::Deserialize)]
        struct Tok {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let t: Tok = serde_json::from_slice(&bytes)
            .map_err(|_| tctx.protocol("token response is not JSON"))?;
        let token = t
            .token
            .or(t.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| tctx.protocol("token response has no token"))?;
        // The token spec's default lifetime is 60 seconds.
        let life = Duration::from_secs(t.expires_in.unwrap_or(60).clamp(1, 24 * 3600));
        let token = Secret::new(token);
        self.tokens.put(&ctx.host, &ctx.scope, token.clone(), life);
        Ok(token)
    }

    fn delay(&self, headers: &HeaderMap, attempt: u32) -> Duration {
        match retry_after(headers, SystemTime::now()) {
            Some(d) => d.min(self.cfg.retry.retry_after_cap),
            None => self.cfg.retry.backoff(attempt),
        }
    }

    /// Sends `req` with authentication, retries and redirects. Returns the final response
    /// (which may be an error status: callers decide) and the number of attempts.
    pub(crate) fn execute(&self, ctx: &Ctx, req: &Req) -> Result<(Response, u32), RegistryError> {
        let max_attempts = if req.retry {
            self.cfg.retry.retries(ctx.dir) + 1
        } else {
            1
        };
        let mut attempt = 0u32;
        let mut auth_refreshed = false;
        loop {
            attempt += 1;
            let authz = self.authorization(ctx)?;
            match self.send_following_redirects(ctx, req, authz.as_deref()) {
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED => {
                    let challenge = resp
                        .headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .find_map(parse_challenge);
                    if auth_refreshed || challenge.is_none() {
                        let insufficient = matches!(&challenge, Some(Challenge::Bearer { error: Some(e), .. }) if e == "insufficient_scope");
                        if insufficient && self.credential(&ctx.registry)?.is_none() {
                            return Err(RegistryError::NoCredentials {
                                operation: ctx.op,
                                registry: ctx.registry.clone(),
                                repository: ctx.repository.clone(),
                            });
                        }
                        if insufficient {
                            return Err(RegistryError::InsufficientScope {
                                operation: ctx.op,
                                registry: ctx.registry.clone(),
                                repository: ctx.repository.clone(),
                                scope: ctx.scope.clone(),
                            });
                        }
                        return Err(RegistryError::Unauthorized {
                            operation: ctx.op,
                            registry: ctx.registry.clone(),
                            repository: ctx.repository.clone(),
                            body: error_body(resp),
                        });
                    }
                    // Learn (or re-learn) the challenge, drop a stale token, try once more.
                    self.learn_challenge(&ctx.host, resp.headers());
                    self.tokens.forget(&ctx.host, &ctx.scope);
                    auth_refreshed = true;
                    attempt -= 1;
                    tracing::debug!(registry = %ctx.registry, op = %ctx.op, "authenticating after 401");
                }
                Ok(resp) if retryable_status(resp.status()) && attempt < max_attempts => {
                    let d = self.delay(resp.headers(), attempt - 1);
                    tracing::info!(registry = %ctx.registry, repository = %ctx.repository, op = %ctx.op,
                        status = resp.status().as_u16(), attempt, "retrying in {:?}", d);
                    drop(resp);
                    std::thread::sleep(d);
                }
                Ok(resp) => return Ok((resp, attempt)),
                Err(SendError::Http(e)) if retryable_error(&e) && attempt < max_attempts => {
                    let d = self.cfg.retry.backoff(attempt - 1);
                    tracing::info!(registry = %ctx.registry, repository = %ctx.repository, op = %ctx.op,
                        attempt, "connection error ({}); retrying in {:?}", e.without_url(), d);
                    std::thread::sleep(d);
                }
                Err(SendError::Http(e)) => return Err(ctx.transport(e, attempt)),
                Err(SendError::Other(e)) => return Err(e),
            }
        }
    }

    fn send_following_redirects(
        &self,
        ctx: &Ctx,
        req: &Req,
        authz: Option<&str>,
    ) -> Result<Response, SendError> {
        let mut url = req.url.clone();
        let mut method = req.method.clone();
        let mut body = req.body.clone();
        for _ in 0..=MAX_REDIRECTS {
            // Credentials and the registry's TLS settings belong to the registry's host only:
            // never to a storage host it redirects to, nor to an upload Location elsewhere.
            let host = host_port(&url);
            let is_registry = host == ctx.host;
            let http = if is_registry {
                self.http_for(&ctx.registry, ctx.dir)
            } else {
                self.http_for(&host, ctx.dir)
            }
            .map_err(SendError::Other)?;
            let mut rb = http
                .request(method.clone(), url.clone())
                .headers(req.headers.clone());
            if is_registry {
                if let Some(a) = authz {
                    rb = rb.header(AUTHORIZATION, a);
                }
            }
            let (made, share) = body
                .make(&self.upload_memory)
                .map_err(|e| SendError::Other(ctx.protocol(format!("reading upload body: {e}"))))?;
            if let Some(b) = made {
                rb = rb.body(b);
            }
            tracing::trace!(method = %method, url = %redact(&url), "request");
            let resp = rb.send().map_err(SendError::Http)?;
            // The body is sent (or abandoned): its buffer is no longer counted.
            drop(share);
            let st = resp.status();
            if !matches!(st.as_u16(), 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| SendError::Other(ctx.protocol("redirect without Location")))?;
            let next = match redirect_target(&url, loc) {
                Ok(n) => n,
                Err((Some(n), reason)) => {
                    return Err(SendError::Other(ctx.refused("redirect to", &n, reason)))
                }
                Err((None, reason)) => return Err(SendError::Other(ctx.protocol(reason))),
            };
            tracing::debug!(from = %redact(&url), to = %redact(&next), "following redirect");
            if st == StatusCode::SEE_OTHER
                || (matches!(st.as_u16(), 301 | 302) && method == Method::POST)
            {
                method = Method::GET;
                body = ReqBody::Empty;
            }
            url = next;
        }
        Err(SendError::Other(ctx.protocol("too many redirects")))
    }

    /// Resolves an upload `Location` (relative or absolute) and checks it: http(s), no
    /// downgrade, and not a private address on another host (HOSTILE-INPUTS 36).
    pub(crate) fn upload_location(
        &self,
        ctx: &Ctx,
        base: &Url,
        resp: &Response,
    ) -> Result<Url, RegistryError> {
        let loc = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ctx.protocol("upload response without Location"))?;
        let u = base
            .join(loc)
            .map_err(|_| ctx.protocol("upload Location is not a URL"))?;
        if !matches!(u.scheme(), "http" | "https") {
            return Err(ctx.refused("upload location", &u, "not an http(s) URL"));
        }
        if base.scheme() == "https" && u.scheme() == "http" {
            return Err(ctx.refused("upload location", &u, "https to http downgrade"));
        }
        if is_link_local(&u) {
            return Err(ctx.refused("upload location", &u, "link-local address (cloud metadata)"));
        }
        if u.host_str() != base.host_str() && is_private_ip(&u) {
            return Err(ctx.refused("upload location", &u, "private address on another host"));
        }
        Ok(u)
    }
}

pub(crate) enum SendError {
    Http(reqwest::Error),
    Other(RegistryError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_and_retry_after() {
        let t = parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs(),
            784111777
        );
        assert!(parse_http_date("Sun, 06 Nov 1994 08:49:37 PST").is_none());
        assert!(parse_http_date("yesterday").is_none());
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            retry_after(&h, SystemTime::now()),
            Some(Duration::from_secs(2))
        );
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:47 GMT"),
        );
        assert_eq!(retry_after(&h, t), Some(Duration::from_secs(10)));
    }

    #[test]
    fn redirect_rules() {
        let from = Url::parse("https://reg.example/v2/a/blobs/sha256:x").unwrap();
        let ok = redirect_target(&from, "https://s3.example/b?sig=1").unwrap();
        assert_eq!(ok.host_str(), Some("s3.example"));
        assert_eq!(
            redirect_target(&from, "/other").unwrap().as_str(),
            "https://reg.example/other"
        );
        for (bad, why) in [
            ("http://s3.example/b", "downgrade"),
            ("file:///etc/passwd", "http(s)"),
            ("https://169.254.169.254/latest", "link-local"),
            ("ftp://x/y", "http(s)"),
        ] {
            let (_, reason) = redirect_target(&from, bad).unwrap_err();
            assert!(reason.contains(why), "{bad}: {reason}");
        }
        let plain = Url::parse("http://reg.local:5000/v2/").unwrap();
        assert!(redirect_target(&plain, "http://other:9000/x").is_ok());
        assert_eq!(host_port(&plain), "reg.local:5000");
    }

    #[test]
    fn address_classes() {
        let u = |s: &str| Url::parse(s).unwrap();
        assert!(is_link_local(&u("http://169.254.169.254/latest")));
        assert!(is_link_local(&u("http://[fe80::1]/")));
        assert!(!is_link_local(&u("http://10.0.0.1/")));
        assert!(is_private_ip(&u("http://10.1.2.3/")));
        assert!(is_private_ip(&u("http://192.168.0.1/")));
        assert!(!is_private_ip(&u("https://s3.amazonaws.com/")));
        assert!(is_loopback_host("127.0.0.1:5000"));
        assert!(is_loopback_host("localhost"));
        assert!(is_loopback_host("[::1]:5000"));
        assert!(!is_loopback_host("registry.local:5000"));
        assert_eq!(
            redact(&u(
                "https://u:p@s3.example/bucket/blob?X-Amz-Signature=abc#f"
            )),
            "https://s3.example/bucket/blob"
        );
    }

    /// Upload bodies: a range is one in-memory buffer holding exactly that range while the
    /// client's budget ([`UPLOAD_IN_MEMORY_MAX`]) allows, else it streams; shares come back.
    #[test]
    fn upload_body_in_memory_within_the_budget_then_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let data: Vec<u8> = (0..UPLOAD_IN_MEMORY_MAX + 4096)
            .map(|i| (i % 251) as u8)
            .collect();
        std::fs::write(&path, &data).unwrap();
        let memory = UploadMemory::default();
        let range = |offset: u64, len: u64| ReqBody::File {
            path: path.clone(),
            offset,
            len,
        };
        let (body, share) = range(1000, 70_000).make(&memory).unwrap();
        assert_eq!(body.unwrap().as_bytes(), Some(&data[1000..71_000]));
        assert!(share.is_some());
        // The small body still holds its share: a full-budget range must stream now.
        let full = range(7, UPLOAD_IN_MEMORY_MAX);
        let (body, none) = full.make(&memory).unwrap();
        assert!(body.unwrap().as_bytes().is_none());
        assert!(none.is_none());
        drop(share);
        let (body, share) = full.make(&memory).unwrap();
        assert_eq!(
            body.unwrap().as_bytes(),
            Some(&data[7..7 + UPLOAD_IN_MEMORY_MAX as usize])
        );
        drop(share);
        // Bigger than the whole budget: always streamed.
        let (body, share) = range(0, UPLOAD_IN_MEMORY_MAX + 1).make(&memory).unwrap();
        assert!(body.unwrap().as_bytes().is_none() && share.is_none());
        assert_eq!(memory.0.load(Ordering::Acquire), 0);
    }
}

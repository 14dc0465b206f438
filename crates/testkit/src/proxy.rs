//! A fault-injecting HTTP proxy in front of a real registry, and a recording server.
//!
//! Rules match a request by method and a path substring and apply a [`Fault`] a given number
//! of times; everything else is forwarded unchanged (the client's `Host` header is kept, so
//! the registry's absolute `Location` URLs point back at the proxy). Every request's method,
//! target and headers are recorded.

use crate::http::{self, header, Action, Request, Response, Server};
use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

/// What to do to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward unchanged (to let the first N matching requests through).
    Pass,
    /// Answer with this status and headers (e.g. 503, or 429 with `Retry-After`) without
    /// forwarding.
    Status(u16, Vec<(String, String)>),
    /// Answer with this status and a registry error body `{"errors":[{"code": CODE}]}`.
    ErrorCode(u16, String),
    /// Forward, then send the headers and only the first N body bytes, and close.
    ResetAfter(usize),
    /// Forward, then replace (or add) a response header.
    SetHeader(String, String),
    /// Forward (the upstream processes the request), then close without answering.
    DropResponse,
    /// Forward, then send the body with one extra byte (and a matching Content-Length).
    ExtraByte,
    /// Forward, then send the body one byte short with a Content-Length one byte shorter.
    ShortByOne,
    /// Answer `307` with this `Location` (`{path}` is replaced by the request target).
    Redirect(String),
    /// Forward without the request's `Range` header (the server then answers 200).
    DropRange,
    /// Forward, and rewrite a 206 `Content-Range` to start at this byte.
    WrongContentRange(u64),
}

#[derive(Debug)]
struct Rule {
    method: String,
    path_contains: String,
    remaining: usize,
    fault: Fault,
}

/// A request as the proxy (or recording server) saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Which fault was applied, if any.
    pub fault: Option<String>,
}

impl Seen {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

struct State {
    upstream: String,
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
}

/// The fault proxy; stops on drop.
pub struct FaultProxy {
    server: Server,
    state: Arc<State>,
}

impl FaultProxy {
    /// A proxy forwarding to `upstream` (`127.0.0.1:PORT` of a plain-HTTP registry).
    pub fn start(upstream: &str) -> std::io::Result<FaultProxy> {
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            rules: Mutex::new(Vec::new()),
            seen: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let server = Server::start(Arc::new(move |req: Request, stream: &mut TcpStream| {
            handle(&st, req, stream)
        }))?;
        Ok(FaultProxy { server, state })
    }

    /// `127.0.0.1:PORT` of the proxy.
    pub fn addr(&self) -> &str {
        self.server.addr()
    }

    /// Applies `fault` to the next `times` requests with this method whose target contains
    /// `path_contains`. Rules are checked in the order added.
    pub fn add(&self, method: &str, path_contains: &str, times: usize, fault: Fault) {
        if let Ok(mut r) = self.state.rules.lock() {
            r.push(Rule {
                method: method.to_string(),
                path_contains: path_contains.to_string(),
                remaining: times,
                fault,
            });
        }
    }

    /// Removes all rules.
    pub fn clear(&self) {
        if let Ok(mut r) = self.state.rules.lock() {
            r.clear();
        }
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// Requests seen whose method matches and target contains `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.method == method && s.target.contains(path_contains))
            .count()
    }
}

fn take_fault(st: &State, req: &Request) -> Option<Fault> {
    let mut rules = st.rules.lock().ok()?;
    let rule = rules.iter_mut().find(|r| {
        r.remaining > 0 && r.method == req.method && req.target.contains(&r.path_contains)
    })?;
    rule.remaining -= 1;
    Some(rule.fault.clone())
}

fn handle(st: &State, mut req: Request, stream: &mut TcpStream) -> Action {
    let fault = take_fault(st, &req);
    if let Ok(mut s) = st.seen.lock() {
        s.push(Seen {
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
            fault: fault.as_ref().map(|f| format!("{f:?}")),
        });
    }
    match &fault {
        Some(Fault::Status(code, headers)) => {
            let mut r = Response::new(
                *code,
                format!(
                    "{{\"errors\":[{{\"code\":\"INJECTED\",\"message\":\"injected {code}\"}}]}}"
                ),
            );
            r.headers = headers.clone();
            return Action::Respond(r);
        }
        Some(Fault::ErrorCode(status, code)) => {
            let body = format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"injected\"}}]}}");
            return Action::Respond(
                Response::new(*status, body).with_header("Content-Type", "application/json"),
            );
        }
        Some(Fault::Redirect(to)) => {
            let loc = to.replace("{path}", &req.target);
            return Action::Respond(Response::new(307, Vec::new()).with_header("Location", &loc));
        }
        Some(Fault::DropRange) => req
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("range")),
        _ => {}
    }
    let mut resp = match forward(&st.upstream, &req) {
        Ok(r) => r,
        Err(e) => return Action::Respond(Response::new(502, format!("proxy: {e}"))),
    };
    let head_only = req.method == "HEAD";
    match fault {
        Some(Fault::DropResponse) => Action::Close,
        Some(Fault::SetHeader(name, value)) => {
            resp.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(&name));
            resp.headers.push((name, value));
            if !head_only {
                resp.headers
                    .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
            }
            Action::Respond(resp)
        }
        Some(Fault::ResetAfter(n)) => {
            let mut headers = resp.headers.clone();
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
            headers.push(("Content-Length".into(), resp.body.len().to_string()));
            let _ = http::write_head(stream, resp.status, &headers);
            let _ = stream.write_all(&resp.body[..n.min(resp.body.len())]);
            let _ = stream.flush();
            Action::Close
        }
        Some(Fault::ExtraByte) => {
            resp.body.push(b'!');
            resp.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
            Action::Respond(resp)
        }
        Some(Fault::ShortByOne) => {
            resp.body.pop();
            resp.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
            Action::Respond(resp)
        }
        Some(Fault::WrongContentRange(start)) if resp.status == 206 => {
            let len = resp.body.len() as u64;
            resp.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-range"));
            resp.headers.push((
                "Content-Range".into(),
                format!("bytes {start}-{}/*", start + len.saturating_sub(1)),
            ));
            Action::Respond(resp)
        }
        _ => {
            if head_only {
                // Keep the upstream's Content-Length for HEAD.
                return Action::Respond(resp);
            }
            resp.headers
                .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
            Action::Respond(resp)
        }
    }
}

/// Sends the request upstream on a fresh connection and reads the whole response.
fn forward(upstream: &str, req: &Request) -> std::io::Result<Response> {
    let mut s = TcpStream::connect(upstream)?;
    let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
    for (n, v) in &req.headers {
        if n.eq_ignore_ascii_case("connection")
            || n.eq_ignore_ascii_case("content-length")
            || n.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    let has_body = !req.body.is_empty() || matches!(req.method.as_str(), "PUT" | "POST" | "PATCH");
    if has_body {
        head.push_str(&format!("Content-Length: {}\r\n", req.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(&req.body)?;
    s.flush()?;
    let mut r = BufReader::new(s);
    let (status_line, headers) = http::read_head(&mut r)?
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response"))?;
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(502);
    let no_body = req.method == "HEAD" || status == 204 || status == 304;
    let body = if no_body {
        Vec::new()
    } else {
        http::read_body(&mut r, &headers, true)?
    };
    let headers = headers
        .into_iter()
        .filter(|(n, _)| {
            !n.eq_ignore_ascii_case("transfer-encoding") && !n.eq_ignore_ascii_case("connection")
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A server that records every request and answers from a fixed table (path → response);
/// unknown paths get 404. Stands in for "another host" (a presigned storage URL).
pub struct RecordingServer {
    server: Server,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl RecordingServer {
    /// Serves `routes` (exact path, without query).
    pub fn start(routes: Vec<(String, Response)>) -> std::io::Result<RecordingServer> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let server = Server::start(Arc::new(move |req: Request, _s: &mut TcpStream| {
            if let Ok(mut s) = seen2.lock() {
                s.push(Seen {
                    method: req.method.clone(),
                    target: req.target.clone(),
                    headers: req.headers.clone(),
                    fault: None,
                });
            }
            let resp = routes
                .iter()
                .find(|(p, _)| p == req.path())
                .map(|(_, r)| r.clone())
                .unwrap_or_else(|| Response::new(404, "not found"));
            Action::Respond(resp)
        }))?;
        Ok(RecordingServer { server, seen })
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        self.server.addr()
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

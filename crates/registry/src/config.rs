//! Transport configuration: a value built by the CLI from Kaniko's flags and passed in
//! (no globals). Parsers for the flag syntaxes live here with the options they fill.

use crate::error::RegistryError;
use std::path::PathBuf;
use std::time::Duration;

/// Whether a request is part of pulling (base images, cache lookups) or pushing. Kaniko's
/// `--insecure`/`--skip-tls-verify` apply to pushes, the `-pull` variants to pulls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Reading from a registry.
    Pull,
    /// Writing to a registry.
    Push,
}

/// Retry policy: exponential backoff from `base_delay`, capped at `max_delay`; a
/// `Retry-After` header is honoured up to `retry_after_cap`.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Retries after the first attempt for pushes (`--push-retry`).
    pub push_retries: u32,
    /// Retries after the first attempt for pulls (`--image-download-retry`).
    pub pull_retries: u32,
    /// First backoff delay (Kaniko: 1 s; tests use milliseconds).
    pub base_delay: Duration,
    /// Largest backoff delay.
    pub max_delay: Duration,
    /// Largest wait a `Retry-After` header can impose.
    pub retry_after_cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // Kaniko's defaults are 0 retries; a registry hiccup (one 503) failing a whole CI
        // build is worse than a few seconds of waiting, so kiln retries a little by default.
        RetryPolicy {
            push_retries: 3,
            pull_retries: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            retry_after_cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Retries allowed for a direction.
    pub fn retries(&self, dir: Direction) -> u32 {
        match dir {
            Direction::Pull => self.pull_retries,
            Direction::Push => self.push_retries,
        }
    }

    /// Backoff before retry number `attempt` (0-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX);
        self.base_delay.saturating_mul(factor).min(self.max_delay)
    }
}

/// One `--registry-map` rule: references on `from` are tried on each of `to`, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryMap {
    /// Original registry (`index.docker.io` and `docker.io` both mean Docker Hub).
    pub from: String,
    /// Replacement `host[:port][/path-prefix]` values, tried in order.
    pub to: Vec<String>,
}

/// Everything about how kiln talks to registries.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// `--insecure`: plain HTTP allowed for pushes.
    pub insecure_push: bool,
    /// `--insecure-pull`: plain HTTP allowed for pulls.
    pub insecure_pull: bool,
    /// `--insecure-registry`: plain HTTP allowed for these registries.
    pub insecure_registries: Vec<String>,
    /// `--skip-tls-verify`: no certificate verification for pushes.
    pub skip_verify_push: bool,
    /// `--skip-tls-verify-pull`.
    pub skip_verify_pull: bool,
    /// `--skip-tls-verify-registry`.
    pub skip_verify_registries: Vec<String>,
    /// `--registry-certificate reg=path`: extra CA certificates per registry.
    pub ca_certificates: Vec<(String, PathBuf)>,
    /// `--registry-client-cert reg=cert,key`: client certificate per registry (mTLS).
    pub client_certificates: Vec<(String, PathBuf, PathBuf)>,
    /// `--registry-mirror`: mirrors of Docker Hub, tried in order.
    pub mirrors: Vec<String>,
    /// `--registry-map`.
    pub maps: Vec<RegistryMap>,
    /// `--skip-default-registry-fallback`.
    pub skip_default_fallback: bool,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Concurrent blob transfers.
    pub max_concurrency: usize,
    /// Blobs up to this size are uploaded with one PUT; bigger ones in PATCH chunks.
    pub monolithic_limit: u64,
    /// Chunk size of PATCH uploads.
    pub chunk_size: u64,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// `User-Agent` header.
    pub user_agent: String,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure_push: false,
            insecure_pull: false,
            insecure_registries: Vec::new(),
            skip_verify_push: false,
            skip_verify_pull: false,
            skip_verify_registries: Vec::new(),
            ca_certificates: Vec::new(),
            client_certificates: Vec::new(),
            mirrors: Vec::new(),
            maps: Vec::new(),
            skip_default_fallback: false,
            retry: RetryPolicy::default(),
            max_concurrency: 4,
            monolithic_limit: 64 * 1024 * 1024,
            chunk_size: 16 * 1024 * 1024,
            connect_timeout: Duration::from_secs(30),
            user_agent: concat!("kiln/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }
}

/// Docker Hub's spellings, which all name the same registry in flags.
pub(crate) fn same_registry(a: &str, b: &str) -> bool {
    fn canon(s: &str) -> &str {
        let s = s.trim_end_matches('/');
        let s = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .unwrap_or(s);
        match s {
            "index.docker.io"
            | "registry-1.docker.io"
            | "docker.io"
            | "registry.hub.docker.com" => "docker.io",
            other => other,
        }
    }
    canon(a) == canon(b)
}

impl RegistryConfig {
    /// May `registry` be reached over plain HTTP in this direction?
    pub fn allows_http(&self, registry: &str, dir: Direction) -> bool {
        let all = match dir {
            Direction::Pull => self.insecure_pull,
            Direction::Push => self.insecure_push,
        };
        all || self
            .insecure_registries
            .iter()
            .any(|r| same_registry(r, registry))
    }

    /// Is certificate verification off for `registry` in this direction?
    pub fn skips_verify(&self, registry: &str, dir: Direction) -> bool {
        let all = match dir {
            Direction::Pull => self.skip_verify_pull,
            Direction::Push => self.skip_verify_push,
        };
        all || self
            .skip_verify_registries
            .iter()
            .any(|r| same_registry(r, registry))
    }

    /// Parses `reg=path` (`--registry-certificate`).
    pub fn parse_certificate_flag(value: &str) -> Result<(String, PathBuf), RegistryError> {
        match value.split_once('=') {
            Some((r, p)) if !r.is_empty() && !p.is_empty() => Ok((r.to_string(), p.into())),
            _ => Err(RegistryError::BadFlag {
                flag: "--registry-certificate",
                value: value.to_string(),
                expected: "registry=/path/to/ca.crt",
            }),
        }
    }

    /// Parses `reg=cert,key` (`--registry-client-cert`).
    pub fn parse_client_cert_flag(
        value: &str,
    ) -> Result<(String, PathBuf, PathBuf), RegistryError> {
        let bad = || RegistryError::BadFlag {
            flag: "--registry-client-cert",
            value: value.to_string(),
            expected: "registry=/path/cert.pem,/path/key.pem",
        };
        let (r, rest) = value.split_once('=').ok_or_else(bad)?;
        let (c, k) = rest.split_once(',').ok_or_else(bad)?;
        if r.is_empty() || c.is_empty() || k.is_empty() {
            return Err(bad());
        }
        Ok((r.to_string(), c.into(), k.into()))
    }

    /// Parses `orig=remap[;orig2=remap2]` (`--registry-map`), appending to `self.maps` (a
    /// repeated `orig` adds to its list, keeping order).
    pub fn add_map_flag(&mut self, value: &str) -> Result<(), RegistryError> {
        for part in value.split(';').filter(|p| !p.trim().is_empty()) {
            let (from, to) = part
                .split_once('=')
                .filter(|(f, t)| !f.is_empty() && !t.is_empty())
                .ok_or_else(|| RegistryError::BadFlag {
                    flag: "--registry-map",
                    value: value.to_string(),
                    expected: "original=remapped[;original2=remapped2]",
                })?;
            self.add_map(from.trim(), to.trim());
        }
        Ok(())
    }

    fn add_map(&mut self, from: &str, to: &str) {
        let to = to.trim_end_matches('/').to_string();
        match self.maps.iter_mut().find(|m| same_registry(&m.from, from)) {
            Some(m) => m.to.push(to),
            None => self.maps.push(RegistryMap {
                from: from.to_string(),
                to: vec![to],
            }),
        }
    }

    /// Where to try pulling from a registry, in order: the mirrors (for Docker Hub) and the
    /// `--registry-map` entries, then the registry itself unless
    /// `--skip-default-registry-fallback`. Each entry is `host[/prefix]`.
    pub fn pull_candidates(&self, registry: &str) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = Vec::new();
        if same_registry(registry, "docker.io") {
            for m in &self.mirrors {
                let m = m
                    .trim_end_matches('/')
                    .trim_start_matches("https://")
                    .trim_start_matches("http://");
                out.push((m.to_string(), true));
            }
        }
        for map in self
            .maps
            .iter()
            .filter(|m| same_registry(&m.from, registry))
        {
            out.extend(map.to.iter().map(|t| (t.clone(), true)));
        }
        if out.is_empty() || !self.skip_default_fallback {
            out.push((registry.to_string(), false));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_mirrors_maps_and_fallback() {
        let mut c = RegistryConfig {
            mirrors: vec!["https://mirror.one/".into(), "mirror.two:5000".into()],
            ..Default::default()
        };
        c.add_map_flag("index.docker.io=remap.io/hub;quay.io=q.local")
            .unwrap();
        let got: Vec<String> = c
            .pull_candidates("docker.io")
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(
            got,
            ["mirror.one", "mirror.two:5000", "remap.io/hub", "docker.io"]
        );
        assert_eq!(c.pull_candidates("quay.io").len(), 2);
        assert_eq!(
            c.pull_candidates("ghcr.io"),
            vec![("ghcr.io".to_string(), false)]
        );
        c.skip_default_fallback = true;
        let got: Vec<String> = c
            .pull_candidates("quay.io")
            .into_iter()
            .map(|x| x.0)
            .collect();
        assert_eq!(got, ["q.local"]);
        assert!(c.add_map_flag("nothing").is_err());
    }

    #[test]
    fn flags_and_directions() {
        let c = RegistryConfig {
            insecure_pull: true,
            insecure_registries: vec!["reg:5000".into()],
            skip_verify_registries: vec!["index.docker.io".into()],
            ..Default::default()
        };
        assert!(c.allows_http("any", Direction::Pull));
        assert!(!c.allows_http("any", Direction::Push));
        assert!(c.allows_http("reg:5000", Direction::Push));
        assert!(c.skips_verify("docker.io", Direction::Push));
        assert!(!c.skips_verify("reg:5000", Direction::Push));
        assert!(RegistryConfig::parse_client_cert_flag("r=c,k").is_ok());
        assert!(RegistryConfig::parse_client_cert_flag("r=c").is_err());
        assert!(RegistryConfig::parse_certificate_flag("=x").is_err());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            ..Default::default()
        };
        assert_eq!(p.backoff(0), Duration::from_millis(10));
        assert_eq!(p.backoff(2), Duration::from_millis(40));
        assert_eq!(p.backoff(3), Duration::from_millis(50));
        assert_eq!(p.backoff(100), Duration::from_millis(50));
    }
}

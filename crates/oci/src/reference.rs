//! Image references (`[registry/]repository[:tag][@digest]`) with Docker's normalisation:
//! `ubuntu` is `docker.io/library/ubuntu:latest`.
//!
//! Grammar from distribution's `reference` package (docs/reference.go): path components are
//! `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`, a tag is `[\w][\w.-]{0,127}`, and the full name
//! is at most 255 characters. The first component is a registry host when it contains `.` or
//! `:`, is `localhost`, or has upper-case letters (which a repository never has).

use crate::digest::Digest;
use std::fmt;
use std::str::FromStr;

/// Docker Hub's canonical name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's registry API host.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// Maximum length of `registry/repository` (distribution `NameTotalLengthMax`).
pub const NAME_MAX: usize = 255;
/// Maximum length of a tag.
pub const TAG_MAX: usize = 128;

/// A validated, normalised image reference. It always has a tag or a digest (or both): a bare
/// name gets the tag `latest`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// Why a reference string was rejected.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference {input:?}: {reason}")]
    Invalid { input: String, reason: &'static str },
    #[error("invalid reference {input:?}: repository name must be lower-case")]
    UpperCase { input: String },
    #[error("invalid reference {input:?}: name longer than {NAME_MAX} characters")]
    NameTooLong { input: String },
    #[error("invalid reference {input:?}: bad digest: {source}")]
    Digest {
        input: String,
        #[source]
        source: crate::digest::DigestError,
    },
    #[error("invalid tag {0:?}: expected [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")]
    Tag(String),
}

/// Where to talk to the registry API for a reference: the host (after Docker Hub's alias) and
/// the repository path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApiContext {
    /// `host[:port]` of the registry API (`registry-1.docker.io` for Docker Hub).
    pub host: String,
    /// Repository path (`library/ubuntu`).
    pub repository: String,
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// One path component: `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum_lower(b[0]) || !is_alnum_lower(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum_lower(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or "-+".
        let start = i;
        while i < b.len() && !is_alnum_lower(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A registry host: DNS labels separated by dots (or a bracketed IPv6), optional `:port`.
fn valid_domain(d: &str) -> bool {
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((v6, after)) => {
                if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
                    return false;
                }
                match after {
                    "" => (None, None),
                    p => match p.strip_prefix(':') {
                        Some(port) => (None, Some(port)),
                        None => return false,
                    },
                }
            }
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(d), None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
    }
    if let Some(h) = host {
        if h.is_empty() {
            return false;
        }
        for label in h.split('.') {
            let b = label.as_bytes();
            if b.is_empty()
                || !b[0].is_ascii_alphanumeric()
                || !b[b.len() - 1].is_ascii_alphanumeric()
                || !b.iter().all(|x| x.is_ascii_alphanumeric() || *x == b'-')
            {
                return false;
            }
        }
    }
    true
}

/// `[\w][\w.-]{0,127}`.
fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= TAG_MAX
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

impl Reference {
    /// Registry as written in references (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Repository path (`library/ubuntu`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// Tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// Digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when there is one (it pins the content), else
    /// the tag.
    pub fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with this tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !valid_tag(tag) {
            return Err(ReferenceError::Tag(tag.to_string()));
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to a digest (the tag, if any, is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The same repository and tag/digest on another registry (`--registry-map`, mirrors).
    /// Docker Hub's `library/` prefix is kept: mirrors of Docker Hub serve the same paths.
    pub fn with_registry(&self, registry: &str) -> Result<Reference, ReferenceError> {
        let registry = normalize_registry(registry);
        if !valid_domain(&registry) {
            return Err(ReferenceError::Invalid {
                input: registry,
                reason: "bad registry host",
            });
        }
        if registry.len() + 1 + self.repository.len() > NAME_MAX {
            return Err(ReferenceError::NameTooLong {
                input: format!("{registry}/{}", self.repository),
            });
        }
        Ok(Reference {
            registry,
            ..self.clone()
        })
    }

    /// The same registry and tag/digest in another repository (`--cache-repo` derivation).
    pub fn with_repository(&self, repository: &str) -> Result<Reference, ReferenceError> {
        let s = format!("{}/{}", self.registry, repository);
        let parsed: Reference = s.parse()?;
        Ok(Reference {
            tag: self.tag.clone(),
            digest: self.digest.clone(),
            ..parsed
        })
    }

    /// The registry API host and repository (Docker Hub's references say `docker.io`, its API
    /// lives at `registry-1.docker.io`).
    pub fn context(&self) -> ApiContext {
        ApiContext {
            host: api_host(&self.registry).to_string(),
            repository: self.repository.clone(),
        }
    }
}

/// The API host of a registry name (`docker.io` → `registry-1.docker.io`).
pub fn api_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_API
    } else {
        registry
    }
}

/// Docker Hub's aliases (`index.docker.io`, `registry-1.docker.io`) → `docker.io`.
fn normalize_registry(r: &str) -> String {
    match r {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        other => other.to_string(),
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| ReferenceError::Invalid {
            input: input.to_string(),
            reason,
        };
        if input.is_empty() {
            return Err(invalid("empty"));
        }
        // Bound the work before parsing anything: name + ":" + tag + "@" + digest.
        if input.len() > NAME_MAX + 1 + TAG_MAX + 1 + 71 {
            return Err(ReferenceError::NameTooLong {
                input: input.chars().take(64).collect::<String>() + "...",
            });
        }
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => {
                let d: Digest = d.parse().map_err(|source| ReferenceError::Digest {
                    input: input.to_string(),
                    source,
                })?;
                (r, Some(d))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/' (a ':' before it is a port).
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(ReferenceError::Tag(t.to_string()));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid("empty name"));
        }
        let (registry, path) = match name.split_once('/') {
            Some((first, path))
                if first.contains(['.', ':'])
                    || first == "localhost"
                    || first.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                (normalize_registry(first), path.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        if !valid_domain(&registry) {
            return Err(invalid("bad registry host"));
        }
        let repository = if registry == DOCKER_HUB && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        for c in repository.split('/') {
            if !valid_component(c) {
                if c.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(ReferenceError::UpperCase {
                        input: input.to_string(),
                    });
                }
                return Err(invalid("bad repository path component"));
            }
        }
        if registry.len() + 1 + repository.len() > NAME_MAX {
            return Err(ReferenceError::NameTooLong {
                input: input.to_string(),
            });
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl serde::Serialize for Reference {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Reference {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn r(s: &str) -> Reference {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn docker_hub_normalisation() {
        assert_eq!(r("ubuntu").to_string(), "docker.io/library/ubuntu:latest");
        assert_eq!(r("ubuntu:22.04").tag(), Some("22.04"));
        assert_eq!(r("user/app").to_string(), "docker.io/user/app:latest");
        assert_eq!(r("index.docker.io/library/ubuntu"), r("ubuntu"));
        assert_eq!(r("docker.io/ubuntu"), r("ubuntu"));
        let c = r("ubuntu").context();
        assert_eq!(c.host, "registry-1.docker.io");
        assert_eq!(c.repository, "library/ubuntu");
    }

    #[test]
    fn hosts_ports_and_digests() {
        let a = r("localhost:5000/x");
        assert_eq!((a.registry(), a.repository()), ("localhost:5000", "x"));
        let b = r("127.0.0.1:40123/a/b:v1");
        assert_eq!(b.registry(), "127.0.0.1:40123");
        assert_eq!(b.repository(), "a/b");
        assert_eq!(b.context().host, "127.0.0.1:40123");
        let c = r(&format!("ghcr.io/o/r@{D}"));
        assert_eq!(c.tag(), None);
        assert_eq!(c.digest().unwrap().to_string(), D);
        assert_eq!(c.manifest_ref(), D);
        let both = r(&format!("ghcr.io/o/r:v2@{D}"));
        assert_eq!(both.tag(), Some("v2"));
        assert_eq!(both.to_string(), format!("ghcr.io/o/r:v2@{D}"));
        assert_eq!(r(&both.to_string()), both);
        assert_eq!(r("localhost/x").registry(), "localhost");
        assert_eq!(r("[::1]:5000/x").registry(), "[::1]:5000");
        let d = r("Registry/x");
        assert_eq!(d.registry(), "Registry");
    }

    #[test]
    fn rejections() {
        for bad in [
            "",
            "Ubuntu",
            "docker.io/Library/ubuntu",
            "ubuntu:",
            "ubuntu:-x",
            "ubuntu@sha256:../../x",
            "ubuntu@sha256:abc",
            "a//b",
            "a/",
            "a..b",
            "-a",
            "a-",
            "a:1:2/b",
            "host:port/x",
            "[zz]/x",
        ] {
            assert!(bad.parse::<Reference>().is_err(), "{bad:?} accepted");
        }
        assert!(matches!(
            "ubuntu/Foo".parse::<Reference>(),
            Err(ReferenceError::UpperCase { .. })
        ));
        let long = format!("example.com/{}", "a".repeat(250));
        assert!(matches!(
            long.parse::<Reference>(),
            Err(ReferenceError::NameTooLong { .. })
        ));
        let long_tag = format!("x:{}", "t".repeat(129));
        assert!(long_tag.parse::<Reference>().is_err());
        assert!(format!("x:{}", "t".repeat(128))
            .parse::<Reference>()
            .is_ok());
        assert_eq!(r("x/a__b.c-d---e/f_g").repository(), "x/a__b.c-d---e/f_g");
        assert!("a__b.c/x".parse::<Reference>().is_err());
        assert!("a___b".parse::<Reference>().is_err());
    }

    #[test]
    fn rewriting() {
        let a = r("localhost:5000/app:v1");
        assert_eq!(
            a.with_tag("v2").unwrap().to_string(),
            "localhost:5000/app:v2"
        );
        assert!(a.with_tag("bad tag").is_err());
        let pinned = a.with_digest(D.parse().unwrap());
        assert_eq!(pinned.manifest_ref(), D);
        assert_eq!(
            r("ubuntu")
                .with_registry("mirror.local:5000")
                .unwrap()
                .to_string(),
            "mirror.local:5000/library/ubuntu:latest"
        );
        assert_eq!(
            a.with_repository("app/cache").unwrap().to_string(),
            "localhost:5000/app/cache:v1"
        );
    }
}

//! The registry client's errors. Each names the registry, repository and operation; none ever
//! contains a credential, a token, or a redirect URL's query string (presigned signatures).

use kiln_oci::Digest;
use std::path::PathBuf;

/// What the client was doing (for error messages and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET /v2/`.
    Ping,
    /// Manifest GET/HEAD.
    PullManifest,
    /// Blob GET.
    PullBlob,
    /// Blob HEAD before upload.
    CheckBlob,
    /// Cross-repository mount.
    MountBlob,
    /// Blob upload (POST/PATCH/PUT).
    PushBlob,
    /// Manifest PUT.
    PushManifest,
    /// Token request.
    Token,
    /// Push permission probe.
    CheckPushPermission,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Ping => "check registry API",
            Operation::PullManifest => "pull manifest",
            Operation::PullBlob => "pull blob",
            Operation::CheckBlob => "check blob",
            Operation::MountBlob => "mount blob",
            Operation::PushBlob => "push blob",
            Operation::PushManifest => "push manifest",
            Operation::Token => "get token",
            Operation::CheckPushPermission => "check push permission",
        })
    }
}

/// The registry's own error code and message (`{"errors":[{"code":..., "message":...}]}`,
/// distribution spec "Error Codes").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryErrorBody {
    /// First error code, e.g. `MANIFEST_UNKNOWN`.
    pub code: Option<String>,
    /// Its message.
    pub message: Option<String>,
}

impl std::fmt::Display for RegistryErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.code, &self.message) {
            (Some(c), Some(m)) => write!(f, " {c}: {m}"),
            (Some(c), None) => write!(f, " {c}"),
            (None, Some(m)) => write!(f, ": {m}"),
            (None, None) => Ok(()),
        }
    }
}

/// Errors of the registry client.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(
        "{operation} {registry}/{repository}: HTTP {status}{body} (after {attempts} attempt(s))"
    )]
    Status {
        operation: Operation,
        registry: String,
        repository: String,
        status: u16,
        body: RegistryErrorBody,
        attempts: u32,
    },
    #[error("{operation} {registry}/{repository}: {detail} (after {attempts} attempt(s))")]
    Transport {
        operation: Operation,
        registry: String,
        repository: String,
        attempts: u32,
        /// The transport error and its causes, without the URL (presigned URLs carry
        /// signatures in their query strings).
        detail: String,
    },
    #[error("{operation} {registry}/{repository}: authentication failed (HTTP 401{body}); check the credentials for {registry}")]
    Unauthorized {
        operation: Operation,
        registry: String,
        repository: String,
        body: RegistryErrorBody,
    },
    #[error("{operation} {registry}/{repository}: insufficient scope: the credentials for {registry} do not grant {scope:?}")]
    InsufficientScope {
        operation: Operation,
        registry: String,
        repository: String,
        scope: String,
    },
    #[error("{operation} {registry}/{repository}: access denied without credentials (the repository may not exist, or {registry} needs credentials: none are configured)")]
    NoCredentials {
        operation: Operation,
        registry: String,
        repository: String,
    },
    #[error("{operation} {registry}/{repository}: refused {what} {target}: {reason}")]
    Refused {
        operation: Operation,
        registry: String,
        repository: String,
        what: &'static str,
        /// Scheme, host and path only.
        target: String,
        reason: &'static str,
    },
    #[error("{operation} {registry}/{repository}: malformed response: {reason}")]
    Protocol {
        operation: Operation,
        registry: String,
        repository: String,
        reason: String,
    },
    #[error(
        "{what} of {registry}/{repository}: digest mismatch: expected {expected}, found {found}"
    )]
    DigestMismatch {
        what: &'static str,
        registry: String,
        repository: String,
        expected: Digest,
        found: Digest,
    },
    #[error(
        "{what} of {registry}/{repository}: size mismatch: expected {expected} bytes, got {found}"
    )]
    SizeMismatch {
        what: &'static str,
        registry: String,
        repository: String,
        expected: u64,
        found: u64,
    },
    #[error("{what} from {registry}/{repository} exceeds the {limit}-byte limit")]
    TooLarge {
        what: &'static str,
        registry: String,
        repository: String,
        limit: u64,
    },
    #[error("{reference}: {source}")]
    Manifest {
        reference: String,
        #[source]
        source: kiln_oci::ManifestError,
    },
    #[error("local blob store: {0}")]
    Blob(#[from] kiln_oci::blobstore::BlobError),
    #[error("blob {digest} needed for {reference} is not in the local store")]
    MissingBlob { digest: Digest, reference: String },
    #[error("docker config {path}: {reason}")]
    DockerConfig { path: PathBuf, reason: String },
    #[error("credential helper docker-credential-{helper} for {registry}: {reason}")]
    CredentialHelper {
        helper: String,
        registry: String,
        reason: String,
    },
    #[error("TLS setup for {registry}: {path}: {reason}")]
    Tls {
        registry: String,
        path: PathBuf,
        reason: String,
    },
    #[error("invalid {flag} value {value:?}: expected {expected}")]
    BadFlag {
        flag: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error("invalid reference: {0}")]
    Reference(#[from] kiln_oci::ReferenceError),
    #[error("push to {0}: no destination given")]
    NoDestination(String),
    #[error("pull {reference}: every candidate registry failed; last error: {last}")]
    AllCandidatesFailed {
        reference: String,
        last: Box<RegistryError>,
    },
}

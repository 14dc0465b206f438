//! kiln-registry: kiln's OCI distribution client (blocking reqwest + rustls).
//!
//! - Pull: [`Client::pull_manifest`], [`Client::pull_image`] (index → platform entry; blobs
//!   streamed into a [`kiln_oci::BlobStore`], digests verified while streaming, resume).
//! - Push: [`Client::push_blob`], [`Client::push_manifest`], [`Client::push_image`] (HEAD
//!   first, cross-repository mount, monolithic PUT or resumable PATCH chunks, manifest last).
//! - Auth: anonymous, Basic, Bearer tokens per scope ([`auth`]); credentials from docker
//!   `config.json` and credential helpers ([`CredentialSource`]).
//! - Transport: [`RegistryConfig`] (Kaniko's TLS/insecure/mirror/map/retry flags), redirects
//!   followed by kiln (no `Authorization` to another origin, no https→http downgrade, no
//!   link-local targets), bounded retries with backoff and `Retry-After`.
//!
//! Nothing here logs or returns a credential, a token, or a signed URL's query string.
#![forbid(unsafe_code)]

pub mod auth;
mod client;
pub mod config;
pub mod error;
mod parallel;
mod pull;
mod push;

pub use auth::{default_docker_config_path, Credential, CredentialSource, Secret};
pub use client::{redact, Client};
pub use config::{Direction, RegistryConfig, RegistryMap, RetryPolicy};
pub use error::{Operation, RegistryError, RegistryErrorBody};
pub use pull::{PulledImage, MAX_CONFIG_SIZE};
pub use push::{BlobPush, PushReport};

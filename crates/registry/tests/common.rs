//! Shared helpers of the registry client's integration tests.
#![allow(dead_code)]

use kiln_registry::{Client, CredentialSource, RegistryConfig, RetryPolicy};
use std::time::Duration;

/// Short backoffs so the fault tests stay fast.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        push_retries: 3,
        pull_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
        retry_after_cap: Duration::from_secs(3),
    }
}

pub fn config() -> RegistryConfig {
    RegistryConfig {
        retry: fast_retry(),
        ..Default::default()
    }
}

pub fn client() -> Client {
    Client::new(config(), CredentialSource::default())
}

pub fn store() -> (tempfile::TempDir, kiln_oci::BlobStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = kiln_oci::BlobStore::open(dir.path()).unwrap();
    (dir, store)
}

/// Pushes a pulled image (its manifest bytes as served, blobs in `store`) to `dest`;
/// returns the pushed manifest's digest.
pub fn repush(
    c: &Client,
    dest: &kiln_oci::Reference,
    p: &kiln_registry::PulledImage,
    store: &kiln_oci::BlobStore,
) -> kiln_oci::Digest {
    c.push_image(
        std::slice::from_ref(dest),
        &p.manifest.bytes,
        &p.media_type,
        store,
    )
    .unwrap()
}

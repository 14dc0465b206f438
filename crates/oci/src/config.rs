//! The image configuration (`application/vnd.oci.image.config.v1+json`, and Docker's
//! `application/vnd.docker.container.image.v1+json`, which has the same shape).
//!
//! kiln's own struct rather than oci-spec's: oci-spec's config drops `Healthcheck`, `OnBuild`
//! and `Shell` (Docker extensions every `docker build` image may carry) and its label map is a
//! `HashMap`, so the serialised config (and so the image digest) changed from run to run.
//! Every map here is a `BTreeMap`, and fields kiln does not know are kept in `extra` so that a
//! base image's config round-trips.

use crate::digest::Digest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An empty JSON object, as used for the values of `ExposedPorts` and `Volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// The whole image configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// Combined date and time at which the image was created (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(rename = "os.version", skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The execution parameters for a container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Fields kiln does not interpret, kept so that a base config round-trips.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// `config` of the image configuration: how a container runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Empty>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Empty>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// Docker extension: set when a shell-form CMD/ENTRYPOINT was already escaped (Windows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    /// Docker extension.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    /// Docker extension: ONBUILD triggers, as their source text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    /// Docker extension: the SHELL for shell-form instructions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Docker's `Healthcheck` (durations in nanoseconds).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retries: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// `rootfs` of the image configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// Errors reading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid image configuration: {0}")]
    Json(#[from] serde_json::Error),
    #[error("image configuration has {layers} non-empty history entries but {diff_ids} diff_ids")]
    HistoryMismatch { layers: usize, diff_ids: usize },
}

impl ImageConfig {
    /// Parses a configuration blob.
    pub fn from_slice(bytes: &[u8]) -> Result<ImageConfig, ConfigError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// Serialises deterministically (sorted maps, fixed field order).
    pub fn to_vec(&self) -> Vec<u8> {
        // Serialising plain structs and BTreeMaps to a Vec cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The container config, created empty when absent.
    pub fn config_mut(&mut self) -> &mut ContainerConfig {
        self.config.get_or_insert_with(ContainerConfig::default)
    }

    /// `Env` as (name, value) pairs, in order.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.config
            .as_ref()
            .and_then(|c| c.env.as_ref())
            .map(|env| {
                env.iter()
                    .map(|kv| match kv.split_once('=') {
                        Some((k, v)) => (k.to_string(), v.to_string()),
                        None => (kv.clone(), String::new()),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Sets (or replaces in place) an environment variable, as `ENV` does.
    pub fn set_env(&mut self, key: &str, value: &str) {
        let env = self.config_mut().env.get_or_insert_with(Vec::new);
        let entry = format!("{key}={value}");
        match env
            .iter_mut()
            .find(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
        {
            Some(slot) => *slot = entry,
            None => env.push(entry),
        }
    }

    /// Checks that the non-empty history entries match the diff_ids (when history is present).
    pub fn check_history(&self) -> Result<(), ConfigError> {
        if self.history.is_empty() {
            return Ok(());
        }
        let layers = self.history.iter().filter(|h| !h.empty_layer).count();
        if layers != self.rootfs.diff_ids.len() {
            return Err(ConfigError::HistoryMismatch {
                layers,
                diff_ids: self.rootfs.diff_ids.len(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_CONFIG: &str = r#"{"architecture":"amd64","config":{"Env":["PATH=/usr/bin"],"Cmd":["/bin/sh"],"Healthcheck":{"Test":["CMD","true"],"Interval":30000000000},"OnBuild":["RUN x"],"Shell":["/bin/bash","-c"],"Labels":{"b":"2","a":"1"},"Domainname":""},"created":"2024-01-01T00:00:00Z","history":[{"created_by":"x"},{"created_by":"y","empty_layer":true}],"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]},"container":"abc"}"#;

    #[test]
    fn keeps_docker_extensions_and_unknown_fields() {
        let c = ImageConfig::from_slice(DOCKER_CONFIG.as_bytes()).unwrap();
        let cc = c.config.as_ref().unwrap();
        assert_eq!(cc.healthcheck.as_ref().unwrap().interval, 30_000_000_000);
        assert_eq!(cc.on_build.as_ref().unwrap(), &vec!["RUN x".to_string()]);
        assert_eq!(cc.shell.as_ref().unwrap().len(), 2);
        assert!(cc.extra.contains_key("Domainname"));
        assert!(c.extra.contains_key("container"));
        c.check_history().unwrap();
        let again = ImageConfig::from_slice(&c.to_vec()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn serialisation_is_deterministic_and_sorted() {
        let c = ImageConfig::from_slice(DOCKER_CONFIG.as_bytes()).unwrap();
        let a = String::from_utf8(c.to_vec()).unwrap();
        assert_eq!(a, String::from_utf8(c.clone().to_vec()).unwrap());
        assert!(a.find(r#""a":"1""#).unwrap() < a.find(r#""b":"2""#).unwrap());
    }

    #[test]
    fn set_env_replaces_in_place() {
        let mut c = ImageConfig::default();
        c.set_env("A", "1");
        c.set_env("B", "2");
        c.set_env("A", "3");
        assert_eq!(
            c.env_pairs(),
            vec![("A".into(), "3".into()), ("B".into(), "2".into())]
        );
    }
}

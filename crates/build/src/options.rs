//! The build's configuration: a plain value built by the CLI and passed down (no globals).

use kiln_oci::media::ImageFormat;
use std::path::PathBuf;

/// A `--secret id=…,src=…|env=…` value. Its bytes are read only when a RUN mounts it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretSource {
    pub id: String,
    pub source: SecretFrom,
}

/// Where a secret's bytes come from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretFrom {
    File(PathBuf),
    Env(String),
}

impl std::fmt::Debug for SecretSource {
    // Names only: never the bytes (they are not held here anyway) nor the env value.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSource({})", self.id)
    }
}

/// A `--ssh` value: an ssh-agent socket that `RUN --mount=type=ssh,id=ID` reaches through a
/// forwarding socket kiln serves for that step only (BuildKit's `--ssh ID=SOCKET`).
#[derive(Clone, PartialEq, Eq)]
pub struct SshSource {
    /// The id a mount names (`default` when the mount has no `id=`).
    pub id: String,
    /// The agent's socket on the host (`$SSH_AUTH_SOCK` for `--ssh default`).
    pub socket: PathBuf,
}

impl std::fmt::Debug for SshSource {
    // The id only: the agent socket's path is a credential of sorts (whoever can reach it can
    // sign with the caller's keys), so it stays out of debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshSource({})", self.id)
    }
}

/// The layer cache (`--cache` and its companions); `None` in [`BuildOptions`] when off.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    /// `--cache-repo` (`oci:/path` for a layout); default `<first destination>/cache`, and a
    /// local cache in the state directory when there is neither.
    pub repo: Option<String>,
    /// `--cache-dir`: base images written by `kiln warm`, used when the directory exists.
    pub dir: Option<PathBuf>,
    /// `--cache-ttl`.
    pub ttl: std::time::Duration,
    /// `--cache-run-layers`.
    pub run_layers: bool,
    /// `--cache-copy-layers`.
    pub copy_layers: bool,
    /// Store new entries (`--no-push-cache` turns it off).
    pub store: bool,
}

/// Everything one build needs to know.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build context directory (tar contexts are extracted by the caller first).
    pub context: PathBuf,
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// kiln's state directory (stage root file systems, blob store, cache).
    pub state_dir: PathBuf,
    /// References to push to.
    pub destinations: Vec<String>,
    /// Push to the destinations.
    pub push: bool,
    /// `--tar-path`.
    pub tar_path: Option<PathBuf>,
    /// `--oci-layout-path`.
    pub oci_layout_path: Option<PathBuf>,
    /// `--digest-file`.
    pub digest_file: Option<PathBuf>,
    /// `--image-name-with-digest-file`.
    pub image_name_with_digest_file: Option<PathBuf>,
    /// `--image-name-tag-with-digest-file`.
    pub image_name_tag_with_digest_file: Option<PathBuf>,
    /// `--build-arg` values, already resolved (bare `KEY` took the environment's value).
    pub build_args: Vec<(String, String)>,
    /// `--target`.
    pub target: Option<String>,
    /// `--label`.
    pub labels: Vec<(String, String)>,
    /// `--annotation` (manifest annotations).
    pub annotations: Vec<(String, String)>,
    /// `--custom-platform` (default: the host's).
    pub platform: Option<String>,
    /// `--image-format` (default: follow the base image).
    pub image_format: Option<ImageFormat>,
    /// `--reproducible`.
    pub reproducible: bool,
    /// `--snapshot-mode`.
    pub snapshot_mode: kiln_rootfs::SnapshotMode,
    /// `--single-snapshot`.
    pub single_snapshot: bool,
    /// `--ignore-path` plus `/var/run` when `--ignore-var-run`.
    pub ignore_paths: Vec<String>,
    /// `--skip-unused-stages` (kiln's default: on, as BuildKit): build only the stages the
    /// target reads. Off (Kaniko's default), every stage up to the target is built and a
    /// failing one fails the build.
    pub skip_unused_stages: bool,
    /// `--isolation` (None: detect).
    pub isolation: Option<String>,
    /// `--secret`.
    pub secrets: Vec<SecretSource>,
    /// `--ssh`: agent sockets for `RUN --mount=type=ssh`.
    pub ssh: Vec<SshSource>,
    /// Layer compression.
    pub compression: kiln_oci::layer::Compression,
    /// Registry transport options.
    pub registry: kiln_registry::RegistryConfig,
    /// Where registry credentials come from.
    pub credentials: kiln_registry::CredentialSource,
    /// Run RUN steps on an overlay and take its upper directory as the change set (no walk of
    /// the rootfs), falling back to the walk where overlayfs is not available.
    pub overlay_snapshots: bool,
    /// Keep the unpacked root file systems of layer chains in the state directory
    /// (`<state>/trees`) and start later builds from hard-link copies of them instead of
    /// unpacking (only with overlay snapshots in a user namespace; see `trees.rs`).
    pub tree_store: bool,
    /// Run stages that do not read each other at the same time (BuildKit does).
    pub parallel_stages: bool,
    /// Kaniko's VOLUME (`--compat=kaniko`): the volume's path is left out of every later
    /// snapshot, and a missing directory is created (0755, in no layer) when `volume_mkdir`.
    pub kaniko_volumes: bool,
    /// With `kaniko_volumes`: create missing volume directories (Kaniko's default; its
    /// `FF_KANIKO_VOLUME_SKIP_MKDIR` turns it off).
    pub volume_mkdir: bool,
    /// On success, leave the build directory (stage root file systems) to the caller
    /// ([`crate::BuildOutcome::leftover`]) instead of removing it before returning: removing
    /// tens of thousands of files can take longer than the build. Failed builds always
    /// remove it.
    pub detach_cleanup: bool,
    /// How often a running pull or push reports its bytes and rate (`None` or zero: never).
    pub progress_interval: Option<std::time::Duration>,
    /// The layer cache; `None` without `--cache`.
    pub cache: Option<CacheOptions>,
    /// `--push-retry`: attempts of the whole push after a failed one (Kaniko's meaning), on
    /// top of the registry client's per-request retries.
    pub push_retry: u32,
    /// Skip the up-front push-permission probe.
    pub skip_push_permission_check: bool,
}

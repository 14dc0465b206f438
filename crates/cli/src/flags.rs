//! Command-line flags. `kiln build` takes Kaniko's executor flags with Kaniko's names, defaults
//! and environment variables (../shared/KANIKO-COMPAT.md), so a pipeline can swap the image and
//! change nothing else. Boolean flags accept Go's `--flag`, `--flag=true` and `--flag=false`.

use clap::{ArgAction, Args, Parser, Subcommand};
use std::path::PathBuf;

/// Seconds, finite, 0 to 3600.
fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds from 0 to 3600")),
    }
}

/// Go's `strconv.ParseBool`, which Kaniko's flags use: 1, t, T, TRUE, true, True, 0, f, F,
/// FALSE, false, False.
pub fn parse_go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("{s:?} is not a boolean (use true or false)")),
    }
}

/// kiln: build container images from Dockerfiles, with no daemon and no privileges.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an image from a Dockerfile (Kaniko executor flags).
    Build(Box<BuildFlags>),
    /// Print kiln's version.
    Version,
    /// Pull an image into an OCI image layout directory.
    Pull(PullFlags),
    /// Push an OCI image layout directory to registries.
    Push(PushFlags),
    /// Fill a --cache-dir with base images (Kaniko's warmer).
    Warm(WarmFlags),
    /// The local layer cache in the state directory.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Inspect how kiln reads a Dockerfile.
    #[command(subcommand)]
    Debug(DebugCommand),
    /// Internal: removes a finished build's directory (run detached by `kiln build`).
    #[command(name = "__remove-tree", hide = true)]
    RemoveTree {
        /// `<state>/builds/<id>`.
        dir: PathBuf,
    },
}

impl BuildFlags {
    /// Moves a positional CONTEXT into `context`, so the rest of the program reads one field.
    pub fn take_positional_context(&mut self) {
        if let Some(c) = self.context_arg.take() {
            self.context = c;
        }
    }
}

impl Command {
    /// The logging flags of a command that takes them.
    pub fn log_flags(&self) -> Option<&LogFlags> {
        match self {
            Command::Build(b) => Some(&b.log),
            Command::Warm(w) => Some(&w.log),
            _ => None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// Print the parsed AST in BuildKit's `Node.Dump()` notation.
    Parse {
        /// The Dockerfile.
        file: PathBuf,
    },
    /// Print the resolved stages and expanded instructions.
    Plan {
        /// The Dockerfile.
        file: PathBuf,
        /// The stage to build.
        #[arg(long)]
        target: Option<String>,
        /// KEY=VALUE (or KEY to take it from the environment).
        #[arg(long = "build-arg")]
        build_args: Vec<String>,
        /// os/arch[/variant] of the image being built.
        #[arg(long = "custom-platform")]
        platform: Option<String>,
    },
}

/// Kaniko executor flags (cmd/executor/cmd/root.go of v1.24.0), plus kiln's own.
#[derive(Debug, Clone, Args)]
pub struct BuildFlags {
    /// Path to the Dockerfile: as given, then relative to the context.
    #[arg(short = 'f', long, alias = "file", default_value = "Dockerfile")]
    pub dockerfile: String,
    /// Build context: a directory, `dir://DIR`, `tar://FILE` (or `tar://stdin`),
    /// `git://REPO#REF#COMMIT` (Kaniko: fetched over https, or http with GIT_PULL_METHOD=http)
    /// or `https://HOST/REPO.git#REF:SUBDIR`.
    #[arg(short = 'c', long, default_value = "/workspace/")]
    pub context: String,
    /// The build context as an argument, as `docker build .` takes it: `kiln build .` is
    /// `kiln build --context .`.
    #[arg(value_name = "CONTEXT", conflicts_with = "context")]
    pub context_arg: Option<String>,
    /// Sub-directory of the context to use as the context.
    #[arg(long = "context-sub-path", default_value = "")]
    pub context_sub_path: String,
    /// GCS bucket holding the context (Kaniko legacy; not supported).
    #[arg(short = 'b', long, default_value = "", hide = true)]
    pub bucket: String,
    /// Image reference to push (repeatable).
    #[arg(short = 'd', long = "destination")]
    pub destinations: Vec<String>,
    /// `docker build -t`: refused with what to use instead (kiln keeps no local images, so
    /// a name given here could only be pushed, which -t never does).
    #[arg(short = 't', long = "tag", hide = true)]
    pub docker_tags: Vec<String>,
    /// `docker build --no-cache`: no layer cache at all, neither lookups nor stores (docker's
    /// still exports a cache); the same as kiln's default unless --cache=true.
    #[arg(long = "no-cache", hide = true)]
    pub no_cache: bool,
    /// Build only; do not push the image.
    #[arg(long = "no-push", env = "KANIKO_NO_PUSH", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub no_push: bool,
    /// Also write a docker-archive tarball (`docker load`-able) here.
    #[arg(long = "tar-path", alias = "tarPath", default_value = "")]
    pub tar_path: String,
    /// Also write an OCI image layout directory here.
    #[arg(long = "oci-layout-path", default_value = "")]
    pub oci_layout_path: String,
    /// Write the image digest to this file.
    #[arg(long = "digest-file", default_value = "")]
    pub digest_file: String,
    /// Write `repo@digest` lines to this file.
    #[arg(long = "image-name-with-digest-file", default_value = "")]
    pub image_name_with_digest_file: String,
    /// Write `repo:tag@digest` lines to this file.
    #[arg(long = "image-name-tag-with-digest-file", default_value = "")]
    pub image_name_tag_with_digest_file: String,
    /// KEY=VALUE build argument; bare KEY takes the value from the environment (repeatable).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The stage to build (name or index).
    #[arg(long, default_value = "")]
    pub target: String,
    /// key=value label added to the image (repeatable).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// key=value annotation added to the manifest (repeatable).
    #[arg(long = "annotation")]
    pub annotations: Vec<String>,
    /// os/arch[/variant] of the image (picks base images from indexes; no emulation).
    #[arg(
        long = "custom-platform",
        visible_alias = "platform",
        alias = "customPlatform",
        default_value = ""
    )]
    pub custom_platform: String,
    /// Media types of the image: `oci` or `docker` (default: follow the base image).
    #[arg(long = "image-format", default_value = "")]
    pub image_format: String,
    /// A build secret: id=ID[,src=FILE][,env=VAR] (repeatable).
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// An ssh-agent socket for `RUN --mount=type=ssh`: `default` or ID (the socket in
    /// $SSH_AUTH_SOCK), or ID=SOCKET (repeatable).
    #[arg(long = "ssh")]
    pub ssh: Vec<String>,

    /// Use the layer cache.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub cache: bool,
    /// Where cache layers go (default: `<destination repo>/cache`; `oci:/path` for a layout).
    #[arg(long = "cache-repo", default_value = "")]
    pub cache_repo: String,
    /// Local base-image cache filled by `kiln warm`.
    #[arg(long = "cache-dir", default_value = "/cache")]
    pub cache_dir: String,
    /// Maximum age of a cached layer.
    #[arg(long = "cache-ttl", default_value = "336h")]
    pub cache_ttl: String,
    /// Cache RUN layers.
    #[arg(long = "cache-run-layers", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub cache_run_layers: bool,
    /// Cache COPY layers.
    #[arg(long = "cache-copy-layers", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub cache_copy_layers: bool,
    /// Do not push cache layers.
    #[arg(long = "no-push-cache", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub no_push_cache: bool,
    /// Compress layers in memory to compute digests (kiln always streams; accepted for compatibility).
    #[arg(long = "compressed-caching", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub compressed_caching: bool,
    /// Layer compression: gzip or zstd.
    #[arg(long, default_value = "gzip")]
    pub compression: String,
    /// Compression level (-1: the compressor's default).
    #[arg(long = "compression-level", default_value_t = -1, allow_negative_numbers = true)]
    pub compression_level: i32,

    /// How changes are found: full (content), redo (metadata), time (mtime).
    #[arg(long = "snapshot-mode", alias = "snapshotMode", default_value = "full")]
    pub snapshot_mode: String,
    /// Take one snapshot at the end: a single layer on top of the base.
    #[arg(long = "single-snapshot", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub single_snapshot: bool,
    /// Run RUN steps on an overlay and take its upper directory as the change set instead of
    /// comparing the whole file tree (the layers are the same; the cost follows the change).
    /// Where overlayfs cannot be mounted (no user namespace, chroot or container isolation),
    /// and with --single-snapshot or --snapshot-mode=redo|time, kiln compares the tree as
    /// before. `--overlay-snapshots=false` always compares the tree.
    #[arg(long = "overlay-snapshots", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub overlay_snapshots: bool,
    /// Keep the unpacked file systems of base images and of the steps before a COPY of the
    /// context under --kiln-dir (`trees/`, the 12 most recently used) and start later builds
    /// on this machine from hard-link copies of them instead of unpacking the layers again.
    /// Used only where RUN steps run on an overlay (a user namespace); `kiln cache prune`
    /// removes them.
    #[arg(long = "cache-unpacked-trees", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub cache_unpacked_trees: bool,
    /// Build stages that do not read each other (no FROM or --from between them) at the
    /// same time, as BuildKit does; one stage's output is shown at a time (the next one's,
    /// from its start, when the shown one ends). `--parallel-stages=false` builds one stage at
    /// a time.
    #[arg(long = "parallel-stages", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub parallel_stages: bool,
    /// Seconds between progress lines of a running pull or push (bytes so far and rate); 0
    /// turns them off.
    #[arg(long = "progress-interval", default_value = "5", value_parser = parse_interval)]
    pub progress_interval: f64,
    /// Whose semantics where BuildKit and Kaniko differ: `buildkit` (default for `kiln build`)
    /// or `kaniko` (the default when invoked as `executor`). Today that is VOLUME: Kaniko
    /// creates a missing volume directory (unless FF_KANIKO_VOLUME_SKIP_MKDIR is set) and
    /// leaves the volume's path out of every later snapshot; BuildKit does neither.
    #[arg(long = "compat", default_value = "buildkit", value_parser = ["buildkit", "kaniko"])]
    pub compat: String,
    /// Kaniko's experimental RUN snapshotter (kiln's differ already works this way).
    #[arg(long = "use-new-run", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub use_new_run: bool,
    /// Build only the stages the target needs (kiln's default, as BuildKit). Kaniko's default
    /// is false: `--skip-unused-stages=false` builds every stage up to the target, and a
    /// failing one (a test stage used as a gate) fails the build.
    #[arg(long = "skip-unused-stages", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub skip_unused_stages: Option<bool>,
    /// Zero timestamps in layers, config and history.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub reproducible: bool,
    /// Leave nothing of the build on disk when kiln exits (Kaniko: several builds in one
    /// container): the stage root file systems are removed before exit (not by a background
    /// process) and no unpacked trees are stored or used. Blobs and the layer cache stay.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub cleanup: bool,
    /// Extra paths to exclude from snapshots (repeatable).
    #[arg(long = "ignore-path")]
    pub ignore_paths: Vec<String>,
    /// Exclude /var/run from snapshots. Kaniko's default (true) protects the runtime files of
    /// the container it builds in; kiln builds in a private rootfs, so /var/run is kept
    /// (as docker build does) unless this is given explicitly.
    #[arg(long = "ignore-var-run", alias = "whitelist-var-run", num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub ignore_var_run: Option<bool>,
    /// Kaniko's work directory [env: KANIKO_DIR]: kiln keeps its state there when neither
    /// --kiln-dir nor KILN_DIR says otherwise (order: --kiln-dir, --kaniko-dir, KILN_DIR,
    /// KANIKO_DIR).
    #[arg(long = "kaniko-dir")]
    pub kaniko_dir: Option<PathBuf>,
    /// kiln's state directory (rootfs, blobs, cache) [env: KILN_DIR]. Default:
    /// $XDG_CACHE_HOME/kiln, or /kiln in the executor image.
    #[arg(long = "kiln-dir")]
    pub kiln_dir: Option<PathBuf>,
    /// Allow building on the live root file system outside a detected container.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub force: bool,
    /// Emit layers even for metadata-only instructions.
    #[arg(long = "force-build-metadata", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub force_build_metadata: bool,
    /// RUN isolation: userns, chroot or container (default: detect).
    #[arg(long, default_value = "")]
    pub isolation: String,
    /// Git context options, comma-separated key=value: branch=NAME (replaces the context's
    /// ref), single-branch=BOOL (accepted; kiln always fetches just the one ref),
    /// recurse-submodules=BOOL, insecure-skip-tls=BOOL. Credentials come from GIT_TOKEN or
    /// GIT_USERNAME/GIT_PASSWORD; the `git` binary must be in PATH.
    #[arg(long, default_value = "")]
    pub git: String,

    #[command(flatten)]
    pub registry: RegistryFlags,

    #[command(flatten)]
    pub log: LogFlags,
}

/// Kaniko's logging flags, shared by `build` and `warm` (its executor and warmer take both).
#[derive(Debug, Clone, Args)]
pub struct LogFlags {
    /// Log level: trace, debug, info, warn, error, fatal, panic.
    #[arg(short = 'v', long, default_value = "info")]
    pub verbosity: String,
    /// Log format: text, color or json (default: color at a terminal, else text; `color`
    /// forces colours, as Kaniko's default does).
    #[arg(long = "log-format")]
    pub log_format: Option<String>,
    /// Timestamps in log lines.
    #[arg(long = "log-timestamp", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub log_timestamp: bool,
}

/// Registry transport flags, shared by `build`, `pull` and `push`.
#[derive(Debug, Clone, Args)]
pub struct RegistryFlags {
    /// Push over plain HTTP.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub insecure: bool,
    /// Pull over plain HTTP.
    #[arg(long = "insecure-pull", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub insecure_pull: bool,
    /// Plain HTTP for these registries (repeatable).
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Push without TLS verification.
    #[arg(long = "skip-tls-verify", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub skip_tls_verify: bool,
    /// Pull without TLS verification.
    #[arg(long = "skip-tls-verify-pull", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub skip_tls_verify_pull: bool,
    /// No TLS verification for these registries (repeatable).
    #[arg(long = "skip-tls-verify-registry")]
    pub skip_tls_verify_registries: Vec<String>,
    /// registry=/path/ca.crt (repeatable).
    #[arg(long = "registry-certificate")]
    pub registry_certificates: Vec<String>,
    /// registry=/path/cert,/path/key for mutual TLS (repeatable).
    #[arg(long = "registry-client-cert")]
    pub registry_client_certs: Vec<String>,
    /// Mirror for docker.io, tried in order (repeatable).
    #[arg(
        long = "registry-mirror",
        env = "KANIKO_REGISTRY_MIRROR",
        value_delimiter = ';'
    )]
    pub registry_mirrors: Vec<String>,
    /// orig=remap[;orig2=remap2] (repeatable).
    #[arg(long = "registry-map", env = "KANIKO_REGISTRY_MAP")]
    pub registry_maps: Vec<String>,
    /// Fail instead of falling back to the original registry after mirrors.
    #[arg(long = "skip-default-registry-fallback", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub skip_default_registry_fallback: bool,
    /// Attempts of the whole push after a failed one (Kaniko's meaning), backoff from 1 s;
    /// each request is also retried (3 times) on 408/429/5xx and connection errors.
    #[arg(long = "push-retry", default_value_t = 0)]
    pub push_retry: u32,
    /// Treat immutable-tag errors as success.
    #[arg(long = "push-ignore-immutable-tag-errors", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub push_ignore_immutable_tag_errors: bool,
    /// Skip the up-front push-permission check.
    #[arg(long = "skip-push-permission-check", num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub skip_push_permission_check: bool,
    /// Base image download retries.
    #[arg(long = "image-download-retry", default_value_t = 0)]
    pub image_download_retry: u32,
    /// Base image extraction retries.
    #[arg(long = "image-fs-extract-retry", default_value_t = 0)]
    pub image_fs_extract_retry: u32,
}

/// `kiln pull REF --oci-layout-path DIR`
#[derive(Debug, Clone, Args)]
pub struct PullFlags {
    /// The image reference.
    pub reference: String,
    /// The OCI layout directory to write (created, or added to).
    #[arg(long = "oci-layout-path")]
    pub oci_layout_path: PathBuf,
    /// os/arch[/variant] to pick from an index (default: the host's).
    #[arg(long = "custom-platform", alias = "customPlatform")]
    pub custom_platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// `kiln push --from DIR|FILE --destination REF…`
#[derive(Debug, Clone, Args)]
pub struct PushFlags {
    /// An OCI layout directory (its only manifest, or the one named by --tag-in-layout).
    #[arg(long)]
    pub from: PathBuf,
    /// The manifest's ref name in the layout, when it holds several.
    #[arg(long = "tag-in-layout")]
    pub tag_in_layout: Option<String>,
    /// Where to push (repeatable).
    #[arg(short = 'd', long = "destination", required = true)]
    pub destinations: Vec<String>,
    /// Write the pushed digest here.
    #[arg(long = "digest-file")]
    pub digest_file: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

/// Kaniko warmer flags (cmd/warmer/cmd/root.go). Note the letters: `-d` is `--dockerfile` and
/// `-c` is `--cache-dir` here, as in Kaniko's warmer.
#[derive(Debug, Clone, Args)]
pub struct WarmFlags {
    /// Image to cache (repeatable).
    #[arg(short = 'i', long = "image")]
    pub images: Vec<String>,
    /// Cache every stage's base image of this Dockerfile.
    #[arg(short = 'd', long)]
    pub dockerfile: Option<PathBuf>,
    /// KEY=VALUE for `FROM ${KEY}` in --dockerfile (repeatable).
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// The cache directory.
    #[arg(short = 'c', long = "cache-dir", default_value = "/cache")]
    pub cache_dir: PathBuf,
    /// Entry lifetime.
    #[arg(long = "cache-ttl", default_value = "336h")]
    pub cache_ttl: String,
    /// Overwrite fresh entries.
    #[arg(short = 'f', long, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false", action = ArgAction::Set, value_parser = parse_go_bool)]
    pub force: bool,
    /// os/arch[/variant] to pick from indexes.
    #[arg(long = "customPlatform", alias = "custom-platform")]
    pub custom_platform: Option<String>,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub registry: RegistryFlags,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List the local cache's entries.
    Ls {
        /// kiln's state directory.
        #[arg(long = "kiln-dir", env = "KILN_DIR")]
        kiln_dir: Option<PathBuf>,
    },
    /// Remove the least recently used entries until the cache fits the size.
    Prune {
        /// kiln's state directory.
        #[arg(long = "kiln-dir", env = "KILN_DIR")]
        kiln_dir: Option<PathBuf>,
        /// Largest size to keep, e.g. 5GB or 500MiB.
        #[arg(long = "max-size")]
        max_size: String,
    },
}

//! The build loop: plan → stages → instructions → layers → image → outputs.

use crate::cache::{self, BaseIdentity, BaseImageCache, CacheKey, KeyChain, LayerCache};
use crate::context::Context;
use crate::error::BuildError;
use crate::image::{self, Assembled, LayerRecord};
use crate::instructions::{add, chmod::Chmod, copy, metadata, run, workdir};
use crate::options::BuildOptions;
use crate::output::{Event, Output};
use crate::snapshot::{self, LayerSettings};
use crate::trees::{self, TreeStore};
use kiln_dockerfile::{
    parse_dockerfile, plan, Base, FromRef, Healthcheck, Instruction, Plan, PlannedStage, Spanned,
    StageEnv,
};
use kiln_oci::config::{self as cfg, History, ImageConfig};
use kiln_oci::media::ImageFormat;
use kiln_oci::platform::Platform;
use kiln_oci::reference::Reference;
use kiln_oci::{BlobStore, Digest};
use kiln_rootfs::{ChangeSet, Index, Ownership, Root};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// What a successful build produced.
#[derive(Debug)]
pub struct BuildOutcome {
    /// The image (manifest, config, layers in the blob store).
    pub image: Assembled,
    /// References pushed, with the manifest digest.
    pub pushed: Vec<(String, Digest)>,
    /// With `BuildOptions::detach_cleanup`: the build directory, left for the caller to
    /// remove (e.g. in another process, so the build returns without waiting for it).
    pub leftover: Option<PathBuf>,
}

/// Finished stages by index, shared with stages running at the same time.
type Results = HashMap<usize, Arc<StageResult>>;

/// A finished stage.
struct StageResult {
    /// Whether `root` holds all of `layers` (a stage nothing reads by `--from` is not filled).
    filled: bool,
    /// The cache key of the stage's last step (with `--cache`).
    final_key: Option<CacheKey>,
    root: PathBuf,
    config: ImageConfig,
    layers: Vec<LayerRecord>,
    format: ImageFormat,
    /// The ARG/ENV state at the end, inherited by a stage built FROM this one.
    env: StageEnv,
}

/// The layer cache's state for one stage.
#[derive(Debug, Default)]
struct StageCache {
    /// The stage's name for `LayerCache::explain`.
    name: String,
    /// Context source digests, computed once for the look-ahead pass and the steps.
    memo: cache::key::SourceMemo,
    /// The first change the cache's records show in this stage, told at the first miss.
    pending: Option<Vec<String>>,
    /// A step of this stage was a cache hit.
    hit: bool,
    /// The first miss was explained (once per stage).
    told: bool,
}

/// What one instruction did to the file system.
enum FsEffect {
    /// Nothing: a metadata-only step.
    None,
    /// Exactly these paths (relative, symlink-free) were written.
    Paths(Vec<PathBuf>),
    /// Unknown (RUN): the snapshotter must compare the tree with the stage index.
    Unknown,
    /// A RUN on an overlay: its changes are the upper directory (no walk); the stage rootfs
    /// is still the lower one until they are applied.
    Overlay(PathBuf),
}

/// The outcome of dispatching one instruction.
struct StepOutcome {
    fs: FsEffect,
    created_by: String,
}

/// Removes the build's working directory when the build ends, however it ends.
struct WorkDir(PathBuf);

impl WorkDir {
    /// Leaves the directory in place; returns its path.
    fn keep(mut self) -> PathBuf {
        std::mem::take(&mut self.0)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() && self.0.exists() {
            if let Err(e) = remove_tree(&self.0) {
                tracing::warn!(path = %self.0.display(), error = %e, "could not remove build directory");
            }
        }
    }
}

/// Removes the `stage-*` directories of a build directory on a thread, joined on drop.
struct BackgroundRemoval(Option<std::thread::JoinHandle<()>>);

impl BackgroundRemoval {
    fn start(work: &Path) -> BackgroundRemoval {
        let work = work.to_path_buf();
        BackgroundRemoval(Some(std::thread::spawn(move || {
            let Ok(entries) = fs::read_dir(&work) else {
                return;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("stage-") {
                    // A failure is left to WorkDir's removal, which warns.
                    let _ = remove_tree(&e.path());
                }
            }
        })))
    }
}

impl Drop for BackgroundRemoval {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

/// Removes a tree kiln created, making directories writable first (a layer may have made them
/// read-only, and an unprivileged owner could not otherwise delete their entries).
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in walkdir::WalkDir::new(path)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            let _ = fs::set_permissions(entry.path(), fs::Permissions::from_mode(0o700));
        }
    }
    fs::remove_dir_all(path)
}

/// Removes build directories left by kiln processes that no longer exist (killed with
/// SIGKILL, or a machine that went down): they may hold stage file systems and secrets.
fn sweep_stale_builds(builds: &Path) {
    let Ok(rd) = fs::read_dir(builds) else { return };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::info!(path = %e.path().display(), "removing a stale build directory");
            let _ = remove_tree(&e.path());
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), proleptic Gregorian, UTC.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A base image pull running in the background, and how long it took.
type PullThread = std::thread::JoinHandle<(
    Result<kiln_registry::PulledImage, kiln_registry::RegistryError>,
    Duration,
)>;

/// A base image pull started ahead of its stages and shared by every stage on that base, so
/// two stages that run at the same time on one base pull it once.
struct PrefetchedBase {
    thread: std::sync::Mutex<Option<PullThread>>,
    /// The pull's result once a stage has waited for it: `None` when it failed (each stage
    /// then pulls again itself, so the error names that stage).
    result: std::sync::OnceLock<Option<(kiln_registry::PulledImage, Duration)>>,
}

impl PrefetchedBase {
    /// Waits for the pull (the first caller joins the thread; the others wait for that).
    fn wait(&self) -> Option<(kiln_registry::PulledImage, Duration)> {
        self.result
            .get_or_init(|| {
                let thread = self.thread.lock().ok()?.take()?;
                match thread.join() {
                    Ok((Ok(pulled), took)) => Some((pulled, took)),
                    _ => None,
                }
            })
            .clone()
    }
}

/// Distinct base images pulled ahead of their stage.
const PREFETCH_BASES: usize = 4;

/// Everything shared by the stages of one build.
struct Builder<'a> {
    opts: &'a BuildOptions,
    out: &'a dyn Output,
    file: String,
    plan: Plan,
    platform: Platform,
    store: BlobStore,
    work: PathBuf,
    context: Arc<Context>,
    client: Option<Arc<kiln_registry::Client>>,
    /// Base images of the stages, pulled in the background from the start of the build so a
    /// later stage's pull overlaps the earlier stages' steps (keyed by name and platform).
    prefetched: HashMap<(String, String), Arc<PrefetchedBase>>,
    created: String,
    settings: LayerSettings,
    privileged: bool,
    ignore: Vec<PathBuf>,
    /// Where base layers came from, so a push can mount them instead of uploading.
    sources: HashMap<Digest, Reference>,
    /// The layer cache, with `--cache`.
    cache: Option<Arc<dyn LayerCache>>,
    /// `--cache-dir` base images, with `--cache` when the directory exists.
    base_cache: Option<Arc<BaseImageCache>>,
    /// Root file systems of images named by `COPY --from=<image>` / `--mount=from=<image>`,
    /// pulled and unpacked once per build.
    image_roots: HashMap<String, PathBuf>,
    /// RUN steps run on an overlay whose upper directory is their change set (no walk of the
    /// rootfs); turned off for the rest of the build the first time overlayfs cannot be used.
    overlay: bool,
    /// Cache stores running in the background; joined before the image is written out.
    stores: Vec<std::thread::JoinHandle<Result<(), cache::CacheError>>>,
    /// The store of unpacked trees (`None` until the first stage asks; `Some(None)` when it
    /// is off for this build: see [`Builder::tree_store`]).
    trees: Option<Option<TreeStore>>,
    /// Root file systems that share inodes with the tree store.
    linked_roots: std::collections::HashSet<PathBuf>,
    /// Prefix of the build-directory names this builder makes (a stage running alongside
    /// others has its own: see [`Builder::fork`]).
    tag: String,
}

/// Builds the image `opts` describes and writes it to every requested output.
pub fn build(opts: &BuildOptions, out: &dyn Output) -> Result<BuildOutcome, BuildError> {
    let started = Instant::now();
    let file = opts.dockerfile.display().to_string();
    let src = fs::read(&opts.dockerfile).map_err(|source| BuildError::Io {
        what: "reading the Dockerfile",
        path: opts.dockerfile.clone(),
        source,
    })?;
    let text = String::from_utf8_lossy(&src).into_owned();
    let render = |e: kiln_dockerfile::Error| BuildError::Dockerfile {
        message: e.render(&file, &text),
    };
    let df = parse_dockerfile(&src).map_err(render)?;
    for (line, w) in &df.warnings {
        out.event(Event::Warning(&format!("{file}:{line}: {w}")));
    }
    let plan_opts = crate::plan_options(
        opts.target.clone(),
        opts.build_args.clone(),
        opts.platform.as_deref(),
    )?;
    let platform: Platform =
        plan_opts
            .target_platform
            .parse()
            .map_err(|e: kiln_oci::platform::PlatformError| BuildError::Option {
                flag: "--custom-platform",
                message: e.to_string(),
            })?;
    let plan = if opts.skip_unused_stages {
        plan(&df, &plan_opts)
    } else {
        kiln_dockerfile::plan_through_target(&df, &plan_opts)
    }
    .map_err(render)?;
    for (i, name) in plan.stage_names.iter().enumerate().take(plan.target) {
        if plan.stage(i).is_none() {
            let name = name.as_deref().map_or(String::new(), |n| format!(" ({n})"));
            out.event(Event::Info(&format!(
                "skipping stage {i}{name}: the target does not use it (--skip-unused-stages=false builds it)"
            )));
        }
    }
    for a in &plan.unused_build_args {
        out.event(Event::Warning(&format!(
            "build argument {a} was given but no ARG in the stages built declares it"
        )));
    }
    if opts.image_format == Some(ImageFormat::Docker) && !opts.annotations.is_empty() {
        return Err(BuildError::Option {
            flag: "--annotation",
            message: "Docker v2s2 manifests have no annotations; drop --image-format=docker".into(),
        });
    }
    let store = BlobStore::open(&opts.state_dir)?;
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let work = opts
        .state_dir
        .join("builds")
        .join(format!("{}-{nanos}", std::process::id()));
    sweep_stale_builds(&opts.state_dir.join("builds"));
    // 0700: a RUN's scratch directory below it may hold a mounted secret.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&work)
        .map_err(|source| BuildError::Io {
            what: "creating the build directory",
            path: work.clone(),
            source,
        })?;
    let cleanup = WorkDir(work.clone());
    let context = Context::open(&opts.context, &opts.dockerfile)?;
    let created = if opts.reproducible {
        "1970-01-01T00:00:00Z".to_string()
    } else {
        rfc3339(SystemTime::now())
    };
    let mut b = Builder {
        opts,
        out,
        file,
        plan,
        platform,
        store,
        work,
        context: Arc::new(context),
        client: None,
        prefetched: HashMap::new(),
        created,
        settings: LayerSettings {
            compression: opts.compression,
            reproducible: opts.reproducible,
        },
        privileged: can_chown(),
        ignore: snapshot::ignore_list(opts),
        sources: HashMap::new(),
        cache: None,
        base_cache: None,
        image_roots: HashMap::new(),
        // The overlay converter compares like the `full`-mode walk (content, not mtimes); the
        // redo and time modes keep their own change rules by walking.
        overlay: opts.overlay_snapshots && opts.snapshot_mode == kiln_rootfs::SnapshotMode::Full,
        stores: Vec::new(),
        trees: None,
        linked_roots: std::collections::HashSet::new(),
        tag: String::new(),
    };
    b.open_cache()?;
    if !b.privileged {
        out.event(Event::Warning(
            "only one user id is available (no /etc/subuid range for this user): files owned by other users in base images become root's",
        ));
    }
    b.check_push_permission()?;

    let stages = b.plan.stages.clone();
    b.prefetch_bases(&stages);
    let deps = stage_deps(&stages);
    let mut results: Results = HashMap::new();
    if opts.parallel_stages {
        // Stages run as soon as the stages they read are done: independent ones side by side
        // (BuildKit's default), each on a builder of its own.
        b.run_parallel(&stages, &deps, &mut results)?;
    } else {
        for (p, stage) in stages.iter().enumerate() {
            let r = b.run_stage(stage, p + 1, stages.len(), &results)?;
            results.insert(stage.index, Arc::new(r));
        }
    }
    let target = b.plan.target;
    let final_stage = results
        .remove(&target)
        .and_then(|r| Arc::try_unwrap(r).ok())
        .ok_or_else(|| BuildError::Unsupported {
            what: format!("target stage {target} was not built"),
            line: None,
        })?;
    let mut outcome = b.finish(final_stage, started)?;
    if opts.detach_cleanup {
        outcome.leftover = Some(cleanup.keep());
    }
    Ok(outcome)
}

/// Whether kiln may give files any owner: root with more than one id mapped (real root, or a
/// user namespace with a subordinate id range). Root of a single-id namespace may not.
fn can_chown() -> bool {
    let root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mapped: u64 = std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| {
            m.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    root && mapped > 1
}

/// The stages each planned stage must wait for: its `deps` (FROM <stage>, `--from`), and every
/// earlier stage when a `--from` of it is known only when it runs (a `$VAR` an inherited ENV
/// may set) or when the Dockerfile sets ONBUILD triggers that name a stage (they run in
/// whichever stage is built FROM the one that set them).
fn stage_deps(stages: &[PlannedStage]) -> Vec<Vec<usize>> {
    let dynamic = |from: &Option<String>| from.as_deref().is_some_and(|f| f.contains('$'));
    let onbuild_from = stages.iter().any(|st| {
        st.instructions.iter().any(
            |i| matches!(&i.value, Instruction::Onbuild(t) if t.to_lowercase().contains("from")),
        )
    });
    stages
        .iter()
        .map(|st| {
            let unknown = onbuild_from
                || st.instructions.iter().any(|i| match &i.value {
                    Instruction::Copy(a) | Instruction::Add(a) => dynamic(&a.from),
                    Instruction::Run(r) => r.mounts.iter().any(|m| dynamic(&m.from)),
                    _ => false,
                });
            if unknown {
                stages
                    .iter()
                    .map(|o| o.index)
                    .filter(|&o| o < st.index)
                    .collect()
            } else {
                st.deps.clone()
            }
        })
        .collect()
}

/// One event, owned: what a stage said while another stage was shown.
enum Recorded {
    Step(usize, usize, usize, usize, String),
    StepDone(Duration, Option<u64>),
    RunOutput(bool, Vec<u8>),
    Warning(String),
    Info(String),
}

/// Which stage's output is shown ([`Builder::run_parallel`]): stages in the order they
/// started, one at a time.
struct Shown<'r, 'o> {
    recorders: &'r [Recorder<'o>],
    out: &'o dyn Output,
    /// Started stages (positions), in order; `next` indexes the one shown now.
    order: Vec<usize>,
    next: usize,
    finished: Vec<bool>,
    held_back: Vec<bool>,
}

impl<'r, 'o> Shown<'r, 'o> {
    fn new(recorders: &'r [Recorder<'o>], out: &'o dyn Output) -> Self {
        let n = recorders.len();
        Shown {
            recorders,
            out,
            order: Vec::new(),
            next: 0,
            finished: vec![false; n],
            held_back: vec![false; n],
        }
    }

    /// Stage `p` started: held back when an earlier stage is still shown, which a line says
    /// now (its output comes when its turn does).
    fn started(&mut self, p: usize) {
        self.held_back[p] = self.next < self.order.len();
        if self.held_back[p] {
            let total = self.recorders.len();
            self.out.event(Event::Info(&format!(
                "[stage {}/{total}] started alongside stage {}/{total}; its output follows when that one ends",
                p + 1,
                self.order[self.next] + 1
            )));
        }
        self.order.push(p);
    }

    fn ended(&mut self, p: usize) {
        self.finished[p] = true;
    }

    /// Shows the stage whose turn it is: live, after what it said so far (with a line saying
    /// it ran alongside others when it was held back); the next one once it has ended.
    fn advance(&mut self) {
        let total = self.recorders.len();
        while self.next < self.order.len() {
            let p = self.order[self.next];
            if self.held_back[p] {
                self.held_back[p] = false;
                self.out.event(Event::Info(&format!(
                    "[stage {}/{total}] ran alongside other stages; its output:",
                    p + 1
                )));
            }
            self.recorders[p].go_live();
            if !self.finished[p] {
                break;
            }
            self.next += 1;
        }
    }
}

/// The output of one stage running with others ([`Builder::run_parallel`]): kept while
/// another stage is shown, passed straight on once this one is (`go_live` first tells what
/// was kept).
/// One stage at a time is live, so no two stages' lines interleave.
struct Recorder<'o> {
    out: &'o dyn Output,
    state: std::sync::Mutex<(bool, Vec<Recorded>)>,
}

impl Output for Recorder<'_> {
    fn event(&self, e: Event<'_>) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if st.0 {
            // Under the lock: nothing kept can come after this.
            self.out.event(e);
            return;
        }
        let r = match e {
            Event::Step {
                stage,
                stages,
                step,
                steps,
                text,
            } => Recorded::Step(stage, stages, step, steps, text.to_string()),
            Event::StepDone {
                elapsed,
                layer_size,
            } => Recorded::StepDone(elapsed, layer_size),
            Event::RunOutput { stderr, bytes } => Recorded::RunOutput(stderr, bytes.to_vec()),
            Event::Warning(w) => Recorded::Warning(w.to_string()),
            Event::Info(i) => Recorded::Info(i.to_string()),
            // Only the build's end says this, never a stage.
            Event::Summary { .. } => return,
        };
        st.1.push(r);
    }
}

impl<'o> Recorder<'o> {
    fn new(out: &'o dyn Output, live: bool) -> Recorder<'o> {
        Recorder {
            out,
            state: std::sync::Mutex::new((live, Vec::new())),
        }
    }

    /// Tells what was kept, then passes everything on as it comes.
    fn go_live(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.0 {
            return;
        }
        for r in std::mem::take(&mut st.1) {
            self.out.event(match &r {
                Recorded::Step(stage, stages, step, steps, text) => Event::Step {
                    stage: *stage,
                    stages: *stages,
                    step: *step,
                    steps: *steps,
                    text,
                },
                Recorded::StepDone(elapsed, layer_size) => Event::StepDone {
                    elapsed: *elapsed,
                    layer_size: *layer_size,
                },
                Recorded::RunOutput(stderr, bytes) => Event::RunOutput {
                    stderr: *stderr,
                    bytes,
                },
                Recorded::Warning(w) => Event::Warning(w),
                Recorded::Info(i) => Event::Info(i),
            });
        }
        st.0 = true;
    }
}

impl<'a> Builder<'a> {
    /// Runs `stages` with at most one per CPU at a time, each as soon as the stages it waits
    /// for (`deps`, by position) are done, on a builder of its own ([`Builder::fork`]) whose
    /// state is merged back when it ends. One stage's output is shown at a time, in the order
    /// the stages started: a stage that starts while others still run keeps its output until
    /// the stages before it end, then shows it (under a line saying so) and the rest as it
    /// comes. After a stage fails no new stage starts; the running ones run to their end and
    /// the first error is returned.
    fn run_parallel(
        &mut self,
        stages: &[PlannedStage],
        deps: &[Vec<usize>],
        results: &mut Results,
    ) -> Result<(), BuildError> {
        // Decided once for every fork.
        let _ = self.tree_store();
        let _ = self.overlay_usable();
        let out = self.out;
        let total = stages.len();
        let cap = std::thread::available_parallelism().map_or(2, |n| n.get());
        let recorders: Vec<Recorder> = (0..total).map(|_| Recorder::new(out, false)).collect();
        // Stages whose thread still runs (a failing one says so only if others do).
        let live = std::sync::atomic::AtomicUsize::new(0);
        let outcome = std::thread::scope(|s| -> Result<(), BuildError> {
            let (tx, rx) = std::sync::mpsc::channel();
            let mut started = vec![false; total];
            let mut shown = Shown::new(&recorders, out);
            let mut running = 0;
            let mut first_err: Option<BuildError> = None;
            loop {
                shown.advance();
                if first_err.is_none() {
                    for p in 0..total {
                        if running >= cap {
                            break;
                        }
                        let ready = deps[p].iter().all(|d| results.contains_key(d));
                        if started[p] || !ready {
                            continue;
                        }
                        started[p] = true;
                        running += 1;
                        shown.started(p);
                        let snapshot = results.clone();
                        let mut f = self.fork(&stages[p], &recorders[p]);
                        let tx = tx.clone();
                        let live = &live;
                        live.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        s.spawn(move || {
                            let run = std::panic::AssertUnwindSafe(|| {
                                f.run_stage(&stages[p], p + 1, total, &snapshot)
                            });
                            let r = std::panic::catch_unwind(run).unwrap_or_else(|_| {
                                Err(BuildError::Unsupported {
                                    what: format!("internal error: stage {} panicked", p + 1),
                                    line: None,
                                })
                            });
                            let others = live.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) > 1;
                            if let (Err(e), true) = (&r, others) {
                                // Said now, not when its output is shown (alone, the build's
                                // error says it at once).
                                out.event(Event::Warning(&format!(
                                    "stage {}/{total} failed: {e}; waiting for the stages running alongside it",
                                    p + 1
                                )));
                            }
                            let _ = tx.send((p, f, r));
                        });
                    }
                }
                shown.advance();
                if running == 0 {
                    break;
                }
                // Wait for one stage to end, then take every other that has.
                let Ok(first) = rx.recv() else {
                    break;
                };
                let mut ended = vec![first];
                ended.extend(rx.try_iter());
                for (p, f, r) in ended {
                    running -= 1;
                    shown.ended(p);
                    self.merge(f);
                    match r {
                        Ok(r) => {
                            results.insert(stages[p].index, Arc::new(r));
                        }
                        Err(e) if first_err.is_none() => first_err = Some(e),
                        Err(_) => {}
                    }
                }
            }
            match first_err {
                Some(e) => Err(e),
                None => Ok(()),
            }
        });
        for rec in &recorders {
            rec.go_live();
        }
        outcome
    }

    /// A builder for `stage` running alongside others, telling `out`: the shared parts are
    /// shared (options, blob store, registry client, caches, decisions), the per-build maps
    /// start empty and are merged back by [`Builder::merge`]; it names its build-directory
    /// entries apart.
    fn fork<'w>(&mut self, stage: &PlannedStage, out: &'w dyn Output) -> Builder<'w>
    where
        'a: 'w,
    {
        // The stage's own base pull, if it was started ahead.
        let mut prefetched = HashMap::new();
        if let Base::Image(name) = &stage.base {
            let platform = stage
                .platform
                .as_ref()
                .and_then(|p| p.parse::<Platform>().ok())
                .unwrap_or_else(|| self.platform.clone());
            let key = (name.clone(), platform.to_string());
            if let Some(h) = self.prefetched.get(&key) {
                prefetched.insert(key, Arc::clone(h));
            }
        }
        Builder {
            opts: self.opts,
            out,
            file: self.file.clone(),
            plan: self.plan.clone(),
            platform: self.platform.clone(),
            store: self.store.clone(),
            work: self.work.clone(),
            context: Arc::clone(&self.context),
            client: Some(Arc::clone(self.client())),
            prefetched,
            created: self.created.clone(),
            settings: self.settings,
            privileged: self.privileged,
            ignore: self.ignore.clone(),
            sources: HashMap::new(),
            cache: self.cache.clone(),
            base_cache: self.base_cache.clone(),
            image_roots: self.image_roots.clone(),
            overlay: self.overlay,
            stores: Vec::new(),
            trees: self.trees.clone(),
            linked_roots: std::collections::HashSet::new(),
            tag: format!("{}s{}-", self.tag, stage.index),
        }
    }

    /// Takes back what a forked builder learned.
    fn merge(&mut self, f: Builder<'_>) {
        self.sources.extend(f.sources);
        for (image, dir) in f.image_roots {
            self.image_roots.entry(image).or_insert(dir);
        }
        self.stores.extend(f.stores);
        self.linked_roots.extend(f.linked_roots);
        // A fork that found the overlay unusable turned it (and the tree store) off.
        self.overlay &= f.overlay;
        if matches!(f.trees, Some(None)) {
            self.trees = Some(None);
        }
    }

    fn client(&mut self) -> &Arc<kiln_registry::Client> {
        let opts = self.opts;
        self.client.get_or_insert_with(|| {
            Arc::new(kiln_registry::Client::new(
                opts.registry.clone(),
                opts.credentials.clone(),
            ))
        })
    }

    /// Starts pulling the registry base images of `stages` (at most [`PREFETCH_BASES`]
    /// distinct ones) on background threads. A stage then takes its pull's result, or pulls
    /// again itself if the prefetch failed, so errors are reported where the stage is.
    /// Not with `--cache-dir` base images, which may make the pull unnecessary.
    fn prefetch_bases(&mut self, stages: &[PlannedStage]) {
        if self.base_cache.is_some() {
            return;
        }
        for stage in stages {
            let Base::Image(name) = &stage.base else {
                continue;
            };
            let Ok(reference) = name.parse::<Reference>() else {
                continue;
            };
            let platform = match &stage.platform {
                Some(p) => match p.parse::<Platform>() {
                    Ok(p) => p,
                    Err(_) => continue,
                },
                None => self.platform.clone(),
            };
            let key = (name.clone(), platform.to_string());
            if self.prefetched.contains_key(&key) || self.prefetched.len() >= PREFETCH_BASES {
                continue;
            }
            let client = Arc::clone(self.client());
            let store = self.store.clone();
            let handle = std::thread::spawn(move || {
                let t0 = Instant::now();
                let pulled = client.pull_image(&reference, &platform, &store);
                (pulled, t0.elapsed())
            });
            self.prefetched.insert(
                key,
                Arc::new(PrefetchedBase {
                    thread: std::sync::Mutex::new(Some(handle)),
                    result: std::sync::OnceLock::new(),
                }),
            );
        }
    }

    fn parse_ref(&self, s: &str) -> Result<Reference, BuildError> {
        s.parse::<Reference>().map_err(|e| BuildError::Reference {
            reference: s.to_string(),
            message: e.to_string(),
        })
    }

    /// Kaniko's up-front probe: a denied push is found before the build spends its time.
    fn check_push_permission(&mut self) -> Result<(), BuildError> {
        if !self.opts.push || self.opts.skip_push_permission_check {
            return Ok(());
        }
        let refs = self
            .opts
            .destinations
            .iter()
            .map(|d| self.parse_ref(d))
            .collect::<Result<Vec<_>, _>>()?;
        for r in refs {
            self.client().check_push_permission(&r)?;
        }
        Ok(())
    }

    /// An error of the stage's FROM line (its base, its platform, its base's ONBUILD triggers).
    fn stage_line_error(
        &self,
        stage: &PlannedStage,
        instruction: &str,
        message: String,
    ) -> BuildError {
        BuildError::Step {
            file: self.file.clone(),
            line: stage.from.span.start_line,
            instruction: instruction.into(),
            message,
        }
    }

    /// A `--from=NAME` that is no stage is an image (BuildKit's rule); when it is a bare word
    /// and pulling it failed, the likelier story is a misspelt stage: say which stages exist.
    fn pull_for_from_error(
        &self,
        ins: &Spanned<Instruction>,
        from: &str,
        e: BuildError,
    ) -> BuildError {
        let names: Vec<&str> = self
            .plan
            .stage_names
            .iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if from.contains(['/', ':', '.', '@']) || names.is_empty() {
            return e;
        }
        self.step_error(
            ins,
            format!(
                "--from={from}: no stage has that name, so it was pulled as an image, which \
                 failed: {e}\nhint: stages are: {}",
                names.join(", ")
            ),
        )
    }

    fn step_error(&self, ins: &Spanned<Instruction>, message: String) -> BuildError {
        BuildError::Step {
            file: self.file.clone(),
            line: ins.start_line,
            instruction: first_word(&ins.original),
            message,
        }
    }

    /// Unpacks `layers` (in the blob store) into a fresh rootfs at `dir`.
    fn unpack_into(
        &self,
        root: &Root,
        layers: &[LayerRecord],
        image: &str,
    ) -> Result<(), BuildError> {
        for l in layers {
            let f = self.store.open_blob(&l.digest)?;
            let opts = kiln_rootfs::UnpackOptions {
                expected_diff_id: Some(l.diff_id.clone()),
                ..Default::default()
            };
            kiln_rootfs::unpack_layer(root, std::io::BufReader::new(f), &opts).map_err(
                |source| BuildError::Unpack {
                    image: image.to_string(),
                    digest: l.digest.clone(),
                    source: Box::new(source),
                },
            )?;
        }
        Ok(())
    }

    /// Whether a step of the Dockerfile may read stage `idx`'s rootfs: a `COPY`/`ADD --from`
    /// or `RUN --mount=from=` that names it, or whose name is not known before it runs (an
    /// unexpanded `$VAR`). ONBUILD triggers of base images are not seen here (they name
    /// stages of their own Dockerfile); reading an unfilled stage is an error, never empty.
    fn read_by_from(&self, idx: usize) -> bool {
        let names = |from: &str, at: usize| {
            from.contains('$')
                || matches!(self.plan.resolve_from(at, from), Ok(FromRef::Stage(i)) if i == idx)
        };
        self.plan.stages.iter().any(|st| {
            st.instructions.iter().any(|i| match &i.value {
                Instruction::Copy(a) | Instruction::Add(a) => {
                    a.from.as_deref().is_some_and(|f| names(f, st.index))
                }
                Instruction::Run(r) => r
                    .mounts
                    .iter()
                    .any(|m| m.from.as_deref().is_some_and(|f| names(f, st.index))),
                // A trigger this Dockerfile sets runs in a later stage built FROM this one.
                Instruction::Onbuild(t) => t.contains("from"),
                _ => false,
            })
        })
    }

    /// Whether RUN steps run on an overlay: overlay snapshots on and user-namespace isolation
    /// (chroot isolation has no overlay: its RUNs are compared by the walk). Decided once.
    fn overlay_usable(&mut self) -> bool {
        if self.overlay && !matches!(self.isolation(), Ok(kiln_sandbox::Isolation::Userns)) {
            self.overlay = false;
        }
        self.overlay
    }

    /// The tree store, when this build may use it: RUN steps on an overlay (a RUN never
    /// writes the rootfs in place, so it may share inodes with the store) in a user namespace,
    /// full snapshots, not --single-snapshot, and `--cache-unpacked-trees` (default on).
    fn tree_store(&mut self) -> Option<TreeStore> {
        if self.trees.is_none() {
            // A RUN with --security=insecure keeps CAP_SYS_ADMIN and could remount a read-only
            // bind of another stage's rootfs writable: no shared inodes in such a build.
            let insecure = self.plan.stages.iter().any(|st| {
                st.instructions.iter().any(|i| {
                    matches!(&i.value, Instruction::Run(r)
                        if r.security == Some(kiln_dockerfile::Security::Insecure))
                })
            });
            let wanted = self.opts.tree_store
                && !self.opts.single_snapshot
                && !insecure
                && !TreeStore::overlay_unusable(&self.opts.state_dir)
                && self.overlay_usable();
            let store = if wanted {
                TreeStore::open(&self.opts.state_dir, self.privileged)
                    .map_err(|e| tracing::debug!(error = %e, "tree store unavailable"))
                    .ok()
            } else {
                None
            };
            self.trees = Some(store);
        }
        self.trees.clone().flatten()
    }

    /// Brings `root` (which holds `layers[..*applied]`) up to all of `layers`: an empty
    /// rootfs starts from the longest chain the tree store has (hard links, no unpacking),
    /// the rest is unpacked (`origins[i]` names where layer `i` came from in errors). A rootfs
    /// filled from nothing is then stored as the tree of its chain. `clean`: the rootfs holds
    /// nothing but `layers[..*applied]` (a Kaniko VOLUME may have made a directory in an
    /// empty one); the store is used only then.
    fn fill_root(
        &mut self,
        root: &Root,
        layers: &[LayerRecord],
        origins: &[String],
        applied: &mut usize,
        clean: bool,
    ) -> Result<(), BuildError> {
        if *applied >= layers.len() {
            return Ok(());
        }
        let fresh = *applied == 0 && clean;
        let mut start = *applied;
        if let (true, Some(store)) = (fresh, self.tree_store()) {
            let ids = trees::chain_ids(layers.iter().map(|l| &l.diff_id));
            for j in (1..=layers.len()).rev() {
                let Some(tree) = store.get(&ids[j - 1]) else {
                    continue;
                };
                let t0 = Instant::now();
                match store.materialize(&tree, root.path()) {
                    Ok(stats) => {
                        self.linked_roots.insert(root.path().to_path_buf());
                        self.out.event(Event::Info(&format!(
                            "  {j} of {} layers from the unpacked-tree store ({} files linked in {:.2}s)",
                            layers.len(),
                            stats.links,
                            t0.elapsed().as_secs_f64()
                        )));
                        start = j;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "tree store: unpacking instead");
                        empty_dir(root.path())?;
                    }
                }
                break;
            }
        }
        for (l, origin) in layers.iter().zip(origins).skip(start) {
            self.unpack_into(root, std::slice::from_ref(l), origin)?;
        }
        *applied = layers.len();
        if fresh && start < layers.len() {
            self.capture_tree(root, layers);
        }
        Ok(())
    }

    /// Stores `root` (which holds exactly `layers`) in the tree store, unless it is there.
    /// Failing to is not an error: the next build unpacks.
    fn capture_tree(&mut self, root: &Root, layers: &[LayerRecord]) {
        let Some(store) = self.tree_store() else {
            return;
        };
        let Some(chain) = trees::chain_ids(layers.iter().map(|l| &l.diff_id)).pop() else {
            return;
        };
        let t0 = Instant::now();
        match store.capture(root.path(), &chain) {
            Ok(Some(stats)) => {
                self.linked_roots.insert(root.path().to_path_buf());
                tracing::debug!(
                    layers = layers.len(),
                    files = stats.links,
                    dirs = stats.dirs,
                    ms = t0.elapsed().as_millis() as u64,
                    "stored the rootfs in the tree store"
                );
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "tree store: not stored"),
        }
    }

    /// Before a RUN runs directly in `root` (no overlay): give its files that the tree store
    /// shares their own inodes, so the RUN cannot change a stored tree; no more trees.
    fn unlink_from_trees(&mut self, root: &Root) -> Result<(), BuildError> {
        if self.opts.tree_store {
            TreeStore::remember_no_overlay(&self.opts.state_dir);
        }
        self.trees = Some(None);
        if self.linked_roots.remove(root.path()) {
            kiln_rootfs::break_links(root.path(), self.privileged)?;
        }
        Ok(())
    }

    fn open_root(&self, dir: &Path) -> Result<Root, BuildError> {
        let ownership = if self.privileged {
            Ownership::Preserve
        } else {
            Ownership::Skip
        };
        Ok(Root::open(dir)?.with_ownership(ownership))
    }

    /// The base of a stage: (config, layers, format). Its layers are not unpacked yet: the
    /// stage does that when a step first needs its rootfs ([`Builder::fill_root`]).
    fn base(
        &mut self,
        stage: &PlannedStage,
        results: &Results,
    ) -> Result<(ImageConfig, Vec<LayerRecord>, ImageFormat, BaseIdentity), BuildError> {
        match &stage.base {
            Base::Scratch => Ok((
                scratch_config(&self.platform),
                Vec::new(),
                self.opts.image_format.unwrap_or(ImageFormat::Oci),
                BaseIdentity::Scratch,
            )),
            Base::Stage(idx) => {
                let prev = results.get(idx).ok_or_else(|| BuildError::Unsupported {
                    what: format!("stage {idx} is used before it was built"),
                    line: Some(stage.from.span.start_line),
                })?;
                let id = match &prev.final_key {
                    Some(k) => BaseIdentity::Stage(k.clone()),
                    None => BaseIdentity::Scratch,
                };
                Ok((prev.config.clone(), prev.layers.clone(), prev.format, id))
            }
            Base::Image(name) => {
                let reference = self.parse_ref(name)?;
                let platform = match &stage.platform {
                    Some(p) => p.parse::<Platform>().map_err(|e| {
                        self.stage_line_error(
                            stage,
                            "FROM",
                            format!("invalid --platform {p:?}: {e}"),
                        )
                    })?,
                    None => self.platform.clone(),
                };
                let store = self.store.clone();
                let cached = match &self.base_cache {
                    Some(bc) => bc
                        .lookup(&reference, &platform, &store)
                        .map_err(|e| BuildError::Cache(Box::new(e)))?,
                    None => None,
                };
                if let Some(cb) = cached {
                    self.out.event(Event::Info(&format!(
                        "using {reference} from the base-image cache ({})",
                        cb.manifest_digest
                    )));
                    let config = ImageConfig::from_slice(&cb.config_bytes)?;
                    self.check_base_platform(stage, &reference, &config, &platform);
                    let format = self.opts.image_format.unwrap_or_else(|| {
                        ImageFormat::of_manifest_type(&cb.media_type).unwrap_or(ImageFormat::Oci)
                    });
                    return Ok((
                        config,
                        cb.layers,
                        format,
                        BaseIdentity::Image(cb.manifest_digest),
                    ));
                }
                self.out
                    .event(Event::Info(&format!("pulling {reference} ({platform})")));
                let t0 = Instant::now();
                let client = Arc::clone(self.client());
                let what = format!("pulling {reference}");
                let prefetch = self
                    .prefetched
                    .get(&(name.clone(), platform.to_string()))
                    .cloned();
                let prefetched =
                    prefetch.and_then(|h| self.with_progress(&client, &what, || h.wait()));
                let (pulled, took) = match prefetched {
                    Some((pulled, took)) => (pulled, took),
                    // Not prefetched, or the prefetch failed: pull here, where an error
                    // names the stage.
                    _ => {
                        let pulled = self
                            .with_progress(&client, &what, || {
                                client.pull_image(&reference, &platform, &store)
                            })
                            // The error names the reference as written (with its tag) and
                            // the FROM line; the registry's own names the repository only.
                            .map_err(|e| {
                                self.stage_line_error(
                                    stage,
                                    "FROM",
                                    format!("pulling {reference}: {e}"),
                                )
                            })?;
                        (pulled, t0.elapsed())
                    }
                };
                let bytes: u64 = pulled.layers.iter().map(|d| d.size()).sum();
                let secs = took.as_secs_f64().max(0.001);
                self.out.event(Event::Info(&format!(
                    "pulled {reference}@{}: {} layers, {:.1} MB in {secs:.2}s ({:.1} MB/s; blobs already in the store are not fetched again)",
                    pulled.manifest_digest,
                    pulled.layers.len(),
                    bytes as f64 / 1e6,
                    bytes as f64 / 1e6 / secs
                )));
                let config = ImageConfig::from_slice(&pulled.config_bytes)?;
                self.check_base_platform(stage, &reference, &config, &platform);
                let layers = pulled_layers(&pulled, &config, name)?;
                for l in &layers {
                    self.sources.insert(l.digest.clone(), pulled.source.clone());
                }
                let format = self.opts.image_format.unwrap_or_else(|| {
                    ImageFormat::of_manifest_type(&pulled.media_type).unwrap_or(ImageFormat::Oci)
                });
                Ok((
                    config,
                    layers,
                    format,
                    BaseIdentity::Image(pulled.manifest_digest.clone()),
                ))
            }
        }
    }

    /// Warns when a base image is not for the platform the stage is built for: a registry
    /// answers a single-platform manifest whatever platform is asked, and its programs then
    /// fail to run on the target (`exec format error`) while the image says it is for the
    /// target. BuildKit warns the same way (InvalidBaseImagePlatform) and builds.
    fn check_base_platform(
        &self,
        stage: &PlannedStage,
        reference: &impl std::fmt::Display,
        config: &ImageConfig,
        platform: &Platform,
    ) {
        if config.os.is_empty() || config.architecture.is_empty() {
            return;
        }
        // Normalised as the requested one is (x86_64 = amd64, aarch64 = arm64, arm64/v8 =
        // arm64, an empty variant = none), and matched as an index entry would be (a v7
        // machine runs a v6 image).
        let image = Platform::new(
            &config.os,
            &config.architecture,
            config.variant.as_deref().filter(|v| !v.is_empty()),
        );
        if platform.matches(&image) {
            return;
        }
        let is = image.to_string();
        self.out.event(Event::Warning(&format!(
            "{}:{}: FROM {reference} is an image for {is}, not for {platform} as this build asks \
             (the registry has no {platform} image of it): its programs may not run on \
             {platform}, and the built image will say it is for {platform}",
            self.file, stage.from.span.start_line
        )));
    }

    fn run_stage(
        &mut self,
        stage: &PlannedStage,
        pos: usize,
        total: usize,
        results: &Results,
    ) -> Result<StageResult, BuildError> {
        let dir = self
            .work
            .join(format!("stage-{}", stage.index))
            .join("rootfs");
        fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
            what: "creating the stage rootfs",
            path: dir.clone(),
            source,
        })?;
        let root = self.open_root(&dir)?;
        self.out.event(Event::Step {
            stage: pos,
            stages: total,
            step: 0,
            steps: stage.instructions.len(),
            text: &crate::output::redact_urls(&stage.from.span.original),
        });
        let (mut config, mut layers, format, base_id) = self.base(stage, results)?;
        // The rootfs holds `layers[..applied]`; the rest (base layers, cache hits) is
        // unpacked when a step first needs the tree, from the tree store when it has them.
        let mut applied = 0usize;
        let base_origin = match &stage.base {
            Base::Image(name) => name.clone(),
            Base::Stage(idx) => format!("stage {idx}"),
            Base::Scratch => "scratch".to_string(),
        };
        let mut origins: Vec<String> = vec![base_origin; layers.len()];
        // Whether the rootfs holds files that are not in `layers` (ignored paths a RUN wrote):
        // then it is not the tree of its chain and is never stored.
        let mut beyond_layers = false;
        let mut chain = self.cache.as_ref().map(|_| {
            let mut c = KeyChain::new(&base_id, &self.platform);
            // Layers made with exact ownership and with a single-id map differ for the same
            // inputs: keep their cache entries apart.
            let ownership = if self.privileged {
                "exact"
            } else {
                "single-id"
            };
            c.step(&cache::StepInputs::new(format!("ownership {ownership}")));
            c
        });
        let mut stage_cache = self.stage_cache(stage, &base_id, chain.as_ref());
        // ONBUILD triggers of the base run first, then are cleared (docker semantics).
        let triggers = config
            .config
            .as_mut()
            .and_then(|c| c.on_build.take())
            .unwrap_or_default();
        let mut steps: Vec<Spanned<Instruction>> = Vec::new();
        for t in &triggers {
            let parsed =
                kiln_dockerfile::parse_trigger(t, self.plan.escape, stage.from.span.start_line)
                    .map_err(|e| {
                        self.stage_line_error(
                            stage,
                            "ONBUILD",
                            format!("trigger {t:?} of the base image: {e}"),
                        )
                    })?;
            steps.push(parsed);
        }
        steps.extend(stage.instructions.iter().cloned());
        let mut env = StageEnv::new(&self.plan, stage.index, &config.env_pairs());
        if let Base::Stage(idx) = &stage.base {
            if let Some(parent) = results.get(idx) {
                env.inherit(&parent.env);
            }
        }
        let mut index: Option<Index> = None;
        // --single-snapshot: the target stage's steps make no layers of their own; one
        // comparison at the end (against this index of the base) makes a single layer.
        let single = self.opts.single_snapshot && stage.index == self.plan.target;
        if single {
            chain = None;
            self.fill_root(&root, &layers, &origins, &mut applied, !beyond_layers)?;
            index = Some(Index::scan(&root, &self.ignore, self.opts.snapshot_mode)?);
        }
        self.prefetch_stage(
            &steps,
            &config,
            &env,
            results,
            stage,
            chain.as_ref(),
            &stage_cache,
        );
        // Whether CMD was set in this stage: ENTRYPOINT then keeps it (BuildKit's cmd.IsSet).
        let mut cmd_set = false;
        let n = steps.len();
        // The target stage's rootfs is read by no one after its last step that uses it
        // (read_by_from is for the other stages): that step's overlay upper directory
        // becomes its layer and is not moved into the rootfs.
        let last_root_use = (stage.index == self.plan.target)
            .then(|| {
                steps
                    .iter()
                    .rposition(|s| touches_root(&s.value, self.opts.kaniko_volumes))
            })
            .flatten();
        for (k, ins) in steps.iter().enumerate() {
            self.out.event(Event::Step {
                stage: pos,
                stages: total,
                step: k + 1,
                steps: n,
                text: &crate::output::redact_urls(&ins.original),
            });
            let t0 = Instant::now();
            let expanded = env
                .dispatch(&ins.value)
                .map_err(|e| self.step_error(ins, e.to_string()))?;
            let (key, hit) = self.cache_lookup(
                ins,
                &expanded,
                &config,
                &env,
                results,
                stage,
                chain.as_mut(),
                &mut stage_cache,
            )?;
            if let Some(hit) = hit {
                // Replay the cached outcome: the step does not run, and its layer is unpacked
                // when a later step needs the rootfs.
                if hit.layer.is_some() {
                    // The tree changes behind the index's back: take a new one when needed.
                    index = None;
                }
                let created_by = self.created_by_without_running(&expanded, &config, &env)?;
                self.out.event(Event::Info("  cache hit"));
                let size = hit.layer.as_ref().map(|l| l.size);
                config.history.push(History {
                    created: Some(self.created.clone()),
                    created_by: Some(created_by),
                    comment: Some("buildkit.dockerfile.v0".into()),
                    empty_layer: hit.layer.is_none(),
                    ..History::default()
                });
                if let Some(l) = hit.layer {
                    config.rootfs.diff_ids.push(l.diff_id.clone());
                    layers.push(l);
                    origins.push("the layer cache".to_string());
                }
                self.out.event(Event::StepDone {
                    elapsed: t0.elapsed(),
                    layer_size: size,
                });
                continue;
            }
            let touched = touches_root(&expanded, self.opts.kaniko_volumes);
            if touched {
                self.fill_root(&root, &layers, &origins, &mut applied, !beyond_layers)?;
                if reads_context(&expanded) && !beyond_layers && applied > 0 {
                    // A step that reads the build context: the usual first miss of the next
                    // build after an edit. Keep the tree it starts from.
                    self.capture_tree(&root, &layers);
                }
            }
            let on_overlay =
                !single && matches!(expanded, Instruction::Run(_)) && self.overlay_usable();
            if index.is_none() && !on_overlay && self.needs_walk(&expanded) {
                // The stage's first RUN: index the tree as it is now (base + earlier steps).
                index = Some(Index::scan(&root, &self.ignore, self.opts.snapshot_mode)?);
            }
            let first = self.dispatch(
                ins,
                &expanded,
                &mut config,
                &root,
                &env,
                results,
                stage,
                &mut cmd_set,
            );
            let outcome = match first {
                Err(BuildError::Sandbox { source, .. }) if on_overlay && !source.may_have_run() => {
                    // A set-up failure (the overlay mount) comes before the command starts, so
                    // running it again without the overlay is safe; errors after that are not
                    // retried (`may_have_run`). Overlay snapshots are the default and the walk gives
                    // the same layers, so this is a logged decision, not a warning.
                    tracing::debug!(
                        error = %source,
                        "RUN on an overlay is not possible here; comparing the file tree instead"
                    );
                    self.overlay = false;
                    self.unlink_from_trees(&root)?;
                    if index.is_none() {
                        index = Some(Index::scan(&root, &self.ignore, self.opts.snapshot_mode)?);
                    }
                    self.dispatch(
                        ins,
                        &expanded,
                        &mut config,
                        &root,
                        &env,
                        results,
                        stage,
                        &mut cmd_set,
                    )?
                }
                other => other?,
            };
            let mut root_holds_step = touched;
            let layer = match outcome.fs {
                FsEffect::Overlay(upper) => {
                    let keep_root = last_root_use != Some(k);
                    let (layer, wrote_ignored) =
                        self.apply_overlay(&root, &upper, single, keep_root)?;
                    root_holds_step &= keep_root;
                    beyond_layers |= wrote_ignored;
                    // The tree changed without the index: take a new one when a walk is needed.
                    index = None;
                    layer
                }
                fs => {
                    let changes = match fs {
                        _ if single => ChangeSet::default(),
                        FsEffect::None | FsEffect::Overlay(_) => ChangeSet::default(),
                        FsEffect::Paths(paths) => {
                            snapshot::from_paths(&root, &paths, index.as_mut())?
                        }
                        FsEffect::Unknown => match index.as_mut() {
                            Some(ix) => ix.diff(&root)?,
                            // Never silently an empty layer: a RUN without an overlay always
                            // has an index (taken above).
                            None => {
                                return Err(self.step_error(
                                    ins,
                                    "internal error: the step ran without a snapshot of the tree before it".into(),
                                ))
                            }
                        },
                    };
                    snapshot::write(&root, &changes, &self.store, &self.settings)?
                }
            };
            if let Some(key) = key {
                self.store_in_cache(key, layer.clone());
            }
            if let (Some(chain), true) = (
                chain.as_mut(),
                content_not_in_key(&expanded, &|f| {
                    matches!(
                        self.plan.resolve_from(stage.index, f),
                        Ok(FromRef::Image(_))
                    )
                }),
            ) {
                // An ADD of a URL is keyed by its text, not by the bytes it fetched: fold what
                // it produced into the chain, so later steps miss when the download changed.
                let produced = layer
                    .as_ref()
                    .map_or_else(|| "no layer".to_string(), |l| l.diff_id.to_string());
                chain.step(&cache::StepInputs::new(format!("produced {produced}")));
            }
            let size = layer.as_ref().map(|l| l.size);
            // ONBUILD records no history (BuildKit's dispatchOnbuild does not commit).
            if !matches!(expanded, Instruction::Onbuild(_)) {
                config.history.push(History {
                    created: Some(self.created.clone()),
                    created_by: Some(outcome.created_by),
                    comment: Some("buildkit.dockerfile.v0".into()),
                    empty_layer: layer.is_none(),
                    ..History::default()
                });
            }
            if let Some(l) = layer {
                config.rootfs.diff_ids.push(l.diff_id.clone());
                layers.push(l);
                origins.push("a step of this build".to_string());
            }
            if root_holds_step {
                // The step ran on the filled rootfs and its layer is in it.
                applied = layers.len();
            } else {
                // Either the target's last use of its rootfs (its layer was not applied: no
                // one reads the tree after it), or a step that never touched the rootfs.
                debug_assert!(
                    touched || size.is_none(),
                    "a step that made a layer must fill the rootfs first"
                );
            }
            if matches!(expanded, Instruction::Volume(_)) && self.opts.kaniko_volumes {
                // Kaniko's VOLUME made a directory that is kept out of later layers.
                beyond_layers = true;
            }
            self.out.event(Event::StepDone {
                elapsed: t0.elapsed(),
                layer_size: size,
            });
        }
        if single {
            let changes = match index.as_mut() {
                Some(ix) => ix.diff(&root)?,
                None => ChangeSet::default(),
            };
            if let Some(l) = snapshot::write(&root, &changes, &self.store, &self.settings)? {
                config.history.push(History {
                    created: Some(self.created.clone()),
                    created_by: Some("kiln --single-snapshot".into()),
                    ..History::default()
                });
                config.rootfs.diff_ids.push(l.diff_id.clone());
                layers.push(l);
                origins.push("a step of this build".to_string());
                applied = layers.len();
            }
        }
        if stage.index != self.plan.target && self.read_by_from(stage.index) {
            // Later stages read this one's rootfs (COPY --from, RUN --mount=from). A stage that
            // is only a FROM base is not filled (the next stage unpacks its layers into its
            // own rootfs), nor is the target: a build whose last steps were all cache hits
            // unpacks nothing of them.
            self.fill_root(&root, &layers, &origins, &mut applied, !beyond_layers)?;
        }
        Ok(StageResult {
            filled: applied == layers.len(),
            final_key: chain.map(|c| c.current().clone()),
            root: dir,
            config,
            layers,
            format,
            env,
        })
    }

    /// The root file system of `image` (a `COPY --from=` / `--mount=from=` image): pulled for
    /// the build's platform and unpacked (confined, verified) once per build.
    fn image_root(&mut self, image: &str) -> Result<PathBuf, BuildError> {
        if let Some(p) = self.image_roots.get(image) {
            return Ok(p.clone());
        }
        let reference = self.parse_ref(image)?;
        let dir = self
            .work
            .join(format!("image-{}{}", self.tag, self.image_roots.len()))
            .join("rootfs");
        fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
            what: "creating an image root",
            path: dir.clone(),
            source,
        })?;
        self.out
            .event(Event::Info(&format!("pulling {reference} (for --from)")));
        let store = self.store.clone();
        let platform = self.platform.clone();
        let client = Arc::clone(self.client());
        let pulled = self.with_progress(&client, &format!("pulling {reference}"), || {
            client.pull_image(&reference, &platform, &store)
        })?;
        let config = ImageConfig::from_slice(&pulled.config_bytes)?;
        let layers = pulled_layers(&pulled, &config, image)?;
        let root = self.open_root(&dir)?;
        let origins = vec![image.to_string(); layers.len()];
        self.fill_root(&root, &layers, &origins, &mut 0, true)?;
        self.image_roots.insert(image.to_string(), dir.clone());
        Ok(dir)
    }

    /// A RUN's overlay upper directory becomes its layer (the same one a walk would give:
    /// ChangeSet::from_overlay_upper drops what overlayfs only copied up), which is then
    /// applied to the stage rootfs through the confined unpacker, unless `keep_root` is false
    /// (nothing reads the rootfs after this step: the upper directory is left for the build
    /// directory's removal). `single` (--single-snapshot) never gets here.
    fn apply_overlay(
        &self,
        root: &Root,
        upper: &Path,
        single: bool,
        keep_root: bool,
    ) -> Result<(Option<LayerRecord>, bool), BuildError> {
        debug_assert!(!single);
        let t0 = std::time::Instant::now();
        // --ignore-path applies as it does to the walk.
        let changes = ChangeSet::from_overlay_upper(upper, Some(root), &self.ignore)?;
        let scanned_ms = t0.elapsed().as_millis() as u64;
        let upper_root = Root::open(upper)?;
        let layer = snapshot::write(&upper_root, &changes, &self.store, &self.settings)?;
        let written_ms = t0.elapsed().as_millis() as u64;
        if !keep_root {
            tracing::debug!(
                changes = changes.len(),
                scanned_ms,
                written_ms,
                "snapshot from the overlay's upper directory (not applied: the rootfs is not read again)"
            );
            return Ok((layer, false));
        }
        // The stage rootfs becomes what the step left: the upper directory is moved in (no
        // copy; the files keep their timestamps), or, across file systems, the layer unpacked.
        // Ignored paths (--ignore-path, /var/run, Kaniko volumes) are not in the layer but stay
        // in the rootfs for later steps, as after a walk: apply the unfiltered change set when
        // the step wrote below one of them.
        let wrote_ignored = self.ignore.iter().any(|ig| {
            let rel = ig.strip_prefix("/").unwrap_or(ig);
            !rel.as_os_str().is_empty() && fs::symlink_metadata(upper.join(rel)).is_ok()
        });
        let moved = if wrote_ignored {
            ChangeSet::from_overlay_upper(upper, Some(root), &[])?
                .apply_overlay_upper(upper, root)?
        } else {
            changes.apply_overlay_upper(upper, root)?
        };
        if !moved {
            if let Some(l) = &layer {
                self.unpack_into(root, std::slice::from_ref(l), "a RUN's changes")?;
            }
        }
        tracing::debug!(
            changes = changes.len(),
            scanned_ms,
            written_ms,
            applied_ms = t0.elapsed().as_millis() as u64 - written_ms,
            moved,
            "snapshot from the overlay's upper directory"
        );
        if let Some(dir) = upper.parent() {
            let _ = remove_tree(dir);
        }
        Ok((layer, wrote_ignored))
    }

    /// Opens the layer cache (`--cache`): the `--cache-repo` (or `<destination>/cache`) in a
    /// registry or an OCI layout, with the state directory's local cache in front of it; only
    /// the local cache when there is no repository (a local build).
    fn open_cache(&mut self) -> Result<(), BuildError> {
        let Some(c) = &self.opts.cache else {
            return Ok(());
        };
        let cache_err = |e| BuildError::Cache(Box::new(e));
        let local = cache::LocalCache::open(&self.opts.state_dir, c.ttl).map_err(cache_err)?;
        let repo = cache::CacheRepo::resolve(c.repo.as_deref(), &self.opts.destinations)
            .map_err(cache_err)?;
        let layer_cache: Arc<dyn LayerCache> = match repo {
            Some(repo) => {
                let client = Arc::new(kiln_registry::Client::new(
                    self.opts.registry.clone(),
                    self.opts.credentials.clone(),
                ));
                let remote = cache::open_remote(&repo, client, c.ttl, self.platform.clone())
                    .map_err(cache_err)?;
                Arc::new(cache::Tiered::new(local, remote))
            }
            None => Arc::new(local),
        };
        self.out.event(Event::Info(&format!(
            "layer cache: {}",
            layer_cache.describe()
        )));
        self.cache = Some(layer_cache);
        if let Some(dir) = c.dir.as_ref().filter(|d| d.is_dir()) {
            let client = Arc::new(kiln_registry::Client::new(
                self.opts.registry.clone(),
                self.opts.credentials.clone(),
            ));
            self.base_cache = Some(Arc::new(BaseImageCache::new(dir, c.ttl, Some(client))));
        }
        Ok(())
    }

    /// The cache state of a stage about to run: its name for explaining misses (the
    /// Dockerfile and the stage's name or position, stable across builds) and the explanation
    /// of its base (`base changed`, from a record of the previous build's chain start).
    fn stage_cache(
        &self,
        stage: &PlannedStage,
        base_id: &BaseIdentity,
        chain: Option<&KeyChain>,
    ) -> StageCache {
        let file = fs::canonicalize(&self.opts.dockerfile)
            .unwrap_or_else(|_| self.opts.dockerfile.clone());
        let which = match &stage.name {
            Some(n) => format!("stage {n}"),
            None => format!("stage #{}", stage.index),
        };
        let mut sc = StageCache {
            name: format!("{}\0{which}", file.display()),
            ..StageCache::default()
        };
        if let (Some(c), Some(chain)) = (&self.cache, chain) {
            let start = KeyChain::new(base_id, &self.platform);
            for (key, parts) in [
                (start.current(), start.last_parts()),
                (chain.current(), chain.last_parts()),
            ] {
                if let cache::Explanation::Changed(why) = c.explain(key, parts, &sc.name) {
                    sc.pending.get_or_insert(why);
                }
            }
        }
        sc
    }

    /// Computes the keys of the stage's cacheable steps before the first one runs and starts
    /// their lookups in the background (`LayerCache::prefetch`, bounded), so a rebuild pays
    /// about one registry round trip instead of one per step. A key depends only on its
    /// parent key and the step's inputs, never on an earlier step's result, so a key computed
    /// ahead is the key the step computes itself (whether or not the steps before it hit).
    /// The pass stops at the first step it cannot predict: one whose result is folded into
    /// the chain (`content_not_in_key`) or that fails to expand (the step reports that). The
    /// step's own lookup stays authoritative: a prefetched result is only a head start.
    #[allow(clippy::too_many_arguments)]
    fn prefetch_stage(
        &self,
        steps: &[Spanned<Instruction>],
        config: &ImageConfig,
        env: &StageEnv,
        results: &Results,
        stage: &PlannedStage,
        chain: Option<&KeyChain>,
        sc: &StageCache,
    ) {
        let (Some(c), Some(chain), Some(opts)) = (&self.cache, chain, &self.opts.cache) else {
            return;
        };
        let mut chain = chain.clone();
        let mut env = env.clone();
        // Only the config's Env is an input of later keys; only ENV changes it.
        let mut config = config.clone();
        let stage_key = |from: &str| match self.plan.resolve_from(stage.index, from) {
            Ok(FromRef::Stage(i)) => results.get(&i).and_then(|r| r.final_key.clone()),
            _ => None,
        };
        let mut keys = Vec::new();
        for ins in steps {
            let Ok(expanded) = env.dispatch(&ins.value) else {
                break;
            };
            let Ok(inputs) = cache::key::step_inputs(
                &expanded,
                &config.env_pairs(),
                &env.run_build_args(),
                &self.context,
                &stage_key,
                &sc.memo,
            ) else {
                break;
            };
            let key = chain.step(&inputs);
            if cache::is_cacheable(&expanded, opts.run_layers, opts.copy_layers, &|f| {
                stage_key(f).is_some()
            }) {
                keys.push(key);
            }
            if content_not_in_key(&expanded, &|f| {
                matches!(
                    self.plan.resolve_from(stage.index, f),
                    Ok(FromRef::Image(_))
                )
            }) {
                break;
            }
            if let Instruction::Env(pairs) = &expanded {
                metadata::env(&mut config, pairs);
            }
        }
        tracing::debug!(keys = keys.len(), "prefetching cache lookups");
        if !keys.is_empty() {
            c.prefetch(&keys, &self.store);
        }
    }

    /// Advances the stage's key chain with this step and, when the step may be cached, looks
    /// its key up. Returns the key to store under after a miss (None: do not store). At the
    /// stage's first miss it says why, when the local cache's records know.
    #[allow(clippy::too_many_arguments)]
    fn cache_lookup(
        &self,
        ins: &Spanned<Instruction>,
        expanded: &Instruction,
        config: &ImageConfig,
        env: &StageEnv,
        results: &Results,
        stage: &PlannedStage,
        chain: Option<&mut KeyChain>,
        sc: &mut StageCache,
    ) -> Result<(Option<CacheKey>, Option<cache::CachedLayer>), BuildError> {
        let (Some(c), Some(chain), Some(opts)) = (&self.cache, chain, &self.opts.cache) else {
            return Ok((None, None));
        };
        let stage_key = |from: &str| match self.plan.resolve_from(stage.index, from) {
            Ok(FromRef::Stage(i)) => results.get(&i).and_then(|r| r.final_key.clone()),
            _ => None,
        };
        let inputs = cache::key::step_inputs(
            expanded,
            &config.env_pairs(),
            &env.run_build_args(),
            &self.context,
            &stage_key,
            &sc.memo,
        )
        .map_err(|e| self.step_error(ins, format!("computing the cache key: {e}")))?;
        let key = chain.step(&inputs);
        tracing::debug!(%key, step = %crate::output::redact_urls(&ins.original), "cache key");
        // Every step is recorded (metadata ones too): the first new key of the chain is where
        // the change happened, even when that step is never looked up (an ARG, a COPY).
        let why = c.explain(&key, chain.last_parts(), &sc.name);
        if let cache::Explanation::Changed(v) = &why {
            sc.pending.get_or_insert_with(|| v.clone());
        }
        let cacheable = cache::is_cacheable(expanded, opts.run_layers, opts.copy_layers, &|f| {
            stage_key(f).is_some()
        });
        if !cacheable {
            return Ok((None, None));
        }
        let hit = c
            .lookup(&key, &self.store)
            .map_err(|e| BuildError::Cache(Box::new(e)))?;
        for w in c.take_warnings() {
            self.out.event(Event::Warning(&w));
        }
        tracing::debug!(%key, hit = hit.is_some(), "cache lookup");
        let note = if hit.is_none() {
            c.miss_note(&key)
        } else {
            None
        };
        if hit.is_some() {
            // Whatever changed before this step was cached elsewhere (another machine's
            // build): it does not explain a later miss.
            sc.pending = None;
            sc.hit = true;
        } else if let Some(n) = note {
            // An entry older than --cache-ttl: said for every step it happens to, as it is
            // not implied by an earlier miss.
            sc.told = true;
            self.out.event(Event::Info(&format!("  cache: {n}")));
        } else if !sc.told {
            sc.told = true;
            match (&sc.pending, &why) {
                (Some(v), _) => self.out.event(Event::Info(&format!(
                    "  cache: changed since the cached build: {}",
                    v.join(", ")
                ))),
                // Nothing of this stage was recorded under this parent, and nothing above
                // came from a cache: a cold cache, or a parent that is new itself.
                (None, cache::Explanation::Unknown) if !sc.hit => self.out.event(Event::Info(
                    "  cache: no cached entry for this step's parent",
                )),
                _ => {}
            }
        }
        let store_key = (hit.is_none() && opts.store).then_some(key);
        Ok((store_key, hit))
    }

    /// Stores a step's outcome in the cache on a background thread.
    fn store_in_cache(&mut self, key: CacheKey, layer: Option<LayerRecord>) {
        let Some(c) = self.cache.clone() else { return };
        let store = self.store.clone();
        self.stores.push(std::thread::spawn(move || {
            c.store(&key, layer.as_ref(), &store)
        }));
    }

    /// The history text of a step replayed from the cache (what running it would record).
    fn created_by_without_running(
        &self,
        expanded: &Instruction,
        config: &ImageConfig,
        env: &StageEnv,
    ) -> Result<String, BuildError> {
        Ok(match expanded {
            Instruction::Run(r) => {
                let scratch = self.work.join(format!("{}history-scratch", self.tag));
                let _ = fs::remove_dir_all(&scratch);
                fs::create_dir_all(&scratch).map_err(|source| BuildError::Io {
                    what: "creating a scratch directory",
                    path: scratch.clone(),
                    source,
                })?;
                let argv = run::argv(r, &metadata::shell_of(config), &scratch).map_err(|e| {
                    BuildError::Unsupported {
                        what: e.to_string(),
                        line: None,
                    }
                })?;
                run::history(&argv, &env.history_args())
            }
            Instruction::Copy(a) => copy_history("COPY", a),
            Instruction::Add(a) => copy_history("ADD", a),
            other => format!("{other:?}"),
        })
    }

    /// Runs `f` (a pull or a push through `client`) and, every `--progress-interval` while it
    /// runs, tells how many bytes have moved and at what rate, so a long transfer is visible.
    fn with_progress<T>(
        &self,
        client: &kiln_registry::Client,
        what: &str,
        f: impl FnOnce() -> T,
    ) -> T {
        let Some(every) = self.opts.progress_interval.filter(|d| !d.is_zero()) else {
            return f();
        };
        let out = self.out;
        let start = client.bytes_transferred();
        let t0 = Instant::now();
        std::thread::scope(|s| {
            let (done, stop) = std::sync::mpsc::channel::<()>();
            s.spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(every)
                {
                    let mb = client.bytes_transferred().saturating_sub(start) as f64 / 1e6;
                    let secs = t0.elapsed().as_secs_f64().max(0.001);
                    out.event(Event::Info(&format!(
                        "  {what}: {mb:.1} MB so far, {:.1} MB/s, {secs:.0}s",
                        mb / secs
                    )));
                }
            });
            let r = f();
            drop(done);
            r
        })
    }

    /// Kaniko's VOLUME (`--compat=kaniko`): a missing directory is created (0755, root; in no
    /// layer, as the path is ignored) and the path is left out of every later snapshot of the
    /// build, so what a RUN writes there is not in the image (the classic builder's rule too).
    fn kaniko_volumes(
        &mut self,
        ins: &Spanned<Instruction>,
        root: &Root,
        paths: &[String],
    ) -> Result<(), BuildError> {
        for p in paths {
            let rel = p.trim_start_matches('/');
            if rel.is_empty() {
                continue;
            }
            if self.opts.volume_mkdir {
                root.create_dir_all(rel, &kiln_rootfs::Meta::with_mode(0o755))
                    .map_err(|e| {
                        self.step_error(ins, format!("creating volume directory {p}: {e}"))
                    })?;
            }
            let abs = PathBuf::from(format!("/{rel}"));
            if !self.ignore.contains(&abs) {
                self.ignore.push(abs);
            }
        }
        Ok(())
    }

    /// Waits for the background cache stores; a failed store is a warning.
    fn join_cache_stores(&mut self) {
        for h in self.stores.drain(..) {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => self.out.event(Event::Warning(&format!(
                    "storing a layer in the cache: {e}"
                ))),
                Err(_) => self.out.event(Event::Warning(
                    "storing a layer in the cache: the thread panicked",
                )),
            }
        }
        if let Some(c) = &self.cache {
            for w in c.take_warnings() {
                self.out.event(Event::Warning(&w));
            }
        }
    }

    /// The one `match` over instructions.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        ins: &Spanned<Instruction>,
        expanded: &Instruction,
        config: &mut ImageConfig,
        root: &Root,
        env: &StageEnv,
        results: &Results,
        stage: &PlannedStage,
        cmd_set: &mut bool,
    ) -> Result<StepOutcome, BuildError> {
        if let (Instruction::Volume(paths), true) = (expanded, self.opts.kaniko_volumes) {
            self.kaniko_volumes(ins, root, paths)?;
        }
        let meta_only = |created_by: String| StepOutcome {
            fs: FsEffect::None,
            created_by,
        };
        let bad = |m: String| self.step_error(ins, m);
        Ok(match expanded {
            Instruction::Env(pairs) => meta_only(metadata::env(config, pairs)),
            Instruction::Label(pairs) => meta_only(metadata::label(config, pairs)),
            Instruction::User(u) => meta_only(metadata::user(config, u)),
            Instruction::Expose(ports) => meta_only(metadata::expose(config, ports).map_err(bad)?),
            Instruction::Volume(paths) => meta_only(metadata::volume(config, paths).map_err(bad)?),
            Instruction::Cmd(cl) => {
                let argv = command_argv(config, cl);
                *cmd_set = true;
                meta_only(metadata::cmd(config, argv))
            }
            Instruction::Entrypoint(cl) => {
                let argv = command_argv(config, cl);
                meta_only(metadata::entrypoint(config, argv, *cmd_set))
            }
            Instruction::Shell(argv) => meta_only(metadata::shell(config, argv.clone())),
            Instruction::StopSignal(s) => meta_only(metadata::stopsignal(config, s).map_err(bad)?),
            Instruction::Maintainer(m) => meta_only(metadata::maintainer(config, m)),
            Instruction::Onbuild(t) => meta_only(metadata::onbuild(config, t)),
            Instruction::Healthcheck(h) => meta_only(match h {
                Healthcheck::None => metadata::healthcheck(
                    config,
                    cfg::Healthcheck {
                        test: Some(vec!["NONE".into()]),
                        ..Default::default()
                    },
                ),
                Healthcheck::Cmd {
                    cmd,
                    interval,
                    timeout,
                    start_period,
                    start_interval,
                    retries,
                } => {
                    let test = match cmd {
                        kiln_dockerfile::CommandLine::Exec(v) => {
                            let mut t = vec!["CMD".to_string()];
                            t.extend(v.iter().cloned());
                            t
                        }
                        kiln_dockerfile::CommandLine::Shell(s) => {
                            vec!["CMD-SHELL".to_string(), s.clone()]
                        }
                    };
                    let ns = |d: &Option<Duration>| d.map(|d| d.as_nanos() as i64).unwrap_or(0);
                    metadata::healthcheck(
                        config,
                        cfg::Healthcheck {
                            test: Some(test),
                            interval: ns(interval),
                            timeout: ns(timeout),
                            start_period: ns(start_period),
                            start_interval: ns(start_interval),
                            retries: retries.map(i64::from).unwrap_or(0),
                        },
                    )
                }
            }),
            Instruction::Arg(decls) => {
                let text: Vec<String> = decls
                    .iter()
                    .map(|d| match &d.default {
                        Some(v) => format!("{}={v}", d.name),
                        None => d.name.clone(),
                    })
                    .collect();
                meta_only(format!("ARG {}", text.join(" ")))
            }
            Instruction::Workdir(dir) => {
                let owner = self.current_owner(config, root).map_err(&bad)?;
                let (created_by, created) =
                    workdir::workdir(config, root, dir, owner).map_err(|e| bad(e.to_string()))?;
                StepOutcome {
                    fs: FsEffect::Paths(created.into_iter().collect()),
                    created_by,
                }
            }
            Instruction::Copy(args) | Instruction::Add(args) => {
                let is_add = matches!(expanded, Instruction::Add(_));
                self.copy(ins, args, is_add, config, root, results, stage)?
            }
            Instruction::Run(r) => self.run(ins, r, config, root, env, results, stage)?,
        })
    }

    /// The uid:gid of the current USER (for WORKDIR ownership), resolved in the rootfs.
    fn current_owner(&self, config: &ImageConfig, root: &Root) -> Result<(u32, u32), String> {
        match config.config.as_ref().and_then(|c| c.user.as_deref()) {
            None | Some("") => Ok((0, 0)),
            Some(u) => file_owner(root, u),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &mut self,
        ins: &Spanned<Instruction>,
        args: &kiln_dockerfile::CopyArgs,
        is_add: bool,
        config: &ImageConfig,
        root: &Root,
        results: &Results,
        stage: &PlannedStage,
    ) -> Result<StepOutcome, BuildError> {
        let name = if is_add { "ADD" } else { "COPY" };
        let bad = |m: String| self.step_error(ins, m);
        if args.parents && is_add {
            // BuildKit declares --parents for COPY only: its ADD fails with "unknown flag".
            return Err(bad(
                "ADD does not take --parents (BuildKit accepts it on COPY only); use COPY --parents"
                    .into(),
            ));
        }
        if args.parents && !args.heredocs.is_empty() {
            return Err(BuildError::Unsupported {
                what: "COPY --parents with a heredoc".into(),
                line: Some(ins.start_line),
            });
        }
        let is_url = |s: &String| s.starts_with("http://") || s.starts_with("https://");
        if is_add {
            // A git source's --checksum is its commit (BuildKit), an HTTP source's a digest.
            if args.checksum.is_some()
                && !args
                    .sources
                    .iter()
                    .all(|s| is_url(s) || crate::git::is_git_url(s))
            {
                return Err(bad(
                    "--checksum is only allowed with HTTP(S) and git sources".into(),
                ));
            }
        } else if let Some(src) = args.sources.iter().find(|s| is_url(s)) {
            return Err(bad(format!("COPY cannot take a URL ({src}); use ADD")));
        }
        let owner = match &args.chown {
            Some(spec) => {
                Some(file_owner(root, spec).map_err(|e| bad(format!("--chown={spec}: {e}")))?)
            }
            None => None,
        };
        let chmod = args
            .chmod
            .as_deref()
            .map(Chmod::parse)
            .transpose()
            .map_err(&bad)?;
        let workdir = config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .unwrap_or_else(|| "/".into());
        let spec = copy::CopySpec {
            sources: args.sources.clone(),
            heredocs: args
                .heredocs
                .iter()
                .map(|h| (h.name.clone(), h.content.clone()))
                .collect(),
            dest: args.dest.clone(),
            workdir: &workdir,
            owner,
            chmod,
            exclude: args.exclude.clone(),
        };
        let file = self.file.clone();
        let copy_err = |source| BuildError::Copy {
            file: file.clone(),
            line: ins.start_line,
            instruction: name.into(),
            source,
        };
        let mut extracted = false;
        let mut downloaded = Vec::new();
        let written = if args.parents {
            // `COPY --parents`: each match keeps its path below the context or the --from
            // root (or below a `/./` pivot in the source) under the destination directory.
            match &args.from {
                None => copy::copy_parents(root, &copy::Source::Context(&self.context), &spec)
                    .map_err(copy_err)?,
                Some(from) => {
                    let from_root = self.copy_from_root(ins, from, results, stage)?;
                    copy::copy_parents(root, &copy::Source::Root(&from_root), &spec)
                        .map_err(copy_err)?
                }
            }
        } else {
            match &args.from {
                None => {
                    let mut spec = spec;
                    if is_add && args.sources.iter().any(|s| crate::git::is_git_url(s)) {
                        let (gits, rest): (Vec<String>, Vec<String>) = spec
                            .sources
                            .iter()
                            .cloned()
                            .partition(|s| crate::git::is_git_url(s));
                        downloaded.extend(self.add_git(ins, args, &gits, &spec, root)?);
                        spec.sources = rest;
                    }
                    if is_add && spec.sources.iter().any(is_url) {
                        let (urls, rest): (Vec<String>, Vec<String>) =
                            spec.sources.iter().cloned().partition(is_url);
                        let (dest, as_dir) = copy::dest_path(&args.dest, &workdir);
                        let as_dir = as_dir || urls.len() + rest.len() > 1;
                        for (i, u) in urls.iter().enumerate() {
                            let tmp = self.work.join(format!("download-{}-{i}", ins.start_line));
                            add::download(u, &tmp, args.checksum.as_deref()).map_err(&bad)?;
                            // `ADD --unpack=true <url>` (dockerfile 1.17): a download that is a
                            // tar archive, judged by its content as a local one is, is extracted
                            // into the destination directory; anything else is written as the
                            // file it is. `--checksum` was checked on the downloaded bytes.
                            if args.unpack == Some(true) {
                                let kind =
                                    add::sniff(&tmp).map_err(|e| bad(format!("{u}: {e}")))?;
                                match kind {
                                    add::ArchiveKind::Tar => {
                                        add::extract(root, &tmp, &dest)
                                            .map_err(|e| bad(format!("extracting {u}: {e}")))?;
                                        let _ = fs::remove_file(&tmp);
                                        extracted = true;
                                        continue;
                                    }
                                    add::ArchiveKind::NotArchive => {}
                                }
                            }
                            let target = if as_dir {
                                let name = add::url_file_name(u).ok_or_else(|| {
                                bad(format!("cannot tell a file name from {u}; give a destination file name"))
                            })?;
                                dest.join(name)
                            } else {
                                dest.clone()
                            };
                            let (o_uid, o_gid) = spec.owner.unwrap_or((0, 0));
                            if let Some(parent) =
                                target.parent().filter(|p| !p.as_os_str().is_empty())
                            {
                                // Directories made on the way get the --chown owner, as COPY's.
                                let dir_meta = kiln_rootfs::Meta {
                                    mode: 0o755,
                                    uid: o_uid,
                                    gid: o_gid,
                                    ..Default::default()
                                };
                                root.create_dir_all(parent, &dir_meta)?;
                            }
                            // docker gives downloaded files mode 0600 unless --chmod says otherwise.
                            let mode = spec.chmod.as_ref().map_or(0o600, |c| c.apply(0o600, false));
                            let mut f = fs::File::open(&tmp).map_err(|source| BuildError::Io {
                                what: "reading a download",
                                path: tmp.clone(),
                                source,
                            })?;
                            let (_, logical) = root.write_file(
                                &target,
                                &mut f,
                                &kiln_rootfs::Meta {
                                    mode,
                                    uid: o_uid,
                                    gid: o_gid,
                                    ..Default::default()
                                },
                            )?;
                            downloaded.push(PathBuf::from(
                                String::from_utf8_lossy(&logical).into_owned(),
                            ));
                            let _ = fs::remove_file(&tmp);
                        }
                        spec.sources = rest;
                    }
                    // `ADD --unpack=false` copies local archives as files.
                    if is_add && args.unpack != Some(false) {
                        let (archives, rest) = self.split_archives(&spec.sources).map_err(&bad)?;
                        if !archives.is_empty() {
                            let (dest, _) = copy::dest_path(&args.dest, &workdir);
                            for a in &archives {
                                add::extract(root, &self.context.root().join(a), &dest)
                                    .map_err(|e| bad(format!("extracting {}: {e}", a.display())))?;
                            }
                            extracted = true;
                            spec.sources = rest;
                        }
                    }
                    if spec.sources.is_empty() && spec.heredocs.is_empty() {
                        Vec::new()
                    } else {
                        copy::copy(root, &copy::Source::Context(&self.context), &spec)
                            .map_err(copy_err)?
                    }
                }
                Some(from) => {
                    let from_root = self.copy_from_root(ins, from, results, stage)?;
                    copy::copy(root, &copy::Source::Root(&from_root), &spec).map_err(copy_err)?
                }
            }
        };
        let text = copy_history(name, args);
        Ok(StepOutcome {
            // An extracted archive wrote paths nobody listed: the stage index (taken before
            // this step, see `needs_walk`) finds them.
            fs: if extracted {
                FsEffect::Unknown
            } else {
                FsEffect::Paths(written.into_iter().chain(downloaded).collect())
            },
            created_by: text,
        })
    }

    /// The root file system `--from=<stage|index|image>` names, opened for reading.
    fn copy_from_root(
        &mut self,
        ins: &Spanned<Instruction>,
        from: &str,
        results: &Results,
        stage: &PlannedStage,
    ) -> Result<Root, BuildError> {
        let resolved = self
            .plan
            .resolve_from(stage.index, from)
            .map_err(|e| self.step_error(ins, e.to_string()))?;
        match resolved {
            FromRef::Stage(idx) => {
                let r = results.get(&idx).ok_or_else(|| {
                    self.step_error(ins, format!("--from={from}: stage {idx} was not built"))
                })?;
                if !r.filled {
                    return Err(self.step_error(ins, not_kept(from, idx)));
                }
                self.open_root(&r.root)
            }
            FromRef::Image(image) => {
                let dir = self
                    .image_root(&image)
                    .map_err(|e| self.pull_for_from_error(ins, from, e))?;
                self.open_root(&dir)
            }
        }
    }

    /// `ADD <git url>… <dir>`: each repository is fetched into the build's own directory and
    /// its tree (without `.git` unless `--keep-git-dir=true`) copied into the destination
    /// directory, owned by 0:0 or `--chown`, modes 0644/0755 as git records them. `--checksum`
    /// must equal the commit (or be a prefix of at least 7 digits of it). Returns the paths
    /// written.
    fn add_git(
        &self,
        ins: &Spanned<Instruction>,
        args: &kiln_dockerfile::CopyArgs,
        sources: &[String],
        spec: &copy::CopySpec<'_>,
        root: &Root,
    ) -> Result<Vec<PathBuf>, BuildError> {
        let bad = |m: String| self.step_error(ins, m);
        let mut written = Vec::new();
        for (i, s) in sources.iter().enumerate() {
            let src = crate::git::GitSource::parse_url(s).map_err(|e| bad(e.to_string()))?;
            let dir = self.work.join(format!("git-{}-{i}", ins.start_line));
            let _cleanup = WorkDir(dir.clone());
            self.out
                .event(Event::Info(&format!("  fetching git {}", src.display())));
            let opts = crate::git::FetchOptions {
                keep_git_dir: args.keep_git_dir,
                // An ssh remote is fetched through the `--ssh default` agent only (BuildKit's
                // git source mounts the `default` ssh id); without it git.rs refuses it.
                ssh_agent: self
                    .opts
                    .ssh
                    .iter()
                    .find(|s| s.id == "default")
                    .map(|s| s.socket.clone()),
                ..Default::default()
            };
            let checkout = crate::git::fetch(&src, &dir.join("tree"), &opts)
                .map_err(|e| bad(e.to_string()))?;
            self.out
                .event(Event::Info(&format!("  at commit {}", checkout.commit)));
            if let Some(want) = &args.checksum {
                let want = want.to_ascii_lowercase();
                let ok = want.len() >= 7
                    && want.bytes().all(|b| b.is_ascii_hexdigit())
                    && checkout.commit.starts_with(&want);
                if !ok {
                    return Err(bad(format!(
                        "--checksum={want}: {} is at commit {}",
                        src.display(),
                        checkout.commit
                    )));
                }
            }
            // The tree is copied as COPY copies a context directory (owner 0:0 unless
            // --chown, symlinks kept as symlinks), but without the repository's .dockerignore.
            let tree = crate::context::Context::plain(&checkout.dir);
            let one = copy::CopySpec {
                sources: vec![".".into()],
                heredocs: Vec::new(),
                dest: format!("{}/", spec.dest.trim_end_matches('/')),
                workdir: spec.workdir,
                owner: spec.owner,
                chmod: spec.chmod.clone(),
                exclude: spec.exclude.clone(),
            };
            let copied = copy::copy(root, &copy::Source::Context(&tree), &one).map_err(|e| {
                BuildError::Copy {
                    file: self.file.clone(),
                    line: ins.start_line,
                    instruction: "ADD".into(),
                    source: e,
                }
            })?;
            written.extend(copied);
        }
        Ok(written)
    }

    /// Splits ADD sources into local tar archives (extracted) and the rest (copied), judging
    /// each matched file by its content as docker does.
    fn split_archives(&self, sources: &[String]) -> Result<(Vec<PathBuf>, Vec<String>), String> {
        let mut archives = Vec::new();
        let mut rest = Vec::new();
        for s in sources {
            let matched = self.context.expand(s).map_err(|e| e.to_string())?;
            let mut any = false;
            let mut archive_names = Vec::new();
            for rel in &matched {
                // Resolved inside the context: a symlink to an archive is followed (as BuildKit
                // does), a symlink out of the context is not.
                let Some(inside) = self.context.resolve(rel).map_err(|e| e.to_string())? else {
                    continue;
                };
                let abs = self.context.root().join(&inside);
                if !fs::symlink_metadata(&abs).is_ok_and(|m| m.is_file()) {
                    continue;
                }
                match add::sniff(&abs).map_err(|e| format!("{}: {e}", rel.display()))? {
                    add::ArchiveKind::Tar => {
                        archives.push(inside);
                        archive_names.push(rel.clone());
                        any = true;
                    }
                    add::ArchiveKind::NotArchive => {}
                }
            }
            if !any {
                rest.push(s.clone());
            } else {
                // Other (non-archive) files matched by the same pattern are copied one by one.
                for rel in matched {
                    if !archive_names.contains(&rel) {
                        rest.push(rel.display().to_string());
                    }
                }
            }
        }
        Ok((archives, rest))
    }

    /// Whether a step's changes can only be found by comparing the tree: RUN, and ADD of a
    /// local archive.
    fn needs_walk(&self, ins: &Instruction) -> bool {
        match ins {
            Instruction::Run(_) => true,
            // `ADD --unpack=true <url>`: whether the download is an archive is known only
            // once it is fetched, so the tree is indexed before the step.
            Instruction::Add(a)
                if a.unpack == Some(true)
                    && a.sources.iter().any(|s| {
                        (s.starts_with("http://") || s.starts_with("https://"))
                            && !crate::git::is_git_url(s)
                    }) =>
            {
                true
            }
            Instruction::Add(a) if a.from.is_none() && a.unpack != Some(false) => self
                .split_archives(&a.sources)
                .is_ok_and(|(archives, _)| !archives.is_empty()),
            _ => false,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        ins: &Spanned<Instruction>,
        r: &kiln_dockerfile::RunInstr,
        config: &ImageConfig,
        root: &Root,
        env: &StageEnv,
        results: &Results,
        stage: &PlannedStage,
    ) -> Result<StepOutcome, BuildError> {
        // Images a bind mount names are pulled and unpacked before the closures below borrow
        // the builder.
        for m in &r.mounts {
            if let Some(from) = &m.from {
                if let Ok(FromRef::Image(image)) = self.plan.resolve_from(stage.index, from) {
                    self.image_root(&image)
                        .map_err(|e| self.pull_for_from_error(ins, from, e))?;
                }
            }
        }
        let bad = |m: String| self.step_error(ins, m);
        let scratch = self
            .work
            .join(format!("run-{}-{}", stage.index, ins.start_line));
        fs::create_dir_all(&scratch).map_err(|source| BuildError::Io {
            what: "creating the step's scratch directory",
            path: scratch.clone(),
            source,
        })?;
        let _scratch_cleanup = WorkDir(scratch.clone());
        let shell = metadata::shell_of(config);
        let argv = run::argv(r, &shell, &scratch).map_err(|e| bad(e.to_string()))?;
        // Environment: config Env and the build args in scope; of an ARG and an ENV with the
        // same name the later one wins, as in BuildKit's LLB state.
        let envv = env.run_env();
        let user_spec = config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "0".into());
        let user = kiln_sandbox::resolve_user(root.path(), &user_spec)
            .map_err(|e| bad(format!("USER {user_spec}: {e}")))?;
        let cwd = config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into());
        let cache_root = self.opts.state_dir.join("cache-mounts");
        let context = &self.context;
        let bind_copy = scratch.join("context-bind");
        let resolve_context = |src: &str| -> Result<PathBuf, String> {
            // The context as COPY sees it: resolved inside it, and without what .dockerignore
            // hides (a filtered copy of the tree when there is a .dockerignore).
            context
                .bind_source(&crate::context::clean_rel(src), &bind_copy)
                .map_err(|e| e.to_string())
        };
        let image_roots = &self.image_roots;
        let plan = &self.plan;
        let resolve_from = |from: &str, src: &str| -> Result<PathBuf, String> {
            match plan
                .resolve_from(stage.index, from)
                .map_err(|e| e.to_string())?
            {
                FromRef::Stage(idx) => {
                    let r = results
                        .get(&idx)
                        .ok_or_else(|| format!("from={from}: stage {idx} was not built"))?;
                    if !r.filled {
                        return Err(not_kept(from, idx));
                    }
                    Root::open(&r.root)
                        .and_then(|root| root.resolve(crate::context::clean_rel(src)))
                        .map_err(|e| e.to_string())
                }
                FromRef::Image(image) => {
                    let dir = image_roots
                        .get(&image)
                        .ok_or_else(|| format!("from={from}: image {image} was not pulled"))?;
                    Root::open(dir)
                        .and_then(|root| root.resolve(crate::context::clean_rel(src)))
                        .map_err(|e| e.to_string())
                }
            }
        };
        let mc = run::MountContext {
            scratch: &scratch,
            cache_root: &cache_root,
            secrets: &self.opts.secrets,
            ssh: &self.opts.ssh,
            env: &envv,
            resolve_from: &resolve_from,
            resolve_context: &resolve_context,
            workdir: &cwd,
        };
        fs::create_dir_all(&cache_root).map_err(|source| BuildError::Io {
            what: "creating the cache-mount directory",
            path: cache_root.clone(),
            source,
        })?;
        let step_mounts = run::mounts(&r.mounts, &mc).map_err(|e| bad(e.to_string()))?;
        // Held (not `_`) until the step has run: the cache mounts' `sharing=` locks.
        let _cache_locks = step_mounts.cache_locks;
        // Likewise the ssh-agent relays behind `--mount=type=ssh` (dropped before the scratch dir).
        let _ssh_agents = step_mounts.ssh_agents;
        let mut mounts = step_mounts.mounts;
        if argv.first().is_some_and(|a| a.starts_with("/.kiln-run/")) {
            mounts.push(kiln_sandbox::Mount::Bind {
                source: scratch.join("heredoc-script"),
                target: argv[0].clone(),
                readonly: true,
            });
        }
        let isolation = self.isolation()?;
        let mut spec = kiln_sandbox::RunSpec::new(root.path(), argv.clone());
        spec.env = envv;
        for (k, v) in step_mounts.secret_env {
            spec.env.retain(|(ek, _)| ek != &k);
            spec.env.push((k, v));
        }
        spec.cwd = cwd;
        // The sandbox's own scratch files (hosts, resolv.conf, hostname) go in this step's
        // directory under the state dir, not in $TMPDIR: a FROM-scratch executor image has no
        // /tmp, and every RUN failed there.
        spec.host.scratch = scratch.clone();
        spec.user = kiln_sandbox::User {
            uid: user.uid,
            gid: user.gid,
            additional_gids: user.additional_gids.clone(),
        };
        spec.mounts = mounts;
        spec.network = match r.network {
            Some(kiln_dockerfile::Network::None) => kiln_sandbox::Network::None,
            _ => kiln_sandbox::Network::Host,
        };
        spec.isolation = isolation;
        // Overlay: only in userns mode (the sandbox mounts it inside the user namespace).
        // Not under --single-snapshot: there the target stage's steps make no layers of their own.
        let single = self.opts.single_snapshot && stage.index == self.plan.target;
        let overlay_dir = (self.overlay && !single && isolation == kiln_sandbox::Isolation::Userns)
            .then(|| {
                self.work
                    .join(format!("overlay-{}-{}", stage.index, ins.start_line))
            });
        if let Some(dir) = &overlay_dir {
            let (upper, work) = (dir.join("upper"), dir.join("work"));
            for d in [&upper, &work] {
                fs::create_dir_all(d).map_err(|source| BuildError::Io {
                    what: "creating the overlay directories",
                    path: d.clone(),
                    source,
                })?;
            }
            spec.overlay = Some(kiln_sandbox::OverlayDirs { upper, work });
        }
        // `RUN --security=insecure`: every capability (still inside the step's namespaces);
        // BuildKit's entitlement check is the user's explicit flag here.
        spec.keep_all_capabilities =
            matches!(r.security, Some(kiln_dockerfile::Security::Insecure));
        let mut stdout = OutputWriter {
            out: self.out,
            stderr: false,
        };
        let mut stderr = OutputWriter {
            out: self.out,
            stderr: true,
        };
        let outcome = kiln_sandbox::run(
            &spec,
            kiln_sandbox::Output::Writer(&mut stdout),
            kiln_sandbox::Output::Writer(&mut stderr),
        )
        .map_err(|source| BuildError::Sandbox {
            file: self.file.clone(),
            line: ins.start_line,
            source,
        })?;
        for w in &outcome.warnings {
            self.out.event(Event::Warning(w));
        }
        if !outcome.status.success() {
            return Err(BuildError::RunFailed {
                file: self.file.clone(),
                line: ins.start_line,
                command: crate::output::redact_urls(
                    ins.original
                        .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                        .trim(),
                )
                .into_owned(),
                code: outcome.status.code(),
            });
        }
        Ok(StepOutcome {
            fs: match overlay_dir {
                Some(dir) => FsEffect::Overlay(dir.join("upper")),
                None => FsEffect::Unknown,
            },
            created_by: run::history(&argv, &env.history_args()),
        })
    }

    fn isolation(&self) -> Result<kiln_sandbox::Isolation, BuildError> {
        match self.opts.isolation.as_deref() {
            Some("userns") => Ok(kiln_sandbox::Isolation::Userns),
            Some("chroot") => Ok(kiln_sandbox::Isolation::Chroot),
            Some("container") => Err(BuildError::Unsupported {
                what: "--isolation=container (building on the live root file system)".into(),
                line: None,
            }),
            Some(other) => Err(BuildError::Option {
                flag: "--isolation",
                message: format!("{other:?}: use userns, chroot or container"),
            }),
            None => {
                let d = kiln_sandbox::detect(Path::new("/proc")).map_err(|source| {
                    BuildError::Option {
                        flag: "--isolation",
                        message: format!("no RUN isolation works here: {source}"),
                    }
                })?;
                if d.isolation == kiln_sandbox::Isolation::Container {
                    return Err(BuildError::Unsupported {
                        what: format!(
                            "RUN needs --isolation=container here ({}), which builds on the live root file system",
                            d.reason
                        ),
                        line: None,
                    });
                }
                Ok(d.isolation)
            }
        }
    }

    fn finish(mut self, stage: StageResult, started: Instant) -> Result<BuildOutcome, BuildError> {
        self.join_cache_stores();
        // Nothing reads the stages' root file systems any more: remove them while the image is
        // written out and pushed (thousands of files take seconds on a busy disk). Joined
        // before this returns, also on an error, so WorkDir's removal never races it.
        let _remover = (!self.opts.detach_cleanup).then(|| BackgroundRemoval::start(&self.work));
        let mut config = stage.config;
        if !self.opts.labels.is_empty() {
            let labels = config
                .config_mut()
                .labels
                .get_or_insert_with(Default::default);
            for (k, v) in &self.opts.labels {
                labels.insert(k.clone(), v.clone());
            }
        }
        config.created = Some(self.created.clone());
        // The target stage's `FROM --platform=` wins over --custom-platform, as in BuildKit.
        let platform = self
            .plan
            .stage(self.plan.target)
            .and_then(|st| st.platform.as_deref())
            .and_then(|p| p.parse::<Platform>().ok())
            .unwrap_or_else(|| self.platform.clone());
        config.architecture = platform.architecture().to_string();
        config.os = platform.os().to_string();
        config.variant = platform.variant().map(str::to_string);
        if self.opts.reproducible {
            for h in &mut config.history {
                h.created = Some(self.created.clone());
            }
        }
        // Annotations need OCI media types: without an explicit --image-format, a build with
        // --annotation is written as OCI even on a Docker-format base (checked up front when
        // --image-format=docker is explicit).
        let format = match self.opts.image_format {
            Some(f) => f,
            None if !self.opts.annotations.is_empty() => ImageFormat::Oci,
            None => stage.format,
        };
        let assembled = image::assemble(
            &self.store,
            &config,
            &stage.layers,
            format,
            &self.opts.annotations,
        )?;
        let dests = &self.opts.destinations;
        if let Some(dir) = &self.opts.oci_layout_path {
            let name = dests
                .first()
                .and_then(|d| d.parse::<Reference>().ok())
                .and_then(|r| r.tag().map(str::to_string))
                .unwrap_or_else(|| "latest".into());
            image::write_oci_layout(dir, &self.store, &assembled, Some(&name))?;
            self.out.event(Event::Info(&format!(
                "wrote OCI layout {} (tag {name})",
                dir.display()
            )));
        }
        if let Some(path) = &self.opts.tar_path {
            let tags: Vec<String> = if dests.is_empty() {
                vec!["image:latest".into()]
            } else {
                dests
                    .iter()
                    .filter_map(|d| d.parse::<Reference>().ok())
                    .map(|r| format!("{}:{}", r.name(), r.tag().unwrap_or("latest")))
                    .collect()
            };
            image::write_tarball(path, &self.store, &assembled, &tags)?;
            self.out.event(Event::Info(&format!(
                "wrote docker-archive {}",
                path.display()
            )));
        }
        let mut pushed = Vec::new();
        let mut b = self;
        if b.opts.push && !b.opts.destinations.is_empty() {
            let refs = b
                .opts
                .destinations
                .iter()
                .map(|d| b.parse_ref(d))
                .collect::<Result<Vec<_>, _>>()?;
            let sources = std::mem::take(&mut b.sources);
            let store = b.store.clone();
            let t0 = Instant::now();
            let client = Arc::clone(b.client());
            let what = format!("pushing {}", refs[0]);
            let retry = &b.opts.registry.retry;
            let report = b.with_progress(&client, &what, || {
                // `--push-retry N` (Kaniko): N more attempts of the whole push after a failed
                // one, each with the client's own per-request retries; backoff from 1 s.
                let mut attempt = 0;
                loop {
                    match client.push_image_with_sources(
                        &refs,
                        &assembled.manifest_bytes,
                        &assembled.manifest_media_type,
                        &store,
                        &sources,
                    ) {
                        Err(e) if attempt < b.opts.push_retry => {
                            tracing::warn!("push failed, trying again (--push-retry): {e}");
                            std::thread::sleep(retry.backoff(attempt));
                            attempt += 1;
                        }
                        r => break r,
                    }
                }
            })?;
            let digest = report
                .digest
                .unwrap_or_else(|| assembled.manifest_digest.clone());
            let secs = t0.elapsed().as_secs_f64();
            for r in &refs {
                b.out.event(Event::Info(&format!(
                    "pushed {r}@{digest} ({} blobs uploaded, {} mounted, {} already there; {:.1} MB image in {secs:.2}s)",
                    report.uploaded,
                    report.mounted,
                    report.existed,
                    assembled.size() as f64 / 1e6
                )));
                pushed.push((r.to_string(), digest.clone()));
            }
        }
        write_digest_files(b.opts, &assembled)?;
        b.out.event(Event::Summary {
            digest: &assembled.manifest_digest.to_string(),
            size: assembled.size(),
            layers: assembled.layers.len(),
            elapsed: started.elapsed(),
        });
        Ok(BuildOutcome {
            image: assembled,
            pushed,
            leftover: None,
        })
    }
}

fn write_digest_files(opts: &BuildOptions, image: &Assembled) -> Result<(), BuildError> {
    let write = |path: &Path, text: String| {
        fs::write(path, text).map_err(|source| BuildError::Io {
            what: "writing the digest file",
            path: path.to_path_buf(),
            source,
        })
    };
    let digest = image.manifest_digest.to_string();
    if let Some(p) = &opts.digest_file {
        write(p, digest.clone())?;
    }
    let refs: Vec<Reference> = opts
        .destinations
        .iter()
        .filter_map(|d| d.parse().ok())
        .collect();
    if let Some(p) = &opts.image_name_with_digest_file {
        let lines: Vec<String> = refs
            .iter()
            .map(|r| format!("{}@{digest}\n", r.name()))
            .collect();
        write(p, lines.concat())?;
    }
    if let Some(p) = &opts.image_name_tag_with_digest_file {
        let lines: Vec<String> = refs
            .iter()
            .map(|r| format!("{}:{}@{digest}\n", r.name(), r.tag().unwrap_or("latest")))
            .collect();
        write(p, lines.concat())?;
    }
    Ok(())
}

/// The layers of a pulled image as records, each with its config diffID; the manifest and the
/// config must agree on the layer count.
fn pulled_layers(
    pulled: &kiln_registry::PulledImage,
    config: &ImageConfig,
    name: &str,
) -> Result<Vec<LayerRecord>, BuildError> {
    let bad = |message: String| BuildError::Reference {
        reference: name.to_string(),
        message,
    };
    if config.rootfs.diff_ids.len() != pulled.layers.len() {
        return Err(bad(format!(
            "the manifest has {} layers but the config {} diff_ids",
            pulled.layers.len(),
            config.rootfs.diff_ids.len()
        )));
    }
    pulled
        .layers
        .iter()
        .zip(config.rootfs.diff_ids.iter())
        .map(|(d, diff_id)| {
            Ok(LayerRecord {
                digest: kiln_oci::manifest::descriptor_digest(d).map_err(|e| bad(e.to_string()))?,
                diff_id: diff_id.clone(),
                size: d.size(),
                media_type: d.media_type().to_string(),
            })
        })
        .collect()
}

/// The error for a `--from` naming a stage whose rootfs was not kept (see
/// [`Builder::read_by_from`]).
fn not_kept(from: &str, idx: usize) -> String {
    format!(
        "not supported yet: --from={from} in an ONBUILD trigger names stage {idx}, whose file system was not kept"
    )
}

/// Whether a step reads or writes the stage's rootfs (metadata-only steps do not).
fn touches_root(ins: &Instruction, kaniko_volumes: bool) -> bool {
    match ins {
        Instruction::Run(_)
        | Instruction::Copy(_)
        | Instruction::Add(_)
        | Instruction::Workdir(_) => true,
        Instruction::Volume(_) => kaniko_volumes,
        _ => false,
    }
}

/// Whether a step reads files of the build context (COPY/ADD without --from, a RUN with a
/// bind mount of the context).
fn reads_context(ins: &Instruction) -> bool {
    match ins {
        Instruction::Copy(a) | Instruction::Add(a) => a.from.is_none(),
        Instruction::Run(r) => r
            .mounts
            .iter()
            .any(|m| m.kind == kiln_dockerfile::MountType::Bind && m.from.is_none()),
        _ => false,
    }
}

/// Removes everything inside `dir` (not `dir`: a [`Root`] holds it open).
fn empty_dir(dir: &Path) -> Result<(), BuildError> {
    let io = |source| BuildError::Io {
        what: "emptying a rootfs",
        path: dir.to_path_buf(),
        source,
    };
    for e in fs::read_dir(dir).map_err(io)? {
        let p = e.map_err(io)?.path();
        let r = if p.is_dir() && !p.is_symlink() {
            remove_tree(&p)
        } else {
            fs::remove_file(&p)
        };
        r.map_err(io)?;
    }
    Ok(())
}

/// Whether a step's result depends on something its cache key does not cover: the bytes
/// behind an ADD URL, or an image named by `--from` (a tag can move).
fn content_not_in_key(ins: &Instruction, from_is_image: &dyn Fn(&str) -> bool) -> bool {
    match ins {
        Instruction::Add(a) | Instruction::Copy(a) => {
            a.sources.iter().any(|s| {
                s.starts_with("http://") || s.starts_with("https://") || crate::git::is_git_url(s)
            }) || a.from.as_deref().is_some_and(from_is_image)
        }
        Instruction::Run(r) => r
            .mounts
            .iter()
            .any(|m| m.from.as_deref().is_some_and(from_is_image)),
        _ => false,
    }
}

/// The owner BuildKit gives files it creates for `--chown=SPEC` and for WORKDIR under USER:
/// a bare numeric uid means uid:uid (llb's UserOpt by id sets both, without a passwd lookup);
/// names and `user:group` forms are resolved in the rootfs's passwd/group.
fn file_owner(root: &Root, spec: &str) -> Result<(u32, u32), String> {
    if !spec.contains(':') {
        if let Ok(uid) = spec.parse::<u32>() {
            return Ok((uid, uid));
        }
    }
    match kiln_sandbox::resolve_user(root.path(), spec) {
        Ok(r) => Ok((r.uid, r.gid)),
        // `root` is uid 0 even in an image without /etc/passwd (FROM scratch), as docker's
        // builders treat it.
        Err(_) if spec == "root" || spec == "root:root" => Ok((0, 0)),
        Err(e) => Err(e.to_string()),
    }
}

/// BuildKit's history text of COPY/ADD: flags --parents, --chown, --chmod (never --from),
/// sources, heredocs as <<NAME, destination.
fn copy_history(name: &str, args: &kiln_dockerfile::CopyArgs) -> String {
    let mut text = format!("{name} ");
    if args.parents {
        text.push_str("--parents ");
    }
    if let Some(c) = &args.chown {
        text.push_str(&format!("--chown={c} "));
    }
    if let Some(c) = &args.chmod {
        text.push_str(&format!("--chmod={c} "));
    }
    // A URL's user info (`https://user:token@host/…`) never reaches the image's history.
    let mut words: Vec<String> = args
        .sources
        .iter()
        .map(|s| crate::git::redact_url(s))
        .collect();
    words.extend(args.heredocs.iter().map(|h| format!("<<{}", h.name)));
    words.push(args.dest.clone());
    text.push_str(&words.join(" "));
    text.push_str(" # buildkit");
    text
}

fn command_argv(config: &ImageConfig, cl: &kiln_dockerfile::CommandLine) -> Vec<String> {
    match cl {
        kiln_dockerfile::CommandLine::Exec(v) => metadata::command_argv(config, Some(v), ""),
        kiln_dockerfile::CommandLine::Shell(s) => metadata::command_argv(config, None, s),
    }
}

fn first_word(s: &str) -> String {
    s.split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// The config of `FROM scratch`, as BuildKit makes it (`emptyImage`): the platform, the default
/// `PATH` and `WorkingDir` `/`.
fn scratch_config(platform: &Platform) -> ImageConfig {
    let mut c = ImageConfig {
        architecture: platform.architecture().to_string(),
        os: platform.os().to_string(),
        variant: platform.variant().map(str::to_string),
        ..ImageConfig::default()
    };
    c.set_env("PATH", kiln_sandbox::DEFAULT_PATH);
    c.config_mut().working_dir = Some("/".into());
    c
}

/// Forwards a RUN's output to the build's output sink.
struct OutputWriter<'a> {
    out: &'a dyn Output,
    stderr: bool,
}

impl std::io::Write for OutputWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.event(Event::RunOutput {
            stderr: self.stderr,
            bytes: buf,
        });
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn scratch_is_buildkit_empty_image() {
        let c = scratch_config(&"linux/amd64".parse().unwrap());
        assert_eq!(c.env_pairs()[0].0, "PATH");
        assert_eq!(c.config.unwrap().working_dir.as_deref(), Some("/"));
    }
}

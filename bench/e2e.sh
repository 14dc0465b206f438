#!/bin/bash
# End-to-end benchmark: the same workloads built and pushed by kiln, buildah and BuildKit (in
# Debian's dockerd) in ONE run, against a lower bound measured in the same run. Not part of
# `cargo test` or scripts/test.sh.
#
#   bash bench/e2e.sh [--quick] [--reps N] [--only W1,W2]   (repo root, as root; N defaults to 3)
#
#   --quick    skips the Debian (debootstrap + apt-get) and the 1 GB workloads
#   --reps N   measurements per builder x workload; the table shows the median
#   --only L   only these workloads (comma-separated, e.g. small-app,rebuild,rebuild-multi)
# Environment: KILN (a kiln binary; default: cargo build --release -p kiln into
# $CARGO_TARGET_DIR or target/), KILN_ARGS (extra kiln build flags), KEEP=1 (keep the work dir),
# WORKLOADS (space-separated subset of: small-app 60k-files 1gb-file apt-hello multi-stage
# rebuild rebuild-multi; --only wins), BUILDERS (subset of: kiln buildah buildkit lower-bound),
# KILN_REBUILD_STATE=fresh (kiln rebuilds in a fresh --kiln-dir: the registry cache only).
# DROP_CACHES=0 (keep the page cache between measurements; see settle()).
# The rebuild workloads measure a cold build (row "<name>-cold") and then, after one context
# file changed, the rebuild: kiln with the cold build's --kiln-dir (its local cache and
# unpacked trees) and the registry cache, buildah with its --layers storage, BuildKit with
# dockerd's cache: each keeps its state, like for like. KILN_REBUILD_STATE=fresh measures
# the ephemeral CI pod instead (no peer has a counterpart: theirs would be a cold build).
#
# It installs what is missing with apt-get (docker-registry buildah docker.io debootstrap skopeo
# time busybox-static python3), starts its own registry on 127.0.0.1:<free port> and its own
# dockerd (private socket and data root, --iptables=false --bridge=none --storage-driver=vfs),
# and removes all of it on exit. The Debian rootfs is cached in /var/tmp/kiln-bench.
# Per measurement: wall time of build + push, peak RSS of the builder's process tree (sampled
# from /proc every 20 ms by bench/e2e/measure.py, which says why not GNU time or a cgroup),
# and the pushed image size (config + compressed layers, from the manifest).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
HERE="$REPO/bench/e2e"
QUICK=0
REPS=3
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --reps) REPS="$2"; shift ;;
        --only) ONLY="$2"; shift ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[ "$(id -u)" = 0 ] || { echo "run as root: dockerd, buildah's storage and chroot need it" >&2; exit 1; }

CACHE=/var/tmp/kiln-bench
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/run.XXXXXX")
RESULTS="$WORK/results.tsv"
LOGS="$CACHE/last-run-logs"
rm -rf "$LOGS"; mkdir -p "$LOGS"
NOTES="$WORK/notes"
: >"$NOTES"
note() { echo "- $*" >>"$NOTES"; echo "note: $*" >&2; }
say() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
MEASURE="python3 $HERE/measure.py"
REG_PID="" DOCKERD_PID=""

cleanup() {
    set +e
    if [ -n "$DOCKERD_PID" ]; then
        kill "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$DOCKERD_PID" 2>/dev/null
    fi
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    # Leftover mounts under the work dir (dockerd's, buildah's overlay), deepest first.
    awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
    cp "$WORK"/*.log "$LOGS"/ 2>/dev/null
    if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- tools
PKGS="docker-registry buildah docker.io skopeo time busybox-static python3"
[ "$QUICK" = 1 ] || PKGS="$PKGS debootstrap"
MISSING=""
for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || MISSING="$MISSING $p"; done
if [ -n "$MISSING" ]; then
    say "apt-get install$MISSING"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $MISSING >/dev/null
fi
DOCKER_BIN=/usr/bin/docker # Debian's CLI, not another one earlier in PATH
if [ -z "${KILN:-}" ]; then
    say "cargo build --release -p kiln"
    cargo build --release -q -p kiln
    KILN="${CARGO_TARGET_DIR:-$REPO/target}/release/kiln"
fi

# ---------------------------------------------------------------- registry
mkdir -p "$WORK/registry"
cat >"$WORK/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}, delete: {enabled: true}}
http: {addr: "127.0.0.1:0", secret: bench-only}
EOF
# level warn keeps the log small; the "listening on" line is logged at info, so ask for it.
sed -i 's/level: warn/level: info/' "$WORK/registry.yml"
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
PORT=""
for _ in $(seq 100); do
    PORT=$(grep -oE 'listening on 127\.0\.0\.1:[0-9]+' "$WORK/registry.log" | grep -oE '[0-9]+$' || true)
    [ -n "$PORT" ] && break
    sleep 0.1
done
[ -n "$PORT" ] || { cat "$WORK/registry.log" >&2; echo "registry did not start" >&2; exit 1; }
REG="127.0.0.1:$PORT"
say "registry at $REG"

# ---------------------------------------------------------------- dockerd (BuildKit)
D="$WORK/d"
mkdir -p "$D"
echo '{}' >"$D/daemon.json"
export DOCKER_CONFIG="$WORK/docker-cli"
mkdir -p "$DOCKER_CONFIG"
echo '{}' >"$DOCKER_CONFIG/config.json" # buildah and skopeo read it too: no host credentials
DOCKER="$DOCKER_BIN -H unix://$D/docker.sock"
HAVE_BUILDKIT=0
dockerd --config-file "$D/daemon.json" -H "unix://$D/docker.sock" --data-root "$D/data" \
    --exec-root "$D/exec" --pidfile "$D/docker.pid" --iptables=false --ip-masq=false \
    --bridge=none --storage-driver=vfs --default-ulimit nofile=1024:1024 \
    --default-ulimit nproc=4096:4096 >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 120); do
    if $DOCKER version >/dev/null 2>&1; then HAVE_BUILDKIT=1; break; fi
    kill -0 "$DOCKERD_PID" 2>/dev/null || break
    sleep 0.5
done
if [ "$HAVE_BUILDKIT" = 1 ]; then
    say "dockerd $($DOCKER version -f '{{.Server.Version}}') on $D/docker.sock"
else
    note "BuildKit skipped: dockerd did not start (log: $LOGS/dockerd.log)"
fi
if $DOCKER_BIN buildx version >/dev/null 2>&1; then
    note "docker buildx is installed but not used: the dockerd-embedded BuildKit (DOCKER_BUILDKIT=1 docker build) + docker push is measured"
fi

# ---------------------------------------------------------------- base images
# One deterministic layer (sorted, mtime 0, root-owned, gzip -n) per base, as an OCI layout
# kept for the lower bound, pushed with skopeo. The rootfs stays extracted for the lower bound.
make_base() { # NAME TAG ROOTFS_DIR TAR
    local name=$1 tag=$2 dir=$3 tar=$4
    local diffid
    diffid=$(sha256sum <"$tar" | cut -d' ' -f1)
    gzip -1 -n -c <"$tar" >"$WORK/base/$name.tar.gz"
    python3 "$HERE/oci.py" new "$WORK/base/$name-oci" "$tag" "$WORK/base/$name.tar.gz" "sha256:$diffid"
    skopeo copy -q --dest-tls-verify=false "oci:$WORK/base/$name-oci:$tag" "docker://$REG/bench/$name:$tag"
}
mkdir -p "$WORK/base/busybox"/{bin,etc,tmp,root}
BB="$WORK/base/busybox"
cp /bin/busybox "$BB/bin/busybox"
/bin/busybox --list-full | while read -r a; do
    [ "$a" = bin/busybox ] && continue
    mkdir -p "$BB/$(dirname "$a")"
    ln -sf /bin/busybox "$BB/$a"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$BB/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$BB/etc/group"
chmod 1777 "$BB/tmp"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$BB" -cf "$WORK/base/busybox.tar" .
make_base busybox latest "$BB" "$WORK/base/busybox.tar"
say "pushed $REG/bench/busybox:latest"

ALL="small-app 60k-files 1gb-file apt-hello multi-stage rebuild rebuild-multi"
WORKLOADS="${WORKLOADS:-$ALL}"
[ -n "$ONLY" ] && WORKLOADS="${ONLY//,/ }"
for w in $WORKLOADS; do
    case " $ALL " in *" $w "*) ;; *) echo "unknown workload $w (one of: $ALL)" >&2; exit 2 ;; esac
done
if [ "$QUICK" = 1 ]; then
    WORKLOADS=$(echo " $WORKLOADS " | sed 's/ 1gb-file / /; s/ apt-hello / /')
    note "--quick: skipped the 1gb-file and apt-hello workloads"
fi
case " $WORKLOADS " in *" apt-hello "*)
    say "Debian bookworm minbase base (cached in $CACHE)"
    if DEB_TAR=$(bash "$HERE/debian-rootfs.sh" "$CACHE"); then
        mkdir -p "$WORK/base/debian"
        tar --numeric-owner -xpf "$DEB_TAR" -C "$WORK/base/debian"
        make_base debian bookworm "$WORK/base/debian" "$DEB_TAR"
        say "pushed $REG/bench/debian:bookworm"
    else
        note "apt-hello skipped: debootstrap failed (see above)"
        WORKLOADS=$(echo " $WORKLOADS " | sed 's/ apt-hello / /')
    fi
esac

# ---------------------------------------------------------------- workloads
# Each workload: Dockerfile in $WORK/df/NAME, context in $WORK/ctx/NAME (the Dockerfile is
# outside the context so COPY . copies only the context), and the lower bound's steps.
mkdir -p "$WORK/df" "$WORK/ctx"
BUSYBOX="$REG/bench/busybox:latest"
mkdir -p "$WORK/ctx/small-app"
for i in $(seq -w 1 20); do
    (yes "line $i of a small source file of the benchmark application" || true) | head -c 8000 >"$WORK/ctx/small-app/file$i.txt"
done
# Like a real app: a dependency install (a few seconds of work: 3,000 small module files, a
# gzip -9 bundle of 19 MB of numbers, and 4 MiB of incompressible "native" code, so the cached
# layer is ~4.5 MB to download; busybox only, no network) BEFORE the sources are copied, then a
# cheap build step, so a one-file change reruns only the steps from the COPY on.
W1_RUN1='mkdir -p /deps/node_modules && cd /deps/node_modules && d=0 && while [ $d -lt 50 ]; do mkdir pkg$d && f=0 && while [ $f -lt 60 ]; do echo "module.exports = \"$d.$f\";" >pkg$d/m$f.js; f=$((f + 1)); done; d=$((d + 1)); done && seq 1 2500000 | gzip -9 >/deps/bundle.gz && head -c 4194304 /dev/urandom >/deps/native.so && sha256sum /deps/bundle.gz /deps/native.so >/deps/lock'
W1_RUN2='mkdir -p /app/bin && printf "#!/bin/sh\necho hello from the app\n" >/app/bin/run && chmod 755 /app/bin/run && cd /app/src && cat *.txt | wc -c >/app/size && sha256sum *.txt >/app/sums'
cat >"$WORK/df/small-app" <<EOF
FROM $BUSYBOX
RUN $W1_RUN1
COPY . /app/src/
RUN $W1_RUN2
CMD ["/app/bin/run"]
EOF
cp "$WORK/df/small-app" "$WORK/df/rebuild"
# The multi-stage app: the same dependency install and sources in a builder stage, a cheap
# build there, and only its output in the final stage.
W6_RUN='mkdir -p /out && cd /src && cat *.txt | gzip -1 >/out/app.gz && cp /deps/lock /out/deps.lock'
cat >"$WORK/df/rebuild-multi" <<EOF
FROM $BUSYBOX AS builder
RUN $W1_RUN1
COPY . /src/
RUN $W6_RUN
FROM $BUSYBOX
COPY --from=builder /out /app
CMD ["ls", "-l", "/app"]
EOF

mkdir -p "$WORK/ctx/60k-files"
W2_RUN='mkdir /data && cd /data && d=0 && while [ $d -lt 60 ]; do mkdir d$d && f=0 && while [ $f -lt 1000 ]; do echo "file $d/$f" >d$d/f$f; f=$((f + 1)); done; d=$((d + 1)); done'
printf 'FROM %s\nRUN %s\n' "$BUSYBOX" "$W2_RUN" >"$WORK/df/60k-files"

# /dev/urandom gives ~40 MB/s here: 1 MiB of it repeated 1024 times is as incompressible for
# gzip (deflate's window is 32 KiB) and takes ~1 s to write.
mkdir -p "$WORK/ctx/1gb-file"
W3_RUN='head -c 1048576 /dev/urandom >/seed && i=0 && while [ $i -lt 1024 ]; do cat /seed; i=$((i + 1)); done >/big && rm /seed'
printf 'FROM %s\nRUN %s\n' "$BUSYBOX" "$W3_RUN" >"$WORK/df/1gb-file"

mkdir -p "$WORK/ctx/apt-hello"
W4_RUN='apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y hello && rm -rf /var/lib/apt/lists/*'
printf 'FROM %s\nRUN %s\n' "$REG/bench/debian:bookworm" "$W4_RUN" >"$WORK/df/apt-hello"

mkdir -p "$WORK/ctx/multi-stage"
W5_RUN='mkdir /out && seq 1 300000 >/out/numbers && sha256sum /out/numbers >/out/numbers.sha256'
cat >"$WORK/df/multi-stage" <<EOF
FROM $BUSYBOX AS builder
RUN $W5_RUN
FROM $BUSYBOX
COPY --from=builder /out /opt/out
CMD ["cat", "/opt/out/numbers.sha256"]
EOF

# ---------------------------------------------------------------- builders
# buildah: overlay when it works here, else vfs.
BUILDAH_DRIVER=vfs
mkdir -p "$WORK/probe"
printf 'FROM %s\nRUN echo ok >/probe\n' "$BUSYBOX" >"$WORK/probe/Dockerfile"
if buildah --root "$WORK/probe/root" --runroot "$WORK/probe/run" --storage-driver overlay \
    bud --isolation chroot --tls-verify=false -q -t probe "$WORK/probe" >"$WORK/probe.log" 2>&1; then
    BUILDAH_DRIVER=overlay
fi
buildah --root "$WORK/probe/root" --runroot "$WORK/probe/run" --storage-driver overlay rmi -af >/dev/null 2>&1 || true
awk -v w="$WORK/probe" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
rm -rf "$WORK/probe"
note "buildah $(buildah --version | awk '{print $3}') storage driver: $BUILDAH_DRIVER$([ $BUILDAH_DRIVER = vfs ] && echo " (overlay failed: $(tail -1 "$WORK/probe.log"))")"
BUILDAH_ROOT="$WORK/buildah"
BA="buildah --root $BUILDAH_ROOT/root --runroot $BUILDAH_ROOT/run --storage-driver $BUILDAH_DRIVER"

KILN_CACHE=0
if "$KILN" build --help 2>&1 | grep -q -- '--cache-repo'; then KILN_CACHE=1; fi

reset_builders() { # fresh state for every builder: cold builds
    rm -rf "$WORK/kiln"
    $BA rmi -af >/dev/null 2>&1 || true
    awk -v w="$BUILDAH_ROOT" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount -l
    rm -rf "$BUILDAH_ROOT"
    if [ "$HAVE_BUILDKIT" = 1 ]; then
        $DOCKER system prune -af >/dev/null 2>&1 || true
        $DOCKER builder prune -af >/dev/null 2>&1 || true
    fi
    settle
}

# Untimed, before every measured build, after the previous state was removed: flush what the
# previous builder wrote and what the removals freed (this disk is mounted with `discard`), drop
# the clean page cache, and wait for an idle disk; otherwise the next builder pays for the
# previous one. The drop matters on an ext4 without a journal (this machine's root file system:
# /proc/fs/jbd2 is empty): there, allocating an inode skips every inode deleted in the last
# minute whose inode-table block is still cached (recently_deleted() in fs/ext4/ialloc.c, called
# only when s_journal is NULL), one buffer-cache lookup per skipped inode for each new file. After
# the removal of a 6,000-file tree, `tar -x` of the Debian base took 5 s (all system time, 61%
# of it in recently_deleted/find_get_block_common by perf) instead of 0.9 s, and whichever
# builder or lower bound followed a large removal paid it. Dropping the page cache forgets those
# blocks; the price is that every builder starts with a cold cache (reads here run at ~1.4 GB/s).
# DROP_CACHES=0 keeps the cache (the method of the session 4 report).
settle() {
    sync
    if [ "${DROP_CACHES:-1}" = 1 ]; then echo 1 >/proc/sys/vm/drop_caches; fi
    wait_disk_idle
}

# Waits (untimed, at most 30 s) until the disk under $CACHE has completed no read, write or
# discard for half a second (/proc/diskstats, Documentation/admin-guide/iostats.rst): after `sync` the
# device may still be busy with discards of freed blocks and deferred writeback, which the
# next measured builder would otherwise pay for.
wait_disk_idle() {
    local dev
    dev=$(basename "$(df --output=source "$CACHE" | tail -n1)")
    local last="" now i
    for i in $(seq 60); do
        now=$(awk -v d="$dev" '$3 == d { print $4 + $8 + $15 }' /proc/diskstats)
        [ -n "$now" ] || return 0
        if [ "$now" = "$last" ]; then
            return 0
        fi
        last=$now
        sleep 0.5
    done
}

image_size() { # REF -> bytes of config + layers, or 0
    skopeo inspect --raw --tls-verify=false "docker://$1" 2>/dev/null | python3 "$HERE/oci.py" size 2>/dev/null || echo 0
}

record() { # REP WORKLOAD BUILDER "WALL RSS RC" REF
    local wall rss rc size=0
    read -r wall rss rc <<<"$4"
    [ "$rc" = 0 ] && size=$(image_size "$5")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$wall" "$rss" "$size" "$rc" >>"$RESULTS"
    say "  $3 $2 (rep $1): ${wall}s, peak RSS $((rss / 1024)) MB, image $size bytes, exit $rc"
    [ "$rc" = 0 ] || { note "$3 failed on $2 (rep $1), exit $rc; log: $LOGS/$3-$2-$1.log"; tail -5 "$WORK/$3-$2-$1.log" >&2 || true; }
}

# Each builder: build + push of one workload, measured. $1 workload, $2 rep, $3 context.
kiln_cmd() { # WORKLOAD REP CTX DEST [extra flags]
    local w=$1 rep=$2 ctx=$3 dest=$4
    shift 4
    echo "$KILN" build -c "$ctx" -f "$WORK/df/$w" -d "$dest" --insecure --insecure-pull \
        --kiln-dir "$WORK/kiln/state" ${KILN_ARGS:-} "$@"
}
# LABEL (when set) names the row instead of the workload: the cold build of a rebuild workload
# is recorded as "<workload>-cold".
run_kiln() {
    local w=$1 rep=$2 ctx=$3 dest="$REG/bench/rep$2/$1:kiln" extra=${4:-} name=${LABEL:-$1}
    record "$rep" "$name" kiln "$($MEASURE --log "$WORK/kiln-$name-$rep.log" -- $(kiln_cmd "$w" "$rep" "$ctx" "$dest" $extra))" "$dest"
    # kiln returns once the image is pushed and leaves its build directory to a detached
    # remover (buildah and BuildKit keep theirs in their storage): wait for it, untimed, so
    # its disk writes do not land in the next measurement.
    local i=0
    while [ -n "$(ls -A "$WORK/kiln/state/builds" 2>/dev/null)" ] && [ $i -lt 1500 ]; do
        sleep 0.2
        i=$((i + 1))
    done
}
run_buildah() {
    local w=$1 rep=$2 ctx=$3 dest="$REG/bench/rep$2/$1:buildah" name=${LABEL:-$1}
    record "$rep" "$name" buildah "$($MEASURE --log "$WORK/buildah-$name-$rep.log" -- bash -c \
        "$BA bud --layers --isolation chroot --tls-verify=false -t $dest -f $WORK/df/$w $ctx && $BA push --tls-verify=false $dest docker://$dest")" "$dest"
}
run_buildkit() {
    [ "$HAVE_BUILDKIT" = 1 ] || return 0
    local w=$1 rep=$2 ctx=$3 dest="$REG/bench/rep$2/$1:buildkit" name=${LABEL:-$1}
    # dockerd does the work: its tree (containerd, shims, RUN processes) is measured too.
    record "$rep" "$name" buildkit "$($MEASURE --also "$DOCKERD_PID" --log "$WORK/buildkit-$name-$rep.log" -- bash -c \
        "DOCKER_BUILDKIT=1 $DOCKER build --network host -t $dest -f $WORK/df/$w $ctx && $DOCKER push $dest")" "$dest"
}

# Lower bound: base rootfs and its OCI layout copied (untimed), then lowerbound.sh (timed).
lb_prepare() { # BASE_NAME
    rm -rf "$WORK/lb"
    mkdir -p "$WORK/lb"
    cp -a "$WORK/base/$1" "$WORK/lb/root"
    cp -a "$WORK/base/$1-oci" "$WORK/lb/oci"
    cp -a "$WORK/base/busybox" "$WORK/lb/root2" # a second stage's root
    # What a builder's RUN provides: device nodes and DNS.
    local r n
    for r in "$WORK/lb/root" "$WORK/lb/root2"; do
        mkdir -p "$r/dev" "$r/etc"
        for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
            read -r name major minor <<<"$n"
            mknod -m 666 "$r/dev/$name" c "$major" "$minor"
        done
        cp /etc/resolv.conf "$r/etc/resolv.conf"
    done
    settle # the removal above
}
lb_measure() { # WORKLOAD REP BASE_NAME TAG STEP...
    local w=$1 rep=$2 base=$3 tag=$4
    shift 4
    # Copied files have a new ctime: mark the time one second later so only the steps' changes count.
    sleep 1.1
    touch "$WORK/lb/marker"
    sleep 0.05
    local dest="$REG/bench/$base:lb-$w-$rep"
    record "$rep" "$w" lower-bound "$(ROOT2="$WORK/lb/root2" $MEASURE --log "$WORK/lower-bound-$w-$rep.log" -- \
        bash "$HERE/lowerbound.sh" "$WORK/lb/root" "$WORK/lb/marker" "$WORK/lb/oci" "$tag" "$dest" "$@")" "$dest"
}
chroot_step() { printf 'chroot "$ROOT" /bin/sh -c %q' "$1"; }
run_lower_bound() {
    local w=$1 rep=$2
    case "$w" in
        small-app)
            lb_prepare busybox
            lb_measure "$w" "$rep" busybox latest "$(chroot_step "$W1_RUN1")" \
                "mkdir -p \"\$ROOT/app/src\" && cp -a $WORK/ctx/small-app/. \"\$ROOT/app/src/\"" "$(chroot_step "$W1_RUN2")" ;;
        60k-files) lb_prepare busybox; lb_measure "$w" "$rep" busybox latest "$(chroot_step "$W2_RUN")" ;;
        1gb-file) lb_prepare busybox; lb_measure "$w" "$rep" busybox latest "$(chroot_step "$W3_RUN")" ;;
        apt-hello) lb_prepare debian; lb_measure "$w" "$rep" debian bookworm "$(chroot_step "$W4_RUN")" ;;
        multi-stage)
            lb_prepare busybox
            lb_measure "$w" "$rep" busybox latest "chroot \"\$ROOT2\" /bin/sh -c $(printf %q "$W5_RUN")" \
                "mkdir -p \"\$ROOT/opt\" && cp -a \"\$ROOT2/out\" \"\$ROOT/opt/out\"" ;;
        rebuild-cold)
            lb_prepare busybox
            lb_measure "$w" "$rep" busybox latest "$(chroot_step "$W1_RUN1")" \
                "mkdir -p \"\$ROOT/app/src\" && cp -a $WORK/ctx/rebuild/. \"\$ROOT/app/src/\"" "$(chroot_step "$W1_RUN2")" ;;
        rebuild) # the first RUN is cached: only the COPY of the changed context and the last RUN
            lb_prepare busybox
            chroot "$WORK/lb/root" /bin/sh -c "$W1_RUN1"
            lb_measure "$w" "$rep" busybox latest \
                "mkdir -p \"\$ROOT/app/src\" && cp -a $WORK/ctx/rebuild/. \"\$ROOT/app/src/\"" "$(chroot_step "$W1_RUN2")" ;;
        rebuild-multi-cold|rebuild-multi) # builder stage in ROOT2, final stage in ROOT
            lb_prepare busybox
            local deps
            deps="chroot \"\$ROOT2\" /bin/sh -c $(printf %q "$W1_RUN1")"
            if [ "$w" = rebuild-multi ]; then # cached: not timed
                chroot "$WORK/lb/root2" /bin/sh -c "$W1_RUN1"
                deps=true
            fi
            lb_measure "$w" "$rep" busybox latest "$deps" \
                "mkdir -p \"\$ROOT2/src\" && cp -a $WORK/ctx/rebuild-multi/. \"\$ROOT2/src/\"" \
                "chroot \"\$ROOT2\" /bin/sh -c $(printf %q "$W6_RUN")" \
                "mkdir -p \"\$ROOT/app\" && cp -a \"\$ROOT2/out/.\" \"\$ROOT/app/\"" ;;
    esac
}

# The one-file rebuilds (rebuild: the small app; rebuild-multi: the multi-stage app): a cold
# build with each builder's cache on (measured, row "<workload>-cold"), one context file
# changed to content never built before, `sync`, then the measured rebuild pushed to the same
# repository. Every builder keeps its state (kiln its --kiln-dir, buildah its --layers storage,
# BuildKit dockerd's cache); with KILN_REBUILD_STATE=fresh kiln rebuilds in a fresh --kiln-dir
# with only the registry cache, as in an ephemeral CI pod.
KILN_REBUILD_FLAGS=""
if [ "$KILN_CACHE" = 1 ]; then
    if [ "${KILN_REBUILD_STATE:-keep}" = fresh ]; then
        note "kiln rebuilds use --cache=true --cache-repo=$REG/bench/cache-<workload>-rep<N> and a fresh --kiln-dir (registry cache only)"
    else
        note "kiln rebuilds use --cache=true --cache-repo=$REG/bench/cache-<workload>-rep<N> and the cold build's --kiln-dir (local cache and trees first)"
    fi
else
    note "kiln build --help has no --cache-repo: the kiln rebuilds run without a layer cache (same --kiln-dir as the cold build)"
fi
rebuild_ctx() { rm -rf "$WORK/ctx/$1"; cp -a "$WORK/ctx/small-app" "$WORK/ctx/$1"; }
change_one_file() { echo "changed $(date +%s%N) $RANDOM" >>"$WORK/ctx/$1/file07.txt"; }
run_rebuild() { # BUILDER REP WORKLOAD
    local b=$1 rep=$2 w=$3
    rebuild_ctx "$w"
    local flags=""
    [ "$KILN_CACHE" = 1 ] && flags="--cache=true --cache-repo=$REG/bench/cache-$w-rep$rep"
    case "$b" in
        kiln) LABEL="$w-cold" run_kiln "$w" "$rep" "$WORK/ctx/$w" "$flags" ;;
        buildah) LABEL="$w-cold" run_buildah "$w" "$rep" "$WORK/ctx/$w" ;;
        buildkit) LABEL="$w-cold" run_buildkit "$w" "$rep" "$WORK/ctx/$w" ;;
        lower-bound) run_lower_bound "$w-cold" "$rep" ;;
    esac
    change_one_file "$w"
    # A rebuild comes minutes or hours after the build before it: let that build's writes
    # (and the deletion of its work dirs) reach the disk first, for every builder alike, or
    # the rebuild of whichever builder writes files pays for them (untimed). A fresh kiln
    # state dir is removed before that, not after (see settle()).
    if [ "$b" = kiln ] && [ "$KILN_CACHE" = 1 ] && [ "${KILN_REBUILD_STATE:-keep}" = fresh ]; then
        rm -rf "$WORK/kiln"
    fi
    settle
    case "$b" in
        kiln) run_kiln "$w" "$rep" "$WORK/ctx/$w" "$flags" ;;
        buildah) run_buildah "$w" "$rep" "$WORK/ctx/$w" ;;
        buildkit) run_buildkit "$w" "$rep" "$WORK/ctx/$w" ;;
        lower-bound) run_lower_bound "$w" "$rep" ;;
    esac
}

# ---------------------------------------------------------------- run
printf 'rep\tworkload\tbuilder\twall_s\tpeak_rss_kb\timage_bytes\texit\n' >"$RESULTS"
START=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
DOCKERD_IDLE_KB=0
[ "$HAVE_BUILDKIT" = 1 ] && DOCKERD_IDLE_KB=$($MEASURE --also "$DOCKERD_PID" -- sleep 0.3 | awk '{print $2}')
for rep in $(seq 1 "$REPS"); do
    for w in $WORKLOADS; do
        say "rep $rep/$REPS: $w"
        for b in ${BUILDERS:-kiln buildah buildkit lower-bound}; do
            reset_builders
            if [ "$w" = rebuild ] || [ "$w" = rebuild-multi ]; then
                run_rebuild "$b" "$rep" "$w"
            else
                case "$b" in
                    kiln) run_kiln "$w" "$rep" "$WORK/ctx/$w" ;;
                    buildah) run_buildah "$w" "$rep" "$WORK/ctx/$w" ;;
                    buildkit) run_buildkit "$w" "$rep" "$WORK/ctx/$w" ;;
                    lower-bound) run_lower_bound "$w" "$rep" ;;
                esac
            fi
        done
    done
done
reset_builders

# ---------------------------------------------------------------- report (markdown on stdout)
cp "$RESULTS" "$LOGS/results.tsv"
echo "## End-to-end run of $START"
echo
echo "- machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo) RAM, $(. /etc/os-release; echo "$PRETTY_NAME"), kernel $(uname -r), $(df -T "$CACHE" | awk 'NR==2 {print $2}') under $CACHE"
echo "- load average at start $LOAD0, at end $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: compare ratios)"
echo "- kiln $("$KILN" --version 2>/dev/null | head -1) ($(git -C "$REPO" rev-parse --short HEAD)), $(buildah --version), docker $([ "$HAVE_BUILDKIT" = 1 ] && $DOCKER version -f '{{.Server.Version}}') (BuildKit in dockerd, vfs), $(docker-registry --version 2>/dev/null | head -1)"
echo "- repetitions: $REPS (medians of successful runs); peak RSS = sum of VmRSS over the builder's process tree sampled every 20 ms; BuildKit's includes dockerd + containerd (idle: $((DOCKERD_IDLE_KB / 1024)) MB)"
echo "- image size = config + compressed layers as pushed; the lower bound pushes one layer on top of the base"
cat "$NOTES"
echo
python3 "$HERE/oci.py" table "$RESULTS"
echo
case " $WORKLOADS " in *" rebuild "*|*" rebuild-multi "*)
    echo "One-file rebuilds: the cold build (cache on) and the rebuild after one changed file, same run:"
    echo
    python3 "$HERE/oci.py" rebuilds "$RESULTS"
    echo
esac
echo "Raw results: $LOGS/results.tsv; logs of the last run: $LOGS/"

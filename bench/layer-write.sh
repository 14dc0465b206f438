#!/bin/sh
# Layer-writing and blob-push benchmark (issue #7: big layers and many files).
#
#   bench/layer-write.sh [WORK_DIR]     (default /var/tmp; needs ~4 GB free; root not needed)
#
# Workloads, generated once under WORK_DIR: (a) big: 1 GiB incompressible (1 MiB of
# /dev/urandom repeated, as bench/e2e.sh's 1gb-file), (b) files: 60 dirs x 1,000 small files
# (e2e's 60k-files), (c) text: 100 MiB of log-like text in 1 MiB files.
# For each: kiln's real layer path (kiln-rootfs write_layer -> kiln-oci LayerWriter, gzip at
# LEVEL, all cores) against `tar -c | gzip -1` and `tar -c | pigz` (level 6, all cores; if
# installed) in the same run, warm page cache, REPS times each, best time reported.
# Then, unless PUSH=0: the big layer's image pushed to a fresh loopback docker-registry by
# kiln-registry and by `skopeo copy oci:... docker://...` (fresh repository each time).
#
# Environment: LEVEL (6), REPS (3), PUSH (1), BIG_MB (1024), TEXT_MB (100), DIRS (60),
# PER_DIR (1000), CARGO_TARGET_DIR (where cargo builds), KEEP=1 keeps WORK_DIR,
# KILN_BEFORE: a layer-write-bench binary built from an older kiln (e.g. `git archive OLD
# Cargo.toml Cargo.lock crates | tar -x -C /tmp/old`, copy bench/layer-write there, build):
# it is timed too, interleaved, and "kiln / before" is reported.
set -eu
cd "$(dirname "$0")/.."
TOP="$(pwd)"
WORK="${1:-/var/tmp}/kiln-layer-bench.$$"
LEVEL="${LEVEL:-6}"
REPS="${REPS:-3}"
PUSH="${PUSH:-1}"
BIG_MB="${BIG_MB:-1024}"
TEXT_MB="${TEXT_MB:-100}"
DIRS="${DIRS:-60}"
PER_DIR="${PER_DIR:-1000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TOP/target}"
[ -f bench/layer-write/Cargo.lock ] || cp Cargo.lock bench/layer-write/Cargo.lock
cargo build --release -q --manifest-path bench/layer-write/Cargo.toml
BIN="$CARGO_TARGET_DIR/release/layer-write-bench"
REG_PID=""
cleanup() {
  if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK"

now() { date +%s.%N; }
# best_of CMD...: runs CMD REPS times, prints the smallest wall time in seconds.
best_of() {
  best=""
  i=0
  while [ "$i" -lt "$REPS" ]; do
    t0=$(now); "$@"; t1=$(now)
    best=$(echo "$t0 $t1 $best" | awk '{d=$2-$1; if ($3=="" || d<$3) d=d; else d=$3; printf "%.3f", d}')
    i=$((i + 1))
  done
  echo "$best"
}
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1048576}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "-"}'; }

echo "## $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), $(df -T "$WORK" | awk 'NR==2{print $2}') file system, gzip level $LEVEL, best of $REPS"
echo
echo "Load average at start: $(cut -d" " -f1-3 /proc/loadavg); kiln at $(git rev-parse --short HEAD)$(git diff --quiet -- crates/oci crates/registry || echo ' + uncommitted oci/registry changes')"
echo
"$BIN" gen-big "$WORK/big" "$BIG_MB"
"$BIN" gen-files "$WORK/files" "$DIRS" "$PER_DIR"
"$BIN" gen-text "$WORK/text" "$TEXT_MB"

PIGZ=$(command -v pigz || true)
BEFORE="${KILN_BEFORE:-}"
bh=""; bs=""
if [ -n "$BEFORE" ]; then bh=" kiln before | blob | kiln / before |"; bs=" ---: | ---: | ---: |"; fi
echo "| workload | kiln write | blob | peak RSS |$bh tar \\| gzip -1 | blob | kiln / gzip -1 | tar \\| pigz | blob | kiln / pigz |"
echo "| --- | ---: | ---: | ---: |$bs ---: | ---: | ---: | ---: | ---: | ---: |"
for w in big files text; do
  store="$WORK/store-$w"
  kiln_once() { rm -rf "$store"; "$BIN" write "$WORK/$w" "$store" "$LEVEL" >"$WORK/kiln.out"; }
  kt=$(best_of kiln_once)
  set -- $(cat "$WORK/kiln.out")
  ksize=$2; krss=$5
  bcols=""
  if [ -n "$BEFORE" ]; then
    before_once() { rm -rf "$store.before"; "$BEFORE" write "$WORK/$w" "$store.before" "$LEVEL" >"$WORK/before.out"; }
    bt=$(best_of before_once)
    set -- $(cat "$WORK/before.out")
    bcols=" $bt s | $(mb "$2") MB | $(ratio "$kt" "$bt") |"
    rm -rf "$store.before"
  fi
  gz_once() { tar -C "$WORK/$w" -cf - . | gzip -1 >"$WORK/out.gz"; }
  gt=$(best_of gz_once); gsize=$(stat -c %s "$WORK/out.gz")
  if [ -n "$PIGZ" ]; then
    pz_once() { tar -C "$WORK/$w" -cf - . | pigz >"$WORK/out.gz"; }
    pt=$(best_of pz_once); psize=$(stat -c %s "$WORK/out.gz")
    pcols="$pt s | $(mb "$psize") MB | $(ratio "$kt" "$pt")"
  else
    pcols="skipped: pigz not installed | - | -"
  fi
  rm -f "$WORK/out.gz"
  echo "| $w | $kt s | $(mb "$ksize") MB | $((krss / 1024)) MB |$bcols $gt s | $(mb "$gsize") MB | $(ratio "$kt" "$gt") | $pcols |"
done
echo

if [ "$PUSH" = 1 ]; then
  if ! command -v docker-registry >/dev/null || ! command -v skopeo >/dev/null; then
    echo "push: skipped: docker-registry or skopeo not installed"
    exit 0
  fi
  # A fresh registry (new data dir, new port) for every push, so neither client finds the
  # blob already there (skopeo's blob-info cache would otherwise mount it from an earlier push).
  n=0
  start_registry() {
    n=$((n + 1))
    mkdir -p "$WORK/reg$n"
    printf 'version: 0.1\nlog: {level: info}\nstorage: {filesystem: {rootdirectory: %s}, delete: {enabled: true}}\nhttp: {addr: "127.0.0.1:0", secret: test-only}\n' "$WORK/reg$n" >"$WORK/reg.yml"
    docker-registry serve "$WORK/reg.yml" >"$WORK/reg.log" 2>&1 &
    REG_PID=$!
    port=""
    for _ in $(seq 100); do
      port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$WORK/reg.log" | head -1)
      [ -n "$port" ] && break
      sleep 0.05
    done
    [ -n "$port" ] || { echo "push: registry did not start"; cat "$WORK/reg.log"; exit 1; }
    # It logs "listening" just before it accepts: wait for /v2/ to answer.
    for _ in $(seq 100); do
      curl -sf -o /dev/null "http://127.0.0.1:$port/v2/" && break
      sleep 0.05
    done
  }
  stop_registry() { kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true; REG_PID=""; rm -rf "$WORK/reg$n"; }
  kp_once() { "$BIN" push "$WORK/store-big" "127.0.0.1:$port" bench/kiln >"$WORK/push.out"; }
  sp_once() { skopeo copy -q --dest-tls-verify=false "oci:$WORK/store-big:latest" "docker://127.0.0.1:$port/bench/skopeo" >/dev/null; }
  # timed() CMD: one push of CMD against a fresh registry, registry start-up not timed.
  # (Runs in a $(...) subshell: the registry is stopped here even when the push fails.)
  timed() {
    start_registry; rc=0
    t0=$(now); "$@" || rc=$?; t1=$(now)
    stop_registry
    [ "$rc" = 0 ] || { echo "push failed ($*): exit $rc" >&2; exit "$rc"; }
    echo "$t0 $t1" | awk '{printf "%.3f", $2-$1}'
  }
  bp_once() { "$BEFORE" push "$WORK/store-big" "127.0.0.1:$port" bench/before >/dev/null; }
  min() { echo "$1 $2" | awk '{ if ($2=="" || $1<$2) print $1; else print $2 }'; }
  kpt=""; spt=""; bpt=""
  i=0
  while [ "$i" -lt "$REPS" ]; do
    # Interleaved, so all see the same machine load.
    kpt=$(min "$(timed kp_once)" "$kpt")
    spt=$(min "$(timed sp_once)" "$spt")
    if [ -n "$BEFORE" ]; then bpt=$(min "$(timed bp_once)" "$bpt"); fi
    i=$((i + 1))
  done
  size=$(stat -c %s "$WORK"/store-big/blobs/sha256/* | sort -n | tail -1)
  echo "| push of the big image ($(mb "$size") MB blob) to loopback distribution | kiln-registry | skopeo copy | kiln / skopeo |"
  echo "| --- | ---: | ---: | ---: |"
  rate() { awk -v s="$size" -v t="$1" 'BEGIN{printf "%.0f", s/1048576/t}'; }
  echo "| best of $REPS, fresh registry each | $kpt s ($(rate "$kpt") MB/s) | $spt s ($(rate "$spt") MB/s) | $(ratio "$kpt" "$spt") |"
  if [ -n "$BEFORE" ]; then echo "| kiln before: $bpt s ($(rate "$bpt") MB/s), kiln / before $(ratio "$kpt" "$bpt") | | | |"; fi
fi

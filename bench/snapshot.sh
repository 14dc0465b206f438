#!/bin/sh
# Snapshot benchmark: scan + diff + layer write on a generated 60,000-file / ~500 MB rootfs,
# compared with `tar -c | gzip -1` of just the changed files (measured in the same run), the
# same steps made on an overlay of the rootfs (the time from the step's end to its layer being
# written: converting the upper directory + writing the layer; needs root to mount overlayfs,
# else reported as skipped), and peak memory while writing a 1 GB layer. Not part of
# `cargo test`.
#
#   bench/snapshot.sh [WORK_DIR]        (default: $TMPDIR or /tmp; needs ~2.5 GB free)
#
# Environment: FILES (60000), TOTAL_MB (500), LEVEL (gzip level of kiln's layers, 1),
# BIG_MB (1024), CARGO_TARGET_DIR (where cargo builds).
set -eu
cd "$(dirname "$0")/.."
WORK="${1:-${TMPDIR:-/tmp}}/kiln-snapshot-bench.$$"
FILES="${FILES:-60000}"
TOTAL_MB="${TOTAL_MB:-500}"
LEVEL="${LEVEL:-1}"
BIG_MB="${BIG_MB:-1024}"
cargo build --release -q -p kiln-rootfs --example snapshot_bench
BIN="${CARGO_TARGET_DIR:-target}/release/examples/snapshot_bench"
trap 'rm -rf "$WORK"' EXIT
echo "## $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), $(df -T "${WORK%/*}" | awk 'NR==2{print $2}') file system"
echo
echo "Load average at start: $(cut -d" " -f1-3 /proc/loadavg) (other jobs on the machine skew timings)"
echo
echo '### Steps on a generated rootfs'
echo '```'
"$BIN" steps "$WORK/steps" "$FILES" "$TOTAL_MB" "$LEVEL"
echo '```'
echo
echo "Load average after the steps: $(cut -d" " -f1-3 /proc/loadavg)"
echo
echo "### Peak memory while writing a ${BIG_MB} MB layer (separate process)"
echo '```'
if [ -x /usr/bin/time ]; then
  /usr/bin/time -v "$BIN" big "$WORK/big" "$BIG_MB" 2>"$WORK.time" && grep -E 'Maximum resident|Elapsed' "$WORK.time"
  rm -f "$WORK.time"
else
  "$BIN" big "$WORK/big" "$BIG_MB"
fi
echo '```'

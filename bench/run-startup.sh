#!/bin/sh
# Start-up overhead of kiln's RUN sandbox: from run() to the command's first instruction and
# back, for `/bin/true` in a busybox rootfs, against a plain fork/exec of the same binary.
# Runs as the caller and, when root, again as uid 65534 (the unprivileged path).
# Usage: bench/run-startup.sh [ITERATIONS]   (needs /bin/busybox from busybox-static)
set -eu
cd "$(dirname "$0")/.."
N="${1:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/targets/sandbox}"
cargo build -q --release -p kiln-sandbox --example run-startup
BIN="$CARGO_TARGET_DIR/release/examples/run-startup"
echo "== as $(id -un) =="
"$BIN" "$N"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
    echo "== as uid 65534 =="
    TMPDIR=/tmp setpriv --reuid 65534 --regid 65534 --clear-groups "$BIN" "$N"
fi

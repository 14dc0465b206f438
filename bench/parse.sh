#!/bin/sh
# Front-end parse benchmark: a generated 10,000-line Dockerfile, release build.
# Usage: bench/parse.sh [LINES] [ITERATIONS]. Target: parse_dockerfile < 50 ms.
# Results are recorded in bench/parse-report.md.
set -eu
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p kiln-dockerfile --example parse_bench
exec "$CARGO_TARGET_DIR/release/examples/parse_bench" "$@"

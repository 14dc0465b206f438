#!/usr/bin/env bash
# Builds kiln's CI image (Dockerfile.executor) with kiln itself and checks the result.
#
#   1. a static kiln (crt-static glibc, no musl target needed), in its own cargo target dir;
#   2. a build context holding that binary and the machine's CA bundle;
#   3. `kiln build -f Dockerfile.executor` with that same static binary: an OCI layout, a
#      docker-archive tarball, and a push to a loopback registry this script starts;
#   4. checks: pull the pushed image back (skopeo), unpack it (umoci), run the unpacked
#      /kaniko/executor (`version`, `--help`, ldd), and let it build a small FROM-scratch image
#      the way a Kaniko pipeline calls its executor (`-c DIR -d REF --no-push --tar-path FILE`).
#
# Not part of ./scripts/test.sh: the release build takes minutes on 2 cores. See
# docs/executor-image.md for a recorded run.
#
# Usage: ./scripts/executor-image.sh [WORK_DIR]
# Env:   KILN_STATIC_TARGET_DIR  cargo target dir of the static build (default target/executor-static)
#        KILN_SKIP_BUILD=1       reuse the binary already in that target dir
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
triple=x86_64-unknown-linux-gnu
target_dir=${KILN_STATIC_TARGET_DIR:-$repo/target/executor-static}
work=${1:-$(mktemp -d /tmp/kiln-executor-image.XXXXXX)}
mkdir -p "$work"
work=$(cd "$work" && pwd)

say() { printf '== %s\n' "$*"; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
size() { du -sh --apparent-size "$1" | cut -f1; }

for tool in cargo docker-registry umoci skopeo ldd; do
  command -v "$tool" >/dev/null || die "$tool not installed (apt-get install docker-registry umoci skopeo)"
done

# --- 1. static kiln -----------------------------------------------------------------------
bin=$target_dir/$triple/release/kiln
if [ "${KILN_SKIP_BUILD:-}" != 1 ] || [ ! -x "$bin" ]; then
  say "static release build (CARGO_TARGET_DIR=$target_dir)"
  t=$(now)
  (cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$target_dir" \
    cargo build --release --target "$triple" -p kiln)
  say "release build: $(since "$t")"
fi
ldd_out=$(ldd "$bin" 2>&1 || true)
echo "ldd $bin: $ldd_out"
case "$ldd_out" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) die "kiln is dynamically linked; the FROM-scratch image could not run it" ;;
esac
say "kiln binary: $(size "$bin") ($("$bin" version 2>&1 | head -n1))"

# --- 2. context -----------------------------------------------------------------------------
# Dockerfile.executor COPYs target/$triple/release/kiln and ca-certificates.crt, relative to
# the context: a minimal context with exactly those, not the repository (gigabytes of target/).
ctx=$work/context
rm -rf "$ctx"
mkdir -p "$ctx/target/$triple/release"
cp "$bin" "$ctx/target/$triple/release/kiln"
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || die "$ca missing (apt-get install ca-certificates)"
cp "$ca" "$ctx/ca-certificates.crt"
cp "$repo/Dockerfile.executor" "$ctx/Dockerfile"

# --- 3. loopback registry ------------------------------------------------------------------
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
reg_dir=$work/registry
mkdir -p "$reg_dir/data"
cat >"$reg_dir/config.yml" <<EOF
version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $reg_dir/data}, delete: {enabled: true}}
http: {addr: "127.0.0.1:0", secret: executor-image-script}
EOF
docker-registry serve "$reg_dir/config.yml" >"$reg_dir/log" 2>&1 &
pids+=($!)
registry=""
for _ in $(seq 100); do
  registry=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$reg_dir/log" | head -n1 | sed 's/listening on //' || true)
  [ -n "$registry" ] && break
  sleep 0.1
done
[ -n "$registry" ] || die "registry did not start: $(cat "$reg_dir/log")"
say "registry on $registry"

# --- 4. kiln builds its own image ------------------------------------------------------------
image=$registry/tools/kiln:test
layout=$work/executor-oci
rm -rf "$layout" "$work/state"
say "kiln build -f Dockerfile.executor -d $image"
t=$(now)
"$bin" build -c "$ctx" -f "$ctx/Dockerfile" -d "$image" --insecure --log-format=text \
  --oci-layout-path "$layout" --tar-path "$work/executor.tar" \
  --digest-file "$work/executor.digest" --kiln-dir "$work/state"
say "self-build: $(since "$t"); pushed $image@$(cat "$work/executor.digest")"
say "OCI layout $(size "$layout"), docker-archive $(size "$work/executor.tar")"

# Read it back from the registry with an independent client, then flatten it.
rm -rf "$work/pulled" "$work/bundle"
skopeo copy --quiet --src-tls-verify=false "docker://$image" "oci:$work/pulled:t"
pulled_digest=$(skopeo inspect --raw "oci:$work/pulled:t" | sha256sum | cut -d' ' -f1)
[ "sha256:$pulled_digest" = "$(cat "$work/executor.digest")" ] ||
  die "pulled manifest sha256:$pulled_digest is not the digest kiln wrote"
skopeo inspect --config "docker://$image" --tls-verify=false >"$work/executor-config.json"
echo "config: $(tr -d '\n ' <"$work/executor-config.json" | grep -o '"config":{[^}]*}' || true)"
umoci unpack --image "$work/pulled:t" "$work/bundle" >/dev/null
rootfs=$work/bundle/rootfs
(cd "$rootfs" && find . -printf '%M %u:%g %10s %p\n' | sort -k4)
[ -x "$rootfs/kaniko/executor" ] || die "/kaniko/executor missing from the image"
cmp "$rootfs/kaniko/executor" "$bin" || die "/kaniko/executor differs from the built binary"
cmp "$rootfs/etc/ssl/certs/ca-certificates.crt" "$ca" || die "CA bundle differs"

# --- 5. the unpacked executor works ----------------------------------------------------------
exe=$rootfs/kaniko/executor
say "ldd /kaniko/executor: $(ldd "$exe" 2>&1 || true)"
say "/kaniko/executor version"
"$exe" version
say "/kaniko/executor --help (first lines)"
"$exe" --help >"$work/help.txt"
head -n 12 "$work/help.txt"
grep -q -- '--destination' "$work/help.txt" || die "--help does not list --destination"

# As a Kaniko pipeline calls it: context dir, destination, --no-push, --tar-path. The image's
# ENV is reproduced: KILN_DIR (its state), DOCKER_CONFIG.
tiny=$work/tiny
rm -rf "$tiny" "$work/tiny.tar" "$work/tiny-oci" "$work/tiny-bundle"
mkdir -p "$tiny"
printf 'built by the executor from its own image\n' >"$tiny/hello.txt"
cat >"$tiny/Dockerfile" <<'EOF'
FROM scratch
COPY hello.txt /hello.txt
ENV MESSAGE=tiny
LABEL built-by=kiln-executor-image
CMD ["/hello"]
EOF
say "/kaniko/executor -c $tiny -d $registry/tiny:1 --no-push --tar-path tiny.tar"
t=$(now)
env -i PATH=/usr/bin:/bin HOME=/root KILN_DIR="$work/executor-state" \
  DOCKER_CONFIG="$work/docker-config" \
  "$exe" -c "$tiny" -d "$registry/tiny:1" --no-push --tar-path "$work/tiny.tar" \
  --digest-file "$work/tiny.digest"
say "tiny build: $(since "$t"), tarball $(size "$work/tiny.tar"), digest $(cat "$work/tiny.digest")"
skopeo copy --quiet "docker-archive:$work/tiny.tar" "oci:$work/tiny-oci:t"
umoci unpack --image "$work/tiny-oci:t" "$work/tiny-bundle" >/dev/null
cmp "$work/tiny-bundle/rootfs/hello.txt" "$tiny/hello.txt" || die "tiny image: hello.txt differs"
[ "$(find "$work/tiny-bundle/rootfs" -mindepth 1 | wc -l)" = 1 ] || die "tiny image: extra files"
skopeo inspect --config "docker-archive:$work/tiny.tar" | grep -q '"MESSAGE=tiny"' ||
  die "tiny image: ENV missing from the config"
if curl -fsS "http://$registry/v2/tiny/tags/list" >/dev/null 2>&1; then
  die "--no-push pushed the tiny image"
fi
say "OK: kiln built its own CI image; the image's executor builds images (work dir: $work)"

#!/usr/bin/env bash
# Builds kiln's CI image (Dockerfile.executor) with kiln itself and checks the result.
#
#   1. a static kiln (crt-static glibc, no musl target needed), in its own cargo target dir;
#   2. a build context holding that binary, the machine's CA bundle, and git for git contexts
#      (this machine's /usr/bin/git, its http(s) remote helper, the shared libraries both load
#      and the dynamic loader, at the paths Debian's loader searches);
#   3. `kiln build -f Dockerfile.executor` with that same static binary: an OCI layout, a
#      docker-archive tarball, and a push to a loopback registry this script starts;
#   4. checks: pull the pushed image back (skopeo), unpack it (umoci), run the unpacked
#      /kaniko/executor (`version`, `--help`, ldd), and let it build a small FROM-scratch image
#      the way a Kaniko pipeline calls its executor (`-c DIR -d REF --no-push --tar-path FILE`);
#      then, chrooted into the unpacked rootfs (so nothing of this machine is found by
#      accident): `git --version`, https certificate checks against the image's CA bundle, and
#      a build from a git context (`git://…#ref` with --context-sub-path, and `http://….git#ref:dir`)
#      served by `git http-backend` on 127.0.0.1.
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

for tool in cargo docker-registry umoci skopeo ldd python3 openssl unshare chroot; do
  command -v "$tool" >/dev/null || die "$tool not installed (apt-get install docker-registry umoci skopeo git openssl python3)"
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
# Dockerfile.executor COPYs target/$triple/release/kiln, ca-certificates.crt and git/,
# relative to the context: a minimal context with exactly those, not the repository
# (gigabytes of target/).
ctx=$work/context
rm -rf "$ctx"
mkdir -p "$ctx/target/$triple/release"
cp "$bin" "$ctx/target/$triple/release/kiln"
ca=/etc/ssl/certs/ca-certificates.crt
[ -f "$ca" ] || die "$ca missing (apt-get install ca-certificates)"
cp "$ca" "$ctx/ca-certificates.crt"
cp "$repo/Dockerfile.executor" "$ctx/Dockerfile"
# Kaniko's warmer path: kiln invoked as `warmer` is `kiln warm`. A symlink in a directory
# (COPY of the directory keeps it; a COPY of the symlink itself would copy the binary).
mkdir -p "$ctx/kaniko"
ln -s executor "$ctx/kaniko/warmer"

# git for git contexts (`--context git://…`, `https://….git#ref`, `ADD <git url>`): kiln runs
# the git binary (crates/build/src/git.rs: init, remote add, fetch, rev-parse, checkout, all
# builtins of /usr/bin/git) with GIT_ALLOW_PROTOCOL=https:http:git[:ssh]. git:// is built in;
# http and https need the remote helper git-remote-http (git-remote-https is a symlink to it).
# Not shipped: ssh (kiln's GIT_SSH_COMMAND "ssh -o …" is run by git through /bin/sh, so it
# would take a shell and OpenSSH; Kaniko's git contexts are http(s) only) and git-submodule (a
# shell script needing sh, sed and basename): docs/executor-image.md. Each file is copied
# (symlinks resolved) to the path ldd shows, which Debian's loader searches without
# /etc/ld.so.cache (its built-in system dirs: /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu),
# and the loader to the binaries' PT_INTERP path.
git_bin=/usr/bin/git
git_core=/usr/lib/git-core
[ -x "$git_bin" ] && [ -x "$git_core/git-remote-http" ] ||
  die "$git_bin or $git_core/git-remote-http missing (apt-get install git)"
gitfs=$ctx/git
mkdir -p "$gitfs/usr/bin" "$gitfs/usr/lib/git-core"
cp "$git_bin" "$gitfs/usr/bin/git"
cp "$git_core/git-remote-http" "$gitfs/usr/lib/git-core/git-remote-http"
ln -s git-remote-http "$gitfs/usr/lib/git-core/git-remote-https"
ldd_git=$(ldd "$git_bin" "$git_core/git-remote-http")
case "$ldd_git" in *"not found"*) die "git needs a library this machine lacks: $ldd_git" ;; esac
# "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)".
for lib in $(printf '%s\n' "$ldd_git" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// && $2 ~ /^\(/ { print $1 }' | sort -u); do
  mkdir -p "$gitfs$(dirname "$lib")"
  cp -L "$lib" "$gitfs$lib"
done
[ -f "$gitfs/lib64/ld-linux-x86-64.so.2" ] || die "the dynamic loader is not in ldd's output"
say "git for git contexts: $(find "$gitfs" -type f | wc -l) files, $(size "$gitfs") ($("$git_bin" --version))"
(cd "$gitfs" && { find . -type f -printf '%10s %p\n'; find . -type l -printf '%10s %p -> %l\n'; } | sort -k2)

# The debug image's shell (`--target debug`, as Kaniko's :debug): a static busybox and a
# symlink per applet, at /busybox.
bb=$(command -v busybox || echo /bin/busybox)
case "$(ldd "$bb" 2>&1 || true)" in
  *"not a dynamic executable"* | *"statically linked"*) ;;
  *) die "$bb is not static (apt-get install busybox-static)" ;;
esac
mkdir -p "$ctx/busybox"
cp "$bb" "$ctx/busybox/busybox"
for applet in $("$bb" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ctx/busybox/$applet"
done
say "busybox for the debug image: $(size "$ctx/busybox/busybox"), $(ls "$ctx/busybox" | wc -l) names"

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
(cd "$gitfs" && find . -type f) | while read -r f; do
  cmp "$rootfs/$f" "$gitfs/$f" || die "image file ${f#.} differs from the context's"
done
[ "$(readlink "$rootfs/usr/lib/git-core/git-remote-https")" = git-remote-http ] ||
  die "/usr/lib/git-core/git-remote-https is not the symlink to git-remote-http"
cmp "$rootfs/kaniko/ssl/certs/ca-certificates.crt" "$ca" || die "/kaniko/ssl/certs bundle differs"
[ ! -e "$rootfs/busybox" ] || die "the default image has /busybox (only the debug image should)"
[ "$(readlink "$rootfs/kaniko/warmer")" = executor ] || die "/kaniko/warmer is not the symlink to executor"

# The debug image: the same plus /busybox (a shell for CI job scripts).
debug_image=$registry/tools/kiln:debug
say "kiln build -f Dockerfile.executor --target debug -d $debug_image"
"$bin" build -c "$ctx" -f "$ctx/Dockerfile" --target debug -d "$debug_image" --insecure \
  --log-format=text --kiln-dir "$work/state"
rm -rf "$work/pulled-debug" "$work/bundle-debug"
skopeo copy --quiet --src-tls-verify=false "docker://$debug_image" "oci:$work/pulled-debug:t"
umoci unpack --image "$work/pulled-debug:t" "$work/bundle-debug" >/dev/null
debug_rootfs=$work/bundle-debug/rootfs
cmp "$debug_rootfs/busybox/busybox" "$bb" || die "debug image: /busybox/busybox differs"
[ "$(readlink "$debug_rootfs/busybox/sh")" = busybox ] || die "debug image: no /busybox/sh"
cmp "$debug_rootfs/kaniko/executor" "$bin" || die "debug image: /kaniko/executor differs"
skopeo inspect --config "docker://$debug_image" --tls-verify=false | grep -q 'PATH=[^"]*:/busybox"' ||
  die "debug image: /busybox is not on PATH"

# --- 5. the unpacked executor works ----------------------------------------------------------
exe=$rootfs/kaniko/executor
say "ldd /kaniko/executor: $(ldd "$exe" 2>&1 || true)"
say "/kaniko/executor version"
"$exe" version
say "/kaniko/warmer --help (as Kaniko's warmer)"
"$rootfs/kaniko/warmer" --help >"$work/warmer-help.txt"
grep -q -- '--cache-dir' "$work/warmer-help.txt" || die "/kaniko/warmer --help does not list --cache-dir"
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

# --- 6. git contexts, inside the image -----------------------------------------------------------
# in_image [--ca FILE] ROOTFS [VAR=VALUE...] -- CMD [ARG...]: runs CMD chrooted into ROOTFS the
# way a container runtime starts the image: a private mount namespace with /proc and a minimal
# /dev (null, zero, full, random, urandom on a tmpfs), and only the image's ENV (PATH as
# Dockerfile.executor sets it) plus the VAR=VALUEs; nothing of this machine's / is reachable.
# --ca binds FILE over the image's CA bundle (in that namespace only). Mounts end with the
# namespace.
in_image() {
  local ca_over=""
  if [ "$1" = --ca ]; then ca_over=$2; shift 2; fi
  local root
  root=$(cd "$1" && pwd)
  shift
  local vars=()
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  mkdir -p "$root/proc" "$root/dev"
  env -i PATH=/kiln/bin:/kaniko:/usr/local/bin:/usr/bin:/bin HOME=/root USER=root \
    SSL_CERT_DIR=/kaniko/ssl/certs DOCKER_CONFIG=/kaniko/.docker/ KILN_DIR=/kiln "${vars[@]}" \
    IN_IMAGE_ROOT="$root" IN_IMAGE_CA="$ca_over" IN_IMAGE_CHROOT="$(command -v chroot)" \
    "$(command -v unshare)" --mount --propagation private -- /bin/sh -ec '
      r=$IN_IMAGE_ROOT ca=$IN_IMAGE_CA c=$IN_IMAGE_CHROOT
      unset IN_IMAGE_ROOT IN_IMAGE_CA IN_IMAGE_CHROOT
      /bin/mount -t proc proc "$r/proc"
      /bin/mount -t tmpfs -o mode=0755,size=64k dev "$r/dev"
      for n in null zero full random urandom; do
        : >"$r/dev/$n"
        /bin/mount --bind "/dev/$n" "$r/dev/$n"
      done
      [ -z "$ca" ] || /bin/mount --bind "$ca" "$r/etc/ssl/certs/ca-certificates.crt"
      exec "$c" "$r" "$@"' in_image "$@"
}

if [ "$(id -u)" != 0 ]; then
  say "skipped: git contexts in the image (step 6 chroots into the image's rootfs: run as root)"
  say "OK: kiln built its own CI image; the image's executor builds images (work dir: $work)"
  exit 0
fi
# A RUN step, by the image's executor inside the image (no /tmp there, as in a pod: RUN's
# scratch files must not need one). Chrooted, kiln cannot make user namespaces and uses
# chroot isolation. The base is made here: busybox on scratch, pushed to the registry.
runctx=$work/run-ctx
rm -rf "$runctx" && mkdir -p "$runctx/base"
cp "$bb" "$runctx/base/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\n' >"$runctx/base/Dockerfile"
"$bin" build -c "$runctx/base" -d "$registry/tools/busybox-base:1" --insecure --log-format=text \
  --kiln-dir "$work/state" >/dev/null 2>&1 || die "building the RUN check's base failed"
printf 'FROM %s/tools/busybox-base:1\nRUN ["/bin/busybox", "sh", "-c", "/bin/busybox echo ran-in-the-image > /ran"]\n' \
  "$registry" >"$runctx/Dockerfile"
mkdir -p "$rootfs/workspace"
rm -rf "$rootfs/workspace/run-ctx" && cp -a "$runctx" "$rootfs/workspace/run-ctx"
[ ! -e "$rootfs/tmp" ] || die "the image has a /tmp: the RUN check would not check its absence"
say "in the image: /kaniko/executor -c /workspace/run-ctx (a RUN step) --no-push --tar-path"
in_image "$rootfs" -- /kaniko/executor -c /workspace/run-ctx --no-push --insecure-pull \
  --tar-path /workspace/run.tar --log-format=text
skopeo copy --quiet "docker-archive:$rootfs/workspace/run.tar" "oci:$work/run-oci:t"
rm -rf "$work/run-bundle"
umoci unpack --image "$work/run-oci:t" "$work/run-bundle" >/dev/null
[ "$(cat "$work/run-bundle/rootfs/ran")" = ran-in-the-image ] || die "the RUN in the image did not run"
[ -z "$(ls -A "$rootfs/kiln/builds" 2>/dev/null)" ] || sleep 2
[ -z "$(ls -A "$rootfs/kiln/builds" 2>/dev/null)" ] || die "build directories left in the image's /kiln/builds"

# A CI job script (GitLab's Kaniko recipe) through the debug image's shell: write the registry
# config, add a CA as a file, run the executor.
say "in the debug image: /busybox/sh -c 'mkdir -p /kaniko/.docker && … && /kaniko/executor version'"
in_image "$debug_rootfs" -- /busybox/sh -c 'mkdir -p /kaniko/.docker &&
  echo "{\"auths\":{}}" > /kaniko/.docker/config.json &&
  cat /etc/ssl/certs/ca-certificates.crt >> /kaniko/ssl/certs/extra-ca.crt &&
  /kaniko/executor version' | tee "$work/debug-shell.txt"
grep -q . "$work/debug-shell.txt" || die "the debug image's shell did not run the executor"

say "in the image: git --version"
in_image "$rootfs" -- git --version | tee "$work/git-version.txt"
grep -q '^git version ' "$work/git-version.txt" || die "git --version failed in the image"

# A bare repository served by `git http-backend` (git-http-backend(1)) behind python's CGI
# handler on 127.0.0.1, over http and (with a throwaway CA) https. Branch main has a README
# only; branch release has app/Dockerfile and app/hello.txt, so a build that finds hello.txt
# took both the ref and the sub-path.
gsrv=$work/git-server
rm -rf "$gsrv"
mkdir -p "$gsrv/src" "$gsrv/root/cgi-bin" "$gsrv/repos"
g() {
  GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null "$git_bin" -c user.name=kiln \
    -c user.email=kiln@example.invalid -c init.defaultBranch=main "$@"
}
g -C "$gsrv/src" init -q
printf 'branch main\n' >"$gsrv/src/README"
g -C "$gsrv/src" add README
g -C "$gsrv/src" commit -qm main
g -C "$gsrv/src" checkout -qb release
mkdir "$gsrv/src/app"
printf 'from a git context, branch release\n' >"$gsrv/src/app/hello.txt"
printf 'FROM scratch\nCOPY hello.txt /hello.txt\n' >"$gsrv/src/app/Dockerfile"
g -C "$gsrv/src" add app
g -C "$gsrv/src" commit -qm release
g -C "$gsrv/src" checkout -q main
g clone -q --bare "$gsrv/src" "$gsrv/repos/repo.git"
printf '#!/bin/sh\nexec %s http-backend\n' "$git_bin" >"$gsrv/root/cgi-bin/git"
chmod 0755 "$gsrv/root/cgi-bin/git"
cat >"$gsrv/serve.py" <<'EOF'
# Loopback smart-HTTP git server: python's CGI handler in front of `git http-backend`, https
# when given CERT and KEY. Usage: serve.py ROOT PORT_FILE [CERT KEY]. ROOT/cgi-bin/git runs the
# backend; GIT_PROJECT_ROOT and GIT_HTTP_EXPORT_ALL come from the environment.
import functools, http.server, os, ssl, sys

class Handler(http.server.CGIHTTPRequestHandler):
    cgi_directories = ["/cgi-bin"]
    # The subprocess path reads the request and writes the reply through the (TLS) stream;
    # the fork path would hand the raw socket to the CGI program.
    have_fork = False

class Server(http.server.HTTPServer):
    def shutdown_request(self, request):
        # A CGI reply has no Content-Length: it ends with the connection, and over TLS
        # GnuTLS wants that end said with close_notify (RFC 8446, 6.1).
        if isinstance(request, ssl.SSLSocket):
            try:
                request.settimeout(5)
                request.unwrap()
            except (OSError, ValueError):
                pass
        super().shutdown_request(request)

root, port_file = sys.argv[1], sys.argv[2]
srv = Server(("127.0.0.1", 0), functools.partial(Handler, directory=root))
if len(sys.argv) == 5:
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(sys.argv[3], sys.argv[4])
    srv.socket = tls.wrap_socket(srv.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(port_file + ".tmp", port_file)
srv.serve_forever()
EOF
# A throwaway CA and a certificate for 127.0.0.1 it signed (P-256, one day).
ossl() { openssl "$@" 2>>"$gsrv/openssl.log" || die "openssl $1 failed: $(cat "$gsrv/openssl.log")"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN=kiln-executor-image-test-ca -keyout "$gsrv/ca.key" -out "$gsrv/ca.crt"
ossl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$gsrv/tls.key" -out "$gsrv/tls.csr"
printf 'subjectAltName=IP:127.0.0.1\n' >"$gsrv/san.ext"
ossl x509 -req -days 1 -in "$gsrv/tls.csr" -CA "$gsrv/ca.crt" -CAkey "$gsrv/ca.key" \
  -CAcreateserial -extfile "$gsrv/san.ext" -out "$gsrv/tls.crt"
for mode in http https; do
  extra=()
  [ "$mode" = https ] && extra=("$gsrv/tls.crt" "$gsrv/tls.key")
  GIT_PROJECT_ROOT=$gsrv/repos GIT_HTTP_EXPORT_ALL=1 GIT_CONFIG_NOSYSTEM=1 \
    python3 "$gsrv/serve.py" "$gsrv/root" "$gsrv/$mode.port" "${extra[@]}" \
    >"$gsrv/$mode.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do
  [ -f "$gsrv/http.port" ] && [ -f "$gsrv/https.port" ] && break
  sleep 0.1
done
[ -f "$gsrv/http.port" ] && [ -f "$gsrv/https.port" ] ||
  die "git server did not start: $(cat "$gsrv/http.log" "$gsrv/https.log")"
http_repo=http://127.0.0.1:$(cat "$gsrv/http.port")/cgi-bin/git/repo.git
https_repo=https://127.0.0.1:$(cat "$gsrv/https.port")/cgi-bin/git/repo.git
say "git server: $http_repo, $https_repo"

# https: libcurl-gnutls in the image must verify against the image's CA bundle. The test CA
# is not in it, so the fetch must fail verification; with the test CA bound over
# /etc/ssl/certs/ca-certificates.crt it must succeed (so that path is the one read).
say "in the image: git ls-remote $https_repo (image CA bundle: must fail verification)"
if in_image "$rootfs" -- git ls-remote "$https_repo" >"$gsrv/tls-untrusted.txt" 2>&1; then
  die "git trusted a certificate from a CA that is not in the image's bundle"
fi
cat "$gsrv/tls-untrusted.txt"
grep -q 'certificate verification failed' "$gsrv/tls-untrusted.txt" ||
  die "expected a certificate verification failure: $(cat "$gsrv/tls-untrusted.txt")"
say "in the image: git ls-remote $https_repo (test CA bound over the image's bundle)"
in_image --ca "$gsrv/ca.crt" "$rootfs" -- git ls-remote "$https_repo" | tee "$gsrv/tls-trusted.txt"
grep -q 'refs/heads/release$' "$gsrv/tls-trusted.txt" || die "https ls-remote did not list release"

# The image's executor builds from the git context, as Kaniko's would: `git://REPO#REF` over
# GIT_PULL_METHOD=http with --context-sub-path, and BuildKit's `http://….git#REF:DIR`.
want=$gsrv/release-hello.txt
g -C "$gsrv/src" show release:app/hello.txt >"$want"
release=$(g -C "$gsrv/repos/repo.git" rev-parse refs/heads/release)
kaniko_ctx="git://${http_repo#http://}#refs/heads/release"
for form in kaniko buildkit; do
  if [ "$form" = kaniko ]; then
    args=(-c "$kaniko_ctx" --context-sub-path app)
    vars=(GIT_PULL_METHOD=http)
  else
    args=(-c "$http_repo#release:app")
    vars=()
  fi
  rm -rf "$rootfs/workspace/git-$form.tar" "$work/git-$form-oci" "$work/git-$form-bundle"
  say "in the image: ${vars[*]:+${vars[*]} }/kaniko/executor ${args[*]} -d $registry/git-context:$form --no-push --tar-path /workspace/git-$form.tar"
  t=$(now)
  if ! in_image "$rootfs" "${vars[@]}" -- /kaniko/executor "${args[@]}" \
    -d "$registry/git-context:$form" --no-push --tar-path "/workspace/git-$form.tar" \
    --log-format=text 2>&1 | tee "$work/git-$form.log"; then
    die "the image's executor could not build from $form's git context"
  fi
  grep -q "$release" "$work/git-$form.log" || die "$form: the log does not name commit $release"
  skopeo copy --quiet "docker-archive:$rootfs/workspace/git-$form.tar" "oci:$work/git-$form-oci:t"
  umoci unpack --image "$work/git-$form-oci:t" "$work/git-$form-bundle" >/dev/null
  cmp "$work/git-$form-bundle/rootfs/hello.txt" "$want" ||
    die "$form: /hello.txt is not app/hello.txt of branch release"
  [ "$(find "$work/git-$form-bundle/rootfs" -mindepth 1 | wc -l)" = 1 ] ||
    die "$form: the image holds more than /hello.txt"
  say "$form git context: $(since "$t"), /hello.txt = app/hello.txt at release ($release)"
done
if curl -fsS "http://$registry/v2/git-context/tags/list" >/dev/null 2>&1; then
  die "--no-push pushed the git-context image"
fi
say "OK: kiln built its own CI image; the image's executor builds images, from git contexts too (work dir: $work)"

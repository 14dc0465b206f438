#!/usr/bin/env bash
# Builds Kaniko's integration Dockerfiles (../shared/corpus/kaniko-dockerfiles, read in place,
# never copied into this repository) with kiln against a loopback registry, and optionally with
# buildah for a differential check of the flattened file trees. Writes a Markdown report.
#
# Base images: the corpus names public images; without internet they are replaced by local ones
# pushed to the loopback registry under the names the corpus uses:
#   busybox, alpine (no apk is used by the cases that map to it)  -> a busybox-static rootfs
#   debian, ubuntu                                                -> debootstrap --variant=minbase bookworm
#   gcr.io/kaniko-test/onbuild-base                               -> Dockerfile_onbuild_base built by kiln
# kiln reaches them through `--registry-map index.docker.io=REG --registry-map gcr.io=REG/gcr
# --skip-default-registry-fallback`; digest pins (`@sha256:`) are removed from FROM lines (the
# local images have other digests). Other bases (distroless, ubi, fedora, php, ...) and cases
# that need the network (apk/apt-get/yum/wget/curl in RUN, ADD of a URL) are skipped with the
# reason.
#
# Usage: ./scripts/kaniko-corpus.sh [--buildah | --buildah-light] [--only REGEX] [--report FILE]
#   --buildah-light: buildah only for cases without a Debian/Ubuntu base (buildah's vfs driver
#   copies the whole 127 MB tree per layer: about a minute per such case on 2 cores)
# Env:   KILN=path/to/kiln (default: cargo build -p kiln, in $CARGO_TARGET_DIR or target/)
#        KILN_CORPUS_STATE=dir  caches the Debian rootfs (default ~/.cache/kiln-corpus)
#        KILN_CORPUS=dir        the corpus' integration/ directory
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
corpus=${KILN_CORPUS:-$repo/../shared/corpus/kaniko-dockerfiles/googlecontainertools-v1.24.0/integration}
state=${KILN_CORPUS_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/kiln-corpus}
report=$repo/conformance/kaniko-corpus-report.md
with_buildah=0
buildah_light=0
only=.
while [ $# -gt 0 ]; do
  case $1 in
    --buildah) with_buildah=1 ;;
    --buildah-light) with_buildah=1 buildah_light=1 ;;
    --only) only=$2; shift ;;
    --report) report=$2; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '== %s\n' "$*" >&2; }
die() { printf 'FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ -d "$corpus/dockerfiles" ] || { echo "skipped: corpus not found ($corpus)"; exit 0; }
corpus=$(cd "$corpus" && pwd)
for tool in docker-registry umoci skopeo busybox; do
  command -v "$tool" >/dev/null || die "$tool not installed (apt-get install docker-registry umoci skopeo busybox-static)"
done
if [ "$with_buildah" = 1 ]; then command -v buildah >/dev/null || die "buildah not installed"; fi

if [ -z "${KILN:-}" ]; then
  (cd "$repo" && cargo build -q -p kiln)
  KILN=${CARGO_TARGET_DIR:-$repo/target}/debug/kiln
fi
[ -x "$KILN" ] || die "no kiln binary at $KILN"

work=$(mktemp -d /tmp/kiln-corpus.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
mkdir -p "$state"

# --- loopback registry ----------------------------------------------------------------------
mkdir -p "$work/registry/data"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
log: {level: info, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry/data}, delete: {enabled: true}}
http: {addr: "127.0.0.1:0", secret: kaniko-corpus}
EOF
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
pids+=($!)
reg=""
for _ in $(seq 100); do
  reg=$(grep -o 'listening on 127\.0\.0\.1:[0-9]*' "$work/registry/log" | head -n1 | sed 's/listening on //' || true)
  [ -n "$reg" ] && break
  sleep 0.1
done
[ -n "$reg" ] || die "registry did not start: $(cat "$work/registry/log")"
say "registry on $reg, work dir $work"

# --- base images ------------------------------------------------------------------------------
# An OCI layout with one layer holding the rootfs built by "$2" (a function filling the dir
# given as $1), made with umoci (not kiln: the bases must not depend on what is tested).
make_base() { # layout fill-function
  local layout=$1 fill=$2 bundle
  bundle=$(mktemp -d "$work/bundle.XXXXXX")
  rm -rf "$layout" "$bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:latest"
  umoci unpack --image "$layout:latest" "$bundle" >/dev/null
  "$fill" "$bundle/rootfs"
  umoci repack --image "$layout:latest" "$bundle"
  umoci config --image "$layout:latest" \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.cmd /bin/sh
  rm -rf "$bundle"
}
fill_busybox() {
  local r=$1
  mkdir -p "$r/bin" "$r/etc" "$r/root" "$r/tmp" "$r/usr/bin" "$r/usr/sbin" "$r/sbin"
  cp "$(command -v busybox)" "$r/bin/busybox"
  local a
  for a in $("$r/bin/busybox" --list-full); do
    [ "$a" = bin/busybox ] || [ -e "$r/$a" ] || ln -s /bin/busybox "$r/$a"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$r/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$r/etc/group"
  chmod 1777 "$r/tmp"
  chmod 0700 "$r/root"
}
fill_debian() {
  cp -a "$state/debian-rootfs/." "$1/"
}
push_base() { # layout repo:tag
  skopeo copy --quiet --dest-tls-verify=false "oci:$1:latest" "docker://$reg/$2"
}

t=$(now)
make_base "$work/busybox" fill_busybox
for tag in busybox:latest busybox:1.31 alpine:latest alpine:3.8 alpine:3.9 alpine:3.11; do
  push_base "$work/busybox" "library/$tag"
done
say "busybox base: $(secs "$t") s"

have_debian=0
if [ ! -d "$state/debian-rootfs/usr" ] && command -v debootstrap >/dev/null; then
  mirror=$(grep -hoE '^URIs: *http[^ ]*debian/?$|^deb +http[^ ]*debian/? ' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
    head -n1 | sed -E 's/^URIs: *//; s/^deb +//; s/ $//' || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  say "debootstrap --variant=minbase bookworm from $mirror (cached in $state)"
  t=$(now)
  rm -rf "$state/debian-rootfs.tmp"
  if debootstrap --variant=minbase bookworm "$state/debian-rootfs.tmp" "$mirror" >"$work/debootstrap.log" 2>&1; then
    (cd "$state/debian-rootfs.tmp" && rm -rf var/cache/apt/archives/*.deb var/lib/apt/lists/* dev/* proc/* sys/* tmp/*)
    mv "$state/debian-rootfs.tmp" "$state/debian-rootfs"
    say "debootstrap: $(secs "$t") s"
  else
    say "debootstrap failed (debian/ubuntu cases will be skipped): $(tail -n1 "$work/debootstrap.log")"
  fi
fi
if [ -d "$state/debian-rootfs/usr" ]; then
  t=$(now)
  if [ ! -f "$state/debian-oci/index.json" ]; then make_base "$state/debian-oci" fill_debian; fi
  for tag in debian:latest debian:12 debian:10.13 debian:10.2 debian:9.11 debian:bullseye-20220328 \
    debian:bullseye-slim ubuntu:latest ubuntu:focal ubuntu:18.04; do
    push_base "$state/debian-oci" "library/$tag"
  done
  have_debian=1
  say "debian base: $(secs "$t") s"
fi

# --- per-case settings (Kaniko's integration/images.go: argsMap, additionalKanikoFlagsMap) ---
case_args() { # name -> one argument per line
  case $1 in
    Dockerfile_test_run | Dockerfile_test_run_new) echo --build-arg; echo file=/file ;;
    Dockerfile_test_run_redo) printf '%s\n' --build-arg file=/file --snapshot-mode=redo ;;
    Dockerfile_test_snapshotter_ignorelist) echo --use-new-run=true ;;
    Dockerfile_test_workdir) echo --build-arg; echo workdir=/arg/workdir ;;
    Dockerfile_test_add) echo --build-arg; echo file=context/foo; echo --single-snapshot ;;
    Dockerfile_test_arg_secret) printf '%s\n' --build-arg SSH_PRIVATE_KEY --build-arg 'SSH_PUBLIC_KEY=Pµbl1cK€Y' ;;
    Dockerfile_test_onbuild) echo --build-arg; echo file=/tmp/onbuild ;;
    Dockerfile_test_scratch)
      printf '%s\n' --build-arg image=scratch --build-arg hello=hello-value --build-arg file=context/foo \
        --build-arg 'file3=context/b*' --single-snapshot ;;
    Dockerfile_test_multistage) echo --build-arg; echo file=/foo2 ;;
    Dockerfile_test_maintainer) echo --single-snapshot ;;
    Dockerfile_test_target) echo --target=second ;;
  esac
}
# Options of the buildah reference build for the same case (build args and target only).
buildah_args() {
  case_args "$1" | grep -v -e '^--single-snapshot$' -e '^--snapshot-mode' -e '^--use-new-run' | sed 's/^--target=/--target\n/' || true
}

# Why a case cannot be built here, or nothing.
skip_reason() { # dockerfile name
  local df=$1 name=$2 body froms
  body=$(grep -v '^[[:space:]]*#' "$df")
  froms=$(grep -iE '^[[:space:]]*FROM[[:space:]]' <<<"$body" || true)
  case $name in
    Dockerfile_git_buildcontext) echo "needs a git context (Kaniko's own repository)"; return ;;
    Dockerfile_test_extraction) echo "base gcr.io/kaniko-test/extraction-base-image has no Dockerfile in the corpus"; return ;;
    Dockerfile_test_hardlink) echo "bases composer/php/jboss and hardlink-base (made with apk) unavailable offline"; return ;;
    Dockerfile_hardlink_base) echo "RUN apk add (alpine's package manager; base mapped to busybox)"; return ;;
  esac
  local b
  for b in phusion/ gcr.io/distroless registry.access.redhat.com rabbitmq php@ composer@ jboss/ fedora@ \
    google/cloud-sdk atomist/ bash:4.4; do
    if grep -qF "$b" <<<"$froms"; then echo "base image ${b%[/@:]*} has no local equivalent"; return; fi
  done
  if [ "$have_debian" = 0 ] && grep -qiE 'debian|ubuntu|\$\{?REGISTRY' <<<"$froms"; then
    echo "Debian base not available (debootstrap failed)"; return
  fi
  if grep -qiE 'alpine|busybox' <<<"$froms" && grep -qE '\b(adduser|addgroup)\b' <<<"$body"; then
    echo "RUN uses adduser/addgroup: alpine's and busybox.net's busybox have them, Debian's busybox-static (the local stand-in) does not"
    return
  fi
  local net
  net=$(grep -oiE '\b(apk add|apt-get (update|install)|yum|dnf|wget|curl|npm (install|ci)|pip install)\b' <<<"$body" | head -n1 || true)
  if [ -n "$net" ]; then echo "RUN needs the network ($net)"; return; fi
  if grep -qiE '^[[:space:]]*(ADD|ARG)[^#]*https?://' <<<"$body"; then echo "ADD of a URL needs the network"; return; fi
}

# --- the cases --------------------------------------------------------------------------------
cases=()
for f in "$corpus"/dockerfiles/*; do
  case $f in
    *.dockerignore) continue ;;
    # Kaniko builds this one from integration/context with a relative -f (buildRelativePathsImage).
    */Dockerfile_relative_copy) cases+=("dockerfiles/${f##*/}|$corpus/context") ;;
    *) cases+=("dockerfiles/${f##*/}|$corpus") ;;
  esac
done
for d in "$corpus"/dockerfiles-with-context/*/; do
  d=${d%/}
  cases+=("dockerfiles-with-context/${d##*/}/Dockerfile|$d")
done
cases+=("testdata/Dockerfile.trivial|$corpus/testdata")
cases+=("testdata/exit-code-propagation/Dockerfile_exit_code_propagation|$corpus/testdata/exit-code-propagation")
cases+=("benchmark_fs/Dockerfile|$corpus/benchmark_fs")

# Kiln's (and buildah's) view of the local bases.
kiln_common=(--insecure --insecure-pull --log-format=text --compat=kaniko
  --registry-map "index.docker.io=$reg" --registry-map "gcr.io=$reg/gcr" --skip-default-registry-fallback)
cat >"$work/registries.conf" <<EOF
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
[[registry]]
prefix = "docker.io"
location = "$reg"
insecure = true
[[registry]]
prefix = "gcr.io"
location = "$reg/gcr"
insecure = true
[[registry]]
location = "$reg"
insecure = true
EOF

# Prepared copy of a case: the Dockerfile without digest pins, beside its <name>.dockerignore.
prepare() { # rel context -> prints the Dockerfile path
  local rel=$1 src=$corpus/$1 dir
  dir=$work/cases/$(tr '/' '_' <<<"$rel")
  mkdir -p "$dir"
  sed -E '/^[[:space:]]*[Ff][Rr][Oo][Mm][[:space:]]/ s/@sha256:[0-9a-f]{64}//' "$src" >"$dir/${src##*/}"
  [ -f "$src.dockerignore" ] && cp "$src.dockerignore" "$dir/${src##*/}.dockerignore"
  echo "$dir/${src##*/}"
}

# A listing of a flattened tree, one line per path: path, type mode uid:gid size link-target,
# and the first 16 hex digits of the content's sha256 for regular files.
tree_list() { # rootfs out
  (cd "$1" && find . -mindepth 1 -printf '%p\t%y %m %U:%G %s %l\n' | LC_ALL=C sort -t $'\t' -k1,1) >"$2.meta"
  (cd "$1" && find . -mindepth 1 -type f -print0 | xargs -0 -r sha256sum) |
    awk '{ p=$2; for (i=3;i<=NF;i++) p=p" "$i; print p "\t" substr($1,1,16) }' |
    LC_ALL=C sort -t $'\t' -k1,1 >"$2.hash"
  LC_ALL=C join -t $'\t' -a1 -e - -o 0,1.2,2.2 "$2.meta" "$2.hash" >"$2"
}
# buildah's chroot isolation leaves empty /etc/hosts, /etc/hostname, /etc/resolv.conf and /run
# in RUN layers (../shared/TESTING.md), and creates the /dev, /proc and /sys mount points when
# the base lacks them (the busybox base does): not differences of kiln's. Their contents, if
# any, are still compared.
buildah_noise='^\./(etc/hosts|etc/hostname|etc/resolv\.conf|run|dev|proc|sys)\t'

unpack_ref() { # docker-ref out-dir
  mkdir -p "$2" &&
    skopeo copy --quiet --src-tls-verify=false "docker://$1" "oci:$2/layout:t" &&
    umoci unpack --image "$2/layout:t" "$2/bundle" >/dev/null
}

rows=()
n_built=0 n_failed=0 n_skipped=0 n_expected=0 n_same=0 n_diff=0 n_bfail=0 n_light=0
buildah_root=$work/buildah
onbuild_done=0
total_t=$(now)
for entry in "${cases[@]}"; do
  rel=${entry%%|*}
  ctx=${entry#*|}
  name=${rel%/Dockerfile}
  name=${name##*/}
  grep -qE -- "$only" <<<"$rel" || continue
  reason=$(skip_reason "$corpus/$rel" "$name")
  if [ -n "$reason" ]; then
    rows+=("| \`$rel\` | skipped | $reason | | |")
    n_skipped=$((n_skipped + 1))
    continue
  fi
  # Dockerfile_test_onbuild's base is Dockerfile_onbuild_base, built here first and pushed as
  # the name the corpus uses.
  if [ "$name" = Dockerfile_test_onbuild ] && [ "$onbuild_done" = 0 ]; then
    "$KILN" build -c "$corpus" -f "$(prepare dockerfiles/Dockerfile_onbuild_base "$corpus")" \
      -d "$reg/gcr/kaniko-test/onbuild-base:latest" "${kiln_common[@]}" --kiln-dir "$work/state" \
      >"$work/onbuild-base.log" 2>&1 && onbuild_done=1
  fi
  if [ "$name" = issue-2075 ]; then
    # The corpus omits this case's ELF test binary; its NOTICE.md: any small executable named
    # top1 in the context will do.
    cp -r "$ctx" "$work/ctx-issue-2075"
    ctx=$work/ctx-issue-2075
    cp "$(command -v busybox)" "$ctx/top1"
  fi
  df=$(prepare "$rel" "$ctx")
  mapfile -t extra < <(case_args "$name")
  dest=$reg/corpus/$(tr 'A-Z_' 'a-z-' <<<"$name"):kiln
  log=$work/logs/$name.kiln.log
  mkdir -p "$work/logs"
  say "kiln: $rel"
  t=$(now)
  status=0
  SSH_PRIVATE_KEY=ThEPriv4t3Key timeout 600 "$KILN" build -c "$ctx" -f "$df" -d "$dest" "${kiln_common[@]}" \
    --kiln-dir "$work/state" "${extra[@]}" >"$log" 2>&1 || status=$?
  took=$(secs "$t")
  flags=${extra[*]:-}
  flags=${flags//|/\\|}
  if [ "$name" = Dockerfile_exit_code_propagation ]; then
    if [ "$status" = 42 ]; then
      rows+=("| \`$rel\` | failed as expected | RUN exit 42 → kiln exit status $status | $took | |")
      n_expected=$((n_expected + 1))
    else
      rows+=("| \`$rel\` | **failed** | expected exit status 42, got $status: $(grep -m1 -iE 'error' "$log" | cut -c1-160 || true) | $took | |")
      n_failed=$((n_failed + 1))
    fi
    continue
  fi
  if [ "$status" != 0 ]; then
    first=$(grep -m1 -iE '(^|[^a-z])(error|fatal)' "$log" || tail -n1 "$log")
    first=$(cut -c1-200 <<<"$first" | sed 's/|/\\|/g; s/`/'"'"'/g')
    rows+=("| \`$rel\` | **failed** ($status) | $first | $took | $flags |")
    n_failed=$((n_failed + 1))
    continue
  fi
  n_built=$((n_built + 1))
  cmp_note=""
  if [ "$buildah_light" = 1 ] && grep -v '^[[:space:]]*#' "$corpus/$rel" | grep -iE '^[[:space:]]*FROM[[:space:]]' |
    grep -qiE 'debian|ubuntu|\$\{?REGISTRY|onbuild-base'; then
    cmp_note="(no buildah comparison: Debian base, --buildah-light)"
    n_light=$((n_light + 1))
  elif [ "$with_buildah" = 1 ]; then
    bdir=$work/cmp/$name
    mkdir -p "$bdir"
    mapfile -t bextra < <(buildah_args "$name")
    blog=$work/logs/$name.buildah.log
    bref=$reg/corpus/$(tr 'A-Z_' 'a-z-' <<<"$name"):buildah
    if SSH_PRIVATE_KEY=ThEPriv4t3Key CONTAINERS_REGISTRIES_CONF=$work/registries.conf timeout 600 \
      buildah --root "$buildah_root/root" --runroot "$buildah_root/runroot" --storage-driver vfs \
      bud --isolation chroot --layers --tls-verify=false -f "$df" -t "$bref" "${bextra[@]}" "$ctx" >"$blog" 2>&1 &&
      CONTAINERS_REGISTRIES_CONF=$work/registries.conf buildah --root "$buildah_root/root" \
        --runroot "$buildah_root/runroot" --storage-driver vfs push --tls-verify=false "$bref" "docker://$bref" >>"$blog" 2>&1 &&
      unpack_ref "$bref" "$bdir/buildah" >>"$blog" 2>&1 && unpack_ref "$dest" "$bdir/kiln" >>"$blog" 2>&1; then
      tree_list "$bdir/kiln/bundle/rootfs" "$bdir/kiln.list"
      tree_list "$bdir/buildah/bundle/rootfs" "$bdir/buildah.list"
      grep -vP "$buildah_noise" "$bdir/buildah.list" >"$bdir/buildah.clean" || true
      grep -vP "$buildah_noise" "$bdir/kiln.list" >"$bdir/kiln.clean" || true
      if diff -q "$bdir/kiln.clean" "$bdir/buildah.clean" >/dev/null; then
        cmp_note="same tree ($(wc -l <"$bdir/kiln.clean") paths)"
        n_same=$((n_same + 1))
      else
        ndiff=$(diff "$bdir/kiln.clean" "$bdir/buildah.clean" | grep -c '^[<>]' || true)
        ex=$(diff "$bdir/kiln.clean" "$bdir/buildah.clean" | grep '^[<>]' | head -n 4 |
          sed 's/\t/ /g; s/|/\\|/g; s/^</kiln:/; s/^>/buildah:/' | paste -sd ';' | cut -c1-400 || true)
        cmp_note="**differs** ($ndiff lines): $ex"
        n_diff=$((n_diff + 1))
        diff "$bdir/kiln.clean" "$bdir/buildah.clean" >"$work/logs/$name.diff" || true
      fi
    else
      cmp_note="buildah failed: $( (grep -m1 -iE 'error' "$blog" || tail -n1 "$blog") | cut -c1-200 | sed 's/|/\\|/g; s/`/'"'"'/g')"
      n_bfail=$((n_bfail + 1))
    fi
  fi
  rows+=("| \`$rel\` | built | $(tr '\n' ' ' <<<"$cmp_note") | $took | $flags |")
done
total=$(secs "$total_t")

# --- report -------------------------------------------------------------------------------------
{
  echo "# Kaniko's integration Dockerfiles built by kiln"
  echo
  echo "Generated by \`scripts/kaniko-corpus.sh$([ "$with_buildah" = 1 ] && echo ' --buildah')$([ "$buildah_light" = 1 ] && echo '-light')\` on $(date -u +%Y-%m-%d) with \`$("$KILN" version 2>/dev/null | head -n1)\`."
  echo
  echo "**${#rows[@]} cases: $n_built built, $n_failed failed, $n_expected failed as expected, $n_skipped skipped.**"
  if [ "$with_buildah" = 1 ]; then
    echo "buildah comparison of the $n_built built: $n_same same flattened tree, $n_diff differ, $n_bfail buildah could not build, $n_light not compared (Debian base)."
  fi
  echo "Builds took $total s in all (2 cores)."
  echo
  echo "The corpus is Kaniko v1.24.0's \`integration/\` directory (Apache-2.0, see its NOTICE.md), read from"
  echo "\`../shared/corpus/kaniko-dockerfiles\`. Contexts are Kaniko's: \`integration/\` for \`dockerfiles/*\`, the"
  echo "case's own directory otherwise; build args and flags from Kaniko's \`integration/images.go\`."
  echo "Base images are local (see the script's header): busybox and alpine → a busybox-static rootfs,"
  echo "debian and ubuntu → Debian 12 minbase (debootstrap), all pushed to a loopback \`docker-registry\`"
  echo "and reached with \`--registry-map\`; \`@sha256:\` pins are dropped. kiln runs with \`--compat=kaniko\`, as"
  echo "the \`executor\` alias does (Kaniko's VOLUME). A build passing here means kiln"
  echo "built and pushed it; Kaniko's own checks (container-diff against docker) are not reproduced,"
  echo "the buildah column is the differential check: per path type, mode, uid:gid, size, link"
  echo "target and content hash of the flattened trees (buildah's empty chroot leftovers"
  echo "\`etc/hosts\`, \`etc/hostname\`, \`etc/resolv.conf\`, \`run/\`, and the \`dev/\`, \`proc/\`, \`sys/\` mount points"
  echo "its RUN creates in a base without them, are ignored; the contents of those directories are not)."
  echo
  echo "| Dockerfile | kiln | detail$([ "$with_buildah" = 1 ] && echo ' / buildah comparison') | s | extra flags |"
  echo "|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
} >"$report"
say "report: $report ($n_built built, $n_failed failed, $n_skipped skipped; logs in $work/logs)"

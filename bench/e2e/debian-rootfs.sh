#!/bin/bash
# Prints the path of a cached Debian bookworm minbase rootfs tarball, making it first when
# missing (debootstrap, 45-90 s, needs the Debian mirror named in apt's sources).
#   bench/e2e/debian-rootfs.sh [CACHE_DIR]     (default /var/tmp/kiln-bench)
set -euo pipefail
CACHE="${1:-/var/tmp/kiln-bench}"
OUT="$CACHE/debian-bookworm-minbase.tar"
if [ -s "$OUT" ]; then echo "$OUT"; exit 0; fi
mkdir -p "$CACHE"
# The first Debian (not security) mirror of apt's one-line or deb822 sources.
MIRROR=$(grep -hsE '^(deb |URIs:)' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    /etc/apt/sources.list.d/*.sources | grep -oE 'https?://[^ ]+' | grep -v security \
    | grep -m1 debian || true)
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
command -v debootstrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >&2
DIR=$(mktemp -d "$CACHE/debootstrap.XXXXXX")
trap 'rm -rf "$DIR"' EXIT
echo "debootstrap --variant=minbase bookworm from $MIRROR (once; cached in $OUT)" >&2
debootstrap --variant=minbase bookworm "$DIR" "$MIRROR" >"$DIR.log" 2>&1 \
    || { tail -20 "$DIR.log" >&2; exit 1; }
rm -f "$DIR.log"
# As TESTING.md: no package cache, no lists, no device nodes or mounts' leftovers.
rm -rf "$DIR"/var/cache/apt/archives/*.deb "$DIR"/var/lib/apt/lists/* \
    "$DIR"/dev/* "$DIR"/proc/* "$DIR"/sys/* "$DIR"/tmp/*
tar --sort=name --numeric-owner --xattrs -C "$DIR" -cf "$OUT.part" .
mv "$OUT.part" "$OUT"
echo "$OUT"

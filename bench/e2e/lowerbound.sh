#!/bin/bash
# The lower bound of one workload, timed as a whole by e2e.sh: the workload's steps run
# directly on the host (RUN = `chroot ROOT sh -c ...`, COPY = cp), then ONE layer of every
# path whose ctime is newer than MARKER (`find -cnewer`, tar without recursion, gzip -1),
# appended to a prepared copy of the base's OCI layout, and pushed with `skopeo copy`.
# Deletions are not recorded (no whiteouts): a lower bound, not a builder.
#   lowerbound.sh ROOT MARKER LAYOUT TAG DEST STEP...    (each STEP is a bash snippet; $ROOT is set)
set -euo pipefail
ROOT=$1 MARKER=$2 LAYOUT=$3 TAG=$4 DEST=$5
shift 5
export ROOT
HERE=$(cd "$(dirname "$0")" && pwd)
for step in "$@"; do
    bash -c "$step"
done
OUT=$(dirname "$LAYOUT")/lb-layer
(cd "$ROOT" && find . -xdev -cnewer "$MARKER" -print0 \
    | tar --null --no-recursion --numeric-owner -T - -cf - \
    | tee >(sha256sum | cut -d' ' -f1 >"$OUT.diffid") | gzip -1 -n >"$OUT.tar.gz")
# tee's process substitution may still be writing: wait for the digest line.
for _ in $(seq 100); do [ -s "$OUT.diffid" ] && break; sleep 0.01; done
python3 "$HERE/oci.py" append "$LAYOUT" "$TAG" "$OUT.tar.gz" "sha256:$(cat "$OUT.diffid")"
skopeo copy -q --dest-tls-verify=false "oci:$LAYOUT:$TAG" "docker://$DEST"

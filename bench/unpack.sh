#!/bin/sh
# Unpack benchmark: kiln's confined layer unpack (`kiln_rootfs::unpack_layer`, through the
# `unpack_bench` example) against GNU `tar -xzf` (as root, --numeric-owner -p: ownership, modes
# and mtimes applied, as kiln does) into a fresh directory on the same file system, alternating
# in the same run. Layers (tar.gz, entries sorted by name as kiln's writer sorts them):
#   small  3,000 files (100 B - 8 KB) in 50 directories (the cached dependency layer of issue 8)
#   many   60,000 such files in 600 directories
#   big    one 200 MB file (hex text, ~2:1 with gzip)
# Prints medians, the ratio kiln/tar, and one `strace -c -f` count per layer and tool
# (syscalls per entry). Not part of `cargo test`.
#
#   bench/unpack.sh [WORK_DIR]     (default: $TMPDIR or /tmp; needs ~1.5 GB free)
#
# Environment: REPS (5), LAYERS ("small many big"), KILN_BEFORE (an older unpack_bench binary,
# timed too, for before/after), CARGO_TARGET_DIR (where cargo builds), NO_STRACE=1.
set -eu
cd "$(dirname "$0")/.."
WORK="${1:-${TMPDIR:-/tmp}}/kiln-unpack-bench.$$"
REPS="${REPS:-5}"
LAYERS="${LAYERS:-small many big}"
cargo build --release -q -p kiln-rootfs --example unpack_bench
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK"
# A copy: a rebuild during the run must not change the binary being measured.
BIN="$WORK/unpack_bench"
cp "${CARGO_TARGET_DIR:-target}/release/examples/unpack_bench" "$BIN"

make_layer() { # name
    src="$WORK/src-$1"
    python3 - "$src" "$1" <<'PY'
import os, random, sys
root, kind = sys.argv[1], sys.argv[2]
rng = random.Random(8)
os.makedirs(root)
def small(files, dirs):
    for d in range(dirs):
        dp = os.path.join(root, "pkg%03d" % d, "lib")
        os.makedirs(dp)
        for f in range(files // dirs):
            n = rng.randint(100, 8192)
            words = [b"import ", b"def ", b"return ", b"self", b"\n    ", b"None", b"0x%x" % rng.getrandbits(32)]
            data = b"".join(rng.choice(words) for _ in range(n // 5))[:n]
            with open(os.path.join(dp, "mod%05d.py" % f), "wb") as fh:
                fh.write(data)
if kind == "small":
    small(3000, 50)
elif kind == "many":
    small(60000, 600)
else:
    with open(os.path.join(root, "big.bin"), "wb") as fh:
        for _ in range(200):
            fh.write(os.urandom(512 * 1024).hex().encode())
PY
    tar -C "$src" --sort=name --numeric-owner -czf "$WORK/$1.tar.gz" .
    rm -rf "$src"
}

median() { sort -n | awk '{a[NR]=$1} END{m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.3f", m}'; }

# Runs "$@" (which unpacks into the fresh directory $DEST) and appends its wall time to file
# $1.w and its CPU time (user + sys, children included: tar's gzip, kiln's inflate thread) to
# $1.c. CPU time is the steadier figure on a loaded machine; wall time is what a build waits.
timed() { # out cmd...
    out="$1"; shift
    rm -rf "$DEST"; sync
    t0=$(date +%s.%N)
    /usr/bin/time -o "$WORK/rusage" -f "%U %S" "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t0 $t1" | awk '{printf "%.4f\n", $2-$1}' >>"$out.w"
    awk '{printf "%.4f\n", $1+$2}' "$WORK/rusage" >>"$out.c"
}
TAR_X='mkdir "$DEST" && exec tar -C "$DEST" --numeric-owner -p -xzf "$1"'

echo "## $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, $(uname -r), $(df -T "$WORK" | awk 'NR==2{print $2}') file system, $(tar --version | head -1)"
echo
echo "Load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (other jobs on the machine skew timings)"
echo
echo "Medians of $REPS runs; wall time, then CPU time (user+sys) in parentheses."
echo
echo "| layer | entries | gz size | kiln | tar -xzf | kiln/tar wall (cpu) |$( [ -n "${KILN_BEFORE:-}" ] && echo ' before | before/tar wall (cpu) |')"
echo "| --- | --- | --- | --- | --- | --- |$( [ -n "${KILN_BEFORE:-}" ] && echo ' --- | --- |')"
DEST="$WORK/d"
export DEST
for L in $LAYERS; do
    make_layer "$L"
    layer="$WORK/$L.tar.gz"
    rm -f "$WORK"/k.? "$WORK"/t.? "$WORK"/b.?
    i=0
    while [ "$i" -lt "$REPS" ]; do
        # Alternate the order: whoever runs right after a removal pays for its writeback.
        if [ $((i % 2)) -eq 0 ]; then
            timed "$WORK/k" "$BIN" "$layer" "$DEST"
            timed "$WORK/t" sh -c "$TAR_X" sh "$layer"
        else
            timed "$WORK/t" sh -c "$TAR_X" sh "$layer"
            timed "$WORK/k" "$BIN" "$layer" "$DEST"
        fi
        if [ -n "${KILN_BEFORE:-}" ]; then
            timed "$WORK/b" "$KILN_BEFORE" "$layer" "$DEST"
        fi
        i=$((i + 1))
    done
    "$BIN" "$layer" "$WORK/e" >"$WORK/out"; rm -rf "$WORK/e"
    entries=$(cut -d' ' -f2 "$WORK/out")
    ratio() { echo "$1 $2" | awk '{printf "%.2f", $1/$2}'; }
    kw=$(median <"$WORK/k.w"); kc=$(median <"$WORK/k.c")
    tw=$(median <"$WORK/t.w"); tc=$(median <"$WORK/t.c")
    extra=""
    if [ -n "${KILN_BEFORE:-}" ]; then
        bw=$(median <"$WORK/b.w"); bc=$(median <"$WORK/b.c")
        extra=" $bw s ($bc s) | $(ratio "$bw" "$tw") ($(ratio "$bc" "$tc")) |"
    fi
    echo "| $L | $entries | $(du -m "$layer" | cut -f1) MB | $kw s ($kc s) | $tw s ($tc s) | **$(ratio "$kw" "$tw")** ($(ratio "$kc" "$tc")) |$extra"
    {
        echo "$L wall: kiln $(tr '\n' ' ' <"$WORK/k.w")| tar $(tr '\n' ' ' <"$WORK/t.w")$( [ -n "${KILN_BEFORE:-}" ] && echo "| before $(tr '\n' ' ' <"$WORK/b.w")")"
        echo "$L cpu:  kiln $(tr '\n' ' ' <"$WORK/k.c")| tar $(tr '\n' ' ' <"$WORK/t.c")$( [ -n "${KILN_BEFORE:-}" ] && echo "| before $(tr '\n' ' ' <"$WORK/b.c")")"
    } >>"$WORK/raw"
    if [ -z "${NO_STRACE:-}" ] && command -v strace >/dev/null; then
        rm -rf "$WORK/d"; mkdir "$WORK/d"
        strace -c -f -o "$WORK/st-tar" tar -C "$WORK/d" --numeric-owner -p -xzf "$layer"
        rm -rf "$WORK/d"
        strace -c -f -o "$WORK/st-kiln" "$BIN" "$layer" "$WORK/d" >/dev/null
        whos="kiln tar"
        if [ -n "${KILN_BEFORE:-}" ]; then
            rm -rf "$WORK/d"
            strace -c -f -o "$WORK/st-before" "$KILN_BEFORE" "$layer" "$WORK/d" >/dev/null
            whos="kiln before tar"
        fi
        for who in $whos; do
            tot=$(awk '$NF == "total" { print $4 }' "$WORK/st-$who")
            top=$(awk '$1 ~ /^[0-9.]+$/ && $NF != "total" && NF >= 5 { print $4, $NF }' "$WORK/st-$who" |
                sort -rn | head -8 | awk -v e="$entries" '{ printf " %s %.2f", $2, $1 / e }')
            echo "$L $who: $(echo "$tot $entries" | awk '{printf "%.1f", $1/$2}') syscalls/entry;$top" >>"$WORK/strace"
        done
    fi
    rm -rf "$WORK/d" "$layer"
done
echo
echo "Raw times (s):"
echo '```'
cat "$WORK/raw"
echo '```'
if [ -s "$WORK/strace" ]; then
    echo
    echo "strace -c -f, one run each (syscalls per entry, top 8; tar's count includes its gzip child):"
    echo '```'
    cat "$WORK/strace"
    echo '```'
fi

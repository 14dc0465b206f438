#!/usr/bin/env python3
"""Small OCI helpers for bench/e2e.sh (standard library only).

    oci.py new LAYOUT TAG LAYER.tar.gz DIFFID   one-layer image (PATH env, Cmd ["/bin/sh"])
    oci.py append LAYOUT TAG LAYER.tar.gz DIFFID  adds a layer to the image TAG, in place
    oci.py size                                  manifest JSON on stdin -> config + layer bytes
    oci.py table RESULTS.tsv                     markdown table of medians (see e2e.sh)
    oci.py rebuilds RESULTS.tsv                  the rebuild workloads: cold vs rebuild per builder

Layouts follow the OCI image-layout spec (oci-layout, index.json, blobs/sha256/...), the
manifest and config the OCI image spec v1.
"""
import hashlib
import json
import os
import shutil
import statistics
import sys

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def put_blob(layout, data):
    digest = hashlib.sha256(data).hexdigest()
    path = os.path.join(layout, "blobs", "sha256", digest)
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)
    return "sha256:" + digest


def put_file_blob(layout, src):
    h = hashlib.sha256()
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    dst = os.path.join(layout, "blobs", "sha256", digest)
    if not os.path.exists(dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return "sha256:" + digest, os.path.getsize(src)


def write_image(layout, tag, config, layers):
    cfg = json.dumps(config, separators=(",", ":")).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": put_blob(layout, cfg), "size": len(cfg)},
        "layers": layers,
    }
    man = json.dumps(manifest, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": MT_MANIFEST,
                "digest": put_blob(layout, man),
                "size": len(man),
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump(index, f)


def read_image(layout, tag):
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    for m in index["manifests"]:
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            man = json.load(open(os.path.join(layout, "blobs", *m["digest"].split(":"))))
            cfg = json.load(open(os.path.join(layout, "blobs", *man["config"]["digest"].split(":"))))
            return cfg, man["layers"]
    sys.exit(f"oci.py: no tag {tag} in {layout}")


def cmd_new(layout, tag, layer, diffid):
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    digest, size = put_file_blob(layout, layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [diffid]},
        "history": [{"created_by": "bench/e2e base"}],
    }
    write_image(layout, tag, config, [{"mediaType": MT_LAYER, "digest": digest, "size": size}])


def cmd_append(layout, tag, layer, diffid):
    config, layers = read_image(layout, tag)
    digest, size = put_file_blob(layout, layer)
    config["rootfs"]["diff_ids"].append(diffid)
    config.setdefault("history", []).append({"created_by": "bench/e2e lower bound"})
    layers.append({"mediaType": MT_LAYER, "digest": digest, "size": size})
    write_image(layout, tag, config, layers)


def cmd_size():
    man = json.load(sys.stdin)
    print(man["config"]["size"] + sum(l["size"] for l in man["layers"]))


def fmt_s(v):
    return "-" if v is None else f"{v:.1f} s"


def fmt_mb(kb):
    return "-" if kb is None else f"{kb / 1024:.0f} MB"


def fmt_size(b):
    return "-" if b is None else f"{b / 1e6:.1f} MB"


def cmd_table(path):
    # rows: rep workload builder wall_s rss_kb size_bytes rc
    runs = {}
    order = []
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) < 7 or f[0] == "rep":
            continue
        _, w, b, wall, rss, size, rc = f[:7]
        if w not in order:
            order.append(w)
        runs.setdefault((w, b), []).append((float(wall), int(rss), int(size or 0), int(rc)))

    def med(w, b, i):
        ok = [r for r in runs.get((w, b), []) if r[3] == 0]
        return statistics.median(r[i] for r in ok) if ok else None

    def failed(w, b):
        return any(r[3] != 0 for r in runs.get((w, b), []))

    builders = ["kiln", "buildah", "buildkit", "lower-bound"]
    print("| workload | " + " | ".join(f"{b} wall" for b in builders)
          + " | kiln / faster peer | kiln / lower bound | peak RSS kiln / buildah / buildkit"
          + " | image size kiln / buildah / buildkit / lower bound | n |")
    print("|" + " --- |" * (len(builders) + 6))
    for w in order:
        walls = {}
        cells = []
        for b in builders:
            walls[b] = med(w, b, 0)
            cell = fmt_s(walls[b])
            if failed(w, b):
                cell += " (FAILED" + (" once)" if walls[b] is not None else ")")
            cells.append(cell)
        peers = [walls[b] for b in ("buildah", "buildkit") if walls[b] is not None]
        k = walls["kiln"]
        r_peer = f"{k / min(peers):.2f}" if k is not None and peers else "-"
        r_lb = f"{k / walls['lower-bound']:.2f}" if k is not None and walls["lower-bound"] else "-"
        rss = " / ".join(fmt_mb(med(w, b, 1)) for b in builders[:3])
        size = " / ".join(fmt_size(med(w, b, 2)) for b in builders)
        n = max((len(runs.get((w, b), [])) for b in builders), default=0)
        print(f"| {w} | " + " | ".join(cells) + f" | {r_peer} | {r_lb} | {rss} | {size} | {n} |")


def cmd_rebuilds(path):
    # Per rep, rebuild / cold of the same builder, then the median over reps (a ratio of
    # builds minutes apart means more than a ratio of medians on a shared machine).
    runs = {}
    for line in open(path):
        f = line.rstrip("\n").split("\t")
        if len(f) < 7 or f[0] == "rep" or f[6] != "0":
            continue
        runs[(f[0], f[1], f[2])] = float(f[3])
    reps = sorted({k[0] for k in runs})
    builders = ["kiln", "buildah", "buildkit", "lower-bound"]
    print("| workload | builder | cold (cache on) | one-file rebuild | rebuild / cold (target < 0.25 for kiln)"
          " | rebuild / buildah's rebuild | n |")
    print("|" + " --- |" * 7)
    for w in ("rebuild", "rebuild-multi"):
        for b in builders:
            cold = [runs[(r, w + "-cold", b)] for r in reps if (r, w + "-cold", b) in runs]
            re = [runs[(r, w, b)] for r in reps if (r, w, b) in runs]
            if not cold and not re:
                continue
            ratio = [runs[(r, w, b)] / runs[(r, w + "-cold", b)] for r in reps
                     if (r, w, b) in runs and (r, w + "-cold", b) in runs]
            vs = [runs[(r, w, b)] / runs[(r, w, "buildah")] for r in reps
                  if (r, w, b) in runs and (r, w, "buildah") in runs]
            med = lambda xs: statistics.median(xs) if xs else None
            r_cold = f"{med(ratio):.2f}" if ratio else "-"
            r_vs = f"{med(vs):.2f}" if vs and b != "buildah" else "-"
            print(f"| {w} | {b} | {fmt_s(med(cold))} | {fmt_s(med(re))} | {r_cold} | {r_vs} | {len(re)} |")


def main(argv):
    if len(argv) >= 1 and argv[0] == "new" and len(argv) == 5:
        cmd_new(*argv[1:])
    elif len(argv) >= 1 and argv[0] == "append" and len(argv) == 5:
        cmd_append(*argv[1:])
    elif argv == ["size"]:
        cmd_size()
    elif len(argv) == 2 and argv[0] == "table":
        cmd_table(argv[1])
    elif len(argv) == 2 and argv[0] == "rebuilds":
        cmd_rebuilds(argv[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

#!/usr/bin/env python3
"""Run a command; report its wall time and the peak resident memory of its process tree.

    measure.py [--also PID]... [--log FILE] -- CMD ARGS...

Prints one line on stdout: `WALL_SECONDS PEAK_RSS_KB EXIT_CODE`.

Why sampling /proc: GNU time's "maximum resident set size" is the largest single process
(getrusage RUSAGE_CHILDREN), not the tree, and a cgroup's memory peak (v1
memory.max_usage_in_bytes, v2 memory.peak) also counts the page cache of the files a build
writes, which for a 1 GB layer says nothing about the builder. So every 20 ms this sums
VmRSS (/proc/PID/statm, field 2, proc(5)) over the command and all its descendants, plus
each `--also` PID and its descendants (a daemon that does the work, e.g. dockerd and its
containerd). Shared pages of several processes count once per process, so the sum is an
upper bound of the real footprint; very short-lived processes can be missed between samples.
"""
import os
import subprocess
import sys
import threading
import time

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
INTERVAL = 0.02


def parents():
    """pid -> ppid for every process (stat field 4; comm may hold spaces, so split after ')')."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2 :].split()
        out[int(name)] = int(rest[1])
    return out


def tree_rss_kb(roots):
    pp = parents()
    children = {}
    for pid, ppid in pp.items():
        children.setdefault(ppid, []).append(pid)
    seen, stack = set(), [r for r in roots if r in pp]
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        stack.extend(children.get(pid, ()))
    total = 0
    for pid in seen:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KB
        except (OSError, IndexError, ValueError):
            pass
    return total


def main(argv):
    also, log = [], None
    while argv and argv[0] != "--":
        if argv[0] == "--also":
            also.append(int(argv[1]))
            argv = argv[2:]
        elif argv[0] == "--log":
            log = argv[1]
            argv = argv[2:]
        else:
            sys.exit(f"measure.py: unknown option {argv[0]}")
    cmd = argv[1:]
    if not cmd:
        sys.exit("usage: measure.py [--also PID]... [--log FILE] -- CMD ARGS...")
    out = open(log, "ab") if log else subprocess.DEVNULL
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    peak = 0
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_rss_kb([proc.pid] + also))
            done.wait(INTERVAL)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    rc = proc.wait()
    wall = time.monotonic() - start
    done.set()
    t.join()
    print(f"{wall:.2f} {peak} {rc}")


if __name__ == "__main__":
    main(sys.argv[1:])

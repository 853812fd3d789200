#!/usr/bin/env python3
"""Heap allocations per accepted create, with the run's execution and finish (SQLite, role all).

    python3 bench/allocations.py [--conns 8] [--secs 3] [--sites N] BEFORE AFTER AFTER BEFORE

Counts the calls of mimalloc's allocation (`_mi_page_malloc_zero`, which every allocation that
does not need a fresh page goes through) with a perf uprobe on each binary, over SECS seconds of
wrk creates on a fresh data directory (8 funded keys, 2 s of warm-up), plus 1.5 s for the queue
to drain, and divides by the creates. A uprobe makes each allocation cost a trap, so the req/s
printed is not a speed figure; the count is exact and repeats to a few tenths between sittings,
which makes it the figure to compare on this noisy machine. With --sites, records the call graphs
of one second at c1 and prints the N call sites allocating most per create.

Needs root (perf probe), perf and wrk; targets 127.0.0.1 only; bounded in time. The probes are
deleted at the end.
"""
import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import echo_creates, start_runbase, wrk  # noqa: E402

SYMBOL = "_mi_page_malloc_zero"


def probe(binary):
    """Adds the uprobe on `binary`; answers its event name."""
    subprocess.run(["perf", "probe", "-q", "-d", "probe_*:*"], capture_output=True)
    subprocess.run(["perf", "probe", "-q", "-x", binary, "-a", f"mz={SYMBOL}"], check=True, capture_output=True)
    return subprocess.run(["perf", "probe", "-l"], capture_output=True, text=True, check=True).stdout.split()[0]


def sites(data, creates, top):
    """The call sites allocating most, per create: the first frames that are not the allocator's."""
    out = subprocess.run(["perf", "script", "-i", data, "-F", "ip,sym"], capture_output=True, text=True).stdout
    skip = re.compile(r"\(inlined\)|^alloc|mi_|__rust|memcpy|core::ptr|^new<|^clone|^drop|^box_|^allocate|"
                      r"to_vec|^extend|^reserve|^grow|^finish_grow|^spec_|^do_reserve|unknown|^from<|^to_owned|"
                      r"^into|^collect|^map<|^<alloc::|^<T as alloc|^with_capacity|^from_iter|^to_string")
    count = collections.Counter()
    for stack in out.split("\n\n"):
        frames = [re.sub(r"^\s*[0-9a-f]+ ", "", f).strip() for f in stack.strip().split("\n") if f.strip()]
        kept = [f for f in frames if not skip.search(f)][:2]
        if kept:
            count[" <- ".join(f[:110] for f in kept)] += 1
    for site, n in count.most_common(top):
        print(f"  {n / creates:5.1f}  {site}")


def one(binary, conns, secs, top):
    tmp = tempfile.mkdtemp(prefix="runbase-allocs-")
    data = os.path.join(tmp, "data")
    env = {"RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000"}
    event = probe(binary)
    rb = start_runbase(binary, data, env)
    try:
        _, script = echo_creates(binary, data, os.path.join(tmp, "create.lua"), 8, env=env)
        wrk(rb.url, conns, 2, script)
        time.sleep(1)
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", event, "-p", str(rb.p.pid)], stderr=subprocess.PIPE, text=True)
        time.sleep(0.3)
        r = wrk(rb.url, conns, secs, script)
        time.sleep(1.5)
        perf.send_signal(2)
        n = int(perf.communicate()[1].strip().split("\n")[-1].split(",")[0])
        print(f"{binary}: c{conns}, {r['total']} creates, {n / r['total']:.1f} allocations per create", flush=True)
        if top:
            graph = os.path.join(tmp, "perf.data")
            perf = subprocess.Popen(["perf", "record", "-q", "-e", event, "--call-graph", "dwarf,8192", "-o", graph,
                                     "-p", str(rb.p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.3)
            r = wrk(rb.url, 1, 1, script)
            time.sleep(1)
            perf.send_signal(2)
            perf.wait()
            sites(graph, max(r["total"], 1), top)
    finally:
        rb.stop()
        subprocess.run(["perf", "probe", "-q", "-d", "probe_*:*"], capture_output=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--secs", type=int, default=3)
    ap.add_argument("--sites", type=int, default=0)
    args = ap.parse_args()
    for b in args.bins:
        one(b, args.conns, args.secs, args.sites)


if __name__ == "__main__":
    main()

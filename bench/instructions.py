#!/usr/bin/env python3
"""Instructions per run on SQLite, counted by valgrind's callgrind: a figure that repeats.

On this shared two-core machine req/s and CPU time per run move by 10-30% between sittings, so a
change worth a few percent cannot be seen in them. callgrind counts the instructions Runbase
executes, whatever else the machine is doing. The count is not time (a cache miss costs no
instruction), and under valgrind the threads take turns, so batches are smaller than under real
load: compare builds with it, not paths.

Each binary is started under callgrind with instrumentation off, on a fresh data directory (SQLite,
durability=full) with 8 keys; after a warm-up, instrumentation is switched on for SECS seconds
of accepted creates at c8 (with their claims and finishes, until the queue drains) and the
instructions are divided by the runs created.

    python3 bench/instructions.py BIN [BIN ...] [--secs 10] [--keep DIR]

With --keep, the callgrind files are left in DIR for `callgrind_annotate --inclusive=yes FILE`.
Needs valgrind and wrk; targets 127.0.0.1 only; every load is bounded in time.
"""

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import echo_creates, queue_drained, wait_health, wrk  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def count(binary, secs, keep):
    tmp = tempfile.mkdtemp(prefix="runbase-instructions-")
    data = os.path.join(tmp, "data")
    db = os.path.join(data, "runbase.db")
    out = os.path.join(keep or tmp, f"callgrind.{os.path.basename(binary)}.{os.getpid()}")
    port = free_port()
    env = {**os.environ, "RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000", "RUNBASE_DURABILITY": "full",
           "RUNBASE_LOG": "warn", "RUNBASE_HTTP__MAX_CONNECTIONS": "4096", "RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP": "4096"}
    p = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
                          binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while True:
            try:
                wait_health(url)
                break
            except Exception:
                if time.time() > deadline or p.poll() is not None:
                    raise RuntimeError(f"{binary} did not start under valgrind")
                time.sleep(0.5)
        _, script = echo_creates(binary, data, os.path.join(tmp, "create.lua"), 8)
        wrk(url, 8, 3, script)
        while not queue_drained(db):
            time.sleep(0.1)
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], capture_output=True, check=True)
        r = wrk(url, 8, secs, script)
        while not queue_drained(db):
            time.sleep(0.1)
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], capture_output=True, check=True)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], capture_output=True, check=True)
    finally:
        p.terminate()
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
    total = 0
    for f in glob.glob(out + "*"):
        with open(f) as lines:
            for line in lines:
                if line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
    if not keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return r["total"], total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--keep", default=None)
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed")
    for b in args.bins:
        runs, instructions = count(b, args.secs, args.keep)
        print(f"{b}: {runs} runs, {instructions / max(runs, 1):,.0f} instructions per run", flush=True)


if __name__ == "__main__":
    main()

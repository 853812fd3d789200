#!/usr/bin/env python3
"""Which pages a SQLite commit writes, by B-tree, over a burst of accepted creates (issue 15).

Starts Runbase on a fresh data directory (SQLite, durability=full) with 64 keys, warms up, then
holds a read transaction open (so the WAL cannot start over) through SECS seconds of wrk at c64
(at most 3: the WAL grows by about 100 MB a second, and past 256 MiB Runbase's checkpointer would
wait on the held reader), copies the WAL, kills Runbase and reads the copy: every frame written
after the hold, grouped by commit, and each page's owner from SQLite's `dbstat` table. Prints the
runs and frames per commit, and the pages each table or index adds per commit and per run. The
figures per commit move with the batch sizes, which move with the machine's speed; compare
builds in one sitting, and per run.

    python3 bench/wal_pages.py target/release/runbase [SECS]
"""
import collections
import os
import shutil
import signal
import sqlite3
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import echo_creates, start_runbase, wrk  # noqa: E402


def commits(wal_path, skip_frames=0):
    """The page numbers each commit of the WAL's current generation wrote, after its first
    `skip_frames` frames."""
    data = open(wal_path, "rb").read()
    page_size = struct.unpack(">I", data[8:12])[0]
    salt = data[16:24]
    out, current, off, frame = [], [], 32, 0
    while off + 24 + page_size <= len(data):
        page, commit = struct.unpack(">II", data[off:off + 8])
        if data[off + 8:off + 16] != salt:
            break
        if frame >= skip_frames:
            current.append(page)
            if commit:
                out.append(current)
                current = []
        frame += 1
        off += 24 + page_size
    return page_size, out, frame


def main():
    binary = sys.argv[1]
    secs = min(3, int(sys.argv[2])) if len(sys.argv) > 2 else 2
    tmp = tempfile.mkdtemp(prefix="runbase-wal-pages-")
    data = os.path.join(tmp, "data")
    db = os.path.join(data, "runbase.db")
    env = {"RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000", "RUNBASE_DURABILITY": "full"}
    rb = start_runbase(binary, data, env)
    try:
        time.sleep(0.5)
        _, script = echo_creates(binary, data, os.path.join(tmp, "create.lua"), 64)
        wrk(rb.url, 64, 3, script)
        hold = sqlite3.connect(db)
        hold.execute("BEGIN")
        hold.execute("SELECT count(*) FROM accounts").fetchall()
        runs_before = hold.execute("SELECT max(seq) FROM runs").fetchone()[0]
        # Frames already in the WAL's generation at the hold (the warm-up's) are not counted; the
        # generation cannot start over while the hold lasts, and a commit's frames are written
        # whole before it ends, so what follows them is this burst's commits.
        shutil.copy(db + "-wal", os.path.join(tmp, "before.wal"))
        r = wrk(rb.url, 64, secs, script)
        shutil.copy(db + "-wal", os.path.join(tmp, "copy.wal"))
    finally:
        os.kill(rb.p.pid, signal.SIGKILL)
        rb.p.wait()
    hold.close()
    conn = sqlite3.connect(db)
    owner = dict((page, name) for name, page in conn.execute("SELECT name, pageno FROM dbstat"))
    runs_after = conn.execute("SELECT max(seq) FROM runs").fetchone()[0]
    conn.close()
    _, _, skip = commits(os.path.join(tmp, "before.wal"))
    page_size, cs, _ = commits(os.path.join(tmp, "copy.wal"), skip)
    n = max(1, len(cs))
    runs = max(1, runs_after - runs_before)
    print(f"c64 {r['rps']:.0f} req/s; page size {page_size}; {len(cs)} commits, {runs} runs created: "
          f"{runs / n:.1f} runs and {sum(map(len, cs)) / n:.1f} frames per commit, "
          f"{sum(map(len, cs)) / runs:.2f} frames per run")
    per = collections.Counter(owner.get(p, "(free, or not in the final file)") for c in cs for p in c)
    for name, count in per.most_common():
        print(f"  {name:32} {count / n:6.2f} pages per commit {count / runs:6.3f} per run")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

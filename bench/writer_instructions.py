#!/usr/bin/env python3
"""Instructions per run of the SQLite writer, counted by callgrind (issue 15).

Time per run moves by ±15% between runs on this shared machine; instruction counts do not. This
starts Runbase under `valgrind --tool=callgrind` on a fresh SQLite data directory (durability
full) with 64 keys, warms it up, zeroes the counters, makes echo runs with wrk for SECS seconds,
waits until every run is finished (so claims and successes are counted), dumps the counters and
prints the instructions per run inclusive of the writer thread's loop (`writer::run`) and of a
few of its parts, and of the whole process.

Under callgrind the process runs 20-50 times slower and one thread at a time, so the writer's
batches are not those of a real load: compare two builds with this script, never its figures
with a real run's.

    python3 bench/writer_instructions.py BIN [SECS] [--conns N] [--idempotency]
"""
import argparse, os, re, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Proc, echo_creates, queue_drained, wait_health, wrk  # noqa: E402

# Inclusive counts printed besides the writer's loop (substrings of callgrind's function names).
PARTS = [
    ("writer loop", "runbase_store_sqlite::writer::run"),
    ("create batches", "runbase_store_sqlite::create_batch::write"),
    ("idempotency records", "runbase_store_sqlite::idempotency::record_created"),
    ("success batches", "runbase_store_sqlite::success_batch::write"),
    ("claims", "claim_runs::{{closure}}::{{closure}}"),
    ("commits (pager)", "sqlite3PagerCommitPhaseOne"),
    ("cache trim at commit", "pcache1TruncateUnsafe"),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("secs", nargs="?", type=int, default=10)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--idempotency", action="store_true", help="every create carries an Idempotency-Key of its own")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="runbase-writer-ir-")
    data = os.path.join(tmp, "data")
    out = os.path.join(tmp, "callgrind.out")
    env = {
        "RUNBASE_LOG": "warn",
        "RUNBASE_HTTP__MAX_CONNECTIONS": "4096",
        "RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP": "4096",
        "RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000",
        "RUNBASE_DURABILITY": "full",
    }
    rb = Proc(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--dump-instr=no",
         a.binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data],
        env=env, prefix="Runbase listening on")
    try:
        wait_health(rb.url)
        _, script = echo_creates(a.binary, data, os.path.join(tmp, "create.lua"), 64, idempotency=a.idempotency)
        db = os.path.join(data, "runbase.db")
        wrk(rb.url, a.conns, 3, script)
        while not queue_drained(db):
            time.sleep(0.1)
        subprocess.run(["callgrind_control", "-z", str(rb.p.pid)], check=True, capture_output=True)
        r = wrk(rb.url, a.conns, a.secs, script)
        while not queue_drained(db):
            time.sleep(0.1)
        subprocess.run(["callgrind_control", "-d", str(rb.p.pid)], check=True, capture_output=True)
    finally:
        rb.stop()
    print(f"callgrind's dump: {tmp}")
    dumps = [os.path.join(tmp, f) for f in os.listdir(tmp) if f.startswith("callgrind.out.")]
    dump = max(dumps, key=os.path.getmtime)
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", "--auto=no", dump],
                          capture_output=True, text=True, check=True).stdout
    n = r["total"] - r["non2xx"]
    print(f"c{a.conns} under callgrind: {r['rps']:.0f} req/s, {n} runs created and finished")
    total = re.search(r"^\s*([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M)
    if total:
        print(f"  {'whole process':<22} {int(total.group(1).replace(',', '')) / n:10,.0f} Ir per run")
    # Inclusive cost is listed per (source file, function), code inlined from another file under
    # that file's name; the largest of a function's lines is its whole call.
    per_function = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+) \([^)]*\)\s+[^:\s]*:(.*?)( \[[^]]*\])?$", line)
        if m:
            fn = m.group(2)
            per_function[fn] = max(per_function.get(fn, 0), int(m.group(1).replace(",", "")))
    for name, needle in PARTS:
        ir = max((v for fn, v in per_function.items()
                  if fn == needle or fn.endswith("::" + needle) or fn.split(".")[0] == needle), default=0)
        print(f"  {name:<22} {ir / n:10,.0f} Ir per run")

if __name__ == "__main__":
    main()

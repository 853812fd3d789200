#!/usr/bin/env python3
"""Accepted creates at c1 for builds run one after the other, three rounds (the c1 p50 of issue 15
moves with this machine's fsync latency within minutes: compare builds round by round).

    python3 bench/c1_ab.py BIN_A BIN_B [BIN_C ...]

Each build gets a fresh data directory (SQLite, durability=full) and 64 funded keys, 1 s of
warm-up, then 5 s of wrk at one connection. Targets 127.0.0.1 only; bounded in time.
"""
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import echo_creates, start_runbase, wrk  # noqa: E402


def main():
    binaries = sys.argv[1:]
    if len(binaries) < 2:
        sys.exit(__doc__)
    for _ in range(3):
        for binary in binaries:
            tmp = tempfile.mkdtemp(prefix="runbase-c1-ab-")
            data = os.path.join(tmp, "data")
            rb = start_runbase(binary, data, {"RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000",
                                              "RUNBASE_DURABILITY": "full"})
            try:
                _, script = echo_creates(binary, data, os.path.join(tmp, "create.lua"), 64)
                wrk(rb.url, 1, 1, script)
                r = wrk(rb.url, 1, 5, script)
                print(f"{binary}: c1 {r['rps']:.0f}/s, p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms", flush=True)
            finally:
                rb.stop()


if __name__ == "__main__":
    main()

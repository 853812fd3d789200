#!/usr/bin/env python3
"""The 401 path (`invalid_api_key`) at c64 for builds run one after the other, in the order
given (alternate them: A B A B ...): what a request costs Runbase before any store work, so a
change of the HTTP stack shows here first.

    python3 bench/ab_401.py BEFORE AFTER BEFORE AFTER [--secs 4]

Each binary gets a fresh data directory with the auth limit raised; 1 s of warm-up, then SECS
seconds of wrk. Standard library and wrk; targets 127.0.0.1 only; bounded in time.
"""
import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import lua, start_runbase, wrk  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--secs", type=int, default=4)
    args = ap.parse_args()
    body = json.dumps({"model": "runbase/echo", "input": {"text": "hello"}})
    for b in args.bins:
        tmp = tempfile.mkdtemp(prefix="runbase-ab401-")
        rb = start_runbase(b, os.path.join(tmp, "data"), {"RUNBASE_RATE_LIMITS__AUTH__REQUESTS": "1000000000"})
        try:
            script = lua(os.path.join(tmp, "bad.lua"), "POST", body, ["sk-invalid0000000000000000000000"])
            wrk(rb.url, 64, 1, script)
            r = wrk(rb.url, 64, args.secs, script)
            print(f"{b}: {r['rps']:.0f} req/s, p99 {r['p99']:.2f} ms, {r['non2xx']} answers, all non-2xx", flush=True)
        finally:
            rb.stop()


if __name__ == "__main__":
    main()

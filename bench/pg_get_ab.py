#!/usr/bin/env python3
"""GET of a run on PostgreSQL, A/B: each Runbase binary given, then the "axum + 1 pooled
PostgreSQL primary-key read" ceiling, at c1, c8 and c64 for 5 s each, one after the other in one
sitting (req/s move ±20% between sittings on this machine; compare within one).

Each binary gets a throwaway database with 4 funded keys and 2,000 runs created through its API,
and wrk GETs the newest run with the first key (as bench.py's GET row does).

    python3 bench/pg_get_ab.py BIN_A BIN_B ...

Targets 127.0.0.1 only; every load is bounded in time. Needs PostgreSQL at 127.0.0.1:5432, psql,
wrk, and the ceilings built (bench/run.sh, or target/bench-ceilings/release).
"""
import json
import os
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Pg, Proc, cli, funded_keys, lua, start_runbase, wrk  # noqa: E402

SECS = 5
CONNS = (1, 8, 64)
CEILING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench-ceilings", "release", "pg-read")


def measure(binary, tmp, n):
    pg = Pg("postgres://postgres@127.0.0.1:5432", f"runbase_getab_{os.getpid()}")
    try:
        if binary == "ceiling":
            p = Proc([CEILING, "127.0.0.1:0", pg.url, "16"])
            try:
                return [wrk(p.url + "/", c, SECS)["rps"] for c in CONNS]
            finally:
                p.stop()
        data = os.path.join(tmp, f"data{n}")
        env = {"RUNBASE_DATABASE_URL": pg.url, "RUNBASE_DATABASE__POOL_SIZE": "16",
               "RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000"}
        cli(binary, data, "migrate", env=env)
        rb = start_runbase(binary, data, env)
        try:
            keys = funded_keys(binary, data, 4, env=env)
            body = json.dumps({"model": "runbase/echo", "input": {"text": "hello"}}).encode()
            run_id = None
            for _ in range(2000):
                req = urllib.request.Request(rb.url + "/api/v1/runs", data=body, method="POST", headers={
                    "Authorization": "Bearer " + keys[0], "Content-Type": "application/json"})
                run_id = json.load(urllib.request.urlopen(req))["id"]
            script = lua(os.path.join(tmp, f"get{n}.lua"), "GET", None, keys[:1], paths=[f"/api/v1/runs/{run_id}"])
            return [wrk(rb.url, c, SECS, script)["rps"] for c in CONNS]
        finally:
            rb.stop()
    finally:
        pg.drop()


def main():
    tmp = tempfile.mkdtemp(prefix="runbase-get-ab-")
    results = [(b, measure(b, tmp, n)) for n, b in enumerate(sys.argv[1:] + ["ceiling"])]
    for binary, rps in results:
        print(f"{binary:40s} " + "  ".join(f"c{c} {r:8.0f}" for c, r in zip(CONNS, rps)))


if __name__ == "__main__":
    main()

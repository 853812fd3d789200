#!/usr/bin/env python3
"""PostgreSQL creates at one concurrency for builds run one after the other, in the order given
(alternate them, and reverse the order in a second sitting: this machine drifts).

    python3 bench/pg_creates_ab.py [--role all] [--conns 64] [--secs 6] BEFORE AFTER AFTER BEFORE

Each binary gets a throwaway database on the local server (postgres://postgres@127.0.0.1:5432),
64 funded keys, 2 s of warm-up, then SECS seconds of wrk; printed: req/s, p50 and p99, and the CPU
time per run of Runbase and of all PostgreSQL processes over the measured seconds. Standard
library, psql and wrk; targets 127.0.0.1 only; bounded in time.
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Pg, cli, cpu_seconds, echo_creates, postgres_pids, start_runbase, wrk  # noqa: E402


def one(binary, server, role, conns, secs):
    tmp = tempfile.mkdtemp(prefix="runbase-pg-ab-")
    data = os.path.join(tmp, "data")
    pg = Pg(server, f"runbase_pg_ab_{os.getpid()}")
    env = {"RUNBASE_DATABASE_URL": pg.url, "RUNBASE_DATABASE__POOL_SIZE": "16",
           "RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000", "RUNBASE_ROLE": role}
    try:
        cli(binary, data, "migrate", env=env)
        rb = start_runbase(binary, data, env)
        try:
            _, script = echo_creates(binary, data, os.path.join(tmp, "create.lua"), 64, env=env)
            wrk(rb.url, conns, 2, script)
            pids = postgres_pids()
            cpu0 = (cpu_seconds([rb.p.pid]), cpu_seconds(pids))
            r = wrk(rb.url, conns, secs, script)
            n = max(r["total"], 1)
            rb_us = (cpu_seconds([rb.p.pid]) - cpu0[0]) / n * 1e6
            pg_us = (cpu_seconds(pids) - cpu0[1]) / n * 1e6
            return (f"{r['rps']:.0f}/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms, non-2xx {r['non2xx']}; "
                    f"CPU per run: Runbase {rb_us:.0f} µs, PostgreSQL {pg_us:.0f} µs")
        finally:
            rb.stop()
    finally:
        pg.drop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bins", nargs="+")
    ap.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--role", default="all")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--secs", type=int, default=6)
    args = ap.parse_args()
    # Segments to recycle, as a server under steady load has (bench.Pg.prime_wal).
    primer = Pg(args.postgres.rstrip('/'), f"runbase_pg_ab_prime_{os.getpid()}")
    try:
        primer.prime_wal()
    finally:
        primer.drop()
    for b in args.bins:
        print(f"{b}: role {args.role}, c{args.conns}: {one(b, args.postgres.rstrip('/'), args.role, args.conns, args.secs)}", flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Where PostgreSQL's time goes per run under load, statement by statement.

Runbase (built in release) is started on a throwaway database, once per role (`all`: creates and
the worker on one node; `api`: creates only, as an API node whose workers run elsewhere), and
loaded with accepted creates by wrk at each concurrency. For each load it prints the creates per
second, the CPU time per run of Runbase and of all PostgreSQL processes over the load, and, when
the server has `pg_stat_statements` loaded, each statement's calls, rows per call, and execution
and planning time per run (execution time includes waiting for row locks, so it is not all CPU).

    python3 bench/pg_statements.py --bin target/release/runbase

To load pg_stat_statements (a server restart; undo with `ALTER SYSTEM RESET
shared_preload_libraries` and another restart):

    psql -h 127.0.0.1 -U postgres -c "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"
    psql -h 127.0.0.1 -U postgres -c "ALTER SYSTEM SET pg_stat_statements.track_planning = on"
    pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main restart

Standard library, psql and wrk; targets 127.0.0.1 only; every load is bounded in time.
"""

import argparse
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Pg, cli, cpu_seconds, echo_creates, log, postgres_pids, start_runbase, wrk  # noqa: E402


def psql(server_url, sql):
    out = subprocess.run(["psql", "-qAtX", "-F", "\t", server_url + "/postgres", "-c", sql],
                         capture_output=True, text=True)
    return out.returncode == 0, out.stdout


def statements_ready(server_url):
    ok, _ = psql(server_url, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements; SELECT pg_stat_statements_reset()")
    return ok


def statements(server_url, db, runs):
    """The statements of database `db` since the last reset, costliest first, per run."""
    ok, out = psql(server_url, f"""
        SELECT calls, rows, total_exec_time, total_plan_time, regexp_replace(query, '\\s+', ' ', 'g')
        FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
        WHERE d.datname = '{db}' ORDER BY total_exec_time + total_plan_time DESC LIMIT 14""")
    if not ok:
        return []
    lines = []
    for line in out.splitlines():
        calls, rows, exec_ms, plan_ms, query = line.split("\t", 4)
        calls, rows = int(calls), int(rows)
        lines.append(
            f"| {calls / runs:.3f} | {rows / max(calls, 1):.1f} | {float(exec_ms) * 1000 / runs:.1f} "
            f"| {float(plan_ms) * 1000 / runs:.1f} | `{query[:90]}` |")
    return lines


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--conns", default="8,64")
    ap.add_argument("--roles", default="all,api")
    ap.add_argument("--secs", type=int, default=8)
    ap.add_argument("--pool", default="16")
    args = ap.parse_args()
    server = args.postgres.rstrip("/")
    for role in args.roles.split(","):
        for c in [int(x) for x in args.conns.split(",")]:
            tmp = tempfile.mkdtemp(prefix="runbase-pgstat-")
            data = os.path.join(tmp, "data")
            pg = Pg(server, f"runbase_pgstat_{os.getpid()}")
            env = {"RUNBASE_DATABASE_URL": pg.url, "RUNBASE_DATABASE__POOL_SIZE": args.pool,
                   "RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000", "RUNBASE_ROLE": role}
            try:
                cli(args.bin, data, "migrate", env=env)
                rb = start_runbase(args.bin, data, env)
                try:
                    _, script = echo_creates(args.bin, data, os.path.join(tmp, "create.lua"), 64, env=env)
                    wrk(rb.url, c, 2, script)  # warm-up: connections, prepared statements
                    tracked = statements_ready(server)
                    pids = postgres_pids()
                    cpu0 = (cpu_seconds([rb.p.pid]), cpu_seconds(pids))
                    r = wrk(rb.url, c, args.secs, script)
                    rb_cpu, pg_cpu = cpu_seconds([rb.p.pid]) - cpu0[0], cpu_seconds(pids) - cpu0[1]
                    runs = max(r["total"], 1)
                    print(f"\n### role {role}, c{c}: {r['rps']:.0f} creates/s, p99 {r['p99']:.2f} ms, "
                          f"non-2xx {r['non2xx']}; CPU per run: Runbase {rb_cpu / runs * 1e6:.0f} µs, "
                          f"PostgreSQL {pg_cpu / runs * 1e6:.0f} µs\n")
                    if tracked:
                        print("| calls per run | rows per call | exec µs per run | plan µs per run | statement |")
                        print("|---|---|---|---|---|")
                        for line in statements(server, pg.name, runs):
                            print(line)
                    else:
                        print("(pg_stat_statements is not loaded: see this script's docstring)")
                    sys.stdout.flush()
                finally:
                    rb.stop()
            finally:
                pg.drop()
    log("done")


if __name__ == "__main__":
    main()

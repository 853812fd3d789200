#!/usr/bin/env python3
"""Drives the Runbase load benchmarks with wrk on 127.0.0.1 and prints a Markdown table.

Called by bench/run.sh after it has built the release binaries; see BENCHMARKS.md. Every load
is bounded in time and targets only 127.0.0.1. Standard library only.
"""

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def log(*a):
    print(*a, file=sys.stderr, flush=True)


class Proc:
    """A server process whose first stdout line names its address."""

    def __init__(self, argv, env=None, prefix="listening on "):
        self.p = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            text=True,
        )
        line = self.p.stdout.readline()
        m = re.search(r"(http://[0-9.:]+)", line)
        if not m or prefix.lower() not in line.lower():
            self.stop()
            raise RuntimeError(f"{argv[0]} did not start: {line!r}")
        self.url = m.group(1)

    def rss_kb(self, field="VmRSS"):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                self.p.kill()


def wait_health(url):
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.05)
    raise RuntimeError("server never became healthy")


def cli(binary, data_dir, *args, env=None):
    out = subprocess.run(
        [binary, *args, "--data-dir", data_dir], capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )
    if out.returncode != 0:
        raise RuntimeError(f"runbase {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout.strip()


def funded_keys(binary, data_dir, n, email="bench@example.com", env=None):
    """An account `email` with 10 million dollars of credit and `n` API keys on it: the keys."""
    cli(binary, data_dir, "accounts", "create", email, env=env)
    cli(binary, data_dir, "credits", "add", "--account", email, "--cents", "1000000000", env=env)
    return [cli(binary, data_dir, "keys", "create", "--account", email, env=env) for _ in range(n)]


# What every create load here posts: an echo run, the cheapest model, so that the figures are the
# platform's own cost.
ECHO_BODY = json.dumps({"model": "runbase/echo", "input": {"text": "hello"}})


def echo_creates(binary, data_dir, script, n_keys, env=None, **lua_options):
    """Funds `n_keys` keys (`funded_keys`) and writes to the path `script` a wrk script creating
    echo runs with them in turn (`lua`'s options apply): answers the keys and the script's path."""
    keys = funded_keys(binary, data_dir, n_keys, env=env)
    return keys, lua(script, "POST", ECHO_BODY, keys, **lua_options)


def parse_ms(s):
    m = re.match(r"([0-9.]+)(us|ms|s)", s)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


def wrk(url, conns, secs, script=None, threads=2):
    argv = ["wrk", f"-t{min(threads, conns)}", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "5s"]
    if script:
        argv += ["-s", script]
    argv.append(url)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([0-9.]+)", out).group(1))
    p50 = parse_ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = parse_ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": rps,
        "p50": p50,
        "p99": p99,
        "total": total,
        "non2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1).strip() if errors else "",
    }


def lua(path, method, body=None, keys=(), headers=None, paths=None, idempotency=False):
    """A wrk script rotating through keys (and request paths). With `idempotency`, every
    request carries an `Idempotency-Key` of its own (the wrk thread, the time the script was
    loaded and a counter: never reused, so each is a first request, not a replay)."""
    hdr = {"Content-Type": "application/json", **(headers or {})}
    lines = [
        "thread_id = 0",
        "local started = tostring(os.time()) .. '-' .. tostring(math.random(1, 1000000000))",
        "local next_thread = 1",
        "function setup(thread) thread:set('thread_id', next_thread); next_thread = next_thread + 1 end",
        "local keys = {" + ",".join(json.dumps(k) for k in keys) + "}",
        "local paths = {" + ",".join(json.dumps(p) for p in (paths or [])) + "}",
        f"local body = {json.dumps(body) if body else 'nil'}",
        "local i = 0",
        "request = function()",
        "  i = i + 1",
        "  local h = {" + ",".join(f"[{json.dumps(k)}]={json.dumps(v)}" for k, v in hdr.items()) + "}",
        "  if #keys > 0 then h['Authorization'] = 'Bearer ' .. keys[(i % #keys) + 1] end",
        *(["  h['Idempotency-Key'] = 'bench-' .. started .. '-' .. tostring(thread_id) .. '-' .. tostring(i)"]
          if idempotency else []),
        "  local p = '/api/v1/runs'",
        "  if #paths > 0 then p = paths[(i % #paths) + 1] end",
        f"  return wrk.format({json.dumps(method)}, p, h, body)",
        "end",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def start_runbase(binary, data_dir, env):
    proc = Proc(
        [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
        # The load generator is one host: lift the per-address connection cap it would meet.
        env={
            "RUNBASE_LOG": "warn",
            "RUNBASE_HTTP__MAX_CONNECTIONS": "4096",
            "RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP": "4096",
            **SLOW_FSYNC,
            **env,
        },
        prefix="Runbase listening on",
    )
    wait_health(proc.url)
    return proc


def reachable(host, port):
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class Pg:
    """A throwaway PostgreSQL database for one bench run, driven with psql."""

    def __init__(self, server_url, name):
        self.server_url = server_url.rstrip("/")
        self.name = name
        self.admin("DROP DATABASE IF EXISTS " + name)
        self.admin("CREATE DATABASE " + name)
        self.url = f"{self.server_url}/{name}"

    def admin(self, sql):
        subprocess.run(["psql", "-qAtX", self.server_url + "/postgres", "-c", sql], check=True, capture_output=True, text=True)

    def query(self, sql):
        out = subprocess.run(["psql", "-qAtX", "-F", ",", self.url, "-c", sql], check=True, capture_output=True, text=True)
        return [tuple(int(v) for v in line.split(",")) for line in out.stdout.split()]

    def drop(self):
        subprocess.run(["psql", "-qAtX", self.server_url + "/postgres", "-c", f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"],
                       check=False, capture_output=True)

    def prime_wal(self, mb=640):
        """Makes the server's WAL what a server under steady load has: segments to recycle.
        Answers whether it did.

        A server keeps as many spare 16 MB WAL segments as its recent checkpoints needed (at
        least `min_wal_size`, 80 MB by default); a test suite's databases, each dropped with a
        forced checkpoint of little WAL, left 6 files in pg_wal here. Past the spares, the
        backend that fills a segment creates the next one, writing 16 MB of zeros
        (`wal_init_zero`, on by default) and syncing them, while every commit waits: 50-100 ms
        pauses about every 1.7 s of creates at c64 (`WALInitWrite` in pg_stat_activity,
        BENCHMARKS.md, twenty-second session), which were this bench's p99 spikes. Writing `mb`
        of WAL and then a checkpoint leaves that much to recycle, as a server running under this
        load for a while has; see the README's PostgreSQL settings (`min_wal_size`).

        Needs CHECKPOINT (a superuser or the pg_checkpoint role) and about twice `mb` of free
        disk while it runs; the table is dropped, but the server keeps the recycled segments
        (up to max_wal_size) in pg_wal, and ships the WAL to any replica or archive. On failure
        it logs why and the bench goes on unprimed.
        """
        rows = mb * 1024 // 2  # rows of about 2 KB, uncompressed
        started = time.time()
        sql = ["SELECT pg_current_wal_lsn() AS before \\gset",
               f"CREATE TABLE bench_wal_prime AS SELECT repeat(md5(i::text), 62) AS filler FROM generate_series(1, {rows}) AS i",
               "DROP TABLE bench_wal_prime",
               "CHECKPOINT",
               "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), :'before')::bigint"]
        done = subprocess.run(["psql", "-qAtX", "-v", "ON_ERROR_STOP=1", self.url],
                              input="\n".join(s + ";" if not s.endswith("\\gset") else s for s in sql) + "\n",
                              capture_output=True, text=True)
        if done.returncode != 0:
            log(f"PostgreSQL: the WAL was not primed (the p99 may include new WAL segments): {done.stderr.strip()}")
            return False
        written = int(done.stdout.split()[-1]) / 2**20
        log(f"PostgreSQL: {written:.0f} MB of WAL written and checkpointed in {time.time() - started:.1f} s, "
            "so that the measured seconds recycle WAL segments instead of creating them")
        if written < mb / 2:
            log(f"PostgreSQL: only {written:.0f} MB of WAL for {mb} MB of rows (wal_level = minimal?): "
                "the WAL is not primed")
            return False
        return True

def queue_drained(db):
    if isinstance(db, Pg):
        return db.query("SELECT count(*) FROM runs WHERE status IN ('pending','processing')") == [(0,)]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (n,) = con.execute("SELECT count(*) FROM runs WHERE status IN ('pending','processing')").fetchone()
        return n == 0
    finally:
        con.close()


def run_times(db, since_us):
    if isinstance(db, Pg):
        return db.query(
            f"SELECT created_at, started_at, completed_at FROM runs WHERE created_at >= {int(since_us)} AND completed_at IS NOT NULL"
        )
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(
            "SELECT created_at, started_at, completed_at FROM runs WHERE created_at >= ? AND completed_at IS NOT NULL",
            (since_us,),
        ).fetchall()
    finally:
        con.close()


def pct(values, q):
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# Added to the environment of Runbase and of the SQLite ceiling (and nothing else) by --slow-fsync.
SLOW_FSYNC = {}


def slow_fsync(tmp, us):
    """Builds bench/slow_fsync.c, to be preloaded into Runbase and the SQLite ceiling."""
    lib = os.path.join(tmp, "slow_fsync.so")
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slow_fsync.c")
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", lib, src, "-ldl"], check=True)
    preload = ":".join(p for p in [os.environ.get("LD_PRELOAD"), lib] if p)
    SLOW_FSYNC.update({"LD_PRELOAD": preload, "SLOW_FSYNC_US": str(us)})
    log(f"every fsync and fdatasync of Runbase and the ceiling takes {us} µs longer (bench/slow_fsync.c)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--ceilings", required=True, help="directory with the hello and sqlite-insert binaries")
    ap.add_argument("--quick", action="store_true", help="1 s per scenario at c8 only: a smoke test")
    ap.add_argument("--durability", default="full")
    ap.add_argument("--peer", default="", help="command that starts the peer gateway (bench/peer/start.sh)")
    ap.add_argument("--postgres", default="auto",
                    help="PostgreSQL server URL without a database (a throwaway one is created), 'auto' "
                         "(postgres://postgres@127.0.0.1:5432 when it answers) or 'off'")
    ap.add_argument("--redis", default="auto", help="Redis URL, 'auto' (127.0.0.1:6379 when it answers) or 'off'")
    ap.add_argument("--postgres-only", action="store_true", help="only the PostgreSQL and Redis rows")
    ap.add_argument("--creates-only", action="store_true",
                    help="only accepted creates, without and with an Idempotency-Key (SQLite, then PostgreSQL when reachable)")
    ap.add_argument("--sqlite-creates", action="store_true",
                    help="only issue 15's SQLite figures: accepted creates without and with an Idempotency-Key, "
                         "the 1-insert group-commit ceiling, pickup, lifecycle and idle RSS")
    ap.add_argument("--slow-fsync", type=int, default=0, metavar="US",
                    help="with --sqlite-creates: make every fsync of Runbase and the SQLite ceiling take US microseconds longer "
                         "(bench/slow_fsync.c, preloaded): a disk slower to flush than this machine's")
    ap.add_argument("--pg-pool", type=int, default=16, help="pool size of Runbase and the PostgreSQL ceilings")
    ap.add_argument("--scale", default="", help="comma-separated store sizes (e.g. 1000000,10000000): only measure GET and create with that many runs already stored")
    args = ap.parse_args()
    if args.slow_fsync and (not args.sqlite_creates or args.scale or args.postgres_only or args.slow_fsync < 0):
        ap.error("--slow-fsync takes microseconds and goes with --sqlite-creates alone: it cannot slow the "
                 "PostgreSQL server's fsyncs")

    secs = 1 if args.quick else 10
    conns = [8] if args.quick else [1, 8, 64]
    rows = []
    tmp = tempfile.mkdtemp(prefix="runbase-bench-")
    if args.slow_fsync:
        slow_fsync(tmp, args.slow_fsync)
    data = os.path.join(tmp, "data")
    db = os.path.join(data, "runbase.db")

    def row(name, c, r, extra=""):
        rows.append((name, c, r["rps"], r["p50"], r["p99"], r["non2xx"], r["socket_errors"], extra))
        log(f"{name:<40} c{c:<3} {r['rps']:>10.0f} req/s  p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  non2xx {r['non2xx']}")

    if args.scale:
        for n in [int(x) for x in args.scale.split(",")]:
            scale_rows(args, n, tmp, secs, row)
        print_table(rows, secs, args.durability)
        return

    if args.postgres_only:
        notes = []
        pg_rows(args, conns, secs, tmp, row, notes)
        print_table(rows, secs, args.durability)
        for n in notes:
            print(f"- {n}")
        print()
        for line in ratios(rows, conns):
            print(f"- {line}")
        return

    # --- Runbase, rate limit out of the way -----------------------------------------------
    env = {"RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000", "RUNBASE_DURABILITY": args.durability}
    rb = start_runbase(args.bin, data, env)
    time.sleep(0.5)
    idle_rss = rb.rss_kb()
    keys, create_lua = echo_creates(args.bin, data, os.path.join(tmp, "create.lua"), 64 if not args.quick else 4)
    body = ECHO_BODY

    pickup_line, lifecycle_line = creates(rb.url, db, create_lua, conns, secs, row, "POST /api/v1/runs (accepted)")
    idem_lua = lua(os.path.join(tmp, "idem.lua"), "POST", body, keys, idempotency=True)
    creates(rb.url, db, idem_lua, conns, secs, row, "POST /api/v1/runs (accepted, Idempotency-Key)")
    if args.sqlite_creates:
        rb.stop()
        ins = Proc([os.path.join(args.ceilings, "sqlite-insert"), "127.0.0.1:0", os.path.join(tmp, "ceiling.db"), args.durability], env=SLOW_FSYNC)
        ins_lua = os.path.join(tmp, "ins.lua")
        with open(ins_lua, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = \'{"text":"hello"}\'\n')
        for c in conns:
            row("ceiling: axum + 1 SQLite insert (group commit)", c, wrk(ins.url + "/", c, secs, ins_lua))
        ins.stop()
        print_table(rows, secs, args.durability)
        print(f"- {pickup_line}")
        if lifecycle_line:
            print(f"- {lifecycle_line}")
        print(f"- Runbase RSS: idle {idle_rss / 1024:.1f} MiB")
        print()
        for line in ratios(rows, conns):
            print(f"- {line}")
        return
    if args.creates_only:
        rb.stop()
        # The same creates with the operator's metrics on (issue 14: at most 5% slower).
        data_m = os.path.join(tmp, "data-metrics")
        rb = start_runbase(args.bin, data_m, {**env, "RUNBASE_METRICS_LISTEN": "127.0.0.1:0"})
        mkeys = funded_keys(args.bin, data_m, len(keys))
        metrics_lua = lua(os.path.join(tmp, "metrics.lua"), "POST", body, mkeys)
        creates(rb.url, os.path.join(data_m, "runbase.db"), metrics_lua, conns, secs, row,
                "POST /api/v1/runs (accepted, metrics on)")
        rb.stop()
        notes = []
        pg_rows(args, conns, secs, tmp, row, notes)
        print_table(rows, secs, args.durability)
        for line in ratios(rows, conns):
            print(f"- {line}")
        return

    bad_lua = lua(os.path.join(tmp, "bad.lua"), "POST", body, ["sk-not-a-real-key"])
    for c in conns:
        row("POST /api/v1/runs (401 invalid_api_key)", c, wrk(rb.url, c, secs, bad_lua))

    req = urllib.request.Request(
        rb.url + "/api/v1/runs", data=body.encode(), method="POST",
        headers={"Authorization": "Bearer " + keys[0], "Content-Type": "application/json"},
    )
    run_id = json.load(urllib.request.urlopen(req))["id"]
    get_lua = lua(os.path.join(tmp, "get.lua"), "GET", None, keys[:1], paths=[f"/api/v1/runs/{run_id}"])
    for c in conns:
        row("GET /api/v1/runs/{id}", c, wrk(rb.url, c, secs, get_lua))
    peak_rss = rb.rss_kb("VmHWM")
    rb.stop()

    # --- Runbase with the default rate limit: 429s ------------------------------------------
    data429 = os.path.join(tmp, "data429")
    rb = start_runbase(args.bin, data429, {"RUNBASE_DURABILITY": args.durability})
    cli(args.bin, data429, "accounts", "create", "limited@example.com")
    key = cli(args.bin, data429, "keys", "create", "--account", "limited@example.com")
    limited_lua = lua(os.path.join(tmp, "limited.lua"), "POST", body, [key])
    for c in conns:
        row("POST /api/v1/runs (429 RATE_LIMITED)", c, wrk(rb.url, c, secs, limited_lua))
    rb.stop()

    # --- Ceilings -----------------------------------------------------------------------------
    hello = Proc([os.path.join(args.ceilings, "hello"), "127.0.0.1:0"])
    for c in conns:
        row("ceiling: axum hello", c, wrk(hello.url + "/", c, secs))
    hello.stop()
    ins = Proc([os.path.join(args.ceilings, "sqlite-insert"), "127.0.0.1:0", os.path.join(tmp, "ceiling.db"), args.durability], env=SLOW_FSYNC)
    ins_lua = os.path.join(tmp, "ins.lua")
    with open(ins_lua, "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = \'{"text":"hello"}\'\n')
    for c in conns:
        row("ceiling: axum + 1 SQLite insert (group commit)", c, wrk(ins.url + "/", c, secs, ins_lua))
    ins.stop()

    # --- PostgreSQL and Redis (issue 13) -----------------------------------------------------
    notes = []
    pg_rows(args, conns, secs, tmp, row, notes)

    # --- Peer gateway ----------------------------------------------------------------------
    if args.peer:
        peer_rows(args.peer, conns, secs, tmp, row)

    print_table(rows, secs, args.durability)
    print(f"- {pickup_line}")
    if lifecycle_line:
        print(f"- {lifecycle_line}")
    print(f"- Runbase RSS: idle {idle_rss / 1024:.1f} MiB, peak {peak_rss / 1024:.1f} MiB")
    for n in notes:
        print(f"- {n}")
    print()
    for line in ratios(rows, conns):
        print(f"- {line}")


def cpu_seconds(pids):
    """User + system CPU seconds used so far by these processes."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def postgres_pids():
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/comm") as f:
                    if f.read().startswith("postgres"):
                        pids.append(int(d))
            except OSError:
                pass
    return pids


def creates(url, db, create_lua, conns, secs, row, name, cpu_pid=None, notes=None):
    """Accepted creates at each concurrency; pickup latency at c1 and the lifecycle rate after
    the largest burst, read from the run rows. With `cpu_pid` (PostgreSQL), also the CPU time
    Runbase and the PostgreSQL server spent per run over the largest burst and its drain."""
    pickup_line = lifecycle_line = ""
    # c1 always comes first (also in --quick): it gives the pickup latency at light load.
    for c in [1] + [c for c in conns if c != 1]:
        since = int(time.time() * 1e6)
        pg_pids = postgres_pids() if cpu_pid else []
        cpu0 = (cpu_seconds([cpu_pid]), cpu_seconds(pg_pids)) if cpu_pid else None
        r = wrk(url, c, min(secs, 3) if c == 1 else secs, create_lua, threads=1 if c == 1 else 2)
        row(name, c, r)
        t0 = time.time()
        while not queue_drained(db):
            time.sleep(0.05)
        times = run_times(db, since)
        if cpu0 and c == max(conns) and times:
            rb_cpu = cpu_seconds([cpu_pid]) - cpu0[0]
            pg_cpu = cpu_seconds(pg_pids) - cpu0[1]
            n = len(times)
            notes.append(
                f"CPU per run over the c{c} burst and its drain ({n} runs): Runbase {rb_cpu / n * 1e6:.0f} µs, "
                f"PostgreSQL server {pg_cpu / n * 1e6:.0f} µs (all its processes, so anything else it served too)"
            )
            log(notes[-1])
        if c == 1:
            pickup = [(s - c_) / 1000 for c_, s, _ in times]
            pickup_line = f"created→processing at c1: p50 {pct(pickup, 0.5):.3f} ms, p99 {pct(pickup, 0.99):.3f} ms over {len(pickup)} runs"
            log(pickup_line)
        elif times:
            span = (max(t[2] for t in times) - min(t[0] for t in times)) / 1e6
            lifecycle_line = (
                f"full lifecycle after the c{c} burst: {len(times)} runs created and completed in {span:.1f} s "
                f"= {len(times) / span:.0f} runs/s (queue drained {time.time() - t0:.1f} s after the load stopped)"
            )
            log(lifecycle_line)
    return pickup_line, lifecycle_line


def pg_rows(args, conns, secs, tmp, row, notes):
    """Runbase on PostgreSQL (creates, GET, and the 429 path with the Redis limiter) and the
    ceilings it is compared with, when the servers are reachable."""
    pg_url = args.postgres
    if pg_url == "auto":
        pg_url = "postgres://postgres@127.0.0.1:5432" if reachable("127.0.0.1", 5432) else ""
    redis_url = args.redis
    if redis_url == "auto":
        redis_url = "redis://127.0.0.1:6379/" if reachable("127.0.0.1", 6379) else ""
    if pg_url == "off":
        pg_url = ""
    if redis_url == "off":
        redis_url = ""
    if pg_url and not shutil.which("psql"):
        log("psql is not installed: skipping the PostgreSQL rows")
        pg_url = ""
    if not pg_url:
        log("PostgreSQL is not reachable (or --postgres off): skipping the PostgreSQL and Redis rows")
        notes.append("PostgreSQL rows skipped: no server at 127.0.0.1:5432")
        return
    pool = str(args.pg_pool)
    body = ECHO_BODY
    pg = Pg(pg_url, f"runbase_bench_{os.getpid()}")
    try:
        if not args.quick:
            if pg.prime_wal():
                notes.append("PostgreSQL: 640 MB of WAL written and checkpointed before the first row "
                             "(Pg.prime_wal: segments are recycled, not created, as on a server under steady load)")
            else:
                notes.append("PostgreSQL: the WAL was not primed (see the log): the p99 may include new WAL segments")
        data = os.path.join(tmp, "pgdata")
        env = {
            "RUNBASE_DATABASE_URL": pg.url,
            "RUNBASE_DATABASE__POOL_SIZE": pool,
            "RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000",
        }
        cli(args.bin, data, "migrate", env=env)
        rb = start_runbase(args.bin, data, env)
        try:
            keys, create_lua = echo_creates(args.bin, data, os.path.join(tmp, "pgcreate.lua"),
                                            64 if not args.quick else 4, env=env)
            pickup, lifecycle = creates(rb.url, pg, create_lua, conns, secs, row, "PostgreSQL: POST /api/v1/runs (accepted)",
                                        cpu_pid=rb.p.pid, notes=notes)
            notes.append(f"PostgreSQL: {pickup}")
            if lifecycle:
                notes.append(f"PostgreSQL: {lifecycle}")
            idem_lua = lua(os.path.join(tmp, "pgidem.lua"), "POST", body, keys, idempotency=True)
            creates(rb.url, pg, idem_lua, conns, secs, row, "PostgreSQL: POST /api/v1/runs (accepted, Idempotency-Key)")
            if args.creates_only:
                return
            req = urllib.request.Request(
                rb.url + "/api/v1/runs", data=body.encode(), method="POST",
                headers={"Authorization": "Bearer " + keys[0], "Content-Type": "application/json"},
            )
            run_id = json.load(urllib.request.urlopen(req))["id"]
            get_lua = lua(os.path.join(tmp, "pgget.lua"), "GET", None, keys[:1], paths=[f"/api/v1/runs/{run_id}"])
            for c in conns:
                row("PostgreSQL: GET /api/v1/runs/{id}", c, wrk(rb.url, c, secs, get_lua))
        finally:
            rb.stop()

        if redis_url:
            env429 = {
                "RUNBASE_DATABASE_URL": pg.url,
                "RUNBASE_DATABASE__POOL_SIZE": pool,
                "RUNBASE_REDIS_URL": redis_url,
                "RUNBASE_RATE_LIMITS__BACKEND": "redis",
                "RUNBASE_RATE_LIMITS__REDIS_KEY_PREFIX": f"runbase-bench-{os.getpid()}:",
            }
            data429 = os.path.join(tmp, "pgdata429")
            rb = start_runbase(args.bin, data429, env429)
            try:
                cli(args.bin, data429, "accounts", "create", "limited@example.com", env=env429)
                key = cli(args.bin, data429, "keys", "create", "--account", "limited@example.com", env=env429)
                limited_lua = lua(os.path.join(tmp, "pglimited.lua"), "POST", body, [key])
                for c in conns:
                    row("PostgreSQL + Redis limiter: POST /api/v1/runs (429 RATE_LIMITED)", c, wrk(rb.url, c, secs, limited_lua))
            finally:
                rb.stop()
        else:
            log("Redis is not reachable (or --redis off): skipping the Redis rows")
            notes.append("Redis rows skipped: no server at 127.0.0.1:6379")

        ins_lua = os.path.join(tmp, "pgins.lua")
        with open(ins_lua, "w") as f:
            f.write('wrk.method = "POST"\nwrk.body = \'{"text":"hello"}\'\n')
        for name, binary, script in (
            ("ceiling: axum + 1 PostgreSQL INSERT (pooled)", "pg-insert", ins_lua),
            ("ceiling: axum + 1 pooled PostgreSQL primary-key read", "pg-read", None),
        ):
            ceiling = Proc([os.path.join(args.ceilings, binary), "127.0.0.1:0", pg.url, pool])
            try:
                for c in conns:
                    pids = postgres_pids()
                    cpu0 = cpu_seconds(pids)
                    r = wrk(ceiling.url + "/", c, secs, script)
                    row(name, c, r)
                    if c == max(conns) and r["total"]:
                        notes.append(f"{name}: PostgreSQL server CPU per request at c{c}: "
                                     f"{(cpu_seconds(pids) - cpu0) / r['total'] * 1e6:.0f} µs")
            finally:
                ceiling.stop()
        if redis_url:
            ceiling = Proc([os.path.join(args.ceilings, "redis-incr"), "127.0.0.1:0", redis_url])
            try:
                for c in conns:
                    row("ceiling: axum + a Redis INCR", c, wrk(ceiling.url + "/", c, secs, ins_lua))
            finally:
                ceiling.stop()
    finally:
        pg.drop()


def ratios(rows, conns):
    """Issue 13's and issue 14's ratios, at each concurrency, from this run's rows."""
    by = {(name, c): (rps, p99) for name, c, rps, _, p99, *_ in rows}
    pairs = [
        ("PostgreSQL creates / 1-INSERT ceiling", "PostgreSQL: POST /api/v1/runs (accepted)",
         "ceiling: axum + 1 PostgreSQL INSERT (pooled)", 1.0),
        ("PostgreSQL GET / PK-read ceiling", "PostgreSQL: GET /api/v1/runs/{id}",
         "ceiling: axum + 1 pooled PostgreSQL primary-key read", 0.8),
        ("Redis-limited 429 / INCR ceiling", "PostgreSQL + Redis limiter: POST /api/v1/runs (429 RATE_LIMITED)",
         "ceiling: axum + a Redis INCR", 0.5),
        ("SQLite creates / 1-insert group-commit ceiling", "POST /api/v1/runs (accepted)",
         "ceiling: axum + 1 SQLite insert (group commit)", None),
        ("SQLite creates with an Idempotency-Key / without", "POST /api/v1/runs (accepted, Idempotency-Key)",
         "POST /api/v1/runs (accepted)", 0.8),
        ("SQLite creates with --metrics-listen / without", "POST /api/v1/runs (accepted, metrics on)",
         "POST /api/v1/runs (accepted)", 0.95),
        ("PostgreSQL creates with an Idempotency-Key / without",
         "PostgreSQL: POST /api/v1/runs (accepted, Idempotency-Key)", "PostgreSQL: POST /api/v1/runs (accepted)", 0.8),
    ]
    lines = []
    for label, a, b, target in pairs:
        for c in conns:
            if (a, c) in by and (b, c) in by and by[(b, c)][0] > 0:
                r = by[(a, c)][0] / by[(b, c)][0]
                t = f" (target ≥ {target})" if target is not None and c == max(conns) else ""
                lines.append(f"{label} at c{c}: {by[(a, c)][0]:,.0f} / {by[(b, c)][0]:,.0f} = **{r:.2f}**{t}")
    return lines


def print_table(rows, secs, durability):
    slow = f"; every fsync {SLOW_FSYNC['SLOW_FSYNC_US']} µs longer" if SLOW_FSYNC else ""
    print(f"Machine: {os.cpu_count()} cores; durability={durability}{slow}; {secs} s per scenario; wrk -t2 on 127.0.0.1.\n")
    print("| scenario | c | req/s | p50 ms | p99 ms | non-2xx | socket errors |")
    print("|---|---|---|---|---|---|---|")
    for name, c, rps, p50, p99, non2xx, sock, _ in rows:
        print(f"| {name} | {c} | {rps:,.0f} | {p50:.3f} | {p99:.3f} | {non2xx} | {sock or '-'} |")
    print()


def scale_rows(args, n, tmp, secs, row):
    """GET and create with `n` finished runs already in the store (bench/load_runs.py)."""
    data = os.path.join(tmp, f"scale{n}")
    keys = funded_keys(args.bin, data, 64, email="scale@example.com")
    t0 = time.time()
    old_run = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "load_runs.py"), data, "scale@example.com", str(n)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    log(f"loaded {n} runs in {time.time() - t0:.0f} s; db {os.path.getsize(os.path.join(data, 'runbase.db')) / 2**20:.0f} MiB")
    rb = start_runbase(args.bin, data, {"RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000", "RUNBASE_DURABILITY": args.durability})
    try:
        get_lua = lua(os.path.join(tmp, "sget.lua"), "GET", None, keys[:1], paths=[f"/api/v1/runs/{old_run}"])
        for c in (1, 64):
            row(f"GET /api/v1/runs/{{id}} with {n:,} runs stored", c, wrk(rb.url, c, secs, get_lua))
        body = ECHO_BODY
        create_lua = lua(os.path.join(tmp, "screate.lua"), "POST", body, keys)
        for c in (1, 64):
            row(f"POST /api/v1/runs with {n:,} runs stored", c, wrk(rb.url, c, secs, create_lua))
        list_lua = lua(os.path.join(tmp, "slist.lua"), "GET", None, keys[:1], paths=["/api/v1/runs?limit=20"])
        row(f"GET /api/v1/runs?limit=20 with {n:,} runs stored", 64, wrk(rb.url, 64, secs, list_lua))
    finally:
        rb.stop()
    subprocess.run(["rm", "-rf", data], check=False)


def peer_rows(start_cmd, conns, secs, tmp, row):
    """Starts the peer with its start script, which prints `URL ACCEPT_KEY LIMITED_KEY MODEL`."""
    p = subprocess.Popen(start_cmd, shell=True, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().split()
    try:
        url, accept_key, limited_key, model = line[:4]
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}]})
        for name, key in (("peer: chat completion (accepted)", accept_key), ("peer: bad key (401)", "sk-wrong"),
                          ("peer: rate-limited key (429)", limited_key)):
            script = lua(os.path.join(tmp, "peer.lua"), "POST", body, [key], paths=["/v1/chat/completions"])
            for c in conns:
                row(name, c, wrk(url, c, secs, script))
    finally:
        p.terminate()
        p.wait(10)


if __name__ == "__main__":
    main()

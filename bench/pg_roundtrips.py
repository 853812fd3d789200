#!/usr/bin/env python3
"""Counts the PostgreSQL statements, round trips and commits of one run's lifecycle.

Runbase (built in release) is started on a throwaway database behind a small TCP proxy on
127.0.0.1 that reads the PostgreSQL wire protocol the client sends. It counts:
- statements: Execute messages of the extended protocol, plus each statement of a simple Query;
- round trips: the times a connection's client sends again after the server has answered
  (so statements sent together, pipelined, count once);
- commits: COMMIT statements and statements outside a transaction that wrote.
Each round trip is put under a step by its SQL: a transaction is labelled by its first statement
after BEGIN. One run goes through create (a run of the echo model with a delay, so that its
lease is renewed), claim, renewals, finish and one GET; the idle worker's own statements (lease
and reclaim ticks, empty claims) are listed too.

    python3 bench/pg_roundtrips.py --bin target/release/runbase
Standard library only; targets 127.0.0.1 only; stops by itself.
"""

import argparse
import json
import os
import re
import socket
import struct
import sys
import threading
import time
import urllib.request
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import Pg, cli, start_runbase  # noqa: E402

STEPS = [
    ("auth: key by hash", r"FROM api_keys WHERE hash ="),
    ("create: charge and enqueue (a batch of one)", r"FROM api_keys WHERE id = ANY"),
    ("create: charge and enqueue (one run)", r"FROM api_keys WHERE id = \$1 FOR UPDATE"),
    ("claim (worker)", r"SET status = 'processing'"),
    ("finish (worker)", r"SET status = 'succeeded'"),
    ("renew lease (worker)", r"FROM unnest"),
    ("reclaim tick (worker)", r"locked_until < \$1"),
    ("GET: key and run in one statement", r"FROM api_keys k LEFT JOIN runs r"),
    ("GET: run by id", r"FROM runs WHERE id = \$1 AND account_id"),
]


def step_of(sql):
    for name, pat in STEPS:
        if re.search(pat, sql):
            return name
    return "other: " + " ".join(sql.split())[:70]


class Counter:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.stats = defaultdict(lambda: {"statements": 0, "round_trips": 0, "commits": 0, "sql": set()})

    def add(self, step, statements=0, round_trips=0, commits=0, sql=None):
        with self.lock:
            s = self.stats[step]
            s["statements"] += statements
            s["round_trips"] += round_trips
            s["commits"] += commits
            if sql:
                s["sql"].add(" ".join(sql.split())[:160])


class Conn:
    """One proxied connection: parses what the client sends, notices when the server answers."""

    def __init__(self, counter):
        self.counter = counter
        self.buf = b""
        self.started = False
        self.prepared = {}  # statement name -> SQL
        self.portal_sql = {}  # portal name -> SQL
        self.answered = True  # the server spoke since the client last sent
        self.in_tx = False
        self.tx_step = None
        self.tx_round_trips = 0
        self.tx_statements = 0
        self.pending_rt = False
        self.lock = threading.Lock()

    def server_spoke(self):
        with self.lock:
            self.answered = True

    def client_sent(self, data):
        with self.lock:
            self.buf += data
            msgs = []
            while True:
                if not self.started:
                    if len(self.buf) < 8:
                        break
                    (n,) = struct.unpack("!I", self.buf[:4])
                    if len(self.buf) < n:
                        break
                    code = struct.unpack("!I", self.buf[4:8])[0]
                    self.buf = self.buf[n:]
                    if code != 80877103:  # not an SSLRequest: the startup message
                        self.started = True
                    continue
                if len(self.buf) < 5:
                    break
                t = self.buf[:1]
                (n,) = struct.unpack("!I", self.buf[1:5])
                if len(self.buf) < 1 + n:
                    break
                msgs.append((t, self.buf[5 : 1 + n]))
                self.buf = self.buf[1 + n :]
            # A burst of only Close and Sync (tokio-postgres closing a statement it dropped) is
            # not waited for: the next request goes out without waiting for its answer.
            if not any(t in (b"P", b"D", b"B", b"E", b"Q") for t, _ in msgs):
                return
            new_round_trip = self.answered
            self.answered = False
            executed = []
            for t, body in msgs:
                if t == b"P":
                    name, rest = body.split(b"\0", 1)
                    sql = rest.split(b"\0", 1)[0].decode()
                    self.prepared[name] = sql
                elif t == b"B":
                    portal, rest = body.split(b"\0", 1)
                    stmt = rest.split(b"\0", 1)[0]
                    self.portal_sql[portal] = self.prepared.get(stmt, "?")
                elif t == b"E":
                    portal = body.split(b"\0", 1)[0]
                    executed.append(self.portal_sql.get(portal, "?"))
                elif t == b"Q":
                    for part in body.rstrip(b"\0").decode().split(";"):
                        if part.strip():
                            executed.append(part.strip())
            if not executed:
                # Parse/Describe only (preparing a statement) still costs a round trip.
                if new_round_trip:
                    self.count_round_trip(["(prepare)"], True)
                return
            self.count_round_trip(executed, new_round_trip)

    def count_round_trip(self, executed, new_round_trip):
        for sql in executed:
            word = sql.split(None, 1)[0].upper() if sql.strip() else ""
            if word in ("BEGIN", "START"):
                self.in_tx, self.tx_step, self.tx_round_trips, self.tx_statements = True, None, 0, 0
                self.tx_statements += 1
                self.tx_round_trips += 1 if new_round_trip else 0
                new_round_trip = False
                continue
            if self.in_tx:
                # `SET LOCAL` (the batch's timeouts, sent with its BEGIN) names no step.
                if self.tx_step is None and sql != "(prepare)" and word != "SET":
                    self.tx_step = step_of(sql)
                self.tx_statements += 1 if sql != "(prepare)" else 0
                self.tx_round_trips += 1 if new_round_trip else 0
                new_round_trip = False
                if word in ("COMMIT", "ROLLBACK"):
                    self.counter.add(self.tx_step or "empty transaction", self.tx_statements, self.tx_round_trips,
                                     1 if word == "COMMIT" else 0)
                    self.in_tx = False
                elif self.tx_step is not None:
                    self.counter.add(self.tx_step, sql=sql)
                continue
            step = step_of(sql) if sql != "(prepare)" else "prepare (first use on a connection)"
            # A `WITH ... UPDATE` (the lease renewal, the batched successes) writes too.
            writes = word in ("INSERT", "UPDATE", "DELETE") or (
                word == "WITH" and re.search(r"\b(INSERT|UPDATE|DELETE)\b", sql, re.I) is not None)
            self.counter.add(step, 1 if sql != "(prepare)" else 0, 1 if new_round_trip else 0,
                             1 if writes else 0, sql if sql != "(prepare)" else None)
            new_round_trip = False


def pump(src, dst, on_data):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            on_data(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def proxy(counter, upstream):
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)

    def accept():
        while True:
            c, _ = lsock.accept()
            u = socket.create_connection(upstream)
            for s in (c, u):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = Conn(counter)
            threading.Thread(target=pump, args=(c, u, conn.client_sent), daemon=True).start()
            threading.Thread(target=pump, args=(u, c, lambda _d, conn=conn: conn.server_spoke()), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return lsock.getsockname()[1]


def report(title, counter):
    print(f"\n{title}\n")
    print("| step | statements | round trips | commits |")
    print("|---|---|---|---|")
    total = [0, 0, 0]
    with counter.lock:
        for step, s in sorted(counter.stats.items()):
            print(f"| {step} | {s['statements']} | {s['round_trips']} | {s['commits']} |")
            total[0] += s["statements"]
            total[1] += s["round_trips"]
            total[2] += s["commits"]
    print(f"| **total** | {total[0]} | {total[1]} | {total[2]} |")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/runbase")
    ap.add_argument("--postgres", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--verbose", action="store_true", help="also print the SQL of each step")
    args = ap.parse_args()
    m = re.match(r"postgres(?:ql)?://[^@/]*@?([^:/]+)(?::(\d+))?", args.postgres)
    upstream = (m.group(1), int(m.group(2) or 5432))
    pg = Pg(args.postgres, f"runbase_rt_{os.getpid()}")
    counter = Counter()
    port = proxy(counter, upstream)
    user = re.match(r"postgres(?:ql)?://([^@/:]+)@", args.postgres)
    proxied = f"postgres://{user.group(1) if user else 'postgres'}@127.0.0.1:{port}/{pg.name}"
    import tempfile

    data = tempfile.mkdtemp(prefix="runbase-rt-")
    env = {
        "RUNBASE_DATABASE_URL": pg.url,
        "RUNBASE_WORKER__LEASE_MS": "600",  # renewed every 200 ms
        "RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000",
    }
    try:
        cli(args.bin, data, "migrate", env=env)
        cli(args.bin, data, "accounts", "create", "rt@example.com", env=env)
        cli(args.bin, data, "credits", "add", "--account", "rt@example.com", "--cents", "1000", env=env)
        key = cli(args.bin, data, "keys", "create", "--account", "rt@example.com", env=env)
        rb = start_runbase(args.bin, data, {**env, "RUNBASE_DATABASE_URL": proxied})
        try:
            hdr = {"Authorization": "Bearer " + key, "Content-Type": "application/json"}

            def post(body):
                req = urllib.request.Request(rb.url + "/api/v1/runs", data=json.dumps(body).encode(), headers=hdr)
                return json.load(urllib.request.urlopen(req))["id"]

            def get(run_id):
                req = urllib.request.Request(f"{rb.url}/api/v1/runs/{run_id}", headers=hdr)
                return json.load(urllib.request.urlopen(req))

            def wait(run_id):
                while get(run_id)["status"] not in ("succeeded", "failed", "canceled"):
                    time.sleep(0.02)

            # Warm every pooled connection's statement cache (and the worker) first.
            for _ in range(3):
                wait(post({"model": "runbase/echo", "input": {"text": "warm-up"}}))
            time.sleep(1.0)
            counter.reset()
            t0 = time.time()
            time.sleep(2.0)
            report(f"Idle node for {time.time() - t0:.1f} s (lease_ms = 600: a lease tick every 200 ms)", counter)

            counter.reset()
            run_id = post({"model": "runbase/echo", "input": {"text": "counted", "delay_ms": 1000}})
            while True:
                # Poll without counting: read the row through psql, not through the API.
                (status,) = pg.query(
                    f"SELECT CASE status WHEN 'succeeded' THEN 1 ELSE 0 END FROM runs WHERE id = '{run_id}'"
                )[0]
                if status:
                    break
                time.sleep(0.02)
            time.sleep(0.3)
            get(run_id)
            time.sleep(0.2)
            report("One run: create, claim, renewals (a 1 s run, lease 600 ms), finish, one GET, "
                   "with the idle ticks of those ~1.5 s", counter)
            if args.verbose:
                for step, s in sorted(counter.stats.items()):
                    for sql in sorted(s["sql"]):
                        print(f"  {step}: {sql}")
        finally:
            rb.stop()
    finally:
        pg.drop()


if __name__ == "__main__":
    main()

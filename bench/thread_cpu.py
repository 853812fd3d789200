#!/usr/bin/env python3
"""CPU time per run of each Runbase thread over a burst of accepted creates (issue 15).

On a shared, noisy machine req/s moves ±30% between runs, but the CPU a run costs each thread
(the SQLite writer, the tokio workers) barely moves: this is the figure to compare before and
after a change of the write path. Starts Runbase on a fresh data directory (SQLite,
durability=full) with 64 keys, warms up, then runs wrk at c64 for SECS seconds, waits for the
queue to drain (so claims and finishes are counted too) and prints each thread's CPU divided by
the runs created. With --perf, records a perf profile of the burst into perf.data (with
--call-graph, with DWARF call stacks); with --idempotency, every create carries an Idempotency-Key
of its own; with --claims, prints the worker's claims by result from the metrics (full claims mean
runs were queued and claimed instead of handed over in their creates).

    python3 bench/thread_cpu.py target/release/runbase [SECS] [--perf [--call-graph]] [--idempotency] [--claims]
"""
import json, os, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import echo_creates, queue_drained, start_runbase, wrk  # noqa: E402


def threads(pid):
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        st = open(f"/proc/{pid}/task/{t}/stat").read()
        name = st[st.index("(") + 1:st.rindex(")")]
        f = st[st.rindex(")") + 2:].split()
        out[t] = (name, int(f[11]) + int(f[12]))  # utime + stime, in clock ticks
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    binary, secs = args[0], int(args[1]) if len(args) > 1 else 5
    tmp = tempfile.mkdtemp(prefix="runbase-thread-cpu-")
    data = os.path.join(tmp, "data")
    db = os.path.join(data, "runbase.db")
    env = {"RUNBASE_RATE_LIMITS__RUNS__REQUESTS": "1000000000", "RUNBASE_DURABILITY": "full"}
    metrics = None
    if "--claims" in sys.argv:
        # The worker's claims (full: the queue held more runs than it had free; runs created
        # while none was free for them are queued and claimed instead of handed over).
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            metrics = f"127.0.0.1:{s.getsockname()[1]}"
        env["RUNBASE_METRICS_LISTEN"] = metrics
    rb = start_runbase(binary, data, env)
    try:
        time.sleep(0.5)
        print(f"idle RSS {rb.rss_kb() / 1024:.1f} MiB")
        _, script = echo_creates(binary, data, os.path.join(tmp, "create.lua"), 64,
                            idempotency="--idempotency" in sys.argv)
        wrk(rb.url, 64, 2, script)
        while not queue_drained(db):
            time.sleep(0.05)
        before = threads(rb.p.pid)
        perf = None
        if "--perf" in sys.argv:
            stacks = ["--call-graph", "dwarf,16384", "-F", "499"] if "--call-graph" in sys.argv else ["-F", "999"]
            perf = subprocess.Popen(["perf", "record", *stacks, "-p", str(rb.p.pid), "-o", "perf.data"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        r = wrk(rb.url, 64, secs, script)
        while not queue_drained(db):
            time.sleep(0.05)
        if perf:
            perf.send_signal(2)
            perf.wait()
        after = threads(rb.p.pid)
        if metrics:
            import urllib.request
            text = urllib.request.urlopen(f"http://{metrics}/metrics").read().decode()
            claims = [l for l in text.splitlines() if "claims" in l and not l.startswith("#")]
    finally:
        rb.stop()
    n = r["total"]
    print(f"c64: {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, {n} runs created and completed")
    per = {}
    for t, (name, cpu) in after.items():
        per[name] = per.get(name, 0) + cpu - before.get(t, (name, 0))[1]
    tick = os.sysconf("SC_CLK_TCK")
    for name, d in sorted(per.items(), key=lambda x: -x[1]):
        if d:
            print(f"  {name:<18} {d / tick / n * 1e6:6.1f} µs per run")
    print(f"  {'all threads':<18} {sum(per.values()) / tick / n * 1e6:6.1f} µs per run")
    if metrics:
        print("  claims over both bursts: " + ", ".join(claims))


if __name__ == "__main__":
    main()

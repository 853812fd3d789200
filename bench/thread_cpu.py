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


def waits(pid):
    """Each thread's time spent runnable but waiting for a core (ns), from schedstat, and its
    context switches (voluntary: it slept; involuntary: it was preempted)."""
    out = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            wait = int(open(f"/proc/{pid}/task/{t}/schedstat").read().split()[1])
            st = dict(l.split(":\t") for l in open(f"/proc/{pid}/task/{t}/status").read().splitlines()
                      if ":\t" in l)
            out[t] = (wait, int(st["voluntary_ctxt_switches"]), int(st["nonvoluntary_ctxt_switches"]))
        except (OSError, KeyError):
            pass
    return out


def machine():
    """The machine's CPU time so far, busy and idle (iowait counts as idle), in clock ticks."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f[:8]) - idle, idle


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
        m_before, w_before = machine(), waits(rb.p.pid)
        r = wrk(rb.url, 64, secs, script)
        m_burst, w_burst = machine(), waits(rb.p.pid)
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
    # Time each thread was ready to run but had no core, over the burst alone.
    waited = {}
    for t, w in w_burst.items():
        name = after.get(t, before.get(t, ("?", 0)))[0]
        b = w_before.get(t, (0, 0, 0))
        have = waited.get(name, (0, 0, 0))
        waited[name] = tuple(have[i] + w[i] - b[i] for i in range(3))
    for name, d in sorted(per.items(), key=lambda x: -x[1]):
        if d:
            w = waited.get(name, (0, 0, 0))
            print(f"  {name:<18} {d / tick / n * 1e6:6.1f} µs per run; over the burst, per run: "
                  f"waited for a core {w[0] / 1e3 / n:5.1f} µs, slept {w[1] / n:.3f}, "
                  f"preempted {w[2] / n:.3f} times")
    print(f"  {'all threads':<18} {sum(per.values()) / tick / n * 1e6:6.1f} µs per run")
    # The whole machine over the burst alone (wrk included): how busy the cores were, and the CPU
    # that was not Runbase's (mostly wrk), per run.
    busy, idle = m_burst[0] - m_before[0], m_burst[1] - m_before[1]
    print(f"  machine over the burst: {busy / (busy + idle):.0%} busy; "
          f"{busy / tick / n * 1e6:.1f} µs per run in all, wrk and the rest "
          f"{(busy - sum(per.values())) / tick / n * 1e6:.1f} µs (drain included in Runbase's)")
    if metrics:
        print("  claims over both bursts: " + ", ".join(claims))


if __name__ == "__main__":
    main()

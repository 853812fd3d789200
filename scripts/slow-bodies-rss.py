#!/usr/bin/env python3
"""Memory held by unauthenticated slow uploads (issue 16's review, M2): for each scenario, starts
a fresh `runbase serve`, opens N connections that each send a request head with
`Content-Length: 1000000` and then 999,990 bytes of body (never the last 10), and prints the
server's VmRSS before, while they are open, and after they are closed. Bounded: at most 250
connections, a few seconds per scenario.

    scripts/slow-bodies-rss.py target/debug/runbase
"""
import os, selectors, socket, subprocess, sys, tempfile, time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/debug/runbase"
DECLARED, SENT = 1_000_000, 999_990


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def start():
    d = tempfile.mkdtemp()
    env = dict(os.environ,
               RUNBASE_HTTP__MAX_CONNECTIONS="4096",
               RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP="4096",
               RUNBASE_PAYMENTS__STRIPE__SECRET_KEY="sk_test_rss",
               RUNBASE_PAYMENTS__STRIPE__WEBHOOK_SECRET="whsec_rss")
    env.pop("RUST_LOG", None)
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--data-dir", d],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    url = p.stdout.readline().strip().rsplit("http://", 1)[1]
    host, port = url.split(":")
    return p, (host, int(port))


def warm(addr):
    s = socket.create_connection(addr)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()


def scenario(name, path, headers, n, many_addresses):
    p, addr = start()
    try:
        warm(addr)
        time.sleep(0.5)
        before = rss_kib(p.pid)
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {DECLARED}\r\n"
                f"{headers}\r\n").encode()
        sel = selectors.DefaultSelector()
        socks = []
        for i in range(n):
            s = socket.socket()
            if many_addresses:
                s.bind((f"127.0.{1 + i // 250}.{1 + i % 250}", 0))
            s.connect(addr)
            s.setblocking(False)
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE, [head + b" " * SENT, 0])
        deadline = time.time() + 8
        while sel.get_map() and time.time() < deadline:
            for key, _ in sel.select(timeout=0.2):
                data = key.data
                try:
                    data[1] += key.fileobj.send(data[0][data[1]:data[1] + 262144])
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    sel.unregister(key.fileobj)
                    continue
                if data[1] >= len(data[0]):
                    sel.unregister(key.fileobj)
        time.sleep(1.5)
        held = rss_kib(p.pid)
        for s in socks:
            s.close()
        time.sleep(1.5)
        after = rss_kib(p.pid)
        print(f"{name:<42} {n:>4} conns  VmRSS {before / 1024:6.1f} -> {held / 1024:6.1f} MiB"
              f" (after close {after / 1024:6.1f})", flush=True)
    finally:
        p.terminate()
        p.wait(timeout=20)


now = int(time.time())
ct = "Content-Type: application/x-www-form-urlencoded\r\n"
scenario("POST /logout, no session", "/logout", ct, 64, False)
scenario("POST /login, 250 addresses", "/login", ct, 250, True)
scenario("POST /webhooks/stripe, t=1 (stale)", "/webhooks/stripe",
         "Stripe-Signature: t=1,v1=00\r\n", 64, False)
scenario("POST /webhooks/stripe, fresh t, bad v1", "/webhooks/stripe",
         f"Stripe-Signature: t={now},v1=00\r\n", 64, False)
scenario("POST /api/v1/runs, no key, 250 addresses", "/api/v1/runs",
         "Content-Type: application/json\r\n", 250, True)

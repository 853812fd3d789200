#!/usr/bin/env python3
"""Bulk-loads N finished runs (and their ledger rows) into a Runbase SQLite store, for measuring
how the API behaves as the store grows. The account and key must exist (create them with the
CLI first). Keeps the books exact: a top-up of N cents, then one 1-cent charge per run.

    python3 bench/load_runs.py DATA_DIR EMAIL N
"""

import random
import sqlite3
import string
import sys
import time

ALPHABET = string.digits + string.ascii_lowercase


def base36(n, width):
    out = []
    while n:
        n, r = divmod(n, 36)
        out.append(ALPHABET[r])
    return "".join(reversed(out)).rjust(width, "0")


def main():
    data_dir, email, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    con = sqlite3.connect(f"{data_dir}/runbase.db")
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")
    account, balance = con.execute("SELECT id, balance_millicents FROM accounts WHERE email = ?", (email,)).fetchone()
    (key,) = con.execute("SELECT id FROM api_keys WHERE account_id = ? LIMIT 1", (account,)).fetchone()
    start = int(time.time() * 1e6) - n * 1000  # one run per millisecond, ending now
    rnd = random.Random(7)
    with con:
        balance += n * 1000
        con.execute("UPDATE accounts SET balance_millicents = ? WHERE id = ?", (balance, account))
        con.execute(
            "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, memo, created_at) VALUES (?, 'topup', ?, ?, 'bulk load', ?)",
            (account, n * 1000, balance, start),
        )
    batch = 50_000
    for lo in range(0, n, batch):
        runs, ledger = [], []
        for i in range(lo, min(n, lo + batch)):
            t = start + i * 1000
            rid = "run_" + base36(t, 10) + "".join(rnd.choice(ALPHABET) for _ in range(16))
            balance -= 1000
            runs.append((rid, account, key, t, t + 100, t + 200))
            ledger.append((account, balance, rid, key, t))
        with con:
            con.executemany(
                "INSERT INTO runs (id, account_id, key_id, model, status, input, output, cost_millicents, attempts, created_at, started_at, completed_at) "
                "VALUES (?, ?, ?, 'runbase/echo', 'succeeded', '{\"text\":\"hello\",\"delay_ms\":0}', '{\"text\":\"hello\",\"urls\":[]}', 1000, 1, ?, ?, ?)",
                runs,
            )
            con.executemany(
                "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, key_id, memo, created_at) "
                "VALUES (?, 'run_charge', -1000, ?, ?, ?, 'runbase/echo', ?)",
                ledger,
            )
            con.execute(
                "UPDATE api_keys SET spent_millicents = spent_millicents + ?, runs_created = runs_created + ? WHERE id = ?",
                (len(runs) * 1000, len(runs), key),
            )
        print(f"loaded {min(n, lo + batch)} runs", file=sys.stderr)
    with con:
        con.execute("UPDATE accounts SET balance_millicents = ? WHERE id = ?", (balance, account))
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(runs[len(runs) // 2][0])  # a run id from the middle of the last batch


if __name__ == "__main__":
    main()

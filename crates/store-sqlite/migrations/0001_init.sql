-- Accounts own keys, runs and a prepaid balance. The balance is a cached sum of the account's
-- ledger rows, updated in the same transaction as each row; it can never go below zero.
CREATE TABLE accounts (
    id                 TEXT PRIMARY KEY,
    email              TEXT NOT NULL UNIQUE,
    balance_millicents INTEGER NOT NULL DEFAULT 0 CHECK (balance_millicents >= 0),
    created_at         INTEGER NOT NULL
) STRICT;

-- API keys: only the SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts (id),
    name                   TEXT NOT NULL,
    prefix                 TEXT NOT NULL,
    hash                   TEXT NOT NULL UNIQUE,
    disabled               INTEGER NOT NULL DEFAULT 0,
    test                   INTEGER NOT NULL DEFAULT 0,
    expires_at             INTEGER,
    allow_ips              TEXT NOT NULL DEFAULT '[]',
    spend_limit_millicents INTEGER,
    spent_millicents       INTEGER NOT NULL DEFAULT 0 CHECK (spent_millicents >= 0),
    quota                  INTEGER,
    runs_created           INTEGER NOT NULL DEFAULT 0,
    created_at             INTEGER NOT NULL,
    last_used_at           INTEGER,
    deleted_at             INTEGER
) STRICT;
CREATE INDEX api_keys_by_account ON api_keys (account_id);

-- Runs. `seq` orders them (pagination); `id` is the public opaque id.
CREATE TABLE runs (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    key_id          TEXT NOT NULL REFERENCES api_keys (id),
    model           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'processing', 'succeeded', 'failed')),
    input           TEXT NOT NULL,
    output          TEXT,
    error_message   TEXT,
    error_code      TEXT,
    cost_millicents INTEGER NOT NULL CHECK (cost_millicents >= 0),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    completed_at    INTEGER
) STRICT;
CREATE INDEX runs_by_account ON runs (account_id, seq DESC);

-- The queue is the runs table itself: a run is its own job, enqueued by the INSERT that creates
-- it. This partial index holds only the runs waiting for a worker, so claiming stays cheap however
-- many finished runs the table holds; `processing` runs found at start-up were interrupted.
CREATE INDEX runs_queued ON runs (seq) WHERE status = 'pending';
CREATE INDEX runs_in_flight ON runs (seq) WHERE status = 'processing';

-- Every change of a balance, append-only.
CREATE TABLE ledger (
    id                       INTEGER PRIMARY KEY,
    account_id               TEXT NOT NULL REFERENCES accounts (id),
    kind                     TEXT NOT NULL CHECK (kind IN ('topup', 'run_charge', 'run_refund')),
    amount_millicents        INTEGER NOT NULL,
    balance_after_millicents INTEGER NOT NULL CHECK (balance_after_millicents >= 0),
    run_id                   TEXT,
    key_id                   TEXT,
    memo                     TEXT NOT NULL DEFAULT '',
    created_at               INTEGER NOT NULL
) STRICT;
CREATE INDEX ledger_by_account ON ledger (account_id, id DESC);
-- A run is charged at most once and refunded at most once.
CREATE UNIQUE INDEX ledger_one_charge_per_run ON ledger (run_id) WHERE kind = 'run_charge';
CREATE UNIQUE INDEX ledger_one_refund_per_run ON ledger (run_id) WHERE kind = 'run_refund';

CREATE TRIGGER ledger_is_append_only_update BEFORE UPDATE ON ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER ledger_is_append_only_delete BEFORE DELETE ON ledger
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;

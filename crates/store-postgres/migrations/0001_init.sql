-- Runbase on PostgreSQL: the same tables and rules as the SQLite store after its migration 0004
-- (crates/store-sqlite/migrations). Times are microseconds since the Unix epoch (BIGINT), money
-- is integer millicents, JSON is kept as text so it reads back byte for byte.

-- Accounts own keys, runs and a prepaid balance: a cached sum of the account's ledger rows,
-- updated in the same transaction as each row; it can never go below zero.
CREATE TABLE accounts (
    id                 TEXT PRIMARY KEY,
    email              TEXT NOT NULL UNIQUE,
    balance_millicents BIGINT NOT NULL DEFAULT 0 CHECK (balance_millicents >= 0),
    created_at         BIGINT NOT NULL,
    password_hash      TEXT,
    admin              BOOLEAN NOT NULL DEFAULT FALSE
);

-- API keys: only the SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id                     TEXT PRIMARY KEY,
    account_id             TEXT NOT NULL REFERENCES accounts (id),
    name                   TEXT NOT NULL,
    prefix                 TEXT NOT NULL,
    hash                   TEXT NOT NULL UNIQUE,
    disabled               BOOLEAN NOT NULL DEFAULT FALSE,
    test                   BOOLEAN NOT NULL DEFAULT FALSE,
    expires_at             BIGINT,
    allow_ips              TEXT NOT NULL DEFAULT '[]',
    spend_limit_millicents BIGINT,
    spent_millicents       BIGINT NOT NULL DEFAULT 0 CHECK (spent_millicents >= 0),
    quota                  BIGINT,
    runs_created           BIGINT NOT NULL DEFAULT 0,
    created_at             BIGINT NOT NULL,
    last_used_at           BIGINT,
    deleted_at             BIGINT
);
CREATE INDEX api_keys_by_account ON api_keys (account_id);

-- Runs, and the queue: a `pending` run is its own job, enqueued by the INSERT that creates it.
-- A worker's claim on a `processing` run lasts until `locked_until` and is renewed while the run
-- executes; a run whose lease ran out lost its worker and is reclaimed.
CREATE TABLE runs (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    key_id          TEXT NOT NULL REFERENCES api_keys (id),
    model           TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'canceled')),
    test            BOOLEAN NOT NULL DEFAULT FALSE,
    input           TEXT NOT NULL,
    output          TEXT,
    error_message   TEXT,
    error_code      TEXT,
    cost_millicents BIGINT NOT NULL CHECK (cost_millicents >= 0),
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    completed_at    BIGINT,
    locked_until    BIGINT
);
CREATE INDEX runs_by_account ON runs (account_id, seq DESC);
CREATE INDEX runs_queued ON runs (seq) WHERE status = 'pending';
CREATE INDEX runs_leases ON runs (locked_until) WHERE status = 'processing';

-- Every change of a balance, append-only.
CREATE TABLE ledger (
    id                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id               TEXT NOT NULL REFERENCES accounts (id),
    kind                     TEXT NOT NULL CHECK (kind IN ('topup', 'run_charge', 'run_refund')),
    amount_millicents        BIGINT NOT NULL,
    balance_after_millicents BIGINT NOT NULL CHECK (balance_after_millicents >= 0),
    run_id                   TEXT,
    key_id                   TEXT,
    memo                     TEXT NOT NULL DEFAULT '',
    created_at               BIGINT NOT NULL,
    granted_by               TEXT
);
CREATE INDEX ledger_by_account ON ledger (account_id, id DESC);
CREATE INDEX ledger_by_run ON ledger (run_id) WHERE run_id IS NOT NULL;
-- A run is charged at most once and refunded at most once.
CREATE UNIQUE INDEX ledger_one_charge_per_run ON ledger (run_id) WHERE kind = 'run_charge';
CREATE UNIQUE INDEX ledger_one_refund_per_run ON ledger (run_id) WHERE kind = 'run_refund';

CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only';
END
$$;
CREATE TRIGGER ledger_is_append_only_row BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();
CREATE TRIGGER ledger_is_append_only_truncate BEFORE TRUNCATE ON ledger
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_is_append_only();

-- Logged-in browsers. Only the SHA-256 of the cookie's token is kept.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_account ON sessions (account_id);

-- Checkouts started at a payment provider; a payment goes from pending to paid once, in the
-- transaction that writes its ledger entry.
CREATE TABLE payments (
    provider          TEXT NOT NULL,
    checkout_id       TEXT NOT NULL,
    account_id        TEXT NOT NULL REFERENCES accounts (id),
    amount_millicents BIGINT NOT NULL CHECK (amount_millicents > 0),
    status            TEXT NOT NULL CHECK (status IN ('pending', 'paid')),
    ledger_id         BIGINT REFERENCES ledger (id),
    created_at        BIGINT NOT NULL,
    paid_at           BIGINT,
    PRIMARY KEY (provider, checkout_id)
);

-- Webhook events applied, by the provider's event id: a replayed delivery is recognized.
CREATE TABLE webhook_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (provider, event_id)
);

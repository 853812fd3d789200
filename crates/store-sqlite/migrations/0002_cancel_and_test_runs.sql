-- Runs gain the `canceled` status and remember whether a test key created them (test runs go to
-- the simulator and are never charged). SQLite cannot change a CHECK constraint in place, so the
-- table is rebuilt; no other table references `runs` by foreign key.
CREATE TABLE runs_v2 (
    seq             INTEGER PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    key_id          TEXT NOT NULL REFERENCES api_keys (id),
    model           TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'processing', 'succeeded', 'failed', 'canceled')),
    test            INTEGER NOT NULL DEFAULT 0,
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

INSERT INTO runs_v2 (seq, id, account_id, key_id, model, status, test, input, output,
                     error_message, error_code, cost_millicents, attempts, created_at,
                     started_at, completed_at)
SELECT r.seq, r.id, r.account_id, r.key_id, r.model, r.status,
       COALESCE((SELECT k.test FROM api_keys k WHERE k.id = r.key_id), 0),
       r.input, r.output, r.error_message, r.error_code, r.cost_millicents, r.attempts,
       r.created_at, r.started_at, r.completed_at
FROM runs r;

DROP TABLE runs;
ALTER TABLE runs_v2 RENAME TO runs;

CREATE INDEX runs_by_account ON runs (account_id, seq DESC);
CREATE INDEX runs_queued ON runs (seq) WHERE status = 'pending';
CREATE INDEX runs_in_flight ON runs (seq) WHERE status = 'processing';

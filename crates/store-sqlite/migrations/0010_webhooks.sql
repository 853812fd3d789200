-- Outgoing run webhooks (crates/domain/src/webhooks.rs, Standard Webhooks).
--
-- A run's subscription: `webhook` (the URL) and `webhook_events` (a bit set: 1 = start,
-- 2 = completed); 0 and NULL for runs without one.
ALTER TABLE runs ADD COLUMN webhook TEXT;
ALTER TABLE runs ADD COLUMN webhook_events INTEGER NOT NULL DEFAULT 0;

-- Each account's signing secret (`whsec_...`), and the one before it, which keeps signing until
-- `previous_until` after a rotation.
CREATE TABLE webhook_secrets (
    account_id      TEXT PRIMARY KEY REFERENCES accounts (id),
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_until  INTEGER,
    created_at      INTEGER NOT NULL
);

-- The outbox: one row per delivery (the `webhook-id`, the same on every attempt), due at
-- `next_attempt_at` while `pending`; `locked_until` is a dispatcher's claim on it.
CREATE TABLE webhook_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    run_id          TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('start', 'completed')),
    url             TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    next_attempt_at INTEGER,
    locked_until    INTEGER
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_run ON webhook_deliveries (run_id, seq);

-- The delivery log: one row per attempt.
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt     INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    http_status INTEGER,
    latency_ms  INTEGER NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

-- The outbox rows are written by the statement that changes the run's status, so in its
-- transaction, whichever code path makes the change (claims, finishes, cancels, reclaims).
-- `start`: the first claim of the run (a run re-queued after a restart starts once).
CREATE TRIGGER runs_webhook_start AFTER UPDATE OF status ON runs
WHEN NEW.webhook IS NOT NULL AND (NEW.webhook_events & 1) <> 0
     AND OLD.status = 'pending' AND NEW.status = 'processing' AND NEW.attempts = 1
BEGIN
    INSERT INTO webhook_deliveries (id, run_id, account_id, event, url, created_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), NEW.id, NEW.account_id, 'start', NEW.webhook,
            NEW.started_at, NEW.started_at);
END;

-- `completed`: the run reached succeeded, failed or canceled (which happens once).
CREATE TRIGGER runs_webhook_completed AFTER UPDATE OF status ON runs
WHEN NEW.webhook IS NOT NULL AND (NEW.webhook_events & 2) <> 0
     AND OLD.status IN ('pending', 'processing')
     AND NEW.status IN ('succeeded', 'failed', 'canceled')
BEGIN
    INSERT INTO webhook_deliveries (id, run_id, account_id, event, url, created_at, next_attempt_at)
    VALUES ('msg_' || lower(hex(randomblob(16))), NEW.id, NEW.account_id, 'completed', NEW.webhook,
            NEW.completed_at, NEW.completed_at);
END;

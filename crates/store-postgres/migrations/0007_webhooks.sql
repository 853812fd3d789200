-- Outgoing run webhooks (crates/domain/src/webhooks.rs, Standard Webhooks).
--
-- A run's subscription: `webhook` (the URL) and `webhook_events` (a bit set: 1 = start,
-- 2 = completed); 0 and NULL for runs without one.
ALTER TABLE runs ADD COLUMN webhook TEXT;
ALTER TABLE runs ADD COLUMN webhook_events BIGINT NOT NULL DEFAULT 0;

-- Each account's signing secret (`whsec_...`), and the one before it, which keeps signing until
-- `previous_until` after a rotation.
CREATE TABLE webhook_secrets (
    account_id      TEXT PRIMARY KEY,
    secret          TEXT NOT NULL,
    previous_secret TEXT,
    previous_until  BIGINT,
    created_at      BIGINT NOT NULL
);

-- The outbox: one row per delivery (the `webhook-id`, the same on every attempt), due at
-- `next_attempt_at` while `pending`; `locked_until` is a dispatcher's claim on it (taken with
-- FOR UPDATE SKIP LOCKED, so two nodes never send the same attempt at once).
CREATE TABLE webhook_deliveries (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    run_id          TEXT NOT NULL,
    account_id      TEXT NOT NULL,
    event           TEXT NOT NULL CHECK (event IN ('start', 'completed')),
    url             TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    next_attempt_at BIGINT,
    locked_until    BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_run ON webhook_deliveries (run_id, seq);

-- The delivery log: one row per attempt.
CREATE TABLE webhook_attempts (
    delivery_id TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,
    http_status INTEGER,
    latency_ms  BIGINT NOT NULL,
    error       TEXT,
    PRIMARY KEY (delivery_id, attempt)
);

-- The outbox rows are written by the statement that changes the run's status, so in its
-- transaction, whichever code path makes the change (claims, the batched finishes, cancels,
-- reclaims). `start`: the first claim of the run; `completed`: succeeded, failed or canceled.
-- The WHEN clauses keep runs without a webhook from calling the function at all.
CREATE FUNCTION runs_webhook_outbox() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ev TEXT;
    at BIGINT;
BEGIN
    IF NEW.status = 'processing' THEN
        IF OLD.status <> 'pending' OR NEW.attempts <> 1 OR (NEW.webhook_events & 1) = 0 THEN
            RETURN NULL;
        END IF;
        ev := 'start';
        at := NEW.started_at;
    ELSIF NEW.status IN ('succeeded', 'failed', 'canceled') THEN
        IF OLD.status NOT IN ('pending', 'processing') OR (NEW.webhook_events & 2) = 0 THEN
            RETURN NULL;
        END IF;
        ev := 'completed';
        at := NEW.completed_at;
    ELSE
        RETURN NULL;
    END IF;
    INSERT INTO webhook_deliveries (id, run_id, account_id, event, url, created_at, next_attempt_at)
    VALUES ('msg_' || replace(gen_random_uuid()::text, '-', ''), NEW.id, NEW.account_id, ev,
            NEW.webhook, at, at);
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_webhook_outbox AFTER UPDATE OF status ON runs
FOR EACH ROW
WHEN (NEW.webhook IS NOT NULL AND NEW.status IS DISTINCT FROM OLD.status)
EXECUTE FUNCTION runs_webhook_outbox();

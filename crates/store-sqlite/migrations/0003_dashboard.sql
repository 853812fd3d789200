-- The dashboard: passwords and administrators, sessions, payments (top-ups) and who granted a
-- credit.
ALTER TABLE accounts ADD COLUMN password_hash TEXT;
ALTER TABLE accounts ADD COLUMN admin INTEGER NOT NULL DEFAULT 0;
-- The first account of an install is its administrator; on an upgraded install, the oldest.
UPDATE accounts SET admin = 1
 WHERE id = (SELECT id FROM accounts ORDER BY created_at, id LIMIT 1);

-- For credits an administrator granted: the administrator's email. (ADD COLUMN does not fire
-- the append-only triggers; existing rows read NULL.)
ALTER TABLE ledger ADD COLUMN granted_by TEXT;
-- A run's page lists its ledger lines.
CREATE INDEX ledger_by_run ON ledger (run_id) WHERE run_id IS NOT NULL;

-- Logged-in browsers. Only the SHA-256 of the cookie's token is kept.
CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    csrf_token TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
CREATE INDEX sessions_by_account ON sessions (account_id);

-- Checkouts started at a payment provider. A payment goes from pending to paid once, in the
-- transaction that writes its ledger entry: a confirmation delivered twice credits once.
CREATE TABLE payments (
    provider          TEXT NOT NULL,
    checkout_id       TEXT NOT NULL,
    account_id        TEXT NOT NULL REFERENCES accounts (id),
    amount_millicents INTEGER NOT NULL CHECK (amount_millicents > 0),
    status            TEXT NOT NULL CHECK (status IN ('pending', 'paid')),
    ledger_id         INTEGER REFERENCES ledger (id),
    created_at        INTEGER NOT NULL,
    paid_at           INTEGER,
    PRIMARY KEY (provider, checkout_id)
) STRICT;

-- Webhook events applied, by the provider's event id: a replayed delivery is recognized.
CREATE TABLE webhook_events (
    provider    TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, event_id)
) STRICT;

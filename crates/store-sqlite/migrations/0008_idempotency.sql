-- Idempotency keys (crates/domain/src/idempotency.rs): one row per (account, key), inserted "in
-- flight" by the request that claims the key (`claimed_at` names the claim), then holding that
-- request's answer (`status`, `body`: the response bytes) until it expires, 24 hours after
-- `created_at`. `run_id` is the id a create under the key gives its run, chosen at the claim: the
-- run is inserted under it and the answer recorded in the transaction that charges it, so a retry
-- after a crash finds the run instead of creating another.
--
-- Numbered 0008 with no 0007 here: another branch adds an 0007. The runner numbers migrations by
-- their place in `MIGRATIONS` (src/migrations.rs), not by file name.
--
-- No foreign key on `account_id`: like the PostgreSQL table (where it would make every claim wait
-- for the account row locks of creates in progress); accounts are never deleted.
CREATE TABLE idempotency_keys (
    account_id  TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id      TEXT,
    created_at  INTEGER NOT NULL,
    claimed_at  INTEGER NOT NULL,
    status      INTEGER,
    body        BLOB,
    PRIMARY KEY (account_id, key)
) STRICT;
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

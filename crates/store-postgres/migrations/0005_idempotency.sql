-- Idempotency keys (crates/domain/src/idempotency.rs): one row per (account, key), inserted "in
-- flight" by the request that claims the key (`claimed_at` names the claim), then holding that
-- request's answer (`status`, `body`: the response bytes) until it expires, 24 hours after
-- `created_at`. `run_id` is the id a create under the key gives its run, chosen at the claim: the
-- run is inserted under it and the answer recorded in the transaction that charges it, so a retry
-- after a crash finds the run instead of creating another (`runs.id` is unique).
--
-- Numbered 0005 with no 0004 here: another branch adds an 0004. The runner numbers migrations by
-- their place in `MIGRATIONS` (src/migrations.rs), not by file name.
--
-- No foreign key on `account_id`: its check would take a KEY SHARE lock on the account row, which
-- waits for every create batch holding that row FOR UPDATE; accounts are never deleted.
CREATE TABLE idempotency_keys (
    account_id  TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    run_id      TEXT,
    created_at  BIGINT NOT NULL,
    claimed_at  BIGINT NOT NULL,
    status      INTEGER,
    body        BYTEA,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

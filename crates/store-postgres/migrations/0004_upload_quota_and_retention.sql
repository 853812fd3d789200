-- What each account's uploads take, for `[uploads] quota_bytes_per_account`, as SQLite's
-- migration 0007: changed in the transaction that records or removes an upload (its row lock
-- is what serializes two uploads of one account), always the sum of its uploads' `size_bytes`.
CREATE TABLE upload_usage (
    account_id TEXT PRIMARY KEY REFERENCES accounts (id),
    bytes      BIGINT NOT NULL CHECK (bytes >= 0)
);
INSERT INTO upload_usage (account_id, bytes)
    SELECT account_id, SUM(size_bytes) FROM uploads GROUP BY account_id;

-- Retention: the sweep claims an expired upload (until `deleting_until`, microseconds) before
-- it deletes the bytes, so that one node deletes each, and finds the oldest by `created_at`.
ALTER TABLE uploads ADD COLUMN deleting_until BIGINT;
CREATE INDEX uploads_by_age ON uploads (created_at);

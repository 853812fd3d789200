-- Uploads of never-credited accounts: a smaller quota each and one shared total, as SQLite's
-- migration 0009 (the reasons are there). The total's one row is locked by the upsert of each
-- such upload, which serializes them across nodes.
ALTER TABLE accounts ADD COLUMN credited BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE accounts SET credited = TRUE WHERE id IN (
    SELECT account_id FROM ledger
    WHERE kind = 'topup' AND amount_millicents > 0 AND memo <> 'welcome credit'
);
ALTER TABLE uploads ADD COLUMN uncredited BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE uploads SET uncredited = TRUE
    WHERE account_id IN (SELECT id FROM accounts WHERE NOT credited);
CREATE TABLE uncredited_upload_usage (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    bytes BIGINT NOT NULL CHECK (bytes >= 0)
);
INSERT INTO uncredited_upload_usage (id, bytes)
    SELECT 1, COALESCE(SUM(size_bytes), 0) FROM uploads WHERE uncredited;

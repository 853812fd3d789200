-- Uploads of accounts that were never credited (free sign-ups, perhaps with a welcome credit)
-- get a smaller quota each and share one total (`[uploads] uncredited_quota_bytes`,
-- `uncredited_total_bytes`), so that free accounts cannot fill the disk. An account becomes
-- credited with its first payment or operator's grant (a positive `topup` other than the
-- welcome credit), which is what marks the accounts that were so before this migration.
ALTER TABLE accounts ADD COLUMN credited INTEGER NOT NULL DEFAULT 0 CHECK (credited IN (0, 1));
UPDATE accounts SET credited = 1 WHERE id IN (
    SELECT account_id FROM ledger
    WHERE kind = 'topup' AND amount_millicents > 0 AND memo <> 'welcome credit'
);
-- Whether an upload counts in the never-credited accounts' total: fixed when it is recorded,
-- so that its deletion takes off what it added, whatever its account has become since.
ALTER TABLE uploads ADD COLUMN uncredited INTEGER NOT NULL DEFAULT 0 CHECK (uncredited IN (0, 1));
UPDATE uploads SET uncredited = 1
    WHERE account_id IN (SELECT id FROM accounts WHERE credited = 0);
-- The one row of that total, changed in the transaction that records or removes such an upload.
CREATE TABLE uncredited_upload_usage (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    bytes INTEGER NOT NULL CHECK (bytes >= 0)
) STRICT;
INSERT INTO uncredited_upload_usage (id, bytes)
    SELECT 1, COALESCE(SUM(size_bytes), 0) FROM uploads WHERE uncredited = 1;

-- An API key sees the runs of its own mode only: a test key (`sk-test-`, often handed to CI) the
-- account's test runs, a live key its live runs (docs/DECISIONS.md, "Test keys see test runs
-- only"). So the per-account index orders each account's runs by mode first: a key's listing is
-- one range of it, however many runs of the other mode the account has, and the dashboard, which
-- shows both, merges two ranges. Each run still takes one entry, as before.
--
-- Built as migration 0010 built its indexes: the new one first, under the lock `CREATE INDEX`
-- takes (writes to `runs` wait, reads go on), then the old one dropped and the new one given its
-- name. A lock not granted within 2 s fails the migration with nothing changed: run
-- `runbase migrate` again.
SET LOCAL lock_timeout = '2s';
CREATE INDEX runs_by_account_and_mode ON runs (account_id, test, seq);
DROP INDEX runs_by_account;
ALTER INDEX runs_by_account_and_mode RENAME TO runs_by_account;

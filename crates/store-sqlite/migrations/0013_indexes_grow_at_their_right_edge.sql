-- The two per-account indexes in ascending order (issue 15; the PostgreSQL store's migration 0010
-- does the same).
--
-- `runs_by_account (account_id, seq DESC)` and `ledger_by_account (account_id, id DESC)` put each
-- new entry first in its account's range, since `seq` and `id` only grow. Measured with one
-- account, the pages split off there stayed about half full (61 entries a page against 109
-- ascending), and every commit rewrote about four pages of each index against 2.7 ascending
-- (BENCHMARKS.md, eighteenth session). In ascending order new entries are appended at the end of
-- the account's range. The queries that list newest first walk the same index backwards: no sort.
DROP INDEX runs_by_account;
CREATE INDEX runs_by_account ON runs (account_id, seq);
DROP INDEX ledger_by_account;
CREATE INDEX ledger_by_account ON ledger (account_id, id);

-- The two per-account indexes in ascending order (issue 15; the PostgreSQL store's migration 0010
-- does the same).
--
-- `runs_by_account (account_id, seq DESC)` and `ledger_by_account (account_id, id DESC)` put each
-- new entry first in its account's range, since `seq` and `id` only grow. An insert at the left
-- edge of a range is split as any other insert (SQLite's quick balance serves only appends at a
-- tree's right edge), so every commit rewrote three or four pages of each index, and the pages
-- split off stayed half full. In ascending order new entries are appended at the end of the
-- account's range. The queries that list newest first walk the same index backwards: no sort.
DROP INDEX runs_by_account;
CREATE INDEX runs_by_account ON runs (account_id, seq);
DROP INDEX ledger_by_account;
CREATE INDEX ledger_by_account ON ledger (account_id, id);

-- The two per-account indexes in ascending order (issue 15; the SQLite store's migration 0013
-- does the same).
--
-- `runs_by_account (account_id, seq DESC)` and `ledger_by_account (account_id, id DESC)` put each
-- new entry first in its account's range, since `seq` and `id` only grow. PostgreSQL's
-- rightmost-leaf fast path and its split for rising keys serve entries that go last, not first:
-- with one account, the DESC index took 1,171 pages where the ascending one took 651
-- (BENCHMARKS.md, eighteenth session). In ascending order new entries are appended at the end of
-- the account's range.
-- The queries that list newest first scan the same index backwards: no sort.
--
-- The new indexes are built first, under the lock `CREATE INDEX` takes: writes to `runs` and
-- `ledger` wait while they are built (about a second per million rows here), reads go on. Only
-- then are the old ones dropped, under the table's strongest lock, held from that moment to the
-- commit, a moment later. A lock not granted within 2 s fails the migration with nothing changed
-- (say, behind a long transaction): run `runbase migrate` again.
SET LOCAL lock_timeout = '2s';
CREATE INDEX runs_by_account_ascending ON runs (account_id, seq);
CREATE INDEX ledger_by_account_ascending ON ledger (account_id, id);
DROP INDEX runs_by_account;
DROP INDEX ledger_by_account;
ALTER INDEX runs_by_account_ascending RENAME TO runs_by_account;
ALTER INDEX ledger_by_account_ascending RENAME TO ledger_by_account;

-- The two per-account indexes in ascending order (issue 15; the SQLite store's migration 0013
-- does the same).
--
-- `runs_by_account (account_id, seq DESC)` and `ledger_by_account (account_id, id DESC)` put each
-- new entry first in its account's range, since `seq` and `id` only grow. A B-tree insert at the
-- left edge of a range gets neither the rightmost-leaf fast path nor the rightmost split (which
-- leaves the old page full): each full page split in halves, and the half left behind was never
-- filled again. In ascending order new entries are appended at the end of the account's range.
-- The queries that list newest first scan the same index backwards: no sort.
--
-- The indexes are built again inside this migration's transaction, which holds writes to the two
-- tables for as long as that takes (seconds per million rows): migrate outside a busy hour.
SET LOCAL lock_timeout = '5s';
DROP INDEX runs_by_account;
CREATE INDEX runs_by_account ON runs (account_id, seq);
DROP INDEX ledger_by_account;
CREATE INDEX ledger_by_account ON ledger (account_id, id);

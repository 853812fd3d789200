-- Cheaper run lifecycle (issue 13, second pass; docs/DECISIONS.md "The PostgreSQL store").
--
-- The queue's indexes named `status` in their predicates (`runs_queued`: pending, `runs_leases`:
-- processing), so a claim, every lease renewal and the finish changed an indexed column: none
-- could be a HOT update, and each wrote a new entry into every index of `runs`. One partial
-- index of the runs not yet finished replaces both: `completed_at` is set once, by the finish
-- (succeeded, failed or canceled), and no index holds `status`, `started_at`, `attempts` or
-- `locked_until`, so a claim, a requeue and a renewal are HOT updates (no index entry) when the
-- row's page has room, which the fillfactor keeps. A claim finds pending runs by walking this
-- index in queue order past the runs being executed; a reclaim reads the open runs' leases.
DROP INDEX runs_queued;
DROP INDEX runs_leases;
CREATE INDEX runs_open ON runs (seq) WHERE completed_at IS NULL;
ALTER TABLE runs SET (fillfactor = 70);

-- Foreign-key checks cost a query per inserted row (two per run, one per ledger line) and check
-- nothing the code does not already: a create batch reads the key and the account under
-- `FOR UPDATE` in the transaction that inserts the run and its ledger line, and accounts and
-- keys are never deleted (a key's deletion sets `deleted_at`). As on `idempotency_keys`.
ALTER TABLE runs DROP CONSTRAINT runs_account_id_fkey;
ALTER TABLE runs DROP CONSTRAINT runs_key_id_fkey;
ALTER TABLE ledger DROP CONSTRAINT ledger_account_id_fkey;

-- Only run charges and refunds carry a `run_id`, and each kind has its unique partial index
-- (`ledger_one_charge_per_run`, `ledger_one_refund_per_run`): a run's lines are found through
-- those two (`Store::run_ledger`), and a ledger line costs three index entries, not four.
DROP INDEX ledger_by_run;

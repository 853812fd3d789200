-- Fewer index entries per run (issue 15; the PostgreSQL store's migration 0008 did the same).
--
-- `runs_in_flight` held the same rows as `runs_leases` (status = 'processing'), so a run written
-- claimed, a claim and a finish each wrote or removed an entry in both. Every query of processing
-- runs (the queue depth, start-up recovery, expired leases) is served by `runs_leases`.
DROP INDEX runs_in_flight;

-- A run's charge went into three indexes: `ledger_one_charge_per_run`, `ledger_by_run` and
-- `ledger_by_account`. One unique index on (run_id, kind) keeps "one charge and one refund per
-- run" and finds a run's lines (`Store::run_ledger`); top-ups carry no run and stay out of it.
DROP INDEX ledger_one_charge_per_run;
DROP INDEX ledger_one_refund_per_run;
DROP INDEX ledger_by_run;
CREATE UNIQUE INDEX ledger_run_lines ON ledger (run_id, kind) WHERE run_id IS NOT NULL;

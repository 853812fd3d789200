-- Cheaper run lifecycle (issue 13, second pass; docs/DECISIONS.md "The PostgreSQL store").
--
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

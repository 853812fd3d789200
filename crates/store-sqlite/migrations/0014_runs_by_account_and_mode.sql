-- An API key sees the runs of its own mode only: a test key (`sk-test-`, often handed to CI) the
-- account's test runs, a live key its live runs (docs/DECISIONS.md, "Test keys see test runs
-- only"). So the per-account index orders each account's runs by mode first: a key's listing is
-- one range of it, however many runs of the other mode the account has, and the dashboard, which
-- shows both, merges two ranges. Each run still takes one entry, as before. The PostgreSQL
-- store's migration 0011 does the same.
DROP INDEX runs_by_account;
CREATE INDEX runs_by_account ON runs (account_id, test, seq);

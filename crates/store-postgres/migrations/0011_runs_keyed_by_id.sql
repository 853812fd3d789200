-- `runs` keyed by its id alone (issue 13, twenty-first session; docs/DECISIONS.md "The PostgreSQL
-- store").
--
-- A run's `seq` orders the queue (`runs_queued`) and an account's runs (`runs_by_account`), and
-- both indexes hold it; no statement reads a run by `seq` alone. The primary key on `seq` still
-- took an index entry for every version of every run: three per run (created, claimed,
-- finished), since none of those updates is HOT (each changes `status`, which the partial
-- indexes' predicates name). A run is found by its `id`, NOT NULL and UNIQUE from the start.
-- That index becomes the table's replica identity, as the primary key was: logical replication
-- of `runs` (an upgrade by replica, say) needs a key to apply updates.
--
-- Dropping an index is quick, but it takes the table's strongest lock. A lock not granted within
-- 2 s (say, behind a long transaction) fails the migration with nothing changed: run
-- `runbase migrate` again.
SET LOCAL lock_timeout = '2s';
ALTER TABLE runs REPLICA IDENTITY USING INDEX runs_id_key;
ALTER TABLE runs DROP CONSTRAINT runs_pkey;

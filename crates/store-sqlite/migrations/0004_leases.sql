-- A worker's claim on a `processing` run lasts until `locked_until` (microseconds) and is renewed
-- while the run executes; a run whose lease ran out lost its worker and is reclaimed. One process
-- owns a SQLite file, so this matters only if the worker's renewal stops; the rule is the same
-- as PostgreSQL's, where several workers share the queue.
ALTER TABLE runs ADD COLUMN locked_until INTEGER;
CREATE INDEX runs_leases ON runs (locked_until) WHERE status = 'processing';

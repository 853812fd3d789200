-- Runs put back in the queue before their provider was called (`Store::release_run`). A put-back
-- keeps its attempt spent (a run id and attempt name one taking of the run), so `attempts` counts
-- takings; `attempts - put_backs` counts the starts that `max_attempts` bounds, so that runs put
-- back a few times and then interrupted by a crash are retried as any other.
-- A moment of the table's strongest lock: fail fast behind a long transaction (and try again)
-- rather than hold every create up behind it.
SET LOCAL lock_timeout = '5s';
ALTER TABLE runs ADD COLUMN put_backs integer NOT NULL DEFAULT 0;

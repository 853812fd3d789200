-- Runs put back in the queue before their provider was called (`Store::release_run`). A put-back
-- keeps its attempt spent (a run id and attempt name one taking of the run), so `attempts` counts
-- takings; `attempts - put_backs` counts the starts that `max_attempts` bounds, so that runs put
-- back a few times and then interrupted by a crash are retried as any other.
ALTER TABLE runs ADD COLUMN put_backs integer NOT NULL DEFAULT 0;

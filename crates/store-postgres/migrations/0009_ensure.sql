-- A statement that must fail whole when a condition it computed does not hold: `runbase_ensure`
-- raises (SQLSTATE RB001, with `failure` as the message) unless `ok` is true, so the statement
-- and its transaction are rolled back. Used by the one-round-trip create batch
-- (`crates/store-postgres/src/create_batch/one_trip.rs`) to refuse to commit if a key or account
-- row it locked and checked was not updated.
CREATE FUNCTION runbase_ensure(ok boolean, failure text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING MESSAGE = failure, ERRCODE = 'RB001';
    END IF;
    RETURN true;
END
$$;

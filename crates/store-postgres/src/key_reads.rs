//! Authentication reads, batched: the key every API request is authenticated with, read by its
//! hash, and for a run's GET the run with it (`Store::key_by_hash`, `Store::key_and_run`).
//!
//! Every request reads its key's current row (a disabled key fails on the very next request,
//! on any node), so this is a statement per request; a create may be checked on the row its
//! transaction locks instead (`auth::KeySeen::Remembered`). Under load, the requests waiting at one
//! moment are read with one statement over arrays of hashes (and run ids), in one round trip:
//! PostgreSQL's cost per statement (a backend woken, a protocol exchange, an executor started)
//! is paid once per batch instead of once per request. A batch of one uses the single-row
//! statement. Each statement starts after every request in its batch arrived, so it sees every
//! change committed before any of them (a disable answered to its caller included).
//!
//! The arrays are joined row by row, each request one probe of a unique index (`LATERAL`
//! subqueries the planner may not flatten; see [`KEYS_AND_RUNS`]), and a test checks the plans,
//! custom and generic, on a young table and on an analyzed one.

use crate::batch::{Pending, ReadBatcher};
use crate::{Error, rows};
use deadpool_postgres::Pool;
use runbase_domain::account::ApiKey;
use runbase_domain::run::Run;
use std::sync::LazyLock;

/// The most requests one statement reads.
const MAX_BATCH: usize = 128;

/// Statements of one kind running at once. Two cores' worth of PostgreSQL keeps busy with a few:
/// more only splits the waiting requests into smaller batches.
const LANES: usize = 4;

/// Key reads by hash: the hash in, the key (every column) out.
pub(crate) type KeysByHash = ReadBatcher<Pool, String, Option<ApiKey>>;

/// A run's GET: (key hash, run id) in, the key (what authentication reads) and the run, when it
/// is the key's account's, out.
pub(crate) type KeysAndRuns = ReadBatcher<Pool, (String, String), KeyAndRun>;

/// A key, and the run asked for with it when the key's account has it.
type KeyAndRun = (Option<ApiKey>, Option<Run>);

pub(crate) fn start_keys_by_hash(pool: Pool) -> KeysByHash {
    ReadBatcher::new(pool, MAX_BATCH, LANES, |pool, batch| {
        Box::pin(keys_by_hash(pool, batch))
    })
}

pub(crate) fn start_keys_and_runs(pool: Pool) -> KeysAndRuns {
    ReadBatcher::new(pool, MAX_BATCH, LANES, |pool, batch| {
        Box::pin(keys_and_runs(pool, batch))
    })
}

static KEY_BY_HASH: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {} FROM api_keys WHERE hash = $1", rows::KEY_COLS));

/// The batch form of [`KEY_BY_HASH`]; each row ends with its request's position (from 1). The
/// `OFFSET 0` keeps the planner from flattening the subquery into a join of its own choosing
/// (a hash join over the whole table, on a small one): each request is one probe of the unique
/// index on `hash` (`postgres.rs: batched_key_reads_probe_the_unique_indexes`).
static KEYS_BY_HASH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT k.*, q.n FROM unnest($1::text[]) WITH ORDINALITY AS q(hash, n)
         CROSS JOIN LATERAL (SELECT {} FROM api_keys WHERE hash = q.hash OFFSET 0) k",
        rows::KEY_COLS
    )
});

/// The key by its hash, and the run only if it is the key's account's and of the key's mode
/// (another account's run id finds nothing, as in `get_run`, and so does a live run's for a test
/// key, or the reverse: `Store::key_and_run`). Only the columns used: what authentication reads
/// of the key (`rows::api_key_for_auth`), and the run but its account, which is the key's.
static KEY_AND_RUN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {} FROM api_keys k
           LEFT JOIN runs r ON r.id = $2 AND r.account_id = k.account_id AND r.test = k.test
         WHERE k.hash = $1",
        rows::qualified(rows::KEY_AUTH_COLS, "k"),
        rows::qualified(rows::RUN_OF_KEY_COLS, "r"),
    )
});

/// The batch form of [`KEY_AND_RUN`]; each row ends with its request's position (from 1).
/// Each subquery is fenced (`OFFSET 0`) and the run's is asked for its id alone, its account
/// compared outside it: flattened, or given the account inside, the planner read the run
/// through `runs_by_account`, every run of the key's account for each request (a batch of 128
/// GETs of one account with 50,000 runs took 2.3 s in the review). So each request is one probe
/// of the unique index on `hash` and one of the unique index on `id`.
/// The key's mode is compared, not returned (`rows::api_key_for_auth` has no test flag).
static KEYS_AND_RUNS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, {}, q.n FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS q(hash, run_id, n)
         CROSS JOIN LATERAL (SELECT {}, test AS mode FROM api_keys WHERE hash = q.hash OFFSET 0) k
         LEFT JOIN LATERAL (SELECT {}, account_id AS owner FROM runs WHERE id = q.run_id OFFSET 0) r
           ON r.owner = k.account_id AND r.test = k.mode",
        rows::qualified(rows::KEY_AUTH_COLS, "k"),
        rows::qualified(rows::RUN_OF_KEY_COLS, "r"),
        rows::KEY_AUTH_COLS,
        rows::RUN_OF_KEY_COLS,
    )
});

/// The batched statements, for the test that checks their plans.
pub(crate) fn batch_statements() -> [&'static str; 2] {
    [KEYS_BY_HASH.as_str(), KEYS_AND_RUNS.as_str()]
}

async fn keys_by_hash(pool: Pool, batch: Vec<Pending<String, Option<ApiKey>>>) {
    let read = async {
        let client = pool.get().await?;
        if let [one] = batch.as_slice() {
            let stmt = client.prepare_cached(&KEY_BY_HASH).await?;
            let row = client.query_opt(&stmt, &[&one.req]).await?;
            return Ok(vec![row.as_ref().map(rows::api_key).transpose()]);
        }
        let hashes: Vec<&str> = batch.iter().map(|p| p.req.as_str()).collect();
        let stmt = client.prepare_cached(&KEYS_BY_HASH).await?;
        let found = client.query(&stmt, &[&hashes]).await?;
        by_position(&found, batch.len(), None, |row| {
            rows::api_key(row).map(Some)
        })
    }
    .await;
    answer(batch, read);
}

async fn keys_and_runs(pool: Pool, batch: Vec<Pending<(String, String), KeyAndRun>>) {
    let read = async {
        let client = pool.get().await?;
        if let [one] = batch.as_slice() {
            let stmt = client.prepare_cached(&KEY_AND_RUN).await?;
            let row = client.query_opt(&stmt, &[&one.req.0, &one.req.1]).await?;
            return Ok(vec![row.as_ref().map_or(Ok((None, None)), key_and_run)]);
        }
        let hashes: Vec<&str> = batch.iter().map(|p| p.req.0.as_str()).collect();
        let run_ids: Vec<&str> = batch.iter().map(|p| p.req.1.as_str()).collect();
        let stmt = client.prepare_cached(&KEYS_AND_RUNS).await?;
        let found = client.query(&stmt, &[&hashes, &run_ids]).await?;
        by_position(&found, batch.len(), (None, None), key_and_run)
    }
    .await;
    answer(batch, read);
}

/// The key and, when the row has one, the run, of a row of [`KEY_AND_RUN`] or [`KEYS_AND_RUNS`].
fn key_and_run(row: &tokio_postgres::Row) -> Result<KeyAndRun, Error> {
    let key = rows::api_key_for_auth(row)?;
    let at = rows::KEY_AUTH_COL_COUNT;
    let run_id: Option<&str> = row.try_get(at)?;
    let run = match run_id {
        Some(_) => Some(rows::run_of_account_at(row, at, &key.account_id)?),
        None => None,
    };
    Ok((Some(key), run))
}

/// Each request's outcome, for a batch of `len`: `missing` where no row answered it, else its
/// row read with `read`. A row answers the request at its last column, the request's position in
/// the arrays from 1.
fn by_position<Out: Clone>(
    found: &[tokio_postgres::Row],
    len: usize,
    missing: Out,
    read: impl Fn(&tokio_postgres::Row) -> Result<Out, Error>,
) -> Result<Vec<Result<Out, Error>>, Error> {
    let mut outs: Vec<Result<Out, Error>> = (0..len).map(|_| Ok(missing.clone())).collect();
    for row in found {
        let n: i64 = row.try_get(row.len() - 1)?;
        let at = usize::try_from(n - 1)
            .ok()
            .filter(|&at| at < len)
            .ok_or_else(|| Error::Data(format!("a batched read answered position {n} of {len}")))?;
        outs[at] = read(row);
    }
    Ok(outs)
}

/// Gives each request its own outcome, or, when the statement failed, the failure.
fn answer<Req, Out>(batch: Vec<Pending<Req, Out>>, read: Result<Vec<Result<Out, Error>>, Error>) {
    match read {
        Ok(outs) => {
            for (p, out) in batch.into_iter().zip(outs) {
                let _ = p.reply.send(out);
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.for_each_request()));
            }
        }
    }
}

//! `Store` for PostgreSQL: the queries and their transactions. Locks are always taken in the
//! order run → key → account, so two transactions never wait on each other in a cycle.

use crate::rows::{self, ACCOUNT_COLS, KEY_COLS, LEDGER_COLS, RUN_COLS, UPLOAD_COLS};
use crate::{CANCEL_CHANNEL, Error, PgStore, QUEUE_CHANNEL, RUN_CHANNEL};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use runbase_domain::account::{
    Account, ApiKey, KeySettings, KeyUpdate, LedgerEntry, LedgerKind, NewAccount,
    WELCOME_CREDIT_MEMO,
};
use runbase_domain::idempotency::{Claim, ClaimOutcome, NewClaim, Settle};
use runbase_domain::identities::PendingSignIn;
use runbase_domain::ids::{self, KeyHash};
use runbase_domain::money::Millicents;
use runbase_domain::run::{NewRun, Run, RunError, RunOutcome};
use runbase_domain::sessions::Session;
use runbase_domain::store::{
    CreateRunError, LAST_ADMIN, MODE_FILTERS, PaymentCredit, RunFilter, Store, StoreError,
    mode_filter_index,
};
use runbase_domain::time::Timestamp;
use runbase_domain::uploads::{Upload, UploadQuota, UploadUsage};
use std::sync::Arc;
use tokio_postgres::types::ToSql;

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// Any two numbers, the same in every node: makes "the first account is the administrator"
/// hold when two accounts are created at once on an empty install.
const FIRST_ACCOUNT_LOCK: i64 = 0x0072_756e_6261_7366;

/// One ledger row to append (its balance after is computed when it is written).
pub(crate) struct LedgerLine<'a> {
    pub account_id: &'a str,
    pub kind: LedgerKind,
    /// Signed: positive adds to the balance.
    pub amount: Millicents,
    pub run_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub memo: &'a str,
    pub granted_by: Option<&'a str>,
    pub now: Timestamp,
}

async fn query(
    tx: &Transaction<'_>,
    sql: &str,
    p: Params<'_>,
) -> Result<Vec<tokio_postgres::Row>, Error> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query(&stmt, p).await?)
}

async fn query_opt(
    tx: &Transaction<'_>,
    sql: &str,
    p: Params<'_>,
) -> Result<Option<tokio_postgres::Row>, Error> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&stmt, p).await?)
}

/// Where an account stands for uploads, in one statement (`$1`: the account).
const UPLOAD_USAGE: &str = "SELECT (SELECT bytes FROM upload_usage WHERE account_id = $1),
        (SELECT credited FROM accounts WHERE id = $1),
        (SELECT bytes FROM uncredited_upload_usage WHERE id = 1)";

fn rows_upload_usage(row: &tokio_postgres::Row) -> Result<UploadUsage, Error> {
    let account: Option<i64> = row.try_get(0)?;
    let credited: Option<bool> = row.try_get(1)?;
    let total: Option<i64> = row.try_get(2)?;
    let bytes = |b: i64| u64::try_from(b).unwrap_or(0);
    Ok(UploadUsage {
        account_bytes: account.map_or(0, bytes),
        credited: credited.unwrap_or(false),
        uncredited_total_bytes: total.map_or(0, bytes),
    })
}

async fn upload_usage(tx: &Transaction<'_>, account_id: &str) -> Result<UploadUsage, Error> {
    let row = tx.query_one(UPLOAD_USAGE, &[&account_id]).await?;
    rows_upload_usage(&row)
}

async fn execute(tx: &Transaction<'_>, sql: &str, p: Params<'_>) -> Result<u64, Error> {
    let stmt = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&stmt, p).await?)
}

/// Changes an account's balance by the line's amount (locking the account row) and appends the
/// line that explains it. A balance that would go below zero fails the `CHECK`.
pub(crate) async fn append_ledger(
    tx: &Transaction<'_>,
    line: LedgerLine<'_>,
) -> Result<LedgerEntry, Error> {
    let row = query_opt(
        tx,
        "UPDATE accounts SET balance_millicents = balance_millicents + $2 WHERE id = $1 RETURNING balance_millicents",
        &[&line.account_id, &line.amount.0],
    )
    .await?
    .ok_or_else(|| Error::Data(format!("no account {}", line.account_id)))?;
    insert_ledger_row(tx, line, row.try_get(0)?).await
}

/// `text` with any NUL replaced by U+FFFD: PostgreSQL's text cannot hold NUL, and a model's
/// error message quoting one must still be recorded (not fail the finish, and the run with it).
fn no_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// Appends a ledger row for a balance change already applied (`balance_after` is the result).
async fn insert_ledger_row(
    tx: &Transaction<'_>,
    line: LedgerLine<'_>,
    balance_after: i64,
) -> Result<LedgerEntry, Error> {
    let row = query_opt(
        tx,
        "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, key_id, memo, created_at, granted_by)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        &[
            &line.account_id,
            &line.kind.as_str(),
            &line.amount.0,
            &balance_after,
            &line.run_id,
            &line.key_id,
            &line.memo,
            &line.now.0,
            &line.granted_by,
        ],
    )
    .await?
    .ok_or_else(|| Error::Data("INSERT returned no row".into()))?;
    Ok(LedgerEntry {
        id: row.try_get(0)?,
        account_id: line.account_id.to_owned(),
        kind: line.kind,
        amount: line.amount,
        balance_after: Millicents(balance_after),
        run_id: line.run_id.map(str::to_owned),
        key_id: line.key_id.map(str::to_owned),
        memo: line.memo.to_owned(),
        granted_by: line.granted_by.map(str::to_owned),
        created_at: line.now,
    })
}

/// What a run was charged, read back when it ends badly.
struct Charged {
    cost: i64,
    account_id: String,
    key_id: String,
    model: String,
}

impl Charged {
    fn from_row(r: &tokio_postgres::Row) -> Result<Charged, Error> {
        Ok(Charged {
            cost: r.try_get(0)?,
            account_id: r.try_get(1)?,
            key_id: r.try_get(2)?,
            model: r.try_get(3)?,
        })
    }
}

/// Gives a run's cost back to the key's spend and to the account (a ledger entry). Called only
/// in the transaction that moved the run to `failed` or `canceled`, which happens once.
async fn refund(
    tx: &Transaction<'_>,
    run_id: &str,
    c: Charged,
    now: Timestamp,
) -> Result<(), Error> {
    if c.cost <= 0 {
        return Ok(());
    }
    // Key before account: the lock order of `create_run`.
    execute(
        tx,
        "UPDATE api_keys SET spent_millicents = spent_millicents - $2 WHERE id = $1",
        &[&c.key_id, &c.cost],
    )
    .await?;
    append_ledger(
        tx,
        LedgerLine {
            account_id: &c.account_id,
            kind: LedgerKind::RunRefund,
            amount: Millicents(c.cost),
            run_id: Some(run_id),
            key_id: Some(&c.key_id),
            memo: &c.model,
            granted_by: None,
            now,
        },
    )
    .await?;
    Ok(())
}

/// Announces the change on [`RUN_CHANNEL`] (`pg_notify` in `RETURNING`: once per changed row,
/// delivered at commit). The run is found by id and its status and attempt checked on the
/// locked row, as every statement given run ids does (see [`write_successes`]).
const SUCCEED: &str = "WITH l AS (SELECT id, status, attempts FROM runs WHERE id = $1 FOR UPDATE)
     UPDATE runs r SET status = 'succeeded', output = $2, completed_at = $3, locked_until = NULL
     FROM l WHERE r.id = l.id AND l.status = 'processing' AND l.attempts = $4
     RETURNING pg_notify('runbase_run', r.id)";

/// Ends a batch of runs as succeeded ([`write_successes`]). Their rows are locked in id order
/// first (see `renew_leases`), so the two never deadlock. Both the lock and the update read
/// `runs` only through `id = ANY($1)` on its unique index: whatever plan [`PLAN_SUCCESSES`]
/// keeps, it reads the batch's runs and no others. The changed runs are announced on
/// [`RUN_CHANNEL`] a chunk of ids at a time, comma-separated, rather than one `NOTIFY` per run:
/// each notification costs the server a queue entry and every listening node a message. A chunk
/// ends once its ids reach 7,000 bytes, so a payload holds at most 7,000 bytes and one id, under
/// PostgreSQL's limit of 8,000 while ids are under 1,000 bytes (they are 30: 226 a chunk).
const SUCCEED_MANY: &str = "WITH locked AS (SELECT r.id, r.status, r.attempts, u.attempt, u.output, u.at
                     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS u(id, output, at, attempt)
                     JOIN runs r ON r.id = u.id WHERE r.id = ANY($1) ORDER BY r.id FOR UPDATE OF r),
     done AS (UPDATE runs r SET status = 'succeeded', output = l.output, completed_at = l.at, locked_until = NULL
              FROM locked l WHERE r.id = l.id AND r.id = ANY($1) AND l.status = 'processing' AND l.attempts = l.attempt
              RETURNING r.id)
     SELECT pg_notify('runbase_run', string_agg(id, ','))
     FROM (SELECT id, (sum(octet_length(id) + 1) OVER (ROWS UNBOUNDED PRECEDING) - 1) / 7000 AS chunk
           FROM done) d
     GROUP BY chunk";

/// The batched successes' transaction, and how their statement is planned: once per connection
/// (a generic plan; planning it for each batch cost the server 5.6 us per run, BENCHMARKS.md).
/// A kept plan must not depend on what the statistics said when it was made. A plan made on a
/// `runs` analyzed while empty walked all of `runs_id_key` with the batch as a join filter
/// (eleventh session), one made on a young table scanned it, and either was kept until the next
/// `ANALYZE`. So `runs` is read only by `id = ANY($1)` (sequential and bitmap scans priced out),
/// and the joins to the batch are hash or merge joins (nested loops priced out), which read each
/// side once: no plan reads more than the batch's rows, whatever the estimates. JIT is off for
/// the transaction: a plan priced with a disabled node would cost more than `jit_above_cost`
/// and be compiled on every batch. What the plan needs is turned on too, so that a server or
/// role that turned hash and merge joins off cannot leave it only nested loops, which with
/// `id = ANY` compare every run of the batch with every other.
const PLAN_SUCCESSES: &str = "BEGIN; SET LOCAL plan_cache_mode = force_generic_plan;
     SET LOCAL enable_seqscan = off; SET LOCAL enable_bitmapscan = off;
     SET LOCAL enable_nestloop = off; SET LOCAL jit = off;
     SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on;
     SET LOCAL enable_indexscan = on; SET LOCAL enable_sort = on";

pub(crate) fn success_batch_statement() -> (&'static str, &'static str) {
    (PLAN_SUCCESSES, SUCCEED_MANY)
}

/// Claims up to `$1` pending runs, oldest first (`runs_queued`), for attempt `attempts + 1`
/// leased until `$3`. The claimed rows are found again by `id`, not by `seq`: no statement of
/// this build reads `runs` through its primary key on `seq`, so that a later release can drop it
/// (docs/DECISIONS.md, "The key on `seq`, dropped in two releases").
///
/// The ids are gathered into an array first (an InitPlan, run once) and the rows updated by
/// `id = ANY(...)`, found on `runs_id_key` (an index or bitmap scan) however many runs the
/// planner expects. With `id IN (subquery)`, the connection's generic plan guesses a tenth of
/// the table for `LIMIT $1`, and with statistics taken while most runs were pending (a backlog)
/// it joined that guess against a Seq Scan of all of `runs`: 40 ms per claim of 10 runs at
/// 200,000 runs (640 ms at a million, the review found), against about 1 ms. The subquery itself
/// still follows the statistics: a plan kept from a table of a few rows that has since grown
/// sorts it, as the old statement did, until the next ANALYZE (autovacuum's) replans it.
pub(crate) static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "UPDATE runs SET status = 'processing', started_at = $2, attempts = attempts + 1, locked_until = $3
         WHERE id = ANY(ARRAY(SELECT id FROM runs WHERE status = 'pending' ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED))
         RETURNING {RUN_COLS}, pg_notify('{RUN_CHANNEL}', id)"
    )
});

/// The id of account `$1`'s run `$3 + 1` places before run `$2` (or before its newest run), newest
/// first, counting the runs of the modes `modes`: each mode's range of `runs_by_account` (whose
/// entries hold `test` and `seq`) walked from the cursor (in [`mode_range`]'s order) and merged,
/// then the row read by its account, mode and `seq`: on the same index, or on the primary key on
/// `seq` while there is one (a unique lookup either way; see [`CLAIM`]).
fn window_end_sql(modes: &[bool]) -> String {
    let ranges = modes
        .iter()
        .map(|test| {
            format!(
                "(SELECT test, seq FROM runs WHERE account_id = $1 AND test = {test}
                   AND seq < COALESCE((SELECT seq FROM runs WHERE id = $2::text AND account_id = $1), 9223372036854775807)
                 ORDER BY test DESC, seq DESC LIMIT $3::bigint + 1)"
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let order = newest_first(modes, "w");
    format!(
        "SELECT r.id FROM (
             SELECT test, seq FROM ({ranges}) AS w ORDER BY {order} LIMIT 1 OFFSET $3) AS e
         JOIN runs r ON r.account_id = $1 AND r.test = e.test AND r.seq = e.seq"
    )
}

/// Newest first, for the rows of `table` that the ranges of `modes` found: by `seq` when two
/// ranges are merged (a sort of their few rows); in the ranges' own order for one, which needs no
/// sort ([`mode_range`]).
fn newest_first(modes: &[bool], table: &str) -> String {
    if modes.len() == 1 {
        format!("{table}.test DESC, {table}.seq DESC")
    } else {
        format!("{table}.seq DESC")
    }
}

/// [`window_end_sql`] for each mode filter, by [`mode_filter_index`].
pub(crate) static WINDOW_END: std::sync::LazyLock<[String; 3]> =
    std::sync::LazyLock::new(|| MODE_FILTERS.map(window_end_sql));

/// Successes waiting to be written: (run id, attempt, output JSON, completion time).
pub(crate) type Finishes = crate::batch::Batcher<(String, i64, String, i64), ()>;

/// The most successes one statement writes.
const MAX_FINISHES: usize = 256;

pub(crate) fn start_finishes(pool: deadpool_postgres::Pool) -> Finishes {
    crate::batch::Batcher::start(pool, MAX_FINISHES, |pool, batch| {
        Box::pin(write_successes(pool, batch))
    })
}

/// Ends a batch of `processing` runs as succeeded, in one statement. A run no longer
/// `processing` (canceled meanwhile), or started again since (a later attempt), is left alone,
/// as by [`SUCCEED`].
///
/// The rows are found through the unique index on `id`, one probe per run, and their status is
/// checked on the locked row (the latest version: `FOR UPDATE` waits for a concurrent change and
/// returns its result). Asked for `processing` rows, the planner walked `runs_leases` instead:
/// under load that index holds an entry for every run finished since the last vacuum, each a
/// heap visit, and the statement cost about 3.5 ms per batch, 100 µs of PostgreSQL time per run,
/// more than the create. Joining the arrays to the rows once, in the locking CTE, also keeps the
/// statement linear in the batch (a second join to `unnest` was a nested loop over both).
async fn write_successes(
    pool: deadpool_postgres::Pool,
    batch: Vec<crate::batch::Pending<(String, i64, String, i64), ()>>,
) {
    let written = async {
        if batch.len() == 1 {
            let (id, attempt, output, at) = &batch[0].req;
            let client = pool.get().await?;
            let stmt = client.prepare_cached(SUCCEED).await?;
            client.execute(&stmt, &[id, output, at, attempt]).await?;
            return Ok::<_, Error>(());
        }
        let (mut ids, mut attempts, mut outputs, mut times) = (vec![], vec![], vec![], vec![]);
        for p in &batch {
            ids.push(p.req.0.as_str());
            attempts.push(p.req.1);
            outputs.push(p.req.2.as_str());
            times.push(p.req.3);
        }
        let client = pool.get().await?;
        let stmt = client.prepare_cached(SUCCEED_MANY).await?;
        // One plan per connection, made under `PLAN_SUCCESSES` and sent in one round trip with
        // the transaction.
        let (began, written, committed) = futures_util::future::join3(
            client.batch_execute(PLAN_SUCCESSES),
            client.execute(&stmt, &[&ids, &outputs, &times, &attempts]),
            client.batch_execute("COMMIT"),
        )
        .await;
        began?;
        written?;
        committed?;
        Ok(())
    }
    .await;
    let reason = written.as_ref().err().map(ToString::to_string);
    for p in batch {
        let _ = p.reply.send(match &reason {
            None => Ok(()),
            Some(r) => Err(Error::Data(format!("writing successes: {r}"))),
        });
    }
}

/// Ends attempt `attempt` of a `processing` run; refunds a failure. A run in any other state, or
/// started again since (a later attempt), is left alone, so finishing twice (or after a cancel)
/// never refunds twice: the row lock taken first makes a racing cancel or finish see the new
/// status and match nothing.
async fn finish_tx(
    tx: &Transaction<'_>,
    run_id: &str,
    attempt: u32,
    outcome: &RunOutcome,
    now: Timestamp,
) -> Result<(), Error> {
    let attempt = i64::from(attempt);
    match outcome {
        RunOutcome::Succeeded { output } => {
            execute(
                tx,
                SUCCEED,
                &[&run_id, &output.to_string(), &now.0, &attempt],
            )
            .await?;
        }
        RunOutcome::Failed { error } => {
            let charged = query_opt(
                tx,
                // Found by id, the status checked on the locked row (see `write_successes`).
                "WITH l AS (SELECT id, status, attempts FROM runs WHERE id = $1 FOR UPDATE)
                 UPDATE runs r SET status = 'failed', error_message = $2, error_code = $3, completed_at = $4, locked_until = NULL
                 FROM l WHERE r.id = l.id AND l.status = 'processing' AND l.attempts = $5
                 RETURNING r.cost_millicents, r.account_id, r.key_id, r.model",
                &[&run_id, &no_nul(&error.message), &no_nul(&error.code), &now.0, &attempt],
            )
            .await?;
            if let Some(row) = charged {
                refund(tx, run_id, Charged::from_row(&row)?, now).await?;
                announce(tx, run_id).await?;
            }
        }
    }
    Ok(())
}

/// Announces a change of the run on [`RUN_CHANNEL`], delivered when `tx` commits.
async fn announce(tx: &Transaction<'_>, run_id: &str) -> Result<(), Error> {
    execute(tx, "SELECT pg_notify($1, $2)", &[&RUN_CHANNEL, &run_id]).await?;
    Ok(())
}

/// Admits a run: locks the key and re-checks it (usable, quota, spend limit: the domain's
/// rules), debits the balance in one conditional statement, and inserts the run (which queues
/// it) and its ledger row. `Ok(Err(_))` is a refusal; the caller rolls back.
async fn create_run_tx(
    tx: &Transaction<'_>,
    run: &NewRun,
) -> Result<Result<Run, CreateRunError>, Error> {
    let Some(key) = query_opt(
        tx,
        &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1 FOR UPDATE"),
        &[&run.key_id],
    )
    .await?
    else {
        return Ok(Err(CreateRunError::KeyNotUsable));
    };
    let key = rows::api_key(&key)?;
    // A fresh idempotency key is claimed before the checks (a repeat is answered from the key,
    // whatever the checks would now say), after the account's row is locked: the lock order of
    // a create batch (key, account, idempotency row), so the two never deadlock. Its row holds
    // the 201; a live row under the key refuses the run.
    if let Some((mark, fresh)) = run
        .idempotency
        .as_ref()
        .and_then(|m| m.fresh.as_ref().map(|f| (m, f)))
    {
        execute(
            tx,
            "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE",
            &[&run.account_id],
        )
        .await?;
        let answer = runbase_domain::idempotency::Answer::created(&run.pending());
        let status = i32::from(answer.status);
        let (accounts, keys) = (vec![run.account_id.clone()], vec![mark.key.clone()]);
        let claimed = query_opt(
            tx,
            crate::idempotency::CLAIM_MANY,
            &[
                &accounts,
                &keys,
                &vec![fresh.fingerprint.clone()],
                &vec![run.id.clone()],
                &vec![mark.claimed_at.0],
                &vec![status],
                &vec![answer.body],
                &fresh.expired_before.0,
            ],
        )
        .await?;
        if claimed.is_none() {
            return Ok(Err(CreateRunError::KeyTaken));
        }
    }
    if let Err(refused) = runbase_domain::admission::check_key(&key, run) {
        return Ok(Err(refused));
    }
    // The balance check and the debit in one statement: no row means the balance is too low.
    let Some(balance) = query_opt(
        tx,
        "UPDATE accounts SET balance_millicents = balance_millicents - $2
         WHERE id = $1 AND balance_millicents >= $2 RETURNING balance_millicents",
        &[&run.account_id, &run.price.0],
    )
    .await?
    else {
        return Ok(Err(CreateRunError::InsufficientBalance));
    };
    let balance_after: i64 = balance.try_get(0)?;
    // The remaining writes do not depend on each other: sent together, they share round trips.
    let input = run.input.to_string();
    let spend_params: [&(dyn ToSql + Sync); 3] = [&run.key_id, &run.price.0, &run.created_at.0];
    let webhook = run.webhook.as_ref().map(|w| w.url.clone());
    let webhook_events = run.webhook.as_ref().map_or(0, |w| w.events);
    let run_params: [&(dyn ToSql + Sync); 10] = [
        &run.id,
        &run.account_id,
        &run.key_id,
        &run.model,
        &input,
        &run.price.0,
        &run.created_at.0,
        &run.test,
        &webhook,
        &webhook_events,
    ];
    let spend = execute(
        tx,
        "UPDATE api_keys SET spent_millicents = spent_millicents + $2, runs_created = runs_created + 1,
             last_used_at = GREATEST(COALESCE(last_used_at, 0), $3)
         WHERE id = $1",
        &spend_params,
    );
    // Inserting a `pending` run is what enqueues it; the NOTIFY is delivered at commit.
    let insert = execute(
        tx,
        "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at, test, webhook, webhook_events)
         VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10)",
        &run_params,
    );
    let notify = execute(tx, "SELECT pg_notify($1, '')", &[&QUEUE_CHANNEL]);
    let charge = async {
        if run.price > Millicents::ZERO {
            insert_ledger_row(
                tx,
                LedgerLine {
                    account_id: &run.account_id,
                    kind: LedgerKind::RunCharge,
                    amount: -run.price,
                    run_id: Some(&run.id),
                    key_id: Some(&run.key_id),
                    memo: &run.model,
                    granted_by: None,
                    now: run.created_at,
                },
                balance_after,
            )
            .await?;
        }
        Ok::<_, Error>(())
    };
    let created = run.pending();
    // The 201 under the request's idempotency key, in the transaction that charges it.
    let answer = run
        .idempotency
        .as_ref()
        .filter(|mark| mark.fresh.is_none())
        .map(|mark| (mark, runbase_domain::idempotency::Answer::created(&created)));
    let record = async {
        if let Some((mark, answer)) = &answer {
            let status = i32::from(answer.status);
            execute(
                tx,
                crate::idempotency::RECORD,
                &[
                    &run.account_id,
                    &mark.key,
                    &mark.claimed_at.0,
                    &status,
                    &answer.body,
                ],
            )
            .await?;
        }
        Ok::<_, Error>(())
    };
    futures_util::future::try_join5(spend, insert, notify, charge, record).await?;
    Ok(Ok(created))
}

/// Runs whose lease ran out before `now`: back to the queue, or failed with a refund once they
/// were started `max_attempts` times (takings put back before a call do not count). `SKIP
/// LOCKED`: a run another node is reclaiming (or a worker is finishing) right now is left to
/// it, so each is reclaimed once.
async fn reclaim_tx(
    tx: &Transaction<'_>,
    max_attempts: u32,
    now: Timestamp,
) -> Result<(u64, u64), Error> {
    let expired = query(
        tx,
        "SELECT id, attempts, put_backs FROM runs WHERE status = 'processing' AND locked_until < $1
         ORDER BY seq LIMIT 1000 FOR UPDATE SKIP LOCKED",
        &[&now.0],
    )
    .await?;
    let (mut requeued, mut failed) = (0, 0);
    for row in expired {
        let (id, attempts): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        let put_backs: i32 = row.try_get(2)?;
        if let Some(error) = RunError::interrupted(attempts, put_backs.into(), max_attempts) {
            let attempt = attempts.clamp(0, i64::from(u32::MAX)) as u32;
            finish_tx(tx, &id, attempt, &RunOutcome::Failed { error }, now).await?;
            failed += 1;
        } else {
            execute(
                tx,
                "UPDATE runs SET status = 'pending', started_at = NULL, locked_until = NULL WHERE id = $1",
                &[&id],
            )
            .await?;
            announce(tx, &id).await?;
            requeued += 1;
        }
    }
    if requeued > 0 {
        execute(tx, "SELECT pg_notify($1, '')", &[&QUEUE_CHANNEL]).await?;
    }
    Ok((requeued, failed))
}

/// A future that runs `$body` (a future using the transaction `$tx`) and commits, unless it
/// fails: a transaction dropped without commit is rolled back.
macro_rules! in_tx {
    ($store:expr, |$tx:ident| $body:expr) => {{
        async {
            let mut client = $store.pool.get().await?;
            let transaction = client.transaction().await?;
            let value = {
                let $tx = &transaction;
                $body.await?
            };
            transaction.commit().await?;
            Ok::<_, Error>(value)
        }
    }};
}

impl PgStore {
    /// One statement on a pooled connection (autocommit).
    pub(crate) async fn rows(
        &self,
        sql: &str,
        p: Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query(&stmt, p).await?)
    }

    /// As [`Self::rows`], planned for its parameters every time (`force_custom_plan`, in a
    /// read-only transaction sent in the same round trip): for a statement whose best plan
    /// depends on the account, where the one generic plan PostgreSQL keeps after a few
    /// executions can be wrong for every other account. (A window of a large account's runs is
    /// found fastest by walking the primary key; kept as the generic plan, that walk read the
    /// whole table for a small account: found by the hostile review.)
    pub(crate) async fn rows_planned_each_time(
        &self,
        sql: &str,
        p: Params<'_>,
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        // Sent together; a failed query aborts the transaction, which the COMMIT then ends.
        let (began, rows, ended) = futures_util::future::join3(
            client.batch_execute("BEGIN READ ONLY; SET LOCAL plan_cache_mode = force_custom_plan"),
            client.query(&stmt, p),
            client.batch_execute("COMMIT"),
        )
        .await;
        began?;
        let rows = rows?;
        ended?;
        Ok(rows)
    }

    pub(crate) async fn row(
        &self,
        sql: &str,
        p: Params<'_>,
    ) -> Result<Option<tokio_postgres::Row>, Error> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.query_opt(&stmt, p).await?)
    }

    pub(crate) async fn exec(&self, sql: &str, p: Params<'_>) -> Result<u64, Error> {
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(sql).await?;
        Ok(client.execute(&stmt, p).await?)
    }

    async fn key(&self, id: &str) -> Result<Option<ApiKey>, Error> {
        self.row(
            &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(rows::api_key)
        .transpose()
    }
}

/// Creates one run in its own transaction (a batch that failed is retried this way, run by run).
///
/// With `unsettled`, the batch's outcome was unknown (a connection lost once its `COMMIT` was
/// sent), and it may have committed after its caller looked for its runs. The batch held the
/// run's key locked until it ended, so once this transaction has the key, the run is found if
/// the batch made it (its id and creation time), and answered as created: never refused (its
/// own charge may be what a new check would refuse) and never made twice (a refusal of a
/// remembered key's run is made again by the HTTP create). A batch the server rolled back made
/// nothing: a run of the same id found then is another request's, and the insert refuses it.
pub(crate) async fn create_run_alone(
    pool: &deadpool_postgres::Pool,
    run: &NewRun,
    unsettled: bool,
) -> Result<Result<Run, CreateRunError>, Error> {
    // After a batch whose outcome is unknown, no connection means the outcome is still unknown:
    // a 500 ("may have happened"), not the 503 ("nothing was done") of a pool error.
    let mut client = pool.get().await.map_err(|e| match unsettled {
        true => Error::Data(format!(
            "the create batch failed and its outcome could not be read: {}",
            Error::from(e)
        )),
        false => e.into(),
    })?;
    let tx = client.transaction().await?;
    // As bounded as a batch (`create_batch::BEGIN`).
    tx.batch_execute(
        "SET LOCAL lock_timeout = '3s'; SET LOCAL statement_timeout = '10s';
         SET LOCAL idle_in_transaction_session_timeout = '10s'",
    )
    .await?;
    if unsettled {
        // Two statements: the second's snapshot is taken once the first has the lock.
        execute(
            &tx,
            "SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE",
            &[&run.key_id],
        )
        .await?;
        let made = query_opt(
            &tx,
            "SELECT 1 FROM runs WHERE id = $1 AND created_at = $2",
            &[&run.id, &run.created_at.0],
        )
        .await?;
        if made.is_some() {
            // Made already: whatever becomes of this transaction (dropped, it is rolled back).
            drop(tx.rollback().await);
            return Ok(Ok(run.pending()));
        }
    }
    let created = create_run_tx(&tx, run).await?;
    if created.is_ok() {
        tx.commit().await?;
    } else {
        tx.rollback().await?;
    }
    Ok(created)
}

/// The filters of a listing: `$2` a status, `$3` a model, each compared only when given.
const LIST_FILTERS: &str =
    "($2::text IS NULL OR status = $2::text) AND ($3::text IS NULL OR model = $3::text)";

/// Account `$1`'s runs of one mode (`test`) after the run `$4` (or from its newest), newest first,
/// at most `limit`, that pass `filters`, their columns `cols`: one range of `runs_by_account`,
/// walked backwards.
///
/// Ordered by `test DESC, seq DESC`, not by `seq DESC` alone, though `test` is one value here:
/// ordered by `seq` alone, the planner may walk the primary key on `seq` from the newest run,
/// filtering by account, expecting the account's runs soon; an account whose runs are all older
/// than other accounts' then costs a walk of all those (450,000 rows, 150 ms, in the review).
/// `test = false` is no equality the planner reasons with (it is `NOT test`), so `test` stays in
/// the order asked, which only `runs_by_account` gives.
fn mode_range(test: bool, cols: &str, filters: &str, limit: &str) -> String {
    format!(
        "(SELECT {cols} FROM runs WHERE account_id = $1 AND test = {test} AND {filters}
            AND seq < COALESCE((SELECT seq FROM runs WHERE id = $4::text AND account_id = $1), 9223372036854775807)
          ORDER BY test DESC, seq DESC LIMIT {limit})"
    )
}

/// The listing of account `$1`'s runs that pass the filters (`$2`, `$3`), newest first, after the
/// run `$4`, at most `$5`: of the modes `modes` (both, merged, for the dashboard; one for an API
/// key), and, `within` a window, among the next `$6` runs of those modes only. Each mode is a
/// range of the index, so no listing reads more of the account's runs than its page, or than
/// its window: a window is found on the index alone (`test` and `seq`, merged), then its rows are
/// read in order, each by account, mode and `seq` (a fenced lateral read: joined, the planner
/// chose to read all the account's runs for a filter it expected few to pass), until the page is
/// full.
fn list_runs_sql(modes: &[bool], within: bool) -> String {
    let ranges = |cols, filters, limit| {
        modes
            .iter()
            .map(|&test| mode_range(test, cols, filters, limit))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    if within {
        format!(
            "SELECT {} FROM (
                 SELECT test, seq FROM ({}) AS w ORDER BY {} LIMIT $6) AS e
             CROSS JOIN LATERAL (
                 SELECT * FROM runs WHERE account_id = $1 AND test = e.test AND seq = e.seq OFFSET 0) AS r
             WHERE ($2::text IS NULL OR r.status = $2::text) AND ($3::text IS NULL OR r.model = $3::text)
             ORDER BY {} LIMIT $5",
            rows::qualified(RUN_COLS, "r"),
            ranges("test, seq", "TRUE", "$6"),
            newest_first(modes, "w"),
            newest_first(modes, "e"),
        )
    } else {
        format!(
            "SELECT {RUN_COLS} FROM ({}) AS listed ORDER BY {} LIMIT $5",
            ranges("*", LIST_FILTERS, "$5"),
            newest_first(modes, "listed"),
        )
    }
}

/// [`list_runs_sql`] for each mode filter (`None`: both) and with a window or without one.
static LIST_RUNS: std::sync::LazyLock<[[String; 2]; 3]> = std::sync::LazyLock::new(|| {
    MODE_FILTERS.map(|modes| [false, true].map(|w| list_runs_sql(modes, w)))
});

/// Each statement of [`LIST_RUNS`] and [`WINDOW_END`] and its number of parameters.
pub(crate) fn run_listing_statements() -> Vec<(&'static str, usize)> {
    LIST_RUNS
        .iter()
        .flat_map(|by_window| [(by_window[0].as_str(), 5), (by_window[1].as_str(), 6)])
        .chain(WINDOW_END.iter().map(|sql| (sql.as_str(), 3)))
        .collect()
}

/// The statement of [`LIST_RUNS`] for this filter.
fn list_runs_statement(filter: &RunFilter) -> &'static str {
    &LIST_RUNS[mode_filter_index(filter.test)][usize::from(filter.within.is_some())]
}

#[async_trait]
impl Store for PgStore {
    async fn create_account_with(
        &self,
        new: NewAccount,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        let id = ids::new_account_id();
        let created = in_tx!(self, |tx| {
            Box::pin(async move {
                // The first account of an empty install is its administrator.
                execute(
                    tx,
                    "SELECT pg_advisory_xact_lock($1)",
                    &[&FIRST_ACCOUNT_LOCK],
                )
                .await?;
                let row = query_opt(
                    tx,
                    &format!(
                        "INSERT INTO accounts (id, email, created_at, password_hash, admin)
                             VALUES ($1, $2, $3, $4, $5 OR NOT EXISTS (SELECT 1 FROM accounts))
                             RETURNING {ACCOUNT_COLS}"
                    ),
                    &[&id, &new.email, &now.0, &new.password_hash, &new.admin],
                )
                .await?
                .ok_or_else(|| Error::Data("INSERT returned no row".into()))?;
                let mut account = rows::account(&row)?;
                if new.signup_credit > Millicents::ZERO {
                    let line = append_ledger(
                        tx,
                        LedgerLine {
                            account_id: &account.id,
                            kind: LedgerKind::Topup,
                            amount: new.signup_credit,
                            run_id: None,
                            key_id: None,
                            memo: WELCOME_CREDIT_MEMO,
                            granted_by: None,
                            now,
                        },
                    )
                    .await?;
                    account.balance = line.balance_after;
                }
                Ok::<_, Error>(account)
            })
        })
        .await;
        match created {
            Ok(a) => Ok(a),
            Err(e) if e.is_unique_violation() => Err(StoreError::Conflict(
                "an account with this email already exists".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError> {
        if email.contains('\0') {
            // No stored email has one (PostgreSQL text cannot hold it, and would answer an error).
            return Ok(None);
        }
        let row = self
            .row(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE email = $1"),
                &[&email],
            )
            .await?;
        Ok(row.as_ref().map(rows::account).transpose()?)
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts ORDER BY created_at, id"),
                &[],
            )
            .await?;
        Ok(rows::all(&rows, rows::account)?)
    }

    async fn set_admin(&self, account_id: &str, admin: bool) -> Result<Account, StoreError> {
        // Taking the role away locks every administrator's row first (in id order), so two
        // concurrent removals cannot each count the other as the one who stays.
        let row = self
            .row(
                &format!(
                    "WITH admins AS (SELECT id FROM accounts WHERE admin ORDER BY id FOR UPDATE) \
                     UPDATE accounts SET admin = $2 WHERE id = $1 \
                     AND ($2 OR NOT admin OR EXISTS (SELECT 1 FROM admins WHERE id <> $1)) \
                     RETURNING {ACCOUNT_COLS}"
                ),
                &[&account_id, &admin],
            )
            .await?;
        if let Some(r) = row {
            return Ok(rows::account(&r)?);
        }
        let exists = self
            .row("SELECT 1 FROM accounts WHERE id = $1", &[&account_id])
            .await?
            .is_some();
        if exists {
            Err(StoreError::Conflict(LAST_ADMIN.into()))
        } else {
            Err(StoreError::NotFound(format!("no account {account_id}")))
        }
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        let row = self
            .row(
                &format!("SELECT {ACCOUNT_COLS} FROM accounts WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(rows::account).transpose()?)
    }

    async fn add_credits(
        &self,
        account_id: &str,
        amount: Millicents,
        memo: &str,
        granted_by: Option<&str>,
        now: Timestamp,
    ) -> Result<LedgerEntry, StoreError> {
        let entry = in_tx!(self, |tx| {
            Box::pin(async move {
                // A balance past `Millicents::MAX_BALANCE` could not be shown exactly on the
                // wire: the conditional update refuses it under the row's lock, in the same
                // statement that adds (no check-then-write). Written as `balance <= MAX - amount`
                // so no sum can overflow.
                let Some(row) = query_opt(
                    tx,
                    "UPDATE accounts SET balance_millicents = balance_millicents + $2,
                                         credited = credited OR $2 > 0
                     WHERE id = $1 AND balance_millicents <= $3::bigint - $2::bigint RETURNING balance_millicents",
                    &[&account_id, &amount.0, &Millicents::MAX_BALANCE.0],
                )
                .await?
                else {
                    if query_opt(tx, "SELECT 1 FROM accounts WHERE id = $1", &[&account_id])
                        .await?
                        .is_none()
                    {
                        return Err(Error::Data(format!("no account {account_id}")));
                    }
                    return Ok(None);
                };
                let line = LedgerLine {
                    account_id,
                    kind: LedgerKind::Topup,
                    amount,
                    run_id: None,
                    key_id: None,
                    memo,
                    granted_by,
                    now,
                };
                insert_ledger_row(tx, line, row.try_get(0)?).await.map(Some)
            })
        })
        .await?;
        entry.ok_or_else(|| {
            StoreError::Conflict(
                "the balance would pass the largest amount Runbase can hold".to_owned(),
            )
        })
    }

    async fn run_ledger(
        &self,
        account_id: &str,
        run_id: &str,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows = self
            .rows(
                // Only charges and refunds name a run: each kind's unique partial index finds
                // its line (migration 0008; a bitmap OR of the two).
                &format!(
                    "SELECT {LEDGER_COLS} FROM ledger
                     WHERE ((run_id = $1 AND kind = 'run_charge') OR (run_id = $1 AND kind = 'run_refund'))
                       AND account_id = $2
                     ORDER BY id"
                ),
                &[&run_id, &account_id],
            )
            .await?;
        Ok(rows::all(&rows, rows::ledger)?)
    }

    async fn password_hash(&self, account_id: &str) -> Result<Option<String>, StoreError> {
        let row = self
            .row(
                "SELECT password_hash FROM accounts WHERE id = $1",
                &[&account_id],
            )
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<_, Option<String>>(0).map_err(Error::from)?,
            None => None,
        })
    }

    async fn set_password_hash(
        &self,
        account_id: &str,
        phc: &str,
        keep_session: Option<&str>,
    ) -> Result<(), StoreError> {
        Ok(
            in_tx!(self, |tx| Box::pin(crate::dashboard::set_password_tx(
                tx,
                account_id,
                phc,
                keep_session
            )))
            .await?,
        )
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        Ok(
            in_tx!(self, |tx| Box::pin(crate::dashboard::create_session_tx(
                tx, session
            )))
            .await?,
        )
    }

    async fn session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(Session, Account)>, StoreError> {
        Ok(crate::dashboard::session(self, token_hash, now).await?)
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        self.exec("DELETE FROM sessions WHERE token_hash = $1", &[&token_hash])
            .await?;
        Ok(())
    }

    async fn account_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<Account>, StoreError> {
        let row = self
            .row(
                &format!(
                    "SELECT {ACCOUNT_COLS} FROM accounts WHERE id =
                       (SELECT account_id FROM oidc_identities WHERE issuer = $1 AND subject = $2)"
                ),
                &[&issuer, &subject],
            )
            .await?;
        Ok(row.as_ref().map(rows::account).transpose()?)
    }

    async fn put_pending_sign_in(
        &self,
        p: &PendingSignIn,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.exec("DELETE FROM oidc_pending WHERE expires_at <= $1", &[&now.0])
            .await?;
        self.exec(
            "INSERT INTO oidc_pending
               (state_hash, provider, binding_hash, verifier, nonce, next_path, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &p.state_hash,
                &p.provider,
                &p.binding_hash,
                &p.verifier,
                &p.nonce,
                &p.next,
                &p.expires_at.0,
            ],
        )
        .await?;
        Ok(())
    }

    async fn take_pending_sign_in(
        &self,
        state_hash: &str,
    ) -> Result<Option<PendingSignIn>, StoreError> {
        let row = self
            .row(
                "DELETE FROM oidc_pending WHERE state_hash = $1
                 RETURNING state_hash, provider, binding_hash, verifier, nonce, next_path, expires_at",
                &[&state_hash],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        let get = |r: &tokio_postgres::Row| -> Result<PendingSignIn, tokio_postgres::Error> {
            Ok(PendingSignIn {
                state_hash: r.try_get(0)?,
                provider: r.try_get(1)?,
                binding_hash: r.try_get(2)?,
                verifier: r.try_get(3)?,
                nonce: r.try_get(4)?,
                next: r.try_get(5)?,
                expires_at: Timestamp(r.try_get(6)?),
            })
        };
        Ok(Some(get(&r).map_err(crate::Error::from)?))
    }

    async fn link_identity(
        &self,
        issuer: &str,
        subject: &str,
        account_id: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let linked = self
            .exec(
                "INSERT INTO oidc_identities (issuer, subject, account_id, created_at)
                 VALUES ($1, $2, $3, $4)",
                &[&issuer, &subject, &account_id, &now.0],
            )
            .await;
        match linked {
            Ok(_) => Ok(()),
            Err(e) if e.is_unique_violation() => Err(StoreError::Conflict(
                "this identity is already linked to an account".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    async fn create_payment(
        &self,
        provider: &str,
        checkout_id: &str,
        account_id: &str,
        amount: Millicents,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.exec(
            "INSERT INTO payments (provider, checkout_id, account_id, amount_millicents, status, created_at)
             VALUES ($1, $2, $3, $4, 'pending', $5)",
            &[&provider, &checkout_id, &account_id, &amount.0, &now.0],
        )
        .await?;
        Ok(())
    }

    async fn complete_payment(
        &self,
        provider: &str,
        event_id: &str,
        checkout_id: &str,
        account_id: Option<&str>,
        amount: Millicents,
        now: Timestamp,
    ) -> Result<PaymentCredit, StoreError> {
        let p = crate::dashboard::Confirmation {
            provider,
            event_id,
            checkout_id,
            account_id,
            amount,
            now,
        };
        Ok(
            in_tx!(self, |tx| Box::pin(crate::dashboard::complete_payment_tx(
                tx, &p
            )))
            .await?,
        )
    }

    async fn ledger(
        &self,
        account_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {LEDGER_COLS} FROM ledger WHERE account_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3"),
                &[&account_id, &before.unwrap_or(i64::MAX), &i64::from(limit)],
            )
            .await?;
        Ok(rows::all(&rows, rows::ledger)?)
    }

    async fn create_key(
        &self,
        account_id: &str,
        id: &str,
        hash: &KeyHash,
        prefix: &str,
        settings: &KeySettings,
        now: Timestamp,
    ) -> Result<ApiKey, StoreError> {
        let ips = serde_json::to_string(&settings.allow_ips.to_strings())
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let s = settings;
        let row = self
            .row(
                &format!(
                    "INSERT INTO api_keys (id, account_id, name, prefix, hash, test, expires_at, allow_ips,
                         spend_limit_millicents, quota, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                     RETURNING {KEY_COLS}"
                ),
                &[
                    &id,
                    &account_id,
                    &s.name.clone().unwrap_or_default(),
                    &prefix,
                    &hash.0,
                    &s.test,
                    &s.expires_at.map(|t| t.0),
                    &ips,
                    &s.spend_limit.map(|m| m.0),
                    &s.quota.map(|q| q.min(i64::MAX as u64) as i64),
                    &now.0,
                ],
            )
            .await?
            .ok_or_else(|| StoreError::Backend("INSERT returned no row".into()))?;
        Ok(rows::api_key(&row)?)
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        // Batched with the other requests' (`key_reads`).
        Ok(self.keys_by_hash.submit(hash.0.clone()).await?)
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(self.key(id).await?)
    }

    async fn list_keys(&self, account_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        let rows = self
            .rows(
                &format!("SELECT {KEY_COLS} FROM api_keys WHERE account_id = $1 AND deleted_at IS NULL ORDER BY created_at DESC, id"),
                &[&account_id],
            )
            .await?;
        Ok(rows::all(&rows, rows::api_key)?)
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<ApiKey, StoreError> {
        let ips = match &update.allow_ips {
            Some(l) => Some(
                serde_json::to_string(&l.to_strings())
                    .map_err(|e| StoreError::Backend(e.to_string()))?,
            ),
            None => None,
        };
        let u = update;
        let updated = in_tx!(self, |tx| {
            Box::pin(async move {
                let exists = query_opt(
                    tx,
                    "SELECT 1 FROM api_keys WHERE id = $1 AND deleted_at IS NULL FOR UPDATE",
                    &[&id],
                )
                .await?;
                if exists.is_none() {
                    return Ok(None);
                }
                if let Some(name) = &u.name {
                    execute(
                        tx,
                        "UPDATE api_keys SET name = $2 WHERE id = $1",
                        &[&id, name],
                    )
                    .await?;
                }
                if let Some(limit) = u.spend_limit {
                    execute(
                        tx,
                        "UPDATE api_keys SET spend_limit_millicents = $2 WHERE id = $1",
                        &[&id, &limit.map(|m| m.0)],
                    )
                    .await?;
                }
                if let Some(ips) = &ips {
                    execute(
                        tx,
                        "UPDATE api_keys SET allow_ips = $2 WHERE id = $1",
                        &[&id, ips],
                    )
                    .await?;
                }
                if let Some(exp) = u.expires_at {
                    execute(
                        tx,
                        "UPDATE api_keys SET expires_at = $2 WHERE id = $1",
                        &[&id, &exp.map(|t| t.0)],
                    )
                    .await?;
                }
                if let Some(q) = u.quota {
                    execute(
                        tx,
                        "UPDATE api_keys SET quota = $2 WHERE id = $1",
                        &[&id, &q.map(|q| q.min(i64::MAX as u64) as i64)],
                    )
                    .await?;
                }
                if let Some(d) = u.disabled {
                    execute(
                        tx,
                        "UPDATE api_keys SET disabled = $2 WHERE id = $1",
                        &[&id, &d],
                    )
                    .await?;
                }
                query_opt(
                    tx,
                    &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"),
                    &[&id],
                )
                .await?
                .as_ref()
                .map(rows::api_key)
                .transpose()
            })
        })
        .await?;
        updated.ok_or_else(|| StoreError::NotFound("no such key".into()))
    }

    async fn touch_key(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        // Skips the write (and the row lock) when a later use is already recorded.
        self.exec(
            "UPDATE api_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $2)",
            &[&id, &now.0],
        )
        .await?;
        Ok(())
    }

    async fn delete_key(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        let n = self
            .exec(
                "UPDATE api_keys SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
                &[&id, &now.0],
            )
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound("no such key".into()));
        }
        Ok(())
    }

    async fn create_upload(
        &self,
        upload: &Upload,
        quota: &UploadQuota,
    ) -> Result<(), runbase_domain::store::CreateUploadError> {
        let size = i64::try_from(upload.size_bytes)
            .map_err(|_| StoreError::Backend("upload size out of range".into()))?;
        let limit = |q: Option<u64>| q.map(|q| i64::try_from(q).unwrap_or(i64::MAX));
        let quota = *quota;
        let refused = in_tx!(self, |tx| {
            Box::pin(async move {
                let credited: bool = query_opt(
                    tx,
                    "SELECT credited FROM accounts WHERE id = $1",
                    &[&upload.account_id],
                )
                .await?
                .map(|r| r.try_get(0))
                .transpose()?
                .unwrap_or(false);
                // Each usage row's lock (taken by its conditional update, and waited for by a
                // concurrent upload) makes its check and its addition one step: the `WHERE`s
                // see the latest committed usage. No row back: over that quota. The shared
                // row first, then the account's (as `delete_upload`), so no two transactions
                // wait for each other.
                let shared = limit(quota.uncredited_total_bytes);
                if !credited
                    && query_opt(
                        tx,
                        "UPDATE uncredited_upload_usage SET bytes = bytes + $1
                         WHERE id = 1 AND ($2::BIGINT IS NULL OR bytes <= $2::BIGINT - $1)
                         RETURNING bytes",
                        &[&size, &shared],
                    )
                    .await?
                    .is_none()
                {
                    return Ok::<_, Error>(Some(upload_usage(tx, &upload.account_id).await?));
                }
                let own = limit(quota.for_account(credited));
                let added = query_opt(
                    tx,
                    "INSERT INTO upload_usage (account_id, bytes)
                       SELECT $1, $2 WHERE $3::BIGINT IS NULL OR $2 <= $3
                     ON CONFLICT (account_id) DO UPDATE SET bytes = upload_usage.bytes + EXCLUDED.bytes
                       WHERE $3::BIGINT IS NULL OR upload_usage.bytes <= $3::BIGINT - EXCLUDED.bytes
                     RETURNING bytes",
                    &[&upload.account_id, &size, &own],
                )
                .await?;
                if added.is_none() {
                    if !credited {
                        execute(
                            tx,
                            "UPDATE uncredited_upload_usage SET bytes = bytes - $1 WHERE id = 1",
                            &[&size],
                        )
                        .await?;
                    }
                    return Ok(Some(upload_usage(tx, &upload.account_id).await?));
                }
                execute(
                    tx,
                    "INSERT INTO uploads (id, account_id, path, content_type, size_bytes, created_at, uncredited)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    &[
                        &upload.id,
                        &upload.account_id,
                        &upload.path,
                        &upload.content_type,
                        &size,
                        &upload.created_at.0,
                        &!credited,
                    ],
                )
                .await?;
                Ok(None)
            })
        })
        .await
        .map_err(StoreError::from)?;
        match refused {
            None => Ok(()),
            Some(usage) => Err(runbase_domain::store::CreateUploadError::OverQuota { usage }),
        }
    }

    async fn webhook_secrets(
        &self,
        account_id: &str,
        fresh: &str,
        now: Timestamp,
    ) -> Result<runbase_domain::webhooks::Secrets, StoreError> {
        Ok(self.webhook_secrets_of(account_id, fresh, now).await?)
    }

    async fn rotate_webhook_secret(
        &self,
        account_id: &str,
        fresh: &str,
        now: Timestamp,
        previous_until: Timestamp,
    ) -> Result<runbase_domain::webhooks::Secrets, StoreError> {
        Ok(self
            .rotate_secret(account_id, fresh, now, previous_until)
            .await?)
    }

    async fn claim_deliveries(
        &self,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
        skip_accounts: &[String],
    ) -> Result<Vec<runbase_domain::webhooks::DueDelivery>, StoreError> {
        Ok(self
            .claim_due_deliveries(max, now, lease_until, skip_accounts)
            .await?)
    }

    async fn record_delivery_attempt(
        &self,
        result: &runbase_domain::webhooks::AttemptResult,
    ) -> Result<(), StoreError> {
        Ok(self.record_attempt(result).await?)
    }

    async fn run_deliveries(
        &self,
        account_id: &str,
        run_id: &str,
    ) -> Result<Option<Vec<runbase_domain::webhooks::Delivery>>, StoreError> {
        Ok(self.deliveries_of_run(account_id, run_id).await?)
    }

    async fn sweep_webhook_deliveries(
        &self,
        before: Timestamp,
        max: u32,
    ) -> Result<u64, StoreError> {
        Ok(self.sweep_deliveries(before, max).await?)
    }

    async fn redeliver(
        &self,
        account_id: &str,
        run_id: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.queue_redelivery(account_id, run_id, id, now)
            .await?
            .ok_or_else(|| StoreError::NotFound("run not found".into()))
    }

    async fn queue_depth(&self) -> Result<(u64, u64), StoreError> {
        // Each count walks its partial index (`runs_queued`, `runs_leases`).
        let row = self
            .row(
                "SELECT (SELECT count(*) FROM runs WHERE status = 'pending'),
                        (SELECT count(*) FROM runs WHERE status = 'processing')",
                &[],
            )
            .await?
            .ok_or_else(|| StoreError::Backend("count returned no row".into()))?;
        let (pending, processing): (i64, i64) = (
            row.try_get(0).map_err(Error::from)?,
            row.try_get(1).map_err(Error::from)?,
        );
        Ok((pending.max(0) as u64, processing.max(0) as u64))
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        let row = self
            .row(
                &format!("SELECT {UPLOAD_COLS} FROM uploads WHERE id = $1"),
                &[&id],
            )
            .await?;
        Ok(row.as_ref().map(rows::upload).transpose()?)
    }

    async fn upload_usage(&self, account_id: &str) -> Result<UploadUsage, StoreError> {
        let row = self
            .row(UPLOAD_USAGE, &[&account_id])
            .await?
            .ok_or_else(|| StoreError::Backend("usage returned no row".into()))?;
        Ok(rows_upload_usage(&row)?)
    }

    async fn claim_expired_uploads(
        &self,
        before: Timestamp,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<Upload>, StoreError> {
        // `SKIP LOCKED`: nodes sweeping at once take different uploads, and one that another
        // node has just claimed is seen claimed (its `deleting_until` re-checked after the lock).
        let rows = self
            .rows(
                &format!(
                    "UPDATE uploads SET deleting_until = $4
                     WHERE id IN (SELECT id FROM uploads
                                  WHERE created_at < $1 AND (deleting_until IS NULL OR deleting_until < $3)
                                  ORDER BY created_at LIMIT $2
                                  FOR UPDATE SKIP LOCKED)
                     RETURNING {UPLOAD_COLS}"
                ),
                &[&before.0, &i64::from(max), &now.0, &lease_until.0],
            )
            .await?;
        let mut uploads = rows
            .iter()
            .map(rows::upload)
            .collect::<Result<Vec<_>, _>>()?;
        uploads.sort_by_key(|u| u.created_at);
        Ok(uploads)
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        let deleted = in_tx!(self, |tx| {
            Box::pin(async move {
                let removed = query_opt(
                    tx,
                    "DELETE FROM uploads WHERE id = $1 RETURNING account_id, size_bytes, uncredited",
                    &[&id],
                )
                .await?;
                let Some(row) = removed else {
                    return Ok::<_, Error>(false);
                };
                let account_id: String = row.try_get(0)?;
                let size: i64 = row.try_get(1)?;
                let uncredited: bool = row.try_get(2)?;
                // The shared row before the account's, as `create_upload` takes them.
                if uncredited {
                    execute(
                        tx,
                        "UPDATE uncredited_upload_usage SET bytes = bytes - $1 WHERE id = 1",
                        &[&size],
                    )
                    .await?;
                }
                execute(
                    tx,
                    "UPDATE upload_usage SET bytes = bytes - $2 WHERE account_id = $1",
                    &[&account_id, &size],
                )
                .await?;
                Ok(true)
            })
        })
        .await?;
        Ok(deleted)
    }

    async fn idempotency_record(
        &self,
        account_id: &str,
        key: &str,
        expired_before: Timestamp,
    ) -> Result<Option<runbase_domain::idempotency::Record>, StoreError> {
        Ok(self.read_record(account_id, key, expired_before.0).await?)
    }

    async fn claim_idempotency_key(&self, claim: &NewClaim) -> Result<ClaimOutcome, StoreError> {
        Ok(self.claim_key(claim).await?)
    }

    async fn settle_idempotency_key(&self, claim: &Claim, how: &Settle) -> Result<(), StoreError> {
        Ok(self.settle_key(claim, how).await?)
    }

    async fn sweep_idempotency_keys(
        &self,
        expired_before: Timestamp,
        max: u32,
    ) -> Result<u64, StoreError> {
        Ok(self.sweep_keys(expired_before.0, max).await?)
    }

    fn claims_keys_in_creates(&self) -> bool {
        // In the create batch's first round trip (`create_batch.rs`).
        true
    }

    fn hand_off_to(&self, handoff: runbase_domain::store::Handoff) {
        // The first worker of this process; a second one (tests) only claims.
        let _ = self.handoff.set(handoff);
    }

    async fn create_run(&self, run: NewRun) -> Result<Run, CreateRunError> {
        // The batch wakes this node's worker when it queued runs for a claim (a run handed to
        // the worker in its create needs no claim).
        Ok(self.creates.submit(run).await??)
    }

    async fn get_run(&self, account_id: &str, run_id: &str) -> Result<Option<Run>, StoreError> {
        let row = self
            .row(
                &format!("SELECT {RUN_COLS} FROM runs WHERE id = $1 AND account_id = $2"),
                &[&run_id, &account_id],
            )
            .await?;
        Ok(row.as_ref().map(rows::run).transpose()?)
    }

    async fn key_and_run(
        &self,
        hash: &KeyHash,
        run_id: &str,
    ) -> Result<(Option<ApiKey>, Option<Run>), StoreError> {
        // One statement, one round trip, batched with the other requests' (`key_reads`). An id
        // Runbase cannot have made names no run, and never reaches a batch (PostgreSQL refuses
        // a NUL in text: the whole batch would fail).
        if !runbase_domain::ids::looks_like_run_id(run_id) {
            return Ok((self.key_by_hash(hash).await?, None));
        }
        Ok(self
            .keys_and_runs
            .submit((hash.0.clone(), run_id.to_owned()))
            .await?)
    }

    async fn list_runs(
        &self,
        account_id: &str,
        filter: &RunFilter,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<Vec<Run>, StoreError> {
        let status = filter.status.map(|s| s.as_str());
        let model = filter.model.as_deref();
        // With a window, the filters are applied to the account's next `within` runs only: the
        // same walk of the account's index as the unfiltered list, stopped by its own LIMIT (a
        // lower bound on `seq` instead made the statement's generic plan a walk of the primary
        // key, the whole table for a small account, found by the hostile review).
        let sql = list_runs_statement(filter);
        let rows = match filter.within {
            None => {
                self.rows(
                    sql,
                    &[
                        &account_id,
                        &status,
                        &model,
                        &starting_after,
                        &i64::from(limit),
                    ],
                )
                .await?
            }
            Some(within) => {
                self.rows_planned_each_time(
                    sql,
                    &[
                        &account_id,
                        &status,
                        &model,
                        &starting_after,
                        &i64::from(limit),
                        &i64::from(within),
                    ],
                )
                .await?
            }
        };
        Ok(rows::all(&rows, rows::run)?)
    }

    async fn run_before(
        &self,
        account_id: &str,
        test: Option<bool>,
        starting_after: Option<&str>,
        skip: u32,
    ) -> Result<Option<String>, StoreError> {
        if skip == 0 {
            return Ok(None);
        }
        // The window's end found on the account's index (`seq` is in its entries), then its
        // id read from that one row, found on the same index; planned for the account, as the
        // window's listing.
        let rows = self
            .rows_planned_each_time(
                &WINDOW_END[mode_filter_index(test)],
                &[&account_id, &starting_after, &(i64::from(skip) - 1)],
            )
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(row.try_get(0).map_err(Error::from)?)),
            None => Ok(None),
        }
    }

    async fn claim_runs(
        &self,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<Run>, StoreError> {
        // SKIP LOCKED: workers of other nodes claiming at the same moment take other runs
        // instead of waiting; a run claimed and committed meanwhile no longer matches.
        let rows = self
            .rows(CLAIM.as_str(), &[&i64::from(max), &now.0, &lease_until.0])
            .await?;
        let mut runs = rows::all(&rows, rows::run)?;
        runs.sort_by_key(|r| r.created_at);
        Ok(runs)
    }

    async fn renew_leases(
        &self,
        runs: &[(String, u32)],
        until: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let ids: Vec<&str> = runs.iter().map(|(id, _)| id.as_str()).collect();
        let attempts: Vec<i64> = runs.iter().map(|(_, a)| i64::from(*a)).collect();
        let rows = self
            .rows(
                // Rows locked in id order first, as every multi-row update of runs does (the
                // batched successes too): two such updates never wait on each other in a cycle.
                // Found by id only, attempt and status checked once locked (see `write_successes`).
                "WITH locked AS (SELECT r.id, r.status, r.attempts, m.attempt
                                 FROM unnest($1::text[], $2::bigint[]) AS m (id, attempt)
                                 JOIN runs r ON r.id = m.id ORDER BY r.id FOR UPDATE OF r)
                 UPDATE runs r SET locked_until = $3
                 FROM locked l WHERE r.id = l.id AND l.status = 'processing' AND l.attempts = l.attempt
                 RETURNING r.id",
                &[&ids, &attempts, &until.0],
            )
            .await?;
        let renewed: std::collections::HashSet<String> = rows
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .map_err(Error::from)?;
        Ok(runs
            .iter()
            .filter(|(id, _)| !renewed.contains(id))
            .map(|(id, _)| id.clone())
            .collect())
    }

    async fn release_run(&self, run_id: &str, attempt: u32) -> Result<bool, StoreError> {
        // One statement (autocommit, one round trip): the run's watchers and the idle workers
        // are told once it has committed, and only if it was put back.
        let released = self
            .rows(
                "WITH released AS (
                     UPDATE runs SET status = 'pending', started_at = NULL, locked_until = NULL,
                         put_backs = put_backs + 1
                     WHERE id = $1 AND attempts = $2 AND status = 'processing'
                     RETURNING id)
                 SELECT pg_notify($3, id), pg_notify($4, '') FROM released",
                &[&run_id, &i64::from(attempt), &RUN_CHANNEL, &QUEUE_CHANNEL],
            )
            .await?;
        Ok(released.len() == 1)
    }

    async fn reclaim_expired(
        &self,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        Ok(in_tx!(self, |tx| Box::pin(reclaim_tx(tx, max_attempts, now))).await?)
    }

    async fn finish_run(
        &self,
        run_id: &str,
        attempt: u32,
        outcome: RunOutcome,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if let RunOutcome::Succeeded { output } = &outcome {
            // No money moves: successes of this node are written together, one statement and
            // one commit per batch.
            let success = (
                run_id.to_owned(),
                i64::from(attempt),
                output.to_string(),
                now.0,
            );
            self.finishes.submit(success).await?;
            return Ok(());
        }
        let outcome = &outcome;
        Ok(in_tx!(self, |tx| Box::pin(finish_tx(
            tx, run_id, attempt, outcome, now
        )))
        .await?)
    }

    async fn cancel_run(
        &self,
        account_id: &str,
        run_id: &str,
        now: Timestamp,
    ) -> Result<Option<Run>, StoreError> {
        Ok(in_tx!(self, |tx| {
                Box::pin(async move {
                    let charged = query_opt(
                        tx,
                        // Found by id, the status checked on the locked row (see `write_successes`).
                        "WITH l AS (SELECT id, status FROM runs WHERE id = $1 AND account_id = $2 FOR UPDATE)
                         UPDATE runs r SET status = 'canceled', error_message = 'The run was canceled', error_code = 'canceled',
                             completed_at = $3, locked_until = NULL
                         FROM l WHERE r.id = l.id AND l.status IN ('pending', 'processing')
                         RETURNING r.cost_millicents, r.account_id, r.key_id, r.model",
                        &[&run_id, &account_id, &now.0],
                    )
                    .await?;
                    if let Some(row) = charged {
                        refund(tx, run_id, Charged::from_row(&row)?, now).await?;
                        // Delivered at commit to every node: the one executing it stops it.
                        execute(tx, "SELECT pg_notify($1, $2)", &[&CANCEL_CHANNEL, &run_id])
                            .await?;
                    }
                    query_opt(
                        tx,
                        &format!("SELECT {RUN_COLS} FROM runs WHERE id = $1 AND account_id = $2"),
                        &[&run_id, &account_id],
                    )
                    .await?
                    .as_ref()
                    .map(rows::run)
                    .transpose()
                })
            })
            .await?)
    }

    /// Several nodes share this database: a run still `processing` may belong to a live worker
    /// elsewhere, so only runs whose lease ran out are recovered (as [`Store::reclaim_expired`]).
    async fn recover_interrupted(
        &self,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        self.reclaim_expired(max_attempts, now).await
    }

    fn queue_signal(&self) -> Arc<tokio::sync::Notify> {
        self.queue_signal.clone()
    }

    fn cancellations(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        Some(self.cancels.subscribe())
    }

    fn run_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.run_changes.subscribe()
    }
}

//! Run creation in batches ([`crate::batch`]): the creates that arrived while the previous batch
//! was being written are admitted in one transaction:
//!
//! 1. the batch's keys, then its accounts, are locked (`FOR UPDATE`, sorted by id: the lock order
//!    of every transaction here is key before account, so batches of different nodes never
//!    deadlock) and read; in the same round trip, the fresh idempotency keys of its runs are
//!    claimed (their rows inserted with the runs' `201`s, unless a live row has them);
//! 2. each run is admitted in arrival order by [`admission::admit`] against running totals of
//!    those rows, exactly as if each were its own transaction; a run whose key was taken is left
//!    out ([`CreateRunError::KeyTaken`]), and a refused run's claimed key is given up again;
//! 3. the admitted runs, their ledger lines, and one update per key and per account are written
//!    with one multi-row statement per table, sent together with the `COMMIT`.
//!
//! A run therefore costs a share of two round trips and one commit instead of its own, and a
//! hot account's row lock is held once per batch rather than once per run. A batch that fails for
//! another reason than a refused run (a bad row, a lost connection) is retried run by run, so one
//! bad run cannot fail the others; a run id is unique, so a run the failed batch did commit is
//! never created twice.

use crate::batch::{Batcher, Pending};
use crate::rows::{self, KEY_COLS};
use crate::store::create_run_alone;
use crate::{Error, QUEUE_CHANNEL};
use deadpool_postgres::Pool;
use runbase_domain::account::ApiKey;
use runbase_domain::admission;
use runbase_domain::money::Millicents;
use runbase_domain::run::RunStatus;
use runbase_domain::run::{NewRun, Run};
use runbase_domain::store::{CreateRunError, Handoff};
use runbase_domain::time::Timestamp;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// The most runs one transaction admits; bounds a batch's latency and its statements' size.
const MAX_BATCH: usize = 256;

/// The node's queue of creates.
pub(crate) type Creates = Batcher<NewRun, Result<Run, CreateRunError>>;

/// This process's worker, once it offers to take runs from their creates ([`Handoff`]).
pub(crate) type Handoffs = Arc<OnceLock<Handoff>>;

/// Runs written already claimed by this process's worker, each with the slot taken for it; sent
/// to the worker once their commit is known.
type Handed = Vec<(Run, tokio::sync::OwnedSemaphorePermit)>;

/// What a batch needs besides its runs: the pool, this process's worker (if it takes runs from
/// their creates), and its queue signal (woken when runs were queued for a claim).
#[derive(Clone)]
pub(crate) struct Context {
    pub pool: Pool,
    pub handoff: Handoffs,
    pub queue_signal: Arc<tokio::sync::Notify>,
}

pub(crate) fn start(ctx: Context) -> Creates {
    Batcher::start(ctx, MAX_BATCH, |ctx, batch| Box::pin(answer(ctx, batch)))
}

/// Gives the worker the runs handed to it, once their batch is known to be committed.
fn hand_over(handoff: Option<&Handoff>, handed: Handed) {
    let Some(h) = handoff else { return };
    for run in handed {
        if h.runs.send(run).is_err() {
            // The worker stopped meanwhile: the run is reclaimed once its lease is out.
            tracing::warn!("a run handed to a stopped worker waits for its lease to run out");
        }
    }
}

/// Writes a batch and answers each of its callers.
async fn answer(ctx: Context, batch: Vec<Pending<NewRun, Result<Run, CreateRunError>>>) {
    let pool = &ctx.pool;
    let handoff = ctx.handoff.get();
    let runs: Vec<&NewRun> = batch.iter().map(|p| &p.req).collect();
    let started = std::time::Instant::now();
    let written = write_batch(pool, handoff, &runs).await;
    tracing::debug!(runs = runs.len(), took = ?started.elapsed(), "create batch");
    let outcomes = match written {
        Ok(Written {
            outcomes,
            handed,
            queued,
        }) => {
            hand_over(handoff, handed);
            if queued {
                // This node's worker need not wait for the NOTIFY's round trip.
                ctx.queue_signal.notify_one();
            }
            outcomes.into_iter().map(Ok).collect()
        }
        Err(Failed::NothingSent(e)) => {
            // Nothing was written (no connection, a lock not had in time, a lost connection
            // before the writes): every run may be retried by its client (503).
            tracing::warn!(error = %e, runs = runs.len(), "a create batch could not start");
            let reason = e.to_string();
            runs.iter()
                .map(|_| Err(Error::Unavailable(reason.clone())))
                .collect()
        }
        Err(Failed::MaybeCommitted(e, handed)) => {
            tracing::warn!(error = %e, runs = runs.len(), "a create batch failed after its writes were sent");
            // An error the server answered (a bad row, a taken run id) aborted the transaction:
            // nothing of it was committed. Only a lost connection leaves the outcome unknown.
            let rolled_back = matches!(&e, Error::Db(db) if db.as_db_error().is_some());
            let mut handed = Some(handed);
            if rolled_back {
                // Nothing was written: the slots are free again at once.
                handed = None;
            }
            let (outcomes, committed) = settle(pool, &runs, rolled_back).await;
            if let (true, Some(handed), Some(h)) = (committed, handed, handoff) {
                // The batch did commit (all of it): its handed runs are the worker's, if most
                // of their lease is left (learning it can take a lost connection's timeout);
                // otherwise they are left to be reclaimed once it has run out, so that no run
                // is executed by a worker that may no longer hold it.
                let fresh_until =
                    Timestamp::now().0 - i64::try_from(h.lease.as_micros() / 2).unwrap_or(i64::MAX);
                let (fresh, stale): (Handed, Handed) = handed
                    .into_iter()
                    .partition(|(run, _)| run.started_at.is_some_and(|at| at.0 > fresh_until));
                if !stale.is_empty() {
                    tracing::warn!(
                        runs = stale.len(),
                        "runs of a failed batch found committed late are left to be reclaimed"
                    );
                }
                hand_over(handoff, fresh);
            }
            if let Some(h) = handoff {
                // Runs created again alone are queued (and announced by their own NOTIFY).
                h.drained.store(false, std::sync::atomic::Ordering::Release);
            }
            ctx.queue_signal.notify_one();
            outcomes
        }
    };
    for (request, outcome) in batch.into_iter().zip(outcomes) {
        let _ = request.reply.send(outcome);
    }
}

/// How long a failed batch may take to find out what became of its runs.
const SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// After a batch whose writes and `COMMIT` were sent failed: the runs that exist were committed
/// (the batch is one transaction: all or none) and are answered as created; if none exist, the
/// batch was rolled back (a bad row, a connection lost before the commit) or its commit is not
/// visible yet, and each run is tried alone, so one bad run cannot fail its neighbours (a lone
/// attempt after an unknown outcome first waits for the batch's key lock and looks again:
/// `store::create_run_alone`). Bounded: a run not settled in
/// [`SETTLE_WITHIN`] is answered 500 ("may have happened"), never 503.
///
/// Also says whether the batch was found committed.
async fn settle(
    pool: &Pool,
    runs: &[&NewRun],
    rolled_back: bool,
) -> (Vec<Result<Result<Run, CreateRunError>, Error>>, bool) {
    let deadline = tokio::time::Instant::now() + SETTLE_WITHIN;
    let unknown =
        || Error::Data("the create batch failed and its outcome could not be read".into());
    let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
    let look = || async {
        let client = pool.get().await?;
        let stmt = client
            .prepare_cached("SELECT id, created_at FROM runs WHERE id = ANY($1)")
            .await?;
        let rows = client.query(&stmt, &[&ids]).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?)))
            .collect::<Result<std::collections::HashSet<(String, i64)>, Error>>()
    };
    // The database may be unreachable for a moment (what failed the batch): ask again until
    // the deadline.
    let existing = if rolled_back {
        Ok(std::collections::HashSet::new())
    } else {
        tokio::time::timeout_at(deadline, async {
            loop {
                match look().await {
                    Ok(found) => return found,
                    Err(e) => {
                        tracing::warn!(error = %e, "reading what a failed create batch committed");
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                }
            }
        })
        .await
    };
    let Ok(existing) = existing else {
        return (runs.iter().map(|_| Err(unknown())).collect(), false);
    };
    // Committed: this batch's runs exist (a run id taken before by another request is not one).
    let committed = runs
        .iter()
        .any(|run| existing.contains(&(run.id.clone(), run.created_at.0)));
    let mut outcomes = Vec::with_capacity(runs.len());
    for run in runs {
        // This batch's run: its id with its creation time (a run id taken before, by another
        // request, is not this run, and is refused below as a unique violation).
        if existing.contains(&(run.id.clone(), run.created_at.0)) {
            outcomes.push(Ok(Ok(run.pending())));
            continue;
        }
        let alone =
            tokio::time::timeout_at(deadline, create_run_alone(pool, run, !rolled_back)).await;
        outcomes.push(match alone {
            Ok(Ok(created)) => Ok(created),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(unknown()),
        });
    }
    (outcomes, committed)
}

/// How a batch failed: before any write was sent (nothing happened), or after its writes and
/// `COMMIT` were sent (it may have committed).
enum Failed {
    NothingSent(Error),
    /// With the runs it wrote already claimed, to give the worker if it did commit.
    MaybeCommitted(Error, Handed),
}

/// A committed batch: each run's outcome, the runs handed to this process's worker, and whether
/// any run was queued for a claim.
struct Written {
    outcomes: Vec<Result<Run, CreateRunError>>,
    handed: Handed,
    queued: bool,
}

/// The runs admitted by a batch and what they change, as column arrays for `unnest`.
#[derive(Default)]
struct Writes {
    run_ids: Vec<String>,
    run_accounts: Vec<String>,
    run_keys: Vec<String>,
    models: Vec<String>,
    inputs: Vec<String>,
    costs: Vec<i64>,
    created: Vec<i64>,
    tests: Vec<bool>,
    webhooks: Vec<Option<String>>,
    webhook_events: Vec<i64>,
    // `pending`, or `processing` for a run handed to this process's worker (with its claim).
    statuses: Vec<&'static str>,
    started: Vec<Option<i64>>,
    attempts: Vec<i64>,
    leases: Vec<Option<i64>>,
    // Ledger lines of the runs with a price.
    charge_accounts: Vec<String>,
    charge_amounts: Vec<i64>,
    charge_balances: Vec<i64>,
    charge_runs: Vec<String>,
    charge_keys: Vec<String>,
    charge_memos: Vec<String>,
    charge_times: Vec<i64>,
    // Fresh keys claimed for runs the batch refused.
    unclaim_accounts: Vec<String>,
    unclaim_keys: Vec<String>,
    unclaim_claims: Vec<i64>,
    // The 201s of runs created under a key claimed before the create (a fresh key's row got
    // its 201 when it was claimed).
    answer_accounts: Vec<String>,
    answer_keys: Vec<String>,
    answer_claims: Vec<i64>,
    answer_statuses: Vec<i32>,
    answer_bodies: Vec<Vec<u8>>,
}

async fn write_batch(
    pool: &Pool,
    handoff: Option<&Handoff>,
    runs: &[&NewRun],
) -> Result<Written, Failed> {
    let client = pool
        .get()
        .await
        .map_err(|e| Failed::NothingSent(e.into()))?;
    match admit_and_write(&client, handoff, runs).await {
        Ok(written) => Ok(written),
        Err(e) => {
            // The transaction may still be open: end it, or retire the connection.
            if client.batch_execute("ROLLBACK").await.is_err() {
                drop(deadpool_postgres::Object::take(client));
            }
            Err(e)
        }
    }
}

/// The batch's transaction, in two round trips: `BEGIN` with the locking reads, then the writes
/// with `COMMIT`. Statements sent together run in order; if a write fails the server rolls the
/// rest back (its `COMMIT` ends an aborted transaction), and the write's error is returned.
///
/// While this process's worker is idle ([`Handoff`]), an admitted run may be written already
/// claimed by it, holding one of its free slots, and is given to it once the commit is known
/// (by [`answer`], also after a failure that [`settle`] finds committed): no claim is written
/// for it. A batch rolled back gives the slots back; one whose outcome cannot be learnt in
/// time leaves a committed handed run leased until its lease runs out, then reclaimed like the
/// run of a worker that died.
async fn admit_and_write(
    client: &deadpool_postgres::Client,
    handoff: Option<&Handoff>,
    runs: &[&NewRun],
) -> Result<Written, Failed> {
    let mut handed = Vec::new();
    let fresh = FreshClaims::of(runs);
    let (keys, balances, claimed) = lock_rows(client, runs, &fresh)
        .await
        .map_err(Failed::NothingSent)?;
    // A handed run's claim time and lease start: after the locks were had, shortly before the
    // commit (the lease is counted from here, as a claim's is from its statement).
    let now = Timestamp::now();
    let lease_until = handoff.map(|h| now.after(h.lease));
    let mut queued = false;
    let mut current = keys.clone();
    let mut balance_now = balances.clone();
    let mut writes = Writes::default();
    let mut outcomes = Vec::with_capacity(runs.len());
    for (i, run) in runs.iter().enumerate() {
        let fresh_key = run.idempotency.as_ref().filter(|m| m.fresh.is_some());
        if let Some(mark) = fresh_key
            && (fresh.repeats.contains(&i)
                || !claimed.contains(&(run.account_id.clone(), mark.key.clone())))
        {
            // A live row has the key (or an earlier run of this batch took it): nothing is
            // written for this run.
            outcomes.push(Err(CreateRunError::KeyTaken));
            continue;
        }
        let refused = |writes: &mut Writes| {
            // Its key was claimed above, in this transaction: given up with the refusal.
            if let Some(mark) = fresh_key {
                writes.unclaim_accounts.push(run.account_id.clone());
                writes.unclaim_keys.push(mark.key.clone());
                writes.unclaim_claims.push(mark.claimed_at.0);
            }
        };
        let (Some(key), Some(balance)) = (
            current.get_mut(&run.key_id),
            balance_now.get_mut(&run.account_id),
        ) else {
            // No such key (or account): what the single-run path answers for a missing key.
            refused(&mut writes);
            outcomes.push(Err(CreateRunError::KeyNotUsable));
            continue;
        };
        if let Err(refusal) = admission::admit(key, balance, run) {
            refused(&mut writes);
            outcomes.push(Err(refusal));
            continue;
        }
        // A run with a webhook is left for a claim: its `start` event is written by the
        // trigger on the claim's update (migration 0007).
        let slot = handoff
            .filter(|_| run.webhook.is_none() && !queued)
            .and_then(Handoff::take_slot);
        match slot.zip(lease_until) {
            Some((slot, until)) => {
                writes.push(run, *balance, Some((now, until)));
                let mut claimed = run.pending();
                claimed.status = RunStatus::Processing;
                claimed.started_at = Some(now);
                claimed.attempts = 1;
                handed.push((claimed, slot));
            }
            None => {
                // Queued: no later run is handed over before the worker's claims take it.
                queued = true;
                writes.push(run, *balance, None);
            }
        }
        outcomes.push(Ok(run.pending()));
    }
    if writes.run_ids.is_empty() {
        // Nothing admitted: the rollback also gives up every key claimed above.
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| Failed::NothingSent(e.into()))?;
    } else {
        if let Err(e) = apply(client, &writes, &keys, &current, &balances, &balance_now).await {
            return Err(Failed::MaybeCommitted(e, handed));
        }
    }
    if queued && let Some(h) = handoff {
        // A run left queued (no slot free, or a webhook): no later run is handed over before
        // the worker's claims have taken it, so this node's runs start in the order created.
        h.drained.store(false, std::sync::atomic::Ordering::Release);
    }
    Ok(Written {
        outcomes,
        handed,
        queued,
    })
}

impl Writes {
    /// Adds an admitted run; with `claimed` (claimed at, leased until), written already claimed
    /// by this process's worker.
    fn push(
        &mut self,
        run: &NewRun,
        balance_after: Millicents,
        claimed: Option<(Timestamp, Timestamp)>,
    ) {
        self.statuses.push(if claimed.is_some() {
            "processing"
        } else {
            "pending"
        });
        self.started.push(claimed.map(|(at, _)| at.0));
        self.attempts.push(i64::from(claimed.is_some()));
        self.leases.push(claimed.map(|(_, until)| until.0));
        self.run_ids.push(run.id.clone());
        self.run_accounts.push(run.account_id.clone());
        self.run_keys.push(run.key_id.clone());
        self.models.push(run.model.clone());
        self.inputs.push(run.input.to_string());
        self.costs.push(run.price.0);
        self.created.push(run.created_at.0);
        self.tests.push(run.test);
        self.webhooks
            .push(run.webhook.as_ref().map(|w| w.url.clone()));
        self.webhook_events
            .push(run.webhook.as_ref().map_or(0, |w| w.events));
        if run.price > Millicents::ZERO {
            self.charge_accounts.push(run.account_id.clone());
            self.charge_amounts.push(-run.price.0);
            self.charge_balances.push(balance_after.0);
            self.charge_runs.push(run.id.clone());
            self.charge_keys.push(run.key_id.clone());
            self.charge_memos.push(run.model.clone());
            self.charge_times.push(run.created_at.0);
        }
        if let Some(mark) = run.idempotency.as_ref().filter(|m| m.fresh.is_none()) {
            let answer = runbase_domain::idempotency::Answer::created(&run.pending());
            self.answer_accounts.push(run.account_id.clone());
            self.answer_keys.push(mark.key.clone());
            self.answer_claims.push(mark.claimed_at.0);
            self.answer_statuses.push(i32::from(answer.status));
            self.answer_bodies.push(answer.body);
        }
    }
}

/// The fresh idempotency keys of a batch's runs, as column arrays for `unnest`: the first run
/// under each (account, key) claims it; a later run of the batch under the same one is a
/// `repeat` (it finds the key taken).
#[derive(Default)]
struct FreshClaims {
    accounts: Vec<String>,
    keys: Vec<String>,
    fingerprints: Vec<String>,
    run_ids: Vec<String>,
    claimed_at: Vec<i64>,
    expired_before: Vec<i64>,
    statuses: Vec<i32>,
    bodies: Vec<Vec<u8>>,
    repeats: std::collections::HashSet<usize>,
}

impl FreshClaims {
    fn of(runs: &[&NewRun]) -> FreshClaims {
        let mut claims = FreshClaims::default();
        let mut seen = std::collections::HashSet::new();
        for (i, run) in runs.iter().enumerate() {
            let Some((mark, fresh)) = run
                .idempotency
                .as_ref()
                .and_then(|m| m.fresh.as_ref().map(|f| (m, f)))
            else {
                continue;
            };
            if !seen.insert((run.account_id.as_str(), mark.key.as_str())) {
                claims.repeats.insert(i);
                continue;
            }
            let answer = runbase_domain::idempotency::Answer::created(&run.pending());
            claims.accounts.push(run.account_id.clone());
            claims.keys.push(mark.key.clone());
            claims.fingerprints.push(fresh.fingerprint.clone());
            claims.run_ids.push(run.id.clone());
            claims.claimed_at.push(mark.claimed_at.0);
            claims.expired_before.push(fresh.expired_before.0);
            claims.statuses.push(i32::from(answer.status));
            claims.bodies.push(answer.body);
        }
        claims
    }
}

/// The batch's transaction gives up rather than wait without end: on a lock held elsewhere (a
/// stalled node's transaction, an operator's), and if this node stalls mid-transaction the server
/// ends it, so its locks cannot stop other nodes' creates for longer than that.
///
/// Its statements keep their generic plans (each looks rows up by primary key or inserts from
/// arrays, whatever the parameters): with a small `accounts` table the planner judged a fresh
/// plan cheaper every time and planned the two account statements on every batch, measured as
/// 30 us of the server's CPU per run at c8 (`bench/pg_statements.py`, BENCHMARKS.md).
const BEGIN: &str = "BEGIN; SET LOCAL lock_timeout = '3s'; SET LOCAL statement_timeout = '10s';
     SET LOCAL idle_in_transaction_session_timeout = '10s';
     SET LOCAL plan_cache_mode = force_generic_plan";

/// The (account, key) pairs a batch claimed.
type Claimed = std::collections::HashSet<(String, String)>;

/// Locks and reads the batch's keys, then its accounts' balances, in id order; then claims its
/// fresh idempotency keys (after the account locks: a row another node's batch inserted under
/// the same account is committed or rolled back by the time this batch has that account).
async fn lock_rows(
    client: &deadpool_postgres::Client,
    runs: &[&NewRun],
    fresh: &FreshClaims,
) -> Result<
    (
        HashMap<String, ApiKey>,
        HashMap<String, Millicents>,
        Claimed,
    ),
    Error,
> {
    let mut key_ids: Vec<&str> = runs.iter().map(|r| r.key_id.as_str()).collect();
    key_ids.sort_unstable();
    key_ids.dedup();
    let mut account_ids: Vec<&str> = runs.iter().map(|r| r.account_id.as_str()).collect();
    account_ids.sort_unstable();
    account_ids.dedup();
    let key_sql =
        format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ANY($1) ORDER BY id FOR UPDATE");
    let account_sql =
        "SELECT id, balance_millicents FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE";
    let (key_stmt, account_stmt, claim_stmt) = futures_util::future::try_join3(
        client.prepare_cached(&key_sql),
        client.prepare_cached(account_sql),
        client.prepare_cached(crate::idempotency::CLAIM_MANY),
    )
    .await?;
    let expired_before = fresh.expired_before.iter().copied().min().unwrap_or(0);
    let claim_params: [&Param; 8] = [
        &fresh.accounts,
        &fresh.keys,
        &fresh.fingerprints,
        &fresh.run_ids,
        &fresh.claimed_at,
        &fresh.statuses,
        &fresh.bodies,
        &expired_before,
    ];
    let claiming = !fresh.keys.is_empty();
    // Sent together; the server runs them in order: the transaction begins, keys are locked
    // before accounts, and the idempotency keys are claimed last.
    let (_, key_rows, account_rows, claim_rows) = futures_util::future::try_join4(
        client.batch_execute(BEGIN),
        client.query(&key_stmt, &[&key_ids]),
        client.query(&account_stmt, &[&account_ids]),
        async {
            if !claiming {
                return Ok(Vec::new());
            }
            client.query(&claim_stmt, &claim_params).await
        },
    )
    .await?;
    let mut keys = HashMap::with_capacity(key_rows.len());
    for row in &key_rows {
        let key = rows::api_key(row)?;
        keys.insert(key.id.clone(), key);
    }
    let mut balances = HashMap::with_capacity(account_rows.len());
    for row in &account_rows {
        balances.insert(row.try_get(0)?, Millicents(row.try_get(1)?));
    }
    let mut claimed = Claimed::with_capacity(claim_rows.len());
    for row in &claim_rows {
        claimed.insert((row.try_get(0)?, row.try_get(1)?));
    }
    Ok((keys, balances, claimed))
}

/// Writes what the batch admitted, one statement per table, and commits: all sent together.
async fn apply(
    client: &deadpool_postgres::Client,
    w: &Writes,
    keys_before: &HashMap<String, ApiKey>,
    keys_after: &HashMap<String, ApiKey>,
    balances_before: &HashMap<String, Millicents>,
    balances_after: &HashMap<String, Millicents>,
) -> Result<(), Error> {
    // Per key: what its runs added to its spend and count, and when it was last used.
    let (mut key_ids, mut spent, mut counted, mut used) = (vec![], vec![], vec![], vec![]);
    for (id, after) in keys_after {
        let Some(before) = keys_before.get(id) else {
            continue;
        };
        let added = after.runs_created.saturating_sub(before.runs_created);
        if added == 0 {
            continue;
        }
        let last = w
            .run_keys
            .iter()
            .zip(&w.created)
            .filter(|(k, _)| *k == id)
            .map(|(_, t)| *t)
            .max()
            .unwrap_or(0);
        key_ids.push(id.clone());
        spent.push((after.spent - before.spent).0);
        counted.push(i64::try_from(added).unwrap_or(i64::MAX));
        used.push(last);
    }
    // Per account: what its runs debited.
    let (mut account_ids, mut debits) = (vec![], vec![]);
    for (id, after) in balances_after {
        let before = balances_before.get(id).copied().unwrap_or(*after);
        if before != *after {
            account_ids.push(id.clone());
            debits.push((before - *after).0);
        }
    }
    let key_params: [&Param; 4] = [&key_ids, &spent, &counted, &used];
    let account_params: [&Param; 2] = [&account_ids, &debits];
    let run_params: [&Param; 14] = [
        &w.run_ids,
        &w.run_accounts,
        &w.run_keys,
        &w.models,
        &w.inputs,
        &w.costs,
        &w.created,
        &w.tests,
        &w.webhooks,
        &w.webhook_events,
        &w.statuses,
        &w.started,
        &w.attempts,
        &w.leases,
    ];
    let charge_params: [&Param; 7] = [
        &w.charge_accounts,
        &w.charge_amounts,
        &w.charge_balances,
        &w.charge_runs,
        &w.charge_keys,
        &w.charge_memos,
        &w.charge_times,
    ];
    const KEYS: &str = "UPDATE api_keys k SET spent_millicents = k.spent_millicents + u.spent,
             runs_created = k.runs_created + u.runs,
             last_used_at = GREATEST(COALESCE(k.last_used_at, 0), u.used)
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[]) AS u(id, spent, runs, used)
         WHERE k.id = u.id";
    const ACCOUNTS: &str =
        "UPDATE accounts a SET balance_millicents = a.balance_millicents - u.debit
         FROM unnest($1::text[], $2::bigint[]) AS u(id, debit) WHERE a.id = u.id";
    // Inserting `pending` runs is what enqueues them, in arrival order (their `seq`).
    const RUNS: &str = "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at, test, webhook, webhook_events, started_at, attempts, locked_until)
         SELECT id, account_id, key_id, model, status, input, cost, created_at, test, webhook, webhook_events, started_at, attempts, locked_until
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[], $8::bool[], $9::text[], $10::bigint[],
                     $11::text[], $12::bigint[], $13::bigint[], $14::bigint[])
              WITH ORDINALITY AS u(id, account_id, key_id, model, input, cost, created_at, test, webhook, webhook_events, status, started_at, attempts, locked_until, ord)
         ORDER BY ord";
    const LEDGER: &str = "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, key_id, memo, created_at)
         SELECT account_id, 'run_charge', amount, balance_after, run_id, key_id, memo, created_at
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[])
              WITH ORDINALITY AS u(account_id, amount, balance_after, run_id, key_id, memo, created_at, ord)
         ORDER BY ord";
    let answer_params: [&Param; 5] = [
        &w.answer_accounts,
        &w.answer_keys,
        &w.answer_claims,
        &w.answer_statuses,
        &w.answer_bodies,
    ];
    // Delivered at commit: wakes idle workers on every node.
    const NOTIFY: &str = "SELECT pg_notify($1, '')";
    // Prepared first (once per connection): every statement must be on the wire before the
    // `COMMIT`, in order, and a statement waiting for its preparation would be sent after it.
    let ((keys, accounts, runs, ledger, notify), (answers, unclaim)) =
        futures_util::future::try_join(
            futures_util::future::try_join5(
                client.prepare_cached(KEYS),
                client.prepare_cached(ACCOUNTS),
                client.prepare_cached(RUNS),
                client.prepare_cached(LEDGER),
                client.prepare_cached(NOTIFY),
            ),
            futures_util::future::try_join(
                client.prepare_cached(crate::idempotency::RECORD_MANY),
                client.prepare_cached(crate::idempotency::UNCLAIM_MANY),
            ),
        )
        .await?;
    let record = !w.answer_keys.is_empty();
    let unclaiming = !w.unclaim_keys.is_empty();
    let unclaim_params: [&Param; 3] = [&w.unclaim_accounts, &w.unclaim_keys, &w.unclaim_claims];
    let sent = futures_util::future::join(
        futures_util::future::join5(
            client.execute(&keys, &key_params),
            client.execute(&accounts, &account_params),
            client.execute(&runs, &run_params),
            client.execute(&ledger, &charge_params),
            async {
                // Only runs left for a claim wake workers (none, when all were handed over).
                if w.statuses.contains(&"pending") {
                    client.execute(&notify, &[&QUEUE_CHANNEL]).await
                } else {
                    Ok(0)
                }
            },
        ),
        // The 201s of idempotent creates, kept in the transaction that charges them, and the
        // fresh keys of refused runs given up.
        futures_util::future::join(
            async {
                if record {
                    client.execute(&answers, &answer_params).await.map(Some)
                } else {
                    Ok(None)
                }
            },
            async {
                if unclaiming {
                    client.execute(&unclaim, &unclaim_params).await.map(Some)
                } else {
                    Ok(None)
                }
            },
        ),
    );
    // Every answer is awaited (not just the first error), so the connection is idle after.
    let (((keys, accounts, runs, ledger, notify), (answers, unclaimed)), commit) =
        futures_util::future::join(sent, client.batch_execute("COMMIT")).await;
    for answer in [keys, accounts, runs, ledger, notify] {
        answer?;
    }
    answers?;
    unclaimed?;
    commit?;
    Ok(())
}

type Param = dyn tokio_postgres::types::ToSql + Sync;

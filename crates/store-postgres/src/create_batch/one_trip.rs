//! A create batch in one round trip, when every run of it is admitted.
//!
//! The locking form ([`super::admit_and_write`]) spends a round trip on locking and reading the
//! batch's keys and accounts before it can admit a run. But whether *every* run of a batch is
//! admitted needs no run-by-run walk: the admission rules ([`admission::admit`]) applied one
//! after another to running totals ([`runbase_domain::admission::admit`]) admit all of a key's runs exactly when the key is usable at
//! the latest run's time, its run count plus the batch's stays within its quota, its spend plus
//! the batch's stays within its limit and was below it before the key's last run, and each
//! account's balance covers all its runs. So one statement locks the rows (keys before accounts,
//! in id order, as every transaction here does), checks those sums against them, and writes the
//! whole batch only if every check holds, sent together with its `BEGIN` and `COMMIT`.
//!
//! When a check fails (a key at its limit, a disabled key, a short balance), the statement writes
//! nothing and the batch goes through the locking form, which admits what can be admitted run by
//! run and refuses the rest with their reasons. Batches with idempotency keys always do, since
//! their claims need the locks first, and so do batches with a key or account that refused a
//! run in the last second ([`Refusals`]): a client that keeps creating with a key at its limit
//! would otherwise cost every batch it lands in a wasted round trip and commit.

use super::{BEGIN, Failed, Handed, Param, Writes, Written};
use crate::QUEUE_CHANNEL;
use runbase_domain::money::Millicents;
use runbase_domain::run::{NewRun, RunStatus};
use runbase_domain::store::Handoff;
use runbase_domain::time::Timestamp;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The keys and accounts that refused a run lately (noted by the locking form): a batch with
/// one of them goes straight to the locking form, which refuses it again without first paying
/// for the one-trip statement that would write nothing.
#[derive(Default)]
pub(crate) struct Refusals(Mutex<HashMap<String, Instant>>);

impl Refusals {
    /// How long a refusal keeps batches off the one-trip form.
    const FOR: Duration = Duration::from_secs(1);
    /// The most ids kept; past it the expired ones go, and if that is not enough, all.
    const MOST: usize = 4096;

    /// A run of `id` (a key's or an account's) was refused.
    pub(super) fn note(&self, id: &str) {
        let now = Instant::now();
        let mut ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.len() >= Self::MOST {
            ids.retain(|_, until| *until > now);
            if ids.len() >= Self::MOST {
                ids.clear();
            }
        }
        ids.insert(id.to_owned(), now + Self::FOR);
    }

    /// Whether a key or an account of `runs` refused a run lately.
    fn any(&self, runs: &[&NewRun]) -> bool {
        let ids = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ids.is_empty() {
            return false;
        }
        let now = Instant::now();
        let recent = |id: &str| ids.get(id).is_some_and(|until| *until > now);
        runs.iter()
            .any(|run| recent(&run.key_id) || recent(&run.account_id))
    }
}

/// What the batch adds to each key and account, as column arrays for `unnest`.
#[derive(Default, Debug, PartialEq, Eq)]
struct Sums {
    key_ids: Vec<String>,
    /// The account every run of the key names (a run naming another is not admitted).
    key_accounts: Vec<String>,
    key_spent: Vec<i64>,
    /// The key's spend from the batch before its last run, which must leave the spend below
    /// the limit (a key at its limit refuses even a free run).
    key_spent_before_last: Vec<i64>,
    key_runs: Vec<i64>,
    /// The latest creation time of the key's runs: the key must not have expired by then.
    key_last: Vec<i64>,
    account_ids: Vec<String>,
    debits: Vec<i64>,
    /// For each ledger line (run with a price): what the batch debited its account up to and
    /// including this run, so its balance after is the locked balance less this.
    debited: Vec<i64>,
}

impl Sums {
    /// The sums of `runs`, or `None` when they cannot all be admitted whatever the rows say (a
    /// key named with two accounts, a sum past `i64`), or when the checks would not be
    /// `admit`'s (a negative price, which the summed spend checks assume away).
    fn of(runs: &[&NewRun]) -> Option<Sums> {
        let mut sums = Sums::default();
        let mut key_at: HashMap<&str, usize> = HashMap::new();
        let mut account_at: HashMap<&str, usize> = HashMap::new();
        for run in runs {
            let k = *key_at.entry(run.key_id.as_str()).or_insert_with(|| {
                sums.key_ids.push(run.key_id.clone());
                sums.key_accounts.push(run.account_id.clone());
                sums.key_spent.push(0);
                sums.key_spent_before_last.push(0);
                sums.key_runs.push(0);
                sums.key_last.push(i64::MIN);
                sums.key_ids.len() - 1
            });
            if sums.key_accounts[k] != run.account_id || run.price < Millicents::ZERO {
                return None;
            }
            sums.key_spent_before_last[k] = sums.key_spent[k];
            sums.key_spent[k] = sums.key_spent[k].checked_add(run.price.0)?;
            sums.key_runs[k] += 1;
            sums.key_last[k] = sums.key_last[k].max(run.created_at.0);
            let a = *account_at
                .entry(run.account_id.as_str())
                .or_insert_with(|| {
                    sums.account_ids.push(run.account_id.clone());
                    sums.debits.push(0);
                    sums.account_ids.len() - 1
                });
            sums.debits[a] = sums.debits[a].checked_add(run.price.0)?;
            if run.price > Millicents::ZERO {
                sums.debited.push(sums.debits[a]);
            }
        }
        Some(sums)
    }
}

/// Locks the batch's keys, then its accounts (id order); checks that every run is admitted;
/// and only then writes the key and account updates, the runs and their ledger lines. Returns
/// whether it wrote. The checks are `admission::admit`'s, summed (module doc); a test holds
/// them to it.
///
/// The updates compute the new values from the rows as locked (`locked_keys`,
/// `locked_accounts`), never from the updated table's own columns: when another transaction
/// changed a row after this statement's snapshot, `FOR UPDATE` waits for it and returns its
/// committed version, but an `UPDATE` of the same statement, of the row this statement locked,
/// computes from the snapshot's version (measured: a top-up committed while the batch waited was
/// overwritten). Each update returns its rows, and `runbase_ensure` (migration 0009) fails the
/// statement, rolling it back, unless every key and every debited account was updated.
const WRITE_ALL_OR_NOTHING: &str = "
WITH locked_keys AS MATERIALIZED (
    SELECT id, account_id, disabled, deleted_at, expires_at, spend_limit_millicents,
           spent_millicents, quota, runs_created, last_used_at
    FROM api_keys WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE
), locked_accounts AS MATERIALIZED (
    -- After the keys, whatever order the planner evaluates the rest in: this reads them first.
    SELECT id, balance_millicents FROM accounts
    WHERE id = ANY($7::text[]) AND (SELECT count(*) FROM locked_keys) >= 0
    ORDER BY id FOR UPDATE
), admitted AS MATERIALIZED (
    SELECT (SELECT count(*) FROM locked_keys k
            JOIN unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
                 AS u(id, account_id, spent, spent_before_last, runs, last) ON k.id = u.id
            WHERE k.account_id = u.account_id AND NOT k.disabled AND k.deleted_at IS NULL
              AND (k.expires_at IS NULL OR u.last < k.expires_at)
              AND (k.quota IS NULL OR k.runs_created + u.runs <= k.quota)
              AND (k.spend_limit_millicents IS NULL
                   OR (k.spent_millicents + u.spent_before_last < k.spend_limit_millicents
                       AND k.spent_millicents + u.spent <= k.spend_limit_millicents))
           ) = cardinality($1::text[])
       AND (SELECT count(*) FROM locked_accounts a
            JOIN unnest($7::text[], $8::bigint[]) AS u(id, debit) ON a.id = u.id
            WHERE a.balance_millicents >= u.debit
           ) = cardinality($7::text[]) AS ok
), keys AS (
    UPDATE api_keys k SET spent_millicents = l.spent_millicents + u.spent,
           runs_created = l.runs_created + u.runs,
           last_used_at = GREATEST(COALESCE(l.last_used_at, 0), u.last)
    FROM unnest($1::text[], $3::bigint[], $5::bigint[], $6::bigint[]) AS u(id, spent, runs, last)
         JOIN locked_keys l ON l.id = u.id, admitted
    WHERE admitted.ok AND k.id = u.id
    RETURNING 1
), debits AS (
    UPDATE accounts a SET balance_millicents = l.balance_millicents - u.debit
    FROM unnest($7::text[], $8::bigint[]) AS u(id, debit)
         JOIN locked_accounts l ON l.id = u.id, admitted
    WHERE admitted.ok AND a.id = u.id AND u.debit > 0
    RETURNING 1
), new_runs AS (
    INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at, test,
                      webhook, webhook_events, started_at, attempts, locked_until)
    SELECT id, account_id, key_id, model, status, input, cost, created_at, test, webhook,
           webhook_events, started_at, attempts, locked_until
    FROM unnest($9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::bigint[],
                $15::bigint[], $16::bool[], $17::text[], $18::bigint[], $19::text[], $20::bigint[],
                $21::bigint[], $22::bigint[])
         WITH ORDINALITY AS u(id, account_id, key_id, model, input, cost, created_at, test, webhook,
                              webhook_events, status, started_at, attempts, locked_until, ord),
         admitted
    WHERE admitted.ok
    ORDER BY ord
), charges AS (
    INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id,
                        key_id, memo, created_at)
    SELECT u.account_id, 'run_charge', u.amount, a.balance_millicents - u.debited, u.run_id,
           u.key_id, u.memo, u.created_at
    FROM unnest($23::text[], $24::bigint[], $25::bigint[], $26::text[], $27::text[], $28::text[],
                $29::bigint[])
         WITH ORDINALITY AS u(account_id, amount, debited, run_id, key_id, memo, created_at, ord)
         JOIN locked_accounts a ON a.id = u.account_id, admitted
    WHERE admitted.ok
    ORDER BY u.ord
)
SELECT ok, runbase_ensure(
    NOT ok OR ((SELECT count(*) FROM keys) = cardinality($1::text[])
               AND (SELECT count(*) FROM debits) = (SELECT count(*) FROM unnest($8::bigint[]) AS d WHERE d > 0)),
    'a create batch did not update every key and account it locked')
FROM admitted";

/// Wakes idle workers on every node (delivered at commit), if the batch wrote its first queued
/// run.
const NOTIFY_IF_WRITTEN: &str =
    "SELECT pg_notify($1, '') WHERE EXISTS (SELECT 1 FROM runs WHERE id = $2)";

/// The batch in one round trip: `Ok(Some(..))` when every run was admitted and the batch
/// committed, `Ok(None)` when it was not tried or a check failed and nothing was written (the
/// caller goes on with the locking form on the same connection, outside any transaction).
pub(super) async fn write(
    client: &deadpool_postgres::Client,
    handoff: Option<&Handoff>,
    refusals: &Refusals,
    runs: &[&NewRun],
) -> Result<Option<Written>, Failed> {
    if refusals.any(runs) {
        return Ok(None);
    }
    let Some(sums) = Sums::of(runs) else {
        return Ok(None);
    };
    // As in the locking form: runs are handed to this process's idle worker in order until
    // one is left queued (no slot free, or a webhook, whose `start` event a claim writes).
    let now = Timestamp::now();
    let lease_until = handoff.map(|h| now.after(h.lease));
    let mut writes = Writes::default();
    let mut handed: Handed = Vec::new();
    let mut first_queued: Option<&str> = None;
    for run in runs {
        let slot = handoff
            .filter(|_| run.webhook.is_none() && first_queued.is_none())
            .and_then(Handoff::take_slot);
        match slot.zip(lease_until) {
            Some((slot, until)) => {
                // The balance after is computed by the statement (`debited`).
                writes.push(run, Millicents::ZERO, Some((now, until)));
                let mut claimed = run.pending();
                claimed.status = RunStatus::Processing;
                claimed.started_at = Some(now);
                claimed.attempts = 1;
                handed.push((claimed, slot));
            }
            None => {
                first_queued.get_or_insert(run.id.as_str());
                writes.push(run, Millicents::ZERO, None);
            }
        }
    }
    let prepared = futures_util::future::try_join(
        client.prepare_cached(WRITE_ALL_OR_NOTHING),
        client.prepare_cached(NOTIFY_IF_WRITTEN),
    )
    .await;
    let (statement, notify) = match prepared {
        Ok(statements) => statements,
        Err(e) if e.as_db_error().is_some() => {
            // The server refused the statement (it should not): the locking form still works.
            tracing::error!(error = %e, "the one-trip create statement could not be prepared");
            return Ok(None);
        }
        Err(e) => return Err(Failed::NothingSent(e.into())),
    };
    let params: [&Param; 29] = [
        &sums.key_ids,
        &sums.key_accounts,
        &sums.key_spent,
        &sums.key_spent_before_last,
        &sums.key_runs,
        &sums.key_last,
        &sums.account_ids,
        &sums.debits,
        &writes.run_ids,
        &writes.run_accounts,
        &writes.run_keys,
        &writes.models,
        &writes.inputs,
        &writes.costs,
        &writes.created,
        &writes.tests,
        &writes.webhooks,
        &writes.webhook_events,
        &writes.statuses,
        &writes.started,
        &writes.attempts,
        &writes.leases,
        &writes.charge_accounts,
        &writes.charge_amounts,
        &sums.debited,
        &writes.charge_runs,
        &writes.charge_keys,
        &writes.charge_memos,
        &writes.charge_times,
    ];
    // All sent at once; the server runs them in order, and a failed statement aborts the
    // transaction (its `COMMIT` then rolls back).
    let (begun, admitted, notified, committed) = futures_util::future::join4(
        client.batch_execute(BEGIN),
        client.query_one(&statement, &params),
        async {
            match first_queued {
                Some(run) => client
                    .query(&notify, &[&QUEUE_CHANNEL, &run])
                    .await
                    .map(drop),
                None => Ok(()),
            }
        },
        client.batch_execute("COMMIT"),
    )
    .await;
    let admitted = admitted.and_then(|row| row.try_get::<_, bool>(0));
    let outcome = begun
        .and(admitted)
        .and_then(|ok| notified.and(committed).map(|()| ok));
    match outcome {
        Ok(true) => {
            if let (Some(h), Some(_)) = (handoff, first_queued) {
                // As in the locking form: no later run is handed over before the worker's
                // claims have taken the queued ones, so this node's runs start in order.
                h.drained.store(false, std::sync::atomic::Ordering::Release);
            }
            Ok(Some(Written {
                outcomes: runs.iter().map(|run| Ok(run.pending())).collect(),
                handed,
                queued: first_queued.is_some(),
            }))
        }
        // Nothing was written, and the slots taken go back with `handed`.
        Ok(false) => Ok(None),
        // The server answered that its lock or time ran out: the transaction was rolled back.
        Err(e) if nothing_written(&e) => Err(Failed::NothingSent(e.into())),
        // Another error the server answered also rolled it back (the caller tries each run
        // alone); a lost connection leaves the outcome unknown, even of a batch whose `BEGIN`
        // went unanswered, since everything was sent at once (the caller looks).
        Err(e) => Err(Failed::MaybeCommitted(e.into(), handed)),
    }
}

/// Whether a failed batch is known to have written nothing without asking: a lock not had in
/// time or a statement cancelled by its timeout (the locking form answers these 503 too).
fn nothing_written(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code()
        .is_some_and(|c| *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED)
}

#[cfg(test)]
mod tests;

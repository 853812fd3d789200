//! The creates of one writer batch, admitted together (issue 15). The writer thread hands every
//! create that arrived since its last commit to [`write`], inside the batch's transaction:
//!
//! 1. each run is admitted in arrival order by [`admission::admit`] against running totals of
//!    its key's row and its account's balance, each read once per batch, exactly as if each run
//!    were its own transaction (the PostgreSQL store's create batch does the same);
//! 2. the admitted runs and their ledger lines are written with multi-row `INSERT`s, and each
//!    key and each account is updated once, by the batch's totals.
//!
//! So a run costs two row inserts and a share of two updates, where it cost a savepoint, a key
//! read, three updates and two inserts of its own. While this process's worker is idle
//! ([`Handoff`]), an admitted run is written already claimed by it and given to it once the batch
//! commits: no claim is written for it either. A refused run writes nothing and fails no
//! other run. Any statement error (a taken run id, a full disk) rolls the group back to its
//! savepoint and the creates are written again one by one, each in its own savepoint, so one bad
//! run fails alone.

use crate::store::{LedgerLine, create_run_tx, insert_ledger_rows, is_unique_violation};
use crate::writer::Completion;
use runbase_domain::account::{ApiKey, LedgerKind};
use runbase_domain::admission;
use runbase_domain::idempotency::{Answer, RunMark};
use runbase_domain::money::Millicents;
use runbase_domain::run::{NewRun, Run, RunStatus};
use runbase_domain::store::{CreateRunError, Handoff, StoreError};
use runbase_domain::time::Timestamp;
use rusqlite::types::ToSql;
use rusqlite::{Connection, OptionalExtension, params};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

/// This process's worker, once it offers to take runs from their creates ([`Handoff`]).
pub(crate) type Handoffs = Arc<OnceLock<Handoff>>;

/// A run written already claimed by this process's worker, with the worker slot taken for it.
type Handed = (Run, OwnedSemaphorePermit);

/// One create waiting for the writer: the run, its input already serialized (on the caller's
/// thread, not the writer's), and where to answer.
pub struct Create {
    pub run: NewRun,
    pub input: String,
    /// The answer kept under the run's idempotency key, if it has one: `201` and the run as
    /// created (`NewRun::pending`), also serialized on the caller's thread.
    pub answer: Option<Answer>,
    /// Answered the run as created (taken from `run`, not copied).
    pub reply: oneshot::Sender<Result<Run, CreateRunError>>,
}

impl Create {
    /// Serializes the run's input and, under an idempotency key, its answer: on the caller's
    /// thread, since the writer thread is the one every write waits for.
    pub fn new(run: NewRun, reply: oneshot::Sender<Result<Run, CreateRunError>>) -> Self {
        let input = run.input.to_string();
        let answer = run
            .idempotency
            .as_ref()
            .map(|_| Answer::created(&run.pending()));
        Create {
            run,
            input,
            answer,
            reply,
        }
    }
}

/// What became of one run in the batch, before the commit: admitted and queued (`None`) or
/// handed to the worker, or refused.
type Outcome = rusqlite::Result<Result<Option<Handed>, CreateRunError>>;

/// Writes the batch's creates into the open transaction; answers each once the batch commits,
/// and gives the worker the runs handed to it once that commit succeeded (a batch rolled back
/// drops them, which frees their slots). Also says whether any run was queued for a claim.
pub fn write(
    conn: &Connection,
    creates: Vec<Create>,
    handoff: Option<&Handoff>,
    lost: &Cell<bool>,
) -> (Vec<Completion>, bool) {
    if creates.is_empty() {
        return (Vec::new(), false);
    }
    // A batch already lost writes nothing more ([`crate::writer::keep_open`]).
    let not_written = || -> Outcome {
        Ok(Err(CreateRunError::Store(StoreError::Backend(
            crate::writer::LOST.to_owned(),
        ))))
    };
    let outcomes = if lost.get() {
        creates.iter().map(|_| not_written()).collect()
    } else {
        match grouped(conn, &creates, handoff) {
            Ok(outcomes) => outcomes,
            Err(e) => {
                if !is_unique_violation(&e) {
                    tracing::warn!(error = %e, runs = creates.len(), "a create batch failed; writing its runs one by one");
                }
                crate::writer::keep_open(conn, lost);
                creates
                    .iter()
                    .map(|c| {
                        if lost.get() {
                            return not_written();
                        }
                        let outcome = alone(conn, c);
                        crate::writer::keep_open(conn, lost);
                        outcome
                    })
                    .collect()
            }
        }
    };
    let queued = outcomes.iter().any(|o| matches!(o, Ok(Ok(None))));
    if queued && let Some(h) = handoff {
        // A run left queued (no slot free, a webhook, or written alone): no later run is handed
        // over before the worker's claims have taken it, so runs start in the order created.
        h.drained.store(false, Ordering::Release);
    }
    let completions = creates
        .into_iter()
        .zip(outcomes)
        .map(|(create, outcome)| -> Completion {
            // Only a run handed over needs the worker's channel.
            let to_worker = match &outcome {
                Ok(Ok(Some(_))) => handoff.map(|h| h.runs.clone()),
                _ => None,
            };
            Box::new(move |committed: Result<(), String>| {
                let Create { run, reply, .. } = create;
                let answer = match (outcome, committed) {
                    (Ok(Ok(Some(handed))), Ok(())) => {
                        if let Some(tx) = to_worker
                            && tx.send(handed).is_err()
                        {
                            // The worker stopped meanwhile: the run is recovered at the next
                            // start, or reclaimed once its lease is out.
                            tracing::warn!(
                                "a run handed to a stopped worker waits for its lease to run out"
                            );
                        }
                        Ok(run.into_pending())
                    }
                    (Ok(admitted), Ok(())) => admitted.map(|_| run.into_pending()),
                    (Err(e), _) => Err(CreateRunError::Store(StoreError::Backend(e.to_string()))),
                    (Ok(_), Err(e)) => Err(CreateRunError::Store(StoreError::Backend(e))),
                };
                let _ = reply.send(answer);
            })
        })
        .collect();
    (completions, queued)
}

/// A create on its own, as before batching: its own savepoint, rolled back on any error. Its run
/// is queued.
fn alone(conn: &Connection, c: &Create) -> Outcome {
    crate::pool::savepoint(conn, |conn| {
        create_run_tx(conn, &c.run, &c.input, c.answer.as_ref())
    })
    .map(|admitted| admitted.map(|()| None))
}

/// A run written already claimed: when, and until when its lease holds.
#[derive(Clone, Copy)]
struct Claimed {
    at: Timestamp,
    until: Timestamp,
}

/// Running totals of one key over the batch.
struct KeyTotals {
    key: ApiKey,
    spent: Millicents,
    runs: i64,
    last_used_at: i64,
}

/// The whole group in one savepoint; any error rolls it back (nothing of it stays written).
fn grouped(
    conn: &Connection,
    creates: &[Create],
    handoff: Option<&Handoff>,
) -> rusqlite::Result<Vec<Outcome>> {
    crate::pool::savepoint(conn, |conn| admit_and_write(conn, creates, handoff))
}

fn admit_and_write(
    conn: &Connection,
    creates: &[Create],
    handoff: Option<&Handoff>,
) -> rusqlite::Result<Vec<Outcome>> {
    // A handed run's claim time and lease start (a claim's are its statement's).
    let now = Timestamp::now();
    let claim = handoff.map(|h| Claimed {
        at: now,
        until: now.after(h.lease),
    });
    // Once a run of the batch is queued, no later one is handed over.
    let mut queued = false;
    let mut keys: HashMap<&str, Option<KeyTotals>> = HashMap::new();
    // Per account: (balance now, the batch's total debit).
    let mut balances: HashMap<&str, Option<(Millicents, Millicents)>> = HashMap::new();
    // Fresh idempotency keys this batch has written rows for already.
    let mut fresh_keys: HashSet<(&str, &str)> = HashSet::new();
    let mut admitted: Vec<(&Create, i64, Option<Claimed>)> = Vec::with_capacity(creates.len());
    let mut outcomes = Vec::with_capacity(creates.len());
    for c in creates {
        let run = &c.run;
        if let Some(mark) = &run.idempotency
            && (fresh_keys.contains(&(run.account_id.as_str(), mark.key.as_str()))
                || crate::idempotency::key_taken(conn, &run.account_id, mark)?)
        {
            outcomes.push(Ok(Err(CreateRunError::KeyTaken)));
            continue;
        }
        let key = match keys.get_mut(run.key_id.as_str()) {
            Some(k) => k,
            None => {
                let read = crate::store::key_by_id(conn, &run.key_id)?.map(|key| KeyTotals {
                    key,
                    spent: Millicents::ZERO,
                    runs: 0,
                    last_used_at: 0,
                });
                keys.entry(run.key_id.as_str()).or_insert(read)
            }
        };
        let Some(key) = key else {
            outcomes.push(Ok(Err(CreateRunError::KeyNotUsable)));
            continue;
        };
        // The balance is only read once the key's checks pass, as in a create alone.
        if let Err(refused) = admission::check_key(&key.key, run) {
            outcomes.push(Ok(Err(refused)));
            continue;
        }
        let account = match balances.get_mut(run.account_id.as_str()) {
            Some(b) => b,
            None => {
                let read: Option<i64> = conn
                    .prepare_cached("SELECT balance_millicents FROM accounts WHERE id = ?1")?
                    .query_row([&run.account_id], |r| r.get(0))
                    .optional()?;
                balances
                    .entry(run.account_id.as_str())
                    .or_insert(read.map(|b| (Millicents(b), Millicents::ZERO)))
            }
        };
        let Some((balance, debit)) = account else {
            outcomes.push(Ok(Err(CreateRunError::InsufficientBalance)));
            continue;
        };
        if let Err(refused) = admission::admit(&mut key.key, balance, run) {
            outcomes.push(Ok(Err(refused)));
            continue;
        }
        *debit = *debit + run.price;
        key.spent = key.spent + run.price;
        key.runs += 1;
        key.last_used_at = run.created_at.0;
        if let Some(RunMark {
            key,
            fresh: Some(_),
            ..
        }) = &run.idempotency
        {
            fresh_keys.insert((run.account_id.as_str(), key.as_str()));
        }
        // A run with a webhook is left for a claim: its `start` event is written by the
        // trigger on the claim's update (migration 0010).
        let slot = handoff
            .filter(|_| run.webhook.is_none() && !queued)
            .and_then(Handoff::take_slot);
        match slot.zip(claim) {
            Some((slot, claimed)) => {
                admitted.push((c, balance.0, Some(claimed)));
                let mut run = run.pending();
                run.status = RunStatus::Processing;
                run.started_at = Some(claimed.at);
                run.attempts = 1;
                outcomes.push(Ok(Ok(Some((run, slot)))));
            }
            None => {
                queued = true;
                admitted.push((c, balance.0, None));
                outcomes.push(Ok(Ok(None)));
            }
        }
    }
    if admitted.is_empty() {
        return Ok(outcomes);
    }
    for (account_id, totals) in &balances {
        let Some((balance, debit)) = totals else {
            continue;
        };
        if *debit == Millicents::ZERO {
            continue;
        }
        let after: i64 = conn
            .prepare_cached(
                "UPDATE accounts SET balance_millicents = balance_millicents - ?2 WHERE id = ?1
                 RETURNING balance_millicents",
            )?
            .query_row(params![account_id, debit.0], |r| r.get(0))?;
        // The batch is the only writer, so the row cannot have moved since it was read; should
        // it have, nothing of the batch is kept.
        if after != balance.0 {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
                Some(format!(
                    "account {account_id}: balance {after} after the batch, {} expected",
                    balance.0
                )),
            ));
        }
    }
    for (key_id, totals) in &keys {
        let Some(t) = totals else { continue };
        if t.runs == 0 {
            continue;
        }
        conn.prepare_cached(
            "UPDATE api_keys SET spent_millicents = spent_millicents + ?2,
                 runs_created = runs_created + ?3, last_used_at = ?4
             WHERE id = ?1",
        )?
        .execute(params![key_id, t.spent.0, t.runs, t.last_used_at])?;
    }
    insert_runs(conn, &admitted)?;
    let charges: Vec<(LedgerLine<'_>, i64)> = admitted
        .iter()
        .filter(|(c, ..)| c.run.price > Millicents::ZERO)
        .map(|(c, balance_after, _)| (charge_line(&c.run), *balance_after))
        .collect();
    insert_ledger_rows(conn, &charges)?;
    for (c, ..) in &admitted {
        if let Some(mark) = &c.run.idempotency {
            crate::idempotency::record_created(conn, &c.run, mark, c.answer.as_ref())?;
        }
    }
    Ok(outcomes)
}

/// The ledger line of a run's charge.
pub(crate) fn charge_line(run: &NewRun) -> LedgerLine<'_> {
    LedgerLine {
        account_id: &run.account_id,
        kind: LedgerKind::RunCharge,
        amount: -run.price,
        run_id: Some(&run.id),
        key_id: Some(&run.key_id),
        memo: &run.model,
        granted_by: None,
        now: run.created_at,
    }
}

/// Rows per multi-row `INSERT`; a batch's rows go in statements of these sizes (largest first),
/// so only a few distinct statements are ever prepared and cached.
pub(crate) const CHUNKS: [usize; 5] = [32, 8, 4, 2, 1];

const RUN_INSERT: &str = "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at, test, webhook, webhook_events, started_at, attempts, locked_until) VALUES ";
const RUN_VALUES: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Inserts the admitted runs, in arrival order: `pending` (which queues them), or `processing`
/// for those handed to the worker (attempt 1, leased).
fn insert_runs(
    conn: &Connection,
    admitted: &[(&Create, i64, Option<Claimed>)],
) -> rusqlite::Result<()> {
    let mut rest = admitted;
    while !rest.is_empty() {
        let n = CHUNKS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let sql = multi_row(RUN_INSERT, RUN_VALUES, n);
        let mut stmt = conn.prepare_cached(&sql)?;
        let extra: Vec<Extra> = chunk
            .iter()
            .map(|(c, _, claimed)| {
                let w = c.run.webhook.as_ref();
                Extra {
                    status: if claimed.is_some() {
                        RunStatus::Processing.as_str()
                    } else {
                        RunStatus::Pending.as_str()
                    },
                    url: w.map(|w| w.url.as_str()),
                    events: w.map_or(0, |w| w.events),
                    started_at: claimed.map(|c| c.at.0),
                    attempts: i64::from(claimed.is_some()),
                    locked_until: claimed.map(|c| c.until.0),
                }
            })
            .collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(n * 14);
        for ((c, ..), x) in chunk.iter().zip(&extra) {
            let r = &c.run;
            values.extend_from_slice(&[
                &r.id,
                &r.account_id,
                &r.key_id,
                &r.model,
                &x.status,
                &c.input,
                &r.price.0,
                &r.created_at.0,
                &r.test,
                &x.url,
                &x.events,
                &x.started_at,
                &x.attempts,
                &x.locked_until,
            ]);
        }
        stmt.execute(values.as_slice())?;
        rest = tail;
    }
    Ok(())
}

/// A run's values that are not its `NewRun`'s fields as they are.
struct Extra<'a> {
    status: &'static str,
    url: Option<&'a str>,
    events: i64,
    started_at: Option<i64>,
    attempts: i64,
    locked_until: Option<i64>,
}

/// `head` followed by `n` copies of `row`, comma-separated.
pub(crate) fn multi_row(head: &str, row: &str, n: usize) -> String {
    let mut sql = String::with_capacity(head.len() + n * (row.len() + 2));
    sql.push_str(head);
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(row);
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::{Durability, SqliteStore};
    use runbase_domain::account::{KeySettings, KeyUpdate};
    use runbase_domain::ids::{self, KeyHash};
    use runbase_domain::store::Store;
    use runbase_domain::time::Timestamp;

    struct Setup {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        store: SqliteStore,
        account: String,
    }

    async fn setup(balance: i64) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runbase.db");
        let store = SqliteStore::open(&path, Durability::Normal).unwrap();
        let account = store
            .create_account("batch@example.com", Timestamp::now())
            .await
            .unwrap()
            .id;
        let welcome = store.account(&account).await.unwrap().unwrap().balance;
        store
            .add_credits(
                &account,
                Millicents(balance) - welcome,
                "",
                None,
                Timestamp::now(),
            )
            .await
            .unwrap();
        Setup {
            _dir: dir,
            path,
            store,
            account,
        }
    }

    impl Setup {
        async fn key(&self, settings: KeySettings) -> String {
            let id = ids::new_key_id();
            let secret = format!("sk-{id}");
            self.store
                .create_key(
                    &self.account,
                    &id,
                    &KeyHash::of(&secret),
                    "sk-",
                    &settings,
                    Timestamp::now(),
                )
                .await
                .unwrap();
            id
        }

        fn run(&self, key: &str, price: i64) -> NewRun {
            NewRun {
                id: ids::new_run_id(),
                account_id: self.account.clone(),
                key_id: key.to_owned(),
                model: "runbase/echo".into(),
                input: serde_json::json!({"text": "p"}),
                price: Millicents(price),
                created_at: Timestamp::now(),
                test: false,
                idempotency: None,
                webhook: None,
                key_remembered: false,
            }
        }

        /// Writes `runs` as one writer batch on a connection of its own, and answers each.
        async fn batch(&self, runs: &[NewRun]) -> Vec<Result<(), CreateRunError>> {
            self.batch_with(runs, None).await
        }

        /// [`Setup::batch`] with a worker taking runs from their creates.
        async fn batch_with(
            &self,
            runs: &[NewRun],
            handoff: Option<&Handoff>,
        ) -> Vec<Result<(), CreateRunError>> {
            let conn = Connection::open(&self.path).unwrap();
            let mut answers = Vec::new();
            let creates = runs
                .iter()
                .map(|run| {
                    let (reply, rx) = oneshot::channel();
                    answers.push(rx);
                    Create::new(run.clone(), reply)
                })
                .collect();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            let (completions, _) = write(&conn, creates, handoff, &Cell::new(false));
            conn.execute_batch("COMMIT").unwrap();
            for c in completions {
                c(Ok(()));
            }
            let mut out = Vec::new();
            for (run, rx) in runs.iter().zip(answers) {
                // An admitted run is answered as created: its pending form.
                out.push(rx.await.unwrap().map(|created| {
                    assert_eq!(created, run.pending());
                }));
            }
            out
        }

        async fn check_ledger(&self) {
            let balance = self
                .store
                .account(&self.account)
                .await
                .unwrap()
                .unwrap()
                .balance;
            let ledger = self.store.ledger(&self.account, 1000, None).await.unwrap();
            assert_eq!(ledger.iter().map(|e| e.amount.0).sum::<i64>(), balance.0);
            // Newest first: each line's balance after is the previous one's plus its amount.
            for pair in ledger.windows(2) {
                assert_eq!(
                    pair[0].balance_after.0,
                    pair[1].balance_after.0 + pair[0].amount.0
                );
            }
            assert_eq!(ledger[0].balance_after, balance);
        }
    }

    #[tokio::test]
    async fn refused_runs_leave_their_batch_mates_admitted_with_exact_totals() {
        let s = setup(1_000).await;
        let limited = s
            .key(KeySettings {
                spend_limit: Some(Millicents(250)),
                ..Default::default()
            })
            .await;
        let quota = s
            .key(KeySettings {
                quota: Some(1),
                ..Default::default()
            })
            .await;
        let disabled = s.key(KeySettings::default()).await;
        s.store
            .update_key(
                &disabled,
                &KeyUpdate {
                    disabled: Some(true),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let open = s.key(KeySettings::default()).await;
        let runs = vec![
            s.run(&limited, 100),
            s.run(&disabled, 100),
            s.run(&limited, 100),
            s.run(&quota, 100),
            s.run(&limited, 100), // 300 > the limit of 250
            s.run(&quota, 100),   // the quota of 1 is used
            s.run("key_missing", 100),
            s.run(&open, 400), // 300 left
            s.run(&open, 400),
            s.run(&open, 0),
            s.run(&open, 300), // exactly what is left
            s.run(&open, 0),   // free: passes with nothing left
        ];
        let answers = s.batch(&runs).await;
        let got: Vec<String> = answers
            .iter()
            .map(|a| match a {
                Ok(()) => "ok".to_owned(),
                Err(e) => e.to_string(),
            })
            .collect();
        let want = [
            "ok",
            "key is no longer usable",
            "ok",
            "ok",
            "spend limit would be exceeded",
            "usage quota exhausted",
            "key is no longer usable",
            "ok",
            "insufficient balance",
            "ok",
            "ok",
            "ok",
        ];
        assert_eq!(got, want);
        for (run, answer) in runs.iter().zip(&answers) {
            let stored = s.store.get_run(&s.account, &run.id).await.unwrap();
            assert_eq!(
                stored.is_some(),
                answer.is_ok(),
                "run {} is stored only if admitted",
                run.id
            );
        }
        let account = s.store.account(&s.account).await.unwrap().unwrap();
        assert_eq!(account.balance, Millicents::ZERO);
        let k = s.store.key_by_id(&limited).await.unwrap().unwrap();
        assert_eq!((k.spent, k.runs_created), (Millicents(200), 2));
        let k = s.store.key_by_id(&quota).await.unwrap().unwrap();
        assert_eq!((k.spent, k.runs_created), (Millicents(100), 1));
        let k = s.store.key_by_id(&open).await.unwrap().unwrap();
        assert_eq!((k.spent, k.runs_created), (Millicents(700), 4));
        assert_eq!(k.last_used_at, Some(runs[11].created_at));
        let charges = s.store.ledger(&s.account, 1000, None).await.unwrap();
        // Free runs have no ledger line.
        assert_eq!(
            charges
                .iter()
                .filter(|e| e.kind == LedgerKind::RunCharge)
                .count(),
            5
        );
        s.check_ledger().await;
    }

    /// A group of many keys, each with a few runs: every key's totals land on its own row, and
    /// a key used with a quota of one is refused its second run.
    #[tokio::test]
    async fn a_group_of_many_keys_keeps_each_keys_totals() {
        let s = setup(1_000_000).await;
        let mut keys = Vec::new();
        for _ in 0..44 {
            keys.push(s.key(KeySettings::default()).await);
        }
        let one = s
            .key(KeySettings {
                quota: Some(1),
                ..Default::default()
            })
            .await;
        let mut runs = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            // Key i makes i % 3 + 1 runs of 10 * (i + 1) each.
            for _ in 0..i % 3 + 1 {
                runs.push(s.run(key, 10 * (i as i64 + 1)));
            }
        }
        runs.push(s.run(&one, 5));
        runs.push(s.run(&one, 5));
        // Written as one group (not the one-by-one fallback a failed group takes, which would
        // get the same totals).
        let conn = Connection::open(&s.path).unwrap();
        let creates: Vec<Create> = runs
            .iter()
            .map(|run| Create::new(run.clone(), oneshot::channel().0))
            .collect();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        let outcomes = grouped(&conn, &creates, None).unwrap();
        conn.execute_batch("COMMIT").unwrap();
        let refused: Vec<usize> = (0..outcomes.len())
            .filter(|&i| !matches!(outcomes[i], Ok(Ok(None))))
            .collect();
        assert_eq!(
            refused,
            vec![runs.len() - 1],
            "only the key of quota 1's second run"
        );
        for (i, key) in keys.iter().enumerate() {
            let k = s.store.key_by_id(key).await.unwrap().unwrap();
            let n = (i % 3 + 1) as u64;
            assert_eq!(
                (k.spent, k.runs_created),
                (Millicents(10 * (i as i64 + 1) * n as i64), n),
                "key {i}"
            );
        }
        let k = s.store.key_by_id(&one).await.unwrap().unwrap();
        assert_eq!((k.spent, k.runs_created), (Millicents(5), 1));
        s.check_ledger().await;
    }

    /// Not a check: a fixed load for counting the writer's instructions per create, run by
    /// `bench/writer_batch_instructions.sh` under callgrind, which counts `measured_batches`
    /// alone. `RUNBASE_BENCH_BATCHES` batches of `RUNBASE_BENCH_SIZE` creates, their keys taken
    /// in turn from `RUNBASE_BENCH_KEYS` keys of one account, each batch committed as the
    /// writer commits it, on a connection opened as the writer's. Unlike a server under
    /// callgrind, the batches are the same whatever the machine is doing.
    #[tokio::test]
    #[ignore = "a measurement: bench/writer_batch_instructions.sh"]
    async fn writer_batch_workload() {
        let env = |name: &str, default: usize| -> usize {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (batches, size, n_keys) = (
            env("RUNBASE_BENCH_BATCHES", 300),
            env("RUNBASE_BENCH_SIZE", 32),
            env("RUNBASE_BENCH_KEYS", 64),
        );
        let s = setup(1_000_000_000_000).await;
        let mut keys = Vec::new();
        for _ in 0..n_keys {
            keys.push(s.key(KeySettings::default()).await);
        }
        let conn = crate::pool::open_conn(&s.path, Durability::Full, crate::pool::WRITER_CACHE_KIB)
            .unwrap();
        let mut next = 0;
        let mut make = |count: usize| -> Vec<Vec<Create>> {
            (0..count)
                .map(|_| {
                    (0..size)
                        .map(|_| {
                            let run = s.run(&keys[next % keys.len()], 10);
                            next += 1;
                            Create::new(run, oneshot::channel().0)
                        })
                        .collect()
                })
                .collect()
        };
        let (warm, measured) = (make(20), make(batches));
        commit_batches(&conn, warm);
        measured_batches(&conn, measured);
        let runs: i64 = conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs as usize, (20 + batches) * size);
    }

    /// The part of `writer_batch_workload` callgrind counts.
    #[inline(never)]
    fn measured_batches(conn: &Connection, batches: Vec<Vec<Create>>) {
        commit_batches(conn, batches);
    }

    /// The writer's part of each batch: begin, the creates, commit, answers.
    fn commit_batches(conn: &Connection, batches: Vec<Vec<Create>>) {
        for creates in batches {
            conn.prepare_cached("BEGIN IMMEDIATE")
                .unwrap()
                .execute([])
                .unwrap();
            let (completions, _) = write(conn, creates, None, &Cell::new(false));
            conn.prepare_cached("COMMIT").unwrap().execute([]).unwrap();
            for c in completions {
                c(Ok(()));
            }
        }
    }

    #[tokio::test]
    async fn a_run_that_cannot_be_written_fails_alone() {
        let s = setup(1_000).await;
        let key = s.key(KeySettings::default()).await;
        let first = s.run(&key, 100);
        assert!(s.batch(std::slice::from_ref(&first)).await[0].is_ok());
        // The same id again makes the batch's multi-row insert fail; the batch is then written
        // run by run, and only the duplicate fails.
        let runs = vec![s.run(&key, 100), first.clone(), s.run(&key, 100)];
        let answers = s.batch(&runs).await;
        assert!(answers[0].is_ok());
        assert!(matches!(answers[1], Err(CreateRunError::Store(_))));
        assert!(answers[2].is_ok());
        let account = s.store.account(&s.account).await.unwrap().unwrap();
        assert_eq!(account.balance, Millicents(700));
        let k = s.store.key_by_id(&key).await.unwrap().unwrap();
        assert_eq!((k.spent, k.runs_created), (Millicents(300), 3));
        s.check_ledger().await;
    }

    /// Within one batch, runs are handed to the idle worker until one is queued (here a run with
    /// a webhook); a batch whose grouped write fails is written run by run, every run queued,
    /// and the slots its grouped attempt took are given back.
    #[tokio::test]
    async fn a_batch_hands_over_runs_until_one_is_queued_and_a_failed_batch_none() {
        use std::sync::atomic::AtomicBool;
        let s = setup(10_000).await;
        let key = s.key(KeySettings::default()).await;
        let slots = Arc::new(tokio::sync::Semaphore::new(3));
        let drained = Arc::new(AtomicBool::new(true));
        let (tx, mut handed) = tokio::sync::mpsc::unbounded_channel();
        let handoff = Handoff {
            slots: slots.clone(),
            drained: drained.clone(),
            ready: Arc::new(|| true),
            lease: std::time::Duration::from_secs(60),
            runs: tx,
        };
        let s = &s;
        let status = |id: String| async move {
            s.store
                .get_run(&s.account, &id)
                .await
                .unwrap()
                .unwrap()
                .status
        };
        let mut hooked = s.run(&key, 100);
        hooked.webhook = Some(runbase_domain::webhooks::Subscription {
            url: "https://example.com/hook".into(),
            events: 3,
        });
        let runs = vec![s.run(&key, 100), hooked, s.run(&key, 100)];
        let answers = s.batch_with(&runs, Some(&handoff)).await;
        assert!(answers.iter().all(Result::is_ok));
        let (first, _slot) = handed.try_recv().unwrap();
        assert_eq!(first.id, runs[0].id);
        assert!(handed.try_recv().is_err(), "no run after the queued one");
        assert_eq!(status(runs[0].id.clone()).await, RunStatus::Processing);
        for run in &runs[1..] {
            assert_eq!(status(run.id.clone()).await, RunStatus::Pending);
        }
        assert_eq!(slots.available_permits(), 2);
        assert!(!drained.load(Ordering::Acquire));

        drained.store(true, Ordering::Release);
        let retried = vec![s.run(&key, 100), runs[0].clone(), s.run(&key, 100)];
        let answers = s.batch_with(&retried, Some(&handoff)).await;
        assert!(answers[0].is_ok() && answers[1].is_err() && answers[2].is_ok());
        assert!(handed.try_recv().is_err(), "runs written alone are queued");
        assert_eq!(status(retried[0].id.clone()).await, RunStatus::Pending);
        assert_eq!(status(retried[2].id.clone()).await, RunStatus::Pending);
        assert_eq!(
            slots.available_permits(),
            2,
            "the grouped attempt's slot is back"
        );
        assert!(!drained.load(Ordering::Acquire));
        s.check_ledger().await;
    }

    #[tokio::test]
    async fn a_fresh_idempotency_key_creates_one_run_per_batch_and_after() {
        use runbase_domain::idempotency::FreshKey;
        let s = setup(1_000).await;
        let key = s.key(KeySettings::default()).await;
        let keyed = |idem: &str| {
            let mut run = s.run(&key, 100);
            run.idempotency = Some(RunMark {
                key: idem.to_owned(),
                claimed_at: run.created_at,
                fresh: Some(FreshKey {
                    fingerprint: "f".into(),
                    expired_before: Timestamp(0),
                }),
            });
            run
        };
        // Two requests with one key in the same batch (two processes sharing the file could
        // send them): the first creates its run, the second is told the key is taken and
        // writes nothing; another key in the same batch is not affected.
        let runs = vec![keyed("k1"), keyed("k1"), keyed("k2")];
        let answers = s.batch(&runs).await;
        assert!(answers[0].is_ok());
        assert!(matches!(answers[1], Err(CreateRunError::KeyTaken)));
        assert!(answers[2].is_ok());
        // In a later batch, the key's row is there.
        let again = s.batch(&[keyed("k1")]).await;
        assert!(matches!(again[0], Err(CreateRunError::KeyTaken)));
        let record = s
            .store
            .idempotency_record(&s.account, "k1", Timestamp(0))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.answer.map(|a| a.status), Some(201));
        let account = s.store.account(&s.account).await.unwrap().unwrap();
        assert_eq!(account.balance, Millicents(800));
        s.check_ledger().await;
    }

    #[tokio::test]
    async fn batches_larger_than_one_statement_keep_arrival_order() {
        let s = setup(1_000_000).await;
        let key = s.key(KeySettings::default()).await;
        // 32 + 8 + 4 + 2 + 1 rows: every statement size once.
        let runs: Vec<NewRun> = (0..47).map(|i| s.run(&key, 1 + i)).collect();
        assert!(s.batch(&runs).await.iter().all(Result::is_ok));
        let listed = s
            .store
            .list_runs(&s.account, &Default::default(), 100, None)
            .await
            .unwrap();
        let ids: Vec<&str> = listed.iter().rev().map(|r| r.id.as_str()).collect();
        let want: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, want);
        for run in &runs {
            let lines = s.store.run_ledger(&s.account, &run.id).await.unwrap();
            assert_eq!(lines.len(), 1);
            assert_eq!(lines[0].amount, -run.price);
        }
        s.check_ledger().await;
    }
}

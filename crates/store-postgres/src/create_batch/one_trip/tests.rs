#![allow(clippy::unwrap_used, reason = "tests")]

use super::*;
use crate::PgStore;
use crate::rows::{self, KEY_COLS};
use crate::testing::TestDatabase;
use runbase_domain::account::{ApiKey, KeySettings};
use runbase_domain::admission;
use runbase_domain::ids;
use runbase_domain::store::Store;

fn run(key: &str, account: &str, price: i64, at: i64) -> NewRun {
    NewRun {
        id: ids::new_run_id(),
        account_id: account.into(),
        key_id: key.into(),
        model: "runbase/echo".into(),
        input: serde_json::json!({"text": "t"}),
        price: Millicents(price),
        created_at: Timestamp(at),
        test: false,
        idempotency: None,
        webhook: None,
    }
}

#[test]
fn sums_add_up_each_key_and_account_in_arrival_order() {
    let runs = [
        run("k1", "a1", 100, 5),
        run("k2", "a1", 0, 9),
        run("k1", "a1", 30, 7),
        run("k3", "a2", 40, 1),
        run("k1", "a1", 0, 6),
    ];
    let refs: Vec<&NewRun> = runs.iter().collect();
    let sums = Sums::of(&refs).unwrap();
    assert_eq!(sums.key_ids, ["k1", "k2", "k3"]);
    assert_eq!(sums.key_accounts, ["a1", "a1", "a2"]);
    assert_eq!(sums.key_spent, [130, 0, 40]);
    // k1's last run is free: its spend before it is the whole 130, which must be below the limit.
    assert_eq!(sums.key_spent_before_last, [130, 0, 0]);
    assert_eq!(sums.key_runs, [3, 1, 1]);
    assert_eq!(sums.key_last, [7, 9, 1]);
    assert_eq!(sums.account_ids, ["a1", "a2"]);
    assert_eq!(sums.debits, [130, 40]);
    // One ledger line per priced run, each with its account's debit so far.
    assert_eq!(sums.debited, [100, 130, 40]);
}

#[test]
fn a_key_named_with_two_accounts_or_an_overflowing_sum_has_no_sums() {
    let runs = [run("k1", "a1", 1, 1), run("k1", "a2", 1, 1)];
    assert_eq!(Sums::of(&runs.iter().collect::<Vec<_>>()), None);
    let runs = [run("k1", "a1", i64::MAX, 1), run("k2", "a1", 1, 1)];
    assert_eq!(Sums::of(&runs.iter().collect::<Vec<_>>()), None);
}

/// A small deterministic generator (xorshift), so a failing case can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> i64 {
        i64::try_from(self.next() % n).unwrap()
    }
    fn one_in(&mut self, n: u64) -> bool {
        self.next().is_multiple_of(n)
    }
}

async fn key_row(client: &deadpool_postgres::Client, id: &str) -> ApiKey {
    let row = client
        .query_one(
            &format!("SELECT {KEY_COLS} FROM api_keys WHERE id = $1"),
            &[&id],
        )
        .await
        .unwrap();
    rows::api_key(&row).unwrap()
}

async fn balance(client: &deadpool_postgres::Client, id: &str) -> Millicents {
    let row = client
        .query_one(
            "SELECT balance_millicents FROM accounts WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap();
    Millicents(row.get(0))
}

/// The statement's summed checks against the admission rules, run by run: over random key and
/// account states and random batches, the batch is written exactly when `admission::admit`
/// admits every one of its runs, and then leaves the rows and ledger lines that admitting them
/// one by one would; otherwise nothing at all is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_a_batch_exactly_when_every_run_is_admitted_one_by_one() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = PgStore::connect_with_pool(&db.url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let now = Timestamp::now();
    let mut keys = Vec::new();
    let mut accounts = Vec::new();
    for (i, key_count) in [2, 1].into_iter().enumerate() {
        let account = store
            .create_account(&format!("a{i}@example.com"), now)
            .await
            .unwrap();
        for _ in 0..key_count {
            let secret = ids::generate_api_key(false);
            let key = store
                .create_key(
                    &account.id,
                    &ids::new_key_id(),
                    &secret.hash,
                    &secret.prefix,
                    &KeySettings::default(),
                    now,
                )
                .await
                .unwrap();
            keys.push((key.id, account.id.clone()));
        }
        accounts.push(account.id);
    }
    let client = store.pool.get().await.unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut written, mut refused) = (0, 0);
    for case in 0..600 {
        let t0 = now.0 + case * 1_000_000;
        // States and prices near the limits, so that the boundaries are hit: a spend at or one
        // run short of its limit, a quota with no room or one run's, an expiry at a run's time.
        for (id, _) in &keys {
            let spent = rng.below(200);
            let runs_created = rng.below(10);
            let room =
                [0, 0, 10, 25, 35, 50, 60, 75, 100, 150][usize::try_from(rng.below(10)).unwrap()];
            let limit =
                (!rng.one_in(3)).then(|| (spent + room - 10 * i64::from(rng.one_in(8))).max(0));
            let quota = (!rng.one_in(2)).then(|| (runs_created + rng.below(6) - 1).max(0));
            let expires = rng.one_in(3).then(|| t0 + rng.below(8) - 1);
            let deleted = rng.one_in(20).then_some(t0);
            client
                .execute(
                    "UPDATE api_keys SET spent_millicents = $2, runs_created = $3, quota = $4,
                         spend_limit_millicents = $5, disabled = $6, expires_at = $7,
                         deleted_at = $8
                     WHERE id = $1",
                    &[
                        id,
                        &spent,
                        &runs_created,
                        &quota,
                        &limit,
                        &rng.one_in(15),
                        &expires,
                        &deleted,
                    ],
                )
                .await
                .unwrap();
        }
        for id in &accounts {
            client
                .execute(
                    "UPDATE accounts SET balance_millicents = $2 WHERE id = $1",
                    &[
                        id,
                        &[0_i64, 10, 25, 50, 75, 100, 150, 300]
                            [usize::try_from(rng.below(8)).unwrap()],
                    ],
                )
                .await
                .unwrap();
        }
        let batch: Vec<NewRun> = (0..1 + rng.below(6))
            .map(|i| {
                let (key, account) = &keys[usize::try_from(rng.below(3)).unwrap()];
                // Now and then a run names another account than its key's.
                let account = if rng.one_in(25) {
                    &accounts[1]
                } else {
                    account
                };
                let price = [0, 0, 10, 25, 50, 100][usize::try_from(rng.below(6)).unwrap()];
                run(key, account, price, t0 + i)
            })
            .collect();
        let runs: Vec<&NewRun> = batch.iter().collect();

        // What admitting the runs one by one does, on copies of the rows.
        let mut key_rows = HashMap::new();
        let mut balances = HashMap::new();
        for (id, _) in &keys {
            key_rows.insert(id.clone(), key_row(&client, id).await);
        }
        for id in &accounts {
            balances.insert(id.clone(), balance(&client, id).await);
        }
        let (keys_before, balances_before) = (key_rows.clone(), balances.clone());
        let mut balances_after = Vec::new();
        let every_run_admitted = runs.iter().all(|run| {
            let key = key_rows.get_mut(&run.key_id).unwrap();
            let balance = balances.get_mut(&run.account_id).unwrap();
            let admitted = admission::admit(key, balance, run).is_ok();
            balances_after.push(*balance);
            admitted
        });

        let outcome = write(&client, None, &Refusals::default(), &runs)
            .await
            .unwrap_or_else(|_| panic!("case {case}: the batch failed"));
        assert_eq!(
            outcome.is_some(),
            every_run_admitted,
            "case {case}: keys {keys_before:?}, balances {balances_before:?}, runs {batch:?}"
        );
        let ids: Vec<&str> = runs.iter().map(|r| r.id.as_str()).collect();
        let ledger: HashMap<String, i64> = client
            .query(
                "SELECT run_id, balance_after_millicents FROM ledger WHERE run_id = ANY($1)",
                &[&ids],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let stored_runs: i64 = client
            .query_one("SELECT count(*) FROM runs WHERE id = ANY($1)", &[&ids])
            .await
            .unwrap()
            .get(0);
        let (expect_keys, expect_balances) = if every_run_admitted {
            written += 1;
            assert_eq!(stored_runs, i64::try_from(runs.len()).unwrap());
            for (run, after) in runs.iter().zip(&balances_after) {
                let line = ledger.get(&run.id).copied();
                let expected = (run.price > Millicents::ZERO).then_some(after.0);
                assert_eq!(line, expected, "case {case}: the ledger line of {}", run.id);
            }
            (key_rows, balances)
        } else {
            refused += 1;
            assert_eq!((stored_runs, ledger.len()), (0, 0), "case {case}");
            (keys_before, balances_before)
        };
        for (id, _) in &keys {
            let key = key_row(&client, id).await;
            let expected = &expect_keys[id];
            assert_eq!(
                (key.spent, key.runs_created),
                (expected.spent, expected.runs_created),
                "case {case}: key {id}"
            );
        }
        for id in &accounts {
            assert_eq!(
                balance(&client, id).await,
                expect_balances[id],
                "case {case}"
            );
        }
    }
    // Both ways were taken often enough to mean something.
    assert!(
        written > 50 && refused > 50,
        "{written} written, {refused} refused"
    );
}

/// A migrated store with one account holding `balance` millicents and one key; the account's
/// and the key's ids.
async fn one_key(db: &TestDatabase, balance: i64) -> (PgStore, String, String) {
    let store = PgStore::connect_with_pool(&db.url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let now = Timestamp::now();
    let account = store.create_account("o@example.com", now).await.unwrap();
    if balance > 0 {
        store
            .add_credits(&account.id, Millicents(balance), "seed", None, now)
            .await
            .unwrap();
    }
    let secret = ids::generate_api_key(false);
    let key = store
        .create_key(
            &account.id,
            &ids::new_key_id(),
            &secret.hash,
            &secret.prefix,
            &KeySettings::default(),
            now,
        )
        .await
        .unwrap();
    (store, account.id, key.id)
}

/// The statement waits for a row another transaction holds, and then checks and charges the
/// row as that transaction left it: a top-up committed while the batch waited pays for it,
/// and the ledger lines continue from the topped-up balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_waiting_for_a_lock_checks_the_row_as_committed_meanwhile() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (store, account, key) = one_key(&db, 0).await;
    let (mut other, conn) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let top_up = other.transaction().await.unwrap();
    top_up
        .execute(
            "UPDATE accounts SET balance_millicents = balance_millicents + 1000 WHERE id = $1",
            &[&account],
        )
        .await
        .unwrap();
    let now = Timestamp::now().0;
    let batch = [
        run(&key, &account, 300, now),
        run(&key, &account, 500, now + 1),
    ];
    let client = store.pool.get().await.unwrap();
    let writing = tokio::spawn(async move {
        let runs: Vec<&NewRun> = batch.iter().collect();
        let written = write(&client, None, &Refusals::default(), &runs).await;
        (
            written
                .map(|w| w.map(|w| w.outcomes.len()))
                .map_err(|e| match e {
                    Failed::NothingSent(e) | Failed::MaybeCommitted(e, _) => e.to_string(),
                }),
            batch,
        )
    });
    // Long enough for the statement to be waiting on the account's lock.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writing.is_finished(),
        "the batch did not wait for the lock"
    );
    top_up.commit().await.unwrap();
    let (written, batch) = writing.await.unwrap();
    assert_eq!(
        written,
        Ok(Some(2)),
        "the batch is written against the new balance"
    );
    let client = store.pool.get().await.unwrap();
    assert_eq!(balance(&client, &account).await, Millicents(200));
    for (run, after) in batch.iter().zip([700_i64, 200]) {
        let line: i64 = client
            .query_one(
                "SELECT balance_after_millicents FROM ledger WHERE run_id = $1",
                &[&run.id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(line, after);
    }
}

/// With this process's worker idle, runs are written already claimed by it, in order, until
/// one is left queued (here a run with a webhook, whose `start` event a claim writes); from
/// then on every run is queued, and the worker is told to claim before taking more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_handed_to_an_idle_worker_in_order_until_one_is_queued() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (store, account, key) = one_key(&db, 10_000).await;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let handoff = Handoff {
        slots: std::sync::Arc::new(tokio::sync::Semaphore::new(8)),
        drained: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        lease: Duration::from_secs(30),
        runs: tx,
    };
    let now = Timestamp::now().0;
    let mut batch: Vec<NewRun> = (0..4).map(|i| run(&key, &account, 10, now + i)).collect();
    batch[2].webhook = Some(runbase_domain::webhooks::Subscription {
        url: "https://example.com/hook".into(),
        events: 1,
    });
    let runs: Vec<&NewRun> = batch.iter().collect();
    let client = store.pool.get().await.unwrap();
    let Ok(Some(written)) = write(&client, Some(&handoff), &Refusals::default(), &runs).await
    else {
        panic!("the batch was not written");
    };
    let handed: Vec<&str> = written.handed.iter().map(|(r, _)| r.id.as_str()).collect();
    assert_eq!(handed, [batch[0].id.as_str(), batch[1].id.as_str()]);
    assert!(written.queued);
    assert_eq!(
        handoff.slots.available_permits(),
        6,
        "a slot per handed run"
    );
    assert!(
        !handoff.drained.load(std::sync::atomic::Ordering::Acquire),
        "no later run may be handed over before the queued ones are claimed"
    );
    for (i, run) in batch.iter().enumerate() {
        let row = client
            .query_one(
                "SELECT status, attempts, locked_until IS NOT NULL FROM runs WHERE id = $1",
                &[&run.id],
            )
            .await
            .unwrap();
        let expected = if i < 2 {
            ("processing", 1, true)
        } else {
            ("pending", 0, false)
        };
        assert_eq!(
            (
                row.get::<_, String>(0).as_str(),
                row.get::<_, i64>(1),
                row.get::<_, bool>(2)
            ),
            expected,
            "run {i}"
        );
    }
    drop(written);
    assert_eq!(handoff.slots.available_permits(), 8);
}

/// A batch refused by the statement writes nothing and gives back the slots it took; a key
/// that refused a run lately keeps its batches off the one-trip form for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_batch_gives_its_slots_back_and_a_refusal_is_remembered() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let (store, account, key) = one_key(&db, 100).await;
    let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
    let handoff = Handoff {
        slots: std::sync::Arc::new(tokio::sync::Semaphore::new(8)),
        drained: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        lease: Duration::from_secs(30),
        runs: tx,
    };
    let now = Timestamp::now().0;
    let batch = [
        run(&key, &account, 60, now),
        run(&key, &account, 60, now + 1),
    ];
    let runs: Vec<&NewRun> = batch.iter().collect();
    let client = store.pool.get().await.unwrap();
    let refusals = Refusals::default();
    let written = write(&client, Some(&handoff), &refusals, &runs).await;
    assert!(matches!(written, Ok(None)), "120 is more than the balance");
    assert_eq!(handoff.slots.available_permits(), 8);
    assert!(handoff.drained.load(std::sync::atomic::Ordering::Acquire));
    assert_eq!(balance(&client, &account).await, Millicents(100));

    // One run fits; but once the account refused a run, its batches skip the statement.
    let one = [run(&key, &account, 60, now + 2)];
    let one: Vec<&NewRun> = one.iter().collect();
    refusals.note(&account);
    assert!(matches!(
        write(&client, None, &refusals, &one).await,
        Ok(None)
    ));
    assert!(!refusals.any(&runs[..0]));
    assert!(matches!(
        write(&client, None, &Refusals::default(), &one).await,
        Ok(Some(_))
    ));
    assert_eq!(balance(&client, &account).await, Millicents(40));
}

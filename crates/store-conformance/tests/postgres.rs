//! What only the PostgreSQL store has to show: exact money when many connections (as many
//! processes would) create at once, the ledger's triggers and the balance's CHECK in the
//! database itself, explicit migrations, and LISTEN/NOTIFY between nodes.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::money::Millicents;
use runbase_domain::store::{CreateRunError, Store};
use runbase_domain::time::Timestamp;
use runbase_store_conformance::{Backend, Fixture};
use runbase_store_postgres::PgStore;
use runbase_store_postgres::testing::TestDatabase;
use std::sync::Arc;
use std::time::Duration;

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// 20,000 analyzed runs, `run_x1` to `run_x20000`: every hundredth is the fixture's account's,
/// the others `acct_other`'s; `status` and `created_at` are SQL expressions of `g`, the run's
/// number.
async fn fill_runs(db: &tokio_postgres::Client, f: &Fixture, status: &str, created_at: &str) {
    db.batch_execute(&format!(
        "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at)
           SELECT 'run_x' || g, CASE WHEN g % 100 = 0 THEN '{acct}' ELSE 'acct_other' END, '{key}',
                  'runbase/echo', {status}, '{{}}', 0, {created_at}
           FROM generate_series(1, 20000) g;
         ANALYZE runs",
        acct = f.account,
        key = f.keys[0].id,
    ))
    .await
    .unwrap();
}

/// What `EXPLAIN` printed for `sql`, one plan line a line.
async fn explained(db: &tokio_postgres::Client, sql: &str) -> String {
    db.simple_query(sql)
        .await
        .unwrap()
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Fires `n` creates of `price` on key `key`, spread over `nodes` stores (each its own pool of
/// connections); returns how many were admitted and the refusals seen.
async fn burst(
    f: &Fixture,
    nodes: &[Arc<PgStore>],
    key: usize,
    price: i64,
    n: usize,
) -> (usize, Vec<String>) {
    let mut tasks = Vec::new();
    for i in 0..n {
        let store = nodes[i % nodes.len()].clone();
        let run = f.new_run(key, price);
        tasks.push(tokio::spawn(async move { store.create_run(run).await }));
    }
    let (mut ok, mut refused) = (0, Vec::new());
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CreateRunError::Store(e)) => panic!("store error: {e}"),
            Err(e) => refused.push(e.to_string()),
        }
    }
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_connections_creating_at_once_keep_balance_spend_limit_and_quota_exact() {
    // 10 $ of credit; the limited key may spend 0.60 $, the quota key create 25 runs.
    let Some(f) = Fixture::new(Backend::Postgres, 1000, 60, 25).await else {
        return;
    };
    let url = f.fresh.url.clone().unwrap();
    let mut nodes = Vec::new();
    // Six "nodes" of eight connections each (the server allows 100 in all).
    for _ in 0..6 {
        nodes.push(Arc::new(PgStore::connect_with_pool(&url, 8).await.unwrap()));
    }
    let cent = 1000;

    let (ok, refused) = burst(&f, &nodes, 1, cent, 300).await;
    assert_eq!(ok, 60, "the spend limit admits exactly 60 runs of 1 cent");
    assert!(
        refused.iter().all(|e| e.contains("spend limit")),
        "{refused:?}"
    );

    let (ok, refused) = burst(&f, &nodes, 2, cent, 100).await;
    assert_eq!(ok, 25, "the quota admits exactly 25 runs");
    assert!(refused.iter().all(|e| e.contains("quota")), "{refused:?}");

    // 10 $ - 0.85 $ = 9.15 $ left: exactly 183 runs of 5 cents, then the balance is 0.
    let (ok, refused) = burst(&f, &nodes, 0, 5 * cent, 400).await;
    assert_eq!(ok, 183, "the balance admits exactly 183 runs of 5 cents");
    assert!(refused.iter().all(|e| e.contains("balance")), "{refused:?}");

    let account = f.store.account(&f.account).await.unwrap().unwrap();
    assert_eq!(account.balance, Millicents::ZERO);
    let limited = f.store.key_by_id(&f.keys[1].id).await.unwrap().unwrap();
    assert_eq!(limited.spent.0, 60 * cent);
    let quota = f.store.key_by_id(&f.keys[2].id).await.unwrap().unwrap();
    assert_eq!(quota.runs_created, 25);
    let runs = f
        .store
        .list_runs(&f.account, &Default::default(), 10_000, None)
        .await
        .unwrap();
    assert_eq!(runs.len(), 60 + 25 + 183);
    f.check_invariants().await;
}

/// A create batch that lost its connection after sending its `COMMIT` settles its runs by
/// looking for them, then making each alone; the commit may become visible only after that
/// look. A run made alone that the batch did make is answered as created, once: not refused
/// (here the batch's own charge used the last cent) and not made twice. The batch is played by
/// a transaction of its own that holds the run's key, as a batch does, while the lone attempt
/// starts, and commits only after.
#[tokio::test]
async fn a_run_settled_alone_after_its_batch_committed_is_not_made_again() {
    // 1 cent of credit.
    let Some(f) = Fixture::new(Backend::Postgres, 1, 0, 0).await else {
        return;
    };
    let url = f.fresh.url.clone().unwrap();
    let pg = Arc::new(PgStore::connect(&url).await.unwrap());
    let run = f.new_run(0, 1000);
    let batch = raw(&url).await;
    batch.batch_execute("BEGIN").await.unwrap();
    batch
        .execute(
            "SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE",
            &[&run.key_id],
        )
        .await
        .unwrap();
    batch
        .execute(
            "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at)
             VALUES ($1, $2, $3, $4, 'pending', '{}', 1000, $5)",
            &[&run.id, &run.account_id, &run.key_id, &run.model, &run.created_at.0],
        )
        .await
        .unwrap();
    batch
        .batch_execute(&format!(
            "UPDATE accounts SET balance_millicents = 0 WHERE id = '{}';
             UPDATE api_keys SET spent_millicents = 1000, runs_created = 1 WHERE id = '{}';
             INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, key_id, memo, created_at)
             VALUES ('{}', 'run_charge', -1000, 0, '{}', '{}', 'runbase/echo', {})",
            run.account_id, run.key_id, run.account_id, run.id, run.key_id, run.created_at.0
        ))
        .await
        .unwrap();
    let alone = {
        let (pg, run) = (pg.clone(), run.clone());
        tokio::spawn(
            async move { runbase_store_postgres::testing::create_run_alone(&pg, &run).await },
        )
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !alone.is_finished(),
        "the lone attempt waits for the run's key"
    );
    batch.batch_execute("COMMIT").await.unwrap();
    let again = alone.await.unwrap().unwrap();
    assert_eq!(again.id, run.id);
    let runs: i64 = batch
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1);
    let account = f.store.account(&f.account).await.unwrap().unwrap();
    assert_eq!(account.balance, Millicents(0));
    f.check_invariants().await;
    // A run the batch did not make is still made alone, and still checked.
    let refused = runbase_store_postgres::testing::create_run_alone(&pg, &f.new_run(0, 1000)).await;
    assert!(
        matches!(refused, Err(CreateRunError::InsufficientBalance)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn the_ledger_is_append_only_and_the_balance_never_negative_in_the_database() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let db = raw(f.fresh.url.as_deref().unwrap()).await;
    for sql in [
        "UPDATE ledger SET amount_millicents = 1",
        "DELETE FROM ledger",
        "TRUNCATE ledger CASCADE",
    ] {
        let e = db.batch_execute(sql).await.unwrap_err();
        assert!(
            e.as_db_error().unwrap().message().contains("append-only"),
            "{sql}: {e:?}"
        );
    }
    let e = db
        .batch_execute("UPDATE accounts SET balance_millicents = -1")
        .await
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("check constraint"),
        "{e:?}"
    );
    // A second charge of the same run is refused by the database too.
    let run = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
    let e = db
        .execute(
            "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, created_at)
             VALUES ($1, 'run_charge', -1000, 0, $2, 0)",
            &[&f.account, &run.id],
        )
        .await
        .unwrap_err();
    assert!(
        e.as_db_error()
            .unwrap()
            .message()
            .contains("ledger_one_charge_per_run"),
        "{e:?}"
    );
    f.check_invariants().await;
}

#[tokio::test]
async fn migrations_are_explicit_and_a_newer_schema_is_refused() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let store = PgStore::connect(&db.url).await.unwrap();
    let v = store.schema().await.unwrap();
    assert_eq!(v.applied, 0);
    assert!(v.problem().unwrap().contains("runbase migrate"), "{v:?}");

    // Two nodes migrating at once apply each migration once.
    let other = PgStore::connect(&db.url).await.unwrap();
    let (a, b) = tokio::join!(store.migrate(), other.migrate());
    assert_eq!(a.unwrap() + b.unwrap(), v.latest as usize);
    let v = store.schema().await.unwrap();
    assert!(v.is_current() && v.problem().is_none(), "{v:?}");
    assert_eq!(store.migrate().await.unwrap(), 0);

    // A later release migrated this database: this build refuses it, and will not "migrate" it.
    raw(&db.url)
        .await
        .batch_execute(&format!(
            "INSERT INTO runbase_migrations (version) VALUES ({})",
            v.latest + 1
        ))
        .await
        .unwrap();
    let v = store.schema().await.unwrap();
    assert!(
        v.problem().unwrap().contains("newer than this build"),
        "{v:?}"
    );
    assert!(store.migrate().await.is_err());
    drop((store, other));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_created_on_one_node_wakes_the_idle_worker_of_another() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let other = PgStore::connect(f.fresh.url.as_deref().unwrap())
        .await
        .unwrap();
    let signal = other.queue_signal();
    // The listener signals once when it starts listening; wait for that, so what follows can
    // only be woken by the NOTIFY.
    tokio::time::timeout(Duration::from_secs(10), signal.notified())
        .await
        .expect("the LISTEN connection never came up");
    let wake = signal.notified();
    f.store.create_run(f.new_run(0, 1000)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), wake)
        .await
        .expect("no NOTIFY reached the other node");
    let now = Timestamp::now();
    assert_eq!(
        other
            .claim_runs(5, now, runbase_store_conformance::lease(now, 30))
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_one_node_is_announced_to_the_others() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let other = PgStore::connect(f.fresh.url.as_deref().unwrap())
        .await
        .unwrap();
    let mut cancels = other.cancellations().unwrap();
    tokio::time::timeout(Duration::from_secs(10), other.queue_signal().notified())
        .await
        .expect("the LISTEN connection never came up");
    let run = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
    let now = Timestamp::now();
    let claimed = other
        .claim_runs(5, now, runbase_store_conformance::lease(now, 30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    f.store
        .cancel_run(&f.account, &run.id, Timestamp::now())
        .await
        .unwrap();
    let announced = tokio::time::timeout(Duration::from_secs(10), cancels.recv())
        .await
        .expect("no cancel reached the other node")
        .unwrap();
    assert_eq!(announced, run.id);
    // A run already finished is not announced again.
    f.store
        .cancel_run(&f.account, &run.id, Timestamp::now())
        .await
        .unwrap();
    f.check_invariants().await;
}

/// On PostgreSQL the other nodes' workers learn of queued runs by NOTIFY: a run handed to this
/// node's idle worker in its create is not announced, a run queued for a claim is, and the
/// handed run's row holds its lease. (What is handed over and what is queued, on every store:
/// `queue.rs`, `an_idle_worker_is_handed_runs_in_their_creates`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_handed_to_an_idle_worker_are_not_announced_to_other_nodes() {
    use runbase_domain::store::Handoff;
    use std::sync::atomic::{AtomicBool, Ordering};

    let Some(f) = Fixture::new(Backend::Postgres, 1000, 1000, 1000).await else {
        return;
    };
    let url = f.fresh.url.clone().unwrap();
    let node = PgStore::connect_with_pool(&url, 4).await.unwrap();
    let slots = Arc::new(tokio::sync::Semaphore::new(1));
    let drained = Arc::new(AtomicBool::new(true));
    let (tx, mut handed) = tokio::sync::mpsc::unbounded_channel();
    node.hand_off_to(Handoff {
        slots: slots.clone(),
        drained: drained.clone(),
        ready: Arc::new(|| true),
        lease: Duration::from_secs(60),
        runs: tx,
    });
    let db = raw(&url).await;
    // Every announcement on the queue channel, as another node's listener sees them.
    let (listener, mut conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (announced_tx, mut announced) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(m)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = m {
                let _ = announced_tx.send(n.channel().to_owned());
            }
        }
    });
    listener
        .batch_execute("LISTEN runbase_queue")
        .await
        .unwrap();
    async fn quiet(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> bool {
        tokio::time::timeout(Duration::from_millis(300), rx.recv())
            .await
            .is_err()
    }

    // Idle with one slot: the first run is handed over, the second queued.
    let first = node.create_run(f.new_run(0, 1000)).await.unwrap();
    let (run, _slot) = handed.try_recv().expect("the first run is handed over");
    assert_eq!(run.id, first.id);
    assert!(
        quiet(&mut announced).await,
        "a run handed over is not announced"
    );
    let row = db
        .query_one(
            "SELECT status, attempts, locked_until > started_at FROM runs WHERE id = $1",
            &[&first.id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, bool>(2)
        ),
        ("processing".into(), 1, true)
    );
    node.create_run(f.new_run(0, 1000)).await.unwrap();
    assert!(handed.try_recv().is_err());
    assert!(!quiet(&mut announced).await, "a queued run is announced");
    assert!(!drained.load(Ordering::Acquire));
    f.check_invariants().await;
}

/// The statements that read many requests' keys and runs at once find each one by a probe of a
/// unique index, with custom and generic plans, on young tables and on analyzed ones where one
/// account holds every run: never a scan of `runs` or `api_keys`, never every run of the
/// account through `runs_by_account` (which a flattened join chose: 2.3 s for 128 GETs).
#[tokio::test]
async fn batched_key_reads_probe_the_unique_indexes() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let db = raw(f.fresh.url.as_deref().unwrap()).await;
    let [keys, keys_and_runs] = runbase_store_postgres::testing::batched_read_statements();
    db.batch_execute(&format!(
        "PREPARE keys(text[]) AS {keys}; PREPARE keys_and_runs(text[], text[]) AS {keys_and_runs}"
    ))
    .await
    .unwrap();
    let hashes = format!("'{{{},{}}}'", f.keys[0].hash.0, f.keys[1].hash.0);
    for tables in ["young", "analyzed"] {
        if tables == "analyzed" {
            db.batch_execute(&format!(
                "INSERT INTO api_keys (id, account_id, name, prefix, hash, created_at)
                   SELECT 'key_x' || g, '{acct}', 'k', 'sk-x', 'h' || g, 0 FROM generate_series(1, 2000) g;
                 INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at)
                   SELECT 'run_x' || g, '{acct}', '{key}', 'runbase/echo', 'succeeded', '{{}}', 0, 0
                   FROM generate_series(1, 20000) g;
                 ANALYZE api_keys; ANALYZE runs",
                acct = f.account,
                key = f.keys[0].id,
            ))
            .await
            .unwrap();
        }
        for mode in ["force_custom_plan", "force_generic_plan"] {
            db.batch_execute(&format!("SET plan_cache_mode = {mode}"))
                .await
                .unwrap();
            let plan = explained(&db, &format!("EXPLAIN EXECUTE keys({hashes})")).await;
            assert!(
                plan.contains("api_keys_hash_key"),
                "{tables}, {mode}:\n{plan}"
            );
            assert!(!plan.contains("Seq Scan"), "{tables}, {mode}:\n{plan}");
            let plan = explained(
                &db,
                &format!("EXPLAIN EXECUTE keys_and_runs({hashes}, '{{run_x1,run_x2}}')"),
            )
            .await;
            for index in ["api_keys_hash_key", "runs_id_key"] {
                assert!(plan.contains(index), "{tables}, {mode}:\n{plan}");
            }
            for scan in ["Seq Scan", "runs_by_account", "Bitmap"] {
                assert!(!plan.contains(scan), "{tables}, {mode}:\n{plan}");
            }
        }
    }
}

/// The batched successes keep one plan per connection, so it must read only the batch's runs
/// whatever the statistics said when it was made: on a young `runs` (never analyzed), on one
/// analyzed while empty (where, left to its estimates, the planner walked all of `runs_id_key`),
/// and on one analyzed with many runs, a tenth of them `processing`; also where the server or
/// role turned hash and merge joins off.
#[tokio::test]
async fn batched_successes_read_only_the_batchs_runs_whatever_plan_they_keep() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let db = raw(f.fresh.url.as_deref().unwrap()).await;
    let (settings, statement) = runbase_store_postgres::testing::success_batch_statement();
    for tables in [
        "young",
        "analyzed empty",
        "analyzed",
        "joins off for the role",
    ] {
        match tables {
            // As a server or role configured so would have it: the transaction turns on what
            // its plan needs.
            "joins off for the role" => db
                .batch_execute("SET enable_hashjoin = off; SET enable_mergejoin = off")
                .await
                .unwrap(),
            "analyzed empty" => db.batch_execute("ANALYZE runs").await.unwrap(),
            "analyzed" => db
                .batch_execute(&format!(
                    "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at)
                       SELECT 'run_x' || g, '{acct}', '{key}', 'runbase/echo',
                              CASE WHEN g % 10 = 0 THEN 'processing' ELSE 'succeeded' END, '{{}}', 0, 0
                       FROM generate_series(1, 20000) g;
                     ANALYZE runs",
                    acct = f.account,
                    key = f.keys[0].id,
                ))
                .await
                .unwrap(),
            _ => {}
        }
        // As `write_successes` sends it: the settings in the transaction, then the statement.
        db.batch_execute(&format!(
            "{settings}; PREPARE successes(text[], text[], bigint[], bigint[]) AS {statement}"
        ))
        .await
        .unwrap();
        let plan = explained(
            &db,
            r#"EXPLAIN EXECUTE successes('{run_x10,run_x20}', '{"{}","{}"}', '{1,2}', '{1,1}')"#,
        )
        .await;
        db.batch_execute("DEALLOCATE successes; ROLLBACK")
            .await
            .unwrap();
        // Both reads of `runs` probe the unique index for the batch's ids, and nothing else.
        assert_eq!(
            plan.matches("Index Scan using runs_id_key").count(),
            2,
            "{tables}:\n{plan}"
        );
        assert_eq!(
            plan.matches("Index Cond: (id = ANY ($1))").count(),
            2,
            "{tables}:\n{plan}"
        );
        for scan in [
            "Seq Scan",
            "Bitmap",
            "Nested Loop",
            "runs_leases",
            "runs_pkey",
            "runs_by_account",
            "Join Filter",
            "JIT",
        ] {
            assert!(!plan.contains(scan), "{tables}:\n{plan}");
        }
    }
}

/// A full batch of successes announces its runs in payloads under PostgreSQL's 8,000-byte
/// limit even with the longest ids a run id may have (64 characters; Runbase's are 30): a
/// payload over it would fail the whole batch.
#[tokio::test]
async fn a_full_batch_of_successes_with_long_ids_is_written_and_announced() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let db = raw(f.fresh.url.as_deref().unwrap()).await;
    let ids: Vec<String> = (0..256).map(|i| format!("run_{i:0>60}")).collect();
    db.batch_execute(&format!(
        "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at, attempts)
           SELECT 'run_' || lpad(g::text, 60, '0'), '{acct}', '{key}', 'runbase/echo', 'processing', '{{}}', 0, 0, 1
           FROM generate_series(0, 255) g",
        acct = f.account,
        key = f.keys[0].id,
    ))
    .await
    .unwrap();
    let (settings, statement) = runbase_store_postgres::testing::success_batch_statement();
    let outputs = vec!["{}"; ids.len()];
    let times = vec![1_i64; ids.len()];
    let attempts = vec![1_i64; ids.len()];
    db.batch_execute(settings).await.unwrap();
    // One row per notification sent.
    let payloads = db
        .query(statement, &[&ids, &outputs, &times, &attempts])
        .await
        .unwrap()
        .len();
    db.batch_execute("COMMIT").await.unwrap();
    // Three payloads of at most 7,000 bytes of ids and one id more (256 ids of 65 bytes).
    assert_eq!(payloads, 3);
    let done: i64 = db
        .query_one("SELECT count(*) FROM runs WHERE status = 'succeeded'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(done, 256);
}

/// Migration 0010 made the per-account indexes ascending (new entries are appended, not put
/// first): a small account's runs and ledger lines, newest first, are still read by walking that
/// index backwards, never sorted and never by walking every row, with the tables analyzed.
#[tokio::test]
async fn an_accounts_runs_and_ledger_are_listed_newest_first_without_a_sort() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let db = raw(f.fresh.url.as_deref().unwrap()).await;
    fill_runs(&db, &f, "'succeeded'", "0").await;
    db.batch_execute(&format!(
        "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, created_at)
           SELECT CASE WHEN g % 100 = 0 THEN '{acct}' ELSE 'acct_other' END, 'topup', 1, g, 0
           FROM generate_series(1, 20000) g;
         ANALYZE ledger",
        acct = f.account,
    ))
    .await
    .unwrap();
    for (sql, index) in [
        (
            format!(
                "EXPLAIN SELECT id FROM runs WHERE account_id = '{}' AND test = false
                 AND seq < 9223372036854775807 ORDER BY seq DESC LIMIT 20",
                f.account
            ),
            "runs_by_account",
        ),
        (
            format!(
                "EXPLAIN SELECT id FROM ledger WHERE account_id = '{}' AND id < 9223372036854775807
                 ORDER BY id DESC LIMIT 20",
                f.account
            ),
            "ledger_by_account",
        ),
    ] {
        let plan = explained(&db, &sql).await;
        assert!(
            plan.contains(&format!("Scan Backward using {index}")),
            "{sql}:\n{plan}"
        );
        assert!(!plan.contains("Sort"), "{sql}:\n{plan}");
    }
}

/// Migration 0011 put the runs' mode in `runs_by_account`: every listing of an account's runs
/// (one mode, or both merged, with a window or not) and every window's end walk its ranges
/// backwards, in custom and generic plans, never the table or the primary key on `seq`, and read
/// no more rows than the page or the window; one mode's are never sorted. The account's 3,000
/// runs (a third of them test runs) are all older than 60,000 runs of other accounts: a walk of
/// the primary key from the newest run, which the planner chose for an `ORDER BY seq DESC` (the
/// review), passes all those first.
#[tokio::test]
async fn every_listing_of_an_accounts_runs_walks_its_index() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let db = raw(f.fresh.url.as_deref().unwrap()).await;
    db.batch_execute(&format!(
        "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at, test)
           SELECT 'run_x' || g, CASE WHEN g <= 3000 THEN '{acct}' ELSE 'acct_other' || g % 7 END,
                  '{key}', 'runbase/echo', 'succeeded', '{{}}', 0, g, g % 3 = 0
           FROM generate_series(1, 63000) g",
        acct = f.account,
        key = f.keys[0].id,
    ))
    .await
    .unwrap();
    db.batch_execute("VACUUM ANALYZE runs").await.unwrap();
    // Every number of rows a plan node says it read or removed.
    let counts = |plan: &str, label: &str| -> Vec<u64> {
        plan.match_indices(label)
            .map(|(at, _)| {
                let digits: String = plan[at + label.len()..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                digits.parse().unwrap()
            })
            .collect()
    };
    for (sql, params) in runbase_store_postgres::testing::run_listing_statements() {
        // A listing's parameters (account, status, model, cursor, limit[, window]), or a window
        // end's (account, cursor, runs to skip).
        let (types, args, most) = match params {
            3 => ("text, text, bigint", "NULL, 5", 12),
            5 => ("text, text, text, text, bigint", "NULL, NULL, NULL, 20", 40),
            _ => (
                "text, text, text, text, bigint, bigint",
                "'failed', NULL, NULL, 20, 2000",
                4_000,
            ),
        };
        for mode in ["force_custom_plan", "force_generic_plan"] {
            db.batch_execute(&format!(
                "BEGIN; SET LOCAL plan_cache_mode = {mode}; PREPARE listing({types}) AS {sql}"
            ))
            .await
            .unwrap();
            let plan = explained(
                &db,
                &format!(
                    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) EXECUTE listing('{}', {args})",
                    f.account
                ),
            )
            .await;
            db.batch_execute("DEALLOCATE listing; ROLLBACK")
                .await
                .unwrap();
            assert!(
                plan.contains("Scan Backward using runs_by_account"),
                "{mode}: {sql}:\n{plan}"
            );
            for node in ["Seq Scan", "Bitmap", "Scan Backward using runs_pkey"] {
                assert!(!plan.contains(node), "{mode}: {sql}:\n{plan}");
            }
            // One mode's range is in order already; two are merged by a sort of their rows.
            if !sql.contains("UNION ALL") {
                assert!(!plan.contains("Sort (actual"), "{mode}: {sql}:\n{plan}");
            }
            // The account's runs only, and at most the page's or the window's of them (two
            // ranges' worth: a page's 20 or a window's 2,000 of each mode). Unwindowed listings
            // are asked without a filter, as every caller asks them; a filter nothing passes
            // reads every run of the modes, which is what windows are for.
            for n in counts(&plan, " rows=")
                .into_iter()
                .chain(counts(&plan, "Rows Removed by Filter: "))
            {
                assert!(n <= most, "{mode}: {sql}:\n{plan}");
            }
        }
    }
}

/// The claim and a window's end find runs without `runs_pkey`, the primary key on `seq`, so that
/// a later release can drop it (docs/DECISIONS.md, "The key on `seq`, dropped in two releases"):
/// every version of a run takes an entry in it, and a node of this build must stay fast on a
/// schema without it. With the tables analyzed, with the key, without it, and with every run
/// pending (a backlog), in custom and generic plans, neither statement reads all of `runs` or
/// uses the key, and both find the right runs.
#[tokio::test]
async fn the_claim_and_a_windows_end_do_without_the_key_on_seq() {
    let Some(f) = Fixture::new(Backend::Postgres, 5, 0, 0).await else {
        return;
    };
    let db = raw(f.fresh.url.as_deref().unwrap()).await;
    fill_runs(
        &db,
        &f,
        "CASE WHEN g % 50 = 0 THEN 'pending' ELSE 'succeeded' END",
        "g",
    )
    .await;
    let (claim, window_end) = runbase_store_postgres::testing::claim_and_window_end_statements();
    // Then a backlog: every run pending when the statistics were taken, without the key and
    // with it again.
    let states = [
        "with the key",
        "without the key",
        "a backlog without the key",
        "a backlog with the key",
    ];
    for schema in states {
        let setup = match schema {
            "without the key" => "ALTER TABLE runs DROP CONSTRAINT runs_pkey; ANALYZE runs",
            "a backlog without the key" => "UPDATE runs SET status = 'pending'; ANALYZE runs",
            "a backlog with the key" => {
                "ALTER TABLE runs ADD CONSTRAINT runs_pkey PRIMARY KEY (seq); ANALYZE runs"
            }
            _ => "",
        };
        db.batch_execute(setup).await.unwrap();
        // Each check in a transaction rolled back: the claim's rows stay pending.
        db.batch_execute(&format!(
            "BEGIN; PREPARE claim(bigint, bigint, bigint) AS {claim};
             PREPARE window_end(text, text, bigint) AS {window_end}"
        ))
        .await
        .unwrap();
        // A pooled connection plans a statement for its parameters a few times, then keeps a
        // generic plan made without them: the claim's must use the indexes in both. The window
        // end is always planned for its parameters (`rows_planned_each_time`: its best plan
        // depends on the account), so only its custom plan is checked.
        for mode in ["force_custom_plan", "force_generic_plan"] {
            db.batch_execute(&format!("SET LOCAL plan_cache_mode = {mode}"))
                .await
                .unwrap();
            let claim_plan = explained(&db, "EXPLAIN EXECUTE claim(10, 1, 2)").await;
            let window_plan = explained(
                &db,
                &format!("EXPLAIN EXECUTE window_end('{}', NULL, 5)", f.account),
            )
            .await;
            // The claim may find its ids on `runs_id_key` with a bitmap scan (the review saw
            // one where ids do not follow the table's order, as real ids do not): not a walk of
            // the table either.
            // In a backlog with the key, every run is pending and the planner may walk the key
            // (on `seq`, as `runs_queued`) instead: as good, and what it does without the key is
            // the state before.
            let mut plans = vec![if schema == "a backlog with the key" {
                (
                    &claim_plan,
                    &["runs_id_key"][..],
                    &["Seq Scan", "Hash Join", "Hash Semi Join", "Sort"][..],
                )
            } else {
                (
                    &claim_plan,
                    &["runs_queued", "runs_id_key"][..],
                    &[
                        "Seq Scan",
                        "Hash Join",
                        "Hash Semi Join",
                        "Sort",
                        "runs_pkey",
                    ][..],
                )
            }];
            // The window end does not look at the runs' status: checked with the key and
            // without it above (the key added again, it may read `seq` there: a unique lookup).
            if mode == "force_custom_plan" && schema != "a backlog with the key" {
                // Its ranges (one per mode) are merged; a sort, if any, is of their few rows.
                plans.push((
                    &window_plan,
                    &["runs_by_account"][..],
                    &["Seq Scan", "Bitmap", "runs_pkey"][..],
                ));
            }
            for (plan, indexes, forbidden) in plans {
                for index in indexes {
                    assert!(plan.contains(index), "{schema}, {mode}:\n{plan}");
                }
                for node in forbidden {
                    assert!(!plan.contains(node), "{schema}, {mode}:\n{plan}");
                }
            }
        }

        // And they find the right runs: the ten oldest pending, and the account's sixth newest
        // (its runs are every hundredth).
        let mut claimed: Vec<String> = db
            .query("EXECUTE claim(10, 1, 2)", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("id"))
            .collect();
        claimed.sort_by_key(|id| id[5..].parse::<u32>().unwrap());
        let every = if schema.starts_with("a backlog") {
            1
        } else {
            50
        };
        let oldest: Vec<String> = (1..=10).map(|i| format!("run_x{}", i * every)).collect();
        assert_eq!(claimed, oldest, "{schema}");
        let end: String = db
            .query_one(
                &format!("EXECUTE window_end('{}', NULL, 5)", f.account),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(end, "run_x19500", "{schema}");
        db.batch_execute("DEALLOCATE ALL; ROLLBACK").await.unwrap();
    }
}

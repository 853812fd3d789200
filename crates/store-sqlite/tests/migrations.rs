//! Upgrading a database written by an earlier version keeps every run, charge and balance.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::run::RunStatus;
use runbase_domain::store::Store;
use runbase_domain::time::Timestamp;
use runbase_store_sqlite::{Durability, SqliteStore};

const V1: &str = include_str!("../migrations/0001_init.sql");

#[tokio::test]
async fn a_version_1_database_upgrades_with_its_runs_and_money() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runbase.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO accounts (id, email, balance_millicents, created_at) VALUES ('acc_1', 'a@example.com', 7000, 1);
             INSERT INTO api_keys (id, account_id, name, prefix, hash, test, spent_millicents, runs_created, created_at)
               VALUES ('key_live', 'acc_1', 'live', 'sk-ab', 'h1', 0, 3000, 2, 1),
                      ('key_test', 'acc_1', 'test', 'sk-test-ab', 'h2', 1, 0, 1, 1);
             INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, created_at)
               VALUES ('acc_1', 'topup', 10000, 10000, 1);
             INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at)
               VALUES ('run_done', 'acc_1', 'key_live', 'runbase/echo', 'succeeded', '{}', 1000, 2),
                      ('run_wait', 'acc_1', 'key_live', 'runbase/echo', 'pending', '{}', 2000, 3),
                      ('run_test', 'acc_1', 'key_test', 'runbase/echo', 'pending', '{}', 0, 4);
             INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, created_at)
               VALUES ('acc_1', 'run_charge', -1000, 9000, 'run_done', 2),
                      ('acc_1', 'run_charge', -2000, 7000, 'run_wait', 3);",
        )
        .unwrap();
    }

    let store = SqliteStore::open(&path, Durability::Normal).unwrap();
    let done = store.get_run("acc_1", "run_done").await.unwrap().unwrap();
    assert_eq!(done.status, RunStatus::Succeeded);
    assert!(!done.test);
    let test = store.get_run("acc_1", "run_test").await.unwrap().unwrap();
    assert!(test.test, "runs of test keys are marked as test runs");

    // The queue still works, and the new status with its refund too.
    let canceled = store
        .cancel_run("acc_1", "run_wait", Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(canceled.status, RunStatus::Canceled);
    let account = store.account("acc_1").await.unwrap().unwrap();
    assert_eq!(account.balance.0, 9000, "the canceled run's 2000 came back");
    let now = Timestamp::now();
    let claimed = store
        .claim_runs(10, now, Timestamp(now.0 + 60_000_000))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, "run_test");

    // The ledger is still append-only after the rebuild.
    drop(store);
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert!(conn.execute("DELETE FROM ledger", []).is_err());
    let sum: i64 = conn
        .query_row("SELECT SUM(amount_millicents) FROM ledger", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(sum, 9000);
}

/// A database migrated by a newer build is refused, with its version and this build's, and left
/// as it is (as PostgreSQL's store refuses a newer schema).
#[tokio::test]
async fn a_database_of_a_newer_build_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runbase.db");
    drop(SqliteStore::open(&path, Durability::Normal).unwrap());
    // One past this build's, and one no build writes.
    for newer in [runbase_store_sqlite::schema_version() + 1, -1] {
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.pragma_update(None, "user_version", newer).unwrap();
        }
        let Err(e) = SqliteStore::open(&path, Durability::Normal) else {
            panic!("a schema at version {newer} was opened");
        };
        let message = e.to_string();
        assert!(
            message.contains(&format!("schema version {newer}, newer than this build")),
            "{message}"
        );
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, newer);
    }
}

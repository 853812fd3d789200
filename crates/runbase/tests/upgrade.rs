//! A data directory written by an earlier version starts, and answers in today's wire format:
//! the run object in camelCase with `costUsd` in micro-USD, the account with `balanceUsd`.
//! The database is built as version 1 of the schema wrote it (its migration file, then rows),
//! the oldest a data directory can be; the binary migrates it on start.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::Server;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const V1: &str = include_str!("../../store-sqlite/migrations/0001_init.sql");
const KEY: &str = "sk-upgradeupgradeupgradeupgradeupgradeupgr";

#[tokio::test]
async fn an_old_data_directory_answers_in_the_new_format() {
    let dir = tempfile::tempdir().unwrap();
    {
        let conn = rusqlite::Connection::open(dir.path().join("runbase.db")).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "INSERT INTO accounts (id, email, balance_millicents, created_at)
               VALUES ('acc_old', 'old@example.com', 7500, 1764633600000000);",
        )
        .unwrap();
        let hash = hex::encode(Sha256::digest(KEY.as_bytes()));
        conn.execute(
            "INSERT INTO api_keys (id, account_id, name, prefix, hash, test, spent_millicents, runs_created, created_at)
             VALUES ('key_old', 'acc_old', 'old', 'sk-upgr', ?1, 0, 2500, 1, 1764633600000000)",
            [hash],
        )
        .unwrap();
        conn.execute_batch(
            "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, created_at)
               VALUES ('acc_old', 'topup', 10000, 10000, 1764633600000000);
             INSERT INTO runs (id, account_id, key_id, model, status, input, output, cost_millicents,
                               created_at, started_at, completed_at)
               VALUES ('run_old', 'acc_old', 'key_old', 'kwaivgi/kling-v1.6-pro', 'succeeded',
                       '{\"prompt\":\"a fox\",\"duration\":\"5\"}', '{\"urls\":[\"http://x.example/a.mp4\"]}', 2500,
                       1764633600123456, 1764633601000999, 1764633604200000);
             INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, created_at)
               VALUES ('acc_old', 'run_charge', -2500, 7500, 'run_old', 1764633600123456);",
        )
        .unwrap();
    }
    let s = Server::start_in(dir.path(), &common::relaxed());
    let c = s.client();
    let r = c.get(Some(KEY), "/api/v1/runs/run_old").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body,
        json!({
            "id": "run_old",
            "model": "kwaivgi/kling-v1.6-pro",
            "status": "succeeded",
            "input": {"prompt": "a fox", "duration": "5"},
            "output": {"urls": ["http://x.example/a.mp4"]},
            "error": null,
            "costUsd": 25_000,
            "createdAt": "2025-12-02T00:00:00.123Z",
            "startedAt": "2025-12-02T00:00:01.000Z",
            "completedAt": "2025-12-02T00:00:04.200Z",
        })
    );
    let account = c.get(Some(KEY), "/api/v1/account").await;
    assert_eq!(account.body["balanceUsd"], 75_000);
    assert_eq!(account.body["key"]["spentUsd"], 25_000);
    let list = c.get(Some(KEY), "/api/v1/runs").await;
    assert_eq!(list.body["hasMore"], false);
    assert_eq!(list.body["data"][0]["costUsd"], 25_000);
    // And it keeps working: a new run on the upgraded store.
    let created = c
        .create(
            KEY,
            json!({"model": "runbase/echo", "input": {"text": "hi"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let done = c.wait(KEY, created.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["output"]["text"], Value::from("hi"));
}

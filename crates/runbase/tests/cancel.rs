//! `POST /api/v1/runs/{id}/cancel`: a pending or processing run is canceled and refunded once;
//! a finished run is answered unchanged; another account's run does not exist.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::Server;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_refunds_once_and_stops_the_run() {
    let s = Server::start_with(&[
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
        ("RUNBASE_WORKER__CONCURRENCY", "1"),
    ]);
    let key = s.account("cancel@example.com", 10);
    let other = s.account("other@example.com", 10);
    let c = s.client();
    let create = |delay: u64| {
        let c = c.clone();
        let key = key.clone();
        async move {
            let r = c
                .create(
                    &key,
                    json!({"model": "runbase/echo", "input": {"text": "x", "delay_ms": delay}}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        }
    };
    let cancel = |id: String, key: String| {
        let c = c.clone();
        async move {
            c.post_raw(Some(&key), &format!("/api/v1/runs/{id}/cancel"), "")
                .await
        }
    };

    // One worker slot: the first run holds it, the second waits in the queue.
    let busy = create(30_000).await;
    c.wait_for_status(&key, &busy, "processing").await;
    let queued = create(0).await;
    assert_eq!(c.balance(&key).await, 8);

    // Another account cannot see, let alone cancel, the run.
    cancel(queued.clone(), other.clone())
        .await
        .assert_error(404, "run_not_found");

    // Cancel the pending run: canceled, refunded; a second cancel refunds nothing more.
    let r = cancel(queued.clone(), key.clone()).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "canceled");
    assert_eq!(r.body["error"]["code"], "canceled");
    assert!(r.body["completedAt"].is_string());
    assert_eq!(c.balance(&key).await, 9);
    let again = cancel(queued.clone(), key.clone()).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["status"], "canceled");
    assert_eq!(c.balance(&key).await, 9);

    // Cancel the processing run: the worker stops it at once, freeing its slot.
    let r = cancel(busy.clone(), key.clone()).await;
    assert_eq!(r.body["status"], "canceled", "{}", r.body);
    assert_eq!(c.balance(&key).await, 10);
    let started = Instant::now();
    let next = create(0).await;
    let done = c.wait(&key, &next).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the canceled run's slot was freed"
    );
    // The canceled runs stayed canceled: the worker never ran the queued one.
    for id in [&queued, &busy] {
        let r = c.run(&key, id).await;
        assert_eq!(r.body["status"], "canceled", "{}", r.body);
        assert_eq!(r.body["output"], serde_json::Value::Null);
    }

    // A finished run is answered unchanged, and keeps its charge.
    let r = cancel(next.clone(), key.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "succeeded");
    assert_eq!(c.balance(&key).await, 9);

    // Malformed ids are simply not found.
    cancel("nope".into(), key.clone())
        .await
        .assert_error(404, "run_not_found");

    // The books: one charge per run, one refund per canceled run.
    let out = s.cli(&[
        "credits",
        "show",
        "--account",
        "cancel@example.com",
        "--json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let kinds: Vec<&str> = v["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "run_refund").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "run_charge").count(),
        3,
        "{kinds:?}"
    );
}

/// Two nodes on one PostgreSQL database: a cancel through node A stops the run that node B's
/// worker is executing (announced with NOTIFY, not left to the next lease renewal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_node_stops_the_run_on_another() {
    let Some(db) = runbase_store_postgres::testing::TestDatabase::create() else {
        return;
    };
    let migrated = std::process::Command::new(common::BIN)
        .arg("migrate")
        .env("RUNBASE_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let env = [
        ("RUNBASE_DATABASE_URL", db.url.as_str()),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
        ("RUNBASE_WORKER__CONCURRENCY", "1"),
        // Long enough that a renewal cannot be what stops the run.
        ("RUNBASE_WORKER__LEASE_MS", "60000"),
    ];
    let a = Server::start_with(&env);
    let key = a.account("nodes@example.com", 10);
    let ca = a.client();
    let run = |delay: u64| {
        let (c, key) = (ca.clone(), key.clone());
        async move {
            let r = c
                .create(
                    &key,
                    json!({"model": "runbase/echo", "input": {"text": "x", "delay_ms": delay}}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["id"].as_str().unwrap().to_owned()
        }
    };
    // A's only worker slot is taken; B starts, and takes the next run.
    let on_a = run(60_000).await;
    ca.wait_for_status(&key, &on_a, "processing").await;
    let b = Server::start_with(&env);
    let on_b = run(60_000).await;
    ca.wait_for_status(&key, &on_b, "processing").await;

    let r = ca
        .post_raw(Some(&key), &format!("/api/v1/runs/{on_b}/cancel"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !b.log().contains("run canceled while executing") {
        assert!(
            Instant::now() < deadline,
            "B never stopped the run:\n{}",
            b.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        b.log().contains("canceled through another node"),
        "{}",
        b.log()
    );
    assert!(
        !a.log().contains("run canceled while executing"),
        "{}",
        a.log()
    );
    ca.post_raw(Some(&key), &format!("/api/v1/runs/{on_a}/cancel"), "")
        .await;
    assert_eq!(ca.balance(&key).await, 10);
    drop((a, b));
}

//! A server killed mid-run loses no run and no cent: at the next start the run completes.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::Server;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_run_interrupted_by_a_crash_completes_after_restart() {
    let s = Server::start();
    let key = s.account("crash@example.com", 10);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "survivor", "delay_ms": 3000}}),
        )
        .await;
    assert_eq!(r.status, 201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    // Wait until a worker holds it, then crash.
    c.wait_for_status(&key, &id, "processing").await;
    assert_eq!(c.balance(&key).await, json!(9));

    let s = s.restart();
    let c = s.client();
    let done = c.wait(&key, &id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"]["text"], "survivor");
    // Charged once, never twice, never refunded.
    assert_eq!(c.balance(&key).await, json!(9));
    let ledger = s.cli(&["credits", "show", "--account", "crash@example.com"]);
    assert_eq!(ledger.matches("run_charge").count(), 1, "{ledger}");
    assert_eq!(ledger.matches("run_refund").count(), 0, "{ledger}");
}

#[tokio::test]
async fn a_run_interrupted_too_often_fails_with_a_refund() {
    // One attempt allowed: the first restart fails the run instead of retrying it.
    let s = Server::start_with(&[
        ("RUNBASE_WORKER__MAX_ATTEMPTS", "1"),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
    ]);
    let key = s.account("crash2@example.com", 10);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "x", "delay_ms": 5000}}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    c.wait_for_status(&key, &id, "processing").await;
    let s = s.restart();
    let c = s.client();
    let done = c.wait(&key, &id).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"]["code"], "interrupted");
    assert_eq!(c.balance(&key).await, json!(10));
}

#[tokio::test]
async fn queued_runs_survive_a_restart() {
    // A worker with one slot: the second run is still pending when the server dies.
    let env = [
        ("RUNBASE_WORKER__CONCURRENCY", "1"),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
    ];
    let s = Server::start_with(&env);
    let key = s.account("queue@example.com", 10);
    let c = s.client();
    let a = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "a", "delay_ms": 2000}}),
        )
        .await;
    let b = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "b"}}),
        )
        .await;
    let (a, b) = (
        a.body["id"].as_str().unwrap().to_owned(),
        b.body["id"].as_str().unwrap().to_owned(),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.run(&key, &b).await.body["status"], "pending");
    let s = s.restart();
    let c = s.client();
    assert_eq!(c.wait(&key, &a).await["status"], "succeeded");
    assert_eq!(c.wait(&key, &b).await["status"], "succeeded");
    assert_eq!(c.balance(&key).await, json!(8));
}

#[tokio::test]
async fn a_run_longer_than_its_lease_stays_with_its_live_worker() {
    // A 1.5 s lease, renewed every 500 ms, and a run of 4 s: without the renewal the run would
    // be taken back into the queue (and executed again) while its worker is still on it. (With a
    // 600 ms lease, a renewal on a CI machine loaded with parallel debug builds once missed its
    // 200 ms to answer, and the worker rightly gave the run up.)
    let s = Server::start_with(&[
        ("RUNBASE_WORKER__LEASE_MS", "1500"),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
    ]);
    let key = s.account("lease@example.com", 10);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "long", "delay_ms": 4000}}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    c.wait_for_status(&key, &id, "processing").await;
    loop {
        let run = c.run(&key, &id).await.body;
        match run["status"].as_str().unwrap() {
            "processing" => tokio::time::sleep(Duration::from_millis(50)).await,
            "succeeded" => break,
            other => panic!("the run left its worker: {other} ({run})"),
        }
    }
    assert!(!s.log().contains("reclaimed runs"), "{}", s.log());
    assert_eq!(c.balance(&key).await, json!(9));
}

#[tokio::test]
async fn a_graceful_stop_writes_the_outcome_of_every_run_it_executed() {
    // Few slots and short runs: at the SIGTERM some runs are executing, some have just
    // executed and are having their outcome written, and the rest wait in the queue.
    let mut s = Server::start_with(&[
        ("RUNBASE_WORKER__CONCURRENCY", "4"),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
    ]);
    let key = s.account("graceful@example.com", 100);
    let c = s.client();
    let mut ids = Vec::new();
    for i in 0..60 {
        let r = c
            .create(
                &key,
                json!({"model": "runbase/echo", "input": {"text": format!("r{i}"), "delay_ms": 20}}),
            )
            .await;
        assert_eq!(r.status, 201, "{:?}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    // Stopped once the ninth run has been picked up (it may already be done: it is short).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.run(&key, &ids[8]).await.body["status"] == "pending" {
        assert!(
            std::time::Instant::now() < deadline,
            "the ninth run was never picked up"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(s.terminate().success());
    // Stopped: nothing it had claimed is left half-done (a run left `processing` would be
    // executed again at the next start). Every run is either finished or still queued.
    let processing = s.count("SELECT count(*) FROM runs WHERE status = 'processing'");
    let succeeded = s.count("SELECT count(*) FROM runs WHERE status = 'succeeded'");
    let pending = s.count("SELECT count(*) FROM runs WHERE status = 'pending'");
    assert_eq!(processing, 0, "{succeeded} succeeded, {pending} pending");
    assert!(succeeded >= 8, "{succeeded} succeeded");
    assert_eq!(succeeded + pending, 60);
    // Takings put back before their call (`put_backs`) were not executions.
    let twice = s.count("SELECT count(*) FROM runs WHERE attempts - put_backs > 1");
    assert_eq!(twice, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_waits_for_an_outcome_the_store_is_slow_to_write() {
    // PostgreSQL only: a test transaction holds the run's row, so the worker's write of the
    // outcome waits on it after the run has executed (and given its slot back). A failure:
    // its write is a transaction (the refund), which a process gone before it commits loses.
    if !common::on_postgres() {
        return;
    }
    let mut s = Server::start();
    let key = s.account("slow-write@example.com", 10);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "x", "delay_ms": 300, "fail": "boom"}}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    c.wait_for_status(&key, &id, "processing").await;
    let (db, conn) = tokio_postgres::connect(&s.database_url().unwrap(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db.batch_execute("BEGIN").await.unwrap();
    db.query("SELECT id FROM runs WHERE id = $1 FOR UPDATE", &[&id])
        .await
        .unwrap();
    // The run has executed; its outcome waits for the row.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        db.batch_execute("ROLLBACK").await.unwrap();
    });
    // Within the shutdown grace (10 s), the stop waits for the write.
    assert!(s.terminate().success());
    release.await.unwrap();
    let status = s.count(&format!(
        "SELECT count(*) FROM runs WHERE id = '{id}' AND status = 'failed'"
    ));
    assert_eq!(
        status, 1,
        "the run's outcome was not written before the stop"
    );
    let refunds = s.count(&format!(
        "SELECT count(*) FROM ledger WHERE run_id = '{id}' AND kind = 'run_refund'"
    ));
    assert_eq!(refunds, 1);
}

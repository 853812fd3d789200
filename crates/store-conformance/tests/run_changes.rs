//! `Store::run_changes`, against every store: each committed change of a run's state (claimed,
//! succeeded, failed, canceled, requeued or failed by a reclaim) is announced with the run's id;
//! on PostgreSQL, to every process sharing the database.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::run::{RunError, RunOutcome, RunStatus};
use runbase_domain::time::Timestamp;
use runbase_store_conformance::{Fixture, for_each_store, lease};
use serde_json::json;
use std::time::Duration;
use tokio::sync::broadcast::Receiver;

/// Waits for the announcement of `run_id` (others may come first: a run created is not
/// announced, but nothing forbids it).
async fn announced(rx: &mut Receiver<String>, run_id: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(id)) if id == run_id => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("run changes: {e}"),
            Err(_) => panic!("no announcement of {run_id}"),
        }
    }
}

/// Nothing is announced for a while (after the changes above were all received).
async fn quiet(rx: &mut Receiver<String>) {
    if let Ok(got) = tokio::time::timeout(Duration::from_millis(300), rx.recv()).await {
        panic!("unexpected announcement: {got:?}");
    }
}

/// Hears each of `ids` announced once, and nothing else.
async fn hear_each_once(rx: &mut Receiver<String>, ids: &std::collections::HashSet<String>) {
    let mut heard = std::collections::HashSet::new();
    while heard.len() < ids.len() {
        let id = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("every change is announced")
            .unwrap();
        assert!(
            ids.contains(&id),
            "announced a run that did not change: {id:?}"
        );
        assert!(heard.insert(id.clone()), "announced twice: {id}");
    }
    quiet(rx).await;
}

for_each_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_state_change_is_announced() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let mut rx = f.store.run_changes();

        // Claimed, then succeeded.
        let run = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let now = Timestamp::now();
        let claimed = f.store.claim_runs(1, now, lease(now, 60)).await.unwrap();
        assert_eq!(claimed.len(), 1);
        announced(&mut rx, &run.id).await;
        let output = json!({"urls": [], "text": "p"});
        f.store
            .finish_run(&run.id, 1, RunOutcome::Succeeded { output }, Timestamp::now())
            .await
            .unwrap();
        announced(&mut rx, &run.id).await;
        quiet(&mut rx).await;

        // Claimed, then failed.
        let run = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let now = Timestamp::now();
        f.store.claim_runs(1, now, lease(now, 60)).await.unwrap();
        announced(&mut rx, &run.id).await;
        let error = RunError { message: "no".into(), code: "model_error".into() };
        f.store
            .finish_run(&run.id, 1, RunOutcome::Failed { error }, Timestamp::now())
            .await
            .unwrap();
        announced(&mut rx, &run.id).await;

        // Canceled while pending.
        let run = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let canceled = f.store.cancel_run(&f.account, &run.id, Timestamp::now()).await.unwrap();
        assert_eq!(canceled.unwrap().status, RunStatus::Canceled);
        announced(&mut rx, &run.id).await;

        // Claimed, its lease runs out: requeued, then (max_attempts 2) failed.
        let run = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let t0 = Timestamp::now();
        f.store.claim_runs(1, t0, lease(t0, 10)).await.unwrap();
        announced(&mut rx, &run.id).await;
        assert_eq!(f.store.reclaim_expired(2, lease(t0, 11)).await.unwrap(), (1, 0));
        announced(&mut rx, &run.id).await;
        let t1 = lease(t0, 20);
        f.store.claim_runs(1, t1, lease(t1, 10)).await.unwrap();
        announced(&mut rx, &run.id).await;
        assert_eq!(f.store.reclaim_expired(2, lease(t1, 11)).await.unwrap(), (0, 1));
        announced(&mut rx, &run.id).await;
        quiet(&mut rx).await;
        f.check_invariants().await;
    }

    /// Successes written together (in batches, on PostgreSQL, and there announced a chunk of
    /// ids at a time) are each announced once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn successes_written_together_are_each_announced_once() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let mut rx = f.store.run_changes();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..300 {
            ids.insert(f.store.create_run(f.new_run(0, 10)).await.unwrap().id);
        }
        let now = Timestamp::now();
        let claimed = f.store.claim_runs(300, now, lease(now, 60)).await.unwrap();
        assert_eq!(claimed.len(), 300);
        hear_each_once(&mut rx, &ids).await;
        let finishes = claimed.iter().map(|run| {
            let output = json!({"urls": [], "text": run.id});
            f.store.finish_run(&run.id, 1, RunOutcome::Succeeded { output }, Timestamp::now())
        });
        for finished in futures_util::future::join_all(finishes).await {
            finished.unwrap();
        }
        hear_each_once(&mut rx, &ids).await;
        for run in &claimed {
            let read = f.store.get_run(&f.account, &run.id).await.unwrap().unwrap();
            assert_eq!(read.status, RunStatus::Succeeded);
        }
        f.check_invariants().await;
    }

    /// A run put back in the queue is announced, and wakes the workers waiting for the queue;
    /// a release that finds the run no longer that attempt's `processing` run announces nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_put_back_is_announced_and_wakes_the_queue() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else {
            return;
        };
        let mut rx = f.store.run_changes();
        let signal = f.store.queue_signal();
        let run = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let now = Timestamp::now();
        assert_eq!(
            f.store
                .claim_runs(1, now, lease(now, 60))
                .await
                .unwrap()
                .len(),
            1
        );
        announced(&mut rx, &run.id).await;
        // The create's wake-up, kept for a worker not yet waiting, is taken first.
        let _ = tokio::time::timeout(Duration::from_millis(300), signal.notified()).await;
        quiet(&mut rx).await;

        let woken = signal.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        assert!(f.store.release_run(&run.id, 1).await.unwrap());
        announced(&mut rx, &run.id).await;
        tokio::time::timeout(Duration::from_secs(10), woken)
            .await
            .expect("a put-back wakes the queue");
        quiet(&mut rx).await;

        // Released again (no longer processing), or an attempt it is not: nothing.
        assert!(!f.store.release_run(&run.id, 1).await.unwrap());
        assert!(!f.store.release_run(&run.id, 2).await.unwrap());
        quiet(&mut rx).await;
        f.check_invariants().await;
    }
}

/// On PostgreSQL, a change committed through one process is announced in another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_announces_changes_to_every_process() {
    let Some(f) = Fixture::new(runbase_store_conformance::Backend::Postgres, 100, 0, 0).await
    else {
        return;
    };
    let other =
        runbase_store_postgres::PgStore::connect_with_pool(f.fresh.url.as_deref().unwrap(), 2)
            .await
            .unwrap();
    let mut rx = runbase_domain::store::Store::run_changes(&other);
    // The other process's LISTEN connection is up once it hears a change: retry until then.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let run = f.store.create_run(f.new_run(0, 10)).await.unwrap();
        f.store
            .cancel_run(&f.account, &run.id, Timestamp::now())
            .await
            .unwrap();
        if tokio::time::timeout(Duration::from_millis(500), rx.recv())
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never heard a change"
        );
    }
    while rx.try_recv().is_ok() {}
    let run = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
    let now = Timestamp::now();
    f.store.claim_runs(1, now, lease(now, 60)).await.unwrap();
    announced(&mut rx, &run.id).await;
    let output = json!({"urls": []});
    f.store
        .finish_run(
            &run.id,
            1,
            RunOutcome::Succeeded { output },
            Timestamp::now(),
        )
        .await
        .unwrap();
    announced(&mut rx, &run.id).await;
}

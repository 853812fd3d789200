//! The queue, against every store: claims are exclusive, leases are renewed and, once expired,
//! reclaimed exactly once, with `max_attempts` failing (and refunding) a run that keeps losing
//! its worker.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::run::{RunOutcome, RunStatus};
use runbase_domain::time::Timestamp;
use runbase_store_conformance::{Fixture, for_each_store, lease};
use std::collections::HashSet;
use std::sync::Arc;

for_each_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_take_each_run_once_oldest_first() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        f.create_runs(60, 1000).await;
        let f = Arc::new(f);
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let now = Timestamp::now();
                    let runs = f.store.claim_runs(3, now, lease(now, 60)).await.unwrap();
                    if runs.is_empty() {
                        return mine;
                    }
                    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
                    for r in &runs {
                        assert_eq!(r.status, RunStatus::Processing);
                        assert_eq!(r.attempts, 1);
                    }
                    // Each batch is handed out oldest first.
                    let mut sorted = ids.clone();
                    sorted.sort_by_key(|id| created_index(&id[..]));
                    assert_eq!(ids, sorted);
                    mine.extend(ids);
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        assert_eq!(all.len(), 60, "every run claimed once");
        let unique: HashSet<&String> = all.iter().collect();
        assert_eq!(unique.len(), 60);
        f.check_invariants().await;

        fn created_index(id: &str) -> String {
            // Run ids start with their creation time.
            id.to_owned()
        }
    }

    #[tokio::test]
    async fn an_expired_lease_is_reclaimed_once_until_max_attempts_fails_it_with_a_refund() {
        let Some(f) = Fixture::new(BACKEND, 10, 0, 0).await else { return };
        let run = f.store.create_run(f.new_run(0, 2000)).await.unwrap();
        let t0 = Timestamp::now();
        let claimed = f.store.claim_runs(5, t0, lease(t0, 10)).await.unwrap();
        assert_eq!(claimed.len(), 1);

        // Within the lease nothing is reclaimed.
        assert_eq!(f.store.reclaim_expired(2, lease(t0, 5)).await.unwrap(), (0, 0));
        // Past it, the run goes back to the queue, once.
        assert_eq!(f.store.reclaim_expired(2, lease(t0, 11)).await.unwrap(), (1, 0));
        assert_eq!(f.store.reclaim_expired(2, lease(t0, 12)).await.unwrap(), (0, 0));
        let r = f.store.get_run(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Pending);

        // The second attempt loses its worker too: with max_attempts = 2 it fails, refunded.
        let t1 = lease(t0, 20);
        let again = f.store.claim_runs(5, t1, lease(t1, 10)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 2);
        assert_eq!(f.store.reclaim_expired(2, lease(t1, 11)).await.unwrap(), (0, 1));
        assert_eq!(f.store.reclaim_expired(2, lease(t1, 12)).await.unwrap(), (0, 0));
        let r = f.store.get_run(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        assert_eq!(r.error.unwrap().code, "interrupted");
        let account = f.store.account(&f.account).await.unwrap().unwrap();
        assert_eq!(account.balance.0, 10_000, "refunded in full");
        // The first worker, coming back late, changes nothing; nor does the second, whose
        // attempt is the run's but which is no longer processing (no second refund).
        f.store
            .finish_run(&run.id, 1, RunOutcome::Succeeded { output: serde_json::json!({}) }, Timestamp::now())
            .await
            .unwrap();
        let error = runbase_domain::run::RunError { message: "late".into(), code: "model_error".into() };
        f.store.finish_run(&run.id, 2, RunOutcome::Failed { error }, Timestamp::now()).await.unwrap();
        let account = f.store.account(&f.account).await.unwrap().unwrap();
        assert_eq!(account.balance.0, 10_000, "refunded once");
        f.check_invariants().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reclaims_take_each_expired_run_once() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        f.create_runs(30, 1000).await;
        let t0 = Timestamp::now();
        assert_eq!(f.store.claim_runs(30, t0, lease(t0, 1)).await.unwrap().len(), 30);
        let f = Arc::new(f);
        let later = lease(t0, 5);
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let f = f.clone();
                tokio::spawn(async move { f.store.reclaim_expired(3, later).await.unwrap() })
            })
            .collect();
        let mut requeued = 0;
        for t in tasks {
            let (r, failed) = t.await.unwrap();
            assert_eq!(failed, 0);
            requeued += r;
        }
        assert_eq!(requeued, 30);
        let claimed = f.store.claim_runs(100, later, lease(later, 60)).await.unwrap();
        assert_eq!(claimed.len(), 30);
        assert!(claimed.iter().all(|r| r.attempts == 2));
        f.check_invariants().await;
    }

    #[tokio::test]
    async fn renewing_keeps_a_lease_and_names_the_runs_no_longer_ours() {
        let Some(f) = Fixture::new(BACKEND, 10, 0, 0).await else { return };
        let a = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let b = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let t0 = Timestamp::now();
        let claimed = f.store.claim_runs(5, t0, lease(t0, 10)).await.unwrap();
        let mine: Vec<(String, u32)> = claimed.iter().map(|r| (r.id.clone(), r.attempts)).collect();
        assert_eq!(f.store.renew_leases(&mine, lease(t0, 100)).await.unwrap(), Vec::<String>::new());
        // Renewed: the old lease's end passes without a reclaim.
        assert_eq!(f.store.reclaim_expired(3, lease(t0, 50)).await.unwrap(), (0, 0));
        // Canceled meanwhile (through any node): the renewal reports it.
        f.store.cancel_run(&f.account, &a.id, Timestamp::now()).await.unwrap();
        let lost = f.store.renew_leases(&mine, lease(t0, 200)).await.unwrap();
        assert_eq!(lost, vec![a.id.clone()]);
        // A claim of an earlier attempt is not renewed.
        let stale = vec![(b.id.clone(), 7)];
        assert_eq!(f.store.renew_leases(&stale, lease(t0, 300)).await.unwrap(), vec![b.id.clone()]);
        f.check_invariants().await;
    }

    /// A run taken and never started goes back to the queue: `pending`, its start cleared, its
    /// attempt spent (claimed again, it is the next attempt, so the old attempt's renewals and
    /// writes find it gone). Only that attempt's `processing` run is put back: not a canceled
    /// one (whose refund stands), not another attempt's.
    #[tokio::test]
    async fn a_run_never_started_is_put_back_in_the_queue() {
        let Some(f) = Fixture::new(BACKEND, 10, 0, 0).await else { return };
        let a = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let b = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let t0 = Timestamp::now();
        let claimed = f.store.claim_runs(5, t0, lease(t0, 60)).await.unwrap();
        assert_eq!(claimed.len(), 2);
        // Another attempt's release changes nothing.
        assert!(!f.store.release_run(&a.id, 2).await.unwrap());
        assert!(f.store.release_run(&a.id, 1).await.unwrap());
        let back = f.store.get_run(&f.account, &a.id).await.unwrap().unwrap();
        assert_eq!((back.status, back.attempts, back.started_at), (RunStatus::Pending, 1, None));
        // Released twice: the second finds it no longer processing.
        assert!(!f.store.release_run(&a.id, 1).await.unwrap());
        // A canceled run stays canceled, refunded once.
        f.store.cancel_run(&f.account, &b.id, Timestamp::now()).await.unwrap();
        assert!(!f.store.release_run(&b.id, 1).await.unwrap());
        let b = f.store.get_run(&f.account, &b.id).await.unwrap().unwrap();
        assert_eq!(b.status, RunStatus::Canceled);
        // Claimed again, as its next attempt: the released attempt's renewal finds it lost.
        let t1 = Timestamp::now();
        let again = f.store.claim_runs(5, t1, lease(t1, 60)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].id.as_str(), again[0].attempts), (a.id.as_str(), 2));
        let stale = vec![(a.id.clone(), 1)];
        assert_eq!(f.store.renew_leases(&stale, lease(t1, 90)).await.unwrap(), vec![a.id.clone()]);
        f.check_invariants().await;
    }

    /// Takings put back before a call are not starts: a run put back three times, then
    /// interrupted (a restart's recovery) with `max_attempts` = 2, goes back to the queue, and
    /// only its second interrupted start (an expired lease) fails it, refunded, as "interrupted
    /// 2 times".
    #[tokio::test]
    async fn put_backs_do_not_count_against_max_attempts() {
        let Some(f) = Fixture::new(BACKEND, 10, 0, 0).await else { return };
        let run = f.store.create_run(f.new_run(0, 2000)).await.unwrap();
        let mut t = Timestamp::now();
        for attempt in 1..=3 {
            let claimed = f.store.claim_runs(5, t, lease(t, 10)).await.unwrap();
            assert_eq!(claimed[0].attempts, attempt);
            assert!(f.store.release_run(&run.id, attempt).await.unwrap());
        }
        // Started (claimed and not put back) once, then the server restarts (past the lease:
        // a shared store recovers only expired leases).
        let claimed = f.store.claim_runs(5, t, lease(t, 10)).await.unwrap();
        assert_eq!(claimed[0].attempts, 4);
        assert_eq!(f.store.recover_interrupted(2, lease(t, 11)).await.unwrap(), (1, 0));
        let r = f.store.get_run(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Pending);
        // The second start is interrupted too: now it fails, refunded.
        t = lease(t, 20);
        let again = f.store.claim_runs(5, t, lease(t, 10)).await.unwrap();
        assert_eq!(again[0].attempts, 5);
        assert_eq!(f.store.reclaim_expired(2, lease(t, 11)).await.unwrap(), (0, 1));
        let r = f.store.get_run(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Failed);
        let error = r.error.unwrap();
        assert_eq!(error.code, "interrupted");
        assert!(error.message.contains(" 2 times"), "{}", error.message);
        let account = f.store.account(&f.account).await.unwrap().unwrap();
        assert_eq!(account.balance.0, 10_000, "refunded in full");
        f.check_invariants().await;
    }

    /// A run subscribed to its `start` webhook, sent with its first claim, put back and claimed
    /// again: `start` is sent once.
    #[tokio::test]
    async fn a_run_put_back_sends_its_start_webhook_once() {
        use runbase_domain::webhooks::{EVENT_START, Subscription};
        let Some(f) = Fixture::new(BACKEND, 10, 0, 0).await else { return };
        let mut new = f.new_run(0, 1000);
        new.webhook = Some(Subscription { url: "https://example.com/hook".into(), events: EVENT_START });
        let run = f.store.create_run(new).await.unwrap();
        let t0 = Timestamp::now();
        assert_eq!(f.store.claim_runs(5, t0, lease(t0, 60)).await.unwrap().len(), 1);
        assert!(f.store.release_run(&run.id, 1).await.unwrap());
        let t1 = Timestamp::now();
        let again = f.store.claim_runs(5, t1, lease(t1, 60)).await.unwrap();
        assert_eq!(again[0].attempts, 2);
        let sent = f.store.run_deliveries(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(sent.iter().filter(|d| d.event == "start").count(), 1, "{sent:?}");
        f.check_invariants().await;
    }

    /// Successes finishing at once are written together (one statement per batch where the
    /// store batches them), while cancels and lease renewals of the same runs race them: each
    /// run ends either canceled and refunded, without output, or succeeded with its own output;
    /// nothing deadlocks, and the money adds up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn successes_finishing_together_keep_their_own_outputs_and_spare_canceled_runs() {
        let Some(f) = Fixture::new(BACKEND, 1_000, 0, 0).await else { return };
        let ids = f.create_runs(60, 1000).await;
        let t0 = Timestamp::now();
        let claimed = f.store.claim_runs(60, t0, lease(t0, 60)).await.unwrap();
        assert_eq!(claimed.len(), 60);
        let mine: Vec<(String, u32)> = claimed.iter().map(|r| (r.id.clone(), r.attempts)).collect();
        let renewing = {
            let store = f.store.clone();
            tokio::spawn(async move {
                for n in 0..5 {
                    store.renew_leases(&mine, lease(t0, 100 + n)).await.unwrap();
                }
            })
        };
        // Every fourth run is also canceled, at the same moment as its success.
        let cancels: Vec<_> = ids
            .iter()
            .step_by(4)
            .map(|id| {
                let (store, account, id) = (f.store.clone(), f.account.clone(), id.clone());
                tokio::spawn(async move { store.cancel_run(&account, &id, Timestamp::now()).await })
            })
            .collect();
        let finishes: Vec<_> = ids
            .iter()
            .map(|id| {
                let (store, id) = (f.store.clone(), id.clone());
                tokio::spawn(async move {
                    let output = serde_json::json!({"urls": [format!("https://example.com/{id}.txt")]});
                    store.finish_run(&id, 1, RunOutcome::Succeeded { output }, Timestamp::now()).await
                })
            })
            .collect();
        for canceled in cancels {
            canceled.await.unwrap().unwrap();
        }
        for finished in finishes {
            finished.await.unwrap().unwrap();
        }
        renewing.await.unwrap();
        let mut succeeded = 0;
        for id in &ids {
            let r = f.store.get_run(&f.account, id).await.unwrap().unwrap();
            match r.status {
                RunStatus::Canceled => assert!(r.output.is_none(), "{id}"),
                RunStatus::Succeeded => {
                    let url = r.output.unwrap()["urls"][0].as_str().unwrap().to_owned();
                    assert_eq!(url, format!("https://example.com/{id}.txt"));
                    succeeded += 1;
                }
                other => panic!("{id} ended {other:?}"),
            }
        }
        assert!(succeeded >= 45, "only the 15 canceled runs may have missed their success");
        let account = f.store.account(&f.account).await.unwrap().unwrap();
        assert_eq!(account.balance.0, 1_000 * 1000 - succeeded * 1000, "the canceled runs refunded");
        f.check_invariants().await;
    }

    /// A worker that lost its lease comes back after the run was reclaimed and started again:
    /// its outcome, success or failure, is for an attempt that is over, and changes nothing;
    /// the new attempt's outcome is the run's.
    #[tokio::test]
    async fn an_earlier_attempt_finishing_late_leaves_the_new_attempt_alone() {
        let Some(f) = Fixture::new(BACKEND, 10, 0, 0).await else { return };
        let run = f.store.create_run(f.new_run(0, 2000)).await.unwrap();
        let t0 = Timestamp::now();
        let first = f.store.claim_runs(5, t0, lease(t0, 10)).await.unwrap();
        assert_eq!(first[0].attempts, 1);
        assert_eq!(f.store.reclaim_expired(3, lease(t0, 11)).await.unwrap(), (1, 0));
        let t1 = lease(t0, 20);
        let second = f.store.claim_runs(5, t1, lease(t1, 60)).await.unwrap();
        assert_eq!(second[0].attempts, 2);

        let late = serde_json::json!({"urls": ["https://example.com/first.txt"]});
        f.store.finish_run(&run.id, 1, RunOutcome::Succeeded { output: late }, Timestamp::now()).await.unwrap();
        let error = runbase_domain::run::RunError { message: "late".into(), code: "model_error".into() };
        f.store.finish_run(&run.id, 1, RunOutcome::Failed { error }, Timestamp::now()).await.unwrap();
        let r = f.store.get_run(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Processing, "the second attempt is still running");
        assert_eq!(f.store.account(&f.account).await.unwrap().unwrap().balance.0, 8_000, "not refunded");
        assert_eq!(f.store.renew_leases(&[(run.id.clone(), 2)], lease(t1, 90)).await.unwrap(), Vec::<String>::new());

        let output = serde_json::json!({"urls": ["https://example.com/second.txt"]});
        f.store.finish_run(&run.id, 2, RunOutcome::Succeeded { output }, Timestamp::now()).await.unwrap();
        let r = f.store.get_run(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Succeeded);
        assert_eq!(r.output.unwrap()["urls"][0], "https://example.com/second.txt");
        f.check_invariants().await;
    }

    /// Old and new attempts of the same runs finishing at the same moment (successes written
    /// together where the store batches them, so one batch can hold both): each run ends with
    /// its current attempt's output.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn old_and_new_attempts_finishing_together_end_with_the_new_output() {
        let Some(f) = Fixture::new(BACKEND, 1_000, 0, 0).await else { return };
        let ids = f.create_runs(40, 1000).await;
        let t0 = Timestamp::now();
        assert_eq!(f.store.claim_runs(40, t0, lease(t0, 10)).await.unwrap().len(), 40);
        assert_eq!(f.store.reclaim_expired(3, lease(t0, 11)).await.unwrap(), (40, 0));
        let t1 = lease(t0, 20);
        let again = f.store.claim_runs(40, t1, lease(t1, 60)).await.unwrap();
        assert!(again.iter().all(|r| r.attempts == 2));
        let finishes: Vec<_> = ids
            .iter()
            .flat_map(|id| [(id.clone(), 1), (id.clone(), 2)])
            .map(|(id, attempt)| {
                let store = f.store.clone();
                tokio::spawn(async move {
                    let output = serde_json::json!({"urls": [format!("https://example.com/{id}-{attempt}.txt")]});
                    store.finish_run(&id, attempt, RunOutcome::Succeeded { output }, Timestamp::now()).await
                })
            })
            .collect();
        for finished in finishes {
            finished.await.unwrap().unwrap();
        }
        for id in &ids {
            let r = f.store.get_run(&f.account, id).await.unwrap().unwrap();
            assert_eq!(r.status, RunStatus::Succeeded, "{id}");
            assert_eq!(r.output.unwrap()["urls"][0], format!("https://example.com/{id}-2.txt"));
        }
        f.check_invariants().await;
    }

    /// An idle worker is handed runs in the creates that make them: written already claimed
    /// (one write fewer than a create and a claim), each with one of its free slots, and only
    /// while its last claim found the queue drained. The rest are queued for a claim, as are runs
    /// with a webhook (their `start` event comes from the claim) and every run once the worker
    /// has stopped. A handed run is leased like a claimed one (reclaimed once its lease is out)
    /// and money is charged the same either way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_worker_is_handed_runs_in_their_creates() {
        use runbase_domain::store::Handoff;
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Duration;

        let Some(f) = Fixture::new(BACKEND, 1000, 1000, 1000).await else { return };
        let slots = Arc::new(tokio::sync::Semaphore::new(2));
        let drained = Arc::new(AtomicBool::new(false));
        let (tx, mut handed) = tokio::sync::mpsc::unbounded_channel();
        f.store.hand_off_to(Handoff {
            slots: slots.clone(),
            drained: drained.clone(),
            ready: Arc::new(|| true),
            lease: Duration::from_secs(60),
            runs: tx,
        });
        let stored = |id: String| {
            let f = &f;
            async move {
                let r = f.store.get_run(&f.account, &id).await.unwrap().unwrap();
                (r.status, r.attempts, r.started_at.is_some())
            }
        };

        // Busy (its last claim filled its slots): queued.
        let busy = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        assert_eq!(stored(busy.id.clone()).await.0, RunStatus::Pending);
        assert!(handed.try_recv().is_err());

        // Idle: the first two runs take its two slots, the third is queued.
        drained.store(true, Ordering::Release);
        let mut created = Vec::new();
        for _ in 0..3 {
            created.push(f.store.create_run(f.new_run(0, 1000)).await.unwrap());
        }
        let mut next = || handed.try_recv().expect("a run committed for the worker is in its intake");
        let (first, slot1) = next();
        let (second, slot2) = next();
        assert!(handed.try_recv().is_err(), "no slot was left for the third");
        assert_eq!(slots.available_permits(), 0);
        for (run, id) in [(&first, &created[0].id), (&second, &created[1].id)] {
            assert_eq!(&run.id, id);
            assert_eq!((run.status, run.attempts), (RunStatus::Processing, 1));
            assert_eq!(stored(id.clone()).await, (RunStatus::Processing, 1, true));
        }
        assert_eq!(stored(created[2].id.clone()).await.0, RunStatus::Pending);
        assert!(
            !drained.load(Ordering::Acquire),
            "a run left queued ends the handoff until a claim has taken it"
        );

        // A claim finds only the queued runs, oldest first.
        let now = Timestamp::now();
        let claimed = f.store.claim_runs(10, now, lease(now, 60)).await.unwrap();
        let claimed: Vec<String> = claimed.into_iter().map(|r| r.id).collect();
        assert_eq!(claimed, vec![busy.id.clone(), created[2].id.clone()]);

        // A run with a webhook is queued even with a slot free and the worker idle.
        drop(slot1);
        drained.store(true, Ordering::Release);
        let mut hooked = f.new_run(0, 1000);
        hooked.webhook = Some(runbase_domain::webhooks::Subscription {
            url: "https://example.com/hook".into(),
            events: 3,
        });
        let hooked = f.store.create_run(hooked).await.unwrap();
        assert_eq!(stored(hooked.id.clone()).await.0, RunStatus::Pending);
        assert!(handed.try_recv().is_err());

        // Once the worker has stopped (its intake dropped), nothing is handed over.
        drop(handed);
        drained.store(true, Ordering::Release);
        let after = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        assert_eq!(stored(after.id.clone()).await.0, RunStatus::Pending);
        assert_eq!(slots.available_permits(), 1, "no slot was taken for it");
        drop(slot2);

        // The handed runs hold a lease: past it, they are reclaimed like a dead worker's runs
        // (attempt 1 of 3: queued again), and the other runs' leases were the claim's.
        let later = lease(now, 61);
        assert_eq!(f.store.reclaim_expired(3, later).await.unwrap(), (4, 0));
        assert_eq!(stored(first.id.clone()).await.0, RunStatus::Pending);

        // Every run was charged once, whichever way it went.
        let account = f.store.account(&f.account).await.unwrap().unwrap();
        assert_eq!(account.balance, runbase_domain::money::Millicents(1000 * 1000 - 6 * 1000));
        f.check_invariants().await;
    }
}

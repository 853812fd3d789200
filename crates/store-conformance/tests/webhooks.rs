//! The webhook outbox, against every store: a delivery row is written with the status change
//! that calls for it (and only for runs subscribed to that event), claims are exclusive and
//! leased, attempts move a delivery on (retry, delivered, given up), the log is per account,
//! and secrets are made once and rotated with an overlap.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::run::{NewRun, RunError, RunOutcome};
use runbase_domain::time::Timestamp;
use runbase_domain::webhooks::{
    AttemptResult, DueDelivery, EVENT_COMPLETED, EVENT_START, Subscription,
};
use runbase_store_conformance::{Fixture, for_each_store, lease};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;

fn hooked(f: &Fixture, events: i64) -> NewRun {
    let mut run = f.new_run(0, 1000);
    run.webhook = Some(Subscription {
        url: format!("https://hooks.example.com/{}", run.id),
        events,
    });
    run
}

/// Everything due far in the future (nothing is leased then).
async fn due(f: &Fixture) -> Vec<DueDelivery> {
    let later = lease(Timestamp::now(), 3600);
    f.store
        .claim_deliveries(1000, later, lease(later, 1), &[])
        .await
        .unwrap()
}

fn events_of(due: &[DueDelivery], run_id: &str) -> Vec<String> {
    due.iter()
        .filter(|d| d.run_id == run_id)
        .map(|d| d.event.clone())
        .collect()
}

for_each_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deliveries_are_written_with_the_status_changes_that_call_for_them() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let both = f.store.create_run(hooked(&f, EVENT_START | EVENT_COMPLETED)).await.unwrap();
        let completed_only = f.store.create_run(hooked(&f, EVENT_COMPLETED)).await.unwrap();
        let plain = f.store.create_run(f.new_run(0, 1000)).await.unwrap();
        let canceled = f.store.create_run(hooked(&f, EVENT_COMPLETED)).await.unwrap();
        let interrupted = f.store.create_run(hooked(&f, EVENT_START | EVENT_COMPLETED)).await.unwrap();
        // Created: nothing yet. Canceled while queued: completed.
        f.store.cancel_run(&f.account, &canceled.id, Timestamp::now()).await.unwrap();
        let now = Timestamp::now();
        let claimed = f.store.claim_runs(10, now, lease(now, 60)).await.unwrap();
        assert_eq!(claimed.len(), 4);
        for r in [&both, &completed_only, &plain] {
            f.store
                .finish_run(&r.id, 1, RunOutcome::Succeeded { output: json!({"text": "ok"}) }, Timestamp::now())
                .await
                .unwrap();
        }
        // The interrupted run: its lease runs out, it is queued again and claimed again (no
        // second `start`), then interrupted once more and failed.
        let expired = lease(Timestamp::now(), 120);
        assert_eq!(f.store.reclaim_expired(3, expired).await.unwrap(), (1, 0));
        let again = f.store.claim_runs(10, expired, lease(expired, 60)).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(f.store.reclaim_expired(2, lease(expired, 120)).await.unwrap(), (0, 1));
        // Finishing twice writes nothing more.
        f.store
            .finish_run(&both.id, 1, RunOutcome::Failed { error: RunError { message: "late".into(), code: "x".into() } }, Timestamp::now())
            .await
            .unwrap();

        let all = due(&f).await;
        assert_eq!(events_of(&all, &both.id), ["start", "completed"]);
        assert_eq!(events_of(&all, &completed_only.id), ["completed"]);
        assert!(events_of(&all, &plain.id).is_empty());
        assert_eq!(events_of(&all, &canceled.id), ["completed"]);
        assert_eq!(events_of(&all, &interrupted.id), ["start", "completed"]);
        assert_eq!(all.len(), 6);
        let ids: HashSet<&str> = all.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), 6);
        for d in &all {
            assert!(d.id.starts_with("msg_"), "{d:?}");
            assert_eq!(d.account_id, f.account);
            assert_eq!(d.attempts, 0);
            assert_eq!(d.url, format!("https://hooks.example.com/{}", d.run_id));
        }
        f.check_invariants().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_claims_take_each_delivery_once_until_its_lease_ends() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        for _ in 0..40 {
            f.store.create_run(hooked(&f, EVENT_START)).await.unwrap();
        }
        let now = Timestamp::now();
        assert_eq!(f.store.claim_runs(100, now, lease(now, 60)).await.unwrap().len(), 40);
        let f = Arc::new(f);
        let at = lease(Timestamp::now(), 1);
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = f.store.claim_deliveries(3, at, lease(at, 60), &[]).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|d| d.id));
                }
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        assert_eq!(all.len(), 40);
        assert_eq!(all.iter().collect::<HashSet<_>>().len(), 40);
        // Leased: nobody else gets them until the lease has ended.
        let during = lease(at, 30);
        assert!(f.store.claim_deliveries(100, during, lease(during, 60), &[]).await.unwrap().is_empty());
        let after = lease(at, 61);
        // An account the dispatcher already sends its share of is skipped: nothing else is due.
        let skip = [f.account.clone()];
        assert!(f.store.claim_deliveries(100, after, lease(after, 60), &skip).await.unwrap().is_empty());
        let others = ["acct_other".to_owned()];
        assert_eq!(f.store.claim_deliveries(100, after, lease(after, 60), &others).await.unwrap().len(), 40);
    }

    #[tokio::test]
    async fn attempts_retry_deliver_or_give_up_and_are_logged_per_account() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let run = f.store.create_run(hooked(&f, EVENT_COMPLETED)).await.unwrap();
        let other_run = f.store.create_run(hooked(&f, EVENT_COMPLETED)).await.unwrap();
        let now = Timestamp::now();
        f.store.claim_runs(10, now, lease(now, 60)).await.unwrap();
        for r in [&run, &other_run] {
            f.store
                .finish_run(&r.id, 1, RunOutcome::Succeeded { output: json!({}) }, Timestamp::now())
                .await
                .unwrap();
        }
        let t = lease(Timestamp::now(), 1);
        let claimed = f.store.claim_deliveries(10, t, lease(t, 60), &[]).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let d = claimed.iter().find(|d| d.run_id == run.id).unwrap().clone();
        let g = claimed.iter().find(|d| d.run_id == other_run.id).unwrap().clone();
        // A failure, to be retried 10 s later.
        let retry_at = lease(t, 10);
        f.store
            .record_delivery_attempt(&AttemptResult {
                delivery_id: d.id.clone(),
                attempt: 1,
                at: t,
                http_status: Some(503),
                latency_ms: 12,
                error: Some("the receiver answered status 503".into()),
                next_attempt_at: Some(retry_at),
            })
            .await
            .unwrap();
        // Given up at once.
        f.store
            .record_delivery_attempt(&AttemptResult {
                delivery_id: g.id.clone(),
                attempt: 1,
                at: t,
                http_status: None,
                latency_ms: 3,
                error: Some("refused".into()),
                next_attempt_at: None,
            })
            .await
            .unwrap();
        // Not due before its time (the lease was released), due after.
        let before = lease(t, 9);
        assert!(f.store.claim_deliveries(10, before, lease(before, 60), &[]).await.unwrap().is_empty());
        let at = lease(t, 11);
        let again = f.store.claim_deliveries(10, at, lease(at, 60), &[]).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].id, d.id);
        assert_eq!(again[0].attempts, 1);
        f.store
            .record_delivery_attempt(&AttemptResult {
                delivery_id: d.id.clone(),
                attempt: 2,
                at,
                http_status: Some(204),
                latency_ms: 7,
                error: None,
                next_attempt_at: None,
            })
            .await
            .unwrap();
        let later = lease(at, 3600);
        assert!(f.store.claim_deliveries(10, later, lease(later, 60), &[]).await.unwrap().is_empty());

        let log = f.store.run_deliveries(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].status, "delivered");
        assert_eq!(log[0].event, "completed");
        assert_eq!(log[0].next_attempt_at, None);
        let codes: Vec<Option<u16>> = log[0].attempts.iter().map(|a| a.http_status).collect();
        assert_eq!(codes, [Some(503), Some(204)]);
        assert_eq!(log[0].attempts[0].latency_ms, 12);
        assert_eq!(log[0].attempts[1].error, None);
        let given_up = f.store.run_deliveries(&f.account, &other_run.id).await.unwrap().unwrap();
        assert_eq!(given_up[0].status, "failed");
        // Another account sees no such run.
        let stranger = f.store.create_account("q@example.com", Timestamp::now()).await.unwrap();
        assert!(f.store.run_deliveries(&stranger.id, &run.id).await.unwrap().is_none());

        // A redelivery: a new delivery of the latest event, due now; refused for a stranger.
        assert!(f.store.redeliver(&f.account, &run.id, "msg_again", at).await.unwrap());
        assert!(f.store.redeliver(&stranger.id, &run.id, "msg_no", at).await.is_err());
        let log = f.store.run_deliveries(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(log[1].id, "msg_again");
        assert_eq!(log[1].event, "completed");
        assert_eq!(log[1].status, "pending");
        // Clicked again (at once, many times) while that one waits: it is made due at the
        // earliest click, and no other delivery is queued.
        let earlier = lease(t, 10);
        let clicks: Vec<_> = (0..10)
            .map(|i| {
                let (store, account, run_id) = (f.store.clone(), f.account.clone(), run.id.clone());
                tokio::spawn(async move {
                    store.redeliver(&account, &run_id, &format!("msg_click{i}"), earlier).await
                })
            })
            .collect();
        for click in clicks {
            assert!(click.await.unwrap().unwrap());
        }
        let log = f.store.run_deliveries(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[1].next_attempt_at, Some(earlier));
        let plain = f.store.create_run(f.new_run(0, 10)).await.unwrap();
        assert!(!f.store.redeliver(&f.account, &plain.id, "msg_plain", at).await.unwrap());

        // The log's retention: finished deliveries queued before the cut-off go, with their
        // attempts; a pending one stays whatever its age; a batch is bounded.
        let cutoff = lease(Timestamp::now(), 7200);
        assert_eq!(f.store.sweep_webhook_deliveries(cutoff, 1).await.unwrap(), 1);
        assert_eq!(f.store.sweep_webhook_deliveries(cutoff, 100).await.unwrap(), 1);
        assert_eq!(f.store.sweep_webhook_deliveries(cutoff, 100).await.unwrap(), 0);
        let log = f.store.run_deliveries(&f.account, &run.id).await.unwrap().unwrap();
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!((log[0].id.as_str(), log[0].status.as_str()), ("msg_again", "pending"));
        assert!(f.store.run_deliveries(&f.account, &other_run.id).await.unwrap().unwrap().is_empty());

        // A click while the waiting delivery is being sent (claimed) queues a new one: the one
        // out may fail and then wait its backoff. Further clicks hurry the new one.
        let sending = f.store.claim_deliveries(10, earlier, lease(earlier, 60), &[]).await.unwrap();
        assert_eq!(sending.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["msg_again"]);
        assert!(f.store.redeliver(&f.account, &run.id, "msg_while_sending", earlier).await.unwrap());
        assert!(f.store.redeliver(&f.account, &run.id, "msg_once_more", earlier).await.unwrap());
        let log = f.store.run_deliveries(&f.account, &run.id).await.unwrap().unwrap();
        let ids: Vec<&str> = log.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["msg_again", "msg_while_sending"]);
    }

    #[tokio::test]
    async fn secrets_are_made_once_and_rotated_with_an_overlap() {
        let Some(f) = Fixture::new(BACKEND, 0, 0, 0).await else { return };
        let t = Timestamp::now();
        let first = f.store.webhook_secrets(&f.account, "whsec_one", t).await.unwrap();
        assert_eq!(first.current, "whsec_one");
        assert_eq!(first.previous, None);
        let again = f.store.webhook_secrets(&f.account, "whsec_other", t).await.unwrap();
        assert_eq!(again.current, "whsec_one");
        let until = lease(t, 86_400);
        let rotated = f.store.rotate_webhook_secret(&f.account, "whsec_two", t, until).await.unwrap();
        assert_eq!(rotated.current, "whsec_two");
        assert_eq!(rotated.previous.as_deref(), Some("whsec_one"));
        assert_eq!(rotated.previous_until, Some(until));
        assert_eq!(rotated.signing(t), ["whsec_two", "whsec_one"]);
        assert_eq!(rotated.signing(until), ["whsec_two"]);
        let read = f.store.webhook_secrets(&f.account, "whsec_x", t).await.unwrap();
        assert_eq!(read, rotated);
    }
}

//! Idempotency keys, against every store: one claim of a key wins however many race for it, an
//! answer is kept and replayed, a create records its 201 in the transaction that charges it, a
//! stale claim is taken over with its run id, a crash between the charge and the answer is
//! recovered without a second run, and keys expire after 24 hours.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::account::LedgerKind;
use runbase_domain::catalog::Catalog;
use runbase_domain::idempotency::{
    self, Answer, Claim, ClaimOutcome, NewClaim, Record, RunMark, Settle,
};
use runbase_domain::ids;
use runbase_domain::time::Timestamp;
use runbase_store_conformance::{Fixture, for_each_store};
use std::sync::Arc;

const SEC: i64 = 1_000_000;
const HOUR: i64 = 3600 * SEC;

/// A claim of `key` for `fingerprint`, made at `now` (a create's, with a fresh run id).
fn claim_at(f: &Fixture, key: &str, fingerprint: &str, now: Timestamp) -> NewClaim {
    NewClaim {
        account_id: f.account.clone(),
        key: key.into(),
        fingerprint: fingerprint.into(),
        run_id: Some(ids::new_run_id()),
        now,
        expired_before: Timestamp(now.0 - 24 * HOUR),
        stale_before: Timestamp(now.0 - 10 * SEC),
    }
}

fn claimed(outcome: ClaimOutcome) -> Claim {
    match outcome {
        ClaimOutcome::Claimed(c) => c,
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn existing(outcome: ClaimOutcome) -> Record {
    match outcome {
        ClaimOutcome::Existing(r) => r,
        other => panic!("expected an existing record, got {other:?}"),
    }
}

async fn charges(f: &Fixture) -> usize {
    f.store
        .ledger(&f.account, 100_000, None)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.kind == LedgerKind::RunCharge)
        .count()
}

async fn run_count(f: &Fixture) -> usize {
    f.store
        .list_runs(&f.account, &Default::default(), 100_000, None)
        .await
        .unwrap()
        .len()
}

const BODY: &[u8] = br#"{"model": "runbase/echo", "input": {"text": "once"}}"#;

for_each_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_key_is_claimed_once_and_its_answer_kept() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let now = Timestamp::now();
        let first = claimed(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", now)).await.unwrap());
        assert!(!first.resumed);
        assert_eq!(first.claimed_at, now);
        // A repeat while the first is in flight, and another request under the key.
        let later = Timestamp(now.0 + SEC);
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", later)).await.unwrap());
        assert_eq!((r.fingerprint.as_str(), r.answer), ("fp", None));
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "other", later)).await.unwrap());
        assert_eq!(r.fingerprint, "fp");
        // Kept once recorded, byte for byte (any bytes).
        let answer = Answer { status: 402, body: b"{\"x\":\"\\u0000\xc3\xa9\"}".to_vec() };
        f.store.settle_idempotency_key(&first, &Settle::Record(answer.clone())).await.unwrap();
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", later)).await.unwrap());
        assert_eq!(r.answer, Some(answer.clone()));
        // Recorded once: settling again changes nothing.
        let other = Answer { status: 201, body: b"{}".to_vec() };
        f.store.settle_idempotency_key(&first, &Settle::Record(other)).await.unwrap();
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", later)).await.unwrap());
        assert_eq!(r.answer, Some(answer));
        // Keys are per account: another account's same key is its own.
        let b = f.store.create_account("b@example.com", now).await.unwrap();
        let mut theirs = claim_at(&f, "k", "fp", later);
        theirs.account_id = b.id;
        claimed(f.store.claim_idempotency_key(&theirs).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn of_concurrent_claims_exactly_one_wins() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let f = Arc::new(f);
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let c = claim_at(&f, "race", "fp", Timestamp::now());
                f.store.claim_idempotency_key(&c).await.unwrap()
            }));
        }
        let mut won = 0;
        for t in tasks {
            match t.await.unwrap() {
                ClaimOutcome::Claimed(_) => won += 1,
                ClaimOutcome::Existing(r) => assert_eq!(r.answer, None),
            }
        }
        assert_eq!(won, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_create_claims_a_fresh_key_in_its_own_transaction() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        if !f.store.claims_keys_in_creates() {
            return; // this store is given keys claimed before the create
        }
        let fresh = |key: &str, fingerprint: &str, now: Timestamp| RunMark {
            key: key.into(),
            claimed_at: now,
            fresh: Some(idempotency::FreshKey {
                fingerprint: fingerprint.into(),
                expired_before: Timestamp(now.0 - 24 * HOUR),
            }),
        };
        let now = Timestamp::now();
        let mut run = f.new_run(0, 1000);
        run.idempotency = Some(fresh("k", "fp", now));
        let created = f.store.create_run(run.clone()).await.unwrap();
        let record = f.store.idempotency_record(&f.account, "k", Timestamp(now.0 - 24 * HOUR)).await.unwrap();
        assert_eq!(record, Some(Record { fingerprint: "fp".into(), answer: Some(Answer::created(&created)) }));

        // The key again (another run id, even another body): nothing written, nothing charged.
        let mut again = f.new_run(0, 1000);
        again.idempotency = Some(fresh("k", "other", Timestamp::now()));
        let taken = f.store.create_run(again).await;
        assert!(matches!(taken, Err(runbase_domain::store::CreateRunError::KeyTaken)), "{taken:?}");
        assert_eq!((run_count(&f).await, charges(&f).await), (1, 1));
        // A cancel's in-flight claim has the key too.
        claimed(f.store.claim_idempotency_key(&claim_at(&f, "c", "cancel", Timestamp::now())).await.unwrap());
        let mut under_claim = f.new_run(0, 1000);
        under_claim.idempotency = Some(fresh("c", "fp", Timestamp::now()));
        assert!(matches!(f.store.create_run(under_claim).await, Err(runbase_domain::store::CreateRunError::KeyTaken)));

        // A key past its 24 hours is taken afresh, its row replaced.
        let later = Timestamp(now.0 + 25 * HOUR);
        let mut renewed = f.new_run(0, 1000);
        renewed.idempotency = Some(fresh("k", "fp2", later));
        let created = f.store.create_run(renewed).await.unwrap();
        let record = f.store.idempotency_record(&f.account, "k", Timestamp(later.0 - 24 * HOUR)).await.unwrap().unwrap();
        assert_eq!((record.fingerprint.as_str(), record.answer), ("fp2", Some(Answer::created(&created))));
        assert_eq!((run_count(&f).await, charges(&f).await), (2, 2));
        f.check_invariants().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_creates_claiming_their_keys_keep_keys_only_for_the_runs_admitted() {
        // 1 cent of balance: 10 runs of 100 millicents fit. 40 creates at once, under 20 keys
        // (each key twice), so that one store batch may hold admitted runs, refused runs and
        // repeats of a key side by side.
        let Some(f) = Fixture::new(BACKEND, 1, 0, 0).await else { return };
        if !f.store.claims_keys_in_creates() {
            return; // this store is given keys claimed before the create
        }
        let f = Arc::new(f);
        let now = Timestamp::now();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                let key = format!("k{}", i % 20);
                let mut run = f.new_run(0, 100);
                run.idempotency = Some(RunMark {
                    key: key.clone(),
                    claimed_at: now,
                    fresh: Some(idempotency::FreshKey {
                        fingerprint: "fp".into(),
                        expired_before: Timestamp(now.0 - 24 * HOUR),
                    }),
                });
                (key, f.store.create_run(run).await)
            }));
        }
        let mut created = std::collections::HashMap::new();
        let (mut taken, mut refused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                (key, Ok(run)) => {
                    assert!(created.insert(key, run).is_none(), "a key made two runs");
                }
                (_, Err(runbase_domain::store::CreateRunError::KeyTaken)) => taken += 1,
                (_, Err(runbase_domain::store::CreateRunError::InsufficientBalance)) => refused += 1,
                (_, Err(e)) => panic!("unexpected refusal: {e:?}"),
            }
        }
        assert_eq!(created.len(), 10, "{taken} taken, {refused} refused");
        assert_eq!((run_count(&f).await, charges(&f).await), (10, 10));
        // A key is kept exactly when its run was created, with that run's 201; a refused run's
        // key is free again.
        for i in 0..20 {
            let key = format!("k{i}");
            let record = f
                .store
                .idempotency_record(&f.account, &key, Timestamp(now.0 - 24 * HOUR))
                .await
                .unwrap();
            match created.get(&key) {
                Some(run) => assert_eq!(
                    record,
                    Some(Record { fingerprint: "fp".into(), answer: Some(Answer::created(run)) })
                ),
                None => assert_eq!(record, None, "the key {key} of a refused run was kept"),
            }
        }
        f.check_invariants().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_create_records_its_201_with_its_charge_and_its_id_stays_unique() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let c = claimed(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", Timestamp::now())).await.unwrap());
        let mut run = f.new_run(0, 1000);
        run.id = c.run_id.clone().unwrap();
        run.idempotency = Some(RunMark { key: c.key.clone(), claimed_at: c.claimed_at, fresh: None });
        let created = f.store.create_run(run.clone()).await.unwrap();
        assert_eq!(created.id, run.id);
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", Timestamp::now())).await.unwrap());
        assert_eq!(r.answer, Some(Answer::created(&created)));
        // The same run id again (a request that lost its claim to a retry): refused, not charged.
        let mut again = run.clone();
        again.idempotency = None;
        assert!(f.store.create_run(again).await.is_err());
        assert_eq!((run_count(&f).await, charges(&f).await), (1, 1));
        f.check_invariants().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_stale_claim_is_taken_over_and_only_its_holder_settles_it() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let t0 = Timestamp::now();
        let first = claimed(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", t0)).await.unwrap());
        // Not stale yet at 9 s; stale at 11 s, for the same request only.
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", Timestamp(t0.0 + 9 * SEC))).await.unwrap());
        assert_eq!(r.answer, None);
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "other", Timestamp(t0.0 + 11 * SEC))).await.unwrap());
        assert_eq!(r.fingerprint, "fp");
        let t1 = Timestamp(t0.0 + 11 * SEC);
        let second = claimed(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", t1)).await.unwrap());
        assert!(second.resumed);
        assert_eq!(second.run_id, first.run_id, "the run id chosen first is kept");
        assert_eq!(second.claimed_at, t1);
        // The first holder, late, changes nothing.
        let late = Answer { status: 402, body: b"late".to_vec() };
        f.store.settle_idempotency_key(&first, &Settle::Record(late)).await.unwrap();
        f.store.settle_idempotency_key(&first, &Settle::Release).await.unwrap();
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", Timestamp(t1.0 + SEC))).await.unwrap());
        assert_eq!(r.answer, None);
        let mine = Answer { status: 201, body: b"mine".to_vec() };
        f.store.settle_idempotency_key(&second, &Settle::Record(mine.clone())).await.unwrap();
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "k", "fp", Timestamp(t1.0 + 20 * SEC))).await.unwrap());
        assert_eq!(r.answer, Some(mine), "an answered key is never taken over");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn released_keys_are_free_and_abandoned_ones_resumed_at_once() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let now = Timestamp::now();
        let c = claimed(f.store.claim_idempotency_key(&claim_at(&f, "r", "fp", now)).await.unwrap());
        f.store.settle_idempotency_key(&c, &Settle::Release).await.unwrap();
        let c = claimed(f.store.claim_idempotency_key(&claim_at(&f, "r", "another", now)).await.unwrap());
        assert!(!c.resumed, "a released key is as new, for any request");

        let a = claimed(f.store.claim_idempotency_key(&claim_at(&f, "a", "fp", now)).await.unwrap());
        f.store.settle_idempotency_key(&a, &Settle::Abandon).await.unwrap();
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "a", "other", now)).await.unwrap());
        assert_eq!(r.fingerprint, "fp", "an abandoned key still belongs to its request");
        let b = claimed(f.store.claim_idempotency_key(&claim_at(&f, "a", "fp", now)).await.unwrap());
        assert!(b.resumed);
        assert_eq!(b.run_id, a.run_id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn keys_expire_after_24_hours_and_are_swept() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let now = Timestamp::now();
        let old_time = Timestamp(now.0 - 24 * HOUR - SEC);
        let old = claimed(f.store.claim_idempotency_key(&claim_at(&f, "old", "fp", old_time)).await.unwrap());
        let answer = Answer { status: 201, body: b"{}".to_vec() };
        f.store.settle_idempotency_key(&old, &Settle::Record(answer)).await.unwrap();
        let kept = claimed(f.store.claim_idempotency_key(&claim_at(&f, "kept", "fp", Timestamp(now.0 - 23 * HOUR))).await.unwrap());
        // Reused after 24 hours, for anything: a new claim with a new run id.
        let again = claimed(f.store.claim_idempotency_key(&claim_at(&f, "old", "other", now)).await.unwrap());
        assert!(!again.resumed);
        assert_ne!(again.run_id, old.run_id);
        // The sweep deletes only what expired.
        claimed(f.store.claim_idempotency_key(&claim_at(&f, "stale", "fp", old_time)).await.unwrap());
        let swept = f.store.sweep_idempotency_keys(Timestamp(now.0 - 24 * HOUR), 100).await.unwrap();
        assert_eq!(swept, 1);
        claimed(f.store.claim_idempotency_key(&claim_at(&f, "stale", "other", now)).await.unwrap());
        let r = existing(f.store.claim_idempotency_key(&claim_at(&f, "kept", "other", now)).await.unwrap());
        assert_eq!(r.fingerprint, "fp", "a key younger than 24 hours is kept");
        assert!(!kept.resumed);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_crash_between_the_charge_and_the_answer_does_not_create_a_second_run() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let catalog = Catalog::builtin().unwrap();
        let key = f.keys[0].clone();
        let fingerprint = idempotency::fingerprint("POST", "/api/v1/runs", BODY);
        // The first request claimed the key 20 s ago, its run was committed, and its process
        // died before the answer was kept (as if the answer were recorded separately).
        let mut first = claim_at(&f, "crash", &fingerprint, Timestamp(Timestamp::now().0 - 20 * SEC));
        first.account_id = key.account_id.clone();
        let c = claimed(f.store.claim_idempotency_key(&first).await.unwrap());
        let mut run = f.new_run(0, 1000);
        run.id = c.run_id.clone().unwrap();
        let created = f.store.create_run(run).await.unwrap();
        // The retry finds the run and answers it.
        let retry = idempotency::create_run(f.store.as_ref(), &catalog, &idempotency::InFlightKeys::default(), &key, BODY, "crash").await.unwrap();
        assert_eq!(retry.answer.status, 201);
        let body: serde_json::Value = serde_json::from_slice(&retry.answer.body).unwrap();
        assert_eq!(body["id"], created.id.as_str());
        assert!(retry.replayed);
        // And from now on it is kept.
        let again = idempotency::create_run(f.store.as_ref(), &catalog, &idempotency::InFlightKeys::default(), &key, BODY, "crash").await.unwrap();
        assert_eq!(again.answer, retry.answer);
        assert_eq!((run_count(&f).await, charges(&f).await), (1, 1));
        f.check_invariants().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_hundred_concurrent_creates_under_one_key_make_one_run_and_one_charge() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let catalog = Arc::new(Catalog::builtin().unwrap());
        let f = Arc::new(f);
        // As if from two processes: each set of keys in flight is shared by half the requests,
        // and between the two the store alone keeps them apart.
        let in_flight = Arc::new([idempotency::InFlightKeys::default(), idempotency::InFlightKeys::default()]);
        let mut tasks = Vec::new();
        for i in 0..100 {
            let (f, catalog, in_flight) = (f.clone(), catalog.clone(), in_flight.clone());
            tasks.push(tokio::spawn(async move {
                let key = f.keys[0].clone();
                idempotency::create_run(f.store.as_ref(), &catalog, &in_flight[i % 2], &key, BODY, "same").await
            }));
        }
        let (mut fresh, mut replays, mut in_use) = (0, 0, 0);
        let mut ids = std::collections::HashSet::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(a) => {
                    assert_eq!(a.answer.status, 201);
                    let body: serde_json::Value = serde_json::from_slice(&a.answer.body).unwrap();
                    ids.insert(body["id"].as_str().unwrap().to_owned());
                    if a.replayed { replays += 1 } else { fresh += 1 }
                }
                Err(e) => {
                    assert_eq!(e.code, runbase_domain::ErrorCode::IdempotencyKeyInUse);
                    in_use += 1;
                }
            }
        }
        assert_eq!(fresh, 1, "one request executed ({replays} replays, {in_use} in use)");
        assert_eq!(ids.len(), 1);
        assert_eq!((run_count(&f).await, charges(&f).await), (1, 1));
        f.check_invariants().await;
    }
}

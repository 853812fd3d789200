//! Property tests of the money rules, run against every store: random sequences (and
//! concurrent batches) of run creation, claiming, success, failure, cancel and top-ups never
//! take a balance below zero, never pass a key's spend limit or quota, and always leave a
//! ledger that sums to the balance.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use proptest::prelude::*;
use runbase_domain::ids::KeyHash;
use runbase_domain::money::Millicents;
use runbase_domain::run::{RunError, RunOutcome, RunStatus};
use runbase_domain::store::CreateRunError;
use runbase_domain::time::Timestamp;
use runbase_store_conformance::{Backend, Fixture, for_each_store, lease};
use serde_json::json;
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Op {
    Create { key: usize, price: i64 },
    Claim { n: u32 },
    Finish { pick: usize, fail: bool },
    TopUp { cents: i64 },
    Cancel { pick: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..4000i64).prop_map(|(key, price)| Op::Create { key, price }),
        2 => (1..4u32).prop_map(|n| Op::Claim { n }),
        3 => (0..64usize, any::<bool>()).prop_map(|(pick, fail)| Op::Finish { pick, fail }),
        1 => (1..20i64).prop_map(|cents| Op::TopUp { cents }),
        2 => (0..64usize).prop_map(|pick| Op::Cancel { pick }),
    ]
}

/// Sequential operations against a reference model of the rules: every outcome is exactly the
/// one the rules predict.
fn sequential_operations_follow_the_rules(
    backend: Backend,
    initial: i64,
    limit: i64,
    quota: u64,
    ops: Vec<Op>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(f) = Fixture::new(backend, initial, limit, quota).await else {
            return;
        };
        let mut balance = initial * 1000;
        let mut spent = [0i64; 3];
        let mut created = [0u64; 3];
        let mut pending: Vec<(String, usize, i64)> = Vec::new();
        let mut processing: Vec<(String, usize, i64)> = Vec::new();
        for op in ops {
            match op {
                Op::Create { key, price } => {
                    let expected = if key == 2 && created[2] >= quota {
                        Err("quota")
                    } else if key == 1
                        && (spent[1] >= limit * 1000 || spent[1] + price > limit * 1000)
                    {
                        Err("spend")
                    } else if balance < price {
                        Err("balance")
                    } else {
                        Ok(())
                    };
                    let run = f.new_run(key, price);
                    let id = run.id.clone();
                    let got = f.store.create_run(run).await;
                    match (&expected, &got) {
                        (Ok(()), Ok(r)) => {
                            assert_eq!(r.cost.0, price);
                            balance -= price;
                            spent[key] += price;
                            created[key] += 1;
                            pending.push((id, key, price));
                        }
                        (Err("quota"), Err(CreateRunError::QuotaExhausted))
                        | (Err("spend"), Err(CreateRunError::SpendLimit))
                        | (Err("balance"), Err(CreateRunError::InsufficientBalance)) => {}
                        other => panic!("expected {expected:?}, got {other:?}"),
                    }
                }
                Op::Claim { n } => {
                    let claimed = f
                        .store
                        .claim_runs(n, Timestamp::now(), lease(Timestamp::now(), 60))
                        .await
                        .unwrap();
                    let take = (n as usize).min(pending.len());
                    assert_eq!(claimed.len(), take);
                    for (c, p) in claimed.iter().zip(pending.drain(..take)) {
                        assert_eq!(c.id, p.0, "claimed in creation order");
                        processing.push(p);
                    }
                }
                Op::Finish { pick, fail } => {
                    if processing.is_empty() {
                        // Finishing a run that is not processing changes nothing.
                        if let Some((id, _, _)) = pending.first() {
                            let outcome = RunOutcome::Failed {
                                error: RunError {
                                    message: "x".into(),
                                    code: "x".into(),
                                },
                            };
                            f.store
                                .finish_run(id, 1, outcome, Timestamp::now())
                                .await
                                .unwrap();
                        }
                    } else {
                        let (id, key, price) = processing.remove(pick % processing.len());
                        let outcome = if fail {
                            balance += price;
                            spent[key] -= price;
                            RunOutcome::Failed {
                                error: RunError {
                                    message: "boom".into(),
                                    code: "model_error".into(),
                                },
                            }
                        } else {
                            RunOutcome::Succeeded {
                                output: json!({"urls": []}),
                            }
                        };
                        f.store
                            .finish_run(&id, 1, outcome.clone(), Timestamp::now())
                            .await
                            .unwrap();
                        // Finishing twice changes nothing (no double refund).
                        f.store
                            .finish_run(&id, 1, outcome, Timestamp::now())
                            .await
                            .unwrap();
                    }
                }
                Op::TopUp { cents } => {
                    f.store
                        .add_credits(
                            &f.account,
                            Millicents::from_cents(cents).unwrap(),
                            "top-up",
                            None,
                            Timestamp::now(),
                        )
                        .await
                        .unwrap();
                    balance += cents * 1000;
                }
                Op::Cancel { pick } => {
                    // A pending or processing run: canceled and refunded, once.
                    let total = pending.len() + processing.len();
                    if total > 0 {
                        let i = pick % total;
                        let (id, key, price) = if i < pending.len() {
                            pending.remove(i)
                        } else {
                            processing.remove(i - pending.len())
                        };
                        balance += price;
                        spent[key] -= price;
                        for _ in 0..2 {
                            let r = f
                                .store
                                .cancel_run(&f.account, &id, Timestamp::now())
                                .await
                                .unwrap()
                                .unwrap();
                            assert_eq!(r.status, RunStatus::Canceled);
                        }
                        // The worker finishing it afterwards changes nothing.
                        f.store
                            .finish_run(
                                &id,
                                1,
                                RunOutcome::Succeeded {
                                    output: json!({"urls": []}),
                                },
                                Timestamp::now(),
                            )
                            .await
                            .unwrap();
                        let r = f.store.get_run(&f.account, &id).await.unwrap().unwrap();
                        assert_eq!(r.status, RunStatus::Canceled);
                    }
                }
            }
            let account = f.store.account(&f.account).await.unwrap().unwrap();
            assert_eq!(account.balance.0, balance);
            for (i, k) in f.keys.iter().enumerate() {
                let k = f.store.key_by_id(&k.id).await.unwrap().unwrap();
                assert_eq!(k.spent.0, spent[i]);
                assert_eq!(k.runs_created, created[i]);
            }
            f.check_invariants().await;
        }
    });
}

/// The same operations fired concurrently in batches: whatever the interleaving, the
/// invariants hold.
fn concurrent_batches_keep_the_invariants(
    backend: Backend,
    initial: i64,
    limit: i64,
    quota: u64,
    batches: Vec<Vec<Op>>,
) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let Some(f) = Fixture::new(backend, initial, limit, quota).await else {
            return;
        };
        let f = Arc::new(f);
        let claimed: Arc<tokio::sync::Mutex<Vec<String>>> = Arc::default();
        for batch in batches {
            let mut tasks = Vec::new();
            for op in batch {
                let (f, claimed) = (f.clone(), claimed.clone());
                tasks.push(tokio::spawn(async move {
                    match op {
                        Op::Create { key, price } => {
                            let _ = f.store.create_run(f.new_run(key, price)).await;
                        }
                        Op::Claim { n } => {
                            let runs = f
                                .store
                                .claim_runs(n, Timestamp::now(), lease(Timestamp::now(), 60))
                                .await
                                .unwrap();
                            claimed.lock().await.extend(runs.into_iter().map(|r| r.id));
                        }
                        Op::Finish { pick, fail } => {
                            let id = {
                                let c = claimed.lock().await;
                                if c.is_empty() {
                                    return;
                                }
                                c[pick % c.len()].clone()
                            };
                            let outcome = if fail {
                                RunOutcome::Failed {
                                    error: RunError {
                                        message: "boom".into(),
                                        code: "model_error".into(),
                                    },
                                }
                            } else {
                                RunOutcome::Succeeded {
                                    output: json!({"urls": []}),
                                }
                            };
                            f.store
                                .finish_run(&id, 1, outcome, Timestamp::now())
                                .await
                                .unwrap();
                        }
                        Op::TopUp { cents } => {
                            f.store
                                .add_credits(
                                    &f.account,
                                    Millicents::from_cents(cents).unwrap(),
                                    "top-up",
                                    None,
                                    Timestamp::now(),
                                )
                                .await
                                .unwrap();
                        }
                        Op::Cancel { pick } => {
                            // Races the finishes of the same runs.
                            let id = {
                                let c = claimed.lock().await;
                                if c.is_empty() {
                                    return;
                                }
                                c[pick % c.len()].clone()
                            };
                            f.store
                                .cancel_run(&f.account, &id, Timestamp::now())
                                .await
                                .unwrap();
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
            f.check_invariants().await;
        }
    });
}

for_each_store! {
    proptest! {
        // Each PostgreSQL case creates a database of its own: fewer cases there.
        #![proptest_config(ProptestConfig {
            cases: if BACKEND == Backend::Postgres { 20 } else { 40 },
            ..ProptestConfig::default()
        })]

        #[test]
        fn sequential_operations_follow_the_rules(
            initial in 0..30i64, limit in 0..30i64, quota in 0..6u64,
            ops in proptest::collection::vec(op(), 1..60),
        ) {
            super::sequential_operations_follow_the_rules(BACKEND, initial, limit, quota, ops);
        }

        #[test]
        fn concurrent_batches_keep_the_invariants(
            initial in 0..40i64, limit in 0..30i64, quota in 0..10u64,
            batches in proptest::collection::vec(proptest::collection::vec(op(), 1..40), 1..5),
        ) {
            super::concurrent_batches_keep_the_invariants(BACKEND, initial, limit, quota, batches);
        }
    }

    #[tokio::test]
    async fn key_hash_lookup_finds_the_key() {
        let Some(f) = Fixture::new(BACKEND, 1, 1, 1).await else { return };
        let k = &f.keys[0];
        let found = f.store.key_by_hash(&k.hash).await.unwrap().unwrap();
        assert_eq!(found.id, k.id);
        assert!(
            f.store
                .key_by_hash(&KeyHash::of("sk-nope"))
                .await
                .unwrap()
                .is_none()
        );
    }
}

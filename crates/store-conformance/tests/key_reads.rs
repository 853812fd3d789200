//! Authentication reads, against every store: many at once (the PostgreSQL store reads the
//! requests waiting at one moment with one statement) each get their own key and run, never
//! another request's nor a run of another mode (a test key's of a live run, or the reverse),
//! and a change to a key is seen by the next read.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::account::{KeySettings, KeyUpdate};
use runbase_domain::ids::{self, KeyHash};
use runbase_domain::time::Timestamp;
use runbase_store_conformance::{Fixture, for_each_store};
use std::sync::Arc;

/// One read and what it must find: the key's id, and the run's id.
#[derive(Clone)]
struct Case {
    hash: KeyHash,
    run_id: Option<String>,
    key: Option<String>,
    run: Option<String>,
}

for_each_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_key_reads_each_find_their_own_key_and_run() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let now = Timestamp::now();
        // A second account with a key and a run of its own.
        let other = f.store.create_account("q@example.com", now).await.unwrap();
        f.store
            .add_credits(&other.id, runbase_domain::money::Millicents(1_000_000), "seed", None, now)
            .await
            .unwrap();
        let secret = ids::generate_api_key(false);
        let other_key = f
            .store
            .create_key(&other.id, &ids::new_key_id(), &secret.hash, &secret.prefix, &KeySettings::default(), now)
            .await
            .unwrap();
        let mut other_run = f.new_run(0, 1000);
        other_run.account_id = other.id.clone();
        other_run.key_id = other_key.id.clone();
        let other_run = f.store.create_run(other_run).await.unwrap().id;
        let mine = f.create_runs(3, 1000).await;
        // A test key of the account and its test run: a key sees the runs of its own mode only.
        let secret = ids::generate_api_key(true);
        let test_key = f
            .store
            .create_key(&f.account, &ids::new_key_id(), &secret.hash, &secret.prefix, &KeySettings { test: true, ..Default::default() }, now)
            .await
            .unwrap();
        let mut test_run = f.new_run(0, 0);
        test_run.key_id = test_key.id.clone();
        test_run.test = true;
        let test_run = f.store.create_run(test_run).await.unwrap().id;
        // The third key disabled: still found (the caller refuses it), with its state.
        f.store
            .update_key(&f.keys[2].id, &KeyUpdate { disabled: Some(true), ..Default::default() })
            .await
            .unwrap();
        let unknown = KeyHash::of("sk-not-a-key");

        let mut cases = Vec::new();
        for (i, key) in f.keys.iter().enumerate() {
            let own = Some(mine[i].clone());
            cases.push(Case { hash: key.hash.clone(), run_id: own.clone(), key: Some(key.id.clone()), run: own });
            cases.push(Case { hash: key.hash.clone(), run_id: Some(other_run.clone()), key: Some(key.id.clone()), run: None });
            cases.push(Case { hash: key.hash.clone(), run_id: None, key: Some(key.id.clone()), run: None });
            cases.push(Case { hash: key.hash.clone(), run_id: Some(ids::new_run_id()), key: Some(key.id.clone()), run: None });
        }
        for key in &f.keys {
            cases.push(Case { hash: key.hash.clone(), run_id: Some(test_run.clone()), key: Some(key.id.clone()), run: None });
        }
        let tested = Some(test_run.clone());
        cases.push(Case { hash: test_key.hash.clone(), run_id: tested.clone(), key: Some(test_key.id.clone()), run: tested });
        cases.push(Case { hash: test_key.hash.clone(), run_id: Some(mine[0].clone()), key: Some(test_key.id.clone()), run: None });
        cases.push(Case { hash: test_key.hash.clone(), run_id: Some(other_run.clone()), key: Some(test_key.id.clone()), run: None });
        let theirs = Some(other_run.clone());
        cases.push(Case { hash: other_key.hash.clone(), run_id: theirs.clone(), key: Some(other_key.id.clone()), run: theirs });
        cases.push(Case { hash: other_key.hash.clone(), run_id: Some(mine[0].clone()), key: Some(other_key.id.clone()), run: None });
        cases.push(Case { hash: unknown.clone(), run_id: Some(mine[0].clone()), key: None, run: None });
        cases.push(Case { hash: unknown, run_id: None, key: None, run: None });

        // Every case many times over, all at once, in a shuffled order.
        let mut all: Vec<Case> = (0..25).flat_map(|_| cases.clone()).collect();
        let n = all.len();
        for i in 0..n {
            all.swap(i, (i * 7919 + 13) % n);
        }
        let store = f.store.clone();
        let barrier = Arc::new(tokio::sync::Barrier::new(n));
        let tasks: Vec<_> = all
            .into_iter()
            .map(|case| {
                let (store, barrier) = (store.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let (key, run) = match &case.run_id {
                        Some(id) => store.key_and_run(&case.hash, id).await.unwrap(),
                        None => (store.key_by_hash(&case.hash).await.unwrap(), None),
                    };
                    (case, key, run)
                })
            })
            .collect();
        for t in tasks {
            let (case, key, run) = t.await.unwrap();
            assert_eq!(key.as_ref().map(|k| k.id.clone()), case.key);
            if let Some(key) = &key {
                assert_eq!(key.hash, case.hash);
                assert_eq!(key.disabled, key.id == f.keys[2].id, "{}", key.id);
            }
            assert_eq!(run.as_ref().map(|r| r.id.clone()), case.run);
            if let (Some(run), Some(key)) = (&run, &key) {
                // Any key of the account reads its runs of the key's mode.
                assert_eq!(run.account_id, key.account_id);
                assert_eq!(run.test, key.id == test_key.id);
            }
        }
    }

    #[tokio::test]
    async fn a_key_change_is_seen_by_the_next_read() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let run = f.create_runs(1, 1000).await.remove(0);
        let key = &f.keys[0];
        for disabled in [true, false, true] {
            f.store
                .update_key(&key.id, &KeyUpdate { disabled: Some(disabled), ..Default::default() })
                .await
                .unwrap();
            let by_hash = f.store.key_by_hash(&key.hash).await.unwrap().unwrap();
            assert_eq!(by_hash.disabled, disabled);
            let (with_run, found) = f.store.key_and_run(&key.hash, &run).await.unwrap();
            assert_eq!(with_run.unwrap().disabled, disabled);
            assert_eq!(found.unwrap().id, run);
        }
    }

    #[tokio::test]
    async fn an_id_that_names_no_run_finds_the_key_alone() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let key = &f.keys[0];
        let long = format!("run_{}", "a".repeat(500));
        for id in ["x", "run_", "run_\0", "run_a\u{0}b", long.as_str()] {
            let (found, run) = f.store.key_and_run(&key.hash, id).await.unwrap();
            assert_eq!(found.unwrap().id, key.id, "{id:?}");
            assert!(run.is_none(), "{id:?}");
        }
    }
}

//! Listing an account's runs with a filter, against every store: a filter bounded by a window
//! (`RunFilter::within`) reads only the account's next runs after the cursor, the window ends
//! where `run_before` says, and the windows, walked one after another, cover each run once. A
//! listing of one mode (`RunFilter::test`) shows that mode's runs only; of both, the two merged.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::account::KeySettings;
use runbase_domain::ids;
use runbase_domain::run::RunStatus;
use runbase_domain::store::RunFilter;
use runbase_domain::time::Timestamp;
use runbase_store_conformance::{Fixture, for_each_store};

for_each_store! {
    #[tokio::test]
    async fn a_filtered_listing_reads_a_window_and_the_windows_cover_every_run_once() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        // Ten runs, oldest first; every third is of another model.
        let mut ids = Vec::new();
        for i in 0..10 {
            let mut run = f.new_run(0, 100);
            if i % 3 == 0 {
                run.model = "runbase/placeholder-image".into();
            }
            ids.push(f.store.create_run(run).await.unwrap().id);
        }
        let account = f.account.as_str();
        let before = |after: Option<usize>, skip: u32| {
            let store = f.store.clone();
            let after = after.map(|i| ids[i].clone());
            async move { store.run_before(account, None, after.as_deref(), skip).await.unwrap() }
        };
        // From the newest, and from a cursor (the run itself is not counted).
        assert_eq!(before(None, 1).await.as_deref(), Some(ids[9].as_str()));
        assert_eq!(before(None, 3).await.as_deref(), Some(ids[7].as_str()));
        assert_eq!(before(Some(9), 1).await.as_deref(), Some(ids[8].as_str()));
        assert_eq!(before(Some(2), 2).await.as_deref(), Some(ids[0].as_str()));
        assert_eq!(before(Some(2), 3).await, None, "fewer runs left than the window");
        assert_eq!(before(None, 10).await.as_deref(), Some(ids[0].as_str()));
        assert_eq!(before(None, 11).await, None);
        assert_eq!(before(None, 0).await, None);

        // A filter bounded by a window reads only the window's runs.
        let images = |within: Option<u32>| RunFilter {
            model: Some("runbase/placeholder-image".into()),
            within,
            ..Default::default()
        };
        let listed = |filter: RunFilter, after: Option<usize>| {
            let store = f.store.clone();
            let after = after.map(|i| ids[i].clone());
            async move {
                store
                    .list_runs(account, &filter, 100, after.as_deref())
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(listed(images(Some(4)), None).await, vec![ids[9].clone(), ids[6].clone()]);
        assert_eq!(listed(images(Some(3)), None).await, vec![ids[9].clone()]);
        assert_eq!(listed(images(Some(3)), Some(8)).await, vec![ids[6].clone()]);
        assert_eq!(listed(images(Some(1)), Some(6)).await, Vec::<String>::new());
        assert_eq!(listed(images(None), Some(8)).await, vec![ids[6].clone(), ids[3].clone(), ids[0].clone()]);
        let pending = RunFilter {
            status: Some(RunStatus::Pending),
            within: Some(2),
            ..Default::default()
        };
        assert_eq!(listed(pending, Some(5)).await, vec![ids[4].clone(), ids[3].clone()]);

        // Windows of three walked from the newest with a filter nothing passes: each window is
        // empty, and the windows' ends (`run_before` of the window's length) step through every
        // run, none skipped or read twice.
        let nothing = RunFilter {
            status: Some(RunStatus::Failed),
            within: Some(3),
            ..Default::default()
        };
        let mut after: Option<String> = None;
        let mut ends = Vec::new();
        loop {
            let end = f.store.run_before(account, None, after.as_deref(), 3).await.unwrap();
            let page = f
                .store
                .list_runs(account, &nothing, 100, after.as_deref())
                .await
                .unwrap();
            assert!(page.is_empty());
            match end {
                Some(end) => {
                    ends.push(end.clone());
                    after = Some(end);
                }
                None => break,
            }
        }
        assert_eq!(ends, vec![ids[7].clone(), ids[4].clone(), ids[1].clone()]);

        // Another account's run bounds nothing of this one's, and names no window of it.
        let other = f.store.create_account("q@example.com", runbase_domain::time::Timestamp::now()).await.unwrap();
        assert_eq!(f.store.run_before(&other.id, None, None, 1).await.unwrap(), None);
        assert_eq!(
            f.store.run_before(&other.id, None, Some(&ids[9]), 1).await.unwrap(),
            None,
            "a cursor of another account's run finds none of its own"
        );
        // A window longer than what is left reads to the account's first run.
        assert_eq!(listed(images(Some(1_000)), Some(4)).await, vec![ids[3].clone(), ids[0].clone()]);
    }

    #[tokio::test]
    async fn each_mode_is_listed_apart_and_both_merged_in_order() {
        let Some(f) = Fixture::new(BACKEND, 100, 0, 0).await else { return };
        let secret = ids::generate_api_key(true);
        let test_key = f
            .store
            .create_key(&f.account, &ids::new_key_id(), &secret.hash, &secret.prefix, &KeySettings { test: true, ..Default::default() }, Timestamp::now())
            .await
            .unwrap();
        // Twelve runs, oldest first, in runs of each mode: live, test, test, live, live, live,
        // test, live, test, test, test, live.
        let modes = [false, true, true, false, false, false, true, false, true, true, true, false];
        let mut ids = Vec::new();
        for test in modes {
            let mut run = f.new_run(0, if test { 0 } else { 100 });
            if test {
                run.key_id = test_key.id.clone();
                run.test = true;
            }
            ids.push(f.store.create_run(run).await.unwrap().id);
        }
        let account = f.account.as_str();
        // Newest first, of the modes asked, after a cursor, at most `limit`.
        let expected = |test: Option<bool>, after: Option<usize>, limit: usize| {
            (0..after.unwrap_or(ids.len()))
                .rev()
                .filter(|&i| test.is_none_or(|t| modes[i] == t))
                .take(limit)
                .map(|i| ids[i].clone())
                .collect::<Vec<_>>()
        };
        for test in [None, Some(false), Some(true)] {
            let filter = RunFilter { test, ..Default::default() };
            for after in [None, Some(11), Some(9), Some(6), Some(3), Some(1), Some(0)] {
                for limit in [1, 2, 3, 5, 100] {
                    let listed: Vec<String> = f
                        .store
                        .list_runs(account, &filter, limit, after.map(|i| ids[i].as_str()))
                        .await
                        .unwrap()
                        .into_iter()
                        .map(|r| r.id)
                        .collect();
                    assert_eq!(listed, expected(test, after, limit as usize), "{test:?} after {after:?} limit {limit}");
                }
            }
        }
        // A window counts the runs of both modes; a window's end too.
        let live_in_window = RunFilter { test: None, status: Some(RunStatus::Pending), within: Some(4), ..Default::default() };
        let listed: Vec<String> = f.store.list_runs(account, &live_in_window, 100, Some(&ids[9])).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(listed, vec![ids[8].clone(), ids[7].clone(), ids[6].clone(), ids[5].clone()]);
        assert_eq!(f.store.run_before(account, None, Some(&ids[9]), 4).await.unwrap().as_deref(), Some(ids[5].as_str()));
        assert_eq!(f.store.run_before(account, None, None, 12).await.unwrap().as_deref(), Some(ids[0].as_str()));
        assert_eq!(f.store.run_before(account, None, None, 13).await.unwrap(), None);
        // Of one mode, or of both, from every cursor: the run `skip` places older among them.
        for test in [None, Some(false), Some(true)] {
            for after in [None, Some(11), Some(8), Some(4), Some(0)] {
                for skip in 1..=13u32 {
                    let before = f
                        .store
                        .run_before(account, test, after.map(|i| ids[i].as_str()), skip)
                        .await
                        .unwrap();
                    let expected = expected(test, after, skip as usize);
                    let expected = (expected.len() == skip as usize).then(|| expected[skip as usize - 1].clone());
                    assert_eq!(before, expected, "{test:?} after {after:?} skip {skip}");
                }
            }
        }
        // One mode's window: its own runs only.
        let tests_in_window = RunFilter { test: Some(true), status: Some(RunStatus::Pending), within: Some(3), ..Default::default() };
        let listed: Vec<String> = f.store.list_runs(account, &tests_in_window, 100, None).await.unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(listed, vec![ids[10].clone(), ids[9].clone(), ids[8].clone()]);
    }
}

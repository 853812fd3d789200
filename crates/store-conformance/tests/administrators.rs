//! The administrator role on every store: it can be given and taken away, but never from the last
//! administrator, also when removals race on separate connections.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::store::{LAST_ADMIN, StoreError};
use runbase_domain::time::Timestamp;
use runbase_store_conformance::for_each_store;

for_each_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_last_administrator_keeps_the_role_when_removals_race() {
        let Some(fresh) = BACKEND.fresh().await else {
            return;
        };
        let store = fresh.store.clone();
        let mut ids = Vec::new();
        for n in 0..6 {
            let a = store
                .create_account(&format!("admin{n}@example.com"), Timestamp::now())
                .await
                .unwrap();
            ids.push(a.id);
        }
        let admins = || async {
            store
                .list_accounts()
                .await
                .unwrap()
                .into_iter()
                .filter(|a| a.admin)
                .map(|a| a.id)
                .collect::<Vec<_>>()
        };
        // The first account of an install is made an administrator.
        assert_eq!(admins().await, [ids[0].clone()]);

        // Alone, the role cannot be taken away; taking it from a non-administrator changes
        // nothing; an unknown account is not found.
        let err = store.set_admin(&ids[0], false).await.unwrap_err();
        assert!(matches!(&err, StoreError::Conflict(m) if m == LAST_ADMIN), "{err:?}");
        let other = store.set_admin(&ids[1], false).await.unwrap();
        assert!(!other.admin);
        let err = store.set_admin("acct_nobody", false).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)), "{err:?}");
        assert_eq!(admins().await, [ids[0].clone()]);

        // Every administrator taken away at once, round after round: one always stays.
        for round in 0..5 {
            for id in &ids {
                assert!(store.set_admin(id, true).await.unwrap().admin);
            }
            let removals: Vec<_> = ids
                .iter()
                .map(|id| {
                    let (store, id) = (store.clone(), id.clone());
                    tokio::spawn(async move { store.set_admin(&id, false).await })
                })
                .collect();
            let mut refused = 0;
            for removal in removals {
                match removal.await.unwrap() {
                    Ok(a) => assert!(!a.admin),
                    Err(StoreError::Conflict(m)) if m == LAST_ADMIN => refused += 1,
                    Err(e) => panic!("round {round}: {e:?}"),
                }
            }
            assert_eq!(refused, 1, "round {round}");
            assert_eq!(admins().await.len(), 1, "round {round}");
        }
    }
}

//! A balance never passes `Millicents::MAX_BALANCE` (2^53 micro-USD), so the wire's
//! `balanceUsd` is always exact; the refusal is a clean conflict, not a storage error, on every
//! store.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::money::Millicents;
use runbase_domain::store::StoreError;
use runbase_domain::time::Timestamp;
use runbase_store_conformance::for_each_store;

for_each_store! {
    #[tokio::test]
    async fn credits_stop_at_the_largest_exact_balance() {
        let Some(fresh) = BACKEND.fresh().await else {
            return;
        };
        let store = fresh.store.clone();
        let a = store
            .create_account("rich@example.com", Timestamp::now())
            .await
            .unwrap();
        let now = Timestamp::now();
        store
            .add_credits(&a.id, Millicents::MAX_BALANCE, "all of it", None, now)
            .await
            .unwrap();
        let err = store
            .add_credits(&a.id, Millicents(1), "one more", None, now)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let err = store
            .add_credits(&a.id, Millicents(i64::MAX), "overflow", None, now)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        let a = store.account(&a.id).await.unwrap().unwrap();
        assert_eq!(a.balance, Millicents::MAX_BALANCE);
        assert!(a.balance.micro_usd() <= 1 << 53);
        // Only the one top-up was written.
        let ledger = store.ledger(&a.id, 10, None).await.unwrap();
        assert_eq!(ledger.len(), 1, "{ledger:?}");
        // A missing account is not a balance conflict.
        let err = store
            .add_credits("acct_missing", Millicents(1), "nobody", None, now)
            .await
            .unwrap_err();
        assert!(!matches!(err, StoreError::Conflict(_)), "{err:?}");
    }
}

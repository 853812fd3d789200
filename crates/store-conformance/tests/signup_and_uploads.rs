//! What every store does for a new account's welcome credit (granted in the transaction that
//! creates the account, with its own ledger line, and never for a refused duplicate) and for
//! uploads (recorded with their account, read back whole, ids unique).

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::account::{LedgerKind, NewAccount, WELCOME_CREDIT_MEMO};
use runbase_domain::money::Millicents;
use runbase_domain::store::StoreError;
use runbase_domain::time::Timestamp;
use runbase_domain::uploads::{Upload, UploadQuota};
use runbase_store_conformance::for_each_store;

for_each_store! {
    #[tokio::test]
    async fn the_welcome_credit_comes_with_the_account() {
        let Some(fresh) = BACKEND.fresh().await else {
            return;
        };
        let store = fresh.store.clone();
        let credit = Millicents::from_cents(250).unwrap();
        let new = |email: &str, signup_credit| NewAccount {
            email: email.into(),
            signup_credit,
            ..NewAccount::default()
        };
        let a = store
            .create_account_with(new("new@example.com", credit), Timestamp::now())
            .await
            .unwrap();
        assert_eq!(a.balance, credit, "the answer carries the balance");
        let stored = store.account(&a.id).await.unwrap().unwrap();
        assert_eq!(stored.balance, credit);
        let ledger = store.ledger(&a.id, 10, None).await.unwrap();
        assert_eq!(ledger.len(), 1, "{ledger:?}");
        assert_eq!(ledger[0].kind, LedgerKind::Topup);
        assert_eq!(ledger[0].memo, WELCOME_CREDIT_MEMO);
        assert_eq!(ledger[0].amount, credit);
        assert_eq!(ledger[0].balance_after, credit);
        // A welcome credit is free: the account is not "credited" (uploads keep the small quota).
        assert!(!store.upload_usage(&a.id).await.unwrap().credited);

        // A duplicate email is refused and grants nothing.
        let err = store
            .create_account_with(new("new@example.com", credit), Timestamp::now())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
        assert_eq!(store.ledger(&a.id, 10, None).await.unwrap().len(), 1);
        assert_eq!(store.list_accounts().await.unwrap().len(), 1);

        // Zero writes no line.
        let b = store
            .create_account_with(new("zero@example.com", Millicents::ZERO), Timestamp::now())
            .await
            .unwrap();
        assert_eq!(b.balance, Millicents::ZERO);
        assert!(store.ledger(&b.id, 10, None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn uploads_are_recorded_with_their_account() {
        let Some(fresh) = BACKEND.fresh().await else {
            return;
        };
        let store = fresh.store.clone();
        let a = store
            .create_account("owner@example.com", Timestamp::now())
            .await
            .unwrap();
        let upload = Upload {
            id: "upl_conformance0000000000000".into(),
            account_id: a.id.clone(),
            path: "upl_conformance0000000000000/upload.png".into(),
            content_type: "image/png".into(),
            size_bytes: 31_457_280,
            created_at: Timestamp::now(),
        };
        store.create_upload(&upload, &UploadQuota::default()).await.unwrap();
        assert_eq!(store.upload(&upload.id).await.unwrap(), Some(upload.clone()));
        assert_eq!(store.upload("upl_missing").await.unwrap(), None);
        assert_eq!(store.upload_usage(&a.id).await.unwrap().account_bytes, 31_457_280);
        // An id is recorded once (and counted once).
        assert!(store.create_upload(&upload, &UploadQuota::default()).await.is_err());
        assert_eq!(store.upload_usage(&a.id).await.unwrap().account_bytes, 31_457_280);
        // An upload belongs to an account that exists.
        let orphan = Upload {
            id: "upl_orphan".into(),
            account_id: "acct_missing".into(),
            path: "upl_orphan/upload.png".into(),
            ..upload
        };
        assert!(store.create_upload(&orphan, &UploadQuota::default()).await.is_err());
        assert_eq!(store.upload_usage("acct_missing").await.unwrap().account_bytes, 0);
    }
}

//! Sign-in with OpenID Connect, against every store: an identity links to one account only,
//! and a sign-in in progress is taken once, expired ones swept.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::identities::PendingSignIn;
use runbase_domain::store::StoreError;
use runbase_domain::time::Timestamp;
use runbase_store_conformance::{Backend, for_each_store};

fn pending(state_hash: &str, expires_at: Timestamp) -> PendingSignIn {
    PendingSignIn {
        state_hash: state_hash.into(),
        provider: "google".into(),
        binding_hash: "b".repeat(64),
        verifier: "v".repeat(64),
        nonce: "n".repeat(32),
        next: "/runs".into(),
        expires_at,
    }
}

for_each_store! {
    #[tokio::test]
    async fn an_identity_links_to_one_account() {
        let Some(f) = Backend::fresh(BACKEND).await else { return };
        let s = f.store.as_ref();
        let now = Timestamp::now();
        let a = s.create_account("a@example.com", now).await.unwrap();
        let b = s.create_account("b@example.com", now).await.unwrap();
        assert!(s.account_by_identity("https://idp", "sub-1").await.unwrap().is_none());
        s.link_identity("https://idp", "sub-1", &a.id, now).await.unwrap();
        let again = s.link_identity("https://idp", "sub-1", &b.id, now).await;
        assert!(matches!(again, Err(StoreError::Conflict(_))), "{again:?}");
        assert_eq!(s.account_by_identity("https://idp", "sub-1").await.unwrap().unwrap().id, a.id);
        // The same subject at another issuer is another identity.
        assert!(s.account_by_identity("https://other", "sub-1").await.unwrap().is_none());
        s.link_identity("https://other", "sub-1", &b.id, now).await.unwrap();
        assert_eq!(s.account_by_identity("https://other", "sub-1").await.unwrap().unwrap().id, b.id);
    }

    #[tokio::test]
    async fn a_pending_sign_in_is_taken_once_and_expired_ones_swept() {
        let Some(f) = Backend::fresh(BACKEND).await else { return };
        let s = f.store.as_ref();
        let now = Timestamp::now();
        let later = Timestamp(now.0 + 600_000_000);
        let p = pending("s1", later);
        s.put_pending_sign_in(&p, now).await.unwrap();
        s.put_pending_sign_in(&pending("old", Timestamp(now.0 - 1)), Timestamp(now.0 - 10)).await.unwrap();
        assert_eq!(s.take_pending_sign_in("s1").await.unwrap(), Some(p));
        assert_eq!(s.take_pending_sign_in("s1").await.unwrap(), None);
        // A later start sweeps what has expired.
        s.put_pending_sign_in(&pending("s2", later), now).await.unwrap();
        assert_eq!(s.take_pending_sign_in("old").await.unwrap(), None);
        assert!(s.take_pending_sign_in("s2").await.unwrap().is_some());
    }
}

//! What every store guarantees for the uploads' quota and retention: concurrent uploads of one
//! account never pass its quota together (the check and the write are one step), the usage is
//! always the sum of the account's uploads, and an expired upload is claimed by one sweeper at
//! a time, so several nodes sweeping at once delete each file once, bytes and record.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::files::FileStore;
use runbase_domain::store::{CreateUploadError, Store};
use runbase_domain::time::Timestamp;
use runbase_domain::uploads::{self, Upload, UploadQuota};
use runbase_files::LocalFiles;
use runbase_store_conformance::for_each_store;
use std::sync::Arc;

const DAY: i64 = 86_400 * 1_000_000;

fn upload(account: &str, n: usize, size: u64, created_at: Timestamp) -> Upload {
    let id = format!("upl_conf{n:020}");
    Upload {
        path: format!("{id}/upload.png"),
        id,
        account_id: account.into(),
        content_type: "image/png".into(),
        size_bytes: size,
        created_at,
    }
}

/// The stores to sweep with, as separate nodes would: on PostgreSQL, two more connection
/// pools to the same database; on SQLite (one process per database), the same store twice.
async fn nodes(fresh: &runbase_store_conformance::Fresh) -> Vec<Arc<dyn Store>> {
    match &fresh.url {
        Some(url) => {
            let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
            for _ in 0..2 {
                let node = runbase_store_postgres::PgStore::connect_with_pool(url, 3)
                    .await
                    .unwrap();
                nodes.push(Arc::new(node));
            }
            nodes
        }
        None => vec![fresh.store.clone(), fresh.store.clone()],
    }
}

for_each_store! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_uploads_never_pass_the_quota_together() {
        let Some(fresh) = BACKEND.fresh().await else {
            return;
        };
        let store = fresh.store.clone();
        let a = store.create_account("quota@example.com", Timestamp::now()).await.unwrap();
        let b = store.create_account("other@example.com", Timestamp::now()).await.unwrap();
        // Room for ten uploads of 1000 bytes (and a half), then twenty at once.
        let quota = UploadQuota::per_account(10_500);
        let mut tasks = Vec::new();
        for n in 0..20 {
            let (store, account) = (store.clone(), a.id.clone());
            tasks.push(tokio::spawn(async move {
                store.create_upload(&upload(&account, n, 1000, Timestamp::now()), &quota).await
            }));
        }
        let (mut ok, mut refused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(CreateUploadError::OverQuota { usage }) => {
                    assert!(usage.account_bytes > 9_500, "{usage:?}");
                    refused += 1;
                }
                Err(e) => panic!("store error: {e}"),
            }
        }
        assert_eq!((ok, refused), (10, 10));
        assert_eq!(store.upload_usage(&a.id).await.unwrap().account_bytes, 10_000);
        // A refused upload left no record.
        let mut recorded = 0;
        for n in 0..20 {
            let id = upload(&a.id, n, 0, Timestamp::now()).id;
            recorded += usize::from(store.upload(&id).await.unwrap().is_some());
        }
        assert_eq!(recorded, 10);
        // What fits still fits, exactly to the byte; the quota is per account.
        store.create_upload(&upload(&a.id, 100, 500, Timestamp::now()), &quota).await.unwrap();
        let over = store.create_upload(&upload(&a.id, 101, 1, Timestamp::now()), &quota).await;
        assert!(matches!(over, Err(CreateUploadError::OverQuota { usage }) if usage.account_bytes == 10_500), "{over:?}");
        // A first upload larger than the whole quota is refused too.
        let over = store.create_upload(&upload(&b.id, 102, 20_000, Timestamp::now()), &quota).await;
        assert!(matches!(over, Err(CreateUploadError::OverQuota { usage }) if usage.account_bytes == 0), "{over:?}");
        store.create_upload(&upload(&b.id, 103, 10_500, Timestamp::now()), &quota).await.unwrap();
        // Without a quota, nothing is refused.
        store.create_upload(&upload(&b.id, 104, 1 << 40, Timestamp::now()), &UploadQuota::default()).await.unwrap();
        assert_eq!(store.upload_usage(&b.id).await.unwrap().account_bytes, 10_500 + (1 << 40));

        // Deleting gives the room back, once.
        let first = upload(&a.id, 100, 500, Timestamp::now()).id;
        assert!(store.delete_upload(&first).await.unwrap());
        assert!(!store.delete_upload(&first).await.unwrap());
        assert!(store.upload(&first).await.unwrap().is_none());
        assert_eq!(store.upload_usage(&a.id).await.unwrap().account_bytes, 10_000);
        store.create_upload(&upload(&a.id, 105, 500, Timestamp::now()), &quota).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_credited_accounts_have_a_small_quota_and_share_one_total() {
        let Some(fresh) = BACKEND.fresh().await else {
            return;
        };
        let store = fresh.store.clone();
        let quota = &UploadQuota {
            account_bytes: Some(10_000),
            uncredited_account_bytes: Some(3_000),
            uncredited_total_bytes: Some(5_000),
        };
        let now = Timestamp::now;
        let a = store.create_account("free-a@example.com", now()).await.unwrap();
        let b = store.create_account("free-b@example.com", now()).await.unwrap();
        let paid = store.create_account("paid@example.com", now()).await.unwrap();
        store
            .add_credits(&paid.id, runbase_domain::Millicents(1_000), "top-up", None, now())
            .await
            .unwrap();
        let usage = store.upload_usage(&a.id).await.unwrap();
        assert!(!usage.credited && store.upload_usage(&paid.id).await.unwrap().credited);

        // A free account's own quota is the smaller one.
        store.create_upload(&upload(&a.id, 1, 3_000, now()), quota).await.unwrap();
        let over = store.create_upload(&upload(&a.id, 2, 1, now()), quota).await;
        assert!(
            matches!(&over, Err(CreateUploadError::OverQuota { usage }) if usage.account_bytes == 3_000 && !usage.credited),
            "{over:?}"
        );
        // Free accounts share the total: B has room of its own, the total has 2000 left.
        store.create_upload(&upload(&b.id, 3, 2_000, now()), quota).await.unwrap();
        let over = store.create_upload(&upload(&b.id, 4, 1, now()), quota).await;
        assert!(
            matches!(&over, Err(CreateUploadError::OverQuota { usage }) if usage.uncredited_total_bytes == 5_000 && usage.account_bytes == 2_000),
            "{over:?}"
        );
        // A credited account is outside the total, with the full quota.
        store.create_upload(&upload(&paid.id, 5, 10_000, now()), quota).await.unwrap();
        assert_eq!(store.upload_usage(&paid.id).await.unwrap().uncredited_total_bytes, 5_000);
        // Credit makes B a paying account: the full quota, and the total no longer binds it.
        store
            .add_credits(&b.id, runbase_domain::Millicents(1), "grant", Some("admin@example.com"), now())
            .await
            .unwrap();
        store.create_upload(&upload(&b.id, 6, 8_000, now()), quota).await.unwrap();
        // Deleting a free-time upload gives its bytes back to the total, whatever its account
        // has become since; a second deletion gives nothing.
        assert!(store.delete_upload(&upload(&b.id, 3, 0, now()).id).await.unwrap());
        assert!(!store.delete_upload(&upload(&b.id, 3, 0, now()).id).await.unwrap());
        let usage = store.upload_usage(&a.id).await.unwrap();
        assert_eq!((usage.account_bytes, usage.uncredited_total_bytes), (3_000, 3_000));
        assert_eq!(store.upload_usage(&b.id).await.unwrap().account_bytes, 8_000);

        // Many free accounts at once, through several nodes, never pass the total together.
        let nodes = nodes(&fresh).await;
        let mut tasks = Vec::new();
        for n in 0..12 {
            let account = store
                .create_account(&format!("free{n}@example.com"), now())
                .await
                .unwrap();
            let node = nodes[n % nodes.len()].clone();
            let quota = *quota;
            tasks.push(tokio::spawn(async move {
                node.create_upload(&upload(&account.id, 100 + n, 500, Timestamp::now()), &quota)
                    .await
                    .is_ok()
            }));
        }
        let mut accepted = 0;
        for t in tasks {
            accepted += usize::from(t.await.unwrap());
        }
        assert_eq!(accepted, 4, "2000 bytes of room, 500 each");
        assert_eq!(store.upload_usage(&a.id).await.unwrap().uncredited_total_bytes, 5_000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn an_expired_upload_is_claimed_by_one_sweeper_at_a_time() {
        let Some(fresh) = BACKEND.fresh().await else {
            return;
        };
        let store = fresh.store.clone();
        let a = store.create_account("old@example.com", Timestamp::now()).await.unwrap();
        let now = Timestamp::now();
        for n in 0..30 {
            // 0..20 are 40 days old, the rest 1 day.
            let age = if n < 20 { 40 } else { 1 };
            let u = upload(&a.id, n, 10, Timestamp(now.0 - age * DAY - n as i64));
            store.create_upload(&u, &UploadQuota::default()).await.unwrap();
        }
        let before = Timestamp(now.0 - 30 * DAY);
        let until = Timestamp(now.0 + 600_000_000);
        let nodes = nodes(&fresh).await;
        let (x, y) = tokio::join!(
            nodes[0].claim_expired_uploads(before, 15, now, until),
            nodes[1].claim_expired_uploads(before, 15, now, until),
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let mut ids: Vec<String> = x.iter().chain(&y).map(|u| u.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), x.len() + y.len(), "claimed twice: {x:?} {y:?}");
        assert_eq!(ids.len(), 20, "every expired upload claimed, no other");
        assert!(x.windows(2).all(|w| w[0].created_at <= w[1].created_at), "oldest first");
        // Claimed: nobody else gets them until the claim runs out.
        assert!(store.claim_expired_uploads(before, 100, now, until).await.unwrap().is_empty());
        let later = Timestamp(until.0 + 1);
        let again = store
            .claim_expired_uploads(before, 100, later, Timestamp(later.0 + 1))
            .await
            .unwrap();
        assert_eq!(again.len(), 20, "a claim whose sweeper died is taken up again");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn nodes_sweeping_at_once_delete_each_expired_upload_once() {
        let Some(fresh) = BACKEND.fresh().await else {
            return;
        };
        let store = fresh.store.clone();
        let dir = tempfile::tempdir().unwrap();
        let files = Arc::new(LocalFiles::new(dir.path()));
        let a = store.create_account("sweep@example.com", Timestamp::now()).await.unwrap();
        let now = Timestamp::now();
        let mut kept = Vec::new();
        for n in 0..250 {
            let age = if n < 230 { 31 } else { 29 };
            let u = upload(&a.id, n, 7, Timestamp(now.0 - age * DAY));
            files.put(&u.path, "image/png", vec![0; 7]).await.unwrap();
            store.create_upload(&u, &UploadQuota::default()).await.unwrap();
            if age == 29 {
                kept.push(u);
            }
        }
        // One expired upload whose bytes are already gone (a sweeper died after deleting them).
        files.delete(&upload(&a.id, 0, 7, now).path).await.unwrap();

        let nodes = nodes(&fresh).await;
        let mut tasks = Vec::new();
        for node in nodes.iter().chain(&nodes) {
            let (node, files) = (node.clone(), files.clone());
            tasks.push(tokio::spawn(async move {
                uploads::sweep(node.as_ref(), files.as_ref(), Some(30), now).await.unwrap()
            }));
        }
        let mut deleted = 0;
        for t in tasks {
            deleted += t.await.unwrap().deleted;
        }
        assert_eq!(deleted, 230, "each expired upload deleted once, in all");
        assert_eq!(store.upload_usage(&a.id).await.unwrap().account_bytes, 7 * 20);
        for u in &kept {
            assert!(store.upload(&u.id).await.unwrap().is_some());
            assert!(files.open(&u.path).await.unwrap().is_some());
        }
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("upl_"))
            .collect();
        left.sort();
        let mut expected: Vec<_> = kept.iter().map(|u| u.id.clone()).collect();
        expected.sort();
        assert_eq!(left, expected, "the expired uploads' bytes (and directories) are gone");
        // Retention off: nothing is deleted.
        let report = uploads::sweep(store.as_ref(), files.as_ref(), None, Timestamp(now.0 + 365 * DAY)).await.unwrap();
        assert_eq!(report.deleted, 0);
    }
}

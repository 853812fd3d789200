//! What every store guarantees for the uploads' quota and retention: concurrent uploads of one
//! account never pass its quota together (the check and the write are one step), the usage is
//! always the sum of the account's uploads, and an expired upload is claimed by one sweeper at
//! a time, so several nodes sweeping at once delete each file once, bytes and record.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

use runbase_domain::files::FileStore;
use runbase_domain::store::{CreateUploadError, Store};
use runbase_domain::time::Timestamp;
use runbase_domain::uploads::{self, Upload};
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
        let quota = Some(10_500);
        let mut tasks = Vec::new();
        for n in 0..20 {
            let (store, account) = (store.clone(), a.id.clone());
            tasks.push(tokio::spawn(async move {
                store.create_upload(&upload(&account, n, 1000, Timestamp::now()), quota).await
            }));
        }
        let (mut ok, mut refused) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(CreateUploadError::OverQuota { used_bytes }) => {
                    assert!(used_bytes > 9_500, "{used_bytes}");
                    refused += 1;
                }
                Err(e) => panic!("store error: {e}"),
            }
        }
        assert_eq!((ok, refused), (10, 10));
        assert_eq!(store.upload_bytes(&a.id).await.unwrap(), 10_000);
        // A refused upload left no record.
        let mut recorded = 0;
        for n in 0..20 {
            let id = upload(&a.id, n, 0, Timestamp::now()).id;
            recorded += usize::from(store.upload(&id).await.unwrap().is_some());
        }
        assert_eq!(recorded, 10);
        // What fits still fits, exactly to the byte; the quota is per account.
        store.create_upload(&upload(&a.id, 100, 500, Timestamp::now()), quota).await.unwrap();
        let over = store.create_upload(&upload(&a.id, 101, 1, Timestamp::now()), quota).await;
        assert!(matches!(over, Err(CreateUploadError::OverQuota { used_bytes: 10_500 })), "{over:?}");
        // A first upload larger than the whole quota is refused too.
        let over = store.create_upload(&upload(&b.id, 102, 20_000, Timestamp::now()), quota).await;
        assert!(matches!(over, Err(CreateUploadError::OverQuota { used_bytes: 0 })), "{over:?}");
        store.create_upload(&upload(&b.id, 103, 10_500, Timestamp::now()), quota).await.unwrap();
        // Without a quota, nothing is refused.
        store.create_upload(&upload(&b.id, 104, 1 << 40, Timestamp::now()), None).await.unwrap();
        assert_eq!(store.upload_bytes(&b.id).await.unwrap(), 10_500 + (1 << 40));

        // Deleting gives the room back, once.
        let first = upload(&a.id, 100, 500, Timestamp::now()).id;
        assert!(store.delete_upload(&first).await.unwrap());
        assert!(!store.delete_upload(&first).await.unwrap());
        assert!(store.upload(&first).await.unwrap().is_none());
        assert_eq!(store.upload_bytes(&a.id).await.unwrap(), 10_000);
        store.create_upload(&upload(&a.id, 105, 500, Timestamp::now()), quota).await.unwrap();
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
            store.create_upload(&u, None).await.unwrap();
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
            store.create_upload(&u, None).await.unwrap();
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
        assert_eq!(store.upload_bytes(&a.id).await.unwrap(), 7 * 20);
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

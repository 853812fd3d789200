//! Retention: uploads older than `[uploads] retention_days` are deleted, bytes and record, by a
//! periodic sweep; the same sweep removes the `.partial` files that writes cut short by a
//! crash left in the file storage.
//!
//! Several nodes may sweep one store at once. Each expired upload is first claimed in the store
//! for a while ([`Store::claim_expired_uploads`]), so one node deletes it; its bytes go first,
//! then its record (with its share of the quota). A node that dies in between leaves the claim
//! to run out, and the next sweep finishes the job: deleting bytes already gone is no error,
//! nor is finding the record already removed.

use crate::files::{FileStore, STALE_PARTIAL_AFTER};
use crate::store::{Store, StoreError};
use crate::time::Timestamp;
use std::future::Future;
use std::time::Duration;

/// Uploads claimed per store round trip.
const BATCH: u32 = 100;

/// How long a claim keeps other nodes off an upload: far longer than deleting one file takes.
const CLAIM: Duration = Duration::from_secs(10 * 60);

/// How often the sweep runs (and once at start-up).
pub const SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// What one pass of the sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired uploads removed (bytes and record) by this pass.
    pub deleted: u64,
    /// Stale `.partial` files removed.
    pub partials: u64,
}

/// One pass: removes stale `.partial` files, then, with `retention_days`, every upload made
/// more than that many days before `now`. A storage failure ends the pass early (the uploads
/// it claimed are taken up again once their claim runs out); a store failure is returned.
pub async fn sweep(
    store: &dyn Store,
    files: &dyn FileStore,
    retention_days: Option<u32>,
    now: Timestamp,
) -> Result<SweepReport, StoreError> {
    let mut report = SweepReport::default();
    match files.sweep_partials(STALE_PARTIAL_AFTER).await {
        Ok(n) => report.partials = n,
        Err(e) => tracing::warn!(error = %e, "removing stale partial files failed"),
    }
    let Some(days) = retention_days else {
        return Ok(report);
    };
    let before = Timestamp(now.0.saturating_sub(i64::from(days) * MICROS_PER_DAY));
    let lease_until = Timestamp(now.0 + CLAIM.as_micros() as i64);
    loop {
        let claimed = store
            .claim_expired_uploads(before, BATCH, now, lease_until)
            .await?;
        for upload in &claimed {
            if let Err(e) = files.delete(&upload.path).await {
                tracing::warn!(error = %e, upload.id = %upload.id, "deleting an expired upload failed; retried on a later sweep");
                return Ok(report);
            }
            if store.delete_upload(&upload.id).await? {
                report.deleted += 1;
            }
        }
        if claimed.len() < BATCH as usize {
            return Ok(report);
        }
    }
}

/// Runs [`sweep`] now and every [`SWEEP_EVERY`] until `stop` resolves.
pub async fn sweep_forever(
    store: &dyn Store,
    files: &dyn FileStore,
    retention_days: Option<u32>,
    stop: impl Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    let mut every = tokio::time::interval(SWEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = every.tick() => {}
        }
        // A pass cut short by the stop is safe: what it claimed is taken up again later.
        let pass = tokio::select! {
            _ = &mut stop => return,
            r = sweep(store, files, retention_days, Timestamp::now()) => r,
        };
        match pass {
            Ok(r) if r == SweepReport::default() => {}
            Ok(r) => tracing::info!(
                uploads.deleted = r.deleted,
                partials.deleted = r.partials,
                "upload sweep"
            ),
            Err(e) => tracing::warn!(error = %e, "the upload sweep failed; retried on the next"),
        }
    }
}

//! Receiving an upload as it arrives: the first bytes decide its kind (and so its path), every
//! byte after them goes straight to the file storage through a [`FileWriter`], and the size is
//! capped as it grows. Once the whole file is in, its record and its share of the account's
//! quota are written in one store transaction, and only then is the file committed: a file
//! refused at any step leaves nothing in the storage, and every committed file has a record
//! (which the retention sweep finds).

use super::{ACCEPTED_KINDS, Sniffed, Upload, UploadLimits, UploadQuota, UploadUsage, sniff};
use crate::error::{ApiError, ErrorCode};
use crate::files::{FileStore, FileStoreError, FileWriter};
use crate::service::internal;
use crate::store::{CreateUploadError, Store};
use crate::time::Timestamp;
use bytes::Bytes;

/// How much of the start of a file is looked at for its kind: more than any accepted kind's
/// magic number needs (WebM's is the farthest, within 256 bytes).
const SNIFF_BYTES: usize = 8 * 1024;

/// An upload being received. Dropped before [`Incoming::finish`] (a refused form, a broken
/// connection), it leaves nothing behind: its writer removes what it wrote.
pub struct Incoming<'a> {
    store: &'a dyn Store,
    files: &'a dyn FileStore,
    account_id: String,
    id: String,
    limits: UploadLimits,
    /// The most this file may be: the per-file cap, or less when the account's quota has less
    /// room left (so a file that cannot fit is cut as it arrives, not after).
    cap: u64,
    /// Where the account stood when this one began.
    usage_at_start: UploadUsage,
    /// The first bytes, until there are enough to tell the kind.
    head: Vec<u8>,
    /// Once the kind is known: where the bytes go.
    writer: Option<(Sniffed, Box<dyn FileWriter>)>,
    size: u64,
}

impl<'a> Incoming<'a> {
    /// Starts receiving an upload of `account_id`; refused at once (before any byte is read)
    /// when its quota has no room left.
    pub async fn start(
        store: &'a dyn Store,
        files: &'a dyn FileStore,
        account_id: &str,
        limits: UploadLimits,
    ) -> Result<Incoming<'a>, ApiError> {
        let usage = if limits.quota == UploadQuota::default() {
            UploadUsage::default()
        } else {
            store.upload_usage(account_id).await.map_err(internal)?
        };
        let room = limits.quota.room(&usage);
        if room == Some(0) {
            return Err(over_quota(&limits, &usage));
        }
        Ok(Incoming {
            store,
            files,
            account_id: account_id.to_owned(),
            id: crate::ids::new_upload_id(),
            limits,
            cap: room.map_or(limits.max_bytes, |r| r.min(limits.max_bytes)),
            usage_at_start: usage,
            head: Vec::new(),
            writer: None,
            size: 0,
        })
    }

    /// Takes the next piece of the file.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), ApiError> {
        self.size += chunk.len() as u64;
        if self.size > self.cap {
            return Err(if self.size > self.limits.max_bytes {
                too_large(self.limits.max_bytes)
            } else {
                over_quota(&self.limits, &self.usage_at_start)
            });
        }
        if let Some((_, writer)) = &mut self.writer {
            return writer
                .write(chunk)
                .await
                .map_err(|e| storage_failed(&self.id, &e));
        }
        self.head.extend_from_slice(&chunk);
        if self.head.len() >= SNIFF_BYTES {
            self.open().await?;
        }
        Ok(())
    }

    /// The whole file is in: records it (within the quota) and commits it.
    pub async fn finish(mut self) -> Result<Upload, ApiError> {
        if self.writer.is_none() {
            self.open().await?;
        }
        let Some((kind, writer)) = self.writer.take() else {
            return Err(ApiError::internal()); // `open` set it or failed
        };
        let upload = Upload {
            path: format!("{}/upload.{}", self.id, kind.extension),
            id: self.id.clone(),
            account_id: self.account_id.clone(),
            content_type: kind.content_type.to_owned(),
            size_bytes: self.size,
            created_at: Timestamp::now(),
        };
        match self.store.create_upload(&upload, &self.limits.quota).await {
            Ok(()) => {}
            Err(CreateUploadError::OverQuota { usage }) => {
                writer.abort().await;
                return Err(over_quota(&self.limits, &usage));
            }
            Err(CreateUploadError::Store(e)) => {
                writer.abort().await;
                return Err(internal(e));
            }
        }
        if let Err(e) = writer.commit().await {
            // The record goes with the file that never was (and its share of the quota).
            if let Err(undo) = self.store.delete_upload(&upload.id).await {
                tracing::error!(error = %undo, upload.id = %upload.id, "removing the record of an upload whose file failed");
            }
            return Err(storage_failed(&upload.id, &e));
        }
        Ok(upload)
    }

    /// Gives up on the upload: what was written is removed.
    pub async fn abort(mut self) {
        if let Some((_, writer)) = self.writer.take() {
            writer.abort().await;
        }
    }

    /// Tells the kind from the head and opens the file it goes to, with the head in it.
    async fn open(&mut self) -> Result<(), ApiError> {
        let kind = sniff(&self.head).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidInput,
                format!(
                    "file: is not an image, video or audio file Runbase accepts ({ACCEPTED_KINDS}); \
                     the type is read from the file's content, not its name"
                ),
            )
        })?;
        let path = format!("{}/upload.{}", self.id, kind.extension);
        let mut writer = self
            .files
            .create(&path, kind.content_type)
            .await
            .map_err(|e| storage_failed(&self.id, &e))?;
        let head = Bytes::from(std::mem::take(&mut self.head));
        if let Err(e) = writer.write(head).await {
            writer.abort().await;
            return Err(storage_failed(&self.id, &e));
        }
        self.writer = Some((kind, writer));
        Ok(())
    }
}

/// The answer to a file larger than the per-file cap.
pub fn too_large(max: u64) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("The file is larger than this server accepts ({max} bytes)"),
    )
}

/// The answer to an upload that would take the account past its quota.
///
/// The public error reference has no code for a storage quota. `413 payload_too_large` is
/// the upload's existing "more data than this server takes" answer, and it says the right
/// thing to a client: the same request will not succeed if simply retried. `429
/// USAGE_EXCEEDED` is the runs quota of a key (its fix, "create a new key", does not help
/// here, the quota being per account), and a 429 invites a retry with backoff; `507
/// Insufficient Storage` would be a code outside the reference. The message says which limit
/// it is and how room comes back.
fn over_quota(limits: &UploadLimits, usage: &UploadUsage) -> ApiError {
    let freed = match limits.retention_days {
        Some(days) => format!("; uploads are deleted {days} days after they are made"),
        None => String::new(),
    };
    let quota = &limits.quota;
    let own = quota.for_account(usage.credited);
    let own_room = own.map(|q| q.saturating_sub(usage.account_bytes));
    let shared_room = match (usage.credited, quota.uncredited_total_bytes) {
        (false, Some(total)) => Some(total.saturating_sub(usage.uncredited_total_bytes)),
        _ => None,
    };
    // The smaller room is the one that refused the file.
    let message = match (own_room, shared_room, quota.uncredited_total_bytes) {
        (own_room, Some(shared), Some(total)) if own_room.is_none_or(|o| shared < o) => format!(
            "This file does not fit in the storage this server gives to accounts without \
             purchased credit ({total} bytes for all of them, of which {} are in use); credit \
             added to the account gives it room of its own{freed}",
            usage.uncredited_total_bytes
        ),
        _ => {
            let raised = if usage.credited || quota.account_bytes == own {
                ""
            } else {
                "; credit added to the account raises it"
            };
            format!(
                "This file does not fit in the account's storage for uploads ({} bytes, of \
                 which {} are in use){raised}{freed}",
                own.unwrap_or(0),
                usage.account_bytes
            )
        }
    };
    ApiError::new(ErrorCode::PayloadTooLarge, message)
}

/// A write to the file storage failed (a full disk, a storage server that is down): nothing
/// was kept, and the same request may succeed later, so `503 service_unavailable` rather than
/// a 500. Logged here, once, with the cause; the client sees no internal detail.
fn storage_failed(upload_id: &str, e: &FileStoreError) -> ApiError {
    tracing::error!(error = %e, upload.id = %upload_id, "storing an upload failed; answered 503");
    ApiError::new(
        ErrorCode::ServiceUnavailable,
        "The file could not be stored right now; nothing was kept. Retry in a while",
    )
}

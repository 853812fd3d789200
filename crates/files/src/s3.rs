//! Files (run outputs, uploads) in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...) through the
//! `object_store` crate. Files are still served through Runbase's `/files/...` route, so run
//! URLs do not depend on the bucket being public and stay valid whatever the bucket's policy.

use crate::content_type_for;
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMultipartOptions, PutOptions,
    PutPayload, WriteMultipart,
};
use runbase_domain::files::{FileReader, FileStore, FileStoreError, FileWriter, is_safe_path};
use std::sync::Arc;

/// Where the bucket is and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct S3Settings {
    pub bucket: String,
    /// e.g. `http://127.0.0.1:9000` for a local server; AWS when unset.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Key prefix inside the bucket (e.g. `runbase/`).
    pub prefix: String,
}

pub struct S3Files {
    store: Arc<dyn ObjectStore>,
    prefix: String,
}

impl S3Files {
    /// Connects to the bucket; the usual `AWS_*` variables fill in what the settings leave out.
    pub fn new(s: &S3Settings) -> Result<Self, FileStoreError> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&s.bucket);
        if let Some(endpoint) = &s.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                // Path-style requests (`host/bucket/key`): what local servers expect.
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &s.region {
            b = b.with_region(region);
        }
        if let Some(id) = &s.access_key_id {
            b = b.with_access_key_id(id);
        }
        if let Some(secret) = &s.secret_access_key {
            b = b.with_secret_access_key(secret);
        }
        let store = b
            .build()
            .map_err(|e| FileStoreError(format!("S3 storage: {e}")))?;
        let prefix = s.prefix.trim_matches('/').to_owned();
        Ok(Self {
            store: Arc::new(store),
            prefix,
        })
    }

    fn key(&self, path: &str) -> Result<Path, FileStoreError> {
        if !is_safe_path(path) {
            return Err(FileStoreError(format!("unsafe path {path:?}")));
        }
        Ok(if self.prefix.is_empty() {
            Path::from(path)
        } else {
            Path::from(format!("{}/{path}", self.prefix))
        })
    }
}

/// The size of the parts a large file is sent in: S3's smallest part (every part but the last
/// must be at least 5 MiB). A file up to this size is sent in one PUT.
const PART_BYTES: usize = 5 * 1024 * 1024;

/// Parts of one file in flight at once. With the part being filled, a file being written holds
/// at most `(PARTS_IN_FLIGHT + 1) * PART_BYTES` in memory (15 MiB), whatever its size.
const PARTS_IN_FLIGHT: usize = 2;

fn put_attributes(content_type: &str) -> Attributes {
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, content_type.to_owned().into());
    attributes
}

#[async_trait]
impl FileStore for S3Files {
    async fn put(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), FileStoreError> {
        let key = self.key(path)?;
        let opts = PutOptions {
            attributes: put_attributes(content_type),
            ..PutOptions::default()
        };
        // A PUT is atomic: readers see the whole object or none.
        self.store
            .put_opts(&key, PutPayload::from(bytes), opts)
            .await
            .map_err(|e| FileStoreError(format!("S3 put {key}: {e}")))?;
        Ok(())
    }

    async fn create(
        &self,
        path: &str,
        content_type: &str,
    ) -> Result<Box<dyn FileWriter>, FileStoreError> {
        Ok(Box::new(S3Writer {
            store: self.store.clone(),
            key: self.key(path)?,
            attributes: put_attributes(content_type),
            buffered: Vec::new(),
            buffered_bytes: 0,
            multipart: None,
        }))
    }

    async fn open(&self, path: &str) -> Result<Option<FileReader>, FileStoreError> {
        let Ok(key) = self.key(path) else {
            return Ok(None);
        };
        let result = match self.store.get(&key).await {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(FileStoreError(format!("S3 get {key}: {e}"))),
        };
        let content_type = result
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.to_string())
            .unwrap_or_else(|| content_type_for(path).to_owned());
        let size = result.meta.size;
        let body = result.into_stream().map_err(std::io::Error::other).boxed();
        Ok(Some(FileReader {
            content_type,
            size: Some(size),
            body,
        }))
    }

    async fn delete(&self, path: &str) -> Result<(), FileStoreError> {
        let key = self.key(path)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(FileStoreError(format!("S3 delete {key}: {e}"))),
        }
    }
}

/// A file on its way to the bucket: gathered until it passes [`PART_BYTES`] (a small file is
/// then one PUT at its commit), sent as a multipart upload beyond. Nothing is visible under its
/// key until the commit; an abort (or a drop before the commit) aborts the multipart upload,
/// which removes the parts already sent. A crash leaves the parts of an unfinished upload in
/// the bucket, invisible; a bucket lifecycle rule (`AbortIncompleteMultipartUpload`) removes
/// them.
struct S3Writer {
    store: Arc<dyn ObjectStore>,
    key: Path,
    attributes: Attributes,
    buffered: Vec<Bytes>,
    buffered_bytes: usize,
    multipart: Option<WriteMultipart>,
}

impl S3Writer {
    fn failed(&self, what: &str, e: object_store::Error) -> FileStoreError {
        FileStoreError(format!("S3 {what} {}: {e}", self.key))
    }
}

#[async_trait]
impl FileWriter for S3Writer {
    async fn write(&mut self, chunk: Bytes) -> Result<(), FileStoreError> {
        if let Some(multipart) = &mut self.multipart {
            // Waiting for room in flight is what holds the client back: memory stays bounded.
            if let Err(e) = multipart.wait_for_capacity(PARTS_IN_FLIGHT).await {
                return Err(self.failed("multipart upload", e));
            }
            multipart.put(chunk);
            return Ok(());
        }
        self.buffered_bytes += chunk.len();
        self.buffered.push(chunk);
        if self.buffered_bytes > PART_BYTES {
            let opts = PutMultipartOptions {
                attributes: self.attributes.clone(),
                ..PutMultipartOptions::default()
            };
            let upload = self
                .store
                .put_multipart_opts(&self.key, opts)
                .await
                .map_err(|e| self.failed("multipart upload start", e))?;
            let mut multipart = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            for chunk in self.buffered.drain(..) {
                multipart.put(chunk);
            }
            self.buffered_bytes = 0;
            self.multipart = Some(multipart);
        }
        Ok(())
    }

    async fn commit(mut self: Box<Self>) -> Result<(), FileStoreError> {
        if let Some(multipart) = self.multipart.take() {
            // `finish` aborts the upload itself when it fails.
            multipart
                .finish()
                .await
                .map_err(|e| self.failed("multipart upload", e))?;
            return Ok(());
        }
        let payload: PutPayload = self.buffered.drain(..).collect();
        let opts = PutOptions {
            attributes: self.attributes.clone(),
            ..PutOptions::default()
        };
        self.store
            .put_opts(&self.key, payload, opts)
            .await
            .map_err(|e| self.failed("put", e))?;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        if let Some(multipart) = self.multipart.take()
            && let Err(e) = multipart.abort().await
        {
            tracing::warn!(error = %e, key = %self.key, "aborting an S3 multipart upload failed");
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        // Dropped half-way (the client went away): abort the upload in the background.
        if let Some(multipart) = self.multipart.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn(async move {
                let _ = multipart.abort().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use runbase_domain::files::read_all;

    fn in_memory() -> S3Files {
        S3Files {
            store: Arc::new(InMemory::new()),
            prefix: "p".into(),
        }
    }

    #[tokio::test]
    async fn small_and_large_files_are_written_in_pieces_and_read_back() {
        let files = in_memory();
        for (path, size) in [("upl_s/upload.png", 1000), ("upl_l/upload.mp4", 12 << 20)] {
            let mut w = files.create(path, "video/mp4").await.unwrap();
            for chunk in vec![7u8; size].chunks(100_000) {
                w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
            }
            assert!(
                files.open(path).await.unwrap().is_none(),
                "not before the commit"
            );
            w.commit().await.unwrap();
            let f = files.open(path).await.unwrap().unwrap();
            assert_eq!(f.size, Some(size as u64));
            assert_eq!(f.content_type, "video/mp4");
            let read = read_all(f, 64 << 20).await.unwrap();
            assert_eq!(read.bytes.len(), size);
        }
        files.delete("upl_l/upload.mp4").await.unwrap();
        files.delete("upl_l/upload.mp4").await.unwrap();
        assert!(files.open("upl_l/upload.mp4").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn an_aborted_file_is_not_stored() {
        let files = in_memory();
        let mut w = files.create("upl_a/upload.mp4", "video/mp4").await.unwrap();
        w.write(Bytes::from(vec![1u8; 6 << 20])).await.unwrap();
        w.abort().await;
        assert!(files.open("upl_a/upload.mp4").await.unwrap().is_none());
    }
}

//! Output files in an S3-compatible bucket (AWS S3, MinIO, Ceph, R2, ...) through the
//! `object_store` crate. Files are still served through Runbase's `/files/...` route, so run
//! URLs do not depend on the bucket being public and stay valid whatever the bucket's policy.

use crate::content_type_for;
use async_trait::async_trait;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload};
use runbase_domain::files::{FileStore, FileStoreError, StoredFile, is_safe_path};
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

#[async_trait]
impl FileStore for S3Files {
    async fn put(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), FileStoreError> {
        let key = self.key(path)?;
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::ContentType, content_type.to_owned().into());
        let opts = PutOptions {
            attributes,
            ..PutOptions::default()
        };
        // A PUT is atomic: readers see the whole object or none.
        self.store
            .put_opts(&key, PutPayload::from(bytes), opts)
            .await
            .map_err(|e| FileStoreError(format!("S3 put {key}: {e}")))?;
        Ok(())
    }

    async fn get(&self, path: &str) -> Result<Option<StoredFile>, FileStoreError> {
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
        let bytes = result
            .bytes()
            .await
            .map_err(|e| FileStoreError(format!("S3 read {key}: {e}")))?;
        Ok(Some(StoredFile {
            content_type,
            bytes: bytes.to_vec(),
        }))
    }
}

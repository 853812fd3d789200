//! File storage (run outputs, uploads): local files under `<data dir>/files/` (the default,
//! [`LocalFiles`]), or an S3-compatible bucket ([`S3Files`]). [`StorageConfig`] is the
//! `[storage]` section of the configuration and [`open`] builds the configured store.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

mod local;
mod s3;

pub use local::LocalFiles;
pub use s3::{S3Files, S3Settings};

use runbase_domain::files::FileStore;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// The `[storage]` section: `kind = "local"` (files in the data directory) or `kind = "s3"`
/// with `bucket` and, for servers other than AWS, `endpoint`. Credentials may also come from
/// the usual `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` variables.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    pub prefix: String,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("kind", &self.kind)
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[redacted]"),
            )
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: "local".into(),
            bucket: None,
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            prefix: String::new(),
        }
    }
}

/// Builds the configured store; `data_dir` holds local files.
pub fn open(config: &StorageConfig, data_dir: &Path) -> Result<Arc<dyn FileStore>, String> {
    match config.kind.as_str() {
        "local" => Ok(Arc::new(LocalFiles::new(data_dir.join("files")))),
        "s3" => {
            let bucket = config
                .bucket
                .clone()
                .filter(|b| !b.is_empty())
                .ok_or("storage: kind = \"s3\" needs a bucket")?;
            let s3 = S3Files::new(&S3Settings {
                bucket,
                endpoint: config.endpoint.clone(),
                region: config.region.clone(),
                access_key_id: config.access_key_id.clone(),
                secret_access_key: config.secret_access_key.clone(),
                prefix: config.prefix.clone(),
            })
            .map_err(|e| e.0)?;
            Ok(Arc::new(s3))
        }
        other => Err(format!(
            "storage.kind: must be \"local\" or \"s3\", not {other:?}"
        )),
    }
}

/// The content type for a file name's extension.
pub fn content_type_for(path: &str) -> &'static str {
    match Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
    {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "flac" => "audio/flac",
        "txt" => "text/plain; charset=utf-8",
        "json" => "application/json",
        _ => "application/octet-stream",
    }
}

//! Output file storage: local files by default; the contract lets an object store follow.

use async_trait::async_trait;

/// A stored file.
pub struct StoredFile {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
#[error("file storage: {0}")]
pub struct FileStoreError(pub String);

/// Where run outputs live. Paths are relative, `/`-separated, made of safe characters.
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    async fn put(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), FileStoreError>;
    async fn get(&self, path: &str) -> Result<Option<StoredFile>, FileStoreError>;
}

/// Whether `path` is a safe relative storage path: segments of `[A-Za-z0-9._-]`, none of
/// them `.` or `..`.
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    #[test]
    fn unsafe_paths_are_refused() {
        assert!(super::is_safe_path("run_abc/output.png"));
        for p in ["", "../etc/passwd", "a//b", "/abs", "a/./b", "a b"] {
            assert!(!super::is_safe_path(p), "{p}");
        }
    }
}

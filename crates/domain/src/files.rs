//! File storage (run outputs and uploads): local files by default, or an object store. Large
//! files go through it in pieces: [`FileStore::create`] gives a [`FileWriter`] that takes the
//! bytes as they arrive, and [`FileStore::open`] a [`FileReader`] whose body is a stream, so
//! neither an upload nor a download holds a whole file in memory.

use async_trait::async_trait;
use bytes::Bytes;
use futures_core::Stream;
use std::pin::Pin;
use std::time::Duration;

/// A stored file, read whole (see [`FileStore::get`]).
pub struct StoredFile {
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A file's bytes as they are read, in chunks of a bounded size.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// A stored file opened for reading.
pub struct FileReader {
    pub content_type: String,
    /// The length in bytes, when the storage says it before the body is read.
    pub size: Option<u64>,
    pub body: ByteStream,
}

#[derive(Debug, thiserror::Error)]
#[error("file storage: {0}")]
pub struct FileStoreError(pub String);

/// A file being written in pieces. Nothing is visible at its path until [`FileWriter::commit`];
/// a writer aborted, or dropped before its commit (a refused or broken upload), leaves nothing
/// behind, and what it buffers in memory is bounded whatever the file's size.
#[async_trait]
pub trait FileWriter: Send {
    /// Appends `chunk` (written through to the storage as it comes, not gathered).
    async fn write(&mut self, chunk: Bytes) -> Result<(), FileStoreError>;
    /// Makes the whole file visible at its path, at once (a reader never sees part of it).
    async fn commit(self: Box<Self>) -> Result<(), FileStoreError>;
    /// Discards what was written.
    async fn abort(self: Box<Self>);
}

/// Where run outputs and uploads live. Paths are relative, `/`-separated, made of safe
/// characters ([`is_safe_path`]).
#[async_trait]
pub trait FileStore: Send + Sync + 'static {
    /// Stores a file given whole (a run's outputs, which an adapter hands over whole).
    async fn put(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), FileStoreError>;
    /// Starts writing a file in pieces.
    async fn create(
        &self,
        path: &str,
        content_type: &str,
    ) -> Result<Box<dyn FileWriter>, FileStoreError>;
    /// Opens a file for reading as a stream; `None` when there is none at `path` (or `path` is
    /// not a safe path).
    async fn open(&self, path: &str) -> Result<Option<FileReader>, FileStoreError>;
    /// Removes a file; one that is already gone is not an error (two deleters may race).
    async fn delete(&self, path: &str) -> Result<(), FileStoreError>;
    /// Removes what writes interrupted by a crash left behind (unfinished `.partial` files,
    /// older than `older_than` so that writes still under way are left alone); returns how
    /// many were removed. A store whose unfinished writes are invisible does nothing.
    async fn sweep_partials(&self, _older_than: Duration) -> Result<u64, FileStoreError> {
        Ok(0)
    }

    /// Reads a whole file, refusing one larger than `max_bytes` (without reading it).
    async fn get(&self, path: &str, max_bytes: u64) -> Result<Option<StoredFile>, GetError> {
        let Some(file) = self.open(path).await? else {
            return Ok(None);
        };
        read_all(file, max_bytes).await.map(Some)
    }
}

/// Why [`FileStore::get`] gave no bytes.
#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("the file is larger than {0} bytes")]
    TooLarge(u64),
    #[error(transparent)]
    Storage(#[from] FileStoreError),
}

/// The whole body of `file`, or [`GetError::TooLarge`] as soon as it passes `max_bytes`.
pub async fn read_all(file: FileReader, max_bytes: u64) -> Result<StoredFile, GetError> {
    use futures_util::StreamExt;
    if file.size.is_some_and(|s| s > max_bytes) {
        return Err(GetError::TooLarge(max_bytes));
    }
    let mut bytes =
        Vec::with_capacity(usize::try_from(file.size.unwrap_or(0).min(max_bytes)).unwrap_or(0));
    let mut body = file.body;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| FileStoreError(format!("reading: {e}")))?;
        if (bytes.len() + chunk.len()) as u64 > max_bytes {
            return Err(GetError::TooLarge(max_bytes));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(StoredFile {
        content_type: file.content_type,
        bytes,
    })
}

/// Writes `body` to `path` through a [`FileWriter`]: committed when the stream ends, aborted
/// (nothing left at `path`) when it fails or passes `max_bytes`. Returns the size written.
pub async fn put_stream(
    files: &dyn FileStore,
    path: &str,
    content_type: &str,
    mut body: ByteStream,
    max_bytes: u64,
) -> Result<u64, PutStreamError> {
    use futures_util::StreamExt;
    let mut writer = files.create(path, content_type).await?;
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let step = match chunk {
            Err(e) => Err(PutStreamError::Body(e)),
            Ok(c) if size + c.len() as u64 > max_bytes => Err(PutStreamError::TooLarge(max_bytes)),
            Ok(c) => {
                size += c.len() as u64;
                writer.write(c).await.map_err(PutStreamError::from)
            }
        };
        if let Err(e) = step {
            writer.abort().await;
            return Err(e);
        }
    }
    writer.commit().await?;
    Ok(size)
}

/// Why [`put_stream`] stored nothing.
#[derive(Debug, thiserror::Error)]
pub enum PutStreamError {
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    #[error("reading the body: {0}")]
    Body(std::io::Error),
    #[error(transparent)]
    Storage(#[from] FileStoreError),
}

/// Whether `path` is a safe relative storage path: segments of `[A-Za-z0-9._-]`, none of
/// them `.` or `..`, and not a file still being written (`.partial`).
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && !path.ends_with(PARTIAL_SUFFIX)
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

/// What a file being written is called until it is committed (`{name}.partial`, beside it).
pub const PARTIAL_SUFFIX: &str = ".partial";

/// How old an unfinished `.partial` must be before a sweep removes it: far longer than any
/// write may take (an upload must arrive within the body timeout, seconds to minutes), so a
/// write still under way on this or another node sharing the directory is never cut.
pub const STALE_PARTIAL_AFTER: Duration = Duration::from_secs(60 * 60);

#[cfg(test)]
mod tests {
    #[test]
    fn unsafe_paths_are_refused() {
        assert!(super::is_safe_path("run_abc/output.png"));
        for p in [
            "",
            "../etc/passwd",
            "a//b",
            "/abs",
            "a/./b",
            "a b",
            "upl_a/upload.png.partial",
        ] {
            assert!(!super::is_safe_path(p), "{p}");
        }
    }
}

//! Files in a directory (`<data dir>/files/`). A file is written under a temporary name in
//! [`INCOMING`] and renamed into place once whole, so a reader never sees part of one; a
//! write that fails or is given up removes its temporary file, and the periodic sweep removes
//! those a crash left. Reads stream the file in chunks of [`READ_CHUNK`].

use crate::content_type_for;
use async_trait::async_trait;
use bytes::Bytes;
use runbase_domain::files::{
    FileReader, FileStore, FileStoreError, FileWriter, PARTIAL_SUFFIX, is_safe_path,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncWriteExt, BufWriter};

/// Where files wait, under temporary names (`{random}.partial`), until they are whole: one
/// directory, so a sweep of stale ones reads only it. The files route never serves it (its
/// paths start with `run_` or `upl_`, and a `.partial` path is not a safe path).
const INCOMING: &str = ".incoming";

/// The size of the chunks a file is read (and served) in.
const READ_CHUNK: usize = 64 * 1024;

/// What a writer gathers before it writes to the file.
const WRITE_BUFFER: usize = 64 * 1024;

/// Files in a directory; the content type is derived from the extension on the way out.
pub struct LocalFiles {
    root: PathBuf,
    /// Whether a sweep has looked through the whole tree for the `.partial` files that earlier
    /// versions wrote beside their files (`run_x/out.partial`); later sweeps read only
    /// [`INCOMING`].
    swept_everywhere: AtomicBool,
}

impl LocalFiles {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            swept_everywhere: AtomicBool::new(false),
        }
    }

    fn resolve(&self, path: &str) -> Result<PathBuf, FileStoreError> {
        if !is_safe_path(path) {
            return Err(FileStoreError(format!("unsafe path {path:?}")));
        }
        Ok(self.root.join(path))
    }

    /// A new temporary file in [`INCOMING`].
    async fn temporary(&self) -> Result<(PathBuf, tokio::fs::File), FileStoreError> {
        let dir = self.root.join(INCOMING);
        tokio::fs::create_dir_all(&dir).await.map_err(err(&dir))?;
        let tmp = dir.join(format!(
            "{}{PARTIAL_SUFFIX}",
            runbase_domain::ids::random_token(24)
        ));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .await
            .map_err(err(&tmp))?;
        Ok((tmp, file))
    }
}

fn err(path: &Path) -> impl Fn(std::io::Error) -> FileStoreError + '_ {
    move |e| FileStoreError(format!("{}: {e}", path.display()))
}

/// Moves a whole temporary file to where it belongs.
async fn move_into_place(tmp: &Path, full: &Path) -> Result<(), FileStoreError> {
    if let Some(parent) = full.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(err(parent))?;
    }
    tokio::fs::rename(tmp, full).await.map_err(err(full))
}

#[async_trait]
impl FileStore for LocalFiles {
    async fn put(
        &self,
        path: &str,
        _content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<(), FileStoreError> {
        let full = self.resolve(path)?;
        let (tmp, mut file) = self.temporary().await?;
        let written = async {
            file.write_all(&bytes).await.map_err(err(&tmp))?;
            file.flush().await.map_err(err(&tmp))?;
            drop(file);
            move_into_place(&tmp, &full).await
        }
        .await;
        if written.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        written
    }

    async fn create(
        &self,
        path: &str,
        _content_type: &str,
    ) -> Result<Box<dyn FileWriter>, FileStoreError> {
        let full = self.resolve(path)?;
        let (tmp, file) = self.temporary().await?;
        Ok(Box::new(LocalWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            tmp,
            full,
            done: false,
        }))
    }

    async fn open(&self, path: &str) -> Result<Option<FileReader>, FileStoreError> {
        let Ok(full) = self.resolve(path) else {
            return Ok(None);
        };
        let file = match tokio::fs::File::open(&full).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(&full)(e)),
        };
        let meta = file.metadata().await.map_err(err(&full))?;
        if !meta.is_file() {
            return Ok(None);
        }
        Ok(Some(FileReader {
            content_type: content_type_for(path).to_owned(),
            size: Some(meta.len()),
            body: Box::pin(tokio_util::io::ReaderStream::with_capacity(
                file, READ_CHUNK,
            )),
        }))
    }

    async fn delete(&self, path: &str) -> Result<(), FileStoreError> {
        let full = self.resolve(path)?;
        match tokio::fs::remove_file(&full).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(&full)(e)),
        }
        // Its directory (`upl_.../`) goes with its last file; one still holding files stays.
        if let Some(parent) = full.parent().filter(|p| *p != self.root) {
            let _ = tokio::fs::remove_dir(parent).await;
        }
        Ok(())
    }

    async fn sweep_partials(&self, older_than: Duration) -> Result<u64, FileStoreError> {
        let root = self.root.clone();
        let everywhere = !self.swept_everywhere.swap(true, Ordering::Relaxed);
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        tokio::task::spawn_blocking(move || {
            let mut removed = 0;
            let mut remove = |p: &Path| {
                if is_stale_partial(p, cutoff) && std::fs::remove_file(p).is_ok() {
                    removed += 1;
                }
            };
            if let Ok(entries) = std::fs::read_dir(root.join(INCOMING)) {
                for e in entries.flatten() {
                    remove(&e.path());
                }
            }
            if everywhere {
                walk(&root, &mut remove);
            }
            removed
        })
        .await
        .map_err(|e| FileStoreError(format!("sweeping partial files: {e}")))
    }
}

/// Whether `p` is a `.partial` file last written before `cutoff`.
fn is_stale_partial(p: &Path, cutoff: SystemTime) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(PARTIAL_SUFFIX))
        && std::fs::symlink_metadata(p)
            .is_ok_and(|m| m.is_file() && m.modified().is_ok_and(|t| t < cutoff))
}

/// Calls `f` on every file under `dir` (not following links).
fn walk(dir: &Path, f: &mut impl FnMut(&Path)) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, f),
            Ok(t) if t.is_file() => f(&p),
            _ => {}
        }
    }
}

/// A file being written to its temporary name; renamed into place by its commit, removed
/// otherwise (by its abort, or when it is dropped before either).
struct LocalWriter {
    file: Option<BufWriter<tokio::fs::File>>,
    tmp: PathBuf,
    full: PathBuf,
    /// Committed or aborted: nothing left for the drop to clean.
    done: bool,
}

#[async_trait]
impl FileWriter for LocalWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<(), FileStoreError> {
        let Some(file) = self.file.as_mut() else {
            return Err(FileStoreError("written after its end".into()));
        };
        file.write_all(&chunk).await.map_err(err(&self.tmp))
    }

    async fn commit(mut self: Box<Self>) -> Result<(), FileStoreError> {
        let Some(mut file) = self.file.take() else {
            return Err(FileStoreError("committed twice".into()));
        };
        // Flushed and synced before the rename: a full disk is found here (some filesystems
        // report it only now), and a file that has a record survives a power loss whole.
        file.flush().await.map_err(err(&self.tmp))?;
        file.get_ref().sync_data().await.map_err(err(&self.tmp))?;
        drop(file);
        move_into_place(&self.tmp, &self.full).await?;
        self.done = true;
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        self.file = None;
        let _ = tokio::fs::remove_file(&self.tmp).await;
        self.done = true;
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.done {
            self.file = None;
            // One unlink, without waiting on anything: cheap enough for a drop in async code.
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use runbase_domain::files::{GetError, PutStreamError, put_stream};

    fn files_in(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        walk(dir, &mut |p: &Path| {
            out.push(p.strip_prefix(dir).unwrap().display().to_string())
        });
        out.sort();
        out
    }

    #[tokio::test]
    async fn put_then_get() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        files
            .put("run_x/out.png", "image/png", vec![1, 2, 3])
            .await
            .unwrap();
        let f = files.get("run_x/out.png", 10).await.unwrap().unwrap();
        assert_eq!(f.bytes, [1, 2, 3]);
        assert_eq!(f.content_type, "image/png");
        assert!(matches!(
            files.get("run_x/out.png", 2).await,
            Err(GetError::TooLarge(2))
        ));
        assert!(files.get("run_x/missing.png", 10).await.unwrap().is_none());
        assert!(files.get("../etc/passwd", 10).await.unwrap().is_none());
        assert!(files.put("../x", "a", vec![]).await.is_err());
        assert_eq!(files_in(dir.path()), ["run_x/out.png"]);
    }

    #[tokio::test]
    async fn a_file_is_visible_only_once_committed_and_an_abandoned_one_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        let mut w = files.create("upl_a/upload.png", "image/png").await.unwrap();
        w.write(Bytes::from_static(b"abc")).await.unwrap();
        w.write(Bytes::from(vec![7u8; 200_000])).await.unwrap();
        assert!(files.open("upl_a/upload.png").await.unwrap().is_none());
        w.commit().await.unwrap();
        let f = files
            .get("upl_a/upload.png", 1 << 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.bytes.len(), 200_003);
        assert_eq!(&f.bytes[..3], b"abc");

        // Aborted, or dropped half-way (a connection that broke): no trace, no directory.
        let mut w = files.create("upl_b/upload.png", "image/png").await.unwrap();
        w.write(Bytes::from(vec![1u8; 100_000])).await.unwrap();
        w.abort().await;
        let mut w = files.create("upl_c/upload.png", "image/png").await.unwrap();
        w.write(Bytes::from(vec![1u8; 100_000])).await.unwrap();
        drop(w);
        assert_eq!(files_in(dir.path()), ["upl_a/upload.png"]);
    }

    #[tokio::test]
    async fn the_storage_takes_a_stream_and_a_cap_passed_mid_stream_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        let chunks = |n: usize| {
            Box::pin(futures_util::stream::iter(
                (0..n).map(|i| Ok(Bytes::from(vec![i as u8; 1000]))),
            )) as runbase_domain::files::ByteStream
        };
        let size = put_stream(&files, "upl_s/upload.png", "image/png", chunks(10), 10_000)
            .await
            .unwrap();
        assert_eq!(size, 10_000);
        let refused = put_stream(&files, "upl_t/upload.png", "image/png", chunks(11), 10_000).await;
        assert!(
            matches!(refused, Err(PutStreamError::TooLarge(10_000))),
            "{refused:?}"
        );
        let broken = Box::pin(futures_util::stream::iter([
            Ok(Bytes::from_static(b"some")),
            Err(std::io::Error::other("connection reset")),
        ]));
        let refused = put_stream(&files, "upl_u/upload.png", "image/png", broken, 10_000).await;
        assert!(
            matches!(refused, Err(PutStreamError::Body(_))),
            "{refused:?}"
        );
        assert_eq!(files_in(dir.path()), ["upl_s/upload.png"]);
    }

    #[tokio::test]
    async fn a_file_is_read_as_a_stream_of_small_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        let data: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        files
            .put("run_x/big.mp4", "video/mp4", data.clone())
            .await
            .unwrap();
        let f = files.open("run_x/big.mp4").await.unwrap().unwrap();
        assert_eq!(f.size, Some(1_000_000));
        assert_eq!(f.content_type, "video/mp4");
        let chunks: Vec<Bytes> = f.body.map(|c| c.unwrap()).collect().await;
        assert!(chunks.len() >= 1_000_000 / READ_CHUNK, "{}", chunks.len());
        assert!(chunks.iter().all(|c| c.len() <= READ_CHUNK));
        assert_eq!(chunks.concat(), data);
    }

    #[tokio::test]
    async fn delete_is_idempotent_and_takes_the_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        files
            .put("upl_a/upload.png", "image/png", vec![1])
            .await
            .unwrap();
        files
            .put("run_b/a.png", "image/png", vec![1])
            .await
            .unwrap();
        files
            .put("run_b/b.png", "image/png", vec![1])
            .await
            .unwrap();
        files.delete("upl_a/upload.png").await.unwrap();
        files.delete("upl_a/upload.png").await.unwrap();
        files.delete("run_b/a.png").await.unwrap();
        assert!(!dir.path().join("upl_a").exists());
        assert!(dir.path().join("run_b/b.png").exists());
        assert!(files.delete("../x").await.is_err());
    }

    #[tokio::test]
    async fn stale_partials_are_swept_and_fresh_ones_left() {
        let dir = tempfile::tempdir().unwrap();
        let files = LocalFiles::new(dir.path());
        let old = SystemTime::now() - Duration::from_secs(7200);
        let make = |rel: &str, mtime: Option<SystemTime>| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            let f = std::fs::File::create(&p).unwrap();
            if let Some(t) = mtime {
                f.set_modified(t).unwrap();
            }
        };
        make(".incoming/a.partial", Some(old));
        make(".incoming/b.partial", None); // a write under way
        make("upl_x/upload.partial", Some(old)); // left by an earlier version
        make("run_y/out.png", Some(old));
        let hour = Duration::from_secs(3600);
        assert_eq!(files.sweep_partials(hour).await.unwrap(), 2);
        assert_eq!(
            files_in(dir.path()),
            [".incoming/b.partial", "run_y/out.png"]
        );
        // Later sweeps read only the incoming directory.
        make("upl_z/upload.partial", Some(old));
        make(".incoming/c.partial", Some(old));
        assert_eq!(files.sweep_partials(hour).await.unwrap(), 1);
        assert!(dir.path().join("upl_z/upload.partial").exists());
    }
}

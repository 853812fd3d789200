//! Opening the database: the writer thread and the read pool.

use crate::create_batch::Create;
use crate::migrations;
use crate::writer::{self, Completion, Op};
use runbase_domain::run::NewRun;
use runbase_domain::store::{CreateRunError, StoreError};
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use tokio::sync::{Notify, oneshot};

/// The writer's page cache while the database file is under 1 GiB.
///
/// SQLite's B-tree balancing renumbers a page for a moment to the file's lock page (the page at
/// 1 GiB, page 262,145 at 4 KiB, which never holds data). While the file is smaller than that,
/// this leaves the page cache's highest page number past the end of the database, and the commit
/// then trims the cache back to the database's size by walking its whole hash table
/// (`pcache1TruncateUnsafe`): every commit after such a split, which under load is most of them.
/// With a 32 MiB cache that walk was 9% of the writer's time at c64, and 0.9% with this one
/// (BENCHMARKS.md, fifteenth session, which also has 500 and 2,000 accounts creating at once:
/// no measurable cost). Past 1 GiB the lock page is inside the file, no commit walks the cache,
/// and the writer takes [`LARGE_WRITER_CACHE_KIB`] instead ([`crate::writer::CacheSize`]).
pub(crate) const WRITER_CACHE_KIB: i64 = 4 * 1024;
/// The writer's page cache once the database file is past 1 GiB: the hot index pages of a large
/// database stay in memory.
pub(crate) const LARGE_WRITER_CACHE_KIB: i64 = 32 * 1024;
const READER_CACHE_KIB: i64 = 8 * 1024;

/// How hard a commit tries to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: a commit survives power loss (one fsync per batch).
    #[default]
    Full,
    /// `synchronous=NORMAL`: a commit survives a crash of Runbase but may be lost with the
    /// machine's power.
    Normal,
}

/// Runbase's store on one SQLite file.
pub struct SqliteStore {
    writer: Sender<Op>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    pub(crate) queue_signal: Arc<Notify>,
    /// This process's worker, once it offers to take runs from their creates
    /// ([`Handoff`](runbase_domain::store::Handoff)); the writer's create batches read it.
    pub(crate) handoff: crate::create_batch::Handoffs,
    /// [`Store::run_changes`](runbase_domain::store::Store::run_changes): announced after each
    /// commit that changed a run's state.
    pub(crate) run_changes: tokio::sync::broadcast::Sender<String>,
    stop_checkpoints: Arc<AtomicBool>,
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop_checkpoints.store(true, Ordering::Relaxed);
    }
}

/// Safety net: past this size the WAL is truncated (briefly holding the writer). The writer's
/// own small checkpoints normally reset it long before.
const WAL_TRUNCATE_BYTES: u64 = 256 * 1024 * 1024;

/// Copies committed WAL pages into the database file ten times a second on its own connection,
/// concurrently with the writer (PASSIVE blocks neither readers nor the writer). Checkpointing
/// only on the writer thread stalled every queued request behind it (p99 of 150–370 ms under
/// load); with this thread doing the bulk, p99 stays near 11 ms (BENCHMARKS.md).
fn checkpoint_loop(conn: Connection, wal: PathBuf, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let big = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_TRUNCATE_BYTES);
        let mode = if big { "TRUNCATE" } else { "PASSIVE" };
        if let Err(e) = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())) {
            tracing::warn!(error = %e, mode, "WAL checkpoint failed");
        }
    }
}

/// Announcements of changed runs a slow listener may fall behind by before it is told it lagged.
const RUN_CHANGES_BUFFER: usize = 1024;

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(crate) fn open_conn(
    path: &Path,
    durability: Durability,
    cache_kib: i64,
) -> rusqlite::Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint sub-journals in memory: on disk they cost a pwrite per page a savepoint touches
    // (12% of the writer's time in a profile).
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Page cache (SQLite's default is 2 MiB): the hot pages of runs, keys, accounts and the
    // ledger's indexes stay in memory instead of being read again after each commit.
    conn.pragma_update(None, "cache_size", -cache_kib)?;
    // The writer still checkpoints after commits once the WAL holds 1000 pages (SQLite's default),
    // which is what lets the WAL start over; the checkpointer thread copies most pages before
    // that, concurrently, so the writer's own checkpoints have little left to do.
    conn.pragma_update(None, "wal_autocheckpoint", 1000)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.set_prepared_statement_cache_capacity(64);
    // The query planner stability guarantee: a cached statement keeps its plan whatever is bound
    // to it. Without it SQLite compiles a bound `LIMIT ?1` into the statement as a constant and
    // prepares the statement again whenever a different value is bound: the worker's claim
    // (`LIMIT ?1`, its free slots) was re-parsed and re-planned, its webhook triggers included,
    // on every claim whose slot count changed (5.6% of the writer's samples in a profile). Every
    // statement here looks rows up by key or index, so no plan depends on a value.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(conn)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        let mut conn = open_conn(path, durability, WRITER_CACHE_KIB).map_err(backend)?;
        migrations::refuse_newer(&conn, path)?;
        migrations::migrate(&mut conn)
            .map_err(|e| backend(format!("migrating {}: {e}", path.display())))?;
        let readers = (0..4)
            .map(|_| open_conn(path, durability, READER_CACHE_KIB).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?;
        let (tx, rx) = mpsc::channel::<Op>();
        let handoff = crate::create_batch::Handoffs::default();
        let queue_signal = Arc::new(Notify::new());
        let (writer_handoff, writer_signal) = (handoff.clone(), queue_signal.clone());
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer::run(
                    conn,
                    rx,
                    writer_handoff,
                    writer_signal,
                    // Without an fsync per commit there is nothing to share.
                    writer::Linger::new(match durability {
                        Durability::Full => writer::SUCCESS_LINGER,
                        Durability::Normal => std::time::Duration::ZERO,
                    }),
                )
            })
            .map_err(backend)?;
        let checkpointer = open_conn(path, durability, READER_CACHE_KIB).map_err(backend)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = stop.clone();
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(checkpointer, wal, stop_flag))
            .map_err(backend)?;
        Ok(Self {
            writer: tx,
            readers,
            next_reader: AtomicUsize::new(0),
            queue_signal,
            handoff,
            run_changes: tokio::sync::broadcast::Sender::new(RUN_CHANGES_BUFFER),
            stop_checkpoints: stop,
        })
    }

    /// Runs `f` in the writer's next batch transaction, inside its own savepoint (rolled back if
    /// `f` fails), and resolves once the batch is committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.submit(true, f).await
    }

    /// Like [`SqliteStore::write`] for a closure that executes exactly one data-changing
    /// statement: a single statement is atomic on its own, so it needs no savepoint.
    pub(crate) async fn write_one<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.submit(false, f).await
    }

    async fn submit<T, F>(&self, guarded: bool, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, StoreError>>();
        let op = Op::Alone(Box::new(move |conn: &Connection| -> Completion {
            let result = if guarded { savepoint(conn, f) } else { f(conn) };
            Box::new(move |committed: Result<(), String>| {
                let answer = match (result, committed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Err(e), _) => Err(backend(e)),
                    (Ok(_), Err(e)) => Err(backend(e)),
                };
                let _ = tx.send(answer);
            })
        }));
        self.writer
            .send(op)
            .map_err(|_| backend("the sqlite writer has stopped"))?;
        rx.await
            .map_err(|_| backend("the sqlite writer dropped the request"))?
    }

    /// Admits and writes a run in the writer's next batch, with that batch's other creates
    /// ([`crate::create_batch`]); resolves once the batch is committed.
    pub(crate) async fn create(
        &self,
        run: NewRun,
    ) -> Result<runbase_domain::run::Run, CreateRunError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Op::Create(Box::new(Create::new(run, reply))))
            .map_err(|_| backend("the sqlite writer has stopped"))?;
        rx.await
            .map_err(|_| backend("the sqlite writer dropped the request"))?
    }

    /// Ends a run's attempt as succeeded in the writer's next batch, with that batch's other
    /// successes ([`crate::success_batch`]); resolves once the batch is committed.
    pub(crate) async fn succeed(
        &self,
        run_id: String,
        attempt: u32,
        output: String,
        now: runbase_domain::time::Timestamp,
    ) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.writer
            .send(Op::Succeed(Box::new(crate::success_batch::Success {
                run_id,
                attempt,
                output,
                now,
                reply,
            })))
            .map_err(|_| backend("the sqlite writer has stopped"))?;
        rx.await
            .map_err(|_| backend("the sqlite writer dropped the request"))?
    }

    /// Runs a read on one of the pooled connections. Reads are short primary-key or index
    /// lookups (microseconds), so they run on the calling thread rather than paying a hop to a
    /// blocking pool.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let n = self.readers.len();
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(conn) = self.readers[(start + i) % n].try_lock() {
                return f(&conn).map_err(backend);
            }
        }
        let conn = self.readers[start % n]
            .lock()
            .map_err(|_| backend("a reader connection was poisoned"))?;
        f(&conn).map_err(backend)
    }
}

/// Runs `f` in a savepoint, rolled back if `f` fails.
pub(crate) fn savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached("SAVEPOINT op")?.execute([])?;
    match f(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE op")?.execute([])?;
            Ok(v)
        }
        Err(e) => {
            // When the error rolled back the whole transaction, the savepoint went with it:
            // the error to report is still `e`, not the missing savepoint's.
            if !conn.is_autocommit() {
                conn.prepare_cached("ROLLBACK TO op")?.execute([])?;
                conn.prepare_cached("RELEASE op")?.execute([])?;
            }
            Err(e)
        }
    }
}

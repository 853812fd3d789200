//! The single writer thread and its group commit.

use crate::create_batch::{self, Create};
use crate::success_batch::{self, Success};
use rusqlite::Connection;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;
use tokio::sync::Notify;

/// What a writer operation leaves to do after the commit: answer its caller with the commit's
/// outcome.
pub type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One request to the writer.
pub enum Op {
    /// Any write: runs inside the batch transaction (in its own savepoint, unless it is a single
    /// statement) and returns its completion.
    Alone(Box<dyn FnOnce(&Connection) -> Completion + Send>),
    /// A run's create, admitted together with the batch's other creates
    /// ([`create_batch::write`]).
    Create(Box<Create>),
    /// A run's success, written with the batch's other successes ([`success_batch::write`]).
    Succeed(Box<Success>),
}

/// The most operations one transaction takes; bounds the latency of a batch.
const MAX_BATCH: usize = 512;

/// How long a batch of nothing but successes may wait for another operation, at most.
///
/// A run handed over in its create finishes while its client is still reading the answer. Its
/// success then took a commit and an fsync of its own, and the client's next create, arriving a
/// moment later, waited for that fsync before its own. Waiting for the next operation commits
/// both with one fsync (BENCHMARKS.md, thirteenth session). It is [`Linger`] that decides whether
/// and how long to wait: a client that waits for its run's result (`Prefer: wait`, its events)
/// sends nothing until the success is committed, and would only be delayed.
pub(crate) const SUCCESS_LINGER: Duration = Duration::from_millis(1);

/// Whether, and how long, a batch of nothing but successes waits for company.
///
/// How long: no longer than a commit takes (a running average of the writer's `COMMIT`s), and at
/// most its `max`. An operation that arrives during the wait would otherwise have queued behind
/// the successes' own commit for about as long as the wait, so a wait costs the successes no more
/// than it saves the operation; past that it could only lose. PostgreSQL's `commit_delay` is set
/// the same way, to about a flush's time.
///
/// Whether: PostgreSQL waits only when `commit_siblings` transactions are open; this writer cannot
/// see who is about to write, so it keeps a score of its recent waits. A wait another operation
/// joined raises it by one, a wait that ran out lowers it by two (so waiting goes on only while
/// more than two waits in three are joined); while it is below [`Linger::WAIT_FROM`], one
/// successes-only batch in [`Linger::PROBE_EVERY`] waits, so that a workload that changes is
/// noticed. From the top score, three waits that run out in a row stop the waiting.
#[derive(Debug)]
pub(crate) struct Linger {
    max: Duration,
    /// The running average of a commit's time; `None` for a wait of `max` whatever commits take.
    commit: Option<Duration>,
    score: u8,
    skipped: u8,
}

impl Linger {
    const WAIT_FROM: u8 = 4;
    const SCORE_MAX: u8 = 8;
    const PROBE_EVERY: u8 = 64;

    /// Waits of at most `max`, and no longer than a commit takes; zero never waits.
    pub(crate) fn new(max: Duration) -> Self {
        Linger {
            max,
            commit: Some(Duration::ZERO),
            score: Self::WAIT_FROM,
            skipped: 0,
        }
    }

    /// Waits of `max` whatever commits take, starting from `score`: for tests of the writer that
    /// must not depend on the disk's speed.
    #[cfg(test)]
    fn fixed(max: Duration, score: u8) -> Self {
        Linger {
            max,
            commit: None,
            score,
            skipped: 0,
        }
    }

    /// Records how long a commit took.
    fn committed(&mut self, took: Duration) {
        if let Some(average) = &mut self.commit {
            *average = (*average * 7 + took) / 8;
        }
    }

    /// How long the next batch of nothing but successes waits, if at all.
    fn next_wait(&mut self) -> Option<Duration> {
        let wait = self.commit.map_or(self.max, |c| c.min(self.max));
        if wait.is_zero() {
            return None;
        }
        if self.score >= Self::WAIT_FROM {
            return Some(wait);
        }
        self.skipped += 1;
        if self.skipped < Self::PROBE_EVERY {
            return None;
        }
        self.skipped = 0;
        Some(wait)
    }

    /// How a wait ended: another operation joined it, or it ran out.
    fn ended(&mut self, joined: bool) {
        self.score = if joined {
            (self.score + 1).min(Self::SCORE_MAX)
        } else {
            self.score.saturating_sub(2)
        };
    }
}

/// Runs until every sender is gone.
///
/// A batch writes its runs' successes together first, then runs its other operations in arrival
/// order, then its creates together. Every operation of a batch was sent before any of them was
/// answered (answers wait for the commit), so they are all concurrent and any order among them
/// is one their callers could have seen.
///
/// A batch of nothing but successes may first wait for another operation to commit with, as
/// `linger` decides.
///
/// Runs queued for a claim by a committed batch's creates wake the worker (`queue_signal`), here
/// rather than in each create's caller, whose request may be dropped before it could.
pub fn run(
    conn: Connection,
    rx: Receiver<Op>,
    handoff: create_batch::Handoffs,
    queue_signal: Arc<Notify>,
    mut linger: Linger,
) {
    let mut cache = CacheSize::new(&conn);
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        take_waiting(&rx, &mut batch);
        if batch.len() < MAX_BATCH
            && batch.iter().all(|op| matches!(op, Op::Succeed(_)))
            && let Some(wait) = linger.next_wait()
        {
            match rx.recv_timeout(wait) {
                Ok(op) => {
                    linger.ended(true);
                    batch.push(op);
                    take_waiting(&rx, &mut batch);
                }
                Err(RecvTimeoutError::Timeout) => linger.ended(false),
                Err(RecvTimeoutError::Disconnected) => {}
            }
        }
        if let Err(e) = exec(&conn, "BEGIN IMMEDIATE") {
            // Dropping the ops drops their answer channels: each caller sees the write fail.
            tracing::error!(error = %e, ops = batch.len(), "sqlite writer could not begin a transaction");
            drop(batch);
            continue;
        }
        let (mut alone, mut successes, mut creates) = (Vec::new(), Vec::new(), Vec::new());
        for op in batch {
            match op {
                Op::Alone(op) => alone.push(op),
                Op::Succeed(s) => successes.push(*s),
                Op::Create(c) => creates.push(*c),
            }
        }
        // Successes first: one that came with a reclaim of its run's expired lease is kept
        // rather than executed again.
        let lost = Cell::new(false);
        let mut completions = success_batch::write(&conn, successes, &lost);
        completions.reserve(alone.len() + creates.len());
        for op in alone {
            if lost.get() {
                // Not run: dropping it drops its answer channel, and its caller sees it fail.
                drop(op);
                continue;
            }
            completions.push(op(&conn));
            keep_open(&conn, &lost);
        }
        let (created, queued) = create_batch::write(&conn, creates, handoff.get(), &lost);
        completions.extend(created);
        let outcome = if lost.get() {
            Err(LOST.to_owned())
        } else {
            let started = std::time::Instant::now();
            let committed = exec(&conn, "COMMIT").map_err(|e| format!("commit: {e}"));
            linger.committed(started.elapsed());
            committed
        };
        if outcome.is_err() {
            let _ = exec(&conn, "ROLLBACK");
        } else {
            if queued {
                queue_signal.notify_one();
            }
            cache.committed(&conn);
        }
        for c in completions {
            c(outcome.clone());
        }
    }
}

/// The writer's page cache: small while the database file is under 1 GiB, large once it is past
/// it ([`crate::pool::WRITER_CACHE_KIB`] says why).
struct CacheSize {
    large: bool,
    commits: u32,
}

impl CacheSize {
    /// Commits between two looks at the file's size.
    const LOOK_EVERY: u32 = 1024;

    fn new(conn: &Connection) -> Self {
        let mut cache = CacheSize {
            large: false,
            commits: 0,
        };
        cache.look(conn);
        cache
    }

    fn committed(&mut self, conn: &Connection) {
        if self.large {
            return;
        }
        self.commits = self.commits.wrapping_add(1);
        if self.commits.is_multiple_of(Self::LOOK_EVERY) {
            self.look(conn);
        }
    }

    fn look(&mut self, conn: &Connection) {
        let size = conn
            .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
            .and_then(|pages| {
                conn.query_row("PRAGMA page_size", [], |r| Ok((pages, r.get::<_, i64>(0)?)))
            });
        let Ok((pages, page_size)) = size else {
            return;
        };
        if holds_lock_page(pages, page_size) {
            match conn.pragma_update(None, "cache_size", -crate::pool::LARGE_WRITER_CACHE_KIB) {
                Ok(()) => self.large = true,
                Err(e) => tracing::warn!(error = %e, "could not enlarge the writer's page cache"),
            }
        }
    }
}

/// Whether a database of `pages` pages reaches its lock page: the page holding byte 1 GiB of the
/// file (SQLite's `PENDING_BYTE`), numbered from 1.
fn holds_lock_page(pages: i64, page_size: i64) -> bool {
    const PENDING_BYTE: i64 = 0x4000_0000;
    page_size > 0 && pages > PENDING_BYTE / page_size
}

/// Adds to `batch` the operations already waiting, up to [`MAX_BATCH`].
fn take_waiting(rx: &Receiver<Op>, batch: &mut Vec<Op>) {
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(op) => batch.push(op),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
        }
    }
}

/// What every write of a lost batch is answered.
pub(crate) const LOST: &str = "an error rolled back the writer's transaction";

/// Called after each of a batch's writes: marks the batch `lost` when its transaction is gone.
///
/// SQLite may roll back the whole transaction on an error (`SQLITE_IOERR`, and `SQLITE_FULL` or
/// `SQLITE_NOMEM` in a statement without a statement journal; "Response To Errors Within A
/// Transaction" in its documentation). The writes after it would each run in autocommit and stay
/// written, while the batch's `COMMIT` then failed and answered them all as failed: a create
/// charged and queued, its caller told it failed. Nothing of a lost batch runs after the error:
/// its remaining writes are answered [`LOST`] without being tried, and those before it were
/// undone by SQLite's rollback.
pub(crate) fn keep_open(conn: &Connection, lost: &Cell<bool>) {
    if !lost.get() && conn.is_autocommit() {
        tracing::error!(
            "an error rolled back the SQLite writer's transaction: its whole batch fails"
        );
        lost.set(true);
    }
}

/// Runs a statement from the connection's cache: `BEGIN` and `COMMIT` are run for every batch, and
/// `execute_batch` would parse them each time.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests may unwrap")]

    use super::*;
    use runbase_domain::store::StoreError;
    use std::sync::Mutex;

    /// A batch whose transaction an error rolled back (`SQLITE_FULL` from `max_page_count`)
    /// fails as a whole: the writes before the error are undone by SQLite, the writes after it
    /// are rolled back by the writer instead of committing alone, and every one is answered the
    /// error.
    #[test]
    fn a_batch_whose_transaction_an_error_rolled_back_writes_nothing_and_fails_whole() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("w.db")).unwrap();
        conn.execute_batch("CREATE TABLE t (v BLOB NOT NULL)")
            .unwrap();
        let answers = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for (n, size) in [(1, 10), (2, 1_000_000), (3, 10)] {
            let answers = answers.clone();
            let op = move |conn: &Connection| -> Completion {
                if n == 2 {
                    // No room for this row: the database may not grow.
                    let pages: i64 = conn
                        .query_row("PRAGMA page_count", [], |r| r.get(0))
                        .unwrap();
                    conn.execute_batch(&format!("PRAGMA max_page_count = {pages}"))
                        .unwrap();
                }
                let wrote = conn.execute("INSERT INTO t (v) VALUES (zeroblob(?1))", [size]);
                if n == 2 {
                    assert!(wrote.is_err());
                    // The premise: this error rolled back the whole transaction (a one-row
                    // INSERT has no statement journal to undo it alone).
                    assert!(conn.is_autocommit());
                    conn.execute_batch("PRAGMA max_page_count = 1073741823")
                        .unwrap();
                }
                Box::new(move |committed| answers.lock().unwrap().push((n, committed.is_ok())))
            };
            tx.send(Op::Alone(Box::new(op))).unwrap();
        }
        drop(tx);
        let check = Connection::open(dir.path().join("w.db")).unwrap();
        run(
            conn,
            rx,
            Arc::new(std::sync::OnceLock::new()),
            Arc::new(Notify::new()),
            Linger::new(SUCCESS_LINGER),
        );
        let rows: i64 = check
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 0, "nothing of the batch stays written");
        // Ops 1 and 2 were run and answered the failure; op 3 was not run, its answer channel
        // dropped (its caller sees the write fail).
        let answers = answers.lock().unwrap().clone();
        assert_eq!(answers, vec![(1, false), (2, false)]);
    }

    /// The lock page is the one holding byte 1 GiB, whatever the page size.
    #[test]
    fn a_database_holds_its_lock_page_from_1_gib() {
        assert!(!holds_lock_page(262_144, 4096));
        assert!(holds_lock_page(262_145, 4096));
        assert!(!holds_lock_page(2_097_152, 512));
        assert!(holds_lock_page(2_097_153, 512));
        assert!(!holds_lock_page(1, 0));
    }

    fn success(run_id: &str) -> (Op, tokio::sync::oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let op = Op::Succeed(Box::new(Success {
            run_id: run_id.into(),
            attempt: 1,
            output: "{}".into(),
            now: runbase_domain::time::Timestamp(1),
            reply,
        }));
        (op, answer)
    }

    /// An operation that answers, once committed, on the returned channel; `during` runs inside
    /// the transaction.
    fn alone(
        during: impl FnOnce() + Send + 'static,
    ) -> (Op, std::sync::mpsc::Receiver<Result<(), String>>) {
        let (done, answer) = std::sync::mpsc::channel();
        let op = Op::Alone(Box::new(move |_: &Connection| -> Completion {
            during();
            Box::new(move |committed| {
                let _ = done.send(committed);
            })
        }));
        (op, answer)
    }

    /// Starts a writer on a migrated database with this `linger`; answers its sender and thread.
    /// With `queued`, those operations are waiting before the writer starts.
    fn writer(
        dir: &tempfile::TempDir,
        linger: Linger,
        queued: Vec<Op>,
    ) -> (std::sync::mpsc::Sender<Op>, std::thread::JoinHandle<()>) {
        let path = dir.path().join("runbase.db");
        drop(crate::SqliteStore::open(&path, crate::Durability::Normal).unwrap());
        let conn = Connection::open(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for op in queued {
            tx.send(op).unwrap();
        }
        let thread = std::thread::spawn(move || {
            run(
                conn,
                rx,
                Arc::new(std::sync::OnceLock::new()),
                Arc::new(Notify::new()),
                linger,
            )
        });
        (tx, thread)
    }

    const LONG: Duration = Duration::from_secs(30);

    /// Sends a lone success and answers how long it took to be answered (successfully).
    fn lone_success(tx: &std::sync::mpsc::Sender<Op>) -> Duration {
        let started = std::time::Instant::now();
        let (op, answer) = success("run_x");
        tx.send(op).unwrap();
        assert!(answer.blocking_recv().unwrap().is_ok());
        started.elapsed()
    }

    /// Sends a success, then (once the writer has taken it alone, 50 ms later) another
    /// operation; answers whether the success was still unanswered when that operation ran in
    /// the transaction, and how long the operation took to be committed.
    fn success_then_other(tx: &std::sync::mpsc::Sender<Op>) -> (bool, Duration) {
        let (op, answer) = success("run_x");
        tx.send(op).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let answer = Arc::new(Mutex::new(answer));
        let (seen, saw) = std::sync::mpsc::channel();
        let inside = answer.clone();
        let started = std::time::Instant::now();
        let (op, committed) = alone(move || {
            let not_yet = matches!(
                inside.lock().unwrap().try_recv(),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty)
            );
            seen.send(not_yet).unwrap();
        });
        tx.send(op).unwrap();
        let joined = saw.recv().unwrap();
        assert_eq!(committed.recv().unwrap(), Ok(()));
        let took = started.elapsed();
        assert!(answer.lock().unwrap().try_recv().unwrap().is_ok());
        (joined, took)
    }

    /// A batch of nothing but successes waits for the next operation and commits with it: the
    /// success is not answered before that operation has run in the same transaction, and is
    /// answered with it, long before the wait could have run out. (Were the writer slower than
    /// 50 ms to take the success, both would be one batch anyway, and this would check nothing.)
    #[test]
    fn a_batch_of_successes_commits_with_an_operation_sent_during_its_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, thread) = writer(&dir, Linger::fixed(LONG, Linger::WAIT_FROM), vec![]);
        let (joined, took) = success_then_other(&tx);
        assert!(
            joined,
            "the success was committed alone, before the operation sent during its wait"
        );
        assert!(took < LONG / 3, "the operation waited out the wait");
        drop(tx);
        thread.join().unwrap();
    }

    /// Only a batch of nothing but successes waits: any other operation alone, or with
    /// successes, is committed at once.
    #[test]
    fn other_operations_do_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (op, answer) = success("run_x");
        let (with, with_committed) = alone(|| {});
        let started = std::time::Instant::now();
        let (tx, thread) = writer(&dir, Linger::fixed(LONG, Linger::WAIT_FROM), vec![op, with]);
        assert_eq!(with_committed.recv().unwrap(), Ok(()));
        assert!(answer.blocking_recv().unwrap().is_ok());
        let (op, committed) = alone(|| {});
        tx.send(op).unwrap();
        assert_eq!(committed.recv().unwrap(), Ok(()));
        assert!(started.elapsed() < LONG / 3);
        drop(tx);
        thread.join().unwrap();
    }

    /// The writer keeps the score: after two joined waits and one that ran out, the next lone
    /// success still waits (a writer that did not count the joined ones would have stopped);
    /// after two more that ran out it no longer waits.
    #[test]
    fn the_writer_scores_its_waits() {
        let dir = tempfile::tempdir().unwrap();
        let wait = Duration::from_millis(300);
        let (tx, thread) = writer(&dir, Linger::fixed(wait, Linger::WAIT_FROM), vec![]);
        for _ in 0..2 {
            assert!(success_then_other(&tx).0);
        }
        // 4 -> 5 -> 6; this one runs out: 4.
        assert!(lone_success(&tx) >= wait);
        // Still at the threshold: waits, and runs out: 2.
        assert!(
            lone_success(&tx) >= wait,
            "the joined waits were not counted"
        );
        drop(tx);
        thread.join().unwrap();

        let (tx, thread) = writer(&dir, Linger::fixed(LONG, 0), vec![]);
        assert!(
            lone_success(&tx) < LONG / 3,
            "a writer below the threshold waited"
        );
        drop(tx);
        thread.join().unwrap();
    }

    /// A writer whose last sender is gone stops waiting and commits at once.
    #[test]
    fn a_closing_writer_does_not_wait() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, thread) = writer(&dir, Linger::fixed(LONG, Linger::WAIT_FROM), vec![]);
        let started = std::time::Instant::now();
        let (op, answer) = success("run_z");
        tx.send(op).unwrap();
        drop(tx);
        assert!(answer.blocking_recv().unwrap().is_ok());
        thread.join().unwrap();
        assert!(
            started.elapsed() < LONG / 3,
            "the writer waited with no sender left"
        );
    }

    /// The score: waits go on while they are joined, stop after waits that ran out, are then
    /// tried once in every [`Linger::PROBE_EVERY`] batches, and resume once probes are joined
    /// again.
    #[test]
    fn linger_learns_from_how_its_waits_ended() {
        let max = Duration::from_millis(1);
        let mut linger = Linger::fixed(max, Linger::WAIT_FROM);
        for _ in 0..20 {
            assert_eq!(linger.next_wait(), Some(max));
            linger.ended(true);
        }
        // From the top score, three waits that ran out (8 -> 6 -> 4 -> 2) stop the waiting.
        for _ in 0..3 {
            assert_eq!(linger.next_wait(), Some(max));
            linger.ended(false);
        }
        let waits =
            |linger: &mut Linger, n| (0..n).filter(|_| linger.next_wait().is_some()).count();
        assert_eq!(waits(&mut linger, Linger::PROBE_EVERY as usize * 4), 4);
        // Probes that are joined bring it back: 2 -> 3 -> 4.
        for _ in 0..2 {
            let probed = (0..Linger::PROBE_EVERY).any(|_| linger.next_wait().is_some());
            assert!(probed, "no probe in {} batches", Linger::PROBE_EVERY);
            linger.ended(true);
        }
        assert_eq!(waits(&mut linger, 10), 10);
    }

    /// A wait lasts no longer than a commit takes (its running average), and never longer than
    /// its maximum; before any commit, or with a maximum of zero, there is no wait.
    #[test]
    fn a_wait_lasts_about_a_commit() {
        let max = Duration::from_millis(1);
        let mut linger = Linger::new(max);
        assert_eq!(linger.next_wait(), None);
        for _ in 0..100 {
            linger.committed(Duration::from_micros(200));
        }
        let wait = linger.next_wait().unwrap();
        assert!(
            wait > Duration::from_micros(150) && wait <= Duration::from_micros(200),
            "{wait:?}"
        );
        for _ in 0..100 {
            linger.committed(Duration::from_millis(5));
        }
        assert_eq!(linger.next_wait(), Some(max));

        let mut never = Linger::new(Duration::ZERO);
        never.committed(Duration::from_millis(5));
        assert_eq!(never.next_wait(), None);
    }
}

//! The single writer thread and its group commit.

use crate::create_batch::{self, Create};
use crate::success_batch::{self, Success};
use rusqlite::Connection;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
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

/// How long a batch of nothing but successes waits for another operation before it commits
/// (PostgreSQL's `commit_delay`, for one kind of write). A run handed over in its create finishes
/// while its client is still reading the answer, and without the wait its success took a commit
/// and an fsync of its own just before that client's next create came in, which then waited for
/// them: at c1, one client creating runs one after the other, a create took 0.55-0.64 ms at p50
/// against 0.48-0.50 ms with no worker (BENCHMARKS.md, thirteenth session). With it, the success
/// commits with that next create, in one fsync. A success nothing joins commits this much later:
/// its run's `succeeded` is seen up to a millisecond later, and nobody waits on it but the
/// worker's slot.
pub(crate) const SUCCESS_LINGER: Duration = Duration::from_millis(1);

/// Runs until every sender is gone.
///
/// A batch writes its runs' successes together first, then runs its other operations in arrival
/// order, then its creates together. Every operation of a batch was sent before any of them was
/// answered (answers wait for the commit), so they are all concurrent and any order among them
/// is one their callers could have seen.
///
/// A batch of nothing but successes first waits up to `success_linger` ([`SUCCESS_LINGER`]) for
/// another operation to commit with.
///
/// Runs queued for a claim by a committed batch's creates wake the worker (`queue_signal`), here
/// rather than in each create's caller, whose request may be dropped before it could.
pub fn run(
    conn: Connection,
    rx: Receiver<Op>,
    handoff: create_batch::Handoffs,
    queue_signal: Arc<Notify>,
    success_linger: Duration,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        take_waiting(&rx, &mut batch);
        if batch.len() < MAX_BATCH
            && batch.iter().all(|op| matches!(op, Op::Succeed(_)))
            && let Ok(op) = rx.recv_timeout(success_linger)
        {
            batch.push(op);
            take_waiting(&rx, &mut batch);
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
            exec(&conn, "COMMIT").map_err(|e| format!("commit: {e}"))
        };
        if outcome.is_err() {
            let _ = exec(&conn, "ROLLBACK");
        } else if queued {
            queue_signal.notify_one();
        }
        for c in completions {
            c(outcome.clone());
        }
    }
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
            SUCCESS_LINGER,
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

    /// Starts a writer on a migrated database with this linger; answers its sender and thread.
    fn writer(
        dir: &tempfile::TempDir,
        linger: Duration,
    ) -> (std::sync::mpsc::Sender<Op>, std::thread::JoinHandle<()>) {
        let path = dir.path().join("runbase.db");
        drop(crate::SqliteStore::open(&path, crate::Durability::Normal).unwrap());
        let conn = Connection::open(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
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

    /// A batch of nothing but successes waits for the next operation and commits with it: the
    /// success is not answered before that operation has run in the same transaction.
    #[test]
    fn a_batch_of_successes_commits_with_an_operation_sent_during_its_linger() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, thread) = writer(&dir, Duration::from_secs(30));
        let (op, mut answer) = success("run_x");
        tx.send(op).unwrap();
        // Long enough for the writer to have taken the success alone into a batch.
        std::thread::sleep(Duration::from_millis(50));
        let (seen, saw) = std::sync::mpsc::channel();
        tx.send(Op::Alone(Box::new(move |_: &Connection| -> Completion {
            // Inside the transaction: the success must not have been answered yet.
            seen.send(answer.try_recv().is_err()).unwrap();
            Box::new(move |committed| assert!(committed.is_ok()))
        })))
        .unwrap();
        let started = std::time::Instant::now();
        assert!(
            saw.recv().unwrap(),
            "the success was committed alone, before the operation sent during its linger"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the operation waited out the linger"
        );
        drop(tx);
        thread.join().unwrap();
    }

    /// A success nothing joins is committed and answered once the linger is over.
    #[test]
    fn a_lone_success_is_answered_after_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let (tx, thread) = writer(&dir, Duration::from_millis(200));
        let (op, answer) = success("run_x");
        let started = std::time::Instant::now();
        tx.send(op).unwrap();
        let answered = answer.blocking_recv().unwrap();
        assert!(answered.is_ok(), "{answered:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(tx);
        thread.join().unwrap();
    }
}

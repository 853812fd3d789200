//! The single writer thread and its group commit.

use crate::create_batch::{self, Create};
use crate::success_batch::{self, Success};
use rusqlite::Connection;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
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

/// Runs until every sender is gone.
///
/// A batch writes its runs' successes together first, then runs its other operations in arrival
/// order, then its creates together. Every
/// operation of a batch was sent before any of them was answered (answers wait for the commit),
/// so they are all concurrent and any order among them is one their callers could have seen.
///
/// Runs queued for a claim by a committed batch's creates wake the worker (`queue_signal`), here
/// rather than in each create's caller, whose request may be dropped before it could.
pub fn run(
    conn: Connection,
    rx: Receiver<Op>,
    handoff: create_batch::Handoffs,
    queue_signal: Arc<Notify>,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
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
        let mut completions = success_batch::write(&conn, successes);
        completions.reserve(alone.len() + creates.len());
        completions.extend(alone.into_iter().map(|op| op(&conn)));
        let (created, queued) = create_batch::write(&conn, creates, handoff.get());
        completions.extend(created);
        let outcome = exec(&conn, "COMMIT").map_err(|e| format!("commit: {e}"));
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

/// Runs a statement from the connection's cache: `BEGIN` and `COMMIT` are run for every batch, and
/// `execute_batch` would parse them each time.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

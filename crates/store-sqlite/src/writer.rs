//! The single writer thread and its group commit.

use rusqlite::Connection;
use std::sync::mpsc::{Receiver, TryRecvError};

/// What a writer operation leaves to do after the commit: answer its caller with the commit's
/// outcome.
pub type Completion = Box<dyn FnOnce(Result<(), String>) + Send>;
/// An operation: runs inside the batch transaction (in its own savepoint) and returns its
/// completion.
pub type Op = Box<dyn FnOnce(&Connection) -> Completion + Send>;

/// The most operations one transaction takes; bounds the latency of a batch.
const MAX_BATCH: usize = 512;

/// Runs until every sender is gone.
pub fn run(conn: Connection, rx: Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::with_capacity(64);
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => batch.push(op),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            // Dropping the ops drops their answer channels: each caller sees the write fail.
            tracing::error!(error = %e, ops = batch.len(), "sqlite writer could not begin a transaction");
            drop(batch);
            continue;
        }
        let completions: Vec<Completion> = batch.into_iter().map(|op| op(&conn)).collect();
        let outcome = conn
            .execute_batch("COMMIT")
            .map_err(|e| format!("commit: {e}"));
        if outcome.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for c in completions {
            c(outcome.clone());
        }
    }
}

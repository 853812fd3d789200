//! The successes of one writer batch, written together: one `UPDATE ... FROM (VALUES ...)` per
//! chunk instead of one statement per run.
//!
//! A run's success is a statement with triggers (the webhook events of migration 0010), so SQLite
//! gives each such statement a statement journal: every page it touches is copied first, in case
//! it has to be undone alone. One statement per run copied the same index pages again for every
//! run, and that journal was most of a success's cost on the writer (a profile: 18% of it in the
//! sub-journal, 8% in closing the statement). A chunk of runs pays it once.
//!
//! Each chunk is one statement, so atomic on its own; the runs of a chunk that fails are answered
//! the error, and their workers write them again. The writer writes a batch's successes before
//! its other operations: a success that reaches it with a reclaim of its expired lease is kept
//! rather than executed again.

use crate::create_batch::{CHUNKS, multi_row};
use crate::writer::Completion;
use runbase_domain::store::StoreError;
use runbase_domain::time::Timestamp;
use rusqlite::Connection;
use rusqlite::types::ToSql;
use std::cell::Cell;
use tokio::sync::oneshot;

/// One success waiting for the writer: attempt `attempt` of run `run_id` ended with `output`
/// (JSON text, serialized on the caller's thread), and where to answer once committed.
pub struct Success {
    pub run_id: String,
    pub attempt: u32,
    pub output: String,
    pub now: Timestamp,
    pub reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Ends each run's attempt as succeeded if it is still that attempt and `processing` (a run
/// canceled, reclaimed or started again meanwhile is left alone, as a single success would
/// leave it).
const HEAD: &str =
    "UPDATE runs SET status = 'succeeded', output = v.column3, completed_at = v.column4
     FROM (VALUES ";
const ROW: &str = "(?, ?, ?, ?)";
const TAIL: &str = ") AS v
     WHERE runs.id = v.column1 AND runs.status = 'processing' AND runs.attempts = v.column2";

/// Writes the batch's successes into the open transaction; answers each once the batch commits.
pub fn write(conn: &Connection, successes: Vec<Success>, lost: &Cell<bool>) -> Vec<Completion> {
    let mut completions: Vec<Completion> = Vec::with_capacity(successes.len());
    let mut rest = successes;
    while !rest.is_empty() {
        let n = CHUNKS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
        let tail = rest.split_off(n);
        let written = if lost.get() {
            Err(crate::writer::LOST.to_owned())
        } else {
            let written = chunk(conn, &rest).map_err(|e| e.to_string());
            crate::writer::keep_open(conn, lost);
            written
        };
        if let Err(e) = &written {
            tracing::warn!(error = %e, runs = rest.len(), "writing a chunk of successes failed");
        }
        for success in rest {
            let written = written.clone();
            completions.push(Box::new(move |committed: Result<(), String>| {
                let answer = written
                    .and(committed)
                    .map_err(|e| StoreError::Backend(e.to_string()));
                let _ = success.reply.send(answer);
            }));
        }
        rest = tail;
    }
    completions
}

fn chunk(conn: &Connection, chunk: &[Success]) -> rusqlite::Result<()> {
    let mut sql = multi_row(HEAD, ROW, chunk.len());
    sql.push_str(TAIL);
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut values: Vec<&dyn ToSql> = Vec::with_capacity(chunk.len() * 4);
    for s in chunk {
        values.extend_from_slice(&[&s.run_id, &s.attempt, &s.output, &s.now.0]);
    }
    stmt.execute(values.as_slice())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every chunk finds its runs by id (the unique index), whatever the chunk's size: a plan
    /// that scanned `runs`, or walked a status index, would cost a success the whole queue.
    #[test]
    fn every_chunk_finds_its_runs_by_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runbase.db");
        drop(crate::SqliteStore::open(&path, crate::Durability::Normal).unwrap());
        let conn = Connection::open(&path).unwrap();
        for n in CHUNKS {
            let mut sql = format!("EXPLAIN QUERY PLAN {}", multi_row(HEAD, ROW, n));
            sql.push_str(TAIL);
            let plan: Vec<String> = conn
                .prepare(&sql)
                .unwrap()
                .query_map(rusqlite::params_from_iter((0..n * 4).map(|_| 0)), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter()
                    .any(|step| step
                        .contains("SEARCH runs USING INDEX sqlite_autoindex_runs_1 (id=?)")),
                "chunk of {n}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.starts_with("SCAN runs")),
                "chunk of {n}: {plan:?}"
            );
        }
    }
}

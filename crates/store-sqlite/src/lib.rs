//! The SQLite implementation of [`runbase_domain::store::Store`]: the embedded default.
//!
//! Writes go through one writer thread that batches whatever requests are waiting (a batch of
//! nothing but runs' successes may wait a moment for company: `writer::Linger`) into a single
//! transaction (group commit), each in its own savepoint except the creates, which are admitted
//! together (`create_batch`), and the runs' successes, written together (`success_batch`), and
//! answers them after the commit; so
//! every money check runs serialized against the committed state, and one fsync serves many
//! requests. Reads use a small pool of connections in WAL mode and see the last commit, so a key
//! disabled from the CLI (another process) fails on the very next request.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

mod backup;
mod create_batch;
mod dashboard;
mod idempotency;
mod migrations;
mod pool;
mod rows;
mod store;
mod success_batch;
mod webhooks;
mod writer;

pub use backup::backup;
pub use migrations::latest as schema_version;
pub use pool::{Durability, SqliteStore};

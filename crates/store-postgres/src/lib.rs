//! The PostgreSQL implementation of [`runbase_domain::store::Store`]: for deployments of several
//! API and worker nodes on one database.
//!
//! Every money rule runs in one transaction with row locks taken in one order (run, then key,
//! then account), so concurrent creates from many processes stay exact: the key row is locked
//! (`FOR UPDATE`) while its quota and spend limit are checked and raised, and the balance is
//! debited by a conditional `UPDATE ... WHERE balance >= price`. Workers claim queued runs with
//! `FOR UPDATE SKIP LOCKED`, hold them by a lease, and are woken by `LISTEN/NOTIFY`.
//!
//! Migrations are explicit ([`PgStore::migrate`], `runbase migrate`): a node refuses a schema
//! older or newer than its own ([`PgStore::schema`]).

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

mod batch;
mod create_batch;
mod dashboard;
mod error;
mod idempotency;
mod key_reads;
mod listen;
mod migrations;
mod rows;
mod store;
pub mod testing;
mod webhooks;

pub use error::Error;
pub use migrations::SchemaVersion;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use tokio::sync::Notify;

/// Connections per node unless configured (`[database] pool_size`). The server's
/// `max_connections` (100 by default) bounds nodes × this; 16 saturates a two-core database
/// server (docs/DECISIONS.md).
pub const DEFAULT_POOL_SIZE: usize = 16;

/// The channel `NOTIFY` wakes idle workers on.
pub(crate) const QUEUE_CHANNEL: &str = "runbase_queue";
/// The channel a cancel is announced on (the payload is the run id), so the node executing the
/// run stops it.
pub(crate) const CANCEL_CHANNEL: &str = "runbase_cancel";
/// The channel a committed change of a run's state is announced on (the payload is the run
/// id, or several comma-separated): claimed, finished, requeued or failed by a reclaim. Sent in
/// the transaction of the change, so delivered at its commit, to every node
/// ([`Store::run_changes`]). A cancel is announced on [`CANCEL_CHANNEL`] alone, which the
/// listener also takes as a change.
///
/// [`Store::run_changes`]: runbase_domain::store::Store::run_changes
pub(crate) const RUN_CHANNEL: &str = "runbase_run";

/// Announcements of changed runs a slow listener may fall behind by before it is told it lagged.
const RUN_CHANGES_BUFFER: usize = 1024;

/// How long a connection may go without the server acknowledging what was sent, or without any
/// sign of life when idle, before it is dropped and replaced. Without these, a connection whose
/// server vanished (a fail-over, a NAT or firewall forgetting an idle flow, a partition) stays
/// open for hours with the kernel's defaults: a worker waits on it forever, and the listening
/// connection never hears of a queued run or a cancel again.
const DEAD_PEER: std::time::Duration = std::time::Duration::from_secs(20);

/// Bounded connects and dead-peer detection on every connection (pooled and listening).
fn harden(config: &mut tokio_postgres::Config) {
    config
        .connect_timeout(std::time::Duration::from_secs(10))
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(10))
        .keepalives_interval(std::time::Duration::from_secs(5))
        .keepalives_retries(2)
        .tcp_user_timeout(DEAD_PEER);
}

/// Runbase's store on a PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    creates: create_batch::Creates,
    finishes: store::Finishes,
    keys_by_hash: key_reads::KeysByHash,
    keys_and_runs: key_reads::KeysAndRuns,
    /// This process's worker, once it offers to take runs from their creates.
    handoff: Arc<std::sync::OnceLock<runbase_domain::store::Handoff>>,
    queue_signal: Arc<Notify>,
    cancels: tokio::sync::broadcast::Sender<String>,
    run_changes: tokio::sync::broadcast::Sender<String>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl PgStore {
    /// Connects (checking that the server answers) and starts listening for queued runs, with
    /// at most [`DEFAULT_POOL_SIZE`] pooled connections. The schema is not checked: see
    /// [`PgStore::schema`] and [`PgStore::migrate`].
    pub async fn connect(url: &str) -> Result<PgStore, Error> {
        Self::connect_with_pool(url, DEFAULT_POOL_SIZE).await
    }

    /// [`PgStore::connect`] with at most `pool_size` pooled connections (`[database]
    /// pool_size`; tests that open many stores on one server stay under its `max_connections`).
    pub async fn connect_with_pool(url: &str, pool_size: usize) -> Result<PgStore, Error> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| Error::Data(format!("invalid PostgreSQL URL: {e}")))?;
        harden(&mut config);
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(std::time::Duration::from_secs(30)))
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| Error::Data(format!("building the connection pool: {e}")))?;
        // Fail now, with the server's reason, rather than at the first request.
        drop(pool.get().await?);
        let handoff = Arc::new(std::sync::OnceLock::new());
        let queue_signal = Arc::new(Notify::new());
        let (cancels, _) = tokio::sync::broadcast::channel(1024);
        let run_changes = tokio::sync::broadcast::Sender::new(RUN_CHANGES_BUFFER);
        let listener = tokio::spawn(listen::run(
            config,
            queue_signal.clone(),
            cancels.clone(),
            run_changes.clone(),
        ));
        Ok(PgStore {
            creates: create_batch::start(create_batch::Context {
                pool: pool.clone(),
                handoff: handoff.clone(),
                queue_signal: queue_signal.clone(),
            }),
            handoff,
            finishes: store::start_finishes(pool.clone()),
            keys_by_hash: key_reads::start_keys_by_hash(pool.clone()),
            keys_and_runs: key_reads::start_keys_and_runs(pool.clone()),
            pool,
            queue_signal,
            cancels,
            run_changes,
            listener,
        })
    }

    /// Which migrations the database has and which this build knows.
    pub async fn schema(&self) -> Result<SchemaVersion, Error> {
        let client = self.pool.get().await?;
        migrations::version(&client).await
    }

    /// Applies the migrations the database lacks, each in its own transaction, under an
    /// advisory lock (two nodes migrating at once apply each migration once). Returns how many
    /// were applied. A database newer than this build is refused.
    pub async fn migrate(&self) -> Result<usize, Error> {
        let mut client = self.pool.get().await?;
        migrations::migrate(&mut client).await
    }
}

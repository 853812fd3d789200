//! Schema migrations: SQL files under `migrations/`, applied in order, recorded in
//! `runbase_migrations`. Applied only when asked (`runbase migrate`, `serve --migrate`): with
//! several nodes on one database, a deploy migrates once, then starts the nodes.

use crate::Error;
use deadpool_postgres::GenericClient;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_uploads.sql"),
    include_str!("../migrations/0003_oidc_identities.sql"),
    include_str!("../migrations/0004_upload_quota_and_retention.sql"),
    include_str!("../migrations/0005_idempotency.sql"),
    include_str!("../migrations/0006_uncredited_uploads.sql"),
    include_str!("../migrations/0007_webhooks.sql"),
    include_str!("../migrations/0008_fewer_index_entries.sql"),
    include_str!("../migrations/0009_put_backs.sql"),
    include_str!("../migrations/0010_indexes_grow_at_their_right_edge.sql"),
    include_str!("../migrations/0011_runs_by_account_and_mode.sql"),
];

/// Any number, the same in every node: serializes concurrent `migrate` calls.
const MIGRATION_LOCK: i64 = 0x0072_756e_6261_7365; // "runbase" in ASCII

/// The database's schema against this build's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// Migrations the database has (0 for an empty database).
    pub applied: i64,
    /// Migrations this build knows.
    pub latest: i64,
}

impl SchemaVersion {
    pub fn is_current(&self) -> bool {
        self.applied == self.latest
    }

    /// Why a node must not start on this schema, or `None` when it may.
    pub fn problem(&self) -> Option<String> {
        if self.applied < self.latest {
            Some(format!(
                "the PostgreSQL schema is at version {} and this build needs version {}: run `runbase migrate` first (or start with `runbase serve --migrate`)",
                self.applied, self.latest
            ))
        } else if self.applied > self.latest {
            Some(format!(
                "the PostgreSQL schema is at version {}, newer than this build (version {}): upgrade this node to the release that migrated it",
                self.applied, self.latest
            ))
        } else {
            None
        }
    }
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS runbase_migrations (
    version    BIGINT PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)";

pub async fn version(client: &impl GenericClient) -> Result<SchemaVersion, Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('runbase_migrations') IS NOT NULL", &[])
        .await?
        .try_get(0)?;
    let applied = if exists {
        client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM runbase_migrations",
                &[],
            )
            .await?
            .try_get(0)?
    } else {
        0
    };
    Ok(SchemaVersion {
        applied,
        latest: MIGRATIONS.len() as i64,
    })
}

pub async fn migrate(client: &mut deadpool_postgres::Client) -> Result<usize, Error> {
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let number = i as i64 + 1;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(CREATE_TABLE).await?;
        let now = version(&tx).await?;
        if now.applied > now.latest {
            return Err(Error::Data(now.problem().unwrap_or_default()));
        }
        if now.applied >= number {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO runbase_migrations (version) VALUES ($1)",
            &[&number],
        )
        .await?;
        tx.commit().await?;
        applied += 1;
    }
    Ok(applied)
}

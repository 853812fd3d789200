//! Opening the configured store: SQLite (the default, one node, migrated at every start) or
//! PostgreSQL (several nodes, migrated explicitly by `runbase migrate` or `serve --migrate`).

use crate::config::{Config, redact_url as redact};
use anyhow::{Context, bail};
use runbase_domain::store::Store;
use runbase_store_postgres::PgStore;
use runbase_store_sqlite::{Durability, SqliteStore};
use std::sync::Arc;

/// What to do with a PostgreSQL schema older than this build's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Refuse to start (the default: another node may still run the old release).
    MustBeCurrent,
    /// Apply the missing migrations first (`serve --migrate`, `runbase migrate`).
    Migrate,
}

/// Opens the configured store (used by `serve`, `migrate` and every admin command).
pub async fn open(config: &Config, schema: Schema) -> anyhow::Result<Arc<dyn Store>> {
    if let Some(url) = config.postgres_url() {
        let store = PgStore::connect_with_pool(url, config.database.pool_size)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
        let version = store
            .schema()
            .await
            .context("reading the PostgreSQL schema version")?;
        if schema == Schema::Migrate && version.applied < version.latest {
            let applied = store
                .migrate()
                .await
                .context("migrating the PostgreSQL schema")?;
            tracing::info!(
                applied,
                version = version.latest,
                "PostgreSQL schema migrated"
            );
        } else if let Some(problem) = version.problem() {
            bail!("{problem}");
        }
        return Ok(Arc::new(store));
    }
    let path = config.sqlite_path().map_err(anyhow::Error::msg)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let durability = if config.durability == "normal" {
        Durability::Normal
    } else {
        Durability::Full
    };
    // One node owns a SQLite file: it migrates at every start.
    let store = SqliteStore::open(&path, durability)
        .with_context(|| format!("opening the database {}", path.display()))?;
    Ok(Arc::new(store))
}

/// `runbase migrate`: applies the missing migrations and says where the schema is.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    if let Some(url) = config.postgres_url() {
        let store = PgStore::connect_with_pool(url, config.database.pool_size)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
        let applied = store
            .migrate()
            .await
            .context("migrating the PostgreSQL schema")?;
        let version = store.schema().await?;
        println!(
            "PostgreSQL schema at version {} ({applied} migration(s) applied)",
            version.applied
        );
    } else {
        open(config, Schema::Migrate).await?;
        println!("SQLite database migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("postgres://rb:s3cret@db:5432/runbase"),
            "postgres://rb:***@db:5432/runbase"
        );
        assert_eq!(
            redact("postgres://rb@db/runbase"),
            "postgres://rb@db/runbase"
        );
        // A password may hold an '@': everything up to the last one is the user's.
        assert_eq!(
            redact("postgres://rb:p@ss@db/runbase"),
            "postgres://rb:***@db/runbase"
        );
    }
}

//! Schema migrations: SQL files under `migrations/`, applied in order, tracked by
//! `PRAGMA user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_init.sql"),
    include_str!("../migrations/0002_cancel_and_test_runs.sql"),
    include_str!("../migrations/0003_dashboard.sql"),
    include_str!("../migrations/0004_leases.sql"),
    include_str!("../migrations/0005_uploads.sql"),
    include_str!("../migrations/0006_oidc_identities.sql"),
    include_str!("../migrations/0007_upload_quota_and_retention.sql"),
    include_str!("../migrations/0008_idempotency.sql"),
    include_str!("../migrations/0009_uncredited_uploads.sql"),
    include_str!("../migrations/0010_webhooks.sql"),
];

/// Applies the migrations this database has not seen yet, each in its own transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Another process may have migrated while we waited for the lock.
        let now: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now as usize > i {
            continue;
        }
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

//! Schema migrations: SQL files under `migrations/`, applied in order, tracked by
//! `PRAGMA user_version`.

use runbase_domain::store::StoreError;
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
    include_str!("../migrations/0011_fewer_index_entries.sql"),
    include_str!("../migrations/0012_put_backs.sql"),
    include_str!("../migrations/0013_indexes_grow_at_their_right_edge.sql"),
    include_str!("../migrations/0014_runs_by_account_and_mode.sql"),
];

/// The schema version this build migrates to (`PRAGMA user_version`).
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// The schema version of a database migrated by a newer build than this one (or one no build
/// writes: below zero), which this build must not open: its queries do not know what the newer
/// migrations changed.
pub(crate) fn newer_than_this_build(conn: &Connection) -> rusqlite::Result<Option<i64>> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok((current < 0 || current > latest()).then_some(current))
}

/// [`newer_than_this_build`] as the refusal of the database at `path`.
pub(crate) fn refuse_newer(conn: &Connection, path: &std::path::Path) -> Result<(), StoreError> {
    match newer_than_this_build(conn).map_err(crate::pool::backend)? {
        None => Ok(()),
        Some(version) => Err(crate::pool::backend(format!(
            "the database at {} is at schema version {version}, newer than this build \
             (version {}): upgrade to the release that migrated it",
            path.display(),
            latest()
        ))),
    }
}

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests may unwrap")]

    use super::*;

    fn migrated() -> (tempfile::TempDir, Connection) {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = Connection::open(dir.path().join("runbase.db")).unwrap();
        migrate(&mut conn).unwrap();
        (dir, conn)
    }

    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let params = stmt.parameter_count();
        stmt.query_map(rusqlite::params_from_iter((0..params).map(|_| 0)), |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
        .join("; ")
    }

    /// Migration 0011 dropped `runs_in_flight` and the ledger's per-kind run indexes: the
    /// queries they served walk `runs_leases` and `ledger_run_lines`, not the tables.
    #[test]
    fn processing_runs_and_a_runs_ledger_lines_are_found_through_an_index() {
        let (_dir, conn) = migrated();
        for sql in [
            "SELECT count(*) FROM runs WHERE status = 'processing'",
            "SELECT id, attempts, put_backs FROM runs WHERE status = 'processing'",
            "SELECT id, attempts, put_backs FROM runs WHERE status = 'processing' AND locked_until < ?1",
        ] {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains("USING INDEX runs_leases")
                    || plan.contains("USING COVERING INDEX runs_leases"),
                "{sql}: {plan}"
            );
        }
        let sql = format!("SELECT id FROM ledger {}", crate::store::RUN_LEDGER_WHERE);
        let sql = sql.as_str();
        let plan = plan(&conn, sql);
        assert!(
            plan.contains("INDEX ledger_run_lines (run_id=?)"),
            "{sql}: {plan}"
        );
    }

    /// Migration 0013 made the per-account indexes ascending: an account's runs and ledger,
    /// newest first, are still read through them (backwards), without a sort.
    #[test]
    fn an_accounts_runs_and_ledger_are_listed_newest_first_without_a_sort() {
        let (_dir, conn) = migrated();
        for (sql, index) in [
            (
                "SELECT id FROM runs WHERE account_id = ?1 AND test = ?4 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
                "runs_by_account",
            ),
            (
                "SELECT id FROM ledger WHERE account_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
                "ledger_by_account",
            ),
        ] {
            let plan = plan(&conn, sql);
            assert!(plan.contains(index), "{sql}: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
            let definition: String = conn
                .query_row(
                    "SELECT sql FROM sqlite_master WHERE name = ?1",
                    [index],
                    |r| r.get(0),
                )
                .unwrap();
            assert!(!definition.contains("DESC"), "{definition}");
        }
    }

    /// Migration 0014 put the runs' mode in the per-account index: every listing of an account's
    /// runs (of one mode, or of both merged, with a window or not) and a window's end walk its
    /// ranges, never the table.
    #[test]
    fn every_listing_of_an_accounts_runs_walks_its_index() {
        let (_dir, conn) = migrated();
        for sql in crate::store::run_listing_statements() {
            let plan = plan(&conn, sql);
            assert!(
                plan.contains("INDEX runs_by_account (account_id=? AND test=? AND seq<?)"),
                "{sql}: {plan}"
            );
            assert!(!plan.contains("SCAN runs"), "{sql}: {plan}");
        }
    }

    /// One charge and one refund per run, whatever else the ledger holds.
    #[test]
    fn a_run_is_charged_once_and_refunded_once() {
        let (_dir, conn) = migrated();
        conn.execute(
            "INSERT INTO accounts (id, email, balance_millicents, created_at) VALUES ('a', 'a@x', 0, 0)",
            [],
        )
        .unwrap();
        let line = |kind: &str, run: Option<&str>| {
            conn.execute(
                "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, created_at)
                 VALUES ('a', ?1, 1, 1, ?2, 0)",
                rusqlite::params![kind, run],
            )
        };
        line("topup", None).unwrap();
        line("topup", None).unwrap();
        line("run_charge", Some("r1")).unwrap();
        line("run_charge", Some("r2")).unwrap();
        assert!(line("run_charge", Some("r1")).is_err(), "a second charge");
        line("run_refund", Some("r1")).unwrap();
        assert!(line("run_refund", Some("r1")).is_err(), "a second refund");
    }
}

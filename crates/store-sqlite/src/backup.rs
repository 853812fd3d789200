//! A consistent copy of a live database, for `runbase backup`.
//!
//! `VACUUM INTO` reads the database in one read transaction, so the copy is the state of one
//! commit, whatever the server writes meanwhile; in WAL mode the read blocks no writer (and
//! the writer's checkpoints do not disturb it). The copy is also compacted, and it is a plain
//! database file any SQLite can open.

use crate::pool::backend;
use runbase_domain::store::StoreError;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;

/// Writes a snapshot of the database at `source` to `dest` (which must not exist), syncs it to
/// disk and checks it. Safe while a server writes to `source`.
pub fn backup(source: &Path, dest: &Path) -> Result<(), StoreError> {
    if dest.exists() {
        return Err(StoreError::Backend(format!(
            "{} already exists",
            dest.display()
        )));
    }
    // Read-write without CREATE: a wrong path fails instead of making an empty database, and
    // a read-only connection could not use the WAL index of a live database.
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| backend(format!("opening {}: {e}", source.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(backend)?;
    // A copy this build could not start from is no backup of its.
    crate::migrations::refuse_newer(&conn, source)?;
    let dest_str = dest
        .to_str()
        .ok_or_else(|| backend("the backup path is not valid UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [dest_str])
        .map_err(|e| backend(format!("VACUUM INTO {}: {e}", dest.display())))?;
    drop(conn);
    // VACUUM INTO does not sync its output.
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| backend(format!("syncing {}: {e}", dest.display())))?;
    let copy =
        Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(backend)?;
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(backend)?;
    if check != "ok" {
        return Err(backend(format!(
            "the backup {} failed its integrity check: {check}",
            dest.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_committed_rows_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.db");
        let c = Connection::open(&src).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1), (2);")
            .unwrap();
        // An open transaction of another connection is not in the copy.
        c.execute_batch("BEGIN; INSERT INTO t VALUES (3);").unwrap();
        let dest = dir.path().join("b.db");
        backup(&src, &dest).unwrap();
        let copy = Connection::open(&dest).unwrap();
        let n: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 2);
        assert!(backup(&src, &dest).is_err());
        assert!(backup(&dir.path().join("missing.db"), &dir.path().join("c.db")).is_err());
        // A database of a newer build: refused, and no copy is made.
        c.execute_batch("COMMIT").unwrap();
        c.pragma_update(None, "user_version", 99).unwrap();
        let newer = dir.path().join("d.db");
        let e = backup(&src, &newer).unwrap_err().to_string();
        assert!(
            e.contains("schema version 99, newer than this build"),
            "{e}"
        );
        assert!(!newer.exists());
    }
}

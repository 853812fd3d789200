//! `runbase backup PATH`: a consistent copy of a live SQLite store, plus the local output
//! files, as a new data directory that `runbase serve --data-dir PATH` starts from.
//!
//! The database is copied first, in one read transaction (`VACUUM INTO`); the files after it.
//! A run's files are written before the commit that records them, so every file the copied
//! database refers to already exists when the files are copied.

use crate::config::Config;
use anyhow::{Context, bail};
use std::path::Path;

pub fn run(config: &Config, dest: &Path) -> anyhow::Result<()> {
    let db = config.sqlite_path().map_err(|e| {
        anyhow::anyhow!("{e}\n(`runbase backup` copies a SQLite store; back up PostgreSQL with pg_dump or pg_basebackup)")
    })?;
    if !db.exists() {
        bail!("no database at {}", db.display());
    }
    if dest.exists()
        && std::fs::read_dir(dest)
            .with_context(|| format!("reading {}", dest.display()))?
            .next()
            .is_some()
    {
        bail!("{} exists and is not empty", dest.display());
    }
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    // A backup inside the data directory would copy itself (its files into its own `files/`,
    // without end) and be lost with the directory it protects.
    if let (Ok(data), Ok(inside)) = (config.data_dir.canonicalize(), dest.canonicalize())
        && inside.starts_with(&data)
    {
        let _ = std::fs::remove_dir(dest);
        bail!(
            "{} is inside the data directory {}: back up to a directory outside it",
            dest.display(),
            data.display()
        );
    }
    let dest_db = dest.join("runbase.db");
    if let Err(e) = runbase_store_sqlite::backup(&db, &dest_db) {
        // Nothing was copied: the directory made above goes (`remove_dir` leaves one that is
        // not empty).
        let _ = std::fs::remove_dir(dest);
        return Err(e).with_context(|| format!("copying {}", db.display()));
    }
    let mut files = 0u64;
    if config.storage.kind == "local" {
        let src = config.data_dir.join("files");
        if src.is_dir() {
            files = copy_files(&src, &dest.join("files"))
                .with_context(|| format!("copying {}", src.display()))?;
        }
    }
    let size = std::fs::metadata(&dest_db).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "backed up {} ({size} bytes) and {files} output files into {}; start from it with: runbase serve --data-dir {}",
        db.display(),
        dest.display(),
        dest.display()
    );
    Ok(())
}

/// Copies a directory tree, leaving out files still being written (`.partial`). Returns the
/// number of files copied.
fn copy_files(src: &Path, dest: &Path) -> std::io::Result<u64> {
    std::fs::create_dir_all(dest)?;
    let mut n = 0;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let to = dest.join(entry.file_name());
        if kind.is_dir() {
            n += copy_files(&entry.path(), &to)?;
        } else if kind.is_file() && entry.path().extension().is_none_or(|e| e != "partial") {
            std::fs::copy(entry.path(), &to)?;
            n += 1;
        }
    }
    Ok(n)
}

//! `serve --role`: which parts of Runbase this process runs.

use crate::config::Config;
use anyhow::{Context, bail};
use std::fs::File;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The API, the dashboard and the worker (one node).
    All,
    /// The API and the dashboard; runs are executed by worker processes.
    Api,
    /// Executes runs; serves only `/health` and output files.
    Worker,
}

impl Role {
    pub fn from_config(config: &Config) -> Role {
        match config.role.as_str() {
            "api" => Role::Api,
            "worker" => Role::Worker,
            _ => Role::All,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        }
    }

    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }

    pub fn executes_runs(self) -> bool {
        self != Role::Api
    }
}

/// What an operator should know before nodes are split.
pub fn warnings(role: Role, config: &Config) -> Vec<String> {
    let mut w = Vec::new();
    if role != Role::All && config.storage.kind == "local" {
        w.push(format!(
            "role {}: output files are stored in {} on this machine and are not reachable from nodes on other machines; use [storage] kind = \"s3\" when nodes run on several machines",
            role.name(),
            config.data_dir.join("files").display()
        ));
    }
    if role == Role::Worker && config.public_url.is_none() {
        w.push("role worker: public_url is not set, so output URLs will point at this worker's own address; set it to the address clients reach the API at".into());
    }
    if role != Role::All && config.rate_limits.backend == "memory" {
        w.push(format!(
            "role {}: rate limits are counted per process ([rate_limits] backend = \"memory\"); with several API nodes use backend = \"redis\"",
            role.name()
        ));
    }
    w
}

/// Whether the store is SQLite (a PostgreSQL store takes any number of workers).
pub fn is_sqlite(config: &Config) -> bool {
    !config
        .database_url
        .as_deref()
        .is_some_and(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// On SQLite, one process per data directory executes runs: at start-up it takes back the
/// runs left `processing` by the last stop, which would steal them from a second worker that
/// is still executing them. The lock, on a file beside the database, is held by the returned
/// file until the process exits.
pub fn lock_sqlite_worker(config: &Config) -> anyhow::Result<File> {
    let db = config.sqlite_path().map_err(anyhow::Error::msg)?;
    let mut path = db.clone().into_os_string();
    path.push("-worker.lock");
    let path = std::path::PathBuf::from(path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "another process executes runs on {} (serve with role all or worker); with SQLite, run one worker per database and any number of `--role api` processes",
            db.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

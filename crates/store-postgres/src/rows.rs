//! Row ↔ domain type mapping. Column lists live next to the mapping that reads them, in the
//! same order as the SQLite store's.

use crate::Error;
use runbase_domain::account::{Account, ApiKey, LedgerEntry, LedgerKind};
use runbase_domain::ids::KeyHash;
use runbase_domain::ip::IpAllowlist;
use runbase_domain::money::Millicents;
use runbase_domain::run::{Run, RunError, RunStatus};
use runbase_domain::sessions::Session;
use runbase_domain::time::Timestamp;
use tokio_postgres::Row;

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

pub const ACCOUNT_COLS: &str = "id, email, balance_millicents, created_at, admin";

pub fn account(r: &Row) -> Result<Account, Error> {
    Ok(Account {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        balance: Millicents(r.try_get(2)?),
        created_at: Timestamp(r.try_get(3)?),
        admin: r.try_get(4)?,
    })
}

pub const KEY_COLS: &str = "id, account_id, name, prefix, hash, disabled, test, expires_at, allow_ips, \
     spend_limit_millicents, spent_millicents, quota, runs_created, created_at, last_used_at, deleted_at";

/// `cols` (a column list) with each column qualified by `table` (`"k"` → `k.id, k.name, ...`).
pub fn qualified(cols: &str, table: &str) -> String {
    cols.split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn api_key(r: &Row) -> Result<ApiKey, Error> {
    Ok(ApiKey {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        name: r.try_get(2)?,
        prefix: r.try_get(3)?,
        hash: KeyHash(r.try_get(4)?),
        disabled: r.try_get(5)?,
        test: r.try_get(6)?,
        expires_at: ts(r.try_get(7)?),
        allow_ips: allowlist(r.try_get(8)?)?,
        spend_limit: r.try_get::<_, Option<i64>>(9)?.map(Millicents),
        spent: Millicents(r.try_get(10)?),
        quota: r.try_get::<_, Option<i64>>(11)?.map(|q| q.max(0) as u64),
        runs_created: r.try_get::<_, i64>(12)?.max(0) as u64,
        created_at: Timestamp(r.try_get(13)?),
        last_used_at: ts(r.try_get(14)?),
        deleted_at: ts(r.try_get(15)?),
    })
}

/// The columns of a key that authentication reads (see [`api_key_for_auth`]).
pub const KEY_AUTH_COLS: &str =
    "id, account_id, hash, disabled, expires_at, allow_ips, last_used_at, deleted_at";

/// How many columns [`KEY_AUTH_COLS`] names.
pub const KEY_AUTH_COL_COUNT: usize = 8;

/// A key read for authentication only (`Store::key_and_run`: GET of a run and its event
/// stream): what steps 1–3, the limiter and a stream's slot read (usable, allowlist, last use,
/// id and account) is the row's; the rest is left empty (no name, no test flag, no spend, no
/// quota), since those paths show and check none of it (and the HTTP layer remembers such a key
/// as partial, never to authenticate a create with: `auth::RecentKeys`). Each column of a statement costs PostgreSQL work on
/// every execution (its projection and result descriptor are built per execution), so they
/// read these 8 of the key's 16.
pub fn api_key_for_auth(r: &Row) -> Result<ApiKey, Error> {
    Ok(ApiKey {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        name: String::new(),
        prefix: String::new(),
        hash: KeyHash(r.try_get(2)?),
        disabled: r.try_get(3)?,
        test: false,
        expires_at: ts(r.try_get(4)?),
        allow_ips: allowlist(r.try_get(5)?)?,
        spend_limit: None,
        spent: Millicents(0),
        quota: None,
        runs_created: 0,
        created_at: Timestamp(0),
        last_used_at: ts(r.try_get(6)?),
        deleted_at: ts(r.try_get(7)?),
    })
}

fn allowlist(ips: &str) -> Result<IpAllowlist, Error> {
    let ips: Vec<String> =
        serde_json::from_str(ips).map_err(|e| Error::Data(format!("allow_ips: {e}")))?;
    IpAllowlist::parse(&ips).map_err(|e| Error::Data(format!("allow_ips: {e}")))
}

/// [`RUN_COLS`] but `account_id`, for a run read with its account's key (see
/// [`run_of_account_at`]).
pub const RUN_OF_KEY_COLS: &str = "id, model, status, input, output, error_message, error_code, \
     cost_millicents, created_at, started_at, completed_at, key_id, attempts, test";

pub const RUN_COLS: &str = "id, model, status, input, output, error_message, error_code, cost_millicents, \
     created_at, started_at, completed_at, account_id, key_id, attempts, test";

pub fn run(r: &Row) -> Result<Run, Error> {
    run_at(r, 0)
}

/// The run whose [`RUN_COLS`] start at column `at`.
fn run_at(r: &Row, at: usize) -> Result<Run, Error> {
    run_columns(r, at, None)
}

/// The run whose [`RUN_OF_KEY_COLS`] start at column `at`, read as a run of the account
/// `account_id` (the statement matched it on that account).
pub fn run_of_account_at(r: &Row, at: usize, account_id: &str) -> Result<Run, Error> {
    run_columns(r, at, Some(account_id))
}

/// A run's columns from `at`: [`RUN_COLS`], or, when the account is known, the same without
/// `account_id` ([`RUN_OF_KEY_COLS`]).
fn run_columns(r: &Row, at: usize, account_id: Option<&str>) -> Result<Run, Error> {
    let status: String = r.try_get(at + 2)?;
    let input: String = r.try_get(at + 3)?;
    let output: Option<String> = r.try_get(at + 4)?;
    let error_message: Option<String> = r.try_get(at + 5)?;
    let error_code: Option<String> = r.try_get(at + 6)?;
    let json = |s: &str| serde_json::from_str(s).map_err(|e| Error::Data(format!("run JSON: {e}")));
    // The columns after `completed_at`: `account_id` when read, then the key, ...
    let (account_id, rest) = match account_id {
        Some(id) => (id.to_owned(), at + 11),
        None => (r.try_get(at + 11)?, at + 12),
    };
    Ok(Run {
        id: r.try_get(at)?,
        model: r.try_get(at + 1)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| Error::Data(format!("unknown status {status}")))?,
        input: json(&input)?,
        output: output.as_deref().map(json).transpose()?,
        error: error_message.map(|message| RunError {
            message,
            code: error_code.unwrap_or_default(),
        }),
        cost: Millicents(r.try_get(at + 7)?),
        created_at: Timestamp(r.try_get(at + 8)?),
        started_at: ts(r.try_get(at + 9)?),
        completed_at: ts(r.try_get(at + 10)?),
        account_id,
        key_id: r.try_get(rest)?,
        attempts: r.try_get::<_, i64>(rest + 1)?.clamp(0, i64::from(u32::MAX)) as u32,
        test: r.try_get(rest + 2)?,
    })
}

pub const LEDGER_COLS: &str = "id, account_id, kind, amount_millicents, balance_after_millicents, run_id, key_id, memo, created_at, granted_by";

pub fn ledger(r: &Row) -> Result<LedgerEntry, Error> {
    let kind: String = r.try_get(2)?;
    Ok(LedgerEntry {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        kind: LedgerKind::parse(&kind)
            .ok_or_else(|| Error::Data(format!("unknown ledger kind {kind}")))?,
        amount: Millicents(r.try_get(3)?),
        balance_after: Millicents(r.try_get(4)?),
        run_id: r.try_get(5)?,
        key_id: r.try_get(6)?,
        memo: r.try_get(7)?,
        created_at: Timestamp(r.try_get(8)?),
        granted_by: r.try_get(9)?,
    })
}

pub const SESSION_COLS: &str = "token_hash, account_id, csrf_token, created_at, expires_at";

pub fn session(r: &Row) -> Result<Session, Error> {
    Ok(Session {
        token_hash: r.try_get(0)?,
        account_id: r.try_get(1)?,
        csrf_token: r.try_get(2)?,
        created_at: Timestamp(r.try_get(3)?),
        expires_at: Timestamp(r.try_get(4)?),
    })
}

/// Maps every row, stopping at the first that does not read.
pub fn all<T>(rows: &[Row], f: fn(&Row) -> Result<T, Error>) -> Result<Vec<T>, Error> {
    rows.iter().map(f).collect()
}

pub const UPLOAD_COLS: &str = "id, account_id, path, content_type, size_bytes, created_at";

pub fn upload(r: &Row) -> Result<runbase_domain::uploads::Upload, Error> {
    let size: i64 = r.try_get(4)?;
    Ok(runbase_domain::uploads::Upload {
        id: r.try_get(0)?,
        account_id: r.try_get(1)?,
        path: r.try_get(2)?,
        content_type: r.try_get(3)?,
        size_bytes: u64::try_from(size).map_err(|e| Error::Data(e.to_string()))?,
        created_at: Timestamp(r.try_get(5)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_col_count_matches_the_list() {
        assert_eq!(KEY_COLS.split(',').count(), 16);
        assert_eq!(KEY_AUTH_COLS.split(',').count(), KEY_AUTH_COL_COUNT);
        assert_eq!(qualified("id, name", "k"), "k.id, k.name");
    }
}

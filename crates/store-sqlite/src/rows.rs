//! Row ↔ domain type mapping. Column lists live next to the mapping that reads them.

use runbase_domain::account::{Account, ApiKey, LedgerEntry, LedgerKind};
use runbase_domain::ids::KeyHash;
use runbase_domain::ip::IpAllowlist;
use runbase_domain::money::Millicents;
use runbase_domain::run::{Run, RunError, RunStatus};
use runbase_domain::time::Timestamp;
use rusqlite::Row;
use rusqlite::types::Type;

fn bad(col: usize, msg: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, Type::Text, msg.into())
}

fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

pub const ACCOUNT_COLS: &str = "id, email, balance_millicents, created_at, admin";

pub fn account(r: &Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        id: r.get(0)?,
        email: r.get(1)?,
        balance: Millicents(r.get(2)?),
        created_at: Timestamp(r.get(3)?),
        admin: r.get(4)?,
    })
}

pub const KEY_COLS: &str = "id, account_id, name, prefix, hash, disabled, test, expires_at, allow_ips, \
     spend_limit_millicents, spent_millicents, quota, runs_created, created_at, last_used_at, deleted_at";

pub fn api_key(r: &Row<'_>) -> rusqlite::Result<ApiKey> {
    let ips: String = r.get(8)?;
    let ips: Vec<String> = serde_json::from_str(&ips).map_err(|e| bad(8, e.to_string()))?;
    Ok(ApiKey {
        id: r.get(0)?,
        account_id: r.get(1)?,
        name: r.get(2)?,
        prefix: r.get(3)?,
        hash: KeyHash(r.get(4)?),
        disabled: r.get(5)?,
        test: r.get(6)?,
        expires_at: ts(r.get(7)?),
        allow_ips: IpAllowlist::parse(&ips).map_err(|e| bad(8, e))?,
        spend_limit: r.get::<_, Option<i64>>(9)?.map(Millicents),
        spent: Millicents(r.get(10)?),
        quota: r.get::<_, Option<i64>>(11)?.map(|q| q.max(0) as u64),
        runs_created: r.get::<_, i64>(12)?.max(0) as u64,
        created_at: Timestamp(r.get(13)?),
        last_used_at: ts(r.get(14)?),
        deleted_at: ts(r.get(15)?),
    })
}

pub const RUN_COLS: &str = "id, model, status, input, output, error_message, error_code, cost_millicents, \
     created_at, started_at, completed_at, account_id, key_id, attempts, test";

pub fn run(r: &Row<'_>) -> rusqlite::Result<Run> {
    let status: String = r.get(2)?;
    let input: String = r.get(3)?;
    let output: Option<String> = r.get(4)?;
    let error_message: Option<String> = r.get(5)?;
    let error_code: Option<String> = r.get(6)?;
    Ok(Run {
        id: r.get(0)?,
        model: r.get(1)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| bad(2, format!("unknown status {status}")))?,
        input: serde_json::from_str(&input).map_err(|e| bad(3, e.to_string()))?,
        output: output
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(|e| bad(4, e.to_string()))?,
        error: error_message.map(|message| RunError {
            message,
            code: error_code.unwrap_or_default(),
        }),
        cost: Millicents(r.get(7)?),
        created_at: Timestamp(r.get(8)?),
        started_at: ts(r.get(9)?),
        completed_at: ts(r.get(10)?),
        account_id: r.get(11)?,
        key_id: r.get(12)?,
        attempts: r.get::<_, i64>(13)?.max(0) as u32,
        test: r.get(14)?,
    })
}

pub const LEDGER_COLS: &str = "id, account_id, kind, amount_millicents, balance_after_millicents, run_id, key_id, memo, created_at, granted_by";

pub fn ledger(r: &Row<'_>) -> rusqlite::Result<LedgerEntry> {
    let kind: String = r.get(2)?;
    Ok(LedgerEntry {
        id: r.get(0)?,
        account_id: r.get(1)?,
        kind: LedgerKind::parse(&kind)
            .ok_or_else(|| bad(2, format!("unknown ledger kind {kind}")))?,
        amount: Millicents(r.get(3)?),
        balance_after: Millicents(r.get(4)?),
        run_id: r.get(5)?,
        key_id: r.get(6)?,
        memo: r.get(7)?,
        created_at: Timestamp(r.get(8)?),
        granted_by: r.get(9)?,
    })
}

pub const SESSION_COLS: &str = "token_hash, account_id, csrf_token, created_at, expires_at";

pub fn session(r: &Row<'_>) -> rusqlite::Result<runbase_domain::sessions::Session> {
    Ok(runbase_domain::sessions::Session {
        token_hash: r.get(0)?,
        account_id: r.get(1)?,
        csrf_token: r.get(2)?,
        created_at: Timestamp(r.get(3)?),
        expires_at: Timestamp(r.get(4)?),
    })
}

pub const UPLOAD_COLS: &str = "id, account_id, path, content_type, size_bytes, created_at";

pub fn upload(r: &Row<'_>) -> rusqlite::Result<runbase_domain::uploads::Upload> {
    let size: i64 = r.get(4)?;
    Ok(runbase_domain::uploads::Upload {
        id: r.get(0)?,
        account_id: r.get(1)?,
        path: r.get(2)?,
        content_type: r.get(3)?,
        size_bytes: u64::try_from(size).map_err(|e| bad(4, e.to_string()))?,
        created_at: Timestamp(r.get(5)?),
    })
}

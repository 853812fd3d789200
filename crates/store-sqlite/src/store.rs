//! `Store` for SQLite: the queries. Writes run on the writer thread (see `pool.rs`), so each
//! read-check-write sequence below is atomic with respect to every other write.

use crate::pool::{SqliteStore, backend};
use crate::rows::{self, ACCOUNT_COLS, KEY_COLS, LEDGER_COLS, RUN_COLS, UPLOAD_COLS};
use async_trait::async_trait;
use runbase_domain::account::{
    Account, ApiKey, KeySettings, KeyUpdate, LedgerEntry, LedgerKind, NewAccount,
    WELCOME_CREDIT_MEMO,
};
use runbase_domain::idempotency::{Claim, ClaimOutcome, NewClaim, Settle};
use runbase_domain::identities::PendingSignIn;
use runbase_domain::ids::{self, KeyHash};
use runbase_domain::money::Millicents;
use runbase_domain::run::{NewRun, Run, RunError, RunOutcome};
use runbase_domain::sessions::Session;
use runbase_domain::store::{
    CreateRunError, LAST_ADMIN, MODE_FILTERS, PaymentCredit, RunFilter, Store, StoreError,
    mode_filter_index,
};
use runbase_domain::time::Timestamp;
use runbase_domain::uploads::{Upload, UploadQuota, UploadUsage};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use std::sync::Arc;

/// How [`Store::run_ledger`] finds a run's lines. `+account_id`: through `ledger_run_lines` (a run
/// has a line or two), never through `ledger_by_account`, which holds every line of the account
/// and which the planner, without statistics, would pick for its order.
pub(crate) const RUN_LEDGER_WHERE: &str = "WHERE run_id = ?1 AND +account_id = ?2 ORDER BY id";

pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation)
}

/// One ledger row to append (its balance after is computed when it is written).
pub(crate) struct LedgerLine<'a> {
    pub account_id: &'a str,
    pub kind: LedgerKind,
    /// Signed: positive adds to the balance.
    pub amount: Millicents,
    pub run_id: Option<&'a str>,
    pub key_id: Option<&'a str>,
    pub memo: &'a str,
    pub granted_by: Option<&'a str>,
    pub now: Timestamp,
}

/// Changes an account's balance by the line's amount and appends the line that explains it.
pub(crate) fn append_ledger(
    conn: &Connection,
    line: LedgerLine<'_>,
) -> rusqlite::Result<LedgerEntry> {
    let balance_after: i64 = conn
        .prepare_cached("UPDATE accounts SET balance_millicents = balance_millicents + ?2 WHERE id = ?1 RETURNING balance_millicents")?
        .query_row(params![line.account_id, line.amount.0], |r| r.get(0))?;
    insert_ledger_row(conn, line, balance_after)
}

/// Marks the account credited by a payment or an operator's grant: from now on its uploads
/// have the full quota, and no longer count in the never-credited accounts' total.
pub(crate) fn mark_credited(conn: &Connection, account_id: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE accounts SET credited = 1 WHERE id = ?1 AND credited = 0")?
        .execute([account_id])?;
    Ok(())
}

/// Where an account stands for uploads (its usage, whether it is credited, and the
/// never-credited accounts' total), in one read.
fn upload_usage(conn: &Connection, account_id: &str) -> rusqlite::Result<UploadUsage> {
    let (account_bytes, credited, total): (Option<i64>, Option<bool>, i64) = conn
        .prepare_cached(
            "SELECT (SELECT bytes FROM upload_usage WHERE account_id = ?1),
                    (SELECT credited FROM accounts WHERE id = ?1),
                    (SELECT bytes FROM uncredited_upload_usage WHERE id = 1)",
        )?
        .query_row([account_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let bytes = |b: i64| u64::try_from(b).unwrap_or(0);
    Ok(UploadUsage {
        account_bytes: account_bytes.map_or(0, bytes),
        credited: credited.unwrap_or(false),
        uncredited_total_bytes: bytes(total),
    })
}

/// Appends a ledger row for a balance change already applied (`balance_after` is the result).
fn insert_ledger_row(
    conn: &Connection,
    line: LedgerLine<'_>,
    balance_after: i64,
) -> rusqlite::Result<LedgerEntry> {
    conn.prepare_cached(
        "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, key_id, memo, created_at, granted_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        line.account_id,
        line.kind.as_str(),
        line.amount.0,
        balance_after,
        line.run_id,
        line.key_id,
        line.memo,
        line.now.0,
        line.granted_by
    ])?;
    Ok(LedgerEntry {
        id: conn.last_insert_rowid(),
        account_id: line.account_id.to_owned(),
        kind: line.kind,
        amount: line.amount,
        balance_after: Millicents(balance_after),
        run_id: line.run_id.map(str::to_owned),
        key_id: line.key_id.map(str::to_owned),
        memo: line.memo.to_owned(),
        granted_by: line.granted_by.map(str::to_owned),
        created_at: line.now,
    })
}

const LEDGER_INSERT: &str = "INSERT INTO ledger (account_id, kind, amount_millicents, balance_after_millicents, run_id, key_id, memo, created_at, granted_by) VALUES ";
const LEDGER_VALUES: &str = "(?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Appends ledger rows for balance changes already applied (each with its balance after), in
/// order, with multi-row `INSERT`s.
pub(crate) fn insert_ledger_rows(
    conn: &Connection,
    lines: &[(LedgerLine<'_>, i64)],
) -> rusqlite::Result<()> {
    use crate::create_batch::{CHUNKS, multi_row};
    use rusqlite::types::ToSql;
    let mut rest = lines;
    while !rest.is_empty() {
        let n = CHUNKS.into_iter().find(|&n| n <= rest.len()).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut stmt = conn.prepare_cached(&multi_row(LEDGER_INSERT, LEDGER_VALUES, n))?;
        let kinds: Vec<&str> = chunk.iter().map(|(l, _)| l.kind.as_str()).collect();
        let mut values: Vec<&dyn ToSql> = Vec::with_capacity(n * 9);
        for ((line, balance_after), kind) in chunk.iter().zip(&kinds) {
            values.extend_from_slice(&[
                &line.account_id,
                kind,
                &line.amount.0,
                balance_after,
                &line.run_id,
                &line.key_id,
                &line.memo,
                &line.now.0,
                &line.granted_by,
            ]);
        }
        stmt.execute(values.as_slice())?;
        rest = tail;
    }
    Ok(())
}

pub(crate) fn key_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<ApiKey>> {
    conn.prepare_cached(&format!("SELECT {KEY_COLS} FROM api_keys WHERE id = ?1"))?
        .query_row([id], rows::api_key)
        .optional()
}

/// Admits a run on its own: re-checks the key, its quota and spend limit, debits the balance,
/// and inserts the run (which queues it) and its ledger row. `input` is the run's input as JSON
/// text. The writer admits the creates of a batch together ([`crate::create_batch`]); this is
/// the path a create takes when its batch's statements failed.
pub(crate) fn create_run_tx(
    conn: &Connection,
    run: &NewRun,
    input: &str,
    answer: Option<&runbase_domain::idempotency::Answer>,
) -> rusqlite::Result<Result<(), CreateRunError>> {
    if let Some(mark) = &run.idempotency
        && crate::idempotency::key_taken(conn, &run.account_id, mark)?
    {
        return Ok(Err(CreateRunError::KeyTaken));
    }
    let Some(key) = key_by_id(conn, &run.key_id)? else {
        return Ok(Err(CreateRunError::KeyNotUsable));
    };
    if let Err(refused) = runbase_domain::admission::check_key(&key, run) {
        return Ok(Err(refused));
    }
    // The balance check and the debit in one statement: no row means the balance is too low.
    let balance_after: Option<i64> = conn
        .prepare_cached(
            "UPDATE accounts SET balance_millicents = balance_millicents - ?2
             WHERE id = ?1 AND balance_millicents >= ?2 RETURNING balance_millicents",
        )?
        .query_row(params![run.account_id, run.price.0], |r| r.get(0))
        .optional()?;
    let Some(balance_after) = balance_after else {
        return Ok(Err(CreateRunError::InsufficientBalance));
    };
    conn.prepare_cached(
        "UPDATE api_keys SET spent_millicents = spent_millicents + ?2, runs_created = runs_created + 1, last_used_at = ?3
         WHERE id = ?1",
    )?
    .execute(params![run.key_id, run.price.0, run.created_at.0])?;
    // Inserting a `pending` run is what enqueues it.
    conn.prepare_cached(
        "INSERT INTO runs (id, account_id, key_id, model, status, input, cost_millicents, created_at, test, webhook, webhook_events)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        run.id,
        run.account_id,
        run.key_id,
        run.model,
        input,
        run.price.0,
        run.created_at.0,
        run.test,
        run.webhook.as_ref().map(|w| w.url.as_str()),
        run.webhook.as_ref().map_or(0, |w| w.events),
    ])?;
    if run.price > Millicents::ZERO {
        insert_ledger_row(conn, crate::create_batch::charge_line(run), balance_after)?;
    }
    if let Some(mark) = &run.idempotency {
        crate::idempotency::record_created(conn, run, mark, answer)?;
    }
    Ok(Ok(()))
}

/// Ends attempt `attempt` of a `processing` run as failed, and refunds it. A run in any other
/// state, or started again since (a later attempt), is left alone, so failing twice never
/// refunds twice. (Successes are written per batch: `success_batch`.)
fn fail_tx(
    conn: &Connection,
    run_id: &str,
    attempt: u32,
    error: &RunError,
    now: Timestamp,
) -> rusqlite::Result<()> {
    let charged: Option<(i64, String, String, String)> = conn
        .prepare_cached(
            "UPDATE runs SET status = 'failed', error_message = ?2, error_code = ?3, completed_at = ?4
             WHERE id = ?1 AND status = 'processing' AND attempts = ?5
             RETURNING cost_millicents, account_id, key_id, model",
        )?
        .query_row(params![run_id, error.message, error.code, now.0, attempt], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    if let Some(charged) = charged {
        refund(conn, run_id, charged, now)?;
    }
    Ok(())
}

/// Gives a run's cost back to the account and to the key's spend (a ledger entry). Called only
/// in the transaction that moved the run to `failed` or `canceled`, which happens once.
fn refund(
    conn: &Connection,
    run_id: &str,
    (cost, account_id, key_id, model): (i64, String, String, String),
    now: Timestamp,
) -> rusqlite::Result<()> {
    if cost <= 0 {
        return Ok(());
    }
    append_ledger(
        conn,
        LedgerLine {
            account_id: &account_id,
            kind: LedgerKind::RunRefund,
            amount: Millicents(cost),
            run_id: Some(run_id),
            key_id: Some(&key_id),
            memo: &model,
            granted_by: None,
            now,
        },
    )?;
    conn.prepare_cached(
        "UPDATE api_keys SET spent_millicents = spent_millicents - ?2 WHERE id = ?1",
    )?
    .execute(params![key_id, cost])?;
    Ok(())
}

/// Cancels a run that has not finished; refunds it. A finished run is left as it is.
fn cancel_tx(
    conn: &Connection,
    account_id: &str,
    run_id: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<Run>> {
    let charged: Option<(i64, String, String, String)> = conn
        .prepare_cached(
            "UPDATE runs SET status = 'canceled', error_message = 'The run was canceled', error_code = 'canceled', completed_at = ?3
             WHERE id = ?1 AND account_id = ?2 AND status IN ('pending', 'processing')
             RETURNING cost_millicents, account_id, key_id, model",
        )?
        .query_row(params![run_id, account_id, now.0], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    if let Some(charged) = charged {
        refund(conn, run_id, charged, now)?;
    }
    conn.prepare_cached(&format!(
        "SELECT {RUN_COLS} FROM runs WHERE id = ?1 AND account_id = ?2"
    ))?
    .query_row([run_id, account_id], rows::run)
    .optional()
}

/// Runs whose worker stopped: back to the queue, or failed with a refund once they were started
/// `max_attempts` times (takings put back before a call do not count). Each run is its id, its
/// attempt and its put-backs. Returns (requeued, failed) and the ids of the runs.
fn requeue_or_fail(
    c: &Connection,
    runs: Vec<(String, i64, i64)>,
    max_attempts: u32,
    now: Timestamp,
) -> rusqlite::Result<((u64, u64), Vec<String>)> {
    let (mut requeued, mut failed) = (0, 0);
    let ids = runs.iter().map(|(id, _, _)| id.clone()).collect();
    for (id, attempts, put_backs) in runs {
        if let Some(error) = RunError::interrupted(attempts, put_backs, max_attempts) {
            let attempt = attempts.clamp(0, i64::from(u32::MAX)) as u32;
            fail_tx(c, &id, attempt, &error, now)?;
            failed += 1;
        } else {
            c.execute(
                "UPDATE runs SET status = 'pending', started_at = NULL, locked_until = NULL WHERE id = ?1",
                [&id],
            )?;
            requeued += 1;
        }
    }
    Ok(((requeued, failed), ids))
}

impl SqliteStore {
    /// Announces committed changes of these runs ([`Store::run_changes`]); nobody listening is
    /// fine.
    fn announce<'a>(&self, run_ids: impl IntoIterator<Item = &'a str>) {
        for id in run_ids {
            let _ = self.run_changes.send(id.to_owned());
        }
    }
}

/// The filters of a listing: `?2` a status, `?3` a model, each compared only when given.
const LIST_FILTERS: &str = "(?2 IS NULL OR status = ?2) AND (?3 IS NULL OR model = ?3)";

/// Account `?1`'s runs of one mode (`test`) after the run `?4` (or from its newest), newest first,
/// at most `limit`, that pass `filters`, their columns `cols`: one range of `runs_by_account`,
/// walked backwards.
fn mode_range(test: bool, cols: &str, filters: &str, limit: &str) -> String {
    format!(
        "SELECT {cols} FROM (SELECT {cols} FROM runs WHERE account_id = ?1 AND test = {} AND {filters}
            AND seq < coalesce((SELECT seq FROM runs WHERE id = ?4 AND account_id = ?1), 9223372036854775807)
          ORDER BY seq DESC LIMIT {limit})",
        i32::from(test)
    )
}

/// The listing of account `?1`'s runs that pass the filters (`?2`, `?3`), newest first, after the
/// run `?4`, at most `?5`: of the modes `modes` (both, merged, for the dashboard; one for an API
/// key), and, `within` a window, among the next `?6` runs of those modes only. Each mode is a
/// range of the index, so no listing reads more of the account's runs than its page, or than
/// its window: a window is found on the index alone (its `seq`s, merged), then its rows are read
/// by `seq` and filtered. (Merging whole rows sorted each range's 2,000 rows with their input
/// and output first: ten times slower with large outputs, found by the review.)
fn list_runs_sql(modes: &[bool], within: bool) -> String {
    let ranges = |cols, filters, limit| {
        modes
            .iter()
            .map(|&test| mode_range(test, cols, filters, limit))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    };
    if within {
        format!(
            "SELECT {RUN_COLS} FROM ({} ORDER BY seq DESC LIMIT ?6) AS w JOIN runs r ON r.seq = w.seq
             WHERE {LIST_FILTERS} ORDER BY w.seq DESC LIMIT ?5",
            ranges("seq", "1", "?6"),
        )
    } else {
        format!(
            "SELECT {RUN_COLS} FROM ({}) AS listed ORDER BY seq DESC LIMIT ?5",
            ranges("*", LIST_FILTERS, "?5")
        )
    }
}

/// [`list_runs_sql`] for each mode filter (`None`: both) and with a window or without one.
static LIST_RUNS: std::sync::LazyLock<[[String; 2]; 3]> = std::sync::LazyLock::new(|| {
    MODE_FILTERS.map(|modes| [false, true].map(|w| list_runs_sql(modes, w)))
});

/// The statement of [`LIST_RUNS`] for this filter.
fn list_runs_statement(filter: &RunFilter) -> &'static str {
    &LIST_RUNS[mode_filter_index(filter.test)][usize::from(filter.within.is_some())]
}

/// Every statement that lists an account's runs or finds a window's end, for the test of their
/// plans.
#[cfg(test)]
pub(crate) fn run_listing_statements() -> Vec<&'static str> {
    let mut all: Vec<&'static str> = LIST_RUNS.iter().flatten().map(String::as_str).collect();
    all.extend(WINDOW_END.iter().map(String::as_str));
    all
}

/// The id of account `?1`'s run `?3 + 1` places before run `?2` (or before its newest run), newest
/// first, counting the runs of the modes `modes`: each mode's range of `runs_by_account` (whose
/// entries hold `seq`) walked from the cursor and merged, then the row read by its `seq`, the
/// table's key.
fn window_end_sql(modes: &[bool]) -> String {
    let ranges = modes
        .iter()
        .map(|&test| {
            format!(
                "SELECT seq FROM (SELECT seq FROM runs WHERE account_id = ?1 AND test = {}
                   AND seq < coalesce((SELECT seq FROM runs WHERE id = ?2 AND account_id = ?1), 9223372036854775807)
                 ORDER BY seq DESC LIMIT ?3 + 1)",
                i32::from(test)
            )
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!(
        "SELECT id FROM runs WHERE seq = (
             SELECT seq FROM ({ranges}) ORDER BY seq DESC LIMIT 1 OFFSET ?3)"
    )
}

/// [`window_end_sql`] for each mode filter, by [`mode_filter_index`].
static WINDOW_END: std::sync::LazyLock<[String; 3]> =
    std::sync::LazyLock::new(|| MODE_FILTERS.map(window_end_sql));

#[async_trait]
impl Store for SqliteStore {
    async fn create_account_with(
        &self,
        new: NewAccount,
        now: Timestamp,
    ) -> Result<Account, StoreError> {
        let id = ids::new_account_id();
        let email = new.email.clone();
        let created = self
            .write(move |conn| {
                // The first account of an empty install is its administrator.
                match conn
                    .prepare_cached(&format!(
                        "INSERT INTO accounts (id, email, created_at, password_hash, admin)
                         VALUES (?1, ?2, ?3, ?4, ?5 OR NOT EXISTS (SELECT 1 FROM accounts))
                         RETURNING {ACCOUNT_COLS}"
                    ))?
                    .query_row(
                        params![id, new.email, now.0, new.password_hash, new.admin],
                        rows::account,
                    ) {
                    Ok(mut a) => {
                        if new.signup_credit > Millicents::ZERO {
                            let line = append_ledger(
                                conn,
                                LedgerLine {
                                    account_id: &a.id,
                                    kind: LedgerKind::Topup,
                                    amount: new.signup_credit,
                                    run_id: None,
                                    key_id: None,
                                    memo: WELCOME_CREDIT_MEMO,
                                    granted_by: None,
                                    now,
                                },
                            )?;
                            a.balance = line.balance_after;
                        }
                        Ok(Some(a))
                    }
                    Err(e) if is_unique_violation(&e) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        created.ok_or_else(|| {
            StoreError::Conflict(format!("an account with email {email} already exists"))
        })
    }

    async fn account_by_email(&self, email: &str) -> Result<Option<Account>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE email = ?1"
            ))?
            .query_row([email], rows::account)
            .optional()
        })
    }

    async fn list_accounts(&self) -> Result<Vec<Account>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLS} FROM accounts ORDER BY created_at, id"
            ))?
            .query_map([], rows::account)?
            .collect()
        })
    }

    async fn set_admin(&self, account_id: &str, admin: bool) -> Result<Account, StoreError> {
        let id = account_id.to_owned();
        // One write (the writer is the only one): the role is taken away only while another
        // account keeps it.
        let (updated, exists) = self
            .write(move |c| {
                let updated = c
                    .prepare_cached(&format!(
                        "UPDATE accounts SET admin = ?2 WHERE id = ?1 \
                         AND (?2 OR NOT admin OR EXISTS (SELECT 1 FROM accounts WHERE admin AND id <> ?1)) \
                         RETURNING {ACCOUNT_COLS}"
                    ))?
                    .query_row(params![id, admin], rows::account)
                    .optional()?;
                let exists = updated.is_some()
                    || c.prepare_cached("SELECT 1 FROM accounts WHERE id = ?1")?
                        .exists([&id])?;
                Ok((updated, exists))
            })
            .await?;
        match updated {
            Some(account) => Ok(account),
            None if exists => Err(StoreError::Conflict(LAST_ADMIN.into())),
            None => Err(StoreError::NotFound(format!("no account {account_id}"))),
        }
    }

    async fn account(&self, id: &str) -> Result<Option<Account>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"
            ))?
            .query_row([id], rows::account)
            .optional()
        })
    }

    async fn add_credits(
        &self,
        account_id: &str,
        amount: Millicents,
        memo: &str,
        granted_by: Option<&str>,
        now: Timestamp,
    ) -> Result<LedgerEntry, StoreError> {
        let (account_id, memo) = (account_id.to_owned(), memo.to_owned());
        let granted_by = granted_by.map(str::to_owned);
        let entry = self
            .write(move |c| {
                // A balance past `Millicents::MAX_BALANCE` could not be shown exactly on the wire
                // (and past i64, SQLite would turn the sum into a REAL the column refuses): refuse
                // it here, in the writing transaction, as the client error it is.
                let balance: Option<i64> = c
                    .prepare_cached("SELECT balance_millicents FROM accounts WHERE id = ?1")?
                    .query_row([&account_id], |r| r.get(0))
                    .optional()?;
                if balance.is_some_and(|b| {
                    b.checked_add(amount.0)
                        .is_none_or(|n| n > Millicents::MAX_BALANCE.0)
                }) {
                    return Ok(None);
                }
                if amount > Millicents::ZERO {
                    mark_credited(c, &account_id)?;
                }
                append_ledger(
                    c,
                    LedgerLine {
                        account_id: &account_id,
                        kind: LedgerKind::Topup,
                        amount,
                        run_id: None,
                        key_id: None,
                        memo: &memo,
                        granted_by: granted_by.as_deref(),
                        now,
                    },
                )
                .map(Some)
            })
            .await?;
        entry.ok_or_else(|| {
            StoreError::Conflict(
                "the balance would pass the largest amount Runbase can hold".to_owned(),
            )
        })
    }

    async fn run_ledger(
        &self,
        account_id: &str,
        run_id: &str,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {LEDGER_COLS} FROM ledger {RUN_LEDGER_WHERE}"
            ))?
            .query_map([run_id, account_id], rows::ledger)?
            .collect()
        })
    }

    async fn password_hash(&self, account_id: &str) -> Result<Option<String>, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT password_hash FROM accounts WHERE id = ?1")?
                .query_row([account_id], |r| r.get::<_, Option<String>>(0))
                .optional()
                .map(Option::flatten)
        })
    }

    async fn set_password_hash(
        &self,
        account_id: &str,
        phc: &str,
        keep_session: Option<&str>,
    ) -> Result<(), StoreError> {
        let (account_id, phc) = (account_id.to_owned(), phc.to_owned());
        let keep = keep_session.map(str::to_owned);
        self.write(move |c| {
            crate::dashboard::set_password_tx(c, &account_id, &phc, keep.as_deref())
        })
        .await
    }

    async fn create_session(&self, session: &Session) -> Result<(), StoreError> {
        let session = session.clone();
        self.write(move |c| crate::dashboard::create_session_tx(c, &session))
            .await
    }

    async fn session(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<(Session, Account)>, StoreError> {
        self.read(|c| crate::dashboard::session(c, token_hash, now))
    }

    async fn delete_session(&self, token_hash: &str) -> Result<(), StoreError> {
        let token_hash = token_hash.to_owned();
        self.write(move |c| {
            c.execute("DELETE FROM sessions WHERE token_hash = ?1", [&token_hash])
                .map(|_| ())
        })
        .await
    }

    async fn account_by_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<Account>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLS} FROM accounts WHERE id =
                   (SELECT account_id FROM oidc_identities WHERE issuer = ?1 AND subject = ?2)"
            ))?
            .query_row([issuer, subject], rows::account)
            .optional()
        })
    }

    async fn put_pending_sign_in(
        &self,
        p: &PendingSignIn,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let p = p.clone();
        self.write(move |c| {
            c.execute("DELETE FROM oidc_pending WHERE expires_at <= ?1", [now.0])?;
            c.execute(
                "INSERT INTO oidc_pending
                   (state_hash, provider, binding_hash, verifier, nonce, next_path, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    p.state_hash,
                    p.provider,
                    p.binding_hash,
                    p.verifier,
                    p.nonce,
                    p.next,
                    p.expires_at.0
                ],
            )
            .map(|_| ())
        })
        .await
    }

    async fn take_pending_sign_in(
        &self,
        state_hash: &str,
    ) -> Result<Option<PendingSignIn>, StoreError> {
        let state_hash = state_hash.to_owned();
        self.write(move |c| {
            c.query_row(
                "DELETE FROM oidc_pending WHERE state_hash = ?1
                 RETURNING state_hash, provider, binding_hash, verifier, nonce, next_path, expires_at",
                [&state_hash],
                |r| {
                    Ok(PendingSignIn {
                        state_hash: r.get(0)?,
                        provider: r.get(1)?,
                        binding_hash: r.get(2)?,
                        verifier: r.get(3)?,
                        nonce: r.get(4)?,
                        next: r.get(5)?,
                        expires_at: Timestamp(r.get(6)?),
                    })
                },
            )
            .optional()
        })
        .await
    }

    async fn link_identity(
        &self,
        issuer: &str,
        subject: &str,
        account_id: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (issuer, subject, account_id) =
            (issuer.to_owned(), subject.to_owned(), account_id.to_owned());
        let linked = self
            .write(move |c| {
                match c.execute(
                    "INSERT INTO oidc_identities (issuer, subject, account_id, created_at)
                     VALUES (?1, ?2, ?3, ?4)",
                    params![issuer, subject, account_id, now.0],
                ) {
                    Ok(_) => Ok(true),
                    Err(e) if is_unique_violation(&e) => Ok(false),
                    Err(e) => Err(e),
                }
            })
            .await?;
        if linked {
            Ok(())
        } else {
            Err(StoreError::Conflict(
                "this identity is already linked to an account".into(),
            ))
        }
    }

    async fn create_payment(
        &self,
        provider: &str,
        checkout_id: &str,
        account_id: &str,
        amount: Millicents,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (provider, checkout_id, account_id) = (
            provider.to_owned(),
            checkout_id.to_owned(),
            account_id.to_owned(),
        );
        self.write(move |c| {
            c.execute(
                "INSERT INTO payments (provider, checkout_id, account_id, amount_millicents, status, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
                params![provider, checkout_id, account_id, amount.0, now.0],
            )
            .map(|_| ())
        })
        .await
    }

    async fn complete_payment(
        &self,
        provider: &str,
        event_id: &str,
        checkout_id: &str,
        account_id: Option<&str>,
        amount: Millicents,
        now: Timestamp,
    ) -> Result<PaymentCredit, StoreError> {
        let p = crate::dashboard::Confirmation {
            provider: provider.to_owned(),
            event_id: event_id.to_owned(),
            checkout_id: checkout_id.to_owned(),
            account_id: account_id.map(str::to_owned),
            amount,
            now,
        };
        self.write(move |c| crate::dashboard::complete_payment_tx(c, &p))
            .await
    }

    async fn ledger(
        &self,
        account_id: &str,
        limit: u32,
        before: Option<i64>,
    ) -> Result<Vec<LedgerEntry>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {LEDGER_COLS} FROM ledger WHERE account_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3"
            ))?
            .query_map(params![account_id, before.unwrap_or(i64::MAX), limit], rows::ledger)?
            .collect()
        })
    }

    async fn create_key(
        &self,
        account_id: &str,
        id: &str,
        hash: &KeyHash,
        prefix: &str,
        settings: &KeySettings,
        now: Timestamp,
    ) -> Result<ApiKey, StoreError> {
        let ips = serde_json::to_string(&settings.allow_ips.to_strings()).map_err(backend)?;
        let (account_id, id, hash, prefix, s) = (
            account_id.to_owned(),
            id.to_owned(),
            hash.0.clone(),
            prefix.to_owned(),
            settings.clone(),
        );
        let id2 = id.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO api_keys (id, account_id, name, prefix, hash, test, expires_at, allow_ips,
                     spend_limit_millicents, quota, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    id,
                    account_id,
                    s.name.unwrap_or_default(),
                    prefix,
                    hash,
                    s.test,
                    s.expires_at.map(|t| t.0),
                    ips,
                    s.spend_limit.map(|m| m.0),
                    s.quota.map(|q| q.min(i64::MAX as u64) as i64),
                    now.0
                ],
            )
        })
        .await?;
        self.key_by_id(&id2)
            .await?
            .ok_or_else(|| backend("key vanished after insert"))
    }

    async fn key_by_hash(&self, hash: &KeyHash) -> Result<Option<ApiKey>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {KEY_COLS} FROM api_keys WHERE hash = ?1"))?
                .query_row([&hash.0], rows::api_key)
                .optional()
        })
    }

    async fn key_by_id(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.read(|c| key_by_id(c, id))
    }

    async fn list_keys(&self, account_id: &str) -> Result<Vec<ApiKey>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {KEY_COLS} FROM api_keys WHERE account_id = ?1 AND deleted_at IS NULL ORDER BY created_at DESC, id"
            ))?
            .query_map([account_id], rows::api_key)?
            .collect()
        })
    }

    async fn update_key(&self, id: &str, update: &KeyUpdate) -> Result<ApiKey, StoreError> {
        let ips = match &update.allow_ips {
            Some(l) => Some(serde_json::to_string(&l.to_strings()).map_err(backend)?),
            None => None,
        };
        let (id, u) = (id.to_owned(), update.clone());
        let updated = self
            .write(move |c| {
                let exists: bool = c
                    .query_row(
                        "SELECT 1 FROM api_keys WHERE id = ?1 AND deleted_at IS NULL",
                        [&id],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some();
                if !exists {
                    return Ok(None);
                }
                if let Some(name) = &u.name {
                    c.execute(
                        "UPDATE api_keys SET name = ?2 WHERE id = ?1",
                        params![id, name],
                    )?;
                }
                if let Some(limit) = u.spend_limit {
                    c.execute(
                        "UPDATE api_keys SET spend_limit_millicents = ?2 WHERE id = ?1",
                        params![id, limit.map(|m| m.0)],
                    )?;
                }
                if let Some(ips) = &ips {
                    c.execute(
                        "UPDATE api_keys SET allow_ips = ?2 WHERE id = ?1",
                        params![id, ips],
                    )?;
                }
                if let Some(exp) = u.expires_at {
                    c.execute(
                        "UPDATE api_keys SET expires_at = ?2 WHERE id = ?1",
                        params![id, exp.map(|t| t.0)],
                    )?;
                }
                if let Some(q) = u.quota {
                    c.execute(
                        "UPDATE api_keys SET quota = ?2 WHERE id = ?1",
                        params![id, q.map(|q| q.min(i64::MAX as u64) as i64)],
                    )?;
                }
                if let Some(d) = u.disabled {
                    c.execute(
                        "UPDATE api_keys SET disabled = ?2 WHERE id = ?1",
                        params![id, d],
                    )?;
                }
                key_by_id(c, &id)
            })
            .await?;
        updated.ok_or_else(|| StoreError::NotFound("no such key".into()))
    }

    async fn touch_key(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.write_one(move |c| {
            c.prepare_cached("UPDATE api_keys SET last_used_at = max(coalesce(last_used_at, 0), ?2) WHERE id = ?1")?
                .execute(params![id, now.0])
                .map(|_| ())
        })
        .await
    }

    async fn delete_key(&self, id: &str, now: Timestamp) -> Result<(), StoreError> {
        let id = id.to_owned();
        let n = self
            .write(move |c| {
                c.execute(
                    "UPDATE api_keys SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
                    params![id, now.0],
                )
            })
            .await?;
        if n == 0 {
            return Err(StoreError::NotFound("no such key".into()));
        }
        Ok(())
    }

    async fn create_upload(
        &self,
        upload: &Upload,
        quota: &UploadQuota,
    ) -> Result<(), runbase_domain::store::CreateUploadError> {
        let (u, quota) = (upload.clone(), *quota);
        let out_of_range = || StoreError::Backend("upload size out of range".into());
        let size = i64::try_from(u.size_bytes).map_err(|_| out_of_range())?;
        let file_bytes = upload.size_bytes;
        let fits = move |used: u64, limit: Option<u64>| {
            limit.is_none_or(|l| used.saturating_add(file_bytes) <= l)
        };
        // On the writer thread: the reads of the usage and the writes after them are atomic
        // with respect to every other upload.
        let refused = self
            .write(move |c| {
                let usage = upload_usage(c, &u.account_id)?;
                let uncredited = !usage.credited;
                if !fits(usage.account_bytes, quota.for_account(usage.credited))
                    || (uncredited
                        && !fits(usage.uncredited_total_bytes, quota.uncredited_total_bytes))
                {
                    return Ok(Some(usage));
                }
                c.prepare_cached(
                    "INSERT INTO uploads (id, account_id, path, content_type, size_bytes, created_at, uncredited)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![
                    u.id,
                    u.account_id,
                    u.path,
                    u.content_type,
                    size,
                    u.created_at.0,
                    uncredited
                ])?;
                c.prepare_cached(
                    "INSERT INTO upload_usage (account_id, bytes) VALUES (?1, ?2)
                     ON CONFLICT (account_id) DO UPDATE SET bytes = bytes + excluded.bytes",
                )?
                .execute(params![u.account_id, size])?;
                if uncredited {
                    c.prepare_cached(
                        "UPDATE uncredited_upload_usage SET bytes = bytes + ?1 WHERE id = 1",
                    )?
                    .execute([size])?;
                }
                Ok(None)
            })
            .await?;
        match refused {
            None => Ok(()),
            Some(usage) => Err(runbase_domain::store::CreateUploadError::OverQuota { usage }),
        }
    }

    async fn webhook_secrets(
        &self,
        account_id: &str,
        fresh: &str,
        now: Timestamp,
    ) -> Result<runbase_domain::webhooks::Secrets, StoreError> {
        let (account_id, fresh) = (account_id.to_owned(), fresh.to_owned());
        self.write(move |c| crate::webhooks::secrets(c, &account_id, &fresh, now))
            .await
    }

    async fn rotate_webhook_secret(
        &self,
        account_id: &str,
        fresh: &str,
        now: Timestamp,
        previous_until: Timestamp,
    ) -> Result<runbase_domain::webhooks::Secrets, StoreError> {
        let (account_id, fresh) = (account_id.to_owned(), fresh.to_owned());
        self.write_one(move |c| {
            crate::webhooks::rotate(c, &account_id, &fresh, now, previous_until)
        })
        .await
    }

    async fn claim_deliveries(
        &self,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
        skip_accounts: &[String],
    ) -> Result<Vec<runbase_domain::webhooks::DueDelivery>, StoreError> {
        let skip =
            serde_json::to_string(skip_accounts).map_err(|e| StoreError::Backend(e.to_string()))?;
        self.write_one(move |c| crate::webhooks::claim(c, max, now, lease_until, &skip))
            .await
    }

    async fn record_delivery_attempt(
        &self,
        result: &runbase_domain::webhooks::AttemptResult,
    ) -> Result<(), StoreError> {
        let result = result.clone();
        self.write(move |c| crate::webhooks::record(c, &result))
            .await
    }

    async fn run_deliveries(
        &self,
        account_id: &str,
        run_id: &str,
    ) -> Result<Option<Vec<runbase_domain::webhooks::Delivery>>, StoreError> {
        self.read(|c| crate::webhooks::run_deliveries(c, account_id, run_id))
    }

    async fn sweep_webhook_deliveries(
        &self,
        before: Timestamp,
        max: u32,
    ) -> Result<u64, StoreError> {
        self.write(move |c| crate::webhooks::sweep(c, before, max))
            .await
    }

    async fn redeliver(
        &self,
        account_id: &str,
        run_id: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let (account_id, run_id, id) = (account_id.to_owned(), run_id.to_owned(), id.to_owned());
        self.write(move |c| crate::webhooks::redeliver(c, &account_id, &run_id, &id, now))
            .await?
            .ok_or_else(|| StoreError::NotFound("run not found".into()))
    }

    async fn queue_depth(&self) -> Result<(u64, u64), StoreError> {
        // Each count walks its partial index (`runs_queued`, `runs_leases`).
        let (pending, processing): (i64, i64) = self.read(|c| {
            c.prepare_cached(
                "SELECT (SELECT count(*) FROM runs WHERE status = 'pending'),
                        (SELECT count(*) FROM runs WHERE status = 'processing')",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        })?;
        Ok((pending.max(0) as u64, processing.max(0) as u64))
    }

    async fn upload(&self, id: &str) -> Result<Option<Upload>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!("SELECT {UPLOAD_COLS} FROM uploads WHERE id = ?1"))?
                .query_row([id], rows::upload)
                .optional()
        })
    }

    async fn upload_usage(&self, account_id: &str) -> Result<UploadUsage, StoreError> {
        let account_id = account_id.to_owned();
        self.read(move |c| upload_usage(c, &account_id))
    }

    async fn claim_expired_uploads(
        &self,
        before: Timestamp,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<Upload>, StoreError> {
        self.write_one(move |c| {
            c.prepare_cached(&format!(
                "UPDATE uploads SET deleting_until = ?4
                 WHERE id IN (SELECT id FROM uploads
                              WHERE created_at < ?1 AND (deleting_until IS NULL OR deleting_until < ?3)
                              ORDER BY created_at LIMIT ?2)
                 RETURNING {UPLOAD_COLS}"
            ))?
            .query_map(params![before.0, max, now.0, lease_until.0], rows::upload)?
            .collect::<Result<Vec<_>, _>>()
            .map(|mut uploads| {
                // RETURNING gives no order guarantee; oldest first.
                uploads.sort_by_key(|u| u.created_at);
                uploads
            })
        })
        .await
    }

    async fn delete_upload(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_owned();
        self.write(move |c| {
            let removed: Option<(String, i64, bool)> = c
                .prepare_cached(
                    "DELETE FROM uploads WHERE id = ?1 RETURNING account_id, size_bytes, uncredited",
                )?
                .query_row([&id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()?;
            let Some((account_id, size, uncredited)) = removed else {
                return Ok(false);
            };
            c.prepare_cached("UPDATE upload_usage SET bytes = bytes - ?2 WHERE account_id = ?1")?
                .execute(params![account_id, size])?;
            if uncredited {
                c.prepare_cached("UPDATE uncredited_upload_usage SET bytes = bytes - ?1 WHERE id = 1")?
                    .execute([size])?;
            }
            Ok(true)
        })
        .await
    }

    async fn idempotency_record(
        &self,
        account_id: &str,
        key: &str,
        expired_before: Timestamp,
    ) -> Result<Option<runbase_domain::idempotency::Record>, StoreError> {
        let (account_id, key) = (account_id.to_owned(), key.to_owned());
        self.read(move |c| crate::idempotency::read_record(c, &account_id, &key, expired_before.0))
    }

    fn claims_keys_in_creates(&self) -> bool {
        true
    }

    async fn claim_idempotency_key(&self, claim: &NewClaim) -> Result<ClaimOutcome, StoreError> {
        let claim = claim.clone();
        self.write_one(move |c| crate::idempotency::claim(c, &claim))
            .await
    }

    async fn settle_idempotency_key(&self, claim: &Claim, how: &Settle) -> Result<(), StoreError> {
        let (claim, how) = (claim.clone(), how.clone());
        self.write_one(move |c| crate::idempotency::settle(c, &claim, &how))
            .await
    }

    async fn sweep_idempotency_keys(
        &self,
        expired_before: Timestamp,
        max: u32,
    ) -> Result<u64, StoreError> {
        self.write_one(move |c| crate::idempotency::sweep(c, expired_before.0, max))
            .await
    }

    fn hand_off_to(&self, handoff: runbase_domain::store::Handoff) {
        // The first worker of this process; a second one (tests) only claims.
        let _ = self.handoff.set(handoff);
    }

    async fn create_run(&self, run: NewRun) -> Result<Run, CreateRunError> {
        // The writer wakes the worker for a run queued for a claim (one handed to the worker in
        // its create needs none).
        self.create(run).await
    }

    async fn get_run(&self, account_id: &str, run_id: &str) -> Result<Option<Run>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {RUN_COLS} FROM runs WHERE id = ?1 AND account_id = ?2"
            ))?
            .query_row([run_id, account_id], rows::run)
            .optional()
        })
    }

    async fn list_runs(
        &self,
        account_id: &str,
        filter: &RunFilter,
        limit: u32,
        starting_after: Option<&str>,
    ) -> Result<Vec<Run>, StoreError> {
        let status = filter.status.map(|s| s.as_str());
        let model = filter.model.as_deref();
        self.read(|c| {
            // `seq < (the cursor's seq)`, or no bound without a cursor; the optional filters
            // compare against NULL when unset. With a window, the filters are applied to the
            // account's next `within` runs only: the same walk of the account's index as the
            // unfiltered list, stopped by its own LIMIT.
            let sql = list_runs_statement(filter);
            match filter.within {
                None => c
                    .prepare_cached(sql)?
                    .query_map(
                        params![account_id, status, model, starting_after, limit],
                        rows::run,
                    )?
                    .collect(),
                Some(within) => c
                    .prepare_cached(sql)?
                    .query_map(
                        params![account_id, status, model, starting_after, limit, within],
                        rows::run,
                    )?
                    .collect(),
            }
        })
    }

    async fn run_before(
        &self,
        account_id: &str,
        test: Option<bool>,
        starting_after: Option<&str>,
        skip: u32,
    ) -> Result<Option<String>, StoreError> {
        if skip == 0 {
            return Ok(None);
        }
        self.read(|c| {
            c.prepare_cached(&WINDOW_END[mode_filter_index(test)])?
                .query_row(params![account_id, starting_after, skip - 1], |r| r.get(0))
                .optional()
        })
    }

    async fn claim_runs(
        &self,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Vec<Run>, StoreError> {
        self.write_one(move |c| {
            c.prepare_cached(&format!(
                "UPDATE runs SET status = 'processing', started_at = ?2, attempts = attempts + 1, locked_until = ?3
                 WHERE seq IN (SELECT seq FROM runs WHERE status = 'pending' ORDER BY seq LIMIT ?1)
                 RETURNING {RUN_COLS}"
            ))?
            .query_map(params![max, now.0, lease_until.0], rows::run)?
            .collect::<Result<Vec<_>, _>>()
            .map(|mut runs| {
                // RETURNING gives no order guarantee; hand runs out oldest first.
                runs.sort_by_key(|r| r.created_at);
                runs
            })
        })
        .await
        .inspect(|runs| self.announce(runs.iter().map(|r| r.id.as_str())))
    }

    async fn renew_leases(
        &self,
        runs: &[(String, u32)],
        until: Timestamp,
    ) -> Result<Vec<String>, StoreError> {
        let runs = runs.to_vec();
        self.write_one(move |c| {
            let mut renew = c.prepare_cached(
                "UPDATE runs SET locked_until = ?3 WHERE id = ?1 AND attempts = ?2 AND status = 'processing'",
            )?;
            let mut lost = Vec::new();
            for (id, attempt) in runs {
                if renew.execute(params![id, attempt, until.0])? == 0 {
                    lost.push(id);
                }
            }
            Ok(lost)
        })
        .await
    }

    async fn release_run(&self, run_id: &str, attempt: u32) -> Result<bool, StoreError> {
        let id = run_id.to_owned();
        let released = self
            .write_one(move |c| {
                c.prepare_cached(
                    "UPDATE runs SET status = 'pending', started_at = NULL, locked_until = NULL,
                     put_backs = put_backs + 1
                     WHERE id = ?1 AND attempts = ?2 AND status = 'processing'",
                )?
                .execute(params![id, attempt])
                .map(|n| n == 1)
            })
            .await?;
        if released {
            self.announce([run_id]);
            self.queue_signal.notify_one();
        }
        Ok(released)
    }

    async fn reclaim_expired(
        &self,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        let reclaimed = self
            .write(move |c| {
                let expired: Vec<(String, i64, i64)> = c
                    .prepare_cached(
                        "SELECT id, attempts, put_backs FROM runs WHERE status = 'processing' AND locked_until < ?1",
                    )?
                    .query_map([now.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                requeue_or_fail(c, expired, max_attempts, now)
            })
            .await?;
        let (reclaimed, ids) = reclaimed;
        self.announce(ids.iter().map(String::as_str));
        if reclaimed.0 > 0 {
            self.queue_signal.notify_one();
        }
        Ok(reclaimed)
    }

    async fn finish_run(
        &self,
        run_id: &str,
        attempt: u32,
        outcome: RunOutcome,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let id = run_id.to_owned();
        match outcome {
            // With the batch's other successes, one statement per chunk (`success_batch`); the
            // output is serialized here rather than on the writer thread.
            RunOutcome::Succeeded { output } => {
                self.succeed(id, attempt, output.to_string(), now).await?;
            }
            RunOutcome::Failed { error } => {
                self.write(move |c| fail_tx(c, &id, attempt, &error, now))
                    .await?;
            }
        }
        self.announce([run_id]);
        Ok(())
    }

    async fn cancel_run(
        &self,
        account_id: &str,
        run_id: &str,
        now: Timestamp,
    ) -> Result<Option<Run>, StoreError> {
        let (account_id, id) = (account_id.to_owned(), run_id.to_owned());
        let run = self
            .write(move |c| cancel_tx(c, &account_id, &id, now))
            .await?;
        if run.is_some() {
            self.announce([run_id]);
        }
        Ok(run)
    }

    async fn recover_interrupted(
        &self,
        max_attempts: u32,
        now: Timestamp,
    ) -> Result<(u64, u64), StoreError> {
        let recovered = self
            .write(move |c| {
                let interrupted: Vec<(String, i64, i64)> = c
                    .prepare(
                        "SELECT id, attempts, put_backs FROM runs WHERE status = 'processing'",
                    )?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<Result<_, _>>()?;
                requeue_or_fail(c, interrupted, max_attempts, now)
            })
            .await?;
        let (recovered, ids) = recovered;
        self.announce(ids.iter().map(String::as_str));
        if recovered.0 > 0 {
            self.queue_signal.notify_one();
        }
        Ok(recovered)
    }

    fn queue_signal(&self) -> Arc<tokio::sync::Notify> {
        self.queue_signal.clone()
    }

    fn run_changes(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.run_changes.subscribe()
    }
}

//! Webhook secrets, the delivery outbox and its log on SQLite. The outbox rows themselves are
//! inserted by triggers on `runs` (migrations/0009_webhooks.sql), in the status change's
//! transaction.

use runbase_domain::time::Timestamp;
use runbase_domain::webhooks::{Attempt, AttemptResult, Delivery, DueDelivery, Secrets};
use rusqlite::{Connection, OptionalExtension, params};

fn secrets_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Secrets> {
    Ok(Secrets {
        current: r.get(0)?,
        previous: r.get(1)?,
        previous_until: r.get::<_, Option<i64>>(2)?.map(Timestamp),
        created_at: Timestamp(r.get(3)?),
    })
}

const SECRET_COLS: &str = "secret, previous_secret, previous_until, created_at";

pub(crate) fn secrets(
    c: &Connection,
    account_id: &str,
    fresh: &str,
    now: Timestamp,
) -> rusqlite::Result<Secrets> {
    c.prepare_cached(
        "INSERT INTO webhook_secrets (account_id, secret, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (account_id) DO NOTHING",
    )?
    .execute(params![account_id, fresh, now.0])?;
    c.prepare_cached(&format!(
        "SELECT {SECRET_COLS} FROM webhook_secrets WHERE account_id = ?1"
    ))?
    .query_row([account_id], secrets_row)
}

pub(crate) fn rotate(
    c: &Connection,
    account_id: &str,
    fresh: &str,
    now: Timestamp,
    previous_until: Timestamp,
) -> rusqlite::Result<Secrets> {
    c.prepare_cached(&format!(
        "INSERT INTO webhook_secrets (account_id, secret, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (account_id) DO UPDATE SET
             previous_secret = webhook_secrets.secret, previous_until = ?4,
             secret = excluded.secret, created_at = excluded.created_at
         RETURNING {SECRET_COLS}"
    ))?
    .query_row(
        params![account_id, fresh, now.0, previous_until.0],
        secrets_row,
    )
}

pub(crate) fn claim(
    c: &Connection,
    max: u32,
    now: Timestamp,
    lease_until: Timestamp,
    skip_accounts_json: &str,
) -> rusqlite::Result<Vec<DueDelivery>> {
    let mut due: Vec<DueDelivery> = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET locked_until = ?3
             WHERE seq IN (SELECT seq FROM webhook_deliveries
                           WHERE status = 'pending' AND next_attempt_at <= ?2
                             AND (locked_until IS NULL OR locked_until < ?2)
                             AND account_id NOT IN (SELECT value FROM json_each(?4))
                           ORDER BY next_attempt_at LIMIT ?1)
             RETURNING id, run_id, account_id, event, url, attempts, created_at",
        )?
        .query_map(
            params![max, now.0, lease_until.0, skip_accounts_json],
            |r| {
                Ok(DueDelivery {
                    id: r.get(0)?,
                    run_id: r.get(1)?,
                    account_id: r.get(2)?,
                    event: r.get(3)?,
                    url: r.get(4)?,
                    attempts: r.get(5)?,
                    created_at: Timestamp(r.get(6)?),
                })
            },
        )?
        .collect::<Result<_, _>>()?;
    due.sort_by_key(|d| d.created_at);
    Ok(due)
}

pub(crate) fn record(c: &Connection, a: &AttemptResult) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO webhook_attempts (delivery_id, attempt, at, http_status, latency_ms, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        a.delivery_id,
        a.attempt,
        a.at.0,
        a.http_status,
        i64::try_from(a.latency_ms).unwrap_or(i64::MAX),
        a.error,
    ])?;
    let status = if a.delivered() {
        "delivered"
    } else if a.next_attempt_at.is_some() {
        "pending"
    } else {
        "failed"
    };
    c.prepare_cached(
        "UPDATE webhook_deliveries SET status = ?2, attempts = ?3, next_attempt_at = ?4, locked_until = NULL
         WHERE id = ?1 AND status = 'pending'",
    )?
    .execute(params![
        a.delivery_id,
        status,
        a.attempt,
        a.next_attempt_at.map(|t| t.0)
    ])?;
    Ok(())
}

pub(crate) fn run_deliveries(
    c: &Connection,
    account_id: &str,
    run_id: &str,
) -> rusqlite::Result<Option<Vec<Delivery>>> {
    let exists = c
        .prepare_cached("SELECT 1 FROM runs WHERE id = ?1 AND account_id = ?2")?
        .query_row([run_id, account_id], |_| Ok(()))
        .optional()?;
    if exists.is_none() {
        return Ok(None);
    }
    let mut deliveries: Vec<Delivery> = c
        .prepare_cached(
            "SELECT id, event, status, url, created_at, next_attempt_at FROM webhook_deliveries
             WHERE run_id = ?1 AND account_id = ?2 ORDER BY seq",
        )?
        .query_map([run_id, account_id], |r| {
            let status: String = r.get(2)?;
            Ok(Delivery {
                id: r.get(0)?,
                event: r.get(1)?,
                next_attempt_at: if status == "pending" {
                    r.get::<_, Option<i64>>(5)?.map(Timestamp)
                } else {
                    None
                },
                status,
                url: r.get(3)?,
                created_at: Timestamp(r.get(4)?),
                attempts: Vec::new(),
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut attempts = c.prepare_cached(
        "SELECT attempt, at, http_status, latency_ms, error FROM webhook_attempts
         WHERE delivery_id = ?1 ORDER BY attempt",
    )?;
    for d in &mut deliveries {
        d.attempts = attempts
            .query_map([&d.id], |r| {
                Ok(Attempt {
                    attempt: r.get(0)?,
                    at: Timestamp(r.get(1)?),
                    http_status: r.get(2)?,
                    latency_ms: r.get::<_, i64>(3)?.max(0) as u64,
                    error: r.get(4)?,
                })
            })?
            .collect::<Result<_, _>>()?;
    }
    Ok(Some(deliveries))
}

/// `None`: no such run of the account; `Some(false)`: nothing to redeliver.
pub(crate) fn redeliver(
    c: &Connection,
    account_id: &str,
    run_id: &str,
    id: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<bool>> {
    let run: Option<(Option<String>, String)> = c
        .prepare_cached("SELECT webhook, status FROM runs WHERE id = ?1 AND account_id = ?2")?
        .query_row([run_id, account_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((webhook, status)) = run else {
        return Ok(None);
    };
    let event = match status.as_str() {
        "pending" => return Ok(Some(false)),
        "processing" => "start",
        _ => "completed",
    };
    let Some(url) = webhook else {
        return Ok(Some(false));
    };
    // A delivery of this event waiting for a retry (pending and not being sent right now) is
    // made due now instead: however often one clicks, a run has at most one such delivery
    // waiting. One being sent may fail and wait an hour: a click then queues a new one.
    let hurried = c
        .prepare_cached(
            "UPDATE webhook_deliveries SET next_attempt_at = MIN(COALESCE(next_attempt_at, ?3), ?3)
             WHERE run_id = ?1 AND account_id = ?2 AND status = 'pending' AND event = ?4
               AND (locked_until IS NULL OR locked_until <= ?3)",
        )?
        .execute(params![run_id, account_id, now.0, event])?;
    if hurried > 0 {
        return Ok(Some(true));
    }
    c.prepare_cached(
        "INSERT INTO webhook_deliveries (id, run_id, account_id, event, url, created_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
    )?
    .execute(params![id, run_id, account_id, event, url, now.0])?;
    Ok(Some(true))
}

/// See [`runbase_domain::store::Store::sweep_webhook_deliveries`]. Walks the outbox in queue
/// order (`seq`), where the oldest are first, so it stops after `max` finds without an index on
/// the time; both statements pick the same rows (one transaction on the writer).
pub(crate) fn sweep(c: &Connection, before: Timestamp, max: u32) -> rusqlite::Result<u64> {
    const OLD: &str = "SELECT seq FROM webhook_deliveries
         WHERE status <> 'pending' AND created_at < ?1 ORDER BY seq LIMIT ?2";
    c.prepare_cached(&format!(
        "DELETE FROM webhook_attempts WHERE delivery_id IN
           (SELECT id FROM webhook_deliveries WHERE seq IN ({OLD}))"
    ))?
    .execute(params![before.0, max])?;
    c.prepare_cached(&format!(
        "DELETE FROM webhook_deliveries WHERE seq IN ({OLD})"
    ))?
    .execute(params![before.0, max])
    .map(|n| n as u64)
}

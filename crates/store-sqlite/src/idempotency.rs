//! Idempotency keys on SQLite: the claim, its settling and the sweep. Each runs on the writer
//! thread, so a claim's read-then-write is atomic with respect to every other write, the
//! creates that record their `201` included.

use runbase_domain::idempotency::{Answer, Claim, ClaimOutcome, NewClaim, Record, RunMark, Settle};
use rusqlite::{Connection, OptionalExtension, params};

/// See [`runbase_domain::store::Store::claim_idempotency_key`]. Each path changes at most one
/// row with one statement, so it needs no savepoint.
pub(crate) fn claim(c: &Connection, n: &NewClaim) -> rusqlite::Result<ClaimOutcome> {
    let claimed = |run_id: Option<String>, resumed: bool| {
        ClaimOutcome::Claimed(Claim {
            account_id: n.account_id.clone(),
            key: n.key.clone(),
            claimed_at: n.now,
            run_id,
            resumed,
        })
    };
    // Free, or expired: (re)placed by this claim.
    let inserted: Option<Option<String>> = c
        .prepare_cached(
            "INSERT INTO idempotency_keys (account_id, key, fingerprint, run_id, created_at, claimed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (account_id, key) DO UPDATE SET
                 fingerprint = excluded.fingerprint, run_id = excluded.run_id,
                 created_at = excluded.created_at, claimed_at = excluded.claimed_at,
                 status = NULL, body = NULL
             WHERE idempotency_keys.created_at < ?6
             RETURNING run_id",
        )?
        .query_row(
            params![n.account_id, n.key, n.fingerprint, n.run_id, n.now.0, n.expired_before.0],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(run_id) = inserted {
        return Ok(claimed(run_id, false));
    }
    // In flight for the same request, but for too long: its request is taken to have died.
    let taken: Option<Option<String>> = c
        .prepare_cached(
            "UPDATE idempotency_keys SET claimed_at = ?3
             WHERE account_id = ?1 AND key = ?2 AND status IS NULL AND fingerprint = ?4 AND claimed_at < ?5
             RETURNING run_id",
        )?
        .query_row(
            params![n.account_id, n.key, n.now.0, n.fingerprint, n.stale_before.0],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(run_id) = taken {
        return Ok(claimed(run_id, true));
    }
    c.prepare_cached(
        "SELECT fingerprint, status, body FROM idempotency_keys WHERE account_id = ?1 AND key = ?2",
    )?
    .query_row(params![n.account_id, n.key], |r| {
        let status: Option<i64> = r.get(1)?;
        let body: Option<Vec<u8>> = r.get(2)?;
        Ok(ClaimOutcome::Existing(Record {
            fingerprint: r.get(0)?,
            answer: status.map(|s| Answer {
                status: u16::try_from(s).unwrap_or(500),
                body: body.unwrap_or_default(),
            }),
        }))
    })
}

/// See [`runbase_domain::store::Store::settle_idempotency_key`]: one statement.
pub(crate) fn settle(c: &Connection, claim: &Claim, how: &Settle) -> rusqlite::Result<()> {
    const MINE: &str = "account_id = ?1 AND key = ?2 AND claimed_at = ?3 AND status IS NULL";
    let who = params![claim.account_id, claim.key, claim.claimed_at.0];
    match how {
        Settle::Record(answer) => {
            record(c, &claim.account_id, &claim.key, claim.claimed_at.0, answer)
        }
        Settle::Release => c
            .prepare_cached(&format!("DELETE FROM idempotency_keys WHERE {MINE}"))?
            .execute(who)
            .map(|_| ()),
        Settle::Abandon => c
            .prepare_cached(&format!(
                "UPDATE idempotency_keys SET claimed_at = 0 WHERE {MINE}"
            ))?
            .execute(who)
            .map(|_| ()),
    }
}

/// Keeps `answer` under the key, if the claim made at `claimed_at` still holds it.
fn record(
    c: &Connection,
    account_id: &str,
    key: &str,
    claimed_at: i64,
    answer: &Answer,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "UPDATE idempotency_keys SET status = ?4, body = ?5
         WHERE account_id = ?1 AND key = ?2 AND claimed_at = ?3 AND status IS NULL",
    )?
    .execute(params![
        account_id,
        key,
        claimed_at,
        answer.status,
        answer.body
    ])
    .map(|_| ())
}

/// At the start of a create's transaction, for a fresh key: whether a live row has the key
/// already (then the create writes nothing).
pub(crate) fn key_taken(
    c: &Connection,
    account_id: &str,
    mark: &RunMark,
) -> rusqlite::Result<bool> {
    let Some(fresh) = &mark.fresh else {
        return Ok(false);
    };
    c.prepare_cached(
        "SELECT 1 FROM idempotency_keys WHERE account_id = ?1 AND key = ?2 AND created_at >= ?3",
    )?
    .query_row(
        params![account_id, mark.key, fresh.expired_before.0],
        |_| Ok(()),
    )
    .optional()
    .map(|row| row.is_some())
}

/// In a create's transaction: keeps its `201` under the key it was made with. A fresh key's
/// row is written here, with the answer (replacing an expired row: [`key_taken`] saw no live
/// one, on the same writer); a claimed key's row gets the answer if the claim still holds it.
/// `answer` is `Answer::created` of the run as created, serialized by the create's caller; made
/// here if it was not.
pub(crate) fn record_created(
    c: &Connection,
    run: &runbase_domain::run::NewRun,
    mark: &RunMark,
    answer: Option<&Answer>,
) -> rusqlite::Result<()> {
    let made;
    let answer = match answer {
        Some(answer) => answer,
        None => {
            made = Answer::created(&run.pending());
            &made
        }
    };
    let account_id = run.account_id.as_str();
    let Some(fresh) = &mark.fresh else {
        return record(c, account_id, &mark.key, mark.claimed_at.0, answer);
    };
    c.prepare_cached(
        "INSERT OR REPLACE INTO idempotency_keys
             (account_id, key, fingerprint, run_id, created_at, claimed_at, status, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)",
    )?
    .execute(params![
        account_id,
        mark.key,
        fresh.fingerprint,
        run.id,
        mark.claimed_at.0,
        answer.status,
        answer.body
    ])
    .map(|_| ())
}

/// See [`runbase_domain::store::Store::idempotency_record`].
pub(crate) fn read_record(
    c: &Connection,
    account_id: &str,
    key: &str,
    expired_before: i64,
) -> rusqlite::Result<Option<Record>> {
    c.prepare_cached(
        "SELECT fingerprint, status, body FROM idempotency_keys
         WHERE account_id = ?1 AND key = ?2 AND created_at >= ?3",
    )?
    .query_row(params![account_id, key, expired_before], |r| {
        let status: Option<i64> = r.get(1)?;
        let body: Option<Vec<u8>> = r.get(2)?;
        Ok(Record {
            fingerprint: r.get(0)?,
            answer: status.map(|s| Answer {
                status: u16::try_from(s).unwrap_or(500),
                body: body.unwrap_or_default(),
            }),
        })
    })
    .optional()
}

/// Deletes up to `max` keys created before `expired_before`.
pub(crate) fn sweep(c: &Connection, expired_before: i64, max: u32) -> rusqlite::Result<u64> {
    c.prepare_cached(
        "DELETE FROM idempotency_keys WHERE rowid IN
           (SELECT rowid FROM idempotency_keys WHERE created_at < ?1 LIMIT ?2)",
    )?
    .execute(params![expired_before, max])
    .map(|n| n as u64)
}

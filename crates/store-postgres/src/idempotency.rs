//! Idempotency keys on PostgreSQL: the claim, its settling and the sweep, each statement on its
//! own (autocommit). The row's primary key (account, key) makes concurrent claims of one key, on
//! any node, wait for each other: exactly one inserts it.

use crate::{Error, PgStore};
use runbase_domain::idempotency::{Answer, Claim, ClaimOutcome, NewClaim, Record, Settle};

/// Inserts (or replaces an expired) key row as the caller's claim.
const INSERT: &str = "INSERT INTO idempotency_keys AS i (account_id, key, fingerprint, run_id, created_at, claimed_at)
     VALUES ($1, $2, $3, $4, $5, $5)
     ON CONFLICT (account_id, key) DO UPDATE SET
         fingerprint = EXCLUDED.fingerprint, run_id = EXCLUDED.run_id,
         created_at = EXCLUDED.created_at, claimed_at = EXCLUDED.claimed_at,
         status = NULL, body = NULL
     WHERE i.created_at < $6
     RETURNING run_id";

/// Takes over an in-flight claim of the same request that went stale.
const TAKE_OVER: &str = "UPDATE idempotency_keys SET claimed_at = $3
     WHERE account_id = $1 AND key = $2 AND status IS NULL AND fingerprint = $4 AND claimed_at < $5
     RETURNING run_id";

const READ: &str =
    "SELECT fingerprint, status, body FROM idempotency_keys WHERE account_id = $1 AND key = $2";

/// Keeps an answer under the key, if the claim still holds it. Also used by a create's
/// transaction (`store::create_run_tx`).
pub(crate) const RECORD: &str = "UPDATE idempotency_keys SET status = $4, body = $5
     WHERE account_id = $1 AND key = $2 AND claimed_at = $3 AND status IS NULL";

/// [`RECORD`] for a batch of creates (`create_batch.rs`).
pub(crate) const RECORD_MANY: &str =
    "UPDATE idempotency_keys i SET status = u.status, body = u.body
     FROM unnest($1::text[], $2::text[], $3::bigint[], $4::int[], $5::bytea[])
          AS u(account_id, key, claimed_at, status, body)
     WHERE i.account_id = u.account_id AND i.key = u.key AND i.claimed_at = u.claimed_at
       AND i.status IS NULL";

/// Claims the fresh keys of a batch of creates (`create_batch.rs`), or of a create alone
/// (`store::create_run_tx`), in the create's transaction: each key's row is inserted with the
/// create's `201` as its answer, or replaces a row under the key created before `$8` (expired);
/// a live row is left alone. `RETURNING` names the keys claimed: a create whose key is not among
/// them writes nothing (`KeyTaken`). `$8` is one cut-off for the whole batch, the earliest of its
/// runs' `expired_before`: a row expired for one run but not for all is left to the domain,
/// which finds it expired and claims it on its own (exact). One statement, driven by the
/// primary key: a separate `DELETE ... USING unnest(...)` of expired rows was planned as a scan
/// of the whole table once its plan was cached. A row inserted by another uncommitted
/// transaction makes this one wait for its outcome (the unique key), so two nodes never both
/// claim a key.
pub(crate) const CLAIM_MANY: &str = "INSERT INTO idempotency_keys AS i (account_id, key, fingerprint, run_id, created_at, claimed_at, status, body)
     SELECT account_id, key, fingerprint, run_id, claimed_at, claimed_at, status, body
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::int[], $7::bytea[])
          WITH ORDINALITY AS u(account_id, key, fingerprint, run_id, claimed_at, status, body, ord)
     ORDER BY ord
     ON CONFLICT (account_id, key) DO UPDATE SET
         fingerprint = EXCLUDED.fingerprint, run_id = EXCLUDED.run_id,
         created_at = EXCLUDED.created_at, claimed_at = EXCLUDED.claimed_at,
         status = EXCLUDED.status, body = EXCLUDED.body
     WHERE i.created_at < $8
     RETURNING account_id, key";

/// Gives up the fresh keys a batch claimed for creates it then refused (their rows were inserted
/// by this transaction, so no other claim can have them).
pub(crate) const UNCLAIM_MANY: &str = "DELETE FROM idempotency_keys i
     USING unnest($1::text[], $2::text[], $3::bigint[]) AS u(account_id, key, claimed_at)
     WHERE i.account_id = u.account_id AND i.key = u.key AND i.claimed_at = u.claimed_at";

impl PgStore {
    pub(crate) async fn claim_key(&self, n: &NewClaim) -> Result<ClaimOutcome, Error> {
        let claimed = |run_id: Option<String>, resumed: bool| {
            ClaimOutcome::Claimed(Claim {
                account_id: n.account_id.clone(),
                key: n.key.clone(),
                claimed_at: n.now,
                run_id,
                resumed,
            })
        };
        // A row deleted (released) between the statements below is claimed on the next turn;
        // a key released again and again by other requests is a conflict nobody wins quickly.
        for _ in 0..3 {
            let inserted = self
                .row(
                    INSERT,
                    &[
                        &n.account_id,
                        &n.key,
                        &n.fingerprint,
                        &n.run_id,
                        &n.now.0,
                        &n.expired_before.0,
                    ],
                )
                .await?;
            if let Some(row) = inserted {
                return Ok(claimed(row.try_get(0)?, false));
            }
            let taken = self
                .row(
                    TAKE_OVER,
                    &[
                        &n.account_id,
                        &n.key,
                        &n.now.0,
                        &n.fingerprint,
                        &n.stale_before.0,
                    ],
                )
                .await?;
            if let Some(row) = taken {
                return Ok(claimed(row.try_get(0)?, true));
            }
            if let Some(row) = self.row(READ, &[&n.account_id, &n.key]).await? {
                let status: Option<i32> = row.try_get(1)?;
                let body: Option<Vec<u8>> = row.try_get(2)?;
                return Ok(ClaimOutcome::Existing(Record {
                    fingerprint: row.try_get(0)?,
                    answer: status.map(|s| Answer {
                        status: u16::try_from(s).unwrap_or(500),
                        body: body.unwrap_or_default(),
                    }),
                }));
            }
        }
        Err(Error::Data(
            "an idempotency key kept being released while it was claimed".into(),
        ))
    }

    pub(crate) async fn settle_key(&self, claim: &Claim, how: &Settle) -> Result<(), Error> {
        let (a, k, at) = (&claim.account_id, &claim.key, &claim.claimed_at.0);
        match how {
            Settle::Record(answer) => {
                let status = i32::from(answer.status);
                self.exec(RECORD, &[a, k, at, &status, &answer.body])
                    .await?;
            }
            Settle::Release => {
                self.exec(
                    "DELETE FROM idempotency_keys
                     WHERE account_id = $1 AND key = $2 AND claimed_at = $3 AND status IS NULL",
                    &[a, k, at],
                )
                .await?;
            }
            Settle::Abandon => {
                self.exec(
                    "UPDATE idempotency_keys SET claimed_at = 0
                     WHERE account_id = $1 AND key = $2 AND claimed_at = $3 AND status IS NULL",
                    &[a, k, at],
                )
                .await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn read_record(
        &self,
        account_id: &str,
        key: &str,
        expired_before: i64,
    ) -> Result<Option<Record>, Error> {
        let Some(row) = self
            .row(
                "SELECT fingerprint, status, body FROM idempotency_keys
                 WHERE account_id = $1 AND key = $2 AND created_at >= $3",
                &[&account_id, &key, &expired_before],
            )
            .await?
        else {
            return Ok(None);
        };
        let status: Option<i32> = row.try_get(1)?;
        let body: Option<Vec<u8>> = row.try_get(2)?;
        Ok(Some(Record {
            fingerprint: row.try_get(0)?,
            answer: status.map(|s| Answer {
                status: u16::try_from(s).unwrap_or(500),
                body: body.unwrap_or_default(),
            }),
        }))
    }

    pub(crate) async fn sweep_keys(&self, expired_before: i64, max: u32) -> Result<u64, Error> {
        self.exec(
            "DELETE FROM idempotency_keys WHERE (account_id, key) IN
               (SELECT account_id, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
            &[&expired_before, &i64::from(max)],
        )
        .await
    }
}

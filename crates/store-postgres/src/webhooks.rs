//! Webhook secrets, the delivery outbox and its log on PostgreSQL, each one statement
//! (autocommit). The outbox rows themselves are inserted by a trigger on `runs`
//! (migrations/0006_webhooks.sql), in the status change's transaction, whichever code path
//! (the batched finishes included) makes it.

use crate::{Error, PgStore};
use runbase_domain::time::Timestamp;
use runbase_domain::webhooks::{Attempt, AttemptResult, Delivery, DueDelivery, Secrets};
use tokio_postgres::Row;

const SECRET_COLS: &str = "secret, previous_secret, previous_until, created_at";

fn secrets_row(r: &Row) -> Result<Secrets, Error> {
    Ok(Secrets {
        current: r.try_get(0)?,
        previous: r.try_get(1)?,
        previous_until: r.try_get::<_, Option<i64>>(2)?.map(Timestamp),
        created_at: Timestamp(r.try_get(3)?),
    })
}

fn u32_of(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

impl PgStore {
    pub(crate) async fn webhook_secrets_of(
        &self,
        account_id: &str,
        fresh: &str,
        now: Timestamp,
    ) -> Result<Secrets, Error> {
        // Of concurrent first calls one insert wins; the others wait for it, then read it.
        self.exec(
            "INSERT INTO webhook_secrets (account_id, secret, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (account_id) DO NOTHING",
            &[&account_id, &fresh, &now.0],
        )
        .await?;
        let row = self
            .row(
                &format!("SELECT {SECRET_COLS} FROM webhook_secrets WHERE account_id = $1"),
                &[&account_id],
            )
            .await?
            .ok_or_else(|| Error::Data("the webhook secret vanished".into()))?;
        secrets_row(&row)
    }

    pub(crate) async fn rotate_secret(
        &self,
        account_id: &str,
        fresh: &str,
        now: Timestamp,
        previous_until: Timestamp,
    ) -> Result<Secrets, Error> {
        let row = self
            .row(
                &format!(
                    "INSERT INTO webhook_secrets AS w (account_id, secret, created_at) VALUES ($1, $2, $3)
                     ON CONFLICT (account_id) DO UPDATE SET
                         previous_secret = w.secret, previous_until = $4,
                         secret = EXCLUDED.secret, created_at = EXCLUDED.created_at
                     RETURNING {SECRET_COLS}"
                ),
                &[&account_id, &fresh, &now.0, &previous_until.0],
            )
            .await?
            .ok_or_else(|| Error::Data("the rotation returned no row".into()))?;
        secrets_row(&row)
    }

    pub(crate) async fn claim_due_deliveries(
        &self,
        max: u32,
        now: Timestamp,
        lease_until: Timestamp,
        skip_accounts: &[String],
    ) -> Result<Vec<DueDelivery>, Error> {
        // SKIP LOCKED: dispatchers of other nodes claiming at the same moment take other
        // deliveries; the lease keeps a claimed one from being sent twice until it ends.
        let rows = self
            .rows(
                "UPDATE webhook_deliveries SET locked_until = $3
                 WHERE seq IN (SELECT seq FROM webhook_deliveries
                               WHERE status = 'pending' AND next_attempt_at <= $2
                                 AND (locked_until IS NULL OR locked_until < $2)
                                 AND NOT (account_id = ANY($4::text[]))
                               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                 RETURNING id, run_id, account_id, event, url, attempts, created_at",
                &[&i64::from(max), &now.0, &lease_until.0, &skip_accounts],
            )
            .await?;
        let mut due = rows
            .iter()
            .map(|r| {
                Ok(DueDelivery {
                    id: r.try_get(0)?,
                    run_id: r.try_get(1)?,
                    account_id: r.try_get(2)?,
                    event: r.try_get(3)?,
                    url: r.try_get(4)?,
                    attempts: u32_of(r.try_get(5)?),
                    created_at: Timestamp(r.try_get(6)?),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        due.sort_by_key(|d| d.created_at);
        Ok(due)
    }

    pub(crate) async fn record_attempt(&self, a: &AttemptResult) -> Result<(), Error> {
        let status = if a.delivered() {
            "delivered"
        } else if a.next_attempt_at.is_some() {
            "pending"
        } else {
            "failed"
        };
        let http_status = a.http_status.map(i32::from);
        let latency = i64::try_from(a.latency_ms).unwrap_or(i64::MAX);
        let next = a.next_attempt_at.map(|t| t.0);
        // One statement: the log line and the delivery's new state commit together.
        self.exec(
            "WITH logged AS (
                 INSERT INTO webhook_attempts (delivery_id, attempt, at, http_status, latency_ms, error)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING)
             UPDATE webhook_deliveries SET status = $7, attempts = $2, next_attempt_at = $8, locked_until = NULL
             WHERE id = $1 AND status = 'pending'",
            &[
                &a.delivery_id,
                &i64::from(a.attempt),
                &a.at.0,
                &http_status,
                &latency,
                &a.error,
                &status,
                &next,
            ],
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn deliveries_of_run(
        &self,
        account_id: &str,
        run_id: &str,
    ) -> Result<Option<Vec<Delivery>>, Error> {
        if self
            .row(
                "SELECT 1 FROM runs WHERE id = $1 AND account_id = $2",
                &[&run_id, &account_id],
            )
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let rows = self
            .rows(
                "SELECT id, event, status, url, created_at, next_attempt_at FROM webhook_deliveries
                 WHERE run_id = $1 AND account_id = $2 ORDER BY seq",
                &[&run_id, &account_id],
            )
            .await?;
        let mut deliveries = rows
            .iter()
            .map(|r| {
                let status: String = r.try_get(2)?;
                Ok(Delivery {
                    id: r.try_get(0)?,
                    event: r.try_get(1)?,
                    next_attempt_at: if status == "pending" {
                        r.try_get::<_, Option<i64>>(5)?.map(Timestamp)
                    } else {
                        None
                    },
                    status,
                    url: r.try_get(3)?,
                    created_at: Timestamp(r.try_get(4)?),
                    attempts: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let ids: Vec<&str> = deliveries.iter().map(|d| d.id.as_str()).collect();
        let rows = self
            .rows(
                "SELECT delivery_id, attempt, at, http_status, latency_ms, error FROM webhook_attempts
                 WHERE delivery_id = ANY($1) ORDER BY delivery_id, attempt",
                &[&ids],
            )
            .await?;
        for r in &rows {
            let id: String = r.try_get(0)?;
            let attempt = Attempt {
                attempt: u32_of(r.try_get(1)?),
                at: Timestamp(r.try_get(2)?),
                http_status: r
                    .try_get::<_, Option<i32>>(3)?
                    .and_then(|s| u16::try_from(s).ok()),
                latency_ms: r.try_get::<_, i64>(4)?.max(0) as u64,
                error: r.try_get(5)?,
            };
            if let Some(d) = deliveries.iter_mut().find(|d| d.id == id) {
                d.attempts.push(attempt);
            }
        }
        Ok(Some(deliveries))
    }

    /// `None`: no such run of the account; `Some(false)`: nothing to redeliver.
    pub(crate) async fn queue_redelivery(
        &self,
        account_id: &str,
        run_id: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<bool>, Error> {
        // The run's row is locked first, so redeliveries of one run queue behind each other
        // and each sees the others' rows (one statement's snapshot would not).
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let run = tx
            .query_opt(
                "SELECT webhook, status FROM runs WHERE id = $1 AND account_id = $2 FOR UPDATE",
                &[&run_id, &account_id],
            )
            .await?;
        let Some(run) = run else {
            return Ok(None);
        };
        let (webhook, status): (Option<String>, String) = (run.try_get(0)?, run.try_get(1)?);
        let Some(url) = webhook.filter(|_| status != "pending") else {
            return Ok(Some(false));
        };
        // A delivery of this event waiting for a retry (pending and not being sent right now)
        // is made due now instead: however often one clicks, a run has at most one such
        // delivery waiting. One being sent may fail and wait an hour: a click then queues a
        // new one.
        let event = if status == "processing" {
            "start"
        } else {
            "completed"
        };
        let hurried = tx
            .execute(
                "UPDATE webhook_deliveries SET next_attempt_at = LEAST(COALESCE(next_attempt_at, $3), $3)
                 WHERE run_id = $1 AND account_id = $2 AND status = 'pending' AND event = $4
                   AND (locked_until IS NULL OR locked_until <= $3)",
                &[&run_id, &account_id, &now.0, &event],
            )
            .await?;
        if hurried == 0 {
            tx.execute(
                "INSERT INTO webhook_deliveries (id, run_id, account_id, event, url, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
                &[&id, &run_id, &account_id, &event, &url, &now.0],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(true))
    }

    /// See [`runbase_domain::store::Store::sweep_webhook_deliveries`]: one statement, walking
    /// the outbox in queue order (`seq`), where the oldest are first.
    pub(crate) async fn sweep_deliveries(&self, before: Timestamp, max: u32) -> Result<u64, Error> {
        let row = self
            .row(
                "WITH d AS (
                     DELETE FROM webhook_deliveries WHERE seq IN
                       (SELECT seq FROM webhook_deliveries
                        WHERE status <> 'pending' AND created_at < $1 ORDER BY seq LIMIT $2)
                     RETURNING id),
                 a AS (DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM d))
                 SELECT count(*) FROM d",
                &[&before.0, &i64::from(max)],
            )
            .await?
            .ok_or_else(|| Error::Data("the sweep returned no row".into()))?;
        Ok(u64::try_from(row.try_get::<_, i64>(0)?).unwrap_or(0))
    }
}

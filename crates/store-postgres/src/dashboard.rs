//! The dashboard's transactions: passwords, sessions and payments, like those of `store.rs`.

use crate::rows::{self, ACCOUNT_COLS, SESSION_COLS};
use crate::store::{LedgerLine, append_ledger};
use crate::{Error, PgStore};
use deadpool_postgres::Transaction;
use runbase_domain::account::{Account, LedgerKind};
use runbase_domain::money::Millicents;
use runbase_domain::sessions::Session;
use runbase_domain::store::PaymentCredit;
use runbase_domain::time::Timestamp;

/// Replaces the password; closes every other session of the account.
pub async fn set_password_tx(
    tx: &Transaction<'_>,
    account_id: &str,
    phc: &str,
    keep_session: Option<&str>,
) -> Result<(), Error> {
    tx.execute(
        "UPDATE accounts SET password_hash = $2 WHERE id = $1",
        &[&account_id, &phc],
    )
    .await?;
    tx.execute(
        "DELETE FROM sessions WHERE account_id = $1 AND token_hash IS DISTINCT FROM $2",
        &[&account_id, &keep_session],
    )
    .await?;
    Ok(())
}

/// Stores a new session; expired sessions of the same account are swept on the way.
pub async fn create_session_tx(tx: &Transaction<'_>, s: &Session) -> Result<(), Error> {
    tx.execute(
        "DELETE FROM sessions WHERE account_id = $1 AND expires_at <= $2",
        &[&s.account_id, &s.created_at.0],
    )
    .await?;
    tx.execute(
        "INSERT INTO sessions (token_hash, account_id, csrf_token, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &s.token_hash,
            &s.account_id,
            &s.csrf_token,
            &s.created_at.0,
            &s.expires_at.0,
        ],
    )
    .await?;
    Ok(())
}

/// The unexpired session and its account, in one statement.
pub async fn session(
    store: &PgStore,
    token_hash: &str,
    now: Timestamp,
) -> Result<Option<(Session, Account)>, Error> {
    let session_cols = SESSION_COLS
        .split(", ")
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let account_cols = ACCOUNT_COLS
        .split(", ")
        .map(|c| format!("a.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let Some(row) = store
        .row(
            &format!(
                "SELECT {session_cols}, {account_cols} FROM sessions s JOIN accounts a ON a.id = s.account_id
                 WHERE s.token_hash = $1 AND s.expires_at > $2"
            ),
            &[&token_hash, &now.0],
        )
        .await?
    else {
        return Ok(None);
    };
    let session = rows::session(&row)?;
    let account = Account {
        id: row.try_get(5)?,
        email: row.try_get(6)?,
        balance: Millicents(row.try_get(7)?),
        created_at: Timestamp(row.try_get(8)?),
        admin: row.try_get(9)?,
    };
    Ok(Some((session, account)))
}

/// A payment confirmation to apply.
pub struct Confirmation<'a> {
    pub provider: &'a str,
    pub event_id: &'a str,
    pub checkout_id: &'a str,
    pub account_id: Option<&'a str>,
    pub amount: Millicents,
    pub now: Timestamp,
}

/// Records the event, moves the payment to paid and credits the account, or does nothing. The
/// event's primary key and the payment's row lock make a replay or a concurrent delivery of the
/// same payment credit once.
pub async fn complete_payment_tx(
    tx: &Transaction<'_>,
    p: &Confirmation<'_>,
) -> Result<PaymentCredit, Error> {
    let fresh = tx
        .execute(
            "INSERT INTO webhook_events (provider, event_id, received_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&p.provider, &p.event_id, &p.now.0],
        )
        .await?;
    if fresh == 0 {
        return Ok(PaymentCredit::DuplicateEvent);
    }
    let Some(payment) = tx
        .query_opt(
            "SELECT account_id, status FROM payments WHERE provider = $1 AND checkout_id = $2 FOR UPDATE",
            &[&p.provider, &p.checkout_id],
        )
        .await?
    else {
        return Ok(PaymentCredit::UnknownCheckout);
    };
    let (account_id, status): (String, String) = (payment.try_get(0)?, payment.try_get(1)?);
    if p.account_id.is_some_and(|a| a != account_id) {
        return Ok(PaymentCredit::UnknownCheckout);
    }
    if status != "pending" {
        return Ok(PaymentCredit::AlreadyCredited);
    }
    tx.execute(
        "UPDATE accounts SET credited = TRUE WHERE id = $1 AND NOT credited",
        &[&account_id],
    )
    .await?;
    let memo = format!("Top-up via {} ({})", p.provider, p.checkout_id);
    let entry = append_ledger(
        tx,
        LedgerLine {
            account_id: &account_id,
            kind: LedgerKind::Topup,
            amount: p.amount,
            run_id: None,
            key_id: None,
            memo: &memo,
            granted_by: None,
            now: p.now,
        },
    )
    .await?;
    tx.execute(
        "UPDATE payments SET status = 'paid', paid_at = $3, ledger_id = $4
         WHERE provider = $1 AND checkout_id = $2 AND status = 'pending'",
        &[&p.provider, &p.checkout_id, &p.now.0, &entry.id],
    )
    .await?;
    Ok(PaymentCredit::Credited(entry))
}

//! The dashboard's transactions: passwords, sessions and payments. Each function runs inside
//! one writer transaction (or a read snapshot), like those of `store.rs`.

use crate::rows::{self, ACCOUNT_COLS, SESSION_COLS};
use crate::store::{LedgerLine, append_ledger};
use runbase_domain::account::{Account, LedgerKind};
use runbase_domain::money::Millicents;
use runbase_domain::sessions::Session;
use runbase_domain::store::PaymentCredit;
use runbase_domain::time::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

/// Replaces the password; closes every other session of the account.
pub fn set_password_tx(
    c: &Connection,
    account_id: &str,
    phc: &str,
    keep_session: Option<&str>,
) -> rusqlite::Result<()> {
    c.execute(
        "UPDATE accounts SET password_hash = ?2 WHERE id = ?1",
        params![account_id, phc],
    )?;
    c.execute(
        "DELETE FROM sessions WHERE account_id = ?1 AND token_hash IS NOT ?2",
        params![account_id, keep_session],
    )?;
    Ok(())
}

/// Stores a new session; expired sessions of the same account are swept on the way.
pub fn create_session_tx(c: &Connection, s: &Session) -> rusqlite::Result<()> {
    c.execute(
        "DELETE FROM sessions WHERE account_id = ?1 AND expires_at <= ?2",
        params![s.account_id, s.created_at.0],
    )?;
    c.execute(
        "INSERT INTO sessions (token_hash, account_id, csrf_token, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            s.token_hash,
            s.account_id,
            s.csrf_token,
            s.created_at.0,
            s.expires_at.0
        ],
    )?;
    Ok(())
}

pub fn session(
    c: &Connection,
    token_hash: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<(Session, Account)>> {
    let Some(session) = c
        .prepare_cached(&format!(
            "SELECT {SESSION_COLS} FROM sessions WHERE token_hash = ?1 AND expires_at > ?2"
        ))?
        .query_row(params![token_hash, now.0], rows::session)
        .optional()?
    else {
        return Ok(None);
    };
    let account = c
        .prepare_cached(&format!(
            "SELECT {ACCOUNT_COLS} FROM accounts WHERE id = ?1"
        ))?
        .query_row([&session.account_id], rows::account)
        .optional()?;
    Ok(account.map(|a| (session, a)))
}

/// A payment confirmation to apply.
pub struct Confirmation {
    pub provider: String,
    pub event_id: String,
    pub checkout_id: String,
    pub account_id: Option<String>,
    pub amount: Millicents,
    pub now: Timestamp,
}

/// Records the event, moves the payment to paid and credits the account, or does nothing.
pub fn complete_payment_tx(c: &Connection, p: &Confirmation) -> rusqlite::Result<PaymentCredit> {
    let fresh = c.execute(
        "INSERT INTO webhook_events (provider, event_id, received_at) VALUES (?1, ?2, ?3)
         ON CONFLICT DO NOTHING",
        params![p.provider, p.event_id, p.now.0],
    )?;
    if fresh == 0 {
        return Ok(PaymentCredit::DuplicateEvent);
    }
    let payment: Option<(String, String)> = c
        .query_row(
            "SELECT account_id, status FROM payments WHERE provider = ?1 AND checkout_id = ?2",
            params![p.provider, p.checkout_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((account_id, status)) = payment else {
        return Ok(PaymentCredit::UnknownCheckout);
    };
    if p.account_id.as_ref().is_some_and(|a| *a != account_id) {
        return Ok(PaymentCredit::UnknownCheckout);
    }
    if status != "pending" {
        return Ok(PaymentCredit::AlreadyCredited);
    }
    crate::store::mark_credited(c, &account_id)?;
    let memo = format!("Top-up via {} ({})", p.provider, p.checkout_id);
    let entry = append_ledger(
        c,
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
    )?;
    c.execute(
        "UPDATE payments SET status = 'paid', paid_at = ?3, ledger_id = ?4
         WHERE provider = ?1 AND checkout_id = ?2 AND status = 'pending'",
        params![p.provider, p.checkout_id, p.now.0, entry.id],
    )?;
    Ok(PaymentCredit::Credited(entry))
}

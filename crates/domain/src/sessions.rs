//! Dashboard accounts and sessions: sign up, log in, log out, change the password.
//!
//! A session is a random token in an `HttpOnly` cookie; the store keeps only its SHA-256 (as for
//! API keys), so a copy of the database opens no session. Each session carries its own CSRF
//! token, which every form of the dashboard must send back.

use crate::account::{Account, NewAccount};
use crate::error::{ApiError, ErrorCode};
use crate::ids::{self, KeyHash};
use crate::password;
use crate::service::internal;
use crate::store::{Store, StoreError};
use crate::time::Timestamp;

/// How long a session lasts after log-in.
pub const SESSION_LIFETIME_MICROS: i64 = 14 * 24 * 3600 * 1_000_000;

/// A logged-in browser.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    /// SHA-256 of the cookie's token.
    pub token_hash: String,
    pub account_id: String,
    /// Sent back by every form of this session.
    pub csrf_token: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A session just opened: the cookie value (never stored) and the session.
#[derive(Debug)]
pub struct OpenedSession {
    pub token: String,
    pub session: Session,
    pub account: Account,
}

/// The stored form of a session token.
pub fn token_hash(token: &str) -> String {
    KeyHash::of(token).0
}

pub(crate) async fn open(store: &dyn Store, account: Account) -> Result<OpenedSession, ApiError> {
    let token = ids::random_token(43);
    let now = Timestamp::now();
    let session = Session {
        token_hash: token_hash(&token),
        account_id: account.id.clone(),
        csrf_token: ids::random_token(32),
        created_at: now,
        expires_at: Timestamp(now.0 + SESSION_LIFETIME_MICROS),
    };
    store.create_session(&session).await.map_err(internal)?;
    Ok(OpenedSession {
        token,
        session,
        account,
    })
}

/// At most this many argon2 computations at once (each holds 19 MiB and a blocking thread):
/// a burst of log-ins from many addresses queues here instead of exhausting memory.
const MAX_CONCURRENT_HASHES: usize = 8;

/// Runs `work` on the blocking pool once a hashing slot is free.
async fn off_thread<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    static SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(MAX_CONCURRENT_HASHES);
    let _slot = SLOTS.acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())
}

async fn hash_off_thread(password: String) -> Result<String, ApiError> {
    off_thread(move || password::hash(&password))
        .await
        .and_then(|r| r)
        .map_err(|e| {
            tracing::error!(error = %e, "password hashing failed");
            ApiError::internal()
        })
}

/// Verifies against `phc`, or against the decoy when there is none (same time either way).
async fn verify_off_thread(password: String, phc: Option<String>) -> bool {
    off_thread(move || {
        password::verify(&password, phc.as_deref().unwrap_or(password::decoy_hash()))
    })
    .await
    .unwrap_or(false)
}

/// Creates an account with a password. The first account of an empty install becomes its
/// administrator. An email that already has an account is answered the same as a new one, in
/// the same time (the password is hashed either way), and the account is left as it was: the
/// caller cannot learn who is registered. The user logs in next.
///
/// A new account is granted `signup_credit` (the welcome credit) in the same transaction.
pub async fn sign_up(
    store: &dyn Store,
    email: &str,
    password: &str,
    signup_credit: crate::money::Millicents,
) -> Result<(), ApiError> {
    let email = crate::service::normalize_email(email)
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    password::check_new(password).map_err(|m| ApiError::new(ErrorCode::InvalidRequest, m))?;
    let hash = hash_off_thread(password.to_owned()).await?;
    let created = store
        .create_account_with(
            NewAccount {
                email,
                password_hash: Some(hash),
                admin: false,
                signup_credit,
            },
            Timestamp::now(),
        )
        .await;
    match created {
        Ok(_) | Err(StoreError::Conflict(_)) => Ok(()),
        Err(e) => Err(internal(e)),
    }
}

/// Checks the password and opens a session. An unknown email, an account without a password
/// and a wrong password are the same error, in the same time.
pub async fn log_in(
    store: &dyn Store,
    email: &str,
    password: &str,
) -> Result<OpenedSession, ApiError> {
    let email = email.trim().to_lowercase();
    let found = match store.account_by_email(&email).await.map_err(internal)? {
        Some(a) => {
            let hash = store.password_hash(&a.id).await.map_err(internal)?;
            Some((a, hash))
        }
        None => None,
    };
    let phc = found.as_ref().and_then(|(_, h)| h.clone());
    let matches = verify_off_thread(password.to_owned(), phc).await;
    match found {
        Some((account, Some(_))) if matches => open(store, account).await,
        _ => Err(ErrorCode::InvalidCredentials.into()),
    }
}

/// The session a cookie names, with its account, if it exists and has not expired.
pub async fn current(
    store: &dyn Store,
    token: &str,
) -> Result<Option<(Session, Account)>, ApiError> {
    if token.is_empty() || token.len() > 128 {
        return Ok(None);
    }
    store
        .session(&token_hash(token), Timestamp::now())
        .await
        .map_err(internal)
}

pub async fn log_out(store: &dyn Store, session: &Session) -> Result<(), ApiError> {
    store
        .delete_session(&session.token_hash)
        .await
        .map_err(internal)
}

/// Changes the password after checking the current one; every other session of the account is
/// closed (a stolen session does not survive a password change).
pub async fn change_password(
    store: &dyn Store,
    session: &Session,
    current_password: &str,
    new_password: &str,
) -> Result<(), ApiError> {
    let phc = store
        .password_hash(&session.account_id)
        .await
        .map_err(internal)?;
    if !verify_off_thread(current_password.to_owned(), phc).await {
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "The current password is incorrect",
        ));
    }
    password::check_new(new_password).map_err(|m| ApiError::new(ErrorCode::InvalidRequest, m))?;
    let hash = hash_off_thread(new_password.to_owned()).await?;
    store
        .set_password_hash(&session.account_id, &hash, Some(&session.token_hash))
        .await
        .map_err(internal)
}

/// Sets a password from the command line (accounts made by the CLI have none); closes every
/// session of the account.
pub async fn set_password(
    store: &dyn Store,
    account: &Account,
    new_password: &str,
) -> Result<(), ApiError> {
    password::check_new(new_password).map_err(|m| ApiError::new(ErrorCode::InvalidRequest, m))?;
    let hash = hash_off_thread(new_password.to_owned()).await?;
    store
        .set_password_hash(&account.id, &hash, None)
        .await
        .map_err(internal)
}

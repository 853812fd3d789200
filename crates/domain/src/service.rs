//! The operations of Runbase, called by the HTTP handlers, the CLI and the dashboard alike.
//! Each takes the store (and what else it needs) explicitly.

use crate::account::{Account, ApiKey, KeySettings, KeyUpdate, LedgerEntry};
use crate::auth::KeySeen;
use crate::catalog::{Catalog, Model};
use crate::error::{ApiError, ErrorCode};
use crate::ids;
use crate::money::Millicents;
use crate::run::{NewRun, Run};
use crate::store::{CreateRunError, Store, StoreError};
use crate::time::Timestamp;
use serde_json::Value;
use std::sync::Arc;

/// Logs a storage failure once and turns it into the public 500.
pub fn internal(e: StoreError) -> ApiError {
    match e {
        StoreError::Conflict(m) => ApiError::new(ErrorCode::InvalidRequest, m),
        StoreError::NotFound(m) => ApiError::new(ErrorCode::NotFound, m),
        StoreError::Backend(detail) => {
            tracing::error!(error = %detail, "storage failure");
            ApiError::internal()
        }
        StoreError::Unavailable(detail) => {
            tracing::warn!(error = %detail, "storage unavailable; answered 503");
            ErrorCode::ServiceUnavailable.into()
        }
    }
}

/// A run request that passed steps 6–10 of the check order.
#[derive(Debug)]
pub struct ValidRunRequest {
    pub model: Arc<Model>,
    pub input: Value,
    pub price: Millicents,
    /// `webhook` and `webhookEvents`, when the body subscribes.
    pub webhook: Option<crate::webhooks::Subscription>,
}

/// Steps 6–10: JSON, `model`, `input`, the model exists (and, unless `test`, can run here: a
/// model whose providers have no credentials is only offered to test keys, whose runs are
/// simulated), the input matches its schema (with defaults applied). Also prices the run.
pub fn parse_run_request(
    catalog: &Catalog,
    body: &[u8],
    test: bool,
) -> Result<ValidRunRequest, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("Request body is not valid JSON: {e}"),
        )
    })?;
    let Value::Object(mut body) = value else {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "Request body must be a JSON object",
        ));
    };
    let model_id = match body.get("model") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(ErrorCode::MissingModel.into()),
    };
    let mut input = match body.remove("input") {
        Some(Value::Object(m)) => m,
        _ => return Err(ErrorCode::MissingInput.into()),
    };
    let webhook = crate::webhooks::parse_subscription(&body)?;
    let model = catalog.get(&model_id).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!(
                "Model \"{model_id}\" doesn't match any available model; see GET /api/v1/models"
            ),
        )
    })?;
    if !test && !model.is_available() {
        return Err(ApiError::new(
            ErrorCode::ModelNotFound,
            format!(
                "Model \"{model_id}\" is not available on this server: no provider for it is configured \
                 (test keys can still run it, simulated); see GET /api/v1/models"
            ),
        ));
    }
    model.input_schema.apply_defaults(&mut input);
    let input = Value::Object(input);
    model
        .input_schema
        .validate(&input)
        .map_err(|m| ApiError::new(ErrorCode::InvalidInput, m))?;
    // The input is stored with the run and returned by every read and list of it: a bound keeps
    // a page of runs (up to 100) from costing hundreds of MB to build.
    let size = serde_json::to_vec(&input).map_or(usize::MAX, |v| v.len());
    if size > MAX_INPUT_BYTES {
        return Err(ApiError::new(
            ErrorCode::InvalidInput,
            format!("input: is {size} bytes of JSON; at most {MAX_INPUT_BYTES} are accepted"),
        ));
    }
    let price = model
        .price
        .for_input(&input)
        .map_err(|m| ApiError::new(ErrorCode::InvalidInput, m))?;
    Ok(ValidRunRequest {
        model: model.clone(),
        input,
        price,
        webhook,
    })
}

/// The largest input a run may have, as JSON (after defaults). Prompts are bounded more tightly
/// by each model's schema (`maxLength`); images go by URL.
pub const MAX_INPUT_BYTES: usize = 64 * 1024;

/// Step 5, before the body is read: the key's quota.
pub fn check_quota(key: &ApiKey) -> Result<(), ApiError> {
    if key.quota_exhausted() {
        return Err(ErrorCode::UsageExceeded.into());
    }
    Ok(())
}

/// Steps 5–12 for an authenticated key: validates, then charges and enqueues atomically. `seen`
/// says how the key was authenticated: the store re-checks a remembered one on its locked row.
pub async fn create_run(
    store: &dyn Store,
    catalog: &Catalog,
    key: &ApiKey,
    seen: KeySeen,
    body: &[u8],
) -> Result<Run, CreateFailure> {
    create(store, catalog, key, seen, body, ids::new_run_id(), None).await
}

/// Why [`create_run_as`] created no run, sorted by what an idempotency key does with the answer
/// ([`crate::idempotency`]).
#[derive(Debug)]
pub enum CreateFailure {
    /// Before the run was submitted to the store (the quota, the body's checks): nothing was
    /// done.
    NotStarted(ApiError),
    /// The money checks refused it (in the store's transaction, or on the key's snapshot
    /// before it), or the store's check of the key did: nothing was done, and the same request
    /// would be refused again. (A refusal by the store's check of a remembered key
    /// (`auth::KeySeen`) is answered by the HTTP create from the key's row.)
    Refused(ApiError),
    /// The store failed: the run may or may not have been created (a lost commit answer).
    Failed(ApiError),
    /// The idempotency key the create was to claim has a row already: nothing was done.
    KeyTaken,
}

impl CreateFailure {
    pub fn into_error(self) -> ApiError {
        match self {
            CreateFailure::NotStarted(e) | CreateFailure::Refused(e) | CreateFailure::Failed(e) => {
                e
            }
            CreateFailure::KeyTaken => ErrorCode::IdempotencyKeyInUse.into(),
        }
    }
}

/// [`create_run`] under a chosen run id; with `mark`, the store also records the `201` under
/// the request's idempotency key in the transaction that creates the run.
pub async fn create_run_as(
    store: &dyn Store,
    catalog: &Catalog,
    key: &ApiKey,
    seen: KeySeen,
    body: &[u8],
    run_id: String,
    mark: Option<crate::idempotency::RunMark>,
) -> Result<Run, CreateFailure> {
    create(store, catalog, key, seen, body, run_id, mark).await
}

async fn create(
    store: &dyn Store,
    catalog: &Catalog,
    key: &ApiKey,
    seen: KeySeen,
    body: &[u8],
    run_id: String,
    mark: Option<crate::idempotency::RunMark>,
) -> Result<Run, CreateFailure> {
    check_quota(key).map_err(CreateFailure::NotStarted)?;
    let req = parse_run_request(catalog, body, key.test).map_err(CreateFailure::NotStarted)?;
    // Still step 10: an input may name only this account's uploads.
    crate::uploads::check_input_files(store, &key.account_id, &req.input)
        .await
        .map_err(CreateFailure::NotStarted)?;
    // Test runs are free (and simulated).
    let price = if key.test {
        Millicents::ZERO
    } else {
        req.price
    };
    // Step 11 early on the snapshot (the store re-checks it atomically). A remembered copy's
    // spend and limit may be old: its refusal is only a reason to read the key's row
    // (`NotStarted`: nothing was done), which the HTTP create answers from.
    if key.would_pass_spend_limit(price) {
        let e = ErrorCode::SpendLimitExceeded.into();
        return Err(match seen {
            KeySeen::Read => CreateFailure::Refused(e),
            KeySeen::Remembered => CreateFailure::NotStarted(e),
        });
    }
    let new = NewRun {
        id: run_id,
        account_id: key.account_id.clone(),
        key_id: key.id.clone(),
        model: req.model.id.clone(),
        input: req.input,
        price,
        created_at: Timestamp::now(),
        test: key.test,
        idempotency: mark,
        webhook: req.webhook,
        key_remembered: seen == KeySeen::Remembered,
    };
    store.create_run(new).await.map_err(|e| match e {
        CreateRunError::KeyNotUsable => CreateFailure::Refused(ErrorCode::InvalidApiKey.into()),
        CreateRunError::QuotaExhausted => CreateFailure::Refused(ErrorCode::UsageExceeded.into()),
        CreateRunError::SpendLimit => CreateFailure::Refused(ErrorCode::SpendLimitExceeded.into()),
        CreateRunError::InsufficientBalance => {
            CreateFailure::Refused(ErrorCode::InsufficientBalance.into())
        }
        CreateRunError::KeyTaken => CreateFailure::KeyTaken,
        CreateRunError::Store(e) => CreateFailure::Failed(internal(e)),
    })
}

/// The run `run_id` if the key may see it: a run of the key's account made in the key's mode.
/// A test key (often handed to CI) never reads or stops a live run, and a live key never sees
/// test runs, as in [`Store::key_and_run`]. A run's mode never changes, so what this answers
/// stays true.
pub async fn run_of_key(
    store: &dyn Store,
    key: &ApiKey,
    run_id: &str,
) -> Result<Option<Run>, ApiError> {
    if !ids::looks_like_run_id(run_id) {
        return Ok(None);
    }
    Ok(store
        .get_run(&key.account_id, run_id)
        .await
        .map_err(internal)?
        .filter(|run| run.test == key.test))
}

/// Cancels a run of the key's account that has not finished, with a full refund; a finished
/// run is returned as it is. Other accounts' runs, and runs of the other mode, are
/// `run_not_found`.
pub async fn cancel_run(store: &dyn Store, key: &ApiKey, run_id: &str) -> Result<Run, ApiError> {
    if run_of_key(store, key, run_id).await?.is_none() {
        return Err(ErrorCode::RunNotFound.into());
    }
    store
        .cancel_run(&key.account_id, run_id, Timestamp::now())
        .await
        .map_err(internal)?
        .ok_or_else(|| ErrorCode::RunNotFound.into())
}

/// Page bounds of `GET /api/v1/runs`.
pub const DEFAULT_PAGE: u32 = 20;
pub const MAX_PAGE: u32 = 100;

/// The account's runs made in the key's mode, newest first; `has_more` tells whether another
/// page follows.
pub async fn list_runs(
    store: &dyn Store,
    key: &ApiKey,
    limit: Option<u32>,
    starting_after: Option<&str>,
) -> Result<(Vec<Run>, bool), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("limit: must be between 1 and {MAX_PAGE}"),
        ));
    }
    // An empty cursor is none (`?startingAfter=` from a client with no last run yet), as on the
    // dashboard's pages.
    let starting_after = starting_after.filter(|after| !after.is_empty());
    if let Some(after) = starting_after
        && run_of_key(store, key, after).await?.is_none()
    {
        return Err(ApiError::new(
            ErrorCode::RunNotFound,
            format!("starting_after: no run {after} for your account"),
        ));
    }
    let mut runs = store
        .list_runs(
            &key.account_id,
            &crate::store::RunFilter {
                test: Some(key.test),
                ..Default::default()
            },
            limit + 1,
            starting_after,
        )
        .await
        .map_err(internal)?;
    let has_more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    Ok((runs, has_more))
}

// --- administration (CLI and dashboard) -------------------------------------------------------

/// Why an administrative operation failed; the message is meant for the operator.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Characters refused in names and emails, and escaped by the CLI: control characters
/// (newlines, `ESC` and the rest, which would forge lines or recolour a terminal); format
/// characters (Unicode category Cf: the bidirectional overrides and marks, which reorder what is
/// displayed, zero-width spaces and joiners, tag characters, interlinear annotations); line and
/// paragraph separators; the Hangul fillers, which render as nothing; and unassigned code
/// points and private use, which have no agreed look.
pub fn is_unsafe_char(c: char) -> bool {
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    matches!(c, '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}')
        || matches!(
            get_general_category(c),
            G::Control
                | G::Format
                | G::LineSeparator
                | G::ParagraphSeparator
                | G::Unassigned
                | G::PrivateUse
                | G::Surrogate
        )
}

/// A new account's email, trimmed and lower-cased: printable ASCII only (no spaces), one `@`
/// with something before it and a dotted domain after it. Non-ASCII is refused outright rather
/// than screened for look-alikes (Cyrillic `а` for Latin `a`, fullwidth `ｚ`, invisible
/// fillers): an account's email is what an administrator reads and types at the CLI, and a
/// domain with non-ASCII letters has an ASCII spelling (`xn--...`) that is the same address.
/// Log-in only trims and lower-cases what it looks up, so an account made before this rule can
/// still log in.
pub(crate) fn normalize_email(email: &str) -> Result<String, AdminError> {
    // ASCII is checked before folding case: Unicode lower-casing maps some letters onto ASCII
    // ones (the Kelvin sign onto `k`), which would make another spelling of someone's address.
    let email = email.trim();
    if !email.is_ascii() {
        return Err(AdminError::Invalid(format!(
            "{} is not an email address: use only ASCII characters (a domain with other \
             letters in its xn-- form)",
            email.escape_default()
        )));
    }
    let email = email.to_ascii_lowercase();
    let valid = email.len() <= 254
        && email.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty()
                && !d.contains('@')
                && d.contains('.')
                && !d.starts_with('.')
                && !d.ends_with('.')
        })
        && email.chars().all(|c| c.is_ascii_graphic());
    if !valid {
        return Err(AdminError::Invalid(format!(
            "{} is not an email address",
            email.escape_default()
        )));
    }
    Ok(email)
}

/// A key's name: trimmed, at most 100 characters, none of them unsafe to print.
fn check_key_name(name: &str) -> Result<String, AdminError> {
    let name = name.trim();
    if name.chars().count() > 100 {
        return Err(AdminError::Invalid(
            "a key name is at most 100 characters".into(),
        ));
    }
    if name.chars().any(is_unsafe_char) {
        return Err(AdminError::Invalid(
            "a key name cannot contain control characters, nor invisible or format ones (such as \
             newlines, escapes, zero-width spaces or direction marks)"
                .into(),
        ));
    }
    Ok(name.to_owned())
}

pub async fn create_account(store: &dyn Store, email: &str) -> Result<Account, AdminError> {
    create_account_as(store, email, false, Millicents::ZERO).await
}

/// Creates an account without a password, an administrator when `admin` (the first account of
/// an install is one anyway), granted `signup_credit` (the welcome credit) in the same
/// transaction.
pub async fn create_account_as(
    store: &dyn Store,
    email: &str,
    admin: bool,
    signup_credit: Millicents,
) -> Result<Account, AdminError> {
    let email = normalize_email(email)?;
    let new = crate::account::NewAccount {
        email,
        password_hash: None,
        admin,
        signup_credit,
    };
    Ok(store.create_account_with(new, Timestamp::now()).await?)
}

pub async fn account_by_email(store: &dyn Store, email: &str) -> Result<Account, AdminError> {
    let email = normalize_email(email)?;
    store
        .account_by_email(&email)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no account {email}")))
}

/// Creates a key; returns it with its secret, which is never available again.
pub async fn create_key(
    store: &dyn Store,
    account: &Account,
    mut settings: KeySettings,
) -> Result<(ApiKey, ids::ApiKeySecret), AdminError> {
    if settings
        .spend_limit
        .is_some_and(|l| !(Millicents::ZERO..=Millicents::MAX_BALANCE).contains(&l))
    {
        return Err(AdminError::Invalid(format!(
            "the spend limit must be from 0 to {} cents",
            Millicents::MAX_BALANCE.0 / Millicents::PER_CENT
        )));
    }
    let name = settings
        .name
        .take()
        .map(|n| check_key_name(&n))
        .transpose()?
        .filter(|n| !n.is_empty());
    settings.name = Some(name.unwrap_or_else(|| "default".to_owned()));
    let secret = ids::generate_api_key(settings.test);
    let key = store
        .create_key(
            &account.id,
            &ids::new_key_id(),
            &secret.hash,
            &secret.prefix,
            &settings,
            Timestamp::now(),
        )
        .await?;
    Ok((key, secret.secret))
}

/// Finds a key by its id (`key_...`) or by the full secret.
pub async fn find_key(store: &dyn Store, id_or_secret: &str) -> Result<ApiKey, AdminError> {
    let found = if id_or_secret.starts_with("sk-") {
        store.key_by_hash(&ids::KeyHash::of(id_or_secret)).await?
    } else {
        store.key_by_id(id_or_secret).await?
    };
    found.filter(|k| k.deleted_at.is_none()).ok_or_else(|| {
        AdminError::NotFound(format!(
            "no key {}",
            if id_or_secret.starts_with("sk-") {
                "with that secret"
            } else {
                id_or_secret
            }
        ))
    })
}

pub async fn update_key(
    store: &dyn Store,
    id_or_secret: &str,
    update: &KeyUpdate,
) -> Result<ApiKey, AdminError> {
    let key = find_key(store, id_or_secret).await?;
    // A name is stored as a create stores it: trimmed. A create without one gets "default"; an
    // update that would leave none is refused, as the dashboard's form refuses it.
    let mut update = update.clone();
    if let Some(name) = update.name.take() {
        let name = check_key_name(&name)?;
        if name.is_empty() {
            return Err(AdminError::Invalid("a key name cannot be empty".into()));
        }
        update.name = Some(name);
    }
    if let Some(Some(limit)) = update.spend_limit
        && !(Millicents::ZERO..=Millicents::MAX_BALANCE).contains(&limit)
    {
        return Err(AdminError::Invalid(format!(
            "the spend limit must be from 0 to {} cents",
            Millicents::MAX_BALANCE.0 / Millicents::PER_CENT
        )));
    }
    Ok(store.update_key(&key.id, &update).await?)
}

pub async fn delete_key(store: &dyn Store, id_or_secret: &str) -> Result<ApiKey, AdminError> {
    let key = find_key(store, id_or_secret).await?;
    store.delete_key(&key.id, Timestamp::now()).await?;
    Ok(key)
}

/// Adds credits to an account (a top-up ledger entry).
pub async fn add_credits(
    store: &dyn Store,
    account: &Account,
    cents: i64,
    memo: &str,
) -> Result<LedgerEntry, AdminError> {
    if !(1..=MAX_CREDIT_CENTS).contains(&cents) {
        return Err(AdminError::Invalid(format!(
            "--cents must be a whole number of cents from 1 to {MAX_CREDIT_CENTS}"
        )));
    }
    let amount = Millicents::from_cents(cents)
        .ok_or_else(|| AdminError::Invalid("amount too large".into()))?;
    check_note(memo).map_err(AdminError::Invalid)?;
    store
        .add_credits(&account.id, amount, memo, None, Timestamp::now())
        .await
        .map_err(|e| match e {
            StoreError::Conflict(m) => AdminError::Invalid(m),
            e => AdminError::Store(e),
        })
}

/// The longest note of a credit (a top-up's or a grant's), in characters.
pub const MAX_NOTE_CHARS: usize = 200;

/// A credit's note is shown to the credited account in its ledger: at most
/// [`MAX_NOTE_CHARS`], and held to what key names are ([`is_unsafe_char`]).
pub fn check_note(memo: &str) -> Result<(), String> {
    if memo.chars().count() > MAX_NOTE_CHARS {
        return Err(format!("The note is at most {MAX_NOTE_CHARS} characters"));
    }
    if memo.chars().any(is_unsafe_char) {
        return Err(
            "The note cannot contain control characters, nor invisible or format ones \
                    (such as newlines, escapes, zero-width spaces or direction marks)"
                .into(),
        );
    }
    Ok(())
}

/// The welcome credit of `[accounts] signup_credit_cents`, checked: from 0 to
/// [`MAX_CREDIT_CENTS`], the most one grant may add.
pub fn signup_credit(cents: i64) -> Result<Millicents, String> {
    if !(0..=MAX_CREDIT_CENTS).contains(&cents) {
        return Err(format!(
            "accounts.signup_credit_cents: must be a whole number of cents from 0 to {MAX_CREDIT_CENTS}, not {cents}"
        ));
    }
    Millicents::from_cents(cents).ok_or_else(|| "accounts.signup_credit_cents: too large".into())
}

/// The most one `credits add` may add: ten million dollars, far above any real top-up and far
/// below the balance's integer range.
pub const MAX_CREDIT_CENTS: i64 = 1_000_000_000;

/// Every account, oldest first.
pub async fn list_accounts(store: &dyn Store) -> Result<Vec<Account>, AdminError> {
    Ok(store.list_accounts().await?)
}

/// Makes an account an administrator (may grant credits in the dashboard), or not.
pub async fn set_admin(store: &dyn Store, email: &str, admin: bool) -> Result<Account, AdminError> {
    let account = account_by_email(store, email).await?;
    Ok(store.set_admin(&account.id, admin).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_that_fold_onto_ascii_do_not_make_another_spelling_of_an_address() {
        assert!(normalize_email("\u{212A}ate@example.com").is_err());
        assert_eq!(
            normalize_email(" Kate@Example.COM ").unwrap(),
            "kate@example.com"
        );
    }

    #[test]
    fn a_database_without_a_connection_to_spare_is_a_503_not_a_500() {
        let e = internal(StoreError::Unavailable("too many clients".into()));
        assert_eq!(e.code, ErrorCode::ServiceUnavailable);
        let e = internal(StoreError::Backend("disk I/O error".into()));
        assert_eq!(e.code, ErrorCode::Internal);
    }
}

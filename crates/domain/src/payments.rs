//! The payment-provider contract behind Settings → Credits → Top up. The first implementation is
//! Stripe Checkout (`runbase-payments`); the store credits a payment once, whatever the provider
//! delivers twice.

use async_trait::async_trait;

/// What the dashboard asks a provider for: a hosted page where the user pays `amount_cents`.
#[derive(Debug, Clone)]
pub struct CheckoutRequest {
    pub account_id: String,
    pub email: String,
    pub amount_cents: i64,
    /// Where the provider sends the user after paying, and after giving up.
    pub success_url: String,
    pub cancel_url: String,
}

/// A checkout the provider created: its id (kept with the pending payment) and the page to send
/// the user to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    pub id: String,
    pub url: String,
}

/// A payment the provider says has been made, read from a verified webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaidCheckout {
    /// The provider's event id (replay protection: each event is applied once).
    pub event_id: String,
    /// The checkout's id, as returned by [`PaymentProvider::create_checkout`].
    pub checkout_id: String,
    /// The account the checkout was created for (Stripe: `client_reference_id`).
    pub account_id: Option<String>,
    /// What was paid, in the smallest unit of `currency`.
    pub amount_cents: i64,
    /// Lower-case ISO code, e.g. `usd`.
    pub currency: String,
}

/// What a verified webhook means for Runbase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// Credit the account.
    Paid(PaidCheckout),
    /// A genuine event Runbase has nothing to do for (another type, or not paid yet).
    Ignored { event_id: String, kind: String },
}

/// Why a provider call or a webhook failed.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    /// The webhook's signature is missing, malformed or does not match: not from the provider.
    #[error("webhook signature: {0}")]
    BadSignature(String),
    /// The signature is valid but older than the tolerance: a replay, or a badly skewed clock.
    #[error("webhook timestamp outside the tolerance of {tolerance_secs} s")]
    Stale { tolerance_secs: u64 },
    /// Signed, but not an event shape Runbase understands.
    #[error("webhook payload: {0}")]
    Malformed(String),
    /// The provider's API refused or failed; the detail is for the log, not the user.
    #[error("payment provider: {0}")]
    Upstream(String),
}

/// The default cap on a webhook body, read only once its header passed
/// [`PaymentProvider::precheck_webhook`]. A Stripe `checkout.session.completed` event is a few
/// kilobytes; Stripe documents no maximum, but the largest part a sender controls, metadata
/// (50 keys of 40 characters, values of 500), is under 30 KB even escaped: 128 KiB has margin.
pub const WEBHOOK_BODY_LIMIT: usize = 128 * 1024;

/// A payment provider: creates hosted checkouts and verifies the webhooks that confirm them.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Short stable name, used in URLs (`/webhooks/{name}`) and stored with each payment.
    fn name(&self) -> &'static str;
    /// The request header carrying the webhook's signature (lower-case).
    fn signature_header(&self) -> &'static str;
    /// The currency checkouts are made in (lower-case ISO code).
    fn currency(&self) -> &str;
    /// The origins (`https://host`) a checkout page may be served from: the dashboard's top-up
    /// form is redirected there, and its page's `form-action` policy must allow it.
    fn checkout_origins(&self) -> Vec<String> {
        Vec::new()
    }
    async fn create_checkout(&self, req: &CheckoutRequest) -> Result<Checkout, PaymentError>;
    /// What can be checked of a webhook delivery from its signature header alone, at
    /// `now_unix` seconds, before its body is read: a missing, malformed or stale header is
    /// refused without the body costing anything. The full check is [`Self::verify_webhook`].
    fn precheck_webhook(&self, signature: Option<&str>, now_unix: i64) -> Result<(), PaymentError> {
        let _ = now_unix;
        match signature.map(str::trim) {
            Some(s) if !s.is_empty() => Ok(()),
            _ => Err(PaymentError::BadSignature("no signature header".into())),
        }
    }
    /// The largest webhook body read; a larger one is refused (`413`) unread.
    fn max_webhook_body(&self) -> usize {
        WEBHOOK_BODY_LIMIT
    }
    /// Verifies a webhook delivery (`signature` is the provider's signature header) at
    /// `now_unix` seconds and reads it.
    fn verify_webhook(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now_unix: i64,
    ) -> Result<WebhookEvent, PaymentError>;
}

// --- the operations the dashboard and the webhook endpoint call ---------------------------------

use crate::account::Account;
use crate::error::{ApiError, ErrorCode};
use crate::money::Millicents;
use crate::service::internal;
use crate::store::{PaymentCredit, Store};
use crate::time::Timestamp;

/// Smallest and largest top-up, in cents.
pub const MIN_TOPUP_CENTS: i64 = 500;
pub const MAX_TOPUP_CENTS: i64 = 1_000_000;

/// Starts a top-up: creates the provider's checkout and records it as pending. Returns the page
/// to send the user to. `return_url` is the Settings → Credits page the user comes back to.
pub async fn start_topup(
    store: &dyn Store,
    provider: &dyn PaymentProvider,
    account: &Account,
    amount_cents: i64,
    return_url: &str,
) -> Result<Checkout, ApiError> {
    if !(MIN_TOPUP_CENTS..=MAX_TOPUP_CENTS).contains(&amount_cents) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "A top-up is between {} and {}",
                crate::money::format_cents(MIN_TOPUP_CENTS),
                crate::money::format_cents(MAX_TOPUP_CENTS)
            ),
        ));
    }
    let amount = Millicents::from_cents(amount_cents)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "amount too large"))?;
    let req = CheckoutRequest {
        account_id: account.id.clone(),
        email: account.email.clone(),
        amount_cents,
        success_url: format!("{return_url}?topup=success"),
        cancel_url: format!("{return_url}?topup=canceled"),
    };
    let checkout = provider.create_checkout(&req).await.map_err(|e| {
        tracing::error!(error = %e, payments.provider = provider.name(), "creating a checkout failed");
        ApiError::from(ErrorCode::PaymentProviderError)
    })?;
    store
        .create_payment(
            provider.name(),
            &checkout.id,
            &account.id,
            amount,
            Timestamp::now(),
        )
        .await
        .map_err(internal)?;
    Ok(checkout)
}

/// What a webhook delivery did, for the log and the provider's dashboard.
#[derive(Debug, Clone, PartialEq)]
pub enum WebhookResult {
    Applied(PaymentCredit),
    Ignored(String),
}

/// Verifies and applies a webhook delivery. A delivery that does not verify is refused; a
/// genuine one is acknowledged even when there is nothing to do, so the provider stops
/// resending it.
/// Refuses a webhook delivery by its signature header alone (see
/// [`PaymentProvider::precheck_webhook`]), as [`apply_webhook`] would refuse it.
pub fn precheck_webhook(
    provider: &dyn PaymentProvider,
    signature: Option<&str>,
) -> Result<(), ApiError> {
    let now = Timestamp::now().0.div_euclid(1_000_000);
    provider
        .precheck_webhook(signature, now)
        .map_err(|e| refused(provider, e))
}

fn refused(provider: &dyn PaymentProvider, e: PaymentError) -> ApiError {
    match e {
        PaymentError::Malformed(m) => ApiError::new(ErrorCode::InvalidRequest, m),
        e => {
            tracing::warn!(error = %e, payments.provider = provider.name(), "webhook refused");
            ApiError::new(ErrorCode::InvalidSignature, e.to_string())
        }
    }
}

pub async fn apply_webhook(
    store: &dyn Store,
    provider: &dyn PaymentProvider,
    signature: Option<&str>,
    body: &[u8],
) -> Result<WebhookResult, ApiError> {
    let now = Timestamp::now().0.div_euclid(1_000_000);
    let event = provider
        .verify_webhook(signature, body, now)
        .map_err(|e| refused(provider, e))?;
    let paid = match event {
        WebhookEvent::Ignored { kind, .. } => return Ok(WebhookResult::Ignored(kind)),
        WebhookEvent::Paid(p) => p,
    };
    if paid.currency != provider.currency() {
        tracing::error!(
            payments.checkout = %paid.checkout_id,
            currency = %paid.currency,
            "a payment in another currency than configured was not credited"
        );
        return Ok(WebhookResult::Ignored(format!(
            "currency {}",
            paid.currency
        )));
    }
    let amount = Millicents::from_cents(paid.amount_cents)
        .filter(|a| *a > Millicents::ZERO)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "amount_total out of range"))?;
    let credit = store
        .complete_payment(
            provider.name(),
            &paid.event_id,
            &paid.checkout_id,
            paid.account_id.as_deref(),
            amount,
            Timestamp::now(),
        )
        .await
        .map_err(internal)?;
    match &credit {
        PaymentCredit::Credited(entry) => tracing::info!(
            payments.checkout = %paid.checkout_id,
            account.id = %entry.account_id,
            amount_cents = paid.amount_cents,
            "top-up credited"
        ),
        PaymentCredit::UnknownCheckout => tracing::warn!(
            payments.checkout = %paid.checkout_id,
            "a paid checkout that was not started here (or for another account) was not credited"
        ),
        PaymentCredit::AlreadyCredited | PaymentCredit::DuplicateEvent => tracing::info!(
            payments.checkout = %paid.checkout_id,
            "webhook delivered again; already credited"
        ),
    }
    Ok(WebhookResult::Applied(credit))
}

/// An administrator grants credits to an account (a ledger entry naming the administrator).
pub async fn grant(
    store: &dyn Store,
    admin: &Account,
    to_email: &str,
    cents: i64,
    memo: &str,
) -> Result<crate::account::LedgerEntry, ApiError> {
    if !admin.admin {
        return Err(ErrorCode::AdminOnly.into());
    }
    let to = crate::service::account_by_email(store, to_email)
        .await
        .map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))?;
    let most = MAX_TOPUP_CENTS * 100;
    if !(1..=most).contains(&cents) {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("The amount must be a whole number of cents from 1 to {most}"),
        ));
    }
    let amount = Millicents::from_cents(cents)
        .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "amount too large"))?;
    let memo = memo.trim();
    let memo = if memo.is_empty() {
        "Granted by an administrator"
    } else {
        memo
    };
    // Shown to the credited account (DECISIONS.md, "Names and emails: no invisible characters").
    crate::service::check_note(memo).map_err(|m| ApiError::new(ErrorCode::InvalidRequest, m))?;
    store
        .add_credits(&to.id, amount, memo, Some(&admin.email), Timestamp::now())
        .await
        .map_err(internal)
}

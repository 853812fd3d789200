//! `POST /webhooks/{provider}`: payment confirmations (Stripe's `checkout.session.completed`).
//! The raw body is what the signature covers, so it is read as bytes, never re-serialized; and
//! it is read only once the signature header is there.

use crate::body::{discard, read_body};
use crate::error::HttpError;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use runbase_domain::ErrorCode;
use runbase_domain::payments::{self, WebhookResult};
use runbase_domain::store::PaymentCredit;
use serde::Serialize;
use utoipa::ToSchema;

/// What became of a delivery.
#[derive(Serialize, ToSchema)]
pub struct WebhookReceipt {
    /// Always `true`.
    pub received: bool,
    pub outcome: WebhookOutcome,
}

/// `credited`, `already_credited` (a repeat), `unknown_checkout`, or `ignored` (an event
/// Runbase does not act on).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    Ignored,
    Credited,
    AlreadyCredited,
    UnknownCheckout,
}

#[utoipa::path(
    post,
    path = "/webhooks/{provider}",
    operation_id = "receivePaymentWebhook",
    tag = "server",
    summary = "Payment confirmations from the payment provider (Stripe), signed",
    params(("provider" = String, Path, description = "The configured payment provider, `stripe`")),
    request_body(content = Object, description = "The provider's signed event", content_type = "application/json"),
    responses((status = 200, description = "The event was verified and applied (or ignored)", body = WebhookReceipt)),
)]
pub async fn receive(
    State(state): State<AppState>,
    provider: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<WebhookReceipt>, HttpError> {
    let provider = provider.map_or_else(|_| String::new(), |Path(p)| p);
    // What a refused delivery's body is drained up to (read and dropped, never kept).
    let limit = state.config.body_limit();
    let Some(payments) = state.payments.as_ref().filter(|p| p.name() == provider) else {
        discard(body, limit);
        return Err(ErrorCode::NotFound.into());
    };
    let signature = headers
        .get(payments.signature_header())
        .and_then(|v| v.to_str().ok());
    // No fresh signature header, no reading: a delivery whose header is missing, malformed or
    // stale is refused before its body is buffered, and a body is read only up to the
    // provider's small cap (a few times the largest genuine event), not the API's limit.
    if let Err(e) = payments::precheck_webhook(payments.as_ref(), signature) {
        discard(body, limit);
        return Err(HttpError(e));
    }
    let body = read_body(body, payments.max_webhook_body())
        .await
        .map_err(|e| HttpError(e.into_api(ErrorCode::InvalidRequest)))?;
    let result =
        payments::apply_webhook(state.store.as_ref(), payments.as_ref(), signature, &body).await?;
    let outcome = match result {
        WebhookResult::Ignored(_) => WebhookOutcome::Ignored,
        WebhookResult::Applied(PaymentCredit::Credited(_)) => WebhookOutcome::Credited,
        WebhookResult::Applied(PaymentCredit::AlreadyCredited | PaymentCredit::DuplicateEvent) => {
            WebhookOutcome::AlreadyCredited
        }
        WebhookResult::Applied(PaymentCredit::UnknownCheckout) => WebhookOutcome::UnknownCheckout,
    };
    Ok(Json(WebhookReceipt {
        received: true,
        outcome,
    }))
}

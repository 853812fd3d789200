//! `GET /api/v1/account`: the balance, and the calling key's spend, limits and rate-limit
//! state, so a client can check before it submits.

use super::api_key::{authenticate, peer};
use crate::error::HttpError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap};
use runbase_domain::ratelimit::RateDecision;
use runbase_domain::service::internal;
use runbase_domain::time::Timestamp;
use serde_json::{Value, json};

pub async fn get(
    State(state): State<AppState>,
    ext: Extensions,
    headers: HeaderMap,
) -> Result<Json<Value>, HttpError> {
    let key = authenticate(&state, &headers, peer(&ext)).await?;
    let account = state
        .store
        .account(&key.account_id)
        .await
        .map_err(internal)?
        .ok_or_else(|| HttpError::from(runbase_domain::ErrorCode::Internal))?;
    // The limit state is informational here: with a shared limiter unreachable, show the whole
    // limit rather than fail an endpoint that is not itself limited.
    let rate = state
        .runs_limiter
        .peek(&key.id)
        .await
        .unwrap_or_else(|_| RateDecision::unknown(state.config.limits.runs));
    Ok(Json(json!({
        "id": account.id,
        "email": account.email,
        "balanceUsd": account.balance,
        "key": {
            "id": key.id,
            "name": key.name,
            "prefix": key.prefix,
            "status": key.status(Timestamp::now()),
            "test": key.test,
            "spentUsd": key.spent,
            "spendLimitUsd": key.spend_limit,
            "quota": key.quota,
            "quotaUsed": key.runs_created,
            "expiresAt": key.expires_at,
            "allowIps": key.allow_ips.to_strings(),
            "rateLimit": {
                "limit": rate.limit,
                "remaining": rate.remaining,
                "resetSeconds": rate.reset_secs(),
            },
        },
    })))
}

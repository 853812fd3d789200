//! `GET /api/v1/account`: the balance, and the calling key's spend, limits and rate-limit
//! state, so a client can check before it submits.

use super::api_key::{Peer, authenticate};
use crate::error::HttpError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use runbase_domain::ratelimit::RateDecision;
use runbase_domain::service::internal;
use runbase_domain::time::Timestamp;
use serde::Serialize;
use utoipa::ToSchema;

/// The account of the calling key, and that key.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Account)]
pub struct AccountObject {
    pub id: String,
    pub email: String,
    /// The balance, in integer micro-USD.
    pub balance_usd: i64,
    pub key: KeyObject,
}

/// The calling API key: its state, spend, limits and rate-limit state.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = AccountKey)]
pub struct KeyObject {
    pub id: String,
    pub name: String,
    /// The key's first characters, as the dashboard shows them.
    pub prefix: String,
    #[schema(value_type = String, example = "active")]
    pub status: &'static str,
    /// A test key (`sk-test-...`): its runs are simulated and free.
    pub test: bool,
    /// What the key's runs were charged, in integer micro-USD.
    pub spent_usd: i64,
    /// The key's lifetime spend limit in micro-USD, or `null` for none.
    #[schema(required = true)]
    pub spend_limit_usd: Option<i64>,
    /// The most runs the key may create, or `null` for no quota.
    #[schema(required = true)]
    pub quota: Option<u64>,
    /// The runs the key has created.
    pub quota_used: u64,
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub expires_at: Option<Timestamp>,
    /// The addresses and CIDR blocks the key is limited to (empty: any).
    pub allow_ips: Vec<String>,
    pub rate_limit: RateLimitObject,
}

/// The runs rate limit of the key, as the `RateLimit-*` headers show it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = RateLimitState)]
pub struct RateLimitObject {
    pub limit: u32,
    pub remaining: u32,
    pub reset_seconds: u64,
}

#[utoipa::path(
    get,
    path = "/api/v1/account",
    operation_id = "getAccount",
    tag = "account",
    summary = "The balance and the calling key's spend, limits and rate-limit state",
    security(("bearer" = [])),
    responses((status = 200, description = "The account and the key", body = AccountObject)),
)]
pub async fn get(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
) -> Result<Json<AccountObject>, HttpError> {
    let key = authenticate(&state, &headers, peer).await?;
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
    Ok(Json(AccountObject {
        id: account.id,
        email: account.email,
        balance_usd: account.balance.micro_usd(),
        key: KeyObject {
            status: key.status(Timestamp::now()),
            spent_usd: key.spent.micro_usd(),
            spend_limit_usd: key.spend_limit.map(|l| l.micro_usd()),
            quota: key.quota,
            quota_used: key.runs_created,
            expires_at: key.expires_at,
            allow_ips: key.allow_ips.to_strings(),
            rate_limit: RateLimitObject {
                limit: rate.limit,
                remaining: rate.remaining,
                reset_seconds: rate.reset_secs(),
            },
            id: key.id,
            name: key.name,
            prefix: key.prefix,
            test: key.test,
        },
    }))
}

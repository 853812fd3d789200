//! API-key authentication for the `/api/v1` routes, in the spec's check order.

use crate::client_ip::client_ip;
use crate::error::HttpError;
use crate::state::AppState;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use runbase_domain::account::ApiKey;
use runbase_domain::auth;
use runbase_domain::ratelimit::RateDecision;
use runbase_domain::time::Timestamp;
use runbase_domain::{ApiError, ErrorCode};
use std::net::SocketAddr;

/// The socket peer, when the server was started with connection info.
pub fn peer(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Steps 1–3: header, key, IP allowlist.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<ApiKey, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let now = Timestamp::now();
    let key = auth::authenticate(state.store.as_ref(), header, now).await?;
    if auth::should_touch(&key, now) {
        // Off the request's path: a lost touch only makes "last used" a minute staler.
        let (store, id) = (state.store.clone(), key.id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&id, now).await {
                tracing::warn!(error = %e, key.id = %id, "recording a key's last use failed");
            }
        });
    }
    if !key.allow_ips.is_empty() {
        let ip = client_ip(peer, headers, &state.config.trusted_proxies).ok_or_else(|| {
            ApiError::new(
                ErrorCode::IpNotAllowed,
                "Your IP address could not be determined",
            )
        })?;
        auth::check_ip(&key, ip)?;
    }
    Ok(key)
}

/// Steps 1–4 for the runs endpoints: authenticated and within the key's rate limit. The
/// decision is returned so that every response can carry the limit state.
pub async fn authorize_runs(
    state: &AppState,
    req_headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<(ApiKey, RateDecision), Response> {
    let key = authenticate(state, req_headers, peer)
        .await
        .map_err(|e| HttpError(e).into_response())?;
    let decision = state
        .runs_limiter
        .check(&key.id)
        .await
        .map_err(|_| HttpError::from(ErrorCode::ServiceUnavailable).into_response())?;
    if !decision.allowed {
        return Err(rate_limited(&decision));
    }
    Ok((key, decision))
}

/// `429 RATE_LIMITED` for a refused decision, with `Retry-After` and the `RateLimit-*` headers.
pub fn rate_limited(decision: &RateDecision) -> Response {
    let mut resp = HttpError::from(ErrorCode::RateLimited).into_response();
    add_rate_headers(resp.headers_mut(), decision);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(decision.reset_secs().max(1)),
    );
    resp
}

/// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`.
pub fn add_rate_headers(headers: &mut HeaderMap, d: &RateDecision) {
    headers.insert("ratelimit-limit", HeaderValue::from(d.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(d.reset_secs()));
}

/// Attaches the limit state to any response.
pub fn with_rate_headers(resp: impl IntoResponse, d: &RateDecision) -> Response {
    let mut resp = resp.into_response();
    add_rate_headers(resp.headers_mut(), d);
    resp
}

//! API-key authentication for the `/api/v1` routes, in the spec's check order.

use crate::client_ip::client_ip;
use crate::error::HttpError;
use crate::state::AppState;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use runbase_domain::account::ApiKey;
use runbase_domain::auth::{self, KeySeen};
use runbase_domain::ratelimit::RateDecision;
use runbase_domain::run::Run;
use runbase_domain::service;
use runbase_domain::time::Timestamp;
use runbase_domain::{ApiError, ErrorCode};
use std::net::SocketAddr;

/// The socket peer, when the server was started with connection info.
pub fn peer(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// [`peer`] as an extractor. It reads the one extension in place, where axum's `Extensions`
/// extractor copies them all (a map and a box per extension, on every request).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(peer(&parts.extensions)))
    }
}

/// Steps 1–3: header, key, IP allowlist.
pub async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<ApiKey, ApiError> {
    let now = Timestamp::now();
    let hash = auth::key_hash(auth_header(headers))?;
    let found = state
        .store
        .key_by_hash(&hash)
        .await
        .map_err(service::internal)?;
    admit_key(
        state,
        headers,
        peer,
        auth::usable(found, &hash, now)?,
        now,
        true,
    )
}

fn auth_header(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Step 3 for a usable key just read (`whole`: every column of it): the allowlist. Records the
/// key's use, and remembers it for [`authorize_runs_and_read`]'s early refusal and, read whole,
/// for [`authorize_create`].
fn admit_key(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    key: ApiKey,
    now: Timestamp,
    whole: bool,
) -> Result<ApiKey, ApiError> {
    check_ip(state, headers, peer, &key)?;
    if auth::should_touch(&key, now) {
        // Off the request's path: a lost touch only makes "last used" a minute staler.
        let (store, id) = (state.store.clone(), key.id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.touch_key(&id, now).await {
                tracing::warn!(error = %e, key.id = %id, "recording a key's last use failed");
            }
        });
    }
    state.recent_keys.put(&key, whole);
    Ok(key)
}

fn check_ip(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    key: &ApiKey,
) -> Result<(), ApiError> {
    if key.allow_ips.is_empty() {
        return Ok(());
    }
    let ip = client_ip(peer, headers, &state.config.trusted_proxies).ok_or_else(|| {
        ApiError::new(
            ErrorCode::IpNotAllowed,
            "Your IP address could not be determined",
        )
    })?;
    auth::check_ip(key, ip)
}

/// Steps 1–4 for the runs endpoints: authenticated and within the key's rate limit. The
/// decision is returned so that every response can carry the limit state.
pub async fn authorize_runs(
    state: &AppState,
    req_headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<(ApiKey, RateDecision), Response> {
    let (key, decision, _) = authorize_runs_and_read(state, req_headers, peer, None).await?;
    Ok((key, decision))
}

/// [`authorize_runs`] that also reads the run `run_id`, when given, if it is the key's
/// account's: in the same store call as the key (one statement where the store can).
///
/// A key this node authenticated within [`auth::RECENT_KEY_TTL`] is put to the limiter before
/// its row is read: when the limiter refuses, the answer is 429 without a database read (the
/// cheap path a flood of over-limit requests takes). Every admitted request reads the key's
/// current row and passes steps 1–3 on it.
pub async fn authorize_runs_and_read(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    run_id: Option<&str>,
) -> Result<(ApiKey, RateDecision, Option<Run>), Response> {
    let now = Timestamp::now();
    let hash = auth::key_hash(auth_header(headers)).map_err(refuse)?;
    authorize_hashed(state, headers, peer, &hash, now, run_id).await
}

/// A create's key: read for the request, or this node's remembered copy ([`KeySeen`]).
#[allow(
    clippy::large_enum_variant,
    reason = "one per create, on its task's stack; boxing the read key would cost an allocation"
)]
pub enum CreateKey {
    Read(ApiKey),
    Remembered(std::sync::Arc<ApiKey>),
}

impl CreateKey {
    pub fn seen(&self) -> KeySeen {
        match self {
            CreateKey::Read(_) => KeySeen::Read,
            CreateKey::Remembered(_) => KeySeen::Remembered,
        }
    }
}

impl std::ops::Deref for CreateKey {
    type Target = ApiKey;

    fn deref(&self) -> &ApiKey {
        match self {
            CreateKey::Read(key) => key,
            CreateKey::Remembered(key) => key,
        }
    }
}

/// [`authorize_runs`] for a create without an idempotency key. A key this node read whole within
/// [`auth::RECENT_KEY_TTL`] whose copy is usable and has no IP allowlist is taken as it is
/// remembered ([`KeySeen::Remembered`]) once the limiter admits it, without reading its row. A
/// create has the key's row read anyway: its store transaction locks the row and checks the key
/// on it ([`runbase_domain::run::NewRun::key_remembered`]), and `runs::create` answers anything
/// the copy could have got wrong from the row. So a disabled key still fails on its very next
/// request, and a create costs one read of the key instead of two.
pub async fn authorize_create(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
) -> Result<(CreateKey, RateDecision), Response> {
    let now = Timestamp::now();
    let hash = auth::key_hash(auth_header(headers)).map_err(refuse)?;
    if let Some(recent) = state.recent_keys.get_whole(&hash)
        && recent.is_usable(now)
        && recent.allow_ips.is_empty()
    {
        let decision = limit(state, &recent.id).await?;
        if !decision.allowed {
            return Err(runs_rate_limited(state, &decision));
        }
        return Ok((CreateKey::Remembered(recent), decision));
    }
    let (key, decision, _) = authorize_hashed(state, headers, peer, &hash, now, None).await?;
    Ok((CreateKey::Read(key), decision))
}

fn refuse(e: ApiError) -> Response {
    HttpError(e).into_response()
}

/// [`authorize_runs_and_read`] once the header's key is hashed.
async fn authorize_hashed(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    hash: &runbase_domain::ids::KeyHash,
    now: Timestamp,
    run_id: Option<&str>,
) -> Result<(ApiKey, RateDecision, Option<Run>), Response> {
    let mut decided = None;
    if let Some(recent) = state.recent_keys.get(hash)
        && recent.is_usable(now)
        && check_ip(state, headers, peer, &recent).is_ok()
    {
        let decision = limit(state, &recent.id).await?;
        if !decision.allowed {
            return Err(runs_rate_limited(state, &decision));
        }
        decided = Some((recent, decision));
    }
    let (found, run) = match run_id {
        Some(id) => state.store.key_and_run(hash, id).await,
        None => state.store.key_by_hash(hash).await.map(|k| (k, None)),
    }
    .map_err(|e| refuse(service::internal(e)))?;
    let key = auth::usable(found, hash, now)
        // `key_and_run` may leave columns out of the key (`Store::key_and_run`).
        .and_then(|key| admit_key(state, headers, peer, key, now, run_id.is_none()))
        .map_err(refuse)?;
    let decision = match decided {
        Some((recent, decision)) if recent.id == key.id => decision,
        _ => limit(state, &key.id).await?,
    };
    if !decision.allowed {
        return Err(runs_rate_limited(state, &decision));
    }
    Ok((key, decision, run))
}

/// Step 4: one request of the key counted by the runs limiter.
async fn limit(state: &AppState, key_id: &str) -> Result<RateDecision, Response> {
    state
        .runs_limiter
        .check(key_id)
        .await
        .map_err(|_| HttpError::from(ErrorCode::ServiceUnavailable).into_response())
}

/// `429 RATE_LIMITED` for a refused decision of the runs limiter, counted in the metrics.
pub fn runs_rate_limited(state: &AppState, decision: &RateDecision) -> Response {
    state.metrics.rate_limited("runs");
    rate_limited(decision)
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

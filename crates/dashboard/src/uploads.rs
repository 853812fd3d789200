//! `POST /files`: the Playground's upload, with the session instead of an API key. The same
//! function as `POST /api/v1/files` underneath ([`runbase_http::upload::receive`]), the same
//! JSON answer. The session and its CSRF token (the `X-CSRF-Token` header: a file form's body is
//! read only after the check) are checked before a byte of the body is read.

use crate::web::{MaybeViewer, check_csrf};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use runbase_domain::ErrorCode;
use runbase_http::AppState;
use runbase_http::body::discard;
use runbase_http::error::HttpError;

pub async fn create(
    State(state): State<AppState>,
    MaybeViewer(viewer): MaybeViewer,
    runbase_http::routes::api_key::Peer(peer): runbase_http::routes::api_key::Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A JSON endpoint: every refusal is the envelope, whatever the caller accepts.
    let checked = match &viewer {
        None => Err(ErrorCode::NotLoggedIn.into()),
        Some(v) => check_csrf(&headers, v, None).map(|()| v),
    };
    let viewer = match checked {
        Ok(v) => v,
        Err(e) => {
            discard(body, state.config.body_limit());
            return HttpError(e).into_response();
        }
    };
    // The runs limit, per account, as `POST /api/v1/files` counts it per key: a session must
    // not upload faster than a key may.
    let limited = state
        .runs_limiter
        .check(&format!("session-upload:{}", viewer.account.id))
        .await;
    let refusal = match limited {
        Ok(d) if d.allowed => None,
        Ok(d) => {
            state.metrics.rate_limited("uploads");
            Some(runbase_http::routes::api_key::rate_limited(&d))
        }
        Err(_) => Some(HttpError::from(ErrorCode::ServiceUnavailable).into_response()),
    };
    if let Some(resp) = refusal {
        discard(body, state.config.body_limit());
        return resp;
    }
    match runbase_http::upload::receive(&state, &viewer.account.id, peer, &headers, body).await {
        Ok(answer) => (StatusCode::CREATED, Json(answer)).into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

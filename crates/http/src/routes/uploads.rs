//! `POST /api/v1/files`: uploads an image, video or audio file for a run's input (see
//! [`crate::upload`]). The key, its allowlist and its rate limit (the runs limit) are checked
//! before a byte of the body is read.

use super::api_key::{authorize_runs, peer, with_rate_headers};
use crate::body::discard;
use crate::error::HttpError;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::Response;

pub async fn create(
    State(state): State<AppState>,
    ext: Extensions,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (key, rate) = match authorize_runs(&state, &headers, peer(&ext)).await {
        Ok(ok) => ok,
        Err(resp) => {
            discard(body, state.config.body_limit());
            return resp;
        }
    };
    match crate::upload::receive(&state, &key.account_id, peer(&ext), &headers, body).await {
        Ok(answer) => with_rate_headers((StatusCode::CREATED, Json(answer)), &rate),
        Err(e) => with_rate_headers(HttpError(e), &rate),
    }
}

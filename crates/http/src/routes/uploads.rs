//! `POST /api/v1/files`: uploads an image, video or audio file for a run's input (see
//! [`crate::upload`]). The key, its allowlist and its rate limit (the runs limit) are checked
//! before a byte of the body is read.

use super::api_key::{Peer, authorize_runs, with_rate_headers};
use crate::body::discard;
use crate::error::HttpError;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa::ToSchema;

/// The upload form: one field named `file` (other fields are ignored).
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "documents the form; the body is read as it arrives"
)]
pub struct UploadForm {
    /// The file: PNG, JPEG, WebP, GIF, MP4, MOV, WebM, MP3, WAV, OGG or FLAC (read from its
    /// content, never its name).
    #[schema(value_type = String, format = Binary)]
    file: Vec<u8>,
}

#[utoipa::path(
    post,
    path = "/api/v1/files",
    operation_id = "uploadFile",
    tag = "files",
    summary = "Upload a file for a run's input (its URL goes into `image_urls`)",
    security(("bearer" = [])),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses((status = 201, description = "Where the file is and what it was found to be", body = crate::upload::UploadAnswer)),
)]
pub async fn create(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let (key, rate) = match authorize_runs(&state, &headers, peer).await {
        Ok(ok) => ok,
        Err(resp) => {
            discard(body, state.config.body_limit());
            return resp;
        }
    };
    match crate::upload::receive(&state, &key.account_id, peer, &headers, body).await {
        Ok(answer) => with_rate_headers((StatusCode::CREATED, Json(answer)), &rate),
        Err(e) => with_rate_headers(HttpError(e), &rate),
    }
}

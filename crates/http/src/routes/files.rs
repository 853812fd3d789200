//! `GET /files/{run_id}/{name}`: run outputs, and `GET /files/{upload_id}/{name}`: uploads. URLs
//! are unguessable (the run id carries ~82 random bits and the file name a random part of its
//! own, learned only from the succeeded run; an upload id as many, learned only from the
//! upload's answer), so like the providers' own output URLs they need no key, and an upstream
//! given an upload's URL can fetch it. Files are model output or user content, not Runbase's
//! pages: they are served sandboxed and never sniffed into something executable. The body is
//! streamed from the storage (local file or S3 object) as the client reads it.

use crate::error::HttpError;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use runbase_domain::ErrorCode;

#[utoipa::path(
    get,
    path = "/files/{run_id}/{name}",
    operation_id = "getFile",
    tag = "files",
    summary = "An output file of a run, or an uploaded file (public: the URL is unguessable)",
    params(
        ("run_id" = String, Path, description = "The run's id (`run_...`) or the upload's (`upl_...`)"),
        ("name" = String, Path, description = "The file's name, from `output.urls` or the upload's `url`"),
    ),
    responses((status = 200, description = "The file, streamed, with the type its name gives (image, video, audio, text)")),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, HttpError> {
    let Ok(Path((run_id, name))) = path else {
        return Err(ErrorCode::NotFound.into());
    };
    let path = format!("{run_id}/{name}");
    let owned = run_id.starts_with("run_") || run_id.starts_with("upl_");
    if !owned || !runbase_domain::files::is_safe_path(&path) {
        return Err(ErrorCode::NotFound.into());
    }
    // A read changes nothing: storage that cannot answer (S3 down, a disk error) is a 503 the
    // client may retry, as for uploads.
    let file = state.files.open(&path).await.map_err(|e| {
        tracing::error!(error = %e, "reading an output file failed");
        HttpError::from(ErrorCode::ServiceUnavailable)
    })?;
    let file = file.ok_or(ErrorCode::NotFound)?;
    // Streamed from the storage in chunks: a large file is never held whole in memory.
    let mut resp = Body::from_stream(file.body).into_response();
    if let Some(size) = file.size {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    }
    let ct = HeaderValue::from_str(&file.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    resp.headers_mut().insert(header::CONTENT_TYPE, ct);
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox; default-src 'none'; img-src 'self'; media-src 'self'"),
    );
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    Ok(resp)
}

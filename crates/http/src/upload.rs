//! Receiving an uploaded file: a `multipart/form-data` body with one field named `file`, read
//! as it arrives and never past the configured cap or the account's quota, and written to the
//! storage as it comes ([`runbase_domain::uploads::Incoming`]): what one upload holds in
//! memory is a few chunks, whatever the file's size. Shared by `POST /api/v1/files` (API key)
//! and the dashboard's `POST /files` (session); both call [`receive`] once the caller is known.

use crate::body::{BodyError, classify, discard};
use crate::state::AppState;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, header};
use futures_util::Stream;
use http_body::Body as _;
use http_body_util::BodyExt;
use runbase_domain::time::Timestamp;
use runbase_domain::uploads::{self, Incoming, Upload};
use runbase_domain::{ApiError, ErrorCode};
use serde::Serialize;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// The answer to an upload (`201`): where the file is and what it was found to be.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = Upload)]
pub struct UploadAnswer {
    /// `upl_...`.
    pub id: String,
    /// Absolute, under the server's public URL; usable in a run's `image_urls`.
    pub url: String,
    /// The type read from the file's content.
    pub content_type: String,
    pub size_bytes: u64,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

impl UploadAnswer {
    pub fn new(public_url: &str, u: &Upload) -> Self {
        UploadAnswer {
            id: u.id.clone(),
            url: uploads::file_url(public_url, &u.path),
            content_type: u.content_type.clone(),
            size_bytes: u.size_bytes,
            created_at: u.created_at,
        }
    }
}

/// What the form around the file may add to the cap: the boundaries and part headers, and
/// small fields a client sends beside the file.
const FORM_OVERHEAD: u64 = 64 * 1024;

/// Reads the upload of `account_id` from `body`, streaming the file into the storage as it
/// arrives (see [`Incoming`]), and answers once it is stored and recorded. Every refusal leaves
/// the unread rest of the body to [`discard`], so a client still sending reads its answer.
pub async fn receive(
    state: &AppState,
    account_id: &str,
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    body: Body,
) -> Result<UploadAnswer, ApiError> {
    let limits = state.config.upload_limits();
    let max = limits.max_bytes;
    let drain_limit = usize::try_from(max.saturating_add(FORM_OVERHEAD)).unwrap_or(usize::MAX);
    // Held until the answer: this node receives a bounded number at once (`UploadSlots`).
    let ip = crate::client_ip::client_ip(peer, headers, &state.config.trusted_proxies);
    let _slot = match state.upload_slots.take(account_id, ip) {
        Ok(slot) => slot,
        Err(e) => {
            discard(body, drain_limit);
            return Err(e);
        }
    };
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|ct| multer::parse_boundary(ct).ok());
    let Some(boundary) = boundary else {
        discard(body, drain_limit);
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            "Send the file as multipart/form-data, in one field named \"file\"",
        ));
    };
    if body.size_hint().lower() > max.saturating_add(FORM_OVERHEAD) {
        discard(body, drain_limit);
        return Err(uploads::too_large(max));
    }
    // An account whose uploads fill its quota is refused before the body is read.
    let incoming = match Incoming::start(
        state.store.as_ref(),
        state.files.as_ref(),
        account_id,
        limits,
    )
    .await
    {
        Ok(i) => i,
        Err(e) => {
            discard(body, drain_limit);
            return Err(e);
        }
    };
    let shared = Arc::new(Mutex::new(Some(body)));
    let failure = Arc::new(Mutex::new(None));
    let stream = CappedBody {
        body: shared.clone(),
        failure: failure.clone(),
        seen: 0,
        cap: max.saturating_add(FORM_OVERHEAD),
    };
    let form = multer::Multipart::new(stream, boundary);
    let read = read_form(form, incoming, max, &failure, &shared).await;
    // Whatever was not read (after a refusal) is drained behind the answer.
    if let Some(rest) = shared.lock().ok().and_then(|mut b| b.take()) {
        discard(rest, drain_limit);
    }
    let upload = read?;
    Ok(UploadAnswer::new(&state.config.public_url, &upload))
}

/// Reads the form: the one `file` field goes to `incoming` as it arrives, other fields are
/// read past and dropped. The file is kept only when the whole body has arrived as declared.
async fn read_form(
    mut form: multer::Multipart<'static>,
    mut incoming: Incoming<'_>,
    max: u64,
    failure: &Mutex<Option<BodyError>>,
    body: &Mutex<Option<Body>>,
) -> Result<Upload, ApiError> {
    let broken = |e: multer::Error| -> ApiError {
        match failure.lock().ok().and_then(|f| *f) {
            Some(BodyError::TooLarge) => uploads::too_large(max),
            Some(e) => e.into_api(ErrorCode::InvalidRequest),
            None => ApiError::new(
                ErrorCode::InvalidRequest,
                format!("The body is not a valid multipart/form-data form: {e}"),
            ),
        }
    };
    let read = async {
        let mut seen_file = false;
        while let Some(mut field) = form.next_field().await.map_err(broken)? {
            let is_file = field.name() == Some("file");
            if is_file && seen_file {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "The form has more than one field named \"file\"; send one file per request",
                ));
            }
            while let Some(chunk) = field.chunk().await.map_err(broken)? {
                if is_file {
                    incoming.write(chunk).await?;
                }
            }
            seen_file |= is_file;
        }
        if !seen_file {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "The form has no field named \"file\"; send the file as multipart/form-data in a field named \"file\"",
            ));
        }
        drop(form);
        rest_of_body(body).await
    }
    .await;
    match read {
        Ok(()) => incoming.finish().await,
        Err(e) => {
            incoming.abort().await;
            Err(e)
        }
    }
}

/// After the form's closing boundary: reads the body to its end (a short epilogue at most).
/// A body that does not end there (a `Content-Length` larger than the form, whose rest never
/// comes) is not a complete request, and its file is not kept.
async fn rest_of_body(body: &Mutex<Option<Body>>) -> Result<(), ApiError> {
    let Some(mut rest) = body.lock().ok().and_then(|mut b| b.take()) else {
        return Ok(());
    };
    let mut seen = 0u64;
    let failed = loop {
        match rest.frame().await {
            None => return Ok(()),
            Some(Ok(frame)) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > FORM_OVERHEAD {
                    break "has more than a short epilogue after the form's end";
                }
            }
            Some(Err(e)) if classify(&e) == BodyError::TimedOut => {
                break "did not end with the form: its Content-Length is larger than the form, and the rest never came";
            }
            Some(Err(_)) => break "could not be read to its end",
        }
    };
    if let Ok(mut b) = body.lock() {
        *b = Some(rest); // drained behind the answer
    }
    Err(ApiError::new(
        ErrorCode::InvalidRequest,
        format!("The request body {failed}; nothing was stored"),
    ))
}

/// The request body as a stream of data for the form parser, which stops at `cap` bytes and
/// records why a read failed (the body deadline, a broken connection, the cap). The body stays
/// reachable through `body`, so what is left of it can be drained after a refusal.
struct CappedBody {
    body: Arc<Mutex<Option<Body>>>,
    failure: Arc<Mutex<Option<BodyError>>>,
    seen: u64,
    cap: u64,
}

impl CappedBody {
    fn fail(&self, why: BodyError) -> Poll<Option<Result<Bytes, std::io::Error>>> {
        if let Ok(mut f) = self.failure.lock() {
            *f = Some(why);
        }
        Poll::Ready(Some(Err(std::io::Error::other(format!("{why:?}")))))
    }
}

impl Stream for CappedBody {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            let polled = {
                let Ok(mut guard) = self.body.lock() else {
                    return self.fail(BodyError::Unreadable);
                };
                let Some(body) = guard.as_mut() else {
                    return Poll::Ready(None);
                };
                Pin::new(body).poll_frame(cx)
            };
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return self.fail(classify(&e)),
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    self.seen += data.len() as u64;
                    if self.seen > self.cap {
                        return self.fail(BodyError::TooLarge);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
            }
        }
    }
}

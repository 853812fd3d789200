//! Reading a request body once the caller has been checked: handlers take the raw [`Body`] and
//! read it here, so a request refused for its key, its signature or its rate limit is answered
//! before its body is buffered.

use axum::body::{Body, Bytes, HttpBody as _};
use bytes::BytesMut;
use http_body_util::BodyExt;
use runbase_domain::{ApiError, ErrorCode};

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the limit (by its `Content-Length`, or as it arrived).
    TooLarge,
    /// Not all there before the server's body timeout.
    TimedOut,
    /// The connection failed or the framing was broken.
    Unreadable,
}

impl BodyError {
    /// The public error; `unreadable` is the code for a broken body (the runs endpoint calls it
    /// `invalid_json`, forms `invalid_request`).
    pub fn into_api(self, unreadable: ErrorCode) -> ApiError {
        match self {
            BodyError::TooLarge => ErrorCode::PayloadTooLarge.into(),
            BodyError::TimedOut => ErrorCode::RequestTimeout.into(),
            BodyError::Unreadable => {
                ApiError::new(unreadable, "The request body could not be read")
            }
        }
    }
}

/// The whole body, at most `limit` bytes. A body found too large is refused at once and its
/// rest discarded in the background (see [`discard`]).
pub async fn read_body(mut body: Body, limit: usize) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > limit as u64 {
        discard(body, limit);
        return Err(BodyError::TooLarge);
    }
    // One allocation of what was declared (`Content-Length`, already within the limit), so the
    // buffer never doubles past it; a body of unknown length grows as it arrives.
    let declared = usize::try_from(body.size_hint().exact().unwrap_or(0)).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(declared.min(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify(&e))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                discard(body, limit);
                return Err(BodyError::TooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// Reads and drops what is left of a body the request was answered without (a missing key, a
/// missing signature, a body too large), at most four times `limit` (or a mebibyte, if more)
/// more bytes and within the body timeout, on a task of its own. The answer goes out at once; draining behind it lets a
/// client that is still sending read that answer, where closing on unread data would reset
/// the connection under it (the "lingering close" of other servers). Nothing is kept, so an
/// unauthenticated upload costs bandwidth only, bounded like any slow body.
pub fn discard(body: Body, limit: usize) {
    if body.is_end_stream() {
        return;
    }
    // Draining keeps nothing, so a small limit (a form's) does not make the drain small: a
    // client still sending a few megabytes gets its answer rather than a reset.
    let cap = limit.max(1 << 20).saturating_mul(4);
    tokio::spawn(async move {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen += data.len();
                if seen > cap {
                    return;
                }
            }
        }
    });
}

/// What a body's read error was: the server's body deadline, or a broken body.
pub fn classify(e: &axum::Error) -> BodyError {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<tower_http::timeout::TimeoutError>() {
            return BodyError::TimedOut;
        }
        cause = c.source();
    }
    BodyError::Unreadable
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::HttpBody;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body whose data never comes.
    struct Silent;

    impl HttpBody for Silent {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn limits_and_timeouts_are_told_apart() {
        assert_eq!(read_body(Body::from("hello"), 5).await.unwrap(), "hello");
        assert_eq!(
            read_body(Body::from("hello!"), 5).await,
            Err(BodyError::TooLarge)
        );
        let slow = Body::new(tower_http::timeout::DeadlineBody::new(
            std::time::Duration::from_millis(10),
            Silent,
        ));
        assert_eq!(read_body(slow, 5).await, Err(BodyError::TimedOut));
    }
}

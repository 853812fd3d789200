//! Reading a request body once the caller has been checked: handlers take the raw [`Body`] and
//! read it here, so a request refused for its key, its signature or its rate limit is answered
//! before its body is buffered.

use axum::body::{Body, Bytes};
use http_body_util::{BodyExt, LengthLimitError, Limited};
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

/// The whole body, at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, BodyError> {
    use axum::body::HttpBody as _;
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) => Err(classify(e.as_ref())),
    }
}

fn classify(e: &(dyn std::error::Error + 'static)) -> BodyError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<LengthLimitError>() {
            return BodyError::TooLarge;
        }
        if c.is::<tower_http::timeout::TimeoutError>() {
            return BodyError::TimedOut;
        }
        if let Some(axum_err) = c.downcast_ref::<axum::Error>() {
            return classify_axum(axum_err);
        }
        cause = c.source();
    }
    BodyError::Unreadable
}

fn classify_axum(e: &axum::Error) -> BodyError {
    match std::error::Error::source(e) {
        Some(inner) => classify(inner),
        None => BodyError::Unreadable,
    }
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

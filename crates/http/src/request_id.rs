//! `Request-Id`: every response carries one, and every line logged while answering the request
//! carries it too (the request's tracing span has it as `request_id`), so a client's report
//! ("request req_... failed") leads to the log lines. A `Request-Id` the client sent is kept when
//! it is a plausible id (1 to 64 of `A-Z a-z 0-9 - _ .`), so a caller's or a proxy's id runs
//! through; anything else is replaced, never echoed into logs.

use axum::http::{HeaderName, HeaderValue};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Sets the request's id before the rest of the stack (tracing included) sees the request, and
/// puts it on the response: a layer written out rather than `axum::middleware::from_fn`, which
/// boxes a clone of the inner service and a future for every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestIdLayer;

impl<S> tower::Layer<S> for RequestIdLayer {
    type Service = WithRequestId<S>;

    fn layer(&self, inner: S) -> WithRequestId<S> {
        WithRequestId { inner }
    }
}

/// The service of [`RequestIdLayer`].
#[derive(Clone, Debug)]
pub struct WithRequestId<S> {
    inner: S,
}

impl<S, B, R> tower::Service<axum::http::Request<B>> for WithRequestId<S>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = IdOnResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: axum::http::Request<B>) -> Self::Future {
        let id = req
            .headers()
            .get(&REQUEST_ID)
            .filter(|v| plausible(v.as_bytes()))
            .cloned()
            .unwrap_or_else(new_id);
        // Handlers and the span read it from the request's headers.
        req.headers_mut().insert(REQUEST_ID, id.clone());
        IdOnResponse {
            inner: self.inner.call(req),
            id: Some(id),
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer, with the request's id put on it.
    pub struct IdOnResponse<F> {
        #[pin]
        inner: F,
        id: Option<HeaderValue>,
    }
}

impl<F, R, E> Future for IdOnResponse<F>
where
    F: Future<Output = Result<axum::http::Response<R>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut resp = std::task::ready!(this.inner.poll(cx))?;
        if let Some(id) = this.id.take() {
            resp.headers_mut().insert(REQUEST_ID, id);
        }
        Poll::Ready(Ok(resp))
    }
}

fn plausible(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn new_id() -> HeaderValue {
    let id = format!("req_{}", runbase_domain::ids::random_token(20));
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plausible_ids_are_kept() {
        assert!(plausible(b"req_abc-123.x"));
        assert!(plausible(b"0f8fad5b-d9cb-469f-a165-70867728950e"));
        for bad in [&b""[..], b"a b", b"x\ny", b"<script>", &[b'a'; 65]] {
            assert!(!plausible(bad), "{bad:?}");
        }
        assert!(plausible(new_id().as_bytes()));
    }
}

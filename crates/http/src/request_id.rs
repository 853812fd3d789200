//! `Request-Id`: every response carries one, and every line logged while answering the request
//! carries it too (the request's tracing span has it as `request_id`), so a client's report
//! ("request req_... failed") leads to the log lines. A `Request-Id` the client sent is kept when
//! it is a plausible id (1 to 64 of `A-Z a-z 0-9 - _ .`), so a caller's or a proxy's id runs
//! through; anything else is replaced, never echoed into logs.

use crate::error::HttpError;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use runbase_domain::ErrorCode;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("request-id");

/// Sets the request's id before the rest of the stack (tracing included) sees the request, puts
/// it on the response, and turns a panic of the inner service into the `500` envelope, logged
/// with the id. A layer written out rather than `axum::middleware::from_fn` (which boxes a clone
/// of the inner service and a future per request) and doing tower-http's `CatchPanic`'s work
/// itself (which boxed every response body, and axum boxed it again to take it back).
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

impl<S, B> tower::Service<axum::http::Request<B>> for WithRequestId<S>
where
    S: tower::Service<axum::http::Request<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = IdOnResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
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
        let inner = &mut self.inner;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req))) {
            Ok(inner) => IdOnResponse::Pending {
                inner,
                id: Some(id),
            },
            Err(payload) => IdOnResponse::Panicked {
                answer: Some(panicked(id, payload.as_ref())),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The inner service's answer with the request's id put on it, or the `500` of a panic.
    #[project = Projected]
    pub enum IdOnResponse<F> {
        Pending {
            #[pin]
            inner: F,
            id: Option<HeaderValue>,
        },
        Panicked {
            answer: Option<Response>,
        },
    }
}

impl<F> Future for IdOnResponse<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            Projected::Pending { inner, id } => {
                // Taken when the answer is ready: a future that answered (or panicked) is never
                // polled again, as tower-http's `CatchPanic` refused it too.
                let Some(request_id) = id.as_ref() else {
                    panic!("IdOnResponse polled after it answered");
                };
                let polled = std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx)));
                let resp = match polled {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(Ok(mut resp))) => {
                        resp.headers_mut().insert(REQUEST_ID, request_id.clone());
                        resp
                    }
                    Err(payload) => panicked(request_id.clone(), payload.as_ref()),
                };
                *id = None;
                Poll::Ready(Ok(resp))
            }
            Projected::Panicked { answer } => match answer.take() {
                Some(resp) => Poll::Ready(Ok(resp)),
                None => panic!("IdOnResponse polled after it answered"),
            },
        }
    }
}

/// The answer to a request whose handler panicked, logged with its id and the panic's message.
fn panicked(id: HeaderValue, payload: &(dyn std::any::Any + Send)) -> Response {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)");
    tracing::error!(
        request_id = id.to_str().unwrap_or_default(),
        panic = message,
        "a request handler panicked"
    );
    let mut resp = HttpError::from(ErrorCode::Internal).into_response();
    resp.headers_mut().insert(REQUEST_ID, id);
    resp
}

fn plausible(id: &[u8]) -> bool {
    (1..=64).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn new_id() -> HeaderValue {
    // Taken as the header's bytes, not copied.
    HeaderValue::from_maybe_shared(bytes::Bytes::from(runbase_domain::ids::prefixed_token(
        "req_", 20,
    )))
    .unwrap_or_else(|_| HeaderValue::from_static("req_unknown"))
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

    /// A panic while the inner service is called, or while its future is polled, is answered
    /// the `500` envelope with the request's id; the next request is answered as usual.
    #[tokio::test]
    async fn a_panic_is_answered_the_500_envelope_with_the_request_id() {
        use axum::body::Body;
        use axum::http::Request;
        use tower::{Layer, Service, ServiceExt};
        type Answer = std::future::Ready<Result<Response, Infallible>>;
        let request = |id: &str| {
            Request::builder()
                .uri(format!("/{id}"))
                .header(REQUEST_ID, id)
                .body(Body::empty())
                .unwrap()
        };
        let mut in_call = RequestIdLayer.layer(tower::service_fn(|req: Request<Body>| -> Answer {
            if req.uri() == "/in-call" {
                panic!("a service that panics when called");
            }
            std::future::ready(Ok(Response::default()))
        }));
        let mut in_poll =
            RequestIdLayer.layer(tower::service_fn(|req: Request<Body>| async move {
                if req.uri() == "/in-poll" {
                    panic!("a future that panics when polled");
                }
                Ok::<_, Infallible>(Response::default())
            }));
        for (resp, id) in [
            (
                in_call
                    .ready()
                    .await
                    .unwrap()
                    .call(request("in-call"))
                    .await,
                "in-call",
            ),
            (
                in_poll
                    .ready()
                    .await
                    .unwrap()
                    .call(request("in-poll"))
                    .await,
                "in-poll",
            ),
        ] {
            let resp = resp.unwrap();
            assert_eq!(resp.status(), 500, "{id}");
            assert_eq!(resp.headers()[&REQUEST_ID], id);
            let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], "internal_error", "{body}");
        }
        for svc in [in_call.clone().boxed_clone(), in_poll.clone().boxed_clone()] {
            let resp = svc.oneshot(request("fine")).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()[&REQUEST_ID], "fine");
        }
    }
}

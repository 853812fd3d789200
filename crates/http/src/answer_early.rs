//! A layer that answers a request itself, without passing it on, when a check of its path and
//! headers gives an answer (a limit the request is over). Written out rather than with
//! `axum::middleware::from_fn`, which boxes a clone of the inner service and a future for every
//! request, refused or not.

use axum::http::{HeaderMap, Request, Uri};
use axum::response::Response;
use futures_util::future::Either;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

/// The check: an answer for a request that must not go further, or `None`.
pub type Check = fn(&Uri, &HeaderMap) -> Option<Response>;

/// Answers the requests `Check` answers; passes the others on.
#[derive(Clone, Copy)]
pub struct AnswerEarlyLayer(pub Check);

impl<S> tower::Layer<S> for AnswerEarlyLayer {
    type Service = AnswerEarly<S>;

    fn layer(&self, inner: S) -> AnswerEarly<S> {
        AnswerEarly {
            inner,
            check: self.0,
        }
    }
}

/// The service of [`AnswerEarlyLayer`].
#[derive(Clone)]
pub struct AnswerEarly<S> {
    inner: S,
    check: Check,
}

impl<S, B> tower::Service<Request<B>> for AnswerEarly<S>
where
    S: tower::Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    // Ready when the inner service is. A request answered here does not use that readiness,
    // which holds nothing for the services this wraps (routers and layers that only delegate).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match (self.check)(req.uri(), req.headers()) {
            Some(answer) => Either::Left(ready(Ok(answer))),
            None => Either::Right(self.inner.call(req)),
        }
    }
}

//! The route table.

mod account;
pub mod api_key;
mod files;
mod health;
mod models;
pub mod openapi;
mod run_events;
mod runs;
mod uploads;
mod webhooks;

use crate::error::HttpError;
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use runbase_domain::ErrorCode;
use tower_http::trace::TraceLayer;

/// The API's routes, without fallbacks or layers (the dashboard adds its pages to them).
pub fn api_routes() -> Router<AppState> {
    Router::new()
        .route("/health", get(health::health))
        .route("/api/v1/runs", get(runs::list).post(runs::create))
        .route("/api/v1/runs/{id}", get(runs::get))
        .route("/api/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/api/v1/runs/{id}/events", get(run_events::events))
        .route("/api/v1/runs/{id}/deliveries", get(runs::deliveries))
        .route("/api/v1/models", get(models::list))
        .route("/api/v1/models/{provider}/{name}", get(models::get))
        .route("/api/v1/account", get(account::get))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/files", post(uploads::create))
        .route("/files/{run_id}/{name}", get(files::get))
        .route("/webhooks/{provider}", post(webhooks::receive))
}

/// What a worker node serves (`runbase serve --role worker`): its health, for a load balancer
/// or an orchestrator, and output files, which any node serves. Nothing else.
pub fn worker_router(state: AppState) -> Router {
    let routes = Router::new()
        .route("/health", get(health::health))
        .route("/files/{run_id}/{name}", get(files::get));
    finish(routes.fallback(not_found), state)
}

/// The API alone, every unknown path answered with the JSON `not_found`.
pub fn router(state: AppState) -> Router {
    finish(api_routes().fallback(not_found), state)
}

/// Adds what every route shares: the body limit, a `Request-Id` and a tracing span named after
/// the route template for each request, panics turned into the 500 envelope, and the 405 answer
/// ([`routed`] inside [`shared`]).
pub fn finish(routes: Router<AppState>, state: AppState) -> Router {
    let max_body = state.config.body_limit();
    as_router(shared(routed(routes, state), max_body, header_limits))
}

/// The route layers: only what needs the matched route, the tracing span (named after the route
/// template) and the request metrics, plus the 405 answer. Everything else wraps the whole router
/// once ([`shared`]): `Router::layer` wraps every route in a boxed service of its own, and a
/// request clones one box per layer (about a fifth of a create's allocations; BENCHMARKS.md,
/// tenth session).
pub fn routed(routes: Router<AppState>, state: AppState) -> Router {
    let routes = routes.method_not_allowed_fallback(method_not_allowed);
    // Requests are timed only when the metrics are read (`--metrics-listen`).
    let routes = if state.metrics.enabled() {
        routes.layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            count_request,
        ))
    } else {
        routes
    };
    routes
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                let route = req
                    .extensions()
                    .get::<axum::extract::MatchedPath>()
                    .map_or("unmatched", |p| p.as_str())
                    .to_owned();
                let id = req
                    .headers()
                    .get(&crate::request_id::REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                // Info level: every line logged while answering carries the request's id.
                tracing::info_span!("http.request", request_id = %id, http.method = %req.method(), http.route = %route)
            }),
        )
        .with_state(state)
}

/// `router` inside the layers every request passes once, outermost first: the request id (set
/// before the span is made, and on every answer; its layer also turns a panic into the 500
/// envelope, logged with the id), the header limits (`limits`: [`header_limits`] for the API;
/// the dashboard's answers its pages with a page), and the body limit.
pub fn shared(
    router: Router,
    max_body: usize,
    limits: crate::answer_early::Check,
) -> impl tower::Service<
    Request<axum::body::Body>,
    Response = Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ Sync
+ 'static {
    tower::ServiceBuilder::new()
        .layer(crate::request_id::RequestIdLayer)
        .layer(crate::answer_early::AnswerEarlyLayer(limits))
        .layer(DefaultBodyLimit::max(max_body))
        .service(router)
}

/// A whole application as one router, to serve: `app` answers every request (as the fallback of
/// a router without routes). Routes go in the router given to [`routed`]: one added to this
/// router, or a fallback set on it, would bypass every shared layer.
pub fn as_router<S>(app: S) -> Router
where
    S: tower::Service<Request<axum::body::Body>, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Response: IntoResponse + 'static,
    S::Future: Send + 'static,
{
    Router::new().fallback_service(app)
}

/// A request method as a metrics label: the standard ones by name, any other (hyper accepts
/// invented methods of any length) as `other`, so a client cannot add label values.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Reports each answered request to the metrics, by route template (bounded label values).
async fn count_request(
    axum::extract::State(metrics): axum::extract::State<
        std::sync::Arc<dyn runbase_domain::metrics::Metrics>,
    >,
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    metrics.request(
        &route,
        method,
        resp.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    resp
}

/// The most request headers, and header bytes (names and values), a request may carry. hyper
/// itself accepts somewhat more (see `serve`), so a request over these gets the envelope here
/// instead of hyper's empty `431`.
pub const MAX_HEADERS: usize = 100;
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// Whether a request carries more than [`MAX_HEADERS`] headers or [`MAX_HEADER_BYTES`] of them.
pub fn headers_too_large(headers: &axum::http::HeaderMap) -> bool {
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    headers.len() > MAX_HEADERS || bytes > MAX_HEADER_BYTES
}

/// The envelope `431` (and the connection closed) for a request over the header limits.
pub fn header_limits(_: &axum::http::Uri, headers: &axum::http::HeaderMap) -> Option<Response> {
    if !headers_too_large(headers) {
        return None;
    }
    Some(closing(
        HttpError::from(ErrorCode::HeadersTooLarge).into_response(),
    ))
}

/// `resp` with the connection closed after it (a request over the header limits is not worth
/// keeping the connection for).
pub fn closing(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    resp
}

/// The JSON `not_found` envelope.
pub async fn not_found() -> HttpError {
    ErrorCode::NotFound.into()
}

async fn method_not_allowed() -> HttpError {
    ErrorCode::MethodNotAllowed.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    fn app() -> impl tower::Service<
        Request<axum::body::Body>,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone {
        let router = Router::new()
            .route("/ok", axum::routing::get(|| async { "ok" }))
            .route(
                "/panics",
                axum::routing::get(|| async {
                    if true {
                        panic!("a handler that panics");
                    }
                    "never"
                }),
            );
        shared(router, 1024, header_limits)
    }

    fn get(path: &str) -> axum::http::request::Builder {
        Request::builder().uri(path)
    }

    fn id_of(resp: &Response) -> &str {
        resp.headers()[&crate::request_id::REQUEST_ID]
            .to_str()
            .unwrap()
    }

    /// Every answer of the shared layers carries the request's id: a handler's, a panic's
    /// `500` and the header limit's `431` (answered before the router), and a client's
    /// plausible id is the one kept.
    #[tokio::test]
    async fn every_answer_of_the_shared_layers_carries_the_request_id() {
        let resp = app()
            .oneshot(
                get("/ok")
                    .header("request-id", "client-1")
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(id_of(&resp), "client-1");

        let resp = app()
            .oneshot(get("/panics").body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 500);
        assert!(id_of(&resp).starts_with("req_"));

        let mut many = get("/ok");
        for i in 0..=MAX_HEADERS {
            many = many.header(format!("x-h{i}"), "v");
        }
        let resp = app()
            .oneshot(many.body(axum::body::Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 431);
        assert!(id_of(&resp).starts_with("req_"));
        assert_eq!(resp.headers()["connection"], "close");
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "request_headers_too_large", "{body}");
    }
}

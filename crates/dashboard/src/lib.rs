//! Runbase's web dashboard, served by the same binary as the API: sign-up and log-in,
//! Settings → API Keys, Settings → Credits (top-ups and grants), runs, models and docs.
//!
//! Pages are rendered on the server with `maud` (compile-time checked, escaped by default);
//! the stylesheet and the little script are compiled into the binary, so the dashboard needs no
//! front-end server and no network. Every page handler calls the same domain functions as the
//! API and the CLI; money moves only there.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

mod assets;
mod flash;
pub mod i18n;
mod layout;
pub mod oidc;
mod pages;
mod shell;
mod uploads;
pub mod web;

use axum::Router;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use pages::{auth, credits, docs, home, keys, models, playground, runs, webhooks};
use runbase_domain::{ApiError, ErrorCode};
use runbase_http::AppState;

/// The pages, without the API.
pub fn pages() -> Router<AppState> {
    Router::new()
        .route("/", get(home::home))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/signup", get(auth::signup_page).post(auth::signup))
        .route("/logout", get(auth::logout_page).post(auth::logout))
        .route("/auth/session", get(auth::session_check))
        .route("/auth/oidc/{name}/start", get(oidc::start))
        .route("/auth/oidc/{name}/callback", get(oidc::callback))
        .route(
            "/settings/password",
            get(auth::password_form).post(auth::change_password),
        )
        .route("/settings/api-keys", get(keys::list).post(keys::create))
        .route(
            "/settings/api-keys/{id}",
            get(keys::edit).post(keys::update),
        )
        .route("/settings/api-keys/{id}/{action}", post(keys::act))
        .route("/settings/credits", get(credits::page_handler))
        .route("/settings/credits/topup", post(credits::topup))
        .route("/settings/credits/grant", post(credits::grant))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::show))
        .route("/runs/{id}/redeliver", post(webhooks::redeliver))
        .route("/settings/webhooks", get(webhooks::page_handler))
        .route("/settings/webhooks/rotate", post(webhooks::rotate))
        .route("/models", get(models::list))
        .route("/models/{provider}/{name}", get(models::show))
        .route("/playground/price", post(playground::price))
        .route("/playground/runs", post(playground::create))
        .route("/playground/runs/{id}", get(playground::show))
        .route("/language", get(i18n::switch))
        .route(
            "/docs",
            get(|| async { web::see_other("/docs/authentication") }),
        )
        .route("/docs/authentication", get(docs::authentication))
        .route("/docs/rate-limits", get(docs::rate_limits))
        .route("/docs/error-codes", get(docs::error_codes))
        .route("/docs/runs", get(docs::runs))
        .route("/assets/{name}", get(assets::get))
        .route("/files", post(uploads::create))
        // runbase.net's address of a model's page; every other route has a fixed first
        // segment, which the router prefers, so this one cannot shadow them.
        .route(
            "/{provider}/{name}",
            get(models::landing).fallback(not_found),
        )
}

/// The API and the dashboard together: what `runbase serve` runs, with the OpenID Connect
/// providers users may sign in with.
pub fn router(state: AppState, oidc: std::sync::Arc<oidc::Oidc>) -> Router {
    let pages = pages().layer(axum::middleware::from_fn_with_state(
        state.clone(),
        i18n::middleware,
    ));
    let max_body = state.config.body_limit();
    let app = runbase_http::shared(
        runbase_http::routed(
            runbase_http::api_routes().merge(pages).fallback(not_found),
            state,
        ),
        max_body,
        header_limits,
    );
    // The dashboard's own layer around the API's, in the same single wrapping (see
    // `runbase_http::routed`).
    runbase_http::as_router(
        tower::ServiceBuilder::new()
            .layer(axum::Extension(oidc))
            .service(app),
    )
}

/// Too many headers: on a page's path the error page (or the envelope, for a JSON caller), as
/// any other page error; on the API's paths the API's envelope (`runbase_http`'s check). Inside
/// the shared layers, so the answer carries the request id and a panic is caught.
fn header_limits(uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    let path = uri.path();
    let api = ["/api/", "/webhooks/", "/files/"]
        .iter()
        .any(|p| path.starts_with(p))
        || path == "/health";
    if api {
        return runbase_http::routes::header_limits(uri, headers);
    }
    if !runbase_http::routes::headers_too_large(headers) {
        return None;
    }
    Some(runbase_http::routes::closing(web::error_response(
        headers,
        ErrorCode::HeadersTooLarge.into(),
    )))
}

/// Unknown paths: a page (with the support contact) for browsers, the JSON envelope for the
/// API and for everyone else.
pub(crate) async fn not_found(uri: Uri, headers: HeaderMap) -> Response {
    let browser = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser && !uri.path().starts_with("/api/") {
        web::error_response(
            &headers,
            ApiError::new(ErrorCode::NotFound, "This page does not exist"),
        )
    } else {
        runbase_http::routes::not_found().await.into_response()
    }
}

//! Runbase's HTTP API as a library: [`router`] builds the axum router (in-process tests use it
//! directly) and [`serve`] runs it on a listener (the binary and black-box tests).
//!
//! Where a request goes: `routes/` has one file per resource; each handler extracts, calls a
//! function of `runbase_domain::service`, and wraps the result. Errors leave through
//! [`error::HttpError`], always in the JSON envelope.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

pub mod client_ip;
pub mod error;
pub mod routes;
pub mod state;

pub use routes::{api_routes, finish};
pub use state::{AppState, HttpConfig, Limits};

use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// The whole API.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

//! Runbase's HTTP API as a library: [`router`] builds the axum router (in-process tests use it
//! directly) and [`serve`] runs it on a listener (the binary and black-box tests).
//!
//! Where a request goes: `routes/` has one file per resource; each handler extracts, calls a
//! function of `runbase_domain::service`, and wraps the result. Errors leave through
//! [`error::HttpError`], always in the JSON envelope.

#![cfg_attr(test, allow(clippy::unwrap_used, reason = "tests may unwrap"))]

pub mod answer_early;
pub mod body;
pub mod client_ip;
pub mod error;
pub mod prefer;
pub mod request_id;
pub mod routes;
mod serve;
pub mod state;
pub mod upload;
pub mod upload_slots;

pub use routes::{api_routes, as_router, finish, routed, shared};
pub use serve::{ServeConfig, serve};
pub use state::{AppState, HttpConfig, Limits, Shared};

use axum::Router;

/// The whole API.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

//! `GET /health`: answers once the server is ready (store open, migrations applied).

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// The health answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "server",
    summary = "Ready: the store is open and migrated",
    responses((status = 200, description = "The server is ready", body = Health)),
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

//! `GET /health`: answers once the server is ready (store open, migrations applied).

use axum::Json;
use serde_json::{Value, json};

pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

//! `GET /api/v1/models` and `GET /api/v1/models/{provider}/{name}`: the catalogue, public.

use crate::error::HttpError;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use runbase_domain::{ApiError, ErrorCode};
use serde_json::{Value, json};

pub async fn list(State(state): State<AppState>) -> Json<Value> {
    let data: Vec<Value> = state.catalog.models().iter().map(|m| m.to_json()).collect();
    Json(json!({ "data": data }))
}

pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, HttpError> {
    let Ok(Path((provider, name))) = path else {
        return Err(ApiError::new(ErrorCode::NotFound, "No model with this ID").into());
    };
    let id = format!("{provider}/{name}");
    let model = state
        .catalog
        .get(&id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("No model with ID {id}")))?;
    Ok(Json(model.to_json()))
}

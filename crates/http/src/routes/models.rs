//! `GET /api/v1/models` and `GET /api/v1/models/{provider}/{name}`: the catalogue, public.

use crate::error::HttpError;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use runbase_domain::{ApiError, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only models with this tag (case-insensitive), e.g. `Text to video`.
    tag: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, HttpError> {
    let Query(params) = params.map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("Invalid query: {}", e.body_text()),
        )
    })?;
    let data: Vec<Value> = state
        .catalog
        .models()
        .iter()
        .filter(|m| {
            params
                .tag
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .is_none_or(|t| m.has_tag(t))
        })
        .map(|m| m.to_json())
        .collect();
    Ok(Json(json!({ "data": data })))
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

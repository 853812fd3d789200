//! `GET /api/v1/models` and `GET /api/v1/models/{provider}/{name}`: the catalogue, public.

use crate::error::HttpError;
use crate::state::AppState;
use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use runbase_domain::catalog::ModelObject;
use runbase_domain::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only models with this tag (case-insensitive), e.g. `Text to video`.
    tag: Option<String>,
}

/// The catalogue, in its order.
#[derive(Serialize, ToSchema)]
pub struct ModelList {
    pub data: Vec<ModelObject>,
}

#[utoipa::path(
    get,
    path = "/api/v1/models",
    operation_id = "listModels",
    tag = "models",
    summary = "The catalogue (public)",
    params(ListParams),
    responses((status = 200, description = "Every model (with that tag)", body = ModelList)),
)]
pub async fn list(
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<ModelList>, HttpError> {
    let Query(params) = params.map_err(|e| crate::error::bad_query(&e))?;
    let data: Vec<ModelObject> = state
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
        .map(|m| m.object())
        .collect();
    Ok(Json(ModelList { data }))
}

#[utoipa::path(
    get,
    path = "/api/v1/models/{provider}/{name}",
    operation_id = "getModel",
    tag = "models",
    summary = "One model, with its input and output schemas (public)",
    params(
        ("provider" = String, Path, description = "The model id's first part", example = "runbase"),
        ("name" = String, Path, description = "The model id's second part", example = "echo"),
    ),
    responses((status = 200, description = "The model", body = ModelObject)),
)]
pub async fn get(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<ModelObject>, HttpError> {
    let Ok(Path((provider, name))) = path else {
        return Err(ApiError::new(ErrorCode::NotFound, "No model with this ID").into());
    };
    let id = format!("{provider}/{name}");
    let model = state
        .catalog
        .get(&id)
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("No model with ID {id}")))?;
    Ok(Json(model.object()))
}

//! `POST /api/v1/runs`, `GET /api/v1/runs/{id}`, `POST /api/v1/runs/{id}/cancel`,
//! `GET /api/v1/runs`, `GET /api/v1/runs/{id}/deliveries`. Creates and cancels take an
//! `Idempotency-Key` (`runbase_domain::idempotency`); a create takes `Prefer: wait=N`
//! ([`crate::prefer`]).

use super::api_key::{
    CreateKey, Peer, authenticate, authorize_create, authorize_runs, authorize_runs_and_read,
    with_rate_headers,
};
use crate::body::{discard, read_body};
use crate::error::HttpError;
use crate::prefer;
use crate::state::AppState;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runbase_domain::account::ApiKey;
use runbase_domain::auth::KeySeen;
use runbase_domain::events;
use runbase_domain::idempotency::{self, Answered};
use runbase_domain::ids;
use runbase_domain::run::Run;
use runbase_domain::service::CreateFailure;
use runbase_domain::{ApiError, ErrorCode, service};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa::{IntoParams, ToSchema};

/// The `{id}` of a run's route. Never refused: an id that is not UTF-8 or not shaped like a run
/// id names no run, which each route answers `404 run_not_found` only after the key's checks
/// (so a stranger learns nothing from the answer before authenticating).
pub struct RunIdPath {
    /// The id as given (empty when it was not UTF-8).
    pub raw: String,
}

impl RunIdPath {
    /// The id when it is shaped like a run id: only such an id is looked up.
    pub fn run_id(&self) -> Option<&str> {
        ids::looks_like_run_id(&self.raw).then_some(self.raw.as_str())
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RunIdPath {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let raw = Path::<String>::from_request_parts(parts, state)
            .await
            .map_or_else(|_| String::new(), |Path(id)| id);
        Ok(RunIdPath { raw })
    }
}

/// A page of runs, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunList {
    pub data: Vec<Run>,
    /// Whether older runs follow: pass the last run's id as `startingAfter` for them.
    pub has_more: bool,
}

/// The request body is `CreateRunRequest` (one schema per model, chosen by `model`), added to
/// the document from the catalogue by [`super::openapi`].
#[utoipa::path(
    post,
    path = "/api/v1/runs",
    operation_id = "createRun",
    tag = "runs",
    summary = "Create a run: checks the input, charges the price, queues it",
    security(("bearer" = [])),
    responses((status = 201, description = "The run, `pending` (or the first answer, replayed)", body = Run)),
)]
pub async fn create(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Steps 1-5 before a byte of the body is read: an unauthenticated upload costs nothing
    // (a key disabled within the last second may have its body read before its 401: see
    // `authorize_create`).
    let authorized = authorize_create(&state, &headers, peer).await;
    let (key, rate) = match authorized {
        Ok(ok) => ok,
        Err(resp) => {
            discard(body, state.config.body_limit());
            return resp;
        }
    };
    // With an `Idempotency-Key`: the key is checked, the body read (it is part of what makes a
    // repeat "the same request"), and the key claimed before anything else, so that a repeat is
    // answered what the first request was answered, whatever has changed since (a quota used up
    // by that very request, for one).
    let idempotency_key = match idempotency::parse_key(
        headers
            .get_all(idempotency::HEADER)
            .iter()
            .map(|v| v.as_bytes()),
    ) {
        Ok(k) => k,
        Err(e) => {
            discard(body, state.config.body_limit());
            let e = answered_from_row(&state, &headers, peer, &key, e).await;
            return with_rate_headers(HttpError(e), &rate);
        }
    };
    if let Some(idempotency_key) = idempotency_key {
        let result = async {
            let body = match read_body(body, state.config.body_limit()).await {
                Ok(body) => body,
                Err(e) => {
                    let e = e.into_api(ErrorCode::InvalidJson);
                    return Err(answered_from_row(&state, &headers, peer, &key, e).await);
                }
            };
            // Counted once, by how the key was first taken (as the plain create is).
            state.metrics.create_authenticated(key.seen());
            let read;
            let key: &ApiKey = match &key {
                CreateKey::Read(key) => key,
                CreateKey::Remembered(copy) => {
                    // Only the run created is answered on the copy's word (the store checked
                    // the key on the row it locked); anything else (a replay, a refusal, a key
                    // in use) only after the key's row is read, as the plain create does.
                    let made = idempotency::create_run_remembered(
                        state.store.as_ref(),
                        &state.catalog,
                        &state.idempotency_keys,
                        copy,
                        &body,
                        &idempotency_key,
                    )
                    .await;
                    if let Ok(Some(created)) = made {
                        return Ok(created);
                    }
                    state.recent_keys.forget(&copy.hash);
                    // A store failure: the run may yet exist, so its 5xx stands (as for a plain
                    // create on a copy); the copy is forgotten all the same.
                    made?;
                    read = authenticate(&state, &headers, peer).await?;
                    &read
                }
            };
            idempotency::create_run(
                state.store.as_ref(),
                &state.catalog,
                &state.idempotency_keys,
                key,
                &body,
                &idempotency_key,
            )
            .await
        }
        .await;
        return match result {
            // A first answer (never a replay: that answers what was recorded, at once) may
            // wait for its run as `Prefer: wait` asks.
            Ok(answered) if !answered.replayed && answered.answer.status == 201 => {
                match (prefer::wait(&headers), created_run_id(&answered)) {
                    (Some(wait), Some(run_id)) => {
                        let run = waited(&state, &key.account_id, &run_id, wait).await;
                        match run {
                            Some(run) => with_rate_headers(applied(run, wait), &rate),
                            None => with_rate_headers(answered_response(answered), &rate),
                        }
                    }
                    _ => with_rate_headers(answered_response(answered), &rate),
                }
            }
            Ok(answered) => with_rate_headers(answered_response(answered), &rate),
            Err(e) => with_rate_headers(HttpError(e), &rate),
        };
    }
    state.metrics.create_authenticated(key.seen());
    let (mut result, mut payload) =
        plain_create(&state, &key, key.seen(), Payload::Unread(body)).await;
    if let CreateKey::Remembered(copy) = &key
        && result.is_err()
    {
        // The copy's figures may be what refused it: it is copied afresh from the row read
        // next (below, or by the next request).
        state.recent_keys.forget(&copy.hash);
        // Refused before the store (the quota or spend limit on the copy, the body), or by the
        // store's check of the key: the key may have been disabled, limited or given an allowlist since its
        // copy was read, so the answer is the row's, read now, and the create is made again
        // if the row lets it. Nothing was created. The store's money checks (quota, spend
        // limit, balance) were made on the locked row, which the store found usable and
        // without an allowlist: theirs is the row's answer already.
        let from_row = match &result {
            Err(CreateFailure::NotStarted(_)) => true,
            Err(CreateFailure::Refused(e)) => e.code == ErrorCode::InvalidApiKey,
            _ => false,
        };
        if from_row {
            (result, payload) = match authenticate(&state, &headers, peer).await {
                Ok(read) => plain_create(&state, &read, KeySeen::Read, payload).await,
                Err(e) => (Err(CreateFailure::NotStarted(e)), payload),
            };
        }
    }
    if let Payload::Unread(body) = payload {
        discard(body, state.config.body_limit());
    }
    match result.map_err(CreateFailure::into_error) {
        Ok(run) => {
            state.metrics.run_created(&run.model);
            match prefer::wait(&headers) {
                Some(wait) => {
                    let waited = waited(&state, &key.account_id, &run.id, wait).await;
                    with_rate_headers(applied(waited.unwrap_or(run), wait), &rate)
                }
                None => with_rate_headers((StatusCode::CREATED, Json(run)), &rate),
            }
        }
        Err(e) => with_rate_headers(HttpError(e), &rate),
    }
}

/// An error found before the key's row was read, answered as the plain create answers it: on a
/// remembered copy of the key, the copy is forgotten and the row read, and a key the row refuses
/// (disabled, deleted, expired, or its allowlist) is answered that refusal instead.
async fn answered_from_row(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<std::net::IpAddr>,
    key: &CreateKey,
    e: ApiError,
) -> ApiError {
    let CreateKey::Remembered(copy) = key else {
        return e;
    };
    state.recent_keys.forget(&copy.hash);
    match authenticate(state, headers, peer).await {
        Ok(_) => e,
        Err(refused) => refused,
    }
}

/// What is left of a create's body.
enum Payload {
    /// Not read yet (a refusal before the body is read).
    Unread(Body),
    Read(bytes::Bytes),
    /// Could not be read: why.
    Refused(ApiError),
}

/// Steps 5-12 without an idempotency key: the quota before a byte of the body is read, then
/// the body, then the create. Gives back what is left of the body, for a second attempt.
async fn plain_create(
    state: &AppState,
    key: &ApiKey,
    seen: KeySeen,
    payload: Payload,
) -> (Result<Run, CreateFailure>, Payload) {
    if let Err(e) = service::check_quota(key) {
        return (Err(CreateFailure::NotStarted(e)), payload);
    }
    let body = match payload {
        Payload::Unread(body) => match read_body(body, state.config.body_limit()).await {
            Ok(body) => body,
            Err(e) => {
                let e = e.into_api(ErrorCode::InvalidJson);
                return (
                    Err(CreateFailure::NotStarted(e.clone())),
                    Payload::Refused(e),
                );
            }
        },
        Payload::Read(body) => body,
        Payload::Refused(e) => {
            return (
                Err(CreateFailure::NotStarted(e.clone())),
                Payload::Refused(e),
            );
        }
    };
    let created = service::create_run(state.store.as_ref(), &state.catalog, key, seen, &body).await;
    (created, Payload::Read(body))
}

/// `Prefer: wait`: the run, created and committed, once it is terminal or when `wait` has
/// passed. `None` when it cannot be read (the create still stands: the caller answers the run
/// as created).
async fn waited(state: &AppState, account_id: &str, run_id: &str, wait: Duration) -> Option<Run> {
    let run = events::wait_until_terminal(
        state.store.as_ref(),
        &state.run_events,
        account_id,
        run_id,
        wait,
    )
    .await;
    run.unwrap_or_else(|e| {
        tracing::warn!(error = %e, run.id = %run_id, "reading a run for Prefer: wait failed");
        None
    })
}

/// `201` with the run as the wait left it, and `Preference-Applied: wait=N`.
fn applied(run: Run, wait: Duration) -> Response {
    let mut resp = (StatusCode::CREATED, Json(run)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("wait={}", wait.as_secs())) {
        resp.headers_mut().insert(prefer::PREFERENCE_APPLIED, v);
    }
    resp
}

/// The id of the run a recorded `201` answers.
fn created_run_id(answered: &Answered) -> Option<String> {
    let body: serde_json::Value = serde_json::from_slice(&answered.answer.body).ok()?;
    body.get("id")?.as_str().map(str::to_owned)
}

#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}",
    operation_id = "getRun",
    tag = "runs",
    summary = "A run of the key's account, made with a key of its mode (test or live)",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The run's id, `run_...`")),
    responses((status = 200, description = "The run", body = Run)),
)]
pub async fn get(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    id: RunIdPath,
) -> Response {
    // The key and the run are read together.
    let (_, rate, run) = match authorize_runs_and_read(&state, &headers, peer, id.run_id()).await {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    match run {
        Some(run) => with_rate_headers(Json(run), &rate),
        None => with_rate_headers(HttpError(ErrorCode::RunNotFound.into()), &rate),
    }
}

/// Cancels a `pending` or `processing` run (full refund) and answers the run; a finished run
/// is answered unchanged. Counted by the runs rate limit like create and get.
#[utoipa::path(
    post,
    path = "/api/v1/runs/{id}/cancel",
    operation_id = "cancelRun",
    tag = "runs",
    summary = "Cancel a pending or processing run of the key's mode, refunded in full",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The run's id, `run_...`")),
    responses((status = 200, description = "The run, `canceled` (unchanged if it had already finished)", body = Run)),
)]
pub async fn cancel(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    id: RunIdPath,
    body: Body,
) -> Response {
    let (key, rate) = match authorize_runs(&state, &headers, peer).await {
        Ok(ok) => ok,
        Err(resp) => {
            discard(body, state.config.body_limit());
            return resp;
        }
    };
    // Looked up as given: a cancel under an idempotency key keeps its 404 under the key too.
    let id = id.raw;
    let idempotency_key = match idempotency::parse_key(
        headers
            .get_all(idempotency::HEADER)
            .iter()
            .map(|v| v.as_bytes()),
    ) {
        Ok(k) => k,
        Err(e) => {
            discard(body, state.config.body_limit());
            return with_rate_headers(HttpError(e), &rate);
        }
    };
    let Some(idempotency_key) = idempotency_key else {
        discard(body, state.config.body_limit());
        return match service::cancel_run(state.store.as_ref(), &key, &id).await {
            Ok(run) => {
                // Stop the provider call if the run is executing in this process.
                state.inflight.cancel(&run.id);
                with_rate_headers(Json(run), &rate)
            }
            Err(e) => with_rate_headers(HttpError(e), &rate),
        };
    };
    let result = async {
        // The body (normally empty) is part of what makes a repeat "the same request".
        let body = read_body(body, state.config.body_limit())
            .await
            .map_err(|e| e.into_api(ErrorCode::InvalidRequest))?;
        idempotency::cancel_run(state.store.as_ref(), &key, &id, &body, &idempotency_key).await
    }
    .await;
    match result {
        Ok(answered) => {
            if !answered.replayed && answered.answer.status == 200 {
                // Stop the provider call if the run is executing in this process.
                state.inflight.cancel(&id);
            }
            with_rate_headers(answered_response(answered), &rate)
        }
        Err(e) => with_rate_headers(HttpError(e), &rate),
    }
}

/// The run's webhook deliveries, oldest first, each with its attempts (the delivery log). The
/// same key checks and rate limit as reading the run; another account's run, or one of the other
/// mode (test or live), is not found.
#[utoipa::path(
    get,
    path = "/api/v1/runs/{id}/deliveries",
    operation_id = "listRunDeliveries",
    tag = "runs",
    summary = "The webhook deliveries of a run of the key's mode, and their attempts",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "The run's id, `run_...`")),
    responses((status = 200, description = "The delivery log, oldest first", body = DeliveryList)),
)]
pub async fn deliveries(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    id: RunIdPath,
) -> Response {
    // The run read with the key: one of the key's account made in the key's mode, or none.
    let (key, rate, run) = match authorize_runs_and_read(&state, &headers, peer, id.run_id()).await
    {
        Ok(ok) => ok,
        Err(resp) => return resp,
    };
    let Some(run) = run else {
        return with_rate_headers(HttpError(ErrorCode::RunNotFound.into()), &rate);
    };
    match state.store.run_deliveries(&key.account_id, &run.id).await {
        Ok(Some(data)) => with_rate_headers(Json(DeliveryList { data }), &rate),
        Ok(None) => with_rate_headers(HttpError(ErrorCode::RunNotFound.into()), &rate),
        Err(e) => with_rate_headers(HttpError(service::internal(e)), &rate),
    }
}

/// A run's delivery log.
#[derive(Serialize, ToSchema)]
pub struct DeliveryList {
    data: Vec<runbase_domain::webhooks::Delivery>,
}

/// An answer given under an idempotency key, its bytes as recorded; a replay is marked
/// `Idempotent-Replayed: true`.
fn answered_response(answered: Answered) -> Response {
    let status =
        StatusCode::from_u16(answered.answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        answered.answer.body,
    )
        .into_response();
    if answered.replayed {
        resp.headers_mut().insert(
            idempotency::REPLAYED_HEADER,
            HeaderValue::from_static("true"),
        );
    }
    resp
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// How many runs, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
    /// The id of the last run of the previous page (empty: the first page). `starting_after`
    /// (Stripe's spelling, and ours before the wire became camelCase) is read too.
    #[serde(rename = "startingAfter", alias = "starting_after")]
    starting_after: Option<String>,
}

#[utoipa::path(
    get,
    path = "/api/v1/runs",
    operation_id = "listRuns",
    tag = "runs",
    summary = "The account's runs of the key's mode (test or live), newest first",
    security(("bearer" = [])),
    params(ListParams),
    responses((status = 200, description = "A page of runs", body = RunList)),
)]
pub async fn list(
    State(state): State<AppState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, HttpError> {
    let key = authenticate(&state, &headers, peer).await?;
    let Query(params) = params.map_err(|e| crate::error::bad_query(&e))?;
    let (runs, has_more) = service::list_runs(
        state.store.as_ref(),
        &key,
        params.limit,
        params.starting_after.as_deref(),
    )
    .await?;
    Ok(Json(RunList {
        data: runs,
        has_more,
    })
    .into_response())
}

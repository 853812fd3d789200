//! `GET /api/v1/openapi.json`: the API's OpenAPI 3.1 document, generated from the code so that
//! it cannot drift from it.
//!
//! - The operations and the wire types come from utoipa: `#[utoipa::path]` on each handler of
//!   `api_routes()`, `ToSchema` on the types the handlers serialize (the run, the model, the
//!   account, the upload...).
//! - The error answers come from the error table: [`OPERATION_ERRORS`] names the codes each
//!   operation can answer, and each code's status is [`ErrorCode::status`]; every status gets the
//!   envelope, its `code` narrowed to that operation's codes of that status.
//! - Each catalogue model's input schema is a component, `ModelInput_<provider>_<name>`, taken
//!   from the catalogue this server loaded; the create body is one schema per model, chosen by
//!   `model` (`CreateRunRequest`, a `oneOf` with a discriminator).
//! - The headers: the bearer scheme, `Idempotency-Key` on creates and cancels,
//!   `Idempotent-Replayed`, `Retry-After`, the `RateLimit-*` headers, and `Request-Id` on every
//!   answer.

use super::{account, files, health, models, run_events, runs, uploads, webhooks};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use runbase_domain::ErrorCode;
use runbase_domain::catalog::{Catalog, input_schema_component};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ObjectBuilder, RefOr, Schema, Type};
use utoipa::{Modify, OpenApi, ToSchema};

/// Where the document is served.
pub const PATH: &str = "/api/v1/openapi.json";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Runbase API",
        description = "One HTTP API in front of many AI models: create a run with a model's input, poll it until it has succeeded, read `output.urls`. Money is integer micro-USD (`costUsd`, `balanceUsd`); timestamps are ISO 8601 UTC with milliseconds. Every error is `{\"error\": {\"message\", \"code\"}}` with a code of the error table (`ErrorCode`).",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        health::health,
        document,
        runs::create,
        runs::list,
        runs::get,
        runs::cancel,
        runs::deliveries,
        run_events::events,
        models::list,
        models::get,
        account::get,
        uploads::create,
        files::get,
        webhooks::receive,
    ),
    components(schemas(ErrorEnvelope, ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "runs", description = "Create, read, list and cancel runs"),
        (name = "models", description = "The catalogue"),
        (name = "account", description = "The balance and the calling key"),
        (name = "files", description = "Uploads and output files"),
        (name = "server", description = "Health, this document, payment webhooks"),
    ),
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API key: `Authorization: Bearer sk-...` (`sk-test-...` for a test key)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The error envelope every error answer has.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "a schema only: the envelope is written by ApiError::envelope"
)]
pub struct ErrorEnvelope {
    error: ErrorBody,
}

/// What went wrong: a code of the error table and a message for people.
#[derive(ToSchema)]
#[allow(
    dead_code,
    reason = "a schema only: the envelope is written by ApiError::envelope"
)]
pub struct ErrorBody {
    /// For people; may change. Match on `code`.
    message: String,
    #[schema(schema_with = error_code_schema)]
    code: String,
}

/// Every code of the error table.
fn error_code_schema() -> impl Into<RefOr<Schema>> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("A code of the error table (docs: /docs/error-codes)"))
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
}

/// The codes each operation can answer, besides `internal_error` (500) and
/// `request_headers_too_large` (431), which any can. The statuses are the table's.
pub const OPERATION_ERRORS: &[(&str, &str, &[ErrorCode])] = {
    use ErrorCode::*;
    // What every API-key route checks first (`routes/api_key.rs`).
    &[
        (
            "post",
            "/api/v1/runs",
            &[
                MissingApiKey,
                InvalidApiKey,
                IpNotAllowed,
                RateLimited,
                ServiceUnavailable,
                InvalidRequest,
                IdempotencyKeyMismatch,
                IdempotencyKeyInUse,
                UsageExceeded,
                InvalidJson,
                MissingModel,
                MissingInput,
                ModelNotFound,
                InvalidInput,
                SpendLimitExceeded,
                InsufficientBalance,
                PayloadTooLarge,
                RequestTimeout,
            ],
        ),
        (
            "get",
            "/api/v1/runs",
            &[
                MissingApiKey,
                InvalidApiKey,
                IpNotAllowed,
                InvalidRequest,
                RunNotFound,
            ],
        ),
        (
            "get",
            "/api/v1/runs/{id}",
            &[
                MissingApiKey,
                InvalidApiKey,
                IpNotAllowed,
                RateLimited,
                ServiceUnavailable,
                RunNotFound,
            ],
        ),
        (
            "post",
            "/api/v1/runs/{id}/cancel",
            &[
                MissingApiKey,
                InvalidApiKey,
                IpNotAllowed,
                RateLimited,
                ServiceUnavailable,
                InvalidRequest,
                IdempotencyKeyMismatch,
                IdempotencyKeyInUse,
                RunNotFound,
                PayloadTooLarge,
                RequestTimeout,
            ],
        ),
        (
            "get",
            "/api/v1/runs/{id}/deliveries",
            &[
                MissingApiKey,
                InvalidApiKey,
                IpNotAllowed,
                RateLimited,
                ServiceUnavailable,
                RunNotFound,
            ],
        ),
        (
            "get",
            "/api/v1/runs/{id}/events",
            &[
                MissingApiKey,
                InvalidApiKey,
                IpNotAllowed,
                RateLimited,
                ServiceUnavailable,
                RunNotFound,
                TooManyStreams,
            ],
        ),
        ("get", "/api/v1/models", &[InvalidRequest]),
        ("get", "/api/v1/models/{provider}/{name}", &[NotFound]),
        (
            "get",
            "/api/v1/account",
            &[MissingApiKey, InvalidApiKey, IpNotAllowed],
        ),
        (
            "post",
            "/api/v1/files",
            &[
                MissingApiKey,
                InvalidApiKey,
                IpNotAllowed,
                RateLimited,
                ServiceUnavailable,
                InvalidRequest,
                InvalidInput,
                PayloadTooLarge,
                RequestTimeout,
            ],
        ),
        (
            "get",
            "/files/{run_id}/{name}",
            &[NotFound, ServiceUnavailable],
        ),
        (
            "post",
            "/webhooks/{provider}",
            &[
                NotFound,
                InvalidSignature,
                InvalidRequest,
                PayloadTooLarge,
                RequestTimeout,
            ],
        ),
        ("get", "/health", &[]),
        ("get", PATH, &[]),
    ]
};

/// Operations limited by the runs rate limit: their answers carry `RateLimit-*` once the key
/// is known.
const RATE_LIMITED: &[(&str, &str)] = &[
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs/{id}"),
    ("post", "/api/v1/runs/{id}/cancel"),
    ("post", "/api/v1/files"),
];

/// Operations that take an `Idempotency-Key`.
const IDEMPOTENT: &[(&str, &str)] = &[
    ("post", "/api/v1/runs"),
    ("post", "/api/v1/runs/{id}/cancel"),
];

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    operation_id = "getOpenApiDocument",
    tag = "server",
    summary = "This document: the API as OpenAPI 3.1",
    responses((status = 200, description = "The OpenAPI document", body = Object)),
)]
pub async fn document(State(state): State<AppState>) -> Json<Value> {
    Json(build(&state.catalog))
}

/// The whole document for this server's catalogue.
pub fn build(catalog: &Catalog) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|_| json!({}));
    add_models(&mut doc, catalog);
    // A file is served with the type its name gives (`runbase_files::content_type_for`).
    let mut types = Map::new();
    for media_type in [
        "image/*",
        "video/*",
        "audio/*",
        "text/plain",
        "application/json",
        "application/octet-stream",
    ] {
        types.insert(media_type.into(), json!({}));
    }
    doc["paths"]["/files/{run_id}/{name}"]["get"]["responses"]["200"]["content"] =
        Value::Object(types);
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, op) in item.iter_mut() {
                add_errors_and_headers(method, path, op);
            }
        }
    }
    doc
}

/// The models' input schemas as components, and the create body that refers to them.
fn add_models(doc: &mut Value, catalog: &Catalog) {
    let mut branches = Vec::new();
    let mut mapping = Map::new();
    let mut inputs = Map::new();
    let schemas = &mut doc["components"]["schemas"];
    for model in catalog.models() {
        let input = input_schema_component(&model.id);
        let branch = input.replacen("ModelInput_", "CreateRun_", 1);
        schemas[&input] = model.input_schema.raw().clone();
        // The catalogue's example inputs, as whole create bodies.
        let examples: Vec<Value> = model
            .examples
            .iter()
            .map(|e| json!({ "model": model.id, "input": e.input }))
            .collect();
        schemas[&branch] = json!({
            "type": "object",
            "description": format!("A run of `{}`: {}", model.id, model.name),
            "required": ["model", "input"],
            "properties": {
                "model": { "type": "string", "const": model.id },
                "input": { "$ref": format!("#/components/schemas/{input}") },
                "webhook": { "$ref": "#/components/schemas/Webhook" },
                "webhookEvents": { "$ref": "#/components/schemas/WebhookEvents" },
            },
            // `webhookEvents` (other than `null`) needs a `webhook` URL (not `null`).
            "dependentSchemas": { "webhookEvents": {
                "if": { "properties": { "webhookEvents": { "type": "array" } } },
                "then": {
                    "required": ["webhook"],
                    "properties": { "webhook": { "type": "string" } },
                },
            } },
        });
        if !examples.is_empty() {
            schemas[&branch]["examples"] = Value::Array(examples);
        }
        let reference = format!("#/components/schemas/{branch}");
        branches.push(json!({ "$ref": reference }));
        mapping.insert(model.id.clone(), Value::from(reference));
        inputs.insert(
            model.id.clone(),
            Value::from(format!("#/components/schemas/{input}")),
        );
    }
    // A create's webhook subscription (`runbase_domain::webhooks::subscription`), the same for
    // every model.
    schemas["Webhook"] = json!({
        "type": ["string", "null"],
        "format": "uri",
        "minLength": 1,
        "maxLength": runbase_domain::webhooks::MAX_URL_LEN,
        "description": "Where to POST the run object, signed (Standard Webhooks), when the run starts and/or finishes: an absolute http(s) URL without user info, of at most 2048 bytes (so fewer characters when some take several bytes in UTF-8). Not echoed in the run object. `null` is the same as leaving it out: no webhook.",
    });
    schemas["WebhookEvents"] = json!({
        "type": ["array", "null"],
        "items": { "type": "string", "enum": runbase_domain::webhooks::EVENT_NAMES },
        "minItems": 1,
        "uniqueItems": true,
        "description": "Which events are delivered to `webhook` (which it needs): `start` (claimed for the first attempt) and/or `completed` (succeeded, failed or canceled). Default (left out or `null`) `[\"completed\"]`.",
    });
    schemas["CreateRunRequest"] = json!({
        "description": "`model` (a catalogue id, `provider/name`) and `input`, which must match that model's input schema (`ModelInput_<provider>_<name>`, also shown by GET /api/v1/models/{provider}/{name} as `inputSchema`).",
        "oneOf": branches,
        "discriminator": { "propertyName": "model", "mapping": mapping },
    });
    // Where each model's input schema is, by model id (also the discriminator's mapping).
    doc["x-model-input-schemas"] = Value::Object(inputs);
    // The created run's id leads to reading and canceling it (OpenAPI links: what a client,
    // or schemathesis's stateful phase, does next).
    doc["paths"]["/api/v1/runs"]["post"]["responses"]["201"]["links"] = json!({
        "GetRun": {
            "operationId": "getRun",
            "parameters": { "id": "$response.body#/id" },
            "description": "Poll the run until it is finished",
        },
        "CancelRun": {
            "operationId": "cancelRun",
            "parameters": { "id": "$response.body#/id" },
            "description": "Cancel the run (refunded in full)",
        },
    });
    // `Prefer: wait=N` (RFC 7240): answer the run once terminal, or after N seconds.
    push_parameter(
        &mut doc["paths"]["/api/v1/runs"]["post"],
        json!({
        "name": "Prefer",
        "in": "header",
        "required": false,
        "description": "`wait=N` (N whole seconds, 1 to 60): the 201 answers the run once it is terminal, or after N seconds as it is then, with `Preference-Applied: wait=N`. Any other preference is ignored (RFC 7240), and the create answers at once. A repeat with the same `Idempotency-Key` answers the recorded answer at once (the `pending` run), without `Preference-Applied`.",
        "schema": { "type": "string" },
        }),
    );
    doc["paths"]["/api/v1/runs"]["post"]["requestBody"] = json!({
        "required": true,
        "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/CreateRunRequest" },
        } },
    });
}

/// Adds `param` to an operation's parameters.
fn push_parameter(op: &mut Value, param: Value) {
    match op["parameters"].as_array_mut() {
        Some(params) => params.push(param),
        None => op["parameters"] = Value::Array(vec![param]),
    }
}

fn header(description: &str, schema: Value, required: bool) -> Value {
    json!({ "description": description, "required": required, "schema": schema })
}

fn add_errors_and_headers(method: &str, path: &str, op: &mut Value) {
    let codes = OPERATION_ERRORS
        .iter()
        .find(|(m, p, _)| *m == method && *p == path)
        .map_or(&[][..], |(_, _, codes)| *codes);
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in codes
        .iter()
        .chain(&[ErrorCode::HeadersTooLarge, ErrorCode::Internal])
    {
        by_status.entry(code.status()).or_default().push(code);
    }
    let rate_limited = RATE_LIMITED.contains(&(method, path));
    let idempotent = IDEMPOTENT.contains(&(method, path));
    if idempotent {
        push_parameter(
            op,
            json!({
            "name": "Idempotency-Key",
            "in": "header",
            "required": false,
            "description": "Makes a retry safe: the request is done at most once per key (1 to 255 printable ASCII characters, kept 24 h per account and mode: test keys have keys of their own); a repeat answers the first answer.",
            "schema": { "type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7E]+$" },
            }),
        );
    }
    let responses = &mut op["responses"];
    for (status, codes) in &by_status {
        let names: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
        let description = codes
            .iter()
            .map(|c| format!("`{}`: {}", c.as_str(), c.default_message()))
            .collect::<Vec<_>>()
            .join("; ");
        responses[status.to_string()] = json!({
            "description": description,
            "content": { "application/json": { "schema": { "allOf": [
                { "$ref": "#/components/schemas/ErrorEnvelope" },
                { "properties": { "error": { "properties": { "code": { "enum": names } } } } },
            ] } } },
        });
    }
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        let mut headers = Map::new();
        headers.insert(
            "Request-Id".into(),
            header(
                "The request's id (the client's, when plausible), also in every log line of the request",
                json!({ "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" }),
                true,
            ),
        );
        if rate_limited {
            for (name, description) in [
                (
                    "RateLimit-Limit",
                    "Requests allowed per window for this key",
                ),
                ("RateLimit-Remaining", "Requests left in the window"),
                ("RateLimit-Reset", "Seconds until a request frees up"),
            ] {
                headers.insert(
                    name.into(),
                    header(
                        description,
                        json!({ "type": "integer", "minimum": 0 }),
                        false,
                    ),
                );
            }
        }
        if status == "429" || status == "409" {
            headers.insert(
                "Retry-After".into(),
                header(
                    "Seconds to wait before retrying (`RATE_LIMITED`, `idempotency_key_in_use`)",
                    json!({ "type": "integer", "minimum": 0 }),
                    false,
                ),
            );
        }
        if method == "post" && path == "/api/v1/runs" && status == "201" {
            headers.insert(
                "Preference-Applied".into(),
                header(
                    "`wait=N` when the request's `Prefer: wait=N` was applied",
                    json!({ "type": "string", "pattern": "^wait=([1-9]|[1-5][0-9]|60)$" }),
                    false,
                ),
            );
        }
        if idempotent {
            headers.insert(
                "Idempotent-Replayed".into(),
                header(
                    "`true` when this is the recorded answer of an earlier request with the same Idempotency-Key",
                    json!({ "type": "string", "enum": ["true"] }),
                    false,
                ),
            );
        }
        response["headers"] = Value::Object(headers);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_code_of_an_operation_has_its_status_documented() {
        let catalog = Catalog::builtin().expect("catalogue");
        let doc = build(&catalog);
        assert_eq!(doc["openapi"], "3.1.0");
        for (method, path, codes) in OPERATION_ERRORS {
            let responses = &doc["paths"][path][method]["responses"];
            assert!(responses.is_object(), "{method} {path}");
            for code in *codes {
                let response = &responses[code.status().to_string()];
                let listed = &response["content"]["application/json"]["schema"]["allOf"][1]["properties"]
                    ["error"]["properties"]["code"]["enum"];
                assert!(
                    listed
                        .as_array()
                        .is_some_and(|l| l.contains(&Value::from(code.as_str()))),
                    "{method} {path} {}",
                    code.as_str()
                );
            }
        }
    }
}

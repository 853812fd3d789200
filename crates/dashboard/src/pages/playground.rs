//! The Playground on a model's page: a form generated from the model's input schema, the price
//! of the chosen options, runs as the signed-in user, live status and inline output.
//!
//! Attribution: a playground run is an ordinary run made with one of the account's own keys,
//! created on first use and named [`PLAYGROUND_KEY`] (live) or [`PLAYGROUND_TEST_KEY`] (test
//! mode: simulated and free). So it is charged, refunded, listed, rate-limited and counted in a
//! key's spend exactly like an API run, and the key shows in Settings → API Keys, where its
//! spend can be capped. Its secret is never shown: the Playground uses the key record, not the
//! secret.
//!
//! The form's fields are named `input.FIELD`; [`form_to_input`] types them by the schema (the
//! same function serves the price preview, "Copy as curl" and the run), and the run goes through
//! `service::create_run` with the JSON the curl would send, so validation and price are the API's.

use crate::i18n::{t, t_args};
use crate::layout::{copy_button, csrf_field, money, status_badge, time};
use crate::pages::runs::{file_kind, local_href};
use crate::shell;
use crate::web::{
    MaybeViewer, PagePath, Viewer, check_csrf, error_response, see_other, wants_json,
};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use runbase_domain::account::{ApiKey, KeySettings};
use runbase_domain::catalog::Model;
use runbase_domain::run::Run;
use runbase_domain::store::RunFilter;
use runbase_domain::time::Timestamp;
use runbase_domain::{ApiError, ErrorCode, service};
use runbase_http::AppState;
use runbase_http::body::read_body;
use runbase_http::error::HttpError;
use serde_json::{Map, Value, json};

/// The name of the key live playground runs are made with.
pub const PLAYGROUND_KEY: &str = "Playground";
/// The name of the key test-mode playground runs are made with.
pub const PLAYGROUND_TEST_KEY: &str = "Playground (test)";

/// A playground form's most: a prompt of up to 8,000 characters, URL-encoded (a CJK character
/// is nine bytes), plus the other fields.
const PLAYGROUND_FORM_LIMIT: usize = 256 * 1024;

/// How many of the account's playground runs of the model are listed beside the form.
const RECENT: usize = 8;

/// How many of the account's newest runs the recent playground runs are looked for in.
const RECENT_WINDOW: u32 = 1_000;

/// The input fields in the order the form shows them: the prompt first, reference images last.
pub fn fields(model: &Model) -> Vec<(&str, &Value)> {
    let Some(props) = model
        .input_schema
        .raw()
        .get("properties")
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let rank = |n: &str| match n {
        "prompt" => 0,
        "image_urls" => 2,
        _ => 1,
    };
    let mut v: Vec<(&str, &Value)> = props.iter().map(|(k, p)| (k.as_str(), p)).collect();
    v.sort_by_key(|(n, _)| rank(n));
    v
}

fn required(model: &Model) -> Vec<&str> {
    model
        .input_schema
        .raw()
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn kind(p: &Value) -> &str {
    p.get("type").and_then(Value::as_str).unwrap_or("")
}

fn is_url_list(p: &Value) -> bool {
    kind(p) == "array"
        && p.get("items")
            .is_some_and(|i| kind(i) == "string" || i.get("type").is_none())
}

fn bad(field: &str, msg: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidInput, format!("input.{field}: {msg}"))
}

/// A form's fields (`input.FIELD` pairs) as the model's input, each typed by its schema: an
/// empty field is left out (so its default applies), a checkbox's absence is `false`, numbers
/// are parsed, an enum's value is the enum's own (a number stays a number), and repeated URL
/// fields make the list. Fields the schema does not have are refused.
pub fn form_to_input(model: &Model, pairs: &[(String, String)]) -> Result<Value, ApiError> {
    let fields = fields(model);
    let mut input = Map::new();
    for (key, value) in pairs {
        let Some(name) = key.strip_prefix("input.") else {
            continue;
        };
        let Some((_, p)) = fields.iter().find(|(n, _)| *n == name) else {
            return Err(bad(name, "is not a field of this model"));
        };
        if is_url_list(p) {
            let v = value.trim();
            if !v.is_empty() {
                let list = input.entry(name).or_insert_with(|| json!([]));
                if let Value::Array(a) = list {
                    a.push(Value::String(v.to_owned()));
                }
            }
            continue;
        }
        if value.trim().is_empty() && kind(p) != "string" {
            continue;
        }
        let v = if let Some(options) = p.get("enum").and_then(Value::as_array) {
            options
                .iter()
                .find(|o| o.as_str().map_or_else(|| o.to_string(), str::to_owned) == *value)
                .cloned()
                .ok_or_else(|| bad(name, "is not one of the allowed values"))?
        } else {
            match kind(p) {
                "boolean" => Value::Bool(matches!(value.as_str(), "true" | "on" | "1")),
                "integer" => value
                    .trim()
                    .parse::<i64>()
                    .map(Value::from)
                    .map_err(|_| bad(name, "must be a whole number"))?,
                "number" => {
                    let v = value.trim();
                    v.parse::<i64>()
                        .ok()
                        .map(Value::from)
                        .or_else(|| {
                            v.parse::<f64>()
                                .ok()
                                .and_then(serde_json::Number::from_f64)
                                .map(Value::Number)
                        })
                        .ok_or_else(|| bad(name, "must be a number"))?
                }
                "string" if value.is_empty() => continue,
                "string" => Value::String(value.clone()),
                _ => serde_json::from_str(value).map_err(|_| bad(name, "must be JSON"))?,
            }
        };
        input.insert(name.to_owned(), v);
    }
    // A checkbox that is not ticked sends nothing: every boolean the form shows is false then.
    for (name, p) in &fields {
        if kind(p) == "boolean" && p.get("enum").is_none() && !input.contains_key(*name) {
            input.insert((*name).to_owned(), Value::Bool(false));
        }
    }
    Ok(Value::Object(input))
}

/// What the form's body says: the pairs, the model, whether test mode is on.
struct Posted {
    pairs: Vec<(String, String)>,
    model: std::sync::Arc<Model>,
    test: bool,
}

fn parse_posted(state: &AppState, body: &[u8]) -> Result<Posted, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidRequest,
            format!("The form could not be read: {e}"),
        )
    })?;
    let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let id = get("model").ok_or(ErrorCode::MissingModel)?;
    let model = state.catalog.get(id).cloned().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ModelNotFound,
            format!("Model \"{id}\" doesn't match any available model"),
        )
    })?;
    let test = get("test").is_some_and(|v| !v.is_empty() && v != "0");
    Ok(Posted { pairs, model, test })
}

/// The price of `input` (after the schema's defaults), by the API's own pricing function.
fn price_of(model: &Model, input: &Value) -> Result<runbase_domain::money::Millicents, String> {
    let mut with_defaults = input.as_object().cloned().unwrap_or_default();
    model.input_schema.apply_defaults(&mut with_defaults);
    model.price.for_input(&Value::Object(with_defaults))
}

/// The request "Copy as curl" copies: the same JSON the Playground sends.
fn curl(state: &AppState, model: &Model, input: &Value) -> String {
    let body = json!({ "model": model.id, "input": input });
    shell::curl_create(&state.config.public_url, shell::ENV_KEY, &body.to_string())
}

/// The price line: the price, and in test mode that nothing is charged.
fn price_line(price: Result<runbase_domain::money::Millicents, String>, test: bool) -> String {
    let id = if test { "pg-price-test" } else { "pg-price" };
    match price {
        Ok(p) => t_args(id, &[("price", money(p).into())]),
        Err(e) => e,
    }
}

/// `POST /playground/price`: the form's price, the input it makes and its curl, for the page's
/// script to show while the user edits (no session needed; nothing is stored).
pub async fn price(State(state): State<AppState>, body: Body) -> Response {
    let result = async {
        let body = read_body(body, PLAYGROUND_FORM_LIMIT)
            .await
            .map_err(|e| e.into_api(ErrorCode::InvalidRequest))?;
        let posted = parse_posted(&state, &body)?;
        let input = form_to_input(&posted.model, &posted.pairs)?;
        let price = price_of(&posted.model, &input);
        // The whole check the API makes, to say up front what it would refuse.
        let req = json!({ "model": posted.model.id, "input": input });
        let problem = service::parse_run_request(&state.catalog, req.to_string().as_bytes(), true)
            .err()
            .map(|e| e.message);
        Ok::<_, ApiError>(json!({
            "costUsd": price.as_ref().ok().map(|p| p.micro_usd()),
            "chargedUsd": price.as_ref().ok().map(|p| if posted.test { 0 } else { p.micro_usd() }),
            "price": price_line(price, posted.test),
            "input": input,
            "curl": curl(&state, &posted.model, &input),
            "problem": problem,
        }))
    }
    .await;
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => HttpError(e).into_response(),
    }
}

/// The account's playground key (live or test), created on first use. A key of that name that
/// the user disabled or that expired is not replaced: disabling it is how a user stops the
/// Playground spending (a new key would start over without the old one's limits), so the run is
/// refused and says where to turn it back on.
async fn playground_key(state: &AppState, viewer: &Viewer, test: bool) -> Result<ApiKey, ApiError> {
    let name = if test {
        PLAYGROUND_TEST_KEY
    } else {
        PLAYGROUND_KEY
    };
    let now = Timestamp::now();
    let keys = state
        .store
        .list_keys(&viewer.account.id)
        .await
        .map_err(service::internal)?;
    let mut mine: Vec<ApiKey> = keys
        .into_iter()
        .filter(|k| k.name == name && k.test == test)
        .collect();
    mine.sort_by_key(|k| k.created_at);
    if let Some(k) = mine.iter().find(|k| k.is_usable(now)) {
        return Ok(k.clone());
    }
    if let Some(k) = mine.first() {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!(
                "Your \"{name}\" key ({}) is disabled or expired, so the Playground does not run: \
                 turn it back on in Settings → API Keys",
                k.id
            ),
        ));
    }
    let settings = KeySettings {
        name: Some(name.to_owned()),
        test,
        ..KeySettings::default()
    };
    service::create_key(state.store.as_ref(), &viewer.account, settings)
        .await
        .map(|(k, _secret)| k)
        .map_err(|e| match e {
            service::AdminError::Store(e) => service::internal(e),
            other => ApiError::new(ErrorCode::InvalidRequest, other.to_string()),
        })
}

/// The ids of the account's playground keys.
async fn playground_key_ids(state: &AppState, account_id: &str) -> Vec<String> {
    state
        .store
        .list_keys(account_id)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|k| k.name == PLAYGROUND_KEY || k.name == PLAYGROUND_TEST_KEY)
        .map(|k| k.id)
        .collect()
}

/// The account's latest playground runs of `model`.
pub async fn recent_runs(state: &AppState, account_id: &str, model: &str) -> Vec<Run> {
    let keys = playground_key_ids(state, account_id).await;
    if keys.is_empty() {
        return Vec::new();
    }
    // Among the account's newest runs only: reading all of an account's runs to find a model
    // it never ran would cost every page view as much.
    let filter = RunFilter {
        status: None,
        model: Some(model.to_owned()),
        within: Some(RECENT_WINDOW),
        test: None,
    };
    state
        .store
        .list_runs(account_id, &filter, 50, None)
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| keys.contains(&r.key_id))
        .take(RECENT)
        .collect()
}

/// A run as the page's script reads it: the API's run object plus `files` (each output as a
/// same-site link and whether it is an image, a video or audio).
fn run_json(r: &Run) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_else(|_| json!({}));
    let files: Vec<Value> = r
        .output
        .as_ref()
        .and_then(|o| o.get("urls"))
        .and_then(Value::as_array)
        .map(|urls| {
            urls.iter()
                .filter_map(Value::as_str)
                .map(|u| {
                    let href = local_href(u, &r.id);
                    json!({ "href": href, "url": u, "kind": file_kind(href) })
                })
                .collect()
        })
        .unwrap_or_default();
    if let Value::Object(m) = &mut v {
        m.insert("files".into(), Value::Array(files));
        m.insert("page".into(), Value::String(format!("/runs/{}", r.id)));
    }
    v
}

/// `POST /playground/runs`: runs the form as the signed-in user. Answers the run (JSON, `201`)
/// to the page's script, or sends a browser without script to the run's page.
pub async fn create(
    State(state): State<AppState>,
    MaybeViewer(viewer): MaybeViewer,
    crate::web::ClientIp(client): crate::web::ClientIp,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let json = wants_json(&headers) || accepts_json(&headers);
    let Some(viewer) = viewer else {
        if json {
            return HttpError::from(ErrorCode::NotLoggedIn).into_response();
        }
        return see_other("/login");
    };
    // The limiter's decision, for the answer's `RateLimit-*` headers (and a refusal's
    // `Retry-After`), as the API sends them.
    let mut limited = None;
    let result = async {
        let body = read_body(body, PLAYGROUND_FORM_LIMIT)
            .await
            .map_err(|e| e.into_api(ErrorCode::InvalidRequest))?;
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap_or_default();
        let token = pairs
            .iter()
            .find(|(k, _)| k == "csrf_token")
            .map(|(_, v)| v.as_str());
        check_csrf(&headers, &viewer, token)?;
        let posted = parse_posted(&state, &body)?;
        let key = playground_key(&state, &viewer, posted.test).await?;
        // The key's own limits hold in the Playground as through the API: its IP allowlist
        // against the browser's address (spend limit, quota and balance in create_run).
        if !key.allow_ips.is_empty() {
            let ip = client.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::IpNotAllowed,
                    "Your IP address could not be determined",
                )
            })?;
            runbase_domain::auth::check_ip(&key, ip)?;
        }
        let decision = state
            .runs_limiter
            .check(&key.id)
            .await
            .map_err(|_| ApiError::from(ErrorCode::ServiceUnavailable))?;
        let allowed = decision.allowed;
        limited = Some(decision);
        if !allowed {
            state.metrics.rate_limited("runs");
            return Err(ErrorCode::RateLimited.into());
        }
        // The form's fields after the limiter, as the API reads a create's body after it: a
        // bad field counts as a request and its answer carries the limit's state.
        let input = form_to_input(&posted.model, &posted.pairs)?;
        let req = json!({ "model": posted.model.id, "input": input });
        service::create_run(
            state.store.as_ref(),
            &state.catalog,
            &key,
            runbase_domain::auth::KeySeen::Read,
            req.to_string().as_bytes(),
        )
        .await
        .map_err(service::CreateFailure::into_error)
    }
    .await;
    if let Ok(run) = &result {
        state.metrics.run_created(&run.model);
    }
    let mut resp = match result {
        Ok(run) if json => (StatusCode::CREATED, Json(run_json(&run))).into_response(),
        Ok(run) => see_other(&format!("/runs/{}", run.id)),
        Err(e) if json => HttpError(e).into_response(),
        Err(e) => error_response(&headers, e),
    };
    match limited {
        Some(decision) if decision.allowed => crate::web::rate_headers(&mut resp, &decision),
        Some(decision) => crate::web::refusal_headers(&mut resp, &decision),
        None => {}
    }
    resp
}

fn accepts_json(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.starts_with("application/json"))
}

/// `GET /playground/runs/{id}`: one of the signed-in account's runs, for the live status.
/// Another account's run is `404 run_not_found`, as in the API.
pub async fn show(
    State(state): State<AppState>,
    MaybeViewer(viewer): MaybeViewer,
    PagePath(id): PagePath<String>,
) -> Response {
    let Some(viewer) = viewer else {
        return HttpError::from(ErrorCode::NotLoggedIn).into_response();
    };
    if !id.starts_with("run_") || id.len() > 64 {
        return HttpError::from(ErrorCode::RunNotFound).into_response();
    }
    match state.store.get_run(&viewer.account.id, &id).await {
        Ok(Some(r)) => Json(run_json(&r)).into_response(),
        Ok(None) => HttpError::from(ErrorCode::RunNotFound).into_response(),
        Err(e) => HttpError(service::internal(e)).into_response(),
    }
}

/// The value a field starts with: the example's, else the schema's default.
fn initial<'a>(prefill: &'a Map<String, Value>, name: &str, p: &'a Value) -> Option<&'a Value> {
    prefill.get(name).or_else(|| p.get("default"))
}

fn value_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_owned)
}

/// One field of the form.
fn field(model: &Model, name: &str, p: &Value, prefill: &Map<String, Value>) -> Markup {
    let id = format!("pg-{name}");
    let help_id = format!("{id}-help");
    let description = p.get("description").and_then(Value::as_str).unwrap_or("");
    let is_required = required(model).contains(&name);
    let init = initial(prefill, name, p);
    let form_name = format!("input.{name}");
    let label = html! {
        label for=(id) { code { (name) } @if is_required { " " span.req { "(" (t("pg-required")) ")" } } }
    };
    let help = html! { @if !description.is_empty() { p.help #(help_id) { (description) } } };
    let described = (!description.is_empty()).then_some(help_id.as_str());
    if let Some(options) = p.get("enum").and_then(Value::as_array) {
        let chosen = init.map(value_text);
        return html! {
            div.pg-field {
                (label)
                select #(id) name=(form_name) aria-describedby=[described] {
                    @if chosen.is_none() { option value="" { "—" } }
                    @for o in options {
                        @let v = value_text(o);
                        option value=(v) selected[chosen.as_deref() == Some(v.as_str())] { (v) }
                    }
                }
                (help)
            }
        };
    }
    match kind(p) {
        "boolean" => html! {
            div.pg-field.check.toggle {
                input #(id) type="checkbox" role="switch" name=(form_name) value="true"
                    checked[init.and_then(Value::as_bool).unwrap_or(false)] aria-describedby=[described];
                (label)
                (help)
            }
        },
        "integer" | "number" => html! {
            div.pg-field {
                (label)
                input #(id) type="number" name=(form_name) inputmode="decimal"
                    step=(if kind(p) == "integer" { "1" } else { "any" })
                    min=[p.get("minimum").map(value_text)] max=[p.get("maximum").map(value_text)]
                    value=[init.map(value_text)] aria-describedby=[described];
                (help)
            }
        },
        "string" => html! {
            div.pg-field.wide {
                (label)
                textarea #(id) name=(form_name) rows="4" required[is_required]
                    maxlength=[p.get("maxLength").map(value_text)] aria-describedby=[described] {
                    (init.map(value_text).unwrap_or_default())
                }
                (help)
            }
        },
        _ if is_url_list(p) => {
            let urls: Vec<String> = init
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let max_items = p.get("maxItems").and_then(Value::as_u64);
            let max_mb = p.get("x-max-file-mb").and_then(Value::as_u64).unwrap_or(30);
            html! {
                fieldset.pg-field.wide.pg-urls data-field=(name) data-max-items=[max_items] data-max-mb=(max_mb) {
                    legend { code { (name) } }
                    p.help #(help_id) {
                        (description) " "
                        @if let Some(n) = max_items {
                            (t_args("pg-upload-limits", &[("count", n.into()), ("mb", max_mb.into())]))
                        } @else {
                            (t_args("pg-upload-limit-size", &[("mb", max_mb.into())]))
                        }
                    }
                    ul.pg-url-list {
                        @for (i, u) in urls.iter().enumerate() {
                            li { label.visually-hidden for=(format!("{id}-{i}")) { (t("pg-image-url")) }
                                 input #(format!("{id}-{i}")) type="url" name=(form_name) value=(u); }
                        }
                        @if urls.is_empty() {
                            li { label.visually-hidden for=(format!("{id}-0")) { (t("pg-image-url")) }
                                 input #(format!("{id}-0")) type="url" name=(form_name) placeholder="https://"; }
                        }
                    }
                    div.pg-url-actions {
                        button.pg-add-url type="button" hidden { (t("pg-add-url")) }
                        label.pg-upload hidden {
                            span { (t("pg-upload")) }
                            input type="file" accept="image/*" multiple;
                        }
                    }
                    p.pg-upload-status.help role="status" {}
                }
            }
        }
        _ => html! {
            div.pg-field.wide {
                (label)
                textarea #(id) name=(form_name) rows="3" aria-describedby=[described] {
                    (init.map(Value::to_string).unwrap_or_default())
                }
                p.help { (t("pg-json-field")) }
                (help)
            }
        },
    }
}

/// A run in the list beside the form.
pub fn run_item(r: &Run) -> Markup {
    html! {
        li {
            a href=(format!("/runs/{}", r.id)) { code { (r.id) } }
            " " (status_badge(r.status))
            @if r.test { " " span.badge.test { (t("badge-test")) } }
            " " span.muted { (money(r.cost)) " · " (time(r.created_at)) }
        }
    }
}

/// The Playground of a model's page.
pub fn section(
    state: &AppState,
    model: &Model,
    viewer: Option<&Viewer>,
    prefill: &Map<String, Value>,
    recent: &[Run],
) -> Markup {
    let test_default = !model.is_available();
    let input = Value::Object(prefill.clone());
    let initial_price = price_line(price_of(model, &input), test_default);
    let login = format!(
        "/login?{}",
        serde_urlencoded::to_string([("next", format!("/models/{}", model.id))])
            .unwrap_or_default()
    );
    html! {
        section.playground #playground aria-labelledby="pg-title"
            data-pg-remove=(t("pg-remove")) data-pg-image-url=(t("pg-image-url"))
            data-pg-too-many=(t("pg-too-many")) data-pg-too-large=(t("pg-too-large"))
            data-pg-uploading=(t("pg-uploading")) data-pg-uploaded=(t("pg-uploaded"))
            data-pg-upload-failed=(t("pg-upload-failed")) data-pg-preview-alt=(t("pg-preview-alt"))
            data-pg-output-alt=(t("pg-output-alt")) data-pg-download=(t("pg-download"))
            data-pg-poll-failed=(t("pg-poll-failed")) data-pg-starting=(t("pg-starting"))
            data-pg-login=(t("pg-login-to-run")) {
            h2 #pg-title { (t("pg-title")) }
            div.pg-grid {
                form.pg-form #pg-form method="post" action="/playground/runs" data-model=(model.id) {
                    @if let Some(v) = viewer { (csrf_field(v)) }
                    input type="hidden" name="model" value=(model.id);
                    @for (name, p) in fields(model) { (field(model, name, p, prefill)) }
                    div.pg-field.check.toggle.wide {
                        input #pg-test type="checkbox" role="switch" name="test" value="1" checked[test_default] aria-describedby="pg-test-help";
                        label for="pg-test" { (t("pg-test-mode")) }
                        p.help #pg-test-help {
                            (t("pg-test-mode-help"))
                            @if !model.is_available() { " " (t("pg-test-only")) }
                        }
                    }
                    p.pg-price.wide { strong { (t("pg-price-label")) " " } output #pg-price for="pg-form" aria-live="polite" { (initial_price) } }
                    p.pg-problem.help.wide #pg-problem role="status" {}
                    div.pg-actions.wide {
                        @if viewer.is_some() {
                            button.primary #pg-run type="submit" { (t("pg-run")) }
                        } @else {
                            a.button #pg-login href=(login) { (t("pg-login-to-run")) }
                        }
                    }
                }
                div.pg-side {
                    h3 { (t("pg-output")) }
                    div #pg-status role="status" aria-live="polite" { p.muted { (t("pg-output-empty")) } }
                    div.outputs #pg-output {}
                    h3 { (t("pg-recent")) }
                    @if viewer.is_some() {
                        ul.pg-recent #pg-recent {
                            @for r in recent { (run_item(r)) }
                        }
                        @if recent.is_empty() { p.muted #pg-recent-empty { (t("pg-recent-empty")) } }
                    } @else {
                        p.muted { a href=(login) { (t("pg-login-to-run")) } }
                    }
                }
            }
            h3 { (t("pg-curl")) }
            div.code-row { pre.code #pg-curl { code { (curl(state, model, &input)) } } (copy_button("pg-curl")) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbase_domain::catalog::Catalog;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn form_fields_are_typed_by_the_schema() {
        let catalog = Catalog::builtin().unwrap();
        let m = catalog.get("bytedance/seedance-1.5-pro").unwrap();
        let input = form_to_input(
            m,
            &pairs(&[
                ("model", "x"),
                ("input.prompt", "a fox"),
                ("input.duration", "8"),
                ("input.image_urls", "https://example.com/a.png"),
                ("input.image_urls", ""),
            ]),
        )
        .unwrap();
        assert_eq!(input["prompt"], "a fox");
        assert_eq!(input["duration"], "8");
        assert_eq!(input["generate_audio"], false, "an unticked box is false");
        assert_eq!(input["image_urls"], json!(["https://example.com/a.png"]));
        let input = form_to_input(m, &pairs(&[("input.generate_audio", "true")])).unwrap();
        assert_eq!(input["generate_audio"], true);
        assert!(form_to_input(m, &pairs(&[("input.nope", "1")])).is_err());
        assert!(form_to_input(m, &pairs(&[("input.duration", "7")])).is_err());

        let kling = catalog.get("kling/kling-3.0").unwrap();
        let input = form_to_input(kling, &pairs(&[("input.duration", "10")])).unwrap();
        assert!(input["duration"].is_number(), "{input}");
        assert!(form_to_input(kling, &pairs(&[("input.duration", "ten")])).is_err());
    }
}

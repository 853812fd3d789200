//! The models page (search and tag filter) and a page per model, like the published API
//! pages: overview, price, a curl quick start, input and output schema tables generated from
//! the schemas, and the error table.

use crate::i18n::{t, t_args};
use crate::layout::{Nav, copy_button, shell, table};
use crate::pages::docs::error_table;
use crate::pages::playground;
use crate::shell;
use crate::web::{MaybeViewer, PagePath, PageQuery, error_response, page};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use maud::{Markup, html};
use runbase_domain::ErrorCode;
use runbase_domain::catalog::Model;
use runbase_http::AppState;
use serde::Deserialize;
use serde_json::{Map, Value, json};

#[derive(Deserialize, Default)]
pub struct ModelsQuery {
    q: Option<String>,
    tag: Option<String>,
}

/// The price as people read it: "$0.06 per run", "$0.06 (resolution 1K), ...", or per unit
/// of the field that multiplies it.
fn price(m: &Model) -> Markup {
    let t = m.price.table();
    html! {
        @if let Some((fields, table)) = t.by {
            @for (i, (key, amount)) in table.iter().enumerate() {
                @if i > 0 { ", " }
                (amount.usd()) " ("
                @for (j, (field, value)) in fields.iter().zip(key.split(',')).enumerate() {
                    @if j > 0 { ", " }
                    (field) " " (value)
                }
                ")"
            }
        } @else {
            (t.base.usd())
        }
        @if let Some(per) = t.per { " " (t_args("price-per-unit", &[("field", per.into())])) } @else { " " (crate::i18n::t("price-per-run")) }
    }
}

pub async fn list(
    State(state): State<AppState>,
    MaybeViewer(viewer): MaybeViewer,
    PageQuery(q): PageQuery<ModelsQuery>,
) -> Response {
    let needle = q.q.as_deref().unwrap_or("").trim().to_lowercase();
    let tag = q.tag.as_deref().unwrap_or("");
    let mut tags: Vec<&str> = state
        .catalog
        .models()
        .iter()
        .flat_map(|m| m.tags.iter().map(String::as_str))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    let shown: Vec<_> = state
        .catalog
        .models()
        .iter()
        .filter(|m| tag.is_empty() || m.has_tag(tag))
        .filter(|m| {
            needle.is_empty()
                || [&m.id, &m.name, &m.description, &m.maker]
                    .into_iter()
                    .chain(&m.tags)
                    .any(|f| f.to_lowercase().contains(&needle))
        })
        .collect();
    let body = html! {
        h1 { (t("models-title")) }
        form.filters method="get" action="/models" role="search" {
            div { label for="q" { (t("models-search")) } input #q type="search" name="q" value=(needle) placeholder=(t("models-search-placeholder")); }
            div { label for="tag" { (t("models-tag")) }
                select #tag name="tag" {
                    option value="" { (t("models-all-tags")) }
                    @for t in &tags { option value=(t) selected[*t == tag] { (t) } }
                } }
            button type="submit" { (t("models-search")) }
        }
        p.muted #model-count { (t_args("models-count", &[("shown", shown.len().into()), ("total", state.catalog.models().len().into())])) }
        div.model-grid {
            @for m in &shown {
                a.model-card href=(format!("/models/{}", m.id)) {
                    span.category { (m.tags.join(" · ")) }
                    h2 { (m.name) }
                    code { (m.id) }
                    p { (m.description) }
                    p.price { (price(m)) }
                    @if !m.is_available() { span.badge.test { (t("models-test-only")) } }
                }
            }
        }
        @if shown.is_empty() { p { (t("models-none")) " " a href="/models" { (t("models-show-all")) } } }
    };
    page(shell(
        &t("models-title"),
        viewer.as_ref(),
        Nav::Models,
        body,
    ))
}

fn type_of(p: &Value) -> String {
    match p.get("type").and_then(Value::as_str) {
        Some("array") => {
            let item = p.get("items").map(type_of).unwrap_or_else(|| "any".into());
            format!("array of {item}")
        }
        Some(t) => t.to_owned(),
        None => "any".into(),
    }
}

/// Allowed values and bounds of one property, as a sentence fragment.
fn constraints(p: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(values) = p.get("enum").and_then(Value::as_array) {
        let v: Vec<String> = values
            .iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .collect();
        parts.push(format!("one of {}", v.join(", ")));
    }
    for (k, label) in [
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
        ("minItems", "min items"),
        ("maxItems", "max items"),
    ] {
        if let Some(v) = p.get(k) {
            parts.push(format!("{label} {v}"));
        }
    }
    if let Some(f) = p
        .get("format")
        .or_else(|| p.get("items").and_then(|i| i.get("format")))
    {
        parts.push(format!("format {}", f.as_str().unwrap_or("")));
    }
    parts.join("; ")
}

/// A schema's properties as a table: field, type, required, default, allowed values, meaning.
pub fn schema_table(caption: &str, schema: &Value) -> Markup {
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    table(
        caption,
        &[
            t("schema-field"),
            t("schema-type"),
            t("schema-required"),
            t("schema-default"),
            t("schema-allowed"),
            t("schema-description"),
        ],
        html! {
            @for (name, p) in props {
                tr {
                    td { code { (name) } }
                    td { (type_of(p)) }
                    td { @if required.contains(&name.as_str()) { strong { (t("yes")) } } @else { (t("no")) } }
                    td { @if let Some(d) = p.get("default") { code { (d) } } }
                    td { (constraints(p)) }
                    td { (p.get("description").and_then(Value::as_str).unwrap_or("")) }
                }
            }
        },
    )
}

/// An example input: the required fields with a plausible value each.
fn example_input(m: &Model) -> Value {
    let schema = m.input_schema.raw();
    let mut input = Map::new();
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for name in required.iter().filter_map(Value::as_str) {
        let p = &schema["properties"][name];
        let v = if let Some(first) = p
            .get("enum")
            .and_then(Value::as_array)
            .and_then(|e| e.first())
        {
            first.clone()
        } else if let Some(d) = p.get("default") {
            d.clone()
        } else {
            match p.get("type").and_then(Value::as_str) {
                Some("integer") | Some("number") => p.get("minimum").cloned().unwrap_or(json!(1)),
                Some("boolean") => json!(false),
                Some("array") => json!([]),
                _ if name.contains("prompt") => json!("A red fox in fresh snow, morning light"),
                _ => json!("example"),
            }
        };
        input.insert(name.to_owned(), v);
    }
    Value::Object(input)
}

#[derive(Deserialize, Default)]
pub struct ModelQuery {
    key: Option<String>,
    /// An example's index: the Playground starts with its input.
    example: Option<usize>,
}

pub async fn show(
    State(state): State<AppState>,
    MaybeViewer(viewer): MaybeViewer,
    headers: HeaderMap,
    PagePath((provider, name)): PagePath<(String, String)>,
    PageQuery(q): PageQuery<ModelQuery>,
) -> Response {
    let id = format!("{provider}/{name}");
    let Some(m) = state.catalog.get(&id) else {
        return error_response(
            &headers,
            runbase_domain::ApiError::new(ErrorCode::NotFound, format!("No model {id}")),
        );
    };
    render(&state, viewer, m, &q).await
}

/// `/{provider}/{name}`, runbase.net's address of a model's page. Every page of the dashboard
/// and every route of the API has a fixed first segment, which the router matches first; what
/// reaches here and is not a model is answered as any unknown path is.
pub async fn landing(
    State(state): State<AppState>,
    MaybeViewer(viewer): MaybeViewer,
    uri: Uri,
    headers: HeaderMap,
    PageQuery(q): PageQuery<ModelQuery>,
) -> Response {
    let id = uri.path().trim_start_matches('/');
    match state.catalog.get(id) {
        Some(m) => render(&state, viewer, m, &q).await,
        None => crate::not_found(uri, headers).await,
    }
}

/// The value of one price option, as "field value, field value".
fn option_label(fields: &[String], key: &str) -> String {
    fields
        .iter()
        .zip(key.split(','))
        .map(|(f, v)| format!("{f} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The price of each option, as a table.
fn price_table(m: &Model) -> Markup {
    let pt = m.price.table();
    let unit = match pt.per {
        Some(per) => t_args("price-per-unit", &[("field", per.into())]),
        None => t("price-per-run"),
    };
    table(
        &t("model-price"),
        &[t("price-option"), t("price-amount")],
        html! {
            @if let Some((fields, by)) = pt.by {
                @for (key, amount) in by.iter() {
                    tr { td { (option_label(fields, key)) } td.num { (amount.usd()) " " (unit) } }
                }
                tr { td { (t("price-other")) } td.num { (pt.base.usd()) " " (unit) } }
            } @else {
                tr { td { (t("price-any")) } td.num { (pt.base.usd()) " " (unit) } }
            }
        },
    )
}

async fn render(
    state: &AppState,
    viewer: Option<crate::web::Viewer>,
    m: &std::sync::Arc<Model>,
    q: &ModelQuery,
) -> Response {
    // The key placeholder: an environment variable by default, or the prefix of one of the
    // viewer's keys (the full secret is never shown again, so the user pastes it).
    let keys = match &viewer {
        Some(v) => state
            .store
            .list_keys(&v.account.id)
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let chosen = q
        .key
        .as_deref()
        .and_then(|k| keys.iter().find(|x| x.id == k));
    let placeholder = match chosen {
        Some(k) => format!("{}...", k.prefix),
        None => shell::ENV_KEY.to_owned(),
    };
    let base = &state.config.public_url;
    let body_json = json!({ "model": m.id, "input": example_input(m) });
    // Catalogue values end up in a command the user pastes into a shell: quoted, always.
    let create = shell::curl_create(base, &placeholder, &body_json.to_string());
    let poll = shell::curl_get(base, "/api/v1/runs/RUN_ID", &placeholder);
    let prefill: Map<String, Value> = q
        .example
        .and_then(|i| m.examples.get(i))
        .and_then(|e| e.input.as_object().cloned())
        .unwrap_or_default();
    let recent = match &viewer {
        Some(v) => playground::recent_runs(state, &v.account.id, &m.id).await,
        None => Vec::new(),
    };
    let page_path = format!("/models/{}", m.id);
    let body = html! {
        p.crumbs { a href="/models" { (t("models-title")) } " / " (m.id) }
        header.model-head {
            @if !m.maker.is_empty() { p.maker { (m.maker) } }
            h1 { (m.name) }
            p.model-id { (t("model-id")) ": " code { (m.id) } }
            p.lead { (m.description) }
            ul.tags aria-label=(t("models-tag")) {
                @for tag in &m.tags {
                    li { a.tag href=(format!("/models?{}", serde_urlencoded::to_string([("tag", tag.as_str())]).unwrap_or_default())) { (tag) } }
                }
            }
            p.price-summary { strong { (t("model-price")) ": " } (price(m)) }
            @if !m.is_available() { p.notice.ok role="note" { (t("model-test-only")) } }
        }
        (playground::section(state, m, viewer.as_ref(), &prefill, &recent))
        @if !m.examples.is_empty() {
            h2 { (t("model-examples")) }
            ul.examples {
                @for (i, e) in m.examples.iter().enumerate() {
                    li.example {
                        a.example-fill href=(format!("{page_path}?example={i}#playground"))
                            data-example=(e.input.to_string()) {
                            strong { (e.title) }
                            @if let Some(ar) = e.input.get("aspect_ratio").and_then(Value::as_str) {
                                " " span.badge { (ar) }
                            }
                            @if let Some(p) = e.input.get("prompt").and_then(Value::as_str) {
                                span.example-prompt { (p) }
                            }
                            span.example-use { (t("model-example-use")) }
                        }
                    }
                }
            }
        }
        h2 { (t("model-quickstart")) }
        @if !keys.is_empty() {
            form.inline method="get" action=(page_path) {
                label for="key" { (t("model-key-in-examples")) }
                select #key name="key" {
                    option value="" { (t("model-key-env")) }
                    @for k in &keys { option value=(k.id) selected[chosen.is_some_and(|c| c.id == k.id)] { (k.name) " (" (k.prefix) "…)" } }
                }
                button type="submit" { (t("model-key-use")) }
            }
        }
        p { (t("model-step-create")) }
        div.code-row { pre.code #curl-create { code { (create) } } (copy_button("curl-create")) }
        p { (t("model-step-poll")) }
        div.code-row { pre.code #curl-poll { code { (poll) } } (copy_button("curl-poll")) }
        h2 { (t("model-price")) }
        (price_table(m))
        h2 { (t("model-input")) }
        (schema_table(&t("model-input"), m.input_schema.raw()))
        h2 { (t("model-output")) }
        (schema_table(&t("model-output"), &m.output_schema))
        h2 { (t("model-errors")) }
        (error_table(ErrorCode::RUNS_API))
    };
    let body = html! { (body) script src="/assets/playground.js" defer {} };
    page(shell(&m.name, viewer.as_ref(), Nav::Models, body))
}

//! The models page (search and tag filter) and a page per model, like the published API
//! pages: overview, price, a curl quick start, input and output schema tables generated from
//! the schemas, and the error table.

use crate::layout::{Nav, copy_button, shell, table};
use crate::pages::docs::error_table;
use crate::shell;
use crate::web::{MaybeViewer, PagePath, PageQuery, error_response, page};
use axum::extract::State;
use axum::http::HeaderMap;
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
        @if let Some(per) = t.per { " per unit of " code { (per) } } @else { " per run" }
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
        h1 { "Models" }
        form.filters method="get" action="/models" role="search" {
            div { label for="q" { "Search" } input #q type="search" name="q" value=(needle) placeholder="name, provider, task"; }
            div { label for="tag" { "Tag" }
                select #tag name="tag" {
                    option value="" { "All tags" }
                    @for t in &tags { option value=(t) selected[*t == tag] { (t) } }
                } }
            button type="submit" { "Search" }
        }
        p.muted #model-count { (shown.len()) " of " (state.catalog.models().len()) " models" }
        div.model-grid {
            @for m in &shown {
                a.model-card href=(format!("/models/{}", m.id)) {
                    span.category { (m.tags.join(" · ")) }
                    h2 { (m.name) }
                    code { (m.id) }
                    p { (m.description) }
                    p.price { (price(m)) }
                    @if !m.is_available() { span.badge.test { "test keys only here" } }
                }
            }
        }
        @if shown.is_empty() { p { "No model matches. " a href="/models" { "Show all" } } }
    };
    page(shell("Models", viewer.as_ref(), Nav::Models, body))
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
            "Field",
            "Type",
            "Required",
            "Default",
            "Allowed",
            "Description",
        ],
        html! {
            @for (name, p) in props {
                tr {
                    td { code { (name) } }
                    td { (type_of(p)) }
                    td { @if required.contains(&name.as_str()) { strong { "yes" } } @else { "no" } }
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
    let body = html! {
        p.crumbs { a href="/models" { "Models" } " / " (m.id) }
        h1 { (m.name) }
        p.lead { (m.description) }
        dl.facts {
            dt { "Model ID" } dd { code { (m.id) } }
            @if !m.maker.is_empty() { dt { "Maker" } dd { (m.maker) } }
            dt { "Tags" } dd { (m.tags.join(", ")) }
            dt { "Price" } dd { (price(m)) }
            dt { "Available here" } dd { @if m.is_available() { "yes" } @else { "with test keys (simulated): no provider is configured for it on this server" } }
        }
        h2 { "Quick start" }
        @if !keys.is_empty() {
            form.inline method="get" action=(format!("/models/{}", m.id)) {
                label for="key" { "Key in the examples" }
                select #key name="key" {
                    option value="" { "$RUNBASE_API_KEY (environment variable)" }
                    @for k in &keys { option value=(k.id) selected[chosen.is_some_and(|c| c.id == k.id)] { (k.name) " (" (k.prefix) "…)" } }
                }
                button type="submit" { "Use" }
            }
        }
        p { "1. Create a run; the answer is the run, with " code { "status: \"pending\"" } ":" }
        div.code-row { pre.code #curl-create { code { (create) } } (copy_button("curl-create")) }
        p { "2. Poll it every 1–2 seconds until " code { "status" } " is " code { "succeeded" } " (or " code { "failed" } "), then read " code { "output.urls" } ":" }
        div.code-row { pre.code #curl-poll { code { (poll) } } (copy_button("curl-poll")) }
        h2 { "Input" }
        (schema_table("Input schema", m.input_schema.raw()))
        h2 { "Output" }
        (schema_table("Output schema", &m.output_schema))
        h2 { "Errors" }
        (error_table(ErrorCode::RUNS_API))
    };
    page(shell(&m.name, viewer.as_ref(), Nav::Models, body))
}

//! Runs: the history (filtered by status and model, paginated) and a page per run.

use crate::layout::{self, Nav, json_block, opt_time, shell, status_badge, table};
use crate::pages::credits::ledger_rows;
use crate::web::{PagePath, PageQuery, Viewer, error_response, page};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use runbase_domain::run::{Run, RunStatus};
use runbase_domain::service;
use runbase_domain::store::RunFilter;
use runbase_domain::{ApiError, ErrorCode};
use runbase_http::AppState;
use serde::Deserialize;

const PAGE: u32 = 25;
const STATUSES: [RunStatus; 5] = [
    RunStatus::Pending,
    RunStatus::Processing,
    RunStatus::Succeeded,
    RunStatus::Failed,
    RunStatus::Canceled,
];

#[derive(Deserialize, Default)]
pub struct RunsQuery {
    status: Option<String>,
    model: Option<String>,
    after: Option<String>,
}

fn duration(r: &Run) -> Markup {
    match (r.started_at, r.completed_at) {
        (Some(s), Some(c)) => html! { (format!("{:.1} s", (c.0 - s.0) as f64 / 1e6)) },
        _ => html! { span.muted { "—" } },
    }
}

/// Rows of a runs table (the dashboard home shows the latest few too).
pub fn run_rows(runs: &[Run]) -> Markup {
    html! {
        @for r in runs {
            tr {
                td { a href=(format!("/runs/{}", r.id)) { code { (r.id) } } }
                td { (r.model) @if r.test { " " span.badge.test { "test" } } }
                td { (status_badge(r.status)) }
                td.num { (layout::money(r.cost)) }
                td { (layout::time(r.created_at)) }
                td { (duration(r)) }
            }
        }
    }
}

pub const RUN_HEAD: [&str; 6] = ["Run", "Model", "Status", "Cost", "Created", "Duration"];

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PageQuery(q): PageQuery<RunsQuery>,
) -> Response {
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let model = q.model.as_deref().filter(|s| !s.is_empty());
    let filter = RunFilter {
        status: status.and_then(RunStatus::parse),
        model: model.map(str::to_owned),
    };
    if status.is_some() && filter.status.is_none() {
        return error_response(
            &headers,
            ApiError::new(ErrorCode::InvalidRequest, "Unknown status filter"),
        );
    }
    let after = q
        .after
        .as_deref()
        .filter(|a| a.starts_with("run_") && a.len() <= 64);
    let mut runs = match state
        .store
        .list_runs(&viewer.account.id, &filter, PAGE + 1, after)
        .await
    {
        Ok(r) => r,
        Err(e) => return error_response(&headers, service::internal(e)),
    };
    let more = runs.len() > PAGE as usize;
    runs.truncate(PAGE as usize);
    let filters = serde_urlencoded::to_string([
        ("status", status.unwrap_or("")),
        ("model", model.unwrap_or("")),
    ])
    .unwrap_or_default();
    let newest = format!("/runs?{filters}");
    let next = runs.last().filter(|_| more).map(|r| {
        let after = serde_urlencoded::to_string([("after", r.id.as_str())]).unwrap_or_default();
        format!("{after}&{filters}")
    });
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action="/runs" role="search" {
            div { label for="status" { "Status" }
                select #status name="status" {
                    option value="" { "Any status" }
                    @for s in STATUSES { option value=(s.as_str()) selected[filter.status == Some(s)] { (s.as_str()) } }
                } }
            div { label for="model" { "Model" }
                select #model name="model" {
                    option value="" { "Any model" }
                    @for m in state.catalog.models() { option value=(m.id) selected[model == Some(m.id.as_str())] { (m.id) } }
                } }
            button type="submit" { "Filter" }
        }
        (table("Your runs", &RUN_HEAD, html! {
            (run_rows(&runs))
            @if runs.is_empty() { tr { td colspan="6" { "No runs match. Create one with the API: see " a href="/docs/runs" { "Runs" } "." } } }
        }))
        nav.pager aria-label="Run pages" {
            @if after.is_some() { a href=(newest) { "← Newest" } }
            @if let Some(n) = next { a href=(format!("/runs?{n}")) { "Older →" } }
        }
    };
    page(shell("Runs", Some(&viewer), Nav::Runs, body))
}

fn is_image(url: &str) -> bool {
    let path = url.split('?').next().unwrap_or(url).to_ascii_lowercase();
    [".png", ".jpg", ".jpeg", ".webp", ".gif"]
        .iter()
        .any(|e| path.ends_with(e))
}

fn is_video(url: &str) -> bool {
    let path = url.split('?').next().unwrap_or(url).to_ascii_lowercase();
    [".mp4", ".webm"].iter().any(|e| path.ends_with(e))
}

fn is_audio(url: &str) -> bool {
    let path = url.split('?').next().unwrap_or(url).to_ascii_lowercase();
    [".wav", ".mp3", ".ogg", ".flac", ".m4a"]
        .iter()
        .any(|e| path.ends_with(e))
}

/// How a page shows an output file: `image`, `video`, `audio`, or `file` (a link only).
pub fn file_kind(url: &str) -> &'static str {
    if is_image(url) {
        "image"
    } else if is_video(url) {
        "video"
    } else if is_audio(url) {
        "audio"
    } else {
        "file"
    }
}

/// Where the page points at an output. Output URLs are absolute on the `public_url` in force when
/// the run finished; this run's own stored files are linked by their path instead, so they show
/// (and pass the pages' `img-src 'self'` policy) whatever host name the browser used to get here.
pub fn local_href<'a>(url: &'a str, run_id: &str) -> &'a str {
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]));
    match path {
        Some(p)
            if p.strip_prefix("/files/")
                .and_then(|p| p.strip_prefix(run_id))
                .is_some_and(|p| p.starts_with('/')) =>
        {
            p
        }
        _ => url,
    }
}

fn output(r: &Run) -> Markup {
    let Some(out) = &r.output else {
        return html! { p.muted { "No output yet." } };
    };
    let urls: Vec<&str> = out
        .get("urls")
        .and_then(|u| u.as_array())
        .map(|a| a.iter().filter_map(|u| u.as_str()).collect())
        .unwrap_or_default();
    html! {
        @if !urls.is_empty() {
            div.outputs {
                @for (i, u) in urls.iter().map(|u| local_href(u, &r.id)).enumerate() {
                    figure {
                        @if is_image(u) { a href=(u) { img src=(u) alt=(format!("Output {} of {}", i + 1, r.id)) loading="lazy"; } }
                        @else if is_video(u) { video src=(u) controls preload="metadata" {} }
                        figcaption { a href=(u) { "File " (i + 1) } }
                    }
                }
            }
        }
        @if let Some(text) = out.get("text").and_then(|t| t.as_str()) { h3 { "Text" } pre.code { (text) } }
        details { summary { "Output JSON" } (json_block(out)) }
    }
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PagePath(id): PagePath<String>,
) -> Response {
    let valid = id.starts_with("run_") && id.len() <= 64;
    let run = if valid {
        match state.store.get_run(&viewer.account.id, &id).await {
            Ok(r) => r,
            Err(e) => return error_response(&headers, service::internal(e)),
        }
    } else {
        None
    };
    let Some(r) = run else {
        return error_response(&headers, ErrorCode::RunNotFound.into());
    };
    let ledger = match state.store.run_ledger(&viewer.account.id, &r.id).await {
        Ok(l) => l,
        Err(e) => return error_response(&headers, service::internal(e)),
    };
    let body = html! {
        p.crumbs { a href="/runs" { "Runs" } " / " code { (r.id) } }
        h1 { "Run " code.id { (r.id) } }
        dl.facts {
            dt { "Model" } dd { a href=(format!("/models/{}", r.model)) { (r.model) } @if r.test { " " span.badge.test { "test" } } }
            dt { "Status" } dd #run-status { (status_badge(r.status)) }
            dt { "Cost" } dd { (layout::money(r.cost)) }
            dt { "Created" } dd { (layout::time(r.created_at)) }
            dt { "Started" } dd { (opt_time(r.started_at)) }
            dt { "Completed" } dd { (opt_time(r.completed_at)) }
        }
        @if let Some(e) = &r.error {
            div.notice.error role="alert" { strong { (e.code) } ": " (e.message) }
        }
        @if !r.status.is_terminal() { p.muted { "This run is not finished; reload to see its progress." } }
        h2 { "Output" }
        (output(&r))
        h2 { "Input" }
        (json_block(&r.input))
        h2 { "Ledger" }
        (table("Ledger lines of this run", &["Date", "Kind", "Description", "Amount", "Balance after"], html! {
            (ledger_rows(&ledger))
            @if ledger.is_empty() { tr { td colspan="5" { "Nothing was charged for this run." } } }
        }))
    };
    page(shell(
        &format!("Run {}", r.id),
        Some(&viewer),
        Nav::Runs,
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::local_href;

    #[test]
    fn this_runs_files_are_linked_by_path_and_other_urls_stay_as_they_are() {
        let run = "run_abc";
        assert_eq!(
            local_href("http://127.0.0.1:8080/files/run_abc/tok-output-0.png", run),
            "/files/run_abc/tok-output-0.png"
        );
        assert_eq!(
            local_href(
                "https://runbase.example.com/files/run_abc/t-o.webp?x=1",
                run
            ),
            "/files/run_abc/t-o.webp?x=1"
        );
        for other in [
            "https://cdn.example.com/images/a.png",
            "https://x.example/files/run_other/t-o.png",
            "https://x.example/files/run_abcd/t-o.png",
            "not a url",
        ] {
            assert_eq!(local_href(other, run), other);
        }
    }
}

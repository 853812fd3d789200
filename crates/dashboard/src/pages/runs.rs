//! Runs: the history (filtered by status and model, paginated) and a page per run.

use crate::i18n::{t, t_args};
use crate::layout::{self, Nav, json_block, opt_time, shell, status_badge, table};
use crate::pages::credits::ledger_rows;
use crate::web::{PagePath, PageQuery, Viewer, error_response, page};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use runbase_domain::run::{Run, RunStatus};
use runbase_domain::store::{RunFilter, StoreError};
use runbase_domain::{ApiError, ErrorCode};
use runbase_domain::{ids, service};
use runbase_http::AppState;
use serde::Deserialize;

const PAGE: u32 = 25;

/// How many of the account's runs one filtered page reads at most. A filter that few runs pass
/// (a model never used, no failures) would otherwise read every run the account has, holding a
/// database reader for as long (0.8 s at 3M runs on SQLite); the page then offers to search the
/// next window.
const WINDOW: u32 = 2_000;
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
    /// `live` or `test`: the runs of that mode only (empty or absent: both).
    mode: Option<String>,
    after: Option<String>,
}

/// The modes offered by the filter, as `?mode=` says them, and which runs each lists.
const MODES: [(&str, bool); 2] = [("live", false), ("test", true)];

/// A mode's name in the filter.
fn mode_label(test: bool) -> String {
    if test {
        t("runs-mode-test")
    } else {
        t("runs-mode-live")
    }
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
                td { (r.model) @if r.test { " " span.badge.test { (t("badge-test")) } } }
                td { (status_badge(r.status)) }
                td.num { (layout::money(r.cost)) }
                td { (layout::time(r.created_at)) }
                td { (duration(r)) }
            }
        }
    }
}

/// The columns of a runs table.
pub fn run_head() -> [String; 6] {
    [
        t("runs-col-run"),
        t("runs-col-model"),
        t("runs-col-status"),
        t("runs-col-cost"),
        t("runs-col-created"),
        t("runs-col-duration"),
    ]
}

/// The last run of the window of `window` runs (of the mode `test`, or of both) after `after`, if
/// a run of the account lies beyond it (a window that reaches the account's first run has nothing
/// after it to offer).
async fn window_end(
    state: &AppState,
    account_id: &str,
    test: Option<bool>,
    after: Option<&str>,
    window: u32,
) -> Result<Option<String>, StoreError> {
    let Some(end) = state
        .store
        .run_before(account_id, test, after, window)
        .await?
    else {
        return Ok(None);
    };
    let beyond = state
        .store
        .run_before(account_id, test, Some(&end), 1)
        .await?;
    Ok(beyond.map(|_| end))
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PageQuery(q): PageQuery<RunsQuery>,
) -> Response {
    let status = q.status.as_deref().filter(|s| !s.is_empty());
    let model = q.model.as_deref().filter(|s| !s.is_empty());
    let mode = q.mode.as_deref().filter(|s| !s.is_empty());
    // A mode alone needs no window: each mode is a range of the account's index.
    let filter = RunFilter {
        status: status.and_then(RunStatus::parse),
        model: model.map(str::to_owned),
        within: (status.is_some() || model.is_some()).then_some(WINDOW),
        test: mode.and_then(|m| MODES.iter().find(|(name, _)| *name == m).map(|&(_, t)| t)),
    };
    if mode.is_some() && filter.test.is_none() {
        return error_response(
            &headers,
            ApiError::new(ErrorCode::InvalidRequest, "Unknown mode filter"),
        );
    }
    if status.is_some() && filter.status.is_none() {
        return error_response(
            &headers,
            ApiError::new(ErrorCode::InvalidRequest, "Unknown status filter"),
        );
    }
    // The models offered are the catalogue's; anything else (PostgreSQL refuses a NUL in a
    // text parameter outright) names no runs anyone could filter for.
    if model.is_some_and(|m| state.catalog.get(m).is_none()) {
        return error_response(
            &headers,
            ApiError::new(ErrorCode::InvalidRequest, "Unknown model filter"),
        );
    }
    // A cursor that names none of this account's runs (mistyped, or another account's) is a
    // 404, as the API answers it, not silently the first page.
    let after = q.after.as_deref().filter(|a| !a.is_empty());
    if let Some(a) = after {
        let found = if ids::looks_like_run_id(a) {
            match state.store.get_run(&viewer.account.id, a).await {
                Ok(run) => run.is_some(),
                Err(e) => return error_response(&headers, service::internal(e)),
            }
        } else {
            false
        };
        if !found {
            return error_response(
                &headers,
                ApiError::new(
                    ErrorCode::RunNotFound,
                    "The page starts after a run that is not one of yours",
                ),
            );
        }
    }
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
    // Where the next page starts: after the last run shown when more matched; otherwise, when
    // the window ended before the account's runs did, after the window's last run (no run is
    // skipped: it was read).
    let searched_to = match filter.within.filter(|_| !more) {
        None => None,
        Some(window) => {
            match window_end(&state, &viewer.account.id, filter.test, after, window).await {
                Ok(end) => end,
                Err(e) => return error_response(&headers, service::internal(e)),
            }
        }
    };
    let searched_to = searched_to.as_deref();
    let next_after = if more {
        runs.last().map(|r| r.id.as_str())
    } else {
        searched_to
    };
    let filters = serde_urlencoded::to_string([
        ("status", status.unwrap_or("")),
        ("model", model.unwrap_or("")),
        ("mode", mode.unwrap_or("")),
    ])
    .unwrap_or_default();
    let newest = format!("/runs?{filters}");
    let next = next_after.map(|id| {
        let after = serde_urlencoded::to_string([("after", id)]).unwrap_or_default();
        format!("{after}&{filters}")
    });
    let body = html! {
        h1 { (t("nav-runs")) }
        form.filters method="get" action="/runs" role="search" {
            div { label for="status" { (t("runs-col-status")) }
                select #status name="status" {
                    option value="" { (t("runs-any-status")) }
                    @for s in STATUSES { option value=(s.as_str()) selected[filter.status == Some(s)] { (s.as_str()) } }
                } }
            div { label for="model" { (t("runs-col-model")) }
                select #model name="model" {
                    option value="" { (t("runs-any-model")) }
                    @for m in state.catalog.models() { option value=(m.id) selected[model == Some(m.id.as_str())] { (m.id) } }
                } }
            div { label for="mode" { (t("runs-mode")) }
                select #mode name="mode" {
                    option value="" { (t("runs-any-mode")) }
                    @for (name, test) in MODES { option value=(name) selected[mode == Some(name)] { (mode_label(test)) } }
                } }
            button type="submit" { (t("runs-filter")) }
        }
        (table(&t("runs-yours"), &run_head(), html! {
            (run_rows(&runs))
            @if runs.is_empty() && searched_to.is_none() { tr { td colspan="6" { (t("runs-none")) " " a href="/docs/runs" { (t("runs-none-docs")) } } } }
        }))
        @if searched_to.is_some() {
            p.muted #runs-window { (t_args("runs-window", &[("count", WINDOW.into())])) }
        }
        nav.pager aria-label=(t("runs-pages")) {
            @if after.is_some() { a href=(newest) { (t("runs-newest")) } }
            @if let Some(n) = next { a href=(format!("/runs?{n}")) { (t("runs-older")) } }
        }
    };
    page(shell(&t("nav-runs"), Some(&viewer), Nav::Runs, body))
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
        return html! { p.muted { (t("run-no-output")) } };
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
                        @if is_image(u) { a href=(u) { img src=(u) alt=(t_args("run-output-alt", &[("n", (i + 1).into()), ("run", r.id.as_str().into())])) loading="lazy"; } }
                        @else if is_video(u) { video src=(u) controls preload="metadata" {} }
                        figcaption { a href=(u) { (t_args("run-file", &[("n", (i + 1).into())])) } }
                    }
                }
            }
        }
        @if let Some(text) = out.get("text").and_then(|t| t.as_str()) { h3 { (t("run-text")) } pre.code { (text) } }
        details { summary { (t("run-output-json")) } (json_block(out)) }
    }
}

#[derive(Deserialize, Default)]
pub struct ShowQuery {
    redelivered: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PagePath(id): PagePath<String>,
    PageQuery(q): PageQuery<ShowQuery>,
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
    let deliveries = match state.store.run_deliveries(&viewer.account.id, &r.id).await {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => return error_response(&headers, service::internal(e)),
    };
    let body = html! {
        p.crumbs { a href="/runs" { (t("nav-runs")) } " / " code { (r.id) } }
        h1 { (t("run-title")) " " code.id { (r.id) } }
        dl.facts {
            dt { (t("runs-col-model")) } dd { a href=(format!("/models/{}", r.model)) { (r.model) } @if r.test { " " span.badge.test { (t("badge-test")) } } }
            dt { (t("runs-col-status")) } dd #run-status { (status_badge(r.status)) }
            dt { (t("runs-col-cost")) } dd { (layout::money(r.cost)) }
            dt { (t("runs-col-created")) } dd { (layout::time(r.created_at)) }
            dt { (t("run-started")) } dd { (opt_time(r.started_at)) }
            dt { (t("run-completed")) } dd { (opt_time(r.completed_at)) }
        }
        @if let Some(e) = &r.error {
            div.notice.error role="alert" { strong { (e.code) } ": " (e.message) }
        }
        @if !r.status.is_terminal() { p.muted { (t("run-unfinished")) } }
        h2 { (t("model-output")) }
        (output(&r))
        h2 { (t("model-input")) }
        (json_block(&r.input))
        h2 { (t("run-ledger")) }
        (table(&t("run-ledger-caption"), &[t("ledger-date"), t("ledger-kind"), t("ledger-description"), t("ledger-amount"), t("ledger-balance-after")], html! {
            (ledger_rows(&ledger))
            @if ledger.is_empty() { tr { td colspan="5" { (t("run-nothing-charged")) } } }
        }))
        @if !deliveries.is_empty() || q.redelivered.is_some() {
            (crate::pages::webhooks::delivery_log(&viewer, &r.id, &deliveries, q.redelivered.as_deref()))
        }
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

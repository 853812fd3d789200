//! `/`: the dashboard home when logged in; otherwise the log-in page.

use crate::layout::{self, Nav, shell, table};
use crate::pages::runs::{RUN_HEAD, run_rows};
use crate::web::{MaybeViewer, error_response, page, see_other};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::html;
use runbase_domain::service;
use runbase_domain::store::RunFilter;
use runbase_domain::time::Timestamp;
use runbase_http::AppState;

pub async fn home(
    State(state): State<AppState>,
    MaybeViewer(viewer): MaybeViewer,
    headers: HeaderMap,
) -> Response {
    let Some(v) = viewer else {
        return see_other("/login");
    };
    let store = state.store.as_ref();
    let (keys, runs) = match (
        store.list_keys(&v.account.id).await,
        store
            .list_runs(&v.account.id, &RunFilter::default(), 5, None)
            .await,
    ) {
        (Ok(k), Ok(r)) => (k, r),
        (Err(e), _) | (_, Err(e)) => return error_response(&headers, service::internal(e)),
    };
    let now = Timestamp::now();
    let active = keys.iter().filter(|k| k.is_usable(now)).count();
    let body = html! {
        h1 { "Dashboard" }
        div.stats {
            a.card.stat href="/settings/credits" { span.label { "Balance" } span.big { (layout::money(v.account.balance)) } }
            a.card.stat href="/settings/api-keys" { span.label { "Active API keys" } span.big { (active) } }
            a.card.stat href="/models" { span.label { "Models" } span.big { (state.catalog.models().len()) } }
        }
        h2 { "Recent runs" }
        (table("Recent runs", &RUN_HEAD, html! {
            (run_rows(&runs))
            @if runs.is_empty() { tr { td colspan="6" { "No runs yet." } } }
        }))
        p { a href="/runs" { "All runs →" } }
        h2 { "Get started" }
        ol {
            li { a href="/settings/api-keys" { "Create an API key" } " (a test key runs everything simulated, for free)." }
            li { "Pick a model in " a href="/models" { "Models" } " and copy its curl quick start." }
            li { "Poll the run until it has succeeded, and open its files. Details in " a href="/docs/runs" { "Runs" } "." }
        }
    };
    page(shell("Dashboard", Some(&v), Nav::Home, body))
}

//! `/`: the dashboard home when logged in; otherwise the log-in page.

use crate::i18n::t;
use crate::layout::{self, Nav, shell, table};
use crate::pages::runs::{run_head, run_rows};
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
        h1 { (t("nav-dashboard")) }
        div.stats {
            a.card.stat href="/settings/credits" { span.label { (t("home-balance")) } span.big { (layout::money(v.account.balance)) } }
            a.card.stat href="/settings/api-keys" { span.label { (t("home-active-keys")) } span.big { (active) } }
            a.card.stat href="/models" { span.label { (t("nav-models")) } span.big { (state.catalog.models().len()) } }
        }
        h2 { (t("home-recent-runs")) }
        (table(&t("home-recent-runs"), &run_head(), html! {
            (run_rows(&runs))
            @if runs.is_empty() { tr { td colspan="6" { (t("home-no-runs")) } } }
        }))
        p { a href="/runs" { (t("home-all-runs")) } }
        h2 { (t("home-get-started")) }
        ol {
            li { a href="/settings/api-keys" { (t("home-step-key")) } " " (t("home-step-key-note")) }
            li { a href="/models" { (t("home-step-model")) } " " (t("home-step-model-note")) }
            li { (t("home-step-poll")) " " a href="/docs/runs" { (t("home-step-poll-docs")) } }
        }
    };
    page(shell(&t("nav-dashboard"), Some(&v), Nav::Home, body))
}

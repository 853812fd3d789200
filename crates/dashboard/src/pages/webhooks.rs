//! Settings → Webhooks: the account's signing secret (made on first view) and its rotation; and,
//! on a run's page, the run's delivery log with a "Redeliver" button.

use crate::i18n::t;
use crate::layout::{self, Nav, copy_button, csrf_field, notice, opt_time, shell, table};
use crate::web::{
    FormBody, PagePath, PageQuery, Viewer, check_csrf, error_response, page, parse_form, see_other,
};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use runbase_domain::time::Timestamp;
use runbase_domain::webhooks::{self, Delivery};
use runbase_domain::{ErrorCode, service};
use runbase_http::AppState;
use serde::Deserialize;

#[derive(Deserialize, Default)]
pub struct SecretQuery {
    rotated: Option<String>,
}

pub async fn page_handler(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PageQuery(q): PageQuery<SecretQuery>,
) -> Response {
    let secrets = match webhooks::secrets(state.store.as_ref(), &viewer.account.id).await {
        Ok(s) => s,
        Err(e) => return error_response(&headers, service::internal(e)),
    };
    let overlap = secrets
        .previous_until
        .filter(|until| secrets.previous.is_some() && *until > Timestamp::now());
    let body = html! {
        h1 { (t("webhooks-title")) }
        @if q.rotated.is_some() { (notice("ok", &t("webhooks-rotated"))) }
        p { (t("webhooks-intro")) }
        section.card {
            h2 { (t("webhooks-secret")) }
            div.secret-row {
                code #webhook-secret .secret { (secrets.current) }
                (copy_button("webhook-secret"))
            }
            p.help { (t("webhooks-secret-help")) }
            @if let Some(until) = overlap {
                p #webhook-overlap { (t("webhooks-previous")) " " (layout::time(until)) }
            }
        }
        section.card {
            h2 { (t("webhooks-rotate-title")) }
            p.help { (t("webhooks-rotate-help")) }
            form method="post" action="/settings/webhooks/rotate" {
                (csrf_field(&viewer))
                button type="submit" { (t("webhooks-rotate")) }
            }
        }
    };
    page(shell(&t("webhooks-title"), Some(&viewer), Nav::Keys, body))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf_token: Option<String>,
}

pub async fn rotate(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Response {
    let form: CsrfForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_response(&headers, e),
    };
    if let Err(e) = check_csrf(&headers, &viewer, form.csrf_token.as_deref()) {
        return error_response(&headers, e);
    }
    match webhooks::rotate(state.store.as_ref(), &viewer.account.id).await {
        Ok(_) => see_other("/settings/webhooks?rotated=1"),
        Err(e) => error_response(&headers, service::internal(e)),
    }
}

/// Queues a new delivery of the run's latest event, due now.
pub async fn redeliver(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PagePath(id): PagePath<String>,
    FormBody(body): FormBody,
) -> Response {
    let form: CsrfForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_response(&headers, e),
    };
    if let Err(e) = check_csrf(&headers, &viewer, form.csrf_token.as_deref()) {
        return error_response(&headers, e);
    }
    if !runbase_domain::ids::looks_like_run_id(&id) {
        return error_response(&headers, ErrorCode::RunNotFound.into());
    }
    match state
        .store
        .redeliver(
            &viewer.account.id,
            &id,
            &webhooks::new_delivery_id(),
            Timestamp::now(),
        )
        .await
    {
        Ok(queued) => see_other(&format!(
            "/runs/{id}?redelivered={}",
            if queued { 1 } else { 0 }
        )),
        Err(runbase_domain::store::StoreError::NotFound(_)) => {
            error_response(&headers, ErrorCode::RunNotFound.into())
        }
        Err(e) => error_response(&headers, service::internal(e)),
    }
}

/// The run page's section: each delivery with its attempts, and the "Redeliver" button.
pub fn delivery_log(
    viewer: &Viewer,
    run_id: &str,
    deliveries: &[Delivery],
    redelivered: Option<&str>,
) -> Markup {
    let rows = html! {
        @for d in deliveries {
            @if d.attempts.is_empty() {
                tr {
                    td { code { (d.id) } } td { (d.event) } td { (d.status) }
                    td.num { "—" } td { (opt_time(d.next_attempt_at)) } td.num { "—" } td.num { "—" } td { span.muted { (t("webhooks-waiting")) } }
                }
            }
            @for a in &d.attempts {
                tr {
                    td { code { (d.id) } } td { (d.event) } td { (d.status) }
                    td.num { (a.attempt) }
                    td { (layout::time(a.at)) }
                    td.num { @match a.http_status { Some(s) => (s), None => "—" } }
                    td.num { (a.latency_ms) " ms" }
                    td { @match &a.error { Some(e) => (e), None => span.muted { "—" } } }
                }
            }
        }
        @if deliveries.is_empty() { tr { td colspan="8" { (t("webhooks-no-deliveries")) } } }
    };
    html! {
        h2 #webhooks { (t("webhooks-deliveries")) }
        @match redelivered {
            Some("1") => (notice("ok", &t("webhooks-redelivered"))),
            Some(_) => (notice("error", &t("webhooks-nothing-to-redeliver"))),
            None => {},
        }
        (table(&t("webhooks-deliveries"), &[t("webhooks-col-id"), t("webhooks-col-event"), t("runs-col-status"), t("webhooks-col-attempt"), t("webhooks-col-time"), t("webhooks-col-http"), t("webhooks-col-latency"), t("webhooks-col-error")], rows))
        @if !deliveries.is_empty() {
            form method="post" action=(format!("/runs/{run_id}/redeliver")) {
                (csrf_field(viewer))
                button type="submit" { (t("webhooks-redeliver")) }
            }
        }
        p.help { (t("webhooks-secret-link")) " " a href="/settings/webhooks" { (t("webhooks-title")) } }
    }
}

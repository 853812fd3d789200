//! Settings → Credits: the balance, the ledger (paginated), top-ups through the payment
//! provider, and grants by administrators.

use crate::i18n::{t, t_args};
use crate::layout::{self, Nav, csrf_field, notice, shell, table};
use crate::web::{
    FormBody, PageQuery, Viewer, check_csrf, error_response, page_posting_to, parse_form, see_other,
};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use runbase_domain::account::{LedgerEntry, LedgerKind};
use runbase_domain::money::format_cents;
use runbase_domain::payments::{self, MAX_TOPUP_CENTS, MIN_TOPUP_CENTS};
use runbase_domain::service;
use runbase_domain::{ApiError, ErrorCode};
use runbase_http::AppState;
use serde::Deserialize;

/// Ledger lines per page.
const PAGE: u32 = 25;

#[derive(Deserialize, Default)]
pub struct CreditsQuery {
    before: Option<i64>,
    topup: Option<String>,
    granted: Option<String>,
}

/// What a ledger line is, for people.
pub fn describe(e: &LedgerEntry) -> Markup {
    let run = |id: &Option<String>| {
        html! { @if let Some(id) = id { " · " a href=(format!("/runs/{id}")) { code { (id) } } } }
    };
    match e.kind {
        LedgerKind::Topup => match &e.granted_by {
            Some(admin) => {
                html! { (t_args("ledger-grant-by", &[("admin", admin.as_str().into())])) @if !e.memo.is_empty() { " · " (e.memo) } }
            }
            None => html! { (t("ledger-topup")) @if !e.memo.is_empty() { " · " (e.memo) } },
        },
        LedgerKind::RunCharge => html! { (t("ledger-run-charge")) " · " (e.memo) (run(&e.run_id)) },
        LedgerKind::RunRefund => html! { (t("ledger-refund")) " · " (e.memo) (run(&e.run_id)) },
    }
}

pub fn ledger_rows(entries: &[LedgerEntry]) -> Markup {
    html! {
        @for e in entries {
            tr {
                td { (layout::time(e.created_at)) }
                td { span class=(format!("badge ledger-{}", e.kind.as_str())) { (e.kind.as_str().replace('_', " ")) } }
                td { (describe(e)) }
                td.num { (layout::money(e.amount)) }
                td.num { (layout::money(e.balance_after)) }
            }
        }
    }
}

pub async fn page_handler(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PageQuery(q): PageQuery<CreditsQuery>,
) -> Response {
    let mut message = None;
    if q.topup.as_deref() == Some("success") {
        message = Some(notice("ok", &t("credits-thanks")));
    } else if q.topup.as_deref() == Some("canceled") {
        message = Some(notice("error", &t("credits-canceled")));
    } else if q.granted.is_some() {
        message = Some(notice("ok", &t("credits-granted")));
    }
    render(&state, &viewer, &headers, q.before, message).await
}

async fn render(
    state: &AppState,
    v: &Viewer,
    headers: &HeaderMap,
    before: Option<i64>,
    message: Option<Markup>,
) -> Response {
    let mut entries = match state.store.ledger(&v.account.id, PAGE + 1, before).await {
        Ok(e) => e,
        Err(e) => return error_response(headers, service::internal(e)),
    };
    let more = entries.len() > PAGE as usize;
    entries.truncate(PAGE as usize);
    let older = entries.last().filter(|_| more).map(|e| e.id);
    let payments_on = state.payments.is_some();
    let body = html! {
        h1 { (t("nav-credits")) }
        @if let Some(m) = message { (m) }
        div.balance-row {
            section.card.balance {
                h2 { (t("home-balance")) }
                p.big #balance { (layout::money(v.account.balance)) }
                p.help { (t("credits-balance-help")) }
            }
            section.card {
                h2 { (t("credits-topup")) }
                @if payments_on {
                    form.inline method="post" action="/settings/credits/topup" {
                        (csrf_field(v))
                        label for="amount_cents" { (t("ledger-amount")) }
                        select #amount_cents name="amount_cents" {
                            @for c in [500_i64, 1000, 2500, 5000, 10000] {
                                option value=(c) selected[c == 2500] { (format_cents(c)) }
                            }
                        }
                        button.primary type="submit" { (t("credits-pay")) }
                    }
                    p.help { (t_args("credits-pay-help", &[("min", format_cents(MIN_TOPUP_CENTS).into()), ("max", format_cents(MAX_TOPUP_CENTS).into())])) }
                } @else {
                    p { (t("credits-no-payments")) }
                }
            }
        }
        @if v.account.admin {
            section.card {
                h2 { (t("credits-grant-title")) " " span.badge.admin { "administrator" } }
                form.grid method="post" action="/settings/credits/grant" {
                    (csrf_field(v))
                    div { label for="grant_email" { (t("credits-grant-email")) } input #grant_email type="email" name="email" value=(v.account.email) required; }
                    div { label for="grant_cents" { (t("credits-grant-cents")) } input #grant_cents name="cents" inputmode="numeric" pattern="[0-9]+" required; }
                    div.wide { label for="grant_memo" { (t("credits-grant-note")) } input #grant_memo name="memo" maxlength="200" placeholder=(t("credits-grant-note-placeholder")); }
                    div.wide { button.primary type="submit" { (t("credits-grant")) } }
                }
            }
        }
        h2 { (t("credits-history")) }
        (table(&t("run-ledger"), &[t("ledger-date"), t("ledger-kind"), t("ledger-description"), t("ledger-amount"), t("ledger-balance-after")], html! {
            (ledger_rows(&entries))
            @if entries.is_empty() { tr { td colspan="5" { (t("credits-no-entries")) } } }
        }))
        nav.pager aria-label=(t("credits-pages")) {
            @if before.is_some() { a href="/settings/credits" { (t("runs-newest")) } }
            @if let Some(id) = older { a href=(format!("/settings/credits?before={id}")) { (t("runs-older")) } }
        }
    };
    let checkout = state
        .payments
        .as_ref()
        .map(|p| p.checkout_origins())
        .unwrap_or_default();
    page_posting_to(
        shell(&t("nav-credits"), Some(v), Nav::Credits, body),
        &checkout,
    )
}

#[derive(Deserialize)]
pub struct TopupForm {
    csrf_token: Option<String>,
    amount_cents: Option<String>,
}

pub async fn topup(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Response {
    let form: TopupForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_response(&headers, e),
    };
    if let Err(e) = check_csrf(&headers, &viewer, form.csrf_token.as_deref()) {
        return error_response(&headers, e);
    }
    let Some(provider) = state.payments.clone() else {
        return error_response(&headers, ErrorCode::PaymentsUnavailable.into());
    };
    let result = async {
        let cents = form
            .amount_cents
            .as_deref()
            .and_then(|c| c.trim().parse::<i64>().ok())
            .ok_or_else(|| {
                ApiError::new(ErrorCode::InvalidRequest, "Amount: a whole number of cents")
            })?;
        let return_url = format!("{}/settings/credits", state.config.public_url);
        payments::start_topup(
            state.store.as_ref(),
            provider.as_ref(),
            &viewer.account,
            cents,
            &return_url,
        )
        .await
    }
    .await;
    match result {
        Ok(checkout) => see_other(&checkout.url),
        Err(e) => error_response(&headers, e),
    }
}

#[derive(Deserialize)]
pub struct GrantForm {
    csrf_token: Option<String>,
    #[serde(default)]
    email: String,
    cents: Option<String>,
    #[serde(default)]
    memo: String,
}

pub async fn grant(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Response {
    let form: GrantForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_response(&headers, e),
    };
    if let Err(e) = check_csrf(&headers, &viewer, form.csrf_token.as_deref()) {
        return error_response(&headers, e);
    }
    let cents = form
        .cents
        .as_deref()
        .and_then(|c| c.trim().parse::<i64>().ok())
        .unwrap_or(0);
    match payments::grant(
        state.store.as_ref(),
        &viewer.account,
        &form.email,
        cents,
        &form.memo,
    )
    .await
    {
        Ok(_) => see_other("/settings/credits?granted=1"),
        Err(e) if e.code == ErrorCode::InvalidRequest => {
            render(
                &state,
                &viewer,
                &headers,
                None,
                Some(notice("error", &e.message)),
            )
            .await
        }
        Err(e) => error_response(&headers, e),
    }
}

//! Settings → API Keys: list, create (the secret shown once), edit, disable/enable, delete.

use crate::flash;
use crate::i18n::{t, t_args};
use crate::layout::{self, Nav, copy_button, csrf_field, notice, opt_time, shell, table};
use crate::web::{
    FormBody, PagePath, PageQuery, Viewer, check_csrf, error_response, optional_number, page,
    parse_form, see_other,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use maud::{Markup, html};
use runbase_domain::account::{ApiKey, KeySettings, KeyUpdate};
use runbase_domain::ip::{IpAllowlist, MAX_ALLOWLIST_ENTRIES};
use runbase_domain::money::Millicents;
use runbase_domain::service::{self, AdminError};
use runbase_domain::time::Timestamp;
use runbase_domain::{ApiError, ErrorCode};
use runbase_http::AppState;
use serde::Deserialize;

fn admin_error(e: AdminError) -> ApiError {
    match e {
        AdminError::Invalid(m) => ApiError::new(ErrorCode::InvalidRequest, m),
        AdminError::NotFound(_) => ErrorCode::NotFound.into(),
        AdminError::Store(e) => service::internal(e),
    }
}

fn spend(k: &ApiKey) -> Markup {
    html! {
        (layout::money(k.spent))
        @if let Some(limit) = k.spend_limit { " / " (layout::money(limit)) } @else { span.muted { " / " (t("keys-no-limit")) } }
    }
}

fn quota(k: &ApiKey) -> Markup {
    html! {
        (t_args("keys-runs", &[("n", k.runs_created.into())]))
        @if let Some(q) = k.quota { " / " (q) } @else { span.muted { " / " (t("keys-no-quota")) } }
    }
}

fn key_status(k: &ApiKey, now: Timestamp) -> Markup {
    let s = k.status(now);
    html! { span class=(format!("badge key-{s}")) { (s) } @if k.test { " " span.badge.test { (t("badge-test")) } } }
}

/// The create form's fields, kept to fill the form again after an error.
#[derive(Deserialize, Default)]
pub struct CreateForm {
    csrf_token: Option<String>,
    #[serde(default)]
    name: String,
    spend_limit_cents: Option<String>,
    quota: Option<String>,
    allow_ips: Option<String>,
    test: Option<String>,
}

fn list_page(
    v: &Viewer,
    keys: &[ApiKey],
    created: Option<(&ApiKey, &str)>,
    form: &CreateForm,
    message: Option<Markup>,
) -> Markup {
    let now = Timestamp::now();
    let rows = html! {
        @for k in keys {
            tr {
                td { a href=(format!("/settings/api-keys/{}", k.id)) { (k.name) } }
                td { code { (k.prefix) "…" } }
                td { (layout::time(k.created_at)) }
                td { (opt_time(k.last_used_at)) }
                td { (spend(k)) }
                td { (quota(k)) }
                td { (key_status(k, now)) }
            }
        }
        @if keys.is_empty() { tr { td colspan="7" { (t("keys-none")) } } }
    };
    let body = html! {
        h1 { (t("nav-keys")) }
        @if let Some((key, secret)) = created {
            section.new-key role="status" aria-live="polite" {
                h2 { (t_args("keys-new-title", &[("name", key.name.as_str().into())])) }
                p { strong { (t("keys-copy-now")) } " " (t("keys-hash-only")) }
                div.secret-row {
                    code #new-key-secret .secret { (secret) }
                    (copy_button("new-key-secret"))
                }
            }
        }
        @if let Some(m) = message { (m) }
        p { (t("keys-webhooks-hint")) " " a href="/settings/webhooks" { (t("webhooks-title")) } }
        (table(&t("keys-yours"), &[t("keys-name"), t("keys-key"), t("runs-col-created"), t("keys-last-used"), t("keys-spend"), t("keys-usage"), t("runs-col-status")], rows))
        section.card {
            h2 { (t("keys-create-title")) }
            form.grid method="post" action="/settings/api-keys" {
                (csrf_field(v))
                div { label for="name" { (t("keys-name")) }
                    input #name name="name" maxlength="100" placeholder=(t("keys-name-placeholder")) value=(form.name); }
                div { label for="spend_limit_cents" { (t("keys-spend-limit")) }
                    input #spend_limit_cents name="spend_limit_cents" inputmode="numeric" pattern="[0-9]*" placeholder=(t("keys-no-limit")) value=[form.spend_limit_cents.as_deref()]; }
                div { label for="quota" { (t("keys-quota")) }
                    input #quota name="quota" inputmode="numeric" pattern="[0-9]*" placeholder=(t("keys-no-quota")) value=[form.quota.as_deref()]; }
                div.wide { label for="allow_ips" { (t("keys-allowlist")) }
                    textarea #allow_ips name="allow_ips" rows="2" placeholder=(t("keys-allowlist-placeholder")) aria-describedby="allow-help" { (form.allow_ips.as_deref().unwrap_or("")) }
                    p #allow-help .help { (t_args("keys-allowlist-help", &[("n", MAX_ALLOWLIST_ENTRIES.into())])) } }
                div.wide.check { input #test type="checkbox" name="test" value="1" checked[form.test.is_some()];
                    label for="test" { (t("keys-test")) " (" code { "sk-test-" } "): " (t("keys-test-help")) } }
                div.wide { button.primary type="submit" { (t("keys-create")) } }
            }
        }
    };
    shell(&t("nav-keys"), Some(v), Nav::Keys, body)
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    /// Set by the redirect after a key was created: the page shows its secret, once.
    created: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PageQuery(q): PageQuery<ListQuery>,
) -> Response {
    let keys = match state.store.list_keys(&viewer.account.id).await {
        Ok(keys) => keys,
        Err(e) => return error_response(&headers, service::internal(e)),
    };
    let created = q.created.as_deref().and_then(|id| {
        let key = keys.iter().find(|k| k.id == id)?;
        Some((key, flash::take(&viewer.session.token_hash, id)))
    });
    let (shown, message) = match created {
        Some((key, Some(secret))) => (Some((key, secret)), None),
        Some((key, None)) => (
            None,
            Some(notice(
                "ok",
                &t_args("keys-created-again", &[("name", key.name.as_str().into())]),
            )),
        ),
        None => (None, None),
    };
    page(list_page(
        &viewer,
        &keys,
        shown.as_ref().map(|(k, s)| (*k, s.as_str())),
        &CreateForm::default(),
        message,
    ))
}

fn parse_allowlist(text: Option<&str>) -> Result<IpAllowlist, ApiError> {
    let entries: Vec<&str> = text
        .unwrap_or("")
        .split(|c: char| c == '\n' || c == ',' || c.is_whitespace())
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    IpAllowlist::parse(&entries)
        .map_err(|m| ApiError::new(ErrorCode::InvalidRequest, format!("IP allowlist: {m}")))
}

fn cents_limit(value: Option<&str>) -> Result<Option<Millicents>, ApiError> {
    optional_number("Spend limit", value)?
        .map(|c| {
            Millicents::from_cents(c)
                .ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "Spend limit: too large"))
        })
        .transpose()
}

pub async fn create(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Response {
    let form: CreateForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_response(&headers, e),
    };
    if let Err(e) = check_csrf(&headers, &viewer, form.csrf_token.as_deref()) {
        return error_response(&headers, e);
    }
    let store = state.store.as_ref();
    let created = async {
        let settings = KeySettings {
            name: Some(form.name.clone()),
            spend_limit: cents_limit(form.spend_limit_cents.as_deref())?,
            allow_ips: parse_allowlist(form.allow_ips.as_deref())?,
            expires_at: None,
            quota: optional_number("Usage quota", form.quota.as_deref())?.map(|q| q as u64),
            test: form.test.is_some(),
        };
        service::create_key(store, &viewer.account, settings)
            .await
            .map_err(admin_error)
    }
    .await;
    if let Ok((key, secret)) = &created {
        // Redirect after the post, so a reload cannot create another key; the secret waits
        // for the page the redirect leads to, which shows it once.
        flash::put(&viewer.session.token_hash, &key.id, secret.expose());
        return see_other(&format!("/settings/api-keys?created={}", key.id));
    }
    let keys = match store.list_keys(&viewer.account.id).await {
        Ok(k) => k,
        Err(e) => return error_response(&headers, service::internal(e)),
    };
    match created {
        Ok(_) => see_other("/settings/api-keys"),
        Err(e) => {
            let mut resp = page(list_page(
                &viewer,
                &keys,
                None,
                &form,
                Some(notice("error", &e.message)),
            ));
            *resp.status_mut() = StatusCode::BAD_REQUEST;
            resp
        }
    }
}

/// The viewer's key, or 404 (another account's key is never shown, nor said to exist).
async fn own_key(state: &AppState, viewer: &Viewer, id: &str) -> Result<ApiKey, ApiError> {
    match state.store.key_by_id(id).await.map_err(service::internal)? {
        Some(k) if k.account_id == viewer.account.id && k.deleted_at.is_none() => Ok(k),
        _ => Err(ApiError::new(
            ErrorCode::NotFound,
            "No such API key in your account",
        )),
    }
}

#[derive(Deserialize, Default)]
pub struct Saved {
    saved: Option<String>,
}

fn edit_page(v: &Viewer, k: &ApiKey, message: Option<Markup>) -> Markup {
    let now = Timestamp::now();
    let ips = k.allow_ips.to_strings().join("\n");
    let limit_cents = k
        .spend_limit
        .map(|m| (m.0 / Millicents::PER_CENT).to_string());
    let body = html! {
        p.crumbs { a href="/settings/api-keys" { (t("nav-keys")) } " / " (k.name) }
        h1 { (t_args("keys-title", &[("name", k.name.as_str().into())])) }
        @if let Some(m) = message { (m) }
        dl.facts {
            dt { (t("keys-key")) } dd { code { (k.prefix) "…" } }
            dt { (t("runs-col-status")) } dd { (key_status(k, now)) }
            dt { (t("runs-col-created")) } dd { (layout::time(k.created_at)) }
            dt { (t("keys-last-used")) } dd { (opt_time(k.last_used_at)) }
            dt { (t("keys-spend")) } dd { (spend(k)) }
            dt { (t("keys-usage")) } dd { (quota(k)) }
            dt { (t("keys-expires")) } dd { (opt_time(k.expires_at)) }
        }
        section.card {
            h2 { (t("keys-settings")) }
            form.grid method="post" action=(format!("/settings/api-keys/{}", k.id)) {
                (csrf_field(v))
                div { label for="name" { (t("keys-name")) } input #name name="name" maxlength="100" value=(k.name) required; }
                div { label for="spend_limit_cents" { (t("keys-spend-limit")) }
                    input #spend_limit_cents name="spend_limit_cents" inputmode="numeric" pattern="[0-9]*" placeholder=(t("keys-no-limit")) value=[limit_cents]; }
                div { label for="quota" { (t("keys-quota")) }
                    input #quota name="quota" inputmode="numeric" pattern="[0-9]*" placeholder=(t("keys-no-quota")) value=[k.quota.map(|q| q.to_string())]; }
                div.wide { label for="allow_ips" { (t("keys-allowlist")) }
                    textarea #allow_ips name="allow_ips" rows="3" aria-describedby="allow-help" { (ips) }
                    p #allow-help .help { (t_args("keys-allowlist-edit-help", &[("n", MAX_ALLOWLIST_ENTRIES.into())])) } }
                div.wide { button.primary type="submit" { (t("keys-save")) } }
            }
        }
        section.card {
            h2 { @if k.disabled { (t("keys-enable-title")) } @else { (t("keys-disable-title")) } }
            p { @if k.disabled { (t("keys-disabled-help")) }
                @else { (t("keys-disable-help")) } }
            form method="post" action=(format!("/settings/api-keys/{}/{}", k.id, if k.disabled { "enable" } else { "disable" })) {
                (csrf_field(v))
                button type="submit" { @if k.disabled { (t("keys-enable")) } @else { (t("keys-disable")) } }
            }
        }
        section.card.danger {
            h2 { (t("keys-delete-title")) }
            p { (t("keys-delete-help")) }
            form method="post" action=(format!("/settings/api-keys/{}/delete", k.id)) data-confirm=(t("keys-delete-confirm")) {
                (csrf_field(v))
                div.check { input #confirm type="checkbox" name="confirm" value="yes" required;
                    label for="confirm" { (t("keys-delete-understand")) } }
                button.danger type="submit" { (t("keys-delete")) }
            }
        }
    };
    shell(&k.name, Some(v), Nav::Keys, body)
}

pub async fn edit(
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    PagePath(id): PagePath<String>,
    PageQuery(q): PageQuery<Saved>,
) -> Response {
    match own_key(&state, &viewer, &id).await {
        Ok(k) => page(edit_page(
            &viewer,
            &k,
            q.saved.map(|_| notice("ok", &t("keys-saved"))),
        )),
        Err(e) => error_response(&headers, e),
    }
}

#[derive(Deserialize)]
pub struct UpdateForm {
    csrf_token: Option<String>,
    name: Option<String>,
    spend_limit_cents: Option<String>,
    quota: Option<String>,
    allow_ips: Option<String>,
    confirm: Option<String>,
}

/// Which change a post to a key makes.
#[derive(Clone, Copy)]
pub enum Action {
    Save,
    Disable,
    Enable,
    Delete,
}

async fn apply(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    form: &UpdateForm,
    action: Action,
) -> Result<String, ApiError> {
    let key = own_key(state, viewer, id).await?;
    let store = state.store.as_ref();
    let update = match action {
        // A field the form leaves out stays as it is (a script may send only what it changes);
        // a field sent empty clears it. The page's form always sends every field.
        Action::Save => {
            let name = form.name.as_deref().map(str::trim);
            if name.is_some_and(|n| n.is_empty() || n.chars().count() > 100) {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "Name: 1 to 100 characters",
                ));
            }
            let spend = form.spend_limit_cents.as_deref();
            let ips = form.allow_ips.as_deref();
            let quota = form.quota.as_deref();
            KeyUpdate {
                name: name.map(str::to_owned),
                spend_limit: spend.map(|v| cents_limit(Some(v))).transpose()?,
                allow_ips: ips.map(|v| parse_allowlist(Some(v))).transpose()?,
                quota: quota
                    .map(|v| optional_number("Usage quota", Some(v)))
                    .transpose()?
                    .map(|q| q.map(|q| q as u64)),
                ..KeyUpdate::default()
            }
        }
        Action::Disable | Action::Enable => KeyUpdate {
            disabled: Some(matches!(action, Action::Disable)),
            ..KeyUpdate::default()
        },
        Action::Delete => {
            if form.confirm.as_deref() != Some("yes") {
                return Err(ApiError::new(
                    ErrorCode::InvalidRequest,
                    "Tick the box to confirm deleting the key",
                ));
            }
            service::delete_key(store, &key.id)
                .await
                .map_err(admin_error)?;
            return Ok("/settings/api-keys".to_owned());
        }
    };
    service::update_key(store, &key.id, &update)
        .await
        .map_err(admin_error)?;
    Ok(format!("/settings/api-keys/{}?saved=1", key.id))
}

async fn post(
    state: AppState,
    viewer: Viewer,
    headers: HeaderMap,
    id: String,
    body: axum::body::Bytes,
    action: Action,
) -> Response {
    let form: UpdateForm = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_response(&headers, e),
    };
    if let Err(e) = check_csrf(&headers, &viewer, form.csrf_token.as_deref()) {
        return error_response(&headers, e);
    }
    match apply(&state, &viewer, &id, &form, action).await {
        Ok(to) => see_other(&to),
        Err(e) if e.code == ErrorCode::InvalidRequest => {
            match own_key(&state, &viewer, &id).await {
                Ok(k) => {
                    let mut resp = page(edit_page(&viewer, &k, Some(notice("error", &e.message))));
                    *resp.status_mut() = StatusCode::BAD_REQUEST;
                    resp
                }
                Err(e) => error_response(&headers, e),
            }
        }
        Err(e) => error_response(&headers, e),
    }
}

pub async fn update(
    State(s): State<AppState>,
    v: Viewer,
    h: HeaderMap,
    PagePath(id): PagePath<String>,
    FormBody(b): FormBody,
) -> Response {
    post(s, v, h, id, b, Action::Save).await
}

/// `POST /settings/api-keys/{id}/{action}`: `disable`, `enable` or `delete`.
pub async fn act(
    State(s): State<AppState>,
    v: Viewer,
    h: HeaderMap,
    PagePath((id, action)): PagePath<(String, String)>,
    FormBody(b): FormBody,
) -> Response {
    let action = match action.as_str() {
        "disable" => Action::Disable,
        "enable" => Action::Enable,
        "delete" => Action::Delete,
        _ => {
            let e = ApiError::new(ErrorCode::NotFound, "This page does not exist");
            return error_response(&h, e);
        }
    };
    post(s, v, h, id, b, action).await
}

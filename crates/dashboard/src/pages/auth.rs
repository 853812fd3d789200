//! Sign up, log in, log out, change the password, and the session check ("who am I").
//!
//! The auth endpoints (the `POST`s of log-in, sign-up and password change) are limited per
//! client IP, and the limit is checked before anything else, the CSRF token included: every
//! request counts, valid or not.

use crate::i18n::{t, t_args};
use crate::layout::{Nav, csrf_field, notice, shell};
use crate::oidc::Oidc;
use crate::web::{
    self, AuthLimit, FormBody, MaybeViewer, PRE_SESSION_CSRF_COOKIE, PageQuery, SESSION_COOKIE,
    SessionCheckLimit, Viewer, check_csrf, cookie, error_response, page, parse_form, safe_next,
    see_other, set_cookie, tokens_match, wants_json,
};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use maud::{Markup, html};
use runbase_domain::ratelimit::RateDecision;
use runbase_domain::sessions::{self, OpenedSession, SESSION_LIFETIME_MICROS};
use runbase_domain::{ApiError, ErrorCode, ids, password};
use runbase_http::AppState;
use runbase_http::body::discard;
use runbase_http::error::HttpError;
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

#[derive(Deserialize, Default)]
pub struct NextParam {
    next: Option<String>,
    /// Set by the redirect after a sign-up.
    signed_up: Option<String>,
}

/// What a sign-up answers, whether or not the email already had an account (so the form does
/// not tell who is registered; see docs/DECISIONS.md).
/// (The message id; the JSON answer is English, as every API message is.)
const SIGNED_UP: &str = "auth-signed-up";
const SIGNED_UP_EN: &str = "If this email was not registered yet, its account is ready: log in with the password you chose. If it was, log in with that account's password.";

#[derive(Deserialize)]
pub struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    csrf_token: Option<String>,
    next: Option<String>,
}

/// Which of the two forms.
#[derive(Clone, Copy, PartialEq)]
enum Form {
    Login,
    Signup,
}

fn auth_form(
    form: Form,
    csrf: &str,
    email: &str,
    next: &str,
    message: Option<Markup>,
    oidc: &Oidc,
) -> Markup {
    let (title, action, button) = match form {
        Form::Login => (t("nav-login"), "/login", t("nav-login")),
        Form::Signup => (t("auth-create-account"), "/signup", t("nav-signup")),
    };
    let body = html! {
        section.auth-card {
            h1 { (title) }
            @if let Some(m) = message { (m) }
            (oidc.buttons(next))
            form method="post" action=(action) {
                input type="hidden" name="csrf_token" value=(csrf);
                input type="hidden" name="next" value=(next);
                label for="email" { (t("auth-email")) }
                input #email type="email" name="email" value=(email) autocomplete="email" required autofocus;
                label for="password" { (t("auth-password")) }
                @if form == Form::Signup {
                    input #password type="password" name="password" autocomplete="new-password" minlength=(password::MIN_LEN) required aria-describedby="password-help";
                    p #password-help .help { (t_args("auth-password-min", &[("n", password::MIN_LEN.into())])) }
                } @else {
                    input #password type="password" name="password" autocomplete="current-password" required;
                }
                button.primary type="submit" { (button) }
            }
            @if form == Form::Login {
                p { (t("auth-no-account")) " " a href="/signup" { (t("nav-signup")) } }
            } @else {
                p { (t("auth-have-account")) " " a href="/login" { (t("nav-login")) } }
            }
        }
    };
    shell(&title, None, Nav::None, body)
}

/// The double-submit token of the log-in and sign-up forms: the cookie's, or a new one (set on
/// the response).
fn pre_session_token(state: &AppState, headers: &HeaderMap) -> (String, bool) {
    match cookie(state, headers, PRE_SESSION_CSRF_COOKIE) {
        Some(t) if t.len() >= 20 && t.len() <= 64 => (t, false),
        _ => (ids::random_token(32), true),
    }
}

fn show_form(
    state: &AppState,
    oidc: &Oidc,
    headers: &HeaderMap,
    form: Form,
    email: &str,
    next: &str,
    message: Option<(StatusCode, Markup)>,
) -> Response {
    let (token, fresh) = pre_session_token(state, headers);
    let status = message.as_ref().map(|m| m.0);
    let mut resp = page(auth_form(
        form,
        &token,
        email,
        next,
        message.map(|m| m.1),
        oidc,
    ));
    if let Some(status) = status {
        *resp.status_mut() = status;
    }
    if fresh {
        resp.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(state, PRE_SESSION_CSRF_COOKIE, &token, 2 * 3600),
        );
    }
    resp
}

pub async fn login_page(
    State(state): State<AppState>,
    Extension(oidc): Extension<Arc<Oidc>>,
    MaybeViewer(viewer): MaybeViewer,
    headers: HeaderMap,
    PageQuery(q): PageQuery<NextParam>,
) -> Response {
    if viewer.is_some() {
        return see_other(&safe_next(q.next.as_deref()));
    }
    let message = q
        .signed_up
        .is_some()
        .then(|| (StatusCode::OK, notice("ok", &t(SIGNED_UP))));
    show_form(
        &state,
        &oidc,
        &headers,
        Form::Login,
        "",
        &safe_next(q.next.as_deref()),
        message,
    )
}

pub async fn signup_page(
    State(state): State<AppState>,
    Extension(oidc): Extension<Arc<Oidc>>,
    MaybeViewer(viewer): MaybeViewer,
    headers: HeaderMap,
) -> Response {
    if viewer.is_some() {
        return see_other("/");
    }
    show_form(&state, &oidc, &headers, Form::Signup, "", "/", None)
}

pub async fn login(
    AuthLimit(decision): AuthLimit,
    State(state): State<AppState>,
    Extension(oidc): Extension<Arc<Oidc>>,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Response {
    submit(state, &oidc, decision, headers, body, Form::Login).await
}

pub async fn signup(
    AuthLimit(decision): AuthLimit,
    State(state): State<AppState>,
    Extension(oidc): Extension<Arc<Oidc>>,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Response {
    submit(state, &oidc, decision, headers, body, Form::Signup).await
}

async fn submit(
    state: AppState,
    oidc: &Oidc,
    decision: RateDecision,
    headers: HeaderMap,
    body: axum::body::Bytes,
    form: Form,
) -> Response {
    let mut resp = submit_checked(&state, oidc, &headers, &body, form).await;
    web::rate_headers(&mut resp, &decision);
    resp
}

/// Log-in or sign-up once the request is within the limit: CSRF, then the credentials.
async fn submit_checked(
    state: &AppState,
    oidc: &Oidc,
    headers: &HeaderMap,
    body: &[u8],
    form: Form,
) -> Response {
    let creds: Credentials = match parse_form(headers, body) {
        Ok(c) => c,
        Err(e) => return error_response(headers, e),
    };
    let expected = cookie(state, headers, PRE_SESSION_CSRF_COOKIE).unwrap_or_default();
    if !tokens_match(
        &expected,
        web::submitted_csrf(headers, creds.csrf_token.as_deref()),
    ) {
        return error_response(headers, ErrorCode::CsrfFailed.into());
    }
    let store = state.store.as_ref();
    let next = safe_next(creds.next.as_deref());
    let opened = match form {
        Form::Login => sessions::log_in(store, &creds.email, &creds.password).await,
        Form::Signup => match sessions::sign_up(
            store,
            &creds.email,
            &creds.password,
            state.config.signup_credit,
        )
        .await
        {
            // The same answer for a new and a registered email: go and log in.
            Ok(()) if wants_json(headers) => {
                return Json(json!({ "signed_up": true, "message": SIGNED_UP_EN })).into_response();
            }
            Ok(()) => {
                let q = serde_urlencoded::to_string([("signed_up", "1"), ("next", next.as_str())])
                    .unwrap_or_default();
                return see_other(&format!("/login?{q}"));
            }
            Err(e) => Err(e),
        },
    };
    match opened {
        Ok(opened) => logged_in(state, headers, opened, &next),
        Err(e) if wants_json(headers) || e.code == ErrorCode::Internal => {
            error_response(headers, e)
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
            show_form(
                state,
                oidc,
                headers,
                form,
                &creds.email,
                &next,
                Some((status, notice("error", &e.message))),
            )
        }
    }
}

fn logged_in(state: &AppState, headers: &HeaderMap, opened: OpenedSession, next: &str) -> Response {
    let max_age = SESSION_LIFETIME_MICROS / 1_000_000;
    let mut resp = if wants_json(headers) {
        Json(json!({
            "account": { "id": opened.account.id, "email": opened.account.email, "admin": opened.account.admin },
            "csrf_token": opened.session.csrf_token,
        }))
        .into_response()
    } else {
        see_other(next)
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, SESSION_COOKIE, &opened.token, max_age),
    );
    resp
}

pub async fn logout_page(MaybeViewer(viewer): MaybeViewer) -> Response {
    let Some(v) = viewer else {
        return see_other("/login");
    };
    let body = html! {
        section.auth-card {
            h1 { (t("nav-logout")) }
            p { (t("auth-logged-in-as")) " " strong { (v.account.email) } }
            form method="post" action="/logout" {
                (csrf_field(&v))
                button.primary type="submit" { (t("nav-logout")) }
            }
        }
    };
    page(shell(&t("nav-logout"), Some(&v), Nav::None, body))
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf_token: Option<String>,
}

/// Logs out. The session is checked before the body is read: without one, the form is
/// refused (sent to `/login`) unread.
pub async fn logout(
    State(state): State<AppState>,
    MaybeViewer(viewer): MaybeViewer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(v) = viewer else {
        discard(body, web::FORM_LIMIT);
        return see_other("/login");
    };
    let body = match web::read_form(&headers, body).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let form: CsrfOnly = match parse_form(&headers, &body) {
        Ok(f) => f,
        Err(e) => return error_response(&headers, e),
    };
    if let Err(e) = check_csrf(&headers, &v, form.csrf_token.as_deref()) {
        return error_response(&headers, e);
    }
    if let Err(e) = sessions::log_out(state.store.as_ref(), &v.session).await {
        return error_response(&headers, e);
    }
    let mut resp = see_other("/login");
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", 0),
    );
    resp
}

fn password_page(v: &Viewer, message: Option<Markup>) -> Markup {
    let body = html! {
        section.narrow {
            h1 { (t("auth-account")) }
            p { (t("auth-logged-in-as")) " " strong { (v.account.email) }
                @if v.account.admin { " " span.badge.admin { "administrator" } } }
            h2 { (t("auth-change-password")) }
            @if let Some(m) = message { (m) }
            form.stack method="post" action="/settings/password" {
                (csrf_field(v))
                label for="current_password" { (t("auth-current-password")) }
                input #current_password type="password" name="current_password" autocomplete="current-password" required;
                label for="new_password" { (t("auth-new-password")) }
                input #new_password type="password" name="new_password" autocomplete="new-password" minlength=(password::MIN_LEN) required;
                p.help { (t_args("auth-password-min", &[("n", password::MIN_LEN.into())])) " " (t("auth-others-logged-out")) }
                button.primary type="submit" { (t("auth-change-password")) }
            }
        }
    };
    shell(&t("auth-account"), Some(v), Nav::Account, body)
}

pub async fn password_form(viewer: Viewer) -> Response {
    page(password_page(&viewer, None))
}

#[derive(Deserialize)]
pub struct PasswordChange {
    csrf_token: Option<String>,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

pub async fn change_password(
    AuthLimit(decision): AuthLimit,
    State(state): State<AppState>,
    viewer: Viewer,
    headers: HeaderMap,
    FormBody(body): FormBody,
) -> Response {
    let result: Result<(), ApiError> = async {
        let form: PasswordChange = parse_form(&headers, &body)?;
        check_csrf(&headers, &viewer, form.csrf_token.as_deref())?;
        sessions::change_password(
            state.store.as_ref(),
            &viewer.session,
            &form.current_password,
            &form.new_password,
        )
        .await
    }
    .await;
    let mut resp = match result {
        Ok(()) if wants_json(&headers) => Json(json!({ "changed": true })).into_response(),
        Ok(()) => page(password_page(
            &viewer,
            Some(notice("ok", &t("auth-password-changed"))),
        )),
        Err(e) if wants_json(&headers) || e.code == ErrorCode::CsrfFailed => {
            error_response(&headers, e)
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let mut resp = page(password_page(&viewer, Some(notice("error", &e.message))));
            *resp.status_mut() = status;
            resp
        }
    };
    web::rate_headers(&mut resp, &decision);
    resp
}

/// `GET /auth/session`: who is logged in, for scripts and the dashboard's own checks. Limited
/// per client IP (the spec's "session check").
pub async fn session_check(
    SessionCheckLimit(decision): SessionCheckLimit,
    MaybeViewer(viewer): MaybeViewer,
) -> Response {
    let mut resp = match viewer {
        Some(v) => Json(json!({
            "account": {
                "id": v.account.id,
                "email": v.account.email,
                "admin": v.account.admin,
                "balanceUsd": v.account.balance,
            },
            "csrfToken": v.session.csrf_token,
            "expiresAt": v.session.expires_at,
        }))
        .into_response(),
        // Always JSON: this is an API endpoint whatever the caller accepts.
        None => HttpError::from(ErrorCode::NotLoggedIn).into_response(),
    };
    web::rate_headers(&mut resp, &decision);
    resp
}

//! Sign-in with an OpenID Connect provider (`[auth.oidc.NAME]`): the authorization code flow
//! with PKCE (S256), state and nonce.
//!
//! `GET /auth/oidc/{name}/start` keeps a pending sign-in (see [`pending`]) and sends the browser
//! to the provider; `GET /auth/oidc/{name}/callback` takes it back once (state, browser),
//! exchanges the code, verifies the ID token ([`client`]) and opens a session for the account
//! the identity is linked to, or links or creates one by verified email
//! (`runbase_domain::identities`).

mod client;
pub mod config;
mod pending;

use crate::web::{self, PageQuery, SESSION_COOKIE, cookie, error_response, safe_next};
use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::Response;
use client::{ProviderClient, pkce_challenge};
pub use config::{AuthConfig, OidcProviderConfig};
use maud::{Markup, html};
use pending::{NewPending, PENDING_FOR};
use runbase_domain::sessions::SESSION_LIFETIME_MICROS;
use runbase_domain::{ApiError, ErrorCode, identities, ids};
use runbase_http::AppState;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The cookie binding pending sign-ins to the browser that started them (`__Host-` over HTTPS).
const BINDING_COOKIE: &str = "rb_oidc";

/// The configured providers and the sign-ins in progress.
pub struct Oidc {
    providers: Vec<ProviderClient>,
    clock_skew_secs: u64,
}

impl Oidc {
    /// No provider: the log-in page shows only the password form.
    pub fn none() -> Arc<Oidc> {
        Arc::new(Oidc {
            providers: Vec::new(),
            clock_skew_secs: 0,
        })
    }

    /// The providers of `[auth]`, checked. Nothing is fetched yet: each provider's discovery
    /// document is read on its first sign-in, so a provider that is down does not stop the
    /// server from starting.
    pub fn from_config(auth: &AuthConfig) -> Result<Arc<Oidc>, String> {
        let settings = auth.providers()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("runbase/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("auth.oidc: HTTP client: {e}"))?;
        Ok(Arc::new(Oidc {
            providers: settings
                .into_iter()
                .map(|s| ProviderClient::new(s, http.clone()))
                .collect(),
            clock_skew_secs: auth.oidc_clock_skew_secs,
        }))
    }

    fn provider(&self, name: &str) -> Option<&ProviderClient> {
        self.providers.iter().find(|p| p.settings.name == name)
    }

    /// "Sign in with …" for each provider, for the log-in and sign-up pages (nothing without).
    pub fn buttons(&self, next: &str) -> Markup {
        let q = |name: &str| {
            let mut href = format!("/auth/oidc/{name}/start");
            if next != "/" {
                href.push('?');
                href.push_str(&serde_urlencoded::to_string([("next", next)]).unwrap_or_default());
            }
            href
        };
        html! {
            @if !self.providers.is_empty() {
                div.oidc-buttons {
                    @for p in &self.providers {
                        a.button href=(q(&p.settings.name)) {
                            (crate::i18n::t_args("auth-oidc-sign-in-with", &[("provider", p.settings.display_name.as_str().into())]))
                        }
                    }
                }
                p.help { (crate::i18n::t("auth-oidc-or-password")) }
            }
        }
    }
}

fn redirect_uri(state: &AppState, name: &str) -> String {
    format!(
        "{}/auth/oidc/{name}/callback",
        state.config.public_url.trim_end_matches('/')
    )
}

fn unknown_provider() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "No such sign-in provider")
}

#[derive(Deserialize)]
pub struct StartQuery {
    next: Option<String>,
}

/// `GET /auth/oidc/{name}/start`: to the provider's authorization endpoint.
pub async fn start(
    // Counted with log-ins and sign-ups, per address, before anything else: each start writes
    // a pending sign-in and may fetch the provider's discovery document.
    _limit: web::AuthLimit,
    State(state): State<AppState>,
    Extension(oidc): Extension<Arc<Oidc>>,
    web::PagePath(name): web::PagePath<String>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<StartQuery>,
) -> Response {
    let Some(provider) = oidc.provider(&name) else {
        return error_response(&headers, unknown_provider());
    };
    let d = match provider.discovery().await {
        Ok(d) => d,
        Err(e) => return error_response(&headers, e),
    };
    // One binding per browser, kept across sign-ins started in several tabs.
    let (binding, fresh) = match cookie(&state, &headers, BINDING_COOKIE) {
        Some(b) if b.len() == 32 && b.bytes().all(|c| c.is_ascii_alphanumeric()) => (b, false),
        _ => (ids::random_token(32), true),
    };
    let oidc_state = ids::random_token(32);
    let nonce = ids::random_token(32);
    let verifier = ids::random_token(64);
    let s = &provider.settings;
    let mut url = match url::Url::parse(&d.authorization_endpoint) {
        Ok(u) => u,
        Err(_) => return error_response(&headers, ErrorCode::IdentityProviderError.into()),
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &s.client_id)
        .append_pair("redirect_uri", &redirect_uri(&state, &name))
        .append_pair("scope", &s.scopes.join(" "))
        .append_pair("state", &oidc_state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let kept = pending::start(
        state.store.as_ref(),
        NewPending {
            state: &oidc_state,
            provider: &name,
            verifier,
            nonce,
            next: safe_next(q.next.as_deref()),
            binding: &binding,
        },
    )
    .await;
    if let Err(e) = kept {
        return error_response(&headers, e);
    }
    let mut resp = found(url.as_str());
    if fresh {
        resp.headers_mut().append(
            header::SET_COOKIE,
            web::set_cookie(
                &state,
                BINDING_COOKIE,
                &binding,
                PENDING_FOR.as_secs() as i64,
            ),
        );
    }
    resp
}

/// A `302` to `to`.
fn found(to: &str) -> Response {
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = axum::http::StatusCode::FOUND;
    if let Ok(v) = axum::http::HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    /// RFC 9207: the issuer of the answer, when the provider sends it (against mix-ups).
    iss: Option<String>,
}

/// `GET /auth/oidc/{name}/callback`: the provider sends the browser back here.
pub async fn callback(
    State(state): State<AppState>,
    Extension(oidc): Extension<Arc<Oidc>>,
    web::PagePath(name): web::PagePath<String>,
    headers: HeaderMap,
    PageQuery(q): PageQuery<CallbackQuery>,
) -> Response {
    let Some(provider) = oidc.provider(&name) else {
        return error_response(&headers, unknown_provider());
    };
    let binding = cookie(&state, &headers, BINDING_COOKIE);
    let taken = match q.state.as_deref() {
        Some(s) => pending::take(state.store.as_ref(), s, &name, binding.as_deref()).await,
        None => Ok(None),
    };
    let pending = match taken {
        Ok(Some(p)) => p,
        Ok(None) => return error_response(&headers, pending::invalid()),
        Err(e) => return error_response(&headers, e),
    };
    if let Some(error) = q.error.as_deref() {
        let error: String = error
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(64)
            .collect();
        return error_response(
            &headers,
            ApiError::new(
                ErrorCode::SignInFailed,
                format!("The identity provider did not sign you in ({error})."),
            ),
        );
    }
    if q.iss
        .as_deref()
        .is_some_and(|i| i != provider.settings.issuer)
    {
        return error_response(
            &headers,
            ApiError::new(
                ErrorCode::SignInFailed,
                "The answer comes from another identity provider",
            ),
        );
    }
    let Some(code) = q
        .code
        .as_deref()
        .filter(|c| !c.is_empty() && c.len() <= 2048)
    else {
        return error_response(
            &headers,
            ApiError::new(ErrorCode::SignInFailed, "The provider sent no code"),
        );
    };
    let result = async {
        let d = provider.discovery().await?;
        let id_token = provider
            .exchange(&d, code, &pending.verifier, &redirect_uri(&state, &name))
            .await?;
        let identity = provider
            .verify(&d, &id_token, &pending.nonce, oidc.clock_skew_secs)
            .await?;
        identities::sign_in(state.store.as_ref(), &identity, state.config.signup_credit).await
    }
    .await;
    match result {
        Ok(opened) => {
            tracing::info!(provider = %name, account.id = %opened.account.id, "signed in with OpenID Connect");
            let mut resp = web::see_other(&pending.next);
            let max_age = SESSION_LIFETIME_MICROS / 1_000_000;
            resp.headers_mut().append(
                header::SET_COOKIE,
                web::set_cookie(&state, SESSION_COOKIE, &opened.token, max_age),
            );
            resp
        }
        Err(e) => error_response(&headers, e),
    }
}

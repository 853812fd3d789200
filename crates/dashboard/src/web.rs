//! What every page handler needs: who is asking (the session cookie), whether they want JSON
//! or a page, the CSRF check, the per-IP limits of the auth endpoints, cookies and responses.

use crate::layout;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::Markup;
use runbase_domain::account::Account;
use runbase_domain::ratelimit::{RateDecision, RateLimiter};
use runbase_domain::sessions::{self, Session};
use runbase_domain::{ApiError, ErrorCode};
use runbase_http::AppState;
use runbase_http::body::read_body;
use runbase_http::client_ip::client_ip;
use runbase_http::error::HttpError;
use serde::de::DeserializeOwned;
use std::net::{IpAddr, SocketAddr};

/// The session cookie: an opaque random token, `HttpOnly`, `SameSite=Lax`. Served over HTTPS,
/// every cookie's name takes the `__Host-` prefix (see [`cookie_name`]).
pub const SESSION_COOKIE: &str = "rb_session";
/// Before log-in there is no session to hold a CSRF token: the log-in and sign-up forms use a
/// double-submit cookie instead (the form's hidden field must equal this cookie).
pub const PRE_SESSION_CSRF_COOKIE: &str = "rb_csrf";

/// A logged-in user: the session and its account, read fresh for every request.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub session: Session,
    pub account: Account,
}

/// `Viewer` for pages that need a session: without one the browser is sent to `/login`
/// (an API-style caller gets `401 not_logged_in`).
impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match MaybeViewer::from_request_parts(parts, state).await?.0 {
            Some(v) => Ok(v),
            None if wants_json(&parts.headers) => {
                Err(HttpError::from(ErrorCode::NotLoggedIn).into_response())
            }
            None => {
                let path = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let next = serde_urlencoded::to_string([("next", path)]).unwrap_or_default();
                Err(Redirect::to(&format!("/login?{next}")).into_response())
            }
        }
    }
}

/// The viewer, if the request carries a live session.
pub struct MaybeViewer(pub Option<Viewer>);

impl FromRequestParts<AppState> for MaybeViewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(token) = cookie(state, &parts.headers, SESSION_COOKIE) else {
            return Ok(MaybeViewer(None));
        };
        let found = sessions::current(state.store.as_ref(), &token)
            .await
            .map_err(|e| error_response(&parts.headers, e))?;
        Ok(MaybeViewer(
            found.map(|(session, account)| Viewer { session, account }),
        ))
    }
}

/// A page's query string, parsed into `T`; a malformed one gets a `400 invalid_request` page (or
/// the JSON envelope) rather than the framework's plain-text rejection.
pub struct PageQuery<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PageQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, Response> {
        serde_urlencoded::from_str(parts.uri.query().unwrap_or(""))
            .map(PageQuery)
            .map_err(|e| {
                let e = ApiError::new(ErrorCode::InvalidRequest, format!("Bad query string: {e}"));
                error_response(&parts.headers, e)
            })
    }
}

/// The most a dashboard form may send. Every form is a few short fields (the longest, a key's
/// allowlist, is ten addresses), so 8 KiB is ample, and a connection that posts to the log-in
/// or sign-up form without an account costs that much at most, not the API's body limit.
pub const FORM_LIMIT: usize = 8 * 1024;

/// A form's body, at most [`FORM_LIMIT`], read once the extractors before it (the session, the
/// per-IP limit) have passed. A body too large, too slow or broken gets the error page (or the
/// JSON envelope), not the framework's plain-text rejection.
pub struct FormBody(pub Bytes);

impl FromRequest<AppState> for FormBody {
    type Rejection = Response;

    async fn from_request(req: Request, _: &AppState) -> Result<Self, Response> {
        let (parts, body) = req.into_parts();
        read_form(&parts.headers, body).await.map(FormBody)
    }
}

/// Reads a form's body (see [`FormBody`]), for a handler that first decides whether to read it.
pub async fn read_form(headers: &HeaderMap, body: Body) -> Result<Bytes, Response> {
    read_body(body, FORM_LIMIT).await.map_err(|e| {
        let mut resp = error_response(headers, e.into_api(ErrorCode::InvalidRequest));
        // The unread rest of the body makes the connection unusable.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp
    })
}

/// A page's path parameters; a segment that does not decode (`%ff`) is a page that does not
/// exist, answered with the error page rather than a plain-text `400`.
pub struct PagePath<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequestParts<AppState> for PagePath<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(t)) => Ok(PagePath(t)),
            Err(_) => Err(error_response(
                &parts.headers,
                ApiError::new(ErrorCode::NotFound, "This page does not exist"),
            )),
        }
    }
}

/// The request's client address (for the per-IP limits).
pub struct ClientIp(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, std::convert::Infallible> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientIp(client_ip(
            peer,
            &parts.headers,
            &state.config.trusted_proxies,
        )))
    }
}

/// Whether the caller wants JSON rather than a page: it asks for JSON and not for HTML, or it
/// sent JSON.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let get = |h| headers.get(h).and_then(|v| v.to_str().ok()).unwrap_or("");
    let accept = get(header::ACCEPT);
    (accept.contains("application/json") && !accept.contains("text/html"))
        || get(header::CONTENT_TYPE).starts_with("application/json")
}

/// A cookie's name as set and read: over HTTPS with the `__Host-` prefix, which browsers accept
/// only with `Secure`, `Path=/` and no `Domain`, so a sibling subdomain or a plain-HTTP page
/// cannot plant or overwrite it.
pub fn cookie_name(state: &AppState, name: &str) -> String {
    prefixed(name, state.config.behind_tls())
}

/// `name` as a cookie is called behind TLS (`__Host-`: only this host, over https) or not.
fn prefixed(name: &str, behind_tls: bool) -> String {
    if behind_tls {
        format!("__Host-{name}")
    } else {
        name.to_owned()
    }
}

/// A cookie's value from the request.
pub fn cookie(state: &AppState, headers: &HeaderMap, name: &str) -> Option<String> {
    cookie_named(headers, &cookie_name(state, name))
}

/// The value of the first cookie called exactly `name`, if that one is not empty.
fn cookie_named(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, `Path=/`, and `Secure` behind TLS.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.config.behind_tls() {
        "; Secure"
    } else {
        ""
    };
    let name = cookie_name(state, name);
    let v =
        format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}");
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("rb_invalid=1"))
}

/// Compares a submitted CSRF token with the expected one, in constant time.
pub fn tokens_match(expected: &str, submitted: Option<&str>) -> bool {
    use subtle::ConstantTimeEq;
    match submitted {
        Some(s) if !expected.is_empty() => expected.as_bytes().ct_eq(s.as_bytes()).into(),
        _ => false,
    }
}

/// The CSRF token a request submitted: the form field, or the `X-CSRF-Token` header.
pub fn submitted_csrf<'a>(headers: &'a HeaderMap, field: Option<&'a str>) -> Option<&'a str> {
    field.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()))
}

/// Refuses a form whose CSRF token is not the session's.
pub fn check_csrf(
    headers: &HeaderMap,
    viewer: &Viewer,
    field: Option<&str>,
) -> Result<(), ApiError> {
    if tokens_match(&viewer.session.csrf_token, submitted_csrf(headers, field)) {
        Ok(())
    } else {
        Err(ErrorCode::CsrfFailed.into())
    }
}

/// The per-IP limit of the auth endpoints (log-in, sign-up, password change). As an extractor
/// placed first among a handler's arguments it counts every request before the session, the
/// CSRF token or the body is looked at; over the limit the request is refused with
/// `429 RATE_LIMITED`, `Retry-After` and the `RateLimit-*` headers.
pub struct AuthLimit(pub RateDecision);

impl FromRequestParts<AppState> for AuthLimit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, state).await;
        limit_by_ip(
            state,
            state.auth_limiter.as_ref(),
            "auth",
            ip,
            &parts.headers,
        )
        .await
        .map(AuthLimit)
    }
}

/// The per-IP limit of the session check (`GET /auth/session`), counted like [`AuthLimit`]; the
/// endpoint is JSON, so its 429 is too, whatever the caller accepts.
pub struct SessionCheckLimit(pub RateDecision);

impl FromRequestParts<AppState> for SessionCheckLimit {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Ok(ClientIp(ip)) = ClientIp::from_request_parts(parts, state).await;
        let mut json = HeaderMap::new();
        json.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        limit_by_ip(state, state.session_limiter.as_ref(), "session", ip, &json)
            .await
            .map(SessionCheckLimit)
    }
}

/// What a per-IP limit counts against: an IPv4 address, or the /64 network of an IPv6 one (a
/// single subscriber is given a whole /64, so its addresses cost nothing to change).
fn limit_bucket(ip: Option<IpAddr>) -> String {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(a)) => a.to_string(),
        Some(IpAddr::V6(a)) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
        None => "unknown".to_owned(),
    }
}

async fn limit_by_ip(
    state: &AppState,
    limiter: &dyn RateLimiter,
    scope: &'static str,
    ip: Option<IpAddr>,
    headers: &HeaderMap,
) -> Result<RateDecision, Response> {
    let decision = limiter
        .check(&format!("{scope}:{}", limit_bucket(ip)))
        .await
        .map_err(|_| error_response(headers, ErrorCode::ServiceUnavailable.into()))?;
    if decision.allowed {
        return Ok(decision);
    }
    state.metrics.rate_limited(scope);
    let mut resp = error_response(headers, ErrorCode::RateLimited.into());
    refusal_headers(&mut resp, &decision);
    Err(resp)
}

/// A limiter's refusal: its `RateLimit-*` headers, and `Retry-After` when its window resets.
pub fn refusal_headers(resp: &mut Response, d: &RateDecision) {
    rate_headers(resp, d);
    resp.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(d.reset_secs().max(1)),
    );
}

pub fn rate_headers(resp: &mut Response, d: &RateDecision) {
    let h = resp.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs()));
}

/// An error as the caller wants it: the JSON envelope, or a page saying what went wrong, with
/// the same status.
pub fn error_response(headers: &HeaderMap, e: ApiError) -> Response {
    if wants_json(headers) {
        return HttpError(e).into_response();
    }
    let status = StatusCode::from_u16(e.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // Either name the cookie may have (`cookie_name`); which one this server uses is in its
    // state, not at hand here. So behind TLS a planted plain `rb_session` also hides the
    // sign-in links of an error page: its links (which lead to `/login`) are all it changes.
    let session_cookie = [false, true]
        .into_iter()
        .any(|tls| cookie_named(headers, &prefixed(SESSION_COOKIE, tls)).is_some());
    let limited = status == StatusCode::TOO_MANY_REQUESTS;
    let mut resp = page(layout::error_page(&e, session_cookie));
    *resp.status_mut() = status;
    if limited {
        // As the JSON envelope's (`HttpError`): a limiter's refusal sets its own after this.
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// A page: HTML with the headers every page carries. Pages are per-user and may show a key
/// once, so nothing is cached.
pub fn page(markup: Markup) -> Response {
    page_posting_to(markup, &[])
}

/// The policy every page carries: forms post to this site only (`form-action`), plus the
/// `extra_form_targets` origins a page's form is redirected to (the payment provider's checkout:
/// browsers apply `form-action` to the redirects that follow a form, too).
const CSP: &str = "default-src 'self'; img-src 'self' data:; media-src 'self'; object-src 'none'; \
                   base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// A page whose forms may also lead to `extra_form_targets` (origins such as
/// `https://checkout.stripe.com`).
pub fn page_posting_to(markup: Markup, extra_form_targets: &[String]) -> Response {
    let mut resp = axum::response::Html(markup.into_string()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let mut csp = CSP.to_owned();
    for origin in extra_form_targets {
        // Origins come from configuration; one that could break out of the header is dropped.
        if !origin.is_empty()
            && origin
                .chars()
                .all(|c| c.is_ascii_graphic() && c != ';' && c != ',')
        {
            csp.push(' ');
            csp.push_str(origin);
        }
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(CSP)),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    resp
}

/// `303 See Other` to `to` (after a form post).
pub fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A form body (`application/x-www-form-urlencoded`, or JSON from API-style callers).
pub fn parse_form<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if json {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidJson,
                format!("Request body is not valid JSON: {e}"),
            )
        })
    } else {
        serde_urlencoded::from_bytes(body).map_err(|e| {
            ApiError::new(
                ErrorCode::InvalidRequest,
                format!("The form could not be read: {e}"),
            )
        })
    }
}

/// An optional whole number from a form field ("" is none).
pub fn optional_number(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    match value.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidRequest,
                    format!("{field}: must be a whole number of 0 or more, not \"{v}\""),
                )
            }),
    }
}

/// Where to go after log-in: a path on this site only (no open redirect). Browsers drop tabs and
/// newlines from a URL and read `\` as `/`, so `/<tab>/evil.example` or `/\evil.example` would
/// be another site: a path starting with one `/`, without `\`, control characters or spaces.
pub fn safe_next(next: Option<&str>) -> String {
    let local = |n: &str| {
        n.starts_with('/')
            && !n.starts_with("//")
            && !n.contains('\\')
            && !n.chars().any(|c| c.is_control() || c.is_whitespace())
    };
    match next {
        Some(n) if local(n) => n.to_owned(),
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::{limit_bucket, safe_next};

    #[test]
    fn next_stays_on_this_site() {
        for ok in ["/", "/runs?status=failed", "/settings/api-keys/key_1"] {
            assert_eq!(safe_next(Some(ok)), ok);
        }
        for off in [
            "//evil.example/",
            "/\\evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ /evil.example",
            "https://evil.example/",
            "evil.example",
            "",
        ] {
            assert_eq!(safe_next(Some(off)), "/", "{off:?}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(limit_bucket(ip("203.0.113.7")), "203.0.113.7");
        assert_eq!(limit_bucket(ip("::ffff:203.0.113.7")), "203.0.113.7");
        assert_eq!(
            limit_bucket(ip("2001:db8:1:2:aaaa::1")),
            limit_bucket(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            limit_bucket(ip("2001:db8:1:2::1")),
            limit_bucket(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_bucket(None), "unknown");
    }
}

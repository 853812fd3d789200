//! The JSON error envelope: `{"error": {"message": "...", "code": "..."}}`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use runbase_domain::{ApiError, ErrorCode};

/// An [`ApiError`] on its way out.
#[derive(Debug)]
pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl From<ErrorCode> for HttpError {
    fn from(c: ErrorCode) -> Self {
        HttpError(c.into())
    }
}

/// A query string the endpoint cannot read (an unknown parameter, a value of the wrong kind), as
/// `400 invalid_request` naming what was wrong, without the framework's preamble.
/// The detail is cut at [`QUERY_DETAIL_MAX`] characters: it quotes the parameter's name, which
/// the URL may make tens of kilobytes long.
pub fn bad_query(e: &axum::extract::rejection::QueryRejection) -> ApiError {
    let text = e.body_text();
    let detail = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    let message = match detail.char_indices().nth(QUERY_DETAIL_MAX) {
        Some((cut, _)) => format!("Invalid query: {}…", &detail[..cut]),
        None => format!("Invalid query: {detail}"),
    };
    ApiError::new(ErrorCode::InvalidRequest, message)
}

/// How much of a bad query's detail [`bad_query`] quotes, in characters.
pub const QUERY_DETAIL_MAX: usize = 200;

/// The envelope's bytes for `e`.
pub fn envelope(e: &ApiError) -> Vec<u8> {
    e.envelope()
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, envelope(&self.0)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.0.code == ErrorCode::IdempotencyKeyInUse || status == StatusCode::TOO_MANY_REQUESTS
        {
            // The first request is normally answered within milliseconds. Every 429 carries a
            // `Retry-After` (runbase.md): a limiter's refusal replaces this one with when its
            // window resets (`routes::api_key::rate_limited`); a refusal without a window (an
            // upload or an event stream while the key's are all open) keeps 1 s, and so does
            // `USAGE_EXCEEDED`, which waiting does not lift (its message says what does).
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.0.code == ErrorCode::PayloadTooLarge {
            // The unread rest of the body makes the connection unusable: tell the client not to
            // send its next request on it.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbase_domain::service::internal;
    use runbase_domain::store::StoreError;

    #[test]
    fn a_bad_query_names_the_parameter_without_the_frameworks_preamble() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code, reason = "only its deserialization is tested")]
        struct Params {
            limit: Option<u32>,
        }
        let query = |q: &str| {
            let uri: axum::http::Uri = format!("/x?{q}").parse().unwrap();
            axum::extract::Query::<Params>::try_from_uri(&uri).unwrap_err()
        };
        let e = bad_query(&query("lmit=3"));
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert_eq!(
            e.message,
            "Invalid query: lmit: unknown field `lmit`, expected `limit`"
        );
        let long = "b".repeat(60_000);
        let e = bad_query(&query(&format!("{long}=1")));
        assert!(
            e.message.len() < QUERY_DETAIL_MAX + 100,
            "{} bytes",
            e.message.len()
        );
        assert!(e.message.ends_with('…'), "{}", e.message);
        let e = bad_query(&query("limit=many"));
        assert!(
            e.message.starts_with("Invalid query: limit: "),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_429_says_when_to_retry() {
        // A refusal without a limiter's window (the upload slots') still carries one.
        let e = ApiError::new(ErrorCode::RateLimited, "already sending 2 uploads at once");
        let resp = HttpError(e).into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        for code in [ErrorCode::TooManyStreams, ErrorCode::UsageExceeded] {
            let resp = HttpError::from(code).into_response();
            assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS, "{code:?}");
            assert_eq!(resp.headers()[header::RETRY_AFTER], "1", "{code:?}");
        }
        let resp = HttpError::from(ErrorCode::InvalidRequest).into_response();
        assert!(resp.headers().get(header::RETRY_AFTER).is_none());
    }

    #[test]
    fn a_500_carries_no_internal_detail() {
        let e = internal(StoreError::Backend("disk I/O error at /secret/path".into()));
        let resp = HttpError(e.clone()).into_response();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body: serde_json::Value = serde_json::from_slice(&envelope(&e)).unwrap();
        assert_eq!(body["error"]["code"], "internal_error");
        assert!(!body.to_string().contains("secret"));
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("support@runbase.net")
        );
    }
}

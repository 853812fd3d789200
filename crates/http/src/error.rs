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
        if self.0.code == ErrorCode::IdempotencyKeyInUse {
            // The first request is normally answered within milliseconds.
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

//! Errors: the API's error table as a typed [`ErrorCode`], the envelope as an [`ApiError`]
//! (with the status and `Request-Id` a support request needs), and what can go wrong on the way
//! ([`Error`]).

use crate::types::Run;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal), )*) => {
        /// A code of the API's error table (`{"error": {"code": ...}}`), one variant per code.
        /// A code this client does not know yet (a newer server) is [`ErrorCode::Unknown`]; the
        /// string is kept in [`ApiError::code_str`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
            /// A code missing from this client's table.
            Unknown,
        }

        impl ErrorCode {
            /// Every code this client knows, in the server's table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it appears on the wire (`""` for [`ErrorCode::Unknown`]).
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* ErrorCode::Unknown => "" }
            }

            /// The HTTP status the server answers this code with (`None` for
            /// [`ErrorCode::Unknown`]).
            pub const fn status(self) -> Option<u16> {
                match self { $(ErrorCode::$variant => Some($status),)* ErrorCode::Unknown => None }
            }

            /// The code of a wire string; [`ErrorCode::Unknown`] when it is not in the table.
            pub fn parse(code: &str) -> ErrorCode {
                match code { $($code => ErrorCode::$variant,)* _ => ErrorCode::Unknown }
            }
        }
    };
}

// The server's table (crates/domain/src/error.rs), code and status. `tests/error_table.rs`
// fails when the two differ in any code or status, so this cannot drift unnoticed.
error_codes! {
    /// The request body is not valid JSON.
    InvalidJson => ("invalid_json", 400),
    /// `model` is missing or not a string.
    MissingModel => ("missing_model", 400),
    /// `input` is missing or not an object.
    MissingInput => ("missing_input", 400),
    /// The input does not match the model's schema.
    InvalidInput => ("invalid_input", 400),
    /// No such model in the catalogue (or none of its providers is configured).
    ModelNotFound => ("model_not_found", 400),
    /// A query parameter, header or other part of the request is malformed.
    InvalidRequest => ("invalid_request", 400),
    /// No usable `Authorization: Bearer sk-...` header.
    MissingApiKey => ("missing_api_key", 401),
    /// The key is unknown, disabled, deleted or expired.
    InvalidApiKey => ("invalid_api_key", 401),
    /// The balance cannot pay for the run.
    InsufficientBalance => ("insufficient_balance", 402),
    /// The key's lifetime spend limit would be passed.
    SpendLimitExceeded => ("api_key_spend_limit_exceeded", 403),
    /// The client address is not in the key's allowlist.
    IpNotAllowed => ("ip_not_allowed", 403),
    /// No such run for this account.
    RunNotFound => ("run_not_found", 404),
    /// No such route or resource.
    NotFound => ("not_found", 404),
    /// The route exists but not with this method.
    MethodNotAllowed => ("method_not_allowed", 405),
    /// The body is larger than the server accepts.
    PayloadTooLarge => ("payload_too_large", 413),
    /// The request body did not arrive within the server's body timeout.
    RequestTimeout => ("request_timeout", 408),
    /// The request's headers are more, or larger, than the server accepts.
    HeadersTooLarge => ("request_headers_too_large", 431),
    /// The `Idempotency-Key` was used for a different request in the last 24 hours.
    IdempotencyKeyMismatch => ("idempotency_key_mismatch", 409),
    /// The first request with this `Idempotency-Key` is still being processed.
    IdempotencyKeyInUse => ("idempotency_key_in_use", 409),
    /// Too many requests in the current window (retried by the client, see
    /// [`crate::Client::with_rate_limit_backoff`]).
    RateLimited => ("RATE_LIMITED", 429),
    /// The key's usage quota is used up (not retried: waiting does not help).
    UsageExceeded => ("USAGE_EXCEEDED", 429),
    /// The key has as many event streams open as it may (not retried: close one first).
    TooManyStreams => ("too_many_streams", 429),
    /// Email and password do not match an account (the dashboard's log-in).
    InvalidCredentials => ("invalid_credentials", 401),
    /// The dashboard needs a session and there is none.
    NotLoggedIn => ("not_logged_in", 401),
    /// A form was posted without the page's CSRF token.
    CsrfFailed => ("csrf_failed", 403),
    /// Only an administrator may do this.
    AdminOnly => ("admin_only", 403),
    /// A webhook whose signature does not verify.
    InvalidSignature => ("invalid_signature", 400),
    /// Sign-in through an OpenID Connect provider failed.
    SignInFailed => ("sign_in_failed", 400),
    /// The identity provider has not verified the email.
    EmailNotVerified => ("email_not_verified", 403),
    /// The OpenID Connect provider is unreachable or answered out of protocol.
    IdentityProviderError => ("identity_provider_error", 502),
    /// The server has no payment provider configured.
    PaymentsUnavailable => ("payments_unavailable", 503),
    /// The payment provider failed or refused.
    PaymentProviderError => ("payment_provider_error", 502),
    /// A service the request depends on is unreachable; nothing was done.
    ServiceUnavailable => ("service_unavailable", 503),
    /// Anything unexpected on the server's side.
    Internal => ("internal_error", 500),
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered by the API in its envelope `{"error": {"message", "code"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The typed code ([`ErrorCode::Unknown`] for a code this client does not know).
    pub code: ErrorCode,
    /// The code exactly as the server sent it.
    pub code_str: String,
    /// The HTTP status.
    pub status: u16,
    /// The server's human-readable message.
    pub message: String,
    /// The response's `Request-Id`: quote it when reporting a problem.
    pub request_id: Option<String>,
    /// The response's `Retry-After` (429 and some 409 and 503 answers).
    pub retry_after: Option<Duration>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code_str, self.status, self.message)?;
        if let Some(id) = &self.request_id {
            write!(f, " [request {id}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// Everything a call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with an error of its table.
    #[error("{0}")]
    Api(ApiError),
    /// The request did not complete: connection refused or dropped, TLS, a client timeout.
    #[error("request failed: {0}")]
    Transport(#[from] reqwest::Error),
    /// A success status whose body is not what the API documents.
    #[error("unexpected answer (HTTP {status}): {message}")]
    Decode {
        status: u16,
        request_id: Option<String>,
        message: String,
    },
    /// An error status without the API's error envelope (a proxy's page, a missing file).
    #[error("HTTP {status}: {body}")]
    UnexpectedStatus {
        status: u16,
        request_id: Option<String>,
        /// The start of the body, for the message.
        body: String,
    },
    /// [`crate::Client::wait_with`] ran out of time; `run` is the last state seen, if any.
    #[error("the run did not finish within {}s{}", timeout.as_secs_f64(), last_status(run))]
    Timeout {
        timeout: Duration,
        run: Option<Box<Run>>,
    },
    /// The base URL or an output URL cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// Writing a downloaded file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn last_status(run: &Option<Box<Run>>) -> String {
    run.as_ref()
        .map(|r| format!(" (run {} still {})", r.id, r.status))
        .unwrap_or_default()
}

impl Error {
    /// The API's error code, when the API answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api(e) => Some(e.code),
            _ => None,
        }
    }

    /// The HTTP status, when there was an answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(e) => Some(e.status),
            Error::Decode { status, .. } | Error::UnexpectedStatus { status, .. } => Some(*status),
            Error::Transport(e) => e.status().map(|s| s.as_u16()),
            _ => None,
        }
    }

    /// The answer's `Request-Id`, when there was an answer carrying one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Api(e) => e.request_id.as_deref(),
            Error::Decode { request_id, .. } | Error::UnexpectedStatus { request_id, .. } => {
                request_id.as_deref()
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_parses_back() {
        for &c in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(c.as_str()), c);
            assert!(c.status().is_some());
        }
        assert_eq!(ErrorCode::parse("something_new"), ErrorCode::Unknown);
        assert!(!ErrorCode::ALL.contains(&ErrorCode::Unknown));
    }
}

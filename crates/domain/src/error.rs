//! The one table of error codes a client can see. Every error that leaves the API is an
//! [`ApiError`] built from an [`ErrorCode`]; the code strings and statuses are a public contract
//! (`shared/spec/error-reference.txt`) and are pinned by tests.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal, $message:literal, $fix:literal), )*) => {
        /// A public error code with its HTTP status and default message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode { $( $(#[$doc])* $variant, )* }

        impl ErrorCode {
            /// Every code, in table order (used by the docs pages and tests).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code string clients match on.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status that goes with the code.
            pub const fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// The message used when the caller has nothing more specific to say.
            pub const fn default_message(self) -> &'static str {
                match self { $(ErrorCode::$variant => $message,)* }
            }

            /// What the client should do about it (the "Fix" column of the docs' error table).
            pub const fn fix(self) -> &'static str {
                match self { $(ErrorCode::$variant => $fix,)* }
            }
        }
    };
}

error_codes! {
    /// The request body is not valid JSON.
    InvalidJson => ("invalid_json", 400, "Request body is not valid JSON", "Check your JSON syntax"),
    /// `model` is missing or not a string.
    MissingModel => ("missing_model", 400, "The \"model\" field is required and must be a string like \"provider/name\"", "Include \"model\": \"provider/name\" in your request body"),
    /// `input` is missing or not an object.
    MissingInput => ("missing_input", 400, "The \"input\" field is required and must be an object", "Include \"input\": {...} in your request body"),
    /// The input does not match the model's schema.
    InvalidInput => ("invalid_input", 400, "Input doesn't match the model's schema", "Check the model's API reference for required fields and valid values"),
    /// No such model in the catalogue.
    ModelNotFound => ("model_not_found", 400, "The model ID doesn't match any available model", "See the models page for valid model IDs"),
    /// A query parameter or other part of the request is malformed (not in the published
    /// reference, which only covers run creation).
    InvalidRequest => ("invalid_request", 400, "The request is malformed", "Read the message: it names the parameter and what is expected"),
    /// No usable `Authorization: Bearer sk-...` header.
    MissingApiKey => ("missing_api_key", 401, "Missing API key: include \"Authorization: Bearer sk-...\" in your request", "Include Authorization: Bearer sk-... in your request"),
    /// The key is unknown, disabled, deleted or expired.
    InvalidApiKey => ("invalid_api_key", 401, "Invalid API key: the key is unknown, disabled, or expired", "Create a new key or re-enable the existing one in Settings → API Keys"),
    /// The balance cannot pay for the run.
    InsufficientBalance => ("insufficient_balance", 402, "Your balance is too low for this run; top up in Settings → Credits", "Top up your balance in Settings → Credits"),
    /// The key's lifetime spend limit would be passed.
    SpendLimitExceeded => ("api_key_spend_limit_exceeded", 403, "This API key's spend limit has been reached; raise it in Settings → API Keys", "Raise the spend limit in Settings → API Keys"),
    /// The client address is not in the key's allowlist.
    IpNotAllowed => ("ip_not_allowed", 403, "Your IP address is not in this API key's allowed list", "Add your IP to the key's allowed list, or remove the allowlist"),
    /// No such run for this account.
    RunNotFound => ("run_not_found", 404, "No run with this ID for your account", "Check the run ID is correct and was created with a key of your account"),
    /// No such route or resource.
    NotFound => ("not_found", 404, "Not found", "Check the URL"),
    /// The route exists but not with this method.
    MethodNotAllowed => ("method_not_allowed", 405, "Method not allowed for this endpoint", "Check the HTTP method in the API reference"),
    /// The body is larger than the server accepts.
    PayloadTooLarge => ("payload_too_large", 413, "Request body is too large", "Send a smaller body; pass large images as URLs"),
    /// The request body did not arrive within the server's body timeout.
    RequestTimeout => ("request_timeout", 408, "The request body was not received in time", "Send the whole body promptly after the headers; check your connection"),
    /// The request's headers are more, or larger, than the server accepts.
    HeadersTooLarge => ("request_headers_too_large", 431, "The request headers are too large", "Send fewer or smaller headers (cookies included)"),
    /// The `Idempotency-Key` was first used for another request (method, path or body differ)
    /// within the 24 hours it is kept.
    IdempotencyKeyMismatch => ("idempotency_key_mismatch", 409, "This Idempotency-Key was already used for a different request (method, path or body) in the last 24 hours", "Use a new Idempotency-Key for a new request; reuse a key only to retry the very same request"),
    /// The first request with this `Idempotency-Key` is still being processed.
    IdempotencyKeyInUse => ("idempotency_key_in_use", 409, "A request with this Idempotency-Key is still being processed", "Retry after Retry-After (1 s): the retry answers what the first request answered"),
    /// Too many requests in the current window.
    RateLimited => ("RATE_LIMITED", 429, "Rate limit exceeded", "Wait and retry with exponential backoff (1 s, 2 s, 4 s); see rate limits"),
    /// The key's usage quota is used up.
    UsageExceeded => ("USAGE_EXCEEDED", 429, "This API key's usage quota is exhausted", "Contact support or create a new key"),
    /// The key already holds as many open event streams (`GET /api/v1/runs/{id}/events`) as
    /// one key may.
    TooManyStreams => ("too_many_streams", 429, "This API key has too many open event streams", "Close a stream you no longer read (each ends after its run's last event), or poll instead"),
    /// Email and password do not match an account (the dashboard's log-in).
    InvalidCredentials => ("invalid_credentials", 401, "Email or password is incorrect", "Check your email and password, or sign up"),
    /// The dashboard needs a session and there is none (or it expired).
    NotLoggedIn => ("not_logged_in", 401, "You are not logged in", "Log in at /login"),
    /// A form was posted without the page's CSRF token, or from another site.
    CsrfFailed => ("csrf_failed", 403, "This form has expired or was not sent from this site", "Reload the page and submit the form again"),
    /// Only an administrator may do this.
    AdminOnly => ("admin_only", 403, "Only an administrator can do this", "Ask an administrator of this server"),
    /// A webhook whose signature does not verify (or is too old).
    InvalidSignature => ("invalid_signature", 400, "Webhook signature verification failed", "Check the webhook signing secret configured on both sides"),
    /// Sign-in through an OpenID Connect provider failed: a wrong or used state, a code the
    /// provider refused, an ID token that does not verify.
    SignInFailed => ("sign_in_failed", 400, "Sign-in with the identity provider failed; nothing was changed", "Start again from the log-in page"),
    /// The provider vouches for the identity but not for its email: it neither links to an
    /// account nor makes one.
    EmailNotVerified => ("email_not_verified", 403, "The identity provider has not verified this email address, so it cannot sign in here", "Verify the address with the provider, or sign up with a password"),
    /// The OpenID Connect provider is unreachable or answered out of protocol.
    IdentityProviderError => ("identity_provider_error", 502, "The identity provider could not be reached or answered wrongly", "Try again in a minute, or log in with your password"),
    /// The server has no payment provider configured.
    PaymentsUnavailable => ("payments_unavailable", 503, "Top-ups are not available on this server", "Ask an administrator to grant credits, or to configure payments"),
    /// The payment provider failed or refused.
    PaymentProviderError => ("payment_provider_error", 502, "The payment provider could not start the payment", "Try again in a minute"),
    /// A service the request depends on (the shared rate limiter) is unreachable; nothing was
    /// done, the request may be retried.
    ServiceUnavailable => ("service_unavailable", 503, "The service is temporarily unavailable; nothing was done", "Retry in a few seconds with exponential backoff"),
    /// Anything unexpected on the server's side; never carries internal detail.
    Internal => ("internal_error", 500, "An unexpected error occurred on our side. If this persists, contact support@runbase.net.", "Retry later; if this persists, contact support@runbase.net"),
}

impl ErrorCode {
    /// The codes of the runs API, in the order `POST /api/v1/runs` checks them (first failing
    /// wins; `invalid_request` and the two `idempotency_key_*` codes only with an
    /// `Idempotency-Key` header), then those of reading a run (and of streaming its events) and the 500. The docs pages and each model's page
    /// are generated from this list.
    pub const RUNS_API: &'static [ErrorCode] = &[
        ErrorCode::MissingApiKey,
        ErrorCode::InvalidApiKey,
        ErrorCode::IpNotAllowed,
        ErrorCode::RateLimited,
        ErrorCode::InvalidRequest,
        ErrorCode::IdempotencyKeyMismatch,
        ErrorCode::IdempotencyKeyInUse,
        ErrorCode::UsageExceeded,
        ErrorCode::InvalidJson,
        ErrorCode::MissingModel,
        ErrorCode::MissingInput,
        ErrorCode::ModelNotFound,
        ErrorCode::InvalidInput,
        ErrorCode::SpendLimitExceeded,
        ErrorCode::InsufficientBalance,
        ErrorCode::RunNotFound,
        ErrorCode::TooManyStreams,
        ErrorCode::Internal,
    ];
}

/// An error as a client sees it: a code from the table and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The 500 error: the internal cause must already have been logged by the caller.
    pub fn internal() -> Self {
        ErrorCode::Internal.into()
    }
}

impl ApiError {
    /// The JSON envelope every error leaves in: `{"error": {"message": "...", "code": "..."}}`.
    pub fn envelope(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(serde::Serialize)]
        struct Inner<'a> {
            message: &'a str,
            code: &'a str,
        }
        let body = Body {
            error: Inner {
                message: &self.message,
                code: self.code.as_str(),
            },
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| {
            br#"{"error":{"message":"internal error","code":"internal_error"}}"#.to_vec()
        })
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self {
            code,
            message: code.default_message().to_owned(),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_published_reference() {
        let expected = [
            ("invalid_json", 400),
            ("missing_model", 400),
            ("missing_input", 400),
            ("invalid_input", 400),
            ("model_not_found", 400),
            ("missing_api_key", 401),
            ("invalid_api_key", 401),
            ("insufficient_balance", 402),
            ("api_key_spend_limit_exceeded", 403),
            ("ip_not_allowed", 403),
            ("RATE_LIMITED", 429),
            ("USAGE_EXCEEDED", 429),
            ("run_not_found", 404),
            ("internal_error", 500),
        ];
        for (code, status) in expected {
            let found = ErrorCode::ALL.iter().find(|c| c.as_str() == code);
            assert_eq!(found.map(|c| c.status()), Some(status), "{code}");
        }
    }

    #[test]
    fn code_strings_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {}", c.as_str());
        }
    }
}

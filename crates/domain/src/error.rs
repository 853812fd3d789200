//! The one table of error codes a client can see. Every error that leaves the API is an
//! [`ApiError`] built from an [`ErrorCode`]; the code strings and statuses are a public contract
//! (`shared/spec/error-reference.txt`) and are pinned by tests.

use std::fmt;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($code:literal, $status:literal, $message:literal), )*) => {
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
        }
    };
}

error_codes! {
    /// The request body is not valid JSON.
    InvalidJson => ("invalid_json", 400, "Request body is not valid JSON"),
    /// `model` is missing or not a string.
    MissingModel => ("missing_model", 400, "The \"model\" field is required and must be a string like \"provider/name\""),
    /// `input` is missing or not an object.
    MissingInput => ("missing_input", 400, "The \"input\" field is required and must be an object"),
    /// The input does not match the model's schema.
    InvalidInput => ("invalid_input", 400, "Input doesn't match the model's schema"),
    /// No such model in the catalogue.
    ModelNotFound => ("model_not_found", 400, "The model ID doesn't match any available model"),
    /// A query parameter or other part of the request is malformed (not in the published
    /// reference, which only covers run creation).
    InvalidRequest => ("invalid_request", 400, "The request is malformed"),
    /// No usable `Authorization: Bearer sk-...` header.
    MissingApiKey => ("missing_api_key", 401, "Missing API key: include \"Authorization: Bearer sk-...\" in your request"),
    /// The key is unknown, disabled, deleted or expired.
    InvalidApiKey => ("invalid_api_key", 401, "Invalid API key: the key is unknown, disabled, or expired"),
    /// The balance cannot pay for the run.
    InsufficientBalance => ("insufficient_balance", 402, "Your balance is too low for this run; top up in Settings → Credits"),
    /// The key's lifetime spend limit would be passed.
    SpendLimitExceeded => ("api_key_spend_limit_exceeded", 403, "This API key's spend limit has been reached; raise it in Settings → API Keys"),
    /// The client address is not in the key's allowlist.
    IpNotAllowed => ("ip_not_allowed", 403, "Your IP address is not in this API key's allowed list"),
    /// No such run for this account.
    RunNotFound => ("run_not_found", 404, "No run with this ID for your account"),
    /// No such route or resource.
    NotFound => ("not_found", 404, "Not found"),
    /// The route exists but not with this method.
    MethodNotAllowed => ("method_not_allowed", 405, "Method not allowed for this endpoint"),
    /// The body is larger than the server accepts.
    PayloadTooLarge => ("payload_too_large", 413, "Request body is too large"),
    /// Too many requests in the current window.
    RateLimited => ("RATE_LIMITED", 429, "Rate limit exceeded"),
    /// The key's usage quota is used up.
    UsageExceeded => ("USAGE_EXCEEDED", 429, "This API key's usage quota is exhausted"),
    /// Anything unexpected on the server's side; never carries internal detail.
    Internal => ("internal_error", 500, "An unexpected error occurred on our side. If this persists, contact support@runbase.net."),
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

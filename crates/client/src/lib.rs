//! A client for the Runbase HTTP API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), runbase_client::Error> {
//! use runbase_client::{Client, ErrorCode, WaitOptions};
//! use serde_json::json;
//!
//! let client = Client::new("http://127.0.0.1:8080", std::env::var("RUNBASE_API_KEY").unwrap_or_default())?;
//! let run = client.create("runbase/placeholder-image", json!({"prompt": "a lighthouse"})).await?;
//! let run = client.wait_with(&run.id, &WaitOptions::default(), |_| {}).await?;
//! let saved = client.download_outputs(&run, std::path::Path::new("out")).await?;
//! # let _ = (saved, ErrorCode::InsufficientBalance);
//! # Ok(()) }
//! ```
//!
//! Every request that the API refuses with `429 RATE_LIMITED` (or `409 idempotency_key_in_use`)
//! is retried, as the public docs advise: after 1 s, 2 s, then 4 s, and never before the
//! answer's `Retry-After`. Nothing else is retried: a create is not known to be safe to repeat
//! unless it carries an `Idempotency-Key` ([`Client::create_idempotent`]).

mod download;
mod error;
mod list;
mod types;
mod wait;

pub use error::{ApiError, Error, ErrorCode};
pub use list::RunStream;
pub use types::{Run, RunError, RunPage, RunStatus};
pub use wait::WaitOptions;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::time::Duration;

/// The longest `Retry-After` the client waits for on its own; a longer one is returned as the
/// error (with [`ApiError::retry_after`]) for the caller to decide.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A Runbase API client: an address, an API key and an HTTP connection pool. Cheap to clone
/// (the pool is shared).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// The server's root (`http://host:port`, or with a path prefix), ending in `/`.
    base: Url,
    api_key: String,
    backoff: Vec<Duration>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://127.0.0.1:8080`; a trailing `/api/v1`
    /// is accepted too) with an API key (`sk-...`).
    pub fn new(base_url: &str, api_key: impl Into<String>) -> Result<Client, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: base_url.to_owned(),
            reason: reason.to_owned(),
        };
        let trimmed = base_url.trim().trim_end_matches('/');
        let trimmed = trimmed.strip_suffix("/api/v1").unwrap_or(trimmed);
        let base = Url::parse(&format!("{trimmed}/")).map_err(|e| invalid(&e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(invalid("not an http(s) address"));
        }
        if base.query().is_some() || base.fragment().is_some() {
            return Err(invalid("a base URL has no query or fragment"));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("runbase-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client {
            http,
            base,
            api_key: api_key.into(),
            backoff: [1, 2, 4].map(Duration::from_secs).to_vec(),
        })
    }

    /// Uses this HTTP client (its timeouts, proxy, TLS roots) instead of the default one.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Client {
        self.http = http;
        self
    }

    /// The waits before each retry of a request refused with `429 RATE_LIMITED`: by default
    /// 1 s, 2 s and 4 s (three retries), each at least the answer's `Retry-After`. Empty: no
    /// retries, the 429 is returned at once.
    pub fn with_rate_limit_backoff(mut self, delays: Vec<Duration>) -> Client {
        self.backoff = delays;
        self
    }

    /// The server's root address.
    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// Creates a run: `POST /api/v1/runs` with `{"model", "input"}`. Answers the run as created
    /// (`pending`, with its `costUsd`).
    pub async fn create(&self, model: &str, input: Value) -> Result<Run, Error> {
        self.create_inner(model, input, None).await
    }

    /// Creates a run under an `Idempotency-Key` (1–255 printable ASCII characters, e.g. a
    /// UUID): repeating the call with the same key and input answers the same run, charged and
    /// queued once, for 24 hours.
    pub async fn create_idempotent(
        &self,
        model: &str,
        input: Value,
        idempotency_key: &str,
    ) -> Result<Run, Error> {
        self.create_inner(model, input, Some(idempotency_key)).await
    }

    async fn create_inner(
        &self,
        model: &str,
        input: Value,
        idempotency_key: Option<&str>,
    ) -> Result<Run, Error> {
        let body = serde_json::json!({ "model": model, "input": input });
        let url = self.endpoint(&["api", "v1", "runs"]);
        self.call(Method::POST, url, Some(&body), idempotency_key)
            .await
    }

    /// Reads a run: `GET /api/v1/runs/{id}`.
    pub async fn get(&self, id: &str) -> Result<Run, Error> {
        let url = self.endpoint(&["api", "v1", "runs", id]);
        self.call(Method::GET, url, None, None).await
    }

    /// Cancels a `pending` or `processing` run (refunded in full): `POST
    /// /api/v1/runs/{id}/cancel`. A finished run is answered unchanged.
    pub async fn cancel(&self, id: &str) -> Result<Run, Error> {
        let url = self.endpoint(&["api", "v1", "runs", id, "cancel"]);
        self.call(Method::POST, url, None, None).await
    }

    /// [`Client::cancel`] under an `Idempotency-Key`.
    pub async fn cancel_idempotent(&self, id: &str, idempotency_key: &str) -> Result<Run, Error> {
        let url = self.endpoint(&["api", "v1", "runs", id, "cancel"]);
        self.call(Method::POST, url, None, Some(idempotency_key))
            .await
    }

    /// One page of the account's runs, newest first: `GET /api/v1/runs?limit=&startingAfter=`
    /// (`limit` 1–100, the server's default 20). [`Client::list`] follows the pages for you.
    pub async fn list_page(
        &self,
        limit: Option<u32>,
        starting_after: Option<&str>,
    ) -> Result<RunPage, Error> {
        let mut url = self.endpoint(&["api", "v1", "runs"]);
        {
            let mut q = url.query_pairs_mut();
            if let Some(limit) = limit {
                q.append_pair("limit", &limit.to_string());
            }
            if let Some(after) = starting_after {
                q.append_pair("startingAfter", after);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.call(Method::GET, url, None, None).await
    }

    /// A model of the catalogue (`GET /api/v1/models/{provider}/{name}`, public): its name,
    /// price, `inputSchema` (JSON Schema), `outputSchema` and examples, as JSON.
    pub async fn model(&self, id: &str) -> Result<Value, Error> {
        let mut segments = vec!["api", "v1", "models"];
        segments.extend(id.split('/'));
        let url = self.endpoint(&segments);
        self.call(Method::GET, url, None, None).await
    }

    /// `base` + path segments, each percent-encoded (a run id cannot escape its segment).
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// One API call with its JSON answer, retried on `429 RATE_LIMITED` and `409
    /// idempotency_key_in_use` as the docs advise.
    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<T, Error> {
        let mut attempt = 0;
        loop {
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(&self.api_key);
            if let Some(body) = body {
                req = req.json(body);
            }
            if let Some(key) = idempotency_key {
                req = req.header("Idempotency-Key", key);
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let bytes = resp.bytes().await?;
            if (200..300).contains(&status) {
                return serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
                    status,
                    request_id: request_id(&headers),
                    message: e.to_string(),
                });
            }
            let err = error_of(status, &headers, &bytes);
            if let Error::Api(api) = &err
                && matches!(
                    api.code,
                    ErrorCode::RateLimited | ErrorCode::IdempotencyKeyInUse
                )
                && let Some(delay) = self.backoff.get(attempt)
            {
                let wait = api.retry_after.map_or(*delay, |r| r.max(*delay));
                if wait <= MAX_RETRY_AFTER {
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
            }
            return Err(err);
        }
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// The error of a non-2xx answer: the API's envelope when it is one.
fn error_of(status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
        code: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(Envelope { error }) => Error::Api(ApiError {
            code: ErrorCode::parse(&error.code),
            code_str: error.code,
            status,
            message: error.message,
            request_id: request_id(headers),
            retry_after: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs),
        }),
        Err(_) => Error::UnexpectedStatus {
            status,
            request_id: request_id(headers),
            body: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_normalized_and_ids_stay_in_their_segment() {
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/api/v1",
            "http://h:1/api/v1/",
        ] {
            let c = Client::new(base, "sk").expect("client");
            assert_eq!(c.base_url(), "http://h:1/", "{base}");
            assert_eq!(
                c.endpoint(&["api", "v1", "runs", "run_1/../x?y"]).as_str(),
                "http://h:1/api/v1/runs/run_1%2F..%2Fx%3Fy"
            );
        }
        let c = Client::new("https://h/prefix", "sk").expect("client");
        assert_eq!(
            c.endpoint(&["api", "v1", "runs"]).as_str(),
            "https://h/prefix/api/v1/runs"
        );
        for bad in ["", "h:1", "ftp://h", "http://h/?q=1"] {
            assert!(
                matches!(Client::new(bad, "sk"), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_answers_are_typed() {
        let mut headers = HeaderMap::new();
        headers.insert("request-id", "req_1".parse().expect("header"));
        headers.insert(RETRY_AFTER, "3".parse().expect("header"));
        let body = br#"{"error":{"message":"Rate limit exceeded","code":"RATE_LIMITED"}}"#;
        let Error::Api(e) = error_of(429, &headers, body) else {
            panic!("not an API error")
        };
        assert_eq!(e.code, ErrorCode::RateLimited);
        assert_eq!(e.request_id.as_deref(), Some("req_1"));
        assert_eq!(e.retry_after, Some(Duration::from_secs(3)));
        let err = error_of(502, &HeaderMap::new(), b"<html>bad gateway</html>");
        assert!(matches!(err, Error::UnexpectedStatus { status: 502, .. }));
    }
}

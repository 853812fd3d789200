//! The provider contract: how a run is executed by a model backend (built-in, a Cog model
//! server, or an upstream model API). Adapters implement [`Provider`]; the driver in
//! `runbase-providers` calls it (submit, then poll until done, cancel when asked or timed out)
//! and owns retries, fallback, timeouts and copying output files.

use crate::catalog::{Model, Route};
use async_trait::async_trait;
use serde_json::{Map, Value};
use std::time::Duration;

/// What the driver hands to an adapter.
pub struct RunRequest<'a> {
    pub run_id: &'a str,
    pub model: &'a Model,
    /// The route being tried: which adapter, the upstream's name for the model, options.
    pub route: &'a Route,
    /// Validated input with defaults applied.
    pub input: &'a Value,
}

/// Where an output file's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum FileData {
    Bytes(Vec<u8>),
    /// A URL to download (`https://`, `http://` or a `data:` URI); the driver copies it into
    /// Runbase's storage so the run's URLs outlive the provider's.
    Url(String),
}

/// A file a provider produced; the worker stores it and lists its URL in `output.urls`.
#[derive(Debug, Clone)]
pub struct OutputFile {
    pub name: String,
    pub content_type: String,
    pub data: FileData,
}

/// A provider's result: fields for `output` (e.g. `text`) and files.
#[derive(Debug, Default, Clone)]
pub struct ProviderOutput {
    pub fields: Map<String, Value>,
    pub files: Vec<OutputFile>,
}

/// A job started at a provider that finishes later: the adapter's handle for polling and
/// cancelling it (an id, and whatever URLs the provider returned).
#[derive(Debug, Clone, Default)]
pub struct Job {
    pub id: String,
    pub data: Value,
}

/// The answer to [`Provider::submit`].
#[derive(Debug)]
pub enum Submitted {
    /// The provider answered with the result (synchronous APIs).
    Done(ProviderOutput),
    /// Started; poll it.
    Started(Job),
}

/// The answer to [`Provider::poll`].
#[derive(Debug)]
pub enum Progress {
    Running,
    Done(ProviderOutput),
}

/// Whether trying again (later, or on another route) can help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The model ran and failed, or refused the input: the same request fails again.
    No,
    /// Overload, a 5xx, a dropped connection: worth another attempt after a pause.
    Yes,
}

/// Why a provider could not produce output. The message is shown to the client in the run's
/// `error`, so it must not carry credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// A short machine-readable reason (`model_error`, `upstream_error`, `rate_limited`, ...).
    pub code: String,
    pub message: String,
    pub retry: Retry,
    /// How long the provider asked us to wait (`Retry-After`), when it said.
    pub retry_after: Option<Duration>,
}

impl ProviderError {
    /// A final failure: retrying the same request would fail the same way.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            retry: Retry::No,
            retry_after: None,
        }
    }

    /// A transient failure worth retrying.
    pub fn transient(code: &str, message: impl Into<String>) -> Self {
        Self {
            retry: Retry::Yes,
            ..Self::new(code, message)
        }
    }

    pub fn with_retry_after(mut self, after: Option<Duration>) -> Self {
        self.retry_after = after;
        self
    }

    pub fn is_retryable(&self) -> bool {
        self.retry == Retry::Yes
    }

    /// The upstream answered with something that is not the documented shape.
    pub fn garbage(provider: &str, what: impl std::fmt::Display) -> Self {
        Self::new(
            "upstream_bad_response",
            format!("{provider} returned a response Runbase could not read: {what}"),
        )
    }
}

/// A model backend. Adapters translate; they do not sleep, retry or time out on their own.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Starts the run at the provider.
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError>;

    /// Asks how a started job is doing. Synchronous adapters never return `Started`, so the
    /// default is never called.
    async fn poll(&self, _req: &RunRequest<'_>, _job: &Job) -> Result<Progress, ProviderError> {
        Err(ProviderError::new(
            "internal_error",
            "this provider does not poll",
        ))
    }

    /// Asks the provider to stop the run (best effort). `job` is `None` when the submit call
    /// had not answered yet; adapters that name jobs themselves (by run id) can still cancel.
    async fn cancel(&self, _req: &RunRequest<'_>, _job: Option<&Job>) -> Result<(), ProviderError> {
        Ok(())
    }

    /// How long to wait between polls.
    fn poll_interval(&self) -> Duration {
        Duration::from_millis(1000)
    }
}

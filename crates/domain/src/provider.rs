//! The provider contract: how a run is executed by a model backend (built-in, model server or
//! upstream API). The worker calls it; adapters implement it.

use crate::catalog::Model;
use async_trait::async_trait;
use serde_json::{Map, Value};

/// What the worker hands to a provider.
pub struct RunRequest<'a> {
    pub run_id: &'a str,
    pub model: &'a Model,
    /// Validated input with defaults applied.
    pub input: &'a Value,
}

/// A file a provider produced; the worker stores it and lists its URL in `output.urls`.
pub struct OutputFile {
    pub name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

/// A provider's result: fields for `output` (e.g. `text`) and files.
#[derive(Default)]
pub struct ProviderOutput {
    pub fields: Map<String, Value>,
    pub files: Vec<OutputFile>,
}

/// Why a provider could not produce output. The message is shown to the client in the run's
/// `error`, so it must not carry credentials.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    /// A short machine-readable reason (`model_error`, `timeout`, `upstream_error`, ...).
    pub code: String,
    pub message: String,
}

impl ProviderError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// A model backend.
#[async_trait]
pub trait Provider: Send + Sync {
    async fn run(&self, req: RunRequest<'_>) -> Result<ProviderOutput, ProviderError>;
}

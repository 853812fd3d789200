//! The kling family's mappings (see `native/mod.rs`).

use super::FalRequest;
use runbase_domain::provider::{ProviderError, RunRequest};

/// fal's request for a model of this family.
pub fn fal(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    Err(super::unknown(
        "fal",
        super::mapping(req).unwrap_or_default(),
    ))
}

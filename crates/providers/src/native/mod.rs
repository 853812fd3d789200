//! Runbase's normalized input → each upstream API's native request.
//!
//! Every catalogue model takes runbase.net's input shape (`prompt`, `aspect_ratio`,
//! `resolution` / `quality` / `mode`, `duration`, `generate_audio`, `image_urls`); each
//! upstream wants its own (OpenAI a `size`, Kling a number of seconds, fal an endpoint per
//! task...). A catalogue route names its mapping with `options.input` (`"seedance"`,
//! `"gpt-image"`, ...); a route without one sends the input unchanged, for models an operator
//! describes in their upstream's own terms.
//!
//! One file per model family, holding that family's mapping for every API that serves it. The
//! adapters of APIs that only one family uses call their family's function directly; fal serves
//! most families, so its dispatch is here.

pub mod bytedance;
pub mod google;
pub mod kling;
pub mod minimax;
pub mod openai;

use runbase_domain::provider::{ProviderError, RunRequest};
use serde_json::Value;

/// What to send to fal's queue: the model's path (`fal-ai/...`, chosen per task, e.g. its
/// `/edit` endpoint when reference images are given) and the body.
#[derive(Debug, Clone, PartialEq)]
pub struct FalRequest {
    pub path: String,
    pub body: Value,
}

/// The route's mapping name, if it has one.
pub fn mapping<'a>(req: &'a RunRequest<'_>) -> Option<&'a str> {
    req.route.option("input")
}

/// A mapping name no adapter knows: a mistake in the catalogue, reported as the run's error.
pub fn unknown(provider: &str, name: &str) -> ProviderError {
    ProviderError::new(
        "invalid_route",
        format!("the catalogue route names input mapping {name:?}, which {provider} does not have"),
    )
}

/// fal's request for `req`.
pub fn fal(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    match mapping(req) {
        None => Ok(FalRequest {
            path: req.route.upstream.clone(),
            body: req.input.clone(),
        }),
        Some("nano-banana" | "veo") => google::fal(req),
        Some("gpt-image") => openai::fal(req),
        Some("seedream" | "seedance") => bytedance::fal(req),
        Some("kling") => kling::fal(req),
        Some("hailuo") => minimax::fal(req),
        Some(other) => Err(unknown("fal", other)),
    }
}

/// What the mappings' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use runbase_domain::catalog::Catalog;
    use runbase_domain::provider::RunRequest;
    use serde_json::Value;

    /// `f` applied to a request for catalogue model `id` on its route number `route`.
    pub fn with_req<T>(
        id: &str,
        route: usize,
        input: Value,
        f: impl Fn(&RunRequest<'_>) -> T,
    ) -> T {
        let catalog = Catalog::builtin().unwrap();
        let model = catalog.get(id).unwrap();
        let req = RunRequest {
            run_id: "run_test",
            model,
            route: &model.routes[route],
            input: &input,
        };
        f(&req)
    }
}

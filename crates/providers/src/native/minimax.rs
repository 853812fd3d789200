//! The minimax family's mappings (see `native/mod.rs`): Hailuo Pro on MiniMax's own API and on
//! fal. "Pro" is Hailuo at 1080p (6 s), as MiniMax and fal name it; the input is a `prompt`
//! and, for image to video, the first frame in `image_urls`.

use super::FalRequest;
use runbase_domain::provider::{ProviderError, RunRequest};
use serde_json::{Value, json};

fn prompt(input: &Value) -> &str {
    input.get("prompt").and_then(Value::as_str).unwrap_or("")
}

fn first_frame(input: &Value) -> Option<&str> {
    input
        .get("image_urls")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(Value::as_str)
}

/// MiniMax's `POST /v1/video_generation` body (mapping `hailuo`).
pub fn minimax(req: &RunRequest<'_>) -> Result<Value, ProviderError> {
    match super::mapping(req) {
        Some("hailuo") => {}
        other => return Err(super::unknown("minimax", other.unwrap_or_default())),
    }
    let mut body = json!({
        "model": req.route.upstream,
        "prompt": prompt(req.input),
        "duration": 6,
        "resolution": "1080P",
        "prompt_optimizer": true,
    });
    if let Some(url) = first_frame(req.input) {
        body["first_frame_image"] = json!(url);
    }
    Ok(body)
}

/// fal's request: the route's upstream is the model's family (`fal-ai/minimax/hailuo-2.3/pro`),
/// under which the task picks `/text-to-video` or `/image-to-video`.
pub fn fal(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    let mut body = json!({
        "prompt": prompt(req.input),
        "prompt_optimizer": true,
    });
    let task = match first_frame(req.input) {
        Some(url) => {
            body["image_url"] = json!(url);
            "image-to-video"
        }
        None => "text-to-video",
    };
    Ok(FalRequest {
        path: format!("{}/{task}", req.route.upstream.trim_end_matches('/')),
        body,
    })
}

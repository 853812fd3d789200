//! The kling family's mappings (see `native/mod.rs`): Kling 3.0 on Kling's own API and on fal.
//!
//! Runbase's input: `prompt`, `aspect_ratio`, `mode` (`std`, `pro`, `4K`), `duration` (a number
//! of seconds) and `image_urls` (the first frame, then optionally the last). Both APIs take the
//! duration as a string of whole seconds, and the frames as image URLs.

use super::FalRequest;
use runbase_domain::provider::{ProviderError, RunRequest};
use serde_json::{Map, Value, json};

/// What to send to Kling's API: the path (`/v1/videos/text2video` or `/v1/videos/image2video`;
/// the task is read back from the same path plus its id) and the body.
#[derive(Debug, Clone, PartialEq)]
pub struct KlingRequest {
    pub path: &'static str,
    pub body: Value,
}

fn frames(input: &Value) -> Vec<&str> {
    input
        .get("image_urls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .take(2)
        .collect()
}

/// Whole seconds as the APIs' string enum (`5` → `"5"`).
fn seconds(input: &Value) -> Result<String, ProviderError> {
    match input.get("duration") {
        None => Ok("5".into()),
        Some(v) => match v.as_f64() {
            Some(s) if s.fract() == 0.0 && (1.0..=60.0).contains(&s) => Ok(format!("{s:.0}")),
            _ => Err(ProviderError::new(
                "invalid_input",
                format!("unsupported duration {v}"),
            )),
        },
    }
}

fn mode(input: &Value) -> Result<&'static str, ProviderError> {
    match input.get("mode").and_then(Value::as_str).unwrap_or("std") {
        "std" => Ok("std"),
        "pro" => Ok("pro"),
        "4K" | "4k" => Ok("4k"),
        other => Err(ProviderError::new(
            "invalid_input",
            format!("unsupported mode {other:?}"),
        )),
    }
}

fn prompt(input: &Value) -> &str {
    input.get("prompt").and_then(Value::as_str).unwrap_or("")
}

/// Kling's own request for a model of this family (mapping `kling`).
pub fn kling(req: &RunRequest<'_>) -> Result<KlingRequest, ProviderError> {
    match super::mapping(req) {
        Some("kling") => {}
        other => return Err(super::unknown("kling", other.unwrap_or_default())),
    }
    let input = req.input;
    let mut body = Map::new();
    body.insert("model_name".into(), json!(req.route.upstream));
    body.insert("prompt".into(), json!(prompt(input)));
    body.insert("mode".into(), json!(mode(input)?));
    body.insert("duration".into(), json!(seconds(input)?));
    // The catalogue's tags promise no audio; Kling's own default is off too, but say so.
    body.insert("sound".into(), json!("off"));
    let frames = frames(input);
    let path = match frames.as_slice() {
        [] => {
            if let Some(r) = input.get("aspect_ratio").and_then(Value::as_str) {
                body.insert("aspect_ratio".into(), json!(r));
            }
            "/v1/videos/text2video"
        }
        // Image to video follows the first frame's shape; it takes no aspect ratio.
        [first, rest @ ..] => {
            body.insert("image".into(), json!(first));
            if let Some(last) = rest.first() {
                body.insert("image_tail".into(), json!(last));
            }
            "/v1/videos/image2video"
        }
    };
    Ok(KlingRequest {
        path,
        body: Value::Object(body),
    })
}

/// fal's request for a model of this family. The route's upstream is fal's model family
/// (`fal-ai/kling-video/v3`); the mode and the task pick the endpoint under it
/// (`/standard/text-to-video`, `/pro/image-to-video`, `/4k/...`).
pub fn fal(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    let input = req.input;
    let tier = match mode(input)? {
        "std" => "standard",
        "pro" => "pro",
        _ => "4k",
    };
    let mut body = Map::new();
    body.insert("prompt".into(), json!(prompt(input)));
    body.insert("duration".into(), json!(seconds(input)?));
    body.insert("generate_audio".into(), json!(false));
    let frames = frames(input);
    let task = match frames.as_slice() {
        [] => {
            if let Some(r) = input.get("aspect_ratio").and_then(Value::as_str) {
                body.insert("aspect_ratio".into(), json!(r));
            }
            "text-to-video"
        }
        [first, rest @ ..] => {
            body.insert("start_image_url".into(), json!(first));
            if let Some(last) = rest.first() {
                body.insert("end_image_url".into(), json!(last));
            }
            "image-to-video"
        }
    };
    Ok(FalRequest {
        path: format!(
            "{}/{tier}/{task}",
            req.route.upstream.trim_end_matches('/')
        ),
        body: Value::Object(body),
    })
}

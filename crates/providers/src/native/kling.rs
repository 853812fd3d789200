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
        path: format!("{}/{tier}/{task}", req.route.upstream.trim_end_matches('/')),
        body: Value::Object(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_req<T>(route: usize, input: Value, f: impl Fn(&RunRequest<'_>) -> T) -> T {
        crate::native::test_support::with_req("kling/kling-3.0", route, input, f)
    }

    const KLING: usize = 0;
    const FAL: usize = 1;

    #[test]
    fn text_to_video_on_kling_takes_mode_ratio_and_seconds_as_a_string() {
        let r = with_req(
            KLING,
            json!({"prompt": "a fox", "aspect_ratio": "9:16", "mode": "pro", "duration": 10}),
            kling,
        )
        .unwrap();
        assert_eq!(r.path, "/v1/videos/text2video");
        assert_eq!(
            r.body,
            json!({"model_name": "kling-v3", "prompt": "a fox", "mode": "pro", "duration": "10",
                   "sound": "off", "aspect_ratio": "9:16"})
        );
        for (mode, native) in [("std", "std"), ("pro", "pro"), ("4K", "4k")] {
            let r = with_req(
                KLING,
                json!({"prompt": "p", "aspect_ratio": "16:9", "mode": mode, "duration": 5}),
                kling,
            )
            .unwrap();
            assert_eq!(r.body["mode"], native);
            assert_eq!(r.body["duration"], "5");
        }
    }

    #[test]
    fn frames_go_to_image_to_video_without_a_ratio() {
        let r = with_req(
            KLING,
            json!({"prompt": "p", "aspect_ratio": "16:9", "mode": "std", "duration": 3,
                   "image_urls": ["https://a.example/1.png", "https://a.example/2.png"]}),
            kling,
        )
        .unwrap();
        assert_eq!(r.path, "/v1/videos/image2video");
        assert_eq!(
            r.body,
            json!({"model_name": "kling-v3", "prompt": "p", "mode": "std", "duration": "3", "sound": "off",
                   "image": "https://a.example/1.png", "image_tail": "https://a.example/2.png"})
        );
    }

    #[test]
    fn fal_picks_the_endpoint_by_mode_and_task() {
        for (mode, tier) in [("std", "standard"), ("pro", "pro"), ("4K", "4k")] {
            let r = with_req(
                FAL,
                json!({"prompt": "a fox", "aspect_ratio": "1:1", "mode": mode, "duration": 15}),
                fal,
            )
            .unwrap();
            assert_eq!(
                r.path,
                format!("fal-ai/kling-video/v3/{tier}/text-to-video")
            );
            assert_eq!(
                r.body,
                json!({"prompt": "a fox", "duration": "15", "generate_audio": false, "aspect_ratio": "1:1"})
            );
        }
        let r = with_req(
            FAL,
            json!({"prompt": "p", "aspect_ratio": "16:9", "mode": "pro", "duration": 5,
                   "image_urls": ["https://a.example/1.png"]}),
            fal,
        )
        .unwrap();
        assert_eq!(r.path, "fal-ai/kling-video/v3/pro/image-to-video");
        assert_eq!(
            r.body,
            json!({"prompt": "p", "duration": "5", "generate_audio": false, "start_image_url": "https://a.example/1.png"})
        );
    }

    #[test]
    fn fractional_durations_and_unknown_modes_are_refused() {
        let e = with_req(KLING, json!({"prompt": "p", "duration": 5.5}), kling).unwrap_err();
        assert_eq!(e.code, "invalid_input");
        let e = with_req(FAL, json!({"prompt": "p", "mode": "8K"}), fal).unwrap_err();
        assert_eq!(e.code, "invalid_input");
    }
}

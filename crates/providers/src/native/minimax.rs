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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_req<T>(route: usize, input: Value, f: impl Fn(&RunRequest<'_>) -> T) -> T {
        crate::native::test_support::with_req("hailuo/pro", route, input, f)
    }

    #[test]
    fn minimax_gets_the_pro_tier_and_the_first_frame() {
        assert_eq!(
            with_req(0, json!({"prompt": "a fox"}), minimax).unwrap(),
            json!({"model": "MiniMax-Hailuo-2.3", "prompt": "a fox", "duration": 6,
                   "resolution": "1080P", "prompt_optimizer": true})
        );
        assert_eq!(
            with_req(
                0,
                json!({"prompt": "p", "image_urls": ["https://a.example/1.png"]}),
                minimax
            )
            .unwrap()["first_frame_image"],
            "https://a.example/1.png"
        );
    }

    #[test]
    fn fal_picks_text_or_image_to_video() {
        let r = with_req(1, json!({"prompt": "a fox"}), fal).unwrap();
        assert_eq!(r.path, "fal-ai/minimax/hailuo-2.3/pro/text-to-video");
        assert_eq!(r.body, json!({"prompt": "a fox", "prompt_optimizer": true}));
        let r = with_req(
            1,
            json!({"prompt": "p", "image_urls": ["https://a.example/1.png"]}),
            fal,
        )
        .unwrap();
        assert_eq!(r.path, "fal-ai/minimax/hailuo-2.3/pro/image-to-video");
        assert_eq!(
            r.body,
            json!({"prompt": "p", "prompt_optimizer": true, "image_url": "https://a.example/1.png"})
        );
    }
}

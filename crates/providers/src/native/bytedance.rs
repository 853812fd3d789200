//! The bytedance family's mappings (see `native/mod.rs`): Seedream (images) and Seedance
//! (video), on BytePlus ModelArk and on fal.
//!
//! Seedream takes `aspect_ratio` and `quality` (`basic` or `high`), which both APIs want as
//! one pixel size: `basic` is the 2K class, `high` the class the route's `high` option names
//! (`4K` for Seedream 4.5, `3K` for 5.0 Lite). Seedance takes `duration` as a string (`"5"`),
//! which both APIs want as a number of seconds (ModelArk) or their own string enum (fal).

use super::FalRequest;
use runbase_domain::provider::{ProviderError, RunRequest};
use serde_json::{Map, Value, json};

/// What to send to ModelArk: the endpoint (under the API's `/api/v3` base) and the body.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelArkRequest {
    pub endpoint: ModelArkEndpoint,
    pub body: Value,
}

/// ModelArk's two generation APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelArkEndpoint {
    /// `POST /images/generations`: synchronous, answers the image URLs.
    Images,
    /// `POST /contents/generations/tasks`: a task to poll.
    VideoTasks,
}

/// Recommended pixel sizes per size class and aspect ratio (BytePlus's Seedream size tables;
/// every size is inside the models' pixel-count range).
/// Aspect ratio → (width, height), for one size class.
type SizeTable = &'static [(&'static str, (u32, u32))];

const SIZES: &[(&str, SizeTable)] = &[
    (
        "2K",
        &[
            ("1:1", (2048, 2048)),
            ("4:3", (2304, 1728)),
            ("3:4", (1728, 2304)),
            ("16:9", (2848, 1600)),
            ("9:16", (1600, 2848)),
            ("3:2", (2496, 1664)),
            ("2:3", (1664, 2496)),
            ("21:9", (3136, 1344)),
        ],
    ),
    (
        "3K",
        &[
            ("1:1", (3072, 3072)),
            ("4:3", (3456, 2592)),
            ("3:4", (2592, 3456)),
            ("16:9", (4096, 2304)),
            ("9:16", (2304, 4096)),
            ("3:2", (3744, 2496)),
            ("2:3", (2496, 3744)),
            ("21:9", (4704, 2016)),
        ],
    ),
    (
        "4K",
        &[
            ("1:1", (4096, 4096)),
            ("4:3", (4704, 3520)),
            ("3:4", (3520, 4704)),
            ("16:9", (5504, 3040)),
            ("9:16", (3040, 5504)),
            ("3:2", (4992, 3328)),
            ("2:3", (3328, 4992)),
            ("21:9", (6240, 2656)),
        ],
    ),
];

fn str_field<'a>(input: &'a Value, name: &str) -> Option<&'a str> {
    input.get(name).and_then(Value::as_str)
}

/// The input's `image_urls`, in order.
fn image_urls(input: &Value) -> Vec<&str> {
    input
        .get("image_urls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn bad_input(message: String) -> ProviderError {
    ProviderError::new("invalid_input", message)
}

/// Seedream's pixel size for the input's `aspect_ratio` and `quality`.
fn seedream_size(req: &RunRequest<'_>) -> Result<(u32, u32), ProviderError> {
    let ratio = str_field(req.input, "aspect_ratio").unwrap_or("1:1");
    let class = match str_field(req.input, "quality").unwrap_or("basic") {
        "basic" => "2K",
        "high" => req.route.option("high").unwrap_or("4K"),
        other => return Err(bad_input(format!("unsupported quality {other:?}"))),
    };
    SIZES
        .iter()
        .find(|(c, _)| *c == class)
        .and_then(|(_, sizes)| sizes.iter().find(|(r, _)| *r == ratio))
        .map(|(_, size)| *size)
        .ok_or_else(|| bad_input(format!("unsupported aspect ratio {ratio:?} at {class}")))
}

/// Seedance's duration in seconds, from the input's string (`"5"`).
fn seedance_seconds(input: &Value) -> Result<u64, ProviderError> {
    match input.get("duration") {
        None => Ok(5),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| bad_input(format!("unsupported duration {s:?}"))),
        Some(v) => v
            .as_u64()
            .ok_or_else(|| bad_input(format!("unsupported duration {v}"))),
    }
}

/// ModelArk's request for a model of this family.
pub fn modelark(req: &RunRequest<'_>) -> Result<ModelArkRequest, ProviderError> {
    match super::mapping(req) {
        Some("seedream") => modelark_seedream(req),
        Some("seedance") => modelark_seedance(req),
        other => Err(super::unknown("modelark", other.unwrap_or_default())),
    }
}

fn modelark_seedream(req: &RunRequest<'_>) -> Result<ModelArkRequest, ProviderError> {
    let (w, h) = seedream_size(req)?;
    let mut body = json!({
        "model": req.route.upstream,
        "prompt": str_field(req.input, "prompt").unwrap_or_default(),
        "size": format!("{w}x{h}"),
        "sequential_image_generation": "disabled",
        "response_format": "url",
        "watermark": false,
    });
    let images = image_urls(req.input);
    if !images.is_empty() {
        body["image"] = json!(images);
    }
    Ok(ModelArkRequest {
        endpoint: ModelArkEndpoint::Images,
        body,
    })
}

fn modelark_seedance(req: &RunRequest<'_>) -> Result<ModelArkRequest, ProviderError> {
    let images = image_urls(req.input);
    // Some Seedance models have a separate image-to-video model id (1.0 Lite's `-i2v-`).
    let model = match req.route.option("image_upstream") {
        Some(i2v) if !images.is_empty() => i2v,
        _ => req.route.upstream.as_str(),
    };
    let mut content = vec![json!({
        "type": "text",
        "text": str_field(req.input, "prompt").unwrap_or_default(),
    })];
    for (i, url) in images.iter().take(2).enumerate() {
        content.push(json!({
            "type": "image_url",
            "image_url": { "url": url },
            "role": if i == 0 { "first_frame" } else { "last_frame" },
        }));
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("content".into(), Value::Array(content));
    if let Some(ratio) = str_field(req.input, "aspect_ratio") {
        body.insert("ratio".into(), json!(ratio));
    }
    if let Some(resolution) = str_field(req.input, "resolution") {
        body.insert("resolution".into(), json!(resolution));
    }
    body.insert("duration".into(), json!(seedance_seconds(req.input)?));
    if let Some(audio) = req.input.get("generate_audio").and_then(Value::as_bool) {
        body.insert("generate_audio".into(), json!(audio));
    }
    body.insert("watermark".into(), json!(false));
    Ok(ModelArkRequest {
        endpoint: ModelArkEndpoint::VideoTasks,
        body: Value::Object(body),
    })
}

/// fal's request for a model of this family. The route's upstream is the text-only endpoint
/// (`.../text-to-image`, `.../text-to-video`); with `image_urls` the request goes to the
/// sibling that takes images (`.../edit`, `.../image-to-video`).
pub fn fal(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    match super::mapping(req) {
        Some("seedream") => fal_seedream(req),
        Some("seedance") => fal_seedance(req),
        other => Err(super::unknown("fal", other.unwrap_or_default())),
    }
}

/// The sibling endpoint of `path` whose last segment is `to` instead of `from`.
fn sibling(path: &str, from: &str, to: &str) -> String {
    match path.strip_suffix(from) {
        Some(stem) => format!("{stem}{to}"),
        None => path.to_owned(),
    }
}

fn fal_seedream(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    let (width, height) = seedream_size(req)?;
    let mut body = json!({
        "prompt": str_field(req.input, "prompt").unwrap_or_default(),
        "image_size": { "width": width, "height": height },
        "num_images": 1,
        "max_images": 1,
    });
    let images = image_urls(req.input);
    let path = if images.is_empty() {
        req.route.upstream.clone()
    } else {
        body["image_urls"] = json!(images);
        sibling(&req.route.upstream, "/text-to-image", "/edit")
    };
    Ok(FalRequest { path, body })
}

fn fal_seedance(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    let mut body = Map::new();
    body.insert(
        "prompt".into(),
        json!(str_field(req.input, "prompt").unwrap_or_default()),
    );
    for field in ["aspect_ratio", "resolution"] {
        if let Some(v) = str_field(req.input, field) {
            body.insert(field.into(), json!(v));
        }
    }
    body.insert(
        "duration".into(),
        json!(seedance_seconds(req.input)?.to_string()),
    );
    if let Some(audio) = req.input.get("generate_audio").and_then(Value::as_bool) {
        body.insert("generate_audio".into(), json!(audio));
    }
    let images = image_urls(req.input);
    let path = match images.as_slice() {
        [] => req.route.upstream.clone(),
        [first, rest @ ..] => {
            body.insert("image_url".into(), json!(first));
            if let Some(last) = rest.first() {
                body.insert("end_image_url".into(), json!(last));
            }
            sibling(&req.route.upstream, "/text-to-video", "/image-to-video")
        }
    };
    Ok(FalRequest {
        path,
        body: Value::Object(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbase_domain::catalog::Catalog;

    use crate::native::test_support::with_req;

    const MODELARK: usize = 0;
    const FAL: usize = 1;

    #[test]
    fn seedream_on_modelark_sends_a_pixel_size_and_the_reference_images() {
        let r = with_req(
            "bytedance/seedream-4.5",
            MODELARK,
            json!({"prompt": "a fox", "aspect_ratio": "16:9", "quality": "basic"}),
            modelark,
        )
        .unwrap();
        assert_eq!(r.endpoint, ModelArkEndpoint::Images);
        assert_eq!(
            r.body,
            json!({
                "model": "seedream-4-5-251128",
                "prompt": "a fox",
                "size": "2848x1600",
                "sequential_image_generation": "disabled",
                "response_format": "url",
                "watermark": false
            })
        );
        let r = with_req(
            "bytedance/seedream-4.5",
            MODELARK,
            json!({"prompt": "p", "aspect_ratio": "1:1", "quality": "high",
                   "image_urls": ["https://a.example/1.png", "https://a.example/2.png"]}),
            modelark,
        )
        .unwrap();
        assert_eq!(r.body["size"], "4096x4096");
        assert_eq!(
            r.body["image"],
            json!(["https://a.example/1.png", "https://a.example/2.png"])
        );
        // 5.0 Lite's high quality is its 3K class.
        let r = with_req(
            "bytedance/seedream-5-lite",
            MODELARK,
            json!({"prompt": "p", "aspect_ratio": "9:16", "quality": "high"}),
            modelark,
        )
        .unwrap();
        assert_eq!(r.body["model"], "seedream-5-0-260128");
        assert_eq!(r.body["size"], "2304x4096");
        assert!(r.body.get("image").is_none());
    }

    #[test]
    fn every_seedream_ratio_and_quality_has_a_size_within_the_models_range() {
        for (id, max_pixels) in [
            ("bytedance/seedream-4.5", 4096 * 4096),
            ("bytedance/seedream-5-lite", 10_404_496),
        ] {
            let catalog = Catalog::builtin().unwrap();
            let schema = catalog.get(id).unwrap().input_schema.raw().clone();
            for ratio in schema["properties"]["aspect_ratio"]["enum"]
                .as_array()
                .unwrap()
            {
                for quality in schema["properties"]["quality"]["enum"].as_array().unwrap() {
                    for route in [MODELARK, FAL] {
                        let input =
                            json!({"prompt": "p", "aspect_ratio": ratio, "quality": quality});
                        let (w, h) = with_req(id, route, input, seedream_size).unwrap();
                        let pixels = w * h;
                        assert!(
                            (2560 * 1440..=max_pixels).contains(&pixels),
                            "{id} {ratio} {quality}: {w}x{h}"
                        );
                        let (rw, rh) = ratio.as_str().unwrap().split_once(':').unwrap();
                        let (rw, rh): (f64, f64) = (rw.parse().unwrap(), rh.parse().unwrap());
                        let off = (f64::from(w) / f64::from(h)) / (rw / rh);
                        assert!((0.97..1.03).contains(&off), "{id} {ratio}: {w}x{h}");
                    }
                }
            }
        }
    }

    #[test]
    fn seedream_on_fal_uses_the_edit_endpoint_for_reference_images() {
        let r = with_req(
            "bytedance/seedream-4.5",
            FAL,
            json!({"prompt": "a fox", "aspect_ratio": "3:4", "quality": "high"}),
            fal,
        )
        .unwrap();
        assert_eq!(r.path, "fal-ai/bytedance/seedream/v4.5/text-to-image");
        assert_eq!(
            r.body,
            json!({"prompt": "a fox", "image_size": {"width": 3520, "height": 4704}, "num_images": 1, "max_images": 1})
        );
        let r = with_req(
            "bytedance/seedream-5-lite",
            FAL,
            json!({"prompt": "p", "aspect_ratio": "1:1", "quality": "basic", "image_urls": ["https://a.example/1.png"]}),
            fal,
        )
        .unwrap();
        assert_eq!(r.path, "fal-ai/bytedance/seedream/v5/lite/edit");
        assert_eq!(
            r.body,
            json!({"prompt": "p", "image_size": {"width": 2048, "height": 2048}, "num_images": 1,
                   "max_images": 1, "image_urls": ["https://a.example/1.png"]})
        );
    }

    #[test]
    fn seedance_on_modelark_is_a_task_with_seconds_and_frames() {
        let r = with_req(
            "bytedance/seedance-1-lite",
            MODELARK,
            json!({"prompt": "a fox", "aspect_ratio": "16:9", "resolution": "720p", "duration": "5"}),
            modelark,
        )
        .unwrap();
        assert_eq!(r.endpoint, ModelArkEndpoint::VideoTasks);
        assert_eq!(
            r.body,
            json!({
                "model": "seedance-1-0-lite-t2v-250428",
                "content": [{"type": "text", "text": "a fox"}],
                "ratio": "16:9",
                "resolution": "720p",
                "duration": 5,
                "watermark": false
            })
        );
        // 1.0 Lite animates an image with its own image-to-video model.
        let r = with_req(
            "bytedance/seedance-1-lite",
            MODELARK,
            json!({"prompt": "p", "aspect_ratio": "1:1", "resolution": "480p", "duration": "10",
                   "image_urls": ["https://a.example/1.png"]}),
            modelark,
        )
        .unwrap();
        assert_eq!(r.body["model"], "seedance-1-0-lite-i2v-250428");
        assert_eq!(r.body["duration"], 10);
        assert_eq!(
            r.body["content"][1],
            json!({"type": "image_url", "image_url": {"url": "https://a.example/1.png"}, "role": "first_frame"})
        );
        // Pro keeps its one model id, and takes a last frame.
        let r = with_req(
            "bytedance/seedance-1-pro",
            MODELARK,
            json!({"prompt": "p", "aspect_ratio": "21:9", "resolution": "1080p", "duration": "10",
                   "image_urls": ["https://a.example/1.png", "https://a.example/2.png"]}),
            modelark,
        )
        .unwrap();
        assert_eq!(r.body["model"], "seedance-1-0-pro-250528");
        assert_eq!(r.body["content"][1]["role"], "first_frame");
        assert_eq!(r.body["content"][2]["role"], "last_frame");
        assert_eq!(
            r.body["content"][2]["image_url"]["url"],
            "https://a.example/2.png"
        );
        // 1.5 Pro passes generate_audio, either way.
        for audio in [true, false] {
            let r = with_req(
                "bytedance/seedance-1.5-pro",
                MODELARK,
                json!({"prompt": "p", "aspect_ratio": "9:16", "resolution": "480p", "duration": "12", "generate_audio": audio}),
                modelark,
            )
            .unwrap();
            assert_eq!(
                r.body,
                json!({
                    "model": "seedance-1-5-pro-251215",
                    "content": [{"type": "text", "text": "p"}],
                    "ratio": "9:16",
                    "resolution": "480p",
                    "duration": 12,
                    "generate_audio": audio,
                    "watermark": false
                })
            );
        }
    }

    #[test]
    fn seedance_on_fal_picks_the_image_to_video_endpoint_for_frames() {
        let r = with_req(
            "bytedance/seedance-1-pro",
            FAL,
            json!({"prompt": "a fox", "aspect_ratio": "4:3", "resolution": "1080p", "duration": "5"}),
            fal,
        )
        .unwrap();
        assert_eq!(r.path, "fal-ai/bytedance/seedance/v1/pro/text-to-video");
        assert_eq!(
            r.body,
            json!({"prompt": "a fox", "aspect_ratio": "4:3", "resolution": "1080p", "duration": "5"})
        );
        let r = with_req(
            "bytedance/seedance-1-lite",
            FAL,
            json!({"prompt": "p", "aspect_ratio": "16:9", "resolution": "720p", "duration": "10",
                   "image_urls": ["https://a.example/1.png"]}),
            fal,
        )
        .unwrap();
        assert_eq!(r.path, "fal-ai/bytedance/seedance/v1/lite/image-to-video");
        assert_eq!(
            r.body,
            json!({"prompt": "p", "aspect_ratio": "16:9", "resolution": "720p", "duration": "10",
                   "image_url": "https://a.example/1.png"})
        );
        let r = with_req(
            "bytedance/seedance-1.5-pro",
            FAL,
            json!({"prompt": "p", "aspect_ratio": "16:9", "resolution": "720p", "duration": "8", "generate_audio": true,
                   "image_urls": ["https://a.example/1.png", "https://a.example/2.png"]}),
            fal,
        )
        .unwrap();
        assert_eq!(r.path, "fal-ai/bytedance/seedance/v1.5/pro/image-to-video");
        assert_eq!(
            r.body,
            json!({"prompt": "p", "aspect_ratio": "16:9", "resolution": "720p", "duration": "8", "generate_audio": true,
                   "image_url": "https://a.example/1.png", "end_image_url": "https://a.example/2.png"})
        );
    }

    #[test]
    fn unknown_values_are_refused_not_guessed() {
        let e = with_req(
            "bytedance/seedream-4.5",
            MODELARK,
            json!({"prompt": "p", "aspect_ratio": "5:4", "quality": "basic"}),
            modelark,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_input");
        let e = with_req(
            "bytedance/seedance-1-pro",
            MODELARK,
            json!({"prompt": "p", "duration": "five"}),
            modelark,
        )
        .unwrap_err();
        assert_eq!(e.code, "invalid_input");
    }
}

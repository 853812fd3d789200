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
const SIZES: &[(&str, &[(&str, (u32, u32))])] = &[
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

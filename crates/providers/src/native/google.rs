//! The google family's mappings (see `native/mod.rs`): the Nano Banana image models on the
//! Gemini API's `generateContent` and on fal, and Veo 3.1 Fast on the Gemini API's
//! `predictLongRunning` and on fal.
//!
//! Runbase's input for these models: `prompt`; `aspect_ratio` (`auto` lets the model choose);
//! `resolution` (`1K`/`2K`/`4K` for images, `720p`/`1080p` for Veo); `image_urls` (reference
//! images for Nano Banana; for Veo the first frame, and the last frame when two are given).

use super::FalRequest;
use runbase_domain::provider::{ProviderError, RunRequest};
use serde_json::{Map, Value, json};

/// The length of every Veo clip, in seconds. Runbase's Veo 3.1 Fast takes no duration (as on
/// runbase.net), so each request makes Veo's longest clip, the only length it renders at 1080p.
/// The catalogue's price is this many seconds at the per-second list price.
pub const VEO_SECONDS: u64 = 8;

/// fal's text-to-image endpoints that do not take `aspect_ratio: "auto"` (their `/edit`
/// endpoints do): `auto` is left out there, so fal applies its default.
const FAL_NO_AUTO_RATIO: &[&str] = &["fal-ai/nano-banana"];

/// An image sent inside the request, as the Gemini API takes reference images and frames.
#[derive(Debug, Clone, PartialEq)]
pub struct InlineImage {
    pub mime_type: String,
    /// The bytes, base64 (standard alphabet, padded).
    pub base64: String,
}

fn text<'a>(input: &'a Value, field: &str) -> Option<&'a str> {
    input.get(field).and_then(Value::as_str)
}

/// The `image_urls` of an input, in order.
pub fn image_urls(input: &Value) -> Vec<&str> {
    input
        .get("image_urls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// fal's request for a model of this family.
pub fn fal(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    match super::mapping(req) {
        Some("veo") => Ok(veo_fal(&req.route.upstream, req.input)),
        _ => Ok(nano_banana_fal(&req.route.upstream, req.input)),
    }
}

/// Nano Banana on fal (`fal-ai/nano-banana`, `-2`, `-pro`): the model's endpoint, or its
/// `/edit` endpoint when reference images are given. One PNG per request.
pub fn nano_banana_fal(upstream: &str, input: &Value) -> FalRequest {
    let images = image_urls(input);
    let edit = !images.is_empty();
    let mut body = Map::new();
    body.insert("prompt".into(), json!(text(input, "prompt").unwrap_or("")));
    body.insert("num_images".into(), json!(1));
    body.insert("output_format".into(), json!("png"));
    if let Some(ratio) = text(input, "aspect_ratio")
        && !(ratio == "auto" && !edit && FAL_NO_AUTO_RATIO.contains(&upstream))
    {
        body.insert("aspect_ratio".into(), json!(ratio));
    }
    if let Some(resolution) = text(input, "resolution") {
        body.insert("resolution".into(), json!(resolution));
    }
    let path = if edit {
        body.insert("image_urls".into(), json!(images));
        format!("{upstream}/edit")
    } else {
        upstream.to_owned()
    };
    FalRequest {
        path,
        body: Value::Object(body),
    }
}

/// Veo 3.1 Fast on fal (`fal-ai/veo3.1/fast`): text to video; with one image, its
/// `/image-to-video` endpoint (the first frame); with two, `/first-last-frame-to-video`.
pub fn veo_fal(upstream: &str, input: &Value) -> FalRequest {
    let mut body = Map::new();
    body.insert("prompt".into(), json!(text(input, "prompt").unwrap_or("")));
    for field in ["aspect_ratio", "resolution"] {
        if let Some(v) = text(input, field) {
            body.insert(field.into(), json!(v));
        }
    }
    body.insert("duration".into(), json!(format!("{VEO_SECONDS}s")));
    body.insert("generate_audio".into(), json!(true));
    let path = match image_urls(input).as_slice() {
        [] => upstream.to_owned(),
        [first] => {
            body.insert("image_url".into(), json!(first));
            format!("{upstream}/image-to-video")
        }
        [first, last, ..] => {
            body.insert("first_frame_url".into(), json!(first));
            body.insert("last_frame_url".into(), json!(last));
            format!("{upstream}/first-last-frame-to-video")
        }
    };
    FalRequest {
        path,
        body: Value::Object(body),
    }
}

/// Nano Banana on the Gemini API: the body of `models/{model}:generateContent`. The prompt,
/// then the reference images inline; `imageConfig` carries the aspect ratio (none for `auto`)
/// and the size class.
pub fn nano_banana_gemini(input: &Value, images: &[InlineImage]) -> Value {
    let mut parts = vec![json!({ "text": text(input, "prompt").unwrap_or("") })];
    parts.extend(
        images
            .iter()
            .map(|i| json!({ "inlineData": { "mimeType": i.mime_type, "data": i.base64 } })),
    );
    let mut image_config = Map::new();
    if let Some(ratio) = text(input, "aspect_ratio").filter(|r| *r != "auto") {
        image_config.insert("aspectRatio".into(), json!(ratio));
    }
    if let Some(size) = text(input, "resolution") {
        image_config.insert("imageSize".into(), json!(size));
    }
    let mut generation = json!({ "responseModalities": ["TEXT", "IMAGE"] });
    if !image_config.is_empty() {
        generation["imageConfig"] = Value::Object(image_config);
    }
    json!({
        "contents": [{ "role": "user", "parts": parts }],
        "generationConfig": generation,
    })
}

/// Veo on the Gemini API: the body of `models/{model}:predictLongRunning`. One instance with
/// the prompt, the first frame as `image` and the last as `lastFrame`; the parameters fix the
/// clip's length. Requests with frames may only ask for adults (`allow_adult` is the one value
/// the API takes for image-to-video).
pub fn veo_gemini(input: &Value, frames: &[InlineImage]) -> Value {
    let image =
        |i: &InlineImage| json!({ "bytesBase64Encoded": i.base64, "mimeType": i.mime_type });
    let mut instance = Map::new();
    instance.insert("prompt".into(), json!(text(input, "prompt").unwrap_or("")));
    if let Some(first) = frames.first() {
        instance.insert("image".into(), image(first));
    }
    if let Some(last) = frames.get(1) {
        instance.insert("lastFrame".into(), image(last));
    }
    let mut parameters = Map::new();
    if let Some(ratio) = text(input, "aspect_ratio") {
        parameters.insert("aspectRatio".into(), json!(ratio));
    }
    if let Some(resolution) = text(input, "resolution") {
        parameters.insert("resolution".into(), json!(resolution));
    }
    parameters.insert("durationSeconds".into(), json!(VEO_SECONDS));
    if !frames.is_empty() {
        parameters.insert("personGeneration".into(), json!("allow_adult"));
    }
    json!({ "instances": [instance], "parameters": parameters })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(n: u8) -> InlineImage {
        InlineImage {
            mime_type: "image/png".into(),
            base64: format!("AAA{n}"),
        }
    }

    #[test]
    fn nano_banana_on_fal_uses_the_edit_endpoint_for_reference_images() {
        let input = json!({"prompt": "a cat", "aspect_ratio": "16:9", "resolution": "2K"});
        let r = nano_banana_fal("fal-ai/nano-banana-2", &input);
        assert_eq!(r.path, "fal-ai/nano-banana-2");
        assert_eq!(
            r.body,
            json!({"prompt": "a cat", "num_images": 1, "output_format": "png", "aspect_ratio": "16:9", "resolution": "2K"})
        );
        let input = json!({"prompt": "edit", "aspect_ratio": "auto", "resolution": "4K",
            "image_urls": ["https://x.test/a.png", "https://x.test/b.png"]});
        let r = nano_banana_fal("fal-ai/nano-banana-pro", &input);
        assert_eq!(r.path, "fal-ai/nano-banana-pro/edit");
        assert_eq!(
            r.body,
            json!({"prompt": "edit", "num_images": 1, "output_format": "png", "aspect_ratio": "auto",
                "resolution": "4K", "image_urls": ["https://x.test/a.png", "https://x.test/b.png"]})
        );
    }

    #[test]
    fn auto_is_left_out_where_the_fal_endpoint_does_not_take_it() {
        let input = json!({"prompt": "p", "aspect_ratio": "auto"});
        // fal-ai/nano-banana (text to image) has no `auto`; its /edit has.
        let r = nano_banana_fal("fal-ai/nano-banana", &input);
        assert_eq!(r.path, "fal-ai/nano-banana");
        assert_eq!(
            r.body,
            json!({"prompt": "p", "num_images": 1, "output_format": "png"})
        );
        let input =
            json!({"prompt": "p", "aspect_ratio": "auto", "image_urls": ["https://x.test/a.png"]});
        let r = nano_banana_fal("fal-ai/nano-banana", &input);
        assert_eq!(r.path, "fal-ai/nano-banana/edit");
        assert_eq!(r.body["aspect_ratio"], "auto");
        // Nano Banana 2 and Pro take `auto` for text to image too.
        let input = json!({"prompt": "p", "aspect_ratio": "auto", "resolution": "1K"});
        assert_eq!(
            nano_banana_fal("fal-ai/nano-banana-pro", &input).body["aspect_ratio"],
            "auto"
        );
        let input = json!({"prompt": "p", "aspect_ratio": "3:2"});
        assert_eq!(
            nano_banana_fal("fal-ai/nano-banana", &input).body["aspect_ratio"],
            "3:2"
        );
    }

    #[test]
    fn veo_on_fal_picks_the_endpoint_by_the_number_of_frames() {
        let base = json!({"prompt": "waves", "aspect_ratio": "9:16", "resolution": "1080p"});
        let r = veo_fal("fal-ai/veo3.1/fast", &base);
        assert_eq!(r.path, "fal-ai/veo3.1/fast");
        assert_eq!(
            r.body,
            json!({"prompt": "waves", "aspect_ratio": "9:16", "resolution": "1080p", "duration": "8s", "generate_audio": true})
        );
        let mut one = base.clone();
        one["image_urls"] = json!(["https://x.test/first.png"]);
        let r = veo_fal("fal-ai/veo3.1/fast", &one);
        assert_eq!(r.path, "fal-ai/veo3.1/fast/image-to-video");
        assert_eq!(
            r.body,
            json!({"prompt": "waves", "aspect_ratio": "9:16", "resolution": "1080p", "duration": "8s",
                "generate_audio": true, "image_url": "https://x.test/first.png"})
        );
        let mut two = base.clone();
        two["image_urls"] = json!(["https://x.test/first.png", "https://x.test/last.png"]);
        let r = veo_fal("fal-ai/veo3.1/fast", &two);
        assert_eq!(r.path, "fal-ai/veo3.1/fast/first-last-frame-to-video");
        assert_eq!(
            r.body,
            json!({"prompt": "waves", "aspect_ratio": "9:16", "resolution": "1080p", "duration": "8s",
                "generate_audio": true, "first_frame_url": "https://x.test/first.png",
                "last_frame_url": "https://x.test/last.png"})
        );
    }

    #[test]
    fn nano_banana_on_gemini_sends_images_inline_and_the_image_config() {
        let input = json!({"prompt": "a cat", "aspect_ratio": "21:9", "resolution": "4K"});
        assert_eq!(
            nano_banana_gemini(&input, &[]),
            json!({
                "contents": [{"role": "user", "parts": [{"text": "a cat"}]}],
                "generationConfig": {"responseModalities": ["TEXT", "IMAGE"],
                    "imageConfig": {"aspectRatio": "21:9", "imageSize": "4K"}}
            })
        );
        // `auto` leaves the ratio to the model; a model without resolution sends no size.
        let input = json!({"prompt": "edit", "aspect_ratio": "auto"});
        assert_eq!(
            nano_banana_gemini(&input, &[inline(1), inline(2)]),
            json!({
                "contents": [{"role": "user", "parts": [
                    {"text": "edit"},
                    {"inlineData": {"mimeType": "image/png", "data": "AAA1"}},
                    {"inlineData": {"mimeType": "image/png", "data": "AAA2"}}
                ]}],
                "generationConfig": {"responseModalities": ["TEXT", "IMAGE"]}
            })
        );
        for res in ["1K", "2K", "4K"] {
            let input = json!({"prompt": "p", "aspect_ratio": "1:8", "resolution": res});
            assert_eq!(
                nano_banana_gemini(&input, &[])["generationConfig"]["imageConfig"],
                json!({"aspectRatio": "1:8", "imageSize": res})
            );
        }
    }

    #[test]
    fn veo_on_gemini_maps_frames_ratio_and_resolution() {
        let input = json!({"prompt": "waves", "aspect_ratio": "16:9", "resolution": "720p"});
        assert_eq!(
            veo_gemini(&input, &[]),
            json!({
                "instances": [{"prompt": "waves"}],
                "parameters": {"aspectRatio": "16:9", "resolution": "720p", "durationSeconds": 8}
            })
        );
        let input = json!({"prompt": "waves", "aspect_ratio": "9:16", "resolution": "1080p"});
        assert_eq!(
            veo_gemini(&input, &[inline(1)]),
            json!({
                "instances": [{"prompt": "waves",
                    "image": {"bytesBase64Encoded": "AAA1", "mimeType": "image/png"}}],
                "parameters": {"aspectRatio": "9:16", "resolution": "1080p", "durationSeconds": 8,
                    "personGeneration": "allow_adult"}
            })
        );
        assert_eq!(
            veo_gemini(&input, &[inline(1), inline(2)])["instances"][0],
            json!({"prompt": "waves",
                "image": {"bytesBase64Encoded": "AAA1", "mimeType": "image/png"},
                "lastFrame": {"bytesBase64Encoded": "AAA2", "mimeType": "image/png"}})
        );
    }
}

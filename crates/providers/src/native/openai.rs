//! The openai family's mappings (see `native/mod.rs`): GPT Image 1, 1.5 and 2 on OpenAI's
//! images API and on fal.
//!
//! Runbase's input for these models: `prompt`; `aspect_ratio`; `resolution` (`1K`/`2K`/`4K`,
//! GPT Image 2 only); `quality` (`medium`/`high`, GPT Image 1.5 only); `image_urls` (images to
//! edit or take as references: OpenAI's edits endpoint, fal's `/edit`). OpenAI's own terms are
//! a `size` (`WIDTHxHEIGHT`) and a `quality`.

use super::FalRequest;
use super::google::image_urls;
use runbase_domain::provider::{ProviderError, RunRequest};
use serde_json::{Map, Value, json};

/// The quality asked for when the model's input has no `quality` (GPT Image 1 and 2): a fixed
/// one, so the price of a run is known when it is created (OpenAI's `auto` chooses per image).
pub const DEFAULT_QUALITY: &str = "medium";

/// Pixel budget of each `resolution`: 1K is a 1024×1024 image's area, 2K and 4K those of
/// 2560×1440 and 3840×2160 (the largest size GPT Image 2 supports; past 2560×1440 OpenAI calls
/// sizes experimental).
const BUDGETS: &[(&str, f64)] = &[
    ("1K", 1024.0 * 1024.0),
    ("2K", 2560.0 * 1440.0),
    ("4K", 3840.0 * 2160.0),
];

/// GPT Image 2's longest edge.
const MAX_EDGE: f64 = 3840.0;

fn text<'a>(input: &'a Value, field: &str) -> Option<&'a str> {
    input.get(field).and_then(Value::as_str)
}

/// `w:h` as numbers (1:1 when unreadable).
fn ratio(r: &str) -> (f64, f64) {
    r.split_once(':')
        .and_then(|(w, h)| Some((w.trim().parse::<f64>().ok()?, h.trim().parse::<f64>().ok()?)))
        .filter(|(w, h)| *w > 0.0 && *h > 0.0)
        .unwrap_or((1.0, 1.0))
}

/// OpenAI's `size` for an input. Models with a `resolution` (GPT Image 2, which takes any
/// `WIDTHxHEIGHT` with both sides multiples of 16) get the ratio at that resolution's pixel
/// budget; the others get one of the three sizes GPT Image 1 and 1.5 know (square, landscape
/// 3:2, portrait 2:3).
pub fn size(input: &Value) -> String {
    let (w, h) = ratio(text(input, "aspect_ratio").unwrap_or("1:1"));
    match text(input, "resolution") {
        Some(res) => {
            let budget = BUDGETS
                .iter()
                .find(|(name, _)| *name == res)
                .map_or(BUDGETS[0].1, |(_, b)| *b);
            let mut height = (budget * h / w).sqrt();
            let mut width = height * w / h;
            let longest = width.max(height);
            if longest > MAX_EDGE {
                width *= MAX_EDGE / longest;
                height *= MAX_EDGE / longest;
            }
            // Down to multiples of 16 (the small epsilon keeps exact products exact).
            let sixteen = |x: f64| ((x + 1e-6) / 16.0).floor() as u32 * 16;
            format!("{}x{}", sixteen(width), sixteen(height))
        }
        None if w > h => "1536x1024".into(),
        None if w < h => "1024x1536".into(),
        None => "1024x1024".into(),
    }
}

/// The quality to ask for.
pub fn quality(input: &Value) -> &str {
    text(input, "quality").unwrap_or(DEFAULT_QUALITY)
}

/// OpenAI's images API: `model`, `prompt`, `size`, `quality`, as the JSON body of
/// `images/generations` or the text fields of `images/edits` (whose images the adapter adds
/// as `image[]` files).
pub fn gpt_image(model: &str, input: &Value) -> Map<String, Value> {
    let mut body = Map::new();
    body.insert("model".into(), json!(model));
    body.insert("prompt".into(), json!(text(input, "prompt").unwrap_or("")));
    body.insert("size".into(), json!(size(input)));
    body.insert("quality".into(), json!(quality(input)));
    body
}

/// fal's request for a model of this family.
pub fn fal(req: &RunRequest<'_>) -> Result<FalRequest, ProviderError> {
    Ok(gpt_image_fal(&req.route.upstream, req.input))
}

/// GPT Image on fal (`fal-ai/gpt-image-1.5`): `image_size` and `quality`; with images, its
/// `/edit` endpoint.
pub fn gpt_image_fal(upstream: &str, input: &Value) -> FalRequest {
    let images = image_urls(input);
    let mut body = Map::new();
    body.insert("prompt".into(), json!(text(input, "prompt").unwrap_or("")));
    body.insert("image_size".into(), json!(size(input)));
    body.insert("quality".into(), json!(quality(input)));
    body.insert("num_images".into(), json!(1));
    body.insert("output_format".into(), json!("png"));
    let path = if images.is_empty() {
        upstream.to_owned()
    } else {
        body.insert("image_urls".into(), json!(images));
        format!("{upstream}/edit")
    };
    FalRequest {
        path,
        body: Value::Object(body),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn size_of(ratio: &str, res: Option<&str>) -> String {
        let mut input = json!({"prompt": "p", "aspect_ratio": ratio});
        if let Some(r) = res {
            input["resolution"] = json!(r);
        }
        size(&input)
    }

    #[test]
    fn gpt_image_1_and_1_5_sizes_follow_the_ratio() {
        assert_eq!(size_of("1:1", None), "1024x1024");
        assert_eq!(size_of("3:2", None), "1536x1024");
        assert_eq!(size_of("2:3", None), "1024x1536");
        assert_eq!(size(&json!({"prompt": "p"})), "1024x1024");
    }

    #[test]
    fn gpt_image_2_sizes_fill_the_resolution_in_multiples_of_16() {
        for (ratio, res, want) in [
            ("1:1", "1K", "1024x1024"),
            ("1:1", "2K", "1920x1920"),
            ("1:1", "4K", "2880x2880"),
            ("16:9", "1K", "1360x768"),
            ("16:9", "2K", "2560x1440"),
            ("16:9", "4K", "3840x2160"),
            ("9:16", "4K", "2160x3840"),
            ("3:2", "1K", "1248x832"),
            ("2:3", "2K", "1552x2336"),
            ("4:3", "1K", "1168x880"),
            ("3:4", "4K", "2480x3312"),
            ("4:5", "2K", "1712x2144"),
            ("5:4", "1K", "1136x912"),
            // 21:9 at 4K would be 4399 wide: capped at the longest edge.
            ("21:9", "4K", "3840x1632"),
            ("21:9", "1K", "1552x656"),
        ] {
            let got = size_of(ratio, Some(res));
            assert_eq!(got, want, "{ratio} at {res}");
            let (w, h) = got.split_once('x').unwrap();
            let (w, h): (u32, u32) = (w.parse().unwrap(), h.parse().unwrap());
            assert!(w % 16 == 0 && h % 16 == 0 && w.max(h) <= 3840 && w * h <= 3840 * 2160);
        }
    }

    #[test]
    fn the_images_api_body_carries_size_and_quality() {
        let input = json!({"prompt": "a fox", "aspect_ratio": "3:2", "quality": "high"});
        assert_eq!(
            Value::Object(gpt_image("gpt-image-1.5", &input)),
            json!({"model": "gpt-image-1.5", "prompt": "a fox", "size": "1536x1024", "quality": "high"})
        );
        let input = json!({"prompt": "a fox", "aspect_ratio": "2:3"});
        assert_eq!(
            Value::Object(gpt_image("gpt-image-1", &input)),
            json!({"model": "gpt-image-1", "prompt": "a fox", "size": "1024x1536", "quality": "medium"})
        );
        let input = json!({"prompt": "a fox", "aspect_ratio": "16:9", "resolution": "2K"});
        assert_eq!(
            Value::Object(gpt_image("gpt-image-2", &input)),
            json!({"model": "gpt-image-2", "prompt": "a fox", "size": "2560x1440", "quality": "medium"})
        );
    }

    #[test]
    fn gpt_image_on_fal_uses_edit_for_images() {
        let input = json!({"prompt": "a fox", "aspect_ratio": "1:1", "quality": "medium"});
        let r = gpt_image_fal("fal-ai/gpt-image-1.5", &input);
        assert_eq!(r.path, "fal-ai/gpt-image-1.5");
        assert_eq!(
            r.body,
            json!({"prompt": "a fox", "image_size": "1024x1024", "quality": "medium", "num_images": 1, "output_format": "png"})
        );
        let input = json!({"prompt": "a fox", "aspect_ratio": "2:3", "quality": "high",
            "image_urls": ["https://x.test/a.png"]});
        let r = gpt_image_fal("fal-ai/gpt-image-1.5", &input);
        assert_eq!(r.path, "fal-ai/gpt-image-1.5/edit");
        assert_eq!(
            r.body,
            json!({"prompt": "a fox", "image_size": "1024x1536", "quality": "high", "num_images": 1,
                "output_format": "png", "image_urls": ["https://x.test/a.png"]})
        );
    }
}

//! Test mode: runs of test keys (`sk-test-...`) never reach a provider. The simulator answers
//! for any catalogue model with output shaped by the model's output schema: real placeholder
//! files for media (a PNG or a short MP4 at the requested aspect ratio, a WAV tone) and
//! placeholder values for the other fields. It is free and needs no credentials, so the
//! documented examples work on a fresh install.

use crate::output::{Media, media_of};
use crate::{mp4, placeholder};
use async_trait::async_trait;
use runbase_domain::catalog::Route;
use runbase_domain::provider::{
    FileData, OutputFile, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Frames in a simulated video, spread over its duration: enough to see it move, few enough
/// to keep the uncompressed (I_PCM) file small.
const VIDEO_FRAMES: usize = 4;

pub struct Simulator;

/// The route test runs take.
pub fn route() -> Route {
    Route {
        provider: "simulator".into(),
        upstream: "simulator".into(),
        options: Value::Object(Map::new()),
    }
}

/// `w:h` from the input: `aspect_ratio`, or a `size` like `1536x1024`; square otherwise.
fn ratio_of(input: &Value) -> (u32, u32) {
    if let Some(r) = input.get("aspect_ratio").and_then(Value::as_str)
        && let Some(d) = placeholder::dimensions(r)
    {
        return d;
    }
    if let Some((w, h)) = input
        .get("size")
        .and_then(Value::as_str)
        .and_then(|s| s.split_once('x'))
        && let (Ok(w), Ok(h)) = (w.parse::<u32>(), h.parse::<u32>())
        && w > 0
        && h > 0
    {
        let g = gcd(w, h);
        if let Some(d) = placeholder::dimensions(&format!("{}:{}", w / g, h / g)) {
            return d;
        }
    }
    (512, 512)
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// How many files to make: the input's `n` / `num_images` / `num_outputs`, 1 to 4.
fn count_of(input: &Value) -> usize {
    ["n", "num_images", "num_outputs"]
        .iter()
        .find_map(|f| input.get(*f).and_then(Value::as_u64))
        .unwrap_or(1)
        .clamp(1, 4) as usize
}

/// The requested video length in milliseconds: `duration` in seconds, as a number or a string
/// like `"5"` or `"5s"`; 1 s when absent, at most 60 s. The file size does not depend on it.
fn duration_ms_of(input: &Value) -> u32 {
    let secs = match input.get("duration") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().trim_end_matches('s').trim().parse::<f64>().ok(),
        _ => None,
    };
    match secs {
        Some(s) if s.is_finite() && s > 0.0 => (s.min(60.0) * 1000.0).round().max(1.0) as u32,
        _ => 1000,
    }
}

/// A short MP4 for `prompt` at the ratio `w:h`: the diagonal gradient between two colours of
/// the prompt's hash, as in the placeholder images, with bands that slide from frame to frame.
/// A `resolution` input is not followed: the frames stay small (see `mp4::frame_size`).
fn video(prompt: &str, (w, h): (u32, u32), duration_ms: u32) -> Vec<u8> {
    let (w, h) = mp4::frame_size(w, h);
    let d = Sha256::digest(prompt.as_bytes());
    let (c1, c2) = ([d[0], d[1], d[2]], [d[3], d[4], d[5]]);
    let period = 8 + u32::from(d[6] % 24);
    let span = (w + h - 2).max(1);
    mp4::encode(w, h, VIDEO_FRAMES, duration_ms, |frame, x, y| {
        let t = (x + y) * 255 / span;
        let shift = frame as u32 * period / 2;
        let band = ((x + shift) / period + y / period).is_multiple_of(2);
        std::array::from_fn(|ch| {
            let v = (u32::from(c1[ch]) * (255 - t) + u32::from(c2[ch]) * t) / 255;
            (if band { v } else { v * 7 / 8 }) as u8
        })
    })
}

/// A one-second 440 Hz tone, 16-bit mono WAV at 8 kHz.
fn wav_tone() -> Vec<u8> {
    let rate: u32 = 8000;
    let samples: Vec<i16> = (0..rate)
        .map(|i| {
            let t = i as f64 / f64::from(rate);
            ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
        })
        .collect();
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// A placeholder for a field of the output schema.
fn placeholder_value(schema: &Value, model_id: &str) -> Value {
    if let Some(v) = schema.get("default") {
        return v.clone();
    }
    if let Some(first) = schema
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") => Value::String(format!("Simulated output of {model_id} (test mode)")),
        Some("integer") | Some("number") => Value::from(0),
        Some("boolean") => Value::Bool(false),
        Some("array") => Value::Array(Vec::new()),
        Some("object") => Value::Object(Map::new()),
        _ => Value::Null,
    }
}

#[async_trait]
impl Provider for Simulator {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let input = req.input;
        let model = req.model;
        let mut out = ProviderOutput::default();
        let n = count_of(input);
        match media_of(&model.tags) {
            Media::Image => {
                let (w, h) = ratio_of(input);
                let prompt = input
                    .get("prompt")
                    .and_then(Value::as_str)
                    .unwrap_or(&model.id)
                    .to_owned();
                for i in 0..n {
                    let seed = format!("{prompt}#{i}");
                    let bytes =
                        tokio::task::spawn_blocking(move || placeholder::render(&seed, w, h))
                            .await
                            .map_err(|e| {
                                ProviderError::new(
                                    "model_error",
                                    format!("the simulator stopped: {e}"),
                                )
                            })?
                            .map_err(|e| {
                                ProviderError::new(
                                    "model_error",
                                    format!("could not encode the image: {e}"),
                                )
                            })?;
                    out.files.push(OutputFile {
                        name: format!("output-{i}.png"),
                        content_type: "image/png".into(),
                        data: FileData::Bytes(bytes),
                    });
                }
            }
            Media::Video => {
                let ratio = ratio_of(input);
                let duration = duration_ms_of(input);
                let prompt = input
                    .get("prompt")
                    .and_then(Value::as_str)
                    .unwrap_or(&model.id)
                    .to_owned();
                let bytes = tokio::task::spawn_blocking(move || video(&prompt, ratio, duration))
                    .await
                    .map_err(|e| {
                        ProviderError::new("model_error", format!("the simulator stopped: {e}"))
                    })?;
                out.files.push(OutputFile {
                    name: "output-0.mp4".into(),
                    content_type: "video/mp4".into(),
                    data: FileData::Bytes(bytes),
                });
            }
            Media::Audio => out.files.push(OutputFile {
                name: "output-0.wav".into(),
                content_type: "audio/wav".into(),
                data: FileData::Bytes(wav_tone()),
            }),
            Media::None => {}
        }
        // Every required field of the output schema, and `text` when the schema has one.
        let schema = &model.output_schema;
        let props = schema.get("properties").and_then(Value::as_object);
        let mut wanted: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        if props.is_some_and(|p| p.contains_key("text")) && !wanted.iter().any(|w| w == "text") {
            wanted.push("text".into());
        }
        for field in wanted.into_iter().filter(|f| f != "urls") {
            let sub = props
                .and_then(|p| p.get(&field))
                .cloned()
                .unwrap_or(Value::Null);
            out.fields.insert(field, placeholder_value(&sub, &model.id));
        }
        Ok(Submitted::Done(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn media_follow_the_tags() {
        let m = |tags: &[&str]| media_of(&tags.iter().map(|t| t.to_string()).collect::<Vec<_>>());
        assert_eq!(m(&["Text to image", "4K"]), Media::Image);
        assert_eq!(m(&["Image editing", "Reference images"]), Media::Image);
        assert_eq!(
            m(&["Text to video", "Image to video", "1080p"]),
            Media::Video
        );
        assert_eq!(m(&["Image to video", "Text to image"]), Media::Video);
        assert_eq!(m(&["text to speech"]), Media::Audio);
        assert_eq!(m(&["Image to text"]), Media::None);
        assert_eq!(m(&["Text generation", "Multilingual"]), Media::None);
    }

    #[test]
    fn sizes_and_ratios_shape_the_image() {
        assert_eq!(ratio_of(&json!({"aspect_ratio": "16:9"})), (512, 288));
        assert_eq!(ratio_of(&json!({"size": "1536x1024"})), (510, 340));
        assert_eq!(ratio_of(&json!({"aspect_ratio": "auto"})), (512, 512));
        assert_eq!(count_of(&json!({"n": 9})), 4);
    }

    #[test]
    fn videos_follow_the_ratio_and_duration() {
        let size = |input: Value| {
            let mp4 = video("a red fox", ratio_of(&input), duration_ms_of(&input));
            crate::mp4::tests::declared_size(&mp4)
        };
        assert_eq!(size(json!({"aspect_ratio": "16:9"})), (256, 144));
        assert_eq!(size(json!({"aspect_ratio": "9:16"})), (144, 256));
        assert_eq!(size(json!({"aspect_ratio": "21:9"})), (336, 144));
        assert_eq!(size(json!({"size": "1280x720"})), (256, 144));
        assert_eq!(size(json!({})), (144, 144));
        assert_eq!(duration_ms_of(&json!({"duration": 5})), 5000);
        assert_eq!(duration_ms_of(&json!({"duration": "8s"})), 8000);
        assert_eq!(duration_ms_of(&json!({"duration": 600})), 60_000);
        assert_eq!(duration_ms_of(&json!({"duration": "long"})), 1000);
        assert_ne!(
            video("a red fox", (1, 1), 1000),
            video("a blue fox", (1, 1), 1000)
        );
    }

    #[test]
    fn the_tone_is_a_wav() {
        let w = wav_tone();
        assert_eq!(&w[..4], b"RIFF");
        assert_eq!(w.len(), 44 + 16000);
    }
}

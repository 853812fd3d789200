//! Google's Gemini API, for image generation with `generateContent` (the Nano Banana models):
//! `POST {base}/models/{model}:generateContent` with the key in `x-goog-api-key`. Synchronous.
//!
//! Input (Runbase's schema for these models): `prompt`, optional `aspect_ratio` (`auto` leaves
//! it to the model), `resolution` (`1K`/`2K`/`4K`, only for models that take an image size) and
//! `image_urls` (reference images, fetched and sent inline, as the API requires).

use crate::Secret;
use crate::http::{self, decode_base64, extension_for};
use async_trait::async_trait;
use runbase_domain::provider::{
    FileData, OutputFile, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::{Map, Value, json};

pub struct Gemini {
    pub base_url: String,
    pub api_key: Secret,
    pub client: reqwest::Client,
}

const NAME: &str = "Gemini";

/// Reference images sent inline may not exceed this in total (the API's request limit is 20 MB).
const MAX_INLINE_BYTES: usize = 18 << 20;

impl Gemini {
    async fn request_body(&self, req: &RunRequest<'_>) -> Result<Value, ProviderError> {
        let input = req.input;
        let prompt = input.get("prompt").and_then(Value::as_str).unwrap_or("");
        let mut parts = vec![json!({ "text": prompt })];
        let mut inline_total = 0;
        for url in input
            .get("image_urls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let f = http::fetch_user_url(url, MAX_INLINE_BYTES)
                .await
                .map_err(|why| {
                    ProviderError::new(
                        "invalid_input",
                        format!("A reference image could not be fetched ({url}): {why}"),
                    )
                })?;
            inline_total += f.bytes.len();
            if inline_total > MAX_INLINE_BYTES {
                return Err(ProviderError::new(
                    "invalid_input",
                    "The reference images are larger than 18 MB in total",
                ));
            }
            let mime = f
                .content_type
                .filter(|t| t.starts_with("image/"))
                .unwrap_or_else(|| "image/png".into());
            use base64::Engine;
            parts.push(json!({
                "inlineData": {
                    "mimeType": mime,
                    "data": base64::engine::general_purpose::STANDARD.encode(&f.bytes),
                }
            }));
        }
        let mut image_config = Map::new();
        if let Some(ratio) = input
            .get("aspect_ratio")
            .and_then(Value::as_str)
            .filter(|r| *r != "auto")
        {
            image_config.insert("aspectRatio".into(), Value::String(ratio.into()));
        }
        if let Some(size) = input.get("resolution").and_then(Value::as_str) {
            image_config.insert("imageSize".into(), Value::String(size.into()));
        }
        let mut generation = json!({ "responseModalities": ["TEXT", "IMAGE"] });
        if !image_config.is_empty() {
            generation["imageConfig"] = Value::Object(image_config);
        }
        Ok(json!({
            "contents": [{ "role": "user", "parts": parts }],
            "generationConfig": generation,
        }))
    }
}

/// Reads the images (and any text) out of a `generateContent` answer.
fn read_response(v: &Value) -> Result<ProviderOutput, ProviderError> {
    if let Some(reason) = v
        .pointer("/promptFeedback/blockReason")
        .and_then(Value::as_str)
    {
        return Err(ProviderError::new(
            "content_blocked",
            format!("Gemini refused the prompt ({reason})"),
        ));
    }
    let candidate = v
        .pointer("/candidates/0")
        .ok_or_else(|| ProviderError::garbage(NAME, "no candidates"))?;
    let parts = candidate
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = ProviderOutput::default();
    let mut text = String::new();
    for part in parts {
        if let Some(t) = part.get("text").and_then(Value::as_str) {
            // Models that "think" return their thoughts as parts marked `thought`.
            if part.get("thought").and_then(Value::as_bool) != Some(true) {
                text.push_str(t);
            }
        } else if let Some(inline) = part.get("inlineData").or_else(|| part.get("inline_data")) {
            let mime = inline
                .get("mimeType")
                .or_else(|| inline.get("mime_type"))
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            let data = inline
                .get("data")
                .and_then(Value::as_str)
                .and_then(decode_base64)
                .ok_or_else(|| ProviderError::garbage(NAME, "an image part is not base64"))?;
            if part.get("thought").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            let n = out.files.len();
            out.files.push(OutputFile {
                name: format!("output-{n}.{}", extension_for(mime)),
                content_type: mime.to_owned(),
                data: FileData::Bytes(data),
            });
        }
    }
    if out.files.is_empty() {
        let reason = candidate
            .get("finishReason")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let said = if text.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", http::truncate(&text))
        };
        return Err(ProviderError::new(
            match reason {
                "SAFETY"
                | "IMAGE_SAFETY"
                | "PROHIBITED_CONTENT"
                | "BLOCKLIST"
                | "SPII"
                | "IMAGE_PROHIBITED_CONTENT" => "content_blocked",
                _ => "no_output",
            },
            format!("Gemini returned no image (finish reason {reason}){said}"),
        ));
    }
    if !text.trim().is_empty() {
        out.fields.insert("text".into(), Value::String(text));
    }
    Ok(out)
}

#[async_trait]
impl Provider for Gemini {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let body = self.request_body(req).await?;
        let url = format!(
            "{}/models/{}:generateContent",
            self.base_url.trim_end_matches('/'),
            req.route.upstream
        );
        let v = http::send_json(
            NAME,
            self.client
                .post(url)
                .header("x-goog-api-key", self.api_key.expose())
                .json(&body),
        )
        .await?;
        Ok(Submitted::Done(read_response(&v)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_and_imageless_answers_are_final_errors() {
        let e = read_response(&json!({"promptFeedback": {"blockReason": "SAFETY"}})).unwrap_err();
        assert_eq!(e.code, "content_blocked");
        assert!(!e.is_retryable());
        let e = read_response(
            &json!({"candidates": [{"finishReason": "IMAGE_SAFETY", "content": {"parts": []}}]}),
        )
        .unwrap_err();
        assert_eq!(e.code, "content_blocked");
        let e = read_response(&json!({"candidates": []})).unwrap_err();
        assert_eq!(e.code, "upstream_bad_response");
    }

    #[test]
    fn images_and_text_are_read() {
        let out = read_response(&json!({"candidates": [{"content": {"parts": [
            {"text": "Here you go"},
            {"inlineData": {"mimeType": "image/png", "data": "iVBORw=="}}
        ]}, "finishReason": "STOP"}]}))
        .unwrap();
        assert_eq!(out.files.len(), 1);
        assert_eq!(out.files[0].name, "output-0.png");
        assert_eq!(out.fields["text"], "Here you go");
    }
}

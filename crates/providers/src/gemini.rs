//! Google's Gemini API, with the key in `x-goog-api-key`:
//! - images with `generateContent` (the Nano Banana models, mapping `nano-banana`, or a route
//!   without a mapping): `POST {base}/models/{model}:generateContent`, synchronous;
//! - video with `predictLongRunning` (Veo, mapping `veo`; see `gemini/veo.rs`): a job, polled.
//!
//! Input (Runbase's schema for these models, mapped in `native/google.rs`): `prompt`, optional
//! `aspect_ratio` (`auto` leaves it to the model), `resolution` and `image_urls` (reference
//! images or frames, fetched and sent inline, as the API requires).

mod veo;

use crate::Secret;
use crate::http::{self, decode_base64, extension_for};
use crate::native::{self, google::InlineImage};
use async_trait::async_trait;
use runbase_domain::provider::{
    FileData, Job, OutputFile, Progress, Provider, ProviderError, ProviderOutput, RunRequest,
    Submitted,
};
use serde_json::Value;

pub struct Gemini {
    pub base_url: String,
    pub api_key: Secret,
    pub client: reqwest::Client,
    pub inputs: crate::InputFiles,
}

const NAME: &str = "Gemini";

/// Images sent inline may not exceed this in total (the API's request limit is 20 MB).
const MAX_INLINE_BYTES: usize = 18 << 20;

impl Gemini {
    fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    fn post(&self, url: String, body: &Value) -> reqwest::RequestBuilder {
        self.client
            .post(url)
            .header("x-goog-api-key", self.api_key.expose())
            .json(body)
    }

    /// Fetches user-supplied images (SSRF-safe) for sending inline: each at most the model's
    /// `x-max-file-mb` (when it sets one), all together at most what a request may carry.
    async fn fetch_inline(
        &self,
        req: &RunRequest<'_>,
        urls: &[&str],
    ) -> Result<Vec<InlineImage>, ProviderError> {
        use base64::Engine;
        let each = req
            .model
            .input_schema
            .raw()
            .pointer("/properties/image_urls/x-max-file-mb")
            .and_then(Value::as_u64)
            .map_or(MAX_INLINE_BYTES, |mb| (mb as usize) << 20)
            .min(MAX_INLINE_BYTES);
        let mut images = Vec::with_capacity(urls.len());
        let mut total = 0;
        for url in urls {
            let f = self.inputs.fetch(url, each).await.map_err(|why| {
                ProviderError::new(
                    "invalid_input",
                    format!("An input image could not be fetched ({url}): {why}"),
                )
            })?;
            total += f.bytes.len();
            if total > MAX_INLINE_BYTES {
                return Err(ProviderError::new(
                    "invalid_input",
                    "The input images are larger than 18 MB in total",
                ));
            }
            let mime_type = f
                .content_type
                .map(|t| t.split(';').next().unwrap_or("").trim().to_owned())
                .filter(|t| t.starts_with("image/"))
                .unwrap_or_else(|| "image/png".into());
            images.push(InlineImage {
                mime_type,
                base64: base64::engine::general_purpose::STANDARD.encode(&f.bytes),
            });
        }
        Ok(images)
    }

    async fn generate_content(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let urls = native::google::image_urls(req.input);
        let images = self.fetch_inline(req, &urls).await?;
        let body = native::google::nano_banana_gemini(req.input, &images);
        let url = format!(
            "{}/models/{}:generateContent",
            self.base(),
            req.route.upstream
        );
        let v = http::send_json(NAME, self.post(url, &body)).await?;
        Ok(Submitted::Done(read_response(&v)?))
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
        match native::mapping(req) {
            None | Some("nano-banana") => self.generate_content(req).await,
            Some("veo") => veo::submit(self, req).await,
            Some(other) => Err(native::unknown("gemini", other)),
        }
    }

    async fn poll(&self, _req: &RunRequest<'_>, job: &Job) -> Result<Progress, ProviderError> {
        veo::poll(self, job).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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

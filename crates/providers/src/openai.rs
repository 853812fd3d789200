//! OpenAI and OpenAI-compatible servers (vLLM, llama.cpp's server, Ollama, ...): image
//! generation (`POST {base}/images/generations`) and chat completions
//! (`POST {base}/chat/completions`). Both answer synchronously.
//!
//! The route option `endpoint` chooses the API (`images` or `chat`); without it, image
//! categories use `images` and everything else `chat`. Image input is mapped from Runbase's
//! shape when the route names the `gpt-image` mapping (`native/openai.rs`; with `image_urls`,
//! `POST {base}/images/edits` as multipart/form-data, the images as `image[]` files), else
//! passed through (OpenAI's own schema: `prompt`, `size`, `quality`, `n`, `background`,
//! `output_format`); chat input is `prompt` (or `messages`), with optional `system`,
//! `max_tokens`, `temperature`.

use crate::Secret;
use crate::http::{self, decode_base64};
use crate::native;
use crate::output::push_url;
use async_trait::async_trait;
use runbase_domain::provider::{
    FileData, OutputFile, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::{Map, Value, json};

pub struct OpenAi {
    /// The name used in messages (`openai`, or the name of a compatible server).
    pub name: String,
    /// OpenAI itself (not a compatible server): its newer models take `max_completion_tokens`
    /// where compatible servers still take `max_tokens`.
    pub official: bool,
    pub base_url: String,
    pub api_key: Option<Secret>,
    pub client: reqwest::Client,
    pub inputs: crate::InputFiles,
}

impl OpenAi {
    fn post(&self, path: &str, body: &Value) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(format!("{}/{path}", self.base_url.trim_end_matches('/')))
            .json(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key.expose());
        }
        req
    }

    /// Images: with the `gpt-image` mapping, Runbase's input becomes OpenAI's (`size`,
    /// `quality`), sent to `images/generations`, or to `images/edits` with the images fetched
    /// and attached when `image_urls` is given; without a mapping the input is passed through.
    async fn images(&self, req: &RunRequest<'_>) -> Result<ProviderOutput, ProviderError> {
        let v = match native::mapping(req) {
            None => {
                let mut body = req.input.as_object().cloned().unwrap_or_default();
                body.insert("model".into(), Value::String(req.route.upstream.clone()));
                http::send_json(
                    &self.name,
                    self.post("images/generations", &Value::Object(body)),
                )
                .await?
            }
            Some("gpt-image") => {
                let fields = native::openai::gpt_image(&req.route.upstream, req.input);
                let urls = native::google::image_urls(req.input);
                if urls.is_empty() {
                    http::send_json(
                        &self.name,
                        self.post("images/generations", &Value::Object(fields)),
                    )
                    .await?
                } else {
                    let images = fetch_images(&self.inputs, req, &urls).await?;
                    let boundary = format!("runbase-{:016x}", rand::random::<u64>());
                    let body = multipart(&boundary, &fields, &images);
                    http::send_json(&self.name, self.post_form("images/edits", &boundary, body))
                        .await?
                }
            }
            Some(other) => return Err(native::unknown(&self.name, other)),
        };
        self.read_images(req, &v)
    }

    fn post_form(&self, path: &str, boundary: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .post(format!("{}/{path}", self.base_url.trim_end_matches('/')))
            .header(
                reqwest::header::CONTENT_TYPE,
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key.expose());
        }
        req
    }

    /// The images of an images API answer (base64, or URLs from compatible servers).
    fn read_images(
        &self,
        req: &RunRequest<'_>,
        v: &Value,
    ) -> Result<ProviderOutput, ProviderError> {
        let format = req
            .input
            .get("output_format")
            .and_then(Value::as_str)
            .unwrap_or("png");
        let content_type = match format {
            "jpeg" | "jpg" => "image/jpeg",
            "webp" => "image/webp",
            _ => "image/png",
        };
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| ProviderError::garbage(&self.name, "no \"data\" array"))?;
        let mut out = ProviderOutput::default();
        for item in data {
            if let Some(b64) = item.get("b64_json").and_then(Value::as_str) {
                let bytes = decode_base64(b64)
                    .ok_or_else(|| ProviderError::garbage(&self.name, "an image is not base64"))?;
                let n = out.files.len();
                out.files.push(OutputFile {
                    name: format!("output-{n}.{}", crate::http::extension_for(content_type)),
                    content_type: content_type.into(),
                    data: FileData::Bytes(bytes),
                });
            } else if let Some(url) = item.get("url").and_then(Value::as_str) {
                push_url(&mut out, url, None);
            } else {
                return Err(ProviderError::garbage(
                    &self.name,
                    "an image has neither b64_json nor url",
                ));
            }
            if let Some(p) = item.get("revised_prompt").and_then(Value::as_str) {
                out.fields
                    .insert("revised_prompt".into(), Value::String(p.to_owned()));
            }
        }
        if out.files.is_empty() {
            return Err(ProviderError::new(
                "no_output",
                format!("{} returned no image", self.name),
            ));
        }
        Ok(out)
    }

    async fn chat(&self, req: &RunRequest<'_>) -> Result<ProviderOutput, ProviderError> {
        let input = req.input;
        let messages = match input.get("messages") {
            Some(m @ Value::Array(_)) => m.clone(),
            _ => {
                let mut messages = Vec::new();
                if let Some(system) = input.get("system").and_then(Value::as_str) {
                    messages.push(json!({"role": "system", "content": system}));
                }
                let prompt = input.get("prompt").and_then(Value::as_str).unwrap_or("");
                messages.push(json!({"role": "user", "content": prompt}));
                Value::Array(messages)
            }
        };
        let mut body = Map::new();
        body.insert("model".into(), Value::String(req.route.upstream.clone()));
        body.insert("messages".into(), messages);
        for field in ["temperature", "top_p", "seed"] {
            if let Some(v) = input.get(field) {
                body.insert(field.into(), v.clone());
            }
        }
        if let Some(v) = input.get("max_tokens") {
            let name = if self.official {
                "max_completion_tokens"
            } else {
                "max_tokens"
            };
            body.insert(name.into(), v.clone());
        }
        let v = http::send_json(
            &self.name,
            self.post("chat/completions", &Value::Object(body)),
        )
        .await?;
        let choice = v
            .pointer("/choices/0")
            .ok_or_else(|| ProviderError::garbage(&self.name, "no choices"))?;
        let text = choice
            .pointer("/message/content")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ProviderError::garbage(&self.name, "the choice has no message content")
            })?;
        let mut out = ProviderOutput::default();
        out.fields
            .insert("text".into(), Value::String(text.to_owned()));
        if let Some(reason) = choice.get("finish_reason").filter(|r| r.is_string()) {
            out.fields.insert("finish_reason".into(), reason.clone());
        }
        if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
            out.fields.insert("usage".into(), usage.clone());
        }
        Ok(out)
    }
}

/// The largest image OpenAI's edits endpoint takes, when the model sets no `x-max-file-mb`.
const MAX_EDIT_IMAGE_BYTES: usize = 50 << 20;

/// All of one edit's images together: they are held in memory and copied into the request
/// body, so one run (refunded when the images are unusable) must not pull in hundreds of MB.
const MAX_EDIT_TOTAL_BYTES: usize = 64 << 20;

/// An image to attach to an edit.
#[derive(Debug)]
struct EditImage {
    content_type: String,
    bytes: Vec<u8>,
}

/// Fetches the user's images (SSRF-safe), each at most the model's `x-max-file-mb`.
async fn fetch_images(
    inputs: &crate::InputFiles,
    req: &RunRequest<'_>,
    urls: &[&str],
) -> Result<Vec<EditImage>, ProviderError> {
    let cap = req
        .model
        .input_schema
        .raw()
        .pointer("/properties/image_urls/x-max-file-mb")
        .and_then(Value::as_u64)
        .map_or(MAX_EDIT_IMAGE_BYTES, |mb| (mb as usize) << 20);
    let mut images = Vec::with_capacity(urls.len());
    let mut total = 0usize;
    for url in urls {
        let left = MAX_EDIT_TOTAL_BYTES.saturating_sub(total);
        if left == 0 {
            return Err(too_much_input());
        }
        let f = inputs.fetch(url, cap.min(left)).await.map_err(|why| {
            ProviderError::new(
                "invalid_input",
                format!("An input image could not be fetched ({url}): {why}"),
            )
        })?;
        let content_type = f
            .content_type
            .map(|t| t.split(';').next().unwrap_or("").trim().to_owned())
            .filter(|t| t.starts_with("image/"))
            .unwrap_or_else(|| "image/png".into());
        total += f.bytes.len();
        if total > MAX_EDIT_TOTAL_BYTES {
            return Err(too_much_input());
        }
        images.push(EditImage {
            content_type,
            bytes: f.bytes,
        });
    }
    Ok(images)
}

fn too_much_input() -> ProviderError {
    ProviderError::new(
        "invalid_input",
        format!(
            "The input images are larger than {} MB in total",
            MAX_EDIT_TOTAL_BYTES >> 20
        ),
    )
}

/// A `multipart/form-data` body: each field as text, then each image as an `image[]` file
/// (OpenAI's name for a list of images).
fn multipart(boundary: &str, fields: &Map<String, Value>, images: &[EditImage]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{text}\r\n"
            )
            .as_bytes(),
        );
    }
    for (i, image) in images.iter().enumerate() {
        let ext = crate::http::extension_for(&image.content_type);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"image-{i}.{ext}\"\r\nContent-Type: {}\r\n\r\n",
                image.content_type
            )
            .as_bytes(),
        );
        body.extend_from_slice(&image.bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// Which OpenAI API a route uses.
fn endpoint(req: &RunRequest<'_>) -> &'static str {
    match req.route.option("endpoint") {
        Some("images") => "images",
        Some(_) => "chat",
        None if crate::output::media_of(&req.model.tags) == crate::output::Media::Image => "images",
        None => "chat",
    }
}

#[async_trait]
impl Provider for OpenAi {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let out = match endpoint(req) {
            "images" => self.images(req).await?,
            _ => self.chat(req).await?,
        };
        Ok(Submitted::Done(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_multipart_with_the_fields_then_the_images() {
        let fields = native::openai::gpt_image(
            "gpt-image-1.5",
            &json!({"prompt": "add a hat", "aspect_ratio": "2:3", "quality": "high"}),
        );
        let images = [
            EditImage {
                content_type: "image/png".into(),
                bytes: b"PNG1".to_vec(),
            },
            EditImage {
                content_type: "image/jpeg".into(),
                bytes: b"JPG2".to_vec(),
            },
        ];
        let body = multipart("XyZ", &fields, &images);
        let want = "--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-image-1.5\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nadd a hat\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"quality\"\r\n\r\nhigh\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"size\"\r\n\r\n1024x1536\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"image-0.png\"\r\nContent-Type: image/png\r\n\r\nPNG1\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"image[]\"; filename=\"image-1.jpg\"\r\nContent-Type: image/jpeg\r\n\r\nJPG2\r\n\
--XyZ--\r\n";
        assert_eq!(String::from_utf8(body).unwrap(), want);
    }
}

//! OpenAI and OpenAI-compatible servers (vLLM, llama.cpp's server, Ollama, ...): image
//! generation (`POST {base}/images/generations`) and chat completions
//! (`POST {base}/chat/completions`). Both answer synchronously.
//!
//! The route option `endpoint` chooses the API (`images` or `chat`); without it, image
//! categories use `images` and everything else `chat`. Image input is passed through (its
//! schema is OpenAI's own: `prompt`, `size`, `quality`, `n`, `background`, `output_format`);
//! chat input is `prompt` (or `messages`), with optional `system`, `max_tokens`, `temperature`.

use crate::Secret;
use crate::http::{self, decode_base64};
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

    async fn images(&self, req: &RunRequest<'_>) -> Result<ProviderOutput, ProviderError> {
        let mut body = req.input.as_object().cloned().unwrap_or_default();
        body.insert("model".into(), Value::String(req.route.upstream.clone()));
        let v = http::send_json(
            &self.name,
            self.post("images/generations", &Value::Object(body)),
        )
        .await?;
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

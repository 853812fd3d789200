//! Models that run inside Runbase, with no network: `echo` and `placeholder-image`.

use crate::placeholder;
use async_trait::async_trait;
use runbase_domain::provider::{
    FileData, OutputFile, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::Value;
use std::time::Duration;

/// The in-process provider.
pub struct Builtin;

pub(crate) fn knows(upstream: &str) -> bool {
    matches!(upstream, "echo" | "placeholder-image")
}

#[async_trait]
impl Provider for Builtin {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let out = match req.route.upstream.as_str() {
            "echo" => echo(req.input).await?,
            "placeholder-image" => placeholder_image(req.input).await?,
            other => {
                return Err(ProviderError::new(
                    "unknown_model",
                    format!("the built-in provider has no model {other}"),
                ));
            }
        };
        Ok(Submitted::Done(out))
    }
}

async fn echo(input: &Value) -> Result<ProviderOutput, ProviderError> {
    // An integer in the schema; JSON Schema counts `1000.0` and `1e3` as integers too.
    let delay = input
        .get("delay_ms")
        .and_then(|v| {
            v.as_u64().or_else(|| {
                v.as_f64()
                    // Whole and within what a u64 holds exactly (the schema bounds it).
                    .filter(|f| f.fract() == 0.0 && (0.0..9.0e15).contains(f))
                    .map(|f| f as u64)
            })
        })
        .unwrap_or(0);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if let Some(message) = input.get("fail").and_then(Value::as_str) {
        return Err(ProviderError::new("model_error", message));
    }
    let mut out = ProviderOutput::default();
    out.fields.insert(
        "text".into(),
        input
            .get("text")
            .cloned()
            .unwrap_or(Value::String(String::new())),
    );
    Ok(out)
}

async fn placeholder_image(input: &Value) -> Result<ProviderOutput, ProviderError> {
    let prompt = input
        .get("prompt")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let ratio = input
        .get("aspect_ratio")
        .and_then(Value::as_str)
        .unwrap_or("1:1");
    let (w, h) = placeholder::dimensions(ratio).ok_or_else(|| {
        ProviderError::new("invalid_input", format!("unsupported aspect ratio {ratio}"))
    })?;
    // PNG encoding is CPU work: keep it off the async worker threads.
    let bytes = tokio::task::spawn_blocking(move || placeholder::render(&prompt, w, h))
        .await
        .map_err(|e| ProviderError::new("model_error", format!("the image renderer stopped: {e}")))?
        .map_err(|e| {
            ProviderError::new("model_error", format!("could not encode the image: {e}"))
        })?;
    let mut out = ProviderOutput::default();
    out.files.push(OutputFile {
        name: "output.png".into(),
        content_type: "image/png".into(),
        data: FileData::Bytes(bytes),
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests may unwrap")]

    use super::*;

    #[tokio::test]
    async fn echo_waits_for_a_delay_written_as_a_whole_float() {
        for delay in [
            serde_json::json!(40),
            serde_json::json!(40.0),
            serde_json::json!(4e1),
        ] {
            let started = std::time::Instant::now();
            let out = echo(&serde_json::json!({"text": "hi", "delay_ms": delay}))
                .await
                .unwrap();
            assert!(
                started.elapsed() >= Duration::from_millis(40),
                "{delay}: {:?}",
                started.elapsed()
            );
            assert_eq!(out.fields["text"], "hi");
        }
    }
}

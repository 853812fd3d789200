//! Replicate's predictions API. An official model (`upstream = "owner/name"`) is started with
//! `POST {base}/v1/models/{owner}/{name}/predictions`, a specific version
//! (`upstream = "owner/name:VERSION"`) with `POST {base}/v1/predictions`; then
//! `GET {base}/v1/predictions/{id}` until the status is `succeeded`, `failed` or `canceled`, and
//! `POST {base}/v1/predictions/{id}/cancel` to stop one. The input is passed through: the
//! catalogue's schema is the model's own.
//!
//! Polling and cancelling use URLs built from the configured base, not the URLs in the answer,
//! so the API token is only ever sent to the configured host.

use crate::Secret;
use crate::http;
use crate::output::{from_model_value, model_failure, produces_files};
use async_trait::async_trait;
use runbase_domain::provider::{
    Job, Progress, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::{Value, json};
use std::time::Duration;

pub struct Replicate {
    pub base_url: String,
    pub api_token: Secret,
    pub client: reqwest::Client,
    pub poll_interval: Duration,
}

const NAME: &str = "Replicate";

impl Replicate {
    fn url(&self, path: &str) -> String {
        format!("{}/v1/{path}", self.base_url.trim_end_matches('/'))
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.bearer_auth(self.api_token.expose())
    }
}

/// What a prediction object says.
fn read_prediction(v: &Value, files: bool) -> Result<(String, Progress), ProviderError> {
    let id = v
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::garbage(NAME, "the prediction has no id"))?
        .to_owned();
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::garbage(NAME, "the prediction has no status"))?;
    let progress = match status {
        "starting" | "processing" => Progress::Running,
        "succeeded" => Progress::Done(read_output(v.get("output").unwrap_or(&Value::Null), files)?),
        "failed" => return Err(model_failure(v)),
        "canceled" | "aborted" => {
            return Err(ProviderError::new(
                "upstream_canceled",
                "The prediction was canceled at Replicate",
            ));
        }
        other => {
            return Err(ProviderError::garbage(
                NAME,
                format!("unknown status {other:?}"),
            ));
        }
    };
    Ok((id, progress))
}

fn read_output(output: &Value, files: bool) -> Result<ProviderOutput, ProviderError> {
    let out = from_model_value(output, files);
    if out.files.is_empty() && out.fields.is_empty() {
        return Err(ProviderError::new(
            "no_output",
            "The model succeeded but returned no output",
        ));
    }
    Ok(out)
}

#[async_trait]
impl Provider for Replicate {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let upstream = &req.route.upstream;
        let (url, body) = match upstream.split_once(':') {
            Some((_, version)) => (
                self.url("predictions"),
                json!({ "version": version, "input": req.input }),
            ),
            None => (
                self.url(&format!("models/{upstream}/predictions")),
                json!({ "input": req.input }),
            ),
        };
        let v = http::send_json(NAME, self.auth(self.client.post(url)).json(&body)).await?;
        let (id, progress) = read_prediction(&v, produces_files(&req.model.tags))?;
        Ok(match progress {
            Progress::Done(out) => Submitted::Done(out),
            Progress::Running => Submitted::Started(Job {
                id,
                data: Value::Null,
            }),
        })
    }

    async fn poll(&self, req: &RunRequest<'_>, job: &Job) -> Result<Progress, ProviderError> {
        let url = self.url(&format!("predictions/{}", job.id));
        let v = http::send_json(NAME, self.auth(self.client.get(url))).await?;
        Ok(read_prediction(&v, produces_files(&req.model.tags))?.1)
    }

    async fn cancel(&self, _req: &RunRequest<'_>, job: Option<&Job>) -> Result<(), ProviderError> {
        let Some(job) = job else { return Ok(()) };
        let url = self.url(&format!("predictions/{}/cancel", job.id));
        http::send(NAME, self.auth(self.client.post(url))).await?;
        Ok(())
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_states_are_read() {
        let (id, p) = read_prediction(&json!({"id": "p1", "status": "starting"}), true).unwrap();
        assert_eq!(id, "p1");
        assert!(matches!(p, Progress::Running));
        let (_, p) = read_prediction(
            &json!({"id": "p1", "status": "succeeded", "output": ["https://r/x.png"]}),
            true,
        )
        .unwrap();
        assert!(matches!(p, Progress::Done(o) if o.files.len() == 1));
        let e = read_prediction(
            &json!({"id": "p1", "status": "failed", "error": "CUDA OOM"}),
            true,
        )
        .unwrap_err();
        assert!(e.message.contains("CUDA OOM") && !e.is_retryable());
        assert!(read_prediction(&json!({"status": "succeeded"}), true).is_err());
        assert!(read_prediction(&json!({"id": "p", "status": "weird"}), true).is_err());
    }
}

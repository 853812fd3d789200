//! Cog model servers (the protocol Replicate's models speak): a model packaged with Cog serves
//! `PUT /predictions/{id}`, `POST /predictions/{id}/cancel` and `GET /health-check`. The route
//! option `url` says where the server is; the run id is the prediction id, so a run can be
//! cancelled even while its request is in flight, and a repeated request is idempotent.
//!
//! The prediction is requested synchronously (the answer comes when the model is done); the
//! driver's timeout and cancel wrap it. Without an upload URL, Cog returns file outputs as
//! `data:` URIs, which the driver decodes into Runbase's storage.
//!
//! A Cog server runs as many predictions at once as it has slots (one, unless the model is
//! async) and answers 409 to the next. So runs for one server wait their turn here: the route
//! option `concurrency` (default 1) is how many are sent to it at once. The wait counts
//! towards the model's timeout; a 409 that still happens (another client) is retried.

use crate::http;
use crate::output::{from_model_value, model_failure, produces_files};
use async_trait::async_trait;
use reqwest::StatusCode;
use runbase_domain::provider::{Job, Provider, ProviderError, RunRequest, Submitted};
use serde_json::{Value, json};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct Cog {
    pub client: reqwest::Client,
    /// Free prediction slots per server URL.
    pub slots: dashmap::DashMap<String, Arc<Semaphore>>,
}

impl Cog {
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client,
            slots: dashmap::DashMap::new(),
        }
    }

    fn slots_of(&self, req: &RunRequest<'_>, server: &str) -> Arc<Semaphore> {
        let n = req
            .route
            .options
            .get("concurrency")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, 1024) as usize;
        self.slots
            .entry(server.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(n)))
            .clone()
    }
}

const NAME: &str = "the Cog server";

fn server(req: &RunRequest<'_>) -> Result<String, ProviderError> {
    req.route
        .option("url")
        .map(|u| u.trim_end_matches('/').to_owned())
        .ok_or_else(|| {
            ProviderError::new(
                "model_unavailable",
                format!("the catalogue gives no Cog server url for {}", req.model.id),
            )
        })
}

#[async_trait]
impl Provider for Cog {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let server = server(req)?;
        let slots = self.slots_of(req, &server);
        let _slot = slots
            .acquire_owned()
            .await
            .map_err(|_| ProviderError::new("internal_error", "the Cog slot pool closed"))?;
        let url = format!("{server}/predictions/{}", req.run_id);
        let body = json!({ "id": req.run_id, "input": req.input });
        let resp = self
            .client
            .put(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| http::transport_error(NAME, e))?;
        let status = resp.status();
        if status == StatusCode::CONFLICT {
            // The server runs one prediction at a time and is busy: try again shortly.
            return Err(ProviderError::transient(
                "upstream_busy",
                "The Cog server is busy with another prediction",
            ));
        }
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(http::status_error(NAME, status, &body));
        }
        if status == StatusCode::ACCEPTED {
            // The server already runs a prediction with this id (an earlier attempt whose
            // answer was lost): wait for it to finish rather than fail or run it twice.
            return Err(ProviderError::transient(
                "upstream_busy",
                "The Cog server is still running this prediction",
            ));
        }
        let v = http::read_json(NAME, resp).await?;
        read_prediction(&v, produces_files(&req.model.tags)).map(Submitted::Done)
    }

    async fn cancel(&self, req: &RunRequest<'_>, _job: Option<&Job>) -> Result<(), ProviderError> {
        let url = format!("{}/predictions/{}/cancel", server(req)?, req.run_id);
        match http::send(NAME, self.client.post(url)).await {
            Ok(_) => Ok(()),
            // 404: it already finished (or never started); nothing to stop.
            Err(e) if e.code == "upstream_rejected" => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn read_prediction(
    v: &Value,
    files: bool,
) -> Result<runbase_domain::provider::ProviderOutput, ProviderError> {
    let status = v
        .get("status")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::garbage(NAME, "the prediction has no status"))?;
    match status {
        "succeeded" => {
            let out = from_model_value(v.get("output").unwrap_or(&Value::Null), files);
            if out.files.is_empty() && out.fields.is_empty() {
                return Err(ProviderError::new(
                    "no_output",
                    "The model returned no output",
                ));
            }
            Ok(out)
        }
        "failed" => Err(model_failure(v)),
        "canceled" => Err(ProviderError::new(
            "upstream_canceled",
            "The prediction was canceled by the Cog server",
        )),
        other => Err(ProviderError::garbage(
            NAME,
            format!("unexpected status {other:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictions_are_read() {
        let out = read_prediction(&json!({"status": "succeeded", "output": "hi"}), true).unwrap();
        assert_eq!(out.fields["text"], "hi");
        let e = read_prediction(&json!({"status": "failed", "error": "boom"}), true).unwrap_err();
        assert!(e.message.contains("boom"));
        assert!(read_prediction(&json!({"output": 1}), true).is_err());
    }
}

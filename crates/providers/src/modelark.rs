//! BytePlus ModelArk (ByteDance's Seedream and Seedance), with the API key as a bearer token:
//! - images: `POST {base}/images/generations` answers the image URLs at once;
//! - video: `POST {base}/contents/generations/tasks` answers a task id, read with
//!   `GET {base}/contents/generations/tasks/{id}` until `succeeded` (`content.video_url`),
//!   `failed` (`error.message`), `cancelled` or `expired`; `DELETE` on the same path cancels
//!   a task that has not started.
//!
//! `{base}` is the API root with its version (`https://ark.ap-southeast.bytepluses.com/api/v3`).
//! The input is mapped by `native::bytedance`. Output URLs are on ByteDance's object storage
//! and are downloaded without credentials.

use crate::Secret;
use crate::http;
use crate::native::bytedance::{self, ModelArkEndpoint};
use crate::output::push_url;
use async_trait::async_trait;
use runbase_domain::provider::{
    Job, Progress, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::Value;
use std::time::Duration;

pub struct ModelArk {
    pub base_url: String,
    pub api_key: Secret,
    pub client: reqwest::Client,
    pub poll_interval: Duration,
}

const NAME: &str = "BytePlus ModelArk";

impl ModelArk {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url.trim_end_matches('/'))
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.bearer_auth(self.api_key.expose())
    }

    fn task_url(&self, id: &str) -> String {
        // Task ids are ModelArk's own (`cgt-...`); keep them to one path segment.
        let id: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        self.url(&format!("contents/generations/tasks/{id}"))
    }
}

/// The images of an `images/generations` answer (`data[].url`).
fn read_images(v: &Value) -> Result<ProviderOutput, ProviderError> {
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::garbage(NAME, "the answer has no data"))?;
    let mut out = ProviderOutput::default();
    let mut refused = None;
    for item in data {
        match item.get("url").and_then(Value::as_str) {
            Some(url) if crate::output::is_file_ref(url) => push_url(&mut out, url, None),
            _ => refused = item.pointer("/error/message").and_then(Value::as_str),
        }
    }
    if out.files.is_empty() {
        return Err(crate::output::model_failed(
            refused.or(Some("no image was returned")),
        ));
    }
    Ok(out)
}

/// What a video task says.
fn read_task(v: &Value) -> Result<Progress, ProviderError> {
    match v.get("status").and_then(Value::as_str) {
        Some("queued" | "running") => Ok(Progress::Running),
        Some("succeeded") => {
            let url = v
                .pointer("/content/video_url")
                .and_then(Value::as_str)
                .filter(|u| crate::output::is_file_ref(u))
                .ok_or_else(|| ProviderError::garbage(NAME, "the task has no video_url"))?;
            let mut out = ProviderOutput::default();
            push_url(&mut out, url, Some("video/mp4"));
            Ok(Progress::Done(out))
        }
        Some("failed") => Err(crate::output::model_failed(
            v.pointer("/error/message").and_then(Value::as_str),
        )),
        Some("cancelled") => Err(ProviderError::new(
            "upstream_canceled",
            "The task was canceled at BytePlus ModelArk",
        )),
        Some("expired") => Err(ProviderError::new(
            "timeout",
            "The task expired at BytePlus ModelArk before it ran",
        )),
        other => Err(ProviderError::garbage(
            NAME,
            format!("unknown status {other:?}"),
        )),
    }
}

#[async_trait]
impl Provider for ModelArk {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let native = bytedance::modelark(req)?;
        match native.endpoint {
            ModelArkEndpoint::Images => {
                let post = self.client.post(self.url("images/generations"));
                let v = http::send_json(NAME, self.auth(post).json(&native.body)).await?;
                Ok(Submitted::Done(read_images(&v)?))
            }
            ModelArkEndpoint::VideoTasks => {
                let post = self.client.post(self.url("contents/generations/tasks"));
                let v = http::send_json(NAME, self.auth(post).json(&native.body)).await?;
                let id = v
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| ProviderError::garbage(NAME, "no task id"))?;
                Ok(Submitted::Started(Job {
                    id: id.to_owned(),
                    data: Value::Null,
                }))
            }
        }
    }

    async fn poll(&self, _req: &RunRequest<'_>, job: &Job) -> Result<Progress, ProviderError> {
        let v = http::send_json(NAME, self.auth(self.client.get(self.task_url(&job.id)))).await?;
        read_task(&v)
    }

    async fn cancel(&self, _req: &RunRequest<'_>, job: Option<&Job>) -> Result<(), ProviderError> {
        let Some(job) = job else { return Ok(()) };
        match http::send(NAME, self.auth(self.client.delete(self.task_url(&job.id)))).await {
            Ok(_) => Ok(()),
            // A task that is already running (or finished) cannot be canceled; nothing to do.
            Err(e) if e.code == "upstream_rejected" => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_answers_yield_their_urls_or_the_reason() {
        let out = read_images(&json!({
            "model": "seedream-4-5-251128", "created": 1,
            "data": [{"url": "https://ark.example/a.jpeg", "size": "2048x2048"}],
            "usage": {"generated_images": 1}
        }))
        .unwrap();
        assert_eq!(out.files.len(), 1);
        assert_eq!(out.files[0].name, "output-0.jpeg");
        let e = read_images(&json!({"data": [{"error": {"code": "OutputImageSensitiveContentDetected", "message": "flagged"}}]}))
            .unwrap_err();
        assert!(e.message.contains("flagged") && !e.is_retryable(), "{e:?}");
        assert!(read_images(&json!({"images": []})).is_err());
    }

    #[test]
    fn task_states_are_read() {
        assert!(matches!(
            read_task(&json!({"id": "cgt-1", "status": "queued"})),
            Ok(Progress::Running)
        ));
        assert!(matches!(
            read_task(&json!({"id": "cgt-1", "status": "running"})),
            Ok(Progress::Running)
        ));
        let done =
            read_task(&json!({"status": "succeeded", "content": {"video_url": "https://x/v.mp4"}}));
        assert!(matches!(done, Ok(Progress::Done(o)) if o.files[0].content_type == "video/mp4"));
        let e =
            read_task(&json!({"status": "failed", "error": {"code": "x", "message": "sensitive"}}))
                .unwrap_err();
        assert!(e.message.contains("sensitive") && !e.is_retryable());
        assert_eq!(
            read_task(&json!({"status": "cancelled"})).unwrap_err().code,
            "upstream_canceled"
        );
        assert!(read_task(&json!({"status": "succeeded"})).is_err());
        assert!(read_task(&json!({"status": "odd"})).is_err());
    }
}

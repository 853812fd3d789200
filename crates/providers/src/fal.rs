//! fal's queue API: `POST {base}/{model}` with the input as the body and
//! `Authorization: Key ...` answers a `request_id` with `status_url`, `response_url` and
//! `cancel_url`; the status goes `IN_QUEUE` → `IN_PROGRESS` → `COMPLETED`, then the result is
//! read from `response_url`; `PUT cancel_url` stops a request.
//!
//! The URLs in the answer are followed only when they are on the configured host (the key is
//! never sent elsewhere); otherwise they are built from the base and the model's app id (its
//! first two path segments, as fal does for models with a sub-path).

use crate::Secret;
use crate::http;
use crate::output::push_url;
use async_trait::async_trait;
use runbase_domain::provider::{
    Job, Progress, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::{Value, json};
use std::time::Duration;

pub struct Fal {
    pub base_url: String,
    pub api_key: Secret,
    pub client: reqwest::Client,
    pub poll_interval: Duration,
}

const NAME: &str = "fal";

impl Fal {
    fn base(&self) -> &str {
        self.base_url.trim_end_matches('/')
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header("Authorization", format!("Key {}", self.api_key.expose()))
    }

    /// The URL fal gave, if it is on our host; else the one built from the base.
    fn trusted(&self, given: Option<&str>, built: String) -> String {
        match given {
            Some(u) if same_origin(u, self.base()) => u.to_owned(),
            _ => built,
        }
    }

    fn request_url(&self, job: &Job, which: &str, suffix: &str) -> String {
        let app: Vec<&str> = job
            .data
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .split('/')
            .take(2)
            .collect();
        let built = format!(
            "{}/{}/requests/{}{suffix}",
            self.base(),
            app.join("/"),
            job.id
        );
        self.trusted(job.data.get(which).and_then(Value::as_str), built)
    }
}

fn origin(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find('/').unwrap_or(rest.len());
    Some(&url[..url.len() - rest.len() + end])
}

fn same_origin(a: &str, b: &str) -> bool {
    matches!((origin(a), origin(b)), (Some(x), Some(y)) if x.eq_ignore_ascii_case(y))
}

/// Files in a fal result: every object with a `url` (`images[]`, `image`, `video`, `audio`,
/// ...), with its `content_type` when given. `description` becomes `output.text`.
fn read_result(v: &Value) -> Result<ProviderOutput, ProviderError> {
    let Value::Object(map) = v else {
        return Err(ProviderError::garbage(NAME, "the result is not an object"));
    };
    let mut out = ProviderOutput::default();
    fn walk(v: &Value, out: &mut ProviderOutput, depth: usize) {
        if depth > 4 {
            return;
        }
        match v {
            Value::Object(m) => match m.get("url").and_then(Value::as_str) {
                Some(url) if crate::output::is_file_ref(url) => {
                    push_url(out, url, m.get("content_type").and_then(Value::as_str));
                }
                _ => m.values().for_each(|x| walk(x, out, depth + 1)),
            },
            Value::Array(items) => items.iter().for_each(|x| walk(x, out, depth + 1)),
            _ => {}
        }
    }
    walk(v, &mut out, 0);
    for (field, to) in [
        ("description", "text"),
        ("text", "text"),
        ("output", "text"),
    ] {
        if let Some(t) = map.get(field).and_then(Value::as_str) {
            out.fields.insert(to.into(), Value::String(t.to_owned()));
        }
    }
    if out.files.is_empty() && out.fields.is_empty() {
        return Err(ProviderError::new("no_output", "fal returned no output"));
    }
    Ok(out)
}

#[async_trait]
impl Provider for Fal {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let native = crate::native::fal(req)?;
        let model = &native.path;
        let url = format!("{}/{model}", self.base());
        let v = http::send_json(NAME, self.auth(self.client.post(url)).json(&native.body)).await?;
        let id = v
            .get("request_id")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::garbage(NAME, "no request_id"))?;
        Ok(Submitted::Started(Job {
            id: id.to_owned(),
            data: json!({
                "model": model,
                "status_url": v.get("status_url"),
                "response_url": v.get("response_url"),
                "cancel_url": v.get("cancel_url"),
            }),
        }))
    }

    async fn poll(&self, _req: &RunRequest<'_>, job: &Job) -> Result<Progress, ProviderError> {
        let url = self.request_url(job, "status_url", "/status");
        let v = http::send_json(NAME, self.auth(self.client.get(url))).await?;
        match v.get("status").and_then(Value::as_str) {
            Some("IN_QUEUE" | "IN_PROGRESS") => Ok(Progress::Running),
            Some("COMPLETED") => {
                if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                    let text = err.to_string();
                    return Err(crate::output::model_failed(Some(
                        err.as_str().unwrap_or(&text),
                    )));
                }
                let url = self.request_url(job, "response_url", "");
                let result = http::send(NAME, self.auth(self.client.get(url)))
                    .await
                    .map_err(|e| {
                        // A completed request whose result is an error status is the model's
                        // failure (e.g. a 422 for input it refused), not a transient one.
                        if e.code == "upstream_rejected" {
                            ProviderError::new("model_error", e.message)
                        } else {
                            e
                        }
                    })?;
                let v = http::read_json(NAME, result).await?;
                Ok(Progress::Done(read_result(&v)?))
            }
            other => Err(ProviderError::garbage(
                NAME,
                format!("unknown status {other:?}"),
            )),
        }
    }

    async fn cancel(&self, _req: &RunRequest<'_>, job: Option<&Job>) -> Result<(), ProviderError> {
        let Some(job) = job else { return Ok(()) };
        let url = self.request_url(job, "cancel_url", "/cancel");
        match http::send(NAME, self.auth(self.client.put(url))).await {
            Ok(_) => Ok(()),
            // 400: the request already finished; nothing left to stop.
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

    #[test]
    fn results_yield_their_files() {
        let out = read_result(&json!({
            "images": [{"url": "https://fal.media/a.png", "content_type": "image/png"}],
            "description": "a cat"
        }))
        .unwrap();
        assert_eq!(out.files.len(), 1);
        assert_eq!(out.fields["text"], "a cat");
        let out = read_result(&json!({"video": {"url": "https://fal.media/v.mp4"}})).unwrap();
        assert_eq!(out.files[0].name, "output-0.mp4");
        assert!(read_result(&json!({"seed": 3})).is_err());
        assert!(read_result(&json!([1])).is_err());
    }

    #[test]
    fn only_urls_on_the_configured_host_are_followed() {
        assert!(same_origin(
            "https://queue.fal.run/x/requests/1",
            "https://queue.fal.run"
        ));
        assert!(!same_origin(
            "https://evil.example/queue.fal.run",
            "https://queue.fal.run"
        ));
        assert!(!same_origin(
            "http://queue.fal.run.evil/x",
            "http://queue.fal.run"
        ));
    }
}

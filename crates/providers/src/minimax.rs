//! MiniMax's video generation API (the Hailuo models), with the API key as a bearer token:
//! `POST {base}/v1/video_generation` answers a `task_id`; `GET
//! {base}/v1/query/video_generation?task_id=...` reports `Preparing`, `Queueing`,
//! `Processing`, `Success` (with a `file_id`) or `Fail`; `GET {base}/v1/files/retrieve?
//! file_id=...` gives the file's `download_url`. MiniMax has no cancel call.
//!
//! Every answer carries `base_resp.status_code` (0 is success) and `status_msg`, often with
//! HTTP 200 even for errors: 1002 and 1039 are rate limits, 1000, 1001 and 1013 passing
//! failures, 1004 bad credentials, 1008 an empty account, 1026/1027 refused content.

use crate::Secret;
use crate::http;
use crate::native::minimax;
use crate::output::push_url;
use async_trait::async_trait;
use runbase_domain::provider::{
    Job, Progress, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::Value;
use std::time::Duration;

pub struct MiniMax {
    pub base_url: String,
    pub api_key: Secret,
    pub client: reqwest::Client,
    pub poll_interval: Duration,
}

const NAME: &str = "MiniMax";

impl MiniMax {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }

    /// `GET {base}{path}?{name}={id}`; the id is [`clean`]ed, so it needs no escaping.
    async fn get(&self, path: &str, name: &str, id: &str) -> Result<Value, ProviderError> {
        let url = format!("{}?{name}={}", self.url(path), clean(id));
        let req = self.client.get(url).bearer_auth(self.api_key.expose());
        let v = http::send_json(NAME, req).await?;
        check(&v)?;
        Ok(v)
    }
}

/// The error in `base_resp`, if any.
fn check(v: &Value) -> Result<(), ProviderError> {
    let code = v
        .pointer("/base_resp/status_code")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if code == 0 {
        return Ok(());
    }
    let msg = v
        .pointer("/base_resp/status_msg")
        .and_then(Value::as_str)
        .map(http::truncate)
        .unwrap_or_default();
    Err(match code {
        1002 | 1039 => ProviderError::transient(
            "upstream_rate_limited",
            format!("MiniMax is rate limiting requests ({code}): {msg}"),
        ),
        1000 | 1001 | 1013 => {
            ProviderError::transient("upstream_error", format!("MiniMax failed ({code}): {msg}"))
        }
        1004 => ProviderError::new(
            "upstream_auth",
            "MiniMax refused Runbase's credentials; the operator must check them",
        ),
        1026 | 1027 => ProviderError::new("model_error", format!("The model refused: {msg}")),
        _ => ProviderError::new(
            "upstream_rejected",
            format!("MiniMax rejected the request ({code}): {msg}"),
        ),
    })
}

/// Keeps an id to the characters MiniMax uses (it goes into a query string).
fn clean(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        .collect()
}

fn id_of(v: &Value, field: &str) -> Option<String> {
    match v.get(field)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[async_trait]
impl Provider for MiniMax {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let body = minimax::minimax(req)?;
        let post = self
            .client
            .post(self.url("/v1/video_generation"))
            .bearer_auth(self.api_key.expose())
            .json(&body);
        let v = http::send_json(NAME, post).await?;
        check(&v)?;
        let id = id_of(&v, "task_id").ok_or_else(|| ProviderError::garbage(NAME, "no task_id"))?;
        Ok(Submitted::Started(Job {
            id,
            data: Value::Null,
        }))
    }

    async fn poll(&self, _req: &RunRequest<'_>, job: &Job) -> Result<Progress, ProviderError> {
        let v = self
            .get("/v1/query/video_generation", "task_id", &job.id)
            .await?;
        match v.get("status").and_then(Value::as_str) {
            Some("Preparing" | "Queueing" | "Processing") => Ok(Progress::Running),
            Some("Success") => {
                let file = id_of(&v, "file_id")
                    .ok_or_else(|| ProviderError::garbage(NAME, "the task has no file_id"))?;
                let f = self.get("/v1/files/retrieve", "file_id", &file).await?;
                let url = f
                    .pointer("/file/download_url")
                    .and_then(Value::as_str)
                    .filter(|u| crate::output::is_file_ref(u))
                    .ok_or_else(|| ProviderError::garbage(NAME, "the file has no download_url"))?;
                let mut out = ProviderOutput::default();
                push_url(&mut out, url, Some("video/mp4"));
                Ok(Progress::Done(out))
            }
            Some("Fail") => Err(ProviderError::new(
                "model_error",
                "The model failed to generate the video",
            )),
            other => Err(ProviderError::garbage(
                NAME,
                format!("unknown status {other:?}"),
            )),
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
    fn base_resp_codes_map_to_retryable_or_final_errors() {
        assert!(
            check(
                &json!({"task_id": "1", "base_resp": {"status_code": 0, "status_msg": "success"}})
            )
            .is_ok()
        );
        assert!(check(&json!({"task_id": "1"})).is_ok());
        let rate = check(&json!({"base_resp": {"status_code": 1002, "status_msg": "rate limit"}}))
            .unwrap_err();
        assert!(rate.is_retryable());
        let auth = check(&json!({"base_resp": {"status_code": 1004, "status_msg": "secret"}}))
            .unwrap_err();
        assert!(!auth.is_retryable() && auth.code == "upstream_auth");
        let refused =
            check(&json!({"base_resp": {"status_code": 1026, "status_msg": "sensitive"}}))
                .unwrap_err();
        assert!(!refused.is_retryable() && refused.message.contains("sensitive"));
        assert!(
            !check(&json!({"base_resp": {"status_code": 2013, "status_msg": "bad"}}))
                .unwrap_err()
                .is_retryable()
        );
    }

    #[test]
    fn ids_stay_inside_their_query_parameter() {
        assert_eq!(clean("106916112212032&x=1"), "106916112212032x1");
        assert_eq!(
            id_of(&json!({"file_id": 205258526306433u64}), "file_id").as_deref(),
            Some("205258526306433")
        );
    }
}

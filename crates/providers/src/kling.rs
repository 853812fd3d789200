//! Kling's own API (Kuaishou). Every request carries `Authorization: Bearer <JWT>`, a token
//! signed with HS256 by the secret key, whose issuer (`iss`) is the access key, valid from 5 s
//! ago (`nbf`) for 30 minutes (`exp`); a fresh one is made for each request.
//! `POST {base}/v1/videos/text2video` (or `image2video`) answers `data.task_id`; then
//! `GET {base}/v1/videos/{kind}/{task_id}` until `data.task_status` is `succeed`
//! (`task_result.videos[].url`) or `failed` (`task_status_msg`). Kling has no cancel call.
//! Answers carry `code` (0 is success) and `message`.

use crate::Secret;
use crate::http;
use crate::native::kling;
use crate::output::push_url;
use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use runbase_domain::provider::{
    Job, Progress, Provider, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Kling {
    pub base_url: String,
    pub access_key: Secret,
    pub secret_key: Secret,
    pub client: reqwest::Client,
    pub poll_interval: Duration,
}

const NAME: &str = "Kling";

/// The bearer token for `now` (seconds since the epoch).
pub(crate) fn token(access_key: &str, secret_key: &str, now: u64) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = format!(
        r#"{{"iss":{},"exp":{},"nbf":{}}}"#,
        Value::String(access_key.to_owned()),
        now + 1800,
        now.saturating_sub(5)
    );
    let payload = URL_SAFE_NO_PAD.encode(claims);
    let signing_input = format!("{header}.{payload}");
    // HMAC takes a key of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret_key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

impl Kling {
    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        req.bearer_auth(token(
            self.access_key.expose(),
            self.secret_key.expose(),
            now,
        ))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }
}

/// The `data` of a Kling answer whose `code` is 0.
fn data(v: &Value) -> Result<&Value, ProviderError> {
    match v.get("code").and_then(Value::as_i64) {
        Some(0) => v
            .get("data")
            .ok_or_else(|| ProviderError::garbage(NAME, "the answer has no data")),
        Some(code) => {
            let why = v
                .get("message")
                .and_then(Value::as_str)
                .map(http::truncate)
                .unwrap_or_default();
            Err(ProviderError::new(
                "upstream_rejected",
                format!("Kling rejected the request (code {code}): {why}"),
            ))
        }
        None => Err(ProviderError::garbage(NAME, "the answer has no code")),
    }
}

fn read_task(v: &Value) -> Result<Progress, ProviderError> {
    let d = data(v)?;
    match d.get("task_status").and_then(Value::as_str) {
        Some("submitted" | "processing") => Ok(Progress::Running),
        Some("succeed") => {
            let mut out = ProviderOutput::default();
            for url in d
                .pointer("/task_result/videos")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|v| v.get("url").and_then(Value::as_str))
                .filter(|u| crate::output::is_file_ref(u))
            {
                push_url(&mut out, url, Some("video/mp4"));
            }
            if out.files.is_empty() {
                return Err(ProviderError::garbage(NAME, "the task has no video"));
            }
            Ok(Progress::Done(out))
        }
        Some("failed") => Err(crate::output::model_failed(
            d.get("task_status_msg").and_then(Value::as_str),
        )),
        other => Err(ProviderError::garbage(
            NAME,
            format!("unknown task status {other:?}"),
        )),
    }
}

#[async_trait]
impl Provider for Kling {
    async fn submit(&self, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
        let native = kling::kling(req)?;
        let post = self.client.post(self.url(native.path));
        let v = http::send_json(NAME, self.auth(post).json(&native.body)).await?;
        let id = data(&v)?
            .get("task_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ProviderError::garbage(NAME, "no task_id"))?;
        Ok(Submitted::Started(Job {
            id: id.to_owned(),
            data: json!({ "path": native.path }),
        }))
    }

    async fn poll(&self, _req: &RunRequest<'_>, job: &Job) -> Result<Progress, ProviderError> {
        // Only the two task paths this adapter submits to are followed.
        let path = job
            .data
            .get("path")
            .and_then(Value::as_str)
            .filter(|p| matches!(*p, "/v1/videos/text2video" | "/v1/videos/image2video"))
            .unwrap_or("/v1/videos/text2video");
        let id: String = job
            .id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        let get = self.client.get(self.url(&format!("{path}/{id}")));
        let v = http::send_json(NAME, self.auth(get)).await?;
        read_task(&v)
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_an_hs256_jwt_of_the_access_key() {
        // Cross-checked with Python: hmac.new(b"sk", b"<header>.<payload>", sha256), base64url.
        let t = token("ak-test", "sk-test", 1_700_000_000);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            claims,
            json!({"iss": "ak-test", "exp": 1_700_001_800u64, "nbf": 1_699_999_995u64})
        );
        assert_eq!(parts[2], SIGNATURE);
    }

    const SIGNATURE: &str = "tMljlG8Xy1G8AKj5WkEZRcRIADvbH0FP6wgzpwHAfs4";

    #[test]
    fn task_states_are_read() {
        let running = json!({"code": 0, "message": "SUCCEED", "data": {"task_id": "t1", "task_status": "processing"}});
        assert!(matches!(read_task(&running), Ok(Progress::Running)));
        let done = json!({"code": 0, "data": {"task_id": "t1", "task_status": "succeed",
            "task_result": {"videos": [{"id": "v", "url": "https://kling.example/v.mp4", "duration": "5"}]}}});
        assert!(matches!(read_task(&done), Ok(Progress::Done(o)) if o.files.len() == 1));
        let failed = json!({"code": 0, "data": {"task_status": "failed", "task_status_msg": "risk control"}});
        let e = read_task(&failed).unwrap_err();
        assert!(e.message.contains("risk control") && !e.is_retryable());
        let refused = json!({"code": 1201, "message": "invalid params"});
        assert_eq!(read_task(&refused).unwrap_err().code, "upstream_rejected");
        assert!(read_task(&json!({"data": {}})).is_err());
    }
}

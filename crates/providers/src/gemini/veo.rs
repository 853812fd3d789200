//! Veo on the Gemini API: `POST {base}/models/{model}:predictLongRunning` starts an operation
//! (`{"name": "models/.../operations/..."}`); `GET {base}/{name}` answers `done` and, when
//! finished, `response.generateVideoResponse.generatedSamples[].video.uri` (or an `error`).
//!
//! The video's URI is Google's file API, which wants the API key: the adapter downloads it
//! itself, with the key in a header and only from the configured host, and hands over the
//! bytes. A URI on any other host is handed over as a plain URL, fetched without credentials.

use super::{Gemini, NAME};
use crate::http;
use crate::native;
use runbase_domain::provider::{
    FileData, Job, OutputFile, Progress, ProviderError, ProviderOutput, RunRequest, Submitted,
};
use serde_json::{Value, json};

/// Starts the operation; the job's id is the operation's name.
pub(super) async fn submit(g: &Gemini, req: &RunRequest<'_>) -> Result<Submitted, ProviderError> {
    let urls = native::google::image_urls(req.input);
    let frames = g.fetch_inline(req, &urls[..urls.len().min(2)]).await?;
    let body = native::google::veo_gemini(req.input, &frames);
    let url = format!(
        "{}/models/{}:predictLongRunning",
        g.base(),
        req.route.upstream
    );
    let v = http::send_json(NAME, g.post(url, &body)).await?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| is_operation_name(n))
        .ok_or_else(|| ProviderError::garbage(NAME, "no operation name"))?;
    Ok(Submitted::Started(Job {
        id: name.to_owned(),
        data: json!({ "operation": name }),
    }))
}

/// The name is appended to our base URL, so it must be a plain resource path.
fn is_operation_name(name: &str) -> bool {
    !name.is_empty()
        && name.contains("operations/")
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
}

/// Asks how the operation is doing; downloads the video once it is done.
pub(super) async fn poll(g: &Gemini, job: &Job) -> Result<Progress, ProviderError> {
    if !is_operation_name(&job.id) {
        return Err(ProviderError::garbage(NAME, "an invalid operation name"));
    }
    let url = format!("{}/{}", g.base(), job.id);
    let v = http::send_json(
        NAME,
        g.client
            .get(url)
            .header("x-goog-api-key", g.api_key.expose()),
    )
    .await?;
    if v.get("done").and_then(Value::as_bool) != Some(true) {
        return Ok(Progress::Running);
    }
    let video = finished_video(&v)?;
    let data = match video {
        Video::Bytes(b) => FileData::Bytes(b),
        Video::Uri(uri) => download(g, &uri).await?,
    };
    let mut out = ProviderOutput::default();
    out.files.push(OutputFile {
        name: "output-0.mp4".into(),
        content_type: "video/mp4".into(),
        data,
    });
    Ok(Progress::Done(out))
}

#[derive(Debug, PartialEq)]
enum Video {
    Uri(String),
    Bytes(Vec<u8>),
}

/// The video of a finished operation, or why there is none.
fn finished_video(op: &Value) -> Result<Video, ProviderError> {
    if let Some(err) = op.get("error").filter(|e| !e.is_null()) {
        return Err(crate::output::model_failed(
            err.get("message").and_then(Value::as_str),
        ));
    }
    let response = op
        .pointer("/response/generateVideoResponse")
        .ok_or_else(|| ProviderError::garbage(NAME, "a finished operation has no response"))?;
    let sample = response.pointer("/generatedSamples/0/video");
    if let Some(uri) = sample.and_then(|s| s.get("uri")).and_then(Value::as_str) {
        return Ok(Video::Uri(uri.to_owned()));
    }
    if let Some(data) = sample
        .and_then(|s| s.get("encodedVideo"))
        .and_then(Value::as_str)
    {
        return http::decode_base64(data)
            .map(Video::Bytes)
            .ok_or_else(|| ProviderError::garbage(NAME, "the video is not base64"));
    }
    let reasons: Vec<&str> = response
        .get("raiMediaFilteredReasons")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if reasons.is_empty() {
        return Err(ProviderError::new("no_output", "Veo returned no video"));
    }
    Err(ProviderError::new(
        "content_blocked",
        format!(
            "Veo filtered the video: {}",
            http::truncate(&reasons.join(" "))
        ),
    ))
}

fn origin(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(&url[..url.len() - rest.len() + end])
}

/// The video's bytes when it is on the configured host (fetched with the key), else its URL.
async fn download(g: &Gemini, uri: &str) -> Result<FileData, ProviderError> {
    let ours =
        matches!((origin(uri), origin(g.base())), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b));
    if !ours {
        return Ok(FileData::Url(uri.to_owned()));
    }
    let mut resp = http::send(
        NAME,
        g.client
            .get(uri)
            .header("x-goog-api-key", g.api_key.expose()),
    )
    .await?;
    let mut bytes = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| http::transport_error(NAME, e))?
    {
        if bytes.len() + chunk.len() > http::MAX_FILE_BYTES {
            return Err(ProviderError::new(
                "output_too_large",
                format!(
                    "the video is larger than {} MiB",
                    http::MAX_FILE_BYTES >> 20
                ),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(FileData::Bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_operation_yields_its_video_or_the_reason() {
        let op = json!({"name": "models/veo/operations/1", "done": true, "response": {
            "generateVideoResponse": {"generatedSamples": [{"video": {"uri": "https://g.test/v1beta/files/a:download?alt=media"}}]}}});
        assert_eq!(
            finished_video(&op).unwrap(),
            Video::Uri("https://g.test/v1beta/files/a:download?alt=media".into())
        );
        let op = json!({"done": true, "response": {"generateVideoResponse": {
            "generatedSamples": [{"video": {"encodedVideo": "AAEC", "encoding": "video/mp4"}}]}}});
        assert_eq!(finished_video(&op).unwrap(), Video::Bytes(vec![0, 1, 2]));
        let op = json!({"done": true, "response": {"generateVideoResponse": {
            "raiMediaFilteredCount": 1, "raiMediaFilteredReasons": ["The prompt was blocked."]}}});
        let e = finished_video(&op).unwrap_err();
        assert_eq!(e.code, "content_blocked");
        assert!(!e.is_retryable());
        let op = json!({"done": true, "error": {"code": 3, "message": "Invalid resolution"}});
        let e = finished_video(&op).unwrap_err();
        assert_eq!(e.code, "model_error");
        assert!(e.message.contains("Invalid resolution"), "{}", e.message);
        let e = finished_video(&json!({"done": true})).unwrap_err();
        assert_eq!(e.code, "upstream_bad_response");
    }

    #[test]
    fn operation_names_must_be_plain_paths() {
        assert!(is_operation_name(
            "models/veo-3.1-fast-generate-preview/operations/abc123"
        ));
        assert!(!is_operation_name("https://evil.test/operations/x"));
        assert!(!is_operation_name("models/x/operations/../../files"));
        assert!(!is_operation_name("models/x/operations/a?key=1"));
        assert!(!is_operation_name("models/x"));
    }

    #[test]
    fn only_the_configured_host_is_ours() {
        assert_eq!(
            origin("https://generativelanguage.googleapis.com/v1beta/files/x:download"),
            Some("https://generativelanguage.googleapis.com")
        );
        assert_eq!(origin("http://127.0.0.1:9/x"), Some("http://127.0.0.1:9"));
        assert_eq!(origin("https://a.test?x"), Some("https://a.test"));
        assert_eq!(origin("nope"), None);
    }
}

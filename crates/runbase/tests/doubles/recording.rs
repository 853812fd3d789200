//! Recording doubles of three upstream APIs, for pinning the exact request a Runbase input
//! becomes: fal's queue, the Gemini API (`generateContent`; `predictLongRunning` with its
//! operation and the video download, which wants the key) and OpenAI's images API. Each keeps
//! every request it saw: method, path (with the query), credentials header, JSON body.
//!
//! The Gemini double answers 503 to a submission whose prompt starts with `down:` (to exercise
//! the fallback to fal).

#![allow(dead_code, clippy::unwrap_used, reason = "test support")]

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// One request a double received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, e.g. `/v1beta/files/op-0:download?alt=media`.
    pub path: String,
    /// The credentials header of the protocol (`authorization`, or `x-goog-api-key`).
    pub auth: Option<String>,
    /// The JSON body (`null` when there is none).
    pub body: Value,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Fal,
    Gemini,
    OpenAi,
}

#[derive(Clone)]
struct Ctx {
    kind: Kind,
    base: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

/// A running double.
pub struct Recorder {
    pub url: String,
    seen: Arc<Mutex<Vec<Recorded>>>,
}

/// The bytes of the video the doubles "generate".
pub const VIDEO: &[u8] = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isomrunbase-test-video";

/// A small valid PNG (2×2), the image the doubles "generate".
pub fn png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 2, 2);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[90u8; 2 * 2 * 3]).unwrap();
    w.finish().unwrap();
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The prompt of a submission in any of the three protocols.
fn prompt_of(body: &Value) -> Option<&str> {
    ["/prompt", "/contents/0/parts/0/text", "/instances/0/prompt"]
        .iter()
        .find_map(|p| body.pointer(p).and_then(Value::as_str))
}

impl Recorder {
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().unwrap().clone()
    }

    /// The submissions (POSTs) whose prompt is `prompt`.
    pub fn submissions(&self, prompt: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && prompt_of(&r.body) == Some(prompt))
            .collect()
    }

    /// The one submission whose prompt is `prompt`.
    #[track_caller]
    pub fn submission(&self, prompt: &str) -> Recorded {
        let mut found = self.submissions(prompt);
        assert_eq!(found.len(), 1, "submissions of {prompt:?}: {found:?}");
        found.remove(0)
    }
}

pub async fn fal() -> Recorder {
    serve(Kind::Fal).await
}

pub async fn gemini() -> Recorder {
    serve(Kind::Gemini).await
}

pub async fn openai() -> Recorder {
    serve(Kind::OpenAi).await
}

async fn serve(kind: Kind) -> Recorder {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let ctx = Ctx {
        kind,
        base: url.clone(),
        seen: seen.clone(),
    };
    let app = Router::new().fallback(handle).with_state(ctx);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Recorder { url, seen }
}

async fn handle(
    State(c): State<Ctx>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let auth_name = if c.kind == Kind::Gemini {
        "x-goog-api-key"
    } else {
        "authorization"
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let rec = Recorded {
        method: method.as_str().to_owned(),
        path: path.clone(),
        auth: headers
            .get(auth_name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    };
    let index = {
        let mut seen = c.seen.lock().unwrap();
        seen.push(rec.clone());
        seen.len() - 1
    };
    if c.kind == Kind::Gemini
        && rec.method == "POST"
        && prompt_of(&rec.body).is_some_and(|p| p.starts_with("down:"))
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}})),
        )
            .into_response();
    }
    match c.kind {
        Kind::Fal => fal_answer(&c, &rec, index),
        Kind::Gemini => gemini_answer(&c, &rec, index),
        Kind::OpenAi => openai_answer(&rec),
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response()
}

/// fal: a POST to any model path queues a request (its id is the index of the submission);
/// status is at once `COMPLETED`; the result is a video for Veo paths, else an image.
fn fal_answer(c: &Ctx, rec: &Recorded, index: usize) -> Response {
    let parts: Vec<&str> = rec.path.trim_start_matches('/').split('/').collect();
    match (rec.method.as_str(), parts.as_slice()) {
        ("POST", _) => {
            let app = parts.iter().take(2).copied().collect::<Vec<_>>().join("/");
            let base = format!("{}/{app}/requests/{index}", c.base);
            Json(json!({
                "request_id": index.to_string(),
                "response_url": base,
                "status_url": format!("{base}/status"),
                "cancel_url": format!("{base}/cancel"),
                "queue_position": 0
            }))
            .into_response()
        }
        ("GET", [_, _, "requests", _, "status"]) => {
            Json(json!({"status": "COMPLETED", "logs": null})).into_response()
        }
        ("GET", ["files", "out.png"]) => {
            ([(header::CONTENT_TYPE, "image/png")], png()).into_response()
        }
        ("GET", ["files", "out.mp4"]) => {
            ([(header::CONTENT_TYPE, "video/mp4")], VIDEO).into_response()
        }
        ("GET", [_, _, "requests", id]) => {
            let Some(submitted) = id
                .parse::<usize>()
                .ok()
                .and_then(|i| c.seen.lock().unwrap().get(i).cloned())
            else {
                return not_found();
            };
            if submitted.path.contains("veo") {
                Json(json!({"video": {"url": format!("{}/files/out.mp4", c.base), "content_type": "video/mp4"}}))
                    .into_response()
            } else {
                Json(json!({"images": [{"url": format!("{}/files/out.png", c.base), "content_type": "image/png", "width": 2, "height": 2}]}))
                    .into_response()
            }
        }
        _ => not_found(),
    }
}

/// Gemini: `generateContent` answers an inline PNG; `predictLongRunning` an operation that is
/// done at the first look, whose video is served by the file API to the right key only.
fn gemini_answer(c: &Ctx, rec: &Recorded, index: usize) -> Response {
    let path = rec.path.split('?').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix("/v1beta/") else {
        return not_found();
    };
    if rec.method == "POST" && rest.ends_with(":generateContent") {
        return Json(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Here is your image."},
                {"inlineData": {"mimeType": "image/png", "data": b64(&png())}}
            ]}, "finishReason": "STOP", "index": 0}]
        }))
        .into_response();
    }
    if rec.method == "POST"
        && let Some(model) = rest
            .strip_prefix("models/")
            .and_then(|m| m.strip_suffix(":predictLongRunning"))
    {
        return Json(json!({"name": format!("models/{model}/operations/op-{index}")}))
            .into_response();
    }
    if rec.method == "GET" && rest.contains("/operations/") {
        let op = rest.rsplit('/').next().unwrap_or_default();
        return Json(json!({
            "name": rest, "done": true,
            "response": {
                "@type": "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse",
                "generateVideoResponse": {"generatedSamples": [
                    {"video": {"uri": format!("{}/v1beta/files/{op}:download?alt=media", c.base)}}
                ]}
            }
        }))
        .into_response();
    }
    if rec.method == "GET" && rest.starts_with("files/") {
        if rec.auth.is_none() {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": {"code": 403, "message": "Method doesn't allow unregistered callers.", "status": "PERMISSION_DENIED"}})),
            )
                .into_response();
        }
        return ([(header::CONTENT_TYPE, "video/mp4")], VIDEO).into_response();
    }
    not_found()
}

/// OpenAI: `images/generations` (JSON) and `images/edits` answer one base64 PNG.
fn openai_answer(rec: &Recorded) -> Response {
    match (rec.method.as_str(), rec.path.as_str()) {
        ("POST", "/v1/images/generations" | "/v1/images/edits") => Json(json!({
            "created": 1,
            "data": [{"b64_json": b64(&png())}],
            "usage": {"input_tokens": 5, "output_tokens": 272, "total_tokens": 277}
        }))
        .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": "Invalid URL", "type": "invalid_request_error", "param": null, "code": null}})),
        )
            .into_response(),
    }
}

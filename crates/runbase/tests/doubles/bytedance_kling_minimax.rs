//! Local doubles of BytePlus ModelArk, Kling's API, MiniMax's API and fal's queue, for the
//! ByteDance, Kling and MiniMax models of the default catalogue. Each speaks its API's real
//! protocol over a real socket and records every request it receives (method, path with query,
//! `Authorization`, JSON body), so tests can pin the exact upstream request. A prompt that
//! starts with `slow:` never finishes (for cancels); every other run succeeds, with a file the
//! double serves itself (`/files/out.png` or `/files/out.mp4`).

#![allow(dead_code, clippy::unwrap_used, reason = "test support")]

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One request a double received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// The path with its query string.
    pub path: String,
    pub auth: Option<String>,
    /// The JSON body (`null` when there was none).
    pub body: Value,
}

#[derive(Default)]
struct Log {
    requests: Vec<Recorded>,
    /// Job id → (prompt, canceled).
    jobs: HashMap<String, (String, bool)>,
    /// Job id → the path it was submitted to.
    paths: HashMap<String, String>,
    next: usize,
}

/// A running double.
pub struct Double {
    pub url: String,
    log: Arc<Mutex<Log>>,
}

impl Double {
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().requests.clone()
    }

    /// The requests whose body's prompt (wherever the API puts it) is `prompt`.
    pub fn submitted(&self, prompt: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| prompt_of(&r.body) == Some(prompt))
            .collect()
    }

    pub fn with_method(&self, method: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method)
            .collect()
    }
}

#[derive(Clone)]
struct Ctx {
    base: String,
    log: Arc<Mutex<Log>>,
}

impl Ctx {
    fn record(&self, method: &Method, uri: &Uri, headers: &HeaderMap, body: &Bytes) -> Recorded {
        let r = Recorded {
            method: method.to_string(),
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            auth: headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
        };
        self.log.lock().unwrap().requests.push(r.clone());
        r
    }

    /// A new job for the request `r`, named `{prefix}{n}`.
    fn new_job(&self, prefix: &str, r: &Recorded) -> String {
        let mut log = self.log.lock().unwrap();
        log.next += 1;
        let id = format!("{prefix}{}", log.next);
        let prompt = prompt_of(&r.body).unwrap_or_default().to_owned();
        log.jobs.insert(id.clone(), (prompt, false));
        log.paths.insert(id.clone(), r.path.clone());
        id
    }

    fn path_of(&self, id: &str) -> String {
        self.log
            .lock()
            .unwrap()
            .paths
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// (slow, canceled) for a job; `None` for an unknown id.
    fn job(&self, id: &str) -> Option<(bool, bool)> {
        let log = self.log.lock().unwrap();
        log.jobs
            .get(id)
            .map(|(prompt, canceled)| (prompt.starts_with("slow:"), *canceled))
    }

    fn cancel(&self, id: &str) -> bool {
        let mut log = self.log.lock().unwrap();
        match log.jobs.get_mut(id) {
            Some(job) => {
                job.1 = true;
                true
            }
            None => false,
        }
    }

    fn file(&self, name: &str) -> String {
        format!("{}/files/{name}", self.base)
    }
}

/// The prompt of a request body, for ModelArk's content list as for the flat APIs.
fn prompt_of(body: &Value) -> Option<&str> {
    body.get("prompt")
        .and_then(Value::as_str)
        .or_else(|| body.pointer("/content/0/text").and_then(Value::as_str))
}

/// A tiny PNG (1×1) and a stand-in MP4 header: what the doubles "generate".
fn png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 1, 1);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[10, 20, 30]).unwrap();
    w.finish().unwrap();
    out
}

const MP4: &[u8] = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom";

/// A double's API: the request, and its path split into segments (the query, if any, last,
/// starting with `?`).
type Handler = fn(Ctx, &Recorded, Vec<String>) -> Response;

async fn serve(handler: Handler) -> Double {
    async fn dispatch(
        State((c, handler)): State<(Ctx, Handler)>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        match uri.path() {
            "/files/out.png" => {
                return ([(header::CONTENT_TYPE, "image/png")], png()).into_response();
            }
            "/files/out.mp4" => {
                return ([(header::CONTENT_TYPE, "video/mp4")], MP4).into_response();
            }
            _ => {}
        }
        let r = c.record(&method, &uri, &headers, &body);
        let mut parts: Vec<String> = uri
            .path()
            .trim_start_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect();
        if let Some(q) = uri.query() {
            parts.push(format!("?{q}"));
        }
        handler(c, &r, parts)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log = Arc::new(Mutex::new(Log::default()));
    let ctx = Ctx {
        base: url.clone(),
        log: log.clone(),
    };
    let app = Router::new().fallback(dispatch).with_state((ctx, handler));
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Double { url, log }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": {"code": "NotFound", "message": "not found"}})),
    )
        .into_response()
}

/// The query parameter `name` of a `?a=b&c=d` part.
fn query_param(parts: &[String], name: &str) -> Option<String> {
    let q = parts.last()?.strip_prefix('?')?;
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

// --- BytePlus ModelArk -------------------------------------------------------------------

/// ModelArk under `/api/v3`: `POST images/generations` answers `data[].url`; `POST
/// contents/generations/tasks` answers an `id`, read with `GET .../tasks/{id}` and canceled
/// with `DELETE .../tasks/{id}`; errors as `{"error": {"code", "message"}}`.
pub async fn modelark() -> Double {
    fn handle(c: Ctx, r: &Recorded, parts: Vec<String>) -> Response {
        let body = &r.body;
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        match (r.method.as_str(), p.as_slice()) {
            ("POST", ["api", "v3", "images", "generations"]) => Json(json!({
                "model": body["model"], "created": 1_764_000_000,
                "data": [{"url": c.file("out.png"), "size": body["size"]}],
                "usage": {"generated_images": 1, "output_tokens": 16384, "total_tokens": 16384}
            }))
            .into_response(),
            ("POST", ["api", "v3", "contents", "generations", "tasks"]) => {
                let id = c.new_job("cgt-20261202-", r);
                Json(json!({"id": id})).into_response()
            }
            ("GET", ["api", "v3", "contents", "generations", "tasks", id]) => match c.job(id) {
                None => not_found(),
                Some((_, true)) => Json(json!({"id": id, "status": "cancelled"})).into_response(),
                Some((true, false)) => Json(json!({"id": id, "status": "running"})).into_response(),
                Some((false, false)) => Json(json!({
                    "id": id, "model": "seedance", "status": "succeeded",
                    "content": {"video_url": c.file("out.mp4")},
                    "usage": {"completion_tokens": 108900, "total_tokens": 108900}
                }))
                .into_response(),
            },
            ("DELETE", ["api", "v3", "contents", "generations", "tasks", id]) => {
                if c.cancel(id) {
                    Json(json!({})).into_response()
                } else {
                    not_found()
                }
            }
            _ => not_found(),
        }
    }
    serve(handle).await
}

// --- Kling ---------------------------------------------------------------------------------

/// Kling: `POST /v1/videos/{text2video,image2video}` answers `data.task_id`; `GET
/// /v1/videos/{kind}/{id}` reports `task_status` and `task_result.videos[].url`. Answers carry
/// `code` (0 for success) and `message`; a request without a bearer token is a 401.
pub async fn kling() -> Double {
    fn answer(data: Value) -> Response {
        Json(json!({"code": 0, "message": "SUCCEED", "request_id": "req-1", "data": data}))
            .into_response()
    }
    fn handle(c: Ctx, r: &Recorded, parts: Vec<String>) -> Response {
        let authorized = r
            .auth
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer ") && a.matches('.').count() == 2);
        if !authorized {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"code": 1001, "message": "Authorization is empty", "request_id": "req-1"})),
            )
                .into_response();
        }
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        match (r.method.as_str(), p.as_slice()) {
            ("POST", ["v1", "videos", "text2video" | "image2video"]) => {
                let id = c.new_job("kt-", r);
                answer(
                    json!({"task_id": id, "task_status": "submitted", "created_at": 1, "updated_at": 1}),
                )
            }
            ("GET", ["v1", "videos", "text2video" | "image2video", id]) => match c.job(id) {
                None => (
                    StatusCode::NOT_FOUND,
                    Json(json!({"code": 1203, "message": "task not found"})),
                )
                    .into_response(),
                Some((true, _)) => answer(json!({"task_id": id, "task_status": "processing"})),
                Some((false, _)) => answer(json!({
                    "task_id": id, "task_status": "succeed", "task_status_msg": "",
                    "task_result": {"videos": [{"id": "v1", "url": c.file("out.mp4"), "duration": "5"}]}
                })),
            },
            _ => (
                StatusCode::NOT_FOUND,
                Json(json!({"code": 1203, "message": "no such path"})),
            )
                .into_response(),
        }
    }
    serve(handle).await
}

// --- MiniMax -------------------------------------------------------------------------------

/// MiniMax: `POST /v1/video_generation` answers a `task_id`; `GET
/// /v1/query/video_generation?task_id=` reports the status and, on `Success`, a `file_id`;
/// `GET /v1/files/retrieve?file_id=` gives its `download_url`. Every answer has `base_resp`.
pub async fn minimax() -> Double {
    fn ok(mut v: Value) -> Response {
        v["base_resp"] = json!({"status_code": 0, "status_msg": "success"});
        Json(v).into_response()
    }
    fn handle(c: Ctx, r: &Recorded, parts: Vec<String>) -> Response {
        let p: Vec<&str> = parts
            .iter()
            .map(String::as_str)
            .filter(|s| !s.starts_with('?'))
            .collect();
        match (r.method.as_str(), p.as_slice()) {
            ("POST", ["v1", "video_generation"]) => {
                ok(json!({"task_id": c.new_job("1069161122", r)}))
            }
            ("GET", ["v1", "query", "video_generation"]) => {
                let id = query_param(&parts, "task_id").unwrap_or_default();
                match c.job(&id) {
                    None => ok(json!({"task_id": id, "status": "Fail"})),
                    Some((true, _)) => {
                        ok(json!({"task_id": id, "status": "Processing", "file_id": ""}))
                    }
                    Some((false, _)) => ok(json!({
                        "task_id": id, "status": "Success", "file_id": format!("2052585{}", id.len()),
                        "video_width": 1920, "video_height": 1080
                    })),
                }
            }
            ("GET", ["v1", "files", "retrieve"]) => {
                let file = query_param(&parts, "file_id").unwrap_or_default();
                ok(json!({"file": {
                    "file_id": file, "bytes": MP4.len(), "created_at": 1, "filename": "output.mp4",
                    "purpose": "video_generation", "download_url": c.file("out.mp4")
                }}))
            }
            _ => not_found(),
        }
    }
    serve(handle).await
}

// --- fal ----------------------------------------------------------------------------------

/// fal's queue, recording the endpoint path of each submission: `POST /{app}/{sub...}`
/// answers the request URLs (under `/{owner}/{alias}/requests/{id}`); the status is
/// `COMPLETED`; the result is an image for Seedream endpoints, a video otherwise.
pub async fn fal() -> Double {
    fn handle(c: Ctx, r: &Recorded, parts: Vec<String>) -> Response {
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        match (r.method.as_str(), p.as_slice()) {
            ("GET", [_, _, "requests", id, "status"]) => match c.job(id) {
                None => not_found(),
                Some((true, false)) => Json(json!({"status": "IN_PROGRESS"})).into_response(),
                Some(_) => Json(json!({"status": "COMPLETED"})).into_response(),
            },
            ("GET", [_, _, "requests", id]) => {
                let image = c.path_of(id).contains("seedream");
                match c.job(id) {
                    None => not_found(),
                    Some(_) if image => Json(json!({"images": [{"url": c.file("out.png"), "content_type": "image/png"}], "seed": 1}))
                        .into_response(),
                    Some(_) => Json(json!({"video": {"url": c.file("out.mp4"), "content_type": "video/mp4"}}))
                        .into_response(),
                }
            }
            ("PUT", [_, _, "requests", id, "cancel"]) => {
                c.cancel(id);
                (
                    StatusCode::ACCEPTED,
                    Json(json!({"status": "CANCELLATION_REQUESTED"})),
                )
                    .into_response()
            }
            ("POST", [owner, alias, ..]) => {
                let id = c.new_job("req-", r);
                let base = format!("{}/{owner}/{alias}/requests/{id}", c.base);
                Json(json!({
                    "request_id": id, "response_url": base,
                    "status_url": format!("{base}/status"), "cancel_url": format!("{base}/cancel")
                }))
                .into_response()
            }
            _ => not_found(),
        }
    }
    serve(handle).await
}

//! Local test doubles of the upstream model APIs, each speaking its provider's protocol over a
//! real socket: Replicate's predictions API, fal's queue API, OpenAI's images and chat
//! completions, and Gemini's `generateContent`. What a double does is chosen by the run's
//! prompt, `scenario:anything`:
//!
//! - `ok`: succeeds (a PNG, served by the double as a file URL or inline as base64);
//! - `flaky`: the first submission is answered 429 (with `Retry-After: 0`), the next succeeds;
//! - `down`: every submission is answered 503;
//! - `garbage`: the answer (or, for queue APIs, the status) is not the documented shape;
//! - `broken`: the model fails (a final error in the provider's own shape);
//! - `slow`: never finishes (for timeouts and cancels).
//!
//! Each double counts what it saw, so tests can assert retries and cancels happened.

#![allow(dead_code, clippy::unwrap_used, reason = "test support")]

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a double has seen.
#[derive(Default)]
pub struct Seen {
    pub submits: AtomicUsize,
    pub polls: AtomicUsize,
    pub cancels: AtomicUsize,
    /// Job ids handed out.
    next_job: AtomicUsize,
    /// Submissions per prompt.
    pub by_prompt: Mutex<HashMap<String, usize>>,
    /// The last request body per prompt.
    pub bodies: Mutex<HashMap<String, Value>>,
    /// Authorization-like headers seen (to check credentials are sent).
    pub auth: Mutex<Vec<String>>,
    /// Jobs by id: (prompt, canceled).
    jobs: Mutex<HashMap<String, (String, bool)>>,
}

impl Seen {
    pub fn submits_for(&self, prompt: &str) -> usize {
        self.by_prompt
            .lock()
            .unwrap()
            .get(prompt)
            .copied()
            .unwrap_or(0)
    }

    pub fn cancels(&self) -> usize {
        self.cancels.load(Ordering::SeqCst)
    }

    fn submitted(&self, prompt: &str, body: &Value, auth: Option<&str>) -> usize {
        self.submits.fetch_add(1, Ordering::SeqCst);
        self.bodies
            .lock()
            .unwrap()
            .insert(prompt.to_owned(), body.clone());
        if let Some(a) = auth {
            self.auth.lock().unwrap().push(a.to_owned());
        }
        let mut m = self.by_prompt.lock().unwrap();
        let n = m.entry(prompt.to_owned()).or_default();
        *n += 1;
        *n
    }
}

/// A running double: its base URL and what it saw.
pub struct Double {
    pub url: String,
    pub seen: Arc<Seen>,
}

#[derive(Clone)]
struct Ctx {
    seen: Arc<Seen>,
    base: String,
}

fn scenario(prompt: &str) -> &str {
    prompt.split(':').next().unwrap_or("")
}

/// A small valid PNG (4×2), the "generated image" of every double.
pub fn png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, 4, 2);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().unwrap();
    w.write_image_data(&[200u8; 4 * 2 * 3]).unwrap();
    w.finish().unwrap();
    out
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

async fn serve(router: Router<Ctx>, seen: Arc<Seen>) -> Double {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let ctx = Ctx {
        seen: seen.clone(),
        base: url.clone(),
    };
    let app = router
        .route(
            "/files/out.png",
            get(|| async { ([(header::CONTENT_TYPE, "image/png")], png()) }),
        )
        .with_state(ctx);
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Double { url, seen }
}

fn too_many() -> Response {
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, "0")],
        Json(json!({"detail": "Request was throttled. Your rate limit resets in ~0s."})),
    )
        .into_response()
}

fn unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"detail": "Service temporarily unavailable"})),
    )
        .into_response()
}

fn auth_header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

// --- Replicate ----------------------------------------------------------------------------

/// Replicate: `POST /v1/models/{owner}/{name}/predictions`, `GET /v1/predictions/{id}`,
/// `POST /v1/predictions/{id}/cancel`; RFC 7807-style `detail` errors.
pub async fn replicate() -> Double {
    async fn create(
        State(c): State<Ctx>,
        Path((_owner, _name)): Path<(String, String)>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        let prompt = body["input"]["prompt"].as_str().unwrap_or("").to_owned();
        let n = c.seen.submitted(
            &prompt,
            &body,
            auth_header(&headers, "authorization").as_deref(),
        );
        match scenario(&prompt) {
            "flaky" if n == 1 => return too_many(),
            "down" => return unavailable(),
            _ => {}
        }
        let id = format!("pred{}", c.seen.next_job.fetch_add(1, Ordering::SeqCst));
        c.seen
            .jobs
            .lock()
            .unwrap()
            .insert(id.clone(), (prompt, false));
        (
            StatusCode::CREATED,
            Json(json!({
                "id": id, "status": "starting", "input": body["input"], "output": null, "error": null,
                "urls": {"get": format!("{}/v1/predictions/{id}", c.base), "cancel": format!("{}/v1/predictions/{id}/cancel", c.base)}
            })),
        )
            .into_response()
    }
    async fn show(State(c): State<Ctx>, Path(id): Path<String>) -> Response {
        let polls = c.seen.polls.fetch_add(1, Ordering::SeqCst);
        let Some((prompt, canceled)) = c.seen.jobs.lock().unwrap().get(&id).cloned() else {
            return (StatusCode::NOT_FOUND, Json(json!({"detail": "Not found."}))).into_response();
        };
        if canceled {
            return Json(json!({"id": id, "status": "canceled", "output": null, "error": null}))
                .into_response();
        }
        let body = match scenario(&prompt) {
            "slow" => json!({"id": id, "status": "processing", "output": null}),
            "garbage" => {
                return (StatusCode::OK, "<html>upstream proxy error</html>").into_response();
            }
            "broken" => {
                json!({"id": id, "status": "failed", "output": null, "error": "CUDA out of memory"})
            }
            // Stays `processing` for one poll, to exercise polling.
            _ if polls.is_multiple_of(2) => {
                json!({"id": id, "status": "processing", "output": null})
            }
            "text" => json!({"id": id, "status": "succeeded", "output": ["Hel", "lo ", "there"]}),
            _ => {
                json!({"id": id, "status": "succeeded", "output": [format!("{}/files/out.png", c.base)]})
            }
        };
        Json(body).into_response()
    }
    async fn cancel(State(c): State<Ctx>, Path(id): Path<String>) -> Response {
        c.seen.cancels.fetch_add(1, Ordering::SeqCst);
        if let Some(job) = c.seen.jobs.lock().unwrap().get_mut(&id) {
            job.1 = true;
        }
        Json(json!({"id": id, "status": "canceled"})).into_response()
    }
    let seen = Arc::new(Seen::default());
    let r = Router::new()
        .route("/v1/models/{owner}/{name}/predictions", post(create))
        .route("/v1/predictions/{id}", get(show))
        .route("/v1/predictions/{id}/cancel", post(cancel));
    serve(r, seen).await
}

// --- fal ----------------------------------------------------------------------------------

/// fal's queue: `POST /{app}/{sub...}` answers the request URLs; status, result and cancel are
/// under `/{owner}/{alias}/requests/{id}` (without the sub-path, as fal does).
pub async fn fal() -> Double {
    async fn submit(c: Ctx, path: String, headers: HeaderMap, body: Value) -> Response {
        let prompt = body["prompt"].as_str().unwrap_or("").to_owned();
        let n = c.seen.submitted(
            &prompt,
            &body,
            auth_header(&headers, "authorization").as_deref(),
        );
        match scenario(&prompt) {
            "flaky" if n == 1 => return too_many(),
            "down" => return unavailable(),
            _ => {}
        }
        let app: Vec<&str> = path.split('/').take(2).collect();
        let app = app.join("/");
        let id = format!("req-{}", c.seen.next_job.fetch_add(1, Ordering::SeqCst));
        c.seen
            .jobs
            .lock()
            .unwrap()
            .insert(id.clone(), (prompt, false));
        let base = format!("{}/{app}/requests/{id}", c.base);
        Json(json!({
            "request_id": id,
            "response_url": base,
            "status_url": format!("{base}/status"),
            "cancel_url": format!("{base}/cancel"),
            "queue_position": 0
        }))
        .into_response()
    }
    async fn status(c: Ctx, id: String) -> Response {
        let polls = c.seen.polls.fetch_add(1, Ordering::SeqCst);
        let Some((prompt, canceled)) = c.seen.jobs.lock().unwrap().get(&id).cloned() else {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"detail": "Request not found"})),
            )
                .into_response();
        };
        let status = match scenario(&prompt) {
            _ if canceled => "COMPLETED",
            "slow" => "IN_PROGRESS",
            "garbage" => return Json(json!({"state": "who knows"})).into_response(),
            _ if polls.is_multiple_of(2) => "IN_QUEUE",
            _ => "COMPLETED",
        };
        Json(json!({"status": status, "response_url": format!("{}/x/y/requests/{id}", c.base), "logs": null})).into_response()
    }
    async fn result(c: Ctx, id: String) -> Response {
        let Some((prompt, _)) = c.seen.jobs.lock().unwrap().get(&id).cloned() else {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"detail": "Request not found"})),
            )
                .into_response();
        };
        match scenario(&prompt) {
            "broken" => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"detail": [{"loc": ["body", "prompt"], "msg": "The content was flagged by a content checker.", "type": "content_policy_violation"}]})),
            )
                .into_response(),
            _ => Json(json!({
                "images": [{"url": format!("{}/files/out.png", c.base), "content_type": "image/png", "width": 4, "height": 2}],
                "description": "a test image"
            }))
            .into_response(),
        }
    }
    async fn cancel(c: Ctx, id: String) -> Response {
        c.seen.cancels.fetch_add(1, Ordering::SeqCst);
        if let Some(job) = c.seen.jobs.lock().unwrap().get_mut(&id) {
            job.1 = true;
        }
        (
            StatusCode::ACCEPTED,
            Json(json!({"status": "CANCELLATION_REQUESTED"})),
        )
            .into_response()
    }
    /// fal's paths have any depth, so one handler routes them.
    async fn dispatch(
        State(c): State<Ctx>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let path = uri.path().trim_start_matches('/').to_owned();
        let parts: Vec<&str> = path.split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("GET", [_, _, "requests", id, "status"]) => status(c, (*id).to_owned()).await,
            ("GET", [_, _, "requests", id]) => result(c, (*id).to_owned()).await,
            ("PUT", [_, _, "requests", id, "cancel"]) => cancel(c, (*id).to_owned()).await,
            ("POST", _) => match serde_json::from_slice(&body) {
                Ok(v) => submit(c, path, headers, v).await,
                Err(_) => (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(json!({"detail": "body is not JSON"})),
                )
                    .into_response(),
            },
            _ => (StatusCode::NOT_FOUND, Json(json!({"detail": "Not Found"}))).into_response(),
        }
    }
    let seen = Arc::new(Seen::default());
    let r = Router::new().fallback(dispatch);
    serve(r, seen).await
}

// --- OpenAI -------------------------------------------------------------------------------

/// OpenAI: `POST /v1/images/generations` (base64 images) and `POST /v1/chat/completions`;
/// errors as `{"error": {"message", "type", "param", "code"}}`.
pub async fn openai() -> Double {
    fn error(status: StatusCode, message: &str, kind: &str) -> Response {
        (
            status,
            Json(json!({"error": {"message": message, "type": kind, "param": null, "code": null}})),
        )
            .into_response()
    }
    async fn common(c: &Ctx, prompt: &str, body: &Value, headers: &HeaderMap) -> Option<Response> {
        let n = c.seen.submitted(
            prompt,
            body,
            auth_header(headers, "authorization").as_deref(),
        );
        match scenario(prompt) {
            "flaky" if n == 1 => Some(
                (StatusCode::TOO_MANY_REQUESTS, [(header::RETRY_AFTER, "0")], Json(json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}})))
                    .into_response(),
            ),
            "down" => Some(error(StatusCode::INTERNAL_SERVER_ERROR, "The server had an error while processing your request", "server_error")),
            "garbage" => Some((StatusCode::OK, Json(json!({"created": 1, "result": "??"}))).into_response()),
            "broken" => Some(error(StatusCode::BAD_REQUEST, "Your request was rejected as a result of our safety system.", "invalid_request_error")),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                None
            }
            _ => None,
        }
    }
    async fn images(State(c): State<Ctx>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
        let prompt = body["prompt"].as_str().unwrap_or("").to_owned();
        if let Some(r) = common(&c, &prompt, &body, &headers).await {
            return r;
        }
        let n = body["n"].as_u64().unwrap_or(1);
        let data: Vec<Value> = (0..n).map(|_| json!({"b64_json": b64(&png())})).collect();
        Json(json!({"created": 1, "data": data, "usage": {"input_tokens": 5, "output_tokens": 272, "total_tokens": 277}})).into_response()
    }
    async fn chat(State(c): State<Ctx>, headers: HeaderMap, Json(body): Json<Value>) -> Response {
        let prompt = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("")
            .to_owned();
        if let Some(r) = common(&c, &prompt, &body, &headers).await {
            return r;
        }
        Json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("You said: {prompt}")}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        }))
        .into_response()
    }
    let seen = Arc::new(Seen::default());
    let r = Router::new()
        .route("/v1/images/generations", post(images))
        .route("/v1/chat/completions", post(chat));
    serve(r, seen).await
}

// --- Gemini -------------------------------------------------------------------------------

/// Gemini: `POST /v1beta/models/{model}:generateContent` with `x-goog-api-key`; images come
/// back inline; errors as `{"error": {"code", "message", "status"}}`; blocked prompts are a
/// 200 with `promptFeedback.blockReason`.
pub async fn gemini() -> Double {
    async fn generate(
        State(c): State<Ctx>,
        Path(call): Path<String>,
        headers: HeaderMap,
        Json(body): Json<Value>,
    ) -> Response {
        if !call.ends_with(":generateContent") {
            return (
                StatusCode::NOT_FOUND,
                Json(
                    json!({"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}}),
                ),
            )
                .into_response();
        }
        let prompt = body
            .pointer("/contents/0/parts/0/text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let n = c.seen.submitted(
            &prompt,
            &body,
            auth_header(&headers, "x-goog-api-key").as_deref(),
        );
        match scenario(&prompt) {
            "flaky" if n == 1 => {
                return (StatusCode::TOO_MANY_REQUESTS, Json(json!({"error": {"code": 429, "message": "Resource has been exhausted (e.g. check quota).", "status": "RESOURCE_EXHAUSTED"}}))).into_response();
            }
            "down" => {
                return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}))).into_response();
            }
            "garbage" => return (StatusCode::OK, "{\"candidates\": [").into_response(),
            "broken" => {
                return Json(json!({"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {"promptTokenCount": 9}})).into_response();
            }
            "slow" => tokio::time::sleep(Duration::from_secs(120)).await,
            _ => {}
        }
        Json(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Here is your image."},
                {"inlineData": {"mimeType": "image/png", "data": b64(&png())}}
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 1290},
            "modelVersion": call.trim_end_matches(":generateContent")
        }))
        .into_response()
    }
    let seen = Arc::new(Seen::default());
    let r = Router::new().route("/v1beta/models/{call}", post(generate));
    serve(r, seen).await
}

// --- Cog ----------------------------------------------------------------------------------

/// A Cog model server as coglet serves it: `PUT /predictions/{id}` answers when the model is
/// done (a model failure is a 200 with `status: failed`), 409 when its one slot is busy, 503
/// before setup finished; `POST /predictions/{id}/cancel`. Files come back as data URIs. The
/// real server is exercised by `tests/cog.rs`; this double adds the failure modes a real
/// predictor cannot produce on demand (503, garbage).
pub async fn cog() -> Double {
    async fn predict(
        State(c): State<Ctx>,
        Path(id): Path<String>,
        Json(body): Json<Value>,
    ) -> Response {
        let prompt = body["input"]["prompt"].as_str().unwrap_or("").to_owned();
        let n = c.seen.submitted(&prompt, &body, None);
        if body["id"] != id.as_str() {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"detail": "id mismatch"})),
            )
                .into_response();
        }
        match scenario(&prompt) {
            "flaky" if n == 1 => {
                (StatusCode::CONFLICT, Json(json!({"error": "At capacity - all prediction slots busy", "status": "failed"}))).into_response()
            }
            "down" => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": "Setup has not finished yet"}))).into_response(),
            "garbage" => (StatusCode::OK, Json(json!({"id": id, "state": "done?"}))).into_response(),
            "broken" => Json(json!({"id": id, "status": "failed", "error": "Prediction failed: Exception: out of memory", "logs": ""})).into_response(),
            "slow" => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                Json(json!({"id": id, "status": "succeeded", "output": "late"})).into_response()
            }
            _ => Json(json!({
                "id": id, "status": "succeeded", "logs": "", "metrics": {"predict_time": 0.01},
                "output": format!("data:image/png;base64,{}", b64(&png()))
            }))
            .into_response(),
        }
    }
    async fn cancel(State(c): State<Ctx>, Path(_id): Path<String>) -> Response {
        c.seen.cancels.fetch_add(1, Ordering::SeqCst);
        Json(json!({})).into_response()
    }
    let seen = Arc::new(Seen::default());
    let r = Router::new()
        .route("/predictions/{id}", axum::routing::put(predict))
        .route("/predictions/{id}/cancel", post(cancel));
    serve(r, seen).await
}

/// A plain file host, for reference images sent to a provider.
pub async fn files() -> Double {
    serve(Router::new(), Arc::new(Seen::default())).await
}

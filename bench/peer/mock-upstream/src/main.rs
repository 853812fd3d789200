//! Minimal OpenAI-compatible upstream for gateway load tests.
//!
//! Usage: mock-upstream PORT [WORKER_THREADS]
//!
//! Listens on 127.0.0.1:PORT only. Every POST to /v1/chat/completions gets
//! the same canned completion (with a `usage` block so gateways can count
//! tokens); a body asking for `"stream": true` gets a canned SSE stream.
//! GET /v1/models and GET /health answer too. WORKER_THREADS defaults to 1
//! so the mock takes as little CPU as possible away from the gateway.

use axum::{
    body::Bytes,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::{get, post},
    Router,
};

const COMPLETION: &str = r#"{"id":"chatcmpl-mock","object":"chat.completion","created":1700000000,"model":"mock-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the mock upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;

const STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hello from the mock upstream.\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"mock-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7,\"total_tokens\":19}}\n\n",
    "data: [DONE]\n\n",
);

const MODELS: &str = r#"{"object":"list","data":[{"id":"mock-model","object":"model","created":1700000000,"owned_by":"mock"}]}"#;

/// True when the JSON body contains `"stream"` followed by `: true`
/// (whitespace allowed). A byte scan is enough for a benchmark mock.
fn wants_stream(body: &[u8]) -> bool {
    let key = b"\"stream\"";
    let mut i = 0;
    while i + key.len() <= body.len() {
        if &body[i..i + key.len()] == key {
            let rest = body[i + key.len()..]
                .iter()
                .skip_while(|b| b.is_ascii_whitespace());
            let mut rest = rest.copied();
            if rest.next() == Some(b':') {
                let tail: Vec<u8> = rest.skip_while(|b| b.is_ascii_whitespace()).take(4).collect();
                return tail == b"true";
            }
        }
        i += 1;
    }
    false
}

async fn chat(body: Bytes) -> impl IntoResponse {
    if wants_stream(&body) {
        (StatusCode::OK, [(header::CONTENT_TYPE, "text/event-stream")], STREAM)
    } else {
        (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], COMPLETION)
    }
}

async fn models() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], MODELS)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let port: u16 = match args.next().and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => {
            eprintln!("usage: mock-upstream PORT [WORKER_THREADS]");
            std::process::exit(2);
        }
    };
    let threads: usize = args.next().and_then(|t| t.parse().ok()).unwrap_or(1).max(1);

    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");

    rt.block_on(async move {
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/health", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| {
                eprintln!("mock-upstream: cannot bind 127.0.0.1:{port}: {e}");
                std::process::exit(1);
            });
        eprintln!("mock-upstream listening on 127.0.0.1:{port} ({threads} thread(s))");
        axum::serve(listener, app).await.expect("serve");
    });
}

//! Ceiling 1: axum answering "hello" — the cost of HTTP alone.
use axum::{Router, routing::get};

#[tokio::main]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().expect("addr"));
    let app = Router::new().route("/", get(|| async { "hello" }));
    axum::serve(listener, app).await.expect("serve");
}

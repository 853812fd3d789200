//! Ceiling 5: axum doing one Redis INCR per request on one multiplexed connection, the client
//! and connection kind of the Redis rate limiter. Args: ADDR URL.
use axum::{Router, extract::State, routing::post};
use redis::aio::MultiplexedConnection;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let url = args.next().unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let client = redis::Client::open(url).expect("url");
    let conn = client.get_multiplexed_async_connection().await.expect("connect");
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route(
            "/",
            post(|State(mut conn): State<MultiplexedConnection>| async move {
                let n: i64 = redis::cmd("INCR")
                    .arg("runbase-bench:ceiling")
                    .query_async(&mut conn)
                    .await
                    .expect("INCR");
                n.to_string()
            }),
        )
        .with_state(conn);
    axum::serve(listener, app).await.expect("serve");
}

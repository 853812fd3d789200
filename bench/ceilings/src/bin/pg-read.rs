//! Ceiling 4: axum doing one pooled PostgreSQL primary-key read per request (a row of 10,000,
//! chosen round-robin), with the store's driver and pool and a statement prepared once per
//! connection. Args: ADDR URL [POOL_SIZE, default 16 as the store's default].
use axum::{Router, extract::State, routing::get};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

const ROWS: i64 = 10_000;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:0".into());
    let url = args.next().unwrap_or_else(|| "postgres://postgres@127.0.0.1/postgres".into());
    let size: usize = args.next().map_or(16, |s| s.parse().expect("pool size"));
    let config: tokio_postgres::Config = url.parse().expect("url");
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig { recycling_method: RecyclingMethod::Fast },
    );
    let pool = Pool::builder(manager).max_size(size).build().expect("pool");
    pool.get()
        .await
        .expect("connect")
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS ceiling_rows;
             CREATE TABLE ceiling_rows (id BIGINT PRIMARY KEY, body TEXT NOT NULL);
             INSERT INTO ceiling_rows SELECT g, 'row ' || g FROM generate_series(1, {ROWS}) g;
             ANALYZE ceiling_rows;"
        ))
        .await
        .expect("schema");
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().expect("addr"));
    let next = Arc::new(AtomicI64::new(0));
    let app = Router::new()
        .route(
            "/",
            get(|State((pool, next)): State<(Pool, Arc<AtomicI64>)>| async move {
                let id = next.fetch_add(1, Ordering::Relaxed) % ROWS + 1;
                let client = pool.get().await.expect("pooled connection");
                let stmt = client
                    .prepare_cached("SELECT body FROM ceiling_rows WHERE id = $1")
                    .await
                    .expect("prepare");
                let row = client.query_one(&stmt, &[&id]).await.expect("read");
                row.get::<_, String>(0)
            }),
        )
        .with_state((pool, next));
    axum::serve(listener, app).await.expect("serve");
}

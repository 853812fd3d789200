//! Ceiling 3: axum doing one PostgreSQL INSERT per request (autocommit, so one commit each)
//! through a deadpool-postgres pool of tokio-postgres connections, the driver and pool of the
//! PostgreSQL store, with the statement prepared once per connection. Answers after the commit.
//! Args: ADDR URL [POOL_SIZE, default 16 as the store's default].
use axum::{Router, extract::State, routing::post};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

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
        .batch_execute(
            "DROP TABLE IF EXISTS ceiling_items;
             CREATE TABLE ceiling_items (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL);",
        )
        .await
        .expect("schema");
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    println!("listening on http://{}", listener.local_addr().expect("addr"));
    let app = Router::new()
        .route(
            "/",
            post(|State(pool): State<Pool>, body: String| async move {
                let client = pool.get().await.expect("pooled connection");
                let stmt = client
                    .prepare_cached("INSERT INTO ceiling_items (body) VALUES ($1) RETURNING id")
                    .await
                    .expect("prepare");
                let row = client.query_one(&stmt, &[&body]).await.expect("insert");
                row.get::<_, i64>(0).to_string()
            }),
        )
        .with_state(pool);
    axum::serve(listener, app).await.expect("serve");
}

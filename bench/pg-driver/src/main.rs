//! c64 throughput of two drivers on the same server, in one run: single-row INSERT (autocommit)
//! and a primary-key SELECT, each through a pool of `POOL` connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TASKS: usize = 64;
const POOL: usize = 16;
const SECS: u64 = 5;

async fn drive<F, Fut>(label: &str, op: F)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs(SECS);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (op, done) = (op.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = t as u64;
            while Instant::now() < end {
                op(i % 10_000 + 1).await;
                done.fetch_add(1, Ordering::Relaxed);
                i += TASKS as u64;
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let n = done.load(Ordering::Relaxed);
    println!("{label:<40} {:>8.0} ops/s", n as f64 / SECS as f64);
}

#[tokio::main]
async fn main() {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1/test".into());
    let (setup, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    setup
        .batch_execute(
            "DROP TABLE IF EXISTS bench_driver;
             CREATE TABLE bench_driver (id BIGSERIAL PRIMARY KEY, v TEXT NOT NULL);
             INSERT INTO bench_driver (v) SELECT 'row ' || g FROM generate_series(1, 10000) g;",
        )
        .await
        .expect("setup");

    let cfg: tokio_postgres::Config = url.parse().expect("url");
    let mgr = deadpool_postgres::Manager::from_config(
        cfg,
        tokio_postgres::NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    let dp = deadpool_postgres::Pool::builder(mgr)
        .max_size(POOL)
        .build()
        .expect("pool");
    let sx = sqlx::postgres::PgPoolOptions::new()
        .max_connections(POOL as u32)
        .connect(&url)
        .await
        .expect("sqlx");

    for round in 0..2 {
        println!("round {round}");
        let p = dp.clone();
        drive("tokio-postgres+deadpool INSERT", move |_| {
            let p = p.clone();
            async move {
                let c = p.get().await.expect("conn");
                let s = c
                    .prepare_cached("INSERT INTO bench_driver (v) VALUES ($1)")
                    .await
                    .expect("prep");
                c.execute(&s, &[&"x"]).await.expect("insert");
            }
        })
        .await;
        let p = sx.clone();
        drive("sqlx INSERT", move |_| {
            let p = p.clone();
            async move {
                sqlx::query("INSERT INTO bench_driver (v) VALUES ($1)")
                    .bind("x")
                    .execute(&p)
                    .await
                    .expect("insert");
            }
        })
        .await;
        let p = dp.clone();
        drive("tokio-postgres+deadpool PK read", move |id| {
            let p = p.clone();
            async move {
                let c = p.get().await.expect("conn");
                let s = c
                    .prepare_cached("SELECT v FROM bench_driver WHERE id = $1")
                    .await
                    .expect("prep");
                let row = c.query_one(&s, &[&(id as i64)]).await.expect("read");
                let _: String = row.get(0);
            }
        })
        .await;
        let p = sx.clone();
        drive("sqlx PK read", move |id| {
            let p = p.clone();
            async move {
                let _: (String,) = sqlx::query_as("SELECT v FROM bench_driver WHERE id = $1")
                    .bind(id as i64)
                    .fetch_one(&p)
                    .await
                    .expect("read");
            }
        })
        .await;
    }
    setup
        .batch_execute("DROP TABLE bench_driver")
        .await
        .expect("drop");
}

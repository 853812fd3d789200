//! Fresh databases for tests: each test gets a database of its own on the server named by
//! `RUNBASE_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped
//! when the guard is. Without a reachable server the tests skip with a message, except under
//! `CI=true`, where they fail: CI starts PostgreSQL (.ci/run).

use std::future::Future;

/// The server tests create their databases on (a URL naming its maintenance database).
pub fn admin_url() -> String {
    std::env::var("RUNBASE_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Runs a future to completion on a runtime of its own, in a thread of its own, so sync code and
/// code already inside a runtime (a `#[tokio::test]`) can both call it.
fn block_on<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(f))
    })
    .join()
    .unwrap_or_else(|_| panic!("test database thread panicked"))
    .unwrap_or_else(|e| panic!("test database runtime: {e}"))
}

async fn admin_exec(sql: String) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
    let driver = tokio::spawn(conn);
    let done = client.batch_execute(&sql).await;
    drop(client);
    let _ = driver.await;
    done
}

/// A database created for one test; dropped (with its connections) when this is.
pub struct TestDatabase {
    /// The URL of the new database.
    pub url: String,
    name: String,
}

impl TestDatabase {
    /// Creates a fresh database, or returns `None` (after saying why on stderr) when no server
    /// answers and `CI` is not `true`.
    ///
    /// # Panics
    /// Under `CI=true` when the server is unreachable.
    pub fn create() -> Option<TestDatabase> {
        let name = format!(
            "runbase_test_{}",
            runbase_domain::ids::random_token(16).to_lowercase()
        );
        let sql = format!("CREATE DATABASE {name}");
        match block_on(admin_exec(sql)) {
            Ok(()) => {}
            Err(e) => {
                let why = match e.as_db_error() {
                    Some(db) => db.message().to_owned(),
                    None => e.to_string(),
                };
                if std::env::var("CI").is_ok_and(|v| v == "true") {
                    panic!("PostgreSQL at {} is required under CI: {why}", admin_url());
                }
                eprintln!(
                    "skipping: PostgreSQL at {} is not reachable ({why}); set RUNBASE_TEST_POSTGRES_URL",
                    admin_url()
                );
                return None;
            }
        }
        let base = admin_url();
        let base = base
            .rsplit_once('/')
            .map_or(base.as_str(), |(b, _)| b)
            .to_owned();
        Some(TestDatabase {
            url: format!("{base}/{name}"),
            name,
        })
    }
}

impl TestDatabase {
    /// How many client connections the server holds to this database now.
    ///
    /// # Panics
    /// When the server cannot be asked.
    pub fn connections(&self) -> i64 {
        let name = self.name.clone();
        block_on(async move {
            let (client, conn) =
                tokio_postgres::connect(&admin_url(), tokio_postgres::NoTls).await?;
            let driver = tokio::spawn(conn);
            let n = client
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
                    &[&name],
                )
                .await
                .and_then(|r| r.try_get::<_, i64>(0));
            drop(client);
            let _ = driver.await;
            n
        })
        .unwrap_or_else(|e| panic!("counting the connections to {}: {e}", self.name))
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = block_on(admin_exec(sql)) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// The statements that read many requests' keys (and runs) at once, for the test that checks
/// their plans (`key_reads`).
pub fn batched_read_statements() -> [&'static str; 2] {
    crate::key_reads::batch_statements()
}

/// The batched successes' settings (sent with their `BEGIN`) and statement, for the test that
/// checks their plan.
pub fn success_batch_statement() -> (&'static str, &'static str) {
    crate::store::success_batch_statement()
}

/// The statements that claim queued runs and find the end of a window of an account's runs, for
/// the test that checks they read `runs` through indexes other than its primary key on `seq`.
pub fn claim_and_window_end_statements() -> (&'static str, &'static str) {
    (
        crate::store::CLAIM.as_str(),
        crate::store::WINDOW_END[0].as_str(),
    )
}

/// Every statement that lists an account's runs (one mode or both, with a window or without) or
/// finds a window's end, each with its number of parameters, for the test that checks they walk
/// `runs_by_account`.
pub fn run_listing_statements() -> Vec<(&'static str, usize)> {
    crate::store::run_listing_statements()
}

/// Creates `run` the way a create batch whose outcome was unknown settles it, alone in its own
/// transaction (`create_batch::settle`).
pub async fn create_run_alone(
    store: &crate::PgStore,
    run: &runbase_domain::run::NewRun,
) -> Result<runbase_domain::run::Run, runbase_domain::store::CreateRunError> {
    match crate::store::create_run_alone(&store.pool, run, true).await {
        Ok(created) => created,
        Err(e) => Err(runbase_domain::store::CreateRunError::Store(e.into())),
    }
}

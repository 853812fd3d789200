//! Black-box test harness: starts the real `runbase` binary on port 0 with a fresh data
//! directory, bootstraps with the real CLI, and talks HTTP to it.
//!
//! With `RUNBASE_TEST_DATABASE=postgres`, every server started fresh gets a database of its own
//! on the PostgreSQL server (`RUNBASE_TEST_POSTGRES_URL`, default the local one), migrated with
//! `runbase migrate` and dropped with the server, so the same tests run on both stores.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness"
)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod redis;

pub const BIN: &str = env!("CARGO_BIN_EXE_runbase");

/// A running server; killed when dropped.
pub struct Server {
    pub url: String,
    pub dir: PathBuf,
    child: Child,
    env: Vec<(String, String)>,
    _tmp: Option<tempfile::TempDir>,
    /// The PostgreSQL database of this server (dropped after it).
    _db: Option<runbase_store_postgres::testing::TestDatabase>,
}

/// Whether fresh servers run on PostgreSQL (`RUNBASE_TEST_DATABASE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("RUNBASE_TEST_DATABASE").is_ok_and(|v| v == "postgres")
}

/// Settings for test servers that would otherwise trip over the default rate limit, or over the
/// per-address connection cap (bursts of hundreds of connections all come from 127.0.0.1).
pub fn relaxed() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "1000000"),
        ("RUNBASE_HTTP__MAX_CONNECTIONS", "4096"),
        ("RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP", "4096"),
    ]
}

impl Server {
    /// A server with the defaults and a raised rate limit (most tests poll a lot).
    pub fn start() -> Server {
        Self::start_with(&relaxed())
    }

    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Self::start_fresh(env, on_postgres())
    }

    /// A server on SQLite whatever `RUNBASE_TEST_DATABASE` says (for what only SQLite has,
    /// such as `runbase backup`).
    pub fn start_sqlite() -> Server {
        Self::start_fresh(&relaxed(), false)
    }

    fn start_fresh(env: &[(&str, &str)], postgres: bool) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut db = None;
        if postgres && !env.iter().any(|(k, _)| k == "RUNBASE_DATABASE_URL") {
            let fresh = runbase_store_postgres::testing::TestDatabase::create()
                .expect("RUNBASE_TEST_DATABASE=postgres, but PostgreSQL is not reachable");
            env.push(("RUNBASE_DATABASE_URL".into(), fresh.url.clone()));
            // A worker killed mid-run leaves its run leased: keep the wait for it short.
            if !env.iter().any(|(k, _)| k == "RUNBASE_WORKER__LEASE_MS") {
                env.push(("RUNBASE_WORKER__LEASE_MS".into(), "1500".into()));
            }
            let out = Command::new(BIN)
                .arg("migrate")
                .env("RUNBASE_DATABASE_URL", &fresh.url)
                .env_remove("RUST_LOG")
                .output()
                .expect("run runbase migrate");
            assert!(
                out.status.success(),
                "runbase migrate failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            db = Some(fresh);
        }
        let mut s = Self::spawn(&dir, &env);
        s._tmp = Some(tmp);
        s._db = db;
        s
    }

    /// A server on an existing data directory (e.g. one an earlier version wrote).
    pub fn start_in(dir: &Path, env: &[(&str, &str)]) -> Server {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(dir, &env)
    }

    fn spawn(dir: &Path, env: &[(String, String)]) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("server.log"))
            .expect("log file");
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env_remove("RUST_LOG")
            // Tests configure providers themselves; credentials of the machine must not leak in.
            .env_remove("REPLICATE_API_TOKEN")
            .env_remove("FAL_KEY")
            .env_remove("OPENAI_API_KEY")
            .env_remove("GEMINI_API_KEY")
            .env_remove("GOOGLE_API_KEY")
            .env_remove("ARK_API_KEY")
            .env_remove("KLING_ACCESS_KEY")
            .env_remove("KLING_SECRET_KEY")
            .env_remove("MINIMAX_API_KEY")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().expect("spawn runbase");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let url = match line.trim().strip_prefix("Runbase listening on ") {
            Some(u) => u.to_owned(),
            None => {
                let _ = child.kill();
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("server did not start: {line:?}\n{log}");
            }
        };
        let server = Server {
            url,
            dir: dir.to_path_buf(),
            child,
            env: env.to_vec(),
            _tmp: None,
            _db: None,
        };
        server.wait_healthy();
        server
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::blocking_get(&format!("{}/health", self.url))
                && r == 200
            {
                return;
            }
            assert!(Instant::now() < deadline, "server never became healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The PostgreSQL database of this server, if it runs on one.
    pub fn database_url(&self) -> Option<String> {
        self.env
            .iter()
            .find(|(k, _)| k == "RUNBASE_DATABASE_URL")
            .map(|(_, v)| v.clone())
    }

    /// The server's log so far (for assertions and failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// Asks the server to stop (SIGTERM, as a service manager would) and waits up to 30 s for it
    /// to exit; returns how it exited.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the server did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (no graceful shutdown), like a crash.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a new server on the same data directory (after [`Server::kill`]).
    pub fn restart(mut self) -> Server {
        self.kill();
        let tmp = self._tmp.take();
        let db = self._db.take();
        let mut s = Self::spawn(&self.dir, &self.env);
        s._tmp = tmp;
        s._db = db;
        s
    }

    /// Runs `runbase <args> --data-dir <dir>`; panics unless it succeeds; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_raw(args);
        assert!(
            out.status.success(),
            "runbase {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    pub fn cli_raw(&self, args: &[&str]) -> std::process::Output {
        self.cli_command(args).output().expect("run cli")
    }

    /// `runbase <args> --data-dir <dir>` on the server's database.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .arg("--data-dir")
            .arg(&self.dir)
            .env_remove("RUST_LOG")
            // The server's database, when it is not the data directory's.
            .envs(
                self.env
                    .iter()
                    .filter(|(k, _)| k == "RUNBASE_DATABASE_URL")
                    .map(|(k, v)| (k, v)),
            );
        cmd
    }

    /// Runs `runbase <args> --data-dir <dir>` with `stdin` as its input; panics unless it
    /// succeeds.
    pub fn cli_with_stdin(&self, args: &[&str], stdin: &str) {
        use std::io::Write;
        let mut child = self
            .cli_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cli");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write stdin");
        let out = child.wait_with_output().expect("wait cli");
        assert!(
            out.status.success(),
            "runbase {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A new account with `cents` of credit and one key; returns the key.
    pub fn account(&self, email: &str, cents: i64) -> String {
        self.cli(&["accounts", "create", email]);
        if cents > 0 {
            self.cli(&[
                "credits",
                "add",
                "--account",
                email,
                "--cents",
                &cents.to_string(),
            ]);
        }
        self.key(email, &[])
    }

    /// Another key for an existing account, with extra `keys create` flags.
    pub fn key(&self, email: &str, extra: &[&str]) -> String {
        let mut args = vec!["keys", "create", "--account", email];
        args.extend_from_slice(extra);
        let out = self.cli(&args);
        let key = out.trim().to_owned();
        assert!(
            key.starts_with("sk-") && !key.contains('\n'),
            "key line: {out:?}"
        );
        key
    }

    pub fn client(&self) -> Client {
        Client {
            http: reqwest::Client::new(),
            base: self.url.clone(),
        }
    }

    /// Runs SQL statements on the server's database, whichever it is (to set up what an API
    /// cannot, such as an upload made weeks ago). Written in the SQL both stores read.
    pub fn sql(&self, statements: &str) {
        match self.database_url() {
            Some(url) if url.starts_with("postgres") => {
                let statements = statements.to_owned();
                with_postgres(url, move |client| {
                    Box::pin(async move {
                        client.batch_execute(&statements).await.expect("SQL");
                    })
                });
            }
            _ => self.sqlite().execute_batch(statements).expect("SQL"),
        }
    }

    /// The number a `SELECT count(*) ...` query gives on the server's database, whichever it is.
    pub fn count(&self, query: &str) -> i64 {
        match self.database_url() {
            Some(url) if url.starts_with("postgres") => {
                let query = query.to_owned();
                with_postgres(url, move |client| {
                    Box::pin(async move {
                        let row = client.query_one(&query, &[]).await.expect("SQL");
                        row.get::<_, i64>(0)
                    })
                })
            }
            _ => self
                .sqlite()
                .query_row(query, [], |r| r.get(0))
                .expect("SQL"),
        }
    }

    /// A connection to the server's SQLite database, waiting for its writer.
    fn sqlite(&self) -> rusqlite::Connection {
        let conn = rusqlite::Connection::open(self.dir.join("runbase.db")).expect("open");
        conn.busy_timeout(Duration::from_secs(10))
            .expect("busy timeout");
        conn
    }
}

/// Runs `work` with a connection to the PostgreSQL database `url`, on a thread and runtime of
/// its own (callers may be inside a test's runtime), and returns what it gives.
fn with_postgres<T: Send + 'static>(
    url: String,
    work: impl FnOnce(
        tokio_postgres::Client,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>
    + Send
    + 'static,
) -> T {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
            tokio::spawn(conn);
            work(client).await
        })
    })
    .join()
    .expect("SQL thread")
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A thin HTTP client for the API.
#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
}

/// Status, headers and parsed JSON body of a response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the error envelope with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["error"]["code"], code, "body: {}", self.body);
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "body: {}",
            self.body
        );
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(1),
            "only `error` in the envelope: {}",
            self.body
        );
    }
}

impl Client {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes)));
        Resp {
            status,
            headers,
            body,
        }
    }

    pub async fn post_raw(&self, key: Option<&str>, path: &str, body: &str) -> Resp {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        self.send(req).await
    }

    pub async fn create(&self, key: &str, body: Value) -> Resp {
        self.post_raw(Some(key), "/api/v1/runs", &body.to_string())
            .await
    }

    pub async fn get(&self, key: Option<&str>, path: &str) -> Resp {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        self.send(req).await
    }

    pub async fn run(&self, key: &str, id: &str) -> Resp {
        self.get(Some(key), &format!("/api/v1/runs/{id}")).await
    }

    /// Polls a run until it is terminal; returns it.
    pub async fn wait(&self, key: &str, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = self.run(key, id).await;
            assert_eq!(r.status, 200, "{}", r.body);
            let status = r.body["status"].as_str().unwrap_or_default().to_owned();
            if status == "succeeded" || status == "failed" || status == "canceled" {
                return r.body;
            }
            assert!(Instant::now() < deadline, "run {id} stuck in {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls a run until it reaches `status` (e.g. `processing`).
    pub async fn wait_for_status(&self, key: &str, id: &str, status: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.run(key, id).await.body["status"] != status {
            assert!(Instant::now() < deadline, "run {id} never reached {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The bytes behind an output URL.
    pub async fn download(&self, url: &str) -> Vec<u8> {
        let r = self.http.get(url).send().await.expect("download");
        assert_eq!(r.status(), 200, "{url}");
        r.bytes().await.expect("body").to_vec()
    }

    /// The balance in cents (an integer when whole), from the account's `balanceUsd`.
    pub async fn balance(&self, key: &str) -> Value {
        let r = self.get(Some(key), "/api/v1/account").await;
        assert_eq!(r.status, 200, "{}", r.body);
        cents(&r.body["balanceUsd"])
    }
}

/// An amount of integer micro-USD (the wire's `…Usd` fields) in cents: an integer when it is a
/// whole number of cents, else a decimal. Panics on anything but an integer.
pub fn cents(micro_usd: &Value) -> Value {
    let m = micro_usd
        .as_i64()
        .unwrap_or_else(|| panic!("money on the wire is an integer of micro-USD: {micro_usd}"));
    if m % 10_000 == 0 {
        Value::from(m / 10_000)
    } else {
        Value::from(m as f64 / 10_000.0)
    }
}

/// Minimal blocking GET for readiness polling, without pulling in a second HTTP client.
mod reqwest {
    pub use ::reqwest::*;

    pub fn blocking_get(url: &str) -> std::io::Result<u16> {
        use std::io::{Read, Write};
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| std::io::Error::other("not http"))?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let mut s = std::net::TcpStream::connect(host)?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        buf.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("bad response"))
    }
}

/// The value of the sample `name{labels}` (labels as written in the exposition, in order).
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A free address for the metrics port, found by binding and letting go.
pub fn free_address() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("127.0.0.1:{port}")
}

/// The metrics port's text exposition.
pub async fn scrape(metrics_url: &str) -> String {
    reqwest::get(metrics_url)
        .await
        .expect("the metrics port answers")
        .text()
        .await
        .expect("the metrics text")
}
